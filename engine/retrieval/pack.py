"""The main job: documents and a question in, the best context that fits the policy out.

``pack(policy, query, paths)``: index the files (Markdown or plain text) into the
hierarchical index, search them (``scorer``: ``bm25``, or ``dense``/``hybrid`` with the
``ctxbudget[dense]`` extra or an ``embedder`` of the caller's), turn the results into
candidate rows (:mod:`engine.retrieval.convert`, the conversion the seed's
``create_budget_items_from_search`` uses too), add the nodes the policy pins that search
did not return, and decide under the policy. Token counts are left to the engine, which
counts every item rendered with the policy's template. The hierarchy rule is on by
default (``hierarchy.exclusive: true``), so a section and its own paragraphs are never
both sent; a policy that turns it off gets a note saying so.

An empty or weak result is never silent: when no retrieved item is in the context (no
node holds a term of the query, the best score is below the ``min_relevance`` that
applies to it, or nothing that passed fitted), :class:`Retrieval` carries a warning that
names the best score and the threshold; it is in the audit record's ``retrieval`` part
and, from the CLI, on stderr. ``require_context=True`` (``--require-context``) turns it
into :class:`~engine.errors.NoContextError` (exit 8), after the decision is recorded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..allocation import Allocation
from ..audit.log import AuditLog
from ..audit.request import CorpusFile, Request
from ..decide import Decided, decide
from ..errors import CandidateError, NoContextError
from ..policy import Policy
from .convert import pinned_rows, search_rows
from .index import HierarchicalIndex
from .search import Embedder, Scorer, Searched, SemanticSearch

TEXT_SUFFIXES = (".md", ".markdown", ".txt", ".text", ".rst")


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

    def record_part(self) -> dict[str, Any]:
        """The audit record's ``retrieval`` part (schemas/audit.schema.json)."""
        return {"scorer": self.scorer, "top_k": self.top_k, "matched": self.matched, "results": self.results,
                "best_score": self.best_score, "best_source_id": self.best_source_id,
                "threshold": self.threshold, "eligible": self.eligible, "included": self.included,
                "warning": self.warning}


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


def collect_files(paths: Sequence[str | Path]) -> list[Path]:
    """Text files named, or found (sorted) under the folders named."""
    return [f for f, _root, _rel in collect_corpus(paths)]


def collect_corpus(paths: Sequence[str | Path]) -> list[tuple[Path, str, str]]:
    """(file, its root as given, its path below the root in POSIX form) for every text
    file named, or found (sorted) under the folders named; a file named directly has its
    own folder as root."""
    out: list[tuple[Path, str, str]] = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            out += [(f, str(given), f.relative_to(p).as_posix()) for f in sorted(p.rglob("*"))
                    if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES]
        elif p.is_file():
            out.append((p, os.path.dirname(str(given)) or ".", p.name))
        else:
            raise CandidateError("pack.missing_path", f"{p}: no such file or folder", path="$.paths")
    if not out:
        raise CandidateError("pack.no_files",
                             f"no text files ({', '.join(TEXT_SUFFIXES)}) under {', '.join(map(str, paths))}",
                             path="$.paths")
    return out


def _doc_id(path: Path, taken: set[str]) -> str:
    base = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in path.stem) or "doc"
    doc, n = base, 2
    while doc in taken:
        doc, n = f"{base}-{n}", n + 1
    taken.add(doc)
    return doc


def _threshold(policy: Policy, level: str | None) -> tuple[float, str]:
    """The ``min_relevance`` an item of ``level`` must reach, and its policy path."""
    rule = policy.level(level) if level is not None else None
    if rule is not None and rule.min_relevance is not None:
        return rule.min_relevance, f"$.spec.levels.{level}.min_relevance"
    return policy.min_relevance, "$.spec.min_relevance"


def assess(policy: Policy, searched: Searched, *, scorer: str, top_k: int,
           included: int | None, unknown_words: Sequence[str] = ()) -> Retrieval:
    """:class:`Retrieval` of a search under ``policy``, with its warning: none when some
    retrieved item is in the context (``included`` > 0); ``included`` ``None`` (the
    decision was infeasible) warns only when nothing could have been sent."""
    results = searched.results
    best = results[0] if results else None
    threshold, threshold_path = _threshold(policy, best.metadata.get("level") if best is not None else None)
    eligible = sum(1 for r in results if r.relevance_score >= _threshold(policy, r.metadata.get("level"))[0])
    warning = None
    if best is None:
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
                     tuple(unknown_words), warning, threshold_path)


