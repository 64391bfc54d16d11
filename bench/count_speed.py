"""First-count speed of the token counter on the 4.4 MB chunk stream of ``bench.perf``
(issue 13 part 2: >= 20 MB/s), one thread against the threaded batch count.

    .venv/bin/python -m bench.count_speed              # 3 fresh streams per method
    .venv/bin/python -m bench.count_speed --mb 1 --reps 1

Every row counts streams none of whose chunks were counted before (a fresh
``TiktokenCounter`` per run, so the cache is cold), except ``cached``. Wall and CPU
time are both printed: on a shared machine the wall time of one thread follows the load
(printed), and threads only help where a second core is free. Rows:

* ``tiktoken encode_ordinary``: tiktoken alone, one call per chunk (the ceiling of one thread);
* ``count() one by one``: the engine's ``count`` per chunk (what ``bench.perf`` reports);
* ``count_many(), 1 thread`` and ``count_many(), N threads``: one batch, counted on the
  calling thread or in ``COUNT_WORKERS`` slices (the engine's path for a large batch);
* ``count_many(), cached``: the same batch again.

Counts are checked equal to tiktoken's own on every stream. No goal is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.instances import seed_of  # noqa: E402
from bench.perf import _chunks  # noqa: E402
from engine import tokens  # noqa: E402
from engine.tokens import TiktokenCounter, get_tokenizer  # noqa: E402

GOAL_MB_S = 20.0


def _fresh() -> TiktokenCounter:
    shared = get_tokenizer("cl100k_base")
    assert isinstance(shared, TiktokenCounter)
    return TiktokenCounter(shared.name, shared.encoding)  # same encoder, empty cache


def run(mb: float, reps: int) -> list[tuple[str, float, float]]:
    streams = [_chunks(seed_of("count_speed", i), mb) for i in range(reps)]
    size = statistics.mean(sum(len(c.encode("utf-8")) for c in s) for s in streams) / 1e6
    enc = _fresh().encoding
    want = [[len(enc.encode_ordinary(c)) for c in s] for s in streams]
    workers = tokens.COUNT_WORKERS

    def one_thread(counter: TiktokenCounter, s: list[str]) -> list[int]:
        saved = tokens.COUNT_WORKERS
        tokens.COUNT_WORKERS = 1
        try:
            return counter.count_many(s)
        finally:
            tokens.COUNT_WORKERS = saved

    methods: dict[str, Callable[[TiktokenCounter, list[str]], list[int]]] = {
        "tiktoken encode_ordinary": lambda c, s: [len(c.encoding.encode_ordinary(t)) for t in s],
        "count() one by one": lambda c, s: [c.count(t) for t in s],
        "count_many(), 1 thread": one_thread,
        f"count_many(), {workers} threads": lambda c, s: c.count_many(s),
    }
    rows = []
    for name, method in methods.items():
        walls, cpus = [], []
        for s, expected in zip(streams, want):
            counter = _fresh()
            w0, c0 = time.perf_counter(), time.process_time()
            got = method(counter, s)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
            assert got == expected, name
        rows.append((name, size / statistics.median(walls), size / statistics.median(cpus)))
    counter = _fresh()
    counter.count_many(streams[0])
    w0, c0 = time.perf_counter(), time.process_time()
    assert counter.count_many(streams[0]) == want[0]
    rows.append(("count_many(), cached", size / (time.perf_counter() - w0), size / (time.process_time() - c0)))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.count_speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=4.4, help="stream size in MB (default: bench.perf's 4.4)")
    ap.add_argument("--reps", type=int, default=3, help="fresh streams per method (median reported)")
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]
    rows = run(args.mb, args.reps)
    print(f"{'method':<30} {'wall MB/s':>10} {'CPU MB/s':>10}  goal >= {GOAL_MB_S:g} MB/s (wall)")
    for name, wall, cpu in rows:
        print(f"{name:<30} {wall:10.1f} {cpu:10.1f}  {'pass' if wall >= GOAL_MB_S else 'FAIL'}")
    print(f"({args.mb:g} MB streams, {args.reps} per method; {os.cpu_count()} CPUs, load {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; CPU MB/s of threaded rows counts every thread's time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
