"""Retrieval quality of ``ctxbudget pack``, before and after issue 15 (stemming, stopwords,
and a calibration that does not shrink with the question's length).

Usage (from the repository root)::

    .venv/bin/python bench/pack_quality.py                         # both parts
    .venv/bin/python bench/pack_quality.py --part hotpot --limit 100 --budgets 256,512,1024
    .venv/bin/python bench/pack_quality.py --part docs --docs /usr/share/doc/nodejs/api

Everything runs through pack's own path (:func:`engine.retrieval.pack.index_corpus` then
:func:`engine.retrieval.pack.pack_indexed`, which is what ``ctxbudget pack`` runs): files on
disk, the hierarchical index, search, candidates, the policy's decision and the assembled
context. The corpus is indexed once per part and each configuration gets its own search over
it. The policy is the example's (``examples/policy.yaml``: ``min_relevance`` 0.15, hierarchy
rule, at most 3 items per document, optimal) with the budget replaced; nothing is written
to an audit log.

Configurations (rows)
---------------------
* ``before``: no stemmer, no identifier split, the calibration before issue 15
  (``raw / Σ idf`` over every query term; ``engine.retrieval.search.LEGACY_CALIBRATION``):
  what ``pack`` did.
* ``stemming``: the stemmer alone (Snowball English), old calibration.
* ``calibration``: the new calibration alone (``raw / ref``, the most evidence one node
  holds), no stemmer.
* ``stem-calib``: both, without the camelCase split of identifiers.
* ``after``: the default now: stemmer, new calibration, camelCase words also give their
  parts ("readFile" → readfile, read, file).
* ``after-hybrid``, ``after-dense`` (``--configs``, with the ``ctxbudget[dense]`` extra):
  the same with ``--scorer hybrid`` / ``dense`` (all-MiniLM-L6-v2).

Part A: HotpotQA
----------------
The first ``--limit`` questions (default 500) of the HotpotQA distractor dev sample
(CC BY-SA 4.0, Yang et al., EMNLP 2018; ``../shared/eval-data/hotpotqa-dev-distractor-500/``
relative to the repository root, or ``--data``). Corpus: every distinct paragraph of those
questions (gold and distractor, deduplicated by title) as one Markdown file
``# <title>`` + text, so each question is asked of the *pooled* corpus (about 10 paragraphs
per question), not of its own ten. Metrics per budget: supporting-fact recall (a gold
sentence counts when its text is in the assembled context), gold-paragraph recall (the
whole paragraph's text is in it), the rate of empty contexts, and mean context tokens.
Paired comparison of ``after`` against every other row: mean per-question difference with
a 95 % normal interval, questions won and lost.

Part B: a documentation corpus
------------------------------
The Node.js API documentation as Debian's ``nodejs`` package installs it (64 Markdown
files, 3.4 MB; ``--docs``, default ``/usr/share/doc/nodejs/api``; when it is missing the
part says so and is skipped) and the questions of ``bench/pack_quality_questions.json``
(written for this benchmark, each with its answer section(s) by file and heading; source
and licence in the file). A question is answered when the context holds an answer section,
an ancestor of it, or a paragraph or sentence inside it. Reported at ``--docs-budget``
tokens (default 1,500): the answered rate with a 95 % Wilson interval per row, the paired
difference after − before, and the questions each row misses. Goal: ≥ 90 % for ``after``.

Output: Markdown on stdout, JSON in ``bench/results/pack_quality.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_hotpot as qh  # noqa: E402  (a sibling script, not a package)

from engine import get_tokenizer, load_policy  # noqa: E402
from engine.policy import Policy  # noqa: E402
from engine.retrieval.analyzer import Analyzer  # noqa: E402
from engine.retrieval.index import IndexLevel  # noqa: E402
from engine.retrieval.pack import Indexed, index_corpus, pack_indexed  # noqa: E402
from engine.retrieval.search import CALIBRATION, LEGACY_CALIBRATION, Searched, SemanticSearch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_POLICY = REPO_ROOT / "examples" / "policy.yaml"
QUESTIONS_FILE = Path(__file__).resolve().parent / "pack_quality_questions.json"
DEFAULT_DOCS = Path("/usr/share/doc/nodejs/api")
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "pack_quality.json"
DEFAULT_BUDGETS = (256, 512, 1024)
DOCS_BUDGET = 1500
DOCS_GOAL = 0.90

#: name -> (analyzer, calibration, scorer); "after" is the default of engine.retrieval.search.
CONFIGS: dict[str, tuple[Analyzer, str, str]] = {
    "before": (Analyzer(stemmer=None, split_identifiers=False), LEGACY_CALIBRATION, "bm25"),
    "stemming": (Analyzer(split_identifiers=False), LEGACY_CALIBRATION, "bm25"),
    "calibration": (Analyzer(stemmer=None, split_identifiers=False), CALIBRATION, "bm25"),
    "stem-calib": (Analyzer(split_identifiers=False), CALIBRATION, "bm25"),
    "issue15": (Analyzer(), CALIBRATION, "bm25"),  # issue 15's retrieval: no heading weights
    "after": (Analyzer(), CALIBRATION, "bm25"),
    # --scorer hybrid / dense (the ctxbudget[dense] extra: all-MiniLM-L6-v2); not run by default
    "after-hybrid": (Analyzer(), CALIBRATION, "hybrid"),
    "after-dense": (Analyzer(), CALIBRATION, "dense"),
}
LEXICAL = ("before", "stemming", "calibration", "stem-calib", "issue15", "after")
#: SemanticSearch options per configuration beyond (analyzer, calibration, scorer).
OPTIONS: dict[str, dict[str, Any]] = {name: {"headings": (0, 0)} for name in CONFIGS if not name.startswith("after")}
REFERENCE = "after"


# --------------------------------------------------------------------------- shared


class _OnceSearch:
    """A search that answers each query once: the budgets of one question share it
    (``pack_indexed`` reads ``search_with_stats``, ``analyzer`` and ``scorer``)."""

    def __init__(self, search: SemanticSearch) -> None:
        self._search, self._memo = search, {}  # type: dict[tuple[str, int], Searched]
        self.analyzer, self.scorer = search.analyzer, search.scorer

    def search_with_stats(self, query: str, top_k: int = 10) -> Searched:
        key = (query, top_k)
        if key not in self._memo:
            self._memo.clear()  # one question at a time
            self._memo[key] = self._search.search_with_stats(query, top_k)
        return self._memo[key]


class _MemoEmbedder:
    """The extra's model, each text embedded once (dense and hybrid rows share it)."""

    def __init__(self) -> None:
        self._embed: Any = None
        self._memo: dict[str, Any] = {}

    def __call__(self, texts: Sequence[str]) -> Any:
        import numpy as np

        if self._embed is None:
            from engine.retrieval.search import Scorer, _load_dense_embedder

            self._embed = _load_dense_embedder(Scorer.DENSE)
        todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
        todo.sort(key=len)  # similar lengths batch together: far less padding
        for start in range(0, len(todo), 1024):
            part = todo[start:start + 1024]
            for text, vec in zip(part, self._embed(part)):
                self._memo[text] = vec
        return np.stack([self._memo[t] for t in texts])


