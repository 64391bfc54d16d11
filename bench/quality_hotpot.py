"""Quality benchmark on HotpotQA: does each strategy put the evidence into the prompt?

Usage (from the repository root)::

    .venv/bin/python bench/quality_hotpot.py                      # all 500 questions
    .venv/bin/python bench/quality_hotpot.py --limit 50 --budgets 128,512
    .venv/bin/python bench/quality_hotpot.py --data PATH --out PATH --methods truncate,default

Data: the HotpotQA distractor dev sample (first 500 questions, CC BY-SA 4.0, Yang et al.,
EMNLP 2018) at ``../shared/eval-data/hotpotqa-dev-distractor-500/`` relative to the
repository root, or ``--data PATH``. When the file is absent the benchmark prints why and
exits 0, so it can sit in any pipeline.

Per question
------------
* Candidates: every paragraph (level PARAGRAPH, ``source_id = <question id>/<title>``,
  content ``"<title>: <sentences joined>"``) and every sentence (level SENTENCE,
  ``source_id = <paragraph id>#s<index>``, content ``"<title>: <sentence>"``,
  ``parent_id`` = its paragraph). The title prefix is how the dataset's README counts
  chunks, and a sentence such as "He lives in Los Angeles." means nothing without it.
* One scorer for every method: calibrated BM25 from :class:`engine.SemanticSearch`
  (relevance in [0, 1), one BM25 index per level, so a sentence is normalised against
  the question's sentences and a paragraph against its paragraphs). The nodes given to
  it are the dataset's own paragraphs and sentences (``engine.Node`` values), not a
  re-split by ``HierarchicalIndex``: pysbd's sentence boundaries do not always match
  HotpotQA's, and the gold facts are sentence *indices*.
* Token counts: exact cl100k (``engine.get_tokenizer()``); items are joined with the
  default separator ``"\\n\\n"``, whose tokens count against the budget for every method.

Methods (rows of the table)
---------------------------
* ``truncate``: top-k truncation, what a LangChain/Haystack "stuff" chain does: the
  retrieved *paragraphs* in score order, taken while the next one fits, then stop.
  Paragraphs only, because a typical RAG chain retrieves one granularity of chunk.
* ``greedy``, ``density``, ``balanced``: the engine's heuristics (``BudgetStrategy``)
  on all candidates with :meth:`engine.Policy.default` settings (no hierarchy rule,
  identity objective), i.e. the spec's strategies as written.
* ``greedy-h``, ``density-h``, ``balanced-h``: the same heuristics with
  ``hierarchy.exclusive: true`` too, so that the default is also compared with
  baselines that get the same rule it gets.
* ``optimal``: CP-SAT with identity objective and no hierarchy rule: the engine's
  default before this study (then optimal + hierarchy + power 2, until issue 11's
  bench/robustness.py chose today's default; the objectives here are spelled out in full).
* ``optimal-h-*``: CP-SAT with ``hierarchy.exclusive: true`` (a paragraph and its own
  sentences are never both taken) and one objective transform each: ``identity``,
  ``power`` with exponent 2 and 3, ``reciprocal_rank`` (k = 60). ``--methods sweep``
  adds power 1.5 / 2.5 / 4 / 6 and reciprocal rank k = 0 / 1 / 5. The configuration held
  to "at least as good as every baseline" is :data:`DEFAULT_METHOD`, chosen from this
  study (numbers and reasons in ``bench/README_quality.md``).

Metrics per method and budget: supporting-fact recall (a gold ``[title, sentence]`` is
covered when its SENTENCE item or its PARAGRAPH item is in the context), the rate of
questions with every fact covered, mean context tokens (the assembled text recounted),
and mean milliseconds per question spent choosing (scoring is shared and not counted).
A paired comparison of the default against every other method follows (mean recall
difference with a 95% normal interval, questions won and lost), then the list of
baselines whose mean recall or all-covered rate beats the default's at some budget.

Output: Markdown on stdout, JSON (summary and per-question values) in
``bench/results/quality_hotpot.json`` (the folder is git-ignored).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from engine import BudgetItem, BudgetStrategy, IndexLevel, Node, Policy, SemanticSearch, allocate, get_tokenizer
from engine.errors import CandidateError
from engine.policy import PLAIN_IDENTITY, POWER2_POOLED, Hierarchy, Objective, Transform

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Where the sample lives, relative to the repository root (never a machine path).
DATA_RELATIVE = Path("..") / "shared" / "eval-data" / "hotpotqa-dev-distractor-500" / "hotpot_dev_distractor_500.jsonl"
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "quality_hotpot.json"
DEFAULT_BUDGETS = (128, 256, 512, 1024)
#: The separator of Policy.default; truncation uses the same one so tokens compare.
SEPARATOR = "\n\n"
PARAGRAPH, SENTENCE = IndexLevel.PARAGRAPH.value, IndexLevel.SENTENCE.value
#: The method the benchmark holds to "at least as good as every baseline" — chosen from
#: the transform study on all 500 questions (bench/README_quality.md).
DEFAULT_METHOD = "optimal-h-power2"

Fact = tuple[str, int]
"""A supporting fact: (paragraph title, 0-based sentence index)."""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class Question:
    """One HotpotQA record: the question, its paragraphs and its gold facts."""

    qid: str
    question: str
    paragraphs: tuple[tuple[str, tuple[str, ...]], ...]
    facts: tuple[Fact, ...]


def parse_question(record: Mapping[str, Any]) -> Question:
    """A Question from one HotpotQA record (``_id``, ``question``, ``context``,
    ``supporting_facts``). Facts are de-duplicated, order kept."""
    paragraphs = tuple((str(title), tuple(str(s) for s in sents)) for title, sents in record["context"])
    facts = tuple(dict.fromkeys((str(t), int(i)) for t, i in record["supporting_facts"]))
    return Question(str(record["_id"]), str(record["question"]), paragraphs, facts)


def load_questions(path: Path, limit: int | None = None) -> list[Question]:
    """The first ``limit`` questions (all when None) of a HotpotQA JSONL file."""
    out: list[Question] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if limit is not None and len(out) >= limit:
                break
            if line.strip():
                out.append(parse_question(json.loads(line)))
    return out


# --------------------------------------------------------------------------- candidates


@dataclass(frozen=True, slots=True)
class Chunk:
    """One candidate: what it says, what it costs, how it scored and which facts it holds.

    ``covers`` are the (title, sentence index) pairs whose text is in ``content``: every
    sentence of the paragraph for a PARAGRAPH, one for a SENTENCE."""

    source_id: str
    level: str
    content: str
    tokens: int
    score: float
    parent_id: str | None
    covers: frozenset[Fact]
    #: The document it comes from (every retriever returns one): ``metadata.doc_id``.
    doc_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Nodes:
    """The one thing :class:`SemanticSearch` reads of an index: ``nodes``."""

    nodes: Mapping[str, Node]


def build_chunks(q: Question) -> tuple[Chunk, ...]:
    """Paragraph and sentence candidates of ``q`` (reading order: each paragraph, then
    its sentences), with exact cl100k token counts and score 0 (see :func:`score`)."""
    specs: list[tuple[str, str, str, str | None, frozenset[Fact]]] = []
    for title, sents in q.paragraphs:
        pid = f"{q.qid}/{title}"
        specs.append((pid, PARAGRAPH, f"{title}: {''.join(sents).strip()}", None,
                      frozenset((title, j) for j in range(len(sents)))))
        for j, sent in enumerate(sents):
            specs.append((f"{pid}#s{j}", SENTENCE, f"{title}: {sent.strip()}", pid, frozenset({(title, j)})))
    counts = get_tokenizer().count_many([s[2] for s in specs])
    return tuple(Chunk(sid, lvl, text, n, 0.0, parent, covers)
                 for (sid, lvl, text, parent, covers), n in zip(specs, counts))


def score(query: str, chunks: Sequence[Chunk]) -> tuple[Chunk, ...]:
    """``chunks`` with ``score`` set by calibrated BM25 (``engine.SemanticSearch``) over
    these chunks only; chunks the search does not return (no matching term) score 0."""
    nodes: dict[str, Node] = {}
    for order, c in enumerate(chunks):
        level = IndexLevel(c.level)
        nodes[c.source_id] = Node(c.source_id, "q", level, c.content, c.parent_id, 0, len(c.content), order)
    search = SemanticSearch(cast(Any, _Nodes(nodes)), levels=[IndexLevel.PARAGRAPH, IndexLevel.SENTENCE])
    try:
        found = {r.node_id: r.relevance_score for r in search.search(query, top_k=len(nodes))}
    except CandidateError as exc:  # a query of stopwords only: nothing is evidence
        if exc.code != "search.empty_query":
            raise
        found = {}
    return tuple(Chunk(c.source_id, c.level, c.content, c.tokens, float(found.get(c.source_id, 0.0)),
                       c.parent_id, c.covers) for c in chunks)


def candidates(q: Question) -> tuple[Chunk, ...]:
    """Scored candidates of ``q``: the one input every method sees."""
    return score(q.question, build_chunks(q))


def budget_items(chunks: Sequence[Chunk]) -> list[BudgetItem]:
    """The chunks as the engine's public ``BudgetItem`` (token counts given, not recounted)."""
    return [BudgetItem(c.content, c.score, c.tokens, c.source_id, c.level, _metadata(c)) for c in chunks]


