"""Where a replayed decision's CPU time goes, stage by stage, in one worker (issue 17).

    python bench/whatif_stages.py --log whatif/decisions.jsonl --lines 1000 --rounds 3

Replays the first ``--lines`` lines of the log's first segment (a copy with its policy
archive) in one shard, inline, under the shipped support policy capped at 2 chunks per
source (``whatif_speed.py``), with each stage wrapped in a CPU-time counter: reading
(``scan_parse``: one parse per line, re-hashed, checked canonical; ``expand``: the
compact record expanded), the record checks, the recorded inputs as candidates,
``allocate()``, the comparison, and the rest (the loop, the diff, the replay's own
bookkeeping). Prints milliseconds per replayed decision for the best of ``--rounds``
passes (after one warm-up pass), and decisions per CPU second.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from engine import load_policy  # noqa: E402
from engine.audit import replay as R  # noqa: E402
from engine.audit import whatif as W  # noqa: E402
from engine.audit import whatifshard as S  # noqa: E402


def _wrap(mod: Any, name: str, label: str, acc: dict[str, float]) -> None:
    inner: Callable[..., Any] = getattr(mod, name)

    def timed(*a: Any, **k: Any) -> Any:
        t = time.process_time()
        try:
            return inner(*a, **k)
        finally:
            acc[label] = acc.get(label, 0.0) + time.process_time() - t

    setattr(mod, name, timed)


def main(argv: list[str] | None = None) -> int:
    from whatif_speed import cap_policy, slice_log

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", required=True, type=Path, help="a log from bench/gen_log.py")
    ap.add_argument("--lines", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    acc: dict[str, float] = {}
    for mod, name, label in ((S, "scan_parse", "read: scan_parse"), (S, "expand", "read: expand"),
                             (W, "check_record_notes", "record checks"), (R, "_candidates", "candidates"),
                             (R, "allocate", "allocate()"), (R, "_compare", "compare"), (W, "replay", "replay")):
        _wrap(mod, name, label, acc)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        policy = load_policy(cap_policy(folder))
        log = slice_log(args.log, args.lines, folder)
        task = W.Task(policy.to_dict(), policy.name)
        W.warm(task)
        shards, _ = S.plan([log], 1 << 40)
        W.run_shard(shards[0], task)
        best: tuple[float, dict[str, float], int] | None = None
        for _ in range(args.rounds):
            acc.clear()
            t = time.process_time()
            res = W.run_shard(shards[0], task)
            total = time.process_time() - t
            done = sum(g.decisions for g in res.groups.values())
            if best is None or total < best[0]:
                best = (total, dict(acc), done)
    assert best is not None
    total, stages, done = best
    per = {k: 1000 * v / done for k, v in stages.items()}
    replay = per.pop("replay")
    per["replay: the rest"] = replay - per["candidates"] - per["allocate()"] - per["compare"]
    per["loop, diff, other"] = 1000 * total / done - replay - per["record checks"] - per["read: scan_parse"] \
        - per["read: expand"]
    ms = 1000 * total / done
    for k, v in per.items():
        print(f"{k:<22} {v:6.3f} ms  {100 * v / ms:5.1f}%")
    print(f"{'total':<22} {ms:6.3f} ms  ({done} decisions, {done / total:.0f} per CPU second)")
    print(json.dumps({"decisions": done, "ms_per_decision": round(ms, 3),
                      "stages_ms": {k: round(v, 3) for k, v in per.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
