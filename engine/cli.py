"""The ``ctxbudget`` command: the only module that prints, and the one place that maps
errors to exit codes (0 ok, 1 unexpected, 2 bad input, 3 infeasible, 4 solver failure,
5 audit log failure; ``audit verify``, ``show``, ``replay`` and ``report`` exit 6 when the log is not
intact (its chain, or a record that fails its checks); ``audit replay`` exits 7 when a
decision replays differently or cannot be replayed; ``pack --require-context`` exits 8
when no retrieved item is in the context; 130 on Ctrl-C,
141 when the reader of stdout went away, as a process killed by SIGPIPE reports it).

    ctxbudget policy validate FILES...          ctxbudget policy render FILE
    ctxbudget allocate --policy P --candidates C [--format json|context] [--audit-log L]
    ctxbudget pack --policy P --query Q PATH...|--index INDEX [--out F] [--json] [--audit-log L]
                   [--scorer bm25|dense|hybrid] [--require-context] [--verbose]
    ctxbudget index build PATH... --out INDEX [--scorer bm25|dense|hybrid] [--json] [--verbose]
        (both: [--request-id ID] [--requested-by WHO] [--label KEY=VALUE]...)
    ctxbudget audit verify LOG [--checkpoint F]  ctxbudget audit checkpoint LOG --out F
    ctxbudget audit replay LOG [--policy P [--fail-on-diff]]  ctxbudget audit show LOG [--decision ID] [--json]
    ctxbudget audit whatif LOG... --policy P [--workers N|--dask ADDRESS|local] [--out F] [--parquet F]
    ctxbudget audit verify LOG --key PUB         ctxbudget audit keygen --out DIR [--name N]
    ctxbudget audit prove LOG ID [--out F]       ctxbudget audit check-proof F --key PUB
    ctxbudget audit rotate LOG --new-key KEY     ctxbudget audit secret --out FILE
    ctxbudget audit query LOG... [--source-id ID] [--doc D] [--since T] [--status S]
                                 [--request-id ID] [--requested-by WHO] [--json]
    ctxbudget audit export LOG... --out F [--format csv|parquet] [--items]
    ctxbudget audit report LOG [--decision ID] --out report.html [--key PUB]
    ctxbudget audit prune LOG [--policy P|--retention-days N] [--before D|--now D] [--dry-run]
    ctxbudget serve --policies DIR [--host H] [--port N] [--audit-log L] [--tokens F] [--workers N]

``--errors=json`` (before or after the command) prints errors as one JSON object on
stderr for machines. ``CTXBUDGET_DEBUG=1`` adds the traceback of an unexpected error.

Each command imports what it runs when it runs: ``ctxbudget --help`` and ``--version``
load neither the solver (OR-Tools, which pulls in pandas) nor the tokenizer, the
retrieval stack or the validators (``bench/cli_startup.py`` measures it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .errors import AuditError, EngineError, LogNotIntactError, UsageError, exit_code_for

if TYPE_CHECKING:
    from .audit.log import AuditLog
    from .policy import Policy

EXIT_UNEXPECTED = 1
EXIT_LOG_NOT_INTACT = LogNotIntactError.exit_code  # 6: one mapping, in engine.errors
EXIT_REPLAY_DIFFERS = 7
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE

#: The values of :class:`engine.policy.BudgetStrategy`, spelled out so that building the
#: parser does not import the policy stack (tests/test_cli.py checks they agree).
STRATEGIES = ("greedy", "balanced", "optimal", "density")
#: engine.audit.query.STATUSES, spelled out for the same reason (tests/test_query.py checks).
QUERY_STATUSES = ("optimal", "feasible", "trivial", "heuristic", "fallback", "infeasible")


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text if text.endswith("\n") else text + "\n")


def _audit_log(args: argparse.Namespace, policy: Policy) -> AuditLog | None:
    from .decide import policy_audit_log

    if not getattr(args, "audit_log", None):
        return policy_audit_log(policy)  # folders below the policy's are made safely
    from .audit.log import AuditLog
    from .audit.signing import policy_signer

    path = Path(args.audit_log)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuditError("audit.write_failed",
                         f"cannot create the folder of audit log {path}: {exc.strerror or exc}; "
                         "fix the path or its permissions (no decision is made without its record)",
                         path="$.spec.audit.log") from None
    return AuditLog(path, rotate=policy.audit.rotate,
                    signer=policy_signer(policy.audit.signing_key, policy.file))


@contextmanager
def _signing_on_close(log: AuditLog | None) -> Iterator[None]:
    """Close ``log`` after a decision that was recorded, allocated or infeasible (its
    close signs the new record when a key is configured); an error before any record
    (bad input, no secret) leaves the log folder untouched."""
    from .errors import InfeasibleError

    try:
        yield
    except InfeasibleError:
        if log is not None:
            log.close()
        raise
    if log is not None:
        log.close()


# -- who asked: the request flags of every deciding command, in one place ---------------

def _add_request_options(parser: argparse.ArgumentParser) -> None:
    """``--request-id``, ``--requested-by`` and ``--label KEY=VALUE`` (repeatable),
    recorded in the decision's audit record (engine.audit.request)."""
    g = parser.add_argument_group("who asked (recorded in the audit record)")
    g.add_argument("--request-id", metavar="ID", help="the caller's id for this request (trace or "
                   "ticket id; letters, digits, . _ : @ / + = -); default: one is generated and "
                   "recorded as generated")
    g.add_argument("--requested-by", metavar="WHO", help="the user, service or team asking")
    g.add_argument("--label", action="append", metavar="KEY=VALUE", default=[],
                   help="a label kept with the record (repeat for several; audit.mask globs mask "
                   "label values too)")


def _request(args: argparse.Namespace) -> Any:
    from .audit.request import Request, parse_label

    return Request.of(args.request_id, args.requested_by, [parse_label(t) for t in args.label])


def allocation_json(decided: Any) -> dict[str, Any]:
    a = decided.allocation
    return {
        "decision_id": decided.record["decision_id"],
        "included": [d.source_id for d in a.included],
        "context_tokens": a.context_tokens,
        "limit_tokens": a.limit_tokens,
        "strategy": {"requested": a.strategy_requested.value, "used": a.strategy_used.value,
                     "fallback_reason": a.fallback_reason},
        "solver": {"status": a.selection.status, "objective": a.selection.objective,
                   "best_bound": a.selection.bound, "gap": a.selection.gap},
        "unmet": list(a.unmet),
        "items": [{"source_id": d.source_id, "decision": d.reason.decision.value,
                   "reason": d.reason.code.value, "evidence": d.reason.evidence, "tokens": d.tokens}
                  for d in a.decisions],
        "context": a.context,
        "audit_record": decided.record,
        "audit_envelope": {k: v for k, v in (decided.envelope or {}).items() if k != "record"} or None,
    }


