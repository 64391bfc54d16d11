"""``TokenBudgetManager``: the seed's public API as a thin façade over the engine.

The seed's names, field order, defaults and signatures are kept exactly
(``optimize_for_budget(candidates, token_budget, strategy=BudgetStrategy.GREEDY,
min_relevance=0.0)``, ``count_tokens(text)``,
``create_budget_items_from_search(search_results, hierarchical_index)``). Its TODOs are
done for real: BALANCED and OPTIMAL run their own strategies, token counts are exact
and offline, and every candidate ends up in ``included`` or ``excluded`` with a reason.

Differences from the seed, all on purpose and documented in the README:

* ``candidates_considered`` counts every input item; items under ``min_relevance`` are in
  ``excluded`` with reason ``below_min_relevance`` instead of vanishing.
* Bad input raises ``CandidateError`` (a ``ValueError``) naming the item and field.
* ``audit_trail`` keeps the seed's keys and adds which strategy ran, the objective it
  maximised, the solver's verdict and the reason of any fallback.

Without a policy the manager maximises the seed's objective, the plain sum of
``relevance_score`` (``objective: identity``): the knapsack its docstring and TODO name.
The engine's default transform (``power``, see :class:`~engine.policy.Objective`) applies
only to policies, which keep whatever objective they set.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from .allocate import allocate
from .allocation import Allocation
from .candidates import BudgetItem
from .errors import CandidateError
from .policy import PLAIN_IDENTITY, BudgetStrategy, Objective, Policy, Transform, load_policy
from .retrieval.convert import IndexLike, SearchResultLike, search_rows
from .tokens import DEFAULT_ENCODING, get_tokenizer

#: Excluded items above this relevance are flagged in ``audit_trail`` (the seed's 0.7).
HIGH_RELEVANCE = 0.7
#: The seed's objective: maximise the sum of ``relevance_score`` (used without a policy).
SEED_OBJECTIVE = PLAIN_IDENTITY


@dataclass
class BudgetAllocation:
    """Result of budget allocation (the seed's type; ``details`` is our addition: the
    full :class:`~engine.allocation.Allocation` with a reason for every item)."""

    included: List[BudgetItem]
    excluded: List[BudgetItem]
    total_tokens_used: int
    budget_limit: int
    efficiency: float  # Relevance per token
    audit_trail: Dict[str, Any]
    details: Optional[Allocation] = None


class TokenBudgetManager:
    """Manages context fitting within token budgets.

    Args:
        tokenizer: encoding name (``cl100k_base`` by default, loaded offline), or
            ``approx:utf8_bytes`` for an explicit never-undercounting approximation.
        default_budget: the budget used by :meth:`allocate` when no policy is given.
        policy: a :class:`~engine.policy.Policy` or the path of a policy file. With a
            policy, :meth:`allocate` applies it as written; ``optimize_for_budget`` applies
            it with the call's budget, strategy and minimum relevance taking precedence.
    """

    def __init__(
        self,
        tokenizer: str = "cl100k_base",  # GPT-4 tokenizer
        default_budget: int = 8000,
        *,
        policy: Policy | str | Path | None = None,
    ):
        self.tokenizer_name = tokenizer or DEFAULT_ENCODING
        self.tokenizer = self._init_tokenizer(self.tokenizer_name)
        self.default_budget = default_budget
        self.policy = load_policy(policy) if isinstance(policy, (str, Path)) else policy
        self.last_missing: list[str] = []

    def _init_tokenizer(self, tokenizer_name: str) -> Any:
        """The exact counter; raises ``TokenizerError`` rather than approximating."""
        return get_tokenizer(tokenizer_name)

    def _policy_for(self, token_budget: int, strategy: BudgetStrategy, min_relevance: float) -> Policy:
        if not isinstance(strategy, BudgetStrategy):
            raise ValueError(f"Unknown strategy: {strategy!r}; use one of "
                             + ", ".join(s.name for s in BudgetStrategy))
        token_budget, min_relevance = _numpy_number(token_budget), _numpy_number(min_relevance)
        if isinstance(token_budget, bool) or not isinstance(token_budget, int) or token_budget <= 0:
            raise CandidateError("budget.invalid",
                                 f"token_budget must be a whole number > 0, got {token_budget!r}",
                                 path="$.token_budget")
        if (isinstance(min_relevance, bool) or not isinstance(min_relevance, (int, float))
                or not math.isfinite(min_relevance) or min_relevance < 0):
            raise CandidateError("budget.invalid",
                                 f"min_relevance must be a number >= 0, got {min_relevance!r} "
                                 "(items scoring below it are excluded with a reason)",
                                 path="$.min_relevance")
        if self.policy is None:
            return Policy.default(token_budget, tokenizer=self.tokenizer_name, separator="",
                                  strategy=strategy, min_relevance=float(min_relevance),
                                  objective=SEED_OBJECTIVE)
        return self.policy.replace(max_tokens=token_budget, context_window=None, reserve_output=0,
                                   reserve_prompt=0, strategy=strategy,
                                   min_relevance=max(self.policy.min_relevance, float(min_relevance)))

    def optimize_for_budget(
        self,
        candidates: List[BudgetItem],
        token_budget: int,
        strategy: BudgetStrategy = BudgetStrategy.GREEDY,
        min_relevance: float = 0.0,
    ) -> BudgetAllocation:
        """Fit candidates within ``token_budget``, maximising relevance.

        Returns a ``BudgetAllocation`` whose ``included`` and ``excluded`` together hold
        every candidate exactly once (the caller's own objects), ``details`` holding the
        reason for each. Raises ``CandidateError`` on bad input, ``InfeasibleError`` when
        pinned items cannot fit, ``ValueError`` for an unknown strategy.
        """
        items = list(candidates)
        policy = self._policy_for(token_budget, strategy, min_relevance)
        return self._result(items, allocate(items, policy), policy.objective)

    def allocate(self, candidates: Sequence[BudgetItem]) -> BudgetAllocation:
        """Apply the manager's policy as written (or the default budget without one)."""
        items = list(candidates)
        policy = self.policy or Policy.default(self.default_budget, tokenizer=self.tokenizer_name,
                                               separator="", objective=SEED_OBJECTIVE)
        return self._result(items, allocate(items, policy), policy.objective)

    def _result(self, items: list[BudgetItem], alloc: Allocation, objective: Objective) -> BudgetAllocation:
        included = [items[d.index] for d in alloc.included]
        rel_order = sorted(range(len(items)), key=lambda i: (-alloc.decisions[i].relevance, i))
        excluded_d = [alloc.decisions[i] for i in rel_order if not alloc.decisions[i].included]
        excluded = [items[d.index] for d in excluded_d]
        tokens_used = sum(alloc.decisions[d.index].tokens for d in alloc.included)
        rel_sum = sum(d.relevance for d in alloc.included)
        sel = alloc.selection
        reasons: dict[str, int] = {}
        for d in excluded_d:
            reasons[d.reason.code.value] = reasons.get(d.reason.code.value, 0) + 1
        audit = {
            "strategy": alloc.strategy_used.value,
            "candidates_considered": len(items),
            "included_count": len(included),
            "excluded_count": len(excluded),
            "tokens_used": tokens_used,
            "budget_utilization": tokens_used / alloc.limit_tokens if alloc.limit_tokens > 0 else 0.0,
            "avg_relevance_included": rel_sum / len(included) if included else 0.0,
            "excluded_high_relevance": [
                {"id": d.source_id, "relevance": d.relevance, "reason": d.reason.code.value}
                for d in [e for e in excluded_d if e.reason.code.value != "below_min_relevance"][:5]
                if d.relevance > HIGH_RELEVANCE
            ],
            "strategy_requested": alloc.strategy_requested.value,
            "fallback_reason": alloc.fallback_reason,
            "solver_status": sel.status,
            "objective_function": objective.transform.value,
            "objective_params": _objective_params(objective),
            "objective": sel.objective,
            "best_bound": sel.bound,
            "gap": sel.gap,
            "excluded_reasons": reasons,
            "unmet_minimums": list(alloc.unmet),
            "context_tokens": alloc.context_tokens,
        }
        return BudgetAllocation(
            included=included,
            excluded=excluded,
            total_tokens_used=tokens_used,
            budget_limit=alloc.limit_tokens,
            efficiency=rel_sum / tokens_used if tokens_used > 0 else 0.0,
            audit_trail=audit,
            details=alloc,
        )

    def count_tokens(self, text: str) -> int:
        """Exact token count of ``text`` with the configured tokenizer."""
        if not isinstance(text, str):
            raise CandidateError("candidate.bad_content",
                                 f"count_tokens needs a str, got {type(text).__name__}")
        return int(self.tokenizer.count(text))

    def create_budget_items_from_search(
        self,
        search_results: Iterable[SearchResultLike],
        hierarchical_index: IndexLike,
        *,
        on_missing: str = "error",
    ) -> List[BudgetItem]:
        """Convert search results into budget items (content and level from the index,
        relevance from the result, exact token counts).

        ``metadata`` is a copy of the result's, plus ``parent_id``, ``doc_id``,
        ``ancestors`` (nearest first) and ``order`` when the index knows them, so that
        hierarchy and document-order rules work. A result whose node is not in the index
        raises ``CandidateError`` listing every such id; with ``on_missing="skip"`` they
        are skipped with a warning and listed in ``self.last_missing``.
        """
        rows, missing = search_rows(search_results, hierarchical_index, on_missing=on_missing)
        self.last_missing = missing
        if missing:
            warnings.warn(f"skipped {len(missing)} search results with no index node: {missing[:10]}",
                          stacklevel=2)
        counts = self.tokenizer.count_many([r["content"] for r in rows])
        return [BudgetItem(content=r["content"], relevance_score=r["relevance_score"], token_count=n,
                           source_id=r["source_id"], level=r["level"], metadata=r["metadata"])
                for r, n in zip(rows, counts)]


def _numpy_number(value: Any) -> Any:
    """A NumPy integer/floating scalar as the Python number of the same value (exact);
    anything else unchanged, to be checked as it is."""
    np = sys.modules.get("numpy")  # a NumPy scalar exists only once NumPy is imported
    if np is not None and isinstance(value, (np.integer, np.floating)) and value == value.item():
        return value.item()
    return value


def _objective_params(objective: Objective) -> dict[str, float]:
    """The parameters of the objective that ran (``{}`` for identity)."""
    if objective.transform is Transform.POWER:
        return {"exponent": objective.exponent}
    if objective.transform is Transform.RECIPROCAL_RANK:
        return {"k": objective.k}
    return {}

