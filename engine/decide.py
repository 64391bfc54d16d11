"""A decision with its record: allocate, build the audit record, make it durable, return.

``decide`` is what every command that decides goes through. With an audit log the
record is appended (locked, written in one ``write``, fsynced) *before* the allocation
is returned: a decision is not done until its record is on disk. If the append fails,
the caller gets :class:`~engine.errors.AuditError` and no allocation. An infeasible
decision is recorded too (with its conflicting rules) and the error re-raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .audit import record as audit
from .allocate import allocate, to_candidates
from .allocation import Allocation
from .audit.request import CorpusFile, Request
from .audit.privacy import AuditSecret, check_outside, configured_secret, missing_secret_error
from .errors import InfeasibleError, PolicyError
from .policy import BudgetStrategy, Policy

if TYPE_CHECKING:  # the log, its signing and archive load only when a decision is written
    from .audit.log import AuditLog


@dataclass(frozen=True, slots=True)
class Decided:
    allocation: Allocation
    record: dict[str, Any]
    envelope: dict[str, Any] | None


def policy_log_path(policy: Policy) -> Path | None:
    """The policy's default audit log, resolved against the policy's folder (it may not
    point outside that folder)."""
    if not policy.audit.log:
        return None
    rel = Path(policy.audit.log)
    base = Path(policy.file).resolve().parent if policy.file else Path.cwd()
    target = (base / rel).resolve()
    if rel.is_absolute() or not target.is_relative_to(base):
        raise PolicyError("policy.path_outside",
                          f"audit.log {policy.audit.log!r} points outside the policy's folder {base}; "
                          "use a path inside it, or pass --audit-log",
                          path="$.spec.audit.log", location=policy.location_of("$.spec.audit.log"))
    return target


def policy_audit_log(policy: Policy) -> AuditLog | None:
    """The policy's default audit log as an :class:`AuditLog` rooted at the policy's
    folder: the path is validated here once, and every component below the folder is
    then opened without following symlinks, so a symlink swapped in later (while the
    decision is indexed and solved) cannot send the record elsewhere."""
    target = policy_log_path(policy)
    if target is None:
        return None
    from .audit.log import AuditLog
    from .audit.signing import policy_signer

    base = Path(policy.file).resolve().parent if policy.file else Path.cwd()
    return AuditLog(target, root=base, rotate=policy.audit.rotate,
                    signer=policy_signer(policy.audit.signing_key, policy.file))


def log_secret(policy: Policy, audit_log: AuditLog | None,
               secret: AuditSecret | None = None, *, query: bool = False) -> AuditSecret | None:
    """The secret that keys a record written to ``audit_log``: ``secret`` if given, else
    the one ``CTXBUDGET_AUDIT_SECRET`` or the policy's ``audit.secret_file`` names. A
    record that needs one (content not stored, fields masked, or a ``query`` not kept as
    text) and has none is ``AuditError`` ``audit.secret_missing``, raised before any
    decision is made."""
    if secret is not None or audit_log is None:
        return secret
    found = configured_secret(policy.audit.secret_file, policy.file)
    keyed_query = query and not policy.audit.keeps_query
    if found is None and (not policy.audit.store_content or policy.audit.mask or keyed_query):
        what = (f"audit.store_query is false, so the record written to {audit_log.path} keys the "
                "query's digest" if policy.audit.store_content and not policy.audit.mask else None)
        raise missing_secret_error(audit_log.path, what=what)
    if found is not None:
        check_outside(found, audit_log.path)
    return found


def decide(candidates: Iterable[Any], policy: Policy, *, audit_log: AuditLog | None = None,
           strategy: BudgetStrategy | None = None, decision_id: str | None = None,
           now: datetime | None = None, secret: AuditSecret | None = None,
           query: str | None = None, request: Request | None = None,
           corpus: Sequence[CorpusFile] | None = None,
           retrieval: Callable[[Allocation | None], Mapping[str, Any]] | None = None) -> Decided:
    """Allocate and record. Raises what ``allocate`` raises, and ``AuditError``.
    ``secret`` keys the record's digests (default: :func:`log_secret`); ``query`` is the
    question the candidates answer (``pack``), recorded as the policy's privacy says;
    ``request`` says who asked (:class:`~engine.audit.request.Request`: request id,
    requested_by, labels; an id is generated when none is given); ``corpus`` the files
    ``pack`` indexed; ``retrieval`` gives the record's ``retrieval`` part (how ``pack``'s
    search went) from the allocation (``None`` when infeasible). With a log, the
    effective policy is archived next to it before the record is appended (:mod:`engine.audit.policies`): a second policy claiming the same
    name and revision with another digest is ``PolicyError``
    ``policy.revision_conflict``, and nothing is recorded or returned."""
    secret = log_secret(policy, audit_log, secret, query=query is not None)
    cands = to_candidates(candidates)
    try:
        alloc = allocate(cands, policy, strategy=strategy)
    except InfeasibleError as exc:
        rec = audit.build_infeasible(policy, cands, exc, decision_id=decision_id, now=now,
                                     secret=secret, query=query, request=request, corpus=corpus,
                                     retrieval=None if retrieval is None else retrieval(None))
        if audit_log is not None:
            _write(audit_log, policy, rec)
        exc.details["decision_id"] = rec["decision_id"]
        raise
    rec = audit.build(policy, cands, alloc, decision_id=decision_id, now=now, secret=secret,
                      query=query, request=request, corpus=corpus,
                      retrieval=None if retrieval is None else retrieval(alloc))
    env = _write(audit_log, policy, rec) if audit_log is not None else None
    return Decided(alloc, rec, env)


def _write(audit_log: AuditLog, policy: Policy, rec: dict[str, Any]) -> dict[str, Any]:
    """Archive the policy, then append the record (a record never names a policy that
    is not archived); the appended envelope."""
    from .audit.compact import compact
    from .audit.policies import archive_policy

    archive_policy(audit_log, policy)
    return audit_log.append(compact(rec))
