"""engine.integrations.langchain against the real langchain-core (the langchain extra,
in the test extra so CI runs it). langchain-core is imported once, by this module."""

from __future__ import annotations

import asyncio
import datetime as dt
import runpy
from pathlib import Path

import numpy as np
import pytest
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from engine.errors import CandidateError
from engine.integrations.core import META_KEYS
from engine.integrations.langchain import BudgetCompressor
from engine.policy import Hierarchy, load_policy

from integrationcases import (CHILDREN, MERGED, OTHER, PARENT, SCORES, UNMERGED, audit_verify, records,
                              write_policy)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _docs() -> list[tuple[Document, float]]:
    parent = Document(PARENT, id="refunds", metadata={"level": "SECTION"})
    kids = [Document(text, id=f"refunds-{n}", metadata={"parent_id": "refunds"})
            for n, text in enumerate(CHILDREN)]
    other = Document(OTHER, id="shipping")
    return [(d, SCORES[str(d.id)]) for d in (kids[0], kids[1], parent, other, kids[2])]


def test_selects_under_the_hierarchy_rule_and_logs_a_verifiable_record(tmp_path: Path) -> None:
    policy = write_policy(tmp_path)
    compressor = BudgetCompressor(policy=str(policy))
    assert isinstance(compressor, BaseDocumentCompressor)
    pairs = _docs()
    decision = compressor.decide(pairs, "how do refunds work?")
    # Two of the section's three paragraphs would be chosen (>= 0.5): the section is
    # taken instead, and the shipping text no longer fits beside it.
    assert [d.id for d in decision.documents] == ["refunds"]
    assert {d.id: d.metadata["ctxbudget_reason"] for d in decision.annotated} == MERGED
    for doc in decision.annotated:
        assert doc.metadata["ctxbudget_decision_id"] == decision.outcome.decision_id
        assert doc.metadata["ctxbudget_decision"] == ("included" if doc.id == "refunds" else "excluded")
    assert [d.metadata["ctxbudget_tokens"] for d in decision.annotated] == [13, 9, 32, 92, 7]
    assert all(not set(META_KEYS) & set(d.metadata) for d, _ in pairs)  # inputs untouched
    log = tmp_path / "audit" / "decisions.jsonl"
    code, out = audit_verify(log)
    assert code == 0, out
    assert "OK: 1 records verified" in out
    (rec,) = records(log)
    assert rec["decision_id"] == decision.outcome.decision_id
    # The same documents without the rule: the paragraphs and the shipping text.
    unmerged = BudgetCompressor(policy=load_policy(policy).replace(hierarchy=Hierarchy(True, None)),
                                audit_log=False).decide(pairs)
    assert {d.id: d.metadata["ctxbudget_reason"] for d in unmerged.annotated} == UNMERGED


def test_compress_documents_is_the_base_class_call_with_scores_in_metadata(tmp_path: Path) -> None:
    compressor = BudgetCompressor(policy=load_policy(write_policy(tmp_path)), audit_log=False)
    docs = [d.model_copy(update={"metadata": {**d.metadata, "relevance_score": s}}) for d, s in _docs()]
    kept = compressor.compress_documents(docs, "refunds")
    assert [d.id for d in kept] == ["refunds"]
    again = asyncio.run(compressor.acompress_documents(docs, "refunds"))  # the base class's async form
    assert [d.id for d in again] == ["refunds"]
    assert not (tmp_path / "audit").exists()  # audit_log=False writes no record


def test_runnable_form_in_a_chain_with_a_vector_store(tmp_path: Path) -> None:
    """An LCEL chain: retrieval with scores from a real vector store, then the budget."""
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=32))
    store.add_documents([Document(t) for t in (PARENT, *CHILDREN, OTHER)])
    retrieve = RunnableLambda(lambda q: store.similarity_search_with_score(q, k=5))
    chain = {"documents": retrieve, "query": RunnablePassthrough()} | BudgetCompressor(
        policy=write_policy(tmp_path, max_tokens=60, extra="  min_relevance: 0.0\n")).as_runnable()
    kept = chain.invoke("refunds")
    assert kept and sum(d.metadata["ctxbudget_tokens"] for d in kept) <= 60
    ids = {d.id for d in kept}
    assert len(ids) == len(kept)
    code, out = audit_verify(tmp_path / "audit" / "decisions.jsonl")
    assert code == 0, out
    # A plain list of documents is a valid input too (no query recorded).
    plain = BudgetCompressor(policy=write_policy(tmp_path / "plain"), audit_log=False).as_runnable()
    assert [d.id for d in plain.invoke(_docs())] == ["refunds"]


