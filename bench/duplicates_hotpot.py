"""Near-duplicate rule on HotpotQA: do mirrored copies crowd out the evidence, and does
``spec.duplicates`` give the budget back? And how long does finding the pairs take?

Usage (from the repository root)::

    .venv/bin/python bench/duplicates_hotpot.py                    # 500 questions
    .venv/bin/python bench/duplicates_hotpot.py --limit 100 --budgets 128,512 --thresholds 0.8
    .venv/bin/python bench/duplicates_hotpot.py --timing-only

Data: the HotpotQA distractor dev sample at ``../shared/eval-data/hotpotqa-dev-distractor-500/``
relative to the repository root (as ``bench/quality_hotpot.py``, whose loading, chunking,
scoring and metrics this reuses by import); absent data: says so and exits 0.

Per question: the candidates of ``quality_hotpot`` (every paragraph and every sentence,
sentences under their paragraph, calibrated BM25) plus a **mirror** of every paragraph and
its sentences, as a second source serving the same page would deliver it: source id
``<qid>/mirror/<title>``, the title upper-cased, and ``--changes`` words (default 2) of the
paragraph replaced by another word of the same paragraph (seeded per question). A mirror
covers the same facts as its original. Everything is scored together (one BM25 per level
over originals and mirrors).

Rows: the engine's default objective with ``hierarchy.exclusive: true`` (optimal, and
greedy), on the clean candidates (reference), on the mirrored ones without the rule, and
on the mirrored ones with ``duplicates: {threshold: t}`` for each ``--thresholds`` value;
then the paired difference (rule minus no rule) with its 95 % interval.

Timing: paragraphs pooled over questions with their mirrors (then sentences, to reach
10k), 1k and 10k items: the time to
shingle, to find every pair with the prefix-filtered index (exact), the same by comparing
all pairs at 1k (the brute force the index replaces), and ``reduce`` with and without the
rule.

Times are wall clock (``time.perf_counter``) of one thread, plus the CPU time of the pair
search (``time.process_time``), which a loaded machine inflates less.

Output: Markdown on stdout, JSON in ``bench/results/duplicates_hotpot.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_hotpot as qh  # noqa: E402

from engine import BudgetStrategy, Policy, allocate, get_tokenizer  # noqa: E402
from engine.allocate import to_candidates  # noqa: E402
from engine.duplicates import jaccard, shingles, similar_pairs  # noqa: E402
from engine.policy import DuplicateRule, Hierarchy  # noqa: E402
from engine.problem import reduce  # noqa: E402

DEFAULT_OUT = qh.REPO_ROOT / "bench" / "results" / "duplicates_hotpot.json"
DEFAULT_THRESHOLDS = (0.8, 0.5)


def mirror_paragraphs(q: qh.Question, changes: int) -> list[tuple[str, tuple[str, ...]]]:
    """Each paragraph of ``q`` as a mirror serves it: ``changes`` words replaced by another
    word of the same paragraph (deterministic per question)."""
    rng = random.Random(q.qid)
    out = []
    for title, sents in q.paragraphs:
        words = [s.split(" ") for s in sents]
        spots = [(k, w) for k, ws in enumerate(words) for w in range(len(ws)) if ws[w]]
        pool = [x for ws in words for x in ws if x]
        for k, w in rng.sample(spots, min(changes, len(spots))):
            words[k][w] = rng.choice(pool)
        out.append((title, tuple(" ".join(ws) for ws in words)))
    return out


def mirror_chunks(q: qh.Question, changes: int) -> tuple[qh.Chunk, ...]:
    """Mirror paragraphs and sentences of ``q`` (same facts as the originals)."""
    specs: list[tuple[str, str, str, str | None, frozenset[qh.Fact]]] = []
    for title, sents in mirror_paragraphs(q, changes):
        pid = f"{q.qid}/mirror/{title}"
        shown = title.upper()
        specs.append((pid, qh.PARAGRAPH, f"{shown}: {''.join(sents).strip()}", None,
                      frozenset((title, j) for j in range(len(sents)))))
        for j, sent in enumerate(sents):
            specs.append((f"{pid}#s{j}", qh.SENTENCE, f"{shown}: {sent.strip()}", pid, frozenset({(title, j)})))
    counts = get_tokenizer().count_many([s[2] for s in specs])
    return tuple(qh.Chunk(sid, lvl, text, n, 0.0, parent, covers)
                 for (sid, lvl, text, parent, covers), n in zip(specs, counts))


def runner(strategy: BudgetStrategy, threshold: float | None) -> Callable[[Sequence[qh.Chunk], int], qh.Picked]:
    """``Policy.default`` with the hierarchy rule, ``strategy`` and the duplicate rule."""
    dup = None if threshold is None else DuplicateRule(threshold=threshold)

    def run(chunks: Sequence[qh.Chunk], budget: int) -> qh.Picked:
        policy = Policy.default(budget, strategy=strategy, hierarchy=Hierarchy(exclusive=True), duplicates=dup)
        alloc = allocate(qh.budget_items(chunks), policy)
        by_id = {c.source_id: c for c in chunks}
        return qh.Picked(tuple(by_id[d.source_id] for d in alloc.included), alloc.context_tokens,
                         alloc.selection.status)

    return run


def rows(thresholds: Sequence[float]) -> list[tuple[str, str, bool, float | None]]:
    """(key, label, mirrored?, threshold) per row, for optimal then greedy."""
    out = []
    for s in ("optimal", "greedy"):
        out.append((f"{s}-clean", f"{s}, no mirrors (reference)", False, None))
        out.append((f"{s}-mirrored", f"{s}, mirrored, no rule", True, None))
        out += [(f"{s}-mirrored-dup{t:g}", f"{s}, mirrored, duplicates {t:g}", True, t) for t in thresholds]
    return out


def quality(questions: Sequence[qh.Question], budgets: Sequence[int], thresholds: Sequence[float],
            changes: int, progress: bool) -> dict[str, dict[int, qh.Cell]]:
    table = rows(thresholds)
    cells = {key: {b: qh.Cell() for b in budgets} for key, *_ in table}
    t0 = time.perf_counter()
    for n, q in enumerate(questions, start=1):
        clean = qh.build_chunks(q)
        clean_scored = qh.score(q.question, clean)
        mirrored = qh.score(q.question, clean + mirror_chunks(q, changes))
        for key, _, is_mirrored, t in table:
            run = runner(BudgetStrategy(key.split("-")[0]), t)
            chunks = mirrored if is_mirrored else clean_scored
            for b in budgets:
                start = time.perf_counter()
                picked = run(chunks, b)
                cell = cells[key][b]
                cell.seconds.append(time.perf_counter() - start)
                cell.recall.append(qh.fact_recall(q.facts, picked.chunks))
                cell.tokens.append(picked.context_tokens)
                cell.statuses[picked.status] = cell.statuses.get(picked.status, 0) + 1
        if progress and (n % 25 == 0 or n == len(questions)):
            print(f"  {n}/{len(questions)} questions, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return cells


def timing(questions: Sequence[qh.Question], sizes: Sequence[int], changes: int) -> list[dict[str, Any]]:
    """Pair-finding cost on paragraphs pooled over questions, originals and mirrors."""
    texts: list[str] = []
    sentences: list[str] = []
    for q in questions:
        for (title, sents), (_, msents) in zip(q.paragraphs, mirror_paragraphs(q, changes)):
            texts.append(f"{title}: {''.join(sents).strip()}")
            texts.append(f"{title.upper()}: {''.join(msents).strip()}")
            for s, m in zip(sents, msents):
                sentences += [f"{title}: {s.strip()}", f"{title.upper()}: {m.strip()}"]
    texts += sentences  # past the paragraphs (about 9.9k), sentences and their mirrors
    out = []
    for size in sizes:
        if size > len(texts):
            print(f"  timing: only {len(texts)} paragraphs, skipping {size}", file=sys.stderr)
            continue
        part = texts[:size]
        t0 = time.perf_counter()
        sets = [shingles(t, 3) for t in part]
        t1, c1 = time.perf_counter(), time.process_time()
        pairs = similar_pairs(sets, 0.8)
        t2, c2 = time.perf_counter(), time.process_time()
        row: dict[str, Any] = {"items": size, "shingles": sum(map(len, sets)), "pairs": len(pairs),
                               "shingle_s": t1 - t0, "pairs_s": t2 - t1, "pairs_cpu_s": c2 - c1}
        if size <= 1000:
            brute = sum(1 for a, b in itertools.combinations(sets, 2) if jaccard(a, b) >= 0.8)
            row["brute_force_s"] = time.perf_counter() - t2
            assert brute == len(pairs), (brute, len(pairs))
        items = [{"source_id": f"p{k}", "content": t, "relevance_score": 0.5, "token_count": 100}
                 for k, t in enumerate(part)]
        cands = to_candidates(items)
        base = Policy.default(10_000, tokenizer="approx:utf8_bytes")
        for name, pol in (("reduce_s", base), ("reduce_dup_s", base.replace(duplicates=DuplicateRule()))):
            t3 = time.perf_counter()
            reduce(pol, cands)
            row[name] = time.perf_counter() - t3
        out.append(row)
    return out


def report(cells: dict[str, dict[int, qh.Cell]], budgets: Sequence[int], thresholds: Sequence[float],
           n: int, changes: int) -> str:
    table = rows(thresholds)
    out = [f"HotpotQA distractor dev sample, {n} questions; paragraphs + sentences (hierarchy.exclusive), "
           f"each paragraph mirrored with {changes} words changed; budgets in cl100k tokens.", ""]
    for title, metric, fmt in (("Supporting-fact recall", "sf_recall", ".3f"),
                               ("ms per question", "ms_per_question", ".1f")):
        out.append(f"| {title} | " + " | ".join(str(b) for b in budgets) + " |")
        out.append("|---|" + "---:|" * len(budgets))
        for key, label, *_ in table:
            out.append(f"| {label} | " + " | ".join(format(cells[key][b].summary()[metric], fmt)
                                                   for b in budgets) + " |")
        out.append("")
    out.append("Rule minus no rule (mirrored), recall per question: mean [95% interval]")
    out.append("")
    out.append("| comparison | " + " | ".join(str(b) for b in budgets) + " |")
    out.append("|---|" + "---:|" * len(budgets))
    for s in ("optimal", "greedy"):
        for t in thresholds:
            vals = []
            for b in budgets:
                p = qh.paired(cells[f"{s}-mirrored-dup{t:g}"][b].recall, cells[f"{s}-mirrored"][b].recall)
                vals.append(f"{p['mean_diff']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]")
            out.append(f"| {s}, duplicates {t:g} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def timing_report(rows_: Sequence[dict[str, Any]]) -> str:
    out = ["| items | shingles | pairs >= 0.8 | shingle ms | pairs ms (index) | pairs CPU ms (index) "
           "| pairs ms (all pairs) | reduce ms | reduce ms with rule |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows_:
        brute = f"{1000 * r['brute_force_s']:.0f}" if "brute_force_s" in r else "-"
        out.append(f"| {r['items']:,} | {r['shingles']:,} | {r['pairs']:,} | {1000 * r['shingle_s']:.0f} | "
                   f"{1000 * r['pairs_s']:.0f} | {1000 * r['pairs_cpu_s']:.0f} | {brute} | {1000 * r['reduce_s']:.0f} | "
                   f"{1000 * r['reduce_dup_s']:.0f} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=qh.REPO_ROOT / qh.DATA_RELATIVE)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--budgets", type=qh._budgets, default=qh.DEFAULT_BUDGETS)
    ap.add_argument("--thresholds", default=",".join(f"{t:g}" for t in DEFAULT_THRESHOLDS))
    ap.add_argument("--changes", type=int, default=2, help="words changed per mirrored paragraph")
    ap.add_argument("--timing-only", action="store_true")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if not args.data.is_file():
        print(f"HotpotQA sample not found at {args.data}; nothing to benchmark")
        return 0
    thresholds = tuple(float(x) for x in args.thresholds.split(",") if x)
    questions = qh.load_questions(args.data, args.limit)
    result: dict[str, Any] = {"questions": len(questions), "changes": args.changes}
    if not args.timing_only:
        cells = quality(questions, args.budgets, thresholds, args.changes, progress=True)
        print(report(cells, args.budgets, thresholds, len(questions), args.changes))
        print()
        result["quality"] = {k: {str(b): c.summary() for b, c in v.items()} for k, v in cells.items()}
    every = qh.load_questions(args.data, None)
    tim = timing(every, (1_000, 10_000), args.changes)
    print(timing_report(tim))
    result["timing"] = tim
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
