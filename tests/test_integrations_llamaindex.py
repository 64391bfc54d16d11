"""engine.integrations.llamaindex against the real llama-index-core (the llamaindex
extra, in the test extra so CI runs it). llama-index-core is imported once, by this module."""

from __future__ import annotations

import datetime as dt
import runpy
from pathlib import Path

import numpy as np
import pytest
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import HierarchicalNodeParser, get_leaf_nodes
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import (Document, MetadataMode, NodeRelationship, NodeWithScore, QueryBundle,
                                     RelatedNodeInfo, TextNode)
from llama_index.core.storage.docstore import SimpleDocumentStore

from engine.errors import CandidateError
from engine.integrations.core import META_KEYS
from engine.integrations.llamaindex import BudgetPostprocessor
from engine.policy import Hierarchy, load_policy

from integrationcases import (CHILDREN, MERGED, OTHER, PARENT, SCORES, UNMERGED, audit_verify, records,
                              write_policy)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _tree() -> tuple[TextNode, list[TextNode], TextNode]:
    """The section and its paragraphs linked both ways, as HierarchicalNodeParser links them."""
    source = RelatedNodeInfo(node_id="billing")
    parent = TextNode(text=PARENT, id_="refunds", metadata={"level": "SECTION"})
    kids = [TextNode(text=t, id_=f"refunds-{n}") for n, t in enumerate(CHILDREN)]
    parent.relationships = {NodeRelationship.SOURCE: source,
                            NodeRelationship.CHILD: [RelatedNodeInfo(node_id=k.node_id) for k in kids]}
    for kid in kids:
        kid.relationships = {NodeRelationship.SOURCE: source,
                             NodeRelationship.PARENT: RelatedNodeInfo(node_id="refunds")}
    return parent, kids, TextNode(text=OTHER, id_="shipping")


def _scored(*nodes: TextNode) -> list[NodeWithScore]:
    return [NodeWithScore(node=n, score=SCORES[n.node_id]) for n in nodes]


def test_selects_under_the_hierarchy_rule_and_logs_a_verifiable_record(tmp_path: Path) -> None:
    parent, kids, other = _tree()
    nodes = _scored(kids[0], kids[1], parent, other, kids[2])
    pp = BudgetPostprocessor(policy=str(write_policy(tmp_path)))
    assert isinstance(pp, BaseNodePostprocessor)
    kept = pp.postprocess_nodes(nodes, query_str="how do refunds work?")
    assert [n.node_id for n in kept] == ["refunds"]
    decision = pp.decide(nodes)
    assert {n.node_id: n.node.metadata["ctxbudget_reason"] for n in decision.annotated} == MERGED
    # the section is counted with its "level: SECTION" line: the LLM sees it (MetadataMode.LLM)
    assert [n.node.metadata["ctxbudget_tokens"] for n in decision.annotated] == [13, 9, 36, 92, 7]
    assert all(not set(META_KEYS) & set(n.node.metadata) for n in nodes)  # inputs untouched
    log = tmp_path / "audit" / "decisions.jsonl"
    code, out = audit_verify(log)
    assert code == 0, out
    assert "OK: 2 records verified" in out
    first, _ = records(log)
    assert first["decision_id"] == kept[0].node.metadata["ctxbudget_decision_id"]
    # the SOURCE relationship is the item's document
    assert first["input"]["items"][0]["metadata"] == {"doc_id": "billing"}
    unmerged = BudgetPostprocessor(policy=load_policy(write_policy(tmp_path)).replace(
        hierarchy=Hierarchy(True, None)), audit_log=False).decide(nodes)
    assert {n.node_id: n.node.metadata["ctxbudget_reason"] for n in unmerged.annotated} == UNMERGED


def test_annotations_do_not_change_what_the_llm_sees(tmp_path: Path) -> None:
    node = TextNode(text=CHILDREN[0], id_="a", metadata={"title": "Refunds"})
    pp = BudgetPostprocessor(policy=write_policy(tmp_path), audit_log=False)
    (kept,) = pp.postprocess_nodes([NodeWithScore(node=node, score=0.5)])
    assert kept.node.metadata["ctxbudget_decision"] == "included"
    for mode in (MetadataMode.LLM, MetadataMode.EMBED):
        assert kept.node.get_content(metadata_mode=mode) == node.get_content(metadata_mode=mode)
    assert kept.node.metadata["ctxbudget_tokens"] == 18  # "title: Refunds", a blank line, the text


def test_auto_merging_fetches_parents_from_the_docstore(tmp_path: Path) -> None:
    """Only the paragraphs are retrieved (as from a vector index of leaf nodes); the
    section comes from the docstore, scored by the mean of its retrieved paragraphs."""
    parent, kids, other = _tree()
    store = SimpleDocumentStore()
    store.add_documents([parent, *kids, other])
    pp = BudgetPostprocessor(policy=write_policy(tmp_path), docstore=store, audit_log=False)
    nodes = _scored(kids[0], kids[1], other, kids[2])
    decision = pp.decide(nodes)
    fetched = decision.annotated[-1]
    assert fetched.node_id == "refunds" and fetched.score == pytest.approx((0.9 + 0.8 + 0.3) / 3)
    assert [n.node_id for n in decision.nodes] == ["refunds"]
    assert {n.node_id: n.node.metadata["ctxbudget_reason"] for n in decision.annotated} == MERGED
    without = BudgetPostprocessor(policy=write_policy(tmp_path), audit_log=False).decide(nodes)
    assert [n.node_id for n in without.annotated] == ["refunds-0", "refunds-1", "shipping", "refunds-2"]
    assert [n.node_id for n in without.nodes] == ["refunds-0", "refunds-1", "shipping"]


