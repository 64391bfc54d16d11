"""Hugging Face ``tokenizer.json`` files, pinned by hash, read from this machine only.

What goes in: a tokenizer name ``hf:PATH@sha256:HEX`` — ``PATH`` a ``tokenizer.json``
(the file the ``tokenizers`` library saves: Llama, Qwen, Mistral, DeepSeek, ...; or a
folder holding one), ``HEX`` the SHA-256 of its bytes. What comes out: a
``tokenizers.Tokenizer`` built from exactly the bytes whose hash was checked (read once,
so a file swapped after the check cannot be used), with truncation and padding switched
off: a tokenizer.json that truncates at 512 tokens would otherwise undercount a long
item, and an undercount is a budget overshoot.

Counts are those of the reference, ``Tokenizer.from_file(PATH).encode(text,
add_special_tokens=False)``: no BOS/EOS or chat template tokens are added for an item
(the chat overhead of a policy's budget accounts for those), and text that spells an
added token is matched as that token, as the model's own tokenizer does.

Nothing here touches the network (``tokenizers`` reads the file; ``from_pretrained``,
which downloads, is never called). ``tokenizers`` is the optional extra ``[hf]``.
Errors are :class:`~engine.errors.TokenizerError`: ``tokenizer.hf_name`` (not of the
form), ``tokenizer.hash_missing`` (says the hash to pin), ``tokenizer.file_missing``,
``tokenizer.hash_mismatch``, ``tokenizer.invalid_file`` (not a tokenizer.json) and
``tokenizer.dependency_missing`` (install the extra).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TokenizerError

HF_PREFIX = "hf:"
#: The name's hash part: ``@sha256:`` and 64 hex digits.
HASH_SEP = "@sha256:"
#: Largest tokenizer.json read (Gemma 3's is 33 MB, Qwen's and Llama 3's about 10 MB).
MAX_TOKENIZER_BYTES = 128 * 1024 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FORM = "hf:path/to/tokenizer.json@sha256:<64 hex digits>"


@dataclass(frozen=True, slots=True)
class HfName:
    """A parsed ``hf:PATH@sha256:HEX`` name (``sha256`` None when the name has no hash)."""

    path: str
    sha256: str | None

    def with_path(self, path: str) -> str:
        """The name with ``path`` in place of this one's (same hash)."""
        return f"{HF_PREFIX}{path}{HASH_SEP}{self.sha256}" if self.sha256 else f"{HF_PREFIX}{path}"


def is_hf(name: str) -> bool:
    return name.startswith(HF_PREFIX)


def name_problem(name: str) -> str | None:
    """Why ``name`` (starting with ``hf:``) is not of the form, or None. Reads no file."""
    path, sep, digest = name[len(HF_PREFIX):].rpartition(HASH_SEP)
    if not sep:
        path, digest = name[len(HF_PREFIX):], ""
    if not path:
        return f"{name!r} names no file; write {_FORM}"
    if "\0" in path:
        return f"{name!r}: the path holds a NUL character; write {_FORM}"
    if sep and not _HEX64.fullmatch(digest):
        return (f"{name!r}: the hash after '@sha256:' must be 64 lower-case hex digits (got {digest[:70]!r}); "
                f"write {_FORM}, the hash from `sha256sum tokenizer.json`")
    return None


def parse(name: str) -> HfName:
    """``hf:PATH[@sha256:HEX]`` → :class:`HfName`; ``tokenizer.hf_name`` when malformed."""
    problem = name_problem(name)
    if problem:
        raise TokenizerError("tokenizer.hf_name", problem)
    path, sep, digest = name[len(HF_PREFIX):].rpartition(HASH_SEP)
    return HfName(path, digest) if sep else HfName(name[len(HF_PREFIX):], None)


def _file_of(path: Path) -> Path:
    """``path``, or ``path/tokenizer.json`` for a folder (a model's snapshot folder)."""
    return path / "tokenizer.json" if path.is_dir() else path


#: Reads a path named in a policy: ``(path, candidates) -> (shown path, bytes)``.
ExplicitReader = Callable[[str, Sequence[str]], tuple[str, bytes]]


def read_verified(hf: HfName, read_explicit: ExplicitReader | None = None) -> tuple[Path, bytes]:
    """The file's path and bytes, its SHA-256 checked against the pinned one; read with
    ``read_explicit`` when given (a policy's path: below its folder), else as given."""
    if read_explicit is not None:
        shown, data = read_explicit(hf.path, [hf.path, f"{hf.path}/tokenizer.json"])
        return _checked(hf, Path(shown), data)
    file = _file_of(Path(hf.path))
    try:
        size = file.stat().st_size
        if size > MAX_TOKENIZER_BYTES:
            raise TokenizerError(
                "tokenizer.invalid_file",
                f"{file} has {size} bytes, more than the {MAX_TOKENIZER_BYTES} a tokenizer.json may have; "
                "name the model's tokenizer.json, not its weights",
            )
        data = file.read_bytes()
    except FileNotFoundError:
        raise TokenizerError(
            "tokenizer.file_missing",
            f"no tokenizer.json at {file}; nothing is downloaded at run time: copy the model's tokenizer.json "
            f"(e.g. from its Hugging Face repository) to this machine and name it as {_FORM}",
        ) from None
    except OSError as exc:
        raise TokenizerError(
            "tokenizer.file_missing",
            f"cannot read the tokenizer file {file}: {exc.strerror or exc}; fix the path or its permissions",
        ) from None
    return _checked(hf, file, data)


def _checked(hf: HfName, file: Path, data: bytes) -> tuple[Path, bytes]:
    actual = hashlib.sha256(data).hexdigest()
    if hf.sha256 is None:
        raise TokenizerError(
            "tokenizer.hash_missing",
            f"{HF_PREFIX}{hf.path} is not pinned by hash, so a changed file would change every count unseen; "
            f"name it as {HF_PREFIX}{hf.path}{HASH_SEP}{actual} (the SHA-256 of {file} now, if that is "
            "the file you mean)",
        )
    if actual != hf.sha256:
        raise TokenizerError(
            "tokenizer.hash_mismatch",
            f"{file} is not the pinned tokenizer file: sha256 {actual} != pinned {hf.sha256}; the file was "
            "changed or replaced: copy the pinned one back, or pin the new one (its hash is the first above) "
            "after checking it is the model's tokenizer",
        )
    return file, data


def load(name: str, read_explicit: ExplicitReader | None = None) -> Any:
    """The ``tokenizers.Tokenizer`` for ``hf:PATH@sha256:HEX`` (see the module docstring);
    ``read_explicit`` reads a policy's path (below its folder)."""
    hf = parse(name)
    file, data = read_verified(hf, read_explicit)
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise TokenizerError(
            "tokenizer.dependency_missing",
            f"{name!r} needs the 'tokenizers' library; install the extra: pip install 'ctxbudget[hf]'",
        ) from None
    not_one = (f"{file} is not a tokenizer.json of the Hugging Face tokenizers library; name the model's "
               "tokenizer.json (not config.json or tokenizer_config.json)")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise TokenizerError("tokenizer.invalid_file", f"{not_one}: it is not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        raise TokenizerError("tokenizer.invalid_file", f"{not_one}: it has no 'model' object")
    try:
        tok = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as exc:  # tokenizers raises a bare Exception for a file it cannot parse
        raise TokenizerError("tokenizer.invalid_file", f"{not_one}: {str(exc)[:300]}") from None
    tok.no_truncation()
    tok.no_padding()
    return tok
