"""An independent checker: does an Allocation obey every rule of its Policy?

What goes in: the Policy, the candidates and the Allocation (or, for tests and the
brute-force oracle, a bare set of included ids). What comes out: a tuple of
:class:`Violation` values — a stable ``code`` (``budget.over``, ``pinned.missing``), the
policy path of the ``rule`` it breaks, the source ids involved and a sentence. An empty
tuple means the allocation is valid; a non-empty one is always a bug in ctxbudget (the
façade raises ``VerificationError`` carrying the violations).

Independence is the point: this module never reads the Problem, the model or the
strategies' bookkeeping, and it does not call the engine's template renderer or
matcher: it reads templates, pins and group keys with its own code
(:mod:`engine.verify_semantics`, held to the same table of cases as the engine,
``tests/semantics_cases.py``) and recomputes token counts, thresholds, groups and
ancestry directly from the policy and the candidates, so a bug in ``reduce`` or
``compile`` is caught here rather than copied.

``CHECKERS`` is keyed by the rule names of the policy schema's ``spec`` plus
``accounting``, ``context`` and ``prefer_parent``; the checkers are looked up at call
time, and a test checks that every rule of the schema and every rule kind of the
Problem has one.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from .allocation import Allocation, Decisions
from .candidates import Candidate
from .counts import policy_tokenizer
from .policy import BudgetStrategy, Calibration, CalibrationGroup, CountMode, GroupBy, Matcher, Policy, Transform
from .tokens import HfCounter, TiktokenCounter, Tokenizer, Utf8BytesCounter
from .verify_semantics import is_sequence, parse_template, render, render_all, selects, shingle_set, value_key


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: ``code`` (stable, dotted), ``rule`` (the policy's JSON path),
    ``items`` (the source ids involved) and a ``message`` with the numbers."""

    code: str
    rule: str
    items: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        return f"{self.code} at {self.rule}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "rule": self.rule, "items": list(self.items), "message": self.message}


# --------------------------------------------------------------------------- facts

_ID, _SCORE, _LEVEL, _PARENT, _META, _TOKENS = (
    attrgetter(name) for name in ("source_id", "relevance_score", "level", "parent_id", "metadata", "token_count"))


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the verifier derives from (policy, candidates) alone, once. Per-item facts
    are columns by input position (``ids[i]``, ``tok[i]``...); ``pos`` maps an id to it."""

    policy: Policy
    cands: tuple[Candidate, ...]
    by_id: Mapping[str, Candidate]
    ids: list[str]
    pos: Mapping[str, int]
    scores: list[float]
    levels: list[str]
    tok_list: list[int]
    sep_tokens: int
    pinned: Mapping[str, str]
    unmatched: tuple[Matcher, ...]
    blocked: Mapping[str, str]
    floor_list: list[tuple[float, str]]
    takeable: list[bool]
    linked: bool
    tok: Tokenizer
    recount_binds: bool
    group: Mapping[str, object]

    @property
    def tokens(self) -> dict[str, int]:
        """Each item's token count by id."""
        return dict(zip(self.ids, self.tok_list))


def _item_tokens(policy: Policy, cands: Sequence[Candidate], tok: Tokenizer) -> list[int]:
    """Each item (by input position) as the budget counts it. Ours: the rendered text
    counted. A caller's: its ``token_count`` for the content plus the template rendered
    around an empty content. ``budget.counts: max`` weighs the larger of the two,
    ``caller`` the caller's."""
    b = policy.budget
    trust = b.counts is CountMode.CALLER
    counts: list[int | None] = list(map(_TOKENS, cands))
    need = [i for i, t in enumerate(counts) if t is None] if trust else []
    mine = [cands[i] for i in need] if trust else cands
    if b.template == "{content}" and isinstance(tok, (TiktokenCounter, HfCounter, Utf8BytesCounter)):
        # The rendered text is the content: its cache key (the content, or its digest
        # made from the content once per candidate, an input fact, not the engine's)
        # keys the count cache, so each content is hashed at most once per call.
        counted = tok.count_many([c.content for c in mine], keys=[c.count_key for c in mine])
    else:
        counted = _count_distinct(tok, render_all(b.template, [(c.source_id, c.content, c.level) for c in mine]))
    if trust:  # ours only where the caller gave no count
        ours: list[int] = [0] * len(cands)
        for i, n in zip(need, counted):
            ours[i] = n
    else:
        ours = list(counted)
    given = [i for i, t in enumerate(counts) if t is not None]
    if not given:
        return ours
    if not {name for is_field, name in parse_template(b.template) if is_field} - {"content"}:
        # Without {source_id} or {level} the template around an empty content is one text.
        extra = tok.count(render(b.template, source_id="", content="", level=""))
        around: Sequence[int] = [extra] * len(given)
    else:
        around = _count_distinct(tok, render_all(b.template, [(cands[i].source_id, "", cands[i].level)
                                                              for i in given]))
    if len(given) == len(cands):
        theirs = [t + e for t, e in zip(counts, around)]  # type: ignore[operator]  # all given
        return theirs if trust else list(map(max, ours, theirs))
    for i, extra in zip(given, around):
        theirs_i = counts[i] + extra  # type: ignore[operator]  # given: not None
        if trust or theirs_i > ours[i]:
            ours[i] = theirs_i
    return ours


