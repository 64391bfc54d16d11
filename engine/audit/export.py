"""Decision records as flat tables for analysts (``ctxbudget audit export``): CSV with the
standard library, Parquet with ``pyarrow`` (the ``export`` extra), for DuckDB or Spark.

What goes in: audit logs. What comes out: one row per decision (:data:`DECISION_COLUMNS`)
or, with ``items``, one row per candidate of each decision (:data:`ITEM_COLUMNS`), each
row marked with its checks: the log's hash chain is verified and every record checked
(:func:`~engine.audit.records.check_log`), so ``checks`` is ``ok`` or ``failed`` and
``failed_checks`` lists the finding codes. Columns are typed (Parquet keeps the types; a
column that is empty everywhere is still typed), the order is fixed, and a missing value
is an empty CSV cell or a Parquet null.

``pyarrow`` is imported only by :func:`write_parquet`: ``ctxbudget --help`` stays light.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .log import AuditLog
from .query import decision_items, decision_status, record_time, request_of
from .records import Finding, check_log

#: (column, type) of a decision row: Arrow's type names; ``timestamp`` is the record's ISO
#: 8601 text in CSV and a UTC microsecond timestamp in Parquet.
DECISION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("log", "string"), ("seq", "int64"), ("decision_id", "string"), ("timestamp", "timestamp"),
    ("request_id", "string"), ("requested_by", "string"),
    ("policy", "string"), ("revision", "string"), ("digest", "string"), ("outcome", "string"),
    ("status", "string"), ("strategy_requested", "string"), ("strategy_used", "string"),
    ("fallback_reason", "string"), ("tokens_used", "int64"), ("tokens_limit", "int64"),
    ("candidates", "int64"), ("included", "int64"), ("excluded", "int64"),
    ("objective", "int64"), ("gap", "double"), ("checks", "string"), ("failed_checks", "string"),
)
#: (column, type) of an item row: the decision's key columns, then the item's.
ITEM_COLUMNS: tuple[tuple[str, str], ...] = (
    ("log", "string"), ("seq", "int64"), ("decision_id", "string"), ("timestamp", "timestamp"),
    ("policy", "string"), ("revision", "string"), ("status", "string"),
    ("source_id", "string"), ("doc", "string"), ("level", "string"), ("tokens", "int64"),
    ("relevance", "double"), ("decision", "string"), ("reason", "string"),
    ("checks", "string"), ("failed_checks", "string"),
)
FORMATS = ("csv", "parquet")


def _sub(rec: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = rec.get(key)
    return value if isinstance(value, Mapping) else {}


def _typed(value: Any, kind: str) -> Any:
    """``value`` if it has the column's type, else None (a damaged record never breaks a
    typed column; it is marked by its checks instead)."""
    if value is None or isinstance(value, bool):
        return None
    if kind == "int64":
        return value if isinstance(value, int) else None
    if kind == "double":
        return float(value) if isinstance(value, (int, float)) else None
    return value if isinstance(value, str) else str(value)


def decision_row(log: str, env: Mapping[str, Any], findings: Sequence[Finding] = ()) -> dict[str, Any]:
    """One decision as a flat row (the keys of :data:`DECISION_COLUMNS`)."""
    rec = _sub(env, "record")
    pol, budget, strategy, solver = (_sub(rec, k) for k in ("policy", "budget", "strategy", "solver"))
    items = decision_items(rec) if rec.get("outcome") != "infeasible" else []
    included = sum(1 for it in items if it["decision"] == "included")
    row = {"log": log, "seq": env.get("seq"), "decision_id": rec.get("decision_id"),
           "timestamp": rec.get("timestamp"), "policy": pol.get("name"), "revision": pol.get("revision"),
           "request_id": request_of(rec).get("request_id"), "requested_by": request_of(rec).get("requested_by"),
           "digest": pol.get("digest"), "outcome": rec.get("outcome"), "status": decision_status(rec),
           "strategy_requested": strategy.get("requested"), "strategy_used": strategy.get("used"),
           "fallback_reason": strategy.get("fallback_reason"),
           "tokens_used": budget.get("assembled_tokens"), "tokens_limit": budget.get("limit_tokens"),
           "candidates": _sub(rec, "input").get("count"),
           "included": included if items else None, "excluded": len(items) - included if items else None,
           "objective": solver.get("objective"), "gap": solver.get("gap")}
    return {name: _typed(row.get(name), kind) for name, kind in DECISION_COLUMNS
            if name not in ("checks", "failed_checks")} | _marks(findings)


def item_rows(log: str, env: Mapping[str, Any], findings: Sequence[Finding] = ()) -> Iterator[dict[str, Any]]:
    """One row per candidate of a decision (the keys of :data:`ITEM_COLUMNS`)."""
    rec = _sub(env, "record")
    pol = _sub(rec, "policy")
    head = {"log": log, "seq": env.get("seq"), "decision_id": rec.get("decision_id"),
            "timestamp": rec.get("timestamp"), "policy": pol.get("name"),
            "revision": pol.get("revision"), "status": decision_status(rec)}
    for it in decision_items(rec):
        row = {**head, **it}
        yield {name: _typed(row.get(name), kind) for name, kind in ITEM_COLUMNS
               if name not in ("checks", "failed_checks")} | _marks(findings)


def _marks(findings: Sequence[Finding]) -> dict[str, Any]:
    return {"checks": "failed" if findings else "ok",
            "failed_checks": " ".join(sorted({f.code for f in findings})) or None}


@dataclass(frozen=True, slots=True)
class Exported:
    """What was written: rows, decisions, decisions that failed their checks, and the
    logs whose chain or lines were not intact."""

    path: str
    rows: int
    decisions: int
    failed: int
    broken_logs: tuple[str, ...]


def rows_of(logs: Iterable[AuditLog], *, items: bool) -> tuple[list[dict[str, Any]], int, int, list[str]]:
    """(rows, decisions, failed decisions, logs not intact) for ``logs``."""
    rows: list[dict[str, Any]] = []
    decisions = failed = 0
    broken: list[str] = []
    for log in logs:
        checks = check_log(log)
        if not checks.chain.ok or checks.unreadable:
            broken.append(str(log.path))
        for env in checks.decisions:
            found = checks.findings_for(env)
            decisions += 1
            failed += bool(found)
            if items:
                rows.extend(item_rows(str(log.path), env, found))
            else:
                rows.append(decision_row(str(log.path), env, found))
    return rows, decisions, failed, broken


def write_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], path: Path) -> None:
    """``rows`` as CSV with a header row (RFC 4180 quoting; None is an empty cell)."""
    names = [c for c, _ in columns]
    with _atomic(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in names} for r in rows)


def write_parquet(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], path: Path) -> None:
    """``rows`` as one Parquet file with a typed schema (needs the ``export`` extra).

    Raises:
        UsageError: ``export.missing_extra`` when ``pyarrow`` is not installed.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("export.missing_extra",
                         "--format parquet needs pyarrow, which is not installed; install the "
                         "export extra: pip install 'ctxbudget[export]' (or use --format csv)",
                         path="$.format") from None
    types = {"string": pa.string(), "int64": pa.int64(), "double": pa.float64(),
             "timestamp": pa.timestamp("us", tz="UTC")}

    def cell(value: Any, kind: str) -> Any:
        return record_time({"timestamp": value}) if kind == "timestamp" else value

    schema = pa.schema([(name, types[kind]) for name, kind in columns])
    table = pa.table({name: pa.array([cell(r.get(name), kind) for r in rows], type=types[kind])
                      for name, kind in columns}, schema=schema)
    with _atomic(path, "wb") as f:
        pq.write_table(table, f)


