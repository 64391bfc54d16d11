"""The main job: documents and a question in, the best context that fits the policy out.

``pack(policy, query, paths)``: index the files (Markdown or plain text) into the
hierarchical index, search them, turn the results into budget items with
``create_budget_items_from_search``, and decide under the policy. The hierarchy rule is
on by default (``hierarchy.exclusive: true``), so a section and its own paragraphs are
never both sent; a policy that turns it off gets a note saying so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..audit.log import AuditLog
from ..decide import Decided, decide
from ..errors import CandidateError
from .index import HierarchicalIndex
from ..manager import TokenBudgetManager
from ..policy import Policy
from .search import SemanticSearch

TEXT_SUFFIXES = (".md", ".markdown", ".txt", ".text", ".rst")


@dataclass(frozen=True, slots=True)
class Packed:
    decided: Decided
    files: tuple[str, ...]
    results: int
    notes: tuple[str, ...]
    seconds: float


def collect_files(paths: Sequence[str | Path]) -> list[Path]:
    """Text files named, or found (sorted) under the folders named."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
        elif p.is_file():
            out.append(p)
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
         progress: Callable[[int, int, str], None] | None = None) -> Packed:
    """Run the main job; ``progress(done, total, name)`` is called per file indexed."""
    t0 = time.perf_counter()
    files = collect_files(paths)
    index = HierarchicalIndex()
    taken: set[str] = set()
    for k, f in enumerate(files, 1):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise CandidateError("pack.not_utf8", f"{f}: not UTF-8 text (byte {exc.start}); convert it first",
                                 path="$.paths") from None
        if text.strip():
            index.index_document(text, _doc_id(f, taken), markdown=f.suffix.lower() in (".md", ".markdown"))
        if progress is not None:
            progress(k, len(files), str(f))
    notes = []
    if not policy.hierarchy.exclusive:
        notes.append("hierarchy.exclusive is off in this policy: a section and its own "
                     "paragraphs may both be sent")
    results = SemanticSearch(index).search(query, top_k=top_k)
    mgr = TokenBudgetManager(tokenizer=policy.tokenizer)
    items = mgr.create_budget_items_from_search(results, index)
    # Token counts are recounted by the engine with the policy's template, so drop the
    # content-only counts: the assembled context is then checked and repaired exactly.
    rows = [{"source_id": i.source_id, "content": i.content, "relevance_score": i.relevance_score,
             "level": i.level, "metadata": i.metadata, "parent_id": i.metadata.get("parent_id")}
            for i in items]
    decided = decide(rows, policy, audit_log=audit_log)
    return Packed(decided, tuple(str(f) for f in files), len(results), tuple(notes),
                  time.perf_counter() - t0)
