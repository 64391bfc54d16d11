"""What-if at scale: replay logged decisions under a new policy, sharded over workers,
and say what would change (``ctxbudget audit whatif``).

What goes in: audit log paths and the new :class:`~engine.policy.Policy`. What comes out:
a :class:`WhatIf`: per (product, recorded revision) a :class:`~engine.audit.whatifdiff.GroupDiff`,
the ids of the decisions that would change (log order), the records that fail their
checks, and every integrity problem found on the way.

How: the logs are cut into shards (:mod:`engine.audit.whatifshard`: segment files and
byte ranges on line boundaries); each shard is a task — verify its chain, then stream
its records through the record checks and :func:`engine.audit.replay.replay` — run
inline (one worker), on a process pool (``workers`` > 1; the standard library, no extra
dependency) or on a Dask cluster (:mod:`engine.audit.whatifdask`, the ``dask`` extra).
Results come back in shard order and are folded as they arrive, so the diff is the same
whatever ran it, and nobody holds a whole log: a worker holds one shard's line digests
and one record at a time, the caller the counts and the changed ids.

A record that fails its checks is counted and listed, never used as the 'before' of a
diff; a shard whose chain does not verify is not replayed at all (its decisions are
counted as unverified). Either makes the run not intact (the CLI exits 6).
"""

from __future__ import annotations

import json
import os
import resource
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from ..policy import Policy
from .records import check_record_notes, env_secret
from .replay import replay
from .whatifdiff import ChangedDecision, GroupDiff, Observed, group_key
from .whatifshard import (Shard, ShardCheck, ShardStream, iter_shards, log_bytes, read_shard, record_policy_name,
                          seam_problem, shard_bytes_for)

__all__ = ["RunInfo", "ShardResult", "Task", "WhatIf", "collect", "run_shard", "warm", "whatif", "windowed"]

#: Failing records listed by name in the result (every one is counted).
FAILED_LISTED = 1000


@dataclass(frozen=True, slots=True)
class Task:
    """What every shard task needs: the new policy as a :meth:`Policy.to_dict` (plain
    JSON, rebuilt once per worker process) and the recorded policy name whose decisions
    are replayed (None: every decision)."""

    policy: Mapping[str, Any]
    only_policy: str | None


@dataclass(frozen=True, slots=True)
class ShardResult:
    """What one shard task returns: its chain check, its groups, its changed decisions
    (in log order), its failing records as (log, seq, decision id, codes), and how the
    worker ran (host/process id, peak RSS in KiB, wall and CPU seconds). ``skipped``:
    decisions of other policies, by recorded policy name."""

    index: int
    check: ShardCheck
    groups: dict[tuple[str, str], GroupDiff]
    changed: tuple[ChangedDecision, ...]
    failed: tuple[tuple[str, int | None, str, str], ...]
    worker: str
    peak_rss_kib: int
    seconds: float
    cpu_seconds: float
    skipped: dict[str, int]


def _worker() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


def _peak_rss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def _cpu_s() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


_POLICIES: dict[str, Policy] = {}


def _task_policy(task: Task) -> Policy:
    """The task's policy, built once per worker process (keyed by its JSON)."""
    key = json.dumps(task.policy, sort_keys=True)
    policy = _POLICIES.get(key)
    if policy is None:
        if len(_POLICIES) > 8:
            _POLICIES.clear()
        policy = _POLICIES[key] = Policy.from_record(task.policy)
    return policy


def warm(task: Task) -> None:
    """Do in this process what every worker does before its first decision: build the
    task's policy, load its tokenizer, import the solver (about 0.7 s of CPU time). A
    pool forks its workers after it, so they start with it done; a Dask worker can run
    it once (``client.run``)."""
    import importlib

    from ..counts import policy_tokenizer

    policy_tokenizer(_task_policy(task))
    importlib.import_module("ortools.sat.python.cp_model")