def _count_distinct(tok: Tokenizer, texts: Sequence[str]) -> list[int]:
    """``tok.count_many(texts)``, each distinct text counted (and hashed) once: the
    rendered templates around caller counts repeat, and so may contents."""
    distinct = list(dict.fromkeys(texts))
    if len(distinct) == len(texts):
        return tok.count_many(texts)
    counts = dict(zip(distinct, tok.count_many(distinct)))
    return [counts[t] for t in texts]


def _facts(policy: Policy, cands: Sequence[Candidate], tok: Tokenizer) -> _Facts:
    b = policy.budget
    cands = tuple(cands)
    tokens = _item_tokens(policy, cands, tok)
    pinned: dict[str, str] = {}
    blocked: dict[str, str] = {}
    hit: set[str] = set()
    for c in cands if policy.pinned or policy.blocked else ():
        for m in policy.pinned:
            if selects(m, c.source_id, c.metadata):
                pinned.setdefault(c.source_id, m.path)
                hit.add(m.path)
        for m in policy.blocked:
            if selects(m, c.source_id, c.metadata):
                blocked[c.source_id] = m.path
                break
    ids = list(map(_ID, cands))
    scores = list(map(_SCORE, cands))
    levels = list(map(_LEVEL, cands))
    # The context's own recount binds too, unless the policy trusts caller counts.
    trusted = b.counts is CountMode.CALLER and list(map(_TOKENS, cands)).count(None) != len(cands)
    floors = {lv.name: (lv.min_relevance, f"$.spec.levels.{lv.name}.min_relevance")
              for lv in policy.levels if lv.min_relevance is not None}
    default = (policy.min_relevance, "$.spec.min_relevance")
    floor = [floors.get(lv, default) for lv in levels] if floors else [default] * len(cands)
    # Could the item be taken at all (not blocked; pinned, or above its floor and not
    # larger than the whole budget alone)? Prefer-parent counts only such children.
    room = b.limit_tokens - b.overhead_tokens(1)
    if floors:
        takeable = [s >= fl[0] and t <= room for s, fl, t in zip(scores, floor, tokens)]
    else:
        low = default[0]
        takeable = [s >= low and t <= room for s, t in zip(scores, tokens)]
    if pinned or blocked:
        takeable = [s not in blocked and (s in pinned or ok) for s, ok in zip(ids, takeable)]
    linked = list(map(_PARENT, cands)).count(None) != len(cands) \
        or any("ancestors" in m for m in map(_META, cands) if m)
    by_id = dict(zip(ids, cands))
    return _Facts(policy, cands, by_id, ids, {s: i for i, s in enumerate(ids)}, scores, levels, tokens,
                  tok.count(b.separator) if b.separator else 0,
                  pinned, tuple(m for m in policy.pinned if m.path not in hit), blocked,
                  floor, takeable, linked, tok, not trusted,
                  {} if policy.sources is None else {c.source_id: _group(policy, by_id, c) for c in cands})


def _ancestors(by_id: Mapping[str, Candidate], c: Candidate) -> list[str]:
    """Nearest first: ``metadata.ancestors`` when it is a list of ids, else the
    ``parent_id`` links through the candidates (stopping at a repeat)."""
    given = c.metadata.get("ancestors")
    if is_sequence(given) and all(isinstance(a, str) for a in given):
        return list(given)
    out: list[str] = []
    node: Candidate | None = c
    while node is not None and node.parent_id is not None and node.parent_id not in out \
            and node.parent_id != c.source_id:
        out.append(node.parent_id)
        node = by_id.get(node.parent_id)
    return out


def _eligible(f: _Facts, c: Candidate) -> bool:
    """Could ``c`` be taken at all (not blocked; pinned, or above its floor and not
    larger than the whole budget)? Prefer-parent counts only such children."""
    return f.takeable[f.pos[c.source_id]]


