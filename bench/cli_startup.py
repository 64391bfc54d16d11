"""Start-up time of the ``ctxbudget`` command, for the working tree and for older commits.

    .venv/bin/python -m bench.cli_startup                    # this tree, 21 runs per command
    .venv/bin/python -m bench.cli_startup --rev b466825      # ... next to an older commit
    .venv/bin/python -m bench.cli_startup --runs 41 --rev main --rev HEAD

Every command runs ``--runs`` times in a fresh process (after one warm-up run, so the
page cache is hot), wall clock measured around ``subprocess.run``; the table gives the
median, min and max in milliseconds. A commit named by ``--rev`` is exported with
``git archive`` into a temporary folder, which is put first on ``PYTHONPATH`` and made
the working directory (``python -c`` puts that first on ``sys.path``): the same
interpreter, installed dependencies and console script run it, only the package's own
code differs. The last column lists the heavy modules (solver,
tokenizer, retrieval, validation) that ``ctxbudget --help`` imported, read from
``sys.modules`` in a separate run. No goal is asserted here (timings depend on the
machine); the goal of issue 10 is ``--help`` in at most 300 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Modules whose import dominated start-up before the CLI imported lazily.
HEAVY = ("ortools", "pandas", "numpy", "tiktoken", "bm25s", "jsonschema", "yaml", "pysbd", "rfc8785")

_SCRIPT = Path(sys.executable).parent / "ctxbudget"
#: What the console script does; used when the script is not next to the interpreter.
_MAIN = "import sys; from engine.cli import main; sys.exit(main())"
_PROBE = ("import contextlib, io, json, sys\n"
          "from engine.cli import main\n"
          "with contextlib.redirect_stdout(io.StringIO()):\n"
          "    try:\n"
          "        main(['--help'])\n"
          "    except SystemExit:\n"
          "        pass\n"
          "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(%r))))\n" % (HEAVY,))


def commands() -> dict[str, list[str]]:
    cli = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-c", _MAIN]
    return {
        "ctxbudget --help": cli + ["--help"],
        "ctxbudget --version": cli + ["--version"],
        'python -c "import engine"': [sys.executable, "-c", "import engine"],
        "python -c pass (floor)": [sys.executable, "-c", "pass"],
    }


def export(rev: str, into: Path) -> Path:
    """The package of commit ``rev`` as plain files under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "engine"],
                             check=True, capture_output=True).stdout
    tar_path = into / "src.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")
    return into


def time_runs(cmd: list[str], tree: Path, env: dict[str, str], runs: int) -> tuple[list[float], int]:
    def once() -> tuple[float, int]:
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return (time.perf_counter() - t0) * 1000, done.returncode

    once()  # warm-up: page cache, .pyc files
    samples, code = [], 0
    for _ in range(runs):
        ms, code = once()
        samples.append(ms)
    return samples, code


def heavy_imports(tree: Path, env: dict[str, str]) -> list[str]:
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=tree, env=env, capture_output=True, text=True,
                          check=True)
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=21, help="timed runs per command (median reported)")
    ap.add_argument("--rev", action="append", default=[],
                    help="also time this git revision (repeatable); the working tree is always timed")
    args = ap.parse_args(argv)
    rows: list[tuple[str, str, list[float], int, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        trees = [("working tree", ROOT)]
        for rev in args.rev:
            sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev],
                                 check=True, capture_output=True, text=True).stdout.strip()
            folder = Path(tmp) / sha
            folder.mkdir()
            trees.append((f"{rev} ({sha})" if sha != rev else sha, export(rev, folder)))
        for label, tree in trees:
            env = dict(os.environ, PYTHONPATH=str(tree))
            heavy = ", ".join(heavy_imports(tree, env)) or "none"
            for name, cmd in commands().items():
                samples, code = time_runs(cmd, tree, env, args.runs)
                rows.append((label, name, samples, code, heavy if name == "ctxbudget --help" else ""))
    print(f"{'tree':<22} {'command':<28} {'median ms':>9} {'min':>7} {'max':>7} {'exit':>4}  heavy modules after --help")
    for label, name, samples, code, heavy in rows:
        print(f"{label:<22} {name:<28} {statistics.median(samples):9.0f} {min(samples):7.0f} "
              f"{max(samples):7.0f} {code:4d}  {heavy}")
    print(f"({args.runs} runs each, {sys.executable}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
