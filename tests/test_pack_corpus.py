"""``ctxbudget pack`` over a corpus nobody here wrote (issue 15, parts 2 and 5): every format,
skipped files reported, progress that does not flood a redirected stderr."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine import cli
from packcases import run, write_policy

CORPUS = Path(__file__).parent / "fixtures" / "corpus15"


def test_pack_answers_from_rst_without_directives_and_reports_skipped_files(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "pack", "--policy", write_policy(tmp_path), "--query",
                         "How do I stop pip from using the cache?", str(CORPUS))
    assert code == 0
    assert out.startswith("To stop pip from using the cache, pass --no-cache-dir to any command:")
    assert ".. " not in out and "code-block" not in out
    assert ("skipped 3 file(s): 1 empty, 1 not UTF-8 text, 1 unsupported format (--verbose lists them)\n"
            in err)
    assert "\n4 files indexed (3 skipped), " in err
    assert "  skipped " not in err


def test_verbose_lists_every_skipped_file_and_json_carries_them(capsys: pytest.CaptureFixture[str],
                                                                tmp_path: Path) -> None:
    code, out, err = run(capsys, "pack", "--policy", write_policy(tmp_path), "--query", "cache", str(CORPUS),
                         "--verbose", "--json")
    assert code == 0
    assert f"  skipped {CORPUS}/latin1.txt: not UTF-8 text (byte 3); convert it to UTF-8 first\n" in err
    assert f"  skipped {CORPUS}/empty.md: empty (only whitespace)\n" in err
    data = json.loads(out)
    assert [(s["path"], s["reason"].split(" (")[0]) for s in data["skipped_files"]] == [
        ("empty.md", "empty"), ("latin1.txt", "not UTF-8 text"), ("data.json", "unsupported format")]


def _many(tmp_path: Path, n: int) -> Path:
    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(n):
        (docs / f"n{i:03}.txt").write_text(f"Note {i} about refunds and plans.\n")
    return docs


class _Clock:
    """time.monotonic that moves a second per call: every file looks slow."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_regression_progress_does_not_flood_a_redirected_stderr(capsys: pytest.CaptureFixture[str],
                                                               tmp_path: Path, monkeypatch: Any) -> None:
    """The \\r progress bar was redrawn into a log file once indexing took over 0.5 s."""
    docs = _many(tmp_path, 210)
    monkeypatch.setattr(cli.time, "monotonic", _Clock())
    code, _out, err = run(capsys, "pack", "--policy", write_policy(tmp_path), "--query", "refunds", str(docs))
    assert code == 0
    assert "\r" not in err
    lines = [x for x in err.splitlines() if x.startswith("indexing")]
    assert [x.split(" (")[0] for x in lines] == ["indexing: 100/210 files", "indexing: 200/210 files",
                                                 "indexing: 210/210 files"]


def test_progress_bar_on_a_terminal(monkeypatch: Any, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli.sys.stderr, "isatty", lambda: True)
    progress = cli._progress("indexing")
    for k in range(1, 26):
        progress(k, 25, f"doc{k}.md")
    err = capsys.readouterr().err
    assert err.count("\r") == 25 and err.endswith("\n") and err.rstrip().endswith("] 25/25 doc25.md")


def test_no_progress_lines_for_a_small_corpus_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    progress = cli._progress("indexing")
    for k in range(1, 60):
        progress(k, 59, "x.md")
    assert capsys.readouterr().err == ""
