"""The decide path's CPU cuts keep what they replace: the envelope an append returns is
the stored line as a reader parses it (it is no longer parsed again from the line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.audit.log import AuditLog

RECORDS: list[dict[str, Any]] = [
    {"decision_id": "a", "n": 2.0, "small": 7.5e-05, "big": 1e21, "neg": -0.0, "t": (1, 2)},
    {"decision_id": "b", "text": "é \u2028 \U0001f600", "nested": {"x": [1, {"y": None}]}, "flag": True},
    {"decision_id": "c", "looks": "a:1.0,b", "list": [0.5, 3.0, "1e-7"]},
]


@pytest.mark.parametrize("record", RECORDS)
def test_the_returned_envelope_is_the_stored_line(tmp_path: Path, record: dict[str, Any]) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", signer=None)
    log.append({"decision_id": "first"})
    env = log.append(record)
    stored = list(log)[-1]
    assert env == stored
    assert [type(v) for v in env["record"].values()] == [type(v) for v in stored["record"].values()]
