"""Records checked, not just lines: recompute what each decision record claims.

The hash chain (:mod:`engine.audit.verify`) proves the order of the lines, not that what
a line says holds together: a writer can re-run the engine under an edited policy, keep
the original ``policy.digest`` and reseal the chain. These checks recompute, from the
record alone:

* ``policy.digest`` from ``policy.effective`` (RFC 8785, as :class:`~engine.policy.Policy`
  computes it), and that the effective policy loads and matches the recorded tokenizer
  and budget limit;
* ``input.digest`` and ``input.count`` from the recorded input items, and, where the
  content is stored, each ``content_sha256`` from that content;
* that ``items`` describe exactly the input items (same ids, same content digests) and
  ``context.order`` holds exactly the included items, once each;
* the token totals: ``budgeted_tokens`` is the sum of the included items' tokens plus one
  separator between each two, ``assembled_tokens`` and ``free_tokens`` agree with
  ``context.tokens`` and the limit, and, where the content is stored, the context is
  assembled again and recounted in the policy's tokenizer (its count and its SHA-256).

The record is also validated against ``schemas/audit.schema.json`` (``record.schema``,
the best-ranked error): a field a reviewer's tools read must be there and typed.

What goes in: a record (a mapping) and its seq. What comes out: a tuple of
:class:`Finding` (empty: the record holds together). Never raises on a malformed
record: a missing or mistyped field is a finding (``record.malformed``).
"""

from __future__ import annotations

