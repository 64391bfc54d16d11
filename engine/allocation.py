"""(Selection, Problem) → Allocation: one decision and one reason per candidate, the
assembled context recounted with the real tokenizer, and a report per rule.

Assembly: the chosen items are ordered (relevance, document order, lost-in-the-middle,
or pinned first), rendered with the template and joined with the separator. The text is
counted again with the Problem's counter (resolved once, in :func:`~engine.problem.reduce`);
if BPE merges across item boundaries pushed it over the budget, the least valuable
non-pinned item is dropped and the text recounted, until it fits. Every drop is recorded
(reason ``dropped_in_repair``) — never silent. So the assembled context, counted in the
policy's tokenizer, never exceeds the limit, whatever counts the caller passed; the one
exception is a policy that opts into ``budget.counts: caller``, where the budget holds on
the caller's counts and :attr:`Allocation.warnings` (and the audit record) say so.

``context_tokens`` is always the recount of the assembled text in the policy's
tokenizer; ``budgeted_tokens`` is the total the budget rule held (the chosen items'
counts plus separators) — the two differ only by BPE merges across items, or, under
``counts: caller``, by what the caller's counts differ from ours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from typing import Any, overload

from .candidates import Candidate
from .counts import TokenAccounting
from .errors import InfeasibleError
from .policy import BudgetStrategy, Ordering
from .problem import LinearRule, MissingPin, Problem, render
from .reasons import Reason, ReasonCode
from .strategies import Selection
from .feasibility import Filler


@dataclass(frozen=True, slots=True)
class ItemDecision:
    """The fate of one candidate."""

    index: int
    source_id: str
    level: str
    tokens: int
    relevance: float
    value: int
    sha256: str
    reason: Reason

    @property
    def included(self) -> bool:
        return self.reason.code.includes


class Decisions(Sequence[ItemDecision]):
    """The decisions of one allocation, one per candidate in input order, held as
    columns: an :class:`ItemDecision` (with its reason) is built only when asked for,
    and the reason of an item a strategy left out (the first rule it would break) is
    worked out only then, with the same content as if built eagerly. It reads like the
    tuple of decisions it stands for: indexing, slicing (a tuple), iteration, ``len``,
    ``==`` with any sequence of decisions."""

    __slots__ = ("candidates", "tokens", "values", "included", "_reason", "_reasons", "_items", "_ids")

    def __init__(self, candidates: Sequence[Candidate], tokens: Sequence[int], values: Sequence[int],
                 included: Sequence[bool], reason: Callable[[int], Reason]) -> None:
        #: The columns, by input index (``included``: the decision, without its reason);
        #: source id, level, relevance and digest are the candidates' own.
        self.candidates = candidates
        self.tokens = tokens
        self.values = values
        self.included = included
        self._reason = reason
        self._items: list[ItemDecision | None] = [None] * len(candidates)
        self._reasons: dict[int, Reason] = {}  # reasons asked for before their decision
        self._ids: list[str] | None = None

    @property
    def source_ids(self) -> list[str]:
        """Each decision's source id, in input order."""
        if self._ids is None:
            self._ids = [c.source_id for c in self.candidates]
        return self._ids

    def __len__(self) -> int:
        return len(self._items)

    def reason_of(self, i: int) -> Reason:
        """Decision ``i``'s reason (``self[i].reason``) without building the decision
        (whose content digest a caller comparing reasons does not need)."""
        d = self._items[i]
        if d is not None:
            return d.reason
        r = self._reasons.get(i)
        if r is None:
            r = self._reasons[i] = self._reason(i)
        return r

    def _item(self, i: int) -> ItemDecision:
        d = self._items[i]
        if d is None:
            c = self.candidates[i]
            r = self._reasons.pop(i, None)
            d = self._items[i] = ItemDecision(i, c.source_id, c.level, self.tokens[i], c.relevance_score,
                                              self.values[i], c.sha256, self._reason(i) if r is None else r)
        return d

    @overload
    def __getitem__(self, i: int) -> ItemDecision: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[ItemDecision, ...]: ...

    def __getitem__(self, i: int | slice) -> ItemDecision | tuple[ItemDecision, ...]:
        if isinstance(i, slice):
            return tuple(self._item(k) for k in range(*i.indices(len(self._items))))
        n = len(self._items)
        if not -n <= i < n:
            raise IndexError("decision index out of range")
        return self._item(i % n if i < 0 else i)

    def __iter__(self) -> Iterator[ItemDecision]:
        return (self._item(k) for k in range(len(self._items)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Decisions, tuple, list)):
            return len(self) == len(other) and all(x == y for x, y in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # like the dataclasses around it: compared, not hashed

    def __repr__(self) -> str:
        return repr(tuple(self))


@dataclass(frozen=True, slots=True)
class RuleReport:
    """A hard rule after the allocation: its total, bounds, slack and whether it bound."""

    key: str
    path: str
    label: str
    total: int
    lower: int | None
    upper: int | None
    slack: int
    binding: bool

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "path": self.path, "label": self.label, "total": self.total,
                "lower": self.lower, "upper": self.upper, "slack": self.slack,
                "binding": self.binding}


