"""bench/duplicates_hotpot.py stays runnable and measures what it says: mirrors cover the
same facts as their originals, the rule finds them, and a whole (tiny) run reports every
row. Uses the hand-written fixture ``tests/fixtures/hotpot_tiny.jsonl`` (no dataset text)."""

from __future__ import annotations

from pathlib import Path

from benchload import load_bench

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "hotpot_tiny.jsonl"


qh = load_bench("quality_hotpot")
db = load_bench("duplicates_hotpot")


def test_mirrors_cover_the_same_facts_and_change_the_words_asked() -> None:
    (q, *_) = qh.load_questions(FIXTURE)
    clean, mirrors = qh.build_chunks(q), db.mirror_chunks(q, 2)
    assert len(mirrors) == len(clean)
    for a, b in zip(clean, mirrors):
        assert (a.level, a.covers) == (b.level, b.covers)
        assert b.source_id == a.source_id.replace(f"{q.qid}/", f"{q.qid}/mirror/", 1)
    changed = [sum(x != y for x, y in zip(" ".join(s).split(" "), " ".join(m).split(" ")))
               for (_, s), (_, m) in zip(q.paragraphs, db.mirror_paragraphs(q, 2))]
    assert all(n <= 2 for n in changed) and any(n > 0 for n in changed)
    assert db.mirror_paragraphs(q, 2) == db.mirror_paragraphs(q, 2)  # seeded per question


def test_the_rule_keeps_out_the_exact_copies_the_loose_run_takes() -> None:
    (q, *_) = qh.load_questions(FIXTURE)
    chunks = qh.score(q.question, qh.build_chunks(q) + db.mirror_chunks(q, 0))  # exact copies

    def pairs(picked: object) -> set[str]:
        ids = {c.source_id for c in picked.chunks}  # type: ignore[attr-defined]
        return {i for i in ids if i.replace(f"{q.qid}/", f"{q.qid}/mirror/", 1) in ids}

    for strategy in (qh.BudgetStrategy.OPTIMAL, qh.BudgetStrategy.GREEDY):
        assert pairs(db.runner(strategy, None)(chunks, 256))  # copies crowd the budget
        assert not pairs(db.runner(strategy, 0.8)(chunks, 256))


def test_a_tiny_run_reports_every_row() -> None:
    questions = qh.load_questions(FIXTURE)
    cells = db.quality(questions, (64, 256), (0.5,), 2, progress=False)
    assert set(cells) == {key for key, *_ in db.rows((0.5,))}
    assert all(len(cell.recall) == len(questions) for row in cells.values() for cell in row.values())
    text = db.report(cells, (64, 256), (0.5,), len(questions), 2)
    assert "| optimal, mirrored, duplicates 0.5 |" in text and "| greedy, no mirrors (reference) |" in text


def test_timing_rows_agree_with_brute_force() -> None:
    (row,) = db.timing(qh.load_questions(FIXTURE), (8,), 2)
    assert row["items"] == 8 and row["pairs"] >= 1 and "brute_force_s" in row
