"""docs/compliance.md: every command it shows a reviewer runs, in order, and succeeds.

The page's ``bash`` blocks are run as one script (``set -eu``; the page pipes into ``head`` only) in a scratch
folder holding the repository's ``examples/`` and ``policies/``, with ``.venv/bin/`` read
as this interpreter's scripts folder. ``; echo "exit $?"`` (shown to the reader) is
dropped so that a failing command fails the test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "compliance.md"


def _script() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 8, "the page lost its demonstrations"
    body = "\n".join(blocks).replace('; echo "exit $?"', "")
    return "set -eu\n" + body.replace(".venv/bin/", f"{Path(sys.executable).parent}/")


def test_every_command_on_the_compliance_page_runs(tmp_path: Path) -> None:
    for folder in ("examples", "policies"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("audit"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTXBUDGET_")}
    env["HOME"] = str(tmp_path)
    run = subprocess.run(["bash", "-c", _script()], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, f"exit {run.returncode}\n--- stdout\n{run.stdout[-3000:]}\n--- stderr\n{run.stderr[-3000:]}"
    # what the page says the commands produce is there
    assert (tmp_path / "demo" / "report.html").stat().st_size > 10_000
    assert "VALID: decision" in run.stdout + run.stderr
    assert "3 decisions replayed: 3 identical" in run.stdout + run.stderr
    log = (tmp_path / "demo" / "logs" / "decisions.jsonl").read_text(encoding="utf-8")
    assert log.count('"requested_by":"reviewer-demo"') == 3
