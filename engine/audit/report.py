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
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .query import record_time
from .reportassets import CSS, SCRIPT
from .reportcard import (
    VERDICTS,
    DecisionEntry,
    SignatureInfo,
    card,
    esc,
    exclusion_reasons,
    filter_attrs,
    member,
    num,
    plain,
    signature_html,
    verdict,
)
from .reportsvg import timeline
from .whatifreport import whatif_html
from ..errors import UsageError

__all__ = ["DecisionEntry", "ReportInput", "SignatureInfo", "csp", "esc", "render", "verdict"]


@dataclass(frozen=True, slots=True)
class ReportInput:
    """Everything the page shows: the log's name, the decisions (in log order) with their
    findings, the chain's problems and unreadable lines, the signature state, and the caps."""

    log: str
    generated: str  # when the report was made (the caller's clock), shown as is
    decisions: tuple[DecisionEntry, ...]
    chain_problems: tuple[str, ...] = ()
    unreadable: tuple[tuple[int, str], ...] = ()
    signatures: SignatureInfo = field(default_factory=lambda: SignatureInfo(False))
    title: str = "ctxbudget audit report"
    max_items: int = 50
    max_decisions: int = 500
    whatif: Mapping[str, Any] | None = None  # a what-if diff (audit whatif --out): its own section

    def __post_init__(self) -> None:
        for name in ("max_items", "max_decisions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                flag = "--" + name.replace("_", "-")
                raise UsageError("report.bad_cap", f"{flag} must be a whole number >= 1, got {value!r}; the rows "
                                 "beyond it are counted in a visible note, never dropped", path=f"$.{name}")


def csp() -> str:
    """The page's Content-Security-Policy: nothing but its own script and style."""
    def sha(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"
    return (f"default-src 'none'; script-src {sha(SCRIPT)}; style-src {sha(CSS)}; img-src 'none'; "
            "connect-src 'none'; font-src 'none'; media-src 'none'; object-src 'none'; "
            "frame-src 'none'; worker-src 'none'; form-action 'none'; base-uri 'none'")



# -- the log overview --------------------------------------------------------------------
def _link(k: int, entry: DecisionEntry, detailed: bool) -> str:
    did = esc(member(entry.envelope, "record").get("decision_id"))
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
        if sig.spans:  # a rotated or pruned log: seqs need not start at 1
            signed = "; ".join(f"{first:,}..{first + n - 1:,}" for first, n, _ in sig.spans if n) or "none"
            signed_text = f"{sig.signed_size:,} of {sig.records:,} records signed (seq {signed})"
            last_first, last_n, _ = sig.spans[-1]
            tail_text = f"{tail:,} record(s), from seq {last_first + last_n:,}"
        else:
            signed_text = f"records 1..{sig.signed_size:,} signed"
            tail_text = f"{tail:,} record(s), seq {sig.signed_size + 1:,}..{sig.records:,}"
        rows.append(f"<li class={'failed' if sig.problems else 'ok'}>signatures "
                    f"{'FAILED' if sig.problems else 'OK'}: {signed_text} by "
                    f"{len(sig.checkpoints):,} valid checkpoint(s)</li>")
        rows.append(f"<li class={'warn' if tail else 'ok'}>unsigned tail: "
                    + (tail_text if tail else "none") + "</li>")
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
        when = record_time(member(e.envelope, "record"))
        if when is None:
            undated += 1
        else:
            points.append((when, v))
    reasons: Counter[str] = Counter()
    per_decision: Counter[str] = Counter()
    for e in data.decisions:
        found = exclusion_reasons(member(e.envelope, "record"))
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
                            f"{_why(member(e.envelope, 'record'), v)}</li>" for k, e in hits[:50])
            extra = f"<li>and {len(hits) - 50:,} more (filter by status)</li>" if len(hits) > 50 else ""
            lists.append(f"<h4>{title} ({len(hits):,})</h4><ul class=short>{lines}{extra}</ul>")
    return (f"<section class=overview><h2>overview</h2><div class=tiles>{tiles}</div>"
            f"<div class=cols><div><h3>decisions over time</h3>{timeline(points, undated)}"
            f"{_legend()}</div><div><h3>top exclusion reasons</h3>{table}{''.join(lists)}</div></div></section>")


def _why(rec: Mapping[str, Any], v: str) -> str:
    if v == "fallback":
        return esc(member(rec, "strategy").get("fallback_reason") or "")
    return esc(member(rec, "infeasibility").get("message") or "")


def _legend() -> str:
    return "<p class=legend>" + "".join(f'<span class="sw v-{v}"></span>{v} ' for v in VERDICTS[:5]) + "</p>"


def _options(name: str, label: str, values: Sequence[str]) -> str:
    opts = "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in values)
    return f'<label>{label} <select id="f-{name}" data-filter="{name}"><option value="">any</option>{opts}</select></label>'


def _filters_html(data: ReportInput, verdicts: list[str]) -> str:
    policies = sorted({plain(member(member(e.envelope, "record"), "policy").get("name")) for e in data.decisions})
    reasons = sorted({r for e in data.decisions for r in exclusion_reasons(member(e.envelope, "record"))})
    return ("<form class=filters id=filters>" + _options("status", "verdict", [v for v in VERDICTS if v in verdicts])
            + _options("reason", "exclusion reason", reasons) + _options("policy", "policy", policies)
            + _options("checks", "checks", ["failed", "ok"]) + _options("sig", "signature", ["signed", "unsigned", "unchecked"])
            + '<label>search <input id="f-q" data-filter="q" type="search" placeholder="id, source, evidence"></label>'
            + '<span class=shown><b id="shown">?</b> of ' + f"{len(data.decisions):,} decisions shown</span></form>")


def _index_html(data: ReportInput, verdicts: list[str]) -> str:
    rows = []
    for k, (e, v) in enumerate(zip(data.decisions, verdicts)):
        rec = member(e.envelope, "record")
        b, pol = member(rec, "budget"), member(rec, "policy")
        state, _ = signature_html(data.signatures, e.envelope.get("seq"))
        rows.append(f'<tr class=row data-ref="d-{k}"{filter_attrs(e, data.signatures)}><td class=n>{num(e.envelope.get("seq"))}</td>'
                    f"<td class=t>{esc(rec.get('timestamp'))}</td><td>{_link(k, e, k < data.max_decisions)}</td>"
                    f'<td><span class="badge v-{v}">{v}</span></td><td>{esc(pol.get("name"))} {esc(pol.get("revision"))}</td>'
                    f"<td class=n>{num(b.get('assembled_tokens'))} / {num(b.get('limit_tokens'))}</td>"
                    f"<td class={'failed' if e.findings else 'ok'}>{'FAILED' if e.findings else 'ok'}</td>"
                    f"<td>{state}</td></tr>")
    return ("<section class=index><h2>decisions</h2><table class=index><tr><th class=n>seq</th><th>time</th>"
            "<th>decision</th><th>verdict</th><th>policy</th><th class=n>tokens</th><th>checks</th><th>signature</th></tr>"
            + "".join(rows) + "</table></section>")


def render(data: ReportInput) -> str:
    """The whole report as one HTML document (UTF-8 text; see the module docstring)."""
    verdicts = [verdict(member(e.envelope, "record"))[0] for e in data.decisions]
    failed = sum(1 for e in data.decisions if e.findings)
    cards = "".join(card(k, e, data.signatures, data.max_items)
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
        f"{_overview_html(data, verdicts)}{whatif_html(data.whatif) if data.whatif is not None else ''}"
        f"{_filters_html(data, verdicts)}{_index_html(data, verdicts)}"
        f'<section class=details><h2>decision details</h2>{cards}</section>'
        f"<footer>ctxbudget audit report: self-contained, loads nothing from the network. Filters: "
        f"<code>#status=fallback&amp;reason=over_budget&amp;policy=NAME&amp;checks=failed&amp;q=TEXT</code></footer>"
        f"<script>{SCRIPT}</script></body></html>\n")
