"""Files on disk → documents for the index: which files, in which format, under which id.

What goes in: the paths ``pack`` or ``index build`` was given (files or folders). What
comes out: :class:`SourceFile` values (root as given, path below it, size, SHA-256 of the
bytes on disk, the format) for every file read, the :class:`Skipped` files with the reason
for each, and for each readable file its parsed document (:func:`read_document`).

* Formats by suffix (:data:`engine.retrieval.formats.SUFFIX_FORMATS`), each also
  gzip-compressed (``.md.gz``, ``.rst.gz``, ``.html.gz``, ``.txt.gz``).
* Files under a folder that are not one of these formats are skipped with the reason
  ``unsupported format``; hidden files and folders (``.git``...) are not looked at.
* A file that is not UTF-8, not valid gzip, larger than :data:`MAX_DOCUMENT_BYTES`
  decompressed, empty, or has no text after parsing is skipped with its reason: one bad
  file never stops the corpus, and none goes missing silently.
* The ``doc_id`` of a document is its path below its root (POSIX ``/``), with ``%``,
  ``#`` and whitespace percent-encoded so that node ids stay unambiguous
  (``guide/my notes.md`` → ``guide/my%20notes.md``); when two roots hold the same path,
  the later one is prefixed with its root's folder name.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import CandidateError
from .formats import SUFFIX_FORMATS, Parsed, format_of, parse

#: The largest document read (after decompression); a gzip bomb is skipped, not read.
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file of the corpus: ``root`` as given (the folder of a file named directly),
    ``path`` below it (POSIX), the file's ``size`` and ``sha256`` on disk, its
    ``format`` (``None`` if not a supported one) and ``mtime_ns``."""

    root: str
    path: str
    size: int
    mtime_ns: int
    format: str | None

    @property
    def file(self) -> Path:
        return Path(self.root) / self.path


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file not indexed, and why (``reason`` is one short sentence)."""

    root: str
    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"root": self.root, "path": self.path, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Document:
    """A file read and parsed: its ``doc_id``, bytes on disk and parsed text."""

    source: SourceFile
    doc_id: str
    data: bytes
    sha256: str
    parsed: Parsed


def walk(paths: Sequence[str | Path]) -> tuple[list[SourceFile], list[Skipped]]:
    """Every file named, or found (sorted, hidden entries left out) under the folders
    named: the supported ones, and the others as skipped ("unsupported format").

    Raises:
        CandidateError: ``pack.missing_path`` (a path that does not exist) or
            ``pack.no_files`` (no supported file at all).
    """
    found: list[SourceFile] = []
    skipped: list[Skipped] = []
    for i, given in enumerate(paths):
        p = Path(given)
        if p.is_dir():
            entries = [(str(given), f.relative_to(p).as_posix(), f) for f in _files_under(p)]
        elif p.is_file():
            entries = [(os.path.dirname(str(given)) or ".", p.name, p)]
        else:
            raise CandidateError("pack.missing_path", f"{p}: no such file or folder", path=f"$.paths[{i}]")
        for root, rel, f in entries:
            fmt = format_of(f.name)
            if fmt is None:
                skipped.append(Skipped(root, rel, f"unsupported format (supported: {_supported()})"))
                continue
            st = f.stat()
            found.append(SourceFile(root, rel, st.st_size, st.st_mtime_ns, fmt))
    if not found:
        raise CandidateError(
            "pack.no_files",
            f"no text files ({_supported()}) under {', '.join(map(str, paths))}"
            + (f"; {len(skipped)} other file(s) skipped" if skipped else ""),
            path="$.paths")
    return found, skipped


def _supported() -> str:
    suffixes = list(SUFFIX_FORMATS)
    return ", ".join(suffixes) + " (each also .gz)"


def _files_under(folder: Path) -> list[Path]:
    """Regular files under ``folder`` (hidden entries left out), sorted by path."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out += [Path(dirpath) / n for n in filenames if not n.startswith(".")]
    return sorted(f for f in out if f.is_file())


def doc_ids(files: Sequence[SourceFile]) -> list[str]:
    """The ``doc_id`` of each file (see the module docstring), unique across roots."""
    out: list[str] = []
    taken: set[str] = set()
    for f in files:
        base = _encode(f.path)
        doc = base
        if doc in taken:
            doc = f"{_encode(Path(os.path.abspath(f.root)).name or 'root')}/{base}"
        n = 2
        while doc in taken:
            doc, n = f"{base}~{n}", n + 1
        taken.add(doc)
        out.append(doc)
    return out


def _encode(path: str) -> str:
    out = []
    for ch in path:
        out.append(f"%{ord(ch):02X}" if ch in "%#" or ch.isspace() else ch)
    return "".join(out).strip("/") or "doc"


def read_bytes(source: SourceFile) -> bytes:
    """The file's bytes on disk."""
    return source.file.read_bytes()


def decode(source: SourceFile, data: bytes) -> str:
    """The text of a file's bytes: gunzipped if ``.gz``, UTF-8 (a BOM is dropped),
    universal newlines. Raises ``ValueError`` with the reason to skip it."""
    if source.path.lower().endswith(".gz"):
        try:
            d = zlib.decompressobj(wbits=31)
            raw = d.decompress(data, MAX_DOCUMENT_BYTES + 1)
            if len(raw) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB decompressed")
            if not d.eof:
                raise ValueError("not valid gzip (truncated)")
        except zlib.error as exc:
            raise ValueError(f"not valid gzip ({exc})") from None
    else:
        raw = data
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start}); convert it to UTF-8 first") from None
    if "\x00" in text:
        raise ValueError("binary content (NUL bytes)")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_document(source: SourceFile, doc_id: str) -> Document | Skipped:
    """Read, decode and parse one file; the reason it cannot be indexed otherwise."""
    try:
        data = read_bytes(source)
    except OSError as exc:
        return Skipped(source.root, source.path, f"cannot be read ({exc.strerror or exc})")
    digest = hashlib.sha256(data).hexdigest()
    try:
        text = decode(source, data)
    except ValueError as exc:
        return Skipped(source.root, source.path, str(exc))
    if not text.strip():
        return Skipped(source.root, source.path, "empty (only whitespace)")
    assert source.format is not None
    try:
        parsed = parse(text, source.format)
    except RecursionError:  # the one limit of docutils and of the HTML tree walk; any other error is a bug
        return Skipped(source.root, source.path,
                       f"nested too deeply to parse as {source.format} (the parser's recursion limit)")
    if not parsed.text.strip() or not parsed.blocks:
        return Skipped(source.root, source.path, f"no text after parsing it as {source.format}")
    return Document(source, doc_id, data, digest, parsed)
