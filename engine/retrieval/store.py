"""A persistent index on disk: ``ctxbudget index build`` writes it, ``pack --index`` reads it.

What goes in: the corpus paths (build) or the index folder (load). What comes out: a folder
that holds the hierarchical index and its BM25 state, and, when loaded, a
:class:`~engine.retrieval.build.Built` whose index and searcher answer queries without
re-reading, re-parsing or re-tokenizing anything.

Layout of an index folder (format :data:`FORMAT_VERSION`)::

    manifest.json        format and engine version, corpus roots, every file (path below
                         its root, size, mtime, sha256, format, the id it gets and its
                         doc_id when indexed, its text's offset in text.txt), the files skipped and why, settings (levels,
                         analyzer: tokenizer, stop words, stemmer, k1, b), counts
    nodes.npy            int64 (nodes × 6): level, document, start, end, parent row, title row
    ids.txt              node ids, one per line, in reading order
    titles.json          section titles
    text.txt             the documents' texts, one after another (UTF-8; each file's
                         byte range is in the manifest, ``text_bytes``)
    levels/<LEVEL>/      per searched level: the BM25 postings (:mod:`engine.retrieval.bm25`:
                         terms.txt, indptr/indices/tf/lengths .npy, memory-mapped on load)
                         and rows.npy (which nodes, in the order the level indexes them);
                         with embeddings (``index build --scorer dense|hybrid``) also
                         embeddings.npy: float32 unit rows in that order, memory-mapped;
                         the manifest's ``embeddings`` names the model and the width

Loading reads the manifest, the node table and the ids, and memory-maps the postings; a
query reads the postings of its own terms, and node objects (with the text of their
document, decoded when first needed) are made only for the nodes it returns and their
ancestors. The BM25 state is the one :class:`SemanticSearch` computes over the same
nodes, so a loaded index ranks exactly as ``pack PATH`` does over the same files (a test
holds them equal).

Updating (``build`` onto an existing index): every file is hashed; files whose SHA-256,
doc_id and format are unchanged keep their stored nodes (not re-read as text, not
re-parsed); changed and added files are parsed; removed ones dropped. BM25 statistics
(document frequencies, average lengths) are corpus-wide, so the levels' BM25 state is
recomputed from all nodes each time. Embeddings, once an index has them, are kept: the
nodes of unchanged files keep their vectors (same model), the others are embedded. A
different format version or analyzer setting
rebuilds everything and says why. The new index is written beside the old one and swapped
in, so a failed build leaves the old index as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import CandidateError, Location
from .build import Built, Progress, ReadFile
from .corpus import Document, Skipped, SourceFile, doc_ids, read_document, walk
from .index import HierarchicalIndex, IndexLevel, Node
from .search import analyzer_settings

FORMAT_NAME = "ctxbudget-index"
#: Bumped whenever the layout or the meaning of a stored value changes.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
#: Per level, the unit embeddings of its nodes (float32, rows in the level's order).
EMBEDDINGS = "embeddings.npy"
_LEVEL_CODES = {lv: i for i, lv in enumerate(IndexLevel)}
_LEVELS_BY_CODE = list(IndexLevel)
_REBUILD = "ctxbudget index build PATH... --out {index}"


@dataclass(frozen=True, slots=True)
class BuildReport:
    """What a build did: files by fate (paths below their roots), totals and timing."""

    index: str
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: tuple[str, ...]
    skipped: tuple[Skipped, ...]
    documents: int
    nodes: int
    bytes_read: int
    corpus_bytes: int
    seconds: float
    rebuilt_because: str | None = None
    #: The model whose embeddings the index keeps (``None``: BM25 only), and how many
    #: nodes this build embedded (the rest kept their stored vectors).
    embeddings: str | None = None
    embedded: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "added": list(self.added), "changed": list(self.changed),
                "removed": list(self.removed), "unchanged": len(self.unchanged),
                "skipped": [s.to_dict() for s in self.skipped], "documents": self.documents,
                "nodes": self.nodes, "bytes_read": self.bytes_read, "corpus_bytes": self.corpus_bytes,
                "seconds": round(self.seconds, 3), "rebuilt_because": self.rebuilt_because,
                "embeddings": self.embeddings, "embedded": self.embedded}


def _error(code: str, index: Path, message: str, fix: str) -> CandidateError:
    return CandidateError(code, f"{message}; {fix}", path="$.index", location=Location(str(index)))


# --------------------------------------------------------------------------- manifest


def read_manifest(index: Path) -> dict[str, Any]:
    """The manifest of an index folder, checked for format and version.

    Raises:
        CandidateError: ``index.missing``, ``index.corrupt`` or ``index.version_mismatch``.
    """
    fix = f"build it with `{_REBUILD.format(index=index)}`"
    path = index / MANIFEST
    if not index.exists():
        raise _error("index.missing", index, f"no index at {index}", fix)
    if not path.is_file():
        raise _error("index.missing", index, f"{index} is not a ctxbudget index (no {MANIFEST})", fix)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _error("index.corrupt", index, f"{path} cannot be read as JSON ({exc})",
                     f"rebuild it with `{_REBUILD.format(index=index)}`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise _error("index.corrupt", index, f"{path} is not a ctxbudget index manifest",
                     f"rebuild it with `{_REBUILD.format(index=index)}`")
    if data.get("format_version") != FORMAT_VERSION:
        raise _error("index.version_mismatch", index,
                     f"index format {data.get('format_version')!r} (written by ctxbudget "
                     f"{data.get('engine_version')}); this ctxbudget {__version__} reads format {FORMAT_VERSION}",
                     f"rebuild it with `{_REBUILD.format(index=index)}`")
    for key, kind in (("files", list), ("roots", list), ("settings", dict), ("levels", list)):
        if not isinstance(data.get(key), kind):
            raise _error("index.corrupt", index, f"{path}: '{key}' is missing or not a {kind.__name__}",
                         f"rebuild it with `{_REBUILD.format(index=index)}`")
    return data


def _settings() -> dict[str, Any]:
    from .search import DEFAULT_LEVELS

    return {"levels": [lv.value for lv in DEFAULT_LEVELS], "analyzer": analyzer_settings(),
            "formats": "pyromark commonmark+tables, docutils, selectolax lexbor, text",
            "sentences": "sentencex en",
            # Token counts are not stored: the policy's tokenizer counts each item at pack time.
            "text": "utf-8 (a BOM dropped), universal newlines, gzip by suffix"}


def _check_settings(index: Path, manifest: dict[str, Any]) -> None:
    now = _settings()
    if manifest["settings"] != now:
        diff = sorted(k for k in set(now) | set(manifest["settings"])
                      if now.get(k) != manifest["settings"].get(k))
        raise _error("index.settings_mismatch", index,
                     f"the index was built with other settings ({', '.join(diff)}: "
                     f"{json.dumps({k: manifest['settings'].get(k) for k in diff}, sort_keys=True)}; "
                     f"now {json.dumps({k: now.get(k) for k in diff}, sort_keys=True)}) by ctxbudget "
                     f"{manifest.get('engine_version')}",
                     f"rebuild it with `{_REBUILD.format(index=index)}`")


# --------------------------------------------------------------------------- loading


class StoredIndex:
    """A loaded index: ``nodes`` maps id → :class:`Node` lazily (a node is made when read).

    The same reading API as :class:`HierarchicalIndex`: ``nodes``, ``node``,
    ``children``, ``ancestors``, ``documents``.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        import numpy as np

        self.folder = folder
        self.manifest = manifest
        try:
            # Read whole (it is small): a memory-mapped array costs microseconds per element.
            self._table = np.load(folder / "nodes.npy", allow_pickle=False)
            self._ids = (folder / "ids.txt").read_text(encoding="utf-8").split("\n")
        except (OSError, ValueError) as exc:
            raise _error("index.corrupt", folder, f"{folder}: a part of the index cannot be read ({exc})",
                         f"rebuild it with `{_REBUILD.format(index=folder)}`") from None
        if self._table.ndim != 2 or self._table.shape != (len(self._ids), 6):
            raise _error("index.corrupt", folder,
                         f"{folder}: nodes.npy has shape {self._table.shape} for {len(self._ids)} ids",
                         f"rebuild it with `{_REBUILD.format(index=folder)}`")
        docs = [f for f in manifest["files"] if f.get("doc_id") is not None]
        self._doc_bytes = [(int(f["text_bytes"][0]), int(f["text_bytes"][1])) for f in docs]
        self._doc_ids = [f["doc_id"] for f in docs]
        self._doc_texts: dict[int, str] = {}
        self._titles: list[str] | None = None
        self._text_file: Any = None
        self._made: dict[int, Node] = {}
        # Ids whose row is known without the full id -> row map (the made nodes and
        # their parents): what search results and their ancestors ask for.
        self._known: dict[str, int] = {}
        self._rows: dict[str, int] | None = None
        self._kids: dict[int, list[int]] | None = None
        self.nodes: Mapping[str, Node] = _NodeMap(self)

    def _doc_text(self, doc: int) -> str:
        """The text of document number ``doc`` (only its own bytes of text.txt are read)."""
        text = self._doc_texts.get(doc)
        if text is None:
            start, end = self._doc_bytes[doc]
            try:
                with open(self.folder / "text.txt", "rb") as fh:
                    fh.seek(start)
                    data = fh.read(end - start)
                text = data.decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise _error("index.corrupt", self.folder, f"{self.folder}: text.txt cannot be read ({exc})",
                             f"rebuild it with `{_REBUILD.format(index=self.folder)}`") from None
            self._doc_texts[doc] = text
        return text

    def _title(self, i: int) -> str:
        titles = self._titles
        if titles is None:
            try:
                titles = self._titles = json.loads((self.folder / "titles.json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise _error("index.corrupt", self.folder, f"{self.folder}: titles.json cannot be read ({exc})",
                             f"rebuild it with `{_REBUILD.format(index=self.folder)}`") from None
        return titles[i]

    def row_of(self, node_id: str) -> int | None:
        row = self._known.get(node_id)
        if row is not None:
            return row
        if self._rows is None:
            self._rows = {nid: i for i, nid in enumerate(self._ids)}
        return self._rows.get(node_id)

    def node_at(self, row: int) -> Node:
        node = self._made.get(row)
        if node is None:
            level, doc, start, end, parent, title = self._table[row].tolist()
            lv = _LEVELS_BY_CODE[level]
            content = self._doc_text(doc)[start:end]
            parent_id = None
            if parent >= 0:
                parent_id = self._ids[parent]
                self._known[parent_id] = parent
            node = Node(self._ids[row], self._doc_ids[doc], lv, content, parent_id, start, end, row,
                        self._title(title) if title >= 0 else None)
            self._made[row] = node
            self._known[node.node_id] = row
        return node

    def __len__(self) -> int:
        return len(self._ids)

    def node(self, node_id: str) -> Node:
        row = self.row_of(node_id)
        if row is None:
            raise CandidateError("index.unknown_node",
                                 f"no node {node_id!r} in the index (ids look like 'guide/a.md#s1.2/p3')",
                                 path="$.node_id")
        return self.node_at(row)

    def children(self, node_id: str) -> tuple[Node, ...]:
        row = self.row_of(node_id)
        self.node(node_id)
        if self._kids is None:
            kids: dict[int, list[int]] = {}
            for i, parent in enumerate(self._table[:, 4].tolist()):
                if parent >= 0:
                    kids.setdefault(parent, []).append(i)
            self._kids = kids
        return tuple(self.node_at(c) for c in self._kids.get(row or 0, []))

    def ancestors(self, node_id: str) -> tuple[Node, ...]:
        node = self.node(node_id)
        out = []
        while node.parent_id is not None:
            node = self.node(node.parent_id)
            out.append(node)
        return tuple(out)

    def documents(self) -> tuple[Node, ...]:
        return tuple(self.node(d) for d in self._doc_ids)

    @property
    def embeddings(self) -> dict[str, Any] | None:
        """What the manifest says of the stored embeddings (``model``, ``dim``,
        ``dtype``), or ``None`` when the index keeps none (built with ``--scorer bm25``)."""
        found = self.manifest.get("embeddings")
        return found if isinstance(found, dict) else None

    def searcher(self, scorer: Any = "bm25", embedder: Any = None) -> Any:
        """A :class:`SemanticSearch` over the stored levels, their postings (and, for
        ``dense``/``hybrid``, their embeddings) memory-mapped. The query is embedded by
        ``embedder``, default the ``ctxbudget[dense]`` model; it must be the one that
        embedded the nodes (its name is in the manifest).

        Raises:
            CandidateError: ``search.bad_scorer``; ``pack.index_scorer`` (``dense`` or
                ``hybrid`` over an index without embeddings); ``search.dense_unavailable``;
                ``pack.index_embedder`` (another embedder than the index's);
                ``index.corrupt``.
        """
        import numpy as np

        from . import bm25, search

        chosen = search._parse_scorer(scorer)
        vectors_meta = self.embeddings
        embed = None
        if chosen is not search.Scorer.BM25:
            if vectors_meta is None:
                raise CandidateError(
                    "pack.index_scorer",
                    f"scorer {chosen.value!r} needs embeddings in the index, and {self.folder} keeps only BM25 "
                    f"state; build it with `ctxbudget index build PATH... --out {self.folder} --scorer "
                    f"{chosen.value}` (the {search.DENSE_EXTRA.split()[-1]} extra), or use --scorer bm25",
                    path="$.scorer", location=Location(str(self.folder)))
            embed = embedder if embedder is not None else search._load_dense_embedder(chosen)
            if search.embedder_name(embed) != vectors_meta.get("model"):
                raise CandidateError(
                    "pack.index_embedder",
                    f"the index {self.folder} was embedded with {vectors_meta.get('model')!r}, and the query "
                    f"would be embedded with {search.embedder_name(embed)!r}: their vectors cannot be compared; "
                    f"rebuild the index with this model (`ctxbudget index build PATH... --out {self.folder} "
                    f"--scorer {chosen.value}`) or query it with the model it was built with",
                    path="$.embedder", location=Location(str(self.folder)))
        levels = []
        vectors = []
        for name in self.manifest["levels"]:
            folder = self.folder / "levels" / name["level"]
            try:
                rows = np.load(folder / "rows.npy", allow_pickle=False)
                postings = bm25.load(folder) if name["terms"] else None
            except (OSError, ValueError, KeyError) as exc:
                raise _error("index.corrupt", self.folder, f"{folder}: the BM25 state cannot be read ({exc})",
                             f"rebuild it with `{_REBUILD.format(index=self.folder)}`") from None
            if postings is not None and postings.n != len(rows):
                raise _error("index.corrupt", self.folder,
                             f"{folder}: {postings.n} node lengths for {len(rows)} rows",
                             f"rebuild it with `{_REBUILD.format(index=self.folder)}`")
            level = IndexLevel(name["level"])
            levels.append(search._LevelIndex(level, _LevelNodes(self, rows.tolist()), postings))
            if embed is not None and vectors_meta is not None:
                try:
                    unit = np.load(folder / EMBEDDINGS, mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError) as exc:
                    raise _error("index.corrupt", self.folder, f"{folder}: the embeddings cannot be read ({exc})",
                                 f"rebuild it with `{_REBUILD.format(index=self.folder)} --scorer "
                                 f"{chosen.value}`") from None
                if unit.shape != (len(rows), vectors_meta.get("dim")) or unit.dtype != np.float32:
                    raise _error("index.corrupt", self.folder,
                                 f"{folder}: {EMBEDDINGS} holds {unit.dtype} {unit.shape} for {len(rows)} rows "
                                 f"of width {vectors_meta.get('dim')}",
                                 f"rebuild it with `{_REBUILD.format(index=self.folder)} --scorer "
                                 f"{chosen.value}`")
                vectors.append(unit)
        # The searcher is SemanticSearch itself, its per-level state loaded instead of
        # computed: the ranking and calibration code is the one pack PATH runs.
        s: Any = object.__new__(search.SemanticSearch)
        s.scorer = chosen
        s.levels = tuple(lv.level for lv in levels)
        s.analyzer = search.DEFAULT_ANALYZER
        s.calibration = search.CALIBRATION
        s.headings = search.HEADING_WEIGHTS
        s.hybrid_bm25_weight = search.HYBRID_BM25_WEIGHT
        s._levels = tuple(levels)
        s._embed = embed
        s._vectors = tuple(vectors)
        return s


class _NodeMap(Mapping[str, Node]):
    def __init__(self, store: StoredIndex) -> None:
        self._store = store

    def __getitem__(self, node_id: str) -> Node:
        row = self._store.row_of(node_id)
        if row is None:
            raise KeyError(node_id)
        return self._store.node_at(row)

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, str) and self._store.row_of(node_id) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._store._ids)

    def __len__(self) -> int:
        return len(self._store)


