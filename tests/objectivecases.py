"""Helpers of the objective's document and reading-order tests
(tests/test_objective_documents.py, tests/test_objective_positions.py): a policy of a
spec, a candidate row with a document id and a parent, and the objective's values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.allocate import to_candidates
from engine.objective import RELEVANCE_SCALE, objective_values
from engine.policy import Calibration, CalibrationGroup, Objective, Policy, Transform

S = RELEVANCE_SCALE
#: Identity transform, each score over the best of all: values are the (weighted) scores.
FLAT = Objective(Transform.IDENTITY, calibrate=Calibration.MAX, calibrate_within=CalibrationGroup.ALL)


def policy(name: str = "documents", **spec: Any) -> Policy:
    body = {"budget": {"max_tokens": 1000, "separator": "|"}, "tokenizer": "approx:utf8_bytes", **spec}
    return Policy.from_mapping({"apiVersion": "ctxbudget/v1", "kind": "BudgetPolicy",
                                "metadata": {"name": name, "revision": "1"}, "spec": body})


def row(sid: str, rel: float, doc: str | None, size: int = 10, level: str = "SENTENCE",
        parent: str | None = None) -> dict[str, Any]:
    meta = {"doc_id": doc} if doc is not None else {}
    return {"source_id": sid, "content": sid[0] * size, "relevance_score": rel, "level": level, "metadata": meta,
            "parent_id": parent}


def values(objective: Objective, rows: list[dict[str, Any]], active: Sequence[int] | None = None) -> list[int]:
    cands = to_candidates(rows)
    order = sorted(range(len(cands)), key=lambda i: (-cands[i].relevance_score, i))
    act = list(range(len(cands))) if active is None else list(active)
    return list(objective_values(objective, cands, act, order, {c.source_id: c for c in cands}))
