"""OPTIMAL against brute force on small instances (n <= 12) of every rule kind.

Shared by ``tests/test_bruteforce.py`` (a few instances per kind in the suite) and
``bench/bruteforce_report.py`` (many). For one instance:

* the oracle enumerates every subset of the candidates and keeps those that the
  verifier (``engine.verify.Verifier.selection``: independent of reduce, compile and the
  strategies, every minimum hard) finds no violation in;
* OPTIMAL (``allocate`` with the policy's strategy ``optimal``) must raise
  ``InfeasibleError`` exactly when no subset is feasible, and otherwise run as OPTIMAL
  (no fallback) and reach the oracle's maximum of the Problem's scaled values — and,
  measured without the Problem at all, the maximum of the objective's own weights
  (identity: relevance; power: relevance ** exponent) up to the rounding of the scaled
  values.

Counts are UTF-8 bytes (``approx:utf8_bytes``): additive, so the budget is exactly the
sum of items and separators and no repair can move the answer. A quarter of the
instances carry caller ``token_count``s (over and under ours) under ``budget.counts``
``max`` or ``caller``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import InfeasibleError, allocate
from engine.allocate import to_candidates
from engine.candidates import Candidate
from engine.errors import PolicyError, VerificationError
from engine.policy import BudgetStrategy, Policy
from engine.problem import RELEVANCE_SCALE, Problem, reduce
from engine.verify import Verifier

LEVELS = ("SECTION", "PARAGRAPH", "SENTENCE")
MAX_N = 12


@dataclass(frozen=True)
class Outcome:
    kind: str
    seed: int
    n: int
    feasible: bool
    ok: bool
    detail: str = ""


def _rows(rng: random.Random, n: int, tree: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for k in range(n):
        sid = f"{'abc'[k % 3]}#{k}"
        meta: dict[str, Any] = {"kind": rng.choice("abc"), "rank": rng.choice([1, 1.0, 2, True]),
                                "vendor": rng.choice([7, 7.0, "7", True, None, "acme", "acme"])}
        if rng.random() < 0.2:
            del meta["vendor"]
        if rng.random() < 0.3:
            meta["doc_id"] = rng.choice(["D1", "D2"])
        parent = None
        if tree and k and rng.random() < 0.7:
            parent = rng.choice([r["source_id"] for r in rows] + ["outside"])
        rows.append({"source_id": sid, "content": "x" * rng.randint(1, 30),
                     "relevance_score": rng.choice([round(rng.random(), 3), round(rng.random(), 3), 0.5, 0.0, -0.1]),
                     "level": rng.choice(LEVELS), "parent_id": parent, "metadata": meta})
    if tree and rows and rng.random() < 0.3:
        # an index-supplied ancestors list (nearest first) instead of the parent links
        r = rng.choice(rows)
        r["metadata"]["ancestors"] = [x["source_id"] for x in rows[:rows.index(r)]][::-1][:2]
    return rows


def _matcher(rng: random.Random, rows: list[dict[str, Any]]) -> dict[str, Any]:
    pick = rng.random()
    if pick < 0.4:
        return {"id": rng.choice(rows)["source_id"]}
    if pick < 0.7:
        return {"glob": rng.choice(["a#*", "b#*", "?#1*", "*[02468]"])}
    return {"metadata": rng.choice([{"kind": "a"}, {"rank": 1}, {"rank": True}, {"kind": "b", "rank": 2}])}


def _levels(rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in rng.sample(LEVELS, rng.randint(1, 2)):
        rule: dict[str, Any] = {}
        if rng.random() < 0.5:
            rule["min_items"] = rng.randint(1, 3)
        if rng.random() < 0.5:
            rule["max_items"] = rng.randint(rule.get("min_items", 1), 4)
        if rng.random() < 0.3:
            rule["min_tokens"] = rng.randint(1, 40)
        if rng.random() < 0.4:
            rule["max_tokens"] = rng.randint(rule.get("min_tokens", 10), 90)
        out[name] = rule or {"max_items": 2}
    return out


def _sources(rng: random.Random, group_by: str) -> dict[str, Any]:
    out: dict[str, Any] = {"group_by": group_by}
    if group_by == "metadata":
        out["field"] = "vendor"
    if rng.random() < 0.7:
        out["max_items_per_source"] = rng.randint(1, 3)
    if "max_items_per_source" not in out or rng.random() < 0.5:
        out["max_tokens_per_source"] = rng.randint(10, 60)
    return out


def _spec(kind: str, rng: random.Random, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rules of ``kind``; ``mixed`` draws three of the kinds at once."""
    parts = {kind}
    if kind == "mixed":
        caps = rng.choice(["caps_prefix", "caps_metadata", "caps_document"])
        parts = set(rng.sample(["min_relevance", "quotas", caps, "pins", "blocks", "chains", "prefer_parent"], 3))
    if parts & {"prefer_parent"}:
        parts.add("chains")
    spec: dict[str, Any] = {"hierarchy": {"exclusive": "chains" in parts}}
    if "min_relevance" in parts:
        spec["min_relevance"] = rng.choice([0.1, 0.3, 0.5])
        if rng.random() < 0.5:
            spec["levels"] = {rng.choice(LEVELS): {"min_relevance": rng.choice([0.0, 0.4, 0.7])}}
    if "quotas" in parts:
        spec["levels"] = {**spec.get("levels", {}), **_levels(rng)}
    caps = sorted(p for p in parts if p.startswith("caps_"))
    if caps:
        spec["sources"] = _sources(rng, rng.choice(caps)[5:])
    if "pins" in parts:
        spec["pinned"] = [{**_matcher(rng, rows), **({"required": False} if rng.random() < 0.3 else {})}
                          for _ in range(rng.randint(1, 2))]
    if "blocks" in parts:
        spec["blocked"] = [_matcher(rng, rows) for _ in range(rng.randint(1, 2))]
    if "prefer_parent" in parts:
        spec["hierarchy"]["prefer_parent_ratio"] = rng.choice([0.3, 0.5, 0.67, 1.0])
    return spec