class _LevelNodes(Sequence[Node]):
    """The nodes of one level, made when read."""

    def __init__(self, store: StoredIndex, rows: Any) -> None:
        self._store, self._rows = store, rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, j: Any) -> Any:
        if isinstance(j, slice):
            return [self._store.node_at(int(r)) for r in self._rows[j]]
        return self._store.node_at(self._rows[j])


def load_index(folder: str | Path) -> StoredIndex:
    """The index in ``folder``, checked (see :func:`read_manifest`) and with the analyzer
    settings of this ctxbudget (``index.settings_mismatch`` otherwise)."""
    path = Path(folder)
    manifest = read_manifest(path)
    _check_settings(path, manifest)
    return StoredIndex(path, manifest)


def load_for_pack(folder: str | Path) -> Built:
    """A loaded index with its corpus files for ``pack --index``: every file is read
    again and must have the SHA-256 the index recorded (its bytes go into the audit
    record's digests).

    Raises:
        CandidateError: the load errors, or ``index.stale`` naming the files that
            changed or went missing since the build.
    """
    store = load_index(folder)
    roots = store.manifest["roots"]
    read: list[ReadFile] = []
    stale: list[str] = []
    for f in store.manifest["files"]:
        source = SourceFile(roots[f["root"]], f["path"], int(f["size"]), int(f["mtime_ns"]), f["format"])
        try:
            data = source.file.read_bytes()
        except OSError:
            stale.append(f"{source.file} (missing)")
            continue
        if hashlib.sha256(data).hexdigest() != f["sha256"]:
            stale.append(f"{source.file} (changed)")
            continue
        read.append(ReadFile(source, f.get("doc_id"), data))
    if stale:
        raise _error("index.stale", store.folder,
                     f"{len(stale)} file(s) changed since the index was built: {', '.join(stale[:5])}"
                     + (" ..." if len(stale) > 5 else ""),
                     f"update it with `ctxbudget index build {' '.join(roots)} --out {store.folder}`")
    skipped = tuple(Skipped(roots[s["root"]], s["path"], s["reason"]) for s in store.manifest.get("skipped", []))
    return Built(store, tuple(read), skipped, searcher=store.searcher)


