"""Tests for bench/pack_quality.py: the pooled HotpotQA corpus and its metrics, the
documentation part's answer rule and question file, and a missing corpus said clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchload import load_bench

pq = load_bench("pack_quality")
FIXTURE = Path(__file__).parent / "fixtures" / "hotpot_tiny.jsonl"


def test_the_hotpot_part_runs_pack_over_the_pooled_paragraphs() -> None:
    got = pq.run_hotpot(FIXTURE, None, (64, 256), ("before", "after"), progress=False)
    assert got["questions"] == 3 and got["paragraphs"] == 9  # three questions' paragraphs, pooled
    after = got["rows"]["after"]
    # 256 tokens hold every gold sentence of this tiny corpus (some as sentences, not
    # their whole paragraph: the hierarchy rule lets one or the other in)
    assert after["256"]["fact_recall"] == 1.0 and 0.5 <= after["256"]["paragraph_recall"] <= 1.0
    assert after["256"]["empty_rate"] == 0.0
    assert 0 < after["64"]["mean_tokens"] <= 64
    pair = got["paired"]["before"]["256"]["fact_recall"]
    assert set(pair) == {"mean_diff", "ci95", "wins", "losses"}
    assert "before" in pq.report_hotpot(got, (64, 256), ("before", "after"))


def test_fact_recall_counts_a_gold_sentence_only_when_its_text_is_in_the_context(tmp_path: Path) -> None:
    questions = pq.qh.load_questions(FIXTURE)
    corpus = pq.write_hotpot_corpus(questions, tmp_path)
    q = questions[0]  # facts: Brass Lantern Festival #0, Korvath #1
    assert sorted(p.name for p in tmp_path.iterdir())[:2] == ["00000.md", "00001.md"]
    assert (tmp_path / "00000.md").read_text().startswith("# Brass Lantern Festival\n\n")
    assert pq.hotpot_scores(q, corpus, "[x] The Ostra River   flows through Korvath.") == (0.5, 0.0)
    whole = corpus.paragraphs["Brass Lantern Festival"] + "\n\n" + corpus.paragraphs["Korvath"]
    assert pq.hotpot_scores(q, corpus, whole) == (1.0, 1.0)
    assert pq.hotpot_scores(q, corpus, "") == (0.0, 0.0)


DOCS = {
    "fs.md": "# File system\n\n## `fs.readFile(path)`\n\nReads the entire contents of a file.\n\n"
             "## `fs.rm(path)`\n\nRemoves files and directories.\n",
    "path.md": "# Path\n\n## `path.extname(path)`\n\nReturns the extension of the path.\n",
}


def _docs(tmp_path: Path, questions: list[dict]) -> tuple[Path, Path]:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    qfile = tmp_path / "q.json"
    qfile.write_text(json.dumps({"questions": questions}))
    return docs, qfile


def test_the_docs_part_finds_answer_sections_by_file_and_heading(tmp_path: Path) -> None:
    docs, qfile = _docs(tmp_path, [
        {"q": "How do I read the whole contents of a file?", "answers": [["fs.md", "fs.readFile(path)"]]},
        {"q": "What is the extension of a path?", "answers": [["path.md", "path.extname(path)"]]},
        {"q": "How do I remove a directory?", "answers": [["fs.md", "fs.rm(path)"], ["fs.md", "No such heading"]]},
    ])
    got = pq.run_docs(docs, 300, ("before", "after"), qfile)
    assert got["unresolved_answers"] == ["fs.md: No such heading"]
    assert got["rows"]["after"]["answered"] == 3 and got["rows"]["after"]["missed"] == []
    assert got["per_question"]["after"] == [True, True, True]
    report = pq.report_docs(got, ("before", "after"))
    assert "3/3 = 100.0%" in report and "Goal ≥ 90% for after: met" in report
    assert "fs.md: No such heading" in report


def test_the_answer_rule_accepts_the_section_its_ancestors_and_its_parts(tmp_path: Path) -> None:
    docs, _ = _docs(tmp_path, [])
    indexed = pq.index_corpus([docs])
    answer = next(n.node_id for n in indexed.index.nodes.values() if n.title == "fs.rm(path)")
    inside = [n.node_id for n in indexed.index.nodes.values() if n.parent_id == answer]
    assert inside and pq.answered(indexed, inside, {answer})
    assert pq.answered(indexed, [answer], {answer})
    assert pq.answered(indexed, ["fs.md#s1"], {answer})  # the whole document's section holds it
    other = next(n.node_id for n in indexed.index.nodes.values() if n.title == "fs.readFile(path)")
    assert not pq.answered(indexed, [other], {answer})


def test_the_shipped_question_file_has_twenty_questions_or_more_each_with_an_answer() -> None:
    data = json.loads(pq.QUESTIONS_FILE.read_text(encoding="utf-8"))
    assert "licence" in data and "MIT" in data["licence"] and "nodejs" in data["corpus"]["package"]
    assert len(data["questions"]) >= 20
    for q in data["questions"]:
        assert q["q"].endswith("?") and q["answers"]
        assert all(file.endswith(".md") and heading for file, heading in q["answers"])


def test_a_missing_corpus_is_said_and_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    assert pq.main(["--part", "both", "--docs", str(tmp_path / "nowhere"), "--data", str(tmp_path / "x.jsonl"),
                    "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"Part A skipped: the HotpotQA sample is not at {tmp_path / 'x.jsonl'} (pass --data PATH)." in text
    assert f"Part B skipped: no *.md files under {tmp_path / 'nowhere'}" in text
    assert json.loads(out.read_text())["configs"] == ["before", "stemming", "calibration", "stem-calib", "issue15", "after"]


def test_wilson_interval() -> None:
    lo, hi = pq.wilson(27, 30)
    assert lo < 0.9 < hi and 0.7 < lo and hi < 1.0
    assert pq.wilson(0, 0) == (0.0, 0.0)
