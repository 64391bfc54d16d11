"""One decision of the audit report as an HTML card (:mod:`engine.audit.report` lays out
the page): the verdict, the budget bar, included and excluded items with their reasons
and evidence (at most ``cap`` rows per table, with a visible "N more" note), the rules
that bound, the policy, the record's checks and its signature state. Pure: a log
envelope (hostile input) in, escaped HTML out; a record too damaged to lay out becomes
its escaped JSON, never an exception.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .query import decision_items
from .reportsvg import budget_bar

__all__ = ["VERDICTS", "DecisionEntry", "SignatureInfo", "as_map", "card", "esc", "exclusion_reasons", "member",
           "member_list", "filter_attrs", "num", "plain", "signature_html", "verdict"]

VERDICTS = ("optimal", "gap", "fallback", "infeasible", "heuristic", "unknown")
_DISGUISE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u061c\u200e\u200f\u202a-\u202e"
                       "\u2066-\u2069\ud800-\udfff\ufeff]")


def esc(value: Any) -> str:
    """Text from the log, safe in HTML text and in quoted attributes: escaped, and every
    character that could hide or reorder what a reviewer reads shown as ``<U+XXXX>``."""
    text = plain(value)
    return html.escape(_DISGUISE.sub(lambda m: f"<U+{ord(m.group()):04X}>", text), quote=True)


def plain(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)[:2000]
    except (ValueError, RecursionError):
        return "(unprintable)"


def num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return esc("-" if value is None else value)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.3f}"


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def member(obj: Any, key: str) -> Mapping[str, Any]:
    return as_map(obj.get(key) if isinstance(obj, Mapping) else None)


def member_list(obj: Any, key: str) -> list[Any]:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, list) else []


def verdict(record: Any) -> tuple[str, str]:
    """The verdict of a decision record: one of :data:`VERDICTS` and a sentence.
    ``gap`` is a best-found selection at the time limit (``feasible``), ``fallback`` a
    heuristic that answered because the requested strategy failed."""
    if not isinstance(record, Mapping):
        return "unknown", "not a decision record"
    if record.get("outcome") == "infeasible":
        return "infeasible", "infeasible: the hard rules cannot all hold"
    solver, strategy = member(record, "solver"), member(record, "strategy")
    status = solver.get("status")
    if status == "fallback" or strategy.get("fallback_reason"):
        return "fallback", (f"fallback to {esc(strategy.get('used'))}: "
                            f"{esc(strategy.get('fallback_reason') or 'the requested strategy failed')}")
    if status == "optimal":
        return "optimal", "proven optimal"
    if status == "trivial":
        return "optimal", "optimal (everything relevant fitted; no search needed)"
    if status == "feasible":
        gap = solver.get("gap")
        shown = f"{gap:.2%}" if isinstance(gap, (int, float)) and not isinstance(gap, bool) else "unknown"
        return "gap", f"best found at the time limit, gap {shown}"
    if status == "heuristic":
        return "heuristic", f"heuristic ({esc(strategy.get('used'))}); no optimality claim"
    return "unknown", f"solver status {esc(status)}"


@dataclass(frozen=True, slots=True)
class SignatureInfo:
    """What the signed checkpoints say about the log (``checked`` False: no key given)."""

    checked: bool
    signed_size: int = 0
    records: int = 0
    problems: tuple[tuple[str, str], ...] = ()
    #: (tree size, source) of each checkpoint whose signature is valid and root reproduced
    checkpoints: tuple[tuple[int, str], ...] = ()
    #: For a rotated or pruned log, one span per segment: (its first seq, how many of its
    #: records are signed, its valid checkpoints as above). Empty: one file from seq 1.
    spans: tuple[tuple[int, int, tuple[tuple[int, str], ...]], ...] = ()

    def covering(self, seq: Any) -> str | None:
        """The first valid checkpoint that covers record ``seq``, or None."""
        if not isinstance(seq, int) or isinstance(seq, bool):
            return None
        for first, signed, cps in self.spans or ((1, self.signed_size, self.checkpoints),):
            if first <= seq < first + signed:
                pos = seq - first + 1  # the record's leaf number in its segment's tree
                return next((f"{src} (tree size {size:,})" for size, src in sorted(cps) if size >= pos),
                            f"records {first:,}..{first + signed - 1:,}")
        return None


@dataclass(frozen=True, slots=True)
class DecisionEntry:
    """One decision envelope and what its checks found (``Finding``-like objects)."""

    envelope: Mapping[str, Any]
    findings: tuple[Any, ...] = ()
    notes: tuple[str, ...] = ()



# -- one decision ------------------------------------------------------------------------
def _items(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each item with evidence and rule (read from ``items``), tokens and relevance
    (what a compact record leaves out comes from its input row)."""
    rows = decision_items(record)
    raw = [it for it in member_list(record, "items") if isinstance(it, Mapping)]
    if record.get("outcome") != "infeasible" and len(raw) == len(rows):
        for row, it in zip(rows, raw):
            row["evidence"], row["rule"] = it.get("evidence"), it.get("rule")
    return rows


