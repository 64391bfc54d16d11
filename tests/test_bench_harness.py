"""The performance harness runs end to end and its correctness fields hold.

Runs ``python -m bench.perf --quick`` (tiny sizes, a few seconds) in a child process and
reads its JSON. Checks answers, never timings: every optimal answer equals the DP oracle,
the proofs of all solvers agree, greedy equals the seed's greedy, token counts equal
tiktoken's. Also checks the DP oracle itself against brute force.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
OURS, CORE, DP = "ours: allocate()", "ours: cpsat.solve(problem)", "DP oracle (numpy)"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "perf.json"
    proc = subprocess.run([sys.executable, "-m", "bench.perf", "--quick", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "## Goals" in proc.stdout
    return json.loads(out.read_text(encoding="utf-8"))


def _cases(results: dict, group: str) -> list[dict]:
    found = [c for c in results["cases"] if c["group"] == group]
    assert found, f"no {group} case in the quick run"
    return found


def test_quick_run_has_metadata_and_no_check_failures(results: dict) -> None:
    assert results["meta"]["mode"] == "quick"
    assert results["check_failures"] == []
    assert {g["goal"] for g in results["goals"]} >= {"token counting, first count, one thread",
                                                      "token counting, cached recount"}


def test_budget_optima_agree_with_the_dp_oracle(results: dict) -> None:
    for case in _cases(results, "budget"):
        m = case["methods"]
        assert m[DP]["status"] == "exact", case["case"]
        optimum = m[DP]["objective"]
        assert case["optimum"] == optimum
        for name in (OURS, CORE):
            assert m[name]["error"] is None
            assert m[name]["status"] in ("optimal", "trivial"), (case["case"], name)
            assert m[name]["objective"] == optimum, (case["case"], name)
            assert m[name]["same_answer_every_run"] is True
        # Baselines that proved optimality found the same value; nothing beats the optimum.
        for name, t in m.items():
            if t.get("objective") is not None:
                assert t["objective"] <= optimum, (case["case"], name)
            if t.get("proven"):
                assert t["objective"] == optimum, (case["case"], name)
        assert m["seed greedy"]["objective"] <= optimum <= case["lp_bound"]


def test_all_rules_optimum_is_proven_and_matches_cpsat_default(results: dict) -> None:
    for case in _cases(results, "rules"):
        m = case["methods"]
        assert m[CORE]["status"] == "optimal"
        assert m[OURS]["objective"] == m[CORE]["objective"]
        if m["CP-SAT default params"].get("proven"):
            assert m["CP-SAT default params"]["objective"] == m[CORE]["objective"]
        assert m["ours GREEDY: allocate()"]["objective"] <= m[CORE]["objective"]
        assert case["checks"]["proofs_agree"] is True


def test_greedy_matches_the_seed_and_tokens_match_tiktoken(results: dict) -> None:
    for case in _cases(results, "greedy"):
        assert case["checks"]["greedy_equals_seed_greedy"] is True
    for case in _cases(results, "tokens"):
        assert case["checks"]["counts_match_tiktoken"] is True
        assert all(t["error"] is None for t in case["methods"].values())


def test_memory_probe_reports_a_peak(results: dict) -> None:
    for case in _cases(results, "memory"):
        probe = case["probe"]
        assert "error" not in probe, probe
        assert probe["peak_rss_mb"] >= probe["rss_after_imports_mb"] > 0


def test_every_goal_of_issue_13_is_printed_with_before_and_after(results: dict) -> None:
    rows = results["issue13_goals"]
    assert all(len(r) == 5 and r[4] in ("yes", "NO", "-") for r in rows)
    goals = " | ".join(r[0] for r in rows)
    for goal in ("RAG request", "OPTIMAL budget only", "GREEDY through allocate()", "all rules",
                 "CLI allocate", "peak memory", "first count"):
        assert goal in goals, goal
    rag = next(c for c in results["cases"] if c["group"] == "rag")
    assert rag["checks"]["proven every request"] is True
    det = next(c for c in results["cases"] if c["group"] == "determinism")
    assert det["checks"]["identical answers where the search was not cut by the wall clock"] is True
    assert det["identical"] is (len({r["chosen"] for r in det["runs"]}) == 1)
    # What fixes the search is the same every run (the wall-clock net is the time left).
    fixed = [{k: v for k, v in r["parameters"].items() if k != "max_time_in_seconds"} for r in det["runs"]]
    assert all(f == fixed[0] for f in fixed)


def test_dp_oracle_matches_brute_force() -> None:
    sys.path.insert(0, str(REPO))
    from bench.baselines import dp_optimum

    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 10))
        v, w = rng.integers(0, 30, n), rng.integers(0, 12, n)
        cap = int(rng.integers(0, 40))
        best = max(int(v @ np.array(x)) for x in itertools.product((0, 1), repeat=n)
                   if int(w @ np.array(x)) <= cap)
        assert dp_optimum(v, w, cap) == best


def test_the_cli_goals_are_measured_end_to_end(results: dict) -> None:
    """bench/perf_cli.py through bench.perf: --help, CLI allocate and replay, each in a
    fresh process, with a verdict per goal (timings are never asserted)."""
    raw = results["cli"]["raw"]["after (working tree)"]
    assert len(raw["help_s"]) == 3 and all(t > 0 for t in raw["help_s"])
    (run,) = raw["allocate"]
    assert run["exit"] == 0 and run["status"] in ("optimal", "trivial") and run["fallback"] is None
    assert run["timings"]["count_s"] > 0
    (tight,) = raw["allocate_tight"]
    assert tight["exit"] == 0 and tight["status"] in ("optimal", "trivial") and tight["fallback"] is None
    assert raw["replay"]["decisions"] == raw["replay"]["identical"] == 4
    table = results["cli"]["table"]
    for goal in ("ctxbudget --help", "CLI allocate 500 without counts, cold", "... with time_limit_s 0.5",
                 "audit replay"):
        assert goal in table
