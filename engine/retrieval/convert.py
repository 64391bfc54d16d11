"""Search results and index nodes → candidate rows: the one conversion that ``pack`` and
the seed's ``create_budget_items_from_search`` share.

What goes in: search results (anything with ``node_id``, ``relevance_score`` and
``metadata``) and a hierarchical index (anything with ``nodes``: id → node with
``content`` and ``level``; ``parent_id``, ``doc_id``, ``order`` used when present). What
comes out: plain rows in the candidates-file shape (``source_id``, ``content``,
``relevance_score``, ``level``, ``metadata``, ``parent_id``), checked later like any
candidate. The row's ``metadata`` is a copy of the result's, plus ``parent_id``,
``doc_id``, ``ancestors`` (nearest first) and ``order`` when the index knows them, so that
hierarchy and document-order rules work.

:func:`pinned_rows` adds the nodes the policy's pins select that search did not return:
a pin never goes missing because a query did not happen to find it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from fnmatch import fnmatchcase
from typing import Any, Protocol, runtime_checkable

from ..errors import CandidateError
from ..policy import Matcher

#: Relevance given to a pinned node that search did not return (pins are taken whatever
#: their score; it carries no objective value).
PINNED_FETCH_RELEVANCE = 0.0


@runtime_checkable
class SearchResultLike(Protocol):
    """What the conversion reads of a search result."""

    @property
    def node_id(self) -> str: ...

    @property
    def relevance_score(self) -> float: ...

    @property
    def metadata(self) -> Mapping[str, Any]: ...


class NodeLike(Protocol):
    """What it reads of an index node: ``content`` and ``level`` (an Enum or a str);
    ``parent_id``, ``doc_id`` and ``order`` are used when present."""

    @property
    def content(self) -> str: ...

    @property
    def level(self) -> Any: ...


class IndexLike(Protocol):
    """What it reads of a hierarchical index: ``nodes`` mapping node id to node."""

    @property
    def nodes(self) -> Mapping[str, Any]: ...


def ancestors(nodes: Mapping[str, Any], node_id: str) -> list[str]:
    """Ancestor ids of ``node_id``, nearest first (a cycle or a missing parent ends it)."""
    out: list[str] = []
    pid = getattr(nodes[node_id], "parent_id", None)
    while pid is not None and pid not in out:
        out.append(pid)
        parent = nodes.get(pid)
        pid = getattr(parent, "parent_id", None) if parent is not None else None
    return out


def node_metadata(node: Any) -> dict[str, Any]:
    """The metadata search gives a node (``doc_id``, ``level``, ``parent_id``, ``order``,
    ``title``; those the node has), for a node that search did not return."""
    out: dict[str, Any] = {}
    for key in ("doc_id", "level", "parent_id", "order", "title"):
        value = getattr(node, key, None)
        if value is not None:
            out[key] = value.value if isinstance(value, Enum) else value
    return out


def node_row(nodes: Mapping[str, Any], node_id: str, relevance: float,
             metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The candidate row of index node ``node_id`` scored ``relevance``."""
    node = nodes[node_id]
    level = node.level.name if isinstance(node.level, Enum) else str(node.level)
    meta = dict(metadata or {})
    parent = getattr(node, "parent_id", None)
    if parent is not None:
        meta.setdefault("parent_id", parent)
        meta.setdefault("ancestors", ancestors(nodes, node_id))
    for key in ("doc_id", "order"):
        value = getattr(node, key, None)
        if value is not None:
            meta.setdefault(key, value)
    return {"source_id": node_id, "content": node.content, "relevance_score": relevance,
            "level": level, "metadata": meta, "parent_id": meta.get("parent_id")}


def search_rows(results: Iterable[SearchResultLike], index: IndexLike, *,
                on_missing: str = "error") -> tuple[list[dict[str, Any]], list[str]]:
    """Rows for the results whose node is in the index, and the ids of those that are not.

    A result naming no index node raises ``CandidateError`` (``search.missing_node``,
    listing every such id) unless ``on_missing="skip"``, which only reports them."""
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
    nodes = index.nodes
    results = list(results)
    missing = [r.node_id for r in results if r.node_id not in nodes]
    if missing and on_missing == "error":
        raise CandidateError(
            "search.missing_node",
            f"{len(missing)} search result(s) name nodes that are not in the index: "
            f"{', '.join(map(repr, missing[:10]))}{' ...' if len(missing) > 10 else ''}; "
            "re-index, or pass on_missing='skip' to drop them with a warning")
    rows = [node_row(nodes, r.node_id, r.relevance_score, r.metadata) for r in results if r.node_id in nodes]
    return rows, missing


def pinned_rows(pins: Sequence[Matcher], index: IndexLike, have: Iterable[str]) -> list[dict[str, Any]]:
    """Rows for the index nodes some pin selects that are not among ``have`` (the ids
    search returned), in pin order then index order. Each row's metadata says which pin
    fetched it (``fetched_for``); a metadata pin is matched against the row's metadata."""
    nodes = index.nodes
    taken = set(have)
    out: list[dict[str, Any]] = []

    def row_of(node_id: str) -> dict[str, Any]:
        return node_row(nodes, node_id, PINNED_FETCH_RELEVANCE, node_metadata(nodes[node_id]))

    for pin in pins:
        if pin.kind == "id":
            found = [pin.id] if pin.id is not None and pin.id in nodes else []
        elif pin.kind == "glob":
            found = [n for n in nodes if fnmatchcase(n, pin.glob or "")]
        else:
            found = [n for n in nodes if n not in taken and pin.matches(n, row_of(n)["metadata"])]
        for node_id in found:
            if node_id in taken:
                continue
            taken.add(node_id)
            row = row_of(node_id)
            row["metadata"]["fetched_for"] = pin.path
            out.append(row)
    return out
