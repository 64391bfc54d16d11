"""What signed checkpoints cost: sign, verify, prove and check-proof on an N-record log.

    .venv/bin/python bench/audit_signing.py [--n 10000] [--every 1000] [--dir DIR]

- append: N appends of a ~3 KB record, unsigned and then signed (a checkpoint every
  ``--every`` records, and one on close), and the time spent inside the signer's hook
  (the two totals differ mostly by fsync noise).
- cold checkpoint: a new process's first checkpoint (it re-hashes the whole log and
  checks it against the last signed root before signing).
- verify --key: every line re-hashed, the tree rebuilt, every checkpoint's signature,
  root and consistency with the one before.
- prove / check-proof: one inclusion proof bundle for a decision in the middle, and its
  check with the public key alone.

Timings only; nothing is asserted. DIR should be on the disk the real log will use.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from engine.audit.log import AuditLog
from engine.audit.note import SigningKey
from engine.audit.proofs import check_proof, prove, verify_signed
from engine.audit.signing import Signer


def record(i: int) -> dict[str, Any]:
    """Shaped like a decision record: ids, digests, items with reasons and numbers."""
    return {
        "decision_id": f"5f0c2a4e-0000-4000-8000-{i:012d}",
        "policy": {"name": "support-bot", "revision": 7, "digest": "sha256:" + "ab" * 32},
        "budget": {"max_tokens": 8000, "used_tokens": 7931},
        "items": [{"source_id": f"kb-{(i + k) % 97}#p{k}", "tokens": 180 + k * 7,
                   "decision": "included" if k < 9 else "excluded",
                   "reason": "selected" if k < 9 else "below_min_relevance",
                   "relevance": round(0.91 - k * 0.037, 4),
                   "content_sha256": "cd" * 32} for k in range(15)],
    }


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    runs, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        (root / "keys").mkdir()
        (root / "logs").mkdir()
        key = SigningKey.generate("bench")
        key_file = root / "keys" / "bench.key"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, key.pem())
        os.close(fd)
        pub = key.verifier
        recs = [record(i) for i in range(args.n)]

        def fill(log: AuditLog) -> None:
            for r in recs:
                log.append(r)
            log.close()

        plain = AuditLog(root / "logs" / "plain.jsonl", signer=None)
        t_plain, _ = timed(lambda: fill(plain))
        signer = Signer.from_file(key_file, every_records=args.every)
        hook_s = [0.0]
        real_hook = signer.after_append

        def hook(*a: Any) -> None:  # the signer's own time inside each append
            t0 = time.perf_counter()
            real_hook(*a)
            hook_s[0] += time.perf_counter() - t0
        signer.after_append = hook  # type: ignore[method-assign]
        signed = AuditLog(root / "logs" / "signed.jsonl", signer=signer)
        t_signed, _ = timed(lambda: fill(signed))
        notes = (root / "logs" / "signed.jsonl.checkpoints").read_text().count("\n\u2014 ")

        def cold() -> None:
            log = AuditLog(signed.path, signer=Signer.from_file(key_file, every_records=1))
            log.append(record(args.n))
        t_cold, _ = timed(cold)
        t_verify, report = timed(lambda: verify_signed(signed.path, pub), repeat=3)
        assert report.ok, report.problems
        mid = recs[args.n // 2]["decision_id"]
        t_prove, bundle = timed(lambda: prove(signed.path, mid), repeat=3)
        t_check, result = timed(lambda: check_proof(bundle, pub), repeat=21)
        assert result.ok
        size_mb = signed.path.stat().st_size / 1e6
    per10k = 10_000 / args.n
    print(f"log: {args.n} records, {size_mb:.1f} MB, {notes} signed checkpoints "
          f"(every {args.every} records + close)")
    print(f"{'operation':<42}{'total':>11}{'per 10k records':>18}")
    rows = [
        ("append, unsigned", t_plain, t_plain * per10k),
        ("append, signed", t_signed, t_signed * per10k),
        ("  of which the signer (hash, sign, note)", hook_s[0], hook_s[0] * per10k),
        ("cold checkpoint (new process, 1 append)", t_cold, t_cold * per10k),
        ("verify --key (chain not included)", t_verify, t_verify * per10k),
        ("prove (one decision)", t_prove, t_prove * per10k),
    ]
    for name, total, scaled in rows:
        print(f"{name:<42}{total * 1e3:>9.1f}ms{scaled * 1e3:>16.1f}ms")
    print(f"{'check-proof (public key only)':<42}{t_check * 1e3:>9.3f}ms"
          f"{'(independent of N: ' + str(len(bundle['proof'])) + ' hashes)':>27}")


if __name__ == "__main__":
    main()