@dataclass(frozen=True, slots=True)
class _Columns:
    """The allocation's decisions as columns (input position order): what it claims, to
    be checked against the facts. ``indices`` is None when each decision's index is its
    position by construction (a :class:`~engine.allocation.Decisions`)."""

    ids: list[str]
    indices: list[int] | None
    tokens: list[int]
    values: list[int]
    included: list[bool]

    @staticmethod
    def of(decisions: Sequence[Any]) -> _Columns:
        if isinstance(decisions, Decisions):  # read the columns; no decision object is built
            return _Columns(decisions.source_ids, None, list(decisions.tokens), list(decisions.values),
                            list(decisions.included))
        ds = list(decisions)
        return _Columns([d.source_id for d in ds], [d.index for d in ds], [d.tokens for d in ds],
                        [d.value for d in ds], [d.included for d in ds])


@dataclass(frozen=True, slots=True)
class _View:
    facts: _Facts
    inc: frozenset[str]
    alloc: Allocation | None  # None: a bare selection, every minimum is hard
    recount: int | None
    order: tuple[str, ...]  # the included ids in input order
    cols: _Columns | None = None  # the allocation's decisions (None: a bare selection)
    at: tuple[int, ...] = ()  # the included items' input positions, in input order


# --------------------------------------------------------------------------- checkers


def check_accounting(v: _View) -> list[Violation]:
    a, f = v.alloc, v.facts
    if a is None:
        return []
    out = []
    cols = v.cols or _Columns.of(a.decisions)
    ids = cols.ids
    want = f.ids
    if ids != want or (cols.indices is not None and cols.indices != list(range(len(ids)))):
        odd = sorted(set(ids) ^ set(want)) or [x for x, y in zip(ids, want) if x != y][:1]
        out.append(Violation("accounting.decisions", "$", tuple(odd),
                             f"the decisions list {len(ids)} items for {len(want)} candidates or not once "
                             "each in input order, with their input index"))
    order = a.context_order
    n = len(ids)
    if (len(set(order)) != len(order) or any(not 0 <= i < n for i in order)
            or {ids[i] for i in order if 0 <= i < n} != v.inc):
        out.append(Violation("accounting.context_order", "$", v.order,
                             "the context order does not hold each included item exactly once"))
    if ids != want or cols.tokens != f.tok_list:  # else every count is the verifier's
        tokens = f.tokens
        for s, t in zip(ids, cols.tokens):
            if s in tokens and t != tokens[s]:
                out.append(Violation("accounting.tokens", "$.spec.budget", (s,),
                                     f"{s!r} is reported as {t} tokens; it counts "
                                     f"{tokens[s]} rendered with the template"))
    return out


def check_context(v: _View) -> list[Violation]:
    a, f = v.alloc, v.facts
    if a is None:
        return []
    out = []
    b = f.policy.budget
    if all(0 <= i < len(f.cands) for i in a.context_order):
        want = b.separator.join(render_all(b.template, [(c.source_id, c.content, c.level)
                                                        for c in map(f.cands.__getitem__, a.context_order)]))
        if a.context != want:
            at = next((k for k, (x, y) in enumerate(zip(a.context, want)) if x != y),
                      min(len(a.context), len(want)))
            out.append(Violation("context.text", "$.spec.budget.template",
                                 tuple(f.cands[i].source_id for i in a.context_order),
                                 "the context is not the included items rendered with the template and joined "
                                 f"with the separator (first difference at character {at})"))
    if a.context_tokens != v.recount:
        out.append(Violation("context.tokens", "$.spec.budget", (),
                             f"context_tokens is {a.context_tokens}; the context recounts to {v.recount}"))
    return out


def check_budget(v: _View) -> list[Violation]:
    """Items and separators, plus the chat overhead of ``budget.message_overhead`` (per
    request and per included item), within the limit; the recount with that overhead too."""
    f = v.facts
    b = f.policy.budget
    limit = b.limit_tokens
    overhead = b.overhead_tokens(len(v.inc))
    tok = f.tok_list
    total = sum(tok[i] for i in v.at) + f.sep_tokens * max(0, len(v.inc) - 1) + overhead
    plus = f" (with {overhead} of chat overhead)" if b.message_overhead is not None else ""
    out = []
    if total > limit:
        out.append(Violation("budget.over", "$.spec.budget", v.order,
                             f"the included items and separators count {total} tokens{plus} > budget {limit}"))
    if v.recount is not None and f.recount_binds and v.recount + overhead > limit:
        out.append(Violation("budget.context_over", "$.spec.budget", v.order,
                             f"the assembled context counts {v.recount + overhead} tokens{plus} > budget {limit}"))
    if v.alloc is not None and v.alloc.overhead_tokens != overhead:
        out.append(Violation("budget.overhead", "$.spec.budget.message_overhead", (),
                             f"overhead_tokens is {v.alloc.overhead_tokens}; the policy's chat overhead for "
                             f"{len(v.inc)} items is {overhead}"))
    return out


