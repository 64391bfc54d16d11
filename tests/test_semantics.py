"""The engine and the verifier read templates, metadata pins, globs, metadata groups and
prefer-parent ratios the same way: every row of ``tests/semantics_cases.py`` goes
through the engine (render / Matcher / reduce / a full allocate) and through the
verifier's own code, and both must give the row's answer."""

from __future__ import annotations

from typing import Any

import pytest
from semantics_cases import (BAD_TEMPLATES, GLOBS, GROUPS, MISSING, PINS, PREFER_PARENT, TEMPLATES, BadTemplate,
                             GlobCase, GroupCase, PinCase, PreferParentCase, TemplateCase)

from engine import allocate
from engine.allocate import to_candidates
from engine.candidates import make_candidate
from engine.errors import PolicyError
from engine.policy import Budget, Matcher, Policy
from engine.problem import RuleKind, reduce
from engine.problem import render as engine_render
from engine.verify import Verifier, verify
from engine.verify_semantics import parse_template, same_value, selects, value_key
from engine.verify_semantics import render as verifier_render

SEP = "\n--\n"


def policy(**spec: Any) -> Policy:
    body = {"budget": {"max_tokens": 1000, "separator": SEP}, "tokenizer": "approx:utf8_bytes", **spec}
    return Policy.from_mapping({"apiVersion": "ctxbudget/v1", "kind": "BudgetPolicy",
                                "metadata": {"name": "semantics", "revision": "1"}, "spec": body})


def row(sid: str, rel: float, content: str = "xxxxxxxxxx", **extra: Any) -> dict[str, Any]:
    return {"source_id": sid, "content": content, "relevance_score": rel, **extra}


# --------------------------------------------------------------------------- templates


@pytest.mark.parametrize("case", TEMPLATES, ids=lambda c: c.name)
def test_template_renders_the_same_on_both_sides(case: TemplateCase) -> None:
    cand = make_candidate(0, source_id=case.source_id, content=case.content, relevance_score=0.9, level=case.level)
    assert engine_render(case.template, cand) == case.rendered
    assert Budget(template=case.template).render_item(source_id=case.source_id, content=case.content,
                                                      level=case.level) == case.rendered
    assert verifier_render(case.template, source_id=case.source_id, content=case.content,
                           level=case.level) == case.rendered
    # The whole way: the assembled context holds the rendered text, and the verifier
    # (which re-renders every included item and recounts) finds nothing wrong.
    pol = policy(budget={"max_tokens": 1000, "separator": SEP, "template": case.template},
                 custom_levels=[case.level] if case.level == "CHUNK" else [])
    other = row("zz-other", 0.1, "tail", level="PARAGRAPH")
    cands = to_candidates([row(case.source_id, 0.9, case.content, level=case.level), other])
    alloc = allocate(cands, pol)
    tail = verifier_render(case.template, source_id="zz-other", content="tail", level="PARAGRAPH")
    assert alloc.context == case.rendered + SEP + tail
    assert alloc.decisions[0].tokens == len(case.rendered.encode("utf-8"))
    assert verify(pol, cands, alloc) == ()


@pytest.mark.parametrize("case", BAD_TEMPLATES, ids=lambda c: c.template)
def test_bad_template_is_rejected_by_the_policy_and_the_verifier(case: BadTemplate) -> None:
    with pytest.raises(PolicyError) as err:
        Policy.default(100, template=case.template)
    assert case.code in [issue.code for issue in err.value.issues]
    assert all(issue.path == "$.spec.budget.template" for issue in err.value.issues)
    if case.renders:
        parse_template(case.template)
    else:
        with pytest.raises(ValueError, match="template"):
            parse_template(case.template)


def test_regression_literal_brace_template_is_not_rejected_by_the_verifier() -> None:
    """Issue 10: a template with a literal ``{{`` made a valid allocation fail
    verification (the verifier read it with str.replace and counted the overhead of
    ``{{note}}`` instead of ``{note}``). The budget here is exactly what the items use."""
    template = "{{{{note}}}} {{{{{{{{ {content}"
    overhead = len("{{note}} {{{{ ".encode())
    pol = policy(budget={"max_tokens": 2 * (5 + overhead), "separator": "", "template": template})
    cands = to_candidates([row("a", 0.9, "aaaaa", token_count=5), row("b", 0.8, "bbbbb", token_count=5)])
    alloc = allocate(cands, pol)
    assert [d.source_id for d in alloc.included] == ["a", "b"]
    assert alloc.context == "{{note}} {{{{ aaaaa{{note}} {{{{ bbbbb"
    assert verify(pol, cands, alloc) == ()


# --------------------------------------------------------------------------- pins


