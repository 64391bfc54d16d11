"""Paths → a hierarchical index in memory, with the account of every file.

What goes in: the paths given to ``pack`` (files or folders) and an optional
``progress(done, total, name)`` callback. What comes out: a :class:`Built` value, the
:class:`~engine.retrieval.index.HierarchicalIndex` of every readable document, the files
read (with their bytes, for the audit record's digests) and the files skipped with their
reasons (:mod:`engine.retrieval.corpus`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .corpus import Document, Skipped, SourceFile, doc_ids, read_document, walk
from .index import HierarchicalIndex

#: ``progress(done, total, name)``, called once per file.
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class ReadFile:
    """A file that was read: ``doc_id`` is ``None`` when it was skipped for its content."""

    source: SourceFile
    doc_id: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class Built:
    """The index and the account of the corpus it was built from."""

    index: Any  # HierarchicalIndex, or a stored index (engine.retrieval.store)
    read: tuple[ReadFile, ...]
    skipped: tuple[Skipped, ...]
    #: Makes the searcher over ``index`` (a stored index brings its BM25 state);
    #: ``None``: build a ``SemanticSearch`` over ``index``.
    searcher: Callable[..., Any] | None = None

    @property
    def files(self) -> tuple[str, ...]:
        """Every file indexed, as a path (root joined with its path below it)."""
        return tuple(str(r.source.file) for r in self.read if r.doc_id is not None)


def read_corpus(paths: Sequence[str | Path], progress: Progress | None = None
                ) -> tuple[list[Document | Skipped], list[SourceFile], list[Skipped]]:
    """Walk ``paths`` and read every supported file: one :class:`Document` or
    :class:`Skipped` per supported file (in walk order), the files, and the files of
    unsupported formats."""
    sources, unsupported = walk(paths)
    out: list[Document | Skipped] = []
    for k, (source, doc) in enumerate(zip(sources, doc_ids(sources)), 1):
        out.append(read_document(source, doc))
        if progress is not None:
            progress(k, len(sources), str(source.file))
    return out, sources, unsupported


def build_in_memory(paths: Sequence[str | Path], progress: Progress | None = None) -> Built:
    """Index every readable document under ``paths`` into a new in-memory index."""
    docs, sources, unsupported = read_corpus(paths, progress)
    index = HierarchicalIndex()
    read: list[ReadFile] = []
    skipped: list[Skipped] = []
    for source, doc in zip(sources, docs):
        if isinstance(doc, Document):
            index.index_parsed(doc.parsed, doc.doc_id)
            read.append(ReadFile(source, doc.doc_id, doc.data))
        else:
            skipped.append(doc)
            try:
                data = source.file.read_bytes()
            except OSError:
                continue
            read.append(ReadFile(source, None, data))
    return Built(index, tuple(read), tuple(skipped + unsupported))
