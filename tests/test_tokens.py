"""Token counting: exact and offline, explicit approximations only, clear errors."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import TokenizerError
from engine.tokens import APPROX_UTF8_BYTES, CL100K_SHA256, _offline_cl100k_path, get_tokenizer
from engine import tokens as tokens_mod

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tiktoken.Encoding:
    """tiktoken's own cl100k_base, built by tiktoken from its cache (no network): the file
    is placed where tiktoken looks, under the SHA-1 of its URL."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    shutil.copy(_offline_cl100k_path(), cache / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    mp = pytest.MonkeyPatch()
    mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    try:
        enc = tiktoken.get_encoding("cl100k_base")
        enc.encode("warm")  # force the load while the cache dir is set
    finally:
        mp.undo()
    return enc


def test_the_shipped_file_is_the_official_one() -> None:
    data = _offline_cl100k_path().read_bytes()
    assert hashlib.sha256(data).hexdigest() == CL100K_SHA256


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_cl100k_counts_equal_tiktokens(reference: tiktoken.Encoding, text: str) -> None:
    assert get_tokenizer().count(text) == len(reference.encode(text, disallowed_special=()))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_utf8_bytes_never_undercounts(text: str) -> None:
    assert get_tokenizer(APPROX_UTF8_BYTES).count(text) >= get_tokenizer().count(text)


def test_approximation_is_explicit_and_inexact() -> None:
    tok = get_tokenizer(APPROX_UTF8_BYTES)
    assert tok.exact is False and get_tokenizer().exact is True
    assert tok.count("héllo") == 6
    with pytest.raises(TokenizerError, match="unknown approximate counter 'approx:words'"):
        get_tokenizer("approx:words")


def test_special_token_text_is_counted_as_text() -> None:
    assert get_tokenizer().count("<|endoftext|>") == 7


def test_batch_counts_equal_single_counts_and_are_cached() -> None:
    tok = get_tokenizer()
    texts = [f"chunk number {k} about refunds and billing" * (k % 5 + 1) for k in range(50)]
    batch = tok.count_many(texts)
    assert batch == [tok.encoding.encode_ordinary(t).__len__() for t in texts]
    before = tok.cache_stats["hits"]
    assert tok.count_many(texts) == batch
    assert tok.cache_stats["hits"] - before == 50


def test_unknown_encoding_lists_the_known_ones() -> None:
    with pytest.raises(TokenizerError) as err:
        get_tokenizer("cl200k_base")
    assert err.value.code == "tokenizer.unknown"
    assert "known encodings:" in err.value.message and "o200k_base" in err.value.message


def test_missing_file_says_how_to_provide_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CTXBUDGET_TIKTOKEN_DIR", raising=False)
    with pytest.raises(TokenizerError) as err:
        tokens_mod._build("o200k_base")
    assert err.value.code == "tokenizer.file_missing"
    assert "nothing is downloaded at run time" in err.value.message
    assert "CTXBUDGET_TIKTOKEN_DIR" in err.value.message


def test_explicit_file_path_loads_and_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "cl100k_base.tiktoken"
    shutil.copy(_offline_cl100k_path(), good)
    tok = tokens_mod._build(f"cl100k_base@{good}")
    assert tok.count("hello world") == 2
    bad = tmp_path / "corrupt.tiktoken"
    data = bytearray(good.read_bytes())
    data[100] ^= 0x01
    bad.write_bytes(bytes(data))
    with pytest.raises(TokenizerError) as err:
        tokens_mod._build(f"cl100k_base@{bad}")
    assert err.value.code == "tokenizer.hash_mismatch"
    assert "is not the official cl100k_base file" in err.value.message


def test_tokenizer_dir_env_is_searched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shutil.copy(_offline_cl100k_path(), tmp_path / "cl100k_base.tiktoken")
    monkeypatch.setenv("CTXBUDGET_TIKTOKEN_DIR", str(tmp_path))
    # p50k_base is not there: the error names the folder searched.
    with pytest.raises(TokenizerError, match=str(tmp_path / "p50k_base.tiktoken")):
        tokens_mod._build("p50k_base")
