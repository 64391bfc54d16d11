"""Candidate digests are made when first read: the same digest, equality unchanged,
and allocate() on short contents never hashes them."""

from __future__ import annotations

import dataclasses

import pytest

from engine import BudgetItem, allocate
from engine import tokens
from engine.allocate import to_candidates
from engine.candidates import make_candidate
from engine.policy import Policy


def test_the_digest_is_the_contents_and_equality_ignores_whether_it_was_read() -> None:
    items = [BudgetItem("short", 0.5, 2, "a", "PARAGRAPH", {}), BudgetItem("é" * 100, 0.4, None, "b", "SENTENCE", {})]
    bulk, single = to_candidates(items), (make_candidate(0, source_id="a", content="short", relevance_score=0.5,
                                                        token_count=2),)
    assert bulk[0] == single[0]
    assert bulk[0]._sha256 is None
    assert bulk[1].sha256 == tokens.content_sha256("é" * 100) == bulk[1]._sha256
    assert bulk[0] == single[0]  # one read, one not: still equal
    copy = dataclasses.replace(bulk[1], token_count=7)
    assert copy.sha256 == bulk[1].sha256
    assert bulk[0].count_key == "short" and bulk[1].count_key == bulk[1].sha256


def test_allocate_on_short_contents_hashes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = tokens.content_sha256

    def spy(text: str) -> str:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(tokens, "content_sha256", spy)
    monkeypatch.setattr("engine.candidates.content_sha256", spy)
    items = [BudgetItem(f"c{k}", k / 10, 5, f"id{k}", "PARAGRAPH", {}) for k in range(10)]
    alloc = allocate(items, Policy.default(20))
    assert alloc.selection.chosen and calls == []  # (building decision objects reads digests)
    assert [d.sha256 for d in alloc.decisions][:2] == [real("c0"), real("c1")]
