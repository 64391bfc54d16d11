"""Timing, statistics, the printed table and the JSON file of the performance harness.

What goes in: callables to time and what each run returned. What comes out:
:class:`Timing` values (median, min, max over repetitions, ``time.perf_counter``), rows
for the table and one JSON document. Nothing here knows about the engine.

Repetitions: ``reps`` runs at most, fewer when the runs of one method pass ``budget_s``
together (at least one run always happens): a baseline that takes 10 s per run is timed
once, not eleven times. An optional untimed warm-up run pays one-off import and cache
costs first; it is used only where such costs exist and a run is cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: The clock :func:`measure` reads: wall time, or the process's CPU time (every thread's;
#: ``bench.perf --cpu-time``), which a loaded machine changes far less.
CLOCK: Callable[[], float] = time.perf_counter


@dataclass
class Timing:
    """Wall times of one method on one case, what each run reported, and the error that
    stopped it (a timeout or an exception), if any."""

    times_s: list[float] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def reps(self) -> int:
        return len(self.times_s)

    @property
    def info(self) -> dict[str, Any]:
        """What the last run reported."""
        return self.infos[-1] if self.infos else {}

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.times_s) if self.times_s else None

    @property
    def min_s(self) -> float | None:
        return min(self.times_s) if self.times_s else None

    @property
    def max_s(self) -> float | None:
        return max(self.times_s) if self.times_s else None

    def field_median(self, key: str, sub: str | None = None) -> float | None:
        """Median over runs of a numeric ``info[key]`` (or ``info[key][sub]``)."""
        vals = []
        for info in self.infos:
            v = info.get(key)
            if sub is not None and isinstance(v, dict):
                v = v.get(sub)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                vals.append(float(v))
        return statistics.median(vals) if vals else None

    def same_answer_every_run(self) -> bool | None:
        """Whether every run reported the same ``objective`` (determinism), if any did."""
        objs = [info.get("objective") for info in self.infos if "objective" in info]
        return None if not objs else len(set(objs)) == 1

    def to_dict(self) -> dict[str, Any]:
        return {"reps": self.reps, "median_s": self.median_s, "min_s": self.min_s,
                "max_s": self.max_s, "times_s": self.times_s, "error": self.error,
                "same_answer_every_run": self.same_answer_every_run(), **self.info}


class Timeout(Exception):
    """A timed run passed its wall-clock deadline."""


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise :class:`Timeout` in this thread after ``seconds`` (SIGALRM; Unix only; a
    no-op elsewhere). Python code is interrupted between bytecodes; a C call (a solver)
    finishes first, which is fine because every solver here has its own time limit."""
    if not seconds or not hasattr(signal, "setitimer"):
        yield
        return

    def _fire(_signum: int, _frame: Any) -> None:
        raise Timeout(f"timed out after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def isolated(fn: Callable[[], Any], kill_after_s: float) -> tuple[float, Any]:
    """Run ``fn()`` in a forked child and return ``(seconds, result)``, the seconds
    measured inside the child around the call alone. The child is killed after
    ``kill_after_s``: for baselines whose C++ code ignores its own time limit (OR-Tools'
    knapsack ``init`` is quadratic in n; CP-SAT's presolve overruns at n = 100,000).
    Unix only (``fork``); the result must pickle."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def child() -> None:
        t0 = time.perf_counter()
        try:
            result = fn()
            send.send((time.perf_counter() - t0, result, None))
        except BaseException as exc:  # report, never hang the parent
            send.send((time.perf_counter() - t0, None, f"{type(exc).__name__}: {exc}"))

    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(kill_after_s):
            raise Timeout(f"killed after {kill_after_s:g} s (the solver ignored its time limit)")
        dt, result, err = recv.recv()
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        recv.close()
    if err is not None:
        raise RuntimeError(err)
    return dt, result


def measure(fn: Callable[[], Any], *, reps: int, budget_s: float, warmup: bool = False,
            before: Callable[[], None] | None = None,
            inspect: Callable[[Any], dict[str, Any]] | None = None,
            timeout_s: float | None = None, isolate_s: float | None = None) -> Timing:
    """Time ``fn()`` up to ``reps`` times (see the module docstring); ``before`` runs
    untimed ahead of every run (e.g. to empty a cache), ``inspect`` turns each result
    into an ``infos`` entry (status, objective, ...). A run that raises or passes
    ``timeout_s`` ends the method with ``error`` set; earlier runs are kept. With
    ``isolate_s`` every run happens in a forked child killed after that many seconds
    (:func:`isolated`)."""
    out = Timing()
    spent = 0.0
    try:
        if warmup:
            if before:
                before()
            with deadline(timeout_s):
                fn()
        while out.reps < reps and (out.reps == 0 or spent < budget_s):
            if before:
                before()
            if isolate_s is not None:
                dt, result = isolated(fn, isolate_s)
            else:
                with deadline(timeout_s):
                    t0 = CLOCK()
                    result = fn()
                    dt = CLOCK() - t0
            out.times_s.append(dt)
            spent += dt
            if inspect is not None:
                out.infos.append(inspect(result))
    except Timeout as exc:
        out.error = str(exc)
    except Exception as exc:  # a benchmark records failures; it does not stop on them
        out.error = f"{type(exc).__name__}: {exc}"
    return out


def fmt_s(seconds: float | None) -> str:
    """A duration with a unit a reader scans quickly (µs, ms or s, 3 significant digits)."""
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain Markdown table (it reads in a terminal and pastes into the README)."""
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def machine() -> dict[str, Any]:
    """What the numbers depend on: versions, CPU count, load, the code revision."""
    import numpy
    import ortools

    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "engine"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "unknown", True
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "ortools": ortools.__version__,
        "numpy": numpy.__version__,
        "git_revision": rev,
        "engine_modified_since_revision": dirty,
        "load_average_at_start": os.getloadavg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=_jsonable) + "\n", encoding="utf-8")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    return str(value)
