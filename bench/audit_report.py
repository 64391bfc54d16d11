"""How big and how slow `audit report` is on large logs, and whether Chromium renders it.

Two logs of real records: N support-assistant decisions (one real decision appended N
times under fresh ids, each a few seconds apart), and one decision over C candidates
(greedy, so the solver's time does not count). For each: the command's wall time, the
HTML size, the item rows and "N more" notes it holds, and (with --browser) the time
headless Chromium takes to load it and run the page's script (data-ready="1").

    .venv/bin/python bench/audit_report.py [--n 2000] [--candidates 10000] [--browser]
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import subprocess
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from engine import cli, load_policy
from engine.audit.log import AuditLog
from engine.candfile import load_candidates_file
from engine.candidates import from_mappings
from engine.decide import decide
from engine.policy import BudgetStrategy, Policy

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND")  # Chromium's own pings never leave the machine


def measure(log: Path, out: Path, browser: bool, tmp: Path) -> str:
    t0 = time.perf_counter()
    code = cli.main(["audit", "report", str(log), "--out", str(out)])
    seconds = time.perf_counter() - t0
    html = out.read_text(encoding="utf-8")
    rows = html.count("<tr class=item ")
    notes = re.findall(r"and ([\d,]+) more (?:excluded|included|candidate) items not shown", html)
    hidden = sum(int(n.replace(",", "")) for n in notes)
    text = (f"exit {code}, {seconds:.2f} s, {len(html) / 1e6:.2f} MB HTML, {rows:,} item rows shown, "
            f"{hidden:,} counted in {len(notes):,} 'N more' notes")
    if browser:
        t0 = time.perf_counter()
        dom = subprocess.run(["/usr/bin/chromium", *FLAGS, f"--user-data-dir={tmp / 'profile'}", "--dump-dom",
                              out.as_uri()], capture_output=True, text=True, timeout=600, check=False).stdout
        ready = 'data-ready="1"' in dom
        text += f"; chromium {time.perf_counter() - t0:.1f} s, script ran: {ready}"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="decisions in the first log")
    ap.add_argument("--candidates", type=int, default=10_000, help="candidates of the one decision in the second log")
    ap.add_argument("--browser", action="store_true", help="also load each report in headless Chromium")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        os.environ.setdefault("CTXBUDGET_AUDIT_SECRET", str(tmp / "keys" / "secret"))
        if not Path(os.environ["CTXBUDGET_AUDIT_SECRET"]).exists():
            assert cli.main(["audit", "secret", "--out", os.environ["CTXBUDGET_AUDIT_SECRET"]]) == 0
        (tmp / "logs").mkdir()
        many = AuditLog(tmp / "logs" / "many.jsonl", signer=None)
        policy = load_policy(ROOT / "policies" / "support-assistant.yaml")
        cands = from_mappings(load_candidates_file(ROOT / "tests" / "fixtures" / "candidates" / "support-assistant.jsonl"))
        base = decide(cands, policy).record
        t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
        for k in range(args.n):
            rec = copy.deepcopy(base)
            rec["decision_id"] = str(uuid.uuid4())
            rec["timestamp"] = (t0 + timedelta(seconds=900 * k)).isoformat().replace("+00:00", "Z")
            many.append(rec)
        # a rewritten timestamp fails no record check (the chain is resealed by append)
        print(f"{args.n:,} decisions ({many.path.stat().st_size / 1e6:.1f} MB log): "
              + measure(many.path, tmp / "many.html", args.browser, tmp))
        big = AuditLog(tmp / "logs" / "big.jsonl", signer=None)
        rows = [{"source_id": f"doc-{k // 10}#p{k % 10}", "content": f"passage {k} " + "word " * (k % 40),
                 "relevance_score": (k * 7919 % 1000) / 1000} for k in range(args.candidates)]
        pol = Policy.default(4000, tokenizer="cl100k_base", strategy=BudgetStrategy.GREEDY)
        decide(rows, pol, audit_log=big)
        print(f"1 decision of {args.candidates:,} candidates ({big.path.stat().st_size / 1e6:.1f} MB log): "
              + measure(big.path, tmp / "big.html", args.browser, tmp))


if __name__ == "__main__":
    main()
