"""Loopback load on ``ctxbudget serve``: throughput and latency at concurrency 1, 8, 32.

    .venv/bin/python -m bench.load_service                        # 200 requests per level
    .venv/bin/python -m bench.load_service --requests 500 --concurrency 8

Starts ``ctxbudget serve`` as a subprocess on a free 127.0.0.1 port with a temporary
policy folder and audit log (fsync on, as always), then sends ``--requests`` decisions of
50 candidates each (deterministic texts and scores, ``token_count`` left out so the
service counts) from ``--concurrency`` httpx async clients. Two policies: ``budget``
(a token budget only) and ``rules`` (budget, levels, per-source caps, a pin, a blocked
rule). Reports per policy and level: decisions/s, p50 and p99 latency (ms, client side,
request sent to answer read), the server's CPU per decision (all its processes), and
that the log holds every acknowledged decision and verifies. ``--workers N`` runs N server processes on one log; ``--kills N`` then starts,
loads and ``kill -9``s the server N times on one log and counts acknowledged decisions
missing from it (must be 0). No goal is asserted here (timings depend on the machine).

    .venv/bin/python -m bench.load_service --policy budget --concurrency 8 --requests 1000
    .venv/bin/python -m bench.load_service --workers 2 --policy budget --concurrency 16 --kills 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


async def level(url: str, body: dict[str, Any], requests: int, concurrency: int,
                client: str = "httpx") -> dict[str, Any]:
    """``requests`` decisions from ``concurrency`` clients at once: throughput, latency
    (client side: request sent to answer read) and the client's own CPU per decision
    (this process; on a shared machine the client's CPU is taken from the server's)."""
    if client == "raw":
        return await _raw_level(url, body, requests, concurrency)
    latencies: list[float] = []
    ids: list[str] = []
    queue = iter(range(requests))
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client_:
        async def worker() -> None:
            for _ in queue:
                t0 = time.perf_counter()
                r = await client_.post(url, json=body)
                latencies.append(time.perf_counter() - t0)
                r.raise_for_status()
                ids.append(r.json()["decision_id"])
        c0 = time.process_time()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
    return _row(concurrency, requests, wall, cpu, latencies, ids)


def _row(concurrency: int, requests: int, wall: float, cpu: float, latencies: list[float],
         ids: list[str]) -> dict[str, Any]:
    latencies.sort()
    return {"concurrency": concurrency, "requests": requests, "decisions_per_s": requests / wall,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "client_cpu_ms_per_decision": 1000 * cpu / requests, "ids": ids}


async def _raw_level(url: str, body: dict[str, Any], requests: int, concurrency: int) -> dict[str, Any]:
    """:func:`level` with a minimal HTTP/1.1 keep-alive client on asyncio streams (one
    connection per client, the request's bytes built once): about a tenth of httpx's CPU
    per request, so that on a machine whose cores the client shares with the server the
    figures say more about the server. Any answer but 200 stops the run."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payload = json.dumps(body).encode()
    head = (f"POST {parts.path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n\r\n").encode()
    request = head + payload
    latencies: list[float] = []
    ids: list[str] = []
    queue = iter(range(requests))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for _ in queue:
                t0 = time.perf_counter()
                writer.write(request)
                status = await reader.readuntil(b"\r\n")
                length = -1
                while True:
                    line = await reader.readuntil(b"\r\n")
                    if line == b"\r\n":
                        break
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length < 0:
                    raise SystemExit("the service answered without a content-length")
                answer = await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                if status.split(b" ", 2)[1] != b"200":
                    raise SystemExit(f"the service answered {status!r}: {answer[:300]!r}")
                ids.append(json.loads(answer)["decision_id"])
        finally:
            writer.close()

    c0 = time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return _row(concurrency, requests, wall, time.process_time() - c0, latencies, ids)


def scrape(base: str) -> dict[str, dict[float, float]]:
    """The ``ctxbudget_decision_seconds`` and ``ctxbudget_audit_append_seconds``
    histograms' cumulative bucket counts (upper bound -> count, ``inf`` last), summed
    over products, from one ``GET /metrics`` (one worker's registry)."""
    out: dict[str, dict[float, float]] = {}
    for line in httpx.get(base + "/metrics", timeout=10).text.splitlines():
        for name in ("ctxbudget_decision_seconds", "ctxbudget_audit_append_seconds"):
            if line.startswith(name + "_bucket{"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                bound = float("inf") if le == "+Inf" else float(le)
                counts = out.setdefault(name, {})
                counts[bound] = counts.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def quantile_ms(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile (ms) of what was observed between two scrapes of one histogram,
    interpolated linearly inside its bucket as Prometheus' ``histogram_quantile`` does."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank:
            if bound == float("inf"):
                return 1000 * lower
            inside = count - below
            return 1000 * (lower + (bound - lower) * ((rank - below) / inside if inside else 1.0))
        lower, below = bound, count
    return None


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of group ``pgid``
    (the server and its workers): a measure of cost that other load on the machine does
    not inflate as it inflates latency."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp ... utime(11) stime(12)
            total += int(fields[11]) + int(fields[12])
    return total / tick


def start_server(folder: Path, log: Path, port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    """``ctxbudget serve`` in its own session (``kill -9`` of the group takes every worker)."""
    more = ["--workers", str(workers)] if workers != 1 else []  # (older trees have no --workers)
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--policies", str(folder),
                             "--port", str(port), "--audit-log", str(log), *more],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            cwd=Path(__file__).resolve().parent.parent)


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(base + "/health", timeout=2).raise_for_status()
            return
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the service did not start: " + (proc.stderr.read().decode()
                                                                  if proc.stderr else ""))
            time.sleep(0.05)


