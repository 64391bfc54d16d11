"""The audit record of one decision: what a compliance reviewer reads months later.

What goes in: the Policy, the candidates, and the Allocation (or the InfeasibleError).
What comes out: a JSON-ready dict matching ``schemas/audit.schema.json``: which context
the model saw (item ids, content digests, the assembled text's digest), under which
policy revision and digest, why each item was left out (one reason code with numbers),
whether the answer was proven optimal (status, objective, bound, gap, the solver's own
log), and enough of the input (ids, scores, token counts, levels, metadata — never the
content unless ``audit.store_content`` is set) to replay the decision. Token figures (separator and template overhead, how
caller counts were checked or trusted, missing pins) are taken from the Allocation, which
carries what :func:`~engine.problem.reduce` computed: nothing is recounted here.

Pure: the decision id and the clock are injected (:func:`build` takes ``decision_id`` and
``now``), so tests fix them and everything else is deterministic.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..allocation import Allocation
from ..candidates import Candidate
from ..canonical import digest, plain_scalar, sha256_hex
from ..counts import policy_tokenizer
from ..errors import InfeasibleError
from ..policy import Policy, SolverLog
from .privacy import CONTENT_METADATA, SCHEME, AuditSecret, ephemeral, mask_metadata
from .request import CorpusFile, Request, provenance

SCHEMA_VERSION = "1"


def _dist_info_version(dist: str) -> str | None:
    """The version in the name of the first ``<dist>-<version>.dist-info`` folder on
    ``sys.path`` (the distribution importlib.metadata finds first), without importing
    importlib.metadata (~25 ms of every ``pack``: email, zipfile, csv); ``None`` when
    no entry holds one."""
    prefix = dist.lower().replace("-", "_") + "-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:  # a zip file, a missing folder
            continue
        hits = [n for n in names if n.lower().startswith(prefix) and n.endswith(".dist-info")
                and "-" not in n[len(prefix):-len(".dist-info")]]
        eggs = [n for n in names if n.endswith(".egg-info") and n.lower().startswith(prefix[:-1])
                and n[len(prefix) - 1:len(prefix)] in ("-", ".")]
        if len(hits) == 1 and not eggs:
            return hits[0][len(prefix):-len(".dist-info")]
        if hits or eggs:  # two versions, or an egg: importlib.metadata chooses
            return None
    return None


@functools.cache  # installed versions do not change under a running process (10 ms a record)
def _version(dist: str) -> str | None:
    found = _dist_info_version(dist)
    if found is not None:
        return found
    from importlib import metadata as importlib_metadata

    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    return {"ctxbudget": _version("ctxbudget"), "ortools": _version("ortools"),
            "tiktoken": _version("tiktoken"), "python": platform.python_version()}


def _json_safe(value: Any) -> Any:
    """Metadata as JSON (canonical JSON has no NaN/inf; such floats become strings).
    Candidate metadata is canonical already (engine.candidates); this is the net for the
    rest, written the same way (engine.canonical.plain_scalar)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value  # what the general route below returns for them, without its checks
    if kind is dict:
        return {str(k): _json_safe(v) for k, v in value.items()}
    try:
        value = plain_scalar(value)
    except ValueError:
        return repr(value)
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return repr(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


@dataclass(frozen=True, slots=True)
class Privacy:
    """How one record writes content it does not store. ``secret`` keys the digests
    (``None``: content is stored and nothing is masked, so digests stay plain SHA-256);
    ``mask`` are the metadata-key globs written masked."""

    store_content: bool
    secret: AuditSecret | None
    mask: tuple[str, ...]
    #: ``pack``'s query is kept as text (``audit.store_query``, default: ``store_content``).
    store_query: bool = False

    @classmethod
    def of(cls, policy: Policy, secret: AuditSecret | None) -> Privacy:
        a = policy.audit
        mask = a.mask if a.store_content else tuple(dict.fromkeys(a.mask + CONTENT_METADATA))
        if a.store_content and not mask and a.keeps_query:
            return cls(True, None, (), True)
        return cls(a.store_content, secret or ephemeral(), mask, a.keeps_query)

    @property
    def keyed(self) -> bool:
        """Content digests are keyed (content is not stored)."""
        return not self.store_content

    def content_digest(self, sha256: str, content: str) -> str:
        if self.keyed and self.secret is not None:
            return self.secret.digest(content)
        return sha256

    def metadata(self, meta: dict[str, Any], masked: set[str]) -> dict[str, Any]:
        if not self.mask or self.secret is None:
            return meta
        out, keys = mask_metadata(meta, self.mask, self.secret)
        masked.update(keys)
        return out

    def query(self, text: str) -> dict[str, Any]:
        """A ``pack`` query as the record keeps it: its text only when the policy keeps
        queries (``audit.store_query``, default ``store_content``), else its keyed digest
        (the query is content: it says what the user asked)."""
        if self.store_query or self.secret is None:
            return {"text": text, "digest": None}
        return {"text": None, "digest": self.secret.digest(text)}

    def part(self, masked: set[str]) -> dict[str, Any]:
        """The record's ``privacy`` part: what a verifier needs to recompute the digests."""
        return {"content_stored": self.store_content,
                "digest_scheme": SCHEME if self.keyed else "sha256",
                "key_id": None if self.secret is None else self.secret.key_id,
                "mask": list(self.mask), "masked_fields": sorted(masked)}


def input_item(c: Candidate, privacy: Privacy, masked: set[str]) -> dict[str, Any]:
    """The replayable description of one candidate (content only when stored; the keys
    of masked metadata are added to ``masked``)."""
    row: dict[str, Any] = {
        "source_id": c.source_id,
        "relevance_score": c.relevance_score,
        "token_count": c.token_count,
        "level": c.level,
        "parent_id": c.parent_id,
        "metadata": privacy.metadata(_json_safe(dict(c.metadata)), masked),
        "content_sha256": privacy.content_digest(c.sha256, c.content),
    }
    if privacy.store_content:
        row["content"] = c.content
    return row


def input_digest(rows: Sequence[dict[str, Any]], secret: AuditSecret | None = None) -> str:
    """Digest of the canonical, id-sorted input rows without their content: plain
    ``sha256:`` when content is stored, keyed (``hmac-sha256:``) under ``secret`` when not."""
    bare = sorted(({k: v for k, v in r.items() if k != "content"} for r in rows),
                  key=lambda r: str(r["source_id"]))
    return digest(bare) if secret is None else secret.digest_json(bare)


def _policy_part(policy: Policy) -> dict[str, Any]:
    return {"name": policy.name, "product": policy.product, "revision": policy.revision,
            "file": policy.file, "digest": policy.digest, "effective": policy.to_dict()}


def _solver_part(policy: Policy, alloc: Allocation) -> dict[str, Any]:
    sel = alloc.selection
    st = dict(sel.stats)
    lines = list(sel.log_lines)
    log: dict[str, Any] = {"lines": len(lines), "sha256": sha256_hex("\n".join(lines))}
    if policy.solver.log is SolverLog.KEEP:
        log["text"] = lines
    return {
        "status": sel.status,
        "objective": sel.objective,
        "best_bound": sel.bound,
        "gap": sel.gap,
        "relative_gap_limit": policy.solver.relative_gap,
        "time_limit_s": policy.solver.time_limit_s,
        # What the limit covered (counting included or not); timings.count_s says how long counting took.
        "time_limit_scope": policy.solver.time_limit_scope.value,
        "deterministic_time": st.get("deterministic_time"),
        "wall_time_s": st.get("wall_time_s"),
        "branches": st.get("branches"),
        "conflicts": st.get("conflicts"),
        "parameters": st.get("parameters"),
        "model_fingerprint": st.get("model_fingerprint"),
        "tie_break": st.get("tie_break"),
        "hint": st.get("hint"),
        # How the answer was proven optimal, or why it is not (method, bound, proven).
        "proof": st.get("proof"),
        "log": log,
    }


def _budget_part(policy: Policy, alloc: Allocation) -> dict[str, Any]:
    """The budget and how it was met. ``assembled_tokens`` is the recount of the context
    in the policy's tokenizer; ``message_overhead.tokens`` the chat template's tokens
    around it, which ``free_tokens`` leaves out too; ``budgeted_tokens`` what the budget
    rule held for the items and separators (they differ
    by BPE merges across items, or under ``counts: caller`` by what the caller's counts
    differ from ours: ``caller_counts.trusted`` is then true and ``free_tokens`` may be
    negative)."""
    b = policy.budget
    acc = alloc.accounting
    # Written only when the policy sets it, so records of other policies keep their bytes.
    chat = {} if b.message_overhead is None else {"message_overhead": {
        "per_item_tokens": b.message_overhead.per_item_tokens,
        "per_request_tokens": b.message_overhead.per_request_tokens, "tokens": alloc.overhead_tokens}}
    return {
        "limit_tokens": b.limit_tokens,
        "max_tokens": b.max_tokens,
        "context_window": b.context_window,
        "reserve_output": b.reserve_output,
        "reserve_prompt": b.reserve_prompt,
        "template": b.template,
        "template_overhead_tokens": acc.template_overhead_tokens,
        "separator_tokens": acc.separator_tokens,
        "counts": acc.mode.value,
        "caller_counts": acc.caller_part(),
        "assembled_tokens": alloc.context_tokens,
        "budgeted_tokens": alloc.budgeted_tokens,
        "free_tokens": b.limit_tokens - alloc.context_tokens - alloc.overhead_tokens,
        **chat,
    }


def _item_part(alloc: Allocation, digests: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "source_id": d.source_id,
            "level": d.level,
            "tokens": d.tokens,
            "relevance": d.relevance,
            "value": d.value,
            "content_sha256": digests.get(d.source_id, d.sha256),
            "decision": d.reason.decision.value,
            "reason": d.reason.code.value,
            "evidence": d.reason.evidence,
            "rule": d.reason.rule,
            "numbers": _json_safe(dict(d.reason.numbers)),
        }
        for d in alloc.decisions
    ]


