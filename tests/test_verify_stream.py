"""``audit verify`` checks records as it reads them (``check_log(keep=False)``): the same
verdict, findings, notes and summary as the check that holds every record, and memory
that does not grow with the records (issue 17: bounded memory on a log larger than
memory; the old check held every decision record, expanded, at once)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from auditcases import allocated, envelopes, infeasible, reseal
from engine import AuditLog
from engine.audit.compact import expand
from engine.audit.records import check_log


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, object]]:
    folder = tmp_path_factory.mktemp("verify-stream")
    log = AuditLog(folder / "decisions.jsonl", signer=None)
    for k in range(3):
        allocated(log, store=k == 1)
    infeasible(log, store=False)
    return [e["record"] for e in envelopes(log.path)]


def test_streaming_checks_say_what_the_full_checks_say(tmp_path: Path, records: list[dict[str, object]],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CTXBUDGET_AUDIT_SECRET", raising=False)  # keyed digests: notes
    forged = [expand(r) for r in records]
    forged[1]["input"]["items"][0]["relevance_score"] = 0.01  # resealed: a record finding
    path = tmp_path / "decisions.jsonl"
    reseal(path, forged * 2)
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:6] + [lines[5]] + lines[6:]))  # a line twice: a chain problem
    full, streamed = check_log(AuditLog(path, signer=None)), check_log(AuditLog(path, signer=None), keep=False)
    assert not streamed.ok and streamed.decisions == () and streamed.records_checked == 2 * len(records) + 1
    assert streamed.to_dict() == full.to_dict() and streamed.summary() == full.summary()
    assert streamed.by_seq == full.by_seq and streamed.chain == full.chain
    assert "record.input_digest" in {f.code for f in streamed.record_findings}
    assert any(f.code.startswith("chain.") for fs in streamed.by_seq.values() for f in fs)
    assert "partly not checkable" in streamed.summary()


def test_memory_does_not_grow_with_the_records(tmp_path: Path, records: list[dict[str, object]]) -> None:
    """Peak traced memory of check_log(keep=False) grows by under a fifth of what the log
    grows by (4x and 16x the records: what grows is the chain verifier's digests of each
    line, about 1 KB a line, against 9 KB lines here and 23 KB in bench/gen_log.py's);
    holding the records grew by more than the log."""
    logs = []
    for n in (1, 4, 16):
        logs.append(tmp_path / f"x{n}.jsonl")
        reseal(logs[-1], records * n)
    check_log(AuditLog(logs[0], signer=None), keep=False)  # warm the caches

    def peak(path: Path, keep: bool) -> int:
        tracemalloc.start()
        try:
            assert check_log(AuditLog(path, signer=None), keep=keep).ok
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    sizes = [p.stat().st_size for p in logs]
    streamed = [peak(p, False) for p in logs]
    for k in (1, 2):
        assert streamed[k] - streamed[0] < 0.2 * (sizes[k] - sizes[0]), (streamed, sizes)
    held = [peak(logs[0], True), peak(logs[1], True)]
    assert held[1] - held[0] > sizes[1] - sizes[0], (held, sizes)
