"""Engine errors as HTTP answers: one status per error class, one JSON body shape.

The body is the engine's own error data (``code``, ``path``, ``message``, ``location``
with file/line/col, ``details``, ``issues``), never the request's content: validation
errors name the field and the rule, not the value that broke it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import (AuditError, CandidateError, EngineError, InfeasibleError, PolicyError,
                      SolverError, TokenizerError, UsageError)

__all__ = ["ServiceError", "error_body", "status_for", "without_paths"]

#: Engine error codes that mean "too much input" (413), wherever they are raised.
TOO_LARGE = frozenset({"candidate.too_many", "candidate.too_large", "service.body_too_large",
                       "service.too_many_candidates"})


class ServiceError(EngineError):
    """An error of the service itself, with the HTTP status it is answered with."""

    exit_code = 2

    def __init__(self, code: str, message: str, status: int, *, path: str = "$",
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(code, message, path=path, details=details)
        self.status = status


def status_for(exc: EngineError) -> int:
    """400 malformed, 401/403 access, 404 unknown, 409 infeasible or revision conflict,
    413 too large, 422 invalid input, 503 log or solver unavailable, 500 a bug."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    if exc.code in TOO_LARGE:
        return 413
    if isinstance(exc, InfeasibleError) or exc.code == "policy.revision_conflict":
        return 409
    if isinstance(exc, (CandidateError, UsageError, TokenizerError)):
        return 422
    if isinstance(exc, (AuditError, SolverError)):
        return 503
    if isinstance(exc, PolicyError):
        return 503  # a served policy that cannot decide (e.g. its audit.log path) is a configuration fault
    return 500


def _one(err: EngineError) -> dict[str, Any]:
    loc = err.location
    return {"code": err.code, "path": err.path, "message": err.message,
            "location": None if loc is None else {"file": loc.file, "line": loc.line, "col": loc.col}}


def error_body(exc: EngineError) -> dict[str, Any]:
    return {"error": type(exc).__name__, **_one(exc), "details": exc.details or None,
            "issues": [_one(i) for i in exc.issues]}


def without_paths(body: Any, folders: Mapping[str, str]) -> Any:
    """``body`` with every occurrence of each server folder (absolute path → name shown,
    e.g. the audit log's folder → ``<audit-log-folder>``) replaced in its strings: a 5xx
    answer says what failed, not where the server keeps its files (the server's own log
    keeps the whole message)."""
    pairs = sorted(((k, v) for k, v in folders.items() if k), key=lambda kv: -len(kv[0]))

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            for folder, shown in pairs:
                value = value.replace(folder, shown)
            return value
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return scrub(body)
