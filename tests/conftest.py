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

import pytest
from hypothesis import settings

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
