"""A signed audit log for the report tests, written by the engine: four signed decisions
(optimal; optimal over candidates with hostile ids; infeasible; a forced fallback) over
ten days, then an unsigned tail of two (an optimal one, and one a forger without the key
edited and resealed: an excluded item flipped to included, ``<script>`` put in its
decision id and in a reason)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from ortools.sat.python import cp_model

from auditcases import hard_items, rewrite, support, support_rows
from engine import AuditLog, InfeasibleError, cli
from engine.audit.signing import Signer
from engine.candidates import from_mappings
from engine.decide import decide
from engine.policy import AuditSettings, BudgetStrategy, LevelRule, Policy, SolverSettings

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
IDS = [f"00000000-0000-4000-8000-00000000000{k}" for k in range(1, 7)]
OPTIMAL, HOSTILE, INFEASIBLE, FALLBACK, TAIL, TAMPERED = IDS
#: what the forger writes into the tampered record (its decision id and one reason)
SCRIPT_ID = "<script>document.body.setAttribute('data-pwned','id')</script>"
SCRIPT_REASON = "<script>document.body.setAttribute('data-pwned','reason')</script>"
#: a genuine candidate id that is markup
IMG_ID = "<img src=x onerror=\"document.body.setAttribute('data-pwned','img')\">"


@dataclass(frozen=True)
class ReportLog:
    path: Path
    public_key: Path
    tampered_id: str = SCRIPT_ID


def _fallback(log: AuditLog, when: datetime) -> None:
    def boom(*_a: object, **_k: object) -> object:
        raise MemoryError("out of memory in presolve")

    pol = Policy.default(3_000, separator="", strategy=BudgetStrategy.OPTIMAL, solver=SolverSettings(),
                         levels=(LevelRule("PARAGRAPH", max_items=100_000),),
                         audit=AuditSettings(store_content=True))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(cp_model.CpSolver, "solve", boom)
        decide(hard_items(), pol, audit_log=log, decision_id=FALLBACK, now=when)


def build(folder: Path, stored: Policy | None = None) -> ReportLog:
    """The log in ``folder/logs``, its keys in ``folder/keys``; ``stored``: the support
    policy with content stored (default: loaded from its absolute path)."""
    keys = folder / "keys"
    assert cli.main(["audit", "keygen", "--out", str(keys), "--name", "acme"]) == 0
    (folder / "logs").mkdir()
    path = folder / "logs" / "decisions.jsonl"
    stored = stored or support(True)
    log = AuditLog(path, signer=Signer.from_file(keys / "acme.key"))
    decide(support_rows(), stored, audit_log=log, decision_id=OPTIMAL, now=T0)
    hostile = [{"source_id": IMG_ID, "content": "A refund needs the receipt.", "relevance_score": 0.9,
                "metadata": {"doc": "<b>bold</b>"}},
               {"source_id": "kb#\u202etxt.exe", "content": "word " * 400, "relevance_score": 0.4}]
    decide(hostile, Policy.default(120, tokenizer="cl100k_base").replace(name="<i>docs</i>", revision="r\"7"),
           audit_log=log, decision_id=HOSTILE, now=T0 + timedelta(days=2, hours=3))
    tight = stored.replace(max_tokens=50, context_window=None, reserve_output=0, reserve_prompt=0,
                           revision=f"{stored.revision}+tight")  # one log: one text per revision
    with pytest.raises(InfeasibleError):
        decide(from_mappings([({"source_id": "refund-terms", "content": "word " * 200, "relevance_score": 0.5}, None)]),
               tight, audit_log=log, decision_id=INFEASIBLE, now=T0 + timedelta(days=5))
    _fallback(log, T0 + timedelta(days=7, hours=1))
    log.close()  # signs records 1..4
    tail = AuditLog(path, signer=None)
    decide(support_rows(), stored, audit_log=tail, decision_id=TAIL, now=T0 + timedelta(days=9))
    decide(support_rows(), stored, audit_log=tail, decision_id=TAMPERED, now=T0 + timedelta(days=10))
    tail.close()

    def forge(rec: dict[str, object]) -> None:
        items = rec["items"]
        assert isinstance(items, list)
        out = next(it for it in items if it["decision"] == "excluded")
        out["decision"], out["reason"] = "included", "selected"
        other = next(it for it in items if it["decision"] == "excluded")
        other["reason"] = SCRIPT_REASON
        rec["decision_id"] = SCRIPT_ID

    rewrite(path, forge, index=5)
    assert json.loads(path.read_text().splitlines()[5])["record"]["decision_id"] == SCRIPT_ID
    return ReportLog(path, keys / "acme.pub")
