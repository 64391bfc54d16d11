"""A what-if diff as files: the JSON document, and Parquet tables (the ``export`` extra,
``pyarrow``) for DuckDB or Spark: one row per (product, revision) group, and one row per
changed decision, written in batches as the shards come back (never all held at once).
Each file is written next to its name and renamed into place, so a failed run never
leaves a half-written file under the requested name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .whatif import WhatIf
from .whatifdiff import ChangedDecision

__all__ = ["CHANGED_COLUMNS", "GROUP_COLUMNS", "ChangedIds", "ChangedParquet", "group_rows", "write_groups_parquet",
           "write_json"]

GROUP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("product", "string"), ("revision", "string"), ("policy", "string"), ("policy_revision", "string"),
    ("decisions", "int64"), ("unchanged", "int64"), ("changed", "int64"), ("errors", "int64"),
    ("failed_checks", "int64"), ("newly_infeasible", "int64"), ("newly_feasible", "int64"),
    ("items_gained", "int64"), ("items_lost", "int64"), ("gained_by_reason", "string"),
    ("lost_by_reason", "string"), ("tokens_before", "int64"), ("tokens_after", "int64"),
    ("tokens_delta", "int64"), ("objective_compared", "int64"), ("objective_before", "int64"),
    ("objective_after", "int64"), ("objective_delta", "int64"), ("solver_outcomes", "string"))
CHANGED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("log", "string"), ("seq", "int64"), ("decision_id", "string"), ("product", "string"),
    ("revision", "string"), ("outcome_before", "string"), ("outcome_after", "string"),
    ("status_before", "string"), ("status_after", "string"), ("items_added", "int64"),
    ("items_removed", "int64"), ("tokens_before", "int64"), ("tokens_after", "int64"),
    ("objective_before", "int64"), ("objective_after", "int64"), ("fields", "string"))
_BATCH = 10_000


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("whatif.missing_extra", "--parquet needs pyarrow, which is not installed; install "
                         "the export extra: pip install 'ctxbudget[export]' (or write JSON: --out)",
                         path="$.parquet") from None
    return pa, pq


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _check_out(path: Path, flag: str) -> None:
    if not path.parent.is_dir():
        raise UsageError("whatif.bad_out", f"{flag} {path}: the folder {path.parent} does not exist; "
                         "create it or write elsewhere", path=f"$.{flag.lstrip('-').replace('-', '_')}")


def write_json(diff: WhatIf, path: str | os.PathLike[str]) -> None:
    """The diff (:meth:`WhatIf.to_dict`) as an indented JSON file."""
    target = Path(path)
    _check_out(target, "--out")
    tmp = _tmp(target)
    tmp.write_text(json.dumps(diff.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)


def group_rows(diff: WhatIf) -> list[dict[str, Any]]:
    """One flat row per (product, revision); reason and outcome counts as JSON objects."""
    rows = []
    for (product, revision), g in sorted(diff.groups.items()):
        d = g.to_dict()
        rows.append({
            "product": product, "revision": revision, "policy": diff.policy.get("name"),
            "policy_revision": diff.policy.get("revision"),
            **{k: d[k] for k in ("decisions", "unchanged", "changed", "errors", "failed_checks",
                                 "newly_infeasible", "newly_feasible")},
            "items_gained": d["items"]["gained"], "items_lost": d["items"]["lost"],
            "gained_by_reason": json.dumps(d["items"]["gained_by_reason"], sort_keys=True),
            "lost_by_reason": json.dumps(d["items"]["lost_by_reason"], sort_keys=True),
            "tokens_before": d["tokens"]["before"], "tokens_after": d["tokens"]["after"],
            "tokens_delta": d["tokens"]["delta"], "objective_compared": d["objective"]["decisions_compared"],
            "objective_before": d["objective"]["before"], "objective_after": d["objective"]["after"],
            "objective_delta": d["objective"]["delta"],
            "solver_outcomes": json.dumps(d["solver_outcomes"], sort_keys=True)})
    return rows


def _table(pa: Any, rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> Any:
    types = {"string": pa.string(), "int64": pa.int64()}
    schema = pa.schema([(name, types[kind]) for name, kind in columns])
    return pa.table({name: pa.array([r.get(name) for r in rows], type=types[kind])
                     for name, kind in columns}, schema=schema)


def write_groups_parquet(diff: WhatIf, path: str | os.PathLike[str]) -> int:
    """:func:`group_rows` as a Parquet file; the number of rows."""
    pa, pq = _pyarrow()
    target = Path(path)
    _check_out(target, "--parquet")
    rows = group_rows(diff)
    tmp = _tmp(target)
    pq.write_table(_table(pa, rows, GROUP_COLUMNS), str(tmp))
    os.replace(tmp, target)
    return len(rows)


class ChangedParquet:
    """The changed decisions as a Parquet file, written in row groups of up to 10,000
    rows as they arrive: pass :meth:`add` as ``whatif(on_changed=...)``, then
    :meth:`close` (renames the file into place) or :meth:`abort`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.pa, pq = _pyarrow()
        self.path = Path(path)
        _check_out(self.path, "--changed-parquet")
        self.tmp = _tmp(self.path)
        self.schema = _table(self.pa, [], CHANGED_COLUMNS).schema
        self.writer = pq.ParquetWriter(str(self.tmp), self.schema)
        self.pending: list[dict[str, Any]] = []
        self.rows = 0

    def add(self, changed: Sequence[ChangedDecision]) -> None:
        self.pending.extend(c.to_dict() for c in changed)
        if len(self.pending) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_table(_table(self.pa, self.pending, CHANGED_COLUMNS))
            self.rows += len(self.pending)
            self.pending = []

    def close(self) -> int:
        """Write what is pending, close and rename into place; the number of rows."""
        self._flush()
        self.writer.close()
        os.replace(self.tmp, self.path)
        return self.rows

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


class ChangedIds:
    """The changed decision ids, one per line in log order, written as the shards come
    back (``--changed-ids``: the diff then does not hold them): pass :meth:`add` as
    ``whatif(on_changed=...)``, then :meth:`close` (renames the file into place) or
    :meth:`abort`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        _check_out(self.path, "--changed-ids")
        self.tmp = _tmp(self.path)
        self.file = open(self.tmp, "w", encoding="utf-8")
        self.rows = 0

    def add(self, changed: Sequence[ChangedDecision]) -> None:
        self.file.write("".join(f"{c.decision_id}\n" for c in changed))
        self.rows += len(changed)

    def close(self) -> int:
        """Close and rename into place; the number of ids."""
        self.file.close()
        os.replace(self.tmp, self.path)
        return self.rows

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)
