"""The decision service: ``POST /v1/decide/{product}``, policies, health and metrics.

In: :class:`Settings` (the policy folder, the audit log, tokens, limits). Out: a FastAPI
application (:func:`create_app`) whose decide route goes through
:func:`engine.decide.decide`, the path every CLI decision takes: the audit record is
appended and fsynced before the answer is sent, and an answer that could not be recorded
is an error (503), never a decision.

Routes are plain ``def`` functions: FastAPI runs them on its thread pool, and the solver
and the fsync release the GIL. The policy folder is re-checked on every request (one
``stat`` per file) and a changed product swapped only once its new text validated.
"""

from __future__ import annotations

import email.message
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Path as PathParam, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..audit.log import AuditLog
from ..audit.request import Request as Asked
from ..audit.signing import policy_signer
from ..candidates import from_mappings
from ..decide import decide, log_secret, policy_audit_log
from ..errors import AuditError, CandidateError, EngineError, InfeasibleError, Location
from ..policy import Policy
from .auth import AccessError, Tokens
from .bundle import Bundle, PolicyFolder, Served
from .httperrors import ServiceError, error_body, status_for, without_paths
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .models import DecideRequest, Decision, ErrorBody, Health, PolicyInfo, PolicyList

#: Server faults (5xx) are logged whole here; their answers name no server folder.
_LOG = logging.getLogger("ctxbudget.serve")

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_CANDIDATES", "DEFAULT_RELOAD_INTERVAL_S", "Service",
           "Settings", "create_app"]

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_CANDIDATES = 10_000
#: How often (seconds) ``ctxbudget serve`` looks at the policy folder for changed files.
DEFAULT_RELOAD_INTERVAL_S = 1.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _TimedLog(AuditLog):
    """An audit log that reports how long each append took (to its fsync)."""

    observe: Callable[[float], None] | None = field(default=None, compare=False)

    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            return AuditLog.append(self, record)  # no super(): slots dataclasses rebuild the class
        finally:
            if self.observe is not None:
                self.observe(time.perf_counter() - t0)


@dataclass(frozen=True, slots=True)
class Settings:
    """``audit_log``: one log for every product (else each policy's ``audit.log``);
    ``tokens``: None serves without authentication (bind to loopback only);
    ``reload_interval_s``: the policy folder is looked at for changes at most this often
    (0: on every request; ``ctxbudget serve`` uses :data:`DEFAULT_RELOAD_INTERVAL_S`;
    ``/health`` always looks)."""

    policies: Path
    audit_log: Path | None = None
    tokens: Tokens | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_candidates: int = DEFAULT_MAX_CANDIDATES
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    reload_interval_s: float = 0.0


