"""engine.audit.report (no browser): escaping of hostile log strings, verdicts, caps with
their visible notes, damaged records, the page's CSP, and `ctxbudget audit report`'s
exit codes over a real signed log (tests/reportcases.py). The page in a real Chromium:
tests/test_report_browser.py."""

from __future__ import annotations

import base64
import copy
import hashlib
import re
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import reportcases
from engine import cli
from engine.audit import reportcard
from engine.audit.query import decision_items
from engine.audit.report import DecisionEntry, ReportInput, SignatureInfo, csp, esc, render, verdict
from engine.audit.reportassets import CSS, SCRIPT
from engine.audit.reportsvg import budget_bar, timeline
from engine.audit.records import Finding
from engine.errors import UsageError


def record(n_excluded: int = 3, **over: Any) -> dict[str, Any]:
    items = [{"source_id": "keep", "decision": "included", "reason": "selected", "evidence": "part of the optimal "
              "selection", "tokens": 10, "relevance": 0.9, "level": "PARAGRAPH", "rule": None}]
    items += [{"source_id": f"out-{k:03d}", "decision": "excluded", "reason": "over_budget",
               "evidence": f"needed {20 + k} tokens", "tokens": 20 + k, "relevance": k / 1000, "level": "PARAGRAPH",
               "rule": "$.spec.budget"} for k in range(n_excluded)]
    rec = {"decision_id": "d-1", "timestamp": "2026-11-20T09:00:00Z", "outcome": "allocated",
           "policy": {"name": "p", "revision": "3", "digest": "sha256:" + "a" * 64},
           "budget": {"assembled_tokens": 10, "limit_tokens": 100, "free_tokens": 90, "context_window": None},
           "solver": {"status": "optimal", "gap": 0}, "strategy": {"requested": "optimal", "used": "optimal",
                                                                    "fallback_reason": None},
           "rules": [{"binding": True, "label": "budget 100 tokens", "total": 10, "slack": 90, "path": "$.spec.budget"}],
           "context": {"order": ["keep"]}, "items": items, "input": {"count": len(items), "items": []}}
    rec.update(over)
    return rec


def page(*recs: dict[str, Any], findings: dict[int, tuple[Any, ...]] | None = None, **kw: Any) -> str:
    entries = tuple(DecisionEntry({"seq": k + 1, "kind": "decision", "record": r}, (findings or {}).get(k, ()))
                    for k, r in enumerate(recs))
    return render(ReportInput("log.jsonl", "2026-12-02 00:00:00 UTC", entries, **kw))


