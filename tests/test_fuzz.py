"""Fuzzing the two inputs people and other systems get wrong: policies and candidates.

The rule every input must satisfy (the issue's acceptance criterion):

* a policy file either loads to a valid :class:`~engine.policy.Policy`, or raises an
  :class:`~engine.errors.EngineError` whose ``code`` is dotted, whose ``path`` starts with
  ``$`` and whose location names the file (with a line when the problem is in the
  file); ``ctxbudget --errors=json policy validate`` exits 2 with exactly one JSON object
  on stderr and no traceback. A policy that loads must also be usable: allocating a
  small fixed candidate set under it succeeds (or is infeasible, exit 3);
* a candidates file either allocates (exit 0) with every candidate accounted once and
  the assembled context within the budget (recounted with the policy's tokenizer), or is
  rejected with exit 2 and one JSON error naming code, path, file and line;
* nothing raises a traceback (exit 1), hangs (each case is bounded, see
  :func:`deadline`) or overshoots the budget.

Inputs come from hypothesis (derandomized, so CI runs the same inputs every time):
the shipped policies and policies generated from ``schemas/policy.schema.json`` are
mutated family by family (unknown keys, wrong types, duplicate keys, YAML 1.1 booleans,
huge/non-finite numbers, deep nesting, alias bombs, several documents, binary junk,
``extends`` cycles and escapes); candidates are generated valid, hostile (NaN, huge and
fractional numbers, missing fields, duplicates, non-UTF-8 bytes, surrogates, deep JSON)
and as hierarchies. Every family counts the inputs tried and the inputs that broke the
rule; each test prints its table and asserts 0 failures. ``bench/fuzz_report.py`` runs
the same families with many more examples.

The nastiest inputs are kept under ``tests/fuzz_corpus/`` (``manifest.json`` says what
each must produce) and replayed by :func:`test_replay_kept_corpus`. Bugs found by this
file have their own minimal reproductions below, named ``test_regression_*``.
"""

from __future__ import annotations

import contextlib
import copy
import faulthandler
import io
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from engine import BudgetStrategy, EngineError, allocate, cli, get_tokenizer, load_policy
from engine.allocate import to_candidates
from engine.errors import InfeasibleError
from engine.policy import CountMode
from engine.verify import verify

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fuzz_corpus"
SHIPPED = sorted((ROOT / "policies").glob("*.yaml")) + [ROOT / "examples" / "policy.yaml"]
SCHEMA = json.loads((ROOT / "schemas" / "policy.schema.json").read_text(encoding="utf-8"))

CASE_TIMEOUT_S = 10.0
"""Soft limit per input: a case still running after this is a hang (counted as failed)."""
HARD_TIMEOUT_S = 60.0
"""Backstop: a case stuck in C code past this kills the process with a traceback dump,
so CI fails instead of blocking."""

CODE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
# Errors about the file as a whole, where no line can be named.
NO_LINE_CODES = frozenset({
    "policy.too_large", "policy.file_not_found", "policy.file_unreadable",
    "candidate.file_not_found", "candidate.file_unreadable",
})


# =========================================================================== harness


class CaseTimeout(BaseException):
    """Raised in the main thread when a case runs past :data:`CASE_TIMEOUT_S`.
    A BaseException so that ``except Exception`` in the CLI cannot swallow it."""


@contextlib.contextmanager
def deadline(seconds: float = CASE_TIMEOUT_S) -> Iterator[None]:
    """Bound a block: ``CaseTimeout`` after ``seconds`` (interrupts Python code), and a
    hard process exit with a traceback dump after :data:`HARD_TIMEOUT_S` (C code)."""
    usable = hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM")
    if usable:
        def on_alarm(_signum: int, _frame: Any) -> None:
            raise CaseTimeout(f"still running after {seconds:g} s")

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    # sys.__stderr__: pytest's captured stream has no file descriptor
    faulthandler.dump_traceback_later(max(HARD_TIMEOUT_S, 3 * seconds), exit=True, file=sys.__stderr__)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        if usable:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


@dataclass
class CliRun:
    code: int | None
    out: str
    err: str
    seconds: float
    crash: str | None = None  # an exception that escaped cli.main


def run_cli(argv: list[str], timeout: float = CASE_TIMEOUT_S) -> CliRun:
    """``cli.main(argv)`` in-process with stdout/stderr captured and a deadline."""
    out, err = io.StringIO(), io.StringIO()
    crash = None
    code: int | None = None
    t0 = time.perf_counter()
    try:
        with deadline(timeout), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    except CaseTimeout as exc:
        crash = f"hang: {exc}"
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:  # noqa: BLE001 - anything escaping main is a finding
        crash = f"exception escaped cli.main: {type(exc).__name__}: {str(exc)[:200]}"
    return CliRun(code, out.getvalue(), err.getvalue(), time.perf_counter() - t0, crash)


@dataclass
class Tally:
    """Inputs tried and failed per family, with a few examples of each failure kind."""

    tried: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    signatures: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    notes: Counter[str] = field(default_factory=Counter)
    save_dir: Path | None = None
    saved: Counter[str] = field(default_factory=Counter)

    def record(self, family: str, outcome: str, problems: list[str], describe: str,
               case_dir: Path | None = None) -> None:
        self.tried[family] += 1
        self.outcomes[(family, outcome)] += 1
        if not problems:
            return
        self.failed[family] += 1
        by_sig = self.signatures.setdefault(family, {})
        for problem in problems:
            sig = signature(problem)
            examples = by_sig.setdefault(sig, [])
            if len(examples) < 3:
                examples.append(f"{describe} => {problem[:300]}")
                if self.save_dir is not None and case_dir is not None and case_dir.exists():
                    key = f"{family}-{len(by_sig)}-{len(examples)}"
                    dest = self.save_dir / key
                    shutil.rmtree(dest, ignore_errors=True)
                    shutil.copytree(case_dir, dest, symlinks=True)
                    (dest / "PROBLEM.txt").write_text(f"{describe}\n{problem}\n", encoding="utf-8",
                                                      errors="replace")

    def table(self) -> str:
        lines = [f"{'family':<34}{'tried':>7}{'failed':>8}   outcomes"]
        for fam in sorted(self.tried):
            outs = ", ".join(f"{o} {n}" for (f, o), n in sorted(self.outcomes.items()) if f == fam)
            lines.append(f"{fam:<34}{self.tried[fam]:>7}{self.failed[fam]:>8}   {outs}")
        lines.append(f"{'TOTAL':<34}{sum(self.tried.values()):>7}{sum(self.failed.values()):>8}")
        for note, n in sorted(self.notes.items()):
            lines.append(f"note: {note}: {n}")
        return "\n".join(lines)

    def failures(self) -> str:
        out = []
        for fam, sigs in sorted(self.signatures.items()):
            for sig, examples in sigs.items():
                out.append(f"[{fam}] {sig}")
                out.extend(f"    e.g. {e}" for e in examples[:2])
        return "\n".join(out)


def signature(problem: str) -> str:
    """A failure's kind: its text with numbers, quoted values and paths blanked."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", problem)
    text = re.sub(r"/[\w./-]+", "<path>", text)
    text = re.sub(r"\d+", "N", text)
    return text[:160]


def hyp_settings(n: int) -> settings:
    return settings(max_examples=n, derandomize=True, database=None, deadline=None,
                    phases=(Phase.explicit, Phase.generate),
                    suppress_health_check=list(HealthCheck), print_blob=False)


@contextlib.contextmanager
def case_folder(root: Path) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# =========================================================================== error rule


def inside(file: str | None, folder: Path) -> bool:
    if not file:
        return False
    try:
        return Path(file).resolve().is_relative_to(folder.resolve())
    except (OSError, ValueError):
        return False


def error_problems(err: EngineError, folders: tuple[Path, ...], what: str) -> list[str]:
    """What is wrong with an EngineError by the issue's rule (empty when it is good)."""
    out = []
    for issue in err.issues:
        label = f"{what} error {issue.code!r} at {issue.path!r}"
        if not CODE_RE.match(issue.code or ""):
            out.append(f"{label}: code is not dotted")
        if not str(issue.path).startswith("$"):
            out.append(f"{label}: path does not start with $")
        if not issue.message or "Traceback" in issue.message:
            out.append(f"{label}: empty message or traceback in message")
        loc = issue.location
        if loc is None or not any(inside(loc.file, f) for f in folders):
            out.append(f"{label}: location {loc} does not name the input file")
        elif loc.line is None and issue.code not in NO_LINE_CODES:
            out.append(f"{label}: location {loc} has no line")
    return out


def json_error_problems(run: CliRun, expect_exit: int, folders: tuple[Path, ...],
                        what: str) -> tuple[list[str], dict[str, Any] | None]:
    """The CLI's ``--errors=json`` output: one JSON object on stderr, fields present."""
    out = []
    if "Traceback" in run.err:
        out.append(f"{what}: traceback on stderr")
    lines = [line for line in run.err.splitlines() if line.strip()]
    if len(lines) != 1:
        return out + [f"{what}: expected exactly one JSON line on stderr, got {len(lines)}: {run.err[:200]!r}"], None
    try:
        data = json.loads(lines[0])
    except json.JSONDecodeError:
        return out + [f"{what}: stderr is not JSON: {lines[0][:200]!r}"], None
    if not isinstance(data, dict):
        return out + [f"{what}: stderr JSON is not an object"], None
    if data.get("exit_code") != expect_exit:
        out.append(f"{what}: JSON exit_code {data.get('exit_code')} != {expect_exit}")
    code = data.get("code")
    if not isinstance(code, str) or not CODE_RE.match(code):
        out.append(f"{what}: JSON code {code!r} is not dotted")
    if not str(data.get("path", "")).startswith("$"):
        out.append(f"{what}: JSON path {data.get('path')!r} does not start with $")
    if not any(inside(data.get("file"), f) for f in folders):
        out.append(f"{what}: JSON error {code!r} ({data.get('path')}) does not name the input file "
                   f"(file={data.get('file')!r})")
    elif data.get("line") is None and code not in NO_LINE_CODES:
        out.append(f"{what}: JSON error {code!r} ({data.get('path')}) has no line")
    if not isinstance(data.get("issues"), list) or not data["issues"]:
        out.append(f"{what}: JSON has no issues list")
    return out, data


# =========================================================================== allocation rule

