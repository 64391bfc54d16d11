"""The HTTP decision service (``ctxbudget serve``, issue 14): one policy per product,
served over HTTP, every decision audited before it is answered.

- :mod:`engine.service.bundle`: the policy folder: one product per file (file stem),
  validated at start, re-validated and swapped atomically when a file changes.
- :mod:`engine.service.auth`: bearer tokens per product (constant-time comparison).
- :mod:`engine.service.metrics`: Prometheus counters and histograms.
- :mod:`engine.service.app`: the FastAPI application (routes, limits, errors as JSON).
- :mod:`engine.service.openapi`: writes ``schemas/openapi.json`` from the application.

FastAPI, uvicorn and prometheus-client are the ``serve`` extra; this module imports
none of them, so the CLI starts without the extra and :func:`require_extra` says how to
install it.
"""

from __future__ import annotations

import importlib

from ..errors import UsageError

#: The modules of the ``serve`` extra, by the name they are imported under.
EXTRA_MODULES = ("fastapi", "uvicorn", "prometheus_client")


def require_extra() -> None:
    """Import the ``serve`` extra's modules, or raise :class:`UsageError`
    ``service.extra_missing`` (exit 2) naming the install command."""
    missing = []
    for name in EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UsageError("service.extra_missing",
                         f"`ctxbudget serve` needs {', '.join(missing)}, which are not installed; "
                         "install the serve extra: pip install 'ctxbudget[serve]'",
                         details={"missing": missing})
