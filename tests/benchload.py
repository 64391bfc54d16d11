"""Load a script of ``bench/`` (a folder of scripts, not a package) as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load_bench(name: str, *, as_name: str | None = None) -> ModuleType:
    """``bench/<name>.py`` as the module ``as_name`` (default ``name``), registered in
    ``sys.modules`` first: dataclasses look their module up while they are built."""
    spec = importlib.util.spec_from_file_location(as_name or name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