def check_min_relevance(v: _View) -> list[Violation]:
    f = v.facts
    out = []
    ids, scores, floors = f.ids, f.scores, f.floor_list
    for i in v.at:
        floor, path = floors[i]
        if scores[i] < floor and ids[i] not in f.pinned:
            s = ids[i]
            out.append(Violation("min_relevance.below", path, (s,),
                                 f"{s!r} is included with relevance {scores[i]} < {floor}"))
    return out


def _minimum_excused(v: _View, label: str) -> bool:
    """A minimum may go unmet only when the allocation says so, and OPTIMAL (which must
    meet it or prove the rules infeasible) only after a repair dropped an item."""
    a = v.alloc
    if a is None or not any(u.startswith(label + "=") for u in a.unmet):
        return False
    return a.strategy_used is not BudgetStrategy.OPTIMAL or bool(a.repairs)


def check_levels(v: _View) -> list[Violation]:
    f = v.facts
    out: list[Violation] = []
    if not f.policy.levels:
        return out
    by_level: dict[str, list[int]] = {}
    for i in v.at:
        by_level.setdefault(f.levels[i], []).append(i)
    for lv in f.policy.levels:
        at = by_level.get(lv.name, [])
        mine = tuple(f.ids[i] for i in at)
        toks = sum(f.tok_list[i] for i in at)
        for field, got, lo, hi in (("min_items", len(mine), lv.min_items, None),
                                   ("max_items", len(mine), None, lv.max_items),
                                   ("min_tokens", toks, lv.min_tokens, None),
                                   ("max_tokens", toks, None, lv.max_tokens)):
            label = f"levels.{lv.name}.{field}"
            path = f"$.spec.{label}"
            if hi is not None and got > hi:
                out.append(Violation(f"levels.{field}", path, mine, f"{label} is {got} > max {hi}"))
            if lo and got < lo and not _minimum_excused(v, label):
                out.append(Violation(f"levels.{field}", path, mine,
                                     f"{label} is {got} < min {lo}, and the allocation may not leave it unmet"))
            reported = v.alloc is not None and any(u.startswith(label + "=") for u in v.alloc.unmet)
            if reported and (not lo or got >= lo):
                out.append(Violation("levels.unmet_misreported", path, mine,
                                     f"{label} is reported unmet but holds ({got} >= {lo})"))
    return out


def _group(policy: Policy, by_id: Mapping[str, Candidate], c: Candidate) -> object:
    """The source of ``c`` for the per-source caps."""
    rule = policy.sources
    assert rule is not None
    if rule.group_by is GroupBy.PREFIX:
        return c.source_id.partition(rule.separator)[0]
    if rule.group_by is GroupBy.METADATA:
        return value_key(c.metadata.get(rule.field or ""))
    doc = c.metadata.get("doc_id")
    if isinstance(doc, str):
        return doc
    chain = _ancestors(by_id, c)
    return chain[-1] if chain else c.source_id


def check_sources(v: _View) -> list[Violation]:
    f = v.facts
    rule = f.policy.sources
    if rule is None:
        return []
    groups: dict[object, list[str]] = {}
    for s in v.order:
        groups.setdefault(f.group[s], []).append(s)
    out = []
    for members in groups.values():
        n, t = len(members), sum(f.tok_list[f.pos[s]] for s in members)
        name = f"the source of {members[0]!r}"
        if rule.max_items_per_source is not None and n > rule.max_items_per_source:
            out.append(Violation("sources.max_items", "$.spec.sources.max_items_per_source", tuple(members),
                                 f"{name} has {n} items > {rule.max_items_per_source}"))
        if rule.max_tokens_per_source is not None and t > rule.max_tokens_per_source:
            out.append(Violation("sources.max_tokens", "$.spec.sources.max_tokens_per_source", tuple(members),
                                 f"{name} has {t} tokens > {rule.max_tokens_per_source}"))
    return out


