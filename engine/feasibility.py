"""Which item still fits which rule: the incremental filler that the greedy family and
allocation's exclusion reasons share.

What goes in: a :class:`~engine.problem.Problem`. :class:`Filler` tracks what the chosen
items use of every maximum rule (budget, level and source caps, prefer-parent) and of
every chain (hierarchy and near-duplicate conflicts), and says for any other item the
first rule it would break, as a
:class:`~engine.reasons.Reason` with the numbers a reviewer checks. It lives here, not in
a strategy, because the allocation stage uses it too (strategies never import each
other's internals, and later stages never import a strategy's).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .problem import LinearRule, Problem, RuleKind
from .reasons import Reason, ReasonCode

_MIN_KINDS = (RuleKind.LEVEL_MIN_ITEMS, RuleKind.LEVEL_MIN_TOKENS)
_CAP_REASON = {
    RuleKind.BUDGET: ReasonCode.OVER_BUDGET,
    RuleKind.LEVEL_MAX_ITEMS: ReasonCode.LEVEL_QUOTA,
    RuleKind.LEVEL_MAX_TOKENS: ReasonCode.LEVEL_QUOTA,
    RuleKind.SOURCE_MAX_ITEMS: ReasonCode.SOURCE_CAP,
    RuleKind.SOURCE_MAX_TOKENS: ReasonCode.SOURCE_CAP,
    RuleKind.PREFER_PARENT: ReasonCode.PREFER_PARENT,
}


def cap_reason(rule: LinearRule, used: int, need: int, problem: Problem) -> Reason:
    """The reason an item needing ``need`` units of ``rule`` does not fit when ``used``
    are taken: one sentence with the numbers a reviewer checks."""
    code = _CAP_REASON[rule.kind]
    cap = rule.upper if rule.upper is not None else 0
    if rule.kind is RuleKind.BUDGET:
        # weights include one separator each; the capacity includes one spare separator.
        left = max(0, cap - used - problem.separator_tokens)
        real = max(0, need - problem.separator_tokens)
        return Reason(code, f"needed {real:,} tokens, {left:,} left of {problem.limit_tokens:,}",
                      rule.path, {"needed": real, "left": left, "budget": problem.limit_tokens})
    unit = "items" if rule.coefs is None else "tokens"
    return Reason(code, f"{rule.label}: {used:,}/{cap:,} {unit} used, needed {need:,} more",
                  rule.path, {"used": used, "cap": cap, "needed": need})


class Filler:
    """Incremental feasibility for adding items one by one under every maximum rule."""

    def __init__(self, problem: Problem) -> None:
        self.p = problem
        # caps[0] is the budget: it covers every active item with its weight, so it is
        # checked directly, and only the other caps get per-item membership lists, which
        # keeps the common budget-only case free of per-item bookkeeping.
        self.caps = [problem.budget] + [r for r in problem.constraints if r.upper is not None]
        self.used = [0] * len(self.caps)
        self.weights = problem.weights
        self.capacity = problem.capacity
        # item -> [(cap index, coefficient)] for caps other than the budget
        self.member: dict[int, list[tuple[int, int]]] = {}
        for k, r in enumerate(self.caps[1:], start=1):
            coefs: Iterable[int] = r.coefs if r.coefs is not None else [1] * len(r.members)
            for m, c in zip(r.members, coefs):
                self.member.setdefault(m, []).append((k, c))
        self.chains_of: dict[int, list[int]] = {}
        for k, ch in enumerate(problem.chains):
            for m in ch.members:
                self.chains_of.setdefault(m, []).append(k)
        self.chain_taken: dict[int, int] = {}
        self.chosen: set[int] = set()
        self.reasons: dict[int, Reason] = {}
        self._memo: dict[tuple[int, int, int], Reason] = {}

    def _cap_reason(self, k: int, used: int, c: int) -> Reason:
        reason = self._memo.get((k, used, c))
        if reason is None:
            reason = self._memo[(k, used, c)] = cap_reason(self.caps[k], used, c, self.p)
        return reason

    def blocker(self, i: int) -> Reason | None:
        """Why ``i`` cannot be added now (the first rule it would break), or None when it
        fits every rule. Reasons are frozen values: equal ones are built once and shared."""
        chains = self.chains_of.get(i, ())
        # A near-duplicate of an included item is named first: no budget would admit it.
        for k in chains:
            ch = self.p.chains[k]
            other = self.chain_taken.get(k)
            if other is not None and ch.kind is RuleKind.NEAR_DUPLICATE:
                oid = self.p.candidates[other].source_id
                return Reason(ReasonCode.NEAR_DUPLICATE,
                              f"near-duplicate of {oid!r}, which is included (jaccard "
                              f"{ch.similarity:.3f} >= {ch.threshold:g})", ch.path,
                              {"duplicate_of": oid, "similarity": ch.similarity, "threshold": ch.threshold})
        w = self.weights[i]
        if self.used[0] + w > self.capacity:
            return self._cap_reason(0, self.used[0], w)
        for k, c in self.member.get(i, ()):
            used = self.used[k]
            if used + c > self.caps[k].upper:  # type: ignore[operator]
                return self._cap_reason(k, used, c)
        for k in chains:
            other = self.chain_taken.get(k)
            if other is not None:
                oid = self.p.candidates[other].source_id
                ch = self.p.chains[k]
                return Reason(ReasonCode.HIERARCHY,
                              f"{oid!r} is included and is its ancestor or descendant",
                              ch.path, {"conflicts_with": oid})
        return None

    def add(self, i: int, reason: Reason) -> None:
        """Take ``i`` whatever the rules say (pins use this; the façade checks that pins
        alone break no maximum)."""
        self.used[0] += self.weights[i]
        for k, c in self.member.get(i, ()):
            self.used[k] += c
        for k in self.chains_of.get(i, ()):
            self.chain_taken[k] = i
        self.chosen.add(i)
        self.reasons[i] = reason

    def try_add(self, i: int, reason: Reason) -> bool:
        if i in self.chosen:
            return True
        why = self.blocker(i)
        if why is None:
            self.add(i, reason)
            return True
        self.reasons.setdefault(i, why)
        return False

    def fill_minimums(self, order: Sequence[int]) -> None:
        """Take the best items of each level with a minimum until the minimum holds."""
        rank = {i: r for r, i in enumerate(order)}
        for rule in self.p.constraints:
            if rule.kind not in _MIN_KINDS:
                continue
            for m in sorted(rule.members, key=rank.__getitem__):
                if rule.total(self.chosen) >= (rule.lower or 0):
                    break
                if m in self.chosen:
                    continue
                if self.blocker(m) is None:
                    self.add(m, Reason(ReasonCode.LEVEL_MINIMUM, f"taken to meet {rule.label}", rule.path))

    def unmet(self) -> tuple[str, ...]:
        return self.p.unmet(self.chosen)

    def selected_reasons(self) -> dict[int, Reason]:
        """Reasons for the chosen items and the rejected ones (rejections kept only for
        items that ended up excluded)."""
        return {i: r for i, r in self.reasons.items() if (i in self.chosen) == r.code.includes}


def relevance_order(problem: Problem) -> list[int]:
    """Active items by relevance, highest first; ties keep input order (stable, as the seed)."""
    pre = problem.pre
    return [i for i in problem.order if i not in pre]
