"""(Policy, candidates) → Problem: the solver-neutral form every strategy reads.

What goes in: a validated :class:`~engine.policy.Policy`, a tuple of
:class:`~engine.candidates.Candidate` and, optionally, the policy's tokenizer already
resolved. What comes out: a frozen :class:`Problem` holding only integers and indices —
token weights, scaled values, the budget rule (named: :attr:`Problem.budget`), the other
hard rules as linear constraints over "take item i" decisions, hierarchy chains — plus
the decisions that are fixed before any strategy runs (blocked, below a relevance
threshold, too large, pinned) and the counter and counts later stages reuse.

Greedy, balanced and CP-SAT all read the same Problem, so they cannot disagree on what a
rule means. The solver never reads the Policy; what later stages need is returned here.

:func:`reduce` runs named steps, each a small function: count the tokens
(:mod:`engine.counts`), match the pins and blocks (a required pin that matches nothing is
an :class:`~engine.errors.InfeasibleError`), pre-decide, compute the objective values,
build the budget rule, the level and source rules, and the hierarchy chains.

Token accounting (why ``capacity`` is ``limit + separator_tokens``): the assembled context
is ``separator.join(template.format(item) for item in chosen)``. Each item's weight is its
rendered token count plus one separator, so k items carry k separators while the context
has k - 1; adding one separator's worth to the capacity makes the two agree exactly. BPE
merges across item boundaries can still move the total by a few tokens; the allocation
stage recounts the real text and repairs (see :mod:`engine.allocation`). A chat
template's ``budget.message_overhead`` is part of the budget rule only: each item weighs
``per_item_tokens`` more, and the capacity is ``per_request_tokens`` less (level and
source caps stay on the items' own tokens).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from types import MappingProxyType

from .candidates import Candidate
from .counts import Counted, Counter, TokenAccounting, count_tokens, policy_tokenizer, render, template_overhead
from .duplicates import conflicts, shingles
from .objective import RELEVANCE_SCALE, objective_values
from .pins import Matched, match_pins
from .policy import GroupBy, Ordering, Policy, SolverSettings, metadata_group
from .reasons import Reason, ReasonCode
from .rules import Chain, LinearRule, MissingPin, PinRule, RuleKind

# Re-exported: the Problem's parts and the counting helpers its users have always
# imported from here.
__all__ = [
    "RELEVANCE_SCALE", "Chain", "LinearRule", "MissingPin", "PinRule", "Problem", "RuleKind",
    "ancestors_of", "policy_tokenizer", "reduce", "render", "template_overhead",
]

@dataclass(frozen=True, slots=True)
class Problem:
    """Everything a strategy needs, as integers and indices. Indices are input positions.

    ``budget`` is the budget rule (weights of the active items against ``capacity``);
    ``constraints`` are every other linear rule (level quotas, source caps,
    prefer-parent); :attr:`linear_rules` is both, budget first. ``counter`` is the
    policy's tokenizer, resolved once per call; ``accounting`` says how the counts were
    obtained (later stages and the audit record reuse both instead of recounting)."""

    candidates: tuple[Candidate, ...]
    tokens: tuple[int, ...]
    weights: tuple[int, ...]
    values: tuple[int, ...]
    order: tuple[int, ...]
    active: tuple[int, ...]
    pre: Mapping[int, Reason]
    pins: tuple[PinRule, ...]
    budget: LinearRule
    constraints: tuple[LinearRule, ...]
    chains: tuple[Chain, ...]
    group_of: tuple[str | None, ...]
    limit_tokens: int
    separator_tokens: int
    capacity: int
    settings: SolverSettings
    level_shares: Mapping[str, float]
    counter: Counter
    template: str
    separator: str
    ordering: Ordering
    accounting: TokenAccounting
    missing_pins: tuple[MissingPin, ...] = ()
    #: ``budget.message_overhead``: tokens per chosen item and per request (in weights
    #: and capacity), 0 without it.
    overhead_per_item: int = 0
    overhead_per_request: int = 0
    #: The inputs as columns, built once in :func:`reduce` (input order), for strategies
    #: and later stages that read a field of every item: ids, relevance scores, levels,
    #: the index of each item's parent among the candidates (-1: none, or not a
    #: candidate) and of its source group (its rank among the sorted group names; -1:
    #: none). Empty only for a Problem built without them.
    source_ids: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    levels: tuple[str, ...] = ()
    parent_index: tuple[int, ...] = ()
    group_index: tuple[int, ...] = ()

    def overhead_tokens(self, items: int) -> int:
        """The chat overhead of a context of ``items`` chosen items."""
        return self.overhead_per_request + items * self.overhead_per_item

    @property
    def tokenizer(self) -> str:
        """The tokenizer's name."""
        return self.counter.name

    @property
    def linear_rules(self) -> tuple[LinearRule, ...]:
        """The budget rule, then every other linear rule."""
        return (self.budget, *self.constraints)

    @property
    def pinned(self) -> frozenset[int]:
        return frozenset(p.index for p in self.pins)

    @property
    def repairable(self) -> bool:
        """Whether the recounted context is held to the budget (repaired when over):
        always, except when some item weighs a trusted caller count (``counts: caller``)."""
        return not self.accounting.trusted

    def unmet(self, chosen: frozenset[int] | set[int]) -> tuple[str, ...]:
        """Minimum rules that ``chosen`` does not meet, each with what it got."""
        out = []
        for r in self.constraints:
            if r.lower is not None:
                got = r.total(chosen)
                if got < r.lower:
                    out.append(f"{r.label} (got {got:,})")
        return tuple(out)

    def rule(self, key: str) -> LinearRule | None:
        for r in self.linear_rules:
            if r.key == key:
                return r
        return None


