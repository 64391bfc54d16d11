"""CP-SAT parameters: the one place that sets them, for every exact solve.

The CP-SAT strategy (:mod:`engine.strategies.cpsat`), the knapsack core
(:mod:`engine.strategies.knapsack`) and the infeasibility explainer
(:mod:`engine.explain`) all build their solver here, so worker count, seed and the two
time limits mean the same thing everywhere:

* ``max_deterministic_time`` is a function of the *time limit* alone (the policy's
  ``solver.time_limit_s``, or the call's override): :func:`deterministic_limit`. It is what
  ends a search that runs out of time, so an answer cut by the limit is the same on every
  run and every machine. It is never derived from the clock.
* ``max_time_in_seconds`` is what is left of the wall-clock budget: a safety net that
  keeps the whole call within its limit on a slow or loaded machine. When it, rather than
  the deterministic limit, ends a search, the run is not reproducible, and the trace
  says so (``wall_time_s`` near the limit, ``deterministic_time`` below it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..compile import load_cp_model
from ..errors import SolverBackendError
from ..policy import SolverSettings

if TYPE_CHECKING:
    from ortools.sat.python import cp_model

#: Share of the time limit given to CP-SAT as its deterministic limit. Deterministic time
#: ran 3-4x slower than the clock on these models (bench/README.md), so this share makes
#: the deterministic limit end a search before the clock does, and an answer cut by the
#: limit is then the same on every run; the wall-clock limit stays as the safety net.
DETERMINISTIC_SHARE = 0.2
#: Smallest limit handed to CP-SAT (it rejects 0 as "no limit" in some versions).
MIN_LIMIT_S = 0.001


def deterministic_limit(time_limit_s: float) -> float:
    """The deterministic-time budget of a call whose time limit is ``time_limit_s``."""
    return DETERMINISTIC_SHARE * time_limit_s


def parameters(settings: SolverSettings, *, deterministic_s: float, wall_s: float,
               presolve: bool = False, relative_gap: float | None = None,
               workers: int | None = None, log: bool = False) -> dict[str, Any]:
    """The CP-SAT parameters of one solve (recorded in the audit trace as they are).

    ``deterministic_s`` must come from :func:`deterministic_limit` (minus deterministic
    time already spent by earlier solves of the same call, itself deterministic);
    ``wall_s`` is the wall-clock time left. ``relative_gap`` defaults to the policy's;
    ``workers`` to the policy's (the explainer needs exactly one)."""
    return {
        "num_workers": settings.workers if workers is None else workers,
        "random_seed": settings.seed,
        "max_time_in_seconds": max(MIN_LIMIT_S, wall_s),
        "max_deterministic_time": max(MIN_LIMIT_S, deterministic_s),
        "relative_gap_limit": settings.relative_gap if relative_gap is None else relative_gap,
        # Presolve spent most of the limit on the allocation models (and overran the wall
        # limit at 100k); with the greedy hint the search alone proves faster
        # (bench/README.md). The explainer keeps it: its models have no objective.
        "cp_model_presolve": presolve,
        "log_search_progress": log,
        "log_to_stdout": False,
    }


def solver(params: dict[str, Any]) -> cp_model.CpSolver:
    """A ``CpSolver`` with ``params`` set (names as in :func:`parameters`)."""
    s: cp_model.CpSolver = load_cp_model().CpSolver()
    for name, value in params.items():
        setattr(s.parameters, name, value)
    return s


def run(s: cp_model.CpSolver, model: cp_model.CpModel) -> Any:
    """``s.solve(model)``; a failure of the backend itself (out of memory in presolve, a
    native error, which pybind11 surfaces as ``RuntimeError``) becomes a
    :class:`~engine.errors.SolverBackendError`, the one exception the façade treats as a
    solver failure. Anything else (``TypeError``, ``AttributeError``, ``ValueError``: a
    model or argument ctxbudget got wrong, or a bug in a callback of ours) propagates as
    the bug it is, and so does everything before this call."""
    try:
        return s.solve(model)
    except (RuntimeError, MemoryError) as exc:
        raise SolverBackendError(
            "solver.backend_failed",
            f"CP-SAT raised {type(exc).__name__}: {exc}",
            path="$.spec.solver",
        ) from exc
