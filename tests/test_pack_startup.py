"""Start-up of ``pack``: what the hot path does instead of slow imports gives the same answers."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

import engine
from engine.audit import record


@pytest.mark.parametrize("dist", ["ctxbudget", "ortools", "tiktoken"])
def test_recorded_versions_are_the_installed_ones(dist: str) -> None:
    assert record._version(dist) == metadata.version(dist)
    found = record._dist_info_version(dist)
    assert found is None or found == metadata.version(dist)


def test_the_version_constant_is_the_installed_metadata() -> None:
    assert engine.__version__ == metadata.version("ctxbudget") == record.versions()["ctxbudget"]


def test_dist_info_lookup_takes_the_first_folder_and_defers_on_doubt(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    one, two, egg = tmp_path / "one", tmp_path / "two", tmp_path / "egg"
    for d in (one, two, egg):
        d.mkdir()
    (one / "Foo_Bar-1.2.3.dist-info").mkdir()
    (two / "foo_bar-9.9.dist-info").mkdir()
    (two / "foo_bar_extra-2.0.dist-info").mkdir()  # another distribution: not a match
    (egg / "foo_bar.egg-info").mkdir()
    monkeypatch.setattr(sys, "path", [str(tmp_path / "missing"), str(one), str(two)])
    assert record._dist_info_version("foo-bar") == "1.2.3"
    assert record._dist_info_version("foo_bar_extra") == "2.0"
    assert record._dist_info_version("absent") is None
    monkeypatch.setattr(sys, "path", [str(egg), str(one)])
    assert record._dist_info_version("foo-bar") is None  # an egg comes first: importlib.metadata decides
    (two / "foo_bar-1.0.dist-info").mkdir()
    monkeypatch.setattr(sys, "path", [str(two)])
    assert record._dist_info_version("foo-bar") is None  # two versions in one folder