import json
from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..candidates import make_candidate
from ..canonical import digest, sha256_hex
from ..counts import policy_tokenizer, render
from ..errors import EngineError
from ..policy import Policy
from ..tokens import content_sha256
from .log import AuditLog
from .policies import ArchiveProblem, PolicyArchive
from .privacy import PREFIX as KEYED_PREFIX, AuditSecret, configured_secret
from .recordschema import schema_error
from .verify import VerifyReport


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a record claims that does not hold: a stable dotted ``code``, the
    record's ``seq`` and ``decision_id``, the JSON ``path`` in the record, and a
    sentence saying what is wrong."""

    code: str
    seq: int | None
    decision_id: str | None
    path: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "seq": self.seq, "decision_id": self.decision_id,
                "path": self.path, "message": self.message}

    def __str__(self) -> str:
        return f"seq {self.seq} decision {self.decision_id}: {self.code} at {self.path}: {self.message}"


def _policy_digest(effective: Any) -> str:
    """``digest(effective)``, computed once per distinct policy (a log holds few)."""
    try:
        key = json.dumps(effective, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return digest(effective)
    return _digest_of_json(key)


@lru_cache(maxsize=64)
def _digest_of_json(key: str) -> str:
    return digest(json.loads(key))


#: The effective policies checked last, by the identity of their mapping: the records of a
#: log whose policy comes from its archive share one mapping (verified against its
#: name), so its digest is computed and its Policy loaded once, not once per record. The
#: mapping itself is held, so an id is never mistaken for a later object's.
_LOADED: dict[tuple[int, Any], tuple[Mapping[str, Any], str, Policy | EngineError]] = {}


_ITEM_KEYS = (("source_id", str), ("decision", str), ("tokens", int))


def _plain_items(items: list[Any]) -> bool:
    """Every item a dict whose ``source_id`` and ``decision`` are strings and ``tokens``
    an int (exact types, checked column by column); False sends the items to the
    item-by-item check, which names the first one that is not."""
    if not set(map(type, items)) <= {dict}:
        return False
    return all(set(type(it.get(key)) for it in items) <= {kind} for key, kind in _ITEM_KEYS)


class _Malformed(Exception):
    def __init__(self, path: str, why: str) -> None:
        super().__init__(why)
        self.path, self.why = path, why


def _get(obj: Any, key: str, path: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        raise _Malformed(f"{path}.{key}", f"{path}.{key} is missing")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise _Malformed(f"{path}.{key}", f"{path}.{key} has the wrong type ({type(value).__name__})")
    return value


def _int(obj: Any, key: str, path: str) -> int:
    value: int = _get(obj, key, path, int)
    return value


class _Checker:
    def __init__(self, record: Mapping[str, Any], seq: int | None,
                 secret: AuditSecret | None = None) -> None:
        self.rec = record
        self.seq = seq
        self.secret = secret
        self.notes: list[str] = []
        did = record.get("decision_id") if isinstance(record, Mapping) else None
        self.did = did if isinstance(did, str) else None
        self.found: list[Finding] = []

    def add(self, code: str, path: str, message: str) -> None:
        self.found.append(Finding(code, self.seq, self.did, path, message))

    def _step(self, step: Any) -> Any:
        try:
            return step()
        except _Malformed as exc:
            self.add("record.malformed", exc.path, exc.why + "; the record was not written "
                     "by ctxbudget as it stands (hand-edited or damaged)")
            return None

    def schema(self) -> None:
        error = schema_error(self.rec)
        if error is not None:
            path, message = error
            self.add("record.schema", path, "the record does not match schemas/audit.schema.json: "
                     + message[:300])

    def run(self) -> tuple[Finding, ...]:
        self.schema()
        policy = self._step(self.policy)
        self._step(self.inputs)
        self._step(self.items_and_order)
        if policy is not None and not any(f.code == "record.malformed" for f in self.found):
            self._step(lambda: self.recount(policy))
        return tuple(self.found)

    # -- policy: digest from the effective policy ---------------------------------------
    def policy(self) -> Policy | None:
        pol = _get(self.rec, "policy", "$", Mapping)
        if isinstance(pol, Mapping) and "effective" not in pol and isinstance(pol.get("digest"), str):
            self.add("record.policy_unresolved", "$.policy.effective",
                     f"the record names policy {pol['digest']} but does not carry it, and the log's "
                     "policy archive (<log>.policies) does not hold it: restore the archive from a copy")
            return None
        effective = _get(pol, "effective", "$.policy", Mapping)
        claimed = _get(pol, "digest", "$.policy", str)
        file = pol.get("file")
        key = (id(effective), file) if file is None or type(file) is str else None
        known = _LOADED.get(key) if key is not None else None
        if known is not None and known[0] is effective:  # the same object again (the log's archive)
            actual, policy = known[1], known[2]
        else:
            actual = _policy_digest(effective)
            try:
                policy = Policy.from_record(effective, file=file)
            except EngineError as exc:
                policy = exc
            if key is not None:
                if len(_LOADED) >= 16:
                    _LOADED.clear()
                _LOADED[key] = (effective, actual, policy)
        if actual != claimed:
            self.add("record.policy_digest", "$.policy.digest",
                     f"the effective policy hashes to {actual}, not to the recorded {claimed}: "
                     "the policy the decision claims to follow was changed after the fact")
        if isinstance(policy, EngineError):
            self.add("record.policy_invalid", "$.policy.effective",
                     f"the effective policy does not load: {policy.code}: {policy.message}")
            return None
        tok = _get(self.rec, "tokenizer", "$", Mapping)
        name = _get(tok, "name", "$.tokenizer", str)
        if name != policy.tokenizer:
            self.add("record.tokenizer", "$.tokenizer.name",
                     f"the record names tokenizer {name!r} but its effective policy says {policy.tokenizer!r}")
        if self.rec.get("outcome") == "allocated":
            limit = _int(_get(self.rec, "budget", "$", Mapping), "limit_tokens", "$.budget")
            if limit != policy.budget.limit_tokens:
                self.add("record.budget_limit", "$.budget.limit_tokens",
                         f"the record's limit is {limit:,} tokens but its effective policy gives "
                         f"{policy.budget.limit_tokens:,}")
            chat, want = _get(self.rec, "budget", "$", Mapping).get("message_overhead"), policy.budget.message_overhead
            got = None if not isinstance(chat, Mapping) else (chat.get("per_item_tokens"), chat.get("per_request_tokens"))
            if got != (None if want is None else (want.per_item_tokens, want.per_request_tokens)):
                self.add("record.budget_limit", "$.budget.message_overhead",
                         f"the record's chat overhead (per item, per request) is {got} but its effective policy "
                         f"gives {None if want is None else (want.per_item_tokens, want.per_request_tokens)}")
        return policy

    # -- input: digest, count and content hashes -----------------------------------------
    def inputs(self) -> None:
        inp = _get(self.rec, "input", "$", Mapping)
        rows = _get(inp, "items", "$.input", list)
        count = _int(inp, "count", "$.input")
        if count != len(rows):
            self.add("record.input_count", "$.input.count",
                     f"input.count is {count:,} but {len(rows):,} input items are recorded")
        bare = []
        for k, row in enumerate(rows):
            if type(row) is dict and "content" not in row and type(row.get("source_id")) is str:
                bare.append(row)  # the common row (content not stored): nothing to check or drop
                continue
            where = f"$.input.items[{k}]"
            if not isinstance(row, Mapping):
                raise _Malformed(where, f"{where} is not an object")
            _get(row, "source_id", where, str)
            if "content" in row:
                content = _get(row, "content", where, str)
                claimed = _get(row, "content_sha256", where, str)
                if content_sha256(content) != claimed:
                    self.add("record.content_digest", f"{where}.content_sha256",
                             f"the stored content of {row['source_id']!r} does not hash to its "
                             "recorded content_sha256")
            bare.append({k2: v for k2, v in row.items() if k2 != "content"})
        claimed_digest = _get(inp, "digest", "$.input", str)
        rows_sorted = sorted(bare, key=lambda r: str(r["source_id"]))
        if claimed_digest.startswith(KEYED_PREFIX):
            secret = self.keyed_secret()
            if secret is None:
                return
            actual = secret.digest_json(rows_sorted)
        else:
            actual = digest(rows_sorted)
        if actual != claimed_digest:
            self.add("record.input_digest", "$.input.digest",
                     f"the recorded input items hash to {actual}, not to the recorded {claimed_digest}: "
                     "the inputs were changed after the decision")

    def keyed_secret(self) -> AuditSecret | None:
        """The secret to recompute this record's keyed digests with, or ``None`` (and a
        note) when it is not held: a keyed digest is never a failure for want of the key."""
        priv = self.rec.get("privacy")
        key_id = priv.get("key_id") if isinstance(priv, Mapping) else None
        if self.secret is None:
            self.notes.append("keyed digests (hmac-sha256, key " + str(key_id) + ") not checkable "
                              "without the secret: set CTXBUDGET_AUDIT_SECRET to the log's secret file")
            return None
        if key_id != self.secret.key_id:
            self.notes.append(f"keyed digests under key {key_id} not checkable with the secret given "
                              f"(key {self.secret.key_id}): set CTXBUDGET_AUDIT_SECRET to that log's secret")
            return None
        return self.secret

    # -- items and context order ---------------------------------------------------------
    def items_and_order(self) -> None:
        if self.rec.get("outcome") != "allocated":
            return
        rows = _get(_get(self.rec, "input", "$", Mapping), "items", "$.input", list)
        items = _get(self.rec, "items", "$", list)
        if not _plain_items(items):  # else: the item that is not, named as it always was
            for k, it in enumerate(items):
                if not isinstance(it, Mapping):
                    raise _Malformed(f"$.items[{k}]", f"$.items[{k}] is not an object")
                for key, kind in (("source_id", str), ("decision", str), ("tokens", int)):
                    _get(it, key, f"$.items[{k}]", kind)
        ids_in = [r["source_id"] for r in rows]
        ids_items = [it["source_id"] for it in items]
        if ids_in != ids_items:
            self.add("record.items", "$.items",
                     f"the items ({len(ids_items):,}) are not the input items ({len(ids_in):,}) in input "
                     "order: every candidate must have exactly one decision")
        else:
            for k, (row, it) in enumerate(zip(rows, items)):
                if row.get("content_sha256") != it.get("content_sha256"):
                    self.add("record.items", f"$.items[{k}].content_sha256",
                             f"item {it['source_id']!r} names other content than its input item")
        ctx = _get(self.rec, "context", "$", Mapping)
        order = _get(ctx, "order", "$.context", list)
        included = [it["source_id"] for it in items if it["decision"] == "included"]
        twice = sorted(str(s) for s, n in Tally(order).items() if n > 1)
        if twice:
            self.add("record.context_order", "$.context.order",
                     f"the context holds {', '.join(map(repr, twice[:5]))} more than once")
        missing = sorted(set(included) - set(order))
        extra = sorted(str(s) for s in set(order) - set(included))
        if missing:
            self.add("record.context_order", "$.context.order",
                     f"included items not in the context: {', '.join(map(repr, missing[:5]))}")
        if extra:
            self.add("record.context_order", "$.context.order",
                     f"items in the context that are not included: {', '.join(map(repr, extra[:5]))}")
        budget = _get(self.rec, "budget", "$", Mapping)
        sep = _int(budget, "separator_tokens", "$.budget")
        tokens = [it["tokens"] for it in items if it["decision"] == "included"]
        expected = sum(tokens) + sep * (len(tokens) - 1) if tokens else 0
        budgeted = _int(budget, "budgeted_tokens", "$.budget")
        if budgeted != expected:
            self.add("record.tokens", "$.budget.budgeted_tokens",
                     f"budgeted_tokens is {budgeted:,} but the included items' tokens add up to "
                     f"{expected:,} ({len(tokens):,} items, {sep:,} separator tokens between each two)")
        context_tokens = _int(ctx, "tokens", "$.context")
        assembled = _int(budget, "assembled_tokens", "$.budget")
        if assembled != context_tokens:
            self.add("record.tokens", "$.budget.assembled_tokens",
                     f"assembled_tokens is {assembled:,} but context.tokens is {context_tokens:,}")
        limit, free = _int(budget, "limit_tokens", "$.budget"), _int(budget, "free_tokens", "$.budget")
        overhead, also = 0, ""
        chat = budget.get("message_overhead")
        if chat is not None:
            chat = _get(budget, "message_overhead", "$.budget", Mapping)
            where = "$.budget.message_overhead"
            per_item, per_request = _int(chat, "per_item_tokens", where), _int(chat, "per_request_tokens", where)
            overhead = _int(chat, "tokens", where)
            if overhead != per_request + per_item * len(tokens):
                self.add("record.tokens", f"{where}.tokens",
                         f"the chat overhead is recorded as {overhead:,} tokens but {per_request:,} per request "
                         f"plus {per_item:,} for each of the {len(tokens):,} included items is "
                         f"{per_request + per_item * len(tokens):,}")
            also = f" and {overhead:,} of chat overhead"
        if free != limit - context_tokens - overhead:
            self.add("record.tokens", "$.budget.free_tokens",
                     f"free_tokens is {free:,} but the limit {limit:,} minus the context's "
                     f"{context_tokens:,} tokens{also} is {limit - context_tokens - overhead:,}")

    # -- the stored content, assembled and recounted ---------------------------------------
    def recount(self, policy: Policy) -> None:
        if self.rec.get("outcome") != "allocated":
            return
        rows = self.rec["input"]["items"]
        if not rows or any("content" not in r for r in rows):
            return  # content not stored: nothing to recount (the totals above still hold)
        text = assemble_context(self.rec, policy)
        ctx = self.rec["context"]
        count = policy_tokenizer(policy).count(text)
        if count != ctx["tokens"]:
            self.add("record.context_recount", "$.context.tokens",
                     f"the stored content assembles to {count:,} tokens in {policy.tokenizer}, "
                     f"not the recorded {ctx['tokens']:,}")
        sha = _get(ctx, "sha256", "$.context", str)
        if sha256_hex(text) != sha:
            self.add("record.context_digest", "$.context.sha256",
                     "the stored content, assembled in the recorded order, does not hash to context.sha256")


def assemble_context(record: Mapping[str, Any], policy: Policy) -> str:
    """The context as the model saw it, rebuilt from a record's stored content and order
    (``policy``: the record's effective policy, for its template and separator)."""
    rows = {r["source_id"]: r for r in record["input"]["items"]}
    parts = []
    for sid in record["context"]["order"]:
        row = rows[sid]
        cand = make_candidate(0, source_id=sid, content=row["content"], relevance_score=0.0,
                              token_count=None, level=row["level"], metadata={}, parent_id=None)
        parts.append(render(policy.budget.template, cand))
    return policy.budget.separator.join(parts)


def check_record(record: Mapping[str, Any], seq: int | None = None,
                 secret: AuditSecret | None = None) -> tuple[Finding, ...]:
    """Every check above on one decision record; an empty tuple when it holds together.
    Keyed digests (content not stored) are recomputed only with ``secret``."""
    return check_record_notes(record, seq, secret)[0]


def check_record_notes(record: Mapping[str, Any], seq: int | None = None,
                       secret: AuditSecret | None = None) -> tuple[tuple[Finding, ...], tuple[str, ...]]:
    """:func:`check_record`, and the notes on what could not be checked (keyed digests
    without their secret)."""
    if not isinstance(record, Mapping):
        return (Finding("record.malformed", seq, None, "$", "the record is not a JSON object"),), ()
    checker = _Checker(record, seq, secret)
    try:
        return checker.run(), tuple(checker.notes)
    except (KeyError, TypeError, ValueError, IndexError, RecursionError) as exc:
        return (Finding("record.malformed", seq, record.get("decision_id") if isinstance(
            record.get("decision_id"), str) else None, "$",
            f"the record cannot be checked ({type(exc).__name__}: {exc}); it was hand-edited or damaged"),), ()


def check_envelopes(envelopes: Iterable[Mapping[str, Any]], secret: AuditSecret | None = None,
                    notes: list[tuple[int | None, str]] | None = None,
                    ) -> dict[int | None, tuple[Finding, ...]]:
    """Check every decision envelope; returns the findings by seq (only failing ones).
    What could not be checked is appended to ``notes`` as (seq, note)."""
    out: dict[int | None, tuple[Finding, ...]] = {}
    for env in envelopes:
        if env.get("kind") != "decision":
            continue
        seq = env.get("seq") if isinstance(env.get("seq"), int) else None
        found, why = check_record_notes(env.get("record", {}), seq, secret)
        if notes is not None:
            notes.extend((seq, n) for n in why)
        if found:
            out[seq] = out.get(seq, ()) + found
    return out


@dataclass(frozen=True, slots=True)
class LogChecks:
    """A whole log checked: the hash chain (``chain``), every decision record, and the
    lines that could not be read. ``by_seq`` holds the findings of each failing record
    (record checks, and the chain problems at its seq as ``chain.<kind>``)."""

    chain: VerifyReport
    by_seq: Mapping[int | None, tuple[Finding, ...]]
    record_findings: tuple[Finding, ...]
    unreadable: tuple[tuple[int, str], ...]
    decisions: tuple[dict[str, Any], ...]
    #: (seq, note) for what could not be checked: keyed digests without their secret.
    unchecked: tuple[tuple[int | None, str], ...] = ()
    #: Archived policies (``<log>.policies``) altered, unreadable or claiming one revision.
    archive_problems: tuple[ArchiveProblem, ...] = ()
    #: The digests the archive holds (each file verified against its name).
    archived: tuple[str, ...] = ()
    #: Decision records checked, when ``decisions`` was not kept (``check_log(keep=False)``).
    checked: int | None = None
    #: Records partly not checkable, when ``unchecked`` lists only the first of them.
    unchecked_records: int | None = None

    @property
    def records_checked(self) -> int:
        return len(self.decisions) if self.checked is None else self.checked

    @property
    def ok(self) -> bool:
        return (self.chain.ok and not self.record_findings and not self.unreadable
                and not self.archive_problems)

    def findings_for(self, envelope: Mapping[str, Any]) -> tuple[Finding, ...]:
        seq = envelope.get("seq")
        return self.by_seq.get(seq if isinstance(seq, int) else None, ())

    def to_dict(self) -> dict[str, Any]:
        return {"records_checked": self.records_checked,
                "records_failed": len({f.seq for f in self.record_findings}),
                "findings": [f.to_dict() for f in self.record_findings],
                "not_checkable": [{"seq": seq, "note": n} for seq, n in self.unchecked],
                "policy_archive": {"policies": list(self.archived),
                                   "problems": [p.to_dict() for p in self.archive_problems]},
                "unreadable_lines": [{"line": n, "message": m} for n, m in self.unreadable]}

    def summary(self) -> str:
        failed = len({f.seq for f in self.record_findings})
        lines = [f"record checks: {self.records_checked} decision records checked, {failed} failed"]
        if self.unchecked:
            seqs = (len({seq for seq, _ in self.unchecked}) if self.unchecked_records is None
                    else self.unchecked_records)
            lines.append(f"  {seqs} record(s) partly not checkable: {self.unchecked[0][1]}")
        lines += [f"  {f}" for f in self.record_findings[:50]]
        if self.archived or self.archive_problems:
            lines.append(f"policy archive: {len(self.archived)} policies, each hashing to its name"
                         + (f"; {len(self.archive_problems)} PROBLEM(S)" if self.archive_problems else ""))
        lines += [f"  policy archive: {p}" for p in self.archive_problems]
        if len(self.record_findings) > 50:
            lines.append(f"  ... {len(self.record_findings) - 50} more (see --json)")
        return "\n".join(lines)


def env_secret(notes: list[tuple[int | None, str]]) -> AuditSecret | None:
    """The secret ``CTXBUDGET_AUDIT_SECRET`` names, or ``None``; a secret file that cannot
    be used is a note (its digests are then not checked), never a crash."""
    try:
        return configured_secret(None, None)
    except EngineError as exc:
        notes.append((None, f"{exc.code}: {exc.message}"))
        return None


#: Notes on what could not be checked that a streaming check lists (all are counted).
NOTES_LISTED = 1000


def check_log(log: AuditLog, checkpoint: Mapping[str, Any] | None = None,
              secret: AuditSecret | None = None, *, keep: bool = True) -> LogChecks:
    """Verify ``log``'s chain (with ``checkpoint`` if given) and check every decision
    record in it; unreadable lines are listed, never fatal. Keyed digests are recomputed
    with ``secret`` (default: the one ``CTXBUDGET_AUDIT_SECRET`` names, if any).

    ``keep=False`` (``audit verify``): each record is checked as it is read and dropped,
    so memory does not grow with the records (``decisions`` stays empty, ``checked``
    counts them; at most :data:`NOTES_LISTED` notes are listed); what is held is the
    chain verifier's line digests, a few hundred bytes a line."""
    notes: list[tuple[int | None, str]] = []
    if secret is None:
        secret = env_secret(notes)
    chain = log.verify(checkpoint)
    archive = PolicyArchive(log.path, log.root)
    archived, archive_problems = archive.check()
    decisions: list[dict[str, Any]] = []
    unreadable: list[tuple[int, str]] = []
    problem_seqs = {p.seq for p in chain.problems}
    ids: dict[int | None, Any] = {}
    by_seq: dict[int | None, tuple[Finding, ...]] = {}
    checked, noted, last_noted = 0, len(notes), object()
    for number, env, why in log.scan():
        if env is None:
            unreadable.append((number, why or f"line {number} is unreadable"))
        elif env.get("kind") == "decision":
            env = with_archived_policy(env, archive)
            if keep:
                decisions.append(env)
                continue
            checked += 1
            seq = env.get("seq") if isinstance(env.get("seq"), int) else None
            if seq in problem_seqs:
                ids[seq] = env["record"].get("decision_id") if isinstance(env.get("record"), Mapping) else None
            found, why_not = check_record_notes(env.get("record", {}), seq, secret)
            if why_not:
                noted += seq != last_noted
                last_noted = seq
                notes.extend((seq, n) for n in why_not[:max(0, NOTES_LISTED - len(notes))])
            if found:
                by_seq[seq] = by_seq.get(seq, ()) + found
    if keep:
        ids = {e.get("seq"): e["record"].get("decision_id") for e in decisions}
        by_seq = dict(check_envelopes(decisions, secret, notes))
    record_findings = tuple(f for fs in by_seq.values() for f in fs)
    for p in chain.problems:
        if p.seq in ids:
            did = ids[p.seq]
            by_seq[p.seq] = by_seq.get(p.seq, ()) + (Finding(
                f"chain.{p.kind.value}", p.seq, did if isinstance(did, str) else None, "$",
                f"line {p.line}: {p.message}"),)
    return LogChecks(chain, by_seq, record_findings, tuple(unreadable), tuple(decisions), tuple(notes),
                     archive_problems, archived, None if keep else checked, None if keep else noted)


def with_archived_policy(env: dict[str, Any], archive: PolicyArchive) -> dict[str, Any]:
    """``env`` with its record's ``policy.effective`` taken from the log's policy archive
    when the record does not carry it (verified: the archived file hashes to its name,
    which is the record's digest); unchanged otherwise. Checks, ``show`` and ``replay``
    then read the policy the decision was made under."""
    rec = env.get("record")
    if not isinstance(rec, Mapping):
        return env
    pol = rec.get("policy")
    if not isinstance(pol, Mapping) or "effective" in pol or not isinstance(pol.get("digest"), str):
        return env
    effective, _why = archive.get(pol["digest"])
    if effective is None:
        return env
    return {**env, "record": {**rec, "policy": {**pol, "effective": effective}}}
