"""Problem → CompiledModel: one CP-SAT model, every rule a named constraint family.

What goes in: a :class:`~engine.problem.Problem`. What comes out: a
:class:`CompiledModel` with the ``CpModel``, the ``take[...]`` variable of each active
item, and — when ``guarded`` — one enforcement literal per rule so that an infeasible
model can name the rules that conflict (see :mod:`engine.explain`).

Rules are compiled by a registry keyed by :class:`~engine.problem.RuleKind` (one
``_add_<rule>`` per kind); a test checks that the registry covers every kind and that the
verifier's registry covers every rule of the policy schema. The model is built in input
order of items and Problem order of rules (both stable), never dict order.

Objective (maximised): ``sum(take_i * (value_i * T - weight_i))`` with ``T = capacity + 1``.
Total weight never exceeds the capacity, so the token term can never outweigh one unit
of value: the primary goal is exactly "most relevance"; among equally relevant sets it
prefers the one with fewer tokens, which makes ties rare and the answer deterministic.
When ``value * T`` could overflow CP-SAT's 64-bit range the token tie-break is dropped
(``tie_break=False``, recorded in the trace).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import SolverError
from .problem import Chain, LinearRule, PinRule, Problem, RuleKind

if TYPE_CHECKING:
    from ortools.sat.python import cp_model


def load_cp_model() -> ModuleType:
    """OR-Tools' CP-SAT module (``ortools.sat.python.cp_model``), imported at the first
    solve that needs it: a budget-only problem proven by the dynamic programs (minknap,
    the tree DP) never loads OR-Tools (or the pandas it imports). OR-Tools is a required
    dependency: a missing or broken install is a :class:`~engine.errors.SolverError`
    (``solver.ortools_unavailable``) at that first use, never a silent fallback."""
    try:
        from ortools.sat.python import cp_model as module
    except Exception as exc:  # ImportError, or whatever a broken native install raises
        raise SolverError(
            "solver.ortools_unavailable",
            f"OR-Tools' CP-SAT could not be imported ({type(exc).__name__}: {exc}); it is a required "
            "dependency of ctxbudget: reinstall it with `pip install 'ortools>=9.10'`",
            path="$.spec.strategy") from exc
    return module


#: Largest objective magnitude we let CP-SAT see (it works in int64; keep headroom).
OBJECTIVE_LIMIT = 2**60


@dataclass(slots=True)
class CompiledModel:
    """The CP-SAT model and its index. Mutable only while being built."""

    model: cp_model.CpModel
    take: dict[int, cp_model.IntVar]
    guards: dict[str, cp_model.IntVar] = field(default_factory=dict)
    guard_rules: dict[str, LinearRule | PinRule | Chain] = field(default_factory=dict)
    tie_break: bool = True
    multiplier: int = 1

def _guard(cm: CompiledModel, key: str, rule: Any, guarded: bool) -> Any:
    if not guarded:
        return None
    lit = cm.model.new_bool_var(f"rule[{key}]")
    cm.guards[key] = lit
    cm.guard_rules[key] = rule
    return lit


def _linear(cm: CompiledModel, rule: LinearRule, guarded: bool) -> None:
    xs = [cm.take[m] for m in rule.members]
    coefs = rule.coefs if rule.coefs is not None else [1] * len(xs)
    expr = load_cp_model().LinearExpr.weighted_sum(xs, coefs)
    lit = _guard(cm, rule.key, rule, guarded)
    bounds = []
    if rule.lower is not None:
        bounds.append(expr >= rule.lower)
    if rule.upper is not None:
        bounds.append(expr <= rule.upper)
    for bound in bounds:
        c = cm.model.add(bound)
        c.with_name(rule.key)
        if lit is not None:
            c.only_enforce_if(lit)


# Budget: rendered tokens plus separators of the chosen items stay within the capacity.
# Level and source quotas: item counts or token sums of the members within their bounds.
# Prefer-parent: fewer than the ratio of a parent's children may be taken.
_RULE_COMPILERS: dict[RuleKind, Callable[[CompiledModel, Any, bool], None]] = {
    RuleKind.BUDGET: _linear,
    RuleKind.LEVEL_MIN_ITEMS: _linear,
    RuleKind.LEVEL_MAX_ITEMS: _linear,
    RuleKind.LEVEL_MIN_TOKENS: _linear,
    RuleKind.LEVEL_MAX_TOKENS: _linear,
    RuleKind.SOURCE_MAX_ITEMS: _linear,
    RuleKind.SOURCE_MAX_TOKENS: _linear,
    RuleKind.PREFER_PARENT: _linear,
}


def _add_pin(cm: CompiledModel, pin: PinRule, guarded: bool) -> None:
    # Pinned: the item is taken.
    lit = _guard(cm, pin.key, pin, guarded)
    c = cm.model.add(cm.take[pin.index] == 1)
    c.with_name(pin.key)
    if lit is not None:
        c.only_enforce_if(lit)


def _add_chain(cm: CompiledModel, chain: Chain, guarded: bool) -> None:
    # Hierarchy: at most one node of each ancestor-to-descendant path.
    # Near-duplicates: at most one of each group of mutually near-duplicate texts.
    xs = [cm.take[m] for m in chain.members]
    lit = _guard(cm, chain.key, chain, guarded)
    if lit is None:
        cm.model.add_at_most_one(xs).with_name(chain.key)
    else:
        cm.model.add(sum(xs) <= 1).only_enforce_if(lit).with_name(chain.key)


RULE_COMPILERS: dict[RuleKind, Callable[[CompiledModel, Any, bool], None]] = {
    **_RULE_COMPILERS,
    RuleKind.PINNED: _add_pin,
    RuleKind.HIERARCHY: _add_chain,
    RuleKind.NEAR_DUPLICATE: _add_chain,
}


def fingerprint(problem: Problem) -> str:
    """SHA-256 of everything the model is built from (weights, values, every rule's
    members, coefficients and bounds, pins, chains): equal fingerprints mean equal models.
    Hashing the Problem rather than the proto keeps it cheap and independent of the
    OR-Tools build (its C++ proto wrapper exposes no deterministic serialisation)."""
    h = hashlib.sha256()
    h.update(repr((problem.active, problem.weights, problem.values, problem.capacity)).encode())
    for r in problem.linear_rules:
        h.update(repr((r.key, r.members, r.coefs, r.lower, r.upper)).encode())
    h.update(repr([(p.key, p.index) for p in problem.pins]).encode())
    h.update(repr([(c.key, c.members) for c in problem.chains]).encode())
    return "sha256:" + h.hexdigest()


def compile_problem(problem: Problem, *, guarded: bool = False, objective: bool = True,
                    only: frozenset[int] | None = None) -> CompiledModel:
    """Build the CP-SAT model of ``problem`` (see module docstring). ``only``: the model of
    the neighbourhood where every active item outside ``only`` is left out (not taken):
    each rule over its members in ``only``, the same objective multiplier; it must hold
    every pin."""
    model = load_cp_model().CpModel()
    cands = problem.candidates
    active = problem.active if only is None else tuple(i for i in problem.active if i in only)
    take = {i: model.new_bool_var(f"take[{cands[i].source_id}]") for i in active}
    cm = CompiledModel(model, take)
    for rule in problem.linear_rules:
        if only is not None:
            rule = _restricted(rule, take)
        RULE_COMPILERS[rule.kind](cm, rule, guarded)
    for pin in problem.pins:
        RULE_COMPILERS[RuleKind.PINNED](cm, pin, guarded)
    for chain in problem.chains:
        if only is not None:
            members = tuple(m for m in chain.members if m in take)
            if len(members) < 2:
                continue  # at most one of one item (or none) holds whatever is chosen
            chain = replace(chain, members=members)
        RULE_COMPILERS[chain.kind](cm, chain, guarded)
    if objective:
        _objective(cm, problem, active)
    return cm


def _restricted(rule: LinearRule, take: dict[int, Any]) -> LinearRule:
    """``rule`` over its members that have a variable (the others are not taken: 0)."""
    if all(m in take for m in rule.members):
        return rule
    if rule.coefs is None:
        return replace(rule, members=tuple(m for m in rule.members if m in take))
    kept = [(m, a) for m, a in zip(rule.members, rule.coefs) if m in take]
    return replace(rule, members=tuple(m for m, _ in kept), coefs=tuple(a for _, a in kept))


def objective_multiplier(problem: Problem) -> int:
    """``T`` of the objective ``value * T - weight``: ``capacity + 1``, or 1 (no token
    tie-break) when ``value * T`` could leave CP-SAT's 64-bit range. Every exact solver
    uses this one definition, so they all prove the same optimum."""
    t = problem.capacity + 1
    total_value = sum(problem.values[i] for i in problem.active)
    return t if total_value * t + problem.capacity < OBJECTIVE_LIMIT else 1


def _objective(cm: CompiledModel, problem: Problem, active: tuple[int, ...] | None = None) -> None:
    v, w = problem.values, problem.weights
    active = problem.active if active is None else active
    cm.multiplier = objective_multiplier(problem)
    cm.tie_break = cm.multiplier > 1
    t = cm.multiplier
    if cm.tie_break:
        coefs = [v[i] * t - w[i] for i in active]
    else:
        coefs = [v[i] for i in active]
    cm.model.maximize(load_cp_model().LinearExpr.weighted_sum([cm.take[i] for i in active], coefs))