@pytest.mark.parametrize("case", PINS, ids=lambda c: c.name)
def test_metadata_pin_matches_the_same_on_both_sides(case: PinCase) -> None:
    pol = policy(pinned=[{"metadata": case.pin}])
    m = pol.pinned[0]
    assert m.matches("t", case.metadata) is case.match
    assert selects(m, "t", case.metadata) is case.match
    # The whole way: budget for two of three items; an anchor that always matches the
    # pin goes in, then the target when the pin selects it, else the more relevant filler.
    pol = policy(budget={"max_tokens": 20, "separator": ""}, pinned=[{"metadata": case.pin}])
    cands = to_candidates([row("anchor", 0.5, metadata=dict(case.pin)), row("target", 0.1, metadata=case.metadata),
                           row("filler", 0.9)])
    alloc = allocate(cands, pol)
    assert {d.source_id for d in alloc.included} == {"anchor", "target" if case.match else "filler"}
    assert verify(pol, cands, alloc) == ()
    # And as a block: the target is left out exactly when the entry selects it.
    pol = policy(blocked=[{"metadata": case.pin}])
    cands = to_candidates([row("target", 0.9, metadata=case.metadata), row("filler", 0.1)])
    alloc = allocate(cands, pol)
    assert ("target" in {d.source_id for d in alloc.included}) is not case.match
    assert verify(pol, cands, alloc) == ()


def test_regression_int_pin_selects_a_float_value_for_the_verifier_too() -> None:
    """Issue 10: a metadata pin ``{rank: 1}`` on a candidate with ``rank: 1.0`` made a
    valid allocation fail verification: the engine pinned it (1 == 1.0) and the verifier,
    demanding the same type, held the pinned item to min_relevance."""
    pol = policy(min_relevance=0.5, pinned=[{"metadata": {"rank": 1}}])
    cands = to_candidates([row("pinned", 0.1, metadata={"rank": 1.0}), row("other", 0.9)])
    alloc = allocate(cands, pol)
    assert [d.reason.code.value for d in alloc.decisions] == ["pinned", "selected"]
    assert verify(pol, cands, alloc) == ()


@pytest.mark.parametrize("case", GLOBS, ids=lambda c: f"{c.glob}~{c.source_id}")
def test_glob_matches_the_same_on_both_sides(case: GlobCase) -> None:
    pol = policy(blocked=[{"glob": case.glob}])
    m = pol.blocked[0]
    assert m.matches(case.source_id, {}) is case.match
    assert selects(m, case.source_id, {}) is case.match
    cands = to_candidates([row(case.source_id, 0.9), row("~other", 0.1)])
    alloc = allocate(cands, pol)
    assert (case.source_id in {d.source_id for d in alloc.included}) is not case.match
    assert verify(pol, cands, alloc) == ()


# --------------------------------------------------------------------------- groups


@pytest.mark.parametrize("case", GROUPS, ids=lambda c: c.name)
def test_metadata_groups_are_the_same_on_both_sides(case: GroupCase) -> None:
    def meta(v: Any) -> dict[str, Any]:
        return {} if v is MISSING else {"vendor": v}

    pol = policy(sources={"group_by": "metadata", "field": "vendor", "max_items_per_source": 1})
    cands = to_candidates([row("a", 0.9, metadata=meta(case.a)), row("b", 0.8, metadata=meta(case.b))])
    problem = reduce(pol, cands)
    assert (problem.group_of[0] == problem.group_of[1]) is case.same
    a = None if case.a is MISSING else case.a
    b = None if case.b is MISSING else case.b
    assert (value_key(a) == value_key(b)) is case.same
    assert same_value(a, b) is case.same
    if MISSING not in (case.a, case.b):
        # The same equality in a matcher built through the API (a policy file's pins
        # hold scalars only; Python callers can pass any JSON value).
        m = Matcher("metadata", None, None, (("vendor", a),), None, "$.spec.pinned[0]")
        assert m.matches("a", {"vendor": b}) is case.same
        assert selects(m, "a", {"vendor": b}) is case.same
    codes = {v.code for v in Verifier(pol, cands).selection({"a", "b"})}
    assert codes == ({"sources.max_items"} if case.same else set())
    alloc = allocate(cands, pol)
    assert len(alloc.included) == (1 if case.same else 2)
    assert verify(pol, cands, alloc) == ()


# --------------------------------------------------------------------------- prefer parent


@pytest.mark.parametrize("case", PREFER_PARENT, ids=lambda c: f"{c.ratio}x{c.children}")
def test_prefer_parent_allows_the_same_number_of_children(case: PreferParentCase) -> None:
    # A written objective without coverage: with the default's coverage the parent is worth
    # its children's sum and is taken instead, which is not what this case is about.
    pol = policy(budget={"max_tokens": 10_000, "separator": ""}, objective={"transform": "power", "exponent": 2.0},
                 hierarchy={"exclusive": True, "prefer_parent_ratio": case.ratio})
    kids = [row(f"k{j:02d}", 0.9, parent_id="p") for j in range(case.children)]
    cands = to_candidates([row("p", 0.01), *kids])
    rule = next(r for r in reduce(pol, cands).constraints if r.kind is RuleKind.PREFER_PARENT)
    assert rule.upper == case.allowed
    check = Verifier(pol, cands)
    ids = [k["source_id"] for k in kids]
    assert check.selection(ids[:case.allowed]) == ()
    assert [v.code for v in check.selection(ids[:case.allowed + 1])] == ["hierarchy.prefer_parent"]
    alloc = allocate(cands, pol)
    assert len([d for d in alloc.included if d.source_id != "p"]) == case.allowed
    assert verify(pol, cands, alloc) == ()
