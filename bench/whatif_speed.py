"""What-if throughput against workers, and peak memory per worker (issue 17).

    python bench/gen_log.py --out /tmp/whatif/decisions.jsonl --decisions 100000
    export CTXBUDGET_AUDIT_SECRET=/tmp/whatif-keys/audit.secret
    python bench/whatif_speed.py --log /tmp/whatif/decisions.jsonl --lines 2000 4000

For each slice (the first N lines of the log's first segment, copied with the log's
policy archive: a valid log of its own), it runs ``whatif`` under a real change of the
shipped support policy (at most 2 chunks per source instead of 3) inline (1 worker) and
on a process pool of 2 (and ``--dask local`` with ``--dask``), and prints: decisions
replayed, wall seconds, decisions/s, decisions per CPU second of the shard tasks (what
a core does, whatever else the machine runs), the speed-up over 1 worker, and the peak
RSS of each worker. Every run's diff is checked to be identical. Results go to
``bench/results/whatif_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import load_policy  # noqa: E402
from engine.audit.whatif import WhatIf, whatif  # noqa: E402


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


def row(label: str, diff: WhatIf, base: float | None) -> dict[str, Any]:
    run = diff.run
    assert run is not None
    done = diff.total().decisions
    rate = done / run.seconds
    return {"run": label, "decisions": done, "seconds": round(run.seconds, 2), "decisions_per_s": round(rate, 1),
            "decisions_per_cpu_s": round(done / run.cpu_seconds, 1) if run.cpu_seconds else None,
            "speedup": round(rate / base, 2) if base else 1.0, "shards": run.shards,
            "peak_rss_mib_per_worker": sorted(round(v / 1024) for v in run.peak_rss_kib.values())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", required=True, type=Path, help="a log from bench/gen_log.py")
    ap.add_argument("--lines", type=int, nargs="+", default=[2000], help="slice sizes in lines (default 2000)")
    ap.add_argument("--dask", action="store_true", help="also run on a local Dask cluster of 2 workers")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "whatif_speed.json")
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        policy = load_policy(cap_policy(folder))
        for lines in args.lines:
            log = slice_log(args.log, lines, folder)
            one = whatif([log], policy, workers=1)
            base = row(f"{lines} lines, 1 worker (inline)", one, None)
            rows.append(base)
            runs = [("2 workers (pool)", whatif([log], policy, workers=2))]
            if args.dask:
                runs.append(("2 workers (dask local)", whatif([log], policy, workers=2, dask="local")))
            for label, diff in runs:
                assert diff.to_dict(run=False) == one.to_dict(run=False), f"{label}: a different diff"
                rows.append(row(f"{lines} lines, {label}", diff, base["decisions_per_s"]))
            print(one.summary().split("\n")[1], file=sys.stderr)
    for r in rows:
        print(f"{r['run']:<40} {r['decisions']:>6} decisions {r['seconds']:>7.1f} s {r['decisions_per_s']:>7.1f}/s "
              f"({r['decisions_per_cpu_s']}/CPU s) x{r['speedup']:<5} shards {r['shards']:>3} "
              f"peak RSS MiB {r['peak_rss_mib_per_worker']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
