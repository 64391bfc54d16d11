"""bench/mutation_check.py stays runnable: every mutant still applies to the current
code (exactly once, and the mutated file compiles), and there is a no-op mutant for
every checker of the verifier. (Running the mutants takes minutes: that is the bench
script's job; the in-process checker mutants run in tests/test_verify.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.verify import CHECKERS

from benchload import load_bench

BENCH = Path(__file__).resolve().parents[1] / "bench" / "mutation_check.py"


def _module():  # type: ignore[no-untyped-def]
    return load_bench("mutation_check", as_name="ctxbudget_mutation_check")


def test_every_mutant_applies_to_the_current_code() -> None:
    mc = _module()
    mc.check_all()
    names = {m.name for m in mc.MUTANTS}
    assert {f"checker-{name}-noop" for name in CHECKERS} <= names
    assert {"verify-noop", "repair-loop-disabled"} <= names
    assert len(names) == len(mc.MUTANTS)


def test_a_stale_mutant_is_an_error_not_a_pass() -> None:
    mc = _module()
    stale = mc.Mutant("stale", "engine/verify.py", "this text is not in the file\n", "")
    with pytest.raises(ValueError, match="occurs 0 times in engine/verify.py"):
        mc.patched(stale, (BENCH.parents[1] / "engine" / "verify.py").read_text(encoding="utf-8"))
