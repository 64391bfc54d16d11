"""Indexing speed and query latency of the persistent index, end to end through the CLI.

    .venv/bin/python bench/index_speed.py                       # the Node.js API docs (Markdown)
    .venv/bin/python bench/index_speed.py /usr/share/doc/git    # any folder(s) or files
    .venv/bin/python bench/index_speed.py --runs 11 --json

What it measures, each in a fresh ``ctxbudget`` process (``subprocess.run``, wall clock;
CPU is the child's user + system time from ``resource.getrusage``):

1. ``ctxbudget index build PATH... --out INDEX`` from scratch: corpus MB / wall seconds,
   and MB per CPU second (what the machine could do without other load).
2. the same build again after one file changed: the incremental update.
3. ``ctxbudget pack --policy P --query Q --index INDEX`` for each question, ``--runs``
   times after a warm-up: median and min milliseconds, CLI start-up included (with
   bytecode written and read, as an installed package has it: the children run without
   ``PYTHONDONTWRITEBYTECODE``).
4. ``ctxbudget pack --policy P --query Q PATH...`` once: what every query cost before.
5. in-process, the phases of one ``pack --index`` (load, searcher, search, rows, decide),
   wall and CPU milliseconds: where the end-to-end time goes.

The default corpus is the ``.md`` files of ``/usr/share/doc/nodejs/api`` (Debian's nodejs
package: 64 files, 3.5 MB), the corpus of issue 15. Goals (issue 15): indexing >= 2 MB/s;
a query against a prebuilt index of a 3-5 MB corpus <= 200 ms end to end. Nothing here
asserts them: timings depend on the machine and its load (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NODE_DOCS = Path("/usr/share/doc/nodejs/api")
QUESTIONS = (
    "How do I read a file line by line?",
    "How can I limit the memory of a worker thread?",
    "What does the highWaterMark option of a stream do?",
    "How do I compress data with gzip?",
    "How do I handle uncaught exceptions?",
)
POLICY = """apiVersion: ctxbudget/v1
kind: BudgetPolicy
metadata: {name: bench-index, revision: "1"}
spec:
  budget: {max_tokens: 1500, template: "[{source_id}] {content}"}
  hierarchy: {exclusive: true}
