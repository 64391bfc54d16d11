"""The seed spec's own test file passes against ``engine`` with only its import changed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SEED = Path(__file__).parent / "seed_spec" / "test_budget_manager.py.txt"


def test_seed_test_file_passes_with_only_the_import_changed(tmp_path: Path) -> None:
    text = SEED.read_text(encoding="utf-8")
    changed = text.replace("from hhni.budget_manager import (", "from engine import (")
    # Exactly one line differs: the import.
    diff = [(a, b) for a, b in zip(text.splitlines(), changed.splitlines()) if a != b]
    assert diff == [("from hhni.budget_manager import (", "from engine import (")]
    target = tmp_path / "test_budget_manager.py"
    target.write_text(changed, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(target)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "8 passed" in proc.stdout, proc.stdout