_ID, _SCORE, _LEVEL, _PARENT, _META = (attrgetter(name) for name in
                                       ("source_id", "relevance_score", "level", "parent_id", "metadata"))


def _fmt(n: int) -> str:
    return f"{n:,}"


# --------------------------------------------------------------------------- hierarchy


def _group_key(policy: Policy, c: Candidate, by_id: Mapping[str, Candidate]) -> str | None:
    rule = policy.sources
    if rule is None:
        return None
    if rule.group_by is GroupBy.PREFIX:
        return c.source_id.split(rule.separator, 1)[0]
    if rule.group_by is GroupBy.METADATA:
        return metadata_group(c.metadata.get(rule.field or ""))
    # GroupBy.DOCUMENT: the document the item belongs to.
    if c.doc_id is not None:
        return c.doc_id
    anc = ancestors_of(c, by_id)
    return anc[-1] if anc else c.source_id


def ancestors_of(c: Candidate, by_id: Mapping[str, Candidate]) -> list[str]:
    """Ancestor ids, nearest first: ``metadata['ancestors']`` when the index supplied it,
    else the ``parent_id`` chain through the candidates (a missing parent ends it)."""
    given = c.metadata.get("ancestors")
    if isinstance(given, (list, tuple)) and all(isinstance(a, str) for a in given):
        return list(given)
    out: list[str] = []
    seen = {c.source_id}
    pid = c.parent_id
    while pid is not None and pid not in seen:
        out.append(pid)
        seen.add(pid)
        parent = by_id.get(pid)
        pid = parent.parent_id if parent is not None else None
    return out


# --------------------------------------------------------------------------- steps


def pre_decide(policy: Policy, cands: Sequence[Candidate], tokens: Sequence[int],
               weights: Sequence[int], capacity: int,
               matched: Matched) -> tuple[dict[int, Reason], list[PinRule]]:
    """Decisions fixed before any strategy: blocked, pinned, below the relevance
    threshold (the level's, else the global one), too large to fit alone.

    The items that can get one are found column by column (:func:`_flagged`); each of
    them is then decided as one by one, in input order."""
    pre: dict[int, Reason] = {}
    pins: list[PinRule] = []
    loc = policy.location_of
    limit = policy.budget.limit_tokens
    thresholds = _thresholds(policy, set(map(_LEVEL, cands)))
    for i in _flagged(cands, weights, capacity, matched, thresholds):
        c = cands[i]
        b = matched.block_of[i]
        if b is not None:
            block = policy.blocked[b]
            why = f" ({block.reason})" if block.reason else ""
            pre[i] = Reason(ReasonCode.BLOCKED, f"matched {block.path}{why}", block.path)
            continue
        p = matched.pin_of[i]
        if p is not None:
            path = policy.pinned[p].path
            pins.append(PinRule(f"pinned[{c.source_id}]", path, loc(path),
                                f"pinned {c.source_id!r} ({_fmt(tokens[i])} tokens)", i, p))
            continue
        threshold, tpath = thresholds[c.level]
        if c.relevance_score < threshold:
            pre[i] = Reason(
                ReasonCode.BELOW_MIN_RELEVANCE,
                f"relevance {c.relevance_score:.4g} < min {threshold:.4g}",
                tpath,
                {"relevance": c.relevance_score, "min_relevance": threshold},
            )
            continue
        if weights[i] > capacity:
            pre[i] = Reason(
                ReasonCode.TOO_LARGE,
                f"needs {_fmt(tokens[i])} tokens alone; the budget is {_fmt(limit)}",
                "$.spec.budget",
                {"tokens": tokens[i], "budget": limit},
            )
    return pre, pins