class Service:
    """The state behind the routes: the policy folder, the logs, the metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._logs: dict[str, AuditLog] = {}
        if settings.audit_log is not None:
            try:
                settings.audit_log.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise AuditError("audit.write_failed", f"cannot create the folder of audit log "
                                 f"{settings.audit_log}: {exc.strerror or exc}; fix the path or its "
                                 "permissions (no decision is made without its record)",
                                 location=Location(file=str(settings.audit_log))) from None
        self.folder = PolicyFolder(settings.policies, check=self._check_policy,
                                   interval_s=settings.reload_interval_s)
        if settings.tokens is not None:
            unknown = sorted(settings.tokens.products - set(self.folder.bundle.products))
            if unknown:
                raise ServiceError("service.tokens_unknown_product", f"the tokens name product(s) "
                                   f"{', '.join(unknown)} that {settings.policies} does not serve; "
                                   "fix the product names (file stems of the policy files)", 2)
        self._publish(self.folder.bundle)

    def folders(self) -> dict[str, str]:
        """The server's folders, as written and resolved, with the name a 5xx answer shows
        instead (see :func:`~engine.service.httperrors.without_paths`)."""
        shown: dict[str, str] = {}
        logs = [log.path for log in self._logs.values()]
        if self.settings.audit_log is not None:
            logs.append(self.settings.audit_log)
        for path in logs:
            for folder in {str(Path(path).parent.absolute()), str(Path(path).parent.resolve())}:
                shown[folder] = "<audit-log-folder>"
        for folder in {str(self.settings.policies.absolute()), str(self.settings.policies.resolve())}:
            shown[folder] = "<policies>"
        return shown

    # -- the audit log of a policy: checked when the policy is loaded, reused after ----
    def _log(self, policy: Policy) -> AuditLog:
        key = f"{policy.digest}|{policy.file}"
        log = self._logs.get(key)
        if log is not None:
            return log
        product = Path(policy.file).stem if policy.file else policy.name  # the file stem names it
        if self.settings.audit_log is not None:
            path = self.settings.audit_log
            log = _TimedLog(path, rotate=policy.audit.rotate,
                            signer=policy_signer(policy.audit.signing_key, policy.file),
                            observe=self.metrics.appends.labels(product).observe)
        else:
            found = policy_audit_log(policy)
            if found is None:
                raise AuditError("service.no_audit_log", f"policy {policy.name!r} sets no audit.log and "
                                 "no --audit-log was given; every served decision is recorded, so set "
                                 "spec.audit.log or pass --audit-log FILE",
                                 path="$.spec.audit.log", location=Location(file=policy.file))
            log = _TimedLog(found.path, found.lock_timeout_s, found.clock, found.signer, found.root,
                            found.rotate, observe=self.metrics.appends.labels(product).observe)
        self._logs[key] = log
        return log

    def _check_policy(self, policy: Policy) -> None:
        log_secret(policy, self._log(policy), query=False)

    def _publish(self, bundle: Bundle) -> None:
        self.metrics.policies({p: p not in bundle.problems for p in bundle.products})

    def bundle(self, *, force: bool = False) -> Bundle:
        before = self.folder.reloads
        bundle = self.folder.refresh(force=force)
        if self.folder.reloads != before:
            self.metrics.reloads.inc()
            self._publish(bundle)
        return bundle

    def authorize(self, header: str | None, product: str) -> None:
        if self.settings.tokens is not None:
            self.settings.tokens.check(header, product)

    def served(self, product: str, header: str | None) -> Served:
        bundle = self.bundle()
        self.authorize(header, product)
        served = bundle.products.get(product)
        if served is None:
            raise ServiceError("service.unknown_product", f"no policy is served for product {product!r}; "
                               "GET /v1/policies lists the products", 404, path="$.product")
        return served

    def decide(self, product: str, body: DecideRequest, header: str | None) -> dict[str, Any]:
        """Decide (the record fsynced first) and build the answer: a JSON-ready dict of
        the shape :class:`~engine.service.models.Decision` publishes (built as a dict, not
        as models: the values come from the engine, and the schemathesis tests check every
        answer against the document)."""
        served = self.served(product, header)
        if len(body.candidates) > self.settings.max_candidates:
            raise ServiceError("service.too_many_candidates", f"{len(body.candidates):,} candidates "
                               f"exceed the service's limit of {self.settings.max_candidates:,}; send "
                               "fewer (or start the service with a higher --max-candidates)", 413,
                               path="$.candidates")
        policy = served.policy
        asked = Asked.of(body.request_id, body.requested_by, body.labels)
        # One dump of the validated list (the fields sent; metadata as sent, nulls kept).
        rows = [(row, None) for row in body.model_dump(exclude_none=True, include={"candidates"})["candidates"]]
        log = self._log(policy)
        t0 = time.perf_counter()
        try:
            cands = from_mappings(rows)
            decided = decide(cands, policy, audit_log=log, request=asked, query=body.query)
        except InfeasibleError:
            log.close()  # the infeasible record was appended: sign it like any other
            self.metrics.failed(product, "infeasible", time.perf_counter() - t0)
            raise
        except EngineError as exc:
            self.metrics.failed(product, "error", time.perf_counter() - t0)
            if isinstance(exc, CandidateError):  # its paths are into the list: say where in the body
                for e in {id(i): i for i in (exc, *exc.issues)}.values():
                    e.path = "$.candidates" + e.path[1:] if e.path.startswith("$[") else e.path
            raise
        log.close()
        a = decided.allocation
        fallback = a.fallback_reason is not None
        self.metrics.decided(product, "fallback" if fallback else a.selection.status,
                             time.perf_counter() - t0, fallback, a.timings, a.selection.gap)

        def items(decisions: Any) -> list[dict[str, Any]]:
            return [{"source_id": d.source_id, "tokens": d.tokens, "reason": d.reason.code.value,
                     "evidence": d.reason.evidence, "rule": d.reason.rule} for d in decisions]

        sel = a.selection
        return {
            "decision_id": decided.record["decision_id"], "product": product,
            "policy": {"name": policy.name, "revision": policy.revision, "digest": policy.digest},
            "context": a.context, "context_tokens": a.context_tokens, "limit_tokens": a.limit_tokens,
            "included": items(a.included), "excluded": items(a.excluded),
            "solver": {"status": sel.status, "objective": sel.objective, "best_bound": sel.bound,
                       "gap": sel.gap},
            "strategy": {"requested": a.strategy_requested.value, "used": a.strategy_used.value,
                         "fallback_reason": a.fallback_reason},
            "unmet": list(a.unmet), "warnings": list(a.warnings)}

    def decide_raw(self, product: str, raw: bytes, content_type: str | None,
                   header: str | None) -> bytes:
        """The decide route's work on the request's bytes: validated against
        :class:`~engine.service.models.DecideRequest` (:func:`parse_request`), decided
        (:meth:`decide`), and the answer's JSON bytes."""
        return _json_bytes(self.decide(product, parse_request(raw, content_type), header))

    def decision(self, product: str, body: DecideRequest, header: str | None) -> Decision:
        """:meth:`decide` as the published model (checked field by field)."""
        return Decision.model_validate(self.decide(product, body, header))

    def shown(self, path: str | os.PathLike[str] | None) -> str | None:
        """A file as clients see it: relative to the policy folder when it is below it,
        else its name alone; never the server's absolute paths."""
        if path is None:
            return None
        target = Path(os.path.abspath(path))
        try:
            return target.relative_to(os.path.abspath(self.settings.policies)).as_posix()
        except ValueError:
            return target.name

    def problem(self, exc: EngineError) -> str:
        """An error as one line for /health and /v1/policies, its file shown by :meth:`shown`."""
        loc = exc.location
        where = ""
        if loc is not None and loc.file:
            where = ":".join([self.shown(loc.file) or ""] + [str(n) for n in (loc.line, loc.col) if n is not None])
            where = f"{where}: "
        text = exc.message.replace(str(loc.file), self.shown(loc.file) or "") if loc and loc.file else exc.message
        return f"{exc.code}: {where}{exc.path}: {text}"

    def info(self, served: Served, problem: EngineError | None, *, effective: bool) -> PolicyInfo:
        p = served.policy
        return PolicyInfo(product=served.product, name=p.name, revision=p.revision, digest=p.digest,
                          loaded_at=served.loaded_at, file=self.shown(p.file),
                          problem=None if problem is None else self.problem(problem),
                          effective=dict(p.to_dict()) if effective else None)

    def health(self) -> tuple[int, Health]:
        bundle = self.bundle(force=True)
        problems = [f"{product}: {self.problem(exc)}" for product, exc in sorted(bundle.problems.items())]
        for path in sorted({str(log.path) for log in self._logs.values()}):
            target = Path(path)
            folder = next((p for p in (target.parent, *target.parent.parents) if p.exists()), None)
            name = self.shown(path)
            if target.exists() and not target.is_file():
                problems.append(f"audit log {name} is not a regular file")
            elif target.exists() and not os.access(target, os.W_OK):
                problems.append(f"audit log {name} is not writable")
            elif not target.exists() and (folder is None or not os.access(folder, os.W_OK)):
                problems.append(f"audit log {name} cannot be created (its folder is not writable)")
        status = 500 if problems else 200
        return status, Health(status="failing" if problems else "ok", products=len(bundle.products),
                              problems=problems)


