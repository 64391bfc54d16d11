"""The long fuzz run: the families of ``tests/test_fuzz.py`` with many more examples.

    .venv/bin/python bench/fuzz_report.py                 # default sizes (a few minutes)
    .venv/bin/python bench/fuzz_report.py --scale 0.2     # quicker
    .venv/bin/python bench/fuzz_report.py --save fuzz-failures --slow

Prints one table (family, inputs tried, inputs that broke the rule, outcomes) and then
every kind of failure with up to two example inputs. ``--save DIR`` copies the first
inputs of each failure kind into DIR (one folder each, with PROBLEM.txt) so they can be
minimised and added to ``tests/fuzz_corpus/``. ``--slow`` adds the 10 MiB pathological
items (one repeated character, which tiktoken counts at ~1 s/MB). Exit status 1 when any
input broke the rule. The inputs are deterministic (hypothesis ``derandomize``), so two
runs with the same sizes try the same inputs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _fuzz_module():
    sys.path.insert(0, str(REPO))
    spec = importlib.util.spec_from_file_location("ctxbudget_test_fuzz", REPO / "tests" / "test_fuzz.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _slow_family(fz, root: Path, tally) -> None:
    """10 MiB items the tokenizer finds hardest: one character repeated, spaces, newlines."""
    ten_mib = 10 * 1024 * 1024
    policy = REPO / "policies" / "support-assistant.yaml"
    for name, text in [("one_char", "x" * ten_mib), ("spaces", " " * ten_mib), ("newlines", "\n" * ten_mib),
                       ("words", ("refund annual plan " * (ten_mib // 19 + 1))[:ten_mib])]:
        body = (json.dumps({"source_id": name, "content": text, "relevance_score": 0.5}) + "\n").encode()
        case = fz.CandidateCase(body, note=f"10 MiB {name}", rows=fz._parse_rows(body))
        with fz.case_folder(root) as folder:
            t0 = time.perf_counter()
            outcome, problems = fz.check_candidates_file(case, policy, folder, tally)
            seconds = time.perf_counter() - t0
            tally.record("candidates/10MiB_pathological", outcome.split(" ")[0], problems,
                         f"{case.note} ({seconds:.1f} s)")
            tally.notes[f"10 MiB {name}: {seconds:.1f} s"] += 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every example count")
    ap.add_argument("--policy-examples", type=int, default=300, help="per policy family")
    ap.add_argument("--candidate-examples", type=int, default=300, help="per candidate family")
    ap.add_argument("--library-examples", type=int, default=150, help="candidate sets (x4 strategies)")
    ap.add_argument("--only", help="run only families whose name contains this")
    ap.add_argument("--save", type=Path, help="copy failing inputs here")
    ap.add_argument("--slow", action="store_true", help="add the 10 MiB pathological items")
    args = ap.parse_args(argv)

    fz = _fuzz_module()
    tally = fz.Tally(save_dir=args.save)
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
    scale = lambda n: max(1, int(n * args.scale))  # noqa: E731
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ctxbudget-fuzz-") as tmp:
        root = Path(tmp)
        for name in sorted(fz.POLICY_FAMILIES):
            if args.only and args.only not in name:
                continue
            started = time.perf_counter()
            fz.run_policy_family(name, scale(args.policy_examples), root, tally)
            print(f"  {name}: {tally.tried[name]} inputs, {time.perf_counter() - started:.0f} s", file=sys.stderr)
        for name in sorted(fz.CANDIDATE_FAMILIES):
            if args.only and args.only not in name:
                continue
            started = time.perf_counter()
            fz.run_candidate_family(name, scale(args.candidate_examples), root, tally)
            print(f"  {name}: {tally.tried[name]} inputs, {time.perf_counter() - started:.0f} s", file=sys.stderr)
        if not args.only or "library" in args.only:
            started = time.perf_counter()
            fz.run_library_family(scale(args.library_examples), tally)
            print(f"  library: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        if not args.only or "corpus" in args.only:
            for rel in fz.corpus_cases():
                with fz.case_folder(root) as folder:
                    outcome, problems = fz.replay_corpus_file(rel, folder)
                tally.record("corpus/replay", outcome.replace(", ", "+").split(" ")[0], problems, rel)
        if args.slow:
            _slow_family(fz, root, tally)
    print(tally.table())
    print(f"\n{sum(tally.tried.values())} inputs in {time.perf_counter() - t0:.0f} s")
    failures = tally.failures()
    if failures:
        print("\nfailures by kind (first examples):\n" + failures)
    return 1 if sum(tally.failed.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
