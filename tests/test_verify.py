"""The verifier can fail: every rule kind is fed a known-bad allocation and must report
that rule's violation (code, policy path, items), and nothing else.

Most bad allocations are real ones made under a looser policy and checked against a
stricter one (the looser policy's verdict is asserted clean first, so the stricter one
is what breaks); others are a real allocation edited with ``dataclasses.replace`` or a
hand-made Selection assembled by ``engine.allocation.build``. Counts are UTF-8 bytes
(``approx:utf8_bytes``) so every number can be checked by hand.

``test_each_checker_is_needed`` is the in-process mutation check: each checker of
``engine.verify.CHECKERS`` replaced by a no-op must leave some known-bad case
undetected (``bench/mutation_check.py`` runs the source-level mutants, including a
no-op ``verify`` and a disabled repair loop).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import engine.verify

from engine import BudgetStrategy, VerificationError, allocate, get_tokenizer
from engine.allocate import to_candidates
from engine.allocation import Allocation, build
from engine.candidates import Candidate
from engine.policy import Policy
from engine.problem import reduce
from engine.reasons import ReasonCode
from engine.rules import MissingPin
from engine.strategies import Selection
from engine.verify import CHECKERS, Verifier, Violation, verify


def policy(tokenizer: str = "approx:utf8_bytes", **spec: Any) -> Policy:
    # A written objective (the base values: score / best, squared), so that a looser and a
    # stricter policy value items alike; the default objective's coverage follows the
    # hierarchy rule, which several cases below loosen.
    body = {"budget": {"max_tokens": 1000, "separator": "|"}, "tokenizer": tokenizer,
            "objective": {"transform": "power", "exponent": 2.0}, **spec}
    return Policy.from_mapping({"apiVersion": "ctxbudget/v1", "kind": "BudgetPolicy",
                                "metadata": {"name": "verify", "revision": "1"}, "spec": body})


def row(sid: str, rel: float, size: int = 10, level: str = "PARAGRAPH", parent: str | None = None,
        **extra: Any) -> dict[str, Any]:
    return {"source_id": sid, "content": (sid[0] * size), "relevance_score": rel, "level": level,
            "parent_id": parent, **extra}


ROWS = [row("a#1", 0.9), row("a#2", 0.8), row("b#1", 0.7, level="SECTION"), row("b#2", 0.6, level="SECTION"),
        row("c#1", 0.3, level="SENTENCE", metadata={"kind": "note"})]


@dataclass(frozen=True)
class Bad:
    """A known-bad allocation: ``make`` returns (the policy it is checked against, the
    candidates, the allocation, a policy under which the same allocation is valid or
    None); ``code``/``rule``/``items`` are the one violation expected."""

    name: str
    make: Callable[[], tuple[Policy, tuple[Candidate, ...], Allocation, Policy | None]]
    code: str
    rule: str
    items: tuple[str, ...]
    also: frozenset[str] = frozenset()  # codes that follow from the same edit


def stricter(strict: dict[str, Any], rows: list[dict[str, Any]] = ROWS, loose: dict[str, Any] | None = None,
             tokenizer: str = "approx:utf8_bytes") -> Callable[[], Any]:
    """The allocation under the loose spec, checked against ``loose`` + ``strict``."""
    def make() -> tuple[Policy, tuple[Candidate, ...], Allocation, Policy]:
        base = loose or {}
        lp = policy(tokenizer, **base)
        cands = to_candidates(rows)
        return policy(tokenizer, **{**base, **strict}), cands, allocate(cands, lp), lp
    return make


def edited(change: Callable[[Allocation], Allocation], rows: list[dict[str, Any]] = ROWS,
           **spec: Any) -> Callable[[], Any]:
    """A real allocation under ``spec``, then edited."""
    def make() -> tuple[Policy, tuple[Candidate, ...], Allocation, None]:
        pol = policy(**spec)
        cands = to_candidates(rows)
        return pol, cands, change(allocate(cands, pol)), None
    return make


def built(chosen: list[str], rows: list[dict[str, Any]] = ROWS, **spec: Any) -> Callable[[], Any]:
    """A hand-made OPTIMAL Selection of ``chosen``, assembled by allocation.build."""
    def make() -> tuple[Policy, tuple[Candidate, ...], Allocation, None]:
        pol = policy(**spec)
        cands = to_candidates(rows)
        problem = reduce(pol, cands)
        pick = frozenset(c.index for c in cands if c.source_id in chosen)
        sel = Selection(BudgetStrategy.OPTIMAL, pick, {}, "optimal", sum(problem.values[i] for i in pick))
        return pol, cands, build(problem, sel, BudgetStrategy.OPTIMAL, None), None
    return make


def _swap_first_char(a: Allocation) -> Allocation:
    return dataclasses.replace(a, context="z" + a.context[1:])


def _bump_tokens(a: Allocation) -> Allocation:
    d = a.decisions[0]
    return dataclasses.replace(a, decisions=(dataclasses.replace(d, tokens=d.tokens + 1), *a.decisions[1:]))


def _bump_value(a: Allocation) -> Allocation:
    d = a.decisions[0]
    return dataclasses.replace(a, decisions=(dataclasses.replace(d, value=d.value + 1), *a.decisions[1:]))


def _as_optimal(a: Allocation) -> Allocation:
    return dataclasses.replace(a, strategy_used=BudgetStrategy.OPTIMAL)


MIRRORS = [row("m1", 0.9, content="the quick brown fox jumps over the lazy dog"),
           row("m2", 0.8, content="The quick brown fox jumps over the lazy dog!"),
           row("m3", 0.7, content="a different text about something else entirely")]
CALLER = [{**r, "token_count": 10} for r in ROWS]  # caller counts: the recount does not bind
FAMILY = [row("p", 0.2, 30), row("k1", 0.9, parent="p"), row("k2", 0.8, parent="p"), row("k3", 0.1, parent="p")]
TREE = [row("root", 0.9), row("mid", 0.8, parent="root"), row("leaf", 0.7, parent="mid"),
        row("other", 0.6, metadata={"ancestors": ["leaf", "mid", "root"]})]
DOCS = [row("x1", 0.9, metadata={"doc_id": "D"}), row("x2", 0.8, metadata={"doc_id": "D"}),
        row("y1", 0.7, parent="top"), row("y2", 0.6, parent="y1"), row("top", 0.1, 500)]
VENDORS = [row("v1", 0.9, metadata={"vendor": 7}), row("v2", 0.8, metadata={"vendor": 7.0}),
           row("v3", 0.7, metadata={"vendor": "7"})]
BPE = [{"source_id": "bang", "content": "!", "relevance_score": 0.9},
       {"source_id": "dash", "content": "-ab", "relevance_score": 0.5}]
HALF = [row("h1", 0.9), row("h2", 0.45)]
# p (0.5² = 0.25) beats its children (0.3² + 0.2² = 0.13) but covers only 0.13.
COVER = [row("z", 1.0), row("p", 0.5, 30), row("k1", 0.3, parent="p"), row("k2", 0.2, parent="p")]
ALL = ("a#1", "a#2", "b#1", "b#2", "c#1")
PARAS, SECTIONS = ("a#1", "a#2"), ("b#1", "b#2")
LOW_SENTENCE = {"levels": {"SENTENCE": {"min_relevance": 0.5}}}  # c#1 out under the loose policy
CHAT = {"per_item_tokens": 2, "per_request_tokens": 3}  # 5 items of 10 and 4 separators: 54 + 13 with it

BAD = [
    Bad("decisions out of order", edited(lambda a: dataclasses.replace(a, decisions=a.decisions[::-1])),
        "accounting.decisions", "$", ("c#1",)),
    Bad("a decision missing", edited(lambda a: dataclasses.replace(a, decisions=a.decisions[:-1]), **LOW_SENTENCE),
        "accounting.decisions", "$", ("c#1",)),
    Bad("an item twice in the context", edited(lambda a: dataclasses.replace(
        a, context_order=a.context_order + a.context_order[:1])), "accounting.context_order", "$", ALL,
        frozenset({"context.text"})),
    Bad("a wrong item token count", edited(_bump_tokens), "accounting.tokens", "$.spec.budget", ("a#1",)),
    Bad("context text changed", edited(_swap_first_char), "context.text", "$.spec.budget.template",
        ("a#1", "a#2", "b#1", "b#2", "c#1")),
    Bad("context text without its template", edited(
        lambda a: dataclasses.replace(a, context=a.context.replace("<a#1>", "{a#1}")),
        budget={"max_tokens": 1000, "separator": "|", "template": "<{source_id}>{content}"}),
        "context.text", "$.spec.budget.template", ALL),
    Bad("context_tokens misreported", edited(lambda a: dataclasses.replace(a, context_tokens=a.context_tokens - 1)),
        "context.tokens", "$.spec.budget", ()),
    Bad("items over the budget (caller counts trusted)",
        stricter({"budget": {"max_tokens": 30, "separator": "|", "counts": "caller"}}, CALLER,
                 {"budget": {"max_tokens": 1000, "separator": "|", "counts": "caller"}}),
        "budget.over", "$.spec.budget", ALL),
    Bad("items over the budget (our counts)", stricter({"budget": {"max_tokens": 30, "separator": "|"}}),
        "budget.over", "$.spec.budget", ALL, frozenset({"budget.context_over"})),
    Bad("chat overhead misreported", edited(lambda a: dataclasses.replace(a, overhead_tokens=a.overhead_tokens - 1),
                                            budget={"max_tokens": 1000, "separator": "|", "message_overhead": CHAT}),
        "budget.overhead", "$.spec.budget.message_overhead", ()),
    Bad("items over the budget with the chat overhead",
        stricter({"budget": {"max_tokens": 60, "separator": "|", "message_overhead": CHAT}}, ROWS,
                 {"budget": {"max_tokens": 60, "separator": "|"}}),
        "budget.over", "$.spec.budget", ALL, frozenset({"budget.context_over", "budget.overhead"})),
    Bad("assembled context over the budget", stricter({"budget": {"max_tokens": 2, "separator": ""}}, BPE,
                                                      {"budget": {"max_tokens": 3, "separator": ""}}, "cl100k_base"),
        "budget.context_over", "$.spec.budget", ("bang", "dash")),
    Bad("below the global min_relevance", stricter({"min_relevance": 0.65}, ROWS, LOW_SENTENCE),
        "min_relevance.below", "$.spec.min_relevance", ("b#2",)),
    Bad("below a level's min_relevance", stricter({"levels": {"SECTION": {"min_relevance": 0.65}}}),
        "min_relevance.below", "$.spec.levels.SECTION.min_relevance", ("b#2",)),
    Bad("level max_items", stricter({"levels": {"SECTION": {"max_items": 1}}}),
        "levels.max_items", "$.spec.levels.SECTION.max_items", SECTIONS),
    Bad("level max_tokens", stricter({"levels": {"PARAGRAPH": {"max_tokens": 15}}}),
        "levels.max_tokens", "$.spec.levels.PARAGRAPH.max_tokens", PARAS),
    Bad("level min_items not met", stricter({"levels": {"SENTENCE": {"min_relevance": 0.5, "min_items": 1}}},
                                            ROWS, LOW_SENTENCE),
        "levels.min_items", "$.spec.levels.SENTENCE.min_items", ()),
    Bad("level min_tokens not met", stricter({"levels": {"SECTION": {"min_tokens": 25}}},
                                             ROWS, {"levels": {"SECTION": {"max_items": 1}}}),
        "levels.min_tokens", "$.spec.levels.SECTION.min_tokens", ("b#1",)),
    Bad("OPTIMAL leaving a minimum unmet", edited(
        _as_optimal, strategy="greedy", budget={"max_tokens": 10, "separator": "|"},
        levels={"SECTION": {"min_items": 2}}),
        "levels.min_items", "$.spec.levels.SECTION.min_items", ("b#1",)),
    Bad("a minimum reported unmet that holds", edited(
        lambda a: dataclasses.replace(a, unmet=("levels.PARAGRAPH.min_items=1 (got 0)",)),
        levels={"PARAGRAPH": {"min_items": 1}}),
        "levels.unmet_misreported", "$.spec.levels.PARAGRAPH.min_items", PARAS),
    Bad("source max_items (prefix)", stricter({"sources": {"group_by": "prefix", "max_items_per_source": 1}},
                                              ROWS[:3], LOW_SENTENCE),
        "sources.max_items", "$.spec.sources.max_items_per_source", PARAS),
    Bad("source max_tokens (prefix)", stricter({"sources": {"group_by": "prefix", "max_tokens_per_source": 15}},
                                               ROWS[:3], LOW_SENTENCE),
        "sources.max_tokens", "$.spec.sources.max_tokens_per_source", PARAS),
    Bad("source max_items (metadata, 7 == 7.0)",
        stricter({"sources": {"group_by": "metadata", "field": "vendor", "max_items_per_source": 1}}, VENDORS),
        "sources.max_items", "$.spec.sources.max_items_per_source", ("v1", "v2")),
    Bad("source max_items (document: doc_id)",
        stricter({"sources": {"group_by": "document", "max_items_per_source": 1}}, DOCS[:3]),
        "sources.max_items", "$.spec.sources.max_items_per_source", ("x1", "x2")),
    Bad("source max_tokens (document: root by parent_id)",
        built(["y1", "y2"], DOCS, hierarchy={"exclusive": False},
              sources={"group_by": "document", "max_tokens_per_source": 15}),
        "sources.max_tokens", "$.spec.sources.max_tokens_per_source", ("y1", "y2")),
    Bad("pin by id missing", stricter({"pinned": [{"id": "c#1"}]}, ROWS, LOW_SENTENCE),
        "pinned.missing", "$.spec.pinned[0]", ("c#1",)),
    Bad("pin by glob missing", stricter({"pinned": [{"id": "a#1"}, {"glob": "c#*"}]}, ROWS, LOW_SENTENCE),
        "pinned.missing", "$.spec.pinned[1]", ("c#1",)),
    Bad("pin by metadata missing", stricter({"pinned": [{"metadata": {"kind": "note"}}]}, ROWS, LOW_SENTENCE),
        "pinned.missing", "$.spec.pinned[0]", ("c#1",)),
    Bad("a required pin matching nothing", stricter({"pinned": [{"id": "a#1"}, {"glob": "zz*"}]}),
        "pinned.unmatched", "$.spec.pinned[1]", ()),
    Bad("an optional pin matching nothing, not recorded",
        stricter({"pinned": [{"id": "zz", "required": False}]}),
        "pinned.unrecorded", "$.spec.pinned[0]", ()),
    Bad("a pin recorded missing that matched", edited(
        lambda a: dataclasses.replace(a, missing_pins=(MissingPin("$.spec.pinned[0]", "id 'a#1'", None),)),
        pinned=[{"id": "a#1", "required": False}]),
        "pinned.misrecorded", "$.spec.pinned[0]", ()),
    Bad("blocked by id included", stricter({"blocked": [{"id": "b#1"}]}),
        "blocked.included", "$.spec.blocked[0]", ("b#1",)),
    Bad("blocked by glob included", stricter({"blocked": [{"id": "zzz"}, {"glob": "b#[2]"}]}),
        "blocked.included", "$.spec.blocked[1]", ("b#2",)),
    Bad("blocked by metadata included", stricter({"blocked": [{"metadata": {"kind": "note"}}]}),
        "blocked.included", "$.spec.blocked[0]", ("c#1",)),
    Bad("parent with its child", stricter({"hierarchy": {"exclusive": True}}, FAMILY[:2],
                                          {"hierarchy": {"exclusive": False}}),
        "hierarchy.exclusive", "$.spec.hierarchy.exclusive", ("p", "k1")),
    Bad("grandparent with its grandchild", built(["root", "leaf"], TREE),
        "hierarchy.exclusive", "$.spec.hierarchy.exclusive", ("root", "leaf")),
    Bad("an ancestor listed in metadata.ancestors", built(["mid", "other"], TREE),
        "hierarchy.exclusive", "$.spec.hierarchy.exclusive", ("mid", "other")),
    Bad("a wrong item value", edited(_bump_value), "objective.value", "$.spec.objective", ("a#1",),
        frozenset({"objective.total"})),
    Bad("values of another transform", stricter({"objective": {"transform": "power", "exponent": 2.0}}, HALF,
                                                {"objective": {"transform": "identity"}}),
        "objective.value", "$.spec.objective", ("h2",)),
    Bad("values without coverage", stricter({"objective": {"coverage": True}}, COVER),
        "objective.value", "$.spec.objective", ("p",)),
    Bad("the selection's objective misreported", edited(lambda a: dataclasses.replace(
        a, selection=dataclasses.replace(a.selection, objective=a.selection.objective + 1))),
        "objective.total", "$.spec.objective", ALL),
    Bad("most children instead of the parent",
        stricter({"hierarchy": {"exclusive": True, "prefer_parent_ratio": 0.5}}, FAMILY),
        "hierarchy.prefer_parent", "$.spec.hierarchy.prefer_parent_ratio", ("p", "k1", "k2", "k3")),
    Bad("two near-duplicates included", stricter({"duplicates": {"threshold": 0.8}}, MIRRORS),
        "duplicates.near_duplicate", "$.spec.duplicates", ("m1", "m2")),
]


def codes(vs: tuple[Violation, ...]) -> set[str]:
    return {v.code for v in vs}


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.name)
def test_known_bad_allocation_is_caught(case: Bad) -> None:
    pol, cands, alloc, valid_under = case.make()
    if valid_under is not None:
        assert verify(valid_under, cands, alloc) == ()
    found = verify(pol, cands, alloc)
    assert codes(found) == {case.code} | case.also, found
    assert [(v.rule, v.items) for v in found if v.code == case.code] == [(case.rule, case.items)]
    assert all(isinstance(v.message, str) and v.message for v in found)


def test_every_violation_code_has_a_known_bad_case() -> None:
    """A code the verifier can emit but no case provokes is a check nobody has seen fail."""
    source = Path(engine.verify.__file__).read_text(encoding="utf-8")
    emitted = set(re.findall(r'Violation\(f?"([a-z_.{}]+)"', source))
    level_codes = {f"levels.{f}" for f in ("min_items", "max_items", "min_tokens", "max_tokens")}
    emitted = (emitted - {"levels.{field}"}) | level_codes
    assert emitted == {case.code for case in BAD}


def test_violation_is_structured_and_renders_one_line() -> None:
    pol, cands, alloc, _ = next(c for c in BAD if c.name == "blocked by id included").make()
    (v,) = verify(pol, cands, alloc)
    assert v == Violation("blocked.included", "$.spec.blocked[0]", ("b#1",), "blocked 'b#1' is included")
    assert str(v) == "blocked.included at $.spec.blocked[0]: blocked 'b#1' is included"
    assert v.to_dict() == {"code": "blocked.included", "rule": "$.spec.blocked[0]", "items": ["b#1"],
                           "message": "blocked 'b#1' is included"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.code = "x"  # type: ignore[misc]


def test_each_checker_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process mutation check: with any one checker a no-op, some known-bad case
    goes undetected — so no checker is dead weight and the cases reach every one."""
    made = [(case, case.make()) for case in BAD]
    for name in list(CHECKERS):
        with monkeypatch.context() as m:
            m.setitem(CHECKERS, name, lambda view: [])
            missed = [case.name for case, (pol, cands, alloc, _) in made
                      if case.code not in codes(verify(pol, cands, alloc))]
        assert missed, f"no known-bad case needs the {name!r} checker"
    # and with every checker in place, every case is caught
    assert all(case.code in codes(verify(pol, cands, alloc)) for case, (pol, cands, alloc, _) in made)


