"""Loopback load on ``ctxbudget serve``: throughput and latency at concurrency 1, 8, 32.

    .venv/bin/python -m bench.load_service                        # 200 requests per level
    .venv/bin/python -m bench.load_service --requests 500 --concurrency 8

Starts ``ctxbudget serve`` as a subprocess on a free 127.0.0.1 port with a temporary
policy folder and audit log (fsync on, as always), then sends ``--requests`` decisions of
50 candidates each (deterministic texts and scores, ``token_count`` left out so the
service counts) from ``--concurrency`` httpx async clients. Two policies: ``budget``
(a token budget only) and ``rules`` (budget, levels, per-source caps, a pin, a blocked
rule). Reports per policy and level: decisions/s, p50 and p99 latency (ms, client side,
request sent to answer read), and that the log holds every acknowledged decision. One
worker process; no goal is asserted here (timings depend on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from engine.audit.log import AuditLog

HEAD = "apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {{name: {name}, revision: 'bench-1'}}\nspec:\n"
POLICIES = {
    "budget": "  budget: {max_tokens: 1500}\n  audit: {store_content: true}\n",
    "rules": ("  budget: {max_tokens: 1500}\n  audit: {store_content: true}\n  min_relevance: 0.05\n"
              "  levels:\n    SECTION: {max_items: 4}\n    PARAGRAPH: {max_tokens: 1200}\n"
              "  sources: {group_by: prefix, separator: '#', max_items_per_source: 3}\n"
              "  pinned:\n    - id: doc-0#0\n  blocked:\n    - metadata: {pii: true}\n"),
}
WORDS = "refund shipping invoice contract warranty account delivery return policy customer".split()


def candidates(n: int = 50) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        text = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(20 + (i * 13) % 60))
        out.append({"source_id": f"doc-{i % 9}#{i}" if i else "doc-0#0", "content": text,
                    "relevance_score": round(((i * 37) % 100) / 100, 2),
                    "level": "SECTION" if i % 5 == 0 else "PARAGRAPH",
                    "metadata": {"pii": i % 17 == 16}})
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def level(url: str, body: dict[str, Any], requests: int, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    ids: list[str] = []
    queue = iter(range(requests))
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker() -> None:
            for _ in queue:
                t0 = time.perf_counter()
                r = await client.post(url, json=body)
                latencies.append(time.perf_counter() - t0)
                r.raise_for_status()
                ids.append(r.json()["decision_id"])
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    latencies.sort()
    return {"concurrency": concurrency, "requests": requests, "decisions_per_s": requests / wall,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], "ids": ids}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=200, help="decisions per concurrency level (default 200)")
    ap.add_argument("--concurrency", type=int, action="append", help="levels (default 1, 8, 32)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    levels = args.concurrency or [1, 8, 32]
    with tempfile.TemporaryDirectory(prefix="ctxbudget-load-") as tmp:
        folder = Path(tmp) / "policies"
        folder.mkdir()
        for name, body in POLICIES.items():
            (folder / f"{name}.yaml").write_text(HEAD.format(name=name) + body)
        log = Path(tmp) / "audit.jsonl"
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--policies", str(folder),
                                 "--port", str(port), "--audit-log", str(log)], stderr=subprocess.PIPE)
        rows = []
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(base + "/health", timeout=2).raise_for_status()
                    break
                except httpx.TransportError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("the service did not start: " + (proc.stderr.read().decode()
                                                                          if proc.stderr else ""))
                    time.sleep(0.1)
            body = {"candidates": candidates()}
            for name in POLICIES:
                asyncio.run(level(f"{base}/v1/decide/{name}", body, 10, 2))  # warm-up
                for c in levels:
                    rows.append({"policy": name, **asyncio.run(level(f"{base}/v1/decide/{name}", body,
                                                                     args.requests, c))})
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        logged = {e["record"]["decision_id"] for e in AuditLog(log) if e.get("kind") == "decision"}
    acked = [i for r in rows for i in r.pop("ids")]
    missing = sum(1 for i in acked if i not in logged)
    if args.json:
        print(json.dumps({"rows": rows, "acknowledged": len(acked), "missing_from_log": missing}, indent=2))
        return 0
    print(f"{'policy':<8} {'conc':>4} {'req':>5} {'dec/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(f"{r['policy']:<8} {r['concurrency']:>4} {r['requests']:>5} {r['decisions_per_s']:>8.1f} "
              f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}")
    print(f"acknowledged {len(acked)} decisions, {missing} missing from the audit log")
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
