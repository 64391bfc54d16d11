"""Haystack: a BM25 pipeline that fills the context by token budget, offline.

    pip install 'ctxbudget[haystack]'
    python examples/haystack_budget.py [--audit-log audit/haystack.jsonl]

An indexing pipeline splits a help-center page with HierarchicalDocumentSplitter and
writes the leaves to one in-memory store and their parents to another (the layout of
Haystack's AutoMergingRetriever); the query pipeline retrieves leaves with BM25 (real
scores, no model) and ``BudgetSelector`` decides under ``examples/adapters.yaml``,
fetching the parents so that one can replace its leaves (the auto-merging threshold is
the policy's ``prefer_parent_ratio``, solved with the budget).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# Offline means offline: Haystack's usage telemetry is read once, at its first import.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

from haystack import Document, Pipeline  # noqa: E402
from haystack.components.preprocessors import HierarchicalDocumentSplitter  # noqa: E402
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever  # noqa: E402
from haystack.document_stores.in_memory import InMemoryDocumentStore  # noqa: E402

from engine.integrations.haystack import BudgetSelector  # noqa: E402

POLICY = Path(__file__).with_name("adapters.yaml")

PAGE = (
    "Refunds: annual plans are refunded in full within 30 days of purchase. After that, unused months "
    "are refunded pro rata. Monthly plans are not refunded, but you can cancel at any time. "
    "Invoices: every invoice is e-mailed to the billing contact. You can download each one as a PDF from "
    "Settings, Billing. Invoices list the VAT number you entered. "
    "Security: passwords need twelve characters. Turn on two-factor authentication under Settings, "
    "Security. Single sign-on is on the Enterprise plan only. "
    "Data export: owners can export a workspace as Markdown or JSON from Settings, Data. Exports of more "
    "than one gigabyte are e-mailed as a download link that stays valid for seven days."
)


def main(argv: list[str] | None = None) -> list[Document]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audit-log", help="append the decision's audit record to this log")
    args = parser.parse_args(argv)
    blocks = HierarchicalDocumentSplitter(block_sizes={30, 10}, split_overlap=0, split_by="word").run(
        [Document(content=PAGE, meta={"source": "billing.md"})])["documents"]
    leaves, parents = InMemoryDocumentStore(), InMemoryDocumentStore()
    leaves.write_documents([d for d in blocks if not d.meta["__children_ids"]])
    parents.write_documents([d for d in blocks if d.meta["__children_ids"]])

    pipe = Pipeline()
    pipe.add_component("retriever", InMemoryBM25Retriever(leaves, top_k=10))
    pipe.add_component("budget", BudgetSelector(policy=POLICY, document_store=parents,
                                                audit_log=args.audit_log or False))
    pipe.connect("retriever.documents", "budget.documents")
    query = "Are annual plans refunded?"
    out = pipe.run({"retriever": {"query": query}, "budget": {"query": query}})["budget"]
    for d in [*out["documents"], *out["excluded"]]:
        m = d.meta
        print(f"{m['ctxbudget_decision']:8} {m['ctxbudget_reason']:18} {m['ctxbudget_tokens']:3} tokens  "
              f"level {m['__level']}  score {d.score:.2f}  {d.content[:40]!r}")
    print(f"decision {out['decision_id']}: {len(out['documents'])} document(s) in the context")
    return list(out["documents"])


if __name__ == "__main__":
    main()