def searches(indexed: Indexed, configs: Sequence[str]) -> dict[str, _OnceSearch]:
    """One search per configuration over the same index."""
    out = {}
    embedder = _MemoEmbedder() if any(CONFIGS[c][2] != "bm25" for c in configs) else None
    for name in configs:
        analyzer, calibration, scorer = CONFIGS[name]
        out[name] = _OnceSearch(SemanticSearch(indexed.index, analyzer=analyzer, calibration=calibration,
                                               scorer=scorer, embedder=embedder if scorer != "bm25" else None,
                                               **OPTIONS.get(name, {})))
    return out


def example_policy(budget: int) -> Policy:
    """The example policy with ``budget.max_tokens = budget`` (its audit log is not used)."""
    return load_policy(EXAMPLE_POLICY).replace(max_tokens=budget)


def normalise(text: str) -> str:
    """Whitespace collapsed, for "is this text in the context" checks."""
    return " ".join(text.split())


def paired(ref: Sequence[float], other: Sequence[float]) -> dict[str, Any]:
    """``ref − other`` per question: mean, 95 % normal interval, wins, losses."""
    return qh.paired(ref, other)


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a rate ``hits / n``."""
    if n == 0:
        return (0.0, 0.0)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _fmt_paired(p: Mapping[str, Any]) -> str:
    lo, hi = p["ci95"]
    return f"{p['mean_diff']:+.3f} [{lo:+.3f}, {hi:+.3f}], {p['wins']} won / {p['losses']} lost"


# --------------------------------------------------------------------------- part A: HotpotQA


@dataclass(frozen=True, slots=True)
class HotpotCorpus:
    """The pooled paragraphs of some HotpotQA questions, written as one file each."""

    folder: Path
    paragraphs: dict[str, str]  # title -> paragraph text (sentences joined)
    sentences: dict[str, tuple[str, ...]]


def write_hotpot_corpus(questions: Sequence[qh.Question], folder: Path) -> HotpotCorpus:
    """Each distinct title once (the first text seen), as ``NNNNN.md``: ``# title``, text."""
    sentences: dict[str, tuple[str, ...]] = {}
    for q in questions:
        for title, sents in q.paragraphs:
            sentences.setdefault(title, sents)
    paragraphs = {}
    for k, (title, sents) in enumerate(sentences.items()):
        text = "".join(sents).strip()
        paragraphs[title] = text
        (folder / f"{k:05d}.md").write_text(f"# {title}\n\n{text}\n", encoding="utf-8")
    return HotpotCorpus(folder, paragraphs, sentences)