def _header(policy: Policy, cands: Sequence[Candidate], decision_id: str | None,
            now: datetime | None, exact: bool, privacy: Privacy,
            query: str | None = None, request: Request | None = None,
            corpus: Sequence[CorpusFile] | None = None,
            retrieval: Mapping[str, Any] | None = None) -> dict[str, Any]:
    when = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    masked: set[str] = set()
    rows = [input_item(c, privacy, masked) for c in cands]
    who = provenance(privacy, masked, request, query, corpus)  # request_id .. labels, query, corpus
    head = {
        "schema_version": SCHEMA_VERSION,
        "decision_id": decision_id or str(uuid.uuid4()),
        "timestamp": when.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "engine": versions(),
        "policy": _policy_part(policy),
        "input": {"count": len(cands),
                  "digest": input_digest(rows, privacy.secret if privacy.keyed else None),
                  "items": rows},
        "tokenizer": {"name": policy.tokenizer, "exact": exact},
        **who,
        **({"retrieval": dict(retrieval)} if retrieval is not None else {}),
        "privacy": privacy.part(masked),
    }
    return head


def build(policy: Policy, cands: Sequence[Candidate], alloc: Allocation, *,
          decision_id: str | None = None, now: datetime | None = None,
          secret: AuditSecret | None = None, query: str | None = None,
          request: Request | None = None, corpus: Sequence[CorpusFile] | None = None,
          retrieval: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The audit record of a successful allocation. ``secret`` keys the digests of
    content that is not stored (:mod:`engine.audit.privacy`; ``None``: this process's
    ephemeral key, for a record that is not written); ``query`` is the question a
    ``pack`` decision answered (recorded as text or keyed digest, see :class:`Privacy`);
    ``request`` who asked (:mod:`engine.audit.request`; an id is generated when none is
    given), ``corpus`` the files ``pack`` indexed and ``retrieval`` how its search went
    (:func:`engine.retrieval.pack.pack`)."""
    privacy = Privacy.of(policy, secret)
    rec = _header(policy, cands, decision_id, now, alloc.accounting.exact, privacy, query,
                  request, corpus, retrieval)
    digests = {r["source_id"]: r["content_sha256"] for r in rec["input"]["items"]}
    context_digest = (privacy.secret.digest(alloc.context) if privacy.keyed and privacy.secret
                      else sha256_hex(alloc.context))
    rec.update({
        "outcome": "allocated",
        "budget": _budget_part(policy, alloc),
        "strategy": {"requested": alloc.strategy_requested.value, "used": alloc.strategy_used.value,
                     "fallback_reason": alloc.fallback_reason},
        "solver": _solver_part(policy, alloc),
        "rules": [r.to_dict() for r in alloc.rules],
        "unmet": list(alloc.unmet),
        "missing_pins": [m.to_dict() for m in alloc.missing_pins],
        "repairs": [dict(r) for r in alloc.repairs],
        "items": _item_part(alloc, digests),
        "context": {"order": [alloc.decisions[i].source_id for i in alloc.context_order],
                    "tokens": alloc.context_tokens, "sha256": context_digest},
        "timings": dict(alloc.timings),
        "infeasibility": None,
    })
    return rec


def build_infeasible(policy: Policy, cands: Sequence[Candidate], error: InfeasibleError, *,
                     decision_id: str | None = None, now: datetime | None = None,
                     secret: AuditSecret | None = None, query: str | None = None,
                     request: Request | None = None,
                     corpus: Sequence[CorpusFile] | None = None,
                     retrieval: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The audit record of a decision that could not be made: the rules that conflict."""
    # The tokenizer was resolved (and cached) by the call that failed: no file is read.
    rec = _header(policy, cands, decision_id, now, policy_tokenizer(policy).exact,
                  Privacy.of(policy, secret), query, request, corpus, retrieval)
    rec.update({
        "outcome": "infeasible",
        "strategy": {"requested": policy.strategy.value, "used": None, "fallback_reason": None},
        "infeasibility": {"message": error.message, "core": error.details.get("core", []),
                          "minimal": error.details.get("minimal", True),
                          "item_tokens": None if error.item_tokens is None else list(error.item_tokens)},
    })
    return rec


#: Fields that legitimately differ between two runs of the same decision.
VOLATILE = ("decision_id", "timestamp", "timings")


def stable_view(record: dict[str, Any]) -> dict[str, Any]:
    """The record without ids, timestamps and timings (for determinism checks)."""
    out = {k: v for k, v in record.items() if k not in VOLATILE}
    if out.get("request_id_generated") is True:
        del out["request_id"]  # generated, like the decision id
    if isinstance(out.get("solver"), dict):
        solver = {k: v for k, v in out["solver"].items() if k not in ("wall_time_s", "log")}
        if isinstance(solver.get("parameters"), dict):
            # the wall-clock limit is what was left after building the model
            solver["parameters"] = {k: v for k, v in solver["parameters"].items()
                                    if k != "max_time_in_seconds"}
        out["solver"] = solver
    return out
