"""engine.integrations.haystack against the real haystack-ai (the haystack extra, in the
test extra so CI runs it). haystack is imported once, by this module."""

from __future__ import annotations

import datetime as dt
import runpy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from haystack import Document, Pipeline
from haystack.components.preprocessors import HierarchicalDocumentSplitter
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.components.writers import DocumentWriter
from haystack.core.errors import SerializationError
from haystack.dataclasses import ByteStream
from haystack.document_stores.in_memory import InMemoryDocumentStore

from engine.errors import CandidateError
from engine.integrations.core import META_KEYS
from engine.integrations.haystack import BudgetSelector
from engine.policy import Hierarchy, Policy, load_policy

from integrationcases import (CHILDREN, MERGED, OTHER, PARENT, SCORES, UNMERGED, audit_verify, records,
                              write_policy)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_haystack_telemetry_is_off() -> None:
    """tests/conftest.py turns Haystack's telemetry off before the import: no test sends it."""
    from haystack.telemetry import _telemetry

    assert _telemetry.telemetry is None


def _docs() -> list[Document]:
    """The section and its paragraphs with the splitter's meta (``__parent_id``, ``__level``)."""
    kids = [Document(id=f"refunds-{n}", content=t, score=SCORES[f"refunds-{n}"],
                     meta={"__parent_id": "refunds", "__level": 2, "__children_ids": []})
            for n, t in enumerate(CHILDREN)]
    parent = Document(id="refunds", content=PARENT, score=SCORES["refunds"],
                      meta={"__parent_id": "billing", "__level": 1, "__children_ids": [k.id for k in kids]})
    other = Document(id="shipping", content=OTHER, score=SCORES["shipping"])
    return [kids[0], kids[1], parent, other, kids[2]]


def _reasons(result: dict[str, Any]) -> dict[str, str]:
    return {d.id: d.meta["ctxbudget_reason"] for d in [*result["documents"], *result["excluded"]]}


def test_selects_under_the_hierarchy_rule_and_logs_a_verifiable_record(tmp_path: Path) -> None:
    docs = _docs()
    selector = BudgetSelector(policy=write_policy(tmp_path))
    result = selector.run(documents=docs, query="how do refunds work?")
    assert [d.id for d in result["documents"]] == ["refunds"]
    assert [d.id for d in result["excluded"]] == ["refunds-0", "refunds-1", "shipping", "refunds-2"]
    assert _reasons(result) == MERGED
    assert all(d.meta["ctxbudget_decision_id"] == result["decision_id"]
               for d in [*result["documents"], *result["excluded"]])
    assert result["documents"][0].meta["ctxbudget_tokens"] == 32
    assert all(not set(META_KEYS) & set(d.meta) for d in docs)  # inputs untouched
    log = tmp_path / "audit" / "decisions.jsonl"
    code, out = audit_verify(log)
    assert code == 0, out
    (rec,) = records(log)
    assert rec["decision_id"] == result["decision_id"]
    # __level picks the level: 1 SECTION, 2 PARAGRAPH; no __level: PARAGRAPH
    assert [i.get("level", "PARAGRAPH") for i in rec["input"]["items"]] == [
        "PARAGRAPH", "PARAGRAPH", "SECTION", "PARAGRAPH", "PARAGRAPH"]
    unmerged = BudgetSelector(policy=load_policy(write_policy(tmp_path)).replace(hierarchy=Hierarchy(True, None)),
                              audit_log=False).run(documents=docs)
    assert _reasons(unmerged) == UNMERGED


def _index(store: InMemoryDocumentStore, *, leaves_only: bool = False,
           parents: InMemoryDocumentStore | None = None) -> list[Document]:
    """An indexing pipeline: HierarchicalDocumentSplitter (words) → DocumentWriter."""
    text = " ".join([PARENT, *CHILDREN, OTHER])
    docs = HierarchicalDocumentSplitter(block_sizes={40, 12}, split_overlap=0, split_by="word").run(
        [Document(content=text)])["documents"]
    leaves = [d for d in docs if not d.meta["__children_ids"]]
    index = Pipeline()
    index.add_component("writer", DocumentWriter(store))
    index.run({"writer": {"documents": leaves if leaves_only else docs}})
    if parents is not None:
        parents.write_documents([d for d in docs if d.meta["__children_ids"]])
    return docs


def test_a_bm25_pipeline_over_the_hierarchical_splitter(tmp_path: Path) -> None:
    """Retrieval over every level of the hierarchy (real BM25 scores), then the budget:
    never a block together with its ancestor, within 120 tokens, recorded."""
    store = InMemoryDocumentStore()
    docs = _index(store)
    pipe = Pipeline()
    pipe.add_component("retriever", InMemoryBM25Retriever(store, top_k=len(docs)))
    pipe.add_component("budget", BudgetSelector(policy=write_policy(tmp_path)))
    pipe.connect("retriever.documents", "budget.documents")
    query = "refund to the original payment method"
    out = pipe.run({"retriever": {"query": query}, "budget": {"query": query}})["budget"]
    chosen = out["documents"]
    assert chosen and sum(d.meta["ctxbudget_tokens"] for d in chosen) <= 120
    by_id = {d.id: d for d in docs}
    chosen_ids = {d.id for d in chosen}
    for d in chosen:  # no ancestor of a chosen block is chosen
        pid = d.meta["__parent_id"]
        while pid is not None:
            assert pid not in chosen_ids
            pid = by_id[pid].meta["__parent_id"]
    assert {d.meta["ctxbudget_reason"] for d in out["excluded"]} <= {
        "hierarchy_conflict", "over_budget", "too_large", "prefer_parent", "not_selected"}
    assert audit_verify(tmp_path / "audit" / "decisions.jsonl")[0] == 0