def summary_line(a: Any, seconds: float) -> str:
    inc = len(a.included)
    sel = a.selection
    verdict = sel.status + (f", gap {sel.gap:.2%}" if sel.status == "feasible" and sel.gap is not None else "")
    fb = f"; FALLBACK: {a.fallback_reason}" if a.fallback_reason else ""
    warn = "".join(f"; WARNING: {w}" for w in a.warnings)
    return (f"{a.context_tokens:,}/{a.limit_tokens:,} tokens; {inc} items in, {len(a.decisions) - inc} out; "
            f"strategy {a.strategy_used.value} ({verdict}){fb}; {seconds * 1000:.0f} ms{warn}")


def _policy_files(names: Sequence[str]) -> list[str]:
    """Files as named; a folder stands for its ``*.yaml``/``*.yml`` files (sorted)."""
    out: list[str] = []
    for name in names:
        p = Path(name)
        out += (sorted(str(f) for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
                if p.is_dir() else [name])
    return out


def cmd_policy_validate(args: argparse.Namespace) -> int:
    """Every file (a folder: its YAML files), then the files together: two that claim
    one name and revision with different digests are ``policy.revision_conflict``."""
    from .audit.policies import revision_conflicts
    from .policy import load_policy
    from .problem import policy_tokenizer

    worst = 0
    loaded = []
    for f in _policy_files(args.files):
        try:
            p = load_policy(f)
            policy_tokenizer(p)  # an encoding not on this machine fails here too, not at first use
        except EngineError as exc:
            _report(exc, args)
            worst = max(worst, exit_code_for(exc))
            continue
        loaded.append(p)
        _out(f"ok {f}: {p.name} revision {p.revision} ({p.digest})")
    for conflict in revision_conflicts(loaded):
        _report(conflict, args)
        worst = max(worst, exit_code_for(conflict))
    return worst


def cmd_policy_render(args: argparse.Namespace) -> int:
    from .policy import load_policy, render_policy

    _out(render_policy(load_policy(args.file)))
    return 0


@contextmanager
def _solver_without_pyarrow() -> Iterator[None]:
    """While a deciding command runs, hide pyarrow from OR-Tools' CP-SAT module, which
    the engine imports at the first solve that needs it (a budget-only problem proven by
    the dynamic programs never does): ``cp_model`` imports pandas, and pandas imports
    pyarrow when it is installed (the ``export`` extra), about 0.15 s of a command that
    nothing here uses (the engine never uses pandas; ``audit export`` imports pyarrow
    itself, in its own process). Only for the deciding commands, which run one decision
    per process; afterwards pyarrow imports as usual again. Does nothing when pandas or
    pyarrow is already loaded."""
    if "pandas" in sys.modules or "pyarrow" in sys.modules:
        yield
        return
    sys.modules["pyarrow"] = None  # type: ignore[assignment]  # import pyarrow -> ImportError
    try:
        yield
    finally:
        if sys.modules.get("pyarrow", False) is None:
            del sys.modules["pyarrow"]


def cmd_allocate(args: argparse.Namespace) -> int:
    with _solver_without_pyarrow():
        return _allocate(args)


def _allocate(args: argparse.Namespace) -> int:
    from .candfile import load_candidates_file
    from .candidates import from_mappings
    from .decide import decide
    from .policy import BudgetStrategy, load_policy

    t0 = time.perf_counter()
    request = _request(args)
    policy = load_policy(args.policy)
    cands = from_mappings(load_candidates_file(args.candidates))
    strategy = BudgetStrategy(args.strategy) if args.strategy else None
    log = _audit_log(args, policy)
    with _signing_on_close(log):
        decided = decide(cands, policy, audit_log=log, strategy=strategy, request=request)
    if args.format == "context":
        _out(decided.allocation.context)
    elif args.compact:
        _out(json.dumps(allocation_json(decided), ensure_ascii=False, separators=(",", ":")))
    else:
        from .canonical import indented_json

        _out(indented_json(allocation_json(decided)))
    _err(summary_line(decided.allocation, time.perf_counter() - t0))
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from .policy import load_policy
    from .retrieval.pack import pack

    if bool(args.paths) == bool(args.index):
        raise UsageError("usage.pack_paths", "give the files or folders to index (PATH...) or a prebuilt "
                         "index (--index INDEX), not both and not neither", path="$.paths")
    request = _request(args)
    policy = load_policy(args.policy)
    prebuilt = None
    if args.index:
        from .retrieval.store import load_for_pack

        prebuilt = load_for_pack(args.index)
    log = _audit_log(args, policy)
    with _signing_on_close(log):
        packed = pack(policy, args.query, args.paths, top_k=args.top_k, audit_log=log,
                      progress=_progress("indexing"), request=request, scorer=args.scorer,
                      require_context=args.require_context, index=prebuilt)
    a = packed.decided.allocation
    if args.json:
        from .canonical import indented_json

        out = allocation_json(packed.decided)
        out["skipped_files"] = [s.to_dict() for s in packed.skipped]
        _out(indented_json(out))
    else:
        _out(a.context)
    if args.out:
        Path(args.out).write_text(a.context, encoding="utf-8")
    for note in packed.notes:
        _err(f"note: {note}")
    _report_skipped(packed.skipped, args.verbose)
    found = packed.retrieval
    if found is not None and found.unknown_words:
        _err(f"note: not in any indexed file: {', '.join(found.unknown_words)}")
    if found is not None and found.warning:
        _err(f"warning: {found.warning} (--require-context makes this exit 8)")
    where = f"; audit record {packed.decided.record['decision_id']} -> {log.path}" if log else ""
    skipped = f" ({len(packed.skipped)} skipped)" if packed.skipped else ""
    _err(f"{len(packed.files)} files indexed{skipped}, {packed.results} search results; "
         + summary_line(a, packed.seconds) + where)
    return 0


def cmd_index_build(args: argparse.Namespace) -> int:
    from .retrieval.store import build_index

    report = build_index(args.paths, args.out, progress=_progress("indexing"), scorer=args.scorer,
                         embed_progress=_progress("embedding", "nodes"))
    if args.json:
        _out(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    elif args.verbose:
        for fate, paths in (("added", report.added), ("changed", report.changed), ("removed", report.removed)):
            for p in paths:
                _out(f"{fate:8} {p}")
    _report_skipped(report.skipped, args.verbose)
    if report.rebuilt_because:
        _err(f"note: rebuilt from scratch: {report.rebuilt_because}")
    mb = report.corpus_bytes / 1e6
    _err(f"index {report.index}: {report.documents} documents, {report.nodes} nodes; "
         f"{len(report.added)} added, {len(report.changed)} changed, {len(report.removed)} removed, "
         f"{len(report.unchanged)} unchanged; {mb:.2f} MB in {report.seconds:.2f} s "
         f"({mb / max(report.seconds, 1e-9):.2f} MB/s)"
         + (f"; embeddings: {report.embeddings}, {report.embedded} node(s) embedded" if report.embeddings else ""))
    return 0


#: Without a terminal, a progress line every this many files (and at the end).
PROGRESS_EVERY_FILES = 100
#: Without a terminal, batch progress (embedding nodes) only for this many nodes or more.
PROGRESS_EVERY_NODES = 1000


def _progress(what: str, unit: str = "files") -> Any:
    """``progress(done, total, name)`` for long indexing: a ``\\r`` bar redrawn in place
    when stderr is a terminal; otherwise (a log file, a pipe) one plain line every
    :data:`PROGRESS_EVERY_FILES` files and at the end, only for corpora that large, so a
    redirected stderr never fills with redraws. Another ``unit`` (``"nodes"``, counted in
    batches) gets a plain line per call."""
    started = time.monotonic()
    tty = sys.stderr.isatty()
    if unit != "files":
        def batches(done: int, total: int, name: str) -> None:
            if tty:
                bar = "#" * int(30 * done / max(total, 1))
                sys.stderr.write(f"\r{what} [{bar:<30}] {done}/{total} {name[-40:]:<40}")
                if done == total:
                    sys.stderr.write("\n")
            elif total >= PROGRESS_EVERY_NODES:
                _err(f"{what}: {done}/{total} {name} ({time.monotonic() - started:.1f} s)")

        return batches

    def progress(done: int, total: int, name: str) -> None:
        if tty:
            if time.monotonic() - started > 0.5 or total > 20:
                bar = "#" * int(30 * done / total)
                sys.stderr.write(f"\r{what} [{bar:<30}] {done}/{total} {name[-40:]:<40}")
                if done == total:
                    sys.stderr.write("\n")
        elif total >= PROGRESS_EVERY_FILES and (done % PROGRESS_EVERY_FILES == 0 or done == total):
            _err(f"{what}: {done}/{total} files ({time.monotonic() - started:.1f} s)")

    return progress


def _report_skipped(skipped: Sequence[Any], verbose: bool) -> None:
    """One summary line of the files not indexed, by reason; each file with ``--verbose``."""
    if not skipped:
        return
    reasons: dict[str, int] = {}
    for s in skipped:
        key = s.reason.split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    _err(f"skipped {len(skipped)} file(s): " + ", ".join(f"{n} {r}" for r, n in reasons.items())
         + ("" if verbose else " (--verbose lists them)"))
    if verbose:
        for s in skipped:
            _err(f"  skipped {os.path.join(s.root, s.path)}: {s.reason}")


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from .audit.log import AuditLog, load_checkpoint
    from .audit.note import VerifierKey
    from .audit.proofs import load_notes
    from .audit.records import check_log
    from .audit.segproofs import mark_pruned_signed, verify_signed_segments

    notes: list[tuple[str, str]] = []
    cp = None
    if args.checkpoint:
        try:
            is_note = not Path(args.checkpoint).read_bytes().lstrip().startswith(b"{")
        except OSError:
            is_note = False  # load_checkpoint says what is wrong with the file
        if not is_note:
            cp = load_checkpoint(args.checkpoint)
        elif not args.key:
            raise UsageError("cli.usage", f"{args.checkpoint} is a signed checkpoint note; "
                             "pass --key PUB to check it")
        else:
            notes = [(f"{args.checkpoint} (external)", n) for _, n in load_notes(Path(args.checkpoint))]
    checks = check_log(AuditLog(args.log, signer=None), cp, keep=False)  # records checked as read, dropped
    report = checks.chain
    signed = None
    if args.key:  # every segment's checkpoints; a pruned span is signed or it is not
        signed, per = verify_signed_segments(args.log, VerifierKey.load(args.key), log_name=args.log_name,
                                             external=notes, max_unsigned=args.max_unsigned)
        report = mark_pruned_signed(report, per, args.log)
    # intact = the chain, every record's own checks and (with --key) the signatures
    ok = checks.ok and (signed is None or signed.ok)
    if args.json:
        _out(json.dumps({**report.to_dict(), "ok": ok, "records": checks.to_dict(),
                         "signatures": signed.to_dict() if signed else {"status": "unsigned"}},
                        indent=2))
    else:
        _out(report.summary() + "\n" + checks.summary())
        _out(signed.summary() if signed else "signatures: unsigned (pass --key PUB to check "
             "the signed checkpoints)")
    return 0 if ok else EXIT_LOG_NOT_INTACT


def cmd_audit_keygen(args: argparse.Namespace) -> int:
    from .audit.note import SigningKey

    key = SigningKey.generate(args.name)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    private, public = out / f"{key.name}.key", out / f"{key.name}.pub"
    try:
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise UsageError("audit.key_exists", f"{private} exists; keys are never overwritten: "
                         "choose another --name or --out") from None
    with os.fdopen(fd, "wb") as f:
        f.write(key.pem())
    public.write_text(key.verifier.encode() + "\n", encoding="utf-8")
    _out(f"private key -> {private} (mode 0600; keep it outside every log folder; "
         f"export CTXBUDGET_AUDIT_KEY={private})\npublic key  -> {public}: {key.verifier.encode()}")
    return 0


def cmd_audit_secret(args: argparse.Namespace) -> int:
    from .audit.privacy import SECRET_ENV, create_secret

    Path(args.out).expanduser().parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = create_secret(Path(args.out).expanduser())
    _out(f"audit secret -> {args.out} (mode 0600, key id {secret.key_id}); keep it outside every "
         f"log folder and export {SECRET_ENV}={args.out}")
    return 0


def cmd_audit_rotate(args: argparse.Namespace) -> int:
    from .audit.log import AuditLog
    from .audit.signing import KEY_ENV, Signer

    old = args.old_key or os.environ.get(KEY_ENV)
    if not old:
        raise UsageError("cli.usage", f"name the current key with --old-key or {KEY_ENV}")
    log = AuditLog(args.log, signer=Signer.from_file(old))
    new = Signer.from_file(args.new_key)
    log.rotate_key(new)
    _out(f"{args.log}: checkpoints are signed by {new.key.name!r} from here on (rotation "
         f"note signed by both keys); point {KEY_ENV} at {args.new_key}")
    return 0


def cmd_audit_prove(args: argparse.Namespace) -> int:
    from .audit.segproofs import prove_segmented

    text = json.dumps(prove_segmented(args.log, args.decision_id), indent=2, ensure_ascii=False)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        _err(f"inclusion proof for {args.decision_id} -> {args.out}")
    else:
        _out(text)
    return 0


def cmd_audit_check_proof(args: argparse.Namespace) -> int:
    from .audit.note import VerifierKey
    from .audit.proofs import check_proof

    key = VerifierKey.load(args.key)
    try:
        bundle = json.loads(Path(args.proof).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        _out(f"INVALID: cannot read proof {args.proof}: {exc}")
        return EXIT_LOG_NOT_INTACT
    result = check_proof(bundle, key)
    _out(result.message)
    return 0 if result.ok else EXIT_LOG_NOT_INTACT


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    from .audit.log import AuditLog

    cp = AuditLog(args.log).export_checkpoint(args.out)
    _out(f"checkpoint seq {cp['seq']} hash {cp['hash']} -> {args.out}")
    return 0


def cmd_audit_replay(args: argparse.Namespace) -> int:
    """Exit 6 when a record fails its checks or a line cannot be read (the log is not
    intact); else 7 when a decision could not be replayed or, under its own policy (or a
    what-if with --fail-on-diff), replayed differently; else 0."""
    from .audit.log import AuditLog
    from .audit.records import check_log
    from .audit.replay import DiffSummary, ReplayResult, replay_envelope
    from .policy import load_policy

    policy = load_policy(args.policy) if args.policy else None
    checks = check_log(AuditLog(Path(args.log)))
    results: list[ReplayResult] = []
    for number, why in checks.unreadable:
        results.append(ReplayResult(f"line {number}", False, "error", (), (), (), 0, 0,
                                    f"{why}; run `ctxbudget audit verify {args.log}`"))
        _out(json.dumps(results[-1].to_dict()) if args.json else results[-1].summary())
    for env in checks.decisions:
        # checked once (record checks and the chain's problems at this seq), then replayed
        found = checks.findings_for(env)
        r = replay_envelope(env, policy, findings=found)
        results.append(r)
        _out(json.dumps(r.to_dict()) if args.json else r.summary())
    total = DiffSummary.of(results)
    _err(total.text() + (" (what-if policy " + args.policy + ")" if args.policy else ""))
    if total.failed_checks or checks.unreadable:
        return EXIT_LOG_NOT_INTACT
    if total.errors or (total.changed and (policy is None or args.fail_on_diff)):
        return EXIT_REPLAY_DIFFERS
    return 0


def cmd_audit_whatif(args: argparse.Namespace) -> int:
    """Exit 6 when a shard's chain or a record's checks fail (the log is not intact);
    else 7 when a decision cannot be replayed or, with --fail-on-diff, would change;
    else 0."""
    from .audit.whatif import whatif
    from .audit.whatifout import ChangedIds, ChangedParquet, write_groups_parquet, write_json
    from .policy import load_policy

    policy = load_policy(args.policy)
    workers = args.workers if args.workers is not None else len(os.sched_getaffinity(0))
    sink = ChangedParquet(args.changed_parquet) if args.changed_parquet else None
    ids = ChangedIds(args.changed_ids) if args.changed_ids else None
    sinks = [s for s in (sink, ids) if s is not None]

    def on_changed(changed: Sequence[Any]) -> None:
        for s in sinks:
            s.add(changed)

    try:
        diff = whatif(args.logs, policy, workers=workers, dask=args.dask, shard_bytes=args.shard_bytes,
                      on_changed=on_changed if sinks else None, all_policies=args.all_policies,
                      keep_ids=not (args.no_ids or ids))
    except BaseException:
        for s in sinks:
            s.abort()
        raise
    _out(json.dumps(diff.to_dict(), indent=2) if args.json else diff.summary())
    if args.out:
        write_json(diff, args.out)
        _err(f"wrote the diff to {args.out}")
    if args.parquet:
        _err(f"wrote {write_groups_parquet(diff, args.parquet)} group row(s) to {args.parquet}")
    if sink is not None:
        _err(f"wrote {sink.close():,} changed decision row(s) to {args.changed_parquet}")
    if ids is not None:
        _err(f"wrote {ids.close():,} changed decision id(s) to {args.changed_ids}")
    total = diff.total()
    if not diff.intact:
        return EXIT_LOG_NOT_INTACT
    if total.errors or (total.changed and args.fail_on_diff):
        return EXIT_REPLAY_DIFFERS
    return 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    from .audit import show
    from .audit.log import AuditLog
    from .audit.records import check_log

    checks = check_log(AuditLog(Path(args.log)))
    for number, why in checks.unreadable:  # hostile or damaged bytes: a finding, exit 6
        _err(f"finding: {args.log}:{number}: {why}; run `ctxbudget audit verify {args.log}`")
    if checks.chain.problems and not checks.chain.ok:
        _err(f"warning: the log's hash chain is not intact ({len(checks.chain.problems)} problem(s)); "
             f"`ctxbudget audit verify {args.log}` lists them")
    records = list(checks.decisions)
    if args.decision:
        wanted = [e for e in records if e["record"].get("decision_id") == args.decision]
        if not wanted:
            example = f", e.g. {records[-1]['record'].get('decision_id')!r}" if records else ""
            raise UsageError("audit.unknown_decision",
                             f"no decision {args.decision!r} in {args.log} ({len(records)} decisions there"
                             f"{example}); `ctxbudget audit show {args.log}` prints each one with its id",
                             path="$.decision_id", details={"decision_id": args.decision, "log": args.log})
        records = wanted
    failed = 0
    for env in records:
        found = checks.findings_for(env)
        failed += bool(found)
        if args.json:
            # JSON Lines, one envelope per line (jq, grep and head read it line by line);
            # a failing record carries its findings next to the envelope's fields
            _out(json.dumps({**env, "failed_checks": [f.to_dict() for f in found]} if found else env))
        else:
            _out(show.render(env, found))
    if failed:
        _err(f"warning: {failed} of {len(records)} shown decision record(s) FAILED their checks "
             "(marked [FAILED CHECKS: ...])")
    return EXIT_LOG_NOT_INTACT if failed or checks.unreadable else 0


def cmd_audit_prune(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from .audit.log import AuditLog
    from .audit.query import parse_time
    from .audit.retention import cutoff_for, prune
    from .policy import load_policy

    days, allow = args.retention_days, args.allow_short_retention
    if args.policy:
        audit = load_policy(args.policy).audit
        days = audit.retention_days if days is None else days
        allow = allow or bool(audit.allow_short_retention)
    now = parse_time(args.now, flag="--now") if args.now else datetime.now(timezone.utc)
    before = parse_time(args.before, flag="--before") if args.before else None
    cutoff = cutoff_for(retention_days=days, before=before, now=now, allow_short=allow)
    result = prune(AuditLog(Path(args.log)), cutoff, retention_days=days, dry_run=args.dry_run,
                   require_signed=not args.unsigned)
    _out(result.summary())
    return 0


def cmd_audit_query(args: argparse.Namespace) -> int:
    from .audit.log import AuditLog
    from .audit.query import Query, json_line, parse_time, search, table

    q = Query(source_ids=tuple(args.source_id or ()), docs=tuple(args.doc or ()),
              since=parse_time(args.since, flag="--since") if args.since else None,
              until=parse_time(args.until, flag="--until", end_of_day=True) if args.until else None,
              policies=tuple(args.policy or ()), revisions=tuple(args.revision or ()),
              statuses=tuple(args.status or ()), reasons=tuple(args.reason or ()),
              any_decision=args.any_decision, request_ids=tuple(args.request_id or ()),
              requested_by=tuple(args.requested_by or ()))
    result = search(q, [AuditLog(Path(f)) for f in args.logs])
    if args.json:
        for m in result.matches:
            _out(json_line(m))
        _err(result.summary())
    else:
        _out(table(result))
    # a failed record or a log that is not intact: the answer cannot be relied on
    return 0 if result.trustworthy else EXIT_LOG_NOT_INTACT


def cmd_audit_export(args: argparse.Namespace) -> int:
    from .audit.export import export
    from .audit.log import AuditLog

    done = export([AuditLog(Path(f)) for f in args.logs], args.out, fmt=args.format, items=args.items)
    _err(f"wrote {done.rows:,} {'item' if args.items else 'decision'} rows ({done.decisions:,} decisions) "
         f"to {done.path}")
    if done.failed:
        _err(f"warning: {done.failed} decision record(s) FAILED their checks (column checks = failed)")
    for log in done.broken_logs:
        _err(f"warning: {log} is not intact; `ctxbudget audit verify {log}` lists its problems")
    return EXIT_LOG_NOT_INTACT if done.failed or done.broken_logs else 0

def cmd_audit_report(args: argparse.Namespace) -> int:
    """Exit codes as for ``audit show`` (2: no such decision; 6: a record failed its checks,
    a line is unreadable or, with --key, a signature check failed); the report is written
    in every case but 2, with what failed marked in it."""
    from datetime import datetime, timezone

    from .audit.log import AuditLog
    from .audit.note import VerifierKey
    from .audit.records import check_log
    from .audit.report import DecisionEntry, ReportInput, SignatureInfo, render
    from .audit.segproofs import signed_spans, verify_signed_segments

    checks = check_log(AuditLog(Path(args.log), signer=None))
    sig = SignatureInfo(False)
    if args.key:
        s, per = verify_signed_segments(args.log, VerifierKey.load(args.key), log_name=args.log_name,
                                        max_unsigned=10**18)  # every segment of a rotated log
        sig = SignatureInfo(True, s.signed_size, s.records, s.problems, tuple(
            (c.size, c.source) for c in s.checkpoints if c.signature_ok and c.reproduced and c.size is not None),
            spans=signed_spans(args.log, per))
    notes: dict[int | None, list[str]] = {}
    for seq, note in checks.unchecked:
        notes.setdefault(seq, []).append(note)
    entries = [DecisionEntry(e, checks.findings_for(e), tuple(notes.get(e.get("seq"), ()))) for e in checks.decisions]
    if args.decision:
        entries = [e for e in entries if e.envelope["record"].get("decision_id") == args.decision]
        if not entries:
            raise UsageError("audit.unknown_decision", f"no decision {args.decision!r} in {args.log} "
                             f"({len(checks.decisions)} decisions there); `ctxbudget audit show {args.log}` "
                             "prints each one with its id", path="$.decision_id",
                             details={"decision_id": args.decision, "log": args.log})
    whatif = None
    if args.whatif:  # a diff from `audit whatif --out`
        try:
            whatif = json.loads(Path(args.whatif).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError("report.bad_whatif", f"--whatif {args.whatif}: cannot read it ({exc}); pass the JSON "
                             "file `ctxbudget audit whatif --out` wrote", path="$.whatif") from None
        if not isinstance(whatif, dict):
            raise UsageError("report.bad_whatif", f"--whatif {args.whatif}: not a what-if diff (a JSON object); "
                             "pass the file `ctxbudget audit whatif --out` wrote", path="$.whatif")
    data = ReportInput(str(args.log), datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), tuple(entries),
                       tuple(str(p) for p in checks.chain.problems), checks.unreadable, sig,
                       f"decision {args.decision}" if args.decision else "ctxbudget audit report",
                       args.max_items, args.max_decisions, whatif)
    Path(args.out).write_text(render(data), encoding="utf-8")
    for number, why in checks.unreadable:  # as `audit show` says them
        _err(f"finding: {args.log}:{number}: {why}; run `ctxbudget audit verify {args.log}`")
    failed = sum(1 for e in entries if e.findings)
    for e in [e for e in entries if e.findings][:20]:
        _err(f"finding: seq {e.envelope.get('seq')} decision {e.envelope['record'].get('decision_id')}: FAILED "
             + ", ".join(sorted({f.code for f in e.findings})))
    _err(f"wrote {args.out}: {len(entries)} decision(s), {failed} FAILED their checks"
         + (f", {len(checks.unreadable)} unreadable line(s)" if checks.unreadable else "")
         + ("" if not args.key else "; signatures " + ("FAILED" if sig.problems else "OK")))
    return EXIT_LOG_NOT_INTACT if failed or checks.unreadable or sig.problems else 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The HTTP decision service (engine.service); its extra is checked before any import."""
    from .service import require_extra

    require_extra()
    from .service.run import serve

    return serve(policies=args.policies, host=args.host, port=args.port, audit_log=args.audit_log,
                 tokens=args.tokens, max_body_bytes=args.max_body_bytes,
                 max_candidates=args.max_candidates, announce=_err, workers=args.workers,
                 reload_interval_s=args.reload_interval)


def _report(exc: EngineError, args: argparse.Namespace | None) -> None:
    if getattr(args, "errors", "text") == "json":
        _err(json.dumps(exc.to_dict()))
        return
    if isinstance(exc, _ParseError):
        _err(exc.usage)
    if isinstance(exc, UsageError) and exc.location is None:
        _err(f"error: {exc.code}: {exc.message}")  # a command line has no JSON path to show
    else:
        _err(f"error: {exc.code}: {exc}")


class _ParseError(UsageError):
    """A command line argparse rejected; text output repeats the command's usage."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__("cli.usage", message)
        self.usage = usage

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "error": UsageError.__name__}


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors raised as :class:`UsageError` (exit 2), so that
    ``--errors=json`` covers them and :func:`main` stays the one place that exits."""

    def error(self, message: str) -> NoReturn:
        raise _ParseError(f"{message}; see `{self.prog} --help`", self.format_usage().rstrip())


def _errors_option() -> argparse.ArgumentParser:
    """``--errors`` for every command, so it is accepted after the command too. Its
    default is SUPPRESS: a command that does not see the option must not reset the value
    given before the command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--errors", choices=["text", "json"], default=argparse.SUPPRESS,
                        help="how errors are printed on stderr: text (default) or one JSON object")
    return common


#: The top-level commands, in the order ``ctxbudget --help`` lists them.
COMMANDS = ("policy", "allocate", "pack", "index", "serve", "audit")


def command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names (its first word that is not a top-level option), or
    ``None`` when it names none that exists (then the whole parser reports it)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--errors":
            skip = True
        elif not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; ``only``: build just that command's options (what
    ``main`` does for a command line that names one: a full parser costs ~20 ms of
    start-up, most of it options of other commands). Parsing a command line that names
    ``only`` gives the same namespace either way (tests/test_cli.py checks)."""
    common = _errors_option()

    def command(group: Any, name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(name, help=text, description=text, parents=[common])
        return parser

    p = _Parser(prog="ctxbudget",
                description="Decide which retrieved chunks go into an LLM prompt under a token-budget "
                            "policy (YAML), solved exactly, verified, and recorded in an audit log.",
                epilog="exit codes: 0 ok, 1 unexpected (a bug), 2 bad input, 3 infeasible, 4 solver failure, "
                       "5 audit log failure, 6 audit log not intact (chain or record checks), 7 replay differs, "
                       "8 no context (pack --require-context), 130 interrupted, 141 output pipe closed")
    p.add_argument("--errors", choices=["text", "json"], default="text",
                   help="how errors are printed on stderr: text (default) or one JSON object")
    p.add_argument("--version", action="version", version=f"ctxbudget {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser,
                           title="commands", help="`ctxbudget COMMAND --help` lists its options")

    if only in (None, "policy"):
        pol = command(sub, "policy", "validate or render policy files").add_subparsers(
            dest="sub", required=True, metavar="SUBCOMMAND", parser_class=_Parser, title="subcommands",
            help="`ctxbudget policy SUBCOMMAND --help` lists its options")
        v = command(pol, "validate", "validate policy files, and that no two claim one name and revision "
                    "with different texts (exit 2 on any error)")
        v.add_argument("files", nargs="+", metavar="FILE", help="policy files (YAML), or folders of them")
        v.set_defaults(func=cmd_policy_validate)
        r = command(pol, "render", "print the effective policy (after extends) and its digest")
        r.add_argument("file", metavar="FILE", help="policy file (YAML)")
        r.set_defaults(func=cmd_policy_render)

    if only in (None, "allocate"):
        a = command(sub, "allocate", "allocate candidates under a policy")
        a.add_argument("--policy", required=True, metavar="FILE", help="policy file (YAML)")
        a.add_argument("--candidates", required=True, metavar="FILE",
                       help="candidates: JSON Lines or a JSON array")
        a.add_argument("--format", choices=["json", "context"], default="json",
                       help="print the decision as JSON (default) or only the assembled context")
        a.add_argument("--compact", action="store_true",
                       help="with --format json: the same JSON on one line, not indented (quicker for "
                       "large decisions read by a program)")
        a.add_argument("--strategy", choices=STRATEGIES, help="override the policy's strategy")
        a.add_argument("--audit-log", metavar="FILE",
                       help="append the audit record here (default: the policy's audit.log, if any)")
        _add_request_options(a)
        a.set_defaults(func=cmd_allocate)

    if only in (None, "pack"):
        k = command(sub, "pack", "index files, search, and pack the best context for a query")
        k.add_argument("--policy", required=True, metavar="FILE", help="policy file (YAML)")
        k.add_argument("--query", required=True, help="the question to retrieve context for")
        k.add_argument("paths", nargs="*", metavar="PATH", help="files or folders to index (or --index)")
        k.add_argument("--index", metavar="INDEX", help="a prebuilt index (`ctxbudget index build`) instead of PATHs")
        k.add_argument("--out", metavar="FILE", help="also write the assembled context to this file")
        k.add_argument("--json", action="store_true", help="print the decision as JSON instead of the context")
        k.add_argument("--top-k", type=int, metavar="N",
                       help="search results to consider (default: one per 15 tokens of the budget, 50 to 200)")
        k.add_argument("--scorer", choices=["bm25", "dense", "hybrid"], default="bm25",
                       help="relevance: bm25 (default), dense or hybrid (the last two need "
                            "pip install 'ctxbudget[dense]'; with --index, an index built with --scorer dense)")
        k.add_argument("--require-context", action="store_true",
                       help="exit 8 (after recording the decision) when no retrieved item is in the context")
        k.add_argument("--verbose", action="store_true", help="list every file skipped, with its reason")
        k.add_argument("--audit-log", metavar="FILE",
                       help="append the audit record here (default: the policy's audit.log, if any)")
        _add_request_options(k)
        k.set_defaults(func=cmd_pack)

    if only in (None, "index"):
        ix = command(sub, "index", "build a persistent index of a corpus for `pack --index`").add_subparsers(
            dest="sub", required=True, metavar="SUBCOMMAND", parser_class=_Parser, title="subcommands",
            help="`ctxbudget index SUBCOMMAND --help` lists its options")
        ib = command(ix, "build", "index files (Markdown, RST, HTML, text; each also .gz) into INDEX, or update "
                     "INDEX: only changed and added files are parsed again, removed ones dropped")
        ib.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to index")
        ib.add_argument("--out", required=True, metavar="INDEX", help="the index folder (created or updated)")
        ib.add_argument("--scorer", choices=["bm25", "dense", "hybrid"], default="bm25",
                        help="dense or hybrid: also store every node's embedding, for `pack --index --scorer "
                             "dense|hybrid` (needs pip install 'ctxbudget[dense]'; kept on later updates)")
        ib.add_argument("--json", action="store_true", help="print what changed as JSON")
        ib.add_argument("--verbose", action="store_true", help="list the files added, changed, removed and skipped")
        ib.set_defaults(func=cmd_index_build)

    if only in (None, "serve"):
        sv = command(sub, "serve", "serve decisions over HTTP, one policy per product (needs the serve "
                     "extra: pip install 'ctxbudget[serve]')")
        sv.add_argument("--policies", required=True, metavar="DIR",
                        help="folder of policy files, one per product (the file stem names the product)")
        sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        sv.add_argument("--port", type=int, default=8181, help="port (default 8181)")
        sv.add_argument("--audit-log", metavar="FILE",
                        help="one audit log for every product (default: each policy's audit.log)")
        sv.add_argument("--tokens", metavar="FILE", help="bearer tokens per product (JSON: product -> "
                        "[tokens]); default: $CTXBUDGET_SERVE_TOKENS, else no authentication")
        sv.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024, metavar="N",
                        help="largest request body accepted (413 beyond; default 16 MiB)")
        sv.add_argument("--max-candidates", type=int, default=10_000, metavar="N",
                        help="most candidates per request (413 beyond; default 10000)")
        sv.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes on the one port, all writing the one audit log under its "
                        "lock (default 1; about one per core)")
        sv.add_argument("--reload-interval", type=float, default=1.0, metavar="SECONDS",
                        help="look at the policy folder for changed files at most this often (default 1; "
                        "0: on every request)")
        sv.set_defaults(func=cmd_serve)

    if only in (None, "audit"):
        au = command(sub, "audit", "verify, checkpoint, replay or show an audit log").add_subparsers(
            dest="sub", required=True, metavar="SUBCOMMAND", parser_class=_Parser, title="subcommands",
            help="`ctxbudget audit SUBCOMMAND --help` lists its options")
        av = command(au, "verify", "check the log's hash chain and every record's digests, order and "
                     "token totals (exit 6 when it is not intact)")
        av.add_argument("log", metavar="LOG", help="audit log (JSON Lines)")
        av.add_argument("--checkpoint", metavar="FILE",
                        help="a checkpoint exported earlier (JSON), or a signed checkpoint note kept "
                        "elsewhere (with --key): also detects a cut tail or a rolled-back log")
        av.add_argument("--key", metavar="PUB", help="verifier key (audit keygen's .pub): check every "
                        "signed checkpoint, their consistency and the unsigned tail")
        av.add_argument("--log-name", metavar="NAME", help="the log's name in its checkpoints' origin "
                        "(default: the file name; for a renamed log)")
        av.add_argument("--max-unsigned", type=int, default=0, metavar="N",
                        help="records allowed after the last signed checkpoint (default 0)")
        av.add_argument("--json", action="store_true", help="print the report as JSON")
        av.set_defaults(func=cmd_audit_verify)
        ak = command(au, "keygen", "create an Ed25519 signing key (private PEM 0600 + verifier key)")
        ak.add_argument("--out", required=True, metavar="DIR", help="folder for <name>.key and <name>.pub "
                        "(outside every log folder)")
        ak.add_argument("--name", default="ctxbudget-audit", help="key name (no spaces, no '+')")
        ak.set_defaults(func=cmd_audit_keygen)
        asx = command(au, "secret", "create the secret (32 random bytes, mode 0600) that keys the "
                      "digests of content a log does not store")
        asx.add_argument("--out", required=True, metavar="FILE", help="the secret file to create (never "
                         "overwritten; outside every log folder), then named by CTXBUDGET_AUDIT_SECRET")
        asx.set_defaults(func=cmd_audit_secret)
        ar2 = command(au, "rotate", "hand a log over to a new signing key (a note signed by both keys)")
        ar2.add_argument("log", metavar="LOG", help="audit log (JSON Lines)")
        ar2.add_argument("--new-key", required=True, metavar="KEY", help="the new private key (audit keygen)")
        ar2.add_argument("--old-key", metavar="KEY", help="the current private key (default: CTXBUDGET_AUDIT_KEY)")
        ar2.set_defaults(func=cmd_audit_rotate)
        ap = command(au, "prove", "print an inclusion proof of one decision against a signed checkpoint")
        ap.add_argument("log", metavar="LOG", help="audit log (JSON Lines)")
        ap.add_argument("decision_id", metavar="DECISION_ID", help="the decision to prove (`audit show` lists ids)")
        ap.add_argument("--out", metavar="FILE", help="write the proof bundle (JSON) here")
        ap.set_defaults(func=cmd_audit_prove)
        aq = command(au, "check-proof", "check a proof bundle with the public key alone (exit 6 if invalid)")
        aq.add_argument("proof", metavar="PROOF", help="a bundle from `audit prove`")
        aq.add_argument("--key", required=True, metavar="PUB", help="verifier key (.pub)")
        aq.set_defaults(func=cmd_audit_check_proof)
        ac = command(au, "checkpoint", "export the log's last sequence number and hash, to keep elsewhere")
        ac.add_argument("log", metavar="LOG", help="audit log (JSON Lines)")
        ac.add_argument("--out", required=True, metavar="FILE", help="where to write the checkpoint (JSON)")
        ac.set_defaults(func=cmd_audit_checkpoint)
        ar = command(au, "replay", "check and re-run every logged decision and compare (exit 7 on any "
                     "difference; what-if with --policy)")
        ar.add_argument("log", metavar="LOG", help="audit log (JSON Lines)")
        ar.add_argument("--policy", metavar="FILE", help="replay under this policy instead of the logged one")
        ar.add_argument("--fail-on-diff", action="store_true",
                        help="with --policy: exit 7 when any decision would change (default: report only)")
        ar.add_argument("--json", action="store_true", help="print one JSON object per decision")
        ar.set_defaults(func=cmd_audit_replay)
        aw = command(au, "whatif", "replay every decision of the logs under a new policy, sharded over a process "
                     "pool or a Dask cluster, and print what would change per product and revision (exit 6 if "
                     "not intact; 7 with --fail-on-diff)")
        aw.add_argument("logs", nargs="+", metavar="LOG", help="audit logs (JSON Lines; their segments are read too)")
        aw.add_argument("--policy", required=True, metavar="FILE", help="the new policy (YAML)")
        aw.add_argument("--workers", type=int, metavar="N", help="worker processes (default: one per CPU; 1 runs "
                        "in this process); with --dask local, the cluster's workers")
        aw.add_argument("--dask", metavar="ADDRESS", help="run on a Dask cluster: a scheduler address "
                        "(tcp://host:8786) or 'local' (needs the dask extra: pip install 'ctxbudget[dask]')")
        aw.add_argument("--shard-bytes", type=int, metavar="N", help="bytes of log per task (default: about "
                        "eight tasks per worker, at most 8 MiB)")
        aw.add_argument("--out", metavar="FILE", help="write the diff as JSON here")
        aw.add_argument("--parquet", metavar="FILE", help="write one row per product and revision as Parquet "
                        "(needs the export extra)")
        aw.add_argument("--changed-parquet", metavar="FILE", help="write one row per changed decision as Parquet")
        aw.add_argument("--all-policies", action="store_true", help="replay every decision under the new policy "
                        "(default: only those recorded under its name)")
        aw.add_argument("--changed-ids", metavar="FILE", help="write the changed decision ids here, one a line, "
                        "as they come (the diff then does not hold them: memory does not grow with the log)")
        aw.add_argument("--no-ids", action="store_true", help="leave the changed decision ids out of the diff "
                        "(they grow with the log; --changed-parquet streams them)")
        aw.add_argument("--json", action="store_true", help="print the diff as JSON instead of the summary")
        aw.add_argument("--fail-on-diff", action="store_true", help="exit 7 when any decision would change")
        aw.set_defaults(func=cmd_audit_whatif)
        ash = command(au, "show", "print logged decisions for a reviewer")
        ash.add_argument("log", metavar="LOG", help="audit log (JSON Lines)")
        ash.add_argument("--decision", metavar="ID", help="only this decision id (exit 2 if the log has none)")
        ash.add_argument("--json", action="store_true", help="print JSON Lines: one log envelope per line")
        ash.set_defaults(func=cmd_audit_show)
        apr = command(au, "prune", "remove whole closed segments older than the retention period, "
                      "recorded by a signed prune record (never the active segment)")
        apr.add_argument("log", metavar="LOG", help="audit log (JSON Lines; its segments are found next to it)")
        apr.add_argument("--policy", metavar="FILE", help="take the period from spec.audit.retention_days")
        apr.add_argument("--retention-days", type=int, metavar="N", help="the retention period in days")
        when = apr.add_mutually_exclusive_group()
        when.add_argument("--before", metavar="DATE", help="prune segments whose records are all before this "
                          "ISO 8601 date or time (instead of now minus the period)")
        when.add_argument("--now", metavar="DATE", help="the date the period is counted back from (default: now)")
        apr.add_argument("--dry-run", action="store_true", help="list what would be removed; change nothing")
        apr.add_argument("--allow-short-retention", action="store_true",
                         help="allow keeping less than six months (the EU AI Act's minimum, Art. 19/26(6))")
        apr.add_argument("--unsigned", action="store_true",
                         help="prune a log that is never signed (no CTXBUDGET_AUDIT_KEY): the prune record "
                         "is then protected by the hash chain only")
        apr.set_defaults(func=cmd_audit_prune)
        aqy = command(au, "query", "find decisions across logs: which ones sent a source or document to "
                      "the model, when, under which policy (exit 6 if a match fails its checks or a log is not intact)")
        aqy.add_argument("logs", nargs="+", metavar="LOG", help="audit logs (JSON Lines)")
        aqy.add_argument("--source-id", action="append", metavar="ID",
                         help="items with this source id (shell glob; repeat for any of several)")
        aqy.add_argument("--doc", action="append", metavar="DOC",
                         help="items from this document (metadata doc_id or doc; shell glob)")
        aqy.add_argument("--any-decision", action="store_true",
                         help="with --source-id/--doc: match excluded items too (default: included only)")
        aqy.add_argument("--since", metavar="WHEN", help="decisions at or after this ISO 8601 date or time (UTC "
                         "unless an offset is given)")
        aqy.add_argument("--until", metavar="WHEN", help="decisions at or before this ISO 8601 date (the whole "
                         "day) or time")
        aqy.add_argument("--policy", action="append", metavar="NAME", help="decisions under this policy name")
        aqy.add_argument("--revision", action="append", metavar="REV", help="decisions under this policy revision")
        aqy.add_argument("--status", action="append", choices=QUERY_STATUSES,
                         help="decisions with this verdict (solver status, or infeasible)")
        aqy.add_argument("--reason", action="append", metavar="CODE",
                         help="items with this reason code (e.g. over_budget, pinned)")
        aqy.add_argument("--request-id", action="append", metavar="ID",
                         help="decisions made for this request id (shell glob; repeat for any of several)")
        aqy.add_argument("--requested-by", action="append", metavar="WHO",
                         help="decisions asked for by this caller (shell glob)")
        aqy.add_argument("--json", action="store_true", help="print JSON Lines: one matching decision per line")
        aqy.set_defaults(func=cmd_audit_query)
        aex = command(au, "export", "write decisions (or their items) as a flat CSV or Parquet table "
                      "for DuckDB or Spark, each row marked with its checks")
        aex.add_argument("logs", nargs="+", metavar="LOG", help="audit logs (JSON Lines)")
        aex.add_argument("--format", choices=["csv", "parquet"], default="csv",
                         help="csv (default) or parquet (needs the export extra: pyarrow)")
        aex.add_argument("--out", required=True, metavar="FILE", help="the file to write")
        aex.add_argument("--items", action="store_true", help="one row per item of each decision instead of "
                         "one per decision")
        aex.set_defaults(func=cmd_audit_export)
        arp = command(au, "report", "write one self-contained offline HTML report for a reviewer: verdicts, budgets, "
                      "items and reasons, checks and signatures, an overview with filters (exit 6 if not intact)")
        arp.add_argument("log", metavar="LOG", help="audit log (JSON Lines)")
        arp.add_argument("--out", required=True, metavar="FILE", help="the HTML file to write")
        arp.add_argument("--decision", metavar="ID", help="only this decision id (exit 2 if the log has none)")
        arp.add_argument("--key", metavar="PUB",
                         help="verifier key (.pub): mark each record signed or in the unsigned tail")
        arp.add_argument("--log-name", metavar="NAME",
                         help="the log's name in its checkpoints' origin (default: file name)")
        arp.add_argument("--max-items", type=int, default=50, metavar="N",
                         help="included and excluded items shown per decision, each (default 50; the rest are counted)")
        arp.add_argument("--max-decisions", type=int, default=500, metavar="N",
                         help="decisions with a detail card (default 500; all are counted and listed)")
        arp.add_argument("--whatif", metavar="DIFF", help="add a what-if section: the diff `audit whatif --out` wrote")
        arp.set_defaults(func=cmd_audit_report)
    return p


def _debug() -> bool:
    return os.environ.get("CTXBUDGET_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _wants_json(argv: Sequence[str]) -> bool:
    """``--errors=json`` anywhere in a command line that could not be parsed."""
    argv = list(argv)
    return "--errors=json" in argv or any(a == "--errors" and b == "json" for a, b in zip(argv, argv[1:]))


def _unexpected(exc: BaseException, args: argparse.Namespace | None) -> int:
    """A bug: one line that says so (the traceback only under CTXBUDGET_DEBUG=1)."""
    if _debug():
        traceback.print_exception(exc, file=sys.stderr)
    text = " ".join(str(exc).split())[:500]
    if getattr(args, "errors", "text") == "json":
        bug = EngineError("internal.bug", f"{type(exc).__name__}: {text}; this is a ctxbudget bug, please "
                          "report it with the command you ran and the traceback from CTXBUDGET_DEBUG=1",
                          details={"exception": type(exc).__name__})
        _err(json.dumps(bug.to_dict()))
    else:
        _err(f"error: internal: {type(exc).__name__}: {text} (this is a ctxbudget bug: please report it "
             "with the command you ran; rerun with CTXBUDGET_DEBUG=1 for the traceback)")
    return EXIT_UNEXPECTED


def _run(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args: argparse.Namespace | None = None
    try:
        try:
            args = build_parser(command_of(argv)).parse_args(argv)
        except SystemExit as exc:  # --help and --version print and "exit"; usage errors raise
            return exc.code if isinstance(exc.code, int) else 0
        return int(args.func(args))
    except UsageError as exc:
        _report(exc, args or argparse.Namespace(errors="json" if _wants_json(argv) else "text"))
        return exit_code_for(exc)
    except EngineError as exc:
        if _debug() and exit_code_for(exc) == EXIT_UNEXPECTED:
            traceback.print_exception(exc, file=sys.stderr)
        _report(exc, args)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise  # the reader went away: main() ends quietly
    except Exception as exc:  # a bug: say so, in one line, with the way to report it
        return _unexpected(exc, args)


def _quiet_closed_pipes() -> None:
    """Point every standard stream whose reader went away at /dev/null: Python flushes
    them once more at exit, and that flush would print "Exception ignored ... BrokenPipeError"."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
            continue
        except BrokenPipeError:
            pass
        except (OSError, ValueError):  # closed, or not a real file (captured in tests)
            continue
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, map errors to exit codes. Never a traceback for known
    errors, and none when the reader of the output goes away (``... | head``)."""
    try:
        code = _run(argv)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return code
    except BrokenPipeError:
        _quiet_closed_pipes()
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
