"""Which pin and which block selects each candidate, and what a pin that matches nothing means.

What goes in: the Policy, the candidates and an id → candidate map. What comes out:
:class:`Matched` — per candidate the position of the first pin and of the first block
that select it, and the ``required: false`` pins that matched nothing (recorded as
:class:`~engine.rules.MissingPin`). A required pin that matches no candidate, and an item
both pinned and blocked, are :class:`~engine.errors.InfeasibleError`s naming the pins by
label, policy path and file:line: a pin never goes missing silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .candidates import Candidate
from .errors import InfeasibleError
from .policy import Matcher, Policy
from .rules import MissingPin


def core_entry(policy: Policy, path: str, label: str) -> dict[str, object]:
    """One rule of an infeasibility core, as the audit record lists it."""
    where = policy.location_of(path)
    return {"rule": label, "path": path, "location": str(where) if where else None}


@dataclass(frozen=True, slots=True)
class Matched:
    """Per candidate, the position of the first pin and of the first block matching it."""

    pin_of: tuple[int | None, ...]
    block_of: tuple[int | None, ...]
    missing: tuple[MissingPin, ...]


def _pin_hits(m: Matcher, cands: Sequence[Candidate], by_id: Mapping[str, Candidate]) -> list[int]:
    if m.kind == "id":  # an id matches at most its own candidate: no scan
        c = by_id.get(m.id or "")
        return [] if c is None else [c.index]
    return [c.index for c in cands if m.matches(c.source_id, c.metadata)]


def match_pins(policy: Policy, cands: Sequence[Candidate], by_id: Mapping[str, Candidate]) -> Matched:
    """Which pin and which block selects each candidate. Raises ``InfeasibleError`` for an
    item both pinned and blocked, and for required pins that match no candidate."""
    pin_of: list[int | None] = [None] * len(cands)
    lost: list[Matcher] = []
    for k, m in enumerate(policy.pinned):
        hits = _pin_hits(m, cands, by_id)
        if not hits:
            lost.append(m)
        for i in hits:
            if pin_of[i] is None:
                pin_of[i] = k
    blocked = policy.blocked
    block_of: list[int | None] = [None] * len(cands)
    if blocked:
        for i, c in enumerate(cands):
            b = next((k for k, m in enumerate(blocked) if m.matches(c.source_id, c.metadata)), None)
            block_of[i] = b
            p = pin_of[i]
            if p is not None and b is not None:
                raise _pinned_and_blocked(policy, c, policy.pinned[p], blocked[b])
    required = [m for m in lost if m.required]
    if required:
        raise missing_pin_error(policy, required)
    missing = tuple(MissingPin(m.path, m.label, policy.location_of(m.path)) for m in lost)
    return Matched(tuple(pin_of), tuple(block_of), missing)


def _pinned_and_blocked(policy: Policy, c: Candidate, pin: Matcher, block: Matcher) -> InfeasibleError:
    return InfeasibleError(
        "allocation.infeasible",
        f"item {c.source_id!r} is both pinned ({pin.path}) and blocked ({block.path}); "
        "remove it from one of the two lists",
        path=pin.path,
        location=policy.location_of(pin.path),
        details={"core": [core_entry(policy, pin.path, f"pinned {c.source_id!r}"),
                          core_entry(policy, block.path, f"blocked {c.source_id!r}")]},
    )


def missing_pin_error(policy: Policy, pins: Sequence[Matcher]) -> InfeasibleError:
    """The error for required pins that match no candidate: each pin by label, policy
    path and file:line, and how to fix it."""
    def cite(m: Matcher) -> str:
        where = policy.location_of(m.path)
        return f"{m.label} ({m.path}{', ' + str(where) if where else ''})"

    names = " and ".join(cite(m) for m in pins)
    verb = "matches" if len(pins) == 1 else "match"
    first = pins[0]
    return InfeasibleError(
        "allocation.pin_missing",
        f"pinned {names} {verb} no candidate; add the pinned item to the candidates, correct "
        "the pin, or set `required: false` on it to allow it to be missing (then it is recorded "
        "as missing instead)",
        path=first.path,
        location=policy.location_of(first.path),
        details={"core": [core_entry(policy, m.path, f"pinned {m.label} (matches no candidate)")
                          for m in pins], "minimal": True},
    )