@dataclass(slots=True)
class _Acc:
    """One shard's results while it is replayed."""

    groups: dict[tuple[str, str], GroupDiff] = field(default_factory=dict)
    changed: list[ChangedDecision] = field(default_factory=list)
    failed: list[tuple[str, int | None, str, str]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def _replay_into(acc: _Acc, envelopes: Iterable[Mapping[str, Any]], log: str, task: Task, policy: Policy,
                 secret: Any) -> None:
    for env in envelopes:
        rec, seq = env["record"], env.get("seq")
        if task.only_policy is not None and (name := record_policy_name(rec)) != task.only_policy:
            acc.skipped[name] = acc.skipped.get(name, 0) + 1
            continue
        group = acc.groups.setdefault(group_key(rec), GroupDiff())
        found, _notes = check_record_notes(rec, seq, secret)
        if found:
            group.add_failed()
            acc.failed.append((log, seq, str(rec.get("decision_id", "?")),
                               " ".join(sorted({f.code for f in found}))))
            continue
        seen = Observed()
        result = replay(rec, policy, seq=seq, findings=(), observe=seen)
        row = group.add(rec, result, seen, log)
        if row is not None:
            acc.changed.append(row)


def run_shard(shard: Shard, task: Task) -> ShardResult:
    """One task: read ``shard`` once, and check and replay each of its decisions (those
    of ``task.only_policy``) under ``task.policy`` as long as its chain verifies
    (:class:`~engine.audit.whatifshard.ShardStream`: a record is used only after its line
    and every line before it in the shard are intact and chained to the shard's anchor).
    A shard whose chain fails contributes nothing but its check. Runs in any worker: it
    reads the shard itself and returns plain values."""
    started, cpu = time.perf_counter(), _cpu_s()
    policy = _task_policy(task)
    secret = env_secret([])
    stream = ShardStream(shard, task.only_policy)
    acc = _Acc()
    _replay_into(acc, stream, shard.log, task, policy, secret)
    acc.skipped = stream.skipped
    check = stream.check
    assert check is not None
    if not stream.complete:
        acc = _Acc()  # nothing of a shard that is not intact is used ...
        if check.ok:  # ... unless the full check finds it intact after all: read it the two-pass way
            check, envelopes = read_shard(shard)
            _replay_into(acc, envelopes, shard.log, task, policy, secret)
    return ShardResult(shard.index, check, acc.groups, tuple(acc.changed), tuple(acc.failed), _worker(),
                       _peak_rss_kib(), time.perf_counter() - started, _cpu_s() - cpu, acc.skipped)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """How a run went (not part of the diff: it differs between runs of the same diff)."""

    engine: str  # "inline", "pool" or "dask"
    workers: int
    shards: int
    seconds: float
    peak_rss_kib: Mapping[str, int]  # per worker (host/process id)
    cpu_seconds: float = 0.0  # the shard tasks' CPU time, all workers
    cpu_seconds_per_worker: Mapping[str, float] = field(default_factory=dict)  # shard tasks, per worker
    caller_cpu_seconds: float = 0.0  # this process's own CPU time outside the shard tasks (planning, merging)

    @property
    def parallel_speedup(self) -> float:
        """The speed-up the CPU times allow: all the tasks' CPU time over the busiest
        worker's plus the caller's own (what the wall would show on cores nobody else
        uses; 1.0 inline)."""
        busiest = max(self.cpu_seconds_per_worker.values(), default=0.0)
        span = busiest + self.caller_cpu_seconds
        return (self.cpu_seconds + self.caller_cpu_seconds) / span if span > 0 else 1.0

    def to_dict(self) -> dict[str, Any]:
        rss = dict(sorted(self.peak_rss_kib.items()))
        return {"engine": self.engine, "workers": self.workers, "shards": self.shards,
                "seconds": round(self.seconds, 3), "cpu_seconds": round(self.cpu_seconds, 3),
                "cpu_seconds_per_worker": {k: round(v, 3) for k, v in sorted(self.cpu_seconds_per_worker.items())},
                "caller_cpu_seconds": round(self.caller_cpu_seconds, 3),
                "cpu_bound_speedup": round(self.parallel_speedup, 3),
                "peak_rss_kib_per_worker": rss, "peak_rss_kib_max": max(rss.values(), default=0)}


@dataclass(slots=True)
class WhatIf:
    """A what-if run: the new policy, the logs, a diff per (product, revision), the
    changed decision ids in log order, the failing records, and the integrity problems."""

    policy: dict[str, Any]
    logs: tuple[str, ...]
    groups: dict[tuple[str, str], GroupDiff] = field(default_factory=dict)
    changed_ids: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    failed_count: int = 0
    problems: list[str] = field(default_factory=list)
    unverified: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    run: RunInfo | None = None
    keep_ids: bool = True  # False: changed_ids stays empty (see whatif())

    @property
    def intact(self) -> bool:
        """Every shard verified and every record passed its checks."""
        return not self.problems and not self.failed_count and not self.unverified

    def total(self) -> GroupDiff:
        out = GroupDiff()
        for key in sorted(self.groups):
            out.merge(self.groups[key])
        return out

    def fold(self, res: ShardResult) -> None:
        """Add one shard's result (called in shard order)."""
        if not res.check.ok:
            self.problems.extend(res.check.problems)
            self.unverified += res.check.decisions
        for key, group in res.groups.items():
            self.groups.setdefault(key, GroupDiff()).merge(group)
        if self.keep_ids:
            self.changed_ids.extend(c.decision_id for c in res.changed)
        for name, n in res.skipped.items():
            self.skipped[name] = self.skipped.get(name, 0) + n
        self.failed_count += len(res.failed)
        room = FAILED_LISTED - len(self.failed)
        self.failed.extend({"log": log, "seq": seq, "decision_id": did, "codes": codes}
                           for log, seq, did, codes in res.failed[:max(0, room)])

    def to_dict(self, *, run: bool = True) -> dict[str, Any]:
        """The diff as JSON (``run=False``: without the run's timings and memory, which
        differ between runs of the same diff)."""
        out: dict[str, Any] = {
            "policy": self.policy, "logs": list(self.logs), "intact": self.intact,
            "problems": list(self.problems), "unverified_decisions": self.unverified,
            "skipped_other_policies": dict(sorted(self.skipped.items())),
            "total": self.total().to_dict(),
            "groups": [{"product": p, "revision": r, **self.groups[(p, r)].to_dict()}
                       for p, r in sorted(self.groups)],
            "changed_decision_ids": list(self.changed_ids) if self.keep_ids else None,
            "failed_checks": {"count": self.failed_count, "listed": list(self.failed)},
        }
        if run and self.run is not None:
            out["run"] = self.run.to_dict()
        return out

    def summary(self) -> str:
        """Human text: one paragraph per group, then the total and the integrity verdict."""
        lines = [f"what-if: policy {self.policy.get('name')} revision {self.policy.get('revision')} "
                 f"({self.policy.get('digest', '')[:19]}...) over {len(self.logs)} log(s)"]
        for (product, revision), g in sorted(self.groups.items()):
            lines.append(f"{product} @ {revision}: " + _group_text(g))
        if len(self.groups) > 1:
            lines.append("all: " + _group_text(self.total()))
        if self.skipped:
            lines.append("not replayed (decisions of other policies; --all-policies replays them): "
                         + ", ".join(f"{k} {v:,}" for k, v in sorted(self.skipped.items())))
        if self.run is not None:
            r = self.run
            done = self.total().decisions
            rate = done / r.seconds if r.seconds > 0 else 0.0
            per_cpu = done / r.cpu_seconds if r.cpu_seconds > 0 else 0.0
            lines.append(f"run: {r.engine}, {r.workers} worker(s), {r.shards} shard(s), {r.seconds:.1f} s "
                         f"({rate:,.0f} decisions/s; {per_cpu:,.0f} per CPU second), peak RSS {max(r.peak_rss_kib.values(), default=0) / 1024:,.0f} "
                         "MiB per worker at most")
            if r.workers > 1:
                busy = ", ".join(f"{v:,.1f}" for _k, v in sorted(r.cpu_seconds_per_worker.items()))
                lines.append(f"cpu: {busy} s per worker, {r.caller_cpu_seconds:,.1f} s in this process: "
                             f"x{r.parallel_speedup:.2f} over one worker on cores nobody else uses")
        if not self.intact:
            lines.append(f"NOT INTACT: {len(self.problems)} chain problem(s), {self.unverified} decision(s) "
                         f"not replayed, {self.failed_count} record(s) failing their checks")
            lines += [f"  {p}" for p in self.problems[:20]]
            lines += [f"  seq {f['seq']} decision {f['decision_id']}: FAILED {f['codes']}" for f in self.failed[:20]]
        return "\n".join(lines)


def _reasons(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _group_text(g: GroupDiff) -> str:
    share = f" ({100 * g.changed / g.decisions:.1f}%)" if g.decisions else ""
    parts = [f"{g.decisions:,} decisions: {g.changed:,} changed{share}, {g.unchanged:,} unchanged, "
             f"{g.newly_infeasible:,} newly infeasible, {g.newly_feasible:,} newly feasible, "
             f"{g.errors:,} not replayable, {g.failed_checks:,} failing their checks",
             f"items +{g.items_gained:,} -{g.items_lost:,}"
             + (f" (gained: {_reasons(g.gained_by_reason)})" if g.gained_by_reason else "")
             + (f" (lost: {_reasons(g.lost_by_reason)})" if g.lost_by_reason else ""),
             f"tokens {g.tokens_before:,} -> {g.tokens_after:,} ({g.tokens_after - g.tokens_before:+,})",
             f"objective {g.objective_before:,} -> {g.objective_after:,} "
             f"({g.objective_after - g.objective_before:+,} over {g.objective_compared:,} decisions)",
             "solver " + ", ".join(f"{k} {v:,}" for k, v in sorted(g.solver_outcomes.items()))]
    return "; ".join(parts)


def _start_method(wanted: str | None) -> str:
    """``fork`` when this process runs one thread (the workers inherit the imported
    engine at no cost), else a fork server that imports the engine once and forks clean
    workers from it (no worker inherits another thread's locks)."""
    import multiprocessing
    import threading

    if wanted is not None:
        return wanted
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def windowed(submit: Callable[[Shard], Any], result: Callable[[Any], ShardResult],
             shards: Iterable[Shard], window: int) -> Iterator[tuple[Shard, ShardResult]]:
    """(shard, result) in shard order, with at most ``window`` tasks submitted and not yet
    taken: the shards are planned as the work goes, and no result waits long."""
    from collections import deque

    pending: deque[tuple[Shard, Any]] = deque()
    for shard in shards:
        pending.append((shard, submit(shard)))
        if len(pending) >= window:
            done, fut = pending.popleft()
            yield done, result(fut)
    while pending:
        done, fut = pending.popleft()
        yield done, result(fut)


def _pool_map(shards: Iterable[Shard], task: Task, workers: int,
              start_method: str | None) -> Iterator[tuple[Shard, ShardResult]]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    method = _start_method(start_method)
    if method == "fork":
        warm(task)  # once here, not once per worker: forked workers inherit it
    ctx = multiprocessing.get_context(method)
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["engine.audit.whatif", "ortools.sat.python.cp_model"])
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield from windowed(lambda s: pool.submit(run_shard, s, task), lambda f: f.result(), shards, 3 * workers)


def whatif(logs: Sequence[str | os.PathLike[str]], policy: Policy, *, workers: int = 1,
           dask: str | None = None, dask_processes: bool = True, shard_bytes: int | None = None,
           on_changed: Callable[[Sequence[ChangedDecision]], None] | None = None,
           start_method: str | None = None, all_policies: bool = False, keep_ids: bool = True) -> WhatIf:
    """Replay every decision of ``logs`` under ``policy`` and aggregate what changes.

    ``workers``: processes (1: inline in this process); ``dask``: a scheduler address or
    ``"local"`` (a LocalCluster of ``workers`` workers; ``dask_processes=False`` makes its
    workers threads, for tests); ``shard_bytes``: bytes per shard (default: about eight
    shards per worker); ``on_changed``: called with each shard's changed decisions, in
    log order, as they arrive (to stream them to a file); ``start_method``: how pool
    workers start (default: ``fork`` from a single-threaded caller, else ``forkserver``;
    either way a script that calls this needs the ``if __name__ == "__main__":`` guard
    that :mod:`multiprocessing` asks for); ``all_policies``: replay every decision, not
    only those recorded under the new policy's name; ``keep_ids=False``: count the changed
    decisions without listing their ids (the one part of the result that grows with the
    log: stream them with ``on_changed`` instead). Raises
    :class:`~engine.errors.UsageError` ``whatif.bad_workers`` for fewer than one worker,
    ``whatif.missing_extra`` for ``dask`` without the extra; :class:`AuditError` when a
    log cannot be opened."""
    from ..errors import UsageError

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UsageError("whatif.bad_workers", f"--workers must be a whole number >= 1, got {workers!r}",
                         path="$.workers")
    if shard_bytes is not None and (isinstance(shard_bytes, bool) or shard_bytes < 1):
        raise UsageError("whatif.bad_shard_bytes", f"--shard-bytes must be a whole number >= 1, got "
                         f"{shard_bytes!r}", path="$.shard_bytes")
    started, started_cpu = time.perf_counter(), _cpu_s()
    problems: list[str] = []
    shards = iter_shards(logs, shard_bytes or shard_bytes_for(log_bytes(logs), workers), problems)
    task = Task(policy.to_dict(), None if all_policies else policy.name)
    results: Iterable[tuple[Shard, ShardResult]]
    if dask is not None:
        from .whatifdask import dask_map
        results, engine = dask_map(dask, shards, task, workers=workers, processes=dask_processes), "dask"
    elif workers == 1:
        results, engine = ((s, run_shard(s, task)) for s in shards), "inline"
    else:
        results, engine = _pool_map(shards, task, workers, start_method), "pool"
    return collect(policy, logs, results, problems, engine=engine, workers=workers, keep_ids=keep_ids,
                   on_changed=on_changed, started=started, started_cpu=started_cpu)


def collect(policy: Policy, logs: Sequence[str | os.PathLike[str]],
            results: Iterable[tuple[Shard, ShardResult]], problems: Sequence[str] = (), *,
            engine: str = "other", workers: int = 1, keep_ids: bool = True,
            on_changed: Callable[[Sequence[ChangedDecision]], None] | None = None,
            started: float | None = None, started_cpu: float | None = None) -> WhatIf:
    """Fold (shard, :func:`run_shard` result) pairs, **in shard order**, into a
    :class:`WhatIf`, checking each seam between two shards (:func:`seam_problem`). The
    pool and Dask runners use it; so can any other engine that runs ``run_shard``
    (``docs/whatif.md``: Ray, Spark). ``problems``: the planner's; ``started``: when the
    run began (``time.perf_counter()``; None: the run's seconds are the tasks' own);
    ``started_cpu``: this process's CPU time then (``_cpu_s()``; for the caller's own CPU
    time in :class:`RunInfo`)."""
    out = WhatIf({"name": policy.name, "product": policy.product, "revision": policy.revision,
                  "digest": policy.digest, "file": policy.file},
                 tuple(str(p) for p in logs), problems=list(problems), keep_ids=keep_ids)
    rss: dict[str, int] = {}
    per_worker: dict[str, float] = {}
    cpu, count, busy = 0.0, 0, 0.0
    previous: tuple[Shard, ShardCheck] | None = None
    for shard, res in results:
        if previous is not None and (seam := seam_problem(previous[0], previous[1], shard)):
            out.problems.append(seam)
        previous, count, cpu, busy = (shard, res.check), count + 1, cpu + res.cpu_seconds, busy + res.seconds
        out.fold(res)
        rss[res.worker] = max(rss.get(res.worker, 0), res.peak_rss_kib)
        per_worker[res.worker] = per_worker.get(res.worker, 0.0) + res.cpu_seconds
        if on_changed is not None and res.changed:
            on_changed(res.changed)
    seconds = busy if started is None else time.perf_counter() - started
    own = 0.0
    if started_cpu is not None:  # this process's CPU, less the tasks it ran itself (inline)
        own = max(0.0, _cpu_s() - started_cpu - sum(v for k, v in per_worker.items() if k == _worker()))
    out.run = RunInfo(engine, workers, count, seconds, rss, cpu, per_worker, own)
    return out
