"""The error tree of ctxbudget.

Every error the engine raises on purpose is an :class:`EngineError`. Each leaf also
subclasses the built-in exception it resembles, so ``except ValueError`` keeps working
for callers that do not know this module::

    EngineError
    ├── PolicyError (ValueError)       load / schema / semantic problems in a policy
    ├── CandidateError (ValueError)    bad candidate input (NaN score, negative tokens, duplicate id)
    ├── TokenizerError (LookupError)   unknown encoding, encoding file missing or corrupt
    ├── InfeasibleError                valid inputs, no allocation satisfies the hard rules
    ├── SolverError (RuntimeError)     backend failed and the fallback was disabled
    │   └── SolverBackendError         CP-SAT itself raised while solving (internal: the
    │                                  façade falls back on it, or re-raises it as a
    │                                  SolverError under ``fallback: error``)
    ├── VerificationError (AssertionError)  an allocation broke a rule: always our bug
    ├── AuditError (OSError)           the audit record could not be made durable
    │   └── LogNotIntactError          a log line or record that is not what the writer
    │                                  writes (bad JSON or UTF-8, too deep, wrong types)
    ├── UsageError (ValueError)        a command line the CLI cannot run (bad flag, unknown decision id)
    └── NoContextError                 ``pack --require-context``: no retrieved item in the context

Every error carries data, not only text: a stable dotted ``code``
(``policy.unknown_field``), a JSON ``path`` (``$.spec.levels.SECTION.max_tokens``), a
:class:`Location` when the input came from a file, and a ``message`` that says how to fix
it. ``str(error)`` renders ``file:line:col: $.path: message``. An error that gathers
several problems (schema validation reports all of them, best first) keeps them in
``issues``; its own fields are those of the first issue.

The CLI maps these classes to exit codes in one place (:func:`exit_code_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Location:
    """Where in a file an error points: 1-based line and column, either may be unknown."""

    file: str | None = None
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        parts = [self.file or "<input>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.col is not None:
                parts.append(str(self.col))
        return ":".join(parts)


class EngineError(Exception):
    """Base of every error the engine raises on purpose.

    Args:
        code: stable dotted identifier, e.g. ``candidate.bad_relevance``.
        message: what is wrong and how to fix it.
        path: JSON path of the offending value, ``$`` for the whole input.
        location: file, line and column when the input came from a file.
        issues: further errors gathered with this one (best first, this one included).
        details: machine-readable extras (numbers, names) for JSON error output.
    """

    exit_code: int = 1

    def __init__(
        self,
        code: str,
        message: str,
        *,
        path: str = "$",
        location: Location | None = None,
        issues: tuple[EngineError, ...] = (),
        details: dict[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.path = path
        self.location = location
        self.issues = issues or (self,)
        self.details = dict(details or {})
        super().__init__(self.render())

    def render_one(self) -> str:
        """This error alone as ``file:line:col: $.path: message``."""
        prefix = f"{self.location}: " if self.location is not None else ""
        return f"{prefix}{self.path}: {self.message}"

    def render(self) -> str:
        """All gathered issues, one per line, best first."""
        if len(self.issues) <= 1:
            return self.render_one()
        return "\n".join(issue.render_one() for issue in self.issues)

    def __str__(self) -> str:
        return self.render()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view: the CLI's ``--errors=json`` prints this."""

        def one(err: EngineError) -> dict[str, Any]:
            loc = err.location
            return {
                "code": err.code,
                "path": err.path,
                "message": err.message,
                "file": loc.file if loc else None,
                "line": loc.line if loc else None,
                "col": loc.col if loc else None,
                **({"details": err.details} if err.details else {}),
            }

        return {
            "error": type(self).__name__,
            "exit_code": self.exit_code,
            **one(self),
            "issues": [one(i) for i in self.issues],
        }


class PolicyError(EngineError, ValueError):
    """A policy file could not be loaded, failed its schema or a semantic check."""

    exit_code = 2


class CandidateError(EngineError, ValueError):
    """Candidate input is malformed: bad score, bad token count, duplicate id, ..."""

    exit_code = 2


class TokenizerError(EngineError, LookupError):
    """A tokenizer could not be provided exactly as asked (never silently approximated)."""

    exit_code = 2


class InfeasibleError(EngineError):
    """The inputs are valid but no allocation satisfies all hard rules.

    ``details["core"]`` lists a minimal set of conflicting rules (policy path, file:line
    and a description each): dropping any one of them makes the rest satisfiable.
    """

    exit_code = 3
    #: Each candidate's token count as the Problem had it (set by the façade once the
    #: Problem exists), so the audit record can make the decision replayable without
    #: storing content; None when the conflict was found before counting.
    item_tokens: tuple[int, ...] | None = None


class SolverError(EngineError, RuntimeError):
    """The solver failed (or ran out of time) and the policy forbids the greedy fallback."""

    exit_code = 4


class SolverBackendError(SolverError):
    """CP-SAT raised inside its own ``solve`` (not in ctxbudget's code around it).

    Together with a returned status of ``unknown`` (no solution within the limit),
    ``model_invalid`` or a used-up deadline, this is what "the solver failed" means: the
    only cases :func:`engine.allocate.solve` answers with the greedy fallback. Any other
    exception is a bug and propagates."""


class VerificationError(EngineError, AssertionError):
    """An allocation broke a policy rule. This is a bug in ctxbudget, never user error."""

    exit_code = 1


class AuditError(EngineError, OSError):
    """An audit record could not be written durably (disk full, read-only, lock failure)."""

    exit_code = 5


class LogNotIntactError(AuditError):
    """A log holds a line or record the writer cannot have written (bad UTF-8 or JSON,
    nesting beyond the limit, a record with wrong-typed fields): a finding about the
    log, exit 6 like ``audit verify`` on a log that is not intact."""

    exit_code = 6


class UsageError(EngineError, ValueError):
    """A command line the CLI cannot run: an unknown option, a missing argument, an
    argument that names nothing (a decision id that is not in the log)."""

    exit_code = 2


class NoContextError(EngineError):
    """``pack`` was told to require context (``--require-context``) and the context holds
    no retrieved item: no node matched the query, the best score is below
    ``min_relevance``, or nothing that passed fitted. The decision is recorded (with its
    warning) before this is raised; ``details`` carries ``decision_id`` when it was."""

    exit_code = 8


def exit_code_for(error: BaseException) -> int:
    """The CLI exit code for an exception: 0 ok, 2 bad input, 3 infeasible,
    4 solver failure, 5 audit log failure, 6 audit log not intact, 8 no context where
    context was required, 1 anything unexpected."""
    if isinstance(error, EngineError):
        return error.exit_code
    return 1
