"""One shard replayed by this tree and by another (``--base``), alternately, in fresh
processes: decisions per CPU second of each and their ratio (issue 17's A/B figure).

    python bench/whatif_ab.py --log whatif/decisions.jsonl --base ../main --lines 1000 --rounds 4

Each round runs, in turn, a child process per tree that replays the first ``--lines``
lines of the log's first segment (a copy, with its policy archive) in one shard, inline,
under the shipped support policy capped at 2 chunks per source (``whatif_speed.py``),
after one warm-up pass of the same shard; it prints the CPU time of the timed pass and
the diff's digest. The digests must agree (the same diff); the figure is the best round
of each tree and the ratio of the two (CPU time, so what else the machine runs counts
less than in wall time; the alternation spreads the rest evenly).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import hashlib, json, sys, time
from pathlib import Path
tree, log, policy = sys.argv[1:4]
sys.path.insert(0, tree)
from engine import load_policy
from engine.audit.whatif import Task, collect, run_shard, warm
from engine.audit.whatifshard import plan
pol = load_policy(policy)
task = Task(pol.to_dict(), pol.name)
warm(task)
shards, problems = plan([log], 1 << 40)
run_shard(shards[0], task)
t = time.process_time()
res = run_shard(shards[0], task)
cpu = time.process_time() - t
diff = collect(pol, [log], [(shards[0], res)], problems)
digest = hashlib.sha256(json.dumps(diff.to_dict(run=False), sort_keys=True).encode()).hexdigest()
print(json.dumps({"cpu_s": cpu, "decisions": diff.total().decisions, "digest": digest[:16]}))
"""


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "bench"))
    from whatif_speed import cap_policy, slice_log

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", required=True, type=Path, help="a log from bench/gen_log.py")
    ap.add_argument("--base", required=True, type=Path, help="the other tree (a checkout of main)")
    ap.add_argument("--lines", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args(argv)
    trees = {"base": args.base.resolve(), "this": ROOT}
    best: dict[str, float] = {}
    digests: set[str] = set()
    decisions = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        policy = cap_policy(folder)
        log = slice_log(args.log, args.lines, folder)
        for r in range(args.rounds):
            for name, tree in (trees.items() if r % 2 == 0 else reversed(list(trees.items()))):
                env = {**os.environ, "PYTHONPATH": str(tree)}
                out = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(log), str(policy)],
                                     capture_output=True, text=True, env=env, cwd=tree, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                decisions = row["decisions"]
                digests.add(row["digest"])
                best[name] = min(best.get(name, 1e9), row["cpu_s"])
                print(f"round {r + 1} {name}: {row['decisions']} decisions, {row['cpu_s']:.2f} CPU s, "
                      f"{row['decisions'] / row['cpu_s']:.1f} per CPU s, digest {row['digest']}, "
                      f"load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    rate = {k: decisions / v for k, v in best.items()}
    print(f"{decisions} decisions, best of {args.rounds}: base {rate['base']:.1f} per CPU s, this "
          f"{rate['this']:.1f} per CPU s: x{rate['this'] / rate['base']:.2f}; "
          f"digests {'identical' if len(digests) == 1 else 'DIFFER: ' + ', '.join(sorted(digests))}")
    return 0 if len(digests) == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
