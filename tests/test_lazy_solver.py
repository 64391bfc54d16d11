"""Issue 13: OR-Tools' CP-SAT is imported at the first solve that needs it. Budget-only
problems proven by the dynamic programs (and the CLI's help screens) never load OR-Tools
or the pandas it imports; a missing or broken OR-Tools is a clear ``SolverError`` at first
use, never a silent fallback to greedy."""

from __future__ import annotations

import subprocess

import pytest
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
SUPPORT = ROOT / "policies" / "support-assistant.yaml"
SUPPORT_C = ROOT / "tests" / "fixtures" / "candidates" / "support-assistant.jsonl"


def _fresh(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_budget_only_solved_by_the_dp_imports_no_ortools_or_pandas() -> None:
    lines = _fresh(
        "import random, sys\n"
        "import engine\n"
        "from engine.policy import Policy\n"
        "rng = random.Random(7)\n"
        "items = [{'source_id': f's{i}', 'content': 'x', 'token_count': rng.randint(10, 500),\n"
        "          'relevance_score': rng.random()} for i in range(3000)]\n"
        "a = engine.allocate(items, Policy.default(max_tokens=sum(x['token_count'] for x in items) // 4))\n"
        "print(a.selection.status, a.selection.stats['solver'])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ortools', 'pandas', 'pyarrow'}))\n")
    assert lines == ["optimal knapsack-core", "[]"]


def test_a_rule_that_needs_cp_sat_imports_it_at_first_use() -> None:
    lines = _fresh(
        "import sys\n"
        "import engine\n"
        "from engine.candfile import load_candidates_file\n"
        "from engine.candidates import from_mappings\n"
        "from engine.policy import load_policy\n"
        f"cands = from_mappings(load_candidates_file({str(SUPPORT_C)!r}))\n"
        f"policy = load_policy({str(SUPPORT)!r})\n"
        "print('ortools.sat.python.cp_model' in sys.modules)\n"
        "a = engine.allocate(cands, policy)\n"
        "print(a.selection.status, 'ortools.sat.python.cp_model' in sys.modules)\n")
    assert lines == ["False", "optimal True"]


def test_a_missing_ortools_is_a_solver_error_at_first_use_not_a_fallback() -> None:
    """In a fresh process with OR-Tools made unimportable: ``import engine`` and DP-proven
    budget-only calls work; the first call that needs CP-SAT raises the SolverError."""
    lines = _fresh(
        "import sys\n"
        "sys.modules['ortools'] = None  # import ortools... -> ImportError, as when it is not installed\n"
        "import engine\n"
        "from engine.candfile import load_candidates_file\n"
        "from engine.candidates import from_mappings\n"
        "from engine.errors import SolverError\n"
        "from engine.policy import Policy, load_policy\n"
        "items = [{'source_id': f's{i}', 'content': 'x' * (i % 7 + 1), 'token_count': 10 + i % 13,\n"
        "          'relevance_score': (i * 37 % 101) / 101} for i in range(200)]\n"
        "a = engine.allocate(items, Policy.default(max_tokens=600))\n"
        "print(a.selection.status, a.selection.stats['solver'])\n"
        f"cands = from_mappings(load_candidates_file({str(SUPPORT_C)!r}))\n"
        "try:\n"
        f"    engine.allocate(cands, load_policy({str(SUPPORT)!r}))\n"
        "except SolverError as exc:\n"
        "    print(type(exc).__name__, exc.code, exc.path)\n"
        "    print(exc.message)\n")
    assert lines[0] == "optimal knapsack-core"
    assert lines[1] == "SolverError solver.ortools_unavailable $.spec.strategy"
    assert lines[2].startswith("OR-Tools' CP-SAT could not be imported (ModuleNotFoundError: ")
    assert lines[2].endswith("it is a required dependency of ctxbudget: reinstall it with `pip install 'ortools>=9.10'`")


def test_the_first_import_is_not_counted_against_the_time_limit(monkeypatch: "pytest.MonkeyPatch") -> None:
    """An import slower than the whole time limit still leaves the solver its limit: the
    first decision of a process (or one on a loaded machine) is proven like the next,
    not a fallback."""
    import dataclasses
    import time

    import engine
    from engine.candfile import load_candidates_file
    from engine.candidates import from_mappings
    from engine.compile import load_cp_model
    from engine.policy import load_policy
    from engine.strategies import cpsat

    def slow_import():  # type: ignore[no-untyped-def]
        time.sleep(0.6)
        return load_cp_model()

    policy = load_policy(str(SUPPORT))
    policy = dataclasses.replace(policy, solver=dataclasses.replace(policy.solver, time_limit_s=0.5))
    cands = from_mappings(load_candidates_file(str(SUPPORT_C)))
    monkeypatch.setattr(cpsat, "load_cp_model", slow_import)
    a = engine.allocate(cands, policy)
    assert a.selection.status == "optimal"
    assert a.fallback_reason is None
