"""The printed tables of the performance harness and the goal verdicts.

What goes in: the case records of :mod:`bench.perf`. What comes out: Markdown tables
(one row per case and method, then one row per goal) and the goal list for the JSON.
"""

from __future__ import annotations

from typing import Any

from bench.harness import fmt_s, table

PROVEN = ("optimal", "trivial")
METHOD_HEADER = ["case", "method", "reps", "median", "min", "max", "status", "value/opt", "ours/this"]
GOAL_HEADER = ["goal", "target", "measured (median)", "status", "pass"]


def _value_ratio(obj: Any, optimum: Any, lp_bound: Any = None) -> str:
    """Answer / proven optimum; without an optimum, ``>=`` answer / LP bound (a proven
    lower bound on the ratio)."""
    if obj is None:
        return "-"
    if optimum:
        return "1" if obj == optimum else f"{obj / optimum:.6f}".rstrip("0").rstrip(".")
    if lp_bound:
        return f">={obj / lp_bound:.6f} (LP)"
    return "-"


def method_rows(cases: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for case in cases:
        if case["group"] in ("memory",):
            continue
        ours = case["methods"].get(case["ours"], {})
        for name, t in case["methods"].items():
            ratio = "-"
            if name != case["ours"] and ours.get("median_s") and t.get("median_s"):
                ratio = f"{ours['median_s'] / t['median_s']:.3g}"
            status = t.get("status", "")
            if t.get("gap") not in (None, 0, 0.0):
                status += f" gap {t['gap']:.2%}"
            if "mb_per_s" in t and t["mb_per_s"]:
                status = f"{t['mb_per_s']:.1f} MB/s"
            if t.get("error"):
                status = f"ERROR {t['error'][:60]}"
            rows.append([case["case"], name, str(t.get("reps", 0)), fmt_s(t.get("median_s")),
                         fmt_s(t.get("min_s")), fmt_s(t.get("max_s")), status,
                         _value_ratio(t.get("objective"), case.get("optimum"), case.get("lp_bound")), ratio])
    return rows


def goals(cases: list[dict[str, Any]], targets: dict[str, Any]) -> list[dict[str, Any]]:
    """One verdict per goal and case: target, measured median, pass/fail."""
    out = []
    for case in cases:
        g, n = case["group"], case["n"]
        ours = case.get("methods", {}).get(case.get("ours", ""), {})
        med = ours.get("median_s")
        statuses = sorted({i for i in [ours.get("status")] if i})
        proven_all = bool(case.get("checks", {}).get(f"{case.get('ours')} proven every run"))
        if g == "budget" and n in targets["budget"]:
            t = targets["budget"][n]
            out.append(_goal(f"OPTIMAL budget-only {case['case']}", f"proven optimal <= {fmt_s(t)}",
                             fmt_s(med), statuses, med is not None and med <= t and proven_all))
        elif g == "rules" and n in targets["rules"]:
            t = targets["rules"][n]
            out.append(_goal(f"OPTIMAL all rules {case['case']}", f"proven optimal <= {fmt_s(t)}",
                             fmt_s(med), statuses, med is not None and med <= t and proven_all))
        elif g == "rules" and n == targets["rules_gap"][0]:
            _, gap_goal, secs = targets["rules_gap"]
            gaps = [i.get("gap") for i in [ours] if i]
            gap = gaps[0] if gaps else None
            ok = med is not None and med <= secs and gap is not None and gap <= gap_goal
            shown = f"{fmt_s(med)}, gap {'unknown' if gap is None else f'{gap:.2%}'}"
            out.append(_goal(f"OPTIMAL all rules {case['case']}", f"gap <= {gap_goal:.0%} within {secs:g} s",
                             shown, statuses, ok))
        elif g == "greedy" and n in targets["greedy"]:
            t = targets["greedy"][n]
            out.append(_goal(f"GREEDY public API {case['case']}", f"<= {fmt_s(t)}", fmt_s(med), statuses,
                             med is not None and med <= t))
        elif g == "tokens":
            mbps = ours.get("mb_per_s")
            out.append(_goal("token counting, first count, one thread", f">= {targets['tokens_mb_s']:g} MB/s",
                             f"{mbps:.1f} MB/s" if mbps else "-", [], bool(mbps and mbps >= targets["tokens_mb_s"])))
            sp = case.get("cached_speedup")
            out.append(_goal("token counting, cached recount", f">= {targets['cached_speedup']:g}x faster",
                             f"{sp:.1f}x" if sp else "-", [], bool(sp and sp >= targets["cached_speedup"])))
        elif g == "memory":
            p = case["probe"]
            shown = (f"peak RSS {p['peak_rss_mb']:.0f} MB (inputs {p['inputs_mb']:.0f} MB, allocate +"
                     f"{p['allocate_extra_peak_mb']:.0f} MB), {fmt_s(p['allocate_s'])}") if "peak_rss_mb" in p else "-"
            out.append(_goal(f"peak memory {case['case']}", "report", shown, [p.get("status", "")], None))
    return out


def _goal(name: str, target: str, measured: str, statuses: list[str], ok: bool | None) -> dict[str, Any]:
    return {"goal": name, "target": target, "measured": measured, "status": ",".join(s for s in statuses if s),
            "pass": ok}


def goal_rows(verdicts: list[dict[str, Any]]) -> list[list[str]]:
    mark = {True: "yes", False: "NO", None: "-"}
    return [[v["goal"], v["target"], v["measured"], v["status"], mark[v["pass"]]] for v in verdicts]


def check_failures(cases: list[dict[str, Any]]) -> list[str]:
    """Correctness checks that failed (not timing): ``case: check``."""
    bad = []
    for case in cases:
        for name, ok in case.get("checks", {}).items():
            if ok is False and name not in _SOFT:
                bad.append(f"{case['case']}: {name}")
    return bad


#: Checks that report a fact rather than a bug: not proving optimality within the time
#: limit is a speed finding (the goals table shows it), not a wrong answer.
_SOFT = frozenset({"ours: allocate() proven every run", "ours: cpsat.solve(problem) proven every run",
                   "same answer at the time limit"})


def render(cases: list[dict[str, Any]], verdicts: list[dict[str, Any]]) -> str:
    parts = ["## Timings (wall clock, one process; ours/this = our median / this method's median)", "",
             table(method_rows(cases), METHOD_HEADER), "", "## Goals", "", table(goal_rows(verdicts), GOAL_HEADER)]
    stages = [[c["case"], *(fmt_s(c["stage_median_s"].get(s)) for s in ("reduce_s", "solve_s", "assemble_s",
                                                                          "verify_s", "total_s"))]
              for c in cases if c.get("stage_median_s")]
    if stages:
        parts += ["", "## Where allocate() spends its time (medians of the engine's own stage timings)", "",
                  table(stages, ["case", "reduce", "solve", "assemble", "verify", "total"])]
    bad = check_failures(cases)
    parts += ["", "## Correctness", "", "all checks passed" if not bad else "FAILED: " + "; ".join(bad)]
    unproven = [c["case"] for c in cases if c.get("checks", {}).get("ours: allocate() proven every run") is False]
    varied = [c["case"] for c in cases if c.get("checks", {}).get("same answer at the time limit") is False]
    notes = []
    if unproven:
        notes.append("allocate() did not prove optimality in every run: " + ", ".join(unproven))
    if varied:
        notes.append("answers cut by the time limit differed between runs: " + ", ".join(varied))
    notes += [f"{c['case']}: {k} — {v}" for c in cases for k, v in c.get("baseline_errors", {}).items()]
    if notes:
        parts += ["", "Findings (not failures):", "", *(f"- {n}" for n in notes)]
    return "\n".join(parts)


SUMMARY_METHODS = ("ours: allocate()", "ours: cpsat.solve(problem)", "seed greedy", "DP oracle (numpy)",
                   "OR-Tools knapsack B&B", "CP-SAT default params")


def summary(cases: list[dict[str, Any]]) -> str:
    """One row per OPTIMAL case: medians of ours and every baseline, our status."""
    rows = []
    for c in cases:
        if c["group"] not in ("budget", "rules"):
            continue
        m = c["methods"]
        cells = []
        for name in SUMMARY_METHODS:
            t = m.get(name)
            if t is None:
                cells.append("n/a")
            elif t.get("error"):
                cells.append("killed" if "killed" in t["error"] else "error")
            else:
                tag = "" if t.get("status") in PROVEN or t.get("status") in ("exact", "heuristic") else f" ({t.get('status')})"
                cells.append(fmt_s(t.get("median_s")) + tag)
        ours = m.get("ours: allocate()", {})
        rows.append([c["case"], *cells, _value_ratio(ours.get("objective"), c.get("optimum"), c.get("lp_bound"))])
    return table(rows, ["case", "ours allocate()", "ours solver core", "seed greedy", "DP oracle", "OR-Tools knapsack",
                        "CP-SAT default", "ours value/optimum"])
