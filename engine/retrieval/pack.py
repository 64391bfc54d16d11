"""The main job: documents and a question in, the best context that fits the policy out.

``pack(policy, query, paths)``: index the files (Markdown, reStructuredText, HTML or
plain text, each also gzip-compressed; :mod:`engine.retrieval.build`) into the
hierarchical index, or load a prebuilt one (``index=``, :mod:`engine.retrieval.store`),
search them (``scorer``: ``bm25``, or ``dense``/``hybrid`` with the ``ctxbudget[dense]``
extra or an ``embedder`` of the caller's; a prebuilt index, with the embeddings it was
built with: ``index build --scorer dense``),
turn the results into candidate rows (:mod:`engine.retrieval.convert`, the conversion the seed's
``create_budget_items_from_search`` uses too), add the nodes the policy pins that search
did not return, and decide under the policy. Token counts are left to the engine, which
counts every item rendered with the policy's template. The hierarchy rule is on by
default (``hierarchy.exclusive: true``), so a section and its own paragraphs are never
both sent; a policy that turns it off gets a note saying so. A result whose text is far
longer than the whole budget could hold (more than :data:`OVERSIZE_CHARS_PER_TOKEN`
characters per budget token: a whole-document section under a 1,500-token budget) is not
offered: it could only be excluded as too large, after its tokens were counted (on the
Node.js API docs 17 of the 100 results of "How do I read a file line by line?", 0.6 MB of
text); the next result takes its place, and the record's ``retrieval.oversized`` says how
many were set aside.

An empty or weak result is never silent: when no retrieved item is in the context (no
node holds a term of the query, the best score is below the ``min_relevance`` that
applies to it, or nothing that passed fitted), :class:`Retrieval` carries a warning that
names the best score and the threshold; it is in the audit record's ``retrieval`` part
and, from the CLI, on stderr. ``require_context=True`` (``--require-context``) turns it
into :class:`~engine.errors.NoContextError` (exit 8), after the decision is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..allocation import Allocation
from ..audit.request import CorpusFile, Request
from ..decide import Decided, decide
from ..errors import CandidateError, NoContextError
from ..policy import Policy
from .build import Built, build_in_memory
from .convert import pinned_rows, search_rows
from .corpus import Skipped, walk
from .formats import SUFFIX_FORMATS
from .search import Embedder, Scorer, Searched, SemanticSearch, _parse_scorer

if TYPE_CHECKING:  # the log (and its signing stack) is imported by whoever opens one
    from ..audit.log import AuditLog

TEXT_SUFFIXES = tuple(SUFFIX_FORMATS)
#: Search results the decision chooses from, unless the caller says (``top_k``): one per
#: :data:`TOKENS_PER_RESULT` tokens of the budget, at least :data:`MIN_TOP_K` and at most
#: :data:`MAX_TOP_K`. A larger budget holds more items, so it needs more to choose from:
#: on technical documentation the answer's own passages often rank 50-100, under the
#: large sections that share its words (bench/pack_quality.py at 1,500 tokens, i.e. 100
#: results: Node.js set 22 -> 25 of 31, pip held-out set 29 -> 30 of 30), while small
#: budgets keep the 50 they had (HotpotQA at 256 and 512 tokens unchanged).
MIN_TOP_K, MAX_TOP_K, TOKENS_PER_RESULT = 50, 200, 15


#: A search result whose text has more than this many characters per token of the whole
#: budget is not offered to the decision (it could only be excluded as too large: a token
#: of prose or code is about 4 characters): its place among the ``top_k`` goes to the next
#: result that could fit, and its tokens are never counted. How many were set aside is
#: in the record (``retrieval.oversized``).
OVERSIZE_CHARS_PER_TOKEN = 8
#: Results searched per result kept when some may be set aside as oversized.
OVERSIZE_FETCH = 2


def _limit(policy: Policy) -> int | None:
    try:
        return policy.budget.limit_tokens
    except ValueError:
        return None


def _set_aside_oversized(searched: Searched, index: Any, top_k: int, limit: int | None) -> tuple[Searched, int]:
    """The first ``top_k`` results whose text could fit the budget ``limit`` (see
    :data:`OVERSIZE_CHARS_PER_TOKEN`), and how many ranked above the last of them were
    set aside."""
    if limit is None:
        return searched, 0
    most = OVERSIZE_CHARS_PER_TOKEN * limit
    nodes = index.nodes
    kept: list[Any] = []
    aside = 0
    for r in searched.results:
        if len(kept) == top_k:
            break
        if len(nodes[r.node_id].content) > most:
            aside += 1
        else:
            kept.append(r)
    return replace(searched, results=kept), aside


def default_top_k(policy: Policy) -> int:
    """The number of search results ``pack`` considers for ``policy`` (see :data:`MIN_TOP_K`)."""
    try:
        limit = policy.budget.limit_tokens
    except ValueError:
        return MIN_TOP_K
    return max(MIN_TOP_K, min(MAX_TOP_K, limit // TOKENS_PER_RESULT))


@dataclass(frozen=True, slots=True)
class Retrieval:
    """How the search of one ``pack`` went.

    ``matched``: nodes that scored above 0; ``results``: those kept (at most ``top_k``);
    ``best_score`` and ``best_source_id``: the best of them (0.0 and ``None`` when none);
    ``threshold``: the ``min_relevance`` that applies to the best one (its level's, else
    the policy's); ``eligible``: results that reach their threshold; ``included``:
    retrieved items in the context (``None`` when the decision was infeasible);
    ``unknown_words``: the query's words that no node holds (shown on stderr, not
    recorded: they are the user's words, and the record keeps the query only as the
    policy allows); ``warning``: why no retrieved item is in the context, or ``None``;
    ``threshold_path``: where the threshold is set in the policy."""

    scorer: str
    top_k: int
    matched: int
    results: int
    best_score: float
    best_source_id: str | None
    threshold: float
    eligible: int
    included: int | None
    unknown_words: tuple[str, ...]
    warning: str | None
    threshold_path: str = "$.spec.min_relevance"
    #: Results set aside, unoffered, as longer than the whole budget could hold
    #: (:data:`OVERSIZE_CHARS_PER_TOKEN`).
    oversized: int = 0

    def record_part(self) -> dict[str, Any]:
        """The audit record's ``retrieval`` part (schemas/audit.schema.json); ``oversized``
        only when some result was set aside."""
        return {"scorer": self.scorer, "top_k": self.top_k, "matched": self.matched, "results": self.results,
                "best_score": self.best_score, "best_source_id": self.best_source_id,
                "threshold": self.threshold, "eligible": self.eligible, "included": self.included,
                "warning": self.warning, **({"oversized": self.oversized} if self.oversized else {})}


@dataclass(frozen=True, slots=True)
class Packed:
    decided: Decided
    files: tuple[str, ...]
    results: int
    notes: tuple[str, ...]
    seconds: float
    #: Pinned nodes fetched from the index because search did not return them.
    fetched_pins: tuple[str, ...] = ()
    #: How the search went, with the warning when no retrieved item is in the context.
    retrieval: Retrieval | None = None
    #: Files not indexed, each with its reason.
    skipped: tuple[Skipped, ...] = ()


def collect_files(paths: Sequence[str | Path]) -> list[Path]:
    """Files of a supported format named, or found (sorted) under the folders named."""
    return [f.file for f in walk(paths)[0]]


def _threshold(policy: Policy, level: str | None) -> tuple[float, str]:
    """The ``min_relevance`` an item of ``level`` must reach, and its policy path."""
    rule = policy.level(level) if level is not None else None
    if rule is not None and rule.min_relevance is not None:
        return rule.min_relevance, f"$.spec.levels.{level}.min_relevance"
    return policy.min_relevance, "$.spec.min_relevance"


def assess(policy: Policy, searched: Searched, *, scorer: str, top_k: int,
           included: int | None, unknown_words: Sequence[str] = (), oversized: int = 0) -> Retrieval:
    """:class:`Retrieval` of a search under ``policy``, with its warning: none when some
    retrieved item is in the context (``included`` > 0); ``included`` ``None`` (the
    decision was infeasible) warns only when nothing could have been sent."""
    results = searched.results
    best = results[0] if results else None
    threshold, threshold_path = _threshold(policy, best.metadata.get("level") if best is not None else None)
    eligible = sum(1 for r in results if r.relevance_score >= _threshold(policy, r.metadata.get("level"))[0])
    warning = None
    if best is None and oversized:
        warning = (f"no retrieved context: the {oversized} best search result(s) are longer than the budget could "
                   f"hold (more than {OVERSIZE_CHARS_PER_TOKEN} characters per token of it) and no shorter node "
                   f"matched (min_relevance {threshold:g}); raise max_tokens, or ask for something more specific")
    elif best is None:
        warning = ("no retrieved context: no indexed node holds any term of the query (best score 0, "
                   f"min_relevance {threshold:g}); ask with words the documents use")
    elif eligible == 0:
        warning = (f"weak retrieval: the best search score {best.relevance_score:.4f} ({best.node_id}) is below "
                   f"min_relevance {threshold:g}, so no retrieved item is in the context; ask with words the "
                   "documents use, or lower min_relevance in the policy")
    elif included == 0:
        warning = (f"no retrieved context: {eligible} search result(s) reach min_relevance (best score "
                   f"{best.relevance_score:.4f}, min_relevance {threshold:g}) but none is in the context; "
                   "see the excluded items' reasons (budget, caps, blocks)")
    return Retrieval(scorer, top_k, searched.matched, len(results),
                     best.relevance_score if best is not None else 0.0,
                     best.node_id if best is not None else None, threshold, eligible, included,
                     tuple(unknown_words), warning, threshold_path, oversized)


@dataclass(frozen=True, slots=True)
class Indexed:
    """A corpus indexed for ``pack``: the index (in memory, or a stored one), the files
    indexed, what the audit record says of every file read, the files skipped with their
    reasons, and for a stored index the maker of its searcher (its BM25 state loaded).
    Build it once (:func:`index_corpus`, or :func:`indexed_of` a prebuilt index) to ask
    many questions (:func:`pack_indexed`)."""

    index: Any  # HierarchicalIndex, or a stored index (engine.retrieval.store.StoredIndex)
    files: tuple[str, ...]
    corpus: tuple[CorpusFile, ...]
    seconds: float
    skipped: tuple[Skipped, ...] = ()
    stored_searcher: Callable[..., SemanticSearch] | None = None

    def searcher(self, scorer: str | Scorer = "bm25", embedder: Embedder | None = None) -> SemanticSearch:
        """The search over :attr:`index`: a new :class:`SemanticSearch`, or a stored
        index's own (its BM25 state, and for ``dense``/``hybrid`` its embeddings).

        Raises:
            CandidateError: ``search.bad_scorer``; for a stored index, ``pack.index_scorer``
                (``dense`` or ``hybrid`` over an index built without embeddings) and
                ``pack.index_embedder``; what :class:`SemanticSearch` raises.
        """
        chosen = _parse_scorer(scorer)
        if self.stored_searcher is None:
            return SemanticSearch(self.index, scorer=chosen, embedder=embedder)
        return self.stored_searcher(chosen, embedder)


def indexed_of(built: Built, paths: Sequence[str | Path] = (), started: float | None = None) -> Indexed:
    """:class:`Indexed` of a built or loaded corpus (:func:`~engine.retrieval.build.build_in_memory`,
    :func:`~engine.retrieval.store.load_for_pack`); ``started``: the ``perf_counter``
    its seconds count from.

    Raises:
        CandidateError: ``pack.no_documents`` when no file could be indexed.
    """
    if not any(r.doc_id is not None for r in built.read):
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in built.skipped[:5])
        raise CandidateError("pack.no_documents",
                             f"no file under {', '.join(map(str, paths))} could be indexed ({reasons}); "
                             "give files with text in a supported format", path="$.paths")
    corpus = tuple(CorpusFile(r.source.root, r.source.path, r.doc_id, r.data) for r in built.read)
    seconds = time.perf_counter() - started if started is not None else 0.0
    return Indexed(built.index, built.files, corpus, seconds, built.skipped, built.searcher)


def index_corpus(paths: Sequence[str | Path],
                 progress: Callable[[int, int, str], None] | None = None) -> Indexed:
    """Index the files of a supported format named or found under ``paths`` in memory
    (:func:`~engine.retrieval.build.build_in_memory`); ``progress(done, total, name)``
    is called per file.

    Raises:
        CandidateError: ``pack.no_documents`` when no file could be indexed, and what
            reading the paths raises.
    """
    t0 = time.perf_counter()
    return indexed_of(build_in_memory(paths, progress), paths, t0)


def pack(policy: Policy, query: str, paths: Sequence[str | Path], *, top_k: int | None = None,
         audit_log: AuditLog | None = None,
         progress: Callable[[int, int, str], None] | None = None,
         request: Request | None = None, scorer: str | Scorer = "bm25",
         embedder: Embedder | None = None, require_context: bool = False,
         index: Built | None = None) -> Packed:
    """Run the main job; ``progress(done, total, name)`` is called per file indexed.
    ``index`` is a prebuilt corpus (``engine.retrieval.store.load_for_pack``); without
    it the files under ``paths`` are indexed in memory. The record keeps the query (keyed
    digest unless the policy keeps it as text), the corpus files (path below their root,
    size, digest), ``request`` (who asked) and how the search went (``retrieval``: best
    score, threshold, the warning when no retrieved item is in the context).

    ``top_k``: the search results the decision chooses from (default
    :func:`default_top_k`: one per 15 tokens of the budget, 50 to 200).
    ``scorer``: ``"bm25"`` (default), ``"dense"`` or ``"hybrid"``; the last two need the
    ``ctxbudget[dense]`` extra (``CandidateError`` ``search.dense_unavailable`` without
    it) unless ``embedder`` (texts → embedding rows) is given; over a prebuilt ``index``
    they need its stored embeddings (``pack.index_scorer`` otherwise) and the model that
    made them (``pack.index_embedder``). ``require_context``: raise
    :class:`~engine.errors.NoContextError` (``pack.no_context``) when the context holds
    no retrieved item; the decision is recorded first."""
    t0 = time.perf_counter()
    corpus = indexed_of(index if index is not None else build_in_memory(paths, progress), paths, t0)
    search = corpus.searcher(scorer, embedder)
    return pack_indexed(policy, query, corpus, search, top_k=top_k, audit_log=audit_log, request=request,
                        require_context=require_context, started=t0)


def pack_indexed(policy: Policy, query: str, indexed: Indexed, search: SemanticSearch, *, top_k: int | None = None,
                 audit_log: AuditLog | None = None, request: Request | None = None,
                 require_context: bool = False, started: float | None = None) -> Packed:
    """:func:`pack` for a corpus indexed once (:func:`index_corpus`) and a search built
    over its index (:meth:`Indexed.searcher`): what a benchmark or a long-running caller
    asks many questions of. ``started``: the ``perf_counter`` the reported seconds count
    from (default: now)."""
    t0 = time.perf_counter() if started is None else started
    if top_k is None:
        top_k = default_top_k(policy)
    notes = []
    if not policy.hierarchy.exclusive:
        notes.append("hierarchy.exclusive is off in this policy: a section and its own "
                     "paragraphs may both be sent")
    index = indexed.index
    limit = _limit(policy)
    searched = search.search_with_stats(query, top_k=top_k if limit is None else OVERSIZE_FETCH * top_k)
    searched, oversized = _set_aside_oversized(searched, index, top_k, limit)
    results = searched.results
    rows, _ = search_rows(results, index)
    fetched = pinned_rows(policy.pinned, index, (r["source_id"] for r in rows))
    if fetched:
        notes.append(f"{len(fetched)} pinned node(s) that search did not return were fetched from the "
                     f"index: {', '.join(r['source_id'] for r in fetched[:10])}"
                     + (" ..." if len(fetched) > 10 else ""))
    if oversized:
        notes.append(f"{oversized} search result(s) longer than {OVERSIZE_CHARS_PER_TOKEN} characters per token of "
                     f"the budget were not offered (too large to fit); the next results took their places")
    retrieved = {r.node_id for r in results}
    words = search.analyzer.words(query)
    unknown = [w for t in searched.unknown_terms for w in words.get(t, [t])]
    assessed: list[Retrieval] = []

    def retrieval(alloc: Allocation | None) -> dict[str, Any]:
        included = None if alloc is None else sum(1 for d in alloc.included if d.source_id in retrieved)
        assessed.append(assess(policy, searched, scorer=search.scorer.value, top_k=top_k,
                               included=included, unknown_words=unknown, oversized=oversized))
        return assessed[-1].record_part()

    decided = decide(rows + fetched, policy, audit_log=audit_log, query=query, request=request,
                     corpus=indexed.corpus, retrieval=retrieval)
    found_out = assessed[-1]
    if require_context and found_out.warning is not None:
        where = (found_out.threshold_path if found_out.best_source_id is not None and found_out.eligible == 0
                 else "$.query")
        raise NoContextError("pack.no_context", f"{found_out.warning} (--require-context)", path=where,
                             location=policy.location_of(where) if where != "$.query" else None,
                             details={"decision_id": decided.record["decision_id"],
                                      "best_score": found_out.best_score, "threshold": found_out.threshold})
    return Packed(decided, indexed.files, len(results), tuple(notes),
                  time.perf_counter() - t0, tuple(r["source_id"] for r in fetched), found_out, indexed.skipped)
