"""What rotation costs readers: verify, verify --key and prove over one log written as
one file and as many segments (``audit.rotate``), and what a prune costs.

N realistic ~2 KB records (``bench/audit_append.record``), signed every 1,000 records,
written once unrotated and once with ``max_records=M``; then the median of R runs of
``AuditLog.verify`` (chain + headers), ``verify_signed_segments`` (every signed
checkpoint, per segment) and ``prove_segmented`` of the last decision.

    .venv/bin/python bench/audit_segments.py [--n 20000] [--max-records 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_append import record  # noqa: E402

from engine.audit.log import AuditLog  # noqa: E402
from engine.audit.note import SigningKey  # noqa: E402
from engine.audit.retention import prune  # noqa: E402
from engine.audit.segproofs import prove_segmented, verify_signed_segments  # noqa: E402
from engine.audit.signing import Signer  # noqa: E402
from engine.policy import Rotate  # noqa: E402


def _median_ms(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _write(folder: Path, n: int, rotate: Rotate | None, key: Path) -> tuple[AuditLog, float]:
    folder.mkdir()
    log = AuditLog(folder / "decisions.jsonl", signer=Signer.from_file(key, every_records=1000),
                   rotate=rotate, clock=lambda: "2026-01-01T00:00:00Z")
    t = time.perf_counter()
    for i in range(n):
        log.append({**record(i), "timestamp": "2026-01-01T00:00:00Z"})
    log.close()
    return log, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--max-records", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "keys").mkdir()
        key = SigningKey.generate("bench")
        key_file = tmp / "keys" / "bench.key"
        key_file.write_bytes(key.pem())
        key_file.chmod(0o600)
        last = f"5f0c2a4e-0000-4000-8000-{args.n - 1:012d}"
        print(f"{args.n:,} records of ~2 KB, signed every 1,000; median of {args.runs} runs")
        for label, rotate in (("one file", None),
                              (f"max_records={args.max_records}", Rotate(max_records=args.max_records))):
            log, wrote = _write(tmp / label.replace("=", "-").replace(" ", "-"), args.n, rotate, key_file)
            size = sum((log.path.with_name(s)).stat().st_size for s in log.segments())
            v = _median_ms(lambda: log.verify(), args.runs)
            k = _median_ms(lambda: verify_signed_segments(log.path, key.verifier), args.runs)
            p = _median_ms(lambda: prove_segmented(log.path, last), args.runs)
            print(f"  {label:>18}: {len(log.segments()):>3} segment(s), {size / 1e6:6.1f} MB, "
                  f"append {wrote / args.n * 1e3:.2f} ms/record; verify {v:7.0f} ms, "
                  f"verify --key {k:7.0f} ms, prove (last) {p:6.0f} ms")
            if rotate is not None:
                t = time.perf_counter()
                done = prune(log, datetime(2026, 6, 1, tzinfo=timezone.utc))
                print(f"  {'prune':>18}: {len(done.removed)} segment(s) removed in "
                      f"{(time.perf_counter() - t) * 1e3:.0f} ms; verify after "
                      f"{_median_ms(lambda: log.verify(), args.runs):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
