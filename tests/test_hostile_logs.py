"""A hostile-log corpus through ``audit verify``, ``show``, ``replay`` and ``report``:
deep nesting (10..100,000 levels), 10 MB lines, invalid UTF-8, NUL bytes, truncated and
merged lines, and records resealed with wrong-typed fields (hypothesis). Every run must
end in 0 or 6, never 1 (no RecursionError, KeyError or TypeError), and every finding
must name its line. In-process through ``engine.cli.main``; a few runs as subprocesses.

Old code: a 100,000-deep line made all three commands exit 1 (RecursionError), a record
with ``"tokens": "many"`` made ``show`` exit 1 (ValueError in a format)."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine import cli
from engine.audit.lineformat import GENESIS_HASH, MAX_DEPTH, EnvelopeKind, encode_record, seal
from engine.audit.log import AuditLog
from engine.decide import decide
from engine.policy import load_policy

ROOT = Path(__file__).resolve().parent.parent
POLICY = """\
apiVersion: ctxbudget/v1
kind: BudgetPolicy
metadata: {name: hostile, revision: "1"}
spec:
  budget: {max_tokens: 60}
  strategy: greedy
"""
CANDIDATES = [
    {"source_id": f"doc-{i}", "content": f"text {i} " * (i + 1), "relevance_score": 1.0 - i / 10,
     "token_count": 10 + 5 * i, "metadata": {"team": "a" if i % 2 else "b", "tags": [i, {"k": "v"}]}}
    for i in range(5)
]
COMMANDS = (("verify",), ("verify", "--json"), ("show",), ("show", "--json"), ("replay",), ("replay", "--json"),
            ("report", "--out", os.devnull))
TALLY: Counter[str] = Counter()  # logs and runs, for the figures printed at the end
FINDING = re.compile(r"^finding: (?P<log>.+?):(?P<line>\d+): ")
# a finding names where it is: the line (unreadable bytes) or the seq (a record that fails
# its checks: seq, decision id and JSON path)
WHERE = re.compile(r'^finding: .+?:\d+: |\bline \d+\b|"line": \d+|\bseq \d+\b|"seq": \d+', re.M)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Three real decision records (the envelopes' records), made by the engine."""
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "p.yaml").write_text(POLICY)
    policy = load_policy(folder / "p.yaml")
    log = AuditLog(folder / "base.jsonl")
    for n in range(3):
        decide(CANDIDATES[: 3 + n], policy, audit_log=log)
    return [env["record"] for env in log]


def sealed(records: list[Any]) -> list[bytes]:
    """Lines of a valid chain around ``records`` (mappings, or raw record bytes)."""
    lines, prev = [], GENESIS_HASH
    for seq, rec in enumerate(records, 1):
        line = seal(seq, prev, EnvelopeKind.DECISION, rec if isinstance(rec, bytes) else encode_record(rec))
        prev = line[9:80].decode()  # {"hash":"sha256:<64 hex>" leads every sealed line
        lines.append(line)
    return lines


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def check(path: Path, *, broken: bool, commands: tuple[tuple[str, ...], ...] = COMMANDS) -> dict[tuple[str, ...], int]:
    """All commands on ``path``: never exit 1; exit 6 when ``broken`` (a line no writer
    wrote) for every command; each finding and each verify problem names its line."""
    TALLY["logs"] += 1
    codes = {}
    for cmd in commands:
        code, out, err = run(["audit", cmd[0], str(path), *cmd[1:]])
        TALLY["runs"] += 1
        TALLY[f"exit {code}"] += 1
        assert code != 1, (cmd, err[-2000:])
        assert code in (0, 6), (cmd, code, err[-2000:])
        if broken:
            assert code == 6, (cmd, err[-2000:])
        if code == 6 and cmd != ("replay",):  # text replay names a record by its decision id
            assert WHERE.search(out + err), (cmd, out[-1000:], err[-1000:])
            for m in filter(None, map(FINDING.match, err.splitlines())):
                assert m["log"] == str(path) and int(m["line"]) >= 1
        if cmd == ("verify", "--json"):
            report = json.loads(out)
            assert report["ok"] == (code == 0)
            assert all(isinstance(p["line"], int) and p["line"] >= 1 for p in report["problems"])
        codes[cmd] = code
    return codes