class Zygote:
    """A process that imported the service once and forks a fresh server per round (the
    CI test's way to restart in milliseconds, not the seconds imports take). The forked
    server is a real process of its own: ``kill -9`` of it is what a crash is."""

    def __init__(self, folder: Path, log: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                                      "import load_service; load_service._zygote(sys.argv[2], sys.argv[3])",
                                      str(Path(__file__).resolve().parent), str(folder), str(log)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd=Path(__file__).resolve().parent.parent)

    def fork(self, port: int) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{port}\n".encode())
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the zygote died: " + (self.proc.stderr.read().decode() if self.proc.stderr else ""))
        return int(line)

    def close(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=30)


def _zygote(folder: str, log: str) -> None:
    """The zygote's loop: a port on stdin -> a forked ``serve`` on it; its pid on stdout."""
    from engine.service.run import serve

    for line in sys.stdin:
        while True:  # reap the servers killed so far
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        pid = os.fork()
        if pid == 0:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1):
                os.dup2(null, fd)
            try:
                serve(policies=folder, host="127.0.0.1", port=int(line), audit_log=log, tokens=None,
                      max_body_bytes=16 << 20, max_candidates=10_000, announce=lambda _: None)
            finally:
                os._exit(0)
        print(pid, flush=True)


async def _load_until_killed(url: str, body: dict[str, Any], pid: int,
                             concurrency: int, acks_before_kill: int) -> tuple[list[str], int]:
    """Post decisions from ``concurrency`` clients; once ``acks_before_kill`` answers are
    in, SIGKILL the server's process group while requests are in flight. Returns the
    acknowledged decision ids (a 200 whose body was read) and the requests that failed."""
    acked: list[str] = []
    failed = 0
    enough = asyncio.Event()

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker() -> None:
            nonlocal failed
            while True:
                try:
                    r = await client.post(url, json=body)
                    decision_id = r.json()["decision_id"] if r.status_code == 200 else None
                except (httpx.TransportError, ValueError):
                    failed += 1
                    return  # the server is gone: in-flight requests were not acknowledged
                if decision_id is None:
                    raise SystemExit(f"the service answered {r.status_code}: {r.text[:300]}")
                acked.append(decision_id)
                if len(acked) >= acks_before_kill:
                    enough.set()

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await enough.wait()
        os.killpg(pid, signal.SIGKILL)  # kill -9, every process of the server
        await asyncio.gather(*tasks)
    return acked, failed


