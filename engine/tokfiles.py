"""Tokenizer files a policy names (``name@path``, ``hf:path@sha256:...``), read safely.

What goes in: the path part of a policy's tokenizer and a :class:`TokenizerBase` (the
policy file's folder, and the folder below it of the file that wrote the tokenizer: a
base policy's own folder for a tokenizer written in a base). What comes out: the path
shown in messages and the file's bytes, read once; the loaders hash-check exactly these
bytes, so nothing swapped in afterwards is used.

Resolved like ``extends`` (:mod:`engine.extends`): the path is relative to the file that
wrote it and must stay inside the policy's folder; every component is opened below a
handle on that folder without following symlinks (:mod:`engine.safeopen`). A file not
there is looked for, by the same relative path, below the configured tokenizer folder
``$CTXBUDGET_TOKENIZER_DIR`` (a shared folder of tokenizer files, e.g. one per model),
again without following symlinks below it. Absolute paths, ``..`` that climbs out and
symlinks are refused: ``tokenizer.path_outside`` / ``tokenizer.path_symlink``; a file in
neither place is ``tokenizer.file_missing``, naming every place looked in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import TokenizerError
from .safeopen import NotAFile, SymlinkRefused, dir_handle, open_below, relative_parts

#: The configured tokenizer folder: searched after the policy's folder.
TOKENIZER_DIR_ENV = "CTXBUDGET_TOKENIZER_DIR"
#: Largest tokenizer file read (a tokenizer.json of 33 MB exists; weights are refused).
MAX_FILE_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TokenizerBase:
    """Where a policy's relative tokenizer paths resolve: ``root`` is the policy file's
    folder (symlinks in it resolved, as for ``extends``), ``rel_dir`` the folder below it
    of the file that wrote the tokenizer (``""``: the policy file itself)."""

    root: str
    rel_dir: str = ""

    @classmethod
    def of(cls, policy_file: str | None, written_in: str | None) -> TokenizerBase | None:
        """The base of a policy read from ``policy_file`` whose tokenizer is written in
        ``written_in`` (the policy file or one of its bases); None without a file."""
        if not policy_file:
            return None
        top = os.path.dirname(os.path.abspath(policy_file))
        rel = os.path.relpath(os.path.dirname(os.path.abspath(written_in or policy_file)), top)
        return cls(str(Path(policy_file).resolve().parent), "" if rel == "." else rel)


def _outside(path: str, base: TokenizerBase, why: str) -> TokenizerError:
    return TokenizerError(
        "tokenizer.path_outside",
        f"tokenizer file {path!r} {why}; in a policy, name a file relative to the policy's folder "
        f"({base.root}) or to the folder named by {TOKENIZER_DIR_ENV}, and copy it there",
    )


def _read_fd(fd: int, shown: str) -> bytes:
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise TokenizerError("tokenizer.invalid_file", f"{shown} has more than {MAX_FILE_BYTES} bytes; name the "
                             "tokenizer file, not the model's weights")
    return data


def _try(folder: str, parts: Sequence[str], shown: str, path: str) -> bytes | None:
    """The bytes of ``parts`` below ``folder``, None when it is not there (or not a file)."""
    try:
        with dir_handle(folder) as root_fd:
            fd = open_below(root_fd, os.path.join(*parts), os.O_RDONLY)
            return _read_fd(fd, shown)
    except SymlinkRefused as exc:
        raise TokenizerError(
            "tokenizer.path_symlink",
            f"tokenizer file {path!r}: {exc.name} (in {folder}) is a symbolic link; a tokenizer file named in a "
            "policy must be "
            "a real file (links are not followed, so that a link swapped in cannot make the policy read another "
            "file) — replace the link with a copy of the file",
        ) from None
    except (FileNotFoundError, NotADirectoryError, NotAFile):
        return None
    except OSError as exc:
        raise TokenizerError("tokenizer.file_missing",
                             f"cannot read the tokenizer file {shown}: {exc.strerror or exc}; fix its permissions") \
            from None


def read_below(base: TokenizerBase, path: str, candidates: Sequence[str]) -> tuple[str, bytes]:
    """The first of ``candidates`` (relative paths built from ``path``, the one written in
    the policy: the file itself, or files in it when it is a folder) found below the
    policy's folder, else below ``$CTXBUDGET_TOKENIZER_DIR``: its shown path and bytes."""
    if "\0" in path:
        raise _outside(path, base, "holds a NUL character")
    if os.path.isabs(path) or path.startswith("~"):
        raise _outside(path, base, "is absolute")
    folders: list[tuple[str, str]] = [(base.root, base.rel_dir)]
    configured = os.environ.get(TOKENIZER_DIR_ENV)
    if configured:
        folders.append((configured, ""))
    looked: list[str] = []
    for folder, rel_dir in folders:
        for cand in candidates:
            try:
                parts = relative_parts(os.path.join(rel_dir, cand) if rel_dir else cand)
            except ValueError:
                raise _outside(path, base, "points outside the policy's folder") from None
            shown = os.path.join(folder, *parts)
            data = _try(folder, parts, shown, path)
            if data is not None:
                return shown, data
            looked.append(shown)
    hint = "" if configured else f", or set {TOKENIZER_DIR_ENV} to a folder that holds it"
    raise TokenizerError(
        "tokenizer.file_missing",
        f"tokenizer file {path!r} is not in the policy's folder (looked in: {', '.join(looked)}); nothing is "
        f"downloaded at run time: copy the file there{hint}",
    )
