"""Suite-wide options.

``--exhaustive`` (or ``CTXBUDGET_EXHAUSTIVE=1``) runs the exhaustive variants of the
tests that sample by default (every byte flip and every crash cut of the audit log; the
brute-force comparisons at their full sizes). The default run checks a fixed,
deterministic sample of the same cases, so it stays well under 90 s on 2 cores.

Under ``CI`` (set by the CI runner) hypothesis runs derandomized: a landing is judged on
the same examples every time, and a failure there reproduces locally with
``CI=true pytest ...``. Local runs keep exploring new examples; what they find becomes a
regression test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Nothing touches the network: Haystack sends usage telemetry from Pipeline.run unless
# this is off when it is first imported (tests/test_integrations_haystack.py checks).
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--exhaustive", action="store_true", default=False,
                     help="run every case of the sampled exhaustive tests (slow)")


def pytest_configure(config: pytest.Config) -> None:
    # One switch: modules that size their cases at import read the environment variable.
    if config.getoption("--exhaustive"):
        os.environ["CTXBUDGET_EXHAUSTIVE"] = "1"


@pytest.fixture(scope="session")
def exhaustive(request: pytest.FixtureRequest) -> bool:
    """True when the exhaustive variants were asked for."""
    return bool(request.config.getoption("--exhaustive")) or os.environ.get("CTXBUDGET_EXHAUSTIVE") == "1"


#: The suite's audit secret (fixed bytes, so golden records are stable): written 0600
#: outside every test's log folder and named by CTXBUDGET_AUDIT_SECRET, as a user would.
#: Tests of a missing or unusable secret unset or override the variable.
SUITE_AUDIT_SECRET = bytes(range(32))


@pytest.fixture(scope="session", autouse=True)
def _audit_secret(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("audit-secret")
    path = folder / "audit.secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(SUITE_AUDIT_SECRET)
    # XDG_CONFIG_HOME: an empty folder, so a secret in the user's ~/.config is never read
    saved = {name: os.environ.get(name) for name in ("CTXBUDGET_AUDIT_SECRET", "XDG_CONFIG_HOME")}
    os.environ["CTXBUDGET_AUDIT_SECRET"] = str(path)
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("xdg-config"))
    yield path
    for name, old in saved.items():
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
