"""The main job: documents and a question in, the best context that fits the policy out.

``pack(policy, query, paths)``: index the files (Markdown or plain text) into the
hierarchical index, search them, turn the results into candidate rows
(:mod:`engine.retrieval.convert`, the conversion the seed's
``create_budget_items_from_search`` uses too), add the nodes the policy pins that search
did not return, and decide under the policy. Token counts are left to the engine, which
counts every item rendered with the policy's template. The hierarchy rule is on by
default (``hierarchy.exclusive: true``), so a section and its own paragraphs are never
both sent; a policy that turns it off gets a note saying so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..audit.log import AuditLog
from ..audit.request import CorpusFile, Request
from ..decide import Decided, decide
from ..errors import CandidateError
from ..policy import Policy
from .convert import pinned_rows, search_rows
from .index import HierarchicalIndex
from .search import SemanticSearch

TEXT_SUFFIXES = (".md", ".markdown", ".txt", ".text", ".rst")


@dataclass(frozen=True, slots=True)
class Packed:
    decided: Decided
    files: tuple[str, ...]
    results: int
    notes: tuple[str, ...]
    seconds: float
    #: Pinned nodes fetched from the index because search did not return them.
    fetched_pins: tuple[str, ...] = ()


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


def pack(policy: Policy, query: str, paths: Sequence[str | Path], *, top_k: int = 50,
         audit_log: AuditLog | None = None,
         progress: Callable[[int, int, str], None] | None = None,
         request: Request | None = None) -> Packed:
    """Run the main job; ``progress(done, total, name)`` is called per file indexed.
    The record keeps the query (keyed digest unless the policy keeps it as text), the
    corpus files (path below their root, size, digest) and ``request`` (who asked)."""
    t0 = time.perf_counter()
    found = collect_corpus(paths)
    files = [f for f, _root, _rel in found]
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
            progress(k, len(files), str(f))
    notes = []
    if not policy.hierarchy.exclusive:
        notes.append("hierarchy.exclusive is off in this policy: a section and its own "
                     "paragraphs may both be sent")
    results = SemanticSearch(index).search(query, top_k=top_k)
    rows, _ = search_rows(results, index)
    fetched = pinned_rows(policy.pinned, index, (r["source_id"] for r in rows))
    if fetched:
        notes.append(f"{len(fetched)} pinned node(s) that search did not return were fetched from the "
                     f"index: {', '.join(r['source_id'] for r in fetched[:10])}"
                     + (" ..." if len(fetched) > 10 else ""))
    decided = decide(rows + fetched, policy, audit_log=audit_log, query=query, request=request,
                     corpus=corpus)
    return Packed(decided, tuple(str(f) for f in files), len(results), tuple(notes),
                  time.perf_counter() - t0, tuple(r["source_id"] for r in fetched))