def _metadata(c: Chunk) -> dict[str, str]:
    """``parent_id`` (the hierarchy link) and ``doc_id`` (the document), where set."""
    meta = {"parent_id": c.parent_id} if c.parent_id else {}
    if c.doc_id is not None:
        meta["doc_id"] = c.doc_id
    return meta


# --------------------------------------------------------------------------- metrics


def covered_facts(chosen: Iterable[Chunk]) -> frozenset[Fact]:
    """Every (title, sentence) whose text is in the chosen chunks."""
    out: set[Fact] = set()
    for c in chosen:
        out |= c.covers
    return frozenset(out)


def fact_recall(facts: Sequence[Fact], chosen: Iterable[Chunk]) -> float:
    """Fraction of the gold ``facts`` covered by ``chosen`` (1.0 when there are none)."""
    gold = set(facts)
    if not gold:
        return 1.0
    return len(gold & covered_facts(chosen)) / len(gold)


def all_covered_rate(recalls: Sequence[float]) -> float:
    """Fraction of questions whose recall is 1 (every gold fact in the context)."""
    return sum(1 for r in recalls if r >= 1.0) / len(recalls) if recalls else 0.0


def mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs) if xs else 0.0


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True, slots=True)
class Picked:
    """What one method put into the context, and the context's real token count."""

    chunks: tuple[Chunk, ...]
    context_tokens: int
    status: str = "heuristic"


