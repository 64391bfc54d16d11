"""Tests for bench/robustness.py: the split, the peer packers, the fast path (against brute
force and against engine.allocate), the worst-case choice, the "done when" check and a
whole run on the hand-written fixture ``tests/fixtures/hotpot_tiny.jsonl`` (lexical
scorers only: no dense model in the suite). Expectations are computed by hand."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import sys
from pathlib import Path

import pytest

from benchload import load_bench

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "hotpot_tiny.jsonl"


rb = load_bench("robustness")
qh = sys.modules["quality_hotpot"]


def chunk(sid: str, tokens: int, score: float, level: str = "SENTENCE", parent: str | None = None) -> object:
    return qh.Chunk(sid, level, sid, tokens, score, parent, frozenset({(sid, 0)}))


def ids(chunks: object) -> list[str]:
    return [c.source_id for c in chunks]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- split


def test_split_is_a_fixed_partition_independent_of_input_order() -> None:
    qids = [f"q{i}" for i in range(7)]
    tune, report = rb.split_questions(qids)
    assert (len(tune), len(report)) == (3, 4)  # odd count: the tune half is the smaller
    assert set(tune).isdisjoint(report) and set(tune) | set(report) == set(qids)
    assert rb.split_questions(list(reversed(qids))) == (tune, report)
    assert rb.split_questions(qids + ["q0"]) == (tune, report)  # duplicates count once
    assert rb.split_questions(qids, seed=rb.SPLIT_SEED) == (tune, report)
    many = [f"q{i}" for i in range(40)]
    assert rb.split_questions(many)[0] != tuple(sorted(many)[:20])  # shuffled, not a prefix


# --------------------------------------------------------------------------- peers


def test_truncation_stops_and_skip_greedy_continues() -> None:
    chunks = [chunk("a", 50, 0.9), chunk("b", 40, 0.8), chunk("c", 5, 0.7)]
    # a: 50; b needs 40 + 2 (separator) -> 92 > 60. Truncation stops there; skip-greedy
    # goes on to c: 50 + 5 + 2 = 57 <= 60.
    assert ids(rb.score_order_truncate(chunks, 60, 2)) == ["a"]
    assert ids(rb.skip_greedy(chunks, 60, 2)) == ["a", "c"]
    assert ids(rb.score_order_truncate(chunks, 99, 2)) == ["a", "b", "c"]
    assert rb.score_order_truncate(chunks, 49, 2) == ()
    assert ids(rb.skip_greedy(chunks, 49, 2)) == ["b", "c"]  # 40, then 5 + 2 -> 47


def test_peers_order_by_score_and_keep_ties_in_input_order() -> None:
    chunks = [chunk("low", 10, 0.1), chunk("tie-1", 10, 0.5), chunk("tie-2", 10, 0.5)]
    assert ids(rb.score_order_truncate(chunks, 20, 0)) == ["tie-1", "tie-2"]
    assert ids(rb.skip_greedy(chunks, 30, 0)) == ["tie-1", "tie-2", "low"]


def test_paired_interval_by_hand() -> None:
    # Differences 0.5, 0, 1, -0.5: mean 0.25, sample sd sqrt(1.25 / 3), half-width 1.96 sd / 2.
    p = rb.paired([1.0, 0.5, 1.0, 0.0], [0.5, 0.5, 0.0, 0.5])
    half = 1.96 * (1.25 / 3) ** 0.5 / 2
    assert p["mean_diff"] == pytest.approx(0.25)
    assert p["ci95"] == pytest.approx([0.25 - half, 0.25 + half])
    assert (p["wins"], p["losses"]) == (2, 1)


# --------------------------------------------------------------------------- fast path


def _hier_chunks() -> list:
    return [chunk("P1", 20, 0.9, "PARAGRAPH"), chunk("P1#s0", 8, 0.95, parent="P1"),
            chunk("P2", 20, 0.4, "PARAGRAPH"), chunk("P2#s0", 8, 0.5, parent="P2")]


def test_fast_balanced_by_hand() -> None:
    # Separator 0, capacity 40, an equal share of 20 tokens per level. PARAGRAPH first (by
    # name), relevance order: P1 (20) fills its share, P2 does not fit it. SENTENCE: P1#s0
    # is P1's child (hierarchy rule), P2#s0 takes 8. Refill: P2 needs 20 > 12 left.
    p = rb.packing(_hier_chunks(), 40, 0)
    assert sorted(rb.fast_balanced(p, exclusive=True)) == [0, 3]
    # Without the rule the best sentence joins its paragraph.
    assert sorted(rb.fast_balanced(p, exclusive=False)) == [0, 1, 3]


def test_fast_greedy_and_density_by_hand() -> None:
    p = rb.packing(_hier_chunks(), 40, 0)
    # Relevance order P1#s0 (8), P1 (its child is in), P2#s0 (8), P2 (its child is in).
    assert sorted(rb.fast_greedy(p, exclusive=True)) == [1, 3]
    # Without the rule: P1#s0, P1 (28), P2#s0 (36); P2 needs 20 more.
    assert sorted(rb.fast_greedy(p, exclusive=False)) == [0, 1, 3]
    values = [900, 950, 400, 500]
    # Per token: P1#s0 118.75, P2#s0 62.5, P1 45 (blocked), P2 20 (blocked).
    assert sorted(rb.fast_density(p, exclusive=True, values=values)) == [1, 3]
    # Without the rule, P1 (45 per token) fits after both sentences: 36 tokens.
    assert sorted(rb.fast_density(p, exclusive=False, values=values)) == [0, 1, 3]


def _brute_force(p: object, exclusive: bool, values: list[int]) -> int:
    best = 0
    t = p.capacity + 1  # type: ignore[attr-defined]
    items = list(p.order)  # type: ignore[attr-defined]
    for r in range(len(items) + 1):
        for combo in itertools.combinations(items, r):
            if sum(p.weights[i] for i in combo) > p.capacity:  # type: ignore[attr-defined]
                continue
            if exclusive and any(p.relatives[i] & set(combo) for i in combo):  # type: ignore[attr-defined]
                continue
            best = max(best, sum(values[i] * t - p.weights[i] for i in combo))  # type: ignore[attr-defined]
    return best


def test_fast_optimal_matches_brute_force() -> None:
    rng = random.Random(7)
    for _ in range(60):
        chunks = []
        for g in range(rng.randint(1, 3)):
            chunks.append(chunk(f"P{g}", rng.randint(5, 30), rng.random(), "PARAGRAPH"))
            for j in range(rng.randint(0, 3)):
                chunks.append(chunk(f"P{g}#s{j}", rng.randint(2, 12), rng.random(), parent=f"P{g}"))
        p = rb.packing(chunks, rng.randint(5, 60), rng.randint(0, 2))
        values = [rng.choice([0, rng.randint(1, 1000)]) for _ in chunks]
        for exclusive in (True, False):
            chosen = rb.fast_optimal(p, exclusive, values)
            t = p.capacity + 1
            assert sum(p.weights[i] for i in chosen) <= p.capacity
            if exclusive:
                assert not any(p.relatives[i] & set(chosen) for i in chosen)
            assert sum(values[i] * t - p.weights[i] for i in chosen) == _brute_force(p, exclusive, values)


@pytest.fixture(scope="module")
def tiny() -> tuple[list, dict]:
    questions = qh.load_questions(FIXTURE)
    chunks = {q.qid: qh.build_chunks(q) for q in questions}
    return questions, rb.compute_scores(questions, chunks, ("bm25", "bm25-pooled"), None, progress=False)


def test_pooled_bm25_differs_from_per_level(tiny: tuple[list, dict]) -> None:
    _, scores = tiny
    per_level, pooled = scores["bm25"]["tiny-bridge-1"], scores["bm25-pooled"]["tiny-bridge-1"]
    assert per_level.keys() == pooled.keys()  # the same nodes match a query term
    assert any(abs(per_level[k] - pooled[k]) > 1e-9 for k in per_level)  # idf over other nodes
    assert all(0.0 < v < 1.0 for v in pooled.values())


def test_fast_path_selects_what_the_engine_selects(tiny: tuple[list, dict]) -> None:
    questions, scores = tiny
    methods = [rb.METHODS[k] for k in (*rb.BASELINE_KEYS, "obj-max-all-p4-P2", "obj-max-all-p4-inh0.5",
                                       "obj-rank-p2", "obj-minmax-p2")]
    conds = [("bm25", sh, b) for sh in rb.SHAPES for b in (48, 96)]
    got = rb.check_fast_path(questions, scores, methods, conds)
    # Per question and budget: 5 strategies + 4 variants on sentences, 9 + 4 on para+sent.
    assert got["selections"] == 3 * 2 * (9 + 13)
    # A selection that differs must be another optimum of the same objective (CP-SAT may
    # return either of two tied optima; the fast path's DP takes the children on a tie).
    assert got["identical"] + got["tied"] == got["selections"], got["mismatches"]
    assert got["identical"] >= got["selections"] - 8


def test_both_shapes_keep_each_items_document_id(tiny: tuple[list, dict]) -> None:
    """Regression: the sentences shape dropped the paragraph link and with it the only
    trace of the document a sentence came from; every retriever returns it (doc_id)."""
    questions, scores = tiny
    base = qh.build_chunks(questions[0])
    for shape in rb.SHAPES:
        cands = rb.shaped(base, scores["bm25"][questions[0].qid], shape)
        for c in cands:
            want = c.source_id.split("#s")[0]  # the paragraph (the Wikipedia article)
            assert c.doc_id == want
        items = qh.budget_items(cands)
        assert all(item.metadata["doc_id"] == c.doc_id for item, c in zip(items, cands))
        assert all(("parent_id" in item.metadata) == (shape == "para+sent" and c.level == qh.SENTENCE)
                   for item, c in zip(items, cands))


def test_fast_path_selects_what_the_engine_selects_with_the_document_steps(tiny: tuple[list, dict]) -> None:
    questions, scores = tiny
    methods = [rb.METHODS[k] for k in (rb.SHIPPED, "obj-max-p6-inh0.15-cov-fill-doc0.3max-dec0.5")]
    conds = [("bm25", sh, b) for sh in rb.SHAPES for b in (48, 96)]
    got = rb.check_fast_path(questions, scores, methods, conds)
    assert got["selections"] == 3 * 2 * 2 * 2
    assert got["identical"] + got["tied"] == got["selections"], got["mismatches"]


def test_the_shipped_choice_is_the_engine_default() -> None:
    from engine.policy import DEFAULT_OBJECTIVE, PREVIOUS_DEFAULT_OBJECTIVE, Policy

    assert rb.SHIPPED in rb.FINAL_KEYS and rb.PREVIOUS_SHIPPED in rb.FINAL_KEYS
    assert rb.engine_objective(rb.METHODS[rb.SHIPPED].variant) == DEFAULT_OBJECTIVE == Policy.default(100).objective
    # The default before the reading-order and z-score steps (this session: issue 11's
    # third study) is the one the document steps study shipped.
    prev = rb.engine_objective(rb.METHODS[rb.PREVIOUS_SHIPPED].variant)
    assert prev == PREVIOUS_DEFAULT_OBJECTIVE
    assert dataclasses.replace(DEFAULT_OBJECTIVE, position_decay=1.0, lead_weight=0.0) == rb.engine_objective(
        rb.METHODS["obj-max-z0.2-p5-inh0.15-cov-fill-doc0.4-dec0.5-flat"].variant)
    # The previous default, as the protocol runs it, is the base objective.
    assert rb.engine_objective(rb.METHODS[rb.CURRENT_DEFAULT].variant) == rb.Objective()


# --------------------------------------------------------------------------- choosing


def _cells(table: dict[str, dict[tuple, list[float]]]) -> dict:
    return {m: {rb.cond_key(c): {f"q{i}": (r, 0) for i, r in enumerate(rs)} for c, rs in conds.items()}
            for m, conds in table.items()}


A, B = ("bm25", "sentences", 128), ("dense", "sentences", 128)
QIDS = ["q0", "q1", "q2", "q3"]


def test_worst_case_is_the_lowest_margin_against_each_conditions_best_rival() -> None:
    cells = _cells({
        "cand": {A: [1.0, 1.0, 0.5, 0.5], B: [0.5, 0.5, 0.5, 0.5]},
        "r1": {A: [1.0, 0.5, 0.5, 0.5], B: [1.0, 0.5, 0.5, 0.5]},
        "r2": {A: [0.0, 0.0, 0.0, 0.0], B: [0.5, 1.0, 1.0, 0.5]},
    })
    rivals = [rb.Method("r1", "r1"), rb.Method("r2", "r2")]
    wc = rb.worst_case(cells, "cand", rivals, [A, B], QIDS)
    # A: best rival r1 (0.625); margin 0.75 - 0.625. B: best rival r2 (0.75); 0.5 - 0.75.
    assert wc["margins"][rb.cond_key(A)] == {"margin": pytest.approx(0.125), "rival": "r1"}
    assert (wc["cond"], wc["rival"], wc["margin"]) == (rb.cond_key(B), "r2", pytest.approx(-0.25))
    cells["cand2"] = _cells({"x": {A: [0.5] * 4, B: [0.75] * 4}})["x"]
    ranking = rb.choose(cells, [rb.Method("cand", "c"), rb.Method("cand2", "c2")], rivals, [A, B], QIDS)
    assert [k for k, _ in ranking] == ["cand2", "cand"]  # worst -0.125 beats worst -0.25


def test_done_when_flags_a_strategy_ahead_and_a_short_truncation_margin() -> None:
    base = {A: [1.0, 1.0, 1.0, 0.0], B: [1.0, 1.0, 1.0, 1.0]}
    table = {k: base for k in rb.STRATEGY_KEYS}
    table["chosen"] = {A: [1.0, 1.0, 1.0, 0.0], B: [1.0, 1.0, 1.0, 1.0]}
    table["truncate"] = {A: [1.0, 1.0, 1.0, 0.0], B: [0.0, 0.5, 0.5, 0.5]}
    ok = rb.done_when(_cells(table), "chosen", [A, B], QIDS)
    # Level with every strategy; truncation: margin 0 under bm25 (short), 0.625 under dense.
    assert ok["strategies_ok"] and not ok["truncation_ok"] and not ok["passed"]
    assert [x["cond"] for x in ok["truncation_short"]] == [rb.cond_key(A)]
    table["greedy"] = {A: [1.0, 1.0, 1.0, 1.0], B: [1.0, 1.0, 1.0, 1.0]}
    table["truncate"] = {A: [0.0, 0.5, 0.5, 0.0], B: [0.0, 0.5, 0.5, 0.5]}
    got = rb.done_when(_cells(table), "chosen", [A, B], QIDS)
    # greedy is ahead on one question of four: -0.25 [-0.74, +0.24], within the interval.
    assert got["strategies_ok"] and got["truncation_ok"] and got["passed"]
    table["greedy"] = {A: [1.0, 1.0, 1.0, 1.0], B: [1.0, 1.0, 1.0, 1.0]}
    table["chosen"] = {A: [0.0, 0.0, 0.0, 0.0], B: [1.0, 1.0, 1.0, 1.0]}
    table["truncate"] = {A: [0.0, 0.0, 0.0, 0.0], B: [0.0] * 4}
    bad = rb.done_when(_cells(table), "chosen", [A, B], QIDS)
    assert not bad["strategies_ok"]
    # The "-h" strategies have no hierarchy to apply on sentences only: not compared there.
    assert {x["method"] for x in bad["strategies_ahead"]} == {"greedy", "density", "balanced", "optimal"}


# --------------------------------------------------------------------------- CLI


def test_main_without_data_says_so_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert rb.main(["--data", str(tmp_path / "absent.jsonl")]) == 0
    assert "robustness: skipped, no HotpotQA sample at" in capsys.readouterr().err


def test_main_on_the_fixture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    argv = ["--data", str(FIXTURE), "--scorers", "bm25,bm25-pooled", "--budgets", "48,96", "--workers", "1",
            "--quiet", "--cache", str(tmp_path / "cache"), "--out", str(out)]
    assert rb.main(argv) == 0
    text = capsys.readouterr().out
    assert "## Choice on the tune split (1 questions, seed 11)" in text
    assert "### bm25-pooled, para+sent" in text and "## Done when (report split)" in text
    data = json.loads(out.read_text(encoding="utf-8"))
    assert len(data["tune_ids"]) == 1 and len(data["report_ids"]) == 2
    cell = data["methods"]["truncate"]["conditions"]["bm25|sentences|48"]
    assert len(cell["report"]["per_question_recall"]) == 2
    assert data["chosen_default"] == data["ranking_tune"][0]["method"]
    # A rerun reads every result from the cache.
    assert (tmp_path / "cache" / "cells" / "truncate.json").is_file()
    assert rb.main(argv) == 0
    assert capsys.readouterr().out == text
