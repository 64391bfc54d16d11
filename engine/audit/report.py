"""One self-contained, offline HTML report of an audit log (``ctxbudget audit report``).

What goes in: a :class:`ReportInput` (the decision envelopes, each with the findings of
its checks and its signature state, plus the log's integrity). What comes out:
:func:`render` returns one HTML document as a string; nothing here reads a file or the
clock.

The page loads nothing: CSS, JS and the charts (SVG) are inline, and a
Content-Security-Policy meta forbids every network load and allows only the page's own
script and style (by SHA-256), so a string from the log that slipped past the escaping
still could not run. Every string from the log is hostile input: it is HTML-escaped, and
characters that would disguise it (bidi overrides, controls, lone surrogates) are shown
as visible ``<U+XXXX>`` marks. Large logs: every decision is counted in the overview and
listed in the index table; the first ``max_decisions`` get a detail card and each card
shows at most ``max_items`` included and ``max_items`` excluded items, with a visible
"N more" note naming what was left out and how to see it all.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .query import decision_items, record_time
from .reportassets import CSS, SCRIPT
from .reportsvg import budget_bar, timeline

__all__ = ["DecisionEntry", "ReportInput", "SignatureInfo", "csp", "esc", "render", "verdict"]

VERDICTS = ("optimal", "gap", "fallback", "infeasible", "heuristic", "unknown")
_DISGUISE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u061c\u200e\u200f\u202a-\u202e"
                       "\u2066-\u2069\ud800-\udfff\ufeff]")


def esc(value: Any) -> str:
    """Text from the log, safe in HTML text and in quoted attributes: escaped, and every
    character that could hide or reorder what a reviewer reads shown as ``<U+XXXX>``."""
    text = _text(value)
    return html.escape(_DISGUISE.sub(lambda m: f"<U+{ord(m.group()):04X}>", text), quote=True)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)[:2000]
    except (ValueError, RecursionError):
        return "(unprintable)"


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return esc("-" if value is None else value)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.3f}"


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _map(obj: Any, key: str) -> Mapping[str, Any]:
    return _obj(obj.get(key) if isinstance(obj, Mapping) else None)


def _list(obj: Any, key: str) -> list[Any]:
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
    solver, strategy = _map(record, "solver"), _map(record, "strategy")
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

    def covering(self, seq: Any) -> str | None:
        """The first valid checkpoint that covers record ``seq``, or None."""
        if not isinstance(seq, int) or seq > self.signed_size:
            return None
        return next((f"{src} (tree size {size:,})" for size, src in sorted(self.checkpoints)
                     if size >= seq), f"records 1..{self.signed_size:,}")


@dataclass(frozen=True, slots=True)
class DecisionEntry:
    """One decision envelope and what its checks found (``Finding``-like objects)."""

    envelope: Mapping[str, Any]
    findings: tuple[Any, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReportInput:
    log: str
    generated: str  # when the report was made (the caller's clock), shown as is
    decisions: tuple[DecisionEntry, ...]
    chain_problems: tuple[str, ...] = ()
    unreadable: tuple[tuple[int, str], ...] = ()
    signatures: SignatureInfo = field(default_factory=lambda: SignatureInfo(False))
    title: str = "ctxbudget audit report"
    max_items: int = 50
    max_decisions: int = 500


def csp() -> str:
    """The page's Content-Security-Policy: nothing but its own script and style."""
    def sha(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"
    return (f"default-src 'none'; script-src {sha(SCRIPT)}; style-src {sha(CSS)}; img-src 'none'; "
            "connect-src 'none'; font-src 'none'; media-src 'none'; object-src 'none'; "
            "frame-src 'none'; worker-src 'none'; form-action 'none'; base-uri 'none'")


# -- one decision ------------------------------------------------------------------------
def _items(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each item with evidence and rule (read from ``items``), tokens and relevance
    (what a compact record leaves out comes from its input row)."""
    rows = decision_items(record)
    raw = [it for it in _list(record, "items") if isinstance(it, Mapping)]
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
        f"<td>{esc(r.get('doc') or '')}</td><td>{esc(r.get('level'))}</td><td class=n>{_num(r.get('tokens'))}</td>"
        f"<td class=n>{_num(r.get('relevance'))}</td><td><code>{esc(r.get('reason'))}</code></td>"
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


def _signature_html(sig: SignatureInfo, seq: Any) -> tuple[str, str]:
    """(state code, HTML) of one record's signature."""
    if not sig.checked:
        return "unchecked", "<p class=warn>signature not checked: pass --key PUB (the log's verifier key)</p>"
    covering = sig.covering(seq)
    if covering:
        return "signed", f"<p class=ok>signed: covered by checkpoint {esc(covering)}</p>"
    return "unsigned", ("<p class=warn>UNSIGNED TAIL: no signed checkpoint covers this record (seq "
                        f"{_num(seq)}; signed up to {sig.signed_size:,}); close the log to sign it</p>")


def _budget_html(record: Mapping[str, Any]) -> str:
    b = _map(record, "budget")
    used, limit, free = b.get("assembled_tokens"), b.get("limit_tokens"), b.get("free_tokens")
    window = b.get("context_window")
    out_r, prompt_r = b.get("reserve_output") or 0, b.get("reserve_prompt") or 0
    text = f"used {_num(used)} of {_num(limit)} tokens, free {_num(free)}"
    if window:
        text += f"; window {_num(window)}, reserved output {_num(out_r)}, prompt {_num(prompt_r)}"
    return f"<div class=budget>{budget_bar(used, limit, window, out_r, prompt_r)}<p>{text}</p></div>"


def _rules_html(record: Mapping[str, Any]) -> str:
    bound = [r for r in _list(record, "rules") if isinstance(r, Mapping) and r.get("binding")]
    parts = []
    if bound:
        parts.append("<h4>rules that bound</h4><ul class=rules>" + "".join(
            f"<li>{esc(r.get('label'))}: total {_num(r.get('total'))}, slack {_num(r.get('slack'))} "
            f"<span class=rule>{esc(r.get('path'))}</span></li>" for r in bound) + "</ul>")
    else:
        parts.append("<p class=none>no rule bound</p>")
    warn = [f"UNMET minimum: {esc(u)}" for u in _list(record, "unmet")]
    warn += [f"MISSING PIN (required: false): {esc(_obj(m).get('pin'))} at {esc(_obj(m).get('path'))}"
             for m in _list(record, "missing_pins")]
    warn += [f"repair: dropped {esc(_obj(r).get('dropped'))} after the BPE recount "
             f"({_num(_obj(r).get('tokens_before'))} -> {_num(_obj(r).get('tokens_after'))} tokens)"
             for r in _list(record, "repairs")]
    if warn:
        parts.append("<ul class=warnings>" + "".join(f"<li>{w}</li>" for w in warn) + "</ul>")
    return "".join(parts)


def _infeasible_html(record: Mapping[str, Any]) -> str:
    inf = _map(record, "infeasibility")
    core = "".join(f"<li>{esc(c.get('rule'))} <span class=rule>{esc(c.get('path'))} {esc(c.get('location') or '')}"
                   "</span></li>" for c in _list(inf, "core") if isinstance(c, Mapping))
    return (f"<p class=failed>{esc(inf.get('message'))}</p><h4>conflicting rules</h4><ul class=rules>{core}</ul>")


def _card(k: int, entry: DecisionEntry, sig: SignatureInfo, cap: int) -> str:
    env = entry.envelope
    rec = _map(env, "record")
    did = rec.get("decision_id")
    code, sentence = verdict(rec)
    pol = _map(rec, "policy")
    _, sig_html = _signature_html(sig, env.get("seq"))
    head = (f"<h3><span class=\"badge v-{code}\">{code}</span> decision <span class=id>{esc(did)}</span></h3>"
            f"<p class=meta>seq {_num(env.get('seq'))} &middot; {esc(rec.get('timestamp'))} &middot; {sentence}</p>"
            f"<p class=meta>policy <b>{esc(pol.get('name'))}</b> revision <b>{esc(pol.get('revision'))}</b> "
            f"<code>{esc(pol.get('digest'))}</code>{' from ' + esc(pol.get('file')) if pol.get('file') else ''}</p>")
    strat = _map(rec, "strategy")
    body = [f"<p class=meta>strategy requested {esc(strat.get('requested'))}, ran {esc(strat.get('used'))}; "
            f"{_num(_map(rec, 'input').get('count'))} candidates; tokenizer {esc(_map(rec, 'tokenizer').get('name'))}"
            + ("" if _map(rec, "tokenizer").get("exact", True) else " (APPROXIMATE counts)") + "</p>",
            _checks_html(entry), sig_html]
    rows = _items(rec)
    if rec.get("outcome") == "infeasible":
        body += [_infeasible_html(rec), "<h4>candidates</h4>", _item_table(rows, "candidate", cap, str(did))]
    else:
        order = {sid: n for n, sid in enumerate(_list(_map(rec, "context"), "order")) if isinstance(sid, str)}
        inc = sorted((r for r in rows if r.get("decision") == "included"),
                     key=lambda r: order.get(r["source_id"], len(order)) if isinstance(r.get("source_id"), str)
                     else len(order))
        exc = sorted((r for r in rows if r.get("decision") != "included"), key=_sort_key)
        body += [_budget_html(rec), _rules_html(rec),
                 f"<h4>included ({len(inc):,}, in context order)</h4>", _item_table(inc, "included", cap, str(did)),
                 f"<h4>excluded ({len(exc):,}, most relevant first)</h4>", _item_table(exc, "excluded", cap, str(did))]
    return f"<section class=\"decision card\" id=d-{k}{_attrs(entry, sig)}>{head}{''.join(body)}</section>"


def _reasons(rec: Mapping[str, Any]) -> list[str]:
    return [str(r["reason"]) for r in _items(rec) if r.get("decision") not in (None, "included") and r.get("reason")]


def _attrs(entry: DecisionEntry, sig: SignatureInfo) -> str:
    rec = _map(entry.envelope, "record")
    reasons = "|" + "|".join(sorted(set(_reasons(rec)))) + "|"
    state, _ = _signature_html(sig, entry.envelope.get("seq"))
    return (f" data-decision data-status=\"{verdict(rec)[0]}\" data-reasons=\"{esc(reasons)}\""
            f" data-policy=\"{esc(_map(rec, 'policy').get('name'))}\""
            f" data-checks=\"{'failed' if entry.findings else 'ok'}\" data-sig=\"{state}\"")


def _safe_card(k: int, entry: DecisionEntry, sig: SignatureInfo, cap: int) -> str:
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


# -- the log overview --------------------------------------------------------------------
def _link(k: int, entry: DecisionEntry, detailed: bool) -> str:
    did = esc(_map(entry.envelope, "record").get("decision_id"))
    return f'<a href="#d-{k}" class=id>{did}</a>' if detailed else f"<span class=id>{did}</span>"


def _integrity_html(data: ReportInput, failed: int) -> str:
    rows = []
    if data.chain_problems:
        rows.append(f"<li class=failed>hash chain NOT INTACT: {len(data.chain_problems):,} problem(s); first: "
                    f"{esc(data.chain_problems[0])} (<code>ctxbudget audit verify</code> lists them)</li>")
    else:
        rows.append("<li class=ok>hash chain intact</li>")
    rows.append(f"<li class={'failed' if failed else 'ok'}>{failed:,} of {len(data.decisions):,} decision "
                "records FAILED their checks" if failed else
                f"<li class=ok>all {len(data.decisions):,} decision records passed their checks")
    rows[-1] += "</li>"
    rows += [f"<li class=failed>line {n:,} unreadable: {esc(why)}</li>" for n, why in data.unreadable[:20]]
    if len(data.unreadable) > 20:
        rows.append(f"<li class=failed>and {len(data.unreadable) - 20:,} more unreadable lines</li>")
    sig = data.signatures
    if not sig.checked:
        rows.append("<li class=warn>signatures not checked: no --key given; the records are protected by the "
                    "hash chain only</li>")
    else:
        tail = sig.records - sig.signed_size
        rows.append(f"<li class={'failed' if sig.problems else 'ok'}>signatures "
                    f"{'FAILED' if sig.problems else 'OK'}: records 1..{sig.signed_size:,} signed by "
                    f"{len(sig.checkpoints):,} valid checkpoint(s)</li>")
        rows.append(f"<li class={'warn' if tail else 'ok'}>unsigned tail: "
                    + (f"{tail:,} record(s), seq {sig.signed_size + 1:,}..{sig.records:,}" if tail else "none") + "</li>")
        rows += [f"<li class=failed><code>{esc(c)}</code>: {esc(m)}</li>" for c, m in sig.problems[:20]]
    return "<ul class=integrity>" + "".join(rows) + "</ul>"


def _overview_html(data: ReportInput, verdicts: list[str]) -> str:
    tally = Counter(verdicts)
    failed = sum(1 for e in data.decisions if e.findings)
    cards = [("decisions", len(data.decisions), "all")] + [(v, tally[v], v) for v in VERDICTS if tally[v] or v in
                                                             ("optimal", "gap", "fallback", "infeasible")]
    cards.append(("failed checks", failed, "failed"))
    tiles = "".join(f'<div class="tile t-{cls}"><b data-count="{cls}">{n:,}</b><span>{name}</span></div>'
                    for name, n, cls in cards)
    points, undated = [], 0
    for e, v in zip(data.decisions, verdicts):
        when = record_time(_map(e.envelope, "record"))
        if when is None:
            undated += 1
        else:
            points.append((when, v))
    reasons: Counter[str] = Counter()
    per_decision: Counter[str] = Counter()
    for e in data.decisions:
        found = _reasons(_map(e.envelope, "record"))
        reasons.update(found)
        per_decision.update(set(found))
    top = "".join(f'<tr><td><a href="#reason={esc(r)}"><code>{esc(r)}</code></a></td><td class=n>{n:,}</td>'
                  f"<td class=n>{per_decision[r]:,}</td></tr>" for r, n in reasons.most_common(10))
    more = f"<p class=more>and {len(reasons) - 10:,} more reasons (the reason filter lists all)</p>" \
        if len(reasons) > 10 else ""
    table = (f"<table class=reasons><tr><th>exclusion reason</th><th class=n>items</th><th class=n>decisions</th></tr>"
             f"{top}</table>{more}" if reasons else "<p class=none>no excluded items</p>")
    lists = []
    for v, title in (("fallback", "fallbacks"), ("infeasible", "infeasible decisions")):
        hits = [(k, e) for k, (e, vv) in enumerate(zip(data.decisions, verdicts)) if vv == v]
        if hits:
            lines = "".join(f"<li>{_link(k, e, k < data.max_decisions)} "
                            f"{_why(_map(e.envelope, 'record'), v)}</li>" for k, e in hits[:50])
            extra = f"<li>and {len(hits) - 50:,} more (filter by status)</li>" if len(hits) > 50 else ""
            lists.append(f"<h4>{title} ({len(hits):,})</h4><ul class=short>{lines}{extra}</ul>")
    return (f"<section class=overview><h2>overview</h2><div class=tiles>{tiles}</div>"
            f"<div class=cols><div><h3>decisions over time</h3>{timeline(points, undated)}"
            f"{_legend()}</div><div><h3>top exclusion reasons</h3>{table}{''.join(lists)}</div></div></section>")


def _why(rec: Mapping[str, Any], v: str) -> str:
    if v == "fallback":
        return esc(_map(rec, "strategy").get("fallback_reason") or "")
    return esc(_map(rec, "infeasibility").get("message") or "")


def _legend() -> str:
    return "<p class=legend>" + "".join(f'<span class="sw v-{v}"></span>{v} ' for v in VERDICTS[:5]) + "</p>"


def _options(name: str, label: str, values: Sequence[str]) -> str:
    opts = "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in values)
    return f'<label>{label} <select id="f-{name}" data-filter="{name}"><option value="">any</option>{opts}</select></label>'


def _filters_html(data: ReportInput, verdicts: list[str]) -> str:
    policies = sorted({_text(_map(_map(e.envelope, "record"), "policy").get("name")) for e in data.decisions})
    reasons = sorted({r for e in data.decisions for r in _reasons(_map(e.envelope, "record"))})
    return ("<form class=filters id=filters>" + _options("status", "verdict", [v for v in VERDICTS if v in verdicts])
            + _options("reason", "exclusion reason", reasons) + _options("policy", "policy", policies)
            + _options("checks", "checks", ["failed", "ok"]) + _options("sig", "signature", ["signed", "unsigned", "unchecked"])
            + '<label>search <input id="f-q" data-filter="q" type="search" placeholder="id, source, evidence"></label>'
            + '<span class=shown><b id="shown">?</b> of ' + f"{len(data.decisions):,} decisions shown</span></form>")


def _index_html(data: ReportInput, verdicts: list[str]) -> str:
    rows = []
    for k, (e, v) in enumerate(zip(data.decisions, verdicts)):
        rec = _map(e.envelope, "record")
        b, pol = _map(rec, "budget"), _map(rec, "policy")
        state, _ = _signature_html(data.signatures, e.envelope.get("seq"))
        rows.append(f'<tr class=row data-ref="d-{k}"{_attrs(e, data.signatures)}><td class=n>{_num(e.envelope.get("seq"))}</td>'
                    f"<td class=t>{esc(rec.get('timestamp'))}</td><td>{_link(k, e, k < data.max_decisions)}</td>"
                    f'<td><span class="badge v-{v}">{v}</span></td><td>{esc(pol.get("name"))} {esc(pol.get("revision"))}</td>'
                    f"<td class=n>{_num(b.get('assembled_tokens'))} / {_num(b.get('limit_tokens'))}</td>"
                    f"<td class={'failed' if e.findings else 'ok'}>{'FAILED' if e.findings else 'ok'}</td>"
                    f"<td>{state}</td></tr>")
    return ("<section class=index><h2>decisions</h2><table class=index><tr><th class=n>seq</th><th>time</th>"
            "<th>decision</th><th>verdict</th><th>policy</th><th class=n>tokens</th><th>checks</th><th>signature</th></tr>"
            + "".join(rows) + "</table></section>")


def render(data: ReportInput) -> str:
    """The whole report as one HTML document (UTF-8 text; see the module docstring)."""
    verdicts = [verdict(_map(e.envelope, "record"))[0] for e in data.decisions]
    failed = sum(1 for e in data.decisions if e.findings)
    cards = "".join(_safe_card(k, e, data.signatures, data.max_items)
                    for k, e in enumerate(data.decisions[:data.max_decisions]))
    cut = len(data.decisions) - data.max_decisions
    if cut > 0:
        cards += (f"<p class=more>and {cut:,} more decisions without a detail card (at most {data.max_decisions:,}; "
                  "they are all counted above and listed in the table; raise --max-decisions or use --decision ID)</p>")
    verdict_word = "NOT INTACT" if failed or data.chain_problems or data.unreadable or data.signatures.problems else "intact"
    return (
        "<!DOCTYPE html>\n<html lang=en><head>"
        f'<meta http-equiv="Content-Security-Policy" content="{csp()}">'
        '<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{esc(data.title)}</title><style>{CSS}</style></head>"
        f'<body data-ready="0" data-intact="{"no" if verdict_word != "intact" else "yes"}">'
        f"<header><h1>{esc(data.title)}</h1><p class=meta>log <code>{esc(data.log)}</code> &middot; "
        f"generated {esc(data.generated)} &middot; {len(data.decisions):,} decisions &middot; "
        f"<b class={'failed' if verdict_word != 'intact' else 'ok'}>{verdict_word}</b></p>"
        f"{_integrity_html(data, failed)}</header>"
        f"{_overview_html(data, verdicts)}{_filters_html(data, verdicts)}{_index_html(data, verdicts)}"
        f'<section class=details><h2>decision details</h2>{cards}</section>'
        f"<footer>ctxbudget audit report: self-contained, loads nothing from the network. Filters: "
        f"<code>#status=fallback&amp;reason=over_budget&amp;policy=NAME&amp;checks=failed&amp;q=TEXT</code></footer>"
        f"<script>{SCRIPT}</script></body></html>\n")