def check_pinned(v: _View) -> list[Violation]:
    f, a = v.facts, v.alloc
    out = [Violation("pinned.missing", path, (s,), f"pinned {s!r} is not included")
           for s, path in f.pinned.items() if s not in v.inc]
    out += [Violation("pinned.unmatched", m.path, (), f"required pin {m.label} matches no candidate; "
                      "the allocation should have been infeasible (allocation.pin_missing)")
            for m in f.unmatched if m.required]
    if a is not None:
        recorded = {p.path for p in a.missing_pins}
        optional = {m.path for m in f.unmatched if not m.required}
        out += [Violation("pinned.unrecorded", path, (), f"pin {path} (required: false) matched no "
                          "candidate and the allocation does not record it as missing")
                for path in sorted(optional - recorded)]
        out += [Violation("pinned.misrecorded", path, (), f"the allocation records pin {path} as missing; "
                          "it is not an optional pin that matched nothing")
                for path in sorted(recorded - optional)]
    return out


def check_blocked(v: _View) -> list[Violation]:
    blocked = v.facts.blocked
    return [Violation("blocked.included", blocked[s], (s,), f"blocked {s!r} is included")
            for s in v.order if s in blocked]


def check_hierarchy(v: _View) -> list[Violation]:
    f = v.facts
    if not f.policy.hierarchy.exclusive or not f.linked:  # no item names a parent or ancestors
        return []
    return [Violation("hierarchy.exclusive", "$.spec.hierarchy.exclusive", (a, s),
                      f"{s!r} is included together with its ancestor {a!r}")
            for s in v.order for a in _ancestors(f.by_id, f.by_id[s]) if a in v.inc and a != s]


def check_prefer_parent(v: _View) -> list[Violation]:
    f = v.facts
    ratio = f.policy.hierarchy.prefer_parent_ratio
    if ratio is None or not f.policy.hierarchy.exclusive:
        return []
    chosen: dict[str, list[str]] = {}
    for s in v.order:
        c = f.by_id[s]
        p = c.parent_id
        if p is not None and p in f.by_id and _eligible(f, f.by_id[p]) and _eligible(f, c):
            chosen.setdefault(p, []).append(s)
    n_kids = dict.fromkeys(chosen, 0)
    for c in f.cands:
        p = c.parent_id
        if p is not None and p in n_kids and _eligible(f, c):
            n_kids[p] += 1
    out = []
    for p, kids in chosen.items():
        n = n_kids[p]
        # "at least this fraction of its children": k of n children reach it when k/n >= ratio.
        if len(kids) / n >= ratio:
            out.append(Violation("hierarchy.prefer_parent", "$.spec.hierarchy.prefer_parent_ratio", (p, *kids),
                                 f"{len(kids)} of the {n} children of {p!r} are included (>= {ratio:g}); "
                                 "the parent is preferred"))
    return out


def _parent_links(f: _Facts) -> tuple[list[int | None], list[int]]:
    """Each item's nearest ancestor that is a candidate (``None``: a root, or on a cycle
    of links, whose links are ignored), and the items children first. Peeling: an item
    no remaining item names as parent goes next; what never peels lies on a cycle."""
    cands, pos = f.cands, f.pos
    if not f.linked:  # no links: the peeling below takes every item, last first
        return [None] * len(cands), list(range(len(cands) - 1, -1, -1))
    up: list[int | None] = []
    for c in cands:
        given = c.metadata.get("ancestors") if c.metadata else None
        if given is not None and is_sequence(given) and all(isinstance(a, str) for a in given):
            near = next((a for a in given if a != c.source_id and a in pos), None)
        else:  # the first link of the parent_id chain (_ancestors) is the only one that can be a candidate
            pid = c.parent_id
            near = pid if pid is not None and pid != c.source_id and pid in pos else None
        up.append(None if near is None else pos[near])
    if all(x is None for x in up):  # no links: the peeling below takes every item, last first
        return up, list(range(len(cands) - 1, -1, -1))
    named = [0] * len(cands)
    for p in up:
        if p is not None:
            named[p] += 1
    ready = [i for i in range(len(cands)) if named[i] == 0]
    peeled: list[int] = []
    while ready:
        i = ready.pop()
        peeled.append(i)
        p = up[i]
        if p is not None:
            named[p] -= 1
            if named[p] == 0:
                ready.append(p)
    cycle = set(range(len(cands))) - set(peeled)
    for i in cycle:
        up[i] = None
    # Cycle items are roots now: after everything that hangs below them.
    return up, peeled + sorted(cycle)