#: ``(scope, body, receive, send)``: answers a request whose whole body was read.
Answer = Callable[[Scope, bytes, Receive, Send], Awaitable[None]]
_DECIDE_PREFIX = "/v1/decide/"


def decide_product(scope: Scope) -> str | None:
    """The product of a ``POST /v1/decide/{product}`` request (what the route's path
    matches: one non-empty segment), else None."""
    path: str = scope.get("path", "")
    if scope.get("method") != "POST" or scope.get("root_path") or not path.startswith(_DECIDE_PREFIX):
        return None
    product = path[len(_DECIDE_PREFIX):]
    return product if product and "/" not in product else None


class BodyLimit:
    """Reads a request body only up to ``max_bytes`` (413 beyond it, before any parsing),
    then hands the buffered body on: to ``decide`` for a decide request (the route's
    work without FastAPI's routing and dependency machinery, which cost more CPU per
    request than the audit append: see :func:`create_app`), else to the application."""

    def __init__(self, app: ASGIApp, max_bytes: int, decide: Answer | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.decide = decide

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        too_large = declared.isdigit() and int(declared) > self.max_bytes
        chunks: list[bytes] = []
        total = 0
        more = not too_large
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                too_large = True
                break
            chunks.append(chunk)
            more = bool(message.get("more_body"))
        if too_large:
            exc = ServiceError("service.body_too_large", f"the request body is over the service's limit of "
                               f"{self.max_bytes:,} bytes; send fewer or smaller candidates (or start the "
                               "service with a higher --max-body-bytes)", 413)
            await JSONResponse(error_body(exc), status_code=413)(scope, receive, send)
            return
        body = b"".join(chunks)
        if self.decide is not None and decide_product(scope) is not None:
            await self.decide(scope, body, receive, send)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


_VALIDATE_JSON = DecideRequest.__pydantic_validator__.validate_json


def _json_type(content_type: str | None) -> bool:
    """Whether a request's content type says JSON (``application/json`` or
    ``application/*+json``, as FastAPI reads it)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json"
                                                                 or subtype.endswith("+json"))


def _in_body(exc: ValidationError) -> RequestValidationError:
    """pydantic's issues located in the body, as FastAPI reports a body that fails."""
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                   for e in exc.errors(include_url=False)])


