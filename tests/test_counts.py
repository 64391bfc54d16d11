"""Caller-supplied token counts: the budget is a hard limit for every input.

Under ``budget.counts: max`` (the default) an item weighs the larger of our count and the
caller's, disagreements are recorded, and the assembled context — recounted with the
policy's tokenizer — never exceeds the limit whatever the caller passed (a hypothesis
fuzz over under- and over-counts, templates, separators and every strategy; the larger
run is ``bench/caller_count_fuzz.py``). ``counts: caller`` trusts the caller's counts and
says so in the allocation, the audit record and the CLI summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import BudgetStrategy, InfeasibleError, PolicyError, allocate, cli, get_tokenizer, load_policy
from engine.allocate import to_candidates
from engine.audit.record import build as build_record
from engine.counts import count_tokens
from engine.policy import CountMode, Matcher, Policy

ROOT = Path(__file__).resolve().parents[1]
AUDIT_SCHEMA = json.loads((ROOT / "schemas" / "audit.schema.json").read_text())
TOK = get_tokenizer()
WORDS = ("refund", "annual", "plan", "the", "customer", "invoice", " ", "\n", "x", "1234", "éé", "!!",
         "<|endoftext|>", "don't", "      ", "{", "}", "ab", "c")
TEMPLATES = ("{content}", "[{source_id}] {content}", "{level}: {content}\n", "<doc id={source_id}>{content}</doc>",
             "{content}{source_id}", "{{literal}} {content}")
SEPARATORS = ("", "\n\n", " ", "\n---\n", "ab")


def paragraph(i: int, words: int) -> str:
    return " ".join(f"clause {i}.{k} says refunds for annual plans are prorated" for k in range(words))


def undercounted_rows(n: int = 40, words: int = 40) -> list[dict[str, Any]]:
    """Items whose caller count is about 60 % of the real one (the issue's reproduction)."""
    rows = []
    for i in range(n):
        content = paragraph(i, words)
        rows.append({"source_id": f"doc-{i}", "content": content, "relevance_score": round(1 - i / (2 * n), 4),
                     "token_count": int(TOK.count(content) * 0.6)})
    return rows


# --------------------------------------------------------------------------- regressions


@pytest.mark.parametrize("strategy", list(BudgetStrategy), ids=lambda s: s.value)
def test_regression_undercounted_caller_counts_cannot_overshoot_through_allocate(strategy: BudgetStrategy) -> None:
    """Old main trusted caller counts and overshot (greedy 23,936/13,312 in the issue)."""
    rows = undercounted_rows()
    policy = Policy.default(13_312, strategy=strategy)
    alloc = allocate(rows, policy)
    assert TOK.count(alloc.context) == alloc.context_tokens <= 13_312
    acc = alloc.accounting
    assert (acc.mode, acc.caller_counts, acc.checked, acc.disagreements, acc.undercounts) == (
        CountMode.MAX, 40, 40, 40, 40)
    worst = max(rows, key=lambda r: TOK.count(r["content"]) - r["token_count"])
    assert acc.largest_difference == worst["token_count"] - TOK.count(worst["content"]) < 0
    assert acc.largest_source_id == worst["source_id"]
    assert not acc.trusted
    assert alloc.warnings == (
        f"40 of 40 caller token counts differ from cl100k_base's (40 under; largest "
        f"{acc.largest_difference:+,} on {worst['source_id']!r}); the larger count was used",)


def test_regression_undercounted_caller_counts_cannot_overshoot_through_the_cli(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``ctxbudget allocate`` printed a context of 18,707/13,312 tokens, exit 0, on old main."""
    policy = tmp_path / "p.yaml"
    policy.write_text("apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: p, revision: '1'}\n"
                      "spec:\n  budget: {max_tokens: 13312, template: '[{source_id}] {content}'}\n")
    cands = tmp_path / "c.jsonl"
    cands.write_text("".join(json.dumps(r) + "\n" for r in undercounted_rows()))
    code = cli.main(["allocate", "--policy", str(policy), "--candidates", str(cands), "--audit-log",
                     str(tmp_path / "a.jsonl")])
    out, err = capsys.readouterr()
    assert code == 0
    data = json.loads(out)
    assert TOK.count(data["context"]) == data["context_tokens"] <= 13_312
    assert err.startswith(f"{data['context_tokens']:,}/13,312 tokens;")
    assert "WARNING: 40 of 40 caller token counts differ from cl100k_base's (40 under; largest -" in err
    budget = data["audit_record"]["budget"]
    assert budget["counts"] == "max" and budget["assembled_tokens"] <= budget["limit_tokens"]
    assert budget["caller_counts"]["disagreements"] == 40 and budget["caller_counts"]["trusted"] is False


# --------------------------------------------------------------------------- the rule


def test_the_larger_count_is_used_and_recorded() -> None:
    content = "refund terms for annual plans"
    exact = TOK.count(content)
    rows = [{"source_id": "under", "content": content, "relevance_score": 0.9, "token_count": 1},
            {"source_id": "over", "content": content + " x", "relevance_score": 0.8, "token_count": exact + 50},
            {"source_id": "exact", "content": "plain", "relevance_score": 0.7, "token_count": TOK.count("plain")},
            {"source_id": "own", "content": "counted by us", "relevance_score": 0.6}]
    policy = Policy.default(1000, separator="")
    counted = count_tokens(policy, to_candidates(rows), TOK)
    assert counted.tokens == (exact, exact + 50, TOK.count("plain"), TOK.count("counted by us"))
    acc = counted.accounting
    assert (acc.caller_counts, acc.checked, acc.disagreements, acc.undercounts) == (3, 3, 2, 1)
    assert (acc.largest_difference, acc.largest_source_id) == (exact + 50 - TOK.count(content + " x"), "over")


def test_template_overhead_is_added_to_a_caller_count_and_compared_on_content() -> None:
    content = "refund terms for annual plans"
    exact = TOK.count(content)
    rows = [{"source_id": "a", "content": content, "relevance_score": 0.9, "token_count": exact}]
    policy = Policy.default(1000, template="<doc id={source_id}>{content}</doc>")
    counted = count_tokens(policy, to_candidates(rows), TOK)
    rendered = TOK.count(f"<doc id=a>{content}</doc>")
    overhead = TOK.count("<doc id=a></doc>")
    assert counted.tokens == (max(rendered, exact + overhead),)
    assert counted.accounting.disagreements == 0  # the caller counted the content exactly
    assert counted.accounting.template_overhead_tokens == TOK.count("<doc id=></doc>")


def test_counts_caller_trusts_the_caller_and_says_so_everywhere(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rows = undercounted_rows()
    policy = Policy.default(13_312, counts="caller")
    alloc = allocate(rows, policy)
    acc = alloc.accounting
    assert acc.trusted and acc.mode is CountMode.CALLER and acc.checked == 0 and acc.disagreements == 0
    # The budget held on the caller's counts; context_tokens is still our recount.
    assert alloc.budgeted_tokens <= 13_312 < alloc.context_tokens == TOK.count(alloc.context)
    assert not alloc.repairs
    assert alloc.warnings == (
        f"budget.counts is caller: the budget held on the caller's token counts ({alloc.budgeted_tokens:,} "
        f"tokens); cl100k_base counts the context as {alloc.context_tokens:,}",)
    rec = build_record(policy, to_candidates(rows), alloc, decision_id="00000000-0000-4000-8000-000000000000")
    jsonschema.validate(rec, AUDIT_SCHEMA)
    assert rec["budget"]["counts"] == "caller" and rec["budget"]["caller_counts"]["trusted"] is True
    assert rec["budget"]["budgeted_tokens"] == alloc.budgeted_tokens
    assert rec["budget"]["free_tokens"] == 13_312 - alloc.context_tokens < 0
    # ... and through the CLI summary
    pfile = tmp_path / "p.yaml"
    pfile.write_text("apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: p, revision: '1'}\n"
                     "spec:\n  budget: {max_tokens: 13312, counts: caller}\n")
    cfile = tmp_path / "c.jsonl"
    cfile.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli.main(["allocate", "--policy", str(pfile), "--candidates", str(cfile)]) == 0
    err = capsys.readouterr().err
    assert "WARNING: budget.counts is caller: the budget held on the caller's token counts" in err


def test_counts_caller_without_caller_counts_is_still_repaired() -> None:
    """Nothing to trust: our own counts hold the recounted context to the budget."""
    rows = [{"source_id": f"a{i}", "content": "ab", "relevance_score": 1 - i / 100} for i in range(30)]
    alloc = allocate(rows, Policy.default(20, separator="", counts="caller"))
    assert not alloc.accounting.trusted and alloc.context_tokens <= 20


def test_counts_is_a_policy_field(tmp_path: Path) -> None:
    pfile = tmp_path / "p.yaml"
    pfile.write_text("apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: p, revision: '1'}\n"
                     "spec:\n  budget: {max_tokens: 100, counts: callr}\n")
    with pytest.raises(PolicyError) as err:
        load_policy(pfile)
    assert (err.value.code, err.value.path, err.value.message) == (
        "policy.bad_value", "$.spec.budget.counts", "must be one of: max, caller; got 'callr' — did you mean 'caller'?")
    assert Policy.default(100).budget.counts is CountMode.MAX
    assert Policy.default(100).effective["spec"]["budget"]["counts"] == "max"
    with pytest.raises(PolicyError) as err2:
        Policy.default(100, counts="sometimes")
    assert (err2.value.path, err2.value.message) == (
        "$.spec.budget.counts", "counts must be one of: max, caller; got 'sometimes'")


# --------------------------------------------------------------------------- fuzz


@st.composite
def caller_count_cases(draw: st.DrawFn) -> tuple[list[dict[str, Any]], Policy, BudgetStrategy]:
    n = draw(st.integers(1, 14))
    rows = []
    for k in range(n):
        content = "".join(draw(st.lists(st.sampled_from(WORDS), min_size=0, max_size=30)))
        row: dict[str, Any] = {"source_id": f"s{k % 3}#{k}", "content": content,
                               "relevance_score": draw(st.floats(0, 1)),
                               "level": draw(st.sampled_from(["PARAGRAPH", "SECTION"]))}
        mode = draw(st.sampled_from(["none", "exact", "under", "zero", "over"]))
        exact = TOK.count(content)
        if mode != "none":
            row["token_count"] = {"exact": exact, "under": draw(st.integers(0, max(0, exact - 1))), "zero": 0,
                                  "over": exact + draw(st.integers(1, 40))}[mode]
        if k and draw(st.integers(0, 5)) == 0:
            row["parent_id"] = f"s{(k - 1) % 3}#{k - 1}"
        rows.append(row)
    overrides: dict[str, Any] = {"template": draw(st.sampled_from(TEMPLATES)),
                                 "separator": draw(st.sampled_from(SEPARATORS))}
    if draw(st.booleans()):
        overrides["pinned"] = (Matcher("glob", None, "s0#*", (), None, "$.spec.pinned[0]", required=False),)
    return rows, Policy.default(draw(st.integers(1, 300)), **overrides), draw(st.sampled_from(list(BudgetStrategy)))


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(caller_count_cases())
def test_fuzz_recounted_context_never_exceeds_the_budget(case: tuple[list[dict[str, Any]], Policy,
                                                                     BudgetStrategy]) -> None:
    rows, policy, strategy = case
    try:
        alloc = allocate(rows, policy, strategy=strategy)  # the verifier runs too
    except InfeasibleError:
        return  # pinned items alone do not fit: said, not silent
    recount = TOK.count(alloc.context)
    assert recount == alloc.context_tokens <= policy.budget.limit_tokens
    assert alloc.budgeted_tokens <= policy.budget.limit_tokens


def _reference_accounting(policy: Policy, cands: Any) -> tuple[list[int], tuple[int, int, int, str | None]]:
    """Every item counted one by one, as count_tokens did before it worked on columns."""
    template = policy.budget.template
    tokens, diffs = [], []
    for c in cands:
        rendered = TOK.count(template.format(source_id=c.source_id, content=c.content, level=c.level))
        if c.token_count is None:
            tokens.append(rendered)
            continue
        extra = TOK.count(template.format(source_id=c.source_id, content="", level=c.level))
        tokens.append(max(rendered, c.token_count + extra))
        diffs.append((c.token_count - TOK.count(c.content), c.source_id))
    largest, largest_id = 0, None
    for d, sid in diffs:
        if abs(d) > abs(largest):
            largest, largest_id = d, sid
    return tokens, (sum(1 for d, _ in diffs if d), sum(1 for d, _ in diffs if d < 0), largest, largest_id)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(st.sampled_from(["alpha beta", "gamma", "", "delta delta delta"]),
                               st.one_of(st.none(), st.integers(0, 6))), max_size=8),
       template=st.sampled_from(["{content}", "[{source_id}] {content}"]))
def test_caller_count_accounting_matches_one_by_one(rows: list[tuple[str, int | None]], template: str) -> None:
    policy = Policy.default(100, template=template)
    cands = to_candidates([{"source_id": f"s{k}", "content": text, "relevance_score": 0.5,
                            **({"token_count": n} if n is not None else {})} for k, (text, n) in enumerate(rows)])
    counted = count_tokens(policy, cands, TOK)
    tokens, (disagree, under, largest, largest_id) = _reference_accounting(policy, cands)
    acc = counted.accounting
    assert list(counted.tokens) == tokens
    assert (acc.disagreements, acc.undercounts, acc.largest_difference, acc.largest_source_id) == \
        (disagree, under, largest, largest_id)
    assert acc.checked == acc.caller_counts == sum(1 for _, n in rows if n is not None)