def _unit_scores(how: Calibration, raw: Sequence[float], members: Sequence[int], basis: Sequence[int],
                 unit: list[float]) -> None:
    """``unit[i]``: ``raw[i]`` of each of ``members`` on [0, 1] against the scores of
    ``basis`` (a subset of them)."""
    scores = [raw[i] for i in basis]
    if how is Calibration.MAX:
        best = max(scores)
        if best <= 0:
            vals = [0.0] * len(members)
        else:  # min(1.0, raw[i] / best)
            vals = [q if (q := raw[i] / best) < 1.0 else 1.0 for i in members]
        if len(members) == len(unit):  # every item, in input order
            unit[:] = vals
        else:
            for i, q in zip(members, vals):
                unit[i] = q
    elif how is Calibration.MINMAX:
        low, high = min(scores), max(scores)
        for i in members:
            if low == high:
                unit[i] = 1.0 if raw[i] >= high else 0.0
            else:
                unit[i] = max(0.0, min(1.0, (raw[i] - low) / (high - low)))
    elif how is Calibration.ZSCORE:  # exp of the distance to the best in standard deviations
        best, centre = max(scores), math.fsum(scores) / len(scores)
        spread = math.sqrt(math.fsum((x - centre) * (x - centre) for x in scores) / len(scores))
        for i in members:
            if raw[i] >= best:  # an item above the basis's best (not takeable): 1, exp would overflow
                unit[i] = 1.0
            elif spread == 0.0:
                unit[i] = 0.0
            else:
                unit[i] = math.exp((raw[i] - best) / spread)
    else:
        n = len(basis)
        ranked = sorted(basis, key=lambda i: -raw[i])
        done = set(basis)
        start = 0
        while start < n:  # a run of equal scores shares the mean of its ranks
            end = start
            while end + 1 < n and raw[ranked[end + 1]] == raw[ranked[start]]:
                end += 1
            mean_rank = (start + end) / 2 + 1
            for i in ranked[start:end + 1]:
                unit[i] = 1.0 - (mean_rank - 1) / n
            start = end + 1
        ascending = sorted(scores)
        for i in members:
            if i not in done:  # not in the basis: the share above it, equal ones counted half
                above = n - bisect.bisect_right(ascending, raw[i])
                equal = n - above - bisect.bisect_left(ascending, raw[i])
                unit[i] = max(0.0, min(1.0, 1.0 - (above + equal / 2) / n))


def _doc_groups(cands: Sequence[Candidate]) -> dict[tuple[str, str], list[int]]:
    """The items with a string ``metadata.doc_id``, by (document, level), for the objective's document steps."""
    out: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(cands):
        meta = c.metadata
        if meta:
            doc = meta.get("doc_id")
            if isinstance(doc, str):
                out.setdefault((doc, c.level), []).append(i)
    return out