class _GivenScores(BaseRetriever):
    """A retriever over in-memory leaf nodes with fixed scores (offline, no embeddings)."""

    def __init__(self, scored: list[NodeWithScore]) -> None:
        super().__init__()
        self._scored = scored

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return list(self._scored)


def test_a_query_engine_over_a_hierarchical_node_parser(tmp_path: Path) -> None:
    """The whole LlamaIndex pipeline: HierarchicalNodeParser → docstore → retriever of
    leaves → our postprocessor (auto-merging under the budget) → synthesis (MockLLM)."""
    text = "\n\n".join([PARENT, " ".join(CHILDREN), OTHER])
    parser = HierarchicalNodeParser.from_defaults(chunk_sizes=[256, 64, 24], chunk_overlap=0)
    nodes = parser.get_nodes_from_documents([Document(text=text, id_="billing")])
    store = SimpleDocumentStore()
    store.add_documents(nodes)
    leaves = get_leaf_nodes(nodes)
    scored = [NodeWithScore(node=n, score=1.0 - i / len(leaves)) for i, n in enumerate(leaves)]
    pp = BudgetPostprocessor(policy=write_policy(tmp_path), docstore=store)
    engine = RetrieverQueryEngine.from_args(_GivenScores(scored), llm=MockLLM(), node_postprocessors=[pp])
    response = engine.query("how do refunds work?")
    chosen = response.source_nodes
    assert chosen and all(n.node.metadata["ctxbudget_decision"] == "included" for n in chosen)
    assert sum(n.node.metadata["ctxbudget_tokens"] for n in chosen) <= 120
    (rec,) = records(tmp_path / "audit" / "decisions.jsonl")
    assert rec["input"]["count"] > len(leaves)  # the ancestors were candidates too
    assert any(n.node.child_nodes for n in chosen)  # a merged parent was chosen
    assert audit_verify(tmp_path / "audit" / "decisions.jsonl")[0] == 0


def test_numpy_scores_and_datetime_metadata(tmp_path: Path) -> None:
    """Regression: a reranker assigns ``NodeWithScore.score = np.float32(...)`` (no
    validation on assignment), readers put ``datetime`` values in metadata."""
    when = dt.datetime(2026, 11, 30, 9, 15)
    scored = NodeWithScore(node=TextNode(text=CHILDREN[0], id_="a", metadata={"modified": when}), score=0.1)
    scored.score = np.float32(0.75)  # type: ignore[assignment]
    assert isinstance(scored.score, np.float32)
    pp = BudgetPostprocessor(policy=write_policy(tmp_path))
    (kept,) = pp.postprocess_nodes([scored])
    (rec,) = records(tmp_path / "audit" / "decisions.jsonl")
    assert rec["input"]["items"][0]["metadata"] == {"modified": "2026-11-30T09:15:00"}
    assert rec["input"]["items"][0]["relevance_score"] == float(np.float32(0.75))
    assert kept.node.metadata["modified"] == when  # the node's own metadata keeps its type


def test_a_missing_score_is_an_error_unless_the_policy_names_a_default(tmp_path: Path) -> None:
    nodes = [NodeWithScore(node=TextNode(text=CHILDREN[0], id_="a"), score=0.6),
             NodeWithScore(node=TextNode(text=CHILDREN[1], id_="b"))]
    strict = BudgetPostprocessor(policy=write_policy(tmp_path / "strict"), audit_log=False)
    with pytest.raises(CandidateError) as err:
        strict.postprocess_nodes(nodes)
    assert (err.value.code, err.value.path) == ("candidate.missing_score", "$[1].relevance_score")
    assert err.value.message == ("item 'b' (#1) has no relevance score; set NodeWithScore.score (a retriever "
                                 "does), or set spec.candidates.default_score in the policy to score such items")
    lenient = BudgetPostprocessor(policy=write_policy(tmp_path / "lenient", extra="  candidates: {default_score: 0.2}\n"),
                                  audit_log=False)
    assert [n.node_id for n in lenient.postprocess_nodes(nodes)] == ["a", "b"]
    with pytest.raises(CandidateError) as err:
        strict.decide([nodes[0], "text"])  # type: ignore[list-item]
    assert (err.value.code, err.value.path) == ("candidate.bad_type", "$[1]")


def test_the_example_runs_offline_and_logs_a_verifiable_record(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    example = runpy.run_path(str(EXAMPLES / "llamaindex_budget.py"))
    log = tmp_path / "llamaindex.jsonl"
    kept = example["main"](["--audit-log", str(log)])
    assert kept and all(n.node.metadata["ctxbudget_decision"] == "included" for n in kept)
    assert "merged parent" in capsys.readouterr().out
    assert audit_verify(log)[0] == 0
