"""``extends`` resolution: a policy file → that file merged over its chain of bases.

In: the path of a policy file that may name a base with ``extends: base.yaml``.

Out: one :class:`~engine.load.Loaded` document, still unvalidated, with ``extends``
removed and every value located in the file that wrote it (a base's values point
into the base file). Maps deep-merge key by key (the extending file wins), lists and
scalars are replaced whole, and ``metadata`` comes from the extending file alone.

Bases must stay inside the folder of the first file (symlinks resolved); cycles,
missing files and chains longer than :data:`MAX_EXTENDS_DEPTH` are refused with a
:class:`~engine.errors.PolicyError` (codes ``policy.extends_*``) located at the
offending ``extends:`` line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import Location, PolicyError
from .load import MAX_POLICY_BYTES, Loaded, child_path, load_yaml_file

MAX_EXTENDS_DEPTH = 8
"""Most files in one ``extends`` chain, the extending file included."""


def resolve_extends(path: str | Path, *, max_bytes: int = MAX_POLICY_BYTES) -> Loaded:
    """The policy file at ``path`` merged over its ``extends`` chain (not validated).

    ``extends`` names a file relative to the extending file that must stay inside the
    folder of ``path`` once symlinks are resolved. Maps merge key by key (the extending
    file wins), lists and scalars are replaced whole, and ``metadata`` is taken from
    the extending file only (a base's name or revision never leaks into a child)."""
    root = Path(path).resolve().parent
    return _resolve(Path(path), str(path), root, (), max_bytes)


def _resolve(path: Path, label: str, root: Path, chain: tuple[Path, ...], max_bytes: int) -> Loaded:
    loaded = load_yaml_file(path, file=label, max_bytes=max_bytes)
    if "extends" not in loaded.data:
        return loaded
    value, where = loaded.data["extends"], loaded.location_of("$.extends")

    def fail(code: str, message: str) -> PolicyError:
        return PolicyError(f"policy.{code}", message, path="$.extends", location=where)

    if not isinstance(value, str) or not value.strip():
        raise fail("wrong_type", "extends must name a policy file in the same folder, e.g. base.yaml")
    if "\0" in value:
        raise fail("extends_bad_path", "extends holds a NUL character; name a policy file such as base.yaml")
    real = path.resolve()
    chain = (*chain, real)
    try:
        target = (real.parent / value).resolve()
        target.is_file()  # surfaces ENAMETOOLONG and friends here, not later
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        why = getattr(exc, "strerror", None) or str(exc)
        raise fail("extends_bad_path", f"extends {value[:60]!r} cannot be resolved ({why}); name a policy "
                   "file in this folder such as base.yaml") from None
    if os.path.isabs(value) or value.startswith("~") or not target.is_relative_to(root):
        raise fail("extends_outside", f"extends {value!r} points outside this policy's folder; a base policy must "
                   "be in the same folder — copy it here")
    if target in chain:
        names = [p.relative_to(root).as_posix() for p in (*chain, target)]
        raise fail("extends_cycle", f"extends cycle: {' → '.join(names)}; remove one of these extends")
    if not target.is_file():
        raise fail("extends_missing", f"extends {value!r}: no such file in this policy's folder; check the name")
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise fail("extends_too_deep", f"more than {MAX_EXTENDS_DEPTH} files in the extends chain; flatten it")
    base = _resolve(target, os.path.normpath(os.path.join(os.path.dirname(label), value)), root, chain, max_bytes)
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
