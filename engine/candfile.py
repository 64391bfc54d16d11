"""Candidates file → validated candidate mappings, each with its file:line:col.

In: the path of a candidates file (:func:`load_candidates_file`) or its text
(:func:`load_candidates_text`), either JSON Lines (one object per line, blank lines
ignored) or one JSON array of objects.

Out: ``((candidate_dict, location), ...)`` in file order, each dict plain JSON data
that passed ``schemas/candidates.schema.json`` (defaults are *not* filled in: that is
the candidates stage's job, :mod:`engine.candidates`).

The JSON is read strictly: NaN/Infinity literals and duplicate keys are refused rather
than silently accepted. Every problem is a :class:`~engine.errors.CandidateError` with a
code and a location; all of them are gathered into one error, records in file order.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from .errors import CandidateError, Location
from .load import child_path, gather_issues, read_text
from .schema import candidate_issues


class _NonFinite(ValueError):
    pass


class _DuplicateKey(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFinite(name)


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_object_pairs)
_WS = re.compile(r"[ \t\n\r]*")


def _json_value(text: str, start: int, location: Location) -> tuple[Any, int]:
    """Decode one JSON value at ``start``; CandidateError (``candidate.json_syntax``,
    ``candidate.non_finite``, ``candidate.duplicate_key``) located at ``location``."""
    try:
        return _DECODER.raw_decode(text, start)
    except _NonFinite as exc:
        raise CandidateError(
            "candidate.non_finite",
            f"{exc} is not valid JSON (numbers must be finite); write a finite number",
            location=location,
        ) from None
    except _DuplicateKey as exc:
        raise CandidateError(
            "candidate.duplicate_key",
            f"duplicate key {exc.args[0]!r}; JSON readers would silently keep the last value — remove one",
            location=location,
        ) from None
    except RecursionError:
        raise CandidateError(
            "candidate.too_deep",
            "the JSON is nested too deeply to read; a candidate is a flat object with a small metadata map",
            location=location,
        ) from None
    except ValueError as exc:  # e.g. a number literal beyond Python's digit limit
        if isinstance(exc, json.JSONDecodeError):
            raise
        raise CandidateError(
            "candidate.json_syntax",
            f"cannot read this JSON value ({exc}); write numbers with at most 16 significant digits",
            location=location,
        ) from None


def load_candidates_text(
    text: str, file: str | None = None, *, form: str = "auto"
) -> tuple[tuple[dict[str, Any], Location], ...]:
    """Parse and validate candidates; see :func:`load_candidates_file`.

    ``form`` is ``"jsonl"``, ``"array"`` or ``"auto"`` (an array when the first
    non-blank character is ``[``, JSON Lines otherwise)."""
    text = text.removeprefix("\ufeff")
    start = _WS.match(text).end()  # type: ignore[union-attr]
    if start == len(text):
        return ()
    if form == "auto":
        form = "array" if text[start] == "[" else "jsonl"
    issues: list[CandidateError] = []
    records = _json_array(text, file, start) if form == "array" else _json_lines(text, file, issues)
    for item, path, location in records:
        issues.extend(candidate_issues(item, path=path, location=location))
    if issues:
        issues.sort(key=lambda issue: (issue.location and issue.location.line) or 0)  # file order, stable
        raise gather_issues(issues)
    return tuple((item, location) for item, _path, location in records)


def _json_lines(text: str, file: str | None, issues: list[CandidateError]) -> list[tuple[Any, str, Location]]:
    """The parsed records of JSON Lines; unparsable lines are appended to ``issues``."""
    records: list[tuple[Any, str, Location]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        _json_line(line, number, file, records, issues)
    return records


def _json_line(line: str, number: int, file: str | None, records: list[tuple[Any, str, Location]],
               issues: list[CandidateError]) -> None:
    """Parse line ``number`` of JSON Lines into ``records`` (blank: nothing; unparsable:
    its error into ``issues``)."""
    if line.strip():
        location = Location(file, number)
        try:
            value, end = _json_value(line, _WS.match(line).end(), location)  # type: ignore[union-attr]
            if line[end:].strip():
                raise json.JSONDecodeError("Extra data", line, _WS.match(line, end).end())  # type: ignore[union-attr]
        except json.JSONDecodeError as exc:
            issues.append(
                CandidateError(
                    "candidate.json_syntax",
                    f"invalid JSON: {exc.msg}; each line must hold exactly one JSON object",
                    location=Location(file, number, exc.colno),
                )
            )
            return
        except CandidateError as exc:
            issues.append(exc)
            return
        records.append((value, "$", location))


def _json_array(text: str, file: str | None, start: int) -> list[tuple[Any, str, Location]]:
    newlines = [match.start() for match in re.finditer("\n", text)]

    def where(offset: int) -> Location:
        line = bisect.bisect_left(newlines, offset)
        return Location(file, line + 1, offset - (newlines[line - 1] + 1 if line else 0) + 1)

    def syntax(message: str, offset: int) -> CandidateError:
        return CandidateError(
            "candidate.json_syntax",
            f"invalid JSON: {message}; a .json candidates file is one array of objects",
            location=where(offset),
        )

    if text[start] != "[":
        raise syntax("expected '[' to start the array", start)
    records: list[tuple[Any, str, Location]] = []
    pos = _WS.match(text, start + 1).end()  # type: ignore[union-attr]
    if pos < len(text) and text[pos] == "]":
        pos += 1
    else:
        while True:
            location = where(pos)
            try:
                value, pos = _json_value(text, pos, location)
            except json.JSONDecodeError as exc:
                raise syntax(exc.msg, exc.pos) from None
            records.append((value, child_path("$", len(records)), location))
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
            if pos < len(text) and text[pos] == ",":
                pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
                continue
            if pos < len(text) and text[pos] == "]":
                pos += 1
                break
            raise syntax("expected ',' or ']' after an array element", pos)
    rest = _WS.match(text, pos).end()  # type: ignore[union-attr]
    if rest != len(text):
        raise syntax("extra data after the array", rest)
    return records


def load_candidates_file(path: str | Path) -> tuple[tuple[dict[str, Any], Location], ...]:
    """Read candidates from JSON Lines or a JSON array, each validated against
    ``schemas/candidates.schema.json``.

    A ``.json`` file must be one array of objects (each element located at its first
    character); any other file is JSON Lines unless it starts with ``[`` — one object
    per line, blank lines ignored, each located at its line. Defaults (``level``,
    ``token_count``) are *not* filled in: that is the candidates stage's job.

    Returns:
        ``((candidate_dict, location), ...)`` in file order; ``()`` for a blank file.

    Raises:
        CandidateError: every problem found, best first per record, records in file
            order; codes ``candidate.file_not_found``, ``candidate.file_unreadable``,
            ``candidate.not_utf8``, ``candidate.json_syntax``, ``candidate.non_finite``
            (NaN/Infinity literals), ``candidate.duplicate_key`` and ``candidate.schema``
            (``details['rule']`` says which: ``missing_field``, ``wrong_type``, ...).
    """
    if Path(path).suffix.lower() != ".json":
        streamed = _stream_json_lines(path)
        if streamed is not None:
            return streamed
    text, file = read_text(path, CandidateError, "candidate", None)
    form = "array" if Path(path).suffix.lower() == ".json" else "auto"
    return load_candidates_text(text, file, form=form)


_BOM = "\ufeff".encode()


def _stream_json_lines(path: str | Path) -> tuple[tuple[dict[str, Any], Location], ...] | None:
    """A JSON Lines file read line by line (the file is never held whole: each line is
    parsed and checked as it is read): the same result and the same errors as
    :func:`load_candidates_text` on the whole text. None, for the whole-file reader, when
    the file is an array (its first non-blank character is ``[``), is not a regular file
    (a pipe: read whole, once), cannot be opened or read, or is not UTF-8 (that reader
    says where, as before)."""
    file = str(path)
    records: list[tuple[Any, str, Location]] = []
    issues: list[CandidateError] = []
    try:
        with open(path, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None  # a pipe cannot be read again by the whole-file reader
            for number, raw in enumerate(handle, start=1):
                if number == 1:
                    # what utf-8-sig decoding and removeprefix("\ufeff") take: up to two marks
                    raw = raw.removeprefix(_BOM).removeprefix(_BOM)
                    if raw.lstrip(b" \t\r\n")[:1] == b"[":
                        return None
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    return None
                if line.endswith("\n"):
                    line = line[:-1]
                before = len(records)
                _json_line(line, number, file, records, issues)
                if len(records) > before:
                    item, rec_path, location = records[-1]
                    issues.extend(candidate_issues(item, path=rec_path, location=location))
    except OSError:
        return None
    if issues:
        issues.sort(key=lambda issue: (issue.location and issue.location.line) or 0)  # file order, stable
        raise gather_issues(issues)
    return tuple((item, location) for item, _path, location in records)
