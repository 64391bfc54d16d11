"""A batch count fills the cache as one-by-one counting does (engine/tokens.py puts a
batch's counts under one acquisition of the lock): same entries, same order, the oldest
evicted first at the bound."""

from __future__ import annotations

import pytest

from engine import tokens
from engine.tokens import TiktokenCounter, get_tokenizer


def _fresh() -> TiktokenCounter:
    shared = get_tokenizer("cl100k_base")
    assert isinstance(shared, TiktokenCounter)
    return TiktokenCounter(shared.name, shared.encoding)


@pytest.mark.parametrize("bound", [3, 5, 100])
def test_batch_fills_the_cache_like_one_by_one(monkeypatch: pytest.MonkeyPatch, bound: int) -> None:
    monkeypatch.setattr(tokens, "CACHE_ENTRIES", bound)
    texts = [f"text number {k} " * (k + 1) for k in range(8)]
    warm = ["already here", texts[2]]
    one, batch = _fresh(), _fresh()

    def put_each(items: dict[str, int]) -> None:  # the previous code: one _put per count
        for key, value in items.items():
            one._put(key, value)

    one._put_many = put_each  # type: ignore[method-assign]
    for counter in (one, batch):
        for t in warm:
            counter.count(t)
    counts = batch.count_many(texts + texts[:3])
    assert one.count_many(texts + texts[:3]) == counts
    assert counts == [len(batch.encoding.encode_ordinary(t)) for t in texts + texts[:3]]
    assert list(batch._cache.items()) == list(one._cache.items())
    assert len(batch._cache) == min(bound, len(set(warm + texts)))
    if bound < len(texts):  # the bound was reached: the oldest went first
        assert list(batch._cache) == [tokens.count_key(t) for t in texts[-bound:]]


@pytest.mark.parametrize("warm", [[], ["b", "x"], ["a", "b", "c", "dd"]])
def test_batch_paths_count_and_tally_as_one_by_one(warm: list[str]) -> None:
    """A cold batch, a warm one and a mixed one (repeats) give the counts,
    the cache entries and the hit/miss tally of counting each text with count()."""
    texts = ["a", "b", "c", "dd", "a longer text, with punctuation!"]
    for batch_texts in (texts, texts + texts[:2], texts[::-1]):
        one, batch = _fresh(), _fresh()
        for counter in (one, batch):
            for t in warm:
                counter.count(t)
        want = [one.count(t) for t in batch_texts]
        assert batch.count_many(batch_texts) == want
        assert batch.cache_stats == one.cache_stats
        assert list(batch._cache.items()) == list(one._cache.items())
    assert _fresh().count_many([]) == []
    # The encoder's loop leaves a text with a lone surrogate to tiktoken's own wrapper.
    odd = ["ok", "dd\ud800"]
    assert _fresh()._raw_count_many(odd) == [len(_fresh().encoding.encode_ordinary(t)) for t in odd]


def test_cache_keys_short_texts_by_themselves_long_ones_by_digest() -> None:
    counter = _fresh()
    short, long = "x" * (tokens.KEY_TEXT_CHARS - 1), "y" * tokens.KEY_TEXT_CHARS
    counter.count_many([short, long])
    assert list(counter._cache) == [short, tokens.content_sha256(long)]
    # A short text that looks like a digest is its own key: it cannot meet a long text's.
    fake = tokens.content_sha256(long)[:-1]
    assert counter.count(fake) == len(counter.encoding.encode_ordinary(fake))
    # Digests the caller already has, or keys, give the same entries and counts.
    again = _fresh()
    assert again.count_many([short, long], hashes=["unused", tokens.content_sha256(long)]) == \
        counter.count_many([short, long])
    assert list(again._cache) == [short, tokens.content_sha256(long)]