def kill_under_load(kills: int = 20, *, workers: int = 1, concurrency: int = 8,
                    acks_before_kill: int = 20, candidates_n: int = 50,
                    tmp: Path | None = None, fork: bool = False) -> dict[str, Any]:
    """``kills`` rounds of: start the server on the same log, load it, ``kill -9`` it.
    Then: every acknowledged decision id must be in the log, and the log must verify
    (after :meth:`AuditLog.recover` moves a torn tail aside, if the last kill left one).
    ``fork``: start each server from a :class:`Zygote` (one worker only), not with
    ``ctxbudget serve`` (which imports everything again each round)."""
    with tempfile.TemporaryDirectory(prefix="ctxbudget-kill-") as own:
        root = tmp or Path(own)
        folder = root / "policies"
        folder.mkdir(exist_ok=True)
        (folder / "budget.yaml").write_text(HEAD.format(name="budget") + POLICIES["budget"])
        log = root / "audit.jsonl"
        body = {"candidates": candidates(candidates_n)}
        acked: list[str] = []
        failed = 0
        zygote = Zygote(folder, log) if fork else None
        try:
            for _ in range(kills):
                port = free_port()
                proc = None if zygote else start_server(folder, log, port, workers)
                pid = proc.pid if proc else zygote.fork(port)  # type: ignore[union-attr]
                try:
                    base = f"http://127.0.0.1:{port}"
                    wait_ready(base, proc or zygote.proc)  # type: ignore[union-attr]
                    got, lost = asyncio.run(_load_until_killed(f"{base}/v1/decide/budget", body, pid,
                                                               concurrency, acks_before_kill))
                    acked += got
                    failed += lost
                finally:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    if proc is not None:
                        proc.wait(timeout=30)
                        if proc.stderr:
                            proc.stderr.close()
        finally:
            if zygote is not None:
                zygote.close()
        audit = AuditLog(log, signer=None)
        first = audit.verify()
        torn_at_end = not first.ok
        recovered = audit.recover() if torn_at_end else None
        report = audit.verify()
        entries = [e for _, e, _ in audit.scan() if e is not None]
        logged = {e["record"]["decision_id"] for e in entries if e.get("kind") == "decision"}
        return {"kills": kills, "workers": workers, "acknowledged": len(acked),
                "unacknowledged_requests": failed, "logged_decisions": len(logged),
                "acknowledged_missing": sum(1 for i in acked if i not in logged),
                "torn_tails_recovered": sum(1 for e in entries if e.get("kind") == "recovery"),
                "torn_at_end": torn_at_end, "recovered_at_end": recovered is not None,
                "verify_ok": report.ok}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=200, help="decisions per concurrency level (default 200)")
    ap.add_argument("--concurrency", type=int, action="append", help="levels (default 1, 8, 32)")
    ap.add_argument("--policy", choices=sorted(POLICIES), action="append",
                    help="policies to load (default both)")
    ap.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    ap.add_argument("--kills", type=int, default=0,
                    help="then kill -9 the server under load this many times and count acknowledged "
                    "vs logged decisions (default 0; the issue's check is 20)")
    ap.add_argument("--client", choices=["raw", "httpx"], default="raw",
                    help="raw: a minimal asyncio HTTP/1.1 client (default; little CPU taken from the "
                    "server on a shared machine); httpx: httpx's async client")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    levels = args.concurrency or [1, 8, 32]
    policies = args.policy or list(POLICIES)
    with tempfile.TemporaryDirectory(prefix="ctxbudget-load-") as tmp:
        folder = Path(tmp) / "policies"
        folder.mkdir()
        for name, body in POLICIES.items():
            (folder / f"{name}.yaml").write_text(HEAD.format(name=name) + body)
        log = Path(tmp) / "audit.jsonl"
        port = free_port()
        proc = start_server(folder, log, port, args.workers)
        rows = []
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, proc)
            body = {"candidates": candidates()}
            for name in policies:
                asyncio.run(level(f"{base}/v1/decide/{name}", body, 10 * args.workers, 2, args.client))  # warm-up
                for c in levels:
                    cpu = group_cpu_s(proc.pid)
                    hist = scrape(base) if args.workers == 1 else None
                    load0 = os.getloadavg()[0]
                    row = asyncio.run(level(f"{base}/v1/decide/{name}", body, args.requests, c, args.client))
                    row["server_cpu_ms_per_decision"] = 1000 * (group_cpu_s(proc.pid) - cpu) / args.requests
                    row["load_average"] = [load0, os.getloadavg()[0]]
                    if hist is not None:  # one worker: its registry saw every request of the level
                        after = scrape(base)
                        for key, metric in (("server", "ctxbudget_decision_seconds"),
                                            ("append", "ctxbudget_audit_append_seconds")):
                            for q in (0.5, 0.99):
                                row[f"{key}_p{round(q * 100)}_ms"] = quantile_ms(
                                    hist.get(metric, {}), after.get(metric, {}), q)
                    rows.append({"policy": name, **row})
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        audit = AuditLog(log, signer=None)
        logged = {e["record"]["decision_id"] for e in audit if e.get("kind") == "decision"}
        verified = audit.verify().ok
    acked = [i for r in rows for i in r.pop("ids")]
    missing = sum(1 for i in acked if i not in logged)
    kills = kill_under_load(args.kills, workers=args.workers) if args.kills else None
    if args.json:
        print(json.dumps({"workers": args.workers, "rows": rows, "acknowledged": len(acked),
                          "missing_from_log": missing, "verify_ok": verified, "kills": kills}, indent=2))
    else:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"{args.workers} worker(s), fsync on, 50 candidates per decision; "
              f"{os.cpu_count()} cores, load average {load}")
        print(f"client {args.client}; p50/p99: client side; srv p50/p99: the server's decide path "
              "(ctxbudget_decision_seconds, 1 worker only); cpu: ms per decision")
        print(f"{'policy':<8} {'conc':>4} {'req':>5} {'dec/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'srv p50':>8} {'srv p99':>8} {'srv cpu':>8} {'cli cpu':>8} {'load':>10}")

        def ms(value: float | None) -> str:
            return f"{value:>8.1f}" if value is not None else f"{'-':>8}"
        for r in rows:
            print(f"{r['policy']:<8} {r['concurrency']:>4} {r['requests']:>5} {r['decisions_per_s']:>8.1f} "
                  f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {ms(r.get('server_p50_ms'))} "
                  f"{ms(r.get('server_p99_ms'))} {r['server_cpu_ms_per_decision']:>8.2f} "
                  f"{r['client_cpu_ms_per_decision']:>8.2f} "
                  f"{r['load_average'][0]:>4.1f}-{r['load_average'][1]:<4.1f}")
        print(f"acknowledged {len(acked)} decisions, {missing} missing from the audit log; verify "
              f"{'ok' if verified else 'FAILED'}")
        if kills:
            print(f"kill -9 under load: {kills['kills']} kills ({kills['workers']} worker(s)), "
                  f"{kills['acknowledged']} acknowledged, {kills['acknowledged_missing']} of them missing, "
                  f"{kills['logged_decisions']} logged, {kills['unacknowledged_requests']} requests cut off, "
                  f"{kills['torn_tails_recovered']} torn tails recovered; verify "
                  f"{'ok' if kills['verify_ok'] else 'FAILED'}")
    lost = missing + (kills["acknowledged_missing"] if kills else 0)
    return 0 if lost == 0 and verified and (kills is None or kills["verify_ok"]) else 1


if __name__ == "__main__":
    sys.exit(main())
