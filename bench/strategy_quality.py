"""Greedy vs density vs optimal on knapsack-shaped inputs: share of the optimal relevance.

    .venv/bin/python bench/strategy_quality.py

Uses the perf harness's seeded instances (bench/instances.py: uncorrelated, weakly and
strongly correlated relevance vs size) with the identity objective, so "value" is the
plain sum of relevance the seed's OPTIMAL promised to maximise. Prints a Markdown table.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.instances import budget_only  # noqa: E402
from engine import BudgetStrategy, allocate  # noqa: E402
from engine.policy import PLAIN_IDENTITY  # noqa: E402

STRATEGIES = (BudgetStrategy.GREEDY, BudgetStrategy.DENSITY, BudgetStrategy.BALANCED, BudgetStrategy.OPTIMAL)


def relevance_sum(alloc) -> float:  # type: ignore[no-untyped-def]
    return sum(d.relevance for d in alloc.included)


def main() -> None:
    print("| input | n | greedy | density | balanced | optimal |")
    print("|---|---:|---:|---:|---:|---:|")
    shares: dict[BudgetStrategy, list[float]] = {s: [] for s in STRATEGIES}
    for kind in ("uncorrelated", "weak", "strong"):
        for n in (100, 1_000, 10_000):
            inst = budget_only(n, kind)
            policy = inst.policy.replace(objective=PLAIN_IDENTITY)
            got = {s: relevance_sum(allocate(inst.items, policy.replace(strategy=s))) for s in STRATEGIES}
            best = got[BudgetStrategy.OPTIMAL]
            row = []
            for s in STRATEGIES:
                share = got[s] / best if best else 1.0
                shares[s].append(share)
                row.append(f"{share:.2%}")
            print(f"| {kind} | {n:,} | " + " | ".join(row) + " |")
    print("| **mean** | | " + " | ".join(f"**{statistics.mean(v):.2%}**" for v in shares.values()) + " |")


if __name__ == "__main__":
    main()