# --------------------------------------------------------------------------- building


@dataclass(slots=True)
class _Entry:
    """One supported file during a build: its source, id, bytes' digest, and either
    reused stored nodes or a freshly parsed document (or a skip)."""

    source: SourceFile
    doc_id: str
    sha256: str = ""
    size_read: int = 0
    nodes: list[Node] = field(default_factory=list)
    skipped: Skipped | None = None
    fate: str = "added"


def _old_nodes(store: StoredIndex, doc: int) -> list[Node]:
    """The stored nodes of document number ``doc`` (its rows are contiguous, in order)."""
    import numpy as np

    col = store._table[:, 1]
    lo, hi = (int(x) for x in np.searchsorted(col, [doc, doc + 1]))
    return [store.node_at(r) for r in range(lo, hi)]


def build_index(paths: Sequence[str | Path], out: str | Path, progress: Progress | None = None, *,
                scorer: str = "bm25", embedder: Any = None,
                embed_progress: Progress | None = None) -> BuildReport:
    """Build or update the index in ``out`` from the files under ``paths``.

    ``scorer`` ``"dense"`` or ``"hybrid"`` also stores every searched node's embedding
    (``embedder``, default the ``ctxbudget[dense]`` model), so that ``pack --index``
    can score with them; an index that keeps embeddings keeps them on every update
    (the nodes of unchanged files keep their vectors when the model is the same; the
    rest are embedded). ``embed_progress(done, total, "embedding")`` is called per batch.

    Raises:
        CandidateError: ``pack.missing_path``, ``pack.no_files``, ``pack.no_documents``,
            ``search.bad_scorer``, ``search.dense_unavailable`` (embeddings asked for or
            kept, and no model; raised before anything is read), ``search.bad_embedding``,
            or ``index.not_an_index`` when ``out`` exists and is not an index (nothing is
            overwritten).
    """
    from .search import Scorer, _load_dense_embedder, _parse_scorer

    t0 = time.perf_counter()
    chosen = _parse_scorer(scorer)
    target = Path(out)
    old: StoredIndex | None = None
    rebuilt: str | None = None
    if target.exists():
        if not (target / MANIFEST).is_file():
            if target.is_dir() and not any(target.iterdir()):
                pass
            else:
                raise _error("index.not_an_index", target,
                             f"{target} exists and is not a ctxbudget index (no {MANIFEST})",
                             "give --out a new folder or an existing index; nothing was written")
        else:
            try:
                manifest = read_manifest(target)
                _check_settings(target, manifest)
                old = StoredIndex(target, manifest)
            except CandidateError as exc:
                rebuilt = f"{exc.code}: {exc.message.split('; ')[0]}"
    kept = old.embeddings if old is not None else _raw_embeddings(target)
    embed = None
    if chosen is not Scorer.BM25 or kept is not None:
        embed = embedder if embedder is not None else _load_dense_embedder(
            chosen, None if chosen is not Scorer.BM25 else
            f"the index {target} keeps embeddings ({kept and kept.get('model')}), so updating it")
    sources, unsupported = walk(paths)
    ids = doc_ids(sources)
    previous: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    if old is not None:
        docno = 0
        for f in old.manifest["files"]:
            key = (old.manifest["roots"][f["root"]], f["path"])
            previous[key] = (docno if f.get("doc_id") is not None else -1, f)
            if f.get("doc_id") is not None:
                docno += 1
    entries: list[_Entry] = []
    bytes_read = 0
    for k, (source, doc) in enumerate(zip(sources, ids), 1):
        entry = _Entry(source, doc)
        key = (os.path.abspath(source.root), source.path)
        prior = previous.pop(key, None)
        try:
            data = source.file.read_bytes()
        except OSError as exc:
            entry.skipped = Skipped(source.root, source.path, f"cannot be read ({exc.strerror or exc})")
            entries.append(entry)
            continue
        entry.sha256 = hashlib.sha256(data).hexdigest()
        entry.size_read = len(data)
        bytes_read += len(data)
        if (old is not None and prior is not None and prior[1]["sha256"] == entry.sha256
                and prior[1].get("id") == doc and prior[1].get("format") == source.format):
            entry.fate = "unchanged"
            if prior[0] >= 0:
                entry.nodes = _old_nodes(old, prior[0])
            else:
                entry.skipped = Skipped(source.root, source.path, prior[1].get("skip_reason") or "skipped")
        else:
            entry.fate = "changed" if prior is not None else "added"
            parsed = read_document(source, doc)
            if isinstance(parsed, Document):
                from .index import build_nodes

                entry.nodes = build_nodes(parsed.parsed, doc)
            else:
                entry.skipped = parsed
        entries.append(entry)
        if progress is not None:
            progress(k, len(sources), str(source.file))
    removed = tuple(p for (_root, p) in previous)
    if not any(e.nodes for e in entries):
        reasons = "; ".join(f"{e.source.path}: {e.skipped.reason}" for e in entries if e.skipped)[:500]
        raise CandidateError("pack.no_documents",
                             f"no file under {', '.join(map(str, paths))} could be indexed ({reasons}); "
                             "give files with text in a supported format", path="$.paths")
    index = HierarchicalIndex()
    for e in entries:
        if e.nodes:
            index.add_nodes(e.nodes, e.doc_id)
    vectors = None
    if embed is not None:
        reuse = {e.doc_id for e in entries if e.fate == "unchanged" and e.nodes}
        vectors = _Vectors(embed, old if kept is not None else None, reuse, embed_progress)
    _write(target, index, entries, unsupported, vectors)
    skipped = tuple(e.skipped for e in entries if e.skipped is not None) + tuple(unsupported)
    return BuildReport(
        str(target),
        tuple(e.source.path for e in entries if e.fate == "added"),
        tuple(e.source.path for e in entries if e.fate == "changed"),
        removed,
        tuple(e.source.path for e in entries if e.fate == "unchanged"),
        skipped, sum(1 for e in entries if e.nodes), len(index.nodes), bytes_read,
        sum(e.size_read for e in entries), time.perf_counter() - t0, rebuilt,
        vectors.model if vectors is not None else None, vectors.embedded if vectors is not None else 0)