PROBE_ROWS: list[dict[str, Any]] = [
    {"source_id": "refund-terms", "content": "Refunds are possible within 30 days of purchase.",
     "relevance_score": 0.92},
    {"source_id": "kb#1", "content": "Billing overview. Plans renew yearly.", "relevance_score": 0.7,
     "level": "SECTION", "metadata": {"doc_id": "kb", "order": 1}},
    {"source_id": "kb#2", "content": "Annual plans can be cancelled any time.", "relevance_score": 0.55,
     "parent_id": "kb#1", "metadata": {"doc_id": "kb", "order": 2}},
    {"source_id": "disclaimer-eu", "content": "Not legal advice.", "relevance_score": 0.05},
    {"source_id": "crm#7", "content": "Customer Jane Roe, card ending 4242.", "relevance_score": 0.97,
     "metadata": {"pii": True}},
    {"source_id": "neg", "content": "A negative-scored chunk.", "relevance_score": -0.5},
    {"source_id": "src/app.py#f", "content": "def refund(order):\n    return order.total",
     "relevance_score": 0.6, "level": "FUNCTION"},
]
"""A small candidate set every policy that loads must be able to allocate."""


def rows_to_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def allocation_problems(run: CliRun, policy_path: Path, rows: list[dict[str, Any]] | None,
                        folders: tuple[Path, ...], tally: Tally | None = None,
                        honest: bool = True) -> tuple[str, list[str]]:
    """(outcome, problems) of a ``ctxbudget allocate`` run by the allocation rule."""
    if run.crash:
        return "crash", [run.crash]
    if run.seconds > CASE_TIMEOUT_S:
        return "slow", [f"allocate took {run.seconds:.1f} s > {CASE_TIMEOUT_S:g} s"]
    if run.code == 0:
        return "allocated", success_problems(run, policy_path, rows, tally, honest)
    if run.code in (2, 3):
        problems, data = json_error_problems(run, run.code, folders, "allocate")
        code = (data or {}).get("code", "")
        if run.code == 3 and not str(code).startswith("allocation."):
            problems.append(f"allocate exit 3 with code {code!r}")
        return f"{'rejected' if run.code == 2 else 'infeasible'} {code}", problems
    first = run.err.strip().splitlines()[0][:300] if run.err.strip() else ""
    return f"crash-exit{run.code}", [f"allocate exit {run.code}: {first}"]


def success_problems(run: CliRun, policy_path: Path, rows: list[dict[str, Any]] | None,
                     tally: Tally | None, honest: bool) -> list[str]:
    out: list[str] = []
    try:
        data = json.loads(run.out)
    except json.JSONDecodeError:
        return [f"allocate exit 0 but stdout is not JSON: {run.out[:200]!r}"]
    policy = load_policy(policy_path)
    limit = policy.budget.limit_tokens
    tok = get_tokenizer(policy.tokenizer)
    if data["limit_tokens"] != limit:
        out.append(f"limit_tokens {data['limit_tokens']} != policy budget {limit}")
    items = data["items"]
    ids = [it["source_id"] for it in items]
    if len(ids) != len(set(ids)):
        out.append("an item is listed twice in the decisions")
    if rows is not None and ids != [r["source_id"] for r in rows]:
        out.append(f"decisions list {len(ids)} items, input has {len(rows)} (not each accounted once)")
    included = [it["source_id"] for it in items if it["decision"] == "included"]
    if sorted(included) != sorted(data["included"]) or len(set(data["included"])) != len(data["included"]):
        out.append("'included' does not match the included decisions")
    recount = tok.count(data["context"])
    # The budget is a hard limit whatever counts the caller passed (budget.counts: max);
    # only a policy that trusts caller counts (counts: caller) may recount above it.
    trusted = policy.budget.counts is CountMode.CALLER and rows is not None and any(
        "token_count" in r for r in rows)
    if recount > limit and not trusted:
        out.append(f"OVER BUDGET: assembled context recounts to {recount} > {limit}"
                   + ("" if honest else " (caller token counts were off)"))
    if recount != data["context_tokens"]:
        out.append(f"context_tokens {data['context_tokens']} != recount {recount}")
    sep = tok.count(policy.budget.separator) if policy.budget.separator else 0
    used = sum(it["tokens"] for it in items if it["decision"] == "included")
    used += sep * max(0, len(included) - 1)
    if used > limit:
        out.append(f"OVER BUDGET: included items sum to {used} > {limit}")
    if rows is not None:
        by_id = {r["source_id"]: r for r in rows}
        reasons = {it["source_id"]: it["reason"] for it in items}
        for sid in ids:
            row = by_id.get(sid)
            if row is None or not isinstance(row.get("relevance_score"), (int, float)):
                continue
            meta = row.get("metadata") or {}
            pinned = any(m.matches(sid, meta) for m in policy.pinned)
            blocked = any(m.matches(sid, meta) for m in policy.blocked)
            if row["relevance_score"] < 0 and not pinned:
                if sid in included:
                    out.append(f"negative-score {sid!r} included without a pin")
                elif not blocked and reasons[sid] != "below_min_relevance":
                    out.append(f"negative-score {sid!r} excluded with reason {reasons[sid]!r}, "
                               "not below_min_relevance")
            if blocked and sid in included:
                out.append(f"blocked {sid!r} included")
    return out


# =========================================================================== policies: sources


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


TOKENIZERS = ["cl100k_base", "approx:utf8_bytes"]
TEMPLATES = ["{content}", "[{source_id}] {content}", "{level}: {content}", "# {source_id}\n{content}",
             "<doc id=\"{source_id}\">{content}</doc>", "{content}{{literal}}"]
LEVEL_KEYS = ["DOCUMENT", "SECTION", "PARAGRAPH", "SENTENCE", "FILE", "FUNCTION"]
META_KEYS = ["pii", "kind", "privileged", "doc_id", "lang"]


