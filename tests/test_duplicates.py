"""The near-duplicate rule (``spec.duplicates``): the similarity, the pair search, and the
rule as every strategy, the reasons, the explainer, the verifier and the audit see it.

Counts are UTF-8 bytes (``approx:utf8_bytes``) so budgets can be checked by hand.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import BudgetStrategy, InfeasibleError, PolicyError, allocate, load_policy
from engine.allocate import to_candidates
from engine.audit.log import AuditLog
from engine.audit.replay import replay
from engine.audit.show import render
from engine.decide import decide
from engine.duplicates import conflicts, jaccard, shingles, similar_pairs, words
from engine.policy import DuplicateRule, Measure, Policy
from engine.problem import reduce
from engine.reasons import ReasonCode
from engine.rules import RuleKind
from engine.verify import verify
from engine.verify_semantics import shingle_set
from semantics_cases import SHINGLES, ShingleCase

STRATEGIES = list(BudgetStrategy)
AUDIT_SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "audit.schema.json").read_text())
FOX = "the quick brown fox jumps over the lazy dog near the river bank at dawn"
FOX_MIRROR = "The quick brown fox jumps over the lazy dog near the river bank at dusk."  # 1 word changed
OTHER = "an entirely different paragraph about tax law and the filing of returns"


def policy(**spec: Any) -> Policy:
    body = {"budget": {"max_tokens": 1000, "separator": "|"}, "tokenizer": "approx:utf8_bytes", **spec}
    return Policy.from_mapping({"apiVersion": "ctxbudget/v1", "kind": "BudgetPolicy",
                                "metadata": {"name": "dup", "revision": "1"}, "spec": body})


def item(sid: str, content: str, rel: float, **extra: Any) -> dict[str, Any]:
    return {"source_id": sid, "content": content, "relevance_score": rel, **extra}


# --------------------------------------------------------------------------- similarity


@pytest.mark.parametrize("case", SHINGLES, ids=lambda c: c.name)
def test_engine_and_verifier_read_shingles_as_the_table_says(case: ShingleCase) -> None:
    assert shingles(case.text, case.n) == case.shingles
    assert shingle_set(case.text, case.n) == case.shingles


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(max_size=60), st.integers(1, 4))
def test_engine_and_verifier_agree_on_any_text(text: str, n: int) -> None:
    assert shingles(text, n) == shingle_set(text, n)


def test_words_and_jaccard() -> None:
    assert words("Ünïcode, ok_then 42") == ["ünïcode", "ok", "then", "42"]
    a, b = shingles(FOX, 3), shingles(FOX_MIRROR, 3)
    # 15 words: 13 shingles each, the last one differs: 12 shared of 14.
    assert (len(a), len(b), len(a & b)) == (13, 13, 12)
    assert jaccard(a, b) == 12 / 14
    assert jaccard(frozenset(), frozenset()) == 0.0
    assert jaccard(a, frozenset()) == 0.0


def brute_force(sets: list[frozenset[str]], t: float) -> list[tuple[int, int, float]]:
    return [(i, j, jaccard(sets[i], sets[j])) for i, j in itertools.combinations(range(len(sets)), 2)
            if jaccard(sets[i], sets[j]) >= t]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.frozensets(st.sampled_from("abcdefgh"), max_size=7), max_size=12),
       st.sampled_from([0.1, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0]))
def test_pair_search_is_exact(sets: list[frozenset[str]], t: float) -> None:
    """The prefix-filtered index finds exactly the pairs that comparing all pairs finds
    (thresholds such as 0.7, where 0.7 * 10 rounds up, included)."""
    got = [(p.first, p.second, p.similarity) for p in similar_pairs(sets, t)]
    assert got == brute_force(sets, t)


def test_pair_search_at_an_exact_boundary() -> None:
    # 7 shared of 10 distinct: exactly 0.7, and 0.7 * 10 is 7.000000000000001 in floats.
    a = frozenset("abcdefgh")  # 8
    b = frozenset("abcdefgij")  # 9: union 10, intersection 7
    assert jaccard(a, b) == 0.7
    assert [(p.first, p.second) for p in similar_pairs([a, b], 0.7)] == [(0, 1)]
    assert similar_pairs([a, b], 0.71) == []


def test_pair_search_restricted_to_candidates_and_checked_threshold() -> None:
    s = frozenset({"x y z"})
    assert [(p.first, p.second) for p in similar_pairs([s, s, s], 1.0, [0, 2])] == [(0, 2)]
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\], got 0"):
        similar_pairs([s], 0)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.frozensets(st.sampled_from("abcd"), max_size=3), max_size=12),
       st.sampled_from([0.3, 0.5, 0.8, 1.0]), st.data())
def test_conflicts_forbid_exactly_the_non_exempt_duplicate_pairs(
        sets: list[frozenset[str]], t: float, data: st.DataObject) -> None:
    """Grouping copies into one at-most-one is exact: the pairs the conflicts forbid are
    the pairs at or above the threshold, minus two pins and linked pairs — no more."""
    n = len(sets)
    pins = data.draw(st.sets(st.integers(0, max(0, n - 1)), max_size=3)) if n else set()
    links = data.draw(st.sets(st.tuples(st.integers(0, 11), st.integers(0, 11)), max_size=4))

    def linked(i: int, j: int) -> bool:
        return (i, j) in links or (j, i) in links

    want = {(i, j) for i, j, _ in brute_force(sets, t) if not ({i, j} <= pins or linked(i, j))}
    got: set[tuple[int, int]] = set()
    for c in conflicts(sets, t, range(n), pins, linked):
        for a, b in itertools.combinations(c.members, 2):
            got.add((min(a, b), max(a, b)))
            # the similarity a conflict states is the pair's own
            same_unit = (c.members.index(a) < c.split) == (c.members.index(b) < c.split)
            assert jaccard(sets[a], sets[b]) == (1.0 if same_unit else c.similarity)
    assert got == want


def test_copies_of_one_text_are_one_conflict() -> None:
    """200 copies of a disclaimer: one chain, not 19,900 pairs; a pinned copy keeps the
    others out; the excluded name the copy that was taken."""
    rows = [item(f"x{k}", "This message is confidential.", 0.5 + k / 1000) for k in range(200)]
    pol = policy(duplicates={})
    (chain,) = reduce(pol, to_candidates(rows)).chains
    assert chain.key == "duplicates[x0+199]" and len(chain.members) == 200
    assert chain.label == "duplicates ('x0' and 199 more items of the same text: jaccard 1.000 >= 0.8)"
    for strategy in STRATEGIES:
        alloc = allocate(rows, pol, strategy=strategy)
        assert [d.source_id for d in alloc.included] == ["x199"]
    pinned = allocate(rows, policy(duplicates={}, pinned=[{"id": "x3"}]))
    assert [d.source_id for d in pinned.included] == ["x3"]
    assert {d.reason.numbers["duplicate_of"] for d in pinned.excluded} == {"x3"}


# --------------------------------------------------------------------------- policy


def test_policy_block_defaults_and_effective_mapping() -> None:
    pol = policy(duplicates={})
    assert pol.duplicates == DuplicateRule(0.8, Measure.JACCARD, 3)
    assert dict(pol.effective["spec"]["duplicates"]) == {"threshold": 0.8, "measure": "jaccard", "shingle": 3}
    assert "duplicates" not in policy().effective["spec"]  # off, and old digests unchanged
    assert Policy.from_mapping(pol.effective).digest == pol.digest


@pytest.mark.parametrize("block, code, path, message", [
    ({"threshold": 0}, "policy.out_of_range", "$.spec.duplicates.threshold", "must be > 0; got 0"),
    ({"threshold": 1.5}, "policy.out_of_range", "$.spec.duplicates.threshold", "must be <= 1; got 1.5"),
    ({"measure": "cosine"}, "policy.bad_value", "$.spec.duplicates.measure", "must be one of: jaccard; got 'cosine'"),
    ({"shingle": 0}, "policy.out_of_range", "$.spec.duplicates.shingle", "must be >= 1; got 0"),
    ({"treshold": 0.8}, "policy.unknown_field", "$.spec.duplicates.treshold",
     "unknown field 'treshold'; did you mean 'threshold'?"),
])
def test_bad_duplicates_block_is_a_policy_error(block: dict[str, Any], code: str, path: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        policy(duplicates=block)
    assert (info.value.code, info.value.path, info.value.message) == (code, path, message)


# --------------------------------------------------------------------------- the rule


ROWS = [item("a", FOX, 0.9), item("a-mirror", FOX_MIRROR, 0.85), item("b", OTHER, 0.5)]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.value)
def test_duplicates_crowd_out_the_budget_without_the_rule(strategy: BudgetStrategy) -> None:
    """The complaint about peers: a mirrored copy takes the room a distinct item needs.
    Budget 150 bytes fits two of the three items; the rule keeps the copy out."""
    spec = {"budget": {"max_tokens": 150, "separator": "|"}, "strategy": strategy.value}
    loose = allocate(ROWS, policy(**spec))
    assert {d.source_id for d in loose.included} == {"a", "a-mirror"}
    alloc = allocate(ROWS, policy(**spec, duplicates={"threshold": 0.8}))
    assert {d.source_id for d in alloc.included} == {"a", "b"}
    (mirror,) = [d for d in alloc.decisions if d.source_id == "a-mirror"]
    assert mirror.reason.code is ReasonCode.NEAR_DUPLICATE
    assert mirror.reason.evidence == "near-duplicate of 'a', which is included (jaccard 0.857 >= 0.8)"
    assert mirror.reason.rule == "$.spec.duplicates"
    assert dict(mirror.reason.numbers) == {"duplicate_of": "a", "similarity": 12 / 14, "threshold": 0.8}


def test_below_the_threshold_both_may_be_taken() -> None:
    alloc = allocate(ROWS, policy(duplicates={"threshold": 0.9}))
    assert len(alloc.included) == 3


def test_problem_holds_one_named_conflict_per_pair() -> None:
    pol = policy(duplicates={})
    (chain,) = reduce(pol, to_candidates(ROWS)).chains
    assert (chain.key, chain.kind, chain.members, chain.path) == (
        "duplicates[a~a-mirror]", RuleKind.NEAR_DUPLICATE, (0, 1), "$.spec.duplicates")
    assert chain.label == "duplicates ('a' ~ 'a-mirror': jaccard 0.857 >= 0.8)"


def test_inactive_items_are_not_compared() -> None:
    pol = policy(duplicates={}, blocked=[{"id": "a"}])
    assert reduce(pol, to_candidates(ROWS)).chains == ()
    alloc = allocate(ROWS, pol)
    assert {d.source_id for d in alloc.included} == {"a-mirror", "b"}


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.value)
def test_pinned_duplicates_are_both_kept(strategy: BudgetStrategy) -> None:
    """Pins win: two pinned near-duplicates are both included (no conflict is built),
    and the verifier accepts it."""
    pol = policy(duplicates={}, pinned=[{"id": "a"}, {"id": "a-mirror"}], strategy=strategy.value)
    cands = to_candidates(ROWS)
    assert reduce(pol, cands).chains == ()
    alloc = allocate(cands, pol)
    assert {d.source_id for d in alloc.included} == {"a", "a-mirror", "b"}
    assert verify(pol, cands, alloc) == ()


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.value)
def test_a_pin_excludes_its_unpinned_duplicate(strategy: BudgetStrategy) -> None:
    pol = policy(duplicates={}, pinned=[{"id": "a-mirror"}], strategy=strategy.value)
    alloc = allocate(ROWS, pol)
    assert {d.source_id for d in alloc.included} == {"a-mirror", "b"}
    (a,) = [d for d in alloc.decisions if d.source_id == "a"]
    assert a.reason.code is ReasonCode.NEAR_DUPLICATE and a.reason.numbers["duplicate_of"] == "a-mirror"


def test_ancestor_and_descendant_are_the_hierarchy_rules_business() -> None:
    """A one-sentence paragraph and its sentence have the same text: no duplicate
    conflict between them. With exclusive hierarchy one is taken (hierarchy_conflict);
    without it both may be."""
    rows = [item("p", FOX, 0.9, level="PARAGRAPH"), item("p.s1", FOX, 0.8, level="SENTENCE", parent_id="p")]
    exclusive = policy(duplicates={}, hierarchy={"exclusive": True})
    problem = reduce(exclusive, to_candidates(rows))
    assert [c.kind for c in problem.chains] == [RuleKind.HIERARCHY]
    alloc = allocate(rows, exclusive)
    # Same text, same tokens, same calibrated value: an exact tie, either one may be taken.
    assert sorted(d.reason.code.value for d in alloc.decisions) == sorted(
        [ReasonCode.SELECTED.value, ReasonCode.HIERARCHY.value])
    loose = policy(duplicates={}, hierarchy={"exclusive": False})
    cands = to_candidates(rows)
    both = allocate(cands, loose)
    assert len(both.included) == 2 and verify(loose, cands, both) == ()


def test_infeasible_core_names_the_duplicate_rule_with_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "dup.yaml"
    f.write_text("apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: dup, revision: '1'}\n"
                 "spec:\n  tokenizer: approx:utf8_bytes\n  budget: {max_tokens: 1000}\n"
                 "  levels:\n    PARAGRAPH: {min_items: 2}\n"
                 "  duplicates:\n    threshold: 0.8\n", encoding="utf-8")
    pol = load_policy(f)
    rows = [item("a", FOX, 0.9), item("a-mirror", FOX_MIRROR, 0.85)]
    with pytest.raises(InfeasibleError) as info:
        allocate(rows, pol)
    err = info.value
    core = {c["key"]: c for c in err.details["core"]}
    assert set(core) == {"levels.PARAGRAPH.min_items", "duplicates[a~a-mirror]"}
    assert err.details["minimal"] is True
    assert core["duplicates[a~a-mirror]"]["path"] == "$.spec.duplicates"
    assert core["duplicates[a~a-mirror]"]["location"] == f"{f}:9:3"
    assert f"duplicates ('a' ~ 'a-mirror': jaccard 0.857 >= 0.8) ($.spec.duplicates, {f}:9:3)" in err.message


def test_verifier_reports_two_included_duplicates() -> None:
    """The verifier's own code: an allocation made without the rule, checked against a
    policy with it, breaks it (names both items, the similarity and the threshold)."""
    cands = to_candidates(ROWS)
    alloc = allocate(cands, policy())
    (v,) = verify(policy(duplicates={}), cands, alloc)
    assert (v.code, v.rule, v.items) == ("duplicates.near_duplicate", "$.spec.duplicates", ("a", "a-mirror"))
    assert v.message == "'a' and 'a-mirror' are both included and are near-duplicates (jaccard 0.857 >= 0.8)"


def test_audit_record_carries_the_rule_and_the_reasons(tmp_path: Path) -> None:
    pol = policy(duplicates={"threshold": 0.8, "shingle": 3}, budget={"max_tokens": 150, "separator": "|"})
    log = AuditLog(tmp_path / "a.jsonl")
    done = decide(ROWS, pol, audit_log=log)
    rec = done.record
    jsonschema.validate(rec, AUDIT_SCHEMA)  # near_duplicate is a known reason code
    assert rec["policy"]["effective"]["spec"]["duplicates"] == {"threshold": 0.8, "measure": "jaccard",
                                                                "shingle": 3}
    (mirror,) = [i for i in rec["items"] if i["source_id"] == "a-mirror"]
    assert (mirror["reason"], mirror["rule"], mirror["numbers"]["duplicate_of"]) == (
        "near_duplicate", "$.spec.duplicates", "a")
    env = next(iter(log))
    text = render(env)
    assert ("rule     duplicates ($.spec.duplicates): no two items with jaccard >= 0.8 over 3-word shingles "
            "(pinned pairs and ancestor/descendant pairs exempt)") in text
    assert "[near_duplicate] near-duplicate of 'a', which is included (jaccard 0.857 >= 0.8)" in text
    # Content not stored: the texts cannot be compared again, and replay says so.
    assert replay(env["record"]).error == (
        "the policy's duplicates rule compares the items' texts and the content is not stored; "
        "set audit.store_content to make such decisions replayable")


def test_a_record_with_stored_content_replays_identically(tmp_path: Path) -> None:
    pol = policy(duplicates={}, budget={"max_tokens": 150, "separator": "|"}, audit={"store_content": True})
    log = AuditLog(tmp_path / "a.jsonl")
    decide(ROWS, pol, audit_log=log)
    again = replay(next(iter(log))["record"])
    assert again.identical, again.summary()
    looser = replay(next(iter(log))["record"], pol.replace(duplicates=None))
    assert looser.added == ("a-mirror",) and looser.removed == ("b",)


# --------------------------------------------------------------------------- property

WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]


@st.composite
def duplicate_problems(draw: Any) -> tuple[list[dict[str, Any]], Policy]:
    """Texts built from few words (so near-duplicates are common), with pins, hierarchy
    links and level quotas drawn in."""
    n = draw(st.integers(2, 10))
    base = [draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=8)) for _ in range(3)]
    rows = []
    for k in range(n):
        text = list(base[draw(st.integers(0, 2))])
        for _ in range(draw(st.integers(0, 2))):  # a few words changed, as a mirror does
            text[draw(st.integers(0, len(text) - 1))] = draw(st.sampled_from(WORDS))
        parent = draw(st.sampled_from([None, *[f"i{j}" for j in range(k)]])) if k else None
        rows.append(item(f"i{k}", " ".join(text), draw(st.floats(0.0, 1.0)),
                         level=draw(st.sampled_from(["PARAGRAPH", "SENTENCE"])), parent_id=parent))
    spec: dict[str, Any] = {
        "budget": {"max_tokens": draw(st.integers(10, 200)), "separator": "|"},
        "duplicates": {"threshold": draw(st.sampled_from([0.3, 0.5, 0.8, 1.0])), "shingle": draw(st.integers(1, 3))},
        "hierarchy": {"exclusive": draw(st.booleans())},
    }
    if draw(st.booleans()):
        spec["pinned"] = [{"id": f"i{k}"} for k in draw(st.sets(st.integers(0, n - 1), max_size=2))]
    if draw(st.booleans()):
        spec["levels"] = {"SENTENCE": {"max_items": draw(st.integers(1, 3))}}
    return rows, policy(**spec)


def _ancestors(rows: list[dict[str, Any]], sid: str) -> set[str]:
    parent = {r["source_id"]: r.get("parent_id") for r in rows}
    out: set[str] = set()
    p = parent[sid]
    while p is not None and p not in out:
        out.add(p)
        p = parent.get(p)
    return out


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(duplicate_problems())
def test_no_chosen_pair_is_a_duplicate_under_any_strategy(case: tuple[list[dict[str, Any]], Policy]) -> None:
    """For every strategy: no two included items (not both pinned, not ancestor and
    descendant) have similarity >= threshold, computed here by brute force; every
    excluded duplicate names an included item it duplicates."""
    rows, pol = case
    rule = pol.duplicates
    assert rule is not None
    pinned = {p.id for p in pol.pinned}
    text = {r["source_id"]: r["content"] for r in rows}
    for strategy in STRATEGIES:
        try:
            alloc = allocate(rows, pol, strategy=strategy)  # the verifier runs too
        except InfeasibleError:
            continue
        inc = [d.source_id for d in alloc.included]
        for a, b in itertools.combinations(inc, 2):
            if {a, b} <= pinned or a in _ancestors(rows, b) or b in _ancestors(rows, a):
                continue
            sim = jaccard(shingle_set(text[a], rule.shingle), shingle_set(text[b], rule.shingle))
            assert sim < rule.threshold, (strategy, a, b, sim)
        for d in alloc.excluded:
            if d.reason.code is ReasonCode.NEAR_DUPLICATE:
                other = d.reason.numbers["duplicate_of"]
                assert other in inc
                assert jaccard(shingle_set(text[other], rule.shingle),
                               shingle_set(d.source_id and text[d.source_id], rule.shingle)) >= rule.threshold