def parse_request(raw: bytes, content_type: str | None) -> DecideRequest:
    """The decide body validated as FastAPI validated a declared body model, at a
    fraction of its cost: the bytes go to pydantic's own JSON parser in one call.

    A body that parser refuses takes FastAPI's route instead, so that every refusal is
    the one a ``DecideRequest`` parameter gave (tests/test_service_body.py compares
    them): ``json.loads`` (400 ``request.json_syntax`` at its character), then the
    parsed value validated as Python (``NaN`` and the like pass here and reach the
    engine's own checks); an empty body is the missing body (422), one not declared
    JSON is validated as bytes (422)."""
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required",
                                       "input": None}])
    value: Any = raw
    if _json_type(content_type):
        try:
            return _VALIDATE_JSON(raw)  # type: ignore[no-any-return]
        except ValidationError:
            pass
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos),
                                           "msg": "JSON decode error", "input": {},
                                           "ctx": {"error": exc.msg}}]) from None
        except ValueError:  # bytes in no encoding JSON allows
            raise StarletteHTTPException(400, "There was an error parsing the body") from None
    try:
        return DecideRequest.model_validate(value, from_attributes=True)
    except ValidationError as exc:
        raise _in_body(exc) from None


def _json_bytes(value: Any) -> bytes:
    """A JSON answer's bytes (a NaN or infinity, which no answer holds, would be null, as
    pydantic writes it)."""
    return orjson.dumps(value)


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in (
        (400, "malformed request (not JSON)"), (401, "no valid bearer token"),
        (403, "the token is not for this product"), (404, "no such product"),
        (409, "infeasible: the hard rules cannot all hold (details.core names them), or a revision "
              "conflict"),
        (413, "body or candidate count over the limit"), (422, "invalid input"),
        (503, "the decision could not be recorded or solved"))}


