"""Deterministic synthetic benchmark instances (seeded NumPy; same arguments, same bytes).

What goes in: a size ``n``, a value/weight correlation ``kind`` and whether the policy
carries every rule. What comes out: an :class:`Instance` holding the seed-API
``BudgetItem`` list, the ``Policy`` and the raw arrays the baselines read.

Items (Pisinger's classes, "Where are the hard knapsack problems?", 2005, rescaled so
relevance stays in [0, 1] and tokens in 20..400):

* ``uncorrelated`` — relevance ~ U(0, 1), independent of tokens;
* ``weak``         — relevance = tokens/400 ± U(0.1), clipped to [0, 1];
* ``strong``       — relevance = (tokens + 40) / 440: value = weight + constant, the
  class that makes branch-and-bound knapsack solvers stall;
* ``mixed``        — each item draws one of the three classes.

The budget is a seeded fraction in [10 %, 30 %] of all tokens.

The "all rules" policy (``rules=True``) sets, satisfiably: 4 levels with min/max items
and tokens, per-source caps (``group_by: prefix``), an exclusive 3-level hierarchy
(DOCUMENT → SECTION → PARAGRAPH, 16 nodes per document) with ``prefer_parent_ratio``,
two pins, one blocked source and a ``min_relevance`` floor. SENTENCE items are
free-standing snippets (no parent), ~10 % of the items.

Content: short (the id) by default, so timings measure the engine and not the recount
of a multi-megabyte context; ``content="text"`` gives every item ~4 characters of
English-like words per token (the memory case).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import BudgetItem, BudgetStrategy
from engine.policy import GroupBy, Hierarchy, LevelRule, Matcher, Policy, SourceRule

KINDS = ("uncorrelated", "weak", "strong")
MIN_TOKENS, MAX_TOKENS = 20, 400
#: Nodes per document in the "all rules" hierarchy: 1 document, 3 sections x 4 paragraphs.
SECTIONS_PER_DOC, PARAGRAPHS_PER_SECTION = 3, 4
DOC_NODES = 1 + SECTIONS_PER_DOC * (1 + PARAGRAPHS_PER_SECTION)
#: Words the "text" content is drawn from (English-like, so BPE behaves as on real text).
WORDS = (
    "the of and to in is for that on with as by at from this be are or it an was which "
    "refund policy account billing customer support request invoice payment subscription "
    "data export security password rate limit error retry timeout service region storage "
    "within days after before must may should will can not only each every per month year "
    "plan team user admin owner access token key secret audit log record version update "
    "2024 2025 30 90 100 500 1,000 $49 5.2 v1 API HTTP JSON CSV GDPR SLA 429 404"
).split()


@dataclass(frozen=True)
class Instance:
    """One benchmark input: what the engine is given and what the baselines read."""

    name: str
    n: int
    kind: str
    rules: bool
    items: tuple[BudgetItem, ...]
    policy: Policy
    budget: int
    relevance: np.ndarray
    tokens: np.ndarray


def seed_of(*parts: object) -> int:
    """A stable 32-bit seed from the instance parameters (``hash()`` is salted per run)."""
    return zlib.crc32(repr(parts).encode())


def relevance_for(kind: str, tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Relevance in [0, 1] for ``tokens`` under the correlation ``kind``."""
    t = tokens.astype(np.float64)
    if kind == "uncorrelated":
        return rng.uniform(0.0, 1.0, t.size)
    if kind == "weak":
        return np.clip(t / MAX_TOKENS + rng.uniform(-0.1, 0.1, t.size), 0.0, 1.0)
    if kind == "strong":
        return (t + 40.0) / (MAX_TOKENS + 40.0)
    if kind == "mixed":
        pick = rng.integers(0, 3, t.size)
        parts = [relevance_for(k, tokens, rng) for k in KINDS]
        return np.choose(pick, parts)
    raise ValueError(f"unknown kind {kind!r}; use one of {KINDS + ('mixed',)}")


def corpus_words() -> tuple[np.ndarray, np.ndarray]:
    """Words of the repository's example corpus and their frequencies (a unigram model
    of real support-article text); :data:`WORDS`, uniformly, when the corpus is absent."""
    folder = Path(__file__).resolve().parent.parent / "examples" / "corpus"
    counts: dict[str, int] = {}
    for path in sorted(folder.glob("*")) if folder.is_dir() else ():
        if path.suffix in (".md", ".txt"):
            for word in path.read_text(encoding="utf-8").split():
                counts[word] = counts.get(word, 0) + 1
    if len(counts) < 100:
        return np.array(WORDS), np.full(len(WORDS), 1.0 / len(WORDS))
    words = sorted(counts)
    freq = np.array([counts[w] for w in words], dtype=np.float64)
    return np.array(words), freq / freq.sum()


def word_text(n_words: int, rng: np.random.Generator) -> str:
    """``n_words`` words drawn from :func:`corpus_words`, joined by spaces."""
    words, probs = _WORDS_CACHE or _load_words()
    return " ".join(rng.choice(words, size=n_words, p=probs).tolist())


_WORDS_CACHE: list[np.ndarray] = []