def truncate(chunks: Sequence[Chunk], budget: int, separator_tokens: int) -> tuple[Chunk, ...]:
    """Top-k truncation: PARAGRAPH chunks by score (ties keep input order), taken while
    the next one fits in ``budget`` (each after the first also pays ``separator_tokens``),
    then stop: a smaller chunk further down is never tried, as in a "stuff" chain."""
    out: list[Chunk] = []
    used = 0
    for c in sorted((c for c in chunks if c.level == PARAGRAPH), key=lambda c: -c.score):
        need = c.tokens + (separator_tokens if out else 0)
        if used + need > budget:
            break
        out.append(c)
        used += need
    return tuple(out)


def _run_truncate(chunks: Sequence[Chunk], budget: int) -> Picked:
    tok = get_tokenizer()
    chosen = list(truncate(chunks, budget, tok.count(SEPARATOR)))
    n = tok.count(SEPARATOR.join(c.content for c in chosen))
    while chosen and n > budget:  # BPE merged across a boundary: drop the last, as a chain would
        chosen.pop()
        n = tok.count(SEPARATOR.join(c.content for c in chosen))
    return Picked(tuple(chosen), n)


def engine_runner(strategy: BudgetStrategy, *, exclusive: bool = False,
                  objective: Objective = PLAIN_IDENTITY) -> Callable[[Sequence[Chunk], int], Picked]:
    """A method that runs :func:`engine.allocate` with ``Policy.default(budget)`` plus the
    strategy, the hierarchy rule and the objective given here."""

    def run(chunks: Sequence[Chunk], budget: int) -> Picked:
        policy = Policy.default(budget, strategy=strategy, hierarchy=Hierarchy(exclusive=exclusive),
                                objective=objective)
        alloc = allocate(budget_items(chunks), policy)
        by_id = {c.source_id: c for c in chunks}
        status = alloc.selection.status if alloc.fallback_reason is None else "fallback"
        return Picked(tuple(by_id[d.source_id] for d in alloc.included), alloc.context_tokens, status)

    return run


@dataclass(frozen=True, slots=True)
class Method:
    """One row of the table: ``key`` for ``--methods`` and the JSON, ``label`` for humans,
    ``group`` ("core": run by default; "sweep": the wider transform study)."""

    key: str
    label: str
    run: Callable[[Sequence[Chunk], int], Picked] = field(repr=False)
    group: str = "core"