def test_a_reported_unmet_minimum_is_fine_for_the_greedy_family() -> None:
    pol = policy(strategy="greedy", budget={"max_tokens": 10, "separator": "|"}, levels={"SECTION": {"min_items": 2}})
    cands = to_candidates(ROWS)
    alloc = allocate(cands, pol)
    assert alloc.unmet == ("levels.SECTION.min_items=2 (got 1)",)
    assert verify(pol, cands, alloc) == ()


def test_an_optional_pin_recorded_missing_is_valid() -> None:
    pol = policy(pinned=[{"id": "zz", "required": False}])
    cands = to_candidates(ROWS)
    alloc = allocate(cands, pol)
    assert [m.path for m in alloc.missing_pins] == ["$.spec.pinned[0]"]
    assert verify(pol, cands, alloc) == ()


def test_trusted_caller_counts_hold_the_budget_on_the_callers_numbers() -> None:
    """counts: caller — the caller's counts bind (and are recorded as trusted); the
    recount may exceed the limit. Under the default (max) the recount binds too."""
    rows = [{**r, "token_count": 2} for r in ROWS]  # each item is really 10 bytes
    pol = policy(budget={"max_tokens": 14, "separator": "|", "counts": "caller"})
    cands = to_candidates(rows)
    alloc = allocate(cands, pol)
    assert len(alloc.included) == 5 and alloc.context_tokens == 54 > 14
    assert verify(pol, cands, alloc) == ()
    strict = policy(budget={"max_tokens": 14, "separator": "|"})
    assert codes(verify(strict, cands, alloc)) == {"accounting.tokens", "budget.over", "budget.context_over"}


