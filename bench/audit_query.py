"""How long `audit query` and `audit export` take on a log of N real decision records.

One real support-assistant decision (engine.decide) is appended N times under fresh ids
(sealed by AuditLog.append, so the chain is real); then a query that matches nothing (chain verify + scan),
a query matching every record (each match is record-checked), and CSV/Parquet exports
(every record checked) are timed.

    .venv/bin/python bench/audit_query.py [--n 1000]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
import uuid
from pathlib import Path

from engine import load_policy
from engine.audit.export import export
from engine.audit.log import AuditLog
from engine.audit.query import Query, search
from engine.candfile import load_candidates_file
from engine.candidates import from_mappings
from engine.decide import decide

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="decision records in the log")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = AuditLog(Path(tmp) / "a.jsonl", signer=None)
        policy = load_policy(ROOT / "policies" / "support-assistant.yaml")
        cands = from_mappings(load_candidates_file(ROOT / "tests" / "fixtures" / "candidates" / "support-assistant.jsonl"))
        base = decide(cands, policy).record
        for _ in range(args.n):
            rec = copy.deepcopy(base)
            rec["decision_id"] = str(uuid.uuid4())
            log.append(rec)
        size = log.path.stat().st_size
        print(f"log: {args.n:,} decisions, {size / 1e6:.1f} MB")
        for label, q in (("query, no match (--source-id nosuch)", Query(source_ids=("nosuch",))),
                         (f"query, {args.n:,} matches (no filter)", Query())):
            t0 = time.perf_counter()
            r = search(q, [log])
            print(f"{label}: {time.perf_counter() - t0:.2f} s ({len(r.matches):,} matched, "
                  f"trustworthy {r.trustworthy})")
        for fmt in ("csv", "parquet"):
            t0 = time.perf_counter()
            done = export([log], Path(tmp) / f"out.{fmt}", fmt=fmt)
            print(f"export {fmt}: {time.perf_counter() - t0:.2f} s ({done.rows:,} rows)")


if __name__ == "__main__":
    main()
