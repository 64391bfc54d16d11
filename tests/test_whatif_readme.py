"""The README's what-if, small: ``bench/gen_log.py`` writes a signed synthetic log, and
``ctxbudget audit whatif`` replays it under the next support revision shipped in
``examples/whatif/`` on a local process pool and on a local Dask cluster (worker
processes, as ``--dask local`` starts them): the same diff, which says what the change
does. And that example file is the shipped support policy with exactly the change it
names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from auditcases import ROOT
from benchload import load_bench
from engine import cli, load_policy

NEXT = ROOT / "examples" / "whatif" / "support-assistant.2026-12-01.1.yaml"


def test_the_next_revision_is_the_shipped_policy_with_one_change(tmp_path: Path) -> None:
    shutil.copy(ROOT / "policies" / "base.yaml", tmp_path / "base.yaml")
    text = (ROOT / "policies" / "support-assistant.yaml").read_text()
    for old, new in (('revision: "2026-11-25.1"', 'revision: "2026-12-01.1"'),
                     ("reserve_output: 1024", "reserve_output: 4096"),
                     ("description: Support answers", "description: Long answers (4,096 output tokens). Support answers")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (tmp_path / "support.yaml").write_text(text)
    shipped, nxt = load_policy(tmp_path / "support.yaml"), load_policy(NEXT)
    assert nxt.to_dict() == shipped.to_dict() and nxt.digest == shipped.digest
    assert nxt.budget.limit_tokens == 8192 - 4096 - 768


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The README's ``bench/gen_log.py`` run, small: (the log, the folder of its keys)."""
    folder = tmp_path_factory.mktemp("readme")
    log, keys = folder / "whatif" / "decisions.jsonl", folder / "whatif-keys"
    assert load_bench("gen_log").main(["--out", str(log), "--keys", str(keys), "--decisions", "30",
                                       "--distinct", "5", "--rotate-records", "12"]) == 0
    return log, keys


def _run(synthetic: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         capsys: pytest.CaptureFixture[str], *engine: str) -> tuple[dict[str, Any], str, list[str]]:
    log, keys = synthetic
    monkeypatch.setenv("CTXBUDGET_AUDIT_SECRET", str(keys / "audit.secret"))
    capsys.readouterr()
    out, ids = tmp_path / "diff.json", tmp_path / "changed.txt"
    assert cli.main(["audit", "whatif", str(log), "--policy", str(NEXT), *engine, "--out", str(out),
                     "--changed-ids", str(ids)]) == 0
    return json.loads(out.read_text()), capsys.readouterr().out, ids.read_text().split()


def _check(diff: dict[str, Any], ids: list[str]) -> None:
    assert diff["intact"] and diff["changed_decision_ids"] is None  # streamed to the file instead
    support = [g for g in diff["groups"] if g["product"] == "support"]
    assert len(support) == 1 and support[0]["revision"] == "2026-11-25.1"
    g = support[0]
    assert g["decisions"] > 0 and g["errors"] == 0 and g["failed_checks"] == 0
    # a context of 3,328 tokens instead of 6,400: decisions lose items to the budget
    assert g["changed"] > 0 and g["items"]["lost_by_reason"].get("over_budget", 0) > 0
    assert g["tokens"]["delta"] < 0 and len(ids) == g["changed"]


_SEEN: dict[str, tuple[dict[str, Any], list[str]]] = {}


def test_the_readme_whatif_on_a_small_synthetic_log_on_a_local_pool(
        synthetic: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    diff, summary, ids = _run(synthetic, tmp_path, monkeypatch, capsys, "--workers", "2")
    assert diff["run"]["engine"] == "pool" and diff["run"]["workers"] == 2
    assert "support @ 2026-11-25.1:" in summary and "run: pool, 2 worker(s)" in summary
    _check(diff, ids)
    _SEEN["pool"] = diff, ids


def test_the_readme_whatif_on_a_small_synthetic_log_on_local_dask(
        synthetic: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    diff, summary, ids = _run(synthetic, tmp_path, monkeypatch, capsys, "--dask", "local", "--workers", "2")
    assert diff["run"]["engine"] == "dask" and "run: dask, 2 worker(s)" in summary
    _check(diff, ids)
    # the same diff as inline (whatever ran first in this process: the pool test, or now)
    if "pool" not in _SEEN:
        _SEEN["pool"] = _run(synthetic, tmp_path, monkeypatch, capsys, "--workers", "1")[::2]
    pool, pool_ids = _SEEN["pool"]
    strip = [{k: v for k, v in d.items() if k != "run"} | {"policy": {**d["policy"], "file": None}}
             for d in (pool, diff)]
    assert strip[0] == strip[1] and pool_ids == ids
