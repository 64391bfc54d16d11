"""``bench.perf.cold_counts`` empties the shared tokenizer's count cache before a timed
run (it had silently become a no-op when the cache became a plain dict, so every timed
``allocate()`` read warm counts); ``--warm-counts`` keeps the cache, as those runs did."""

from __future__ import annotations

import pytest
from benchload import load_bench

from engine.tokens import get_tokenizer

perf = load_bench("perf", as_name="bench_perf_cold_counts")


def test_cold_counts_empties_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    tok = get_tokenizer("cl100k_base")
    tok.count_many(["a text counted once", "and another"])
    assert len(tok._cache) >= 2
    monkeypatch.setattr(perf, "COLD_COUNTS", True)
    perf.cold_counts()
    assert len(tok._cache) == 0
    misses = tok.misses
    tok.count("a text counted once")
    assert tok.misses == misses + 1  # counted again, not read from the cache


def test_warm_counts_keeps_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    tok = get_tokenizer("cl100k_base")
    tok.count("kept between runs")
    monkeypatch.setattr(perf, "COLD_COUNTS", False)
    perf.cold_counts()
    hits = tok.hits
    tok.count("kept between runs")
    assert tok.hits == hits + 1
