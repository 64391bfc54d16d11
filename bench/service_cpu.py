"""CPU milliseconds per decision of the service, in-process, stage by stage.

    .venv/bin/python -m bench.service_cpu                     # budget and rules, 5 x 200 each
    .venv/bin/python -m bench.service_cpu --policy budget --rounds 10 --json
    .venv/bin/python -m bench.service_cpu --base ../main-tree      # A/B: that tree, then this one

``--base TREE`` measures the engine of another checkout (e.g. ``git archive main | tar -x
-C ../main-tree``) against this one in one run: each round runs one subprocess per
tree, alternately, and the least round of each is shown with their ratio (the load on
the cores changes during a run; alternating gives both trees the same share of it).

Each figure is the least over the rounds (other load on the cores only adds to it).

Drives the ASGI application directly (no socket, no client), one request at a time, 50
candidates as in ``bench/load_service.py``, fsync on, the garbage collector set up as
``ctxbudget serve`` sets it (``engine.service.run.tune_gc``, where the tree has it). The whole request is measured in
process CPU time (every thread: the route runs on the thread pool), each stage in the
CPU time of the thread that runs it (``time.thread_time``), by wrapping the functions the
decide path calls. CPU time, not wall time: the machine's cores are shared, and other
load inflates wall time but not the CPU a decision costs.

Stages (each exclusive of the stages it calls, so they add up to the whole; ``http`` is
what is left of the request: ASGI, routing, request parsing and validation, the hand-off
to the thread pool, sending the response):

- ``parse``: the request body validated (newer trees; older ones validate in ``http``);
- ``service``: the route's own work (``Service.decision`` less the stages below: the
  policy folder check, the token, the request part, the answer's model);
- ``candidates``: the service's rows into engine candidates (``from_mappings``);
- ``allocate``: ``engine.allocate.allocate`` (counting, solving, verifying);
- ``record``: the audit record (``engine.audit.record.build``) and its compact form;
- ``archive``: the policy archived next to the log (a no-op once archived);
- ``encode``: the record's canonical JSON (``encode_record``);
- ``write``: the group commit: lock, tail, seal (hash), write, signing; ``fsync`` alone;
- ``answer``: the response body (model and JSON); ``metrics``: the Prometheus updates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.load_service import HEAD, POLICIES, candidates

#: (module, attribute, stage): the functions timed, where the decide path looks them up.
WRAPPED = [
    ("engine.service.app", "Service.decide", "service"),
    ("engine.service.app", "Service.decision", "service"),  # older trees: the route's call
    ("engine.service.app", "Service.decide_raw", "service"),  # newer trees: the route's call
    ("engine.service.app", "parse_request", "parse"),
    ("engine.service.app", "_json_bytes", "answer"),
    ("engine.service.app", "from_mappings", "candidates"),
    ("engine.decide", "allocate", "allocate"),
    ("engine.audit.record", "build", "record"),
    ("engine.audit.compact", "compact", "record"),
    ("engine.audit.policies", "archive_policy", "archive"),
    ("engine.audit.log", "encode_record", "encode"),
    ("engine.audit.log", "encode_record_parsed", "encode"),  # newer trees: the append's call
    ("engine.audit.log", "_commit_group", "write"),
    ("engine.service.metrics", "Metrics.decided", "metrics"),
]


_NESTED = threading.local()


def _wrap(stage: str, fn: Callable[..., Any], totals: dict[str, float]) -> Callable[..., Any]:
    """``fn`` timed in its thread's CPU time, exclusive of the stages it calls (and
    counted: ``totals["<stage> calls"]``)."""
    def timed(*args: Any, **kwargs: Any) -> Any:
        totals[stage + " calls"] += 1
        stack: list[float] = _NESTED.__dict__.setdefault("stack", [])
        stack.append(0.0)
        t0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.thread_time() - t0
            inner = stack.pop()
            totals[stage] += spent - inner
            if stack:
                stack[-1] += spent
    return timed


_INSTALLED: dict[str, float] | None = None


def _install() -> dict[str, float]:
    """Wrap the stages once per process; the totals they add to."""
    global _INSTALLED
    if _INSTALLED is not None:
        return _INSTALLED
    import importlib

    totals: dict[str, float] = defaultdict(float)
    _INSTALLED = totals

    for module, attr, stage in WRAPPED:
        mod = importlib.import_module(module)
        owner: Any = mod
        name = attr
        if "." in attr:
            cls, name = attr.split(".")
            owner = getattr(mod, cls)
        if hasattr(owner, name):  # (a tree before or after a change may lack one)
            setattr(owner, name, _wrap(stage, getattr(owner, name), totals))
    from engine.service import models

    models.Decision.model_dump_json = _wrap(  # type: ignore[method-assign]
        "answer", models.Decision.model_dump_json, totals)  # how older trees wrote the answer
    real_fsync = os.fsync
    os.fsync = _wrap("fsync", real_fsync, totals)  # type: ignore[assignment]
    return totals


def run(policy: str, requests: int, *, stages: bool = True, warmup: int = 30,
        repeat: int = 5, concurrency: int = 1) -> dict[str, Any]:
    """The least CPU per decision over ``repeat`` rounds of ``requests``, the whole
    request and each stage (its least round: other load on the cores only adds).
    ``concurrency`` requests at a time (in waves): the route's threads then meet in the
    audit log's group commit, and ``fsyncs_per_decision`` says how many fsyncs they shared."""
    from engine.service.app import Service, Settings, create_app

    totals: dict[str, float] = _install() if stages else defaultdict(float)
    tmp = Path(tempfile.mkdtemp(prefix="ctxbudget-service-cpu-"))
    (tmp / "policies").mkdir()
    (tmp / "policies" / f"{policy}.yaml").write_text(HEAD.format(name=policy) + POLICIES[policy])
    # as `ctxbudget serve` runs it (its reload interval, where the tree has one)
    more = {"reload_interval_s": 1.0} if "reload_interval_s" in getattr(Settings, "__dataclass_fields__", {}) \
        else {}
    app = create_app(Service(Settings(tmp / "policies", tmp / "audit.jsonl", **more)))
    from engine.service import run as service_run

    if hasattr(service_run, "tune_gc"):  # what `ctxbudget serve` does once the app is built
        service_run.tune_gc()
    body = json.dumps({"candidates": candidates(50)}).encode()
    path = f"/v1/decide/{policy}"
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
             "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}

    async def call() -> None:
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)
        await app(dict(scope), receive, send)
        if sent[0]["status"] != 200:
            raise SystemExit(f"status {sent[0]['status']}: {sent[1].get('body', b'')[:300]!r}")

    async def main() -> list[tuple[float, dict[str, float]]]:
        for _ in range(warmup):
            await call()
        rounds = []
        for _ in range(repeat):
            totals.clear()
            c0 = time.process_time()
            for _ in range(requests // concurrency):
                await asyncio.gather(*(call() for _ in range(concurrency)))
            rounds.append((time.process_time() - c0, dict(totals)))
        return rounds

    rounds = asyncio.run(main())
    requests = requests // concurrency * concurrency
    best: dict[str, float] = {}
    fsyncs = [spent.get("fsync calls", 0) / requests for _, spent in rounds]
    for cpu, spent in rounds:
        ms = {k: 1000 * v / requests for k, v in spent.items() if not k.endswith(" calls")}
        ms["http"] = 1000 * cpu / requests - sum(ms.values())
        ms["total"] = 1000 * cpu / requests
        for k, v in ms.items():
            best[k] = min(best.get(k, v), v)
    row: dict[str, Any] = {"policy": policy, "requests": requests, "rounds": repeat,
                           "concurrency": concurrency, "cpu_ms": best.pop("total")}
    if stages:
        row["fsyncs_per_decision"] = sum(fsyncs) / len(fsyncs)
    if stages:
        row["stages_ms"] = best
    return row


def _one_round(tree: Path, policy: str, args: argparse.Namespace) -> dict[str, Any]:
    """One round of this script in a subprocess on ``tree``'s engine (its folder first on
    the path, so ``engine`` and ``bench.load_service`` are that tree's)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--policy", policy, "--rounds", "1",
           "--requests", str(args.requests), "--concurrency", str(args.concurrency), "--json"]
    if args.no_stages:
        cmd.append("--no-stages")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"the round on {tree} failed:\n{out.stderr[-2000:]}")
    row: dict[str, Any] = json.loads(out.stdout)[0]
    return row


def compare(base: Path, policies: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Least CPU per decision (and per stage) of ``base`` and of this tree, alternating."""
    here = Path(__file__).resolve().parent.parent
    rows = []
    for policy in policies:
        best: dict[str, dict[str, Any]] = {}
        for _ in range(args.rounds):
            for name, tree in (("base", base), ("this", here)):
                got = _one_round(tree, policy, args)
                keep = best.setdefault(name, {"cpu_ms": got["cpu_ms"], "stages_ms": {}})
                keep["cpu_ms"] = min(keep["cpu_ms"], got["cpu_ms"])
                for k, v in got.get("stages_ms", {}).items():
                    keep["stages_ms"][k] = min(keep["stages_ms"].get(k, v), v)
        rows.append({"policy": policy, "rounds": args.rounds, "requests": args.requests,
                     "concurrency": args.concurrency, "base": best["base"], "this": best["this"],
                     "ratio": best["this"]["cpu_ms"] / best["base"]["cpu_ms"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", choices=sorted(POLICIES), action="append")
    ap.add_argument("--requests", type=int, default=200, help="requests per round (default 200)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; the least of each figure is shown")
    ap.add_argument("--concurrency", type=int, default=1,
                    help="requests in flight at once (default 1; 8: do the fsyncs batch?)")
    ap.add_argument("--no-stages", action="store_true", help="the total only (no wrappers)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--base", type=Path, help="another checkout to compare with (A/B in one run)")
    args = ap.parse_args(argv)
    if args.base is not None:
        rows = compare(args.base.resolve(), args.policy or sorted(POLICIES), args)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            order = ["http", "parse", "service", "candidates", "allocate", "record", "archive", "encode", "write",
                     "fsync", "answer", "metrics"]
            for row in rows:
                b, t = row["base"], row["this"]
                print(f"{row['policy']}: {b['cpu_ms']:.2f} -> {t['cpu_ms']:.2f} ms CPU per decision "
                      f"(x{row['ratio']:.2f}; least of {row['rounds']} alternating rounds of {row['requests']}, "
                      f"{row['concurrency']} at a time)")
                for stage in order:
                    if stage in b["stages_ms"] or stage in t["stages_ms"]:
                        print(f"  {stage:<11}{b['stages_ms'].get(stage, 0.0):7.2f} {t['stages_ms'].get(stage, 0.0):7.2f} ms")
        load = os.getloadavg()
        print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", file=sys.stderr)
        return 0
    rows = [run(p, args.requests, stages=not args.no_stages, repeat=args.rounds,
                concurrency=args.concurrency) for p in (args.policy or sorted(POLICIES))]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    order = ["http", "parse", "service", "candidates", "allocate", "record", "archive", "encode", "write", "fsync",
             "answer", "metrics"]
    for row in rows:
        print(f"{row['policy']}: {row['cpu_ms']:.2f} ms CPU per decision (least of {row['rounds']} rounds "
              f"of {row['requests']}, {row['concurrency']} at a time)")
        if "fsyncs_per_decision" in row:
            print(f"  fsyncs per decision: {row['fsyncs_per_decision']:.3f}")
        for stage in order:
            if stage in row.get("stages_ms", {}):
                print(f"  {stage:<11}{row['stages_ms'][stage]:7.2f} ms")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
