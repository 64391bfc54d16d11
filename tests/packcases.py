"""Shared set-up of the pack/index CLI tests (test_pack_corpus.py, test_store.py): a small
policy file and a CLI run that returns (exit code, stdout, stderr)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import cli

HEAD = "apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: p, revision: '1'}\nspec:\n"


def write_policy(tmp_path: Path, body: str = "  budget: {max_tokens: 300}\n") -> str:
    path = tmp_path / "p.yaml"
    path.write_text(HEAD + body)
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
