"""Real recorded decisions for the record-check and replay tests: every kind a log holds
(allocated, infeasible, BPE-repaired, forced fallback), with and without stored content,
and a way to rewrite a log and reseal its chain as a forger without any key would."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ortools.sat.python import cp_model

from engine import AuditLog, InfeasibleError, load_policy
from engine.audit.compact import expand
from engine.audit.lineformat import GENESIS_HASH, EnvelopeKind, seal
from engine.candfile import load_candidates_file
from engine.candidates import BudgetItem, from_mappings
from engine.decide import decide
from engine.policy import AuditSettings, BudgetStrategy, LevelRule, Policy, SolverSettings

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = ROOT / "policies" / "support-assistant.yaml"
BPE = [{"source_id": "bang", "content": "!", "relevance_score": 0.9},
       {"source_id": "dash", "content": "-ab", "relevance_score": 0.5}]


def support_rows() -> Any:
    return from_mappings(load_candidates_file(ROOT / "tests" / "fixtures" / "candidates" / "support-assistant.jsonl"))


def support(store: bool) -> Policy:
    # each variant its own revision: one log refuses two texts under one revision
    base = load_policy(SUPPORT)
    return base.replace(audit=AuditSettings(store_content=store),
                        revision=f"{base.revision}+{'stored' if store else 'hashed'}")


def allocated(log: AuditLog, store: bool) -> dict[str, Any]:
    return decide(support_rows(), support(store), audit_log=log).record


def infeasible(log: AuditLog, store: bool) -> None:
    tight = support(store).replace(max_tokens=50, context_window=None, reserve_output=0, reserve_prompt=0,
                                   revision=f"tight-{store}")
    with pytest.raises(InfeasibleError):
        decide(from_mappings([({"source_id": "refund-terms", "content": "word " * 200,
                                "relevance_score": 0.5}, None)]), tight, audit_log=log)


def repaired(log: AuditLog, store: bool, strategy: BudgetStrategy) -> dict[str, Any]:
    pol = Policy.default(2, separator="", tokenizer="cl100k_base", audit=AuditSettings(store_content=store),
                         revision=f"bpe-{store}")
    decided = decide(BPE, pol, audit_log=log, strategy=strategy)
    assert decided.record["repairs"] == [{"dropped": "dash", "tokens_before": 3, "tokens_after": 1}]
    return decided.record


def hard_items(n: int = 40, seed: int = 7) -> list[BudgetItem]:
    rng = random.Random(seed)
    return [BudgetItem(f"c{k} " + "word " * (w // 2), (w + 100) / 1100, None, f"id{k}", "PARAGRAPH", {})
            for k, w in enumerate(rng.randint(10, 600) for _ in range(n))]


def fallback(log: AuditLog, store: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """CP-SAT raises inside its own solve: the façade answers with a heuristic."""
    def boom(*_a: Any, **_k: Any) -> Any:
        raise MemoryError("out of memory in presolve")

    pol = Policy.default(3_000, separator="", strategy=BudgetStrategy.OPTIMAL, solver=SolverSettings(),
                         levels=(LevelRule("PARAGRAPH", max_items=100_000),),
                         audit=AuditSettings(store_content=store), revision=f"fallback-{store}")
    with monkeypatch.context() as m:
        m.setattr(cp_model.CpSolver, "solve", boom)
        decided = decide(hard_items(), pol, audit_log=log)
    assert decided.record["solver"]["status"] == "fallback"
    return decided.record


def every_kind(log: AuditLog, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Append one decision of each kind, content stored and not; their labels."""
    labels = []
    for store in (False, True):
        tag = "stored" if store else "not stored"
        allocated(log, store)
        infeasible(log, store)
        labels += [f"allocated, {tag}", f"infeasible, {tag}"]
        for strategy in BudgetStrategy:
            repaired(log, store, strategy)
            labels.append(f"repaired {strategy.value}, {tag}")
        fallback(log, store, monkeypatch)
        labels.append(f"fallback, {tag}")
    return labels


def envelopes(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def reseal(path: Path, records: list[dict[str, Any]]) -> None:
    """Write ``records`` as a fresh, valid hash chain (what a forger without a key can do)."""
    prev, out = GENESIS_HASH, b""
    for seq, rec in enumerate(records, 1):
        line = seal(seq, prev, EnvelopeKind.DECISION, rec)
        prev = json.loads(line)["hash"]
        out += line
    path.write_bytes(out)


def rewrite(path: Path, edit: Callable[[dict[str, Any]], None], index: int = 0) -> None:
    """Apply ``edit`` to the record at ``index`` and reseal the whole chain."""
    records = [e["record"] for e in envelopes(path)]
    records[index] = expand(records[index])  # a forger edits a compact record in full
    edit(records[index])
    reseal(path, records)  # the others are resealed byte for byte
