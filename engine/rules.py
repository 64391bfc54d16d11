"""The rule values a Problem is made of: linear rules, pins, chains (hierarchy and
near-duplicate conflicts), missing pins.

Pure data, shared by :mod:`engine.problem` (which builds them), :mod:`engine.compile`
(one constraint family per :class:`RuleKind`), :mod:`engine.feasibility` and the
allocation stage (which report on them).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import compress
from enum import Enum
from typing import Any

from .errors import Location


class RuleKind(Enum):
    BUDGET = "budget"
    LEVEL_MIN_ITEMS = "level_min_items"
    LEVEL_MAX_ITEMS = "level_max_items"
    LEVEL_MIN_TOKENS = "level_min_tokens"
    LEVEL_MAX_TOKENS = "level_max_tokens"
    SOURCE_MAX_ITEMS = "source_max_items"
    SOURCE_MAX_TOKENS = "source_max_tokens"
    PREFER_PARENT = "prefer_parent"
    PINNED = "pinned"
    HIERARCHY = "hierarchy"
    NEAR_DUPLICATE = "near_duplicate"


@dataclass(frozen=True, slots=True)
class LinearRule:
    """``lower <= sum(coef_i * take_i for i in members) <= upper`` (either bound may be None).

    ``coefs`` is None when every coefficient is 1 (an item count)."""

    key: str
    kind: RuleKind
    path: str
    location: Location | None
    label: str
    members: tuple[int, ...]
    coefs: tuple[int, ...] | None
    lower: int | None
    upper: int | None

    def total(self, chosen: frozenset[int] | set[int]) -> int:
        inside = map(chosen.__contains__, self.members)  # the same sums, by C-level loops
        if self.coefs is None:
            return sum(inside)
        return sum(compress(self.coefs, inside))

    def holds(self, chosen: frozenset[int] | set[int]) -> bool:
        t = self.total(chosen)
        return (self.lower is None or t >= self.lower) and (self.upper is None or t <= self.upper)


@dataclass(frozen=True, slots=True)
class PinRule:
    """Candidate ``index`` must be included (matched by the pin at ``path``, the
    ``position``-th entry of the policy's ``pinned`` list)."""

    key: str
    path: str
    location: Location | None
    label: str
    index: int
    position: int = 0


@dataclass(frozen=True, slots=True)
class MissingPin:
    """A ``required: false`` pin that matched no candidate (recorded, not an error)."""

    path: str
    label: str
    location: Location | None

    def to_dict(self) -> dict[str, Any]:
        return {"pin": self.label, "path": self.path,
                "location": str(self.location) if self.location else None}


@dataclass(frozen=True, slots=True)
class Chain:
    """At most one of ``members`` may be included: an ancestor and its descendant
    (``kind`` HIERARCHY), or two near-duplicate texts (NEAR_DUPLICATE, with their
    ``similarity``)."""

    key: str
    path: str
    location: Location | None
    label: str
    members: tuple[int, ...]
    kind: RuleKind = RuleKind.HIERARCHY
    similarity: float | None = None
    threshold: float | None = None
