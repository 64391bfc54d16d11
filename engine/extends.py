"""``extends`` resolution: a policy file → that file merged over its chain of bases.

In: the path of a policy file that may name a base with ``extends: base.yaml``.

Out: one :class:`~engine.load.Loaded` document, still unvalidated, with ``extends``
removed and every value located in the file that wrote it (a base's values point
into the base file). Maps deep-merge key by key (the extending file wins), lists and
scalars are replaced whole, and ``metadata`` comes from the extending file alone.

Bases must stay inside the folder of the first file and are opened below a handle on
it without following symlinks (a symlinked base is ``policy.extends_symlink``); cycles,
missing files and chains longer than :data:`MAX_EXTENDS_DEPTH` are refused with a
:class:`~engine.errors.PolicyError` (codes ``policy.extends_*``) located at the
offending ``extends:`` line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import Location, PolicyError
from .load import MAX_POLICY_BYTES, Loaded, child_path, load_yaml_file
from .safeopen import NotAFile, SymlinkRefused, dir_handle, open_below, relative_parts

MAX_EXTENDS_DEPTH = 8
"""Most files in one ``extends`` chain, the extending file included."""


def resolve_extends(path: str | Path, *, max_bytes: int = MAX_POLICY_BYTES) -> Loaded:
    """The policy file at ``path`` merged over its ``extends`` chain (not validated).

    ``extends`` names a file relative to the extending file that must stay inside the
    folder of ``path`` (symlinks in ``path`` itself resolved). Bases are opened below a
    handle on that folder without following symlinks (:mod:`engine.safeopen`): a base
    that is a symlink, or lies below one, is ``policy.extends_symlink``, so a link swapped
    in after the check cannot make the policy read another file. Maps merge key by key
    (the extending file wins), lists and scalars are replaced whole, and ``metadata`` is
    taken from the extending file only (a base's name or revision never leaks into a
    child)."""
    loaded = load_yaml_file(path, file=str(path), max_bytes=max_bytes)
    if "extends" not in loaded.data:
        return loaded
    real = Path(path).resolve()
    try:
        with dir_handle(real.parent) as root_fd:
            top = os.stat(real.name, dir_fd=root_fd)
            return _extend(loaded, _Walk(root_fd, real.parent, max_bytes), real.name, str(path),
                           ((top.st_dev, top.st_ino, real.name),))
    except OSError as exc:  # the folder itself went away between the read and here
        raise PolicyError("policy.file_unreadable", f"cannot open the policy's folder ({exc.strerror or exc}); "
                          "check the path and permissions", location=Location(str(path))) from None


@dataclass(frozen=True, slots=True)
class _Walk:
    root_fd: int
    root: Path
    max_bytes: int


def _extend(loaded: Loaded, walk: _Walk, rel: str, label: str,
            chain: tuple[tuple[int, int, str], ...]) -> Loaded:
    """Merge ``loaded`` (the file ``rel`` below the root, shown as ``label``) over its base."""
    if "extends" not in loaded.data:
        return loaded
    value, where = loaded.data["extends"], loaded.location_of("$.extends")

    def fail(code: str, message: str) -> PolicyError:
        return PolicyError(f"policy.{code}", message, path="$.extends", location=where)

    if not isinstance(value, str) or not value.strip():
        raise fail("wrong_type", "extends must name a policy file in the same folder, e.g. base.yaml")
    if "\0" in value:
        raise fail("extends_bad_path", "extends holds a NUL character; name a policy file such as base.yaml")
    outside = fail("extends_outside", f"extends {value!r} points outside this policy's folder; a base policy must "
                   "be in the same folder — copy it here")
    if os.path.isabs(value) or value.startswith("~"):
        raise outside
    try:
        target = os.path.join(*relative_parts(os.path.join(os.path.dirname(rel), value)))
    except ValueError:
        raise outside from None
    try:
        fd = open_below(walk.root_fd, target, os.O_RDONLY, shown=target)
    except SymlinkRefused as exc:
        raise fail("extends_symlink", f"extends {value!r}: {exc.name} is a symbolic link; a base policy must be a "
                   "real file in this policy's folder (links are not followed, so that a link swapped in cannot "
                   "make the policy read another file) — replace the link with a copy of the file") from None
    except (FileNotFoundError, NotADirectoryError, NotAFile):
        raise fail("extends_missing", f"extends {value!r}: no such file in this policy's folder; check the name") \
            from None
    except OSError as exc:
        raise fail("extends_bad_path", f"extends {value[:60]!r} cannot be opened ({exc.strerror or exc}); name a "
                   "policy file in this folder such as base.yaml") from None
    try:
        st = os.fstat(fd)
        ident = (st.st_dev, st.st_ino)
        if any(ident == (dev, ino) for dev, ino, _ in chain):
            names = [name for _, _, name in chain] + [Path(target).as_posix()]
            raise fail("extends_cycle", f"extends cycle: {' → '.join(names)}; remove one of these extends")
        if len(chain) >= MAX_EXTENDS_DEPTH:
            raise fail("extends_too_deep", f"more than {MAX_EXTENDS_DEPTH} files in the extends chain; flatten it")
    except BaseException:
        os.close(fd)
        raise
    base_label = os.path.normpath(os.path.join(os.path.dirname(label), value))
    base_loaded = load_yaml_file(fd, file=base_label, max_bytes=walk.max_bytes)  # closes fd
    base = _extend(base_loaded, walk, target, base_label, (*chain, (*ident, Path(target).as_posix())))
    child = {key: item for key, item in loaded.data.items() if key != "extends"}
    merged = _deep_merge({key: item for key, item in base.data.items() if key != "metadata"}, child)
    locations: dict[str, Location] = {}
    _merge_locations(merged, "$", loaded.locations, base.locations, locations)
    return Loaded(merged, MappingProxyType(locations), loaded.file)


def _deep_merge(base: Any, child: Any) -> Any:
    if isinstance(base, dict) and isinstance(child, dict):
        merged = dict(base)
        for key, value in child.items():
            merged[key] = _deep_merge(base[key], value) if key in base else value
        return merged
    return child


def _merge_locations(value: Any, path: str, child: Mapping[str, Location], base: Mapping[str, Location],
                     out: dict[str, Location]) -> None:
    """Locate every path of the merged ``value``: where the child wrote it, else where
    the base did (a path the child writes is always the child's value)."""
    found = child.get(path) or base.get(path)
    if found is not None:
        out[path] = found
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        _merge_locations(item, child_path(path, key), child, base, out)
