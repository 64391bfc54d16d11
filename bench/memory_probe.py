"""Child process of the memory case: peak memory of one ``allocate`` with content.

    .venv/bin/python -m bench.memory_probe --n 100000 --strategy optimal

Prints one JSON line: resident memory after imports (tokenizer loaded), the memory the
inputs take (n BudgetItems with ~4 characters of text per token), the high-water mark
during ``allocate`` above what was resident before it, the overall peak, and the time.
Linux reads ``/proc/self/status`` (VmRSS, VmHWM); elsewhere ``ru_maxrss`` gives the peak
only.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.instances import budget_only
from engine import BudgetStrategy, allocate


def _status_mb() -> dict[str, float]:
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) / 1024
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["VmHWM"] = peak / 1024 / (1024 if sys.platform == "darwin" else 1)
        out["VmRSS"] = out["VmHWM"]
    return out


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs), so the peak
    read after ``allocate`` is its own and not an earlier transient (tokenizer load)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--strategy", default="optimal", choices=[s.value for s in BudgetStrategy])
    args = ap.parse_args(argv)
    warm = budget_only(20, "weak")
    allocate(warm.items, warm.policy)  # tokenizer and solver loaded: part of the baseline
    base = _status_mb()
    inst = budget_only(args.n, "uncorrelated", content="text")
    content_mb = sum(len(it.content.encode("utf-8")) for it in inst.items) / 2**20
    reset = _reset_peak()
    before = _status_mb()
    t0 = time.perf_counter()
    alloc = allocate(inst.items, inst.policy, strategy=BudgetStrategy(args.strategy))
    elapsed = time.perf_counter() - t0
    after = _status_mb()
    print(json.dumps({
        "n": args.n, "strategy": args.strategy, "status": alloc.selection.status,
        "content_mb": content_mb, "rss_after_imports_mb": base["VmRSS"],
        "inputs_mb": before["VmRSS"] - base["VmRSS"],
        "allocate_extra_peak_mb": max(0.0, after["VmHWM"] - before["VmRSS"]),
        "peak_rss_mb": after["VmHWM"], "rss_after_mb": after["VmRSS"], "peak_was_reset": reset,
        "allocate_s": elapsed, "stages_s": dict(alloc.timings),
        "context_tokens": alloc.context_tokens, "included": len(alloc.included),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
