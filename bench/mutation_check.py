"""Mutation check: break the engine or the verifier on purpose; the tests must notice.

    .venv/bin/python bench/mutation_check.py                 # every mutant (a few minutes)
    .venv/bin/python bench/mutation_check.py --only repair-loop-disabled --only verify-noop
    .venv/bin/python bench/mutation_check.py --check         # only: does every mutant still apply?
    .venv/bin/python bench/mutation_check.py --together --suite --only verify-noop --only repair-loop-disabled

The repository (without .git and .venv) is copied to a temporary directory once; each
mutant patches one file of the copy by exact source text (the text must occur exactly
once and the patched file must compile, else the script stops: a stale mutant is an
error, not a pass), runs its tests there with ``python -m pytest`` (``PYTHONPATH`` puts
the copy's ``engine`` first; the script checks that it is the one imported) and
restores the file. A mutant is *killed* when its tests fail. Prints one table
(mutant → killed/survived, and the first test that failed) and exits 1 if any survived or the unmutated copy fails.

The suite runs a cheap in-process version on every run
(``tests/test_verify.py::test_each_checker_is_needed``: each checker of
``engine.verify.CHECKERS`` replaced by a no-op, one at a time), and
``tests/test_mutation_check.py`` checks that every mutant here still applies.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

VERIFY_TESTS = ("tests/test_verify.py", "tests/test_semantics.py")
ALL_TESTS = (*VERIFY_TESTS, "tests/test_bruteforce.py", "tests/test_rules.py")
ARCHIVE_TESTS = ("tests/test_policies.py", "tests/test_signing_policy.py")


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...] = ALL_TESTS
    regex: bool = False


def _checker_mutants() -> list[Mutant]:
    """Each checker of engine/verify.py returns no violation."""
    src = (REPO / "engine" / "verify.py").read_text(encoding="utf-8")
    out = []
    for name in re.findall(r"^def check_(\w+)\(v: _View\) -> list\[Violation\]:$", src, flags=re.M):
        head = f"def check_{name}(v: _View) -> list[Violation]:\n"
        out.append(Mutant(f"checker-{name}-noop", "engine/verify.py", head, head + "    return []\n", VERIFY_TESTS))
    return out


MUTANTS: list[Mutant] = [
    Mutant("verify-noop", "engine/verify.py",
           "    return Verifier(policy, cands, tokenizer=tokenizer).allocation(alloc)\n", "    return ()\n"),
    *_checker_mutants(),
    Mutant("repair-loop-disabled", "engine/allocation.py",
           r"^(\s*)while .*count > problem\.limit_tokens.*:$", r"\1while False:", regex=True),
    Mutant("verifier-minimum-always-excused", "engine/verify.py",
           "    a = v.alloc\n    if a is None or not any(",
           "    return True\n    a = v.alloc\n    if a is None or not any(",
           VERIFY_TESTS),
    Mutant("verifier-metadata-by-type", "engine/verify_semantics.py",
           "        return _is_number(a) and _is_number(b) and a == b\n",
           "        return type(a) is type(b) and a == b\n", VERIFY_TESTS),
    Mutant("verifier-braces-not-unescaped", "engine/verify_semantics.py",
           "            text.append(ch)\n            i += 2\n",
           "            text.append(ch * 2)\n            i += 2\n",
           VERIFY_TESTS),
    Mutant("engine-metadata-by-type", "engine/policy.py",
           "        return _number(have) and _number(want) and have == want\n",
           "        return type(have) is type(want) and have == want\n", VERIFY_TESTS),
    Mutant("engine-metadata-lists-shallow", "engine/policy.py",
           "        return len(have) == len(want) and all(map(_same, have, want))\n",
           "        return have == want\n", VERIFY_TESTS),
    Mutant("engine-render-by-replace", "engine/counts.py",
           "    return template.format(source_id=c.source_id, content=c.content, level=c.level)\n",
           "    return template.replace(\"{source_id}\", c.source_id).replace(\"{level}\", c.level)"
           ".replace(\"{content}\", c.content)\n", VERIFY_TESTS),
    Mutant("engine-group-key-str", "engine/problem.py",
           "        return metadata_group(c.metadata.get(rule.field or \"\"))\n",
           "        return str(c.metadata.get(rule.field or \"\"))\n", VERIFY_TESTS),
    Mutant("engine-prefer-parent-ceil", "engine/problem.py",
           "        cap = sum(1 for k in range(1, len(members) + 1) if k / len(members) < ratio)\n",
           "        cap = int(-(-ratio * len(members) // 1)) - 1\n", VERIFY_TESTS),
    Mutant("optimal-keeps-heuristic-with-unmet-minimum", "engine/strategies/cpsat.py",
           "    if obj < hint.objective and not hint.unmet:\n", "    if obj < hint.objective:\n"),
    Mutant("compile-ignores-source-item-caps", "engine/compile.py",
           "    RuleKind.SOURCE_MAX_ITEMS: _linear,\n",
           "    RuleKind.SOURCE_MAX_ITEMS: lambda cm, rule, guarded: None,\n"),
    Mutant("compile-ignores-level-minimums", "engine/compile.py",
           "    RuleKind.LEVEL_MIN_ITEMS: _linear,\n",
           "    RuleKind.LEVEL_MIN_ITEMS: lambda cm, rule, guarded: None,\n"),
    Mutant("compile-ignores-source-token-caps", "engine/compile.py",
           "    RuleKind.SOURCE_MAX_TOKENS: _linear,\n",
           "    RuleKind.SOURCE_MAX_TOKENS: lambda cm, rule, guarded: None,\n"),
    Mutant("compile-ignores-level-token-caps", "engine/compile.py",
           "    RuleKind.LEVEL_MAX_TOKENS: _linear,\n",
           "    RuleKind.LEVEL_MAX_TOKENS: lambda cm, rule, guarded: None,\n"),
    Mutant("compile-ignores-pins", "engine/compile.py",
           "    RuleKind.PINNED: _add_pin,\n", "    RuleKind.PINNED: lambda cm, rule, guarded: None,\n"),
    Mutant("compile-ignores-hierarchy", "engine/compile.py",
           "    RuleKind.HIERARCHY: _add_chain,\n", "    RuleKind.HIERARCHY: lambda cm, rule, guarded: None,\n"),
    Mutant("compile-ignores-prefer-parent", "engine/compile.py",
           "    RuleKind.PREFER_PARENT: _linear,\n", "    RuleKind.PREFER_PARENT: lambda cm, rule, guarded: None,\n"),
    # The decomposition of engine/strategies/lpround.py (its own tests: exactness of the
    # tree DP, the bound against brute force, the master's answer against every rule).
    Mutant("lpround-dp-ignores-sibling-caps", "engine/strategies/lpround.py",
           "        elif u in caps:\n", "        elif False:\n", ("tests/test_lagrange.py",)),
    Mutant("lpround-bound-drops-dualized-rhs", "engine/strategies/lpround.py",
           "    parts = [const]\n", "    parts = [0.0]\n", ("tests/test_lagrange.py",)),
    Mutant("lpround-master-ignores-spanning-caps", "engine/strategies/lpround.py",
           "            model.add(expr <= r.upper - base)\n", "            pass\n", ("tests/test_lagrange.py",)),
    Mutant("verifier-counts-caller-always", "engine/verify.py",
           "    trust = b.counts is CountMode.CALLER\n", "    trust = True\n", VERIFY_TESTS),
    Mutant("reduce-forgets-blocks", "engine/problem.py",
           "        if b is not None:\n            block = policy.blocked[b]\n",
           "        if False:\n            block = policy.blocked[b]\n"),
    Mutant("policy-archive-trusts-any-file", "engine/audit/policies.py",
           "    if actual != \"sha256:\" + m.group(1):\n", "    if False:\n", ARCHIVE_TESTS),
    Mutant("policy-archive-ignores-revision-conflicts", "engine/audit/policies.py",
           "        if _ident(value) == (policy.name, policy.revision):\n", "        if False:\n", ARCHIVE_TESTS),
    Mutant("checkpoints-opened-by-path", "engine/audit/log.py",
           "signer.after_append(self.path.with_name(name), fd, end, lines, dir_fd)",
           "signer.after_append(self.path.with_name(name), fd, end, lines)", ARCHIVE_TESTS),
]


def patched(m: Mutant, text: str) -> str:
    """``text`` with the mutant applied; ValueError when it does not apply exactly once."""
    if m.regex:
        found = len(re.findall(m.old, text, flags=re.M))
        if found == 1:
            return re.sub(m.old, m.new, text, flags=re.M)
    else:
        found = text.count(m.old)
        if found == 1:
            return text.replace(m.old, m.new)
    raise ValueError(f"mutant {m.name!r}: its source text occurs {found} times in {m.file} (expected once); "
                     "update the mutant to the current code")


def check_all(root: Path = REPO) -> None:
    """Every mutant applies once and the mutated file compiles (ValueError/SyntaxError)."""
    for m in MUTANTS:
        compile(patched(m, (root / m.file).read_text(encoding="utf-8")), m.file, "exec")


def _copy(dest: Path) -> Path:
    root = dest / "repo"
    shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", ".mypy_cache", ".hypothesis"))
    return root


def _pytest(root: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                          cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    failed = next((line.split(" ", 1)[1].split(" - ")[0] for line in lines
                   if line.startswith(("FAILED ", "ERROR "))), "")
    return proc.returncode, failed or (lines[-1] if lines else "")


def _apply(root: Path, group: list[Mutant], tests: tuple[str, ...]) -> tuple[int, str]:
    """Apply every mutant of ``group`` to the copy at ``root``, run ``tests``, restore."""
    originals: dict[Path, str] = {}
    for m in group:
        path = root / m.file
        originals.setdefault(path, path.read_text(encoding="utf-8"))
        path.write_text(patched(m, path.read_text(encoding="utf-8")), encoding="utf-8")
    try:
        return _pytest(root, tests)
    finally:
        for path, text in originals.items():
            path.write_text(text, encoding="utf-8")


def _table(rows: list[tuple[str, str, str, float, str]], survived: list[str]) -> None:
    print("| mutant | file | result | seconds | first failing test |")
    print("|---|---|---|---:|---|")
    for name, file, verdict, secs, tail in rows:
        print(f"| {name} | {file} | {verdict} | {secs:.1f} | {tail} |")
    print(f"\n{len(rows) - len(survived)}/{len(rows)} mutants killed" +
          (f"; survived: {', '.join(survived)}" if survived else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", metavar="MUTANT", help="run only this mutant (repeatable)")
    ap.add_argument("--together", action="store_true", help="apply the chosen mutants at once, as one mutant")
    ap.add_argument("--suite", action="store_true", help="run the whole suite (tests/) instead of each "
                    "mutant's own tests")
    ap.add_argument("--check", action="store_true", help="only check that every mutant applies and compiles")
    args = ap.parse_args(argv)
    check_all()
    if args.check:
        print(f"{len(MUTANTS)} mutants apply to the current code")
        return 0
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        print(f"unknown mutants: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    groups = [chosen] if args.together else [[m] for m in chosen]
    with tempfile.TemporaryDirectory(prefix="ctxbudget-mutants-") as tmp:
        root = _copy(Path(tmp))
        env = {**os.environ, "PYTHONPATH": str(root)}
        where = subprocess.run([sys.executable, "-c", "import engine; print(engine.__file__)"], cwd=root, env=env,
                               capture_output=True, text=True, check=True).stdout.strip()
        if not Path(where).resolve().is_relative_to(root.resolve()):
            print(f"the copy's engine is not the one imported ({where}); cannot run mutants", file=sys.stderr)
            return 2

        def tests_of(group: list[Mutant]) -> tuple[str, ...]:
            # (--suite leaves out test_mutation_check.py: it checks these mutants' source
            # text, so it would "kill" every mutant without looking at behaviour)
            suite = ("tests", "--ignore=tests/test_mutation_check.py")
            return suite if args.suite else tuple(sorted({t for m in group for t in m.tests}))

        code, tail = _pytest(root, tests_of(chosen))
        if code != 0:
            print(f"the unmutated copy fails its tests ({tail}); fix that first", file=sys.stderr)
            return 1
        rows, survived = [], []
        for group in groups:
            name = " + ".join(m.name for m in group)
            t0 = time.perf_counter()
            code, tail = _apply(root, group, tests_of(group))
            verdict = "killed" if code != 0 else "SURVIVED"
            if code == 0:
                survived.append(name)
            rows.append((name, ", ".join(sorted({m.file for m in group})), verdict, time.perf_counter() - t0, tail))
            print(f"  {name}: {verdict} ({tail})", file=sys.stderr, flush=True)
    _table(rows, survived)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
