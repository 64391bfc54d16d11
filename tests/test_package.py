"""The package's public API (engine/__init__.py): lazy, and the same objects as before."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import engine

ROOT = Path(__file__).resolve().parents[1]


def _fresh(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter (nothing imported yet); its stdout lines."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_every_public_name_is_the_object_of_its_module() -> None:
    assert sorted(engine._EXPORTS) == [n for n in engine.__all__ if n != "__version__"]
    for name, module in engine._EXPORTS.items():
        assert getattr(engine, name) is getattr(importlib.import_module(module, "engine"), name), name
    assert set(engine.__all__) <= set(dir(engine))


def test_import_engine_loads_nothing_heavy() -> None:
    heavy, ours = _fresh("import sys, engine\n"
                         "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                         "('ortools', 'pandas', 'numpy', 'tiktoken', 'bm25s', 'jsonschema', 'yaml', 'pysbd')))\n"
                         "print(sorted(m for m in sys.modules if m.startswith('engine')))\n")
    assert (heavy, ours) == ("[]", "['engine']")


def test_allocate_stays_the_function_when_its_module_loads_first() -> None:
    """``engine.allocate`` is both a submodule and the façade function: importing the
    module first (as ``decide`` does) must not make ``from engine import allocate`` a module."""
    lines = _fresh("import engine.allocate as by_path\n"
                   "import engine.decide\n"
                   "from engine import allocate\n"
                   "import sys, types\n"
                   "print(type(allocate).__name__, type(engine.allocate).__name__, type(by_path).__name__)\n"
                   "print(allocate is sys.modules['engine.allocate'].allocate)\n"
                   "from engine.allocate import to_candidates\n"
                   "print(callable(to_candidates))\n")
    assert lines == ["function function function", "True", "True"]


def test_unknown_names_raise_attribute_error_and_submodules_still_import() -> None:
    lines = _fresh("import engine\n"
                   "try:\n"
                   "    engine.not_a_name\n"
                   "except AttributeError as exc:\n"
                   "    print(exc)\n"
                   "from engine import cli, tokens\n"
                   "print(cli.__name__, tokens.__name__)\n")
    assert lines == ["module 'engine' has no attribute 'not_a_name'", "engine.cli engine.tokens"]
