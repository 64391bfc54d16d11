"""Group commit in the audit log writer: concurrent appends share one write and one
fsync, each caller gets its own envelope only once the batch is durable, a failed batch
fails every caller in it, and the chain stays verifiable (rotation included)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from engine.audit import log as logmod
from engine.audit.log import AuditLog
from engine.errors import AuditError
from engine.policy import Rotate


def _decision(i: int) -> dict[str, Any]:
    return {"decision_id": f"d-{i}", "n": i, "text": "x" * (i % 7)}


def _hold_first_fsync(monkeypatch: pytest.MonkeyPatch, waiting: int,
                      fail_second: bool = False) -> list[int]:
    """Make the first fsync wait until ``waiting`` appends are queued behind it; return
    the list of fsync'd file sizes (one entry per fsync of a log file)."""
    real = os.fsync
    synced: list[int] = []

    def fsync(fd: int) -> None:
        import stat
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            real(fd)
            return
        if not synced:
            deadline = time.monotonic() + 10
            while (sum(len(g.queue) for g in logmod._GROUPS.values()) < waiting
                   and time.monotonic() < deadline):
                time.sleep(0.001)
        synced.append(os.fstat(fd).st_size)
        if fail_second and len(synced) == 2:
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(logmod.os, "fsync", fsync)
    return synced


def _run(log: AuditLog, n: int) -> tuple[list[dict[str, Any] | None], list[BaseException | None]]:
    got: list[dict[str, Any] | None] = [None] * n
    errors: list[BaseException | None] = [None] * n

    def one(i: int) -> None:
        try:
            got[i] = log.append(_decision(i))
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            errors[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    threads[0].start()
    while not logmod._GROUPS or not any(g.busy for g in logmod._GROUPS.values()):
        time.sleep(0.001)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(30)
    return got, errors


def test_appends_waiting_behind_an_fsync_share_the_next_one(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    synced = _hold_first_fsync(monkeypatch, waiting=7)
    log = AuditLog(tmp_path / "a.jsonl", signer=None)
    got, errors = _run(log, 8)
    assert errors == [None] * 8
    assert len(synced) == 2  # the first record alone, then the seven that queued: one fsync
    stored = list(log)
    assert [e["seq"] for e in stored] == list(range(1, 9))
    by_id = {e["record"]["decision_id"]: e for e in stored}
    for i, envelope in enumerate(got):  # each caller got its own record's envelope
        assert envelope is not None and envelope["record"]["decision_id"] == f"d-{i}"
        assert by_id[f"d-{i}"]["hash"] == envelope["hash"]
    assert log.verify().ok


def test_a_failed_batch_fails_every_caller_in_it_and_acknowledges_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hold_first_fsync(monkeypatch, waiting=5, fail_second=True)
    log = AuditLog(tmp_path / "a.jsonl", signer=None)
    got, errors = _run(log, 6)
    assert errors[0] is None and got[0] is not None
    assert all(isinstance(e, AuditError) and e.code == "audit.write_failed" for e in errors[1:])
    assert got[1:] == [None] * 5
    assert [e["record"]["decision_id"] for e in log] == ["d-0"]  # cut back: nothing unacknowledged
    assert log.verify().ok
    assert log.append(_decision(9))["seq"] == 2  # the group is free again


def test_a_batch_that_crosses_the_rotation_limit_continues_in_the_next_segment(
        tmp_path: Path) -> None:
    from engine.audit.lineformat import encode_record
    rotate = Rotate(max_records=3)
    (tmp_path / "serial").mkdir()
    (tmp_path / "batch").mkdir()
    one_by_one = AuditLog(tmp_path / "serial" / "a.jsonl", signer=None, rotate=rotate)
    for i in range(7):
        one_by_one.append(_decision(i))
    log = AuditLog(tmp_path / "batch" / "a.jsonl", signer=None, rotate=rotate)
    written = log._append([encode_record(_decision(i)) for i in range(7)])
    decisions = [e for e in written if e["kind"] == "decision"]
    assert [e["record"]["n"] for e in decisions] == list(range(7))
    assert log.segments() == one_by_one.segments() == ["a.jsonl", "a.00001.jsonl", "a.00002.jsonl"]
    for name in log.segments():  # the same records in the same segments as one at a time
        kinds = [(e["kind"], e["seq"], e["record"].get("n")) for e in AuditLog(
            log.path.with_name(name), signer=None) if e["kind"] != "segment"]
        assert kinds == [(e["kind"], e["seq"], e["record"].get("n")) for e in AuditLog(
            one_by_one.path.with_name(name), signer=None) if e["kind"] != "segment"]
    assert log.verify().ok
    assert [e["record"]["n"] for e in log if e["kind"] == "decision"] == list(range(7))


def test_the_last_line_is_checked_again_when_its_bytes_changed(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl", signer=None)
    log.append(_decision(1))
    data = log.path.read_bytes().replace(b'"n":1', b'"n":2')  # same length, new bytes
    log.path.write_bytes(data)
    with pytest.raises(AuditError) as info:
        log.append(_decision(2))
    assert info.value.code == "audit.corrupt_tail"