def _thresholds(policy: Policy, levels: set[str]) -> dict[str, tuple[float, str]]:
    """Each level's relevance threshold and its policy path: the level's own
    ``min_relevance``, else the global one."""
    out = {}
    for name in levels:
        lvl = policy.level(name)
        if lvl is not None and lvl.min_relevance is not None:
            out[name] = (lvl.min_relevance, f"$.spec.levels.{name}.min_relevance")
        else:
            out[name] = (policy.min_relevance, "$.spec.min_relevance")
    return out


def _flagged(cands: Sequence[Candidate], weights: Sequence[int], capacity: int, matched: Matched,
             thresholds: Mapping[str, tuple[float, str]]) -> list[int]:
    """The items that are blocked, pinned, below their threshold or too large, in input
    order (every other item is left to the strategies)."""
    flagged = {i for i, w in enumerate(weights) if w > capacity}
    flagged.update(i for i, b in enumerate(matched.block_of) if b is not None)
    flagged.update(i for i, p in enumerate(matched.pin_of) if p is not None)
    floors = {t for t, _path in thresholds.values()}
    if len(floors) == 1:
        floor = floors.pop()
        flagged.update(i for i, s in enumerate(map(_SCORE, cands)) if s < floor)
    else:
        flagged.update(i for i, c in enumerate(cands) if c.relevance_score < thresholds[c.level][0])
    return sorted(flagged)


def budget_rule(policy: Policy, active: tuple[int, ...], weights: Sequence[int], capacity: int) -> LinearRule:
    """Rendered tokens plus one separator per chosen item, within ``capacity``."""
    limit = policy.budget.limit_tokens
    return LinearRule("budget", RuleKind.BUDGET, "$.spec.budget", policy.location_of("$.spec.budget"),
                      f"budget {_fmt(limit)} tokens", active,
                      tuple(weights) if len(active) == len(weights) else tuple(weights[i] for i in active),
                      None, capacity)


def level_rules(policy: Policy, cands: Sequence[Candidate], active: tuple[int, ...],
                tokens: Sequence[int]) -> list[LinearRule]:
    """Per level: min/max items (counts) and min/max tokens (rendered counts)."""
    rules: list[LinearRule] = []
    loc = policy.location_of
    for lv in policy.levels:
        members = tuple(i for i in active if cands[i].level == lv.name)
        mtoks = tuple(tokens[i] for i in members)
        base = f"$.spec.levels.{lv.name}"
        specs = (
            ("min_items", RuleKind.LEVEL_MIN_ITEMS, None, lv.min_items or None, None),
            ("max_items", RuleKind.LEVEL_MAX_ITEMS, None, None, lv.max_items),
            ("min_tokens", RuleKind.LEVEL_MIN_TOKENS, mtoks, lv.min_tokens or None, None),
            ("max_tokens", RuleKind.LEVEL_MAX_TOKENS, mtoks, None, lv.max_tokens),
        )
        for name, kind, coefs, lo, hi in specs:
            bound = lo if lo is not None else hi
            if bound is None:
                continue
            rules.append(LinearRule(f"levels.{lv.name}.{name}", kind, f"{base}.{name}",
                                    loc(f"{base}.{name}"), f"levels.{lv.name}.{name}={_fmt(bound)}",
                                    members, coefs, lo, hi))
    return rules


def source_rules(policy: Policy, active: tuple[int, ...], tokens: Sequence[int],
                 group_of: Sequence[str | None]) -> list[LinearRule]:
    """Per source group (sorted): max items and max tokens."""
    src = policy.sources
    if src is None:
        return []
    groups: dict[str, list[int]] = {}
    for i in active:
        g = group_of[i]
        if g is not None:
            groups.setdefault(g, []).append(i)
    rules: list[LinearRule] = []
    for g in sorted(groups):
        members = tuple(groups[g])
        for name, kind, cap, coefs in (
            ("max_items_per_source", RuleKind.SOURCE_MAX_ITEMS, src.max_items_per_source, None),
            ("max_tokens_per_source", RuleKind.SOURCE_MAX_TOKENS, src.max_tokens_per_source,
             tuple(tokens[i] for i in members)),
        ):
            if cap is None:
                continue
            path = f"$.spec.sources.{name}"
            rules.append(LinearRule(f"sources[{g}].{name}", kind, path, policy.location_of(path),
                                    f"source {g!r} {name}={_fmt(cap)}", members, coefs, None, cap))
    return rules