def test_numpy_scores_datetime_metadata_and_documents_without_id(tmp_path: Path) -> None:
    """Regression: what LangChain really hands over — ``Document.id`` None (the default),
    NumPy float32 scores (rerankers), ``datetime`` metadata (loaders) — is accepted."""
    when = dt.datetime(2026, 11, 30, 9, 15, tzinfo=dt.timezone.utc)
    docs = [(Document(PARENT, metadata={"updated": when, "rank": np.int64(1)}), np.float32(0.75)),
            (Document(CHILDREN[0], metadata={"updated": when.date()}), np.float32(0.5)),
            (Document(CHILDREN[0]), np.float64(0.25)),
            Document(CHILDREN[2], metadata={"relevance_score": np.float32(0.5)})]  # as a reranker writes it
    assert all((d[0] if isinstance(d, tuple) else d).id is None for d in docs)
    decision = BudgetCompressor(policy=write_policy(tmp_path)).decide(docs, "refunds")
    assert [d.id for d in decision.annotated] == [n.source_id for n in decision.outcome.annotations]
    (rec,) = records(tmp_path / "audit" / "decisions.jsonl")
    items = rec["input"]["items"]
    assert [i["source_id"] for i in items] == [
        "item-" + decision.outcome.decided.allocation.decisions[0].sha256[:12],
        "item-" + decision.outcome.decided.allocation.decisions[1].sha256[:12],
        "item-" + decision.outcome.decided.allocation.decisions[1].sha256[:12] + "~2",  # same text twice
        "item-" + decision.outcome.decided.allocation.decisions[3].sha256[:12]]
    assert items[0]["metadata"] == {"updated": "2026-11-30T09:15:00Z", "rank": 1}
    assert items[1]["metadata"] == {"updated": "2026-11-30"}
    assert items[0]["relevance_score"] == float(np.float32(0.75))
    assert items[3]["relevance_score"] == 0.5 and items[3]["metadata"] == {"relevance_score": 0.5}
    assert audit_verify(tmp_path / "audit" / "decisions.jsonl")[0] == 0


def test_a_missing_score_is_an_error_unless_the_policy_names_a_default(tmp_path: Path) -> None:
    docs = [Document(CHILDREN[0], id="a", metadata={"relevance_score": 0.6}), Document(CHILDREN[1], id="b")]
    strict = BudgetCompressor(policy=write_policy(tmp_path / "strict"), audit_log=False)
    with pytest.raises(CandidateError) as err:
        strict.compress_documents(docs, "q")
    assert err.value.code == "candidate.missing_score"
    assert err.value.path == "$[1].relevance_score"
    assert err.value.message == (
        "item 'b' (#1) has no relevance score; pass (Document, score) pairs "
        "(similarity_search_with_score) or set metadata['relevance_score'], or set "
        "spec.candidates.default_score in the policy to score such items")
    lenient = BudgetCompressor(policy=write_policy(tmp_path / "lenient", extra="  candidates: {default_score: 0.2}\n"),
                               audit_log=False)
    decision = lenient.decide(docs, "q")
    assert [d.relevance for d in decision.outcome.decided.allocation.decisions] == [0.6, 0.2]
    assert [d.id for d in decision.documents] == ["a", "b"]


def test_parent_key_and_a_second_pass_ignore_earlier_annotations(tmp_path: Path) -> None:
    """``parent_key="doc_id"`` reads a ParentDocumentRetriever's link; documents that
    went through once carry annotations that the second decision does not see as input."""
    compressor = BudgetCompressor(policy=write_policy(tmp_path), parent_key="doc_id", audit_log=False)
    docs = [(Document(PARENT, id="p", metadata={"level": "SECTION"}), 0.5)] + [
        (Document(t, id=f"c{n}", metadata={"doc_id": "p"}), 0.9 - n / 10) for n, t in enumerate(CHILDREN)]
    first = compressor.decide(docs)
    assert [d.id for d in first.documents] == ["p"]
    second = compressor.decide([(d, s) for d, (_, s) in zip(first.annotated, docs)])
    items = second.outcome.record["input"]["items"]
    assert all(not set(META_KEYS) & set(i.get("metadata", {})) for i in items)
    assert [d.id for d in second.documents] == ["p"]
    assert second.outcome.decision_id != first.outcome.decision_id


def test_a_non_document_is_refused_with_its_position(tmp_path: Path) -> None:
    compressor = BudgetCompressor(policy=write_policy(tmp_path), audit_log=False)
    with pytest.raises(CandidateError) as err:
        compressor.decide([Document("x", id="x", metadata={"relevance_score": 1.0}), "text"])
    assert (err.value.code, err.value.path) == ("candidate.bad_type", "$[1]")
    assert "expected a Document or a (Document, score) pair, got str" in err.value.message


def test_the_example_runs_offline_and_logs_a_verifiable_record(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    example = runpy.run_path(str(EXAMPLES / "langchain_budget.py"))
    log = tmp_path / "langchain.jsonl"
    kept = example["main"](["--audit-log", str(log)])
    assert [d.id for d in kept][0] == "refunds"
    assert [d.metadata["ctxbudget_reason"] for d in kept] == ["selected", "selected"]
    out = capsys.readouterr().out
    assert out.count("hierarchy_conflict") == 3 and "2 document(s) in the context" in out
    assert audit_verify(log)[0] == 0
