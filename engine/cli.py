"""The ``ctxbudget`` command: the only module that prints, and the one place that maps
errors to exit codes (0 ok, 1 unexpected, 2 bad input, 3 infeasible, 4 solver failure,
5 audit log failure; ``audit verify`` exits 6 when the log is not intact).

    ctxbudget policy validate FILES...          ctxbudget policy render FILE
    ctxbudget allocate --policy P --candidates C [--format json|context] [--audit-log L]
    ctxbudget pack --policy P --query Q PATH... [--out F] [--json] [--audit-log L]
    ctxbudget audit verify LOG [--checkpoint F]  ctxbudget audit checkpoint LOG --out F
    ctxbudget audit replay LOG [--policy P]      ctxbudget audit show LOG [--decision ID] [--json]

``--errors=json`` prints errors as one JSON object on stderr for machines.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .audit import show
from .audit.log import AuditLog, load_checkpoint
from .candfile import load_candidates_file
from .candidates import from_mappings
from .decide import decide, policy_log_path
from .errors import AuditError, EngineError, exit_code_for
from .retrieval.pack import pack
from .policy import BudgetStrategy, Policy, load_policy, render_policy
from .audit.replay import replay

EXIT_LOG_NOT_INTACT = 6


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text if text.endswith("\n") else text + "\n")


def _audit_log(args: argparse.Namespace, policy: Policy) -> AuditLog | None:
    path = Path(args.audit_log) if getattr(args, "audit_log", None) else policy_log_path(policy)
    if path is None:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuditError("audit.write_failed",
                         f"cannot create the folder of audit log {path}: {exc.strerror or exc}; "
                         "fix the path or its permissions (no decision is made without its record)",
                         path="$.spec.audit.log") from None
    return AuditLog(path)


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
    return (f"{a.context_tokens:,}/{a.limit_tokens:,} tokens; {inc} items in, {len(a.decisions) - inc} out; "
            f"strategy {a.strategy_used.value} ({verdict}){fb}; {seconds * 1000:.0f} ms")


def cmd_policy_validate(args: argparse.Namespace) -> int:
    worst = 0
    for f in args.files:
        try:
            p = load_policy(f)
        except EngineError as exc:
            _report(exc, args)
            worst = max(worst, exit_code_for(exc))
            continue
        _out(f"ok {f}: {p.name} revision {p.revision} ({p.digest})")
    return worst


def cmd_policy_render(args: argparse.Namespace) -> int:
    _out(render_policy(load_policy(args.file)))
    return 0


def cmd_allocate(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    policy = load_policy(args.policy)
    cands = from_mappings(load_candidates_file(args.candidates))
    strategy = BudgetStrategy(args.strategy) if args.strategy else None
    decided = decide(cands, policy, audit_log=_audit_log(args, policy), strategy=strategy)
    if args.format == "context":
        _out(decided.allocation.context)
    else:
        _out(json.dumps(allocation_json(decided), indent=2, ensure_ascii=False))
    _err(summary_line(decided.allocation, time.perf_counter() - t0))
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    log = _audit_log(args, policy)
    started = time.monotonic()

    def progress(done: int, total: int, name: str) -> None:
        if time.monotonic() - started > 0.5 or (sys.stderr.isatty() and total > 20):
            bar = "#" * int(30 * done / total)
            sys.stderr.write(f"\rindexing [{bar:<30}] {done}/{total} {name[-40:]:<40}")
            if done == total:
                sys.stderr.write("\n")

    packed = pack(policy, args.query, args.paths, top_k=args.top_k, audit_log=log, progress=progress)
    a = packed.decided.allocation
    if args.json:
        _out(json.dumps(allocation_json(packed.decided), indent=2, ensure_ascii=False))
    else:
        _out(a.context)
    if args.out:
        Path(args.out).write_text(a.context, encoding="utf-8")
    for note in packed.notes:
        _err(f"note: {note}")
    where = f"; audit record {packed.decided.record['decision_id']} -> {log.path}" if log else ""
    _err(f"{len(packed.files)} files, {packed.results} search results; "
         + summary_line(a, packed.seconds) + where)
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    cp = load_checkpoint(args.checkpoint) if args.checkpoint else None
    report = AuditLog(args.log).verify(cp)
    _out(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.ok else EXIT_LOG_NOT_INTACT


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    cp = AuditLog(args.log).export_checkpoint(args.out)
    _out(f"checkpoint seq {cp['seq']} hash {cp['hash']} -> {args.out}")
    return 0


def _decisions(path: str) -> list[dict[str, Any]]:
    """Every complete decision envelope; a torn last line (a crashed writer) is reported
    and left for the next writer to recover, never silently skipped."""
    out: list[dict[str, Any]] = []
    try:
        for env in AuditLog(path):
            if env.get("kind") == "decision":
                out.append(env)
    except AuditError as exc:
        if exc.code != "audit.torn_tail":
            raise
        _err(f"warning: {exc.message}")
    return out


def cmd_audit_replay(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy) if args.policy else None
    results = [replay(env["record"], policy) for env in _decisions(args.log)]
    for r in results:
        _out(json.dumps(r.to_dict()) if args.json else r.summary())
    same = sum(r.identical for r in results)
    _err(f"{len(results)} decisions replayed: {same} identical, {len(results) - same} different"
         + (" (what-if policy " + args.policy + ")" if args.policy else ""))
    return 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    records = _decisions(args.log)
    if args.decision:
        records = [e for e in records if e["record"].get("decision_id") == args.decision]
        if not records:
            raise EngineError("audit.unknown_decision", f"no decision {args.decision!r} in {args.log}")
    for env in records:
        _out(json.dumps(env, indent=2) if args.json else show.render(env))
    return 0


def _report(exc: EngineError, args: argparse.Namespace) -> None:
    if getattr(args, "errors", "text") == "json":
        _err(json.dumps(exc.to_dict()))
    else:
        _err(f"error: {exc.code}: {exc}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ctxbudget", description=__doc__.split("\n\n")[0])
    p.add_argument("--errors", choices=["text", "json"], default="text", help="error output format")
    sub = p.add_subparsers(dest="command", required=True)
    pol = sub.add_parser("policy", help="validate or render policy files").add_subparsers(dest="sub", required=True)
    v = pol.add_parser("validate", help="validate policy files (exit 2 on any error)")
    v.add_argument("files", nargs="+")
    v.set_defaults(func=cmd_policy_validate)
    r = pol.add_parser("render", help="print the effective policy (after extends) and its digest")
    r.add_argument("file")
    r.set_defaults(func=cmd_policy_render)
    a = sub.add_parser("allocate", help="allocate candidates under a policy")
    a.add_argument("--policy", required=True)
    a.add_argument("--candidates", required=True, help="JSON Lines or a JSON array")
    a.add_argument("--format", choices=["json", "context"], default="json")
    a.add_argument("--strategy", choices=[s.value for s in BudgetStrategy])
    a.add_argument("--audit-log")
    a.set_defaults(func=cmd_allocate)
    k = sub.add_parser("pack", help="index files, search, and pack the best context for a query")
    k.add_argument("--policy", required=True)
    k.add_argument("--query", required=True)
    k.add_argument("paths", nargs="+")
    k.add_argument("--out")
    k.add_argument("--json", action="store_true")
    k.add_argument("--top-k", type=int, default=50)
    k.add_argument("--audit-log")
    k.set_defaults(func=cmd_pack)
    au = sub.add_parser("audit", help="verify, replay, show the audit log").add_subparsers(dest="sub", required=True)
    av = au.add_parser("verify")
    av.add_argument("log")
    av.add_argument("--checkpoint")
    av.add_argument("--json", action="store_true")
    av.set_defaults(func=cmd_audit_verify)
    ac = au.add_parser("checkpoint")
    ac.add_argument("log")
    ac.add_argument("--out", required=True)
    ac.set_defaults(func=cmd_audit_checkpoint)
    ar = au.add_parser("replay")
    ar.add_argument("log")
    ar.add_argument("--policy")
    ar.add_argument("--json", action="store_true")
    ar.set_defaults(func=cmd_audit_replay)
    ash = au.add_parser("show")
    ash.add_argument("log")
    ash.add_argument("--decision")
    ash.add_argument("--json", action="store_true")
    ash.set_defaults(func=cmd_audit_show)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, map errors to exit codes. Never a traceback for known errors."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except EngineError as exc:
        _report(exc, args)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as exc:  # a bug: say so, in one line, with the way to report it
        _err(f"error: internal: {type(exc).__name__}: {exc} (this is a ctxbudget bug; "
             "rerun with CTXBUDGET_DEBUG=1 for the traceback)")
        import os

        if os.environ.get("CTXBUDGET_DEBUG"):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