def hierarchy_chains(policy: Policy, cands: Sequence[Candidate], active: tuple[int, ...],
                     by_id: Mapping[str, Candidate]) -> list[Chain]:
    """One conflict per (ancestor, descendant) pair of active items, when exclusive.

    Pairs, not root-to-leaf paths: ancestor lists from outside need not be closed under
    "ancestor of", and parent links may even form a cycle; pairs stay correct in both."""
    if not policy.hierarchy.exclusive:
        return []
    path = "$.spec.hierarchy.exclusive"
    where = policy.location_of(path)
    active_set = set(active)
    seen_pairs: set[tuple[int, int]] = set()
    chains: list[Chain] = []
    for i in active:
        for a in ancestors_of(cands[i], by_id):
            anc = by_id.get(a)
            if anc is None:
                continue
            j = anc.index
            pair = (min(i, j), max(i, j))
            if j == i or j not in active_set or pair in seen_pairs:
                continue
            seen_pairs.add(pair)
            chains.append(Chain(f"hierarchy[{a}>{cands[i].source_id}]", path, where,
                                f"hierarchy.exclusive ({a!r} contains {cands[i].source_id!r})", (j, i)))
    return chains


def duplicate_chains(policy: Policy, cands: Sequence[Candidate], active: tuple[int, ...],
                     by_id: Mapping[str, Candidate], pins: Sequence[PinRule]) -> list[Chain]:
    """At most one of each set of active near-duplicates (``spec.duplicates``; copies of
    one text are one chain, see :func:`engine.duplicates.conflicts`), except an item and
    its ancestor (the hierarchy rule's business) and two pinned items (pins win)."""
    rule = policy.duplicates
    if rule is None:
        return []
    path = "$.spec.duplicates"
    where = policy.location_of(path)
    empty: frozenset[str] = frozenset()
    sets = [empty] * len(cands)
    for i in active:
        sets[i] = shingles(cands[i].content, rule.shingle)
    ancestors: dict[int, frozenset[str]] = {}

    def linked(i: int, j: int) -> bool:
        for x in (i, j):
            if x not in ancestors:
                ancestors[x] = frozenset(ancestors_of(cands[x], by_id))
        return cands[i].source_id in ancestors[j] or cands[j].source_id in ancestors[i]

    chains: list[Chain] = []
    t = rule.threshold
    for c in conflicts(sets, t, active, {p.index for p in pins}, linked):
        ids = [cands[m].source_id for m in c.members]
        n, k = len(ids), c.split
        if n == 2:
            key, what = f"{ids[0]}~{ids[1]}", f"{ids[0]!r} ~ {ids[1]!r}"
        elif k == n:
            key, what = f"{ids[0]}+{n - 1}", f"{ids[0]!r} and {n - 1} more items of the same text"
        else:
            key, what = f"{ids[0]}~{ids[k]}+{n - 2}", f"{ids[0]!r} ~ {ids[k]!r} and {n - 2} more copies of either"
        chains.append(Chain(f"duplicates[{key}]", path, where, f"duplicates ({what}: jaccard {c.similarity:.3f} "
                            f">= {t:g})", c.members, RuleKind.NEAR_DUPLICATE, c.similarity, t))
    return chains


def prefer_parent_rules(policy: Policy, cands: Sequence[Candidate], active: tuple[int, ...],
                        by_id: Mapping[str, Candidate]) -> list[LinearRule]:
    """Fewer than ``prefer_parent_ratio`` of an active parent's active children."""
    ratio = policy.hierarchy.prefer_parent_ratio
    if ratio is None or not policy.hierarchy.exclusive:
        return []
    active_set = set(active)
    kids: dict[int, list[int]] = {}
    for i in active:
        p = cands[i].parent_id
        parent = by_id.get(p) if p is not None else None
        if parent is not None and parent.index in active_set:
            kids.setdefault(parent.index, []).append(i)
    path = "$.spec.hierarchy.prefer_parent_ratio"
    where = policy.location_of(path)
    rules: list[LinearRule] = []
    for p_index in sorted(kids):
        members = tuple(kids[p_index])
        # At most the largest k whose fraction k/n stays below the ratio (float
        # division, not ceil(ratio * n) - 1: 0.28 * 25 is 7.000000000000001).
        cap = sum(1 for k in range(1, len(members) + 1) if k / len(members) < ratio)
        pid = cands[p_index].source_id
        rules.append(LinearRule(
            f"prefer_parent[{pid}]", RuleKind.PREFER_PARENT, path, where,
            f"prefer parent {pid!r} over >= {ratio:g} of its {len(members)} children",
            members, None, None, cap))
    return rules


