"""False differences of ``audit replay`` on a fixed set of recorded decisions.

Records real decisions through :func:`engine.decide.decide` into an audit log in a
temporary folder — every shipped policy on its fixture candidates, an infeasible one, a
BPE-repaired one and a forced solver fallback (CP-SAT made to raise), each with and
without ``audit.store_content`` — then replays every record under its own policy. Each
replay that is not identical is a false difference: nothing changed between the run and
the replay.

    python bench/replay_check.py        # prints one line per decision and the totals
    python bench/replay_check.py --large   # also: record check and replay time, 10,000 candidates
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ortools.sat.python import cp_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import AuditLog, InfeasibleError, load_policy  # noqa: E402
from engine.audit.privacy import SECRET_ENV, create_secret  # noqa: E402
from engine.audit.replay import replay_log  # noqa: E402
from engine.candfile import load_candidates_file  # noqa: E402
from engine.candidates import BudgetItem, from_mappings  # noqa: E402
from engine.decide import decide  # noqa: E402
from engine.policy import AuditSettings, BudgetStrategy, LevelRule, Policy, SolverSettings  # noqa: E402


@contextmanager
def cp_sat_crashes() -> Iterator[None]:
    """CP-SAT raises inside its own solve: the façade falls back to a heuristic."""
    original = cp_model.CpSolver.solve

    def boom(*_a: Any, **_k: Any) -> Any:
        raise MemoryError("out of memory in presolve")

    cp_model.CpSolver.solve = boom  # type: ignore[method-assign]
    try:
        yield
    finally:
        cp_model.CpSolver.solve = original  # type: ignore[method-assign]


def hard_items(n: int = 50, seed: int = 7) -> list[BudgetItem]:
    rng = random.Random(seed)
    out = []
    for k in range(n):
        w = rng.randint(10, 1000)
        out.append(BudgetItem(f"c{k} " + "word " * (w // 2), (w + 100) / 1100, None, f"id{k}", "PARAGRAPH", {}))
    return out


BPE = [{"source_id": "bang", "content": "!", "relevance_score": 0.9},
       {"source_id": "dash", "content": "-ab", "relevance_score": 0.5}]


def record_decisions(log: AuditLog) -> list[str]:
    """Append the decision set to ``log``; returns one label per decision, in log order."""
    labels = []
    for store in (False, True):
        audit = AuditSettings(store_content=store)
        tag = "content stored" if store else "content not stored"
        for policy_file in sorted((ROOT / "policies").glob("*.yaml")):
            if policy_file.stem == "base":
                continue
            policy = load_policy(policy_file).replace(audit=audit)
            rows = load_candidates_file(ROOT / "tests" / "fixtures" / "candidates" / f"{policy_file.stem}.jsonl")
            decide(from_mappings(rows), policy, audit_log=log)
            labels.append(f"{policy_file.stem} ({tag})")
        tight = load_policy(ROOT / "policies" / "support-assistant.yaml").replace(
            max_tokens=50, context_window=None, reserve_output=0, reserve_prompt=0, audit=audit)
        try:
            decide(from_mappings([({"source_id": "refund-terms", "content": "word " * 200,
                                    "relevance_score": 0.5}, None)]), tight, audit_log=log)
        except InfeasibleError:
            labels.append(f"infeasible ({tag})")
        for strategy in BudgetStrategy:
            bpe = Policy.default(2, separator="", tokenizer="cl100k_base", audit=audit)
            decided = decide(BPE, bpe, audit_log=log, strategy=strategy)
            assert decided.allocation.repairs, "the BPE case must be repaired"
            labels.append(f"BPE repaired, {strategy.value} ({tag})")
        fb = Policy.default(5_000, separator="", strategy=BudgetStrategy.OPTIMAL, solver=SolverSettings(),
                            levels=(LevelRule("PARAGRAPH", max_items=100_000),), audit=audit)
        with cp_sat_crashes():
            decided = decide(hard_items(), fb, audit_log=log)
        assert decided.allocation.selection.status == "fallback"
        labels.append(f"forced fallback ({tag})")
    return labels


def large(n: int = 10_000) -> None:
    """Seconds to check and to replay one decision over ``n`` candidates."""
    from engine.audit.records import check_record
    from engine.audit.replay import replay

    rng = random.Random(1)
    rows = [{"source_id": f"d{k}", "content": "word " * rng.randint(5, 60), "relevance_score": rng.random()}
            for k in range(n)]
    for store in (False, True):
        rec = decide(rows, Policy.default(20_000, audit=AuditSettings(store_content=store))).record
        t0 = time.perf_counter()
        found = check_record(rec, 1)
        t1 = time.perf_counter()
        result = replay(rec, findings=found)
        t2 = time.perf_counter()
        print(f"{n:,} candidates, content {'stored' if store else 'not stored'}: check {t1 - t0:.2f} s "
              f"({len(found)} findings), replay {t2 - t1:.2f} s ({'identical' if result.identical else 'DIFFERENT'})")


def main() -> int:
    if "--large" in sys.argv[1:]:
        large()
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as keys:
        if not os.environ.get(SECRET_ENV):  # a throw-away audit secret, outside the log's folder
            os.environ[SECRET_ENV] = str(create_secret(Path(keys) / "audit.secret").source)
        log = AuditLog(Path(tmp) / "audit.jsonl")
        labels = record_decisions(log)
        results = replay_log(log)
        false = 0
        for label, result in zip(labels, results):
            false += not result.identical
            print(f"{'identical' if result.identical else 'DIFFERENT':9}  {label}: {result.summary()}")
        print(f"{len(results)} decisions replayed under their own policy: {false} false differences")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