def _expected_values(f: _Facts) -> list[int]:
    """Each item's value (by input index) by the verifier's own reading of ``spec.objective``: calibrate
    (against the group's takeable items, else all of it), inherit (parents first),
    transform, level weight, coverage (children summed in input order), scale, fill."""
    obj, cands = f.policy.objective, f.cands
    n = len(cands)
    scores, levels = f.scores, f.levels
    raw = [s if s > 0 else 0.0 for s in scores]
    takeable = f.takeable
    groups: dict[str, list[int]] = {"": list(range(n))}
    if obj.calibrate_within is CalibrationGroup.LEVEL:
        groups = {}
        for i, lv in enumerate(levels):
            groups.setdefault(lv, []).append(i)
    unit = [0.0] * n
    for members in groups.values():
        basis = [i for i in members if takeable[i]] or members
        if basis:  # no candidates at all: nothing to calibrate
            _unit_scores(obj.calibrate, raw, members, basis, unit)
    if obj.zscore_weight > 0:  # blended with the zscore calibration of the same groups
        spread = [0.0] * n
        for members in groups.values():
            basis = [i for i in members if takeable[i]] or members
            if basis:
                _unit_scores(Calibration.ZSCORE, raw, members, basis, spread)
        mix = obj.zscore_weight
        unit = [u ** (1.0 - mix) * z ** mix for u, z in zip(unit, spread)]
    linked = obj.inherit > 0 or obj.coverage
    up, kids_first = _parent_links(f) if linked else ([None] * n, list(range(n)))
    linked = linked and any(p is not None for p in up)  # no link: inherit and coverage change nothing
    if obj.inherit > 0 and linked:
        for i in reversed(kids_first):
            p = up[i]
            if p is not None:
                unit[i] = (1.0 - obj.inherit) * unit[i] + obj.inherit * unit[p]
    docs = _doc_groups(cands) if obj.document_prior > 0 or obj.document_decay < 1 else {}
    if docs and obj.document_scope.value == "flat":  # leave out items with a parent or a child candidate
        links = up if linked else _parent_links(f)[0]
        tree = {i for i, p in enumerate(links) if p is not None} | {p for p in links if p is not None}
        docs = {k: kept for k, members in docs.items() if (kept := [i for i in members if i not in tree])}
    if obj.document_prior > 0:  # the document's mean (or max) of its takeable items, else all of them
        share = obj.document_prior
        for members in docs.values():
            seen = [unit[i] for i in members if takeable[i]] or [unit[i] for i in members]
            evidence = max(seen) if obj.document_score.value == "max" else sum(seen) / len(seen)
            for i in members:
                unit[i] = (1.0 - share) * unit[i] + share * evidence
    if obj.transform is Transform.RECIPROCAL_RANK:
        place = sorted(range(n), key=lambda i: (-unit[i], -scores[i], i))
        rank = {i: r for r, i in enumerate(place, start=1)}
        w = [1.0 / (obj.k + rank[i]) for i in range(n)]
    elif obj.transform is Transform.POWER:
        w = [u ** obj.exponent for u in unit]
    else:
        w = list(unit)
    factor = dict(obj.level_weights)
    w = [x if x > 0.0 else 0.0 for x in w]  # max(0.0, x)
    if factor:
        w = [x * factor[lv] if lv in factor else x for x, lv in zip(w, levels)]
    if obj.document_decay < 1:  # r-th of its document: takeable first, more weight, more relevant, earlier
        for members in docs.values():
            ranked = sorted(members, key=lambda i: (not takeable[i], -w[i], -scores[i], i))
            for r, i in enumerate(ranked):
                w[i] *= obj.document_decay ** r
    if obj.position_decay < 1 or obj.lead_weight > 0:  # reading order: r-th among siblings, else in its document
        near = up if linked else _parent_links(f)[0]
        rows: dict[Any, list[int]] = {}
        for i, c in enumerate(cands):
            if near[i] is not None:
                rows.setdefault(("parent", near[i]), []).append(i)
            elif c.metadata and isinstance(c.metadata.get("doc_id"), str):
                rows.setdefault(("doc", c.metadata["doc_id"], c.level), []).append(i)
        for members in rows.values():
            for r, i in enumerate(members):
                w[i] *= (obj.position_decay ** r) * ((1.0 + obj.lead_weight) if r == 0 else 1.0)
    if obj.coverage and linked:
        kids: dict[int, list[int]] = {}
        for i, p in enumerate(up):
            if p is not None:
                kids.setdefault(p, []).append(i)
        for i in kids_first:
            if i in kids:
                w[i] = sum(w[j] for j in kids[i])
    everyone = all(takeable)
    top = (max(w) if n else 0.0) if everyone else max((x for x, ok in zip(w, takeable) if ok), default=0.0)
    if top <= 0:  # nothing takeable has weight: 0, or 1 with fill (every takeable item is worth at least 1)
        least = 1 if obj.fill else 0
        return [least if ok else 0 for ok in takeable]
    if obj.fill:
        if everyone:
            return [x if (x := int(round(1_000_000 * w_i / top))) > 1 else 1 for w_i in w]
        return [(x if (x := int(round(1_000_000 * w_i / top))) > 1 else 1) if ok else 0
                for w_i, ok in zip(w, takeable)]
    return [int(round(1_000_000 * w_i / top)) if ok else 0 for w_i, ok in zip(w, takeable)]


def check_objective(v: _View) -> list[Violation]:
    """Each chosen item that may be taken is valued as the objective values it, and the
    selection's objective is the sum of its chosen items' values (repairs included: the
    objective is the strategy's, before a repair dropped an item). A chosen item that
    may not be taken is the business of its own rule's checker."""
    a, f = v.alloc, v.facts
    if a is None:
        return []
    cols = v.cols or _Columns.of(a.decisions)
    ids, values = cols.ids, cols.values
    chosen = sorted(a.selection.chosen)
    if not all(0 <= i < len(ids) for i in chosen):
        return []  # accounting's business
    want = _expected_values(f)
    n, fids, takeable = len(f.cands), f.ids, f.takeable
    out = [Violation("objective.value", "$.spec.objective", (ids[i],),
                     f"{ids[i]!r} is valued {values[i]}; the objective gives it {want[i]}")
           for i in chosen
           if i < n and values[i] != want[i] and ids[i] == fids[i] and takeable[i]]
    total = sum(values[i] for i in chosen)
    if a.selection.objective != total:
        out.append(Violation("objective.total", "$.spec.objective", tuple(ids[i] for i in chosen),
                             f"the selection reports objective {a.selection.objective}; its items' values add "
                             f"up to {total}"))
    return out