class Tags(HTMLParser):
    """Every start tag with its attributes, as the browser's tokenizer would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags(text: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(text)
    return parser.tags


# -- escaping ------------------------------------------------------------------------------
def test_esc_escapes_markup_and_shows_disguising_characters() -> None:
    assert esc("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert esc('" onmouseover="x') == "&quot; onmouseover=&quot;x"
    assert esc("kb#\u202etxt.exe") == "kb#&lt;U+202E&gt;txt.exe"  # a right-to-left override, made visible
    assert esc("a\x00b\ud800c") == "a&lt;U+0000&gt;b&lt;U+D800&gt;c"  # NUL and a lone surrogate
    assert esc(None) == "-" and esc(3) == "3" and esc({"k": "<v>"}) == "{&quot;k&quot;: &quot;&lt;v&gt;&quot;}"
    esc("\ud800").encode("utf-8")  # the page is always valid UTF-8


def test_markup_from_the_log_renders_as_text_everywhere() -> None:
    evil = "<script>document.body.setAttribute('data-pwned','1')</script>"
    attr = '" onmouseover="alert(1)" x="'
    rec = record(decision_id=evil, timestamp=evil, policy={"name": attr, "revision": evil, "digest": evil, "file": evil})
    rec["items"][1].update(source_id=evil, reason=evil, evidence=evil, rule=evil)
    rec["items"][2].update(reason=attr)
    out = page(rec, findings={0: (Finding("record.items", 1, evil, evil, evil),)})
    found = tags(out)
    assert [t for t, _ in found].count("script") == 1  # the page's own script only
    assert not any(k.startswith("on") for _, a in found for k in a)  # no event handler attribute
    assert any(a.get("data-policy") == attr for _, a in found)  # the value stays inside its attribute
    assert "&lt;script&gt;document.body.setAttribute(&#x27;data-pwned&#x27;,&#x27;1&#x27;)&lt;/script&gt;" in out
    assert out.count("<script>") == 1


def test_the_page_loads_nothing_and_allows_only_its_own_script_and_style() -> None:
    out = page(record())
    policy = csp()
    assert policy.startswith("default-src 'none'; ")
    for name, text in (("script-src", SCRIPT), ("style-src", CSS)):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"{name} 'sha256-{digest}';" in policy
    assert "unsafe-inline" not in policy and "connect-src 'none'" in policy
    assert out.index('http-equiv="Content-Security-Policy"') < out.index("<title>")  # before anything it governs
    assert f"<script>{SCRIPT}</script>" in out and f"<style>{CSS}</style>" in out
    assert not re.search(r"(src|href|action)\s*=\s*\"?(https?:|//)", out)
    assert not any("style" in a for _, a in tags(out))  # no style attribute: the CSP forbids them


# -- verdicts ------------------------------------------------------------------------------
@pytest.mark.parametrize(("rec", "code", "text"), [
    ({"solver": {"status": "optimal"}}, "optimal", "proven optimal"),
    ({"solver": {"status": "trivial"}}, "optimal", "optimal (everything relevant fitted; no search needed)"),
    ({"solver": {"status": "feasible", "gap": 0.0123}}, "gap", "best found at the time limit, gap 1.23%"),
    ({"solver": {"status": "feasible", "gap": "x"}}, "gap", "best found at the time limit, gap unknown"),
    ({"solver": {"status": "fallback"}, "strategy": {"used": "greedy", "fallback_reason": "CP-SAT raised <E>"}},
     "fallback", "fallback to greedy: CP-SAT raised &lt;E&gt;"),
    ({"solver": {"status": "heuristic"}, "strategy": {"used": "greedy"}}, "heuristic",
     "heuristic (greedy); no optimality claim"),
    ({"outcome": "infeasible"}, "infeasible", "infeasible: the hard rules cannot all hold"),
    ({"solver": "broken"}, "unknown", "solver status -"),
    ([], "unknown", "not a decision record"),
])
def test_verdict(rec: Any, code: str, text: str) -> None:
    assert verdict(rec) == (code, text)


# -- caps: never a silent drop ---------------------------------------------------------------
def test_item_rows_are_capped_with_a_visible_note() -> None:
    out = page(record(n_excluded=130), max_items=50)
    rows = [a for t, a in tags(out) if t == "tr" and a.get("class") == "item"]
    assert len(rows) == 51  # one included + 50 excluded
    assert "and 80 more excluded items not shown (at most 50 per table; raise --max-items" in out
    assert "excluded (130, most relevant first)" in out
    assert out.index("out-129") < out.index("out-080")  # the most relevant are the ones shown
    assert "out-079" not in out


def test_decision_cards_are_capped_but_every_decision_is_counted_and_listed() -> None:
    recs = [record(decision_id=f"d-{k}") for k in range(7)]
    out = page(*recs, max_decisions=3)
    found = tags(out)
    assert sum(1 for t, a in found if t == "section" and "data-decision" in a) == 3
    assert sum(1 for t, a in found if t == "tr" and a.get("class") == "row") == 7
    assert "and 4 more decisions without a detail card (at most 3;" in out
    assert '<b data-count="all">7</b>' in out and '<a href="#d-6"' not in out and "d-6" in out


# -- damaged and special records -------------------------------------------------------------
def test_a_damaged_record_is_shown_as_its_json_never_a_crash() -> None:
    bad = record()
    bad["items"] = [{"source_id": 5, "decision": "included", "tokens": "many", "relevance": "high"}, "junk"]
    bad["budget"] = {"assembled_tokens": "lots", "limit_tokens": -1}
    bad["rules"] = "none"
    out = page(bad, {"decision_id": "x"}, "not even a mapping")  # type: ignore[arg-type]
    assert "many" in out and "lots" in out
    deep: Any = "bottom"
    for _ in range(3000):
        deep = {"d": deep}
    out = page(record(policy=deep))  # read where a name would be: nothing there
    assert "policy <b>-</b> revision <b>-</b>" in out
    unhashable = record()
    unhashable["items"][0]["source_id"] = {"id": deep}  # an id that is no string (old code: TypeError)
    unhashable["input"]["items"] = [{"source_id": ["a"]}]
    assert decision_items(unhashable)[0]["source_id"] == {"id": deep}
    out = page(unhashable)
    assert "<td class=id>(unprintable)</td>" in out  # too deep to print, still a row


def test_a_record_that_cannot_be_laid_out_is_shown_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    deep: Any = "bottom"
    for _ in range(3000):
        deep = {"d": deep}

    def boom(*_a: Any) -> str:
        raise ValueError("bad budget")

    monkeypatch.setattr(reportcard, "_budget_html", boom)
    out = page(record(extra=deep))
    assert "this record cannot be laid out (ValueError: bad budget); its JSON follows" in out
    assert "(too deeply nested to print)" in out
    assert 'data-checks=failed' in out  # counted and filterable as a failure


def test_failed_checks_and_infeasible_core_are_shown() -> None:
    inf = {"decision_id": "d-inf", "outcome": "infeasible", "timestamp": "2026-11-21T00:00:00Z",
           "infeasibility": {"message": "pinned 'a' cannot fit", "core": [
               {"rule": "budget 50 tokens", "path": "$.spec.budget", "location": "p.yaml:13:3"}]},
           "input": {"items": [{"source_id": "a", "token_count": 200, "relevance_score": 0.5}]}}
    out = page(record(), inf, findings={0: (Finding("record.tokens", 1, "d-1", "$.budget", "totals differ"),)})
    assert "FAILED CHECKS: record.tokens: do not rely on this record" in out
    assert "<code>record.tokens</code> at <code>$.budget</code>: totals differ" in out
    assert "budget 50 tokens <span class=rule>$.spec.budget p.yaml:13:3</span>" in out
    assert "1 of 2 decision records FAILED their checks" in out and 'data-intact="no"' in out


def test_signature_state_per_record() -> None:
    sig = SignatureInfo(True, signed_size=2, records=3, checkpoints=((1, "log.checkpoints:1"), (2, "log.checkpoints:2")))
    assert sig.covering(1) == "log.checkpoints:1 (tree size 1)"
    assert sig.covering(2) == "log.checkpoints:2 (tree size 2)"
    assert sig.covering(3) is None and sig.covering("2") is None
    out = page(record(), record(), record(), signatures=sig)
    assert out.count("signed: covered by checkpoint") == 2
    assert "UNSIGNED TAIL: no signed checkpoint covers this record (seq 3; signed up to 2)" in out
    assert "unsigned tail: 1 record(s), seq 3..3" in out
    assert "signature not checked: pass --key PUB" in page(record())


# -- charts -----------------------------------------------------------------------------------
def test_budget_bar_draws_used_free_and_reserves() -> None:
    svg = budget_bar(250, 1000, 2000, 600, 400)
    widths = dict(re.findall(r'class="(b-\w+)" x="[\d.]+" y="0" width="([\d.]+)"', svg))
    assert widths == {"b-used": "125.0", "b-free": "375.0", "b-res": "300.0", "b-resp": "200.0"}
    assert "b-over" in budget_bar(1200, 1000, None, 0, 0)
    empty = budget_bar("x", None, [], {}, True)  # hostile types: an empty bar, no crash
    assert 'aria-label="budget: 0 of 0 tokens used"' in empty and "<rect" not in empty


def test_timeline_bins_and_says_what_it_left_out() -> None:
    t0 = datetime(2026, 11, 20, tzinfo=timezone.utc)
    svg = timeline([(t0 + timedelta(hours=h), "optimal") for h in range(0, 240, 5)] + [(t0, "fallback")], undated=2)
    assert "one bar per 6 hours; from 2026-11-20 00:00 UTC to 2026-11-29 18:00 UTC; tallest bar 3" in svg
    assert "2 without a readable timestamp (not drawn)" in svg and 'class="v-fallback"' in svg
    assert "one bar per day" in timeline([(t0, "gap"), (t0 + timedelta(days=30), "gap")])
    assert timeline([], undated=1) == '<p class="none">no dated decisions (1 without a readable timestamp)</p>'


def test_timestamps_at_the_ends_of_the_calendar_are_no_crash() -> None:
    out = page(record(timestamp="0001-01-01T00:00:00Z"), record(timestamp="9999-12-31T23:59:59Z"))
    assert ("decisions over time not drawn: the timestamps span 0001-01-01T00:00:00+00:00 to "
            "9999-12-31T23:59:59+00:00, beyond what the calendar can bin") in out  # old code: OverflowError
    assert "one bar per" in page(record(timestamp="9999-12-31T23:59:59Z"))


# -- the command over a real signed log ---------------------------------------------------------
@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> reportcases.ReportLog:
    return reportcases.build(tmp_path_factory.mktemp("report"))


def test_cli_report_marks_the_tampered_record_and_exits_6(signed: reportcases.ReportLog, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    assert cli.main(["audit", "report", str(signed.path), "--out", str(out), "--key", str(signed.public_key)]) == 6
    assert capsys.readouterr().err == (
        f"finding: seq 6 decision {reportcases.SCRIPT_ID}: FAILED record.context_order, record.schema, record.tokens\n"
        f"wrote {out}: 6 decision(s), 1 FAILED their checks; signatures OK\n")
    text = out.read_text(encoding="utf-8")
    cards = [a for t, a in tags(text) if t == "section" and "data-decision" in a]
    assert [(a["data-status"], a["data-checks"], a["data-sig"]) for a in cards] == [
        ("optimal", "ok", "signed"), ("optimal", "ok", "signed"), ("infeasible", "ok", "signed"),
        ("fallback", "ok", "signed"), ("optimal", "ok", "unsigned"), ("optimal", "failed", "unsigned")]
    assert "FAILED CHECKS: record.context_order, record.schema, record.tokens" in text
    assert text.count("<script>") == 1 and "&lt;img src=x onerror=" in text


def test_cli_report_of_one_decision(signed: reportcases.ReportLog, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "one.html"
    assert cli.main(["audit", "report", str(signed.path), "--decision", reportcases.FALLBACK, "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.count("data-decision ") == 2  # its card and its index row
    assert "fallback to greedy: CP-SAT raised MemoryError: out of memory in presolve" in text
    assert "signature not checked: pass --key PUB" in text
    assert capsys.readouterr().err == f"wrote {out}: 1 decision(s), 0 FAILED their checks\n"


def test_cli_report_unknown_decision_exits_2_and_writes_nothing(signed: reportcases.ReportLog, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "none.html"
    assert cli.main(["audit", "report", str(signed.path), "--decision", "nope", "--out", str(out)]) == 2
    assert not out.exists()
    assert f"error: audit.unknown_decision: no decision 'nope' in {signed.path} (6 decisions there)" \
        in capsys.readouterr().err


def test_cli_report_of_an_intact_log_exits_0(signed: reportcases.ReportLog, tmp_path: Path) -> None:
    clean = tmp_path / "clean.jsonl"
    clean.write_bytes(b"".join(signed.path.read_bytes().splitlines(keepends=True)[:5]))
    out = tmp_path / "clean.html"
    assert cli.main(["audit", "report", str(clean), "--out", str(out)]) == 0
    assert 'data-intact="yes"' in out.read_text(encoding="utf-8")


def test_cli_report_unreadable_line_exits_6(signed: reportcases.ReportLog, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.jsonl"
    lines = signed.path.read_bytes().splitlines(keepends=True)
    broken.write_bytes(lines[0] + b"{\"not\": \xff json\n" + lines[1])
    out = tmp_path / "broken.html"
    assert cli.main(["audit", "report", str(broken), "--out", str(out)]) == 6
    text = out.read_text(encoding="utf-8")
    assert "line 2 unreadable" in text and "hash chain NOT INTACT" in text
    assert f"finding: {broken}:2: " in capsys.readouterr().err  # as `audit show` says it


def test_record_copy_is_not_modified_by_rendering() -> None:
    rec = record()
    before = copy.deepcopy(rec)
    page(rec)
    assert rec == before


def test_caps_must_be_positive(signed: reportcases.ReportLog, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError, match=r"--max-items must be a whole number >= 1, got 0; the rows beyond it"):
        page(record(), max_items=0)
    out = tmp_path / "r.html"
    assert cli.main(["audit", "report", str(signed.path), "--out", str(out), "--max-decisions", "-1"]) == 2
    assert not out.exists()
    assert "error: report.bad_cap: --max-decisions must be a whole number >= 1, got -1" in capsys.readouterr().err


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8)
KEYS = ("decision_id", "timestamp", "outcome", "policy", "budget", "solver", "strategy", "rules", "context",
        "items", "input", "infeasibility", "unmet", "missing_pins", "repairs", "tokenizer")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), JSON, max_size=len(KEYS)),
       st.lists(st.fixed_dictionaries({}, optional={k: JSON for k in ("source_id", "decision", "reason", "tokens",
                                                                        "relevance", "evidence", "rule")}), max_size=4),
       st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("<>&\"'\u202e\x00"), max_size=20))
def test_any_json_record_renders_escaped_and_valid_utf8(rec: dict[str, Any], items: list[dict[str, Any]],
                                                        text: str) -> None:
    """Property: whatever a (resealed, hand-edited) record holds, the page renders, is
    valid UTF-8, and holds no markup but its own."""
    rec = {**rec, "items": items, "decision_id": text} if items else {**rec, "decision_id": text}
    out = page(rec, record(timestamp=text))
    out.encode("utf-8")
    assert out.count("<script") == 1 and out.count("</script>") == 1
    assert not any(k.startswith("on") for _, a in tags(out) for k in a)


def test_the_query_and_the_caller_are_shown_when_recorded() -> None:
    out = page(record(query={"text": "How do I get a <refund>?", "digest": None}, request_id="req-7",
                      requested_by="alice", labels={"team": "support", "env": "prod"}),
               record(query={"text": None, "digest": "hmac-sha256:abc"}), record())
    assert ("<p class=meta>query <q>How do I get a &lt;refund&gt;?</q> &middot; request <b>req-7</b> &middot; "
            "requested by <b>alice</b> &middot; labels <code>env=prod</code>, <code>team=support</code></p>") in out
    assert "query (not stored; keyed digest) <code>hmac-sha256:abc</code>" in out
    assert out.count("<p class=meta>query") == 2
