"""Reproduce the known optima of the 0/1 knapsack instances in ``../shared/bench-data/knapsack``.

    .venv/bin/python -m bench.pisinger_check [--time-limit-s 10] [--out bench/results/pisinger.json]

The folder is found relative to the repository (``<repo>/../shared/bench-data/knapsack``),
never by an absolute path; when it is absent the command says so and exits 0 (skipped).
Its README describes the format and the origin (Pisinger's generator; low-dimensional
instances f1-f10).

Each instance is solved three ways and timed (wall clock, one process):

* ``core``   — ``engine.strategies.cpsat.solve`` on the Problem of a one-budget policy,
  with the instance's own integer profits as the objective values (the Problem's
  ``values`` replaced, so no relevance rescaling can blur the comparison). This is the
  check: it must reach the known optimum, and when it claims a proof the proof must hold.
* ``public`` — ``engine.allocate`` with relevance = profit and the identity objective
  (the engine rescales relevance to 6 significant digits of the best item, so near-ties
  may resolve differently at large n; reported, not required).
* ``knapsack B&B`` — OR-Tools' knapsack branch-and-bound, for reference.

Float instances (f5) are scaled by 10^d (d = the most decimals in the file) to integers;
the optimum is compared with the CSV's 4-decimal value to within 5e-5. The optional last
line of a large instance (an optimal 0/1 vector) is checked against the optimum too.
Exit status: 0 all reproduced, 1 some instance not reproduced or contradicted.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import REPO, fmt_s, table, write_json
from engine import BudgetItem, allocate
from engine.allocate import to_candidates
from engine.policy import PLAIN_IDENTITY, CountMode, Policy
from engine.problem import reduce
from engine.strategies import cpsat

DATA = REPO / ".." / "shared" / "bench-data" / "knapsack"
SHOWN_DATA = "../shared/bench-data/knapsack"


@dataclasses.dataclass(frozen=True)
class KnapsackInstance:
    name: str
    values: tuple[int, ...]
    weights: tuple[int, ...]
    capacity: int
    scale: int  # values, weights and capacity were multiplied by this (10^decimals)
    solution: tuple[int, ...] | None


def _decimals(token: str) -> int:
    return len(token.split(".", 1)[1]) if "." in token else 0


def parse(path: Path) -> KnapsackInstance:
    """Read one instance file (format in the data folder's README)."""
    lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    n, cap = int(lines[0][0]), lines[0][1]
    rows = lines[1:1 + n]
    tokens = [cap] + [t for row in rows for t in row[:2]]
    scale = 10 ** max(_decimals(t) for t in tokens)

    def as_int(tok: str) -> int:
        return int(Decimal(tok) * scale)

    solution = None
    if len(lines) > 1 + n and len(lines[1 + n]) == n:
        solution = tuple(int(x) for x in lines[1 + n])
    return KnapsackInstance(path.name, tuple(as_int(r[0]) for r in rows), tuple(as_int(r[1]) for r in rows),
                            as_int(cap), scale, solution)


def known_optima(folder: Path) -> dict[str, Decimal]:
    with (folder / "optimum_values.csv").open(encoding="utf-8", newline="") as fh:
        return {row["Instance_Name"]: Decimal(row["optimum"]) for row in csv.DictReader(fh)}


def _items(inst: KnapsackInstance) -> list[BudgetItem]:
    return [BudgetItem(f"item {k}", float(v), w, f"i{k}", "PARAGRAPH", {})
            for k, (v, w) in enumerate(zip(inst.values, inst.weights))]


def _matches(value_scaled: int | None, inst: KnapsackInstance, optimum: Decimal) -> bool:
    if value_scaled is None:
        return False
    got = Decimal(value_scaled) / inst.scale
    return abs(got - optimum) <= Decimal("5e-5") if inst.scale > 1 else got == optimum


def check(inst: KnapsackInstance, optimum: Decimal, time_limit_s: float) -> dict[str, Any]:
    items = _items(inst)
    # Identity objective: the public path then maximises the profits themselves (the
    # engine's default transform may square relevance, which is a different problem).
    # Caller counts: the weights are the instance's own (under the default ``max`` a label
    # like "item 830" would outweigh a weight of 1 and change the instance).
    policy = Policy.default(inst.capacity, separator="", objective=PLAIN_IDENTITY, counts=CountMode.CALLER)
    out: dict[str, Any] = {"instance": inst.name, "n": len(inst.values), "capacity": inst.capacity,
                           "known_optimum": str(optimum)}
    if inst.solution is not None:
        x = inst.solution
        out["file_solution_ok"] = (sum(w for w, xi in zip(inst.weights, x) if xi) <= inst.capacity
                                   and _matches(sum(v for v, xi in zip(inst.values, x) if xi), inst, optimum))

    # core: the Problem with the instance's exact integer profits as objective values.
    t0 = time.perf_counter()
    problem = reduce(policy, to_candidates(items))
    problem = dataclasses.replace(problem, values=inst.values)
    t1 = time.perf_counter()
    sel = cpsat.solve(problem, time_limit_s=time_limit_s)
    t2 = time.perf_counter()
    value = sum(inst.values[i] for i in sel.chosen) if sel.chosen else None
    weight = sum(inst.weights[i] for i in sel.chosen)
    out["core"] = {"status": sel.status, "value": None if value is None else str(Decimal(value) / inst.scale),
                   "reduce_s": t1 - t0, "solve_s": t2 - t1, "total_s": t2 - t0,
                   "reproduced": _matches(value, inst, optimum) and weight <= inst.capacity}
    proven = sel.status in ("optimal", "trivial")
    out["core"]["contradiction"] = proven and not out["core"]["reproduced"]

    # public path: relevance = profit (rescaled by the engine).
    t0 = time.perf_counter()
    alloc = allocate(items, policy, time_limit_s=time_limit_s)
    t1 = time.perf_counter()
    chosen = [d.index for d in alloc.included]
    pvalue = sum(inst.values[i] for i in chosen)
    out["public"] = {"status": alloc.selection.status, "value": str(Decimal(pvalue) / inst.scale),
                     "total_s": t1 - t0, "reproduced": _matches(pvalue, inst, optimum)}

    # reference: OR-Tools knapsack branch-and-bound.
    from ortools.algorithms.python import knapsack_solver as ks

    t0 = time.perf_counter()
    bb = ks.KnapsackSolver(ks.SolverType.KNAPSACK_MULTIDIMENSION_BRANCH_AND_BOUND_SOLVER, "pisinger")
    bb.init(list(inst.values), [list(inst.weights)], [inst.capacity])
    bb.set_time_limit(time_limit_s)
    bvalue = bb.solve()
    out["knapsack_bb"] = {"proven": bool(bb.is_solution_optimal()), "value": str(Decimal(bvalue) / inst.scale),
                          "total_s": time.perf_counter() - t0, "reproduced": _matches(bvalue, inst, optimum)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pisinger_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--time-limit-s", type=float, default=10.0, help="solver time limit per instance and method")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "pisinger.json"))
    args = ap.parse_args(argv)
    if not (DATA / "optimum_values.csv").is_file():
        print(f"skipped: {SHOWN_DATA} (relative to the repository) not found; nothing to check")
        return 0
    optima = known_optima(DATA)
    files = sorted(p for sub in ("low_dimensional", "large_scale") if (DATA / sub).is_dir()
                   for p in (DATA / sub).iterdir() if p.is_file())
    files.sort(key=lambda p: (p.parent.name != "low_dimensional", len(parse(p).values), p.name))
    # Warm the tokenizer and the solver once, outside every timing.
    allocate([BudgetItem("warm", 1.0, 1, "w", "PARAGRAPH", {})], Policy.default(10, separator=""))
    results, rows = [], []
    for path in files:
        if path.name not in optima:
            print(f"note: {path.name} has no known optimum in optimum_values.csv; skipped", file=sys.stderr)
            continue
        r = check(parse(path), optima[path.name], args.time_limit_s)
        results.append(r)
        c, p, b = r["core"], r["public"], r["knapsack_bb"]
        rows.append([r["instance"], str(r["n"]), r["known_optimum"], c["value"] or "-", c["status"],
                     fmt_s(c["total_s"]), "yes" if c["reproduced"] else "NO",
                     f"{fmt_s(p['total_s'])} {'=' if p['reproduced'] else '!='}",
                     f"{fmt_s(b['total_s'])} {'proven' if b['proven'] else 'limit'}"])
        print(f"  {r['instance']:<24} core {c['status']:<8} {fmt_s(c['total_s']):>9}", file=sys.stderr, flush=True)
    print(table(rows, ["instance", "n", "known optimum", "core value", "core status", "core time (reduce+solve)",
                       "reproduced", "allocate() time, = optimum", "knapsack B&B time"]))
    bad = [r["instance"] for r in results if not r["core"]["reproduced"]]
    contradicted = [r["instance"] for r in results if r["core"]["contradiction"]]
    bad_files = [r["instance"] for r in results if r.get("file_solution_ok") is False]
    write_json(Path(args.out), {"data": SHOWN_DATA, "time_limit_s": args.time_limit_s, "instances": results,
                                "not_reproduced": bad, "contradicted": contradicted})
    print(f"\n{len(results) - len(bad)}/{len(results)} known optima reproduced by the solver core"
          + (f"; NOT reproduced: {', '.join(bad)}" if bad else "")
          + (f"; proof contradicted by the known optimum: {', '.join(contradicted)}" if contradicted else "")
          + (f"; file solution line inconsistent: {', '.join(bad_files)}" if bad_files else "")
          + f". JSON: {args.out}")
    return 1 if bad or contradicted else 0


if __name__ == "__main__":
    sys.exit(main())