class _atomic:
    """Write to a temporary file next to ``path`` and rename it into place on success,
    so a failed export never leaves a half-written file under the requested name."""

    def __init__(self, path: Path, mode: str) -> None:
        self.path, self.mode = path, mode
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")

    def __enter__(self) -> Any:
        kwargs: dict[str, Any] = {"newline": "", "encoding": "utf-8"} if "b" not in self.mode else {}
        self.f = open(self.tmp, self.mode, **kwargs)
        return self.f

    def __exit__(self, exc_type: object, *_exc: object) -> None:
        self.f.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def export(logs: Sequence[AuditLog], out: str | os.PathLike[str], *, fmt: str = "csv",
           items: bool = False) -> Exported:
    """Write every decision (or, with ``items``, every item) of ``logs`` to ``out``.

    Raises:
        UsageError: ``export.bad_format``, ``export.missing_extra``, ``export.bad_out``.
    """
    if fmt not in FORMATS:
        raise UsageError("export.bad_format", f"unknown format {fmt!r}; use csv or parquet", path="$.format")
    path = Path(out)
    if not path.parent.is_dir():
        raise UsageError("export.bad_out", f"--out {out}: the folder {path.parent} does not exist; "
                         "create it first", path="$.out")
    rows, decisions, failed, broken = rows_of(logs, items=items)
    columns = ITEM_COLUMNS if items else DECISION_COLUMNS
    try:
        (write_parquet if fmt == "parquet" else write_csv)(rows, columns, path)
    except OSError as exc:
        raise UsageError("export.bad_out", f"cannot write {out}: {exc.strerror or exc}; choose a "
                         "writable --out", path="$.out") from None
    return Exported(str(path), len(rows), decisions, failed, tuple(broken))
