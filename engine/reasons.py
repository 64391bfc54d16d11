"""Why each candidate was included or excluded: a closed set of reason codes with evidence.

Every candidate ends with exactly one :class:`Reason`. The Enum values are the strings
written to audit JSON, so they are part of the interface. ``evidence`` is a short human
sentence with the numbers that justify the decision ("relevance 0.31 < min 0.35",
"needed 412 tokens, 97 left"); ``numbers`` holds the same figures for machines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping


class Decision(Enum):
    INCLUDED = "included"
    EXCLUDED = "excluded"


class ReasonCode(Enum):
    # inclusion
    PINNED = "pinned"
    SELECTED = "selected"
    LEVEL_MINIMUM = "level_minimum"
    # exclusion before any strategy runs
    BELOW_MIN_RELEVANCE = "below_min_relevance"
    BLOCKED = "blocked"
    TOO_LARGE = "too_large"
    # exclusion by a strategy
    OVER_BUDGET = "over_budget"
    NOT_SELECTED = "not_selected"
    LEVEL_QUOTA = "level_quota"
    LEVEL_SHARE = "level_share"
    SOURCE_CAP = "source_cap"
    HIERARCHY = "hierarchy_conflict"
    NEAR_DUPLICATE = "near_duplicate"
    PREFER_PARENT = "prefer_parent"
    ZERO_VALUE = "zero_value"
    # exclusion after assembly
    REPAIR = "dropped_in_repair"

    @property
    def includes(self) -> bool:
        # by value: a str's hash is cached, an Enum member's is computed in Python
        return self._value_ in _INCLUDING_VALUES


_INCLUDING_VALUES = frozenset({"pinned", "selected", "level_minimum"})


@dataclass(frozen=True, slots=True)
class Reason:
    """One decision's reason: a code, a sentence with numbers, the rule's policy path."""

    code: ReasonCode
    evidence: str
    rule: str | None = None
    numbers: Mapping[str, Any] = field(default_factory=dict)

    @property
    def decision(self) -> Decision:
        return Decision.INCLUDED if self.code.includes else Decision.EXCLUDED

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code.value,
            "evidence": self.evidence,
            "rule": self.rule,
            "numbers": dict(self.numbers),
        }