def test_auto_merging_fetches_parents_from_the_document_store(tmp_path: Path) -> None:
    """Leaves retrieved from one store, parents fetched from another (the layout of
    Haystack's AutoMergingRetriever): a parent replaces its retrieved leaves."""
    leaves, parents = InMemoryDocumentStore(), InMemoryDocumentStore()
    _index(leaves, leaves_only=True, parents=parents)
    retrieved = InMemoryBM25Retriever(leaves, top_k=20).run(query="refund payment warehouse item")["documents"]
    selector = BudgetSelector(policy=write_policy(tmp_path), document_store=parents, audit_log=False)
    out = selector.run(documents=retrieved)
    every = [*out["documents"], *out["excluded"]]
    assert len(every) > len(retrieved)  # the ancestors were candidates too
    fetched = [d for d in every if d.meta["__children_ids"]]
    assert fetched and all(d.score is not None for d in fetched)
    assert any(d.meta["__children_ids"] for d in out["documents"])  # a merged parent was chosen
    assert sum(d.meta["ctxbudget_tokens"] for d in out["documents"]) <= 120


def test_a_pipeline_with_the_selector_round_trips_through_yaml(tmp_path: Path) -> None:
    policy = write_policy(tmp_path)
    pipe = Pipeline()
    pipe.add_component("budget", BudgetSelector(policy=load_policy(policy), audit_log=str(tmp_path / "log.jsonl"),
                                                document_store=InMemoryDocumentStore(index="parents")))
    loaded = Pipeline.loads(pipe.dumps(), allowed_modules=["engine.integrations.haystack"])
    component = loaded.get_component("budget")
    assert isinstance(component, BudgetSelector)
    assert component.to_dict() == pipe.get_component("budget").to_dict()
    assert component.to_dict()["init_parameters"]["policy"] == str(policy)
    out = loaded.run({"budget": {"documents": _docs()}})["budget"]
    assert [d.id for d in out["documents"]] == ["refunds"]
    assert audit_verify(tmp_path / "log.jsonl")[0] == 0
    with pytest.raises(SerializationError, match="BudgetSelector holds a Policy that was not read from a file"):
        BudgetSelector(policy=Policy.default(100), audit_log=False).to_dict()


def test_numpy_scores_and_datetime_meta(tmp_path: Path) -> None:
    """Regression: rankers leave ``np.float32`` in ``Document.score``, converters put
    ``datetime`` values in meta; both are taken as they are."""
    when = dt.datetime(2026, 11, 30, 9, 15, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    doc = Document(content=CHILDREN[0], score=np.float32(0.75), meta={"modified": when, "page": np.int64(3)})
    out = BudgetSelector(policy=write_policy(tmp_path)).run(documents=[doc])
    (kept,) = out["documents"]
    assert kept.id == doc.id and kept.meta["modified"] == when
    (rec,) = records(tmp_path / "audit" / "decisions.jsonl")
    assert rec["input"]["items"][0]["metadata"] == {"modified": "2026-11-30T08:15:00Z", "page": 3}
    assert rec["input"]["items"][0]["relevance_score"] == float(np.float32(0.75))


def test_input_errors_name_the_document(tmp_path: Path) -> None:
    strict = BudgetSelector(policy=write_policy(tmp_path / "strict"), audit_log=False)
    with pytest.raises(CandidateError) as err:
        strict.run(documents=[Document(id="a", content="x", score=0.5), Document(id="b", content="y")])
    assert (err.value.code, err.value.path) == ("candidate.missing_score", "$[1].relevance_score")
    assert err.value.message == ("item 'b' (#1) has no relevance score; set Document.score (a retriever or "
                                 "ranker does), or set spec.candidates.default_score in the policy to score "
                                 "such items")
    lenient = BudgetSelector(policy=write_policy(tmp_path / "lenient", extra="  candidates: {default_score: 0.2}\n"),
                             audit_log=False)
    assert [d.id for d in lenient.run(documents=[Document(id="b", content="y")])["documents"]] == ["b"]
    with pytest.raises(CandidateError) as err:
        strict.run(documents=[Document(id="img", blob=ByteStream(b"\x89PNG"), score=0.5)])
    assert (err.value.code, err.value.path) == ("candidate.bad_content", "$[0].content")
    assert "has no text content (a blob only)" in err.value.message
    with pytest.raises(CandidateError) as err:
        strict.run(documents=[Document(id="deep", content="x", score=0.5, meta={"__level": 4})])
    assert (err.value.code, err.value.path) == ("candidate.bad_level", "$[0].level")
    assert err.value.message == ("document 'deep' (#0) has __level 4, but levels names 4 (DOCUMENT, SECTION, "
                                 "PARAGRAPH, SENTENCE); pass BudgetSelector(levels=[...]) with one level name "
                                 "per depth of the splitter's hierarchy")


def test_the_example_runs_offline_and_logs_a_verifiable_record(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    example = runpy.run_path(str(EXAMPLES / "haystack_budget.py"))
    log = tmp_path / "haystack.jsonl"
    kept = example["main"](["--audit-log", str(log)])
    assert kept and all(d.meta["ctxbudget_decision"] == "included" for d in kept)
    assert "in the context" in capsys.readouterr().out
    assert audit_verify(log)[0] == 0