def _raw_embeddings(target: Path) -> dict[str, Any] | None:
    """The ``embeddings`` entry of an index's manifest that cannot be loaded as it is
    (another format or settings: it is rebuilt, and keeps embeddings if it had them)."""
    try:
        found = json.loads((target / MANIFEST).read_text(encoding="utf-8")).get("embeddings")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    return found if isinstance(found, dict) else None


class _Vectors:
    """The embeddings of a build: the nodes of ``reuse`` documents keep the vectors the
    ``old`` index stored for them when it was embedded by the same model; the rest are
    embedded."""

    def __init__(self, embed: Any, old: StoredIndex | None, reuse: set[str], progress: Progress | None) -> None:
        from .search import embedder_name

        self.embed, self.model, self.progress = embed, embedder_name(embed), progress
        meta = old.embeddings if old is not None else None
        self.old = old if meta is not None and meta.get("model") == self.model else None
        self.reuse = reuse if self.old is not None else set()
        self.embedded = 0
        self.dim: int | None = None

    def _old_rows(self, level: IndexLevel) -> tuple[dict[str, int], Any] | None:
        import numpy as np

        if self.old is None or level.value not in {lv["level"] for lv in self.old.manifest["levels"]}:
            return None
        folder = self.old.folder / "levels" / level.value
        try:
            rows = np.load(folder / "rows.npy", allow_pickle=False).tolist()
            unit = np.load(folder / EMBEDDINGS, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return None  # unreadable: everything is embedded again
        if unit.shape[0] != len(rows) or unit.dtype != np.float32:
            return None
        ids = self.old._ids
        return {ids[r]: j for j, r in enumerate(rows)}, unit

    def of(self, level: IndexLevel, nodes: Sequence[Node]) -> Any:
        """The unit rows (float32) of ``nodes``, in order."""
        import numpy as np

        from .search import embed_nodes

        old = self._old_rows(level) if self.reuse else None
        take = [None if old is None or n.doc_id not in self.reuse else old[0].get(n.node_id) for n in nodes]
        todo = [i for i, t in enumerate(take) if t is None]
        report = self.progress

        def step(done: int, total: int) -> None:
            if report is not None:
                report(done, total, f"{level.value} nodes")

        fresh = embed_nodes(self.embed, [nodes[i].content for i in todo], progress=step)
        self.embedded += len(todo)
        dim = fresh.shape[1] if todo else (old[1].shape[1] if old is not None else 0)
        if self.dim is not None and dim != self.dim:
            raise CandidateError("search.bad_embedding", f"the embedder returned rows of width {dim} for "
                                 f"{level.value} nodes after width {self.dim}; it must always return the same width",
                                 path="$.embedder")
        self.dim = dim
        out = np.empty((len(nodes), dim), dtype=np.float32)
        if todo:
            out[todo] = fresh
        kept = [(i, t) for i, t in enumerate(take) if t is not None]
        if kept and old is not None:
            out[[i for i, _ in kept]] = old[1][[t for _, t in kept]]
        return out


def _write(target: Path, index: HierarchicalIndex, entries: list[_Entry], unsupported: list[Skipped],
           vectors: _Vectors | None = None) -> None:
    import numpy as np

    from . import bm25

    tmp = target.with_name(f".{target.name}.building-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        roots = list(dict.fromkeys(os.path.abspath(e.source.root) for e in entries))
        for s in unsupported:
            if os.path.abspath(s.root) not in roots:
                roots.append(os.path.abspath(s.root))
        row_of = {nid: i for i, nid in enumerate(index.nodes)}
        doc_of = {d.doc_id: i for i, d in enumerate(index.documents())}
        titles: list[str] = []
        cells: list[tuple[int, int, int, int, int, int]] = []
        for n in index.nodes.values():
            title = -1
            if n.title is not None:
                titles.append(n.title)
                title = len(titles) - 1
            cells.append((_LEVEL_CODES[n.level], doc_of[n.doc_id], n.start, n.end,
                          row_of[n.parent_id] if n.parent_id is not None else -1, title))
        table = np.array(cells, dtype=np.int64).reshape(len(cells), 6)
        np.save(tmp / "nodes.npy", table, allow_pickle=False)
        (tmp / "ids.txt").write_text("\n".join(index.nodes), encoding="utf-8")
        (tmp / "titles.json").write_text(json.dumps(titles, ensure_ascii=False), encoding="utf-8")
        files = []
        pos = 0
        texts = []
        for e in entries:
            rec: dict[str, Any] = {
                "root": roots.index(os.path.abspath(e.source.root)), "path": e.source.path,
                "size": e.size_read or e.source.size, "mtime_ns": e.source.mtime_ns, "sha256": e.sha256,
                "format": e.source.format, "id": e.doc_id, "doc_id": e.doc_id if e.nodes else None}
            if e.nodes:
                data = e.nodes[0].content.encode("utf-8")
                rec["text_bytes"] = [pos, pos + len(data)]
                rec["nodes"] = len(e.nodes)
                texts.append(data)
                pos += len(data)
            elif e.skipped is not None:
                rec["skip_reason"] = e.skipped.reason
            files.append(rec)
        (tmp / "text.txt").write_bytes(b"".join(texts))
        levels = []
        for level, nodes, postings in _level_states(index):
            folder = tmp / "levels" / level.value
            folder.mkdir(parents=True)
            np.save(folder / "rows.npy", np.array([row_of[n.node_id] for n in nodes], dtype=np.int64),
                    allow_pickle=False)
            if postings is not None:
                bm25.save(postings, folder)
            if vectors is not None:
                np.save(folder / EMBEDDINGS, vectors.of(level, nodes), allow_pickle=False)
            levels.append({"level": level.value, "nodes": len(nodes), "terms": postings is not None})
        skipped = [{"root": roots.index(os.path.abspath(e.source.root)), "path": e.source.path,
                    "reason": e.skipped.reason} for e in entries if e.skipped is not None]
        skipped += [{"root": roots.index(os.path.abspath(s.root)), "path": s.path, "reason": s.reason}
                    for s in unsupported]
        counts = {lv.value: 0 for lv in IndexLevel}
        for n in index.nodes.values():
            counts[n.level.value] += 1
        manifest = {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "engine_version": __version__,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "roots": roots, "files": files, "skipped": skipped, "settings": _settings(),
            "levels": levels, "counts": counts,
            "embeddings": None if vectors is None else {"model": vectors.model, "dim": vectors.dim,
                                                        "dtype": "float32", "unit": True},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        _swap(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _own_texts(order: Sequence[Node], kids_of: Mapping[str, Sequence[Node]]) -> list[str]:
    """Each node's text outside its children (a leaf's whole text), gaps joined by newlines."""
    own_texts = []
    for node in order:
        kids = kids_of[node.node_id]
        if not kids:
            own_texts.append(node.content)
            continue
        gaps, pos = [], 0
        for kid in kids:
            gaps.append(node.content[pos:kid.start - node.start])
            pos = kid.end - node.start
        gaps.append(node.content[pos:])
        own_texts.append("\n".join(g for g in gaps if g.strip()))
    return own_texts


def node_terms(index: HierarchicalIndex) -> dict[str, list[str]]:
    """The BM25 terms of every node below the documents, each character analysed once.

    A node's terms are those of its own text outside its children plus its children's
    (a paragraph's are its sentences', a section's its paragraphs' and sub-sections'):
    the analysis (``Analyzer.terms``: words, camelCase parts, stop words, stemming) works word by word
    and children never split a word, so this is the bag of terms of the node's whole text
    that :class:`SemanticSearch` computes, at a fraction of the work (a section's text
    is part of every enclosing section's). A build does not make these lists: it takes
    the same bags as ranges of one array of term ids (:func:`_level_states`)."""
    from .analyzer import analyze_many

    order = [n for n in index.nodes.values() if n.level is not IndexLevel.DOCUMENT]
    kids_of = {n.node_id: index.children(n.node_id) for n in order}
    own_terms = analyze_many(_own_texts(order, kids_of))
    terms: dict[str, list[str]] = {}
    for node, own in zip(reversed(order), reversed(own_terms)):
        out = list(own)
        for kid in kids_of[node.node_id]:
            out += terms[kid.node_id]
        terms[node.node_id] = out
    return terms


def _segments(starts: Any, ends: Any) -> Any:
    """The positions ``starts[i] .. ends[i] - 1`` for every i, one after another."""
    import numpy as np

    lens = ends - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
    out: Any = shift + np.arange(total, dtype=np.int64)
    return out


def _level_states(index: HierarchicalIndex) -> list[tuple[IndexLevel, list[Node], Any]]:
    """Per searched level (as :class:`SemanticSearch` builds them): its nodes and the
    BM25 postings of their terms (``None`` when no node has a term).

    The postings are those ``bm25.build(with_headings(nodes, terms))`` gives (a test
    holds them equal), built from arrays: every node's own text (outside its children)
    is analysed once and its terms laid out as term ids in one array, in reading order;
    a node's subtree is a contiguous run of that order, so its bag of terms is one range
    of the array, and its section title's terms (BM25F heading weights) another range,
    taken once or more. No per-node term list is made."""
    import numpy as np

    from . import bm25, search

    analyzer = search.DEFAULT_ANALYZER
    own_w, context_w = search.HEADING_WEIGHTS
    order = [n for n in index.nodes.values() if n.level is not IndexLevel.DOCUMENT]
    nodes_by_id, child_ids = index.nodes, index._children
    kids_of = {n.node_id: [nodes_by_id[c] for c in child_ids[n.node_id]] for n in order}
    own_texts = _own_texts(order, kids_of)
    # Each distinct word run analysed once (analyze_many's terms: a blank text has none).
    own_runs, run_terms = analyzer.runs_many([t if t.strip() else "" for t in own_texts])
    pos_of = {n.node_id: i for i, n in enumerate(order)}
    # Subtree sizes (children come after their parent in reading order).
    size = [1] * len(order)
    for i in range(len(order) - 1, -1, -1):
        parent = pos_of.get(order[i].parent_id or "")
        if parent is not None:
            size[parent] += size[i]
    # Nearest section of each node (itself for a section) and its title's terms.
    section_at = [-1] * len(order)
    for i, n in enumerate(order):
        if n.level is IndexLevel.SECTION:
            section_at[i] = i
        else:
            parent = pos_of.get(n.parent_id or "")
            section_at[i] = section_at[parent] if parent is not None else -1
    titled = [i for i, n in enumerate(order) if n.level is IndexLevel.SECTION and n.title]
    title_terms = analyzer.terms_many([order[i].title or "" for i in titled])
    vocab = sorted(set(chain.from_iterable(run_terms.values())) | set(chain.from_iterable(title_terms)))
    id_of = {t: i for i, t in enumerate(vocab)}
    run_ids = {r: [id_of[t] for t in terms] for r, terms in run_terms.items()}
    run_len = {r: len(ids) for r, ids in run_ids.items()}
    lens = [sum(map(run_len.__getitem__, rs)) for rs in own_runs]
    flat = np.fromiter(chain.from_iterable(map(run_ids.__getitem__, chain.from_iterable(own_runs))),
                       dtype=np.int64, count=sum(lens))
    off = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(lens, out=off[1:])
    t_flat = np.fromiter(map(id_of.__getitem__, chain.from_iterable(title_terms)), dtype=np.int64,
                         count=sum(map(len, title_terms)))
    t_off = np.zeros(len(titled) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in title_terms], out=t_off[1:])
    title_no = np.full(len(order), -1, dtype=np.int64)
    title_no[titled] = np.arange(len(titled))
    section_arr = np.array(section_at, dtype=np.int64)
    size_arr = np.array(size, dtype=np.int64)
    level_arr = np.array([_LEVEL_CODES[n.level] for n in order], dtype=np.int64)
    out = []
    for level in search.DEFAULT_LEVELS:
        rows_at = np.flatnonzero(level_arr == _LEVEL_CODES[level])
        if len(rows_at) == 0:
            continue
        nodes = [order[i] for i in rows_at.tolist()]
        count = len(rows_at)
        starts, ends = off[rows_at], off[rows_at + size_arr[rows_at]]
        cols = [flat[_segments(starts, ends)]]
        rows = [np.repeat(np.arange(count, dtype=np.int64), ends - starts)]
        lengths = ends - starts
        times = own_w if level is IndexLevel.SECTION else context_w
        sec = section_arr[rows_at]
        tno = np.where(sec >= 0, title_no[np.maximum(sec, 0)], -1)
        has = tno >= 0
        t_starts = np.where(has, t_off[np.maximum(tno, 0)], 0)
        t_ends = np.where(has, t_off[np.maximum(tno, 0) + 1], 0)
        for _ in range(times):
            cols.append(t_flat[_segments(t_starts, t_ends)])
            rows.append(np.repeat(np.arange(count, dtype=np.int64), t_ends - t_starts))
        lengths = lengths + times * (t_ends - t_starts)
        out.append((level, nodes, bm25.build_from_ids(np.concatenate(cols), np.concatenate(rows), lengths,
                                                      vocab)))
    return out


def _swap(new: Path, target: Path) -> None:
    """Put ``new`` in place of ``target`` (renames; the old index is removed after)."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)