def _sort_key(row: Mapping[str, Any]) -> tuple[int, float]:
    rel = row.get("relevance")
    if isinstance(rel, (int, float)) and not isinstance(rel, bool):
        return (0, -float(rel))
    return (1, 0.0)


def _item_table(rows: list[dict[str, Any]], kind: str, cap: int, did: str) -> str:
    head = "<tr><th>source id</th><th>doc</th><th>level</th><th class=n>tokens</th><th class=n>relevance</th>" \
           "<th>reason</th><th>evidence</th></tr>"
    body = "".join(
        f"<tr class=item data-reason=\"{esc(r.get('reason'))}\"><td class=id>{esc(r.get('source_id'))}</td>"
        f"<td>{esc(r.get('doc') or '')}</td><td>{esc(r.get('level'))}</td><td class=n>{num(r.get('tokens'))}</td>"
        f"<td class=n>{num(r.get('relevance'))}</td><td><code>{esc(r.get('reason'))}</code></td>"
        f"<td>{esc(r.get('evidence') or '')}{_rule(r.get('rule'))}</td></tr>"
        for r in rows[:cap])
    more = ""
    if len(rows) > cap:
        more = (f"<p class=more>and {len(rows) - cap:,} more {kind} items not shown (at most {cap:,} per "
                f"table; raise --max-items, or run <code>ctxbudget audit show LOG --decision {esc(did)}</code>)</p>")
    if not rows:
        return f"<p class=none>no {kind} items</p>"
    return f"<table class=items>{head}{body}</table>{more}"


def _rule(rule: Any) -> str:
    return f" <span class=rule>{esc(rule)}</span>" if rule else ""


def _checks_html(entry: DecisionEntry) -> str:
    if not entry.findings:
        notes = "".join(f"<li>{esc(n)}</li>" for n in entry.notes)
        return ("<p class=ok>record checks passed: chain, policy digest, input digest, order and token totals"
                + (" (partly not checkable, see below)</p><ul class=notes>" + notes + "</ul>" if notes else "</p>"))
    codes = sorted({str(getattr(f, "code", f)) for f in entry.findings})
    rows = "".join(f"<li><code>{esc(getattr(f, 'code', ''))}</code> at <code>{esc(getattr(f, 'path', '$'))}</code>: "
                   f"{esc(getattr(f, 'message', f))}</li>" for f in entry.findings)
    return (f"<p class=failed>FAILED CHECKS: {esc(', '.join(codes))}: do not rely on this record</p>"
            f"<ul class=findings>{rows}</ul>")


def signature_html(sig: SignatureInfo, seq: Any) -> tuple[str, str]:
    """(state code, HTML) of one record's signature."""
    if not sig.checked:
        return "unchecked", "<p class=warn>signature not checked: pass --key PUB (the log's verifier key)</p>"
    covering = sig.covering(seq)
    if covering:
        return "signed", f"<p class=ok>signed: covered by checkpoint {esc(covering)}</p>"
    return "unsigned", ("<p class=warn>UNSIGNED TAIL: no signed checkpoint covers this record (seq "
                        f"{num(seq)}; signed up to {sig.signed_size:,}); close the log to sign it</p>")