@dataclass(frozen=True, slots=True)
class Allocation:
    """The complete result of one allocation (immutable)."""

    #: One per candidate in input order (a :class:`Decisions`, or any sequence of them).
    decisions: Sequence[ItemDecision]
    context_order: tuple[int, ...]
    context: str
    context_tokens: int
    limit_tokens: int
    strategy_requested: BudgetStrategy
    strategy_used: BudgetStrategy
    fallback_reason: str | None
    selection: Selection
    unmet: tuple[str, ...]
    repairs: tuple[Mapping[str, Any], ...]
    rules: tuple[RuleReport, ...]
    timings: Mapping[str, float] = field(default_factory=dict)
    #: The total the budget rule held (chosen items' counts plus separators).
    budgeted_tokens: int = 0
    #: How the token counts were obtained (caller counts checked or trusted, disagreements).
    accounting: TokenAccounting = TokenAccounting()
    #: ``required: false`` pins that matched no candidate.
    missing_pins: tuple[MissingPin, ...] = ()
    #: The chat template's tokens around this context (``budget.message_overhead``: per
    #: request plus per included item; 0 without it): the model sees ``context_tokens``
    #: plus these, and the two together are held to ``limit_tokens``.
    overhead_tokens: int = 0

    @property
    def warnings(self) -> tuple[str, ...]:
        """What a reader must not miss although the allocation succeeded: missing pins,
        caller counts trusted unchecked, caller counts that disagreed with ours."""
        out = [f"pin {m.label} ({m.path}{', ' + str(m.location) if m.location else ''}) matched no "
               "candidate and is recorded as missing (required: false)" for m in self.missing_pins]
        acc = self.accounting
        if acc.trusted:
            out.append(f"budget.counts is caller: the budget held on the caller's token counts "
                       f"({self.budgeted_tokens:,} tokens); {acc.tokenizer} counts the context as "
                       f"{self.context_tokens:,}")
        elif acc.disagreements:
            out.append(f"{acc.disagreements:,} of {acc.caller_counts:,} caller token counts differ from "
                       f"{acc.tokenizer}'s ({acc.undercounts:,} under; largest {acc.largest_difference:+,} "
                       f"on {acc.largest_source_id!r}); the larger count was used")
        return tuple(out)

    @property
    def included(self) -> tuple[ItemDecision, ...]:
        """Included items in context order."""
        return tuple(self.decisions[i] for i in self.context_order)

    @property
    def excluded(self) -> tuple[ItemDecision, ...]:
        d = self.decisions
        if isinstance(d, Decisions):  # only the excluded items' reasons get worked out
            return tuple(d[i] for i, inc in enumerate(d.included) if not inc)
        return tuple(x for x in d if not x.included)


def _order(problem: Problem, chosen: set[int]) -> list[int]:
    rel = list(compress(problem.order, map(chosen.__contains__, problem.order)))
    if problem.ordering is Ordering.PINNED_FIRST:
        # Pins in the order of the policy's list (one pin's items by relevance), then the rest.
        position = {p.index: p.position for p in problem.pins}
        first = sorted((i for i in rel if i in position), key=position.__getitem__)
        return first + [i for i in rel if i not in position]
    if problem.ordering is Ordering.DOCUMENT:
        c = problem.candidates

        def key(i: int) -> tuple[str, int, int]:
            pos = c[i].metadata.get("order")
            return (c[i].doc_id or "", pos if isinstance(pos, int) else i, i)

        return sorted(rel, key=key)
    if problem.ordering is Ordering.LOST_IN_THE_MIDDLE:
        # Most relevant at both ends, least relevant in the middle (Liu et al., 2023).
        front, back = rel[0::2], rel[1::2]
        return front + back[::-1]
    return rel


def assemble(problem: Problem, order: list[int]) -> str:
    cands = problem.candidates
    if problem.template == "{content}":  # what render gives for this template
        return problem.separator.join([cands[i].content for i in order])
    return problem.separator.join([render(problem.template, cands[i]) for i in order])


def _why_not(problem: Problem, chosen: frozenset[int]) -> Callable[[int], Reason]:
    """Reasons for active items a solver left out: the first rule each would break, as
    the greedy family sees it (:class:`~engine.feasibility.Filler` holding the
    chosen set), else zero value, else "a better combination was chosen"."""
    held: list[Filler] = []

    def why(i: int) -> Reason:
        if not held:  # built on the first reason asked for
            filler = Filler(problem)
            for k in chosen:
                filler.add(k, _CHOSEN)
            held.append(filler)
        blocked = held[0].blocker(i)
        if blocked is not None:
            return blocked
        return _ZERO if problem.values[i] == 0 else _NOT_SELECTED

    return why


