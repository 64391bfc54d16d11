"""Peak memory of a what-if worker and of ``audit verify``'s record checks against the
length of the log (issue 17: memory bounded whatever the log's length).

    python bench/gen_log.py --out whatif/decisions.jsonl --decisions 100000
    export CTXBUDGET_AUDIT_SECRET=whatif-keys/audit.secret
    python bench/whatif_memory.py --log whatif/decisions.jsonl --lines 1000 4000 10000

For each slice (the first N lines of the log's first segment, copied with its policy
archive: a valid log of its own) it runs, each in a fresh process, so that the peak RSS
(``ru_maxrss``) is that run's alone:

- ``whatif``: the support cap-2 change inline (one worker: the process is the worker),
  8 MiB shards, changed ids streamed to a file (``--changed-ids``);
- ``verify``: ``check_log(keep=False)``, what ``ctxbudget audit verify`` runs;
- ``verify-held`` (slices up to ``--held-max`` lines): ``check_log(keep=True)``, which
  holds every record (as ``audit verify`` did before), for comparison.

It prints the log's size, the peak RSS and its growth per 1,000 decisions over the
smallest slice, and writes ``bench/results/whatif_memory.json``. ``--cap MIB`` runs
every child under an address-space limit (``RLIMIT_AS``, as ``prlimit --as`` sets).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
mode, log, policy, ids = sys.argv[2:6]
from engine import AuditLog, load_policy
started, cpu0 = time.perf_counter(), time.process_time()
if mode == "whatif":
    from engine.audit.whatif import whatif
    from engine.audit.whatifout import ChangedIds
    sink = ChangedIds(ids)
    diff = whatif([log], load_policy(policy), workers=1, shard_bytes=8 << 20, on_changed=sink.add, keep_ids=False)
    sink.close()
    assert diff.intact, diff.problems
    done = diff.total().decisions
else:
    from engine.audit.records import check_log
    checks = check_log(AuditLog(log, signer=None), keep=(mode == "verify-held"))
    assert checks.ok, checks.summary()
    done = checks.records_checked
print(json.dumps({"decisions": done, "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu0}))
"""


def _limit(cap_mib: int | None) -> Any:
    if cap_mib is None:
        return None

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap_mib << 20, cap_mib << 20))
    return apply


def run(mode: str, log: Path, policy: Path, ids: Path, cap_mib: int | None) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), mode, str(log), str(policy), str(ids)],
                         capture_output=True, text=True, preexec_fn=_limit(cap_mib), env=os.environ.copy())
    if out.returncode != 0:
        raise SystemExit(f"{mode} on {log} failed:\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    from whatif_speed import cap_policy, slice_log

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", required=True, type=Path, help="a log from bench/gen_log.py")
    ap.add_argument("--lines", type=int, nargs="+", default=[1000, 4000, 10000], help="slice sizes in lines")
    ap.add_argument("--held-max", type=int, default=4000, help="largest slice for verify-held (default 4000)")
    ap.add_argument("--modes", nargs="+", default=["whatif", "verify", "verify-held"])
    ap.add_argument("--cap", type=int, metavar="MIB", help="address-space limit of every child (RLIMIT_AS)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "whatif_memory.json")
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        policy = cap_policy(folder)
        for lines in sorted(args.lines):
            log = slice_log(args.log, lines, folder)
            size = log.stat().st_size
            for mode in args.modes:
                if mode == "verify-held" and lines > args.held_max:
                    continue
                r = run(mode, log, policy, folder / f"ids-{lines}.txt", args.cap)
                rows.append({"mode": mode, "lines": lines, "log_mib": round(size / 2**20, 1), **r})
                print(f"{mode:<12} {lines:>6} lines {size / 2**20:8.1f} MiB log: {r['decisions']:>6} decisions, "
                      f"peak RSS {r['peak_rss_kib'] / 1024:7.1f} MiB ({r['cpu_seconds']:.0f} CPU s)", flush=True)
    for mode in args.modes:
        mine = [r for r in rows if r["mode"] == mode]
        if len(mine) > 1:
            a, b = mine[0], mine[-1]
            per = (b["peak_rss_kib"] - a["peak_rss_kib"]) / max(1, b["decisions"] - a["decisions"]) * 1000
            print(f"{mode}: peak RSS {a['peak_rss_kib'] / 1024:.0f} -> {b['peak_rss_kib'] / 1024:.0f} MiB from "
                  f"{a['decisions']:,} to {b['decisions']:,} decisions ({per:+,.0f} KiB per 1,000 decisions; "
                  f"the log grew {b['log_mib'] - a['log_mib']:,.0f} MiB)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