def _issue(e: Any, status: int) -> ServiceError:
    """One pydantic issue: its rule and the field's JSON path, never the value."""
    loc = tuple(e.get("loc", ()))[1:]  # ("body", ...): the body is the document
    if e.get("type") == "json_invalid":
        at = f" at character {loc[0]}" if loc else ""
        return ServiceError("request.json_syntax", f"the body is not valid JSON{at} "
                            f"({e.get('ctx', {}).get('error', 'invalid')}); send one JSON object", status)
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    return ServiceError("request.schema", f"{e.get('msg', 'invalid')} ({e.get('type')}); see the request "
                        "schema in GET /openapi.json", status, path=path)


#: The product path parameter: a policy file's stem in the served folder.
_PRODUCT = PathParam(description="the product: the file stem of its policy file in --policies DIR",
                     examples=["support-assistant"])


#: The decide route reads its body itself (:func:`parse_request`); the document still
#: publishes it as the DecideRequest model (its schemas are added in create_app).
_DECIDE_BODY: dict[str, Any] = {"requestBody": {"content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/DecideRequest"}}}, "required": True}}


def _body_schemas() -> dict[str, Any]:
    """The component schemas FastAPI writes for a ``DecideRequest`` body parameter
    (generated by FastAPI itself, on a throwaway application, so they are its bytes)."""
    probe = FastAPI()

    @probe.post("/")
    def _probe(body: DecideRequest) -> None:  # pragma: no cover - never called
        return None

    schemas: dict[str, Any] = probe.openapi().get("components", {}).get("schemas", {})
    return {k: v for k, v in schemas.items() if k not in ("HTTPValidationError", "ValidationError")}


def _pick(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: _ERRORS[c] for c in codes}