def _has_links(cands: Sequence[Candidate]) -> bool:
    """Exclusivity can only bind when some item names a parent (or its ancestors)."""
    return any(c.parent_id is not None for c in cands) or any("ancestors" in m for m in map(_META, cands) if m)


def _relevance_order(scores: Sequence[float]) -> tuple[int, ...]:
    """Every index by relevance, highest first, ties in input order: the order of the key
    ``(-score, index)`` (a reversed sort keeps equal items in their input order)."""
    return tuple(sorted(range(len(scores)), key=scores.__getitem__, reverse=True))


def _index_of(ids: Sequence[str | None], by_id: Mapping[str, Candidate]) -> tuple[int, ...]:
    """Each id's candidate index, -1 for ``None`` or an id that is not a candidate."""
    get = by_id.get
    out = []
    for pid in ids:
        parent = get(pid) if pid is not None else None
        out.append(parent.index if parent is not None else -1)
    return tuple(out)


def _group_index(group_of: Sequence[str | None]) -> tuple[int, ...]:
    """Source groups as integers: each group's rank in sorted order (the order of the
    source rules), -1 for an item in no group."""
    names = sorted({g for g in group_of if g is not None})
    if not names:
        return (-1,) * len(group_of)
    rank = {g: k for k, g in enumerate(names)}
    return tuple(-1 if g is None else rank[g] for g in group_of)


def reduce(policy: Policy, cands: tuple[Candidate, ...], *, counter: Counter | None = None,
           counted: Counted | None = None) -> Problem:
    """Build the Problem (``counter``: the policy's tokenizer if already resolved;
    ``counted``: :func:`~engine.counts.count_tokens` of the same inputs, if already done).

    Raises ``InfeasibleError`` only for conflicts visible without solving (an item both
    pinned and blocked, a required pin that matches no candidate) and ``TokenizerError``
    when the policy's tokenizer cannot be provided."""
    counter = counter if counter is not None else policy_tokenizer(policy)
    counted = counted if counted is not None else count_tokens(policy, cands, counter)
    tokens, sep = counted.tokens, counted.accounting.separator_tokens
    chat = policy.budget.message_overhead
    per_item, per_request = (0, 0) if chat is None else (chat.per_item_tokens, chat.per_request_tokens)
    extra = sep + per_item
    weights = tuple(t + extra for t in tokens) if extra else tuple(tokens)
    capacity = policy.budget.limit_tokens + sep - per_request
    source_ids = tuple(map(_ID, cands))
    scores = tuple(map(_SCORE, cands))
    levels = tuple(map(_LEVEL, cands))
    parent_ids = tuple(map(_PARENT, cands))
    by_id = dict(zip(source_ids, cands))
    order = _relevance_order(scores)

    matched = match_pins(policy, cands, by_id)
    pre, pins = pre_decide(policy, cands, tokens, weights, capacity, matched)
    active = tuple(i for i in range(len(cands)) if i not in pre) if pre else tuple(range(len(cands)))
    values = objective_values(policy.objective, cands, active, order, by_id)

    group_of = tuple(_group_key(policy, c, by_id) for c in cands) if policy.sources is not None \
        else (None,) * len(cands)
    linked = parent_ids.count(None) != len(parent_ids) or _has_links(cands)
    constraints = (level_rules(policy, cands, active, tokens)
                   + source_rules(policy, active, tokens, group_of)
                   + (prefer_parent_rules(policy, cands, active, by_id) if linked else []))
    chains = (hierarchy_chains(policy, cands, active, by_id) if linked else []) \
        + duplicate_chains(policy, cands, active, by_id, pins)

    return Problem(
        candidates=cands,
        tokens=tokens,
        weights=weights,
        values=tuple(values),
        order=order,
        active=active,
        pre=MappingProxyType(pre),
        pins=tuple(pins),
        budget=budget_rule(policy, active, weights, capacity),
        constraints=tuple(constraints),
        chains=tuple(chains),
        group_of=group_of,
        limit_tokens=policy.budget.limit_tokens,
        separator_tokens=sep,
        capacity=capacity,
        settings=policy.solver,
        level_shares=MappingProxyType({lv.name: lv.share for lv in policy.levels if lv.share is not None}),
        counter=counter,
        template=policy.budget.template,
        separator=policy.budget.separator,
        ordering=policy.ordering,
        accounting=counted.accounting,
        missing_pins=matched.missing,
        overhead_per_item=per_item,
        overhead_per_request=per_request,
        source_ids=source_ids,
        scores=scores,
        levels=levels,
        parent_index=_index_of(parent_ids, by_id) if linked else (-1,) * len(cands),
        group_index=_group_index(group_of),
    )