def check_duplicates(v: _View) -> list[Violation]:
    """No two included items are near-duplicates, recomputed from the texts: shared
    shingles counted pair by pair through a map of the included items' shingles (not the
    engine's prefix-filtered index), exempt when both are pinned or one is the other's
    ancestor."""
    f = v.facts
    rule = f.policy.duplicates
    if rule is None:
        return []
    sets = {s: shingle_set(f.by_id[s].content, rule.shingle) for s in v.order}
    seen: dict[str, list[str]] = {}
    shared: dict[tuple[str, str], int] = {}
    for s in v.order:
        for g in sets[s]:
            earlier = seen.setdefault(g, [])
            for o in earlier:
                shared[(o, s)] = shared.get((o, s), 0) + 1
            earlier.append(s)
    out = []
    for (a, b), common in shared.items():
        sim = common / (len(sets[a]) + len(sets[b]) - common)
        if sim < rule.threshold or (a in f.pinned and b in f.pinned):
            continue
        if a in _ancestors(f.by_id, f.by_id[b]) or b in _ancestors(f.by_id, f.by_id[a]):
            continue
        out.append(Violation("duplicates.near_duplicate", "$.spec.duplicates", (a, b),
                             f"{a!r} and {b!r} are both included and are near-duplicates "
                             f"(jaccard {sim:.3f} >= {rule.threshold:g})"))
    return out


CHECKERS: dict[str, Callable[[_View], list[Violation]]] = {
    "accounting": check_accounting,
    "context": check_context,
    "budget": check_budget,
    "min_relevance": check_min_relevance,
    "levels": check_levels,
    "sources": check_sources,
    "pinned": check_pinned,
    "blocked": check_blocked,
    "hierarchy": check_hierarchy,
    "prefer_parent": check_prefer_parent,
    "objective": check_objective,
    "duplicates": check_duplicates,
}


class Verifier:
    """The facts of one (policy, candidates) pair, to check several allocations or
    selections against (the brute-force oracle checks thousands)."""

    def __init__(self, policy: Policy, cands: Sequence[Candidate], *, tokenizer: Tokenizer | None = None) -> None:
        self.facts = _facts(policy, cands, tokenizer or policy_tokenizer(policy))

    def _order(self, inc: frozenset[str]) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """The included ids in input order, and their input positions."""
        f = self.facts
        if len(inc) * 8 < len(f.cands):  # few included: sort them by input index
            at = tuple(sorted(map(f.pos.__getitem__, inc)))
        else:
            at = tuple(i for i, s in enumerate(f.ids) if s in inc)
        ids = f.ids
        return tuple(ids[i] for i in at), at

    def _run(self, view: _View, first: bool = False) -> tuple[Violation, ...]:
        out: list[Violation] = []
        for name in list(CHECKERS):
            out += CHECKERS[name](view)
            if first and out:
                break
        return tuple(out)

    def allocation(self, alloc: Allocation) -> tuple[Violation, ...]:
        cols = _Columns.of(alloc.decisions)
        inc = frozenset(itertools.compress(cols.ids, cols.included))
        unknown = sorted(inc - self.facts.by_id.keys())
        if unknown:
            return (Violation("accounting.decisions", "$", tuple(unknown),
                              "the allocation includes items that are not candidates"),)
        order, at = self._order(inc)
        return self._run(_View(self.facts, inc, alloc, self.facts.tok.count(alloc.context), order, cols, at))

    def selection(self, included: Iterable[str], *, first: bool = False) -> tuple[Violation, ...]:
        """Violations of a bare set of included ids (every minimum hard, as OPTIMAL);
        ``first``: stop at the first checker that finds one (enough to reject)."""
        inc = frozenset(included)
        if not inc <= self.facts.by_id.keys():
            raise ValueError(f"not candidates: {sorted(inc - self.facts.by_id.keys())}")
        order, at = self._order(inc)
        return self._run(_View(self.facts, inc, None, None, order, None, at), first)


def verify(policy: Policy, cands: Sequence[Candidate], alloc: Allocation, *,
           tokenizer: Tokenizer | None = None) -> tuple[Violation, ...]:
    """Every violation of ``policy`` by ``alloc`` (empty: valid). ``tokenizer`` is an
    already-resolved counter for the policy's encoding (resolved from it when None)."""
    return Verifier(policy, cands, tokenizer=tokenizer).allocation(alloc)