def hotpot_scores(q: qh.Question, corpus: HotpotCorpus, context: str) -> tuple[float, float]:
    """(supporting-fact recall, gold-paragraph recall) of one context."""
    ctx = normalise(context)
    facts = [normalise(corpus.sentences[t][i]) for t, i in q.facts
             if t in corpus.sentences and i < len(corpus.sentences[t])]
    fact_recall = sum(1 for f in facts if f and f in ctx) / len(facts) if facts else 0.0
    gold = list(dict.fromkeys(t for t, _ in q.facts))
    para_recall = sum(1 for t in gold if normalise(corpus.paragraphs.get(t, "\0")) in ctx) / len(gold) if gold else 0.0
    return fact_recall, para_recall


def run_hotpot(data: Path, limit: int | None, budgets: Sequence[int], configs: Sequence[str],
               progress: bool = True) -> dict[str, Any]:
    questions = qh.load_questions(data, limit)
    policies = {b: example_policy(b) for b in budgets}
    count = get_tokenizer().count
    with tempfile.TemporaryDirectory(prefix="ctxbudget-hotpot-") as tmp:
        corpus = write_hotpot_corpus(questions, Path(tmp))
        t0 = time.perf_counter()
        indexed = index_corpus([corpus.folder])
        index_s = time.perf_counter() - t0
        found = searches(indexed, configs)
        # per[config][budget] = list of (fact recall, paragraph recall, empty, tokens) per question
        per: dict[str, dict[int, list[tuple[float, float, bool, int]]]] = {c: {b: [] for b in budgets} for c in configs}
        t1 = time.perf_counter()
        for n, q in enumerate(questions, 1):
            for c in configs:
                for b in budgets:
                    packed = pack_indexed(policies[b], q.question, indexed, found[c])  # type: ignore[arg-type]
                    ctx = packed.decided.allocation.context
                    fr, pr = hotpot_scores(q, corpus, ctx)
                    per[c][b].append((fr, pr, not ctx.strip(), count(ctx) if ctx else 0))
            if progress and (n % 25 == 0 or n == len(questions)):
                print(f"  hotpot {n}/{len(questions)} questions, {time.perf_counter() - t1:.0f} s", file=sys.stderr,
                      flush=True)
    summary: dict[str, Any] = {"questions": len(questions), "paragraphs": len(corpus.paragraphs),
                               "index_seconds": round(index_s, 1), "rows": {}, "paired": {}}
    for c in configs:
        summary["rows"][c] = {str(b): {"fact_recall": qh.mean([x[0] for x in per[c][b]]),
                                       "paragraph_recall": qh.mean([x[1] for x in per[c][b]]),
                                       "empty_rate": qh.mean([float(x[2]) for x in per[c][b]]),
                                       "mean_tokens": qh.mean([float(x[3]) for x in per[c][b]])}
                              for b in budgets}
    if REFERENCE in configs:
        for c in configs:
            if c == REFERENCE:
                continue
            summary["paired"][c] = {str(b): {
                "fact_recall": paired([x[0] for x in per[REFERENCE][b]], [x[0] for x in per[c][b]]),
                "paragraph_recall": paired([x[1] for x in per[REFERENCE][b]], [x[1] for x in per[c][b]])}
                for b in budgets}
    return summary