def create_app(service: Service | None) -> FastAPI:
    """The application; ``service`` None builds the routes only (for the OpenAPI document)."""
    app = FastAPI(title="ctxbudget decision service", version=__version__,
                  description="Which retrieved chunks go into an LLM prompt, decided under one policy "
                  "per product; every decision is in the audit log before it is answered.")
    bearer = HTTPBearer(auto_error=False)

    def svc() -> Service:
        if service is None:
            raise ServiceError("service.not_configured", "this application was built without a policy "
                               "folder; start it with `ctxbudget serve --policies DIR`", 503)
        return service

    async def header(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str | None:
        # async: FastAPI runs a plain def dependency on the thread pool (a hop per request)
        return None if cred is None else f"{cred.scheme} {cred.credentials}"

    def engine_answer(exc: EngineError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AccessError) and exc.status == 401 else None
        status, body = status_for(exc), error_body(exc)
        if status >= 500 and service is not None:  # a server fault: name no server folder
            _LOG.error("%s: %s (%s)", exc.code, exc.message, exc.location)
            body = without_paths(body, service.folders())
        return JSONResponse(body, status_code=status, headers=headers)

    def invalid_answer(exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        malformed = any(e.get("type") == "json_invalid" for e in errors)
        issues = [_issue(e, 400 if malformed else 422) for e in errors[:50]]
        first = issues[0] if issues else ServiceError("request.schema", "invalid request", 422)
        err = ServiceError(first.code, first.message, first.status, path=first.path,
                           details={"total_issues": len(errors)})
        err.issues = tuple(issues) or (err,)
        return JSONResponse(error_body(err), status_code=err.status)

    def http_answer(exc: StarletteHTTPException) -> JSONResponse:
        err = ServiceError(f"http.{exc.status_code}", str(exc.detail), exc.status_code)
        return JSONResponse(error_body(err), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(EngineError)
    async def engine_error(_: Request, exc: EngineError) -> JSONResponse:
        return engine_answer(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_answer(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return http_answer(exc)

    @app.exception_handler(Exception)
    async def bug(_: Request, exc: Exception) -> JSONResponse:
        err = ServiceError("internal.bug", f"{type(exc).__name__}; this is a ctxbudget bug, please report "
                           "it with the request that caused it", 500)
        return JSONResponse(error_body(err), status_code=500)

    @app.post("/v1/decide/{product}", response_model=Decision,
              responses=_pick(400, 401, 403, 404, 409, 413, 422, 503), openapi_extra=_DECIDE_BODY,
              summary="Decide which candidates go into the context under the product's policy")
    async def decide_route(request: Request, product: str = _PRODUCT,
                           auth: str | None = Depends(header)) -> Any:
        # What the document publishes; requests are answered by decide_fast (below),
        # which BodyLimit hands every decide request to, with this route's own code.
        raw = await request.body()
        return Response(await decided(product, raw, request.headers.get("content-type"), auth),
                        media_type="application/json")

    async def decided(product: str, raw: bytes, content_type: str | None, auth: str | None) -> bytes:
        # The body is validated on the thread pool with the decision (parse_request: the
        # same answers as a declared DecideRequest body; one hop to the pool); the answer
        # is serialised once (FastAPI would validate and encode it again).
        s = svc()
        return await run_in_threadpool(s.decide_raw, product, raw, content_type, auth)

    async def decide_fast(scope: Scope, raw: bytes, receive: Receive, send: Send) -> None:
        """``decide_route`` as a plain ASGI answer: the same work and the same answers
        (the error handlers above; anything else is left to the server-error handler,
        as in a route), without the router, the dependency solver and the exception
        middleware in between (tests/test_service.py runs every case through it)."""
        product = decide_product(scope)
        assert product is not None
        authorization = content_type = None
        for key, value in scope.get("headers") or ():
            if key == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif key == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
        scheme, credentials = get_authorization_scheme_param(authorization)
        auth = f"{scheme} {credentials}" if authorization and scheme and credentials \
            and scheme.lower() == "bearer" else None  # what HTTPBearer(auto_error=False) gives
        response: Response
        try:
            response = Response(await decided(product, raw, content_type, auth), media_type="application/json")
        except EngineError as exc:
            response = engine_answer(exc)
        except RequestValidationError as exc:
            response = invalid_answer(exc)
        except StarletteHTTPException as exc:
            response = http_answer(exc)
        await response(scope, receive, send)

    @app.get("/v1/policies", response_model=PolicyList, responses=_pick(401),
             summary="The policies served (those the token opens), with revision, digest and load time")
    def policies(auth: str | None = Depends(header)) -> Any:
        s = svc()
        bundle = s.bundle()
        tokens = s.settings.tokens
        granted = None if tokens is None else tokens.granted(auth)
        if tokens is not None and not granted:
            tokens.check(auth, "")  # 401, said once
        return PolicyList(policies=[s.info(served, bundle.problems.get(p), effective=False)
                                    for p, served in sorted(bundle.products.items())
                                    if granted is None or p in granted])

    @app.get("/v1/policies/{product}", response_model=PolicyInfo, responses=_pick(401, 403, 404),
             summary="One product's effective policy, digest, revision and load time")
    def policy(product: str = _PRODUCT, auth: str | None = Depends(header)) -> Any:
        s = svc()
        served = s.served(product, auth)
        return s.info(served, s.folder.bundle.problems.get(product), effective=True)

    @app.get("/health", response_model=Health, responses={500: {"model": Health,
             "description": "a policy file was refused or an audit log is not writable"}},
             summary="Policies loaded and valid, audit logs writable")
    def health() -> Any:
        status, body = svc().health()
        return JSONResponse(body.model_dump(), status_code=status)

    @app.get("/metrics", response_class=Response, responses={200: {
             "content": {"text/plain": {"schema": {"type": "string"}}},
             "description": "Prometheus text format"}}, summary="Prometheus metrics")
    def metrics() -> Response:
        return Response(svc().metrics.render(), media_type=CONTENT_TYPE_LATEST)

    generated = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's document, with the schemas of the body the decide route reads itself."""
        if app.openapi_schema is None:
            doc = generated()
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(_body_schemas())
            app.openapi_schema = {**doc, "components": {**doc["components"],
                                                        "schemas": dict(sorted(schemas.items()))}}
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    max_bytes = service.settings.max_body_bytes if service else DEFAULT_MAX_BODY_BYTES
    app.add_middleware(BodyLimit, max_bytes=max_bytes, decide=decide_fast)
    return app
