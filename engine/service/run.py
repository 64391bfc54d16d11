"""``ctxbudget serve``: build the service (policies loaded and validated first, so a bad
file stops the start with its error), then run it under uvicorn until interrupted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import uvicorn

from .app import Service, Settings, create_app
from .auth import Tokens

__all__ = ["serve"]


def serve(*, policies: str, host: str, port: int, audit_log: str | None, tokens: str | None,
          max_body_bytes: int, max_candidates: int, announce: Callable[[str], None]) -> int:
    """Run until Ctrl-C or SIGTERM; 0 on a clean stop. Raises the engine's errors when
    the policies, the tokens or the audit logs are not usable."""
    settings = Settings(Path(policies), Path(audit_log) if audit_log else None,
                        Tokens.configured(tokens), max_body_bytes, max_candidates)
    service = Service(settings)
    products = sorted(service.folder.bundle.products)
    auth = "bearer tokens" if settings.tokens is not None else "NO authentication (loopback only!)"
    announce(f"serving {len(products)} product(s) ({', '.join(products)}) on http://{host}:{port} "
             f"with {auth}; POST /v1/decide/{{product}}, GET /health, /metrics, /v1/policies")
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning", access_log=False)
    return 0