def write(tmp_path: Path, name: str, lines: list[bytes], tail: bytes = b"") -> Path:
    path = tmp_path / name
    path.write_bytes(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines) + tail)
    return path


def nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth  # unbalanced


# -- fixed cases ------------------------------------------------------------------------

DEPTHS = (10, 60, 63, 64, 65, 100, 1000, 10_000, 100_000)


@pytest.mark.parametrize("kind", ["array", "object", "open"])
def test_deep_nesting_as_a_whole_line(tmp_path: Path, base: list[dict[str, Any]], kind: str) -> None:
    for depth in DEPTHS:
        path = write(tmp_path, f"{kind}-{depth}.jsonl", [*sealed(base), nested(depth, kind)])
        check(path, broken=True)


def test_deep_nesting_inside_a_resealed_record(tmp_path: Path, base: list[dict[str, Any]]) -> None:
    """An attacker who rechains can give a deep record a valid hash: the reader must
    still refuse it without recursing (the writer refuses to write it at all)."""
    for depth in DEPTHS:
        record = encode_record(base[0])[:-1] + b',"zz_deep":' + nested(depth, "array") + b"}"
        path = write(tmp_path, f"sealed-{depth}.jsonl", sealed([*base, record]))
        # any depth is a finding: too deep for a reader, or a field the audit schema lacks
        check(path, broken=True)


HUGE_COMMANDS = (("verify", "--json"), ("show",), ("replay",))


def test_huge_lines(tmp_path: Path, base: list[dict[str, Any]]) -> None:
    big = 10 * 1024 * 1024
    good = sealed(base)
    for name, line in (("garbage", b"x" * big), ("open", b"[" * big),
                       ("string", b'{"record":{"s":"' + b"a" * big + b'"}}')):
        check(write(tmp_path, f"{name}.jsonl", [*good, line]), broken=True, commands=HUGE_COMMANDS)
    record = copy.deepcopy(base[0])
    record["items"][0]["evidence"] = "e" * big  # a valid, sealed 10 MB record is just a record
    codes = check(write(tmp_path, "sealed.jsonl", sealed([*base, record])), broken=False, commands=HUGE_COMMANDS)
    assert set(codes.values()) == {0}


BAD_UTF8 = (b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\x80")


def test_invalid_utf8(tmp_path: Path, base: list[dict[str, Any]]) -> None:
    good = sealed(base)
    for n, bad in enumerate(BAD_UTF8):
        at = good[1].index(b'"decision_id":"') + 15
        check(write(tmp_path, f"in-{n}.jsonl", [good[0], good[1][:at] + bad + good[1][at:], good[2]]), broken=True)
        check(write(tmp_path, f"line-{n}.jsonl", [*good, bad * 3]), broken=True)


def test_nul_bytes(tmp_path: Path, base: list[dict[str, Any]]) -> None:
    good = sealed(base)
    at = good[0].index(b'"decision_id":"') + 15
    check(write(tmp_path, "in-string.jsonl", [good[0][:at] + b"\0" + good[0][at:], *good[1:]]), broken=True)
    check(write(tmp_path, "nul-line.jsonl", [good[0], b"\0" * 64, *good[1:]]), broken=True)
    check(write(tmp_path, "utf16ish.jsonl", [*good, b'{\0"\0r\0"\0:\0{\0}\0}\0']), broken=True)


def test_truncated_and_merged_lines(tmp_path: Path, base: list[dict[str, Any]]) -> None:
    good = sealed(base)
    for cut in (1, 17, len(good[1]) // 2, len(good[1]) - 3):
        check(write(tmp_path, f"cut-{cut}.jsonl", [good[0], good[1][:cut], good[2]]), broken=True)
    check(write(tmp_path, "merged.jsonl", [good[0], good[1][:-1] + good[2]]), broken=True)
    check(write(tmp_path, "torn.jsonl", good[:2], tail=good[2][:40]), broken=False)  # a crash: recovered later


# -- wrong-typed fields (hypothesis) ----------------------------------------------------


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value[:3]):
            yield from _paths(item, (*path, i))


SAFE_INTS = st.integers(-2**53 + 1, 2**53 - 1)  # what the writer can seal
REPLACEMENTS = st.one_of(
    st.none(), st.booleans(), SAFE_INTS, st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8), st.just([]), st.just({}), st.lists(SAFE_INTS, max_size=3),
    st.dictionaries(st.text(max_size=4), SAFE_INTS, max_size=2), st.just("DELETE"),
)


