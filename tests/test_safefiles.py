"""Safe files: the audit log, its lock and ``extends`` targets are opened below a folder
handle without following symlinks; a non-log file is never adopted; readers cannot take
the writers' lock. Includes the symlink-swap races of issue 12 (part 3)."""

from __future__ import annotations

import ctypes
import fcntl
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from engine.audit.log import AuditLog
from engine.decide import policy_audit_log
from engine.errors import AuditError, PolicyError
from engine.policy import load_policy
from engine.safeopen import SymlinkRefused, dir_handle, open_below, relative_parts

ROOT = Path(__file__).resolve().parent.parent
RACE_APPENDS = 1000


def decision(i: int) -> dict[str, Any]:
    return {"decision_id": f"d{i}", "i": i}


# -- safeopen ---------------------------------------------------------------------------


def test_relative_parts_refuses_paths_that_leave() -> None:
    assert relative_parts("a/./b/../c.jsonl") == ("a", "c.jsonl")
    for bad in ("", "/etc/passwd", "../x", "a/../../x"):
        with pytest.raises(ValueError):
            relative_parts(bad)


def test_open_below_refuses_a_symlinked_file_and_folder(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "lf").symlink_to(tmp_path / "real" / "f")
    with dir_handle(tmp_path) as fd:
        os.close(open_below(fd, "real/f", os.O_RDONLY))
        with pytest.raises(SymlinkRefused) as info:
            open_below(fd, "link/f", os.O_RDONLY)
        assert info.value.name == "link"
        with pytest.raises(SymlinkRefused):
            open_below(fd, "real/lf", os.O_RDONLY)
        with pytest.raises(SymlinkRefused):  # O_CREAT does not follow it either
            open_below(fd, "real/lf", os.O_RDWR | os.O_CREAT)


# -- the log ----------------------------------------------------------------------------


def test_a_symlinked_log_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(b"")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "audit.jsonl").symlink_to(outside)
    log = AuditLog(tmp_path / "logs" / "audit.jsonl")
    with pytest.raises(AuditError) as info:
        log.append(decision(1))
    err = info.value
    assert err.code == "audit.symlink"
    assert err.message.startswith(f"{tmp_path / 'logs' / 'audit.jsonl'} is a symbolic link; the audit log, "
                                  "its lock file and their folders below")
    assert "Replace it with the real file or folder" in err.message
    assert err.location is not None and err.location.file == str(log.path)
    with pytest.raises(AuditError) as info:  # readers refuse it too
        list(log)
    assert info.value.code == "audit.symlink"
    assert outside.read_bytes() == b""


def test_a_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.write_bytes(b"keep")
    (tmp_path / "audit.jsonl.lock").symlink_to(outside)
    with pytest.raises(AuditError) as info:
        AuditLog(tmp_path / "audit.jsonl").append(decision(1))
    assert info.value.code == "audit.symlink"
    assert str(tmp_path / "audit.jsonl.lock") in info.value.message
    assert outside.read_bytes() == b"keep"


def test_a_symlinked_folder_below_the_policy_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pol").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "pol" / "logs").symlink_to(tmp_path / "out")
    log = AuditLog(tmp_path / "pol" / "logs" / "audit.jsonl", root=tmp_path / "pol")
    with pytest.raises(AuditError) as info:
        log.append(decision(1))
    assert info.value.code == "audit.symlink"
    assert info.value.details["entry"] == str(tmp_path / "pol" / "logs")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_log_path_outside_its_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuditError) as info:
        AuditLog(tmp_path / "x.jsonl", root=tmp_path / "sub")
    assert info.value.code == "audit.path_outside"


def test_policy_log_folders_are_created_below_the_policy_folder(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(_child_policy(None) + "spec: {budget: {max_tokens: 100}, audit: {log: logs/a/audit.jsonl}}\n")
    log = policy_audit_log(load_policy(path))
    assert log is not None and log.root == tmp_path
    log.append(decision(1))
    assert (tmp_path / "logs" / "a" / "audit.jsonl").is_file()


def test_a_non_empty_file_without_a_record_is_not_adopted(tmp_path: Path) -> None:
    """Old code: 'hello' (no newline) was adopted, its bytes moved to audit.jsonl.torn-1."""
    path = tmp_path / "notes.txt"
    path.write_bytes(b"my precious notes, no newline")
    with pytest.raises(AuditError) as info:
        AuditLog(path).append(decision(1))
    err = info.value
    assert err.code == "audit.not_a_log"
    assert err.message == (f"{path} is not empty (29 bytes) but holds no audit record; refusing to adopt it "
                           "as an audit log (its content would be moved aside). Point --audit-log / audit.log "
                           "at a new file, or move this file away if it is not needed")
    assert path.read_bytes() == b"my precious notes, no newline"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "notes.txt.lock"]


