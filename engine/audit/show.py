"""Plain-text rendering of one audit record, for a reviewer (``ctxbudget audit show``).

What goes in: a log envelope (``seq``, ``hash``, ``record``). What comes out: text with
the budget (used vs reserved vs free), the included and excluded items with reasons, the
rules that bound, and the solver's verdict; a record that failed its checks is marked
first, with what failed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def _verdict(solver: dict[str, Any]) -> str:
    status = solver.get("status")
    if status == "optimal":
        return "proven optimal"
    if status == "trivial":
        return "optimal (everything relevant fitted; no search needed)"
    if status == "feasible":
        gap = solver.get("gap")
        return f"best found at the time limit, gap {gap:.2%}" if gap is not None else "best found"
    if status == "heuristic":
        return "heuristic (no optimality claim)"
    return str(status)


def banner(findings: Sequence[Any]) -> list[str]:
    """The mark of a record that failed its checks: one line naming the failed checks,
    then one line per finding (``findings``: :class:`~engine.audit.records.Finding` or
    chain problems, anything with ``code``/``path``/``message`` or a ``str``)."""
    if not findings:
        return []
    codes = sorted({str(getattr(f, "code", f)) for f in findings})
    out = [f"[FAILED CHECKS: {', '.join(codes)}] do not rely on this record"]
    out += [f"  ! {getattr(f, 'code', '')} at {getattr(f, 'path', '$')}: {getattr(f, 'message', f)}"
            for f in findings]
    return out


def render(envelope: dict[str, Any], findings: Sequence[Any] = ()) -> str:
    """The record as text; a record with ``findings`` (it failed its checks, see
    :mod:`engine.audit.records`) starts with a ``[FAILED CHECKS: ...]`` banner. A record
    too damaged to lay out is printed as its JSON under the banner, never a crash."""
    try:
        return _render(envelope, findings)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        rec = envelope.get("record", envelope) if isinstance(envelope, dict) else envelope
        return "\n".join(banner(findings) + [
            f"seq {envelope.get('seq', '-') if isinstance(envelope, dict) else '-'}: the record cannot be "
            f"laid out as text ({type(exc).__name__}: {exc}); its JSON follows",
            json.dumps(rec, ensure_ascii=False, sort_keys=True)])


def _who(rec: dict[str, Any]) -> list[str]:
    """Who asked (request id, requested_by, labels), and pack's query and corpus."""
    out = []
    req = {k: rec.get(k) for k in ("request_id", "request_id_generated", "requested_by", "labels")}
    if req["request_id"] is not None:
        labels = req.get("labels") or {}
        shown = ", ".join(f"{k}={v['masked'] if isinstance(v, dict) else v}" for k, v in labels.items())
        out.append(f"request  {req.get('request_id')}"
                   + (" (generated)" if req.get("request_id_generated") else "")
                   + f"; requested by {req.get('requested_by') or '(not given)'}"
                   + (f"; labels {shown}" if shown else ""))
    q = rec.get("query")
    if isinstance(q, dict):
        out.append(f"query    {q['text']!r}" if q.get("text") is not None
                   else f"query    not stored ({q.get('digest')})")
    corpus = rec.get("corpus")
    if isinstance(corpus, dict):
        files = corpus.get("files") or []
        roots = corpus.get("roots") or []
        out.append(f"corpus   {len(files)} file(s), {sum(f.get('bytes', 0) for f in files):,} bytes, "
                   f"under {', '.join(map(str, roots))}")
        out += [f"  file {roots[f['root']] if 0 <= f.get('root', -1) < len(roots) else '?'}/{f.get('path')} "
                f"({f.get('bytes', 0):,} bytes; doc {f.get('doc_id')}; {f.get('sha256')})" for f in files[:20]]
        if len(files) > 20:
            out.append(f"  ... {len(files) - 20} more file(s) (--json lists them all)")
    found = rec.get("retrieval")
    if isinstance(found, dict):
        out.append(f"search   {found.get('scorer')}: {found.get('matched')} node(s) matched, best score "
                   f"{found.get('best_score')} (min_relevance {found.get('threshold')}), "
                   f"{found.get('included')} retrieved item(s) in the context")
        if found.get("warning"):
            out.append(f"  WARNING {found['warning']}")
    return out


