"""The main job: documents and a question in, the best context that fits the policy out.

``pack(policy, query, paths)``: index the files (Markdown, reStructuredText, HTML or
plain text, each also gzip-compressed; :mod:`engine.retrieval.build`) into the
hierarchical index, or load a prebuilt one (``index=``, :mod:`engine.retrieval.store`), search them, turn the results into candidate rows
(:mod:`engine.retrieval.convert`, the conversion the seed's
``create_budget_items_from_search`` uses too), add the nodes the policy pins that search
did not return, and decide under the policy. Token counts are left to the engine, which
counts every item rendered with the policy's template. The hierarchy rule is on by
default (``hierarchy.exclusive: true``), so a section and its own paragraphs are never
both sent; a policy that turns it off gets a note saying so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..audit.log import AuditLog
from ..audit.request import CorpusFile, Request
from ..decide import Decided, decide
from ..errors import CandidateError
from ..policy import Policy
from .build import Built, build_in_memory
from .convert import pinned_rows, search_rows
from .corpus import Skipped, walk
from .formats import SUFFIX_FORMATS
from .search import SemanticSearch

TEXT_SUFFIXES = tuple(SUFFIX_FORMATS)


@dataclass(frozen=True, slots=True)
class Packed:
    decided: Decided
    files: tuple[str, ...]
    results: int
    notes: tuple[str, ...]
    seconds: float
    #: Pinned nodes fetched from the index because search did not return them.
    fetched_pins: tuple[str, ...] = ()
    #: Files not indexed, each with its reason.
    skipped: tuple[Skipped, ...] = ()


def collect_files(paths: Sequence[str | Path]) -> list[Path]:
    """Files of a supported format named, or found (sorted) under the folders named."""
    return [f.file for f in walk(paths)[0]]


def pack(policy: Policy, query: str, paths: Sequence[str | Path], *, top_k: int = 50,
         audit_log: AuditLog | None = None,
         progress: Callable[[int, int, str], None] | None = None,
         request: Request | None = None, index: Built | None = None) -> Packed:
    """Run the main job; ``progress(done, total, name)`` is called per file indexed.
    ``index`` is a prebuilt corpus (``engine.retrieval.store.load_for_pack``); without
    it the files under ``paths`` are indexed in memory. The record keeps the query (keyed
    digest unless the policy keeps it as text), the corpus files (path below their root,
    size, digest) and ``request`` (who asked)."""
    t0 = time.perf_counter()
    built = index if index is not None else build_in_memory(paths, progress)
    if not any(r.doc_id is not None for r in built.read):
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in built.skipped[:5])
        raise CandidateError("pack.no_documents",
                             f"no file under {', '.join(map(str, paths))} could be indexed ({reasons}); "
                             "give files with text in a supported format", path="$.paths")
    corpus = [CorpusFile(r.source.root, r.source.path, r.doc_id, r.data) for r in built.read]
    notes = []
    if not policy.hierarchy.exclusive:
        notes.append("hierarchy.exclusive is off in this policy: a section and its own "
                     "paragraphs may both be sent")
    searcher = built.searcher() if built.searcher is not None else SemanticSearch(built.index)
    results = searcher.search(query, top_k=top_k)
    rows, _ = search_rows(results, built.index)
    fetched = pinned_rows(policy.pinned, built.index, (r["source_id"] for r in rows))
    if fetched:
        notes.append(f"{len(fetched)} pinned node(s) that search did not return were fetched from the "
                     f"index: {', '.join(r['source_id'] for r in fetched[:10])}"
                     + (" ..." if len(fetched) > 10 else ""))
    decided = decide(rows + fetched, policy, audit_log=audit_log, query=query, request=request,
                     corpus=corpus)
    return Packed(decided, built.files, len(results), tuple(notes),
                  time.perf_counter() - t0, tuple(r["source_id"] for r in fetched), built.skipped)
