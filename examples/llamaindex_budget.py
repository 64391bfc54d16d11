"""LlamaIndex: auto-merging under a token budget, offline.

    pip install 'ctxbudget[llamaindex]'
    python examples/llamaindex_budget.py [--audit-log audit/llamaindex.jsonl]

A HierarchicalNodeParser splits a help-center page into sections, paragraphs and
sentences; the leaves are "retrieved" with given scores (no embedding model, no LLM);
``BudgetPostprocessor`` fetches their parents from the docstore and decides under
``examples/adapters.yaml`` whether a parent replaces its children — the policy's
``prefer_parent_ratio`` is the auto-merging threshold, solved jointly with the budget.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

from llama_index.core.node_parser import HierarchicalNodeParser, get_leaf_nodes
from llama_index.core.schema import Document, NodeWithScore
from llama_index.core.storage.docstore import SimpleDocumentStore

from engine.integrations.llamaindex import BudgetPostprocessor

POLICY = Path(__file__).with_name("adapters.yaml")

PAGE = """Refunds: annual plans are refunded in full within 30 days of purchase. After that, unused
months are refunded pro rata. Monthly plans are not refunded, but you can cancel at any time.

Invoices: every invoice is e-mailed to the billing contact. You can download each one as a PDF
from Settings, Billing. Invoices list the VAT number you entered.

Security: passwords need twelve characters. Turn on two-factor authentication under Settings,
Security, and sign out of old sessions there. Single sign-on is on the Enterprise plan only."""


def main(argv: list[str] | None = None) -> list[NodeWithScore]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audit-log", help="append the decision's audit record to this log")
    args = parser.parse_args(argv)
    splitter = HierarchicalNodeParser.from_defaults(chunk_sizes=[48, 24], chunk_overlap=0)
    with contextlib.redirect_stdout(io.StringIO()):  # its note that chunks under 50 tokens are small
        nodes = splitter.get_nodes_from_documents([Document(text=PAGE, id_="billing")])
    docstore = SimpleDocumentStore()
    docstore.add_documents(nodes)
    leaves = get_leaf_nodes(nodes)
    # What a vector retriever over the leaves would return: the refund sentences first.
    retrieved = [NodeWithScore(node=n, score=0.9 if "refund" in n.text.lower() else 0.2) for n in leaves]
    budget = BudgetPostprocessor(policy=POLICY, docstore=docstore, audit_log=args.audit_log or False)
    decision = budget.decide(retrieved, "How do I get a refund for an annual plan?")
    for n in decision.annotated:
        m = n.node.metadata
        kind = "merged parent" if n.node.child_nodes else "leaf"
        print(f"{m['ctxbudget_decision']:8} {m['ctxbudget_reason']:18} {m['ctxbudget_tokens']:3} tokens  "
              f"{kind:13} {n.node.get_content()[:50]!r}")
    print(f"decision {decision.outcome.decision_id}: {len(decision.nodes)} node(s) in the context")
    return decision.nodes


if __name__ == "__main__":
    main()
