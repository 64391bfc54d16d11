"""LangChain: fill the context by token budget instead of top-k, offline.

    pip install 'ctxbudget[langchain]'
    python examples/langchain_budget.py [--audit-log audit/langchain.jsonl]

Retrieved documents (here in memory, with the scores a retriever would give) go through
``BudgetCompressor`` under ``examples/adapters.yaml``: the refund section replaces its
paragraphs (the hierarchy rule), and every document carries its decision in metadata.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from langchain_core.documents import Document

from engine.integrations.langchain import BudgetCompressor

POLICY = Path(__file__).with_name("adapters.yaml")

SECTION = ("Refunds: annual plans are refunded in full within 30 days of purchase. After that, "
           "unused months are refunded pro rata. Monthly plans are not refunded.")
PARAGRAPHS = ["Annual plans are refunded in full within 30 days of purchase.",
              "After that, unused months are refunded pro rata.",
              "Monthly plans are not refunded."]
INVOICES = ("Invoices: every invoice is e-mailed to the billing contact and can be downloaded as a "
            "PDF from Settings, Billing. " * 2)


def documents() -> list[tuple[Document, float]]:
    """What ``vector_store.similarity_search_with_score(query)`` returns: pairs."""
    section = Document(SECTION, id="refunds", metadata={"level": "SECTION", "source": "billing.md"})
    kids = [Document(text, id=f"refunds-{n}", metadata={"parent_id": "refunds", "source": "billing.md"})
            for n, text in enumerate(PARAGRAPHS)]
    invoices = Document(INVOICES, metadata={"source": "billing.md"})  # id None, as loaders leave it
    return [(kids[0], 0.91), (kids[1], 0.84), (section, 0.62), (invoices, 0.45), (kids[2], 0.30)]


def main(argv: list[str] | None = None) -> list[Document]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audit-log", help="append the decision's audit record to this log")
    args = parser.parse_args(argv)
    compressor = BudgetCompressor(policy=POLICY, audit_log=args.audit_log or False)
    decision = compressor.decide(documents(), "How do I get a refund for an annual plan?")
    for doc in decision.annotated:
        m = doc.metadata
        print(f"{m['ctxbudget_decision']:8} {m['ctxbudget_reason']:18} {m['ctxbudget_tokens']:3} tokens  {doc.id}")
    print(f"decision {decision.outcome.decision_id}: {len(decision.documents)} document(s) in the context")
    return decision.documents


if __name__ == "__main__":
    main()