"""

#: The children may write bytecode, as an installed package has it: with
#: PYTHONDONTWRITEBYTECODE set (some shells and CI images set it) every process would
#: compile the whole engine from source again (~100 ms CPU of every pack --index).
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
_SCRIPT = Path(sys.executable).parent / "ctxbudget"
_CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "engine.cli"]


def _run(argv: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall and CPU seconds of one child process, and its result (it must exit 0)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=_ENV)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... exited {done.returncode}:\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done


def default_paths() -> list[str]:
    if not NODE_DOCS.is_dir():
        raise SystemExit(f"{NODE_DOCS} is not here (Debian's nodejs package); name a corpus: "
                         "bench/index_speed.py PATH...")
    return [str(p) for p in sorted(NODE_DOCS.glob("*.md"))]


def phases(index: Path, policy: Path, question: str) -> dict[str, tuple[float, float]]:
    """(wall ms, CPU ms) of each phase of one pack --index, in this process (imports first)."""
    out: dict[str, tuple[float, float]] = {}
    clock = [time.perf_counter(), time.process_time()]

    def lap(name: str) -> None:
        now = [time.perf_counter(), time.process_time()]
        out[name] = (round((now[0] - clock[0]) * 1000, 1), round((now[1] - clock[1]) * 1000, 1))
        clock[:] = now

    import numpy  # noqa: F401  (what every search needs; counted apart)

    from engine.retrieval.convert import search_rows
    from engine.retrieval.store import load_for_pack
    lap("import retrieval")
    built = load_for_pack(index)
    lap("load index + check files")
    searcher = built.searcher()  # type: ignore[misc]
    lap("load BM25 state")
    from engine.policy import load_policy
    lap("import policy")
    loaded = load_policy(str(policy))
    lap("load policy")
    from engine.retrieval.pack import OVERSIZE_FETCH, _set_aside_oversized, default_top_k
    top_k = default_top_k(loaded)
    searched = searcher.search_with_stats(question, top_k=OVERSIZE_FETCH * top_k)
    results = _set_aside_oversized(searched, built.index, top_k, loaded.budget.limit_tokens)[0].results
    lap("search")
    rows, _ = search_rows(results, built.index)
    lap("candidate rows")
    from engine.decide import decide
    lap("import decide (solver)")
    from engine.counts import policy_tokenizer
    policy_tokenizer(loaded)
    lap("load the policy's tokenizer")
    decide(rows, loaded)
    lap("decide")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="*", help="corpus files or folders (default: the Node.js API docs)")
    ap.add_argument("--runs", type=int, default=5, help="pack --index runs per question (default 5)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    paths = args.paths or default_paths()
    with tempfile.TemporaryDirectory(prefix="ctxbudget-index-speed-") as tmp_name:
        tmp = Path(tmp_name)
        corpus = tmp / "corpus"
        corpus.mkdir()
        copied: list[str] = []
        for p in map(Path, paths):  # a copy, so that the incremental step can edit a file
            dest = corpus / p.name
            (shutil.copytree if p.is_dir() else shutil.copy2)(p, dest)
            copied.append(str(dest))
        policy = tmp / "policy.yaml"
        policy.write_text(POLICY)
        index = tmp / "corpus.idx"
        wall, cpu, done = _run(_CLI + ["index", "build", *copied, "--out", str(index), "--json"])
        report = json.loads(done.stdout)
        mb = report["corpus_bytes"] / 1e6
        edited = next(Path(c) for c in copied if Path(c).is_file()) if any(Path(c).is_file() for c in copied) \
            else next(f for f in Path(copied[0]).rglob("*") if f.is_file())
        edited.write_bytes(edited.read_bytes() + b"\n\nOne more paragraph, added for the benchmark.\n")
        inc_wall, inc_cpu, inc = _run(_CLI + ["index", "build", *copied, "--out", str(index), "--json"])
        inc_report = json.loads(inc.stdout)
        _run(_CLI + ["pack", "--policy", str(policy), "--query", QUESTIONS[0], "--index", str(index)])  # warm-up
        queries = []
        for q in QUESTIONS:
            times = [_run(_CLI + ["pack", "--policy", str(policy), "--query", q, "--index", str(index)])
                     for _ in range(args.runs)]
            queries.append({"question": q, "median_ms": round(statistics.median(t[0] for t in times) * 1000),
                            "min_ms": round(min(t[0] for t in times) * 1000),
                            "cpu_median_ms": round(statistics.median(t[1] for t in times) * 1000)})
        before_wall, before_cpu, _ = _run(_CLI + ["pack", "--policy", str(policy), "--query", QUESTIONS[0], *copied])
        split = phases(index, policy, QUESTIONS[0])
    figures: dict[str, Any] = {
        "corpus": paths[0] if len(paths) == 1 else f"{len(paths)} paths under {os.path.commonpath(paths)}",
        "documents": report["documents"], "nodes": report["nodes"], "corpus_mb": round(mb, 2),
        "skipped": len(report["skipped"]),
        "build": {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "mb_per_s": round(mb / wall, 2),
                  "mb_per_cpu_s": round(mb / cpu, 2)},
        "update_one_file": {"wall_s": round(inc_wall, 2), "cpu_s": round(inc_cpu, 2),
                            "changed": inc_report["changed"], "unchanged": inc_report["unchanged"]},
        "pack_index": queries,
        "pack_index_median_ms": round(statistics.median(q["median_ms"] for q in queries)),
        "pack_paths_before": {"wall_s": round(before_wall, 2), "cpu_s": round(before_cpu, 2)},
        "phases_ms": split,
        "load_average": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"corpus: {figures['corpus']}: {figures['documents']} documents, {figures['corpus_mb']} MB, "
          f"{figures['nodes']} nodes, {figures['skipped']} skipped")
    b = figures["build"]
    print(f"index build:        {b['wall_s']:.2f} s wall, {b['cpu_s']:.2f} s CPU -> "
          f"{b['mb_per_s']:.2f} MB/s wall, {b['mb_per_cpu_s']:.2f} MB/CPU-s   (goal >= 2 MB/s)")
    u = figures["update_one_file"]
    print(f"update, 1 changed:  {u['wall_s']:.2f} s wall, {u['cpu_s']:.2f} s CPU "
          f"({len(u['changed'])} re-parsed, {u['unchanged']} kept)")
    for q in queries:
        print(f"pack --index:       {q['median_ms']:5d} ms median, {q['min_ms']:5d} ms min, "
              f"{q['cpu_median_ms']:5d} ms CPU  {q['question']!r}")
    print(f"pack --index, median of the medians: {figures['pack_index_median_ms']} ms   (goal <= 200 ms)")
    p = figures["pack_paths_before"]
    print(f"pack PATH... (indexes per query): {p['wall_s']:.2f} s wall, {p['cpu_s']:.2f} s CPU")
    print("phases of one pack --index in one process (wall/CPU ms): "
          + ", ".join(f"{k} {w}/{c}" for k, (w, c) in split.items()))
    print(f"load average {figures['load_average']} on {figures['cpus']} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