def _from_schema(node: dict[str, Any], name: str = "") -> st.SearchStrategy[Any]:
    """A strategy for values valid under one node of the policy schema (semantic checks
    may still fail: that is part of the fuzz)."""
    node = _resolve(node)
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if "x-exactly-one" in node:
        props = node["properties"]
        return st.sampled_from(node["x-exactly-one"]).flatmap(
            lambda key: st.fixed_dictionaries({key: _from_schema(props[key], key)},
                                              optional={"reason": st.text(max_size=12)}))
    kind = node.get("type")
    if isinstance(kind, list):
        return st.one_of([_from_schema({**node, "type": k}, name) for k in kind])
    if name == "tokenizer":
        return st.one_of(st.sampled_from(TOKENIZERS), st.from_regex(r"[a-z0-9_]{1,12}", fullmatch=True))
    if name == "template":
        return st.sampled_from(TEMPLATES)
    if kind == "object":
        props = node.get("properties", {})
        if name == "budget":
            return st.one_of(
                st.fixed_dictionaries({"max_tokens": st.integers(1, 20_000)},
                                      optional={"template": st.sampled_from(TEMPLATES),
                                                "separator": st.sampled_from(["", "\n\n", " | "])}),
                st.integers(2, 200_000).flatmap(lambda w: st.fixed_dictionaries({
                    "context_window": st.just(w), "reserve_output": st.integers(0, (w - 1) // 2),
                    "reserve_prompt": st.integers(0, (w - 1) // 2)})),
                st.fixed_dictionaries({}, optional={k: _from_schema(v, k) for k, v in props.items()}),
            )
        if props:
            required = {k: _from_schema(props[k], k) for k in node.get("required", [])}
            optional = {k: _from_schema(v, k) for k, v in props.items()
                        if k not in required and k != "extends"}
            return st.fixed_dictionaries(required, optional=optional)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            keys = st.sampled_from(LEVEL_KEYS if name == "levels" else META_KEYS)
            return st.dictionaries(keys, _from_schema(extra, ""), min_size=node.get("minProperties", 0),
                                   max_size=3)
        return st.just({})
    if kind == "array":
        items = _from_schema(node.get("items", {}), name)
        return st.lists(items, max_size=3, unique=bool(node.get("uniqueItems")))
    if kind == "integer":
        lo, hi = node.get("minimum", -(10 ** 6)), node.get("maximum", 10 ** 9)
        return st.one_of(st.integers(lo, min(hi, lo + 64)), st.integers(lo, hi))
    if kind == "number":
        lo, hi = node.get("minimum", node.get("exclusiveMinimum", 0.0)), node.get("maximum", 1e6)
        return st.floats(lo, hi, allow_nan=False, allow_infinity=False,
                         exclude_min="exclusiveMinimum" in node)
    if kind == "string":
        if "pattern" in node:
            return st.from_regex(node["pattern"].replace("]*$", "]{0,8}$").replace("]+$", "]{1,8}$"),
                                 fullmatch=True)
        return st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
                       min_size=node.get("minLength", 0), max_size=16)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return st.none()


SCHEMA_POLICY = _from_schema(SCHEMA)


class _Dumper(yaml.SafeDumper):
    """Dumps data so that the engine's YAML 1.2 reader reads the same values back:
    every string that is not a plain identifier is double-quoted."""


_PLAIN_OK = re.compile(r"[A-Za-z][A-Za-z0-9_/-]*")
_YAML_WORDS = {"yes", "no", "on", "off", "y", "n", "true", "false", "null"}


def _repr_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    plain = _PLAIN_OK.fullmatch(data) and data.lower() not in _YAML_WORDS
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=None if plain else '"')


_Dumper.add_representer(str, _repr_str)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False, width=4096)


@dataclass
class PolicyCase:
    """Files of one policy input (name → bytes), the one to validate, and what it must do."""

    files: dict[str, bytes]
    main: str = "policy.yaml"
    note: str = ""
    expect_code: str | None = None  # must be rejected with this code among its issues
    expect_error: bool = False  # must be rejected (any code)
    links: dict[str, str] = field(default_factory=dict)  # name -> symlink target

    def write(self, folder: Path) -> Path:
        for name, data in self.files.items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        for name, to in self.links.items():
            with contextlib.suppress(OSError):
                os.symlink(to, folder / name)
        return folder / self.main

    def describe(self) -> str:
        body = self.files.get(self.main, b"")
        snippet = body[:160] if len(body) <= 160 else body[:120] + b"..." + body[-30:]
        return f"{self.note}: {self.main}={snippet!r}"


@st.composite
def base_policy(draw: st.DrawFn) -> tuple[dict[str, bytes], str, Any]:
    """A starting policy: a shipped one (text kept, base.yaml alongside) or one generated
    from the schema. Returns (files, main text, mapping)."""
    if draw(st.integers(0, 2)) > 0:
        path = draw(st.sampled_from(SHIPPED))
        text = path.read_text(encoding="utf-8")
        files = {"base.yaml": (ROOT / "policies" / "base.yaml").read_bytes()} if "extends:" in text else {}
        return files, text, yaml.safe_load(text)
    data = _spec_last(draw(SCHEMA_POLICY))
    return {}, dump(data), data


def _spec_last(data: dict[str, Any]) -> dict[str, Any]:
    """Root keys reordered so that ``spec`` comes last (mutations append under it)."""
    return {k: data[k] for k in sorted(data, key=lambda k: k == "spec")}


# ---- helpers over the policy mapping and text


def _mappings(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    if isinstance(data, dict):
        yield path, data
        for k, v in data.items():
            yield from _mappings(v, path + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _mappings(v, path + (i,))


def _slots(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path below the root (values that can be replaced)."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for k, v in items:
        yield path + (k,)
        yield from _slots(v, path + (k,))


def _schema_node(path: tuple[Any, ...]) -> dict[str, Any] | None:
    node: dict[str, Any] | None = SCHEMA
    for key in path:
        if node is None:
            return None
        node = _resolve(node)
        if isinstance(key, int):
            node = node.get("items")
        elif key in node.get("properties", {}):
            node = node["properties"][key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return _resolve(node) if node is not None else None


def _set(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


KEY_LINE = re.compile(r'^(?P<indent>[ ]*)(?P<key>"?[A-Za-z_][\w-]*"?):(?=\s|$)')
VALUE_LINE = re.compile(r'^(?P<head>[ ]*(?:- )?"?[A-Za-z_][\w-]*"?:[ ]+)(?P<value>[^\s{\[&*|>#][^#]*?)\s*$')
NUMBER = re.compile(r'(?<=[:\[,{] )-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?=\s*(?:$|[,}\]]))', re.M)
BOOL = re.compile(r'(?<=[:\[,{] )(?:true|false)(?=\s*(?:$|[,}\]]))', re.M)


def _lines(text: str, pattern: re.Pattern[str]) -> list[int]:
    return [i for i, line in enumerate(text.split("\n")) if pattern.match(line)]


# ---- mutation families (each returns a PolicyCase)

TYPE_CONFUSION = st.sampled_from([
    "8k", "", "0", "true", "yes", "NaN", "1e3", 0, -1, -(10 ** 12), 1.5, -0.0, 1e-300, True, False, None,
    [], [1, 2], ["a"], {}, {"a": 1}, {"max_tokens": 5}, "x" * 5000, "\u202e\u0000", 10 ** 19,
])


@st.composite
def mut_unknown_key(draw: st.DrawFn) -> PolicyCase:
    files, _text, data = draw(base_policy())
    spots = list(_mappings(data))
    path, mapping = draw(st.sampled_from(spots))
    node = _schema_node(path)
    allowed = set((node or {}).get("properties", {}))
    known = sorted(allowed | set(mapping)) or ["max_tokens"]
    near = draw(st.sampled_from(known))
    key = draw(st.one_of(
        st.sampled_from([near[:-1], near + "s", near.upper(), near.replace("_", ""),
                         re.sub(r"_(\w)", lambda m: m.group(1).upper(), near), near.replace("_", "-")]),
        st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True),
    ))
    if not key or key in allowed or key in mapping or key == "extends" or key == "<<":
        key = "zz_" + (key or "x")
    mapping[key] = draw(st.sampled_from([1, "x", True, None, {"a": 1}, [1]]))
    closed = node is not None and node.get("additionalProperties") is False
    open_levels = path[-1:] == ("levels",) and path[:1] == ("spec",)
    files["policy.yaml"] = dump(data).encode()
    case = PolicyCase(files, note=f"unknown key {key!r} at {'.'.join(map(str, path)) or '$'}")
    if closed and key not in LEVEL_KEYS:
        case.expect_code = "policy.unknown_field"
    elif open_levels and key not in ("DOCUMENT", "SECTION", "PARAGRAPH", "SENTENCE"):
        case.expect_error = True
    return case


@st.composite
def mut_wrong_type(draw: st.DrawFn) -> PolicyCase:
    files, _text, data = draw(base_policy())
    slots = list(_slots(data))
    count = draw(st.integers(1, 3))
    notes = []
    for _ in range(count):
        slots = list(_slots(data))
        if not slots:
            break
        path = draw(st.sampled_from(slots))
        value = copy.deepcopy(draw(TYPE_CONFUSION))  # a shared object could make a cycle
        _set(data, path, value)
        notes.append(f"{'.'.join(map(str, path))}={value!r:.40}")
    files["policy.yaml"] = dump(data).encode()
    return PolicyCase(files, note="wrong type " + "; ".join(notes))


@st.composite
def mut_duplicate_key(draw: st.DrawFn) -> PolicyCase:
    files, text, _data = draw(base_policy())
    lines = text.split("\n")
    candidates = _lines(text, KEY_LINE)
    if draw(st.booleans()) and candidates:
        i = draw(st.sampled_from(candidates))
        if draw(st.booleans()):  # the same line again, right after itself
            lines.insert(i + 1, lines[i])
        else:  # the key with a scalar value, right before it (after it would be a syntax error)
            lines.insert(i, KEY_LINE.match(lines[i]).group(0) + " 123")  # type: ignore[union-attr]
        note = f"duplicate of line {i + 1}: {lines[i]!r:.60}"
    else:
        values = _lines(text, VALUE_LINE)
        if not values:
            lines.append("spec: {a: 1, a: 2}")
            note = "flow duplicate at end"
        else:
            i = draw(st.sampled_from(values))
            m = VALUE_LINE.match(lines[i])
            lines[i] = m.group("head") + "{k: 1, k: 2}"  # type: ignore[union-attr]
            note = f"flow mapping with duplicate key at line {i + 1}"
    files["policy.yaml"] = "\n".join(lines).encode()
    return PolicyCase(files, note=note, expect_code="policy.duplicate_key")


YAML11 = ["yes", "no", "on", "off", "y", "n", "Yes", "NO", "On", "OFF", "Y", "N"]


@st.composite
def mut_yaml11_bool(draw: st.DrawFn) -> PolicyCase:
    files, text, _data = draw(base_policy())
    word = draw(st.sampled_from(YAML11))
    spots = [m.span() for m in BOOL.finditer(text)]
    mode = draw(st.integers(0, 2))
    if mode == 0 and spots:
        a, b = draw(st.sampled_from(spots))
        text = text[:a] + word + text[b:]
        note = f"boolean written as {word!r}"
    elif mode == 1 and _lines(text, VALUE_LINE):
        lines = text.split("\n")
        i = draw(st.sampled_from(_lines(text, VALUE_LINE)))
        lines[i] = VALUE_LINE.match(lines[i]).group("head") + word  # type: ignore[union-attr]
        text = "\n".join(lines)
        note = f"value at line {i + 1} replaced by {word!r}"
    else:
        lines = text.split("\n")
        keys = _lines(text, KEY_LINE)
        i = draw(st.sampled_from(keys))
        m = KEY_LINE.match(lines[i])
        lines[i] = m.group("indent") + word + ":" + lines[i][m.end():]  # type: ignore[union-attr]
        text = "\n".join(lines)
        note = f"key at line {i + 1} replaced by {word!r}"
    files["policy.yaml"] = text.encode()
    return PolicyCase(files, note=note, expect_code="policy.yaml11_boolean")


NON_FINITE = [".nan", ".NaN", ".NAN", ".inf", "-.inf", "+.inf", ".Inf", "1e400", "-1e400", "1e309"]
NUMBERS = NON_FINITE + [
    "1e308", "-1e308", "4.9e-324", "1e-400", "99999999999999999999", "-99999999999999999999",
    "1" + "0" * 400, "1" + "0" * 5000, "-" + "9" * 4400, "1" + "0" * 400 + ".5", "0x7fffffffffffffff",
    "0o777", "010", "-007", "1_000", "1:30", "+12", "-0", "-0.0", ".5", "5.", "1E3", "6.00e2",
    "0.30000000000000004", "1000000000", "1000000001", "2147483648", "-1",
]


@st.composite
def mut_huge_number(draw: st.DrawFn) -> PolicyCase:
    files, text, _data = draw(base_policy())
    literal = draw(st.sampled_from(NUMBERS))
    spots = [m.span() for m in NUMBER.finditer(text)]
    if spots and draw(st.integers(0, 3)) > 0:
        a, b = draw(st.sampled_from(spots))
        text = text[:a] + literal + text[b:]
        where = "a number"
    else:
        lines = text.split("\n")
        values = _lines(text, VALUE_LINE)
        if values:
            i = draw(st.sampled_from(values))
            lines[i] = VALUE_LINE.match(lines[i]).group("head") + literal  # type: ignore[union-attr]
            where = f"line {i + 1}"
        else:
            lines.append(f"x: {literal}")
            where = "a new key"
        text = "\n".join(lines)
    if draw(st.integers(0, 4)) == 0:  # a huge number as a matcher's metadata value (any number is valid there)
        big = draw(st.sampled_from(["9007199254740993", "-99999999999999999999", "1" + "0" * 400, "1e308",
                                    "4.9e-324", literal]))
        text = text.rstrip("\n") + f"\n  blocked: [{{metadata: {{weight: {big}}}}}]\n"
        where += f" and {big[:24]!r} in a blocked matcher's metadata"
    files["policy.yaml"] = text.encode()
    case = PolicyCase(files, note=f"{literal[:24]!r} written at {where}")
    if literal in NON_FINITE:
        case.expect_code = "policy.non_finite"
    return case


@st.composite
def mut_deep_nesting(draw: st.DrawFn) -> PolicyCase:
    files, text, _data = draw(base_policy())
    # 20,000 levels cost seconds per example in PyYAML: only in the exhaustive run (the
    # 1,000-level regression test below keeps the RecursionError path covered).
    depth = draw(st.sampled_from([8, 63, 64, 65, 66, 120, 400, 1000, 3000]
                                 + ([20000] if os.environ.get("CTXBUDGET_EXHAUSTIVE") == "1" else [])))
    style = draw(st.sampled_from(["flow-seq", "flow-map", "block-map", "block-seq"]))
    if style == "flow-seq":
        value = "[" * depth + "1" + "]" * depth
    elif style == "flow-map":
        value = "{a: " * depth + "1" + "}" * depth
    else:
        value = None
    lines = text.split("\n")
    values = _lines(text, VALUE_LINE)
    if value is not None and values:
        i = draw(st.sampled_from(values))
        lines[i] = VALUE_LINE.match(lines[i]).group("head") + value  # type: ignore[union-attr]
        where = f"line {i + 1}"
    else:
        depth = min(depth, 600)  # block nesting grows quadratically in bytes
        if style == "block-seq":
            block = "deep:\n" + "".join("  " * (k + 1) + "-\n" for k in range(depth)) + "  " * (depth + 1) + "1\n"
        else:
            block = "deep:\n" + "".join("  " * (k + 1) + "a:\n" for k in range(depth)) + "  " * (depth + 1) + "b: 1\n"
        lines.append(block)
        where = "a new top-level key"
    files["policy.yaml"] = "\n".join(lines).encode()
    return PolicyCase(files, note=f"{style} nesting depth {depth} at {where}")


@st.composite
def mut_alias_bomb(draw: st.DrawFn) -> PolicyCase:
    files, text, _data = draw(base_policy())
    kind = draw(st.sampled_from(["laughs", "recursive", "reuse", "merge", "undefined"]))
    expect = None
    if kind == "laughs":
        levels, width = draw(st.integers(2, 9)), draw(st.integers(2, 12))
        rows = ["bomb0: &a0 [" + ", ".join(["lol"] * width) + "]"]
        rows += [f"bomb{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * width) + "]" for k in range(1, levels)]
        extra = "\n".join(rows)
        if width ** levels > 20_000:
            expect = "policy.alias_bomb"
        note = f"billion laughs {levels} levels x {width}"
    elif kind == "recursive":
        extra = draw(st.sampled_from(["loop: &r [*r]", "loop: &r {a: *r}", "loop: &r [1, [2, *r]]"]))
        expect = "policy.alias_bomb"
        note = "recursive alias"
    elif kind == "reuse":
        extra = "shared: &s {max_tokens: 600}\nagain: *s"
        note = "alias reused under an unknown key"
        expect = "policy.unknown_field"
    elif kind == "merge":
        extra = "m: &m {a: 1}\nn: {<<: *m, b: 2}"
        expect = "policy.merge_key"
        note = "merge key"
    else:
        extra = "x: *nowhere"
        expect = "policy.yaml_syntax"
        note = "undefined alias"
    files["policy.yaml"] = (text.rstrip("\n") + "\n" + extra + "\n").encode()
    return PolicyCase(files, note=note, expect_code=expect)


@st.composite
def mut_multi_document(draw: st.DrawFn) -> PolicyCase:
    files, text, _data = draw(base_policy())
    kind = draw(st.sampled_from(["second", "empty-second", "prefix", "end-marker", "directive", "only-marker"]))
    expect = None
    if kind == "second":
        text = text + "\n---\n" + text
        expect = "policy.multiple_documents"
    elif kind == "empty-second":
        text = text.rstrip("\n") + "\n---\n"
        expect = "policy.multiple_documents"
    elif kind == "prefix":
        text = "---\n" + text
    elif kind == "end-marker":
        text = text.rstrip("\n") + "\n...\n"
    elif kind == "directive":
        text = draw(st.sampled_from(["%YAML 1.1\n---\n", "%YAML 1.2\n---\n", "%FOO bar\n---\n"])) + text
    else:
        text = draw(st.sampled_from(["---\n", "...\n", "--- \n...\n---\n", ""]))
        expect = None
    files["policy.yaml"] = text.encode()
    case = PolicyCase(files, note=f"documents: {kind}", expect_code=expect)
    case.expect_error = kind == "only-marker"
    return case


JUNK = [b"\x00", b"\xff", b"\xfe\xff", b"\xc3", b"\x1b[31m", b"\x7f", b"\x85", b"\xe2\x80\xa8", b"\t",
        b"\xef\xbb\xbf", b"\r", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x0c", b"\xc0\xaf"]


@st.composite
def mut_binary_junk(draw: st.DrawFn) -> PolicyCase:
    files, text, _data = draw(base_policy())
    raw = text.encode()
    kind = draw(st.sampled_from(["insert", "overwrite", "utf16", "utf32", "random", "truncate"]))
    if kind == "insert":
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(raw)))
            raw = raw[:at] + draw(st.sampled_from(JUNK)) + raw[at:]
    elif kind == "overwrite":
        at = draw(st.integers(0, max(0, len(raw) - 1)))
        junk = draw(st.binary(min_size=1, max_size=16))
        raw = raw[:at] + junk + raw[at + len(junk):]
    elif kind == "utf16":
        raw = text.encode("utf-16")
    elif kind == "utf32":
        raw = text.encode("utf-32")
    elif kind == "random":
        raw = draw(st.binary(max_size=256))
    else:
        raw = (text + "é").encode()[:-1]
    files["policy.yaml"] = raw
    return PolicyCase(files, note=f"binary junk ({kind})")


@st.composite
def mut_extends(draw: st.DrawFn) -> PolicyCase:
    """extends: cycles, escapes from the folder, missing and odd targets, deep chains."""
    _files, text, data = draw(base_policy())
    body = {k: v for k, v in data.items() if k != "extends"} if isinstance(data, dict) else {}
    own = dump(body)
    base = (ROOT / "policies" / "base.yaml").read_bytes()
    kind = draw(st.sampled_from([
        "self", "pair", "triangle", "parent", "absolute", "home", "dotdot-inside", "symlink-out",
        "missing", "directory", "empty", "non-string", "nul", "long-name", "long-path", "deep-chain",
        "bad-base", "junk-base", "fine", "subfolder", "newline", "symlink-loop",
    ]))

    def ext(target: str) -> bytes:
        return (f"extends: {json.dumps(target)}\n" + own).encode()

    files: dict[str, bytes] = {}
    links: dict[str, str] = {}
    main = "policy.yaml"
    expect = None
    if kind == "self":
        files[main], expect = ext("policy.yaml"), "policy.extends_cycle"
    elif kind == "pair":
        files[main], files["b.yaml"], expect = ext("b.yaml"), ext("policy.yaml"), "policy.extends_cycle"
    elif kind == "triangle":
        files[main], files["b.yaml"], files["c.yaml"] = ext("b.yaml"), ext("c.yaml"), ext("./policy.yaml")
        expect = "policy.extends_cycle"
    elif kind == "parent":
        main = "pol/policy.yaml"
        files[main], files["base.yaml"], expect = ext("../base.yaml"), base, "policy.extends_outside"
    elif kind == "absolute":
        files[main], expect = ext(draw(st.sampled_from(["/etc/passwd", "/dev/zero", "/proc/self/environ"]))), \
            "policy.extends_outside"
    elif kind == "home":
        files[main], expect = ext("~/base.yaml"), "policy.extends_outside"
    elif kind == "dotdot-inside":
        files[main], files["base.yaml"] = ext("sub/../base.yaml"), base
        (files.setdefault("sub/.keep", b""))
    elif kind == "symlink-out":
        files[main], links["base.yaml"], expect = ext("base.yaml"), "/etc/hostname", "policy.extends_symlink"
    elif kind == "symlink-loop":
        files[main], links["base.yaml"] = ext("base.yaml"), "base.yaml"
        case = PolicyCase(files, main, note="extends a symlink pointing at itself", links=links)
        case.expect_error = True
        return case
    elif kind == "missing":
        files[main], expect = ext("nope.yaml"), "policy.extends_missing"
    elif kind == "directory":
        files[main], files["sub/x.yaml"], expect = ext("sub"), base, "policy.extends_missing"
    elif kind == "empty":
        files[main] = ext("")
        case = PolicyCase(files, main, note="extends ''")
        case.expect_error = True
        return case
    elif kind == "non-string":
        value = draw(st.sampled_from(["[base.yaml]", "1", "null", "true", "{a: b}"]))
        files[main], files["base.yaml"] = (f"extends: {value}\n" + own).encode(), base
        case = PolicyCase(files, main, note=f"extends {value}")
        case.expect_error = True
        return case
    elif kind == "nul":
        files[main] = ext("base.yaml\x00.txt")
        case = PolicyCase(files, main, note="extends with a NUL byte")
        case.expect_error = True
        return case
    elif kind == "long-name":
        files[main] = ext("a" * draw(st.sampled_from([255, 256, 300, 5000])) + ".yaml")
        case = PolicyCase(files, main, note="extends a very long file name")
        case.expect_error = True
        return case
    elif kind == "long-path":
        files[main] = ext("a/" * 2100 + "x.yaml")
        case = PolicyCase(files, main, note="extends a very long path")
        case.expect_error = True
        return case
    elif kind == "deep-chain":
        n = draw(st.integers(7, 11))
        files[main] = ext("p1.yaml")
        for k in range(1, n):
            files[f"p{k}.yaml"] = ext(f"p{k + 1}.yaml")
        files[f"p{n}.yaml"] = base
        expect = "policy.extends_too_deep" if n >= 8 else None
    elif kind == "bad-base":
        typo = base.replace(b"reserve_output:", b"reserve_outptu:")
        files[main], files["base.yaml"], expect = ext("base.yaml"), typo, "policy.unknown_field"
    elif kind == "junk-base":
        files[main], files["base.yaml"] = ext("base.yaml"), draw(st.binary(min_size=1, max_size=64)) + b"\xff"
        case = PolicyCase(files, main, note="extends a binary base")
        case.expect_error = True
        return case
    elif kind == "subfolder":
        files[main], files["sub/base.yaml"] = ext("sub/base.yaml"), base
    elif kind == "newline":
        files[main], files["base.yaml"] = ext("base.yaml\n"), base
        case = PolicyCase(files, main, note="extends with a trailing newline")
        case.expect_error = True
        return case
    else:  # fine
        files[main], files["base.yaml"] = ext("base.yaml"), base
    return PolicyCase(files, main, note=f"extends: {kind}", expect_code=expect, links=links)


@st.composite
def schema_generated(draw: st.DrawFn) -> PolicyCase:
    data = _spec_last(draw(SCHEMA_POLICY))
    return PolicyCase({"policy.yaml": dump(data).encode()}, note="generated from the schema")


POLICY_FAMILIES: dict[str, st.SearchStrategy[PolicyCase]] = {
    "policy/schema_generated": schema_generated(),
    "policy/unknown_key": mut_unknown_key(),
    "policy/wrong_type": mut_wrong_type(),
    "policy/duplicate_key": mut_duplicate_key(),
    "policy/yaml11_boolean": mut_yaml11_bool(),
    "policy/huge_or_nonfinite_number": mut_huge_number(),
    "policy/deep_nesting": mut_deep_nesting(),
    "policy/alias_bomb": mut_alias_bomb(),
    "policy/multiple_documents": mut_multi_document(),
    "policy/binary_junk": mut_binary_junk(),
    "policy/extends": mut_extends(),
}


# =========================================================================== policies: the rule


def check_policy_file(path: Path, folder: Path, *, expect_code: str | None = None,
                      expect_error: bool = False, tally: Tally | None = None,
                      usability: bool = True, scratch: Path | None = None) -> tuple[str, list[str]]:
    """(outcome, problems) for one policy file by the policy rule. ``folder`` holds the
    policy (errors must name a file in it); ``scratch`` receives the probe candidates
    and audit log (default: ``folder``)."""
    folders = (folder,)
    problems: list[str] = []
    policy = err = None
    t0 = time.perf_counter()
    try:
        with deadline():
            policy = load_policy(path)
    except CaseTimeout as exc:
        return "hang", [f"load_policy hang: {exc}"]
    except EngineError as exc:
        err = exc
    except RecursionError as exc:
        return "crash", [f"load_policy raised RecursionError: {str(exc)[:120]}"]
    except Exception as exc:  # noqa: BLE001
        problems.append(f"load_policy raised {type(exc).__name__}: {str(exc)[:160]}")
    elapsed = time.perf_counter() - t0
    if elapsed > CASE_TIMEOUT_S:
        problems.append(f"load_policy took {elapsed:.1f} s")
    if err is not None:
        problems += error_problems(err, folders, "policy")
        if err.exit_code != 2:
            problems.append(f"policy error {err.code!r} maps to exit {err.exit_code}, not 2")
        codes = {i.code for i in err.issues}
        if expect_code and expect_code not in codes:
            problems.append(f"expected {expect_code} among the issues, got {sorted(codes)}")
    elif policy is not None and (expect_code or expect_error):
        problems.append(f"accepted a policy that must be rejected ({expect_code or 'any error'})")

    run = run_cli(["--errors=json", "policy", "validate", str(path)])
    if run.crash:
        problems.append(run.crash)
    elif policy is not None:
        if run.code != 0 or not run.out.startswith("ok ") or run.err:
            problems.append(f"validate of a valid policy: exit {run.code}, stderr {run.err[:160]!r}")
    elif err is not None:
        if run.code != 2:
            problems.append(f"validate exit {run.code}, expected 2")
        json_problems, data = json_error_problems(run, 2, folders, "validate")
        problems += json_problems
        if data is not None and data.get("code") != err.code:
            problems.append(f"validate JSON code {data.get('code')!r} != library code {err.code!r}")
    else:
        first = run.err.strip().splitlines()[0][:200] if run.err.strip() else ""
        problems.append(f"validate exit {run.code}: {first}")

    if err is not None:
        return f"rejected {err.code}", problems
    if policy is None:
        return "crash", problems
    if not usability:
        return "valid", problems
    # A policy that loads must also be usable.
    scratch = scratch or folder
    cands = scratch / "_probe.jsonl"
    cands.write_text(rows_to_jsonl(PROBE_ROWS), encoding="utf-8")
    run = run_cli(["--errors=json", "allocate", "--policy", str(path), "--candidates", str(cands),
                   "--audit-log", str(scratch / "_audit.jsonl")])
    outcome, alloc_problems = allocation_problems(run, path, PROBE_ROWS, (folder, scratch), tally)
    return f"valid, {outcome}", problems + [f"valid policy, probe allocation: {p}" for p in alloc_problems]


def run_policy_family(name: str, n: int, root: Path, tally: Tally) -> None:
    strategy = POLICY_FAMILIES[name]

    @hyp_settings(n)
    @given(strategy)
    def one(case: PolicyCase) -> None:
        with case_folder(root) as folder:
            path = case.write(folder)
            outcome, problems = check_policy_file(path, folder, expect_code=case.expect_code,
                                                  expect_error=case.expect_error, tally=tally)
            tally.record(name, outcome.replace(", ", "+").split(" ")[0], problems, case.describe(), folder)

    one()


# =========================================================================== candidates: sources

WORDS = ("refund annual plan billing invoice cancel account password export data api rate limit "
         "the of and to a in is for on with as by at from 2024 30 days €12 naïve 漢字 🙂").split()
PREFIXES = ["kb", "faq", "crm", "docs", "src/app.py", "legal", "disclaimer-eu", "refund-terms"]


@st.composite
def content_text(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80))
    if kind == 1:
        return draw(st.sampled_from(["", " ", "\n\n", "{content}", "{source_id}{{}}", "<|endoftext|>",
                                    "x" * 3000, "1234567890" * 50, "\u202e\u0000\ufeff", "'s 've 're"]))
    n = draw(st.integers(1, 60 if kind < 9 else 2500))
    return " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=n, max_size=n)))


@st.composite
def valid_rows(draw: st.DrawFn, max_size: int = 12) -> tuple[list[dict[str, Any]], bool]:
    """A valid candidate set (ids unique, finite scores — negative ones too — acyclic
    parents) and whether every caller-given token_count is at least the exact count."""
    n = draw(st.integers(0, max_size))
    tok = get_tokenizer("cl100k_base")
    rows: list[dict[str, Any]] = []
    honest = True
    for k in range(n):
        prefix = draw(st.sampled_from(PREFIXES))
        sid = prefix if prefix in ("refund-terms",) and all(r["source_id"] != prefix for r in rows) \
            else f"{prefix}#{k}"
        row: dict[str, Any] = {
            "source_id": sid,
            "content": draw(content_text()),
            "relevance_score": draw(st.one_of(
                st.floats(-1, 1.2, allow_nan=False),
                st.sampled_from([0.0, -0.0, 1.0, 0.05, 0.1, 0.2, 0.25, -5.0, 1e-300, 7.0, 10 ** 6]))),
        }
        if draw(st.integers(0, 4)) == 0:
            exact = tok.count(row["content"])
            mode = draw(st.sampled_from(["exact", "over", "under", "big"]))
            row["token_count"] = {"exact": exact, "over": exact + draw(st.integers(1, 50)),
                                  "under": draw(st.integers(0, max(0, exact - 1))),
                                  "big": draw(st.integers(5_000, 200_000))}[mode]
            honest = honest and row["token_count"] >= exact
        if draw(st.booleans()):
            row["level"] = draw(st.sampled_from(LEVEL_KEYS + ["CLASS", "CHUNK"]))
        meta: dict[str, Any] = {}
        if draw(st.integers(0, 3)) == 0:
            meta["pii"] = draw(st.booleans())
        if draw(st.integers(0, 4)) == 0:
            meta["privileged"] = True
        if draw(st.integers(0, 2)) == 0:
            meta["doc_id"] = draw(st.sampled_from(["d1", "d2", "d3"]))
            meta["order"] = draw(st.integers(0, 20))
        if meta or draw(st.booleans()):
            row["metadata"] = meta
        if rows and draw(st.integers(0, 2)) == 0:
            row["parent_id"] = draw(st.sampled_from([r["source_id"] for r in rows]))
        rows.append(row)
    return rows, honest


# A hostile candidates file is written token by token so that it can hold what JSON
# libraries refuse to write: NaN, huge literals, duplicate keys, raw non-UTF-8 bytes.
GOOD, BAD, ODD = "good", "bad", "odd"  # odd: allowed by the schema but unusual
SCORE_LITERALS = [
    (b"0.5", GOOD), (b"-0.7", GOOD), (b"0", GOOD), (b"-1e308", GOOD), (b"1e308", ODD), (b"1.7976931348623157e308", ODD),
    (b"5e-324", GOOD), (b"1e-400", GOOD), (b"1" + b"0" * 30, ODD), (b"1" + b"0" * 400, ODD), (b"-" + b"9" * 400, ODD),
    (b"1" + b"0" * 5000, ODD), (b"NaN", BAD), (b"Infinity", BAD), (b"-Infinity", BAD), (b"1e400", BAD),
    (b"-1e400", BAD), (b"\"0.5\"", BAD), (b"true", BAD), (b"null", BAD), (b"[0.5]", BAD),
]
TOKEN_LITERALS = [
    (b"3", GOOD), (b"0", GOOD), (b"100000", GOOD), (b"9007199254740993", ODD), (b"1" + b"0" * 30, ODD),
    (b"1" + b"0" * 5000, ODD), (b"-1", BAD), (b"-0", GOOD), (b"1.0", BAD), (b"1.5", BAD), (b"-0.0", BAD), (b"1e30", BAD),
    (b"NaN", BAD), (b"\"5\"", BAD), (b"true", BAD), (b"null", BAD),
]
STRING_LITERALS = [
    (b"\"plain\"", GOOD), (b"\"\"", ODD), (b"\"\\u0000nul\"", GOOD), (b"\"\\ud800\"", ODD), (b"\"a\\udc00b\"", ODD),
    (b"\"\\ud83d\\ude00\"", GOOD), (b"\"raw \xff\xfe bytes\"", BAD), (b"\"\xed\xa0\x80\"", BAD),
    (b"\"" + b"x" * 20000 + b"\"", GOOD), (b"\"{content}{level}\"", GOOD), (b"\"line\\nbreak\\u2028\"", GOOD),
    (b"123", BAD), (b"null", BAD), (b"[]", BAD), (b"{}", BAD),
]
META_LITERALS = [
    (b"{}", GOOD), (b"{\"pii\": true}", GOOD), (b"{\"doc_id\": 5, \"order\": \"x\"}", GOOD),
    (b"{\"x\": " + b"9" * 20 + b"}", ODD), (b"{\"x\": 1" + b"0" * 5000 + b"}", ODD), (b"{\"x\": \"\\ud800\"}", ODD),
    (b"{\"order\": 1e308}", GOOD), (b"{\"ancestors\": \"a\"}", GOOD), (b"{\"ancestors\": [1, {}]}", GOOD),
    (b"{\"parent_id\": 7}", ODD), (b"{\"a\": {\"a\": {\"a\": {\"a\": [[[[[]]]]]}}}}", GOOD),
    (b"[]", BAD), (b"\"x\"", BAD), (b"{\"k\": 1, \"k\": 2}", BAD), (b"{\"x\": NaN}", BAD),
]
LEVEL_LITERALS = [(b"\"PARAGRAPH\"", GOOD), (b"\"SECTION\"", GOOD), (b"\"FUNCTION\"", GOOD), (b"\"{level}\"", GOOD),
                  (b"\"\"", BAD), (b"5", BAD), (b"null", BAD)]
JUNK_LINES = [b"not json", b"{", b"}", b"[1, 2]", b"\"str\"", b"null", b"{}", b"\x00\x01\x02", b"\xff\xfe\xfd",
              b"[" * 50000 + b"]" * 50000, b"{\"a\": " * 30000 + b"1" + b"}" * 30000, b"{\"source_id\": \"a\"} extra",
              b"\xef\xbb\xbf{\"source_id\": \"bom\", \"content\": \"x\", \"relevance_score\": 0.5}"]


@dataclass
class CandidateCase:
    data: bytes
    suffix: str = ".jsonl"
    note: str = ""
    must_reject: bool = False
    rows: list[dict[str, Any]] | None = None  # parsed rows when the file is plain JSON
    honest: bool = True

    def describe(self) -> str:
        snippet = self.data[:200] if len(self.data) <= 200 else self.data[:150] + b"..." + self.data[-40:]
        return f"{self.note}: {snippet!r}"


def _parse_rows(data: bytes) -> list[dict[str, Any]] | None:
    """Rows as a lenient reader sees them (None when not parseable as JSON objects)."""
    try:
        text = data.decode("utf-8-sig")
        stripped = text.strip()
        if stripped.startswith("["):
            rows = json.loads(stripped)
        else:
            rows = [json.loads(line) for line in text.split("\n") if line.strip()]
    except (ValueError, RecursionError):
        return None
    return rows if all(isinstance(r, dict) and "source_id" in r for r in rows) else None


@st.composite
def hostile_record(draw: st.DrawFn, index: int, ids: list[bytes]) -> tuple[bytes, str, str]:
    """One candidate object as bytes, most fields good and a few (usually one) hostile,
    so that each input reaches past the first check. Returns (bytes, verdict, note)."""
    verdicts: list[str] = []
    notes: list[str] = []
    hostile = draw(st.sampled_from([0, 1, 1, 1, 2, 3]))  # how many fields go wrong
    names = ["source_id", "content", "relevance_score", "token_count", "level", "metadata", "parent_id",
             "missing", "extra", "duplicate_key"]
    chosen = set(draw(st.lists(st.sampled_from(names), min_size=hostile, max_size=hostile)))

    def pick(table: list[tuple[bytes, str]], name: str) -> bytes:
        pool = table if name in chosen else [t for t in table if t[1] == GOOD]
        literal, verdict = draw(st.sampled_from(pool))
        verdicts.append(verdict)
        if verdict != GOOD:
            notes.append(f"{name}={literal[:24]!r}")
        return literal

    if "source_id" in chosen:
        sid = draw(st.one_of(st.sampled_from(ids or [b"\"id-0\""]),
                             st.sampled_from([b"\"\"", b"7", b"\"\\ud800\"", b"\"a\xffb\"", b"null"])))
    else:
        sid = f"\"id-{index}\"".encode()
    if sid in ids or sid in (b"\"\"", b"7", b"null", b"\"a\xffb\""):
        verdicts.append(BAD)
        notes.append(f"source_id={sid!r}" + (" (duplicate)" if sid in ids else ""))
    elif sid == b"\"\\ud800\"":
        verdicts.append(ODD)
        notes.append("source_id lone surrogate")
    ids.append(sid)
    fields = {"source_id": sid, "content": pick(STRING_LITERALS, "content"),
              "relevance_score": pick(SCORE_LITERALS, "relevance_score")}
    if "token_count" in chosen or draw(st.integers(0, 3)) == 0:
        fields["token_count"] = pick(TOKEN_LITERALS, "token_count")
    if "level" in chosen or draw(st.booleans()):
        fields["level"] = pick(LEVEL_LITERALS, "level")
    if "metadata" in chosen or draw(st.booleans()):
        fields["metadata"] = pick(META_LITERALS, "metadata")
    if "parent_id" in chosen:
        fields["parent_id"] = draw(st.sampled_from([b"null", b"\"id-0\"", f"\"id-{index}\"".encode(), b"5",
                                                    b"\"ghost\""]))
        if fields["parent_id"] in (b"5", f"\"id-{index}\"".encode()):
            verdicts.append(BAD)
            notes.append(f"parent_id={fields['parent_id']!r}")
    if "missing" in chosen:
        missing = draw(st.sampled_from(["source_id", "content", "relevance_score"]))
        del fields[missing]
        verdicts.append(BAD)
        notes.append(f"missing {missing}")
    pairs = [(f"\"{k}\"".encode(), v) for k, v in fields.items()]
    if "extra" in chosen:
        pairs.append((draw(st.sampled_from([b"\"extra\"", b"\"relevance\"", b"\"tokens\"", b"\"\""])), b"1"))
        verdicts.append(BAD)
        notes.append("unknown field")
    if "duplicate_key" in chosen and pairs:
        pairs.append(pairs[draw(st.integers(0, len(pairs) - 1))])
        verdicts.append(BAD)
        notes.append("duplicate key")
    body = b"{" + b", ".join(k + b": " + v for k, v in pairs) + b"}"
    worst = BAD if BAD in verdicts else ODD if ODD in verdicts else GOOD
    return body, worst, "; ".join(notes)


@st.composite
def hostile_candidates(draw: st.DrawFn) -> CandidateCase:
    n = draw(st.integers(0, 6))
    ids: list[bytes] = []
    lines, verdicts, notes = [], [], []
    for k in range(n):
        body, verdict, note = draw(hostile_record(k, ids))
        lines.append(body)
        verdicts.append(verdict)
        if note:
            notes.append(f"#{k}: {note}")
    if draw(st.integers(0, 4)) == 0:
        junk = draw(st.sampled_from(JUNK_LINES))
        lines.insert(draw(st.integers(0, len(lines))), junk)
        if not junk.startswith(b"\xef\xbb\xbf"):
            verdicts.append(BAD)
        notes.append(f"junk line {junk[:20]!r}")
    form = draw(st.sampled_from(["jsonl", "jsonl", "crlf", "array", "array.json", "bom"]))
    if form.startswith("array"):
        data = b"[\n" + b",\n".join(lines) + b"\n]"
    else:
        data = (b"\r\n" if form == "crlf" else b"\n").join(lines) + (b"\n" if draw(st.booleans()) else b"")
        if form == "bom":
            data = b"\xef\xbb\xbf" + data
    case = CandidateCase(data, ".json" if form == "array.json" else ".jsonl",
                         note=f"{form}, {n} records" + (": " + "; ".join(notes) if notes else ""),
                         must_reject=BAD in verdicts)
    case.rows = _parse_rows(data) if not case.must_reject else None
    if case.rows is not None and any("token_count" in r for r in case.rows):
        case.honest = False  # counts here are arbitrary literals
    return case


@st.composite
def valid_candidates_file(draw: st.DrawFn) -> CandidateCase:
    rows, honest = draw(valid_rows())
    form = draw(st.sampled_from(["jsonl", "array", "array.json"]))
    if form == "jsonl":
        data = rows_to_jsonl(rows).encode()
    else:
        data = json.dumps(rows, ensure_ascii=draw(st.booleans())).encode()
    return CandidateCase(data, ".json" if form == "array.json" else ".jsonl",
                         note=f"{len(rows)} valid rows ({form})", rows=rows, honest=honest)


@st.composite
def hierarchy_candidates(draw: st.DrawFn) -> CandidateCase:
    """Parent links and ancestor lists as a retriever might send them, including wrong
    ones: cycles, self-links, ancestors lists that disagree with parent_id, missing
    parents."""
    n = draw(st.integers(1, 8))
    ids = [f"n{k}" for k in range(n)]
    rows: list[dict[str, Any]] = []
    forced: dict[int, str] = {}
    for k, sid in enumerate(ids):
        row: dict[str, Any] = {"source_id": sid, "content": " ".join(WORDS[k % len(WORDS):][:5]) or "x",
                               "relevance_score": draw(st.sampled_from([0.9, 0.8, 0.5, 0.3, 0.05, -0.2]))}
        link = draw(st.integers(0, 6))
        if k in forced:
            row["parent_id"] = forced[k]
        elif link == 1:
            row["parent_id"] = draw(st.sampled_from(ids + ["ghost"]))
        elif link == 2:
            row["metadata"] = {"ancestors": draw(st.lists(st.sampled_from(ids + ["ghost"]), max_size=4))}
        elif link == 3:
            row["parent_id"] = draw(st.sampled_from(ids))
            row["metadata"] = {"ancestors": draw(st.lists(st.sampled_from(ids), max_size=3))}
        elif link == 4 and k:
            row["parent_id"] = ids[k - 1]
        elif link == 5 and k + 1 < n:  # a two-node cycle with the next node
            row["parent_id"] = ids[k + 1]
            forced[k + 1] = sid
        rows.append(row)
    # make_candidate already rejects a parent_id equal to the item's own id
    must = any(r.get("parent_id") == r["source_id"] for r in rows)
    return CandidateCase(rows_to_jsonl(rows).encode(), note=f"hierarchy of {n}", must_reject=must,
                         rows=None if must else rows)


CANDIDATE_FAMILIES: dict[str, st.SearchStrategy[CandidateCase]] = {
    "candidates/valid_random": valid_candidates_file(),
    "candidates/hostile_values": hostile_candidates(),
    "candidates/hierarchy": hierarchy_candidates(),
}
RUN_POLICIES = [ROOT / "policies" / "support-assistant.yaml", ROOT / "policies" / "code-assistant.yaml",
                ROOT / "policies" / "legal-research.yaml", ROOT / "examples" / "policy.yaml"]


def check_candidates_file(case: CandidateCase, policy_path: Path, folder: Path,
                          tally: Tally | None = None) -> tuple[str, list[str]]:
    path = folder / f"candidates{case.suffix}"
    path.write_bytes(case.data)
    run = run_cli(["--errors=json", "allocate", "--policy", str(policy_path), "--candidates", str(path),
                   "--audit-log", str(folder / "_audit.jsonl")])
    outcome, problems = allocation_problems(run, policy_path, case.rows, (folder, policy_path.parent), tally,
                                            honest=case.honest)
    if run.code == 0 and case.must_reject:
        problems.append("accepted a candidates file that must be rejected")
    return outcome, problems


def run_candidate_family(name: str, n: int, root: Path, tally: Tally,
                         policies: list[Path] = RUN_POLICIES) -> None:
    strategy = CANDIDATE_FAMILIES[name]

    @hyp_settings(n)
    @given(strategy, st.sampled_from(policies))
    def one(case: CandidateCase, policy_path: Path) -> None:
        with case_folder(root) as folder:
            outcome, problems = check_candidates_file(case, policy_path, folder, tally)
            tally.record(name, outcome.split(" ")[0], problems,
                         f"[{policy_path.name}] {case.describe()}", folder)

    one()


# =========================================================================== library: every policy x strategy


def run_library_family(n: int, tally: Tally, policies: list[Path] = SHIPPED) -> None:
    loaded = [load_policy(p) for p in policies]

    @hyp_settings(n)
    @given(valid_rows(max_size=16), st.sampled_from(range(len(loaded))))
    def one(drawn: tuple[list[dict[str, Any]], bool], which: int) -> None:
        rows, honest = drawn
        policy = loaded[which]
        tok = get_tokenizer(policy.tokenizer)
        cands = to_candidates(rows)
        for strategy in BudgetStrategy:
            family = f"library/{strategy.value}"
            problems: list[str] = []
            outcome = "allocated"
            try:
                with deadline():
                    alloc = allocate(cands, policy, strategy=strategy, check=False)
            except InfeasibleError:
                tally.record(family, "infeasible", [], "")
                continue
            except CaseTimeout as exc:
                tally.record(family, "hang", [f"hang: {exc}"], f"{policies[which].name} {rows!r:.300}")
                continue
            except Exception as exc:  # noqa: BLE001
                tally.record(family, "crash", [f"allocate raised {type(exc).__name__}: {str(exc)[:160]}"],
                             f"{policies[which].name} {rows!r:.300}")
                continue
            problems += map(str, verify(policy, cands, alloc))
            ids = [d.source_id for d in alloc.decisions]
            if ids != [r["source_id"] for r in rows]:
                problems.append("decisions do not account for every candidate once")
            recount = tok.count(alloc.context)
            # A hard limit whatever the caller's counts (the shipped policies use counts: max).
            if recount > policy.budget.limit_tokens:
                problems.append(f"OVER BUDGET: context recounts to {recount} > {policy.budget.limit_tokens}")
            for d in alloc.included:
                row = rows[d.index]
                if row["relevance_score"] < 0 and not any(m.matches(d.source_id, row.get("metadata") or {})
                                                          for m in policy.pinned):
                    problems.append(f"negative-score {d.source_id!r} included without a pin")
            tally.record(family, outcome, problems, f"{policies[which].name} strategy={strategy.value} "
                         f"{rows!r:.300}")

    one()


# =========================================================================== the tests


def _finish(tally: Tally, capsys: pytest.CaptureFixture[str] | None = None) -> None:
    report = tally.table()
    if capsys is not None:
        with capsys.disabled():
            print("\n" + report)
    assert sum(tally.tried.values()) > 0
    if sum(tally.failed.values()):
        pytest.fail(f"fuzz rule broken\n{report}\n{tally.failures()}", pytrace=False)


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CTXBUDGET_DEBUG", raising=False)


#: The default run draws half the examples of the exhaustive one (``--exhaustive``):
#: the per-family rules are the same, the suite stays near 90 s on 2 cores.
_FULL = os.environ.get("CTXBUDGET_EXHAUSTIVE") == "1"
POLICY_EXAMPLES = 60 if _FULL else 30


@pytest.mark.parametrize("family", sorted(POLICY_FAMILIES))
def test_policy_fuzz(family: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every mutated policy is a valid, usable Policy or a clear PolicyError; validate
    exits 2 with one JSON object; nothing hangs or raises a traceback."""
    tally = Tally()
    run_policy_family(family, POLICY_EXAMPLES, tmp_path, tally)
    _finish(tally, capsys)


CANDIDATE_EXAMPLES = ({"candidates/valid_random": 80, "candidates/hostile_values": 200, "candidates/hierarchy": 80}
                      if _FULL else
                      {"candidates/valid_random": 40, "candidates/hostile_values": 100, "candidates/hierarchy": 40})


@pytest.mark.parametrize("family", sorted(CANDIDATE_FAMILIES))
def test_candidate_fuzz(family: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every candidates file allocates within the budget with each item accounted once,
    or is rejected with exit 2 and a JSON error naming code, path, file and line."""
    tally = Tally()
    run_candidate_family(family, CANDIDATE_EXAMPLES[family], tmp_path, tally)
    _finish(tally, capsys)


def test_library_every_policy_every_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    """engine.allocate on valid random candidates under each shipped policy with every
    strategy: the independent verifier finds nothing and the context fits the budget."""
    tally = Tally()
    run_library_family(40, tally)
    _finish(tally, capsys)


def test_large_candidate_inputs(tmp_path: Path) -> None:
    """A 10 MiB item (at the default limit), one byte over, many items, an empty file."""
    # base.yaml pins nothing: an empty file is then a valid (empty) allocation.
    policy = ROOT / "policies" / "base.yaml"
    ten_mib = 10 * 1024 * 1024
    text = ("refund annual plan billing invoice cancel " * (ten_mib // 40 + 1))[:ten_mib]
    cases = {
        "at_limit": (json.dumps({"source_id": "big", "content": text, "relevance_score": 0.9}) + "\n", 0),
        "over_limit": (json.dumps({"source_id": "big", "content": text + "x", "relevance_score": 0.9}) + "\n", 2),
        "many": (rows_to_jsonl([{"source_id": f"kb#{k}", "content": f"chunk {k} about refunds",
                                 "relevance_score": (k % 97) / 97} for k in range(3000)]), 0),
        "empty": ("", 0),
        "blank": ("\n \n\t\n", 0),
    }
    bad = []
    for name, (body, want) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        rows = _parse_rows(body.encode())
        case = CandidateCase(body.encode(), note=name, rows=rows, must_reject=want == 2)
        outcome, problems = check_candidates_file(case, policy, folder)
        if not outcome.startswith("allocated" if want == 0 else "rejected"):
            problems.append(f"{name}: expected exit {want}, got {outcome}")
        bad += [f"{name}: {p}" for p in problems]
    assert not bad, "\n".join(bad)


# =========================================================================== kept corpus


def _manifest() -> dict[str, dict[str, Any]]:
    return json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))


_OUTCOME_OF_EXIT = {0: "allocated", 2: "rejected", 3: "infeasible"}


def corpus_cases() -> list[str]:
    return sorted(str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*")
                  if p.suffix in (".yaml", ".jsonl", ".json") and p.name != "manifest.json")


def replay_corpus_file(rel: str, tmp: Path) -> tuple[str, list[str]]:
    """Run one kept input through its rule and its manifest entry: ``exit`` (one code or
    the acceptable codes), ``code`` (an error code that must be among the issues),
    ``policy`` (for candidates: the corpus policy to run under, default runner.yaml) and
    ``bug`` (the test_regression_* reproduction while the engine still fails it)."""
    want = _manifest().get(rel, {})
    exits = want.get("exit", [0, 2, 3])
    exits = exits if isinstance(exits, list) else [exits]
    path = CORPUS / rel
    if rel.startswith("policies/"):
        outcome, problems = check_policy_file(path, path.parent, expect_code=want.get("code"),
                                              expect_error=exits == [2], scratch=tmp)
        if exits == [0] and not outcome.startswith("valid"):
            problems.append(f"expected a valid policy, got {outcome}")
        return outcome, problems
    policy = CORPUS / want.get("policy", "policies/runner.yaml")
    data = path.read_bytes()
    case = CandidateCase(data, path.suffix, note=rel, must_reject=exits == [2],
                         rows=_parse_rows(data) if 0 in exits else None)
    # the replay writes its copy (and audit log) to tmp, never into the corpus
    outcome, problems = check_candidates_file(case, policy, tmp)
    if not any(outcome.startswith(_OUTCOME_OF_EXIT[e]) for e in exits):
        problems.append(f"expected exit {' or '.join(map(str, exits))}, got {outcome}")
    if "code" in want and outcome != "allocated" and want["code"] not in outcome:
        problems.append(f"expected code {want['code']}, got {outcome}")
    return outcome, problems


@pytest.mark.parametrize("rel", corpus_cases())
def test_replay_kept_corpus(rel: str, tmp_path: Path) -> None:
    """Each kept input obeys the rule (and its manifest entry: exit code, error code)."""
    outcome, problems = replay_corpus_file(rel, tmp_path)
    assert not problems, f"{rel} ({outcome}):\n" + "\n".join(problems)


def test_corpus_manifest_covers_every_file() -> None:
    manifest = _manifest()
    assert sorted(manifest) == corpus_cases()
    bug_tests = {name for name in globals() if name.startswith("test_regression_")}
    named = {entry["bug"] for entry in manifest.values() if "bug" in entry}
    assert named <= bug_tests, f"manifest names missing reproductions: {sorted(named - bug_tests)}"


# =========================================================================== minimal reproductions of bugs found
# Each test states the correct behaviour and fails until the engine is fixed. The input
# is the smallest that shows the bug; the docstring names the suspected code location.

VALID_POLICY = """\
apiVersion: ctxbudget/v1
kind: BudgetPolicy
metadata: {name: repro, revision: "1"}
spec:
  budget: {max_tokens: 600}
"""


def _policy_rule(tmp_path: Path, text: str | bytes, name: str = "policy.yaml") -> list[str]:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return check_policy_file(path, tmp_path, usability=False)[1]


def _candidate_rule(tmp_path: Path, body: bytes, policy_text: str = VALID_POLICY,
                    must_reject: bool = False) -> list[str]:
    policy = tmp_path / "runner.yaml"
    policy.write_text(policy_text, encoding="utf-8")
    case = CandidateCase(body, must_reject=must_reject, rows=_parse_rows(body) if not must_reject else None)
    return check_candidates_file(case, policy, tmp_path)[1]


def test_regression_policy_extends_with_nul_byte_is_a_clear_error(tmp_path: Path) -> None:
    """`extends: "base\\0.yaml"` → ValueError('embedded null byte'), exit 1.
    engine/policy.py _resolve: `(real.parent / value).resolve()` / `target.is_file()`."""
    assert _policy_rule(tmp_path, 'extends: "base\\0.yaml"\n' + VALID_POLICY) == []


def test_regression_policy_extends_long_file_name_is_a_clear_error(tmp_path: Path) -> None:
    """`extends: aaaa…(300).yaml` → OSError ENAMETOOLONG, exit 1.
    engine/policy.py _resolve: `target.is_file()` raises for names over NAME_MAX."""
    assert _policy_rule(tmp_path, f"extends: {'a' * 300}.yaml\n" + VALID_POLICY) == []


def test_regression_policy_integer_over_4300_digits_is_a_clear_error(tmp_path: Path) -> None:
    """`max_tokens: 1000…(5000 digits)` → ValueError (int max str digits), exit 1.
    engine/load.py _Walker.plain: `int(text)` on an unbounded digit string."""
    assert _policy_rule(tmp_path, VALID_POLICY.replace("600", "1" + "0" * 5000)) == []


def test_regression_policy_matcher_metadata_beyond_2_53_is_a_clear_error(tmp_path: Path) -> None:
    """`blocked: [{metadata: {x: 99999999999999999999}}]` passes the schema, then the
    RFC 8785 digest raises IntegerDomainError, exit 1.
    engine/policy.py _assemble → engine/canonical.py digest (no check before hashing)."""
    assert _policy_rule(tmp_path, VALID_POLICY + "  blocked: [{metadata: {x: 99999999999999999999}}]\n") == []


def test_regression_policy_lone_surrogate_escape_is_a_clear_error(tmp_path: Path) -> None:
    """`name: "\\ud800"` (a YAML escape for a lone surrogate) → CanonicalizationError in
    the policy digest, exit 1. engine/load.py accepts the string; engine/canonical.py fails."""
    assert _policy_rule(tmp_path, VALID_POLICY.replace("name: repro", 'name: "\\ud800"')) == []


def test_regression_policy_tokenizer_typo_passes_validate(tmp_path: Path) -> None:
    """`tokenizer: cl100k_bsae` is accepted by `policy validate` (exit 0); `allocate` then
    fails with tokenizer.unknown at path `$` and no file or line.
    engine/policy.py / engine/schema.py (tokenizer only pattern-checked) and
    engine/tokens.py get_tokenizer (TokenizerError without $.spec.tokenizer/location)."""
    text = VALID_POLICY.replace("spec:\n", "spec:\n  tokenizer: cl100k_bsae\n")
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    outcome, problems = check_policy_file(path, tmp_path)
    assert problems == [], outcome


def test_regression_policy_extends_symlink_loop_is_a_clear_error(tmp_path: Path) -> None:
    """`extends: base.yaml` where base.yaml is a symlink to itself → RuntimeError('Symlink
    loop from ...'), exit 1. engine/policy.py _resolve: `Path.resolve()` raises
    RuntimeError on a loop (Python 3.11) and only OSError-free paths are expected."""
    os.symlink("base.yaml", tmp_path / "base.yaml")
    assert _policy_rule(tmp_path, "extends: base.yaml\n" + VALID_POLICY) == []


def test_regression_candidates_score_1e308_is_a_clear_error(tmp_path: Path) -> None:
    """relevance_score 1e308 (finite, valid) → OverflowError, exit 1.
    engine/problem.py reduce: `int(round(RELEVANCE_SCALE * w / top))` overflows to inf;
    dividing first (`w / top * RELEVANCE_SCALE`) cannot."""
    body = b'{"source_id": "a", "content": "x", "relevance_score": 1e308}\n'
    assert _candidate_rule(tmp_path, body) == []


def test_regression_candidates_power_transform_overflow_is_a_clear_error(tmp_path: Path) -> None:
    """objective power, exponent 100, score 1e4 → OverflowError (34, 'Numerical result out
    of range'), exit 1. engine/policy.py Objective.weight: `max(score, 0) ** exponent`."""
    policy = VALID_POLICY + "  objective: {transform: power, exponent: 100}\n"
    body = b'{"source_id": "a", "content": "x", "relevance_score": 10000}\n'
    assert _candidate_rule(tmp_path, body, policy) == []


def test_regression_candidates_huge_integer_score_is_a_clear_error(tmp_path: Path) -> None:
    """relevance_score written as a 400-digit integer → OverflowError('int too large to
    convert to float'), exit 1. engine/candidates.py _check_score: `float(value)`."""
    body = b'{"source_id": "a", "content": "x", "relevance_score": 1' + b"0" * 400 + b"}\n"
    assert _candidate_rule(tmp_path, body) == []


def test_regression_candidates_integer_over_4300_digits_is_a_clear_error(tmp_path: Path) -> None:
    """Any number literal with > 4300 digits in a candidates line → ValueError from the
    JSON decoder, exit 1. engine/candfile.py _json_value catches only its own errors and
    JSONDecodeError."""
    body = b'{"source_id": "a", "content": "x", "relevance_score": 1' + b"0" * 5000 + b"}\n"
    assert _candidate_rule(tmp_path, body) == []


def test_regression_candidates_token_count_beyond_2_53_is_a_clear_error(tmp_path: Path) -> None:
    """token_count 9007199254740993 (valid per the schema: integer >= 0) → the audit
    record's RFC 8785 input digest raises IntegerDomainError, exit 1.
    engine/audit.py input_digest → engine/canonical.py; the candidates schema has no
    maximum for token_count."""
    body = b'{"source_id": "a", "content": "x", "relevance_score": 0.5, "token_count": 9007199254740993}\n'
    assert _candidate_rule(tmp_path, body) == []


def test_regression_candidates_metadata_beyond_2_53_is_a_clear_error(tmp_path: Path) -> None:
    """metadata {"x": 99999999999999999999} → IntegerDomainError in the audit input
    digest, exit 1. engine/audit.py input_digest → engine/canonical.py."""
    body = b'{"source_id": "a", "content": "x", "relevance_score": 0.5, "metadata": {"x": 99999999999999999999}}\n'
    assert _candidate_rule(tmp_path, body) == []


def test_regression_candidates_lone_surrogate_content_is_a_clear_error(tmp_path: Path) -> None:
    """content "\\ud800" (valid JSON escape, not encodable as UTF-8) → UnicodeEncodeError,
    exit 1. engine/candidates.py make_candidate → engine/tokens.py content_sha256
    (`text.encode("utf-8")`). In metadata the same escape fails in the audit digest."""
    body = b'{"source_id": "a", "content": "\\ud800", "relevance_score": 0.5}\n'
    assert _candidate_rule(tmp_path, body) == []


def test_regression_candidates_deeply_nested_json_is_a_clear_error(tmp_path: Path) -> None:
    """A line of 100 000 '[' → RecursionError from the JSON decoder, exit 1.
    engine/candfile.py _json_value (RecursionError is not caught)."""
    assert _candidate_rule(tmp_path, b"[" * 100_000 + b"]" * 100_000 + b"\n", must_reject=True) == []


def test_regression_candidates_parent_cycle_breaks_verification(tmp_path: Path) -> None:
    """a.parent_id = b, b.parent_id = a under hierarchy.exclusive → VerificationError
    ('a' included together with its ancestor 'b'), exit 1. engine/problem.py reduce:
    every node of a cycle is an 'inner' ancestor, so no exclusivity chain is built; a
    cycle should be a candidate error (or both must not be taken)."""
    policy = VALID_POLICY + "  hierarchy: {exclusive: true}\n"
    body = (b'{"source_id": "a", "content": "x", "relevance_score": 0.9, "parent_id": "b"}\n'
            b'{"source_id": "b", "content": "y", "relevance_score": 0.8, "parent_id": "a"}\n')
    assert _candidate_rule(tmp_path, body, policy) == []


def test_regression_candidates_self_in_ancestors_breaks_verification(tmp_path: Path) -> None:
    """metadata.ancestors containing the item's own id under hierarchy.exclusive →
    VerificationError ('a' included together with its ancestor 'a'), exit 1.
    engine/candidates.py make_candidate rejects parent_id == source_id but not this."""
    policy = VALID_POLICY + "  hierarchy: {exclusive: true}\n"
    body = b'{"source_id": "a", "content": "x", "relevance_score": 0.9, "metadata": {"ancestors": ["a"]}}\n'
    assert _candidate_rule(tmp_path, body, policy) == []


def test_regression_policy_very_deep_nesting_error_has_no_line(tmp_path: Path) -> None:
    """1 000 nested '[' → policy.too_deep with file but no line (the walker's own depth
    check names the line; this path comes from PyYAML's RecursionError).
    engine/load.py _compose: `except RecursionError` raises with Location(file) only."""
    assert _policy_rule(tmp_path, VALID_POLICY + "x: " + "[" * 1000 + "]" * 1000 + "\n") == []


def test_regression_candidates_ancestor_lists_not_closed_break_verification(tmp_path: Path) -> None:
    """a.ancestors = [b], b.ancestors = [c] (each list names only the parent) under
    hierarchy.exclusive → b and c are both taken → VerificationError, exit 1.
    engine/problem.py reduce builds exclusivity chains only from 'leaf' nodes and
    assumes each ancestors list contains its ancestors' ancestors; b's own chain (c, b)
    is skipped because b is someone's ancestor. The verifier checks every node."""
    policy = VALID_POLICY + "  hierarchy: {exclusive: true}\n"
    body = (b'{"source_id": "a", "content": "x", "relevance_score": 0.3, "metadata": {"ancestors": ["b"]}}\n'
            b'{"source_id": "b", "content": "y", "relevance_score": 0.9, "metadata": {"ancestors": ["c"]}}\n'
            b'{"source_id": "c", "content": "z", "relevance_score": 0.9}\n')
    assert _candidate_rule(tmp_path, body, policy) == []


def test_regression_candidates_too_many_names_no_file(tmp_path: Path) -> None:
    """limits.max_candidates exceeded → candidate.too_many with file null and line null.
    engine/allocate.py _check_limits raises without a location."""
    policy = VALID_POLICY + "  limits: {max_candidates: 1}\n"
    body = (b'{"source_id": "a", "content": "x", "relevance_score": 0.9}\n'
            b'{"source_id": "b", "content": "y", "relevance_score": 0.8}\n')
    assert _candidate_rule(tmp_path, body, policy, must_reject=True) == []