def test_a_file_with_lines_that_are_not_records_is_not_adopted(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"a,b\n1,2\n")
    with pytest.raises(AuditError) as info:
        AuditLog(path).append(decision(1))
    assert info.value.code == "audit.corrupt_tail"
    assert path.read_bytes() == b"a,b\n1,2\n"


def test_a_torn_first_record_is_still_recovered(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"hash":"sha256:12ab')  # a first write cut short by a crash
    env = AuditLog(path).append(decision(1))
    assert env["seq"] == 2
    assert (tmp_path / "audit.jsonl.torn-1").read_bytes() == b'{"hash":"sha256:12ab'
    assert AuditLog(path).verify().ok


def test_a_torn_tail_after_a_record_is_recovered(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append(decision(1))
    with open(log.path, "ab") as f:
        f.write(b"garbage without newline")
    assert log.append(decision(2))["seq"] == 3
    assert log.verify().ok


def test_the_lock_file_is_private_to_the_writer(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append(decision(1))
    assert stat.S_IMODE(os.stat(log.lock_path).st_mode) == 0o600
    os.chmod(log.lock_path, 0o644)
    with pytest.raises(AuditError) as info:
        log.append(decision(2))
    assert info.value.code == "audit.unsafe_lock"
    assert f"`chmod 600 {log.lock_path}`" in info.value.message
    os.chmod(log.lock_path, 0o600)
    assert log.append(decision(2))["seq"] == 2


def test_a_reader_holding_a_lock_on_the_log_does_not_stall_writers(tmp_path: Path) -> None:
    """Old code: open the log read-only, flock(LOCK_EX): every append waits, then
    audit.locked. Now writers lock <log>.lock, which readers never open."""
    log = AuditLog(tmp_path / "audit.jsonl", lock_timeout_s=0.2)
    log.append(decision(1))
    os.chmod(log.path, 0o644)  # a reader may read it...
    reader = os.open(log.path, os.O_RDONLY)
    fcntl.flock(reader, fcntl.LOCK_EX)  # ...and locks it
    try:
        assert log.append(decision(2))["seq"] == 2
        assert [e["seq"] for e in log] == [1, 2]  # readers need no lock either
    finally:
        os.close(reader)


# -- races ------------------------------------------------------------------------------


def _file_swapper(folder: Path, name: str, outside: Path, stop: threading.Event, count: list[int]) -> None:
    keep, tmp = folder / f".keep-{name}", folder / f".tmp-{name}"
    os.link(folder / name, keep)
    try:
        while not stop.is_set():
            os.symlink(outside, tmp)
            os.rename(tmp, folder / name)  # atomically a symlink to the outside file
            count[0] += 1
            os.link(keep, tmp)
            os.rename(tmp, folder / name)  # atomically the real log again
    finally:
        os.link(keep, tmp)
        os.rename(tmp, folder / name)
        os.unlink(keep)


_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> None:
    """renameat2(RENAME_EXCHANGE): swap two names atomically (neither is ever missing)."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(a))


def _dir_swapper(parent: Path, name: str, outside: Path, stop: threading.Event, count: list[int]) -> None:
    """Swap the folder ``parent/name`` with a symlink to ``outside`` and back, atomically."""
    link = parent / f".link-{name}"
    os.symlink(outside, link)
    try:
        while not stop.is_set():
            _exchange(link, parent / name)  # the folder is now a symlink to the outside
            count[0] += 1
            _exchange(link, parent / name)  # the real folder again
    finally:
        if (parent / name).is_symlink():
            _exchange(link, parent / name)
        os.unlink(link)


def _race(log: AuditLog, swap: Any, outside_bytes: dict[Path, bytes]) -> tuple[int, int, int]:
    stop, count = threading.Event(), [0]
    thread = threading.Thread(target=swap, args=(stop, count))
    ok, refused = [], 0
    thread.start()
    try:
        for i in range(RACE_APPENDS):
            try:
                ok.append(log.append(decision(i))["record"]["i"])
            except AuditError as exc:
                assert exc.code == "audit.symlink", exc
                refused += 1
    finally:
        stop.set()
        thread.join()
    for path, data in outside_bytes.items():
        assert path.read_bytes() == data, f"{path} was written to"
    stored = [e["record"]["i"] for e in log if e["record"]["i"] >= 0]
    assert stored == ok  # every acknowledged append is in the real log, in order, nothing else
    assert log.verify().ok
    return len(ok), refused, count[0]


def test_race_swapping_the_log_for_a_symlink_never_writes_outside(tmp_path: Path) -> None:
    folder = tmp_path / "pol"
    folder.mkdir()
    outside = tmp_path / "outside.jsonl"  # a valid log: the old code appended to it
    AuditLog(outside).append({"decision_id": "OUTSIDE"})
    before = outside.read_bytes()
    log = AuditLog(folder / "audit.jsonl", root=folder, lock_timeout_s=5)
    log.path.write_bytes(b"")
    written, refused, swaps = _race(log, lambda s, c: _file_swapper(folder, "audit.jsonl", outside, s, c),
                                    {outside: before})
    assert written + refused == RACE_APPENDS and swaps > 0
    print(f"\nlog swap race: {RACE_APPENDS} appends, {written} written, {refused} refused, "
          f"{swaps} swaps, writes outside: 0")


def test_race_swapping_the_log_folder_for_a_symlink_never_writes_outside(tmp_path: Path) -> None:
    folder = tmp_path / "pol"
    (folder / "logs").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    AuditLog(outside / "audit.jsonl").append({"decision_id": "OUTSIDE"})
    before = (outside / "audit.jsonl").read_bytes()
    log = AuditLog(folder / "logs" / "audit.jsonl", root=folder, lock_timeout_s=5)
    log.append(decision(-1))
    first = log.path.read_bytes()
    written, refused, swaps = _race(
        log, lambda s, c: _dir_swapper(folder, "logs", outside, s, c), {outside / "audit.jsonl": before})
    assert sorted(p.name for p in outside.iterdir()) == ["audit.jsonl", "audit.jsonl.lock"]  # its own only
    assert log.path.read_bytes().startswith(first)
    assert swaps > 0
    print(f"\nfolder swap race: {RACE_APPENDS} appends, {written} written, {refused} refused, "
          f"{swaps} swaps, writes outside: 0")


EXTENDS_LOADS = 1000
MARKER_TOKENS = 424242  # only the outside file says this


def test_race_swapping_an_extends_target_never_reads_outside(tmp_path: Path) -> None:
    folder = tmp_path / "pol"
    folder.mkdir()
    (folder / "base.yaml").write_text("spec: {budget: {max_tokens: 777}}\n")
    outside = tmp_path / "outside.yaml"
    outside.write_text(f"spec: {{budget: {{max_tokens: {MARKER_TOKENS}}}}}\n")
    child = folder / "child.yaml"
    child.write_text(_child_policy("base.yaml"))
    stop, count = threading.Event(), [0]
    thread = threading.Thread(target=_file_swapper, args=(folder, "base.yaml", outside, stop, count))
    loaded, refused = 0, 0
    thread.start()
    try:
        for _ in range(EXTENDS_LOADS):
            try:
                policy = load_policy(child)
            except PolicyError as exc:
                assert exc.code == "policy.extends_symlink", exc
                refused += 1
                continue
            assert policy.budget.max_tokens == 777  # never the outside file's marker
            loaded += 1
    finally:
        stop.set()
        thread.join()
    assert count[0] > 0 and loaded + refused == EXTENDS_LOADS
    print(f"\nextends swap race: {EXTENDS_LOADS} loads, {loaded} loaded, {refused} refused, "
          f"{count[0]} swaps, outside reads: 0")


def _child_policy(target: str | None) -> str:
    head = f"extends: {target}\n" if target else ""
    return head + "apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: c, revision: '1'}\n"
