"""What-if throughput against workers, and peak memory per worker (issue 17).

    python bench/gen_log.py --out whatif/decisions.jsonl --decisions 100000
    export CTXBUDGET_AUDIT_SECRET=whatif-keys/audit.secret
    python bench/whatif_speed.py --log whatif/decisions.jsonl --lines 2000 4000

For each slice (the first N lines of the log's first segment, copied with the log's
policy archive: a valid log of its own), it runs ``whatif`` under a real change of the
shipped support policy (at most 2 chunks per source instead of 3) inline (1 worker) and
on a process pool of 2 (and ``--dask local`` with ``--dask``), and prints: decisions
replayed, wall seconds, decisions/s, decisions per CPU second of the shard tasks (what
a core does, whatever else the machine runs), the speed-up over 1 worker, and the peak
RSS of each worker, the CPU time of each worker and of the calling process, the
speed-up those CPU times allow (``cpu_bound_speedup``: what the wall would show on
cores nobody else uses), the load average before and after, and a digest of the diff.
Every run's diff is checked to be identical. ``--whole`` replays given logs as they are
(``--workers 1 2 --dask``). Results go to ``bench/results/whatif_speed.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import load_policy  # noqa: E402
from engine.audit.whatif import Task, WhatIf, warm, whatif  # noqa: E402


def cap_policy(folder: Path, cap: int = 2) -> Path:
    """The shipped support policy with ``max_items_per_source: cap`` (a new revision)."""
    shutil.copy(ROOT / "policies" / "base.yaml", folder / "base.yaml")
    text = (ROOT / "policies" / "support-assistant.yaml").read_text()
    text = text.replace("max_items_per_source: 3", f"max_items_per_source: {cap}")
    path = folder / f"support-cap{cap}.yaml"
    path.write_text(text.replace('revision: "2026-11-25.1"', 'revision: "2026-12-01.1"'))
    return path


def slice_log(log: Path, lines: int, folder: Path) -> Path:
    """The first ``lines`` lines of ``log``'s first segment as a log of its own."""
    out = folder / f"slice-{lines}" / log.name
    out.parent.mkdir(parents=True)
    with open(log, "rb") as src, open(out, "wb") as dst:
        for _, raw in zip(range(lines), src):
            dst.write(raw)
    archive = log.with_name(log.name + ".policies")
    if archive.is_dir():
        shutil.copytree(archive, out.with_name(out.name + ".policies"))
    return out


def digest_of(diff: WhatIf) -> str:
    """SHA-256 of the diff without its run (the aggregate per group, the changed ids in
    order, the failing records): equal digests, identical results."""
    return hashlib.sha256(json.dumps(diff.to_dict(run=False), sort_keys=True).encode()).hexdigest()


def row(label: str, diff: WhatIf, base: float | None, load: tuple[float, float]) -> dict[str, Any]:
    run = diff.run
    assert run is not None
    done = diff.total().decisions
    rate = done / run.seconds
    return {"run": label, "decisions": done, "seconds": round(run.seconds, 2), "decisions_per_s": round(rate, 1),
            "decisions_per_cpu_s": round(done / run.cpu_seconds, 1) if run.cpu_seconds else None,
            "speedup": round(rate / base, 2) if base else 1.0, "shards": run.shards,
            "cpu_s": round(run.cpu_seconds, 1),
            "cpu_s_per_worker": sorted(round(v, 1) for v in run.cpu_seconds_per_worker.values()),
            "caller_cpu_s": round(run.caller_cpu_seconds, 2), "cpu_bound_speedup": round(run.parallel_speedup, 2),
            "load_average": [round(x, 2) for x in load], "digest": digest_of(diff)[:16],
            "changed": len(diff.changed_ids),
            "peak_rss_mib_per_worker": sorted(round(v / 1024) for v in run.peak_rss_kib.values())}


def timed(label: str, base: float | None, **kw: Any) -> tuple[WhatIf, dict[str, Any]]:
    before = os.getloadavg()[0]
    diff = whatif(**kw)
    return diff, row(label, diff, base, (before, os.getloadavg()[0]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", required=True, type=Path, nargs="+",
                    help="a log from bench/gen_log.py (with --whole: one or more logs, replayed as they are)")
    ap.add_argument("--lines", type=int, nargs="+", default=[2000], help="slice sizes in lines (default 2000)")
    ap.add_argument("--whole", action="store_true", help="replay the logs whole instead of slices of the first")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="pool sizes to run (1: inline)")
    ap.add_argument("--dask", action="store_true", help="also run on a local Dask cluster of 2 workers")
    ap.add_argument("--cold", action="store_true", help="do not warm this process first (each run's start-up "
                    "then counts: the solver's import and the tokenizer, ~0.7 s CPU, once inline and in each "
                    "Dask worker)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "whatif_speed.json")
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        policy = load_policy(cap_policy(folder))
        if not args.cold:
            warm(Task(policy.to_dict(), policy.name))
        sets = [(f"{len(args.log)} log(s) whole", args.log)] if args.whole else \
            [(f"{n} lines", [slice_log(args.log[0], n, folder)]) for n in args.lines]
        for name, logs in sets:
            first: WhatIf | None = None
            base: float | None = None
            runs = [(f"{w} worker{'s' if w > 1 else ''} ({'inline' if w == 1 else 'pool'})", {"workers": w})
                    for w in args.workers]
            if args.dask:
                runs.append(("2 workers (dask local)", {"workers": 2, "dask": "local"}))
            for label, kw in runs:
                diff, r = timed(f"{name}, {label}", base, logs=logs, policy=policy, **kw)
                if first is None:
                    first, base = diff, r["decisions_per_s"]
                    print(diff.summary().split("\n")[1], file=sys.stderr)
                else:
                    assert diff.to_dict(run=False) == first.to_dict(run=False), f"{label}: a different diff"
                rows.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
    for r in rows:
        print(f"{r['run']:<40} {r['decisions']:>6} decisions {r['seconds']:>7.1f} s {r['decisions_per_s']:>7.1f}/s "
              f"({r['decisions_per_cpu_s']}/CPU s) x{r['speedup']:<5} CPU per worker {r['cpu_s_per_worker']} "
              f"caller {r['caller_cpu_s']} s, x{r['cpu_bound_speedup']} CPU-bound; load {r['load_average']}; "
              f"shards {r['shards']:>3} peak RSS MiB {r['peak_rss_mib_per_worker']} digest {r['digest']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
