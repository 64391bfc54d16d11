"""Strategies: functions from a :class:`~engine.problem.Problem` to a :class:`Selection`.

All of them read the same Problem, so they agree on what every rule means:

* ``greedy``   — the seed's rule: relevance order, skip what does not fit.
* ``density``  — value per token order (the classic knapsack heuristic).
* ``balanced`` — the budget split across levels by documented shares, then refilled.
* ``cpsat``    — OR-Tools CP-SAT: proven optimal, or best-found with its gap
  (budget-only problems through the exact ``knapsack`` core reduction).

``params`` builds the CP-SAT parameters of every exact solve (both solvers and the
infeasibility explainer): one definition of workers, seed and the time limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..policy import BudgetStrategy
from ..reasons import Reason


@dataclass(frozen=True, slots=True)
class Selection:
    """What a strategy chose, and the trace of how.

    ``chosen`` are candidate indices; ``reasons`` explain the strategy's own decisions
    (active items only — pre-decided items keep the Problem's reasons); ``status`` is
    ``optimal`` (proven), ``feasible`` (limit reached; see ``bound``/``gap``),
    ``heuristic`` (greedy family) or ``trivial`` (everything fitted, no search needed);
    ``unmet`` lists minimum rules a heuristic could not satisfy.
    """

    strategy: BudgetStrategy
    chosen: frozenset[int]
    reasons: Mapping[int, Reason]
    status: str
    objective: int
    bound: int | None = None
    unmet: tuple[str, ...] = ()
    stats: Mapping[str, Any] = field(default_factory=dict)
    log_lines: tuple[str, ...] = ()

    @property
    def gap(self) -> float | None:
        """Relative gap ``(bound - objective) / bound``; 0 when proven optimal."""
        if self.bound is None:
            return None
        if self.bound <= 0:
            return 0.0
        return max(0.0, (self.bound - self.objective) / self.bound)


def objective_of(values: tuple[int, ...], chosen: frozenset[int] | set[int]) -> int:
    """Total scaled value of a set of chosen items."""
    return sum(values[i] for i in chosen)