def _load_words() -> list[np.ndarray]:
    _WORDS_CACHE.extend(corpus_words())
    return _WORDS_CACHE


def text_content(tokens: np.ndarray, rng: np.random.Generator) -> list[str]:
    """English-like text of roughly 4 characters per token for each item: slices of one
    text of up to 400,000 corpus words, at advancing offsets (fast at n = 100,000)."""
    pool = word_text(min(400_000, int(tokens.sum()) + 64), rng)
    out, pos = [], 0
    limit = max(1, len(pool) - 4 * MAX_TOKENS)
    for t in tokens.tolist():
        size = 4 * int(t)
        out.append(pool[pos:pos + size])
        pos = (pos + size) % limit
    return out


def budget_only(n: int, kind: str, *, content: str = "id", separator: str = "") -> Instance:
    """A single-budget instance (PARAGRAPH items, no parents, default policy)."""
    rng = np.random.default_rng(seed_of("budget", n, kind))
    tokens = rng.integers(MIN_TOKENS, MAX_TOKENS + 1, n)
    rel = relevance_for(kind, tokens, rng)
    budget = int(rng.uniform(0.10, 0.30) * int(tokens.sum()))
    ids = [f"c{i:06d}" for i in range(n)]
    texts = text_content(tokens, rng) if content == "text" else ids
    items = tuple(BudgetItem(texts[i], float(rel[i]), int(tokens[i]), ids[i], "PARAGRAPH", {})
                  for i in range(n))
    policy = Policy.default(budget, separator=separator)
    return Instance(f"budget/{kind}/n={n}", n, kind, False, items, policy, budget, rel, tokens)


def all_rules(n: int, kind: str = "mixed") -> Instance:
    """An instance whose policy sets every rule kind (see the module docstring)."""
    rng = np.random.default_rng(seed_of("rules", n, kind))
    n_sent = max(2, n // 10)
    n_tree = n - n_sent
    n_sources = max(4, n // 40)
    ids: list[str] = []
    levels: list[str] = []
    parents: list[str | None] = []
    doc = 0
    while len(ids) < n_tree:
        src = int(rng.integers(0, n_sources))
        d_id = f"s{src:04d}#d{doc}"
        nodes: list[tuple[str, str, str | None]] = [(d_id, "DOCUMENT", None)]
        for s in range(SECTIONS_PER_DOC):
            s_id = f"{d_id}.s{s}"
            nodes.append((s_id, "SECTION", d_id))
            nodes += [(f"{s_id}.p{p}", "PARAGRAPH", s_id) for p in range(PARAGRAPHS_PER_SECTION)]
        for sid, lvl, par in nodes[: n_tree - len(ids)]:
            ids.append(sid)
            levels.append(lvl)
            parents.append(par)
        doc += 1
    for q in range(n_sent):
        src = int(rng.integers(0, n_sources))
        ids.append(f"s{src:04d}#q{q}")
        levels.append("SENTENCE")
        parents.append(None)
    tokens = rng.integers(MIN_TOKENS, MAX_TOKENS + 1, n)
    rel = relevance_for(kind, tokens, rng)
    total = int(tokens.sum())
    budget = int(rng.uniform(0.10, 0.30) * total)
    items = tuple(
        BudgetItem(ids[i], float(rel[i]), int(tokens[i]), ids[i], levels[i],
                   {"parent_id": parents[i]} if parents[i] else {})
        for i in range(n)
    )
    # Quotas chosen so that the minimums are small next to the budget (satisfiable with
    # room to optimise) and the maximums bind for some levels.
    lv = (
        LevelRule("DOCUMENT", max_items=max(1, n // 100), max_tokens=budget // 5),
        LevelRule("PARAGRAPH", min_tokens=budget // 20),
        LevelRule("SECTION", min_items=2, max_items=max(2, n // 25)),
        LevelRule("SENTENCE", min_items=1, max_items=max(2, n_sent // 4), max_tokens=budget // 4),
    )
    per_source_items = max(6, int(0.3 * n / n_sources))
    per_source_tokens = max(2 * MAX_TOKENS, int(1.5 * budget / n_sources))
    # Two sentence pins from two different sources (each fits any source cap).
    pin_ids, seen_src = [], set()
    for i in range(n_tree, n):
        src = ids[i].split("#", 1)[0]
        if src not in seen_src and src != "s0003":
            pin_ids.append(ids[i])
            seen_src.add(src)
        if len(pin_ids) == 2:
            break
    pins = tuple(Matcher("id", p, None, (), None, f"$.spec.pinned[{k}]") for k, p in enumerate(pin_ids))
    blocked = (Matcher("glob", None, "s0003#*", (), "bench: one blocked source", "$.spec.blocked[0]"),)
    policy = Policy.default(
        budget,
        separator="",
        min_relevance=0.02,
        levels=lv,
        sources=SourceRule(GroupBy.PREFIX, "#", None, per_source_items, per_source_tokens),
        hierarchy=Hierarchy(exclusive=True, prefer_parent_ratio=0.75),
        pinned=pins,
        blocked=blocked,
        strategy=BudgetStrategy.OPTIMAL,
    )
    return Instance(f"rules/{kind}/n={n}", n, kind, True, items, policy, budget, rel, tokens)
