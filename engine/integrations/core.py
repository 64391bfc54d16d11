"""The framework-neutral half of every adapter: items in, one audited decision out.

What goes in: a policy (a :class:`~engine.policy.Policy` or the path of a policy file),
and per call a sequence of :class:`Item` — what an adapter read from one framework
document: its id (``None`` when the framework has none), text, score (``None`` when it
has none), level, parent id and metadata. What comes out: an :class:`Outcome` — the
:class:`~engine.decide.Decided` decision (allocation and audit record) and one
:class:`Annotation` per item, in input order, that the adapter writes back into the
framework document's metadata under the :data:`META_KEYS`.

The conversion rules live here once, so the three adapters cannot disagree:

* an item without an id gets ``item-<first 12 hex of its content's sha256>`` (and
  ``~2``, ``~3``... for repeated texts): a LangChain ``Document.id`` is ``None`` unless
  the vector store set one;
* an item without a score takes the policy's ``spec.candidates.default_score``; with
  none, it is ``CandidateError`` ``candidate.missing_score`` (a missing score must never
  quietly become 0);
* NumPy scores and ``datetime``/NumPy/``Decimal``/``UUID`` metadata values are taken as
  :mod:`engine.candidates` defines (exact value, canonical JSON form);
* the :data:`META_KEYS` a previous run wrote are dropped from the metadata the engine
  sees, so a document passed through twice is decided on its own fields.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Union

from ..audit.log import AuditLog
from ..audit.privacy import AuditSecret
from ..candidates import DEFAULT_LEVEL
from ..decide import Decided, decide, policy_audit_log
from ..errors import CandidateError
from ..policy import BudgetStrategy, Policy, load_policy
from ..tokens import content_sha256

#: Metadata keys each adapter writes into every document it was given.
META_DECISION_ID = "ctxbudget_decision_id"
META_DECISION = "ctxbudget_decision"
META_REASON = "ctxbudget_reason"
META_TOKENS = "ctxbudget_tokens"
META_KEYS = (META_DECISION_ID, META_DECISION, META_REASON, META_TOKENS)

#: A policy as the adapters take it: the object, or the path of its file.
PolicyLike = Union[Policy, str, "os.PathLike[str]"]
#: Where the audit record goes: a log, a log's path, ``None`` (the policy's own
#: ``audit.log`` when it names one) or ``False`` (no record is written).
AuditLogLike = Union[AuditLog, str, "os.PathLike[str]", bool, None]


@dataclass(frozen=True, slots=True)
class Item:
    """One framework document as the engine needs it (``source_id``/``score`` may be
    ``None``: filled in or refused by :meth:`Selector.select`)."""

    source_id: str | None
    content: str
    score: Any
    level: str = DEFAULT_LEVEL
    parent_id: str | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Annotation:
    """The decision about one item, as written back into its metadata."""

    decision_id: str
    source_id: str
    included: bool
    reason: str
    tokens: int

    def as_metadata(self) -> dict[str, Any]:
        return {META_DECISION_ID: self.decision_id,
                META_DECISION: "included" if self.included else "excluded",
                META_REASON: self.reason, META_TOKENS: self.tokens}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One decision: ``annotations`` in input order; ``context_order`` the input
    positions of the included items, in the order the policy assembles them."""

    decided: Decided
    annotations: tuple[Annotation, ...]
    context_order: tuple[int, ...]

    @property
    def decision_id(self) -> str:
        return str(self.decided.record["decision_id"])

    @property
    def record(self) -> dict[str, Any]:
        """The audit record (written to the log when there is one)."""
        return self.decided.record


def resolve_policy(policy: PolicyLike) -> Policy:
    """``policy`` itself, or the policy file it names (loaded and checked once)."""
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, (str, os.PathLike)):
        return load_policy(Path(policy))
    raise TypeError(f"policy must be a Policy or the path of a policy file, got {type(policy).__name__}")


def resolve_log(policy: Policy, audit_log: AuditLogLike) -> AuditLog | None:
    """The log a decision is appended to (see :data:`AuditLogLike`)."""
    if audit_log is False:
        return None
    if audit_log is None or audit_log is True:
        return policy_audit_log(policy)
    if isinstance(audit_log, AuditLog):
        return audit_log
    if isinstance(audit_log, (str, os.PathLike)):
        return AuditLog(Path(audit_log))
    raise TypeError(f"audit_log must be an AuditLog, a path, None or False, got {type(audit_log).__name__}")