def _budget_html(record: Mapping[str, Any]) -> str:
    b = member(record, "budget")
    used, limit, free = b.get("assembled_tokens"), b.get("limit_tokens"), b.get("free_tokens")
    window = b.get("context_window")
    out_r, prompt_r = b.get("reserve_output") or 0, b.get("reserve_prompt") or 0
    text = f'<span class="sw b-used"></span>used {num(used)} of {num(limit)} tokens, <span class="sw b-free"></span>free {num(free)}'
    if window:
        text += (f'; window {num(window)}, reserved <span class="sw b-res"></span>output {num(out_r)}, '
                 f'<span class="sw b-resp"></span>prompt {num(prompt_r)}')
    return f"<div class=budget>{budget_bar(used, limit, window, out_r, prompt_r)}<p>{text}</p></div>"


def _rules_html(record: Mapping[str, Any]) -> str:
    bound = [r for r in member_list(record, "rules") if isinstance(r, Mapping) and r.get("binding")]
    parts = []
    if bound:
        parts.append("<h4>rules that bound</h4><ul class=rules>" + "".join(
            f"<li>{esc(r.get('label'))}: total {num(r.get('total'))}, slack {num(r.get('slack'))} "
            f"<span class=rule>{esc(r.get('path'))}</span></li>" for r in bound) + "</ul>")
    else:
        parts.append("<p class=none>no rule bound</p>")
    warn = [f"UNMET minimum: {esc(u)}" for u in member_list(record, "unmet")]
    warn += [f"MISSING PIN (required: false): {esc(as_map(m).get('pin'))} at {esc(as_map(m).get('path'))}"
             for m in member_list(record, "missing_pins")]
    warn += [f"repair: dropped {esc(as_map(r).get('dropped'))} after the BPE recount "
             f"({num(as_map(r).get('tokens_before'))} -> {num(as_map(r).get('tokens_after'))} tokens)"
             for r in member_list(record, "repairs")]
    if warn:
        parts.append("<ul class=warnings>" + "".join(f"<li>{w}</li>" for w in warn) + "</ul>")
    return "".join(parts)


def _infeasible_html(record: Mapping[str, Any]) -> str:
    inf = member(record, "infeasibility")
    core = "".join(f"<li>{esc(c.get('rule'))} <span class=rule>{esc(c.get('path'))} {esc(c.get('location') or '')}"
                   "</span></li>" for c in member_list(inf, "core") if isinstance(c, Mapping))
    return (f"<p class=failed>{esc(inf.get('message'))}</p><h4>conflicting rules</h4><ul class=rules>{core}</ul>")


def _who_html(rec: Mapping[str, Any]) -> str:
    """Who asked and what: the ``pack`` query (its text, or its keyed digest when content
    is not stored) and, where the record has them, request id, caller and labels."""
    parts = []
    query = rec.get("query")
    if isinstance(query, Mapping):
        parts.append(f"query <q>{esc(query['text'])}</q>" if query.get("text") is not None
                     else f"query (not stored; keyed digest) <code>{esc(query.get('digest'))}</code>")
    for key, label in (("request_id", "request"), ("requested_by", "requested by")):
        if rec.get(key) is not None:
            parts.append(f"{label} <b>{esc(rec.get(key))}</b>"
                         + (" (generated)" if key == "request_id" and rec.get("request_id_generated") is True
                            else ""))
    labels = rec.get("labels")
    if isinstance(labels, Mapping) and labels:
        # a label masked by audit.mask is {"masked": "hmac-sha256:..."}: show the digest, marked
        parts.append("labels " + ", ".join(
            f"<code>{esc(k)}={esc(v['masked']) + ' (masked)' if isinstance(v, Mapping) and 'masked' in v else esc(v)}"
            "</code>" for k, v in sorted(labels.items())))
    return f"<p class=meta>{' &middot; '.join(parts)}</p>" if parts else ""