def report_hotpot(s: Mapping[str, Any], budgets: Sequence[int], configs: Sequence[str]) -> str:
    lines = [f"## A. HotpotQA, pooled corpus: {s['questions']} questions over {s['paragraphs']} paragraphs "
             f"(indexed in {s['index_seconds']} s)", ""]
    head = "| row | " + " | ".join(f"fact recall @{b}" for b in budgets) + " | " \
           + " | ".join(f"paragraph recall @{b}" for b in budgets) + " | " \
           + " | ".join(f"empty @{b}" for b in budgets) + " |"
    lines += [head, "|" + "---|" * (1 + 3 * len(budgets))]
    for c in configs:
        r = s["rows"][c]
        lines.append(f"| {c} | " + " | ".join(f"{r[str(b)]['fact_recall']:.3f}" for b in budgets) + " | "
                     + " | ".join(f"{r[str(b)]['paragraph_recall']:.3f}" for b in budgets) + " | "
                     + " | ".join(f"{r[str(b)]['empty_rate']:.1%}" for b in budgets) + " |")
    if s["paired"]:
        lines += ["", f"Paired, {REFERENCE} − row, supporting-fact recall (mean [95 % CI], questions won / lost):", ""]
        lines += ["| row | " + " | ".join(f"@{b}" for b in budgets) + " |", "|" + "---|" * (1 + len(budgets))]
        for c, by_b in s["paired"].items():
            lines.append(f"| {c} | " + " | ".join(_fmt_paired(by_b[str(b)]["fact_recall"]) for b in budgets) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- part B: documentation


def heading_key(text: str | None) -> str:
    """A heading as the question file names it: backticks dropped, whitespace collapsed."""
    return normalise((text or "").replace("`", ""))


def load_doc_questions(path: Path = QUESTIONS_FILE) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    out: list[dict[str, Any]] = data["questions"]
    return out


def resolve_answers(indexed: Indexed, questions: Sequence[Mapping[str, Any]]) -> tuple[list[set[str]], list[str]]:
    """Per question, the SECTION node ids of its answers; and every (file, heading) that
    names no section (a mistake in the question file, or another version of the docs)."""
    doc_of = {f.path: f.doc_id for f in indexed.corpus}
    sections: dict[tuple[str, str], list[str]] = {}
    for node in indexed.index.nodes.values():
        if node.level is IndexLevel.SECTION:
            sections.setdefault((node.doc_id, heading_key(node.title)), []).append(node.node_id)
    resolved, missing = [], []
    for q in questions:
        ids: set[str] = set()
        for file, heading in q["answers"]:
            doc = doc_of.get(file)
            found = sections.get((doc, heading_key(heading)), []) if doc else []
            if not found:
                missing.append(f"{file}: {heading}")
            ids.update(found)
        resolved.append(ids)
    return resolved, missing


def answered(indexed: Indexed, included: Sequence[str], answers: set[str]) -> bool:
    """Whether an included node is an answer section, an ancestor of one, or inside one."""
    index = indexed.index
    for node_id in included:
        if node_id not in index.nodes:
            continue
        if node_id in answers or any(a.node_id in answers for a in index.ancestors(node_id)):
            return True
        if any(node_id in {x.node_id for x in index.ancestors(a)} for a in answers):
            return True
    return False


def run_docs(docs: Path, budget: int, configs: Sequence[str], questions_file: Path = QUESTIONS_FILE,
             glob: str | None = "*.md") -> dict[str, Any]:
    """Part B over ``docs``: the files matching ``glob`` (named one by one), or with
    ``glob`` ``None`` the folder itself (ids keep the path below it)."""
    questions = load_doc_questions(questions_file)
    files = sorted(docs.glob(glob)) if glob is not None else sorted(f for f in docs.rglob("*") if f.is_file())
    t0 = time.perf_counter()
    indexed = index_corpus(files if glob is not None else [docs])
    index_s = time.perf_counter() - t0
    answers, missing = resolve_answers(indexed, questions)
    policy = example_policy(budget)
    found = searches(indexed, configs)
    hits: dict[str, list[bool]] = {c: [] for c in configs}
    for q, ans in zip(questions, answers):
        for c in configs:
            packed = pack_indexed(policy, q["q"], indexed, found[c])  # type: ignore[arg-type]
            hits[c].append(bool(ans) and answered(indexed, [d.source_id for d in packed.decided.allocation.included],
                                                  ans))
    n = len(questions)
    rows = {c: {"answered": sum(hits[c]), "rate": sum(hits[c]) / n if n else 0.0,
                "wilson95": list(wilson(sum(hits[c]), n)),
                "missed": [q["q"] for q, h in zip(questions, hits[c]) if not h]} for c in configs}
    out: dict[str, Any] = {"docs": str(docs), "questions_file": questions_file.name, "files": len(indexed.files), "bytes": sum(f.stat().st_size for f in files),
                           "index_seconds": round(index_s, 1), "questions": n, "budget": budget,
                           "unresolved_answers": missing, "rows": rows, "paired": {},
                           "per_question": {c: hits[c] for c in configs}}
    if REFERENCE in configs:
        ref = [float(h) for h in hits[REFERENCE]]
        out["paired"] = {c: paired(ref, [float(h) for h in hits[c]]) for c in configs if c != REFERENCE}
    return out


def report_docs(s: Mapping[str, Any], configs: Sequence[str]) -> str:
    lines = [f"## B. Documentation ({s.get('questions_file', '')}): {s['questions']} questions over {s['files']} files of {s['docs']} "
             f"({s['bytes'] / 1e6:.1f} MB, indexed in {s['index_seconds']} s), budget {s['budget']} tokens", ""]
    if s["unresolved_answers"]:
        lines += ["**Answer sections not found in this corpus** (question file or docs version): "
                  + "; ".join(s["unresolved_answers"]), ""]
    lines += ["| row | answer section in context | 95 % Wilson | paired after − row |", "|---|---|---|---|"]
    for c in configs:
        r = s["rows"][c]
        lo, hi = r["wilson95"]
        pair = _fmt_paired(s["paired"][c]) if c in s["paired"] else "-"
        lines.append(f"| {c} | {r['answered']}/{s['questions']} = {r['rate']:.1%} | [{lo:.1%}, {hi:.1%}] | {pair} |")
    goal = s["rows"].get(REFERENCE, {}).get("rate")
    if goal is not None:
        lines += ["", f"Goal ≥ {DOCS_GOAL:.0%} for {REFERENCE}: {'met' if goal >= DOCS_GOAL else 'NOT met'} "
                      f"({goal:.1%})."]
    for c in configs:
        if s["rows"][c]["missed"]:
            lines += ["", f"Missed by {c}: " + "; ".join(s["rows"][c]["missed"])]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _budgets(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"budgets must be whole numbers separated by commas, got {text!r}") from None
    if not out or any(b <= 0 for b in out):
        raise argparse.ArgumentTypeError(f"budgets must be positive, got {text!r}")
    return out


def _configs(text: str) -> tuple[str, ...]:
    out = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in out if x not in CONFIGS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"unknown configuration(s) {bad}; use some of {', '.join(CONFIGS)}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--part", choices=["both", "hotpot", "docs"], default="both")
    ap.add_argument("--data", type=Path, default=REPO_ROOT / qh.DATA_RELATIVE, help="HotpotQA JSONL")
    ap.add_argument("--limit", type=int, default=500, help="HotpotQA questions (default 500)")
    ap.add_argument("--budgets", type=_budgets, default=DEFAULT_BUDGETS, help="HotpotQA budgets (default 256,512,1024)")
    ap.add_argument("--docs", type=Path, default=None,
                    help=f"documentation folder (default: the question file's corpus.default_path, {DEFAULT_DOCS} for "
                         "the default questions)")
    ap.add_argument("--docs-glob", default=None,
                    help="files of --docs to index (default: the question file's corpus.glob, *.md for the default "
                         "questions; the whole folder when it is null)")
    ap.add_argument("--docs-budget", type=int, default=DOCS_BUDGET, help="budget for part B (default 1500)")
    ap.add_argument("--questions", type=Path, default=QUESTIONS_FILE, help="question file for part B")
    ap.add_argument("--configs", type=_configs, default=LEXICAL,
                    help=f"rows (default {','.join(LEXICAL)}; also after-hybrid, after-dense with the dense extra)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results")
    args = ap.parse_args(argv)
    corpus = json.loads(args.questions.read_text(encoding="utf-8")).get("corpus", {})
    if args.docs is None:
        args.docs = Path(corpus.get("default_path") or DEFAULT_DOCS)
    if args.docs_glob is None:
        args.docs_glob = corpus.get("glob", "*.md")
    result: dict[str, Any] = {"python": platform.python_version(), "configs": list(args.configs)}
    print("# pack retrieval quality, before / after issue 15\n")
    if args.part in ("both", "hotpot"):
        if not args.data.is_file():
            print(f"Part A skipped: the HotpotQA sample is not at {args.data} (pass --data PATH).\n")
        else:
            result["hotpot"] = run_hotpot(args.data, args.limit, args.budgets, args.configs)
            print(report_hotpot(result["hotpot"], args.budgets, args.configs) + "\n")
    if args.part in ("both", "docs"):
        if not args.docs.is_dir() or not any(args.docs.glob(args.docs_glob or "*")):
            print(f"Part B skipped: no {args.docs_glob or ''} files under {args.docs} (the corpus of "
                  f"{args.questions.name}; install it or pass --docs PATH).\n")
        else:
            result["docs"] = run_docs(args.docs, args.docs_budget, args.configs, args.questions, args.docs_glob)
            print(report_docs(result["docs"], args.configs) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
