"""OPTIMAL against brute force under every rule kind: the big run of tests/test_bruteforce.py.

    .venv/bin/python bench/bruteforce_report.py                # 300 instances per kind
    .venv/bin/python bench/bruteforce_report.py --instances 50 --kind pins --kind chains

For each rule kind (``tests/bruteforce.py``: budget, min_relevance, quotas, source caps
by prefix / metadata / document, pins, blocks, hierarchy chains, prefer-parent, and a
mix of three at once) it draws seeded random instances of n <= 12 candidates, finds the
best feasible subset by enumerating all of them (feasibility by the independent
verifier), and compares OPTIMAL's answer: infeasible exactly when no subset is
feasible, otherwise the same maximum. Prints one table (kind, instances, feasible,
mismatches, seconds) and every mismatch; exit status 1 when there is any.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import bruteforce  # noqa: E402  (tests/bruteforce.py, shared with the suite)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=300, help="instances per rule kind (default 300)")
    ap.add_argument("--first-seed", type=int, default=0, help="seed of the first instance (default 0)")
    ap.add_argument("--kind", action="append", choices=bruteforce.KINDS,
                    help="only this rule kind (repeatable; default: all)")
    args = ap.parse_args(argv)
    rows, bad = [], []
    for kind in args.kind or bruteforce.KINDS:
        t0 = time.perf_counter()
        outs = [bruteforce.compare(kind, seed) for seed in range(args.first_seed, args.first_seed + args.instances)]
        miss = [o for o in outs if not o.ok]
        bad += miss
        rows.append((kind, len(outs), sum(o.feasible for o in outs), len(miss), time.perf_counter() - t0,
                     max(o.n for o in outs)))
    print("| rule kind | instances | feasible | mismatches | max n | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, n, feasible, miss, secs, max_n in rows:
        print(f"| {kind} | {n} | {feasible} | {miss} | {max_n} | {secs:.1f} |")
    total = sum(r[1] for r in rows)
    print(f"| **all** | {total} | {sum(r[2] for r in rows)} | {len(bad)} | "
          f"{max(r[5] for r in rows)} | {sum(r[4] for r in rows):.1f} |")
    for o in bad:
        print(f"MISMATCH {o.kind} seed={o.seed} n={o.n}: {o.detail}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