def _card(k: int, entry: DecisionEntry, sig: SignatureInfo, cap: int) -> str:
    env = entry.envelope
    rec = member(env, "record")
    did = rec.get("decision_id")
    code, sentence = verdict(rec)
    pol = member(rec, "policy")
    _, sig_html = signature_html(sig, env.get("seq"))
    head = (f"<h3><span class=\"badge v-{code}\">{code}</span> decision <span class=id>{esc(did)}</span></h3>"
            f"<p class=meta>seq {num(env.get('seq'))} &middot; {esc(rec.get('timestamp'))} &middot; {sentence}</p>"
            f"<p class=meta>policy <b>{esc(pol.get('name'))}</b> revision <b>{esc(pol.get('revision'))}</b> "
            f"<code>{esc(pol.get('digest'))}</code>{' from ' + esc(pol.get('file')) if pol.get('file') else ''}</p>")
    strat = member(rec, "strategy")
    body = [f"<p class=meta>strategy requested {esc(strat.get('requested'))}, ran {esc(strat.get('used'))}; "
            f"{num(member(rec, 'input').get('count'))} candidates; tokenizer {esc(member(rec, 'tokenizer').get('name'))}"
            + ("" if member(rec, "tokenizer").get("exact", True) else " (APPROXIMATE counts)") + "</p>",
            _who_html(rec), _checks_html(entry), sig_html]
    rows = _items(rec)
    if rec.get("outcome") == "infeasible":
        body += [_infeasible_html(rec), "<h4>candidates</h4>", _item_table(rows, "candidate", cap, str(did))]
    else:
        order = {sid: n for n, sid in enumerate(member_list(member(rec, "context"), "order")) if isinstance(sid, str)}
        inc = sorted((r for r in rows if r.get("decision") == "included"),
                     key=lambda r: order.get(r["source_id"], len(order)) if isinstance(r.get("source_id"), str)
                     else len(order))
        exc = sorted((r for r in rows if r.get("decision") != "included"), key=_sort_key)
        body += [_budget_html(rec), _rules_html(rec),
                 f"<h4>included ({len(inc):,}, in context order)</h4>", _item_table(inc, "included", cap, str(did)),
                 f"<h4>excluded ({len(exc):,}, most relevant first)</h4>", _item_table(exc, "excluded", cap, str(did))]
    return f"<section class=\"decision card\" id=d-{k}{filter_attrs(entry, sig)}>{head}{''.join(body)}</section>"


def exclusion_reasons(rec: Mapping[str, Any]) -> list[str]:
    return [str(r["reason"]) for r in _items(rec) if r.get("decision") not in (None, "included") and r.get("reason")]


def filter_attrs(entry: DecisionEntry, sig: SignatureInfo) -> str:
    rec = member(entry.envelope, "record")
    reasons = "|" + "|".join(sorted(set(exclusion_reasons(rec)))) + "|"
    state, _ = signature_html(sig, entry.envelope.get("seq"))
    return (f" data-decision data-status=\"{verdict(rec)[0]}\" data-reasons=\"{esc(reasons)}\""
            f" data-policy=\"{esc(member(rec, 'policy').get('name'))}\""
            f" data-checks=\"{'failed' if entry.findings else 'ok'}\" data-sig=\"{state}\"")


def card(k: int, entry: DecisionEntry, sig: SignatureInfo, cap: int) -> str:
    """A card, or for a record too damaged to lay out, its (escaped, shortened) JSON."""
    try:
        return _card(k, entry, sig, cap)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        try:
            raw = json.dumps(entry.envelope, ensure_ascii=False, sort_keys=True, default=str)
        except (ValueError, RecursionError):
            raw = "(too deeply nested to print)"
        return (f"<section class=\"decision card\" id=d-{k} data-decision data-status=unknown data-reasons=\"||\" "
                f"data-policy=\"\" data-checks=failed data-sig=unchecked>{_checks_html(entry)}"
                f"<p class=failed>this record cannot be laid out ({esc(type(exc).__name__)}: {esc(str(exc)[:200])}); "
                f"its JSON follows</p><pre>{esc(raw[:20_000])}</pre></section>")