@settings(max_examples=50 if os.environ.get("CTXBUDGET_EXHAUSTIVE") == "1" else 20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(data=st.data())
def test_resealed_records_with_wrong_typed_fields(tmp_path: Path, base: list[dict[str, Any]],
                                                  data: st.DataObject) -> None:
    which = data.draw(st.integers(0, len(base) - 1))
    record = copy.deepcopy(base[which])
    paths = [p for p in _paths(record) if p]
    path = data.draw(st.sampled_from(paths))
    value = data.draw(REPLACEMENTS)
    parent = record
    for key in path[:-1]:
        parent = parent[key]
    if value == "DELETE":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    records = [*base[:which], record, *base[which + 1:]]
    log = write(tmp_path, f"typed-{TALLY['typed']}.jsonl", sealed(records))
    TALLY["typed"] += 1
    check(log, broken=False)


def test_regression_input_items_that_is_not_a_list_is_reported_not_a_crash(
        tmp_path: Path, base: list[dict[str, Any]]) -> None:
    """A resealed record whose input.items is ``true``: audit report crashed with exit 1
    ("'bool' object is not iterable"); now every command reports it (exit 0 or 6)."""
    record = copy.deepcopy(base[0])
    record["input"]["items"] = True
    check(write(tmp_path, "items-true.jsonl", sealed([record, *base[1:]])), broken=False)


def test_resealed_record_with_no_strategy_used_fails_its_checks(tmp_path: Path, base: list[dict[str, Any]]) -> None:
    """An allocated record whose strategy.used is null (only an infeasible decision has
    none) verified as intact, and replay reported it as "changed" (exit 7): the schema
    let null through for every outcome. Found by the property test above."""
    record = copy.deepcopy(base[0])
    record["strategy"]["used"] = None
    log = write(tmp_path, "used-null.jsonl", sealed([record, *base[1:]]))
    codes = check(log, broken=False)
    assert set(codes.values()) == {6}, codes
    code, out, _ = run(["audit", "verify", str(log), "--json"])
    findings = json.loads(out)["records"]["findings"]
    assert [(f["code"], f["seq"], f["path"]) for f in findings] == [("record.schema", 1, "$.strategy.used")]


# -- as a real process ------------------------------------------------------------------


def test_as_subprocesses(tmp_path: Path, base: list[dict[str, Any]]) -> None:
    record = copy.deepcopy(base[0])
    record["items"][0]["tokens"] = "many"  # old code: show exit 1 (ValueError)
    deep = write(tmp_path, "deep.jsonl", [*sealed(base), nested(100_000, "array")])
    typed = write(tmp_path, "typed.jsonl", sealed([record, *base[1:]]))
    for path, cmd, expect in ((deep, "verify", 6), (deep, "show", 6), (deep, "replay", 6), (typed, "show", 6)):
        proc = subprocess.run([sys.executable, "-m", "engine.cli", "audit", cmd, str(path)],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
        TALLY["subprocess runs"] += 1
        assert proc.returncode == expect, (path, cmd, proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
        if path == typed:
            assert proc.stdout.startswith("[FAILED CHECKS: record.malformed, record.schema]"), proc.stdout[:500]
            assert "\nseq 1: the record cannot be laid out as text" in proc.stdout
        if path == deep and cmd == "show":
            assert (f"finding: {deep}:4: line 4 is not JSON we can read: nested deeper than {MAX_DEPTH} levels "
                    f"(no audit record nests that deep); run `ctxbudget audit verify {deep}`\n") in proc.stderr
        if path == deep and cmd == "replay":
            assert proc.stdout.startswith("line 4: error: line 4 is not JSON we can read: nested deeper")


def test_zz_figures() -> None:
    """Print the corpus figures (runs last in file order)."""
    assert TALLY["exit 1"] == 0
    print(f"\nhostile corpus: {TALLY['logs']} logs ({TALLY['typed']} with resealed wrong-typed fields), "
          f"{TALLY['runs']} in-process runs + {TALLY['subprocess runs']} subprocess runs; "
          f"exit 0: {TALLY['exit 0']}, exit 6: {TALLY['exit 6']}, exit 1: {TALLY['exit 1']}")