_OPT = BudgetStrategy.OPTIMAL


def _power(exponent: float) -> Objective:
    return dataclasses.replace(POWER2_POOLED, exponent=exponent)


def _rrf(k: int) -> Objective:
    return dataclasses.replace(PLAIN_IDENTITY, transform=Transform.RECIPROCAL_RANK, k=k)


METHODS: tuple[Method, ...] = (
    # The baselines, as the spec defines them (Policy.default: no hierarchy rule).
    Method("truncate", "top-k truncation (paragraphs)", _run_truncate),
    Method("greedy", "greedy (relevance order)", engine_runner(BudgetStrategy.GREEDY)),
    Method("density", "density (relevance per token)", engine_runner(BudgetStrategy.DENSITY)),
    Method("balanced", "balanced (level shares)", engine_runner(BudgetStrategy.BALANCED)),
    # The same heuristics given the hierarchy rule too: the fair comparison.
    Method("greedy-h", "greedy + hierarchy", engine_runner(BudgetStrategy.GREEDY, exclusive=True)),
    Method("density-h", "density + hierarchy", engine_runner(BudgetStrategy.DENSITY, exclusive=True)),
    Method("balanced-h", "balanced + hierarchy", engine_runner(BudgetStrategy.BALANCED, exclusive=True)),
    # The engine's default before this study (identity, no hierarchy rule); the shipped
    # default is now the study's winner, optimal-h-power2 (Policy.default: power 2, hierarchy on).
    Method("optimal", "optimal, identity, no hierarchy", engine_runner(_OPT)),
    # Optimal with the hierarchy rule, one objective transform each.
    Method("optimal-h-identity", "optimal + hierarchy, identity", engine_runner(_OPT, exclusive=True)),
    Method("optimal-h-power2", "optimal + hierarchy, power 2",
           engine_runner(_OPT, exclusive=True, objective=_power(2.0))),
    Method("optimal-h-power3", "optimal + hierarchy, power 3",
           engine_runner(_OPT, exclusive=True, objective=_power(3.0))),
    Method("optimal-h-rrf", "optimal + hierarchy, reciprocal rank k=60",
           engine_runner(_OPT, exclusive=True, objective=_rrf(60))),
    # The wider sweep behind the choice of default (--methods sweep).
    *(Method(f"optimal-h-power{e:g}", f"optimal + hierarchy, power {e:g}",
             engine_runner(_OPT, exclusive=True, objective=_power(e)), "sweep") for e in (1.5, 2.5, 4.0, 6.0)),
    *(Method(f"optimal-h-rrf{k}", f"optimal + hierarchy, reciprocal rank k={k}",
             engine_runner(_OPT, exclusive=True, objective=_rrf(k)), "sweep") for k in (0, 1, 5)),
)
METHOD_KEYS = tuple(m.key for m in METHODS)
#: The rows the default must match or beat at every budget (the brief's baselines, the
#: same heuristics with the hierarchy rule, and the engine's default before this study).
BASELINES = ("truncate", "greedy", "density", "balanced", "greedy-h", "density-h", "balanced-h", "optimal")
#: ``--methods`` shorthands. "sweep" keeps the default in, for the paired comparison.
METHOD_GROUPS = {
    "core": tuple(m.key for m in METHODS if m.group == "core"),
    "sweep": tuple(m.key for m in METHODS if m.group == "sweep" or m.key.startswith("optimal-h-")),
    "all": METHOD_KEYS,
}


# --------------------------------------------------------------------------- running


@dataclass(slots=True)
class Cell:
    """Per-question values of one method at one budget (mutable while running only)."""

    recall: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"questions": len(self.recall), "sf_recall": mean(self.recall),
                "all_facts_covered": all_covered_rate(self.recall), "mean_tokens": mean(self.tokens),
                "max_tokens": max(self.tokens, default=0), "ms_per_question": 1000 * mean(self.seconds),
                "statuses": dict(sorted(self.statuses.items()))}


