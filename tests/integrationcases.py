"""What the three adapter test modules share: the policy they select under (budget,
hierarchy rule with ``prefer_parent_ratio``, an audit log next to it) and the check
that the log they wrote verifies with ``ctxbudget audit verify``."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

from engine.cli import main

#: A policy for the adapter tests: 120 tokens, hierarchy with the parent preferred once
#: half of its children would be chosen (LlamaIndex's and Haystack's auto-merging
#: threshold), and every decision logged with its content.
POLICY = """\
apiVersion: ctxbudget/v1
kind: BudgetPolicy
metadata: {{name: adapters, revision: "1"}}
spec:
  tokenizer: cl100k_base
  budget: {{max_tokens: {max_tokens}}}
  hierarchy: {{exclusive: true, prefer_parent_ratio: 0.5}}
{extra}  audit: {{log: audit/decisions.jsonl, store_content: true}}
"""


def write_policy(folder: Path, *, max_tokens: int = 120, extra: str = "", name: str = "policy.yaml") -> Path:
    """A policy file in ``folder`` (``extra``: more ``spec`` lines, indented two spaces)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(POLICY.format(max_tokens=max_tokens, extra=extra), encoding="utf-8")
    return path


#: A parent section (32 tokens) and its three paragraphs (13, 9, 7), and an unrelated
#: paragraph (92): the texts every adapter test retrieves, each framework's own document
#: type built from them. In 120 tokens the two best paragraphs fit beside the shipping
#: text and the section does not: without ``prefer_parent_ratio`` the paragraphs and the
#: shipping text are chosen, with it (2 of 3 >= 0.5) the section replaces its paragraphs.
PARENT = ("Refunds: a customer may return any item within 30 days of delivery. The refund goes "
          "to the original payment method once the warehouse has checked the item.")
CHILDREN = ("A customer may return any item within 30 days of delivery.",
            "The refund goes to the original payment method.",
            "The warehouse checks the item first.")
OTHER = "Shipping: " + " ".join(f"parcels to zone {n} take {n + 2} days." for n in range(9))


#: The scores the tests give: paragraphs 0.9, 0.8, 0.3; section 0.5; shipping 0.4.
SCORES = {"refunds-0": 0.9, "refunds-1": 0.8, "refunds": 0.5, "shipping": 0.4, "refunds-2": 0.3}
#: The reasons under the policy above, and under it without ``prefer_parent_ratio``.
MERGED = {"refunds-0": "hierarchy_conflict", "refunds-1": "hierarchy_conflict", "refunds": "selected",
          "shipping": "over_budget", "refunds-2": "hierarchy_conflict"}
UNMERGED = {"refunds-0": "selected", "refunds-1": "selected", "refunds": "over_budget",
            "shipping": "selected", "refunds-2": "over_budget"}


def audit_verify(log: Path) -> tuple[int, str]:
    """``ctxbudget audit verify LOG``: its exit code and output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["audit", "verify", str(log)])
    return code, out.getvalue()


def records(log: Path) -> list[dict[str, Any]]:
    """The decision records of a log (one JSON line each)."""
    out = []
    for line in log.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        out.append(entry.get("record", entry))
    return out
