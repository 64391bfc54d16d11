"""``ctxbudget serve``: build the service (policies loaded and validated first, so a bad
file stops the start with its error), then run it under uvicorn until interrupted.

With ``--workers N`` (N > 1) uvicorn starts N worker processes on one socket; each
builds its own :class:`~engine.service.app.Service` from the same settings (handed over
in the environment variable :data:`ENV_CONFIG`, as JSON) and writes the SAME audit log:
``AuditLog`` takes ``<log>.lock`` for each batch, so the workers' batches take turns and
the log stays one hash chain that ``audit verify`` checks as it is. Within a worker,
concurrent requests share one fsync (group commit, :mod:`engine.audit.log`).

Why one log and not a segment per worker: segments are consecutive pieces of ONE chain
(rotation), not parallel chains; a log per worker would need a verifier that merges
chains and could no longer prove one total order of decisions. One log under a lock
keeps the proof as it is, at the price of the workers waiting for each other's fsync,
which group commit makes one wait per batch, not per decision. Across hosts, give each
host its own log (docs/service-scale-out.md).
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from ..errors import UsageError
from .app import DEFAULT_RELOAD_INTERVAL_S, Service, Settings, create_app
from .auth import Tokens

__all__ = ["ENV_CONFIG", "GC_YOUNG_THRESHOLD", "serve", "tune_gc", "worker_app"]

#: How the parent hands a worker process its settings (JSON of the serve options).
ENV_CONFIG = "CTXBUDGET_SERVE_CONFIG"
#: Allocations (net of frees) between two young-generation collections in a serving
#: process (CPython's default is 700). A decision allocates thousands of short-lived
#: dicts and lists that reference counting frees; at 700 the collector ran about once
#: per decision for nothing (~0.2 ms each, plus full collections over every object the
#: imports made). Cyclic garbage, if any, is still collected, 10,000 allocations later.
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Set up a serving process's garbage collector (once the application is built):
    everything allocated so far (modules, schemas, policies) is frozen out of the
    collections, and the young generation is collected every
    :data:`GC_YOUNG_THRESHOLD` net allocations."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _settings(config: dict[str, Any]) -> Settings:
    return Settings(Path(config["policies"]),
                    Path(config["audit_log"]) if config.get("audit_log") else None,
                    Tokens.configured(config.get("tokens")), int(config["max_body_bytes"]),
                    int(config["max_candidates"]),
                    reload_interval_s=float(config.get("reload_interval_s", DEFAULT_RELOAD_INTERVAL_S)))


def worker_app() -> Any:
    """The application of one worker process (uvicorn's factory with ``--workers``)."""
    text = os.environ.get(ENV_CONFIG)
    if not text:
        raise UsageError("service.no_config", f"{ENV_CONFIG} is not set; start the workers with "
                         "`ctxbudget serve --workers N`, which sets it")
    app = create_app(Service(_settings(json.loads(text))))
    tune_gc()
    return app


def serve(*, policies: str, host: str, port: int, audit_log: str | None, tokens: str | None,
          max_body_bytes: int, max_candidates: int, announce: Callable[[str], None],
          workers: int = 1, reload_interval_s: float = DEFAULT_RELOAD_INTERVAL_S) -> int:
    """Run until Ctrl-C or SIGTERM; 0 on a clean stop. Raises the engine's errors when
    the policies, the tokens or the audit logs are not usable (checked here, before any
    worker starts). ``reload_interval_s``: how often the policy folder is looked at."""
    if workers < 1:
        raise UsageError("service.bad_workers", f"--workers {workers}: give 1 or more worker "
                         "processes (about one per core)", path="$.workers")
    if not reload_interval_s >= 0:
        raise UsageError("service.bad_reload_interval", f"--reload-interval {reload_interval_s}: give "
                         "0 or more seconds (0: look at the policy folder on every request)",
                         path="$.reload_interval")
    config = {"policies": os.path.abspath(policies),
              "audit_log": os.path.abspath(audit_log) if audit_log else None,
              "tokens": os.path.abspath(tokens) if tokens else None,
              "max_body_bytes": max_body_bytes, "max_candidates": max_candidates,
              "reload_interval_s": reload_interval_s}
    service = Service(_settings(config))
    products = sorted(service.folder.bundle.products)
    auth = "bearer tokens" if service.settings.tokens is not None else "NO authentication (loopback only!)"
    each = f" in {workers} worker processes sharing one audit log" if workers > 1 else ""
    announce(f"serving {len(products)} product(s) ({', '.join(products)}) on http://{host}:{port}{each} "
             f"with {auth}; POST /v1/decide/{{product}}, GET /health, /metrics, /v1/policies")
    if workers == 1:
        app = create_app(service)
        tune_gc()
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
        return 0
    os.environ[ENV_CONFIG] = json.dumps(config)
    uvicorn.run("engine.service.run:worker_app", factory=True, workers=workers, host=host, port=port,
                log_level="warning", access_log=False)
    return 0