def run(questions: Sequence[Question], budgets: Sequence[int], methods: Sequence[Method],
        progress: Callable[[int, int, float], None] | None = None,
        clock: Callable[[], float] = time.perf_counter) -> dict[str, dict[int, Cell]]:
    """Every method at every budget on every question: ``cells[method key][budget]``."""
    cells = {m.key: {b: Cell() for b in budgets} for m in methods}
    t0 = clock()
    for n, q in enumerate(questions, start=1):
        chunks = candidates(q)
        for m in methods:
            for b in budgets:
                start = clock()
                picked = m.run(chunks, b)
                elapsed = clock() - start
                if picked.context_tokens > b:
                    raise AssertionError(f"{m.key} used {picked.context_tokens} tokens of {b} on {q.qid}")
                cell = cells[m.key][b]
                cell.recall.append(fact_recall(q.facts, picked.chunks))
                cell.tokens.append(picked.context_tokens)
                cell.seconds.append(elapsed)
                cell.statuses[picked.status] = cell.statuses.get(picked.status, 0) + 1
        if progress is not None:
            progress(n, len(questions), clock() - t0)
    return cells


def paired(default: Sequence[float], other: Sequence[float]) -> dict[str, Any]:
    """Mean of ``default - other`` per question, its 95% normal interval, wins and losses."""
    diffs = [a - b for a, b in zip(default, other)]
    n = len(diffs)
    d = mean(diffs)
    sd = math.sqrt(math.fsum((x - d) ** 2 for x in diffs) / (n - 1)) if n > 1 else 0.0
    half = 1.96 * sd / math.sqrt(n) if n else 0.0
    return {"mean_diff": d, "ci95": [d - half, d + half], "wins": sum(1 for x in diffs if x > 0),
            "losses": sum(1 for x in diffs if x < 0)}


# --------------------------------------------------------------------------- report


def _table(title: str, methods: Sequence[Method], budgets: Sequence[int], cells: Mapping[str, Mapping[int, Cell]],
           metric: str, fmt: str, default: str | None) -> list[str]:
    head = f"| {title} | " + " | ".join(str(b) for b in budgets) + " |"
    lines = [head, "|---|" + "---:|" * len(budgets)]
    for m in methods:
        label = f"**{m.label} (default)**" if m.key == default else m.label
        vals = [format(cells[m.key][b].summary()[metric], fmt) for b in budgets]
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
    return lines


def report(cells: Mapping[str, Mapping[int, Cell]], methods: Sequence[Method], budgets: Sequence[int],
           n_questions: int, default: str | None) -> str:
    """The Markdown tables: one per metric (method × budget), then the paired comparison."""
    out = [f"HotpotQA distractor dev sample, {n_questions} questions; budgets in cl100k tokens.", ""]
    for title, metric, fmt in (("Supporting-fact recall", "sf_recall", ".3f"),
                               ("All facts covered", "all_facts_covered", ".3f"),
                               ("Mean context tokens", "mean_tokens", ".0f"),
                               ("ms per question", "ms_per_question", ".1f")):
        out += _table(title, methods, budgets, cells, metric, fmt, default) + [""]
    if default in cells:
        label = next(m.label for m in methods if m.key == default)
        out += [f"Default ({label}) minus each method, supporting-fact recall per question: "
                "mean [95% interval] (questions won / lost).", ""]
        out += ["| vs | " + " | ".join(str(b) for b in budgets) + " |", "|---|" + "---:|" * len(budgets)]
        for m in methods:
            if m.key == default:
                continue
            row = []
            for b in budgets:
                p = paired(cells[default][b].recall, cells[m.key][b].recall)
                row.append(f"{p['mean_diff']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] "
                           f"({p['wins']}/{p['losses']})")
            out.append(f"| {m.label} | " + " | ".join(row) + " |")
        out.append("")
        behind = shortfalls(cells, budgets, default)
        out.append("Baselines ahead of the default (mean over questions):" + (" none." if not behind else ""))
        for b in behind:
            line = f"- {b['method']} at {b['budget']}: {b['metric']} {b['baseline']:.3f} vs {b['default']:.3f}"
            if b["metric"] == "sf_recall":
                lo, hi = b["paired"]["ci95"]
                line += f" (recall difference {b['paired']['mean_diff']:+.3f}, 95% [{lo:+.3f}, {hi:+.3f}])"
            out.append(line)
        out.append("")
    return "\n".join(out)


