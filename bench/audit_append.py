"""How many audit records per second one writer makes durable.

N sequential ``AuditLog.append`` calls of a realistic ~2 KB decision record, each one
flock + tail read + one write + fsync, in a fresh log. For comparison: the same lines
written with a bare ``os.write`` + ``os.fsync`` (what the disk allows), and the records
only encoded and sealed (no I/O: the CPU part of an append).

    .venv/bin/python bench/audit_append.py [--n 1000] [--dir DIR]

DIR should be on the file system the real log will use: fsync cost is the disk's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.audit.lineformat import GENESIS_HASH, EnvelopeKind, encode_record, seal
from engine.audit.log import AuditLog


def record(i: int) -> dict[str, Any]:
    """Shaped like an audit.build() decision record: ids, digests, reasons, numbers."""
    return {
        "decision_id": f"5f0c2a4e-0000-4000-8000-{i:012d}",
        "policy": {"name": "support-bot", "revision": 7, "digest": "sha256:" + "ab" * 32},
        "strategy": {"requested": "optimal", "ran": "cpsat", "status": "OPTIMAL",
                     "objective": 91234, "bound": 91234, "gap": 0.0},
        "budget": {"max_tokens": 8000, "used_tokens": 7931, "reserved_tokens": 512},
        "included": [{"id": f"kb-{i % 97}#p{k}", "tokens": 180 + k * 7,
                      "relevance": round(0.91 - k * 0.037, 4), "level": "PARAGRAPH"}
                     for k in range(9)],
        "excluded": [{"id": f"kb-{(i + k) % 89}#p{k}", "reason": "below_min_relevance",
                      "relevance": round(0.2 - k * 0.01, 4)} for k in range(6)],
        "metrics": {"reduce_ms": 0.41, "solve_ms": 12.7, "total_ms": 14.2},
        "versions": {"ctxbudget": "0.1.0", "ortools": "9.15.6755", "python": "3.11.7"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    records = [record(i) for i in range(args.n)]
    size = len(encode_record(records[0]))

    started = time.perf_counter()
    for i, rec in enumerate(records, 1):
        seal(i, GENESIS_HASH, EnvelopeKind.DECISION, encode_record(rec))
    cpu_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        log = AuditLog(Path(tmp) / "audit.jsonl")
        rows = [("append (flock+write+fsync)", *timed(log.append, records))]
        assert log.verify().ok
        line = log.path.read_bytes().split(b"\n")[0] + b"\n"
        fd = os.open(Path(tmp) / "raw.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            rows.append(("bare os.write+os.fsync (disk)",
                         *timed(lambda _: (os.write(fd, line), os.fsync(fd)), records)))
        finally:
            os.close(fd)
        where = tmp

    print(f"audit append benchmark: N={args.n}, record {size} B, line {len(line)} B, "
          f"log in {where}")
    print(f"{'variant':<32} {'total s':>8} {'appends/s':>10} {'p50 ms':>7} {'p99 ms':>7}")
    for name, total, p50, p99 in rows:
        print(f"{name:<32} {total:>8.3f} {args.n / total:>10.0f} {p50:>7.3f} {p99:>7.3f}")
    print(f"{'encode+seal only (no I/O)':<32} {cpu_s:>8.3f} {args.n / cpu_s:>10.0f}")


def timed(fn: Any, items: list[Any]) -> tuple[float, float, float]:
    """(total s, p50 ms, p99 ms) of calling fn on each item in turn."""
    latencies = []
    started = time.perf_counter()
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        latencies.append(time.perf_counter() - t0)
    total = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return total, statistics.median(latencies) * 1e3, p99 * 1e3


if __name__ == "__main__":
    main()