@dataclass(frozen=True, slots=True)
class Indexed:
    """A corpus indexed in memory for ``pack``: the index, the files (as found) and what
    the audit record says of them. Build it once (:func:`index_corpus`) to ask many
    questions (:func:`pack_indexed`)."""

    index: HierarchicalIndex
    files: tuple[str, ...]
    corpus: tuple[CorpusFile, ...]
    seconds: float


def index_corpus(paths: Sequence[str | Path],
                 progress: Callable[[int, int, str], None] | None = None) -> Indexed:
    """Index the text files named or found under ``paths`` (:func:`collect_corpus`);
    ``progress(done, total, name)`` is called per file."""
    t0 = time.perf_counter()
    found = collect_corpus(paths)
    index = HierarchicalIndex()
    taken: set[str] = set()
    corpus: list[CorpusFile] = []
    for k, (f, root, rel) in enumerate(found, 1):
        data = f.read_bytes()
        try:
            # as read_text would: universal newlines (the digest is of the bytes on disk)
            text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
        except UnicodeDecodeError as exc:
            raise CandidateError("pack.not_utf8", f"{f}: not UTF-8 text (byte {exc.start}); convert it first",
                                 path="$.paths") from None
        doc = _doc_id(f, taken) if text.strip() else None
        corpus.append(CorpusFile(root, rel, doc, data))
        if doc is not None:
            index.index_document(text, doc, markdown=f.suffix.lower() in (".md", ".markdown"))
        if progress is not None:
            progress(k, len(found), str(f))
    return Indexed(index, tuple(str(f) for f, _root, _rel in found), tuple(corpus), time.perf_counter() - t0)


def pack(policy: Policy, query: str, paths: Sequence[str | Path], *, top_k: int = 50,
         audit_log: AuditLog | None = None,
         progress: Callable[[int, int, str], None] | None = None,
         request: Request | None = None, scorer: str | Scorer = "bm25",
         embedder: Embedder | None = None, require_context: bool = False) -> Packed:
    """Run the main job; ``progress(done, total, name)`` is called per file indexed.
    The record keeps the query (keyed digest unless the policy keeps it as text), the
    corpus files (path below their root, size, digest), ``request`` (who asked) and how
    the search went (``retrieval``: best score, threshold, the warning when no retrieved
    item is in the context).

    ``scorer``: ``"bm25"`` (default), ``"dense"`` or ``"hybrid"``; the last two need the
    ``ctxbudget[dense]`` extra (``CandidateError`` ``search.dense_unavailable`` without
    it) unless ``embedder`` (texts → embedding rows) is given. ``require_context``: raise
    :class:`~engine.errors.NoContextError` (``pack.no_context``) when the context holds
    no retrieved item; the decision is recorded first."""
    t0 = time.perf_counter()
    indexed = index_corpus(paths, progress)
    search = SemanticSearch(indexed.index, scorer=scorer, embedder=embedder)
    return pack_indexed(policy, query, indexed, search, top_k=top_k, audit_log=audit_log, request=request,
                        require_context=require_context, started=t0)


def pack_indexed(policy: Policy, query: str, indexed: Indexed, search: SemanticSearch, *, top_k: int = 50,
                 audit_log: AuditLog | None = None, request: Request | None = None,
                 require_context: bool = False, started: float | None = None) -> Packed:
    """:func:`pack` for a corpus indexed once (:func:`index_corpus`) and a search built
    over its index: what a benchmark or a long-running caller asks many questions of.
    ``started``: the ``perf_counter`` the reported seconds count from (default: now)."""
    t0 = time.perf_counter() if started is None else started
    notes = []
    if not policy.hierarchy.exclusive:
        notes.append("hierarchy.exclusive is off in this policy: a section and its own "
                     "paragraphs may both be sent")
    index = indexed.index
    searched = search.search_with_stats(query, top_k=top_k)
    results = searched.results
    rows, _ = search_rows(results, index)
    fetched = pinned_rows(policy.pinned, index, (r["source_id"] for r in rows))
    if fetched:
        notes.append(f"{len(fetched)} pinned node(s) that search did not return were fetched from the "
                     f"index: {', '.join(r['source_id'] for r in fetched[:10])}"
                     + (" ..." if len(fetched) > 10 else ""))
    retrieved = {r.node_id for r in results}
    words = search.analyzer.words(query)
    unknown = [w for t in searched.unknown_terms for w in words.get(t, [t])]
    assessed: list[Retrieval] = []

    def retrieval(alloc: Allocation | None) -> dict[str, Any]:
        included = None if alloc is None else sum(1 for d in alloc.included if d.source_id in retrieved)
        assessed.append(assess(policy, searched, scorer=search.scorer.value, top_k=top_k,
                               included=included, unknown_words=unknown))
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
                  time.perf_counter() - t0, tuple(r["source_id"] for r in fetched), found_out)