def test_pinned_items_are_exempt_from_min_relevance() -> None:
    pol = policy(min_relevance=0.5, pinned=[{"id": "c#1"}])
    cands = to_candidates(ROWS)
    alloc = allocate(cands, pol)
    assert "c#1" in {d.source_id for d in alloc.included}
    assert verify(pol, cands, alloc) == ()


def test_selection_checks_minimums_as_hard() -> None:
    pol = policy(levels={"SENTENCE": {"min_items": 1}})
    check = Verifier(pol, to_candidates(ROWS))
    assert [(v.code, v.rule) for v in check.selection(["a#1"])] == [
        ("levels.min_items", "$.spec.levels.SENTENCE.min_items")]
    assert check.selection(["a#1", "c#1"]) == ()
    with pytest.raises(ValueError, match="not candidates"):
        check.selection(["nope"])


def test_tokenizer_can_be_passed_already_resolved() -> None:
    pol = policy()
    cands = to_candidates(ROWS)
    alloc = allocate(cands, pol)
    assert verify(pol, cands, alloc, tokenizer=get_tokenizer("approx:utf8_bytes")) == ()
    # a counter that disagrees with the policy's is noticed: every count differs
    found = verify(pol, cands, alloc, tokenizer=get_tokenizer("cl100k_base"))
    assert {"accounting.tokens", "context.tokens"} <= codes(found)


