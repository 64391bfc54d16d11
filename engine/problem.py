"""(Policy, candidates) → Problem: the solver-neutral form every strategy reads.

What goes in: a validated :class:`~engine.policy.Policy` and a tuple of
:class:`~engine.candidates.Candidate`. What comes out: a frozen :class:`Problem` holding
only integers and indices — token weights, scaled values, the hard rules as linear
constraints over "take item i" decisions, hierarchy chains — plus the decisions that are
fixed before any strategy runs (blocked, below a relevance threshold, too large, pinned).

Greedy, balanced and CP-SAT all read the same Problem, so they cannot disagree on what a
rule means. The solver never reads the Policy; what later stages need is returned here.

Token accounting (why ``capacity`` is ``limit + separator_tokens``): the assembled context
is ``separator.join(template.format(item) for item in chosen)``. Each item's weight is its
rendered token count plus one separator, so k items carry k separators while the context
has k - 1; adding one separator's worth to the capacity makes the two agree exactly. BPE
merges across item boundaries can still move the total by a few tokens; the assembly step
recounts the real text and repairs (see :mod:`engine.assemble`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any

from .candidates import Candidate
from .errors import InfeasibleError, Location, TokenizerError
from .policy import GroupBy, Ordering, Policy, SolverSettings
from .reasons import Reason, ReasonCode
from .tokens import get_tokenizer

#: Values are ``round(RELEVANCE_SCALE * weight / max_weight)``: CP-SAT needs integer
#: coefficients, so objective weights keep 6 significant digits relative to the best item.
RELEVANCE_SCALE = 1_000_000


class RuleKind(Enum):
    BUDGET = "budget"
    LEVEL_MIN_ITEMS = "level_min_items"
    LEVEL_MAX_ITEMS = "level_max_items"
    LEVEL_MIN_TOKENS = "level_min_tokens"
    LEVEL_MAX_TOKENS = "level_max_tokens"
    SOURCE_MAX_ITEMS = "source_max_items"
    SOURCE_MAX_TOKENS = "source_max_tokens"
    PREFER_PARENT = "prefer_parent"
    PINNED = "pinned"
    HIERARCHY = "hierarchy"


@dataclass(frozen=True, slots=True)
class LinearRule:
    """``lower <= sum(coef_i * take_i for i in members) <= upper`` (either bound may be None).

    ``coefs`` is None when every coefficient is 1 (an item count)."""

    key: str
    kind: RuleKind
    path: str
    location: Location | None
    label: str
    members: tuple[int, ...]
    coefs: tuple[int, ...] | None
    lower: int | None
    upper: int | None

    def total(self, chosen: frozenset[int] | set[int]) -> int:
        if self.coefs is None:
            return sum(1 for m in self.members if m in chosen)
        return sum(c for m, c in zip(self.members, self.coefs) if m in chosen)

    def holds(self, chosen: frozenset[int] | set[int]) -> bool:
        t = self.total(chosen)
        return (self.lower is None or t >= self.lower) and (self.upper is None or t <= self.upper)


@dataclass(frozen=True, slots=True)
class PinRule:
    """Candidate ``index`` must be included (matched by the pin at ``path``)."""

    key: str
    path: str
    location: Location | None
    label: str
    index: int


@dataclass(frozen=True, slots=True)
class Chain:
    """At most one of ``members`` (an ancestor-to-descendant path) may be included."""

    key: str
    path: str
    location: Location | None
    label: str
    members: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """Everything a strategy needs, as integers and indices. Indices are input positions."""

    candidates: tuple[Candidate, ...]
    tokens: tuple[int, ...]
    weights: tuple[int, ...]
    values: tuple[int, ...]
    order: tuple[int, ...]
    active: tuple[int, ...]
    pre: Mapping[int, Reason]
    pins: tuple[PinRule, ...]
    rules: tuple[LinearRule, ...]
    chains: tuple[Chain, ...]
    group_of: tuple[str | None, ...]
    limit_tokens: int
    separator_tokens: int
    capacity: int
    settings: SolverSettings
    level_shares: Mapping[str, float]
    tokenizer: str
    template: str
    separator: str
    ordering: Ordering
    own_counts: bool

    @property
    def budget_rule(self) -> LinearRule:
        return self.rules[0]

    @property
    def pinned(self) -> frozenset[int]:
        return frozenset(p.index for p in self.pins)

    def unmet(self, chosen: frozenset[int] | set[int]) -> tuple[str, ...]:
        """Minimum rules that ``chosen`` does not meet, each with what it got."""
        out = []
        for r in self.rules:
            if r.lower is not None:
                got = r.total(chosen)
                if got < r.lower:
                    out.append(f"{r.label} (got {got:,})")
        return tuple(out)

    def rule(self, key: str) -> LinearRule | None:
        for r in self.rules:
            if r.key == key:
                return r
        return None


def render(template: str, c: Candidate) -> str:
    """One item as the model will see it."""
    if template == "{content}":
        return c.content
    return template.format(source_id=c.source_id, content=c.content, level=c.level)


def _count_tokens(policy: Policy, cands: Sequence[Candidate]) -> tuple[list[int], int]:
    """Rendered token count per candidate and the separator's token count.

    A caller-supplied ``token_count`` is trusted for the content; the item's own template
    overhead (the template rendered with this item's id and level and no content) is
    added to it. Otherwise the rendered text is counted exactly."""
    tok = policy_tokenizer(policy)
    template = policy.budget.template
    plain = template == "{content}"
    need = [c for c in cands if c.token_count is None]
    if plain:
        counted = tok.count_many([c.content for c in need], hashes=[c.sha256 for c in need])
    else:
        counted = tok.count_many([render(template, c) for c in need])
    fresh = dict(zip((c.index for c in need), counted))
    given = [c for c in cands if c.token_count is not None]
    if plain or not given:
        extra = dict.fromkeys((c.index for c in given), 0)
    else:
        extra = dict(zip((c.index for c in given),
                         tok.count_many([template_overhead(template, c) for c in given])))
    out = [fresh[c.index] if c.token_count is None else c.token_count + extra[c.index] for c in cands]
    sep = policy.budget.separator
    return out, (tok.count(sep) if sep else 0)


def policy_tokenizer(policy: Policy) -> Any:
    """The policy's tokenizer; a failure to provide it points at ``$.spec.tokenizer``."""
    try:
        return get_tokenizer(policy.tokenizer)
    except TokenizerError as exc:
        path = "$.spec.tokenizer"
        raise TokenizerError(exc.code, exc.message, path=path, location=policy.location_of(path)) from None


def template_overhead(template: str, c: Candidate) -> str:
    """The template rendered for ``c`` without its content: what a caller-supplied
    content count does not include."""
    return template.format(source_id=c.source_id, content="", level=c.level)


def _group_key(policy: Policy, c: Candidate, by_id: Mapping[str, Candidate]) -> str | None:
    rule = policy.sources
    if rule is None:
        return None
    if rule.group_by is GroupBy.PREFIX:
        return c.source_id.split(rule.separator, 1)[0]
    if rule.group_by is GroupBy.METADATA:
        value = c.metadata.get(rule.field or "")
        return "<missing>" if value is None else str(value)
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


def _fmt(n: int) -> str:
    return f"{n:,}"


def reduce(policy: Policy, cands: tuple[Candidate, ...]) -> Problem:
    """Build the Problem. Raises ``InfeasibleError`` only for conflicts visible without
    solving (an item both pinned and blocked)."""
    tokens, sep_tokens = _count_tokens(policy, cands)
    weights = [t + sep_tokens for t in tokens]
    limit = policy.budget.limit_tokens
    capacity = limit + sep_tokens
    by_id = {c.source_id: c for c in cands}
    order = sorted(range(len(cands)), key=lambda i: (-cands[i].relevance_score, i))
    loc = policy.location_of

    pre: dict[int, Reason] = {}
    pins: list[PinRule] = []
    pinned, blocked = policy.pinned, policy.blocked
    for i, c in enumerate(cands):
        pin = next((m for m in pinned if m.matches(c.source_id, c.metadata)), None) if pinned else None
        block = next((m for m in blocked if m.matches(c.source_id, c.metadata)), None) if blocked else None
        if pin is not None and block is not None:
            raise InfeasibleError(
                "allocation.infeasible",
                f"item {c.source_id!r} is both pinned ({pin.path}) and blocked ({block.path}); "
                "remove it from one of the two lists",
                path=pin.path,
                location=loc(pin.path),
                details={"core": [_core_entry(policy, pin.path, f"pinned {c.source_id!r}"),
                                  _core_entry(policy, block.path, f"blocked {c.source_id!r}")]},
            )
        if block is not None:
            why = f" ({block.reason})" if block.reason else ""
            pre[i] = Reason(ReasonCode.BLOCKED, f"matched {block.path}{why}", block.path)
            continue
        if pin is not None:
            pins.append(PinRule(f"pinned[{c.source_id}]", pin.path, loc(pin.path),
                                f"pinned {c.source_id!r} ({_fmt(tokens[i])} tokens)", i))
            continue
        lvl = policy.level(c.level)
        if lvl is not None and lvl.min_relevance is not None:
            threshold, tpath = lvl.min_relevance, f"$.spec.levels.{c.level}.min_relevance"
        else:
            threshold, tpath = policy.min_relevance, "$.spec.min_relevance"
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
    active = tuple(i for i in range(len(cands)) if i not in pre)
    active_set = set(active)

    # Objective values: the policy's transform of each score, normalised to the best.
    # Scores are divided by the best active score first: every transform is then applied
    # to [0, 1] (no overflow for huge scores or exponents) and, being scale-invariant up
    # to a constant factor, the optimum does not change. Negative scores only reach here
    # on pinned items (min_relevance >= 0 excludes the rest): they are worth nothing.
    rank = {idx: r + 1 for r, idx in enumerate(order)}
    smax = max((cands[i].relevance_score for i in active), default=0.0)
    raw = {i: max(0.0, policy.objective.weight(
        max(0.0, cands[i].relevance_score) / smax if smax > 0 else 0.0, rank[i])) for i in active}
    top = max(raw.values(), default=0.0)
    values = [0] * len(cands)
    if top > 0:
        for i, w in raw.items():
            values[i] = int(round(RELEVANCE_SCALE * w / top))

    rules: list[LinearRule] = [
        LinearRule("budget", RuleKind.BUDGET, "$.spec.budget", loc("$.spec.budget"),
                   f"budget {_fmt(limit)} tokens", active,
                   tuple(weights[i] for i in active), None, capacity)
    ]
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
            if lo is None and hi is None:
                continue
            bound = lo if lo is not None else hi
            rules.append(LinearRule(f"levels.{lv.name}.{name}", kind, f"{base}.{name}",
                                    loc(f"{base}.{name}"), f"levels.{lv.name}.{name}={_fmt(bound)}",
                                    members, coefs, lo, hi))

    group_of = tuple(_group_key(policy, c, by_id) for c in cands)
    src = policy.sources
    if src is not None:
        groups: dict[str, list[int]] = {}
        for i in active:
            g = group_of[i]
            if g is not None:
                groups.setdefault(g, []).append(i)
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
                rules.append(LinearRule(f"sources[{g}].{name}", kind, path, loc(path),
                                        f"source {g!r} {name}={_fmt(cap)}", members, coefs, None, cap))

    chains: list[Chain] = []
    # Exclusivity can only bind when some item names a parent (or its ancestors).
    if policy.hierarchy.exclusive and any(c.parent_id is not None or "ancestors" in c.metadata
                                          for c in cands):
        # One conflict per (ancestor, descendant) pair, not one per root-to-leaf path:
        # ancestor lists from outside need not be closed under "ancestor of", and parent
        # links may even form a cycle; pairs stay correct in both cases.
        path = "$.spec.hierarchy.exclusive"
        seen_pairs: set[tuple[int, int]] = set()
        for i in active:
            for a in ancestors_of(cands[i], by_id):
                anc = by_id.get(a)
                j = anc.index if anc is not None else None
                if j is None or j == i or j not in active_set or (min(i, j), max(i, j)) in seen_pairs:
                    continue
                seen_pairs.add((min(i, j), max(i, j)))
                chains.append(Chain(f"hierarchy[{a}>{cands[i].source_id}]", path, loc(path),
                                    f"hierarchy.exclusive ({a!r} contains {cands[i].source_id!r})", (j, i)))
        ratio = policy.hierarchy.prefer_parent_ratio
        if ratio is not None:
            kids: dict[int, list[int]] = {}
            for i in active:
                p = cands[i].parent_id
                if p is not None and p in by_id and by_id[p].index in active_set:
                    kids.setdefault(by_id[p].index, []).append(i)
            ppath = "$.spec.hierarchy.prefer_parent_ratio"
            for p in sorted(kids):
                members = tuple(kids[p])
                cap = math.ceil(ratio * len(members)) - 1
                rules.append(LinearRule(
                    f"prefer_parent[{cands[p].source_id}]", RuleKind.PREFER_PARENT, ppath, loc(ppath),
                    f"prefer parent {cands[p].source_id!r} over >= {ratio:g} of its {len(members)} children",
                    members, None, None, cap))

    shares = {lv.name: lv.share for lv in policy.levels if lv.share is not None}
    return Problem(
        candidates=cands,
        tokens=tuple(tokens),
        weights=tuple(weights),
        values=tuple(values),
        order=tuple(order),
        active=active,
        pre=MappingProxyType(pre),
        pins=tuple(pins),
        rules=tuple(rules),
        chains=tuple(chains),
        group_of=group_of,
        limit_tokens=limit,
        separator_tokens=sep_tokens,
        capacity=capacity,
        settings=policy.solver,
        level_shares=MappingProxyType(shares),
        tokenizer=policy.tokenizer,
        template=policy.budget.template,
        separator=policy.budget.separator,
        ordering=policy.ordering,
        own_counts=all(c.token_count is None for c in cands),
    )


def _core_entry(policy: Policy, path: str, label: str) -> dict[str, object]:
    where = policy.location_of(path)
    return {"rule": label, "path": path, "location": str(where) if where else None}
