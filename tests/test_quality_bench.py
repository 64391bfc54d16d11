"""Tests for bench/quality_hotpot.py: candidates, the metrics, truncation, and a whole run.

The fixture ``tests/fixtures/hotpot_tiny.jsonl`` is hand-written in the HotpotQA record
format (invented towns, people and ensembles); no text comes from the dataset, which is
CC BY-SA. Every expectation below is computed by hand from it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchload import load_bench

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "hotpot_tiny.jsonl"


qh = load_bench("quality_hotpot")


@pytest.fixture(scope="module")
def questions() -> list:
    return qh.load_questions(FIXTURE)


@pytest.fixture(scope="module")
def lantern(questions: list) -> dict:
    """The first question's candidates by source id."""
    return {c.source_id: c for c in qh.candidates(questions[0])}


def chunk(sid: str, tokens: int, score: float, level: str = "PARAGRAPH") -> object:
    return qh.Chunk(sid, level, sid, tokens, score, None, frozenset({(sid, 0)}))


# --------------------------------------------------------------------------- data


def test_load_reads_every_record_and_limit_cuts(questions: list) -> None:
    assert [q.qid for q in questions] == ["tiny-bridge-1", "tiny-comparison-2", "tiny-bridge-3"]
    assert [q.qid for q in qh.load_questions(FIXTURE, 2)] == ["tiny-bridge-1", "tiny-comparison-2"]
    q = questions[0]
    assert q.facts == (("Brass Lantern Festival", 0), ("Korvath", 1))
    assert [title for title, _ in q.paragraphs] == ["Brass Lantern Festival", "Korvath", "Ostra Bridge"]


def test_duplicate_facts_count_once() -> None:
    record = {"_id": "x", "question": "q?", "supporting_facts": [["A", 0], ["A", 0], ["B", 1]],
              "context": [["A", ["One."]], ["B", ["Two.", " Three."]]]}
    assert qh.parse_question(record).facts == (("A", 0), ("B", 1))


def test_candidates_are_every_paragraph_and_sentence(lantern: dict) -> None:
    # 3 paragraphs + 2 + 3 + 2 sentences.
    assert len(lantern) == 10
    para = lantern["tiny-bridge-1/Korvath"]
    sent = lantern["tiny-bridge-1/Korvath#s1"]
    assert para.level == "PARAGRAPH" and para.parent_id is None
    assert para.content == ("Korvath: Korvath is a market town in the Vell Valley. The Ostra River flows "
                            "through Korvath. Its population was 4,200 in 2020.")
    assert para.covers == {("Korvath", 0), ("Korvath", 1), ("Korvath", 2)}
    assert sent.level == "SENTENCE" and sent.parent_id == "tiny-bridge-1/Korvath"
    assert sent.content == "Korvath: The Ostra River flows through Korvath."
    assert sent.covers == {("Korvath", 1)}
    # Exact cl100k counts of the rendered text.
    assert (para.tokens, sent.tokens) == (40, 15)


def test_scores_are_calibrated_and_zero_without_a_shared_term(lantern: dict) -> None:
    assert all(0.0 <= c.score < 1.0 for c in lantern.values())
    # "Ostra Bridge: The Ostra Bridge is a stone footbridge. ..." shares no term with the
    # question (which river flows through the town ... Brass Lantern Festival is held).
    assert lantern["tiny-bridge-1/Ostra Bridge"].score == 0.0
    assert lantern["tiny-bridge-1/Brass Lantern Festival"].score > 0.0


def test_scoring_is_deterministic(questions: list) -> None:
    assert qh.candidates(questions[1]) == qh.candidates(questions[1])


# --------------------------------------------------------------------------- metrics


def test_fact_recall_counts_sentences_and_whole_paragraphs(questions: list, lantern: dict) -> None:
    facts = questions[0].facts  # (Brass Lantern Festival, 0), (Korvath, 1)
    brass = lantern["tiny-bridge-1/Brass Lantern Festival"]
    brass_s1 = lantern["tiny-bridge-1/Brass Lantern Festival#s1"]
    korvath = lantern["tiny-bridge-1/Korvath"]
    korvath_s1 = lantern["tiny-bridge-1/Korvath#s1"]
    assert qh.fact_recall(facts, []) == 0.0
    assert qh.fact_recall(facts, [brass]) == 0.5  # the paragraph holds sentence 0
    assert qh.fact_recall(facts, [brass_s1]) == 0.0  # the wrong sentence of a gold paragraph
    assert qh.fact_recall(facts, [korvath_s1]) == 0.5
    assert qh.fact_recall(facts, [brass, korvath_s1]) == 1.0
    assert qh.fact_recall(facts, [brass, korvath, korvath_s1]) == 1.0  # overlap counts once
    assert qh.fact_recall((), [brass]) == 1.0


