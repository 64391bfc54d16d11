"""Who asked, what for, and from which files: the request part of an audit record.

What goes in: a :class:`Request` (``request_id``, ``requested_by``, ``labels``, given by
the caller: CLI flags ``--request-id``, ``--requested-by``, ``--label KEY=VALUE`` or the
API arguments of :func:`engine.decide.decide`, :func:`engine.retrieval.pack.pack` and
:class:`engine.manager.TokenBudgetManager`), ``pack``'s query and the corpus files it
indexed (:class:`CorpusFile`). What comes out: the record's top-level ``request_id``,
``request_id_generated``, ``requested_by`` and ``labels`` fields and its ``query`` and
``corpus`` parts (:func:`provenance`).

- A request without an id gets one generated here (a UUID4), and the record says so
  (``request_id_generated: true``): a reviewer can tell an id the caller will
  find in its own logs from one made up by the engine.
- ``requested_by`` and the label values are stored as given (they identify the caller
  and the purpose; a reviewer needs them in clear). The policy's ``audit.mask`` globs
  apply to label keys as they do to metadata keys: a matching label's value is written
  ``{"masked": "hmac-sha256:<hex>"}`` and listed as ``labels.<key>`` in
  ``privacy.masked_fields``.
- The query is content (it says what the user asked): its keyed digest by default, its
  text only when the policy keeps it (``audit.store_query: true``; when unset it follows
  ``audit.store_content``, so a policy can keep the documents but not the users'
  questions, or the reverse).
- Each corpus file is recorded by its path relative to the root it was found under (a
  folder given to ``pack``, or the folder of a file given by name), its size and its
  digest: plain SHA-256 when content is stored, else HMAC-SHA256 under the log secret like
  every other content digest. A plain hash of a file would reveal it to anyone who can
  guess it (a one-line "approved: yes" file, a form with a few blanks filled in).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..canonical import sha256_hex
from ..errors import UsageError
from .privacy import mask_matches

if TYPE_CHECKING:
    from .record import Privacy

__all__ = ["CorpusFile", "Request", "parse_label", "provenance"]

MAX_ID_CHARS = 128
MAX_BY_CHARS = 256
MAX_LABELS = 64
MAX_LABEL_VALUE_CHARS = 256
_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,%d}$" % MAX_ID_CHARS)
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]{0,62}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _printable(text: str) -> bool:
    return not _CONTROL.search(text)


@dataclass(frozen=True, slots=True)
class Request:
    """Who asked for a decision and what for. ``request_id`` ``None``: one is generated
    when the record is built; ``labels``: (key, value) pairs, sorted by key."""

    request_id: str | None = None
    requested_by: str | None = None
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, request_id: str | None = None, requested_by: str | None = None,
           labels: Mapping[str, str] | Sequence[tuple[str, str]] | None = None) -> Request:
        """A checked request. Raises :class:`~engine.errors.UsageError` (exit 2):
        ``request.bad_id``, ``request.bad_requested_by``, ``request.bad_label``."""
        if request_id is not None and not (isinstance(request_id, str) and _ID.match(request_id)):
            raise UsageError("request.bad_id", f"request id {request_id!r} is not 1 to {MAX_ID_CHARS} "
                             "letters, digits or . _ : @ / + = -; pass such an id (e.g. your trace or "
                             "ticket id), or leave it out to have one generated", path="$.request_id")
        if requested_by is not None and not (
                isinstance(requested_by, str) and 0 < len(requested_by) <= MAX_BY_CHARS
                and requested_by.strip() == requested_by and _printable(requested_by)):
            raise UsageError("request.bad_requested_by", f"requested_by {requested_by!r} must be 1 to "
                             f"{MAX_BY_CHARS} printable characters without leading or trailing spaces "
                             "(a user, service or team name, e.g. svc:search-api)", path="$.requested_by")
        pairs = list(labels.items()) if isinstance(labels, Mapping) else list(labels or ())
        if len(pairs) > MAX_LABELS:
            raise UsageError("request.bad_label", f"{len(pairs)} labels given, at most {MAX_LABELS} "
                             "are kept; put the rest into one label or leave them out", path="$.labels")
        seen: dict[str, str] = {}
        for key, value in pairs:
            _check_label(key, value, seen)
            seen[key] = value
        return cls(request_id, requested_by, tuple(sorted(seen.items())))

    def part(self, privacy: Privacy, masked: set[str]) -> dict[str, Any]:
        """The record's request fields (an id generated if none was given; labels whose
        key matches ``audit.mask`` written masked, their names added to ``masked``)."""
        labels: dict[str, Any] = {}
        for key, value in self.labels:
            if privacy.secret is not None and mask_matches(key, privacy.mask):
                labels[key] = {"masked": privacy.secret.digest_json(value)}
                masked.add(f"labels.{key}")
            else:
                labels[key] = value
        return {"request_id": self.request_id or str(uuid.uuid4()),
                "request_id_generated": self.request_id is None,
                "requested_by": self.requested_by, "labels": labels}


def _check_label(key: Any, value: Any, seen: Mapping[str, str]) -> None:
    if not (isinstance(key, str) and _KEY.match(key)):
        raise UsageError("request.bad_label", f"label key {key!r} must start with a letter or '_' and "
                         "hold at most 63 letters, digits or _ . - / (e.g. team, ticket, app.version)",
                         path="$.labels")
    if not (isinstance(value, str) and len(value) <= MAX_LABEL_VALUE_CHARS and _printable(value)):
        raise UsageError("request.bad_label", f"label {key!r}: the value must be a string of at most "
                         f"{MAX_LABEL_VALUE_CHARS} printable characters", path=f"$.labels.{key}")
    if key in seen:
        raise UsageError("request.bad_label", f"label {key!r} given twice ({seen[key]!r} and {value!r}); "
                         "give each key once", path=f"$.labels.{key}")


def parse_label(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (from ``--label``) as a pair; ``request.bad_label`` otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError("request.bad_label", f"--label {text!r} is not KEY=VALUE; write e.g. "
                         "--label team=search (repeat --label for several)", path="$.labels")
    return key, value


@dataclass(frozen=True, slots=True)
class CorpusFile:
    """One file ``pack`` indexed: ``root`` (as given, or the folder of a file given by
    name), ``path`` below it (POSIX separators), the ``doc_id`` its items carry, and the
    bytes read (kept until the record is built, for the keyed digest; never written)."""

    root: str
    path: str
    doc_id: str | None
    data: bytes = b""

    def __repr__(self) -> str:
        return f"CorpusFile(root={self.root!r}, path={self.path!r}, bytes={len(self.data)})"


def _corpus_part(files: Sequence[CorpusFile], privacy: Privacy) -> dict[str, Any]:
    roots = list(dict.fromkeys(f.root for f in files))
    keyed = privacy.keyed and privacy.secret is not None
    return {"roots": roots, "digest_scheme": "hmac-sha256" if keyed else "sha256", "files": [
        {"root": roots.index(f.root), "path": f.path, "doc_id": f.doc_id, "bytes": len(f.data),
         "sha256": privacy.secret.digest(f.data) if keyed and privacy.secret else sha256_hex(f.data)}
        for f in files]}


def provenance(privacy: Privacy, masked: set[str], request: Request | None,
               query: str | None, corpus: Sequence[CorpusFile] | None) -> dict[str, Any]:
    """The record's fields for who asked and what for: ``request_id``,
    ``request_id_generated``, ``requested_by`` and ``labels`` (always), ``query`` and
    ``corpus`` (``pack`` decisions only)."""
    out: dict[str, Any] = (request or Request()).part(privacy, masked)
    if query is not None:
        out["query"] = privacy.query(query)
    if corpus is not None:
        out["corpus"] = _corpus_part(corpus, privacy)
    return out