KINDS: tuple[str, ...] = ("budget", "min_relevance", "quotas", "caps_prefix", "caps_metadata", "caps_document",
                          "pins", "blocks", "chains", "prefer_parent", "mixed")


def instance(kind: str, seed: int) -> tuple[Policy, tuple[Candidate, ...]]:
    """A random valid instance of ``kind`` (a policy the semantic checks reject is
    redrawn with the next sub-seed)."""
    for attempt in range(100):
        rng = random.Random(f"{kind}/{seed}/{attempt}")
        n = rng.choice([rng.randint(1, 6), rng.randint(7, MAX_N), rng.randint(10, MAX_N)])
        rows = _rows(rng, n, tree=kind in ("chains", "prefer_parent", "caps_document", "mixed"))
        template = rng.choice(["{content}", "[{source_id}] {content}"])
        counts = "max"
        if rng.random() < 0.25:  # callers that count for themselves, over or under ours
            counts = rng.choice(["max", "caller"])
            for r in rows:
                if rng.random() < 0.7:
                    r["token_count"] = max(0, len(r["content"]) + rng.randint(-8, 8))
        width = sum(len(r["content"]) + (0 if template == "{content}" else len(r["source_id"]) + 3) for r in rows)
        body: dict[str, Any] = {
            "tokenizer": "approx:utf8_bytes",
            "budget": {"max_tokens": rng.randint(max(1, width // 4), max(1, width)),
                       "separator": rng.choice(["", "|", "\n\n"]), "template": template, "counts": counts},
            "objective": rng.choice([{"transform": "identity"}, {"transform": "power", "exponent": 2.0}]),
            "strategy": "optimal",
            **_spec(kind, rng, rows),
        }
        try:
            policy = Policy.from_mapping({"apiVersion": "ctxbudget/v1", "kind": "BudgetPolicy",
                                          "metadata": {"name": f"{kind}-{seed}", "revision": "1"}, "spec": body})
        except PolicyError:
            continue
        return policy, to_candidates(rows)
    raise AssertionError(f"no valid {kind} instance for seed {seed}")


def _weight(policy: Policy) -> Callable[[float], float]:
    obj = policy.objective
    if obj.transform.value == "identity":
        return lambda r: r
    return lambda r: max(r, 0.0) ** obj.exponent


def over_budget(check: Verifier, bits: np.ndarray) -> np.ndarray:
    """The verifier's ``budget.over`` test for many subsets at once (rows of ``bits``),
    from the verifier's own counts: items plus one separator between each two."""
    f = check.facts
    tokens = np.array([f.tokens[c.source_id] for c in f.cands], dtype=np.int64)
    k = bits.sum(axis=1)
    used = bits @ tokens + f.sep_tokens * np.maximum(k - 1, 0)
    return np.asarray(used > f.policy.budget.limit_tokens)


def oracle(policy: Policy, cands: tuple[Candidate, ...], score: Sequence[float]) -> frozenset[int] | None:
    """The feasible subset with the largest total ``score`` (None: no subset is
    feasible). Subsets are tried best first; the first the verifier accepts wins (those
    over the budget by the verifier's own count are skipped without the full check)."""
    check = Verifier(policy, cands)
    n = len(cands)
    masks = np.arange(1 << n, dtype=np.int64)
    bits = (masks[:, None] >> np.arange(n)) & 1
    totals = bits @ np.asarray(score, dtype=np.float64).reshape(n)
    keep = ~over_budget(check, bits)
    ids = [c.source_id for c in cands]
    for mask in masks[keep][np.argsort(-totals[keep], kind="stable")]:
        chosen = [i for i in range(n) if mask >> i & 1]
        if not check.selection([ids[i] for i in chosen], first=True):
            return frozenset(chosen)
    return None


def compare(kind: str, seed: int) -> Outcome:
    """Run OPTIMAL and the oracle on one instance."""
    policy, cands = instance(kind, seed)
    n = len(cands)
    w = _weight(policy)
    weight = [w(c.relevance_score) for c in cands]
    try:
        values = reduce(policy, cands).values
    except InfeasibleError:
        values = tuple(0 for _ in cands)  # reduce saw the contradiction; the oracle must too
    best = oracle(policy, cands, values)
    try:
        alloc = allocate(cands, policy)
    except VerificationError as exc:
        return Outcome(kind, seed, n, best is not None, False, f"OPTIMAL broke a rule: {exc.message}")
    except InfeasibleError as exc:
        if best is None:
            return Outcome(kind, seed, n, False, True)
        return Outcome(kind, seed, n, True, False, f"OPTIMAL says infeasible ({exc.message}); "
                       f"the oracle found {sorted(cands[i].source_id for i in best)}")
    if best is None:
        return Outcome(kind, seed, n, False, False,
                       "OPTIMAL found an allocation; the oracle found no feasible subset")
    got = frozenset(d.index for d in alloc.included)
    if alloc.strategy_used is not BudgetStrategy.OPTIMAL or alloc.selection.status not in ("optimal", "trivial"):
        return Outcome(kind, seed, n, True, False, f"ran {alloc.strategy_used.value} ({alloc.selection.status})")
    scaled, want = sum(values[i] for i in got), sum(values[i] for i in best)
    if scaled != want:
        return Outcome(kind, seed, n, True, False, f"scaled objective {scaled} < oracle {want}: "
                       f"{sorted(cands[i].source_id for i in got)} vs {sorted(cands[i].source_id for i in best)}")
    # Without the Problem: the best total weight, within the scaled values' rounding.
    top = oracle(policy, cands, weight)
    assert top is not None
    tol = n * max(map(abs, weight), default=0.0) / RELEVANCE_SCALE + 1e-12
    if sum(weight[i] for i in got) < sum(weight[i] for i in top) - tol:
        return Outcome(kind, seed, n, True, False, f"weight {sum(weight[i] for i in got)} < oracle "
                       f"{sum(weight[i] for i in top)}")
    return Outcome(kind, seed, n, True, True)


def problem_feasible(p: Problem, chosen: frozenset[int]) -> bool:
    """At the Problem level (tests of the LP and decomposition steps): every pin, at most
    one item of each chain, every linear rule."""
    if not p.pinned <= chosen:
        return False
    if any(sum(1 for m in c.members if m in chosen) > 1 for c in p.chains):
        return False
    return all(r.holds(chosen) for r in p.linear_rules)


def problem_optimum(p: Problem) -> int | None:
    """The best total of ``p.values`` over every subset of the active items that
    :func:`problem_feasible` keeps; None when none is."""
    best = None
    for k in range(len(p.active) + 1):
        for combo in itertools.combinations(p.active, k):
            s = frozenset(combo)
            if problem_feasible(p, s):
                val = sum(p.values[i] for i in s)
                best = val if best is None or val > best else best
    return best