def test_allocate_raises_with_the_violations_in_its_details(monkeypatch: pytest.MonkeyPatch) -> None:
    """The façade turns violations into VerificationError (exit 1: our bug) carrying them."""
    facade = sys.modules["engine.allocate"]  # the module (engine.allocate is the function)
    real = facade.build

    def leaky(problem: Any, sel: Selection, *args: Any) -> Allocation:
        # a consistent allocation of everything, as if reduce had forgotten the block
        everyone = frozenset(range(len(problem.candidates)))
        loose = reduce(policy(), problem.candidates)
        return real(loose, dataclasses.replace(sel, chosen=everyone, objective=sum(loose.values)), *args)

    monkeypatch.setattr(facade, "build", leaky)
    pol = policy(blocked=[{"id": "b#1"}])
    with pytest.raises(VerificationError) as err:
        allocate(ROWS, pol)
    e = err.value
    assert e.code == "allocation.verification_failed"
    assert e.path == "$.spec.blocked[0]"
    assert e.details["violations"] == [{"code": "blocked.included", "rule": "$.spec.blocked[0]", "items": ["b#1"],
                                        "message": "blocked 'b#1' is included"}]
    assert e.message == ("the allocation broke a rule (this is a ctxbudget bug, please report it): "
                         "blocked.included at $.spec.blocked[0]: blocked 'b#1' is included")


def test_repair_drops_an_item_when_bpe_merges_push_the_context_over() -> None:
    """'!' and '-ab' are one token each, but '!-ab' is three: the model (1 + 1 <= 2)
    takes both, the assembled text is over, and the repair must drop one. With the
    repair loop disabled the context would be 3 tokens over a budget of 2."""
    tok = get_tokenizer("cl100k_base")
    assert (tok.count("!"), tok.count("-ab"), tok.count("!-ab")) == (1, 1, 3)
    pol = policy("cl100k_base", budget={"max_tokens": 2, "separator": ""})
    for strategy in BudgetStrategy:
        alloc = allocate(BPE, pol, strategy=strategy)
        assert alloc.context == "!" and alloc.context_tokens == 1 <= pol.budget.limit_tokens
        assert alloc.repairs == ({"dropped": "dash", "tokens_before": 3, "tokens_after": 1},)
        assert alloc.decisions[1].reason.code is ReasonCode.REPAIR
        assert verify(pol, to_candidates(BPE), alloc) == ()