_ZERO = Reason(ReasonCode.ZERO_VALUE, "its objective value is 0; it adds tokens and no relevance")
_NOT_SELECTED = Reason(ReasonCode.NOT_SELECTED, "a higher-value combination was chosen under the rules")
_CHOSEN = Reason(ReasonCode.SELECTED, "chosen by the strategy")


def _report(rule: LinearRule, chosen: set[int], problem: Problem) -> RuleReport:
    total = rule.total(chosen)
    if rule.upper is not None:
        slack = rule.upper - total
        coefs = rule.coefs or [1] * len(rule.members)
        binding = slack == 0 or any(
            total + c > rule.upper for m, c in zip(rule.members, coefs) if m not in chosen)
    else:
        slack = total - (rule.lower or 0)
        binding = slack == 0
    upper = rule.upper
    if rule is problem.budget:
        # Report in real tokens, not weight units: k items carry k separators in the
        # model while the context has k - 1, and the limit is the policy's own number.
        total = max(0, total - problem.separator_tokens) + problem.overhead_per_request
        upper = problem.limit_tokens
        slack = upper - total
    return RuleReport(rule.key, rule.path, rule.label, total, rule.lower, upper, slack, binding)


def build(problem: Problem, selection: Selection, requested: BudgetStrategy,
          fallback_reason: str | None) -> Allocation:
    """Turn a selection into the final allocation (assembly, recount, repair, reasons)."""
    chosen = set(selection.chosen)
    tok = problem.counter
    order = _order(problem, chosen)
    text = assemble(problem, order)
    count = tok.count(text)
    repairs: list[dict[str, Any]] = []
    dropped: dict[int, Reason] = {}
    pinned = problem.pinned
    # Every count is at least ours unless the policy trusts the caller's (counts: caller,
    # where the budget holds on the caller's counts and the record says so): then the
    # recount is held to the budget too.
    def seen(count: int) -> str:
        """The recount as the model sees it (with the chat overhead, when there is one)."""
        extra = problem.overhead_tokens(len(order))
        return f"{count:,} tokens" + (f" plus {extra:,} of chat overhead" if extra else "")

    while problem.repairable and count > problem.limit_tokens - problem.overhead_tokens(len(order)):
        victims = [i for i in order if i not in pinned]
        if not victims:
            core = [{"rule": p.label, "key": p.key, "path": p.path,
                     "location": str(p.location) if p.location else None} for p in problem.pins]
            budget = problem.budget
            core.append({"rule": budget.label, "key": budget.key, "path": budget.path,
                         "location": str(budget.location) if budget.location else None})
            raise InfeasibleError(
                "allocation.infeasible",
                f"the pinned items alone assemble to {seen(count)}, over the budget of "
                f"{problem.limit_tokens:,}; unpin one or raise the budget",
                path="$.spec.pinned", details={"core": core, "minimal": False})
        v = min(victims, key=lambda i: (problem.values[i], -problem.tokens[i], -i))
        before, shown = count, seen(count)
        order.remove(v)
        chosen.discard(v)
        text = assemble(problem, order)
        count = tok.count(text)
        repairs.append({"dropped": problem.candidates[v].source_id, "tokens_before": before,
                        "tokens_after": count})
        dropped[v] = Reason(ReasonCode.REPAIR,
                            f"the assembled text counted {shown} (> {problem.limit_tokens:,}) "
                            "after BPE merges across items; this least valuable item was dropped",
                            "$.spec.budget", {"tokens_before": before, "tokens_after": count})
    c = problem.candidates
    pre, reasons = problem.pre, selection.reasons
    included = [False] * len(c)
    for i in chosen:
        included[i] = True
    for i in dropped:
        included[i] = False
    for i, r in pre.items():
        included[i] = r.code.includes
    final = frozenset(chosen)
    why_not = _why_not(problem, final)

    def reason(i: int) -> Reason:
        r = pre.get(i) or dropped.get(i)
        if r is None:
            # The strategy's own reason, when it still matches the item's fate.
            own = reasons.get(i)
            if own is not None and own.code.includes == (i in final):
                r = own
            else:
                r = _CHOSEN if i in final else why_not(i)
        return r

    decisions = Decisions(c, problem.tokens, problem.values, included, reason)
    unmet = problem.unmet(chosen)
    return Allocation(
        decisions=decisions,
        context_order=tuple(order),
        context=text,
        context_tokens=count,
        limit_tokens=problem.limit_tokens,
        strategy_requested=requested,
        strategy_used=selection.strategy,
        fallback_reason=fallback_reason,
        selection=selection,
        unmet=unmet,
        repairs=tuple(repairs),
        rules=tuple(_report(r, chosen, problem) for r in problem.linear_rules),
        budgeted_tokens=max(0, problem.budget.total(chosen) - problem.separator_tokens
                            - problem.overhead_per_item * len(chosen)) if chosen else 0,
        accounting=problem.accounting,
        missing_pins=problem.missing_pins,
        overhead_tokens=problem.overhead_tokens(len(order)),
    )