def _render(envelope: dict[str, Any], findings: Sequence[Any]) -> str:
    rec = envelope.get("record", envelope)
    pol = rec.get("policy", {})
    lines = banner(findings) + [
        f"decision {rec.get('decision_id')}  seq {envelope.get('seq', '-')}  {rec.get('timestamp')}",
        f"policy   {pol.get('name')} revision {pol.get('revision')} ({pol.get('digest')})"
        + (f" from {pol.get('file')}" if pol.get("file") else ""),
        f"input    {rec.get('input', {}).get('count')} candidates ({rec.get('input', {}).get('digest')}); "
        f"tokenizer {rec.get('tokenizer', {}).get('name')}"
        + ("" if rec.get("tokenizer", {}).get("exact") else " (APPROXIMATE counts)"),
    ]
    lines += _who(rec)
    dup = (pol.get("effective") or {}).get("spec", {}).get("duplicates")
    if dup:
        lines.append(f"rule     duplicates ($.spec.duplicates): no two items with {dup.get('measure')} >= "
                     f"{dup.get('threshold')} over {dup.get('shingle')}-word shingles (pinned pairs and "
                     "ancestor/descendant pairs exempt)")
    if rec.get("outcome") == "infeasible":
        inf = rec.get("infeasibility", {})
        lines.append(f"outcome  INFEASIBLE: {inf.get('message')}")
        for c in inf.get("core", []):
            lines.append(f"  conflicting rule: {c.get('rule')} at {c.get('path')} {c.get('location') or ''}")
        return "\n".join(lines)
    b = rec.get("budget", {})
    reserved = (b.get("reserve_output") or 0) + (b.get("reserve_prompt") or 0)
    window = b.get("context_window")
    lines.append(
        f"budget   used {b.get('assembled_tokens'):,} of {b.get('limit_tokens'):,} tokens, "
        f"free {b.get('free_tokens'):,}" + (f"; window {window:,}, reserved {reserved:,}" if window else ""))
    st = rec.get("strategy", {})
    lines.append(f"strategy requested {st.get('requested')}, ran {st.get('used')}"
                 + (f"; FALLBACK because {st.get('fallback_reason')}" if st.get("fallback_reason") else ""))
    sv = rec.get("solver", {})
    lines.append(f"verdict  {_verdict(sv)}; objective {sv.get('objective')}, bound {sv.get('best_bound')}")
    bound = [r for r in rec.get("rules", []) if r.get("binding")]
    if bound:
        lines.append("binding rules:")
        lines += [f"  {r['label']}: total {r['total']:,}, slack {r['slack']:,}" for r in bound]
    for u in rec.get("unmet", []):
        lines.append(f"UNMET minimum: {u}")
    for m in rec.get("missing_pins", []):
        lines.append(f"MISSING PIN (required: false): {m.get('pin')} at {m.get('path')} {m.get('location') or ''}".rstrip())
    cc = b.get("caller_counts") or {}
    if cc.get("trusted"):
        lines.append(f"counts   caller counts TRUSTED (budget.counts: caller): the budget held on "
                     f"{b.get('budgeted_tokens'):,} tokens by the caller's counts")
    elif cc.get("disagreements"):
        lines.append(f"counts   {cc['disagreements']:,} of {cc['items']:,} caller token counts differed "
                     f"({cc['undercounts']:,} under; largest {cc['largest_difference']:+,} on "
                     f"{cc['largest_source_id']!r}); the larger count was used")
    items = rec.get("items", [])
    inc = [i for i in items if i["decision"] == "included"]
    exc = [i for i in items if i["decision"] != "included"]
    lines.append(f"included ({len(inc)}):")
    lines += [f"  + {i['source_id']}  {i['tokens']:,} tok  rel {i['relevance']:.3f}  [{i['reason']}]" for i in inc]
    lines.append(f"excluded ({len(exc)}):")
    lines += [f"  - {i['source_id']}  {i['tokens']:,} tok  rel {i['relevance']:.3f}  [{i['reason']}] {i['evidence']}"
              for i in exc]
    return "\n".join(lines)
