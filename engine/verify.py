"""An independent checker: does an Allocation obey every rule of its Policy?

What goes in: the Policy, the candidates and the Allocation. What comes out: a list of
violations as sentences; empty means the allocation is valid. A non-empty list is always
a bug in ctxbudget (the façade raises ``VerificationError``).

Independence is the point: this module never reads the Problem, the model or the
strategies' bookkeeping. It recomputes token counts, group keys, thresholds and
ancestry directly from the policy and the candidates, in its own simple loops, so a bug
in ``reduce`` or ``compile`` is caught here rather than copied.

``CHECKERS`` is keyed by the rule names of the policy schema's ``spec`` (plus
``accounting``); a test checks that every rule of the schema has a checker.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .allocation import Allocation
from .candidates import Candidate
from .policy import GroupBy, Policy
from .tokens import get_tokenizer


@dataclass(frozen=True, slots=True)
class _View:
    policy: Policy
    cands: Sequence[Candidate]
    alloc: Allocation
    inc: frozenset[str]
    tokens: dict[str, int]


def _item_tokens(policy: Policy, cands: Sequence[Candidate]) -> dict[str, int]:
    tok = get_tokenizer(policy.tokenizer)
    tpl = policy.budget.template
    out = {}
    for c in cands:
        if tpl == "{content}":  # nothing but the content: no rendering to count
            out[c.source_id] = c.token_count if c.token_count is not None else tok.count(c.content)
            continue
        text = tpl.replace("{source_id}", c.source_id).replace("{level}", c.level)
        if c.token_count is None:
            out[c.source_id] = tok.count(text.replace("{content}", c.content))
        else:
            out[c.source_id] = c.token_count + tok.count(text.replace("{content}", ""))
    return out


def _matches(m: object, c: Candidate) -> bool:
    kind = getattr(m, "kind")
    if kind == "id":
        return c.source_id == getattr(m, "id")
    if kind == "glob":
        return fnmatch.fnmatchcase(c.source_id, getattr(m, "glob"))
    want = dict(getattr(m, "metadata"))
    return all(k in c.metadata and type(c.metadata[k]) is type(v) and c.metadata[k] == v
               for k, v in want.items())


def check_accounting(v: _View) -> list[str]:
    ids = [d.source_id for d in v.alloc.decisions]
    out = []
    if ids != [c.source_id for c in v.cands]:
        out.append("decisions do not list every candidate exactly once, in input order")
    ctx = [v.alloc.decisions[i].source_id for i in v.alloc.context_order]
    if sorted(ctx) != sorted(v.inc) or len(ctx) != len(set(ctx)):
        out.append("the context order does not hold exactly the included items")
    return out


def check_budget(v: _View) -> list[str]:
    b = v.policy.budget
    sep = get_tokenizer(v.policy.tokenizer).count(b.separator) if b.separator else 0
    total = sum(v.tokens[s] for s in v.inc) + sep * max(0, len(v.inc) - 1)
    out = []
    if total > b.limit_tokens:
        out.append(f"items and separators sum to {total} tokens > budget {b.limit_tokens}")
    real = get_tokenizer(v.policy.tokenizer).count(v.alloc.context)
    if real > b.limit_tokens and all(c.token_count is None for c in v.cands):
        out.append(f"assembled context counts {real} tokens > budget {b.limit_tokens}")
    if real != v.alloc.context_tokens:
        out.append(f"context_tokens {v.alloc.context_tokens} != recount {real}")
    return out


def check_min_relevance(v: _View) -> list[str]:
    out = []
    for c in v.cands:
        if c.source_id not in v.inc or any(_matches(m, c) for m in v.policy.pinned):
            continue
        lv = v.policy.level(c.level)
        floor = lv.min_relevance if lv is not None and lv.min_relevance is not None else v.policy.min_relevance
        if c.relevance_score < floor:
            out.append(f"{c.source_id!r} included with relevance {c.relevance_score} < {floor}")
    return out


def check_pinned(v: _View) -> list[str]:
    return [f"pinned {c.source_id!r} is not included" for c in v.cands
            if any(_matches(m, c) for m in v.policy.pinned) and c.source_id not in v.inc]


def check_blocked(v: _View) -> list[str]:
    return [f"blocked {c.source_id!r} is included" for c in v.cands
            if c.source_id in v.inc and any(_matches(m, c) for m in v.policy.blocked)]


def _within(label: str, got: int, lo: int | None, hi: int | None, unmet: Sequence[str]) -> list[str]:
    out = []
    if hi is not None and got > hi:
        out.append(f"{label} is {got} > max {hi}")
    if lo and got < lo and not any(u.startswith(label) for u in unmet):
        out.append(f"{label} is {got} < min {lo} and the allocation does not report it unmet")
    return out


def check_levels(v: _View) -> list[str]:
    out = []
    for lv in v.policy.levels:
        mine = [c for c in v.cands if c.level == lv.name and c.source_id in v.inc]
        toks = sum(v.tokens[c.source_id] for c in mine)
        base = f"levels.{lv.name}"
        out += _within(f"{base}.min_items", len(mine), lv.min_items, None, v.alloc.unmet)
        out += _within(f"{base}.max_items", len(mine), None, lv.max_items, v.alloc.unmet)
        out += _within(f"{base}.min_tokens", toks, lv.min_tokens, None, v.alloc.unmet)
        out += _within(f"{base}.max_tokens", toks, None, lv.max_tokens, v.alloc.unmet)
    return out


def _root(c: Candidate, by_id: dict[str, Candidate]) -> str:
    anc = c.metadata.get("ancestors")
    if isinstance(anc, list) and anc:
        return str(anc[-1])
    node = c
    hops = 0
    while node.parent_id is not None and hops < len(by_id):
        if node.parent_id not in by_id:
            return node.parent_id
        node = by_id[node.parent_id]
        hops += 1
    return node.source_id


def check_sources(v: _View) -> list[str]:
    rule = v.policy.sources
    if rule is None:
        return []
    by_id = {c.source_id: c for c in v.cands}
    counts: dict[str, list[int]] = {}
    for c in v.cands:
        if c.source_id not in v.inc:
            continue
        if rule.group_by is GroupBy.PREFIX:
            key = c.source_id.partition(rule.separator)[0]
        elif rule.group_by is GroupBy.METADATA:
            raw = c.metadata.get(rule.field or "")
            key = "<missing>" if raw is None else str(raw)
        else:
            key = c.doc_id or _root(c, by_id)
        n_t = counts.setdefault(key, [0, 0])
        n_t[0] += 1
        n_t[1] += v.tokens[c.source_id]
    out = []
    for key, (n, t) in sorted(counts.items()):
        if rule.max_items_per_source is not None and n > rule.max_items_per_source:
            out.append(f"source {key!r} has {n} items > {rule.max_items_per_source}")
        if rule.max_tokens_per_source is not None and t > rule.max_tokens_per_source:
            out.append(f"source {key!r} has {t} tokens > {rule.max_tokens_per_source}")
    return out


def check_hierarchy(v: _View) -> list[str]:
    if not v.policy.hierarchy.exclusive:
        return []
    by_id = {c.source_id: c for c in v.cands}
    out = []
    for s in sorted(v.inc):
        c = by_id[s]
        given = c.metadata.get("ancestors")
        chain: list[str] = []
        if isinstance(given, list):
            chain = [a for a in given if isinstance(a, str)]
        else:
            p = c.parent_id
            while p is not None and p not in chain and p != s:
                chain.append(p)
                p = by_id[p].parent_id if p in by_id else None
        out += [f"{s!r} is included together with its ancestor {a!r}" for a in chain if a in v.inc]
    return out


CHECKERS: dict[str, Callable[[_View], list[str]]] = {
    "accounting": check_accounting,
    "budget": check_budget,
    "min_relevance": check_min_relevance,
    "levels": check_levels,
    "sources": check_sources,
    "pinned": check_pinned,
    "blocked": check_blocked,
    "hierarchy": check_hierarchy,
}


def verify(policy: Policy, cands: Sequence[Candidate], alloc: Allocation) -> list[str]:
    """Every violation of ``policy`` by ``alloc``, as sentences (empty: valid)."""
    inc = frozenset(d.source_id for d in alloc.decisions if d.included)
    view = _View(policy, cands, alloc, inc, _item_tokens(policy, cands))
    out: list[str] = []
    for name in CHECKERS:
        out += CHECKERS[name](view)
    return out