def default_ids(items: Sequence[Item]) -> list[str]:
    """Each item's id: its own, else ``item-<sha256 prefix of its text>`` (``~n`` for the
    n-th repeat of a text), never one an item already has."""
    taken = {it.source_id for it in items if it.source_id}
    out: list[str] = []
    for it in items:
        if it.source_id:
            out.append(it.source_id)
            continue
        base = "item-" + content_sha256(it.content)[:12] if isinstance(it.content, str) else "item"
        sid, n = base, 1
        while sid in taken:
            n += 1
            sid = f"{base}~{n}"
        taken.add(sid)
        out.append(sid)
    return out


T = TypeVar("T")


def fetch_ancestors(items: Sequence[T], *, node_id: Callable[[T], str], parent_id: Callable[[T], str | None],
                    score: Callable[[T], Any], fetch: Callable[[str], T | None]) -> list[tuple[T, float | None]]:
    """Auto-merging's candidates: the ancestors of ``items`` that are not among them,
    fetched (``fetch`` returns ``None`` for an id it does not hold, which ends that
    chain), each with the mean score of the given items below it (``None`` when none of
    them has a score), first found first. LlamaIndex's ``AutoMergingRetriever`` and
    Haystack's score a merged parent the same way."""
    given = {node_id(x): x for x in items}
    found: dict[str, T] = {}
    scores: dict[str, list[float]] = {}
    for x in items:
        node, seen, value = x, set(), score(x)
        while (pid := parent_id(node)) is not None and pid not in seen:
            seen.add(pid)
            parent = given.get(pid)
            if parent is None:
                parent = found.get(pid)
            if parent is None:
                parent = fetch(pid)
                if parent is None:
                    break  # not stored: the chain ends here
                found[pid] = parent
            if pid in found and value is not None:
                scores.setdefault(pid, []).append(float(value))
            node = parent
    return [(node, sum(scores[i]) / len(scores[i]) if scores.get(i) else None) for i, node in found.items()]


class Selector:
    """Decides a sequence of :class:`Item` under one policy and records it.

    Args:
        policy: a Policy, or the path of a policy file (loaded once, here).
        audit_log: see :data:`AuditLogLike`.
        strategy: overrides the policy's strategy (None: the policy's).
        secret: keys the record's digests (default: as :func:`engine.decide.log_secret`).
        score_hint: how a user of this framework supplies a score (for the error).
    """

    def __init__(self, policy: PolicyLike, *, audit_log: AuditLogLike = None,
                 strategy: BudgetStrategy | None = None, secret: AuditSecret | None = None,
                 score_hint: str = "give every item a score") -> None:
        self.policy = resolve_policy(policy)
        self.audit_log = resolve_log(self.policy, audit_log)
        self.strategy = strategy
        self.secret = secret
        self.score_hint = score_hint

    def rows(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        """The items as candidate rows (ids and missing scores filled in)."""
        default = self.policy.candidates.default_score if self.policy.candidates else None
        rows = []
        for i, (it, sid) in enumerate(zip(items, default_ids(items))):
            score = it.score
            if score is None:
                if default is None:
                    raise CandidateError(
                        "candidate.missing_score",
                        f"item {sid!r} (#{i}) has no relevance score; {self.score_hint}, or set "
                        "spec.candidates.default_score in the policy to score such items",
                        path=f"$[{i}].relevance_score")
                score = default
            meta = {k: v for k, v in (it.metadata or {}).items() if k not in META_KEYS}
            rows.append({"source_id": sid, "content": it.content, "relevance_score": score,
                         "level": it.level, "parent_id": it.parent_id, "metadata": meta})
        return rows

    def select(self, items: Sequence[Item], query: str | None = None) -> Outcome:
        """Decide ``items`` (``query``: the question, recorded as the policy's privacy
        says). Raises what :func:`engine.decide.decide` raises."""
        decided = decide(self.rows(items), self.policy, audit_log=self.audit_log,
                         strategy=self.strategy, secret=self.secret, query=query)
        did = str(decided.record["decision_id"])
        notes = tuple(Annotation(did, d.source_id, d.included, d.reason.code.value, d.tokens)
                      for d in decided.allocation.decisions)
        return Outcome(decided, notes, decided.allocation.context_order)