def test_all_covered_rate() -> None:
    assert qh.all_covered_rate([1.0, 0.5, 1.0, 0.0]) == 0.5
    assert qh.all_covered_rate([0.999]) == 0.0
    assert qh.all_covered_rate([]) == 0.0


def test_paired_difference_wins_and_losses() -> None:
    p = qh.paired([1.0, 0.5, 1.0, 0.0], [0.5, 0.5, 0.0, 0.5])
    assert p["mean_diff"] == pytest.approx(0.25)
    assert (p["wins"], p["losses"]) == (2, 1)
    assert p["ci95"][0] < 0.25 < p["ci95"][1]


# --------------------------------------------------------------------------- truncation


def test_truncation_stops_at_the_first_item_that_does_not_fit() -> None:
    chunks = [chunk("a", 50, 0.9), chunk("b", 40, 0.8), chunk("c", 5, 0.7)]
    # a: 50; b needs 40 + 2 (separator) -> 92 > 60: stop. c (5 + 2 -> 57) is never tried.
    assert [c.source_id for c in qh.truncate(chunks, 60, 2)] == ["a"]
    # 50 + 42 = 92 fits exactly; c needs 7 more -> 99 > 92: stop.
    assert [c.source_id for c in qh.truncate(chunks, 92, 2)] == ["a", "b"]
    assert [c.source_id for c in qh.truncate(chunks, 99, 2)] == ["a", "b", "c"]
    assert qh.truncate(chunks, 49, 2) == ()  # the best item alone does not fit: nothing


def test_truncation_orders_by_score_keeps_ties_in_input_order_and_skips_sentences() -> None:
    chunks = [chunk("low", 10, 0.1), chunk("tie-1", 10, 0.5), chunk("sent", 1, 0.99, "SENTENCE"),
              chunk("tie-2", 10, 0.5)]
    assert [c.source_id for c in qh.truncate(chunks, 1000, 1)] == ["tie-1", "tie-2", "low"]


def test_truncation_on_the_fixture(lantern: dict) -> None:
    chunks = list(lantern.values())
    sep = qh.get_tokenizer().count(qh.SEPARATOR)
    assert sep == 1
    # Paragraphs by score: Brass Lantern Festival (27 tokens), Korvath (40), Ostra Bridge (22, score 0).
    # 60: Brass; Korvath would need 41 more (68) -> stop, although Ostra Bridge (23) would fit.
    assert [c.source_id for c in qh.truncate(chunks, 60, sep)] == ["tiny-bridge-1/Brass Lantern Festival"]
    assert [c.source_id for c in qh.truncate(chunks, 68, sep)] == [
        "tiny-bridge-1/Brass Lantern Festival", "tiny-bridge-1/Korvath"]
    # The assembled text is recounted: 27 + 1 + 40 = 68 planned, 67 real (BPE merges the
    # first paragraph's final "." with the separator "\n\n").
    picked = qh._run_truncate(chunks, 68)
    assert len(picked.chunks) == 2 and picked.context_tokens == 67


# --------------------------------------------------------------------------- end to end


def test_whole_benchmark_on_the_fixture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    rc = qh.main(["--data", str(FIXTURE), "--budgets", "32,64,4096", "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| Supporting-fact recall | 32 | 64 | 4096 |" in text
    assert "Baselines ahead of the default" in text
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["questions"] == 3 and result["budgets"] == [32, 64, 4096]
    assert result["default_method"] == qh.DEFAULT_METHOD
    assert list(result["methods"]) == list(qh.METHOD_GROUPS["core"])
    for key, method in result["methods"].items():
        for budget, cell in method["budgets"].items():
            assert cell["max_tokens"] <= int(budget), (key, budget)
            assert 0.0 <= cell["sf_recall"] <= 1.0
            assert len(cell["per_question_recall"]) == 3
            if key.startswith("optimal"):
                assert set(cell["statuses"]) <= {"optimal", "trivial"}, (key, budget)
    # With room for everything, truncation and greedy (which also takes score-0 items)
    # put every fact in the context.
    assert result["methods"]["truncate"]["budgets"]["4096"]["sf_recall"] == 1.0
    assert result["methods"]["greedy"]["budgets"]["4096"]["all_facts_covered"] == 1.0


def test_missing_data_skips_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    assert qh.main(["--data", str(tmp_path / "absent.jsonl"), "--out", str(out)]) == 0
    assert "skipped, no HotpotQA sample" in capsys.readouterr().err
    assert not out.exists()


def test_method_and_budget_options() -> None:
    assert qh._budgets("128, 256") == (128, 256)
    assert qh._methods("truncate,default") == ("truncate", qh.DEFAULT_METHOD)
    assert qh.DEFAULT_METHOD in qh._methods("sweep")
    for bad in ("128,x", "0", ""):
        with pytest.raises(Exception, match="budgets"):
            qh._budgets(bad)
    with pytest.raises(Exception, match="unknown method 'nope'"):
        qh._methods("nope")
