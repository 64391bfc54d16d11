"""Tests of engine.audit.log, lineformat and verify: format, tamper evidence, crash
recovery, concurrent writers (including SIGKILLed ones) and I/O faults."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import multiprocessing
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.audit.lineformat import EnvelopeKind, canonical_of, load_line, scan_line, seal
from engine.audit.log import GENESIS_HASH, AuditLog, load_checkpoint
from engine.audit.verify import Checkpoint, ProblemKind, VerifyReport, check_chain, verify_bytes
from engine.canonical import canonical_bytes, digest, sha256_hex
from engine.errors import AuditError

FIXED_CLOCK = "2025-01-01T00:00:00.000000+00:00"


def decision(i: int, pad: int = 0) -> dict[str, Any]:
    """A small but realistic decision record."""
    return {
        "decision_id": f"dec-{i:04d}",
        "policy": {"name": "support-bot", "revision": 3},
        "strategy": "cpsat",
        "used_tokens": 1000 + i,
        "included": [f"doc-{i}#p1", f"doc-{i + 1}#p2"],
        "score": 0.25 + i / 1000,
        **({"pad": "x" * pad} if pad else {}),
    }


def make_log(path: Path, n: int, pad: int = 0) -> AuditLog:
    log = AuditLog(path, clock=lambda: FIXED_CLOCK)
    for i in range(1, n + 1):
        log.append(decision(i, pad))
    return log


def split_lines(data: bytes) -> list[bytes]:
    assert data.endswith(b"\n")
    return [line + b"\n" for line in data[:-1].split(b"\n")]


# -- format and API ---------------------------------------------------------------------


def test_append_returns_the_stored_envelope(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    first = log.append({"decision_id": "a", "score": 1.0, "tags": ("x", "y")})
    second = log.append({"decision_id": "b"})
    assert first["seq"] == 1 and first["prev_hash"] == GENESIS_HASH
    assert first["kind"] == "decision"
    # stored values are what RFC 8785 round-trips to: 1.0 -> 1, tuples -> lists
    assert first["record"] == {"decision_id": "a", "score": 1, "tags": ["x", "y"]}
    assert first["hash"] == digest({k: v for k, v in first.items() if k != "hash"})
    assert second["seq"] == 2 and second["prev_hash"] == first["hash"]
    raw = (tmp_path / "audit.jsonl").read_bytes()
    assert raw == canonical_bytes(first) + b"\n" + canonical_bytes(second) + b"\n"
    assert list(log) == [first, second]
    assert log.find("b") == second and log.find("zzz") is None
    assert log.verify().ok


def test_seal_shortcut_equals_full_canonical_json() -> None:
    # The writer builds the line from the hash-less body (one canonicalisation);
    # that must equal the canonical JSON of the whole envelope.
    for record in ({}, {"é": "ü\n\u2028", "n": [1.5, -0.0, 1e21]}, decision(7)):
        line = seal(3, GENESIS_HASH, EnvelopeKind.DECISION, record)
        env = json.loads(line)
        assert line == canonical_bytes(env) + b"\n"
        assert env["hash"] == "sha256:" + sha256_hex(canonical_bytes(
            {k: v for k, v in env.items() if k != "hash"}))


@pytest.mark.parametrize(("record", "path", "message"), [
    ({"m": {"score": float("nan")}}, "$.m.score",
     "record is not JSON-ready: nan is not JSON; store null or a string instead"),
    ({"x": [1, float("inf")]}, "$.x[1]",
     "record is not JSON-ready: inf is not JSON; store null or a string instead"),
    ({"ids": {1, 2}}, "$.ids", "record is not JSON-ready: set is not JSON-ready; "
     "convert it first"),
    ({"big": 2**60}, "$.big", "record is not JSON-ready: 1152921504606846976 is beyond "
     "the exact integer range of JSON (2**53-1); store it as a string"),
    ({"m": {3: "x"}}, "$.m", "record is not JSON-ready: key 3 is not a string"),
])
def test_non_json_records_are_rejected_before_any_write(
        tmp_path: Path, record: dict[str, Any], path: str, message: str) -> None:
    log = make_log(tmp_path / "audit.jsonl", 2)
    before = log.path.read_bytes()
    with pytest.raises(AuditError) as info:
        log.append(record)
    assert (info.value.code, info.value.path, info.value.message) == (
        "audit.bad_record", path, message)
    assert log.path.read_bytes() == before


def test_checkpoint_export_and_load(tmp_path: Path) -> None:
    log = make_log(tmp_path / "audit.jsonl", 3)
    written = log.export_checkpoint(tmp_path / "cp.json")
    last = list(log)[-1]
    assert written == {"seq": 3, "hash": last["hash"], "records": 3, "log": str(log.path)}
    assert load_checkpoint(tmp_path / "cp.json") == written
    assert AuditLog.load_checkpoint(tmp_path / "cp.json") == written
    (tmp_path / "bad.json").write_text('{"seq": 3, "hash": "md5:x"}')
    with pytest.raises(AuditError) as info:
        load_checkpoint(tmp_path / "bad.json")
    assert (info.value.code, info.value.path) == ("audit.bad_checkpoint", "$.hash")
    empty = AuditLog(tmp_path / "empty.jsonl")
    empty.path.touch()
    assert empty.checkpoint()["seq"] == 0 and empty.checkpoint()["hash"] == GENESIS_HASH


def test_missing_log_and_unreadable_lines_are_errors(tmp_path: Path) -> None:
    with pytest.raises(AuditError) as info:
        AuditLog(tmp_path / "none.jsonl").verify()
    assert info.value.code == "audit.not_found"
    log = make_log(tmp_path / "audit.jsonl", 3)
    lines = split_lines(log.path.read_bytes())
    log.path.write_bytes(lines[0] + b"{oops\n" + lines[2])
    with pytest.raises(AuditError) as info:
        list(log)
    assert info.value.code == "audit.corrupt_line" and info.value.location.line == 2


def test_report_shape_and_summary(tmp_path: Path) -> None:
    log = make_log(tmp_path / "audit.jsonl", 20)
    cp = log.checkpoint()
    lines = split_lines(log.path.read_bytes())
    lines[9] = lines[9].replace(b'"used_tokens":1010', b'"used_tokens":1011')
    log.path.write_bytes(b"".join(lines))
    report = log.verify(cp)
    assert not report.ok
    first = report.first_problem
    assert first is not None and (first.kind, first.seq, first.line) == (
        ProblemKind.MODIFIED, 10, 10)
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["range_verified"] == {"from_seq": 1, "to_seq": 20}
    assert data["range_requested"] == {"from_seq": 1, "to_seq": None}
    assert data["checkpoint"]["seq"] == 20 and data["records_verified"] == 20
    text = report.summary()
    assert "FAILED" in text and "line 10 seq 10: modified" in text
    assert "checkpoint compared: seq 20" in text
    # ranges: the damage is outside 11..20 and inside 5..15
    assert log.verify(from_seq=11).ok and log.verify(to_seq=9).ok
    assert log.verify(to_seq=9).last_seq == 9
    assert not log.verify(from_seq=5, to_seq=15).ok
    beyond = log.verify(from_seq=11, to_seq=25)
    assert [p.kind for p in beyond.problems] == [ProblemKind.TRUNCATED]
    assert (beyond.first_seq, beyond.last_seq) == (11, 20)


# -- tamper evidence --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tamper_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Checkpoint, AuditLog]:
    log = make_log(tmp_path_factory.mktemp("tamper") / "audit.jsonl", 50)
    report = log.verify()
    assert report.ok and report.records_verified == 50
    return log.path.read_bytes(), Checkpoint.from_dict(log.checkpoint()), log


def test_every_single_byte_flip_is_detected_on_the_right_line(
        tamper_log: tuple[bytes, Checkpoint, AuditLog], exhaustive: bool) -> None:
    # verify_bytes(data) is check_chain(scan_line(each line)). A flip changes one line,
    # so the other 49 are scanned once, up front. Every newline flip (it merges two
    # lines) and every 13th mutation go through verify_bytes whole; of the others, every
    # 13th is cross-checked: the staged report must equal verify_bytes' report.
    # By default every byte of the first, a middle and the last two records is flipped,
    # plus every newline and every 9th offset elsewhere; --exhaustive flips them all.
    data, cp, _ = tamper_log
    lines = split_lines(data)
    entries = [scan_line(line[:-1], n) for n, line in enumerate(lines, 1)]
    tried = detected = exact = cross_checked = 0
    kinds: Counter[str] = Counter()
    offset = 0
    for k, line in enumerate(lines):
        for j in range(len(line)):
            if not (exhaustive or k in (0, 24, len(lines) - 2, len(lines) - 1)
                    or j == len(line) - 1 or (offset + j) % 9 == 0):
                continue
            for mask in (0x01, 0x80):  # a neighbouring ASCII character; invalid UTF-8
                mutated_line = bytearray(line)
                mutated_line[j] ^= mask
                whole = data[:offset] + bytes(mutated_line) + data[offset + len(line):]
                full = j == len(line) - 1 or b"\n" in mutated_line[:-1] or tried % 13 == 0
                if full:
                    report = verify_bytes(whole, checkpoint=cp)
                else:
                    mutated = scan_line(bytes(mutated_line[:-1]), k + 1)
                    report = check_chain([*entries[:k], mutated, *entries[k + 1:]],
                                         log="<bytes>", checkpoint=cp)
                    if tried % 13 == 1:
                        assert report == verify_bytes(whole, checkpoint=cp)
                        cross_checked += 1
                tried += 1
                detected += not report.ok
                first = report.first_problem
                exact += first is not None and first.line == k + 1
                kinds[first.kind.value if first else "MISSED"] += 1
        offset += len(line)
    assert tried > (2 * len(data)) // 9
    print(f"\nbyte flips: {tried} tried over {len(data)} offsets x 2 masks, {detected} "
          f"detected, {exact} pinned to the flipped line ({cross_checked} staged results "
          f"cross-checked against verify_bytes); first problem kinds {dict(kinds)}")
    assert detected == tried and exact == tried


def _mutations(data: bytes) -> dict[str, list[bytes]]:
    lines = split_lines(data)
    n = len(lines)
    forged: list[bytes] = []
    for k in range(n):  # a self-consistent forged record claiming seq k+1
        prev = json.loads(lines[k - 1])["hash"] if k else GENESIS_HASH
        fake = seal(k + 1, prev, EnvelopeKind.DECISION, {"decision_id": "forged"})
        forged.append(b"".join(lines[:k] + [fake] + lines[k:]))
    return {
        "delete": [b"".join(lines[:k] + lines[k + 1:]) for k in range(n)],
        "duplicate": [b"".join(lines[:k + 1] + lines[k:]) for k in range(n)],
        "swap_adjacent": [b"".join(lines[:k] + [lines[k + 1], lines[k]] + lines[k + 2:])
                          for k in range(n - 1)],
        "cut_at_boundary": [b"".join(lines[:k]) for k in range(n)],
        "insert_forged": forged,
    }


def test_deleted_duplicated_swapped_cut_and_inserted_records_are_detected(
        tamper_log: tuple[bytes, Checkpoint, AuditLog]) -> None:
    data, cp, _ = tamper_log
    expected_first = {"delete": ProblemKind.DELETED, "duplicate": ProblemKind.DUPLICATED,
                      "swap_adjacent": ProblemKind.REORDERED,
                      "cut_at_boundary": ProblemKind.TRUNCATED,
                      "insert_forged": ProblemKind.INSERTED}
    total_tried = total_detected = 0
    for name, variants in _mutations(data).items():
        detected = without_cp = 0
        for k, mutated in enumerate(variants):
            report = verify_bytes(mutated, checkpoint=cp)
            detected += not report.ok
            without_cp += not verify_bytes(mutated).ok
            first = report.first_problem
            assert first is not None, (name, k)
            want = expected_first[name]
            if name == "delete" and k == len(variants) - 1:
                want = ProblemKind.TRUNCATED  # deleting the last record is a cut tail
            assert first.kind is want, (name, k, report.summary())
            if name != "cut_at_boundary":
                assert first.seq == k + 1 + (name == "swap_adjacent"), (name, k)
        print(f"{name}: {len(variants)} tried, {detected} detected with the checkpoint, "
              f"{without_cp} without it")
        total_tried += len(variants)
        total_detected += detected
    assert total_detected == total_tried


def test_file_level_verify_agrees_on_a_sample(
        tamper_log: tuple[bytes, Checkpoint, AuditLog], tmp_path: Path) -> None:
    data, cp, _ = tamper_log
    target = AuditLog(tmp_path / "copy.jsonl")
    tried = 0
    for offset in range(0, len(data), 97):
        mutated = bytearray(data)
        mutated[offset] ^= 0x20
        target.path.write_bytes(bytes(mutated))
        assert not target.verify(cp.to_dict()).ok, offset
        tried += 1
    for mutated in (m for group in _mutations(data).values() for m in group[::7]):
        target.path.write_bytes(mutated)
        assert not target.verify(cp.to_dict()).ok
        tried += 1
    print(f"\nfile-level sample: {tried} mutated files, all detected")


def test_a_cut_tail_needs_the_checkpoint(tamper_log: tuple[bytes, Checkpoint, AuditLog],
                                         tmp_path: Path) -> None:
    data, cp, _ = tamper_log
    cut = AuditLog(tmp_path / "cut.jsonl")
    cut.path.write_bytes(b"".join(split_lines(data)[:30]))
    report = cut.verify()
    assert report.ok and "no checkpoint given" in report.summary()
    report = cut.verify(cp.to_dict())
    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.TRUNCATED, 31)]
    assert report.problems[0].message == ("the log ends at seq 30 but the checkpoint has "
                                          "seq 50: seq 31..50 were cut off")


def test_a_rewritten_history_contradicts_the_checkpoint(tmp_path: Path) -> None:
    log = make_log(tmp_path / "a.jsonl", 10)
    cp = log.checkpoint()
    rewritten = AuditLog(tmp_path / "b.jsonl")
    for i in range(1, 11):  # a fully re-hashed chain with one record changed
        rewritten.append(decision(i + (i == 4)))
    report = rewritten.verify(cp)
    assert [p.kind for p in report.problems] == [ProblemKind.CHECKPOINT_MISMATCH]


def test_a_forged_huge_seq_is_reported_without_counting_to_it(tmp_path: Path) -> None:
    log = make_log(tmp_path / "audit.jsonl", 2)
    first = json.loads(split_lines(log.path.read_bytes())[0])
    forged = seal(10**15, first["hash"], EnvelopeKind.DECISION, {"decision_id": "x"})
    log.path.write_bytes(split_lines(log.path.read_bytes())[0] + forged)
    started = time.perf_counter()
    report = log.verify()
    assert time.perf_counter() - started < 1
    assert [(p.kind, p.seq, p.message) for p in report.problems] == [
        (ProblemKind.DELETED, 2, "seq 2..999999999999999 missing before this line")]


def test_summary_lists_at_most_50_problems(tmp_path: Path) -> None:
    log = make_log(tmp_path / "audit.jsonl", 60)
    log.path.write_bytes(log.path.read_bytes().replace(b'"cpsat"', b'"CPSAT"'))
    report = log.verify()
    assert len(report.problems) == 60 and len(report.to_dict()["problems"]) == 60
    assert report.summary().splitlines()[-2] == "  ... 10 more (see to_dict())"


# -- crash recovery ---------------------------------------------------------------------


def test_a_cut_at_every_offset_of_the_last_record_is_recovered(tmp_path: Path, exhaustive: bool) -> None:
    source = make_log(tmp_path / "source.jsonl", 50)
    data = source.path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    cases = recovered = 0
    # By default the first and last 16 cuts and every 7th one between; --exhaustive: all.
    cuts = [c for c in range(start + 1, len(data))
            if exhaustive or c - start <= 16 or len(data) - c <= 16 or c % 7 == 0]
    for cut in cuts:  # leaves 1 .. len(line)-1 bytes torn
        work = tmp_path / f"c{cut}"
        work.mkdir()
        log = AuditLog(work / "audit.jsonl", clock=lambda: FIXED_CLOCK)
        log.path.write_bytes(data[:cut])
        torn = data[start:cut]
        before = log.verify()
        assert [p.kind for p in before.problems] == [ProblemKind.TORN_LINE]
        env = log.append({"decision_id": "after-crash"})
        after = log.path.read_bytes()
        assert after.startswith(data[:start])  # every complete record kept, byte for byte
        envs = list(log)
        assert len(envs) == 51 and env == envs[-1] and env["seq"] == 51
        assert envs[49]["kind"] == "recovery" and envs[49]["record"] == {
            "reason": "torn_tail", "torn_offset": start, "torn_bytes": len(torn),
            "torn_sha256": "sha256:" + sha256_hex(torn), "moved_to": "audit.jsonl.torn-50",
            "detected_at": FIXED_CLOCK}
        assert (work / "audit.jsonl.torn-50").read_bytes() == torn
        report = log.verify()
        assert report.ok and report.records_verified == 51 and report.recoveries == (50,)
        cases += 1
        recovered += report.ok
    clean = AuditLog(tmp_path / "clean.jsonl")
    clean.path.write_bytes(data[:start])  # a cut exactly at a boundary: nothing torn
    assert clean.append({"decision_id": "x"})["seq"] == 50 and clean.recover() is None
    print(f"\ncrash cuts: {cases} offsets inside a {len(data) - start}-byte last record, "
          f"{recovered} recovered with a valid chain")
    assert cases == recovered == len(cuts)
    if exhaustive:
        assert cases == len(data) - start - 1


def test_zero_filled_and_long_torn_tails(tmp_path: Path) -> None:
    # A crash can leave the new size with zeroed blocks (delayed allocation), and a torn
    # record or a last complete record can be longer than one backwards read.
    log = make_log(tmp_path / "audit.jsonl", 3)
    big = log.append(decision(4, pad=300_000))
    with open(log.path, "ab") as f:
        f.write(b"\0" * 9000)
    recovery = log.recover()
    assert recovery is not None and recovery["record"]["torn_bytes"] == 9000
    assert recovery["prev_hash"] == big["hash"] and log.recover() is None
    line = seal(6, recovery["hash"], EnvelopeKind.DECISION, decision(6, pad=500_000))
    with open(log.path, "ab") as f:
        f.write(line[:-1000])
    (tmp_path / "audit.jsonl.torn-6").write_bytes(b"left by an earlier crash")
    env = log.append(decision(7))
    envs = list(log)
    assert [e["kind"] for e in envs[-2:]] == ["recovery", "decision"] and env == envs[-1]
    assert envs[-2]["record"]["moved_to"] == "audit.jsonl.torn-6.1"
    assert (tmp_path / "audit.jsonl.torn-6.1").read_bytes() == line[:-1000]
    assert log.verify().ok


def test_append_refuses_to_chain_onto_a_damaged_last_record(tmp_path: Path) -> None:
    log = make_log(tmp_path / "audit.jsonl", 3)
    damaged = log.path.read_bytes().replace(b'"used_tokens":1003', b'"used_tokens":9003')
    log.path.write_bytes(damaged)
    with pytest.raises(AuditError) as info:
        log.append(decision(4))
    assert info.value.code == "audit.corrupt_tail"
    assert log.path.read_bytes() == damaged


# -- concurrency ------------------------------------------------------------------------


def _writer(path: str, writer: int, count: int, ack_path: str, pad: int) -> None:
    log = AuditLog(path, lock_timeout_s=60)
    ack = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    for i in range(count):
        env = log.append({"decision_id": f"w{writer}-{i}", "writer": writer, "i": i,
                          "pad": "x" * pad})
        os.write(ack, f"{env['seq']} {writer} {i}\n".encode())  # only after append returned


def _acks(path: Path) -> list[tuple[int, int, int]]:
    text = path.read_text() if path.exists() else ""
    return [tuple(map(int, line.split())) for line in text.split("\n")[:-1]]  # type: ignore


def test_four_processes_append_one_chain(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    path = tmp_path / "audit.jsonl"
    started = time.perf_counter()
    procs = [ctx.Process(target=_writer, args=(str(path), w, 250, str(tmp_path / f"ack{w}"), 100))
             for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    elapsed = time.perf_counter() - started
    log = AuditLog(path)
    report = log.verify()
    assert report.ok and report.records_verified == 1000
    envs = list(log)
    assert [e["seq"] for e in envs] == list(range(1, 1001))
    assert all(e["kind"] == "decision" for e in envs)
    for w in range(4):
        assert [e["record"]["i"] for e in envs if e["record"]["writer"] == w] == list(range(250))
        assert {seq for seq, _, _ in _acks(tmp_path / f"ack{w}")} == {
            e["seq"] for e in envs if e["record"]["writer"] == w}
    print(f"\n4 processes x 250 appends: 1000 records, one valid chain, "
          f"{1000 / elapsed:.0f} appends/s overall")


def test_sigkilled_writers_lose_no_acknowledged_record(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    path = tmp_path / "audit.jsonl"
    pads = (100, 100, 2000, 400_000)  # the big one makes a kill inside write() possible
    procs = [ctx.Process(target=_writer, args=(str(path), w, 10**6, str(tmp_path / f"ack{w}"),
                                               pads[w])) for w in range(4)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 30
    while any(len(_acks(tmp_path / f"ack{w}")) < 20 for w in range(4)):
        assert time.monotonic() < deadline, "writers made no progress"
        time.sleep(0.01)
    for p in procs:  # staggered, so the kills land at different points of an append
        os.kill(p.pid, signal.SIGKILL)
        time.sleep(0.013)
    for p in procs:
        p.join(10)
        assert p.exitcode == -signal.SIGKILL
    log = AuditLog(path, lock_timeout_s=5)  # the dead writers' locks are gone
    recovery = log.recover()
    report = log.verify()
    assert report.ok, report.summary()
    by_seq = {e["seq"]: e for e in log}
    acked = [a for w in range(4) for a in _acks(tmp_path / f"ack{w}")]
    for seq, writer, i in acked:
        assert by_seq[seq]["record"]["writer"] == writer and by_seq[seq]["record"]["i"] == i
    decisions = [e for e in by_seq.values() if e["kind"] == "decision"]
    for w in range(4):  # each writer's records are a gap-free prefix of its sequence
        mine = [e["record"]["i"] for e in decisions if e["record"]["writer"] == w]
        assert mine == list(range(len(mine)))
    assert log.append({"decision_id": "after"})["seq"] == max(by_seq) + 1
    print(f"\nSIGKILL: {len(acked)} acknowledged records all present among {len(decisions)} "
          f"decisions; torn tail recovered: {recovery is not None}")


def test_a_held_lock_times_out_with_audit_locked(tmp_path: Path) -> None:
    log = make_log(tmp_path / "audit.jsonl", 1)
    holder = os.open(log.lock_path, os.O_RDONLY)  # another writer (same user) holds it
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with pytest.raises(AuditError) as info:
            AuditLog(log.path, lock_timeout_s=0.2).append(decision(2))
        assert info.value.code == "audit.locked"
    finally:
        os.close(holder)
    assert log.append(decision(2))["seq"] == 2


# -- faults -----------------------------------------------------------------------------


def _without_privileges(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child that has dropped every capability, so file modes
    apply even when the tests run as root; returns its result or its AuditError."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)

        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        if libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()) != 0:
            child.send(("capset failed", ctypes.get_errno()))
            return
        try:
            child.send(("ok", fn()))
        except AuditError as exc:
            child.send(("error", (exc.code, exc.message)))
        except BaseException as exc:  # noqa: BLE001 - report anything else to the parent
            child.send(("crash", repr(exc)))

    proc = ctx.Process(target=run)
    proc.start()
    assert parent.poll(30), "the unprivileged child did not answer"
    result = parent.recv()
    proc.join(10)
    return result


def test_read_only_file_and_directory(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir()
    log = make_log(tmp_path / "ro" / "audit.jsonl", 2)
    before = log.path.read_bytes()
    log.path.chmod(0o444)
    log.path.parent.chmod(0o555)
    try:
        status, (code, message) = _without_privileges(lambda: log.append(decision(3)))
        assert (status, code) == ("error", "audit.open_failed")
        assert message == (f"could not open {log.path} for appending: permission denied; "
                           "give this user write access to the log and its folder "
                           "(EACCES: Permission denied)")
        status, (code, message) = _without_privileges(
            lambda: AuditLog(log.path.parent / "new.jsonl").append(decision(1)))
        assert (status, code) == ("error", "audit.open_failed")
        assert "permission denied" in message
        # reading needs no write access
        assert _without_privileges(lambda: log.verify().ok) == ("ok", True)
    finally:
        log.path.parent.chmod(0o755)
    assert log.path.read_bytes() == before


def test_read_only_file_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = make_log(tmp_path / "audit.jsonl", 2)
    real_open = os.open

    def erofs(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        # the log is opened by name relative to its folder's handle
        if flags & os.O_RDWR and str(path) == log.path.name:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", erofs)
    with pytest.raises(AuditError) as info:
        log.append(decision(3))
    assert info.value.code == "audit.open_failed"
    assert "read-only; remount it read-write or move the log" in info.value.message
    assert info.value.details["errno"] == "EROFS"


def _failing_write(monkeypatch: pytest.MonkeyPatch, fd_path: Path, error: int) -> list[int]:
    """Make os.write on ``fd_path`` write half its data, then fail once with ``error``."""
    real_write, calls = os.write, []

    def write(fd: int, data: Any) -> int:
        if os.path.realpath(f"/proc/self/fd/{fd}") != str(fd_path.resolve()):
            return real_write(fd, data)
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        if len(calls) == 2:
            raise OSError(error, os.strerror(error))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    return calls


def test_disk_full_leaves_no_partial_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = make_log(tmp_path / "audit.jsonl", 5)
    before = log.path.read_bytes()
    calls = _failing_write(monkeypatch, log.path, errno.ENOSPC)
    with pytest.raises(AuditError) as info:
        log.append(decision(6))
    assert len(calls) == 2  # a short write, then ENOSPC
    assert info.value.code == "audit.write_failed"
    assert info.value.message.startswith(f"could not append to {log.path}: no space left on "
                                         "the device; free space and retry")
    assert info.value.details == {"errno": "ENOSPC", "log": str(log.path), "last_seq": 5,
                                  "restored": True}
    assert log.path.read_bytes() == before
    monkeypatch.undo()
    assert log.verify().ok and log.append(decision(6))["seq"] == 6


def test_disk_full_during_recovery_keeps_the_torn_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = make_log(tmp_path / "audit.jsonl", 5)
    with open(log.path, "ab") as f:
        f.write(b'{"hash":"sha256:0123')
    before = log.path.read_bytes()
    _failing_write(monkeypatch, log.path, errno.ENOSPC)
    with pytest.raises(AuditError):
        log.append(decision(6))
    monkeypatch.undo()
    assert log.path.read_bytes() == before  # the torn bytes are back where they were
    env = log.append(decision(6))
    assert env["seq"] == 7 and log.verify().ok


def test_failed_fsync_is_not_acknowledged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = make_log(tmp_path / "audit.jsonl", 2)
    before = log.path.read_bytes()

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(AuditError) as info:
        log.append(decision(3))
    assert info.value.details["errno"] == "EIO" and info.value.details["restored"] is False
    monkeypatch.undo()
    # the undo needed fsync too, so the bytes may stay: then as a whole, valid record
    report = log.verify()
    assert report.ok and log.path.read_bytes().startswith(before)


def test_report_is_frozen(tamper_log: tuple[bytes, Checkpoint, AuditLog]) -> None:
    report = tamper_log[2].verify()
    assert isinstance(report, VerifyReport)
    with pytest.raises(AttributeError):
        report.ok = False  # type: ignore[misc]


# -- the fast canonical route -----------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(_json_values)
def test_both_canonical_routes_agree_with_rfc8785(value: Any) -> None:
    canonical = canonical_bytes(value)
    parsed, fast = load_line(canonical.decode("utf-8"))
    assert canonical_of(parsed, fast) == canonical
    assert canonical_of(parsed, False) == canonical
    # a re-serialised line (spaces, other float spellings) is told apart
    loose = json.dumps(value, indent=1)
    parsed, fast = load_line(loose)
    assert canonical_of(parsed, fast) == canonical_of(parsed, False)


def test_awkward_numbers_verify(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append({"n": [1e20, 1e16, 1e21, 1e-7, 5e-324, 1.7976931348623157e308, -0.0,
                      0.1, 2**53 - 1, -(2**53) + 1, 1.0], "s": "\u2028\x7f\U0001f600",
                "\U0001f600": 1, "\uffff": 2})
    assert log.verify().ok


def test_escaped_non_bmp_keys_take_the_exact_route() -> None:
    """Regression (hypothesis seed 7): keys written as escaped surrogate pairs parse to
    non-BMP characters, which RFC 8785 orders by UTF-16 code units, not code points."""
    value = {"\ue000": None, "\U00010000": None}
    canonical = canonical_bytes(value)
    assert canonical.index("\U00010000".encode()) < canonical.index("\ue000".encode())
    loose = json.dumps(value)  # ensure_ascii: the pair is escaped, the text is ASCII
    parsed, fast = load_line(loose)
    assert not fast
    assert canonical_of(parsed, fast) == canonical