def shortfalls(cells: Mapping[str, Mapping[int, Cell]], budgets: Sequence[int], default: str) -> list[dict[str, Any]]:
    """Every (baseline, budget, metric) where a :data:`BASELINES` row beats ``default``
    on mean recall or all-covered rate: the cases the README must explain."""
    out = []
    for key in BASELINES:
        if key not in cells:
            continue
        for b in budgets:
            mine, theirs = cells[default][b].summary(), cells[key][b].summary()
            for metric in ("sf_recall", "all_facts_covered"):
                if theirs[metric] > mine[metric] + 1e-12:
                    out.append({"method": key, "budget": b, "metric": metric, "baseline": theirs[metric],
                            "default": mine[metric],
                            "paired": paired(cells[default][b].recall, cells[key][b].recall)})
    return out


def to_json(cells: Mapping[str, Mapping[int, Cell]], methods: Sequence[Method], budgets: Sequence[int],
            questions: Sequence[Question], data: str, default: str | None) -> dict[str, Any]:
    return {
        "benchmark": "quality_hotpot",
        "data": data,
        "questions": len(questions),
        "question_ids": [q.qid for q in questions],
        "budgets": list(budgets),
        "default_method": default,
        "scorer": "engine.SemanticSearch bm25 (calibrated), levels PARAGRAPH+SENTENCE, per question",
        "tokenizer": "cl100k_base",
        "separator": SEPARATOR,
        "python": platform.python_version(),
        "methods": {m.key: {"label": m.label,
                            "budgets": {str(b): {**cells[m.key][b].summary(),
                                                 "per_question_recall": cells[m.key][b].recall,
                                                 "per_question_tokens": cells[m.key][b].tokens}
                                        for b in budgets}}
                    for m in methods},
        "paired_vs_default": ({m.key: {str(b): paired(cells[default][b].recall, cells[m.key][b].recall)
                                       for b in budgets} for m in methods if m.key != default}
                              if default in cells else {}),
        "baselines_ahead_of_default": shortfalls(cells, budgets, default) if default in cells else [],
    }


# --------------------------------------------------------------------------- CLI


def _budgets(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"budgets must be whole numbers separated by commas, got {text!r}") from None
    if not out or any(b < 1 for b in out):
        raise argparse.ArgumentTypeError(f"budgets must be whole numbers >= 1, got {text!r}")
    return out


def _methods(text: str) -> tuple[str, ...]:
    keys: list[str] = []
    for k in (k.strip() for k in text.split(",") if k.strip()):
        if k in METHOD_GROUPS:
            keys += METHOD_GROUPS[k]
        elif k == "default":
            keys.append(DEFAULT_METHOD)
        elif k in METHOD_KEYS:
            keys.append(k)
        else:
            raise argparse.ArgumentTypeError(
                f"unknown method {k!r}; use {', '.join(METHOD_GROUPS)}, 'default' or any of: {', '.join(METHOD_KEYS)}")
    if not keys:
        raise argparse.ArgumentTypeError("--methods is empty; e.g. --methods core")
    return tuple(dict.fromkeys(keys))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help=f"HotpotQA JSONL (default: <repo>/{DATA_RELATIVE.as_posix()})")
    parser.add_argument("--limit", type=int, default=None, help="first N questions (default: all)")
    parser.add_argument("--budgets", type=_budgets, default=DEFAULT_BUDGETS, help="comma-separated token budgets")
    parser.add_argument("--methods", type=_methods, default=METHOD_GROUPS["core"],
                        help="comma-separated groups (core [default], sweep, all), 'default', or method keys: "
                             + ", ".join(METHOD_KEYS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)

    data = args.data if args.data is not None else REPO_ROOT / DATA_RELATIVE
    shown = str(args.data) if args.data is not None else DATA_RELATIVE.as_posix() + " (from the repo root)"
    if not data.is_file():
        print(f"quality_hotpot: skipped, no HotpotQA sample at {shown}; "
              "get hotpot_dev_distractor_500.jsonl or pass --data PATH", file=sys.stderr)
        return 0
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    questions = load_questions(data, args.limit)
    methods = [m for m in METHODS if m.key in args.methods]
    default = DEFAULT_METHOD if DEFAULT_METHOD in args.methods else None

    def progress(n: int, total: int, elapsed: float) -> None:
        if not args.quiet and (n % 25 == 0 or n == total):
            print(f"  {n}/{total} questions, {elapsed:.0f} s", file=sys.stderr, flush=True)

    cells = run(questions, args.budgets, methods, progress)
    print(report(cells, methods, args.budgets, len(questions), default))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(to_json(cells, methods, args.budgets, questions, shown, default), indent=1) + "\n",
                        encoding="utf-8")
    print(f"JSON: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
