"""Generate a synthetic, valid, signed audit log of many decisions (issue 17's scale test).

    python bench/gen_log.py --out whatif/decisions.jsonl --decisions 100000

What it writes: decisions of the three shipped product policies (``policies/``: support
52%, legal 30%, code 18%), each a real decision: candidates drawn per product at
realistic sizes (support 10-60 knowledge-base chunks and the pinned refund terms; legal
15-80 sections and paragraphs of cases with the pinned disclaimers, some personal or
privileged; code 20-120 files, classes and functions of a repository, a parent
hierarchy), allocated by the engine and recorded by the engine's record builder, in a
log with segments and signed checkpoints (every 1,000 records and at each segment's
end). Content is not stored (the shipped policies' setting), so digests are keyed by an
audit secret.

How it is fast: ``--distinct`` decisions (default 400) are solved; the log's records are
those decisions again under new decision ids, request ids and timestamps (a month of
traffic), each record still checked and chained as any other — replaying record *i*
re-solves it. Each distinct record is encoded once (RFC 8785, the engine's encoder) with
fixed-length placeholders for the three fields that change, which are then substituted
in the bytes (same length, plain ASCII: still canonical). Lines are sealed with the
engine's line format (:func:`engine.audit.lineformat.seal`), chained, rotated into
segments with the engine's headers (:mod:`engine.audit.segments`) and signed by the
engine's :class:`~engine.audit.signing.Signer`, written in batches with one fsync each.
``--durable`` uses :meth:`engine.AuditLog.append` per record instead (the production
writer: a lock, an fsync and a re-check of the last line per record; about 50 appends/s
for these 23 KB records on the 2-core VM). ``ctxbudget audit verify --key`` checks
either log end to end. The run is resumable: run it again with the same arguments and
it continues after the last record written (record *i* depends only on the seed and
*i*).

It prints what to export for ``ctxbudget audit verify`` and ``audit whatif``: the secret
(``CTXBUDGET_AUDIT_SECRET``) and the verifier key. Keys and the secret are created once,
in ``--keys`` (default: a folder next to the log's folder, outside it).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import AuditLog, load_policy  # noqa: E402
from engine.allocate import allocate, to_candidates  # noqa: E402
from engine.audit import record as audit  # noqa: E402
from engine.audit.compact import compact  # noqa: E402
from engine.audit.lineformat import GENESIS_HASH, EnvelopeKind, encode_record, scan_line, seal  # noqa: E402
from engine.audit.note import SigningKey  # noqa: E402
from engine.audit.policies import archive_policy  # noqa: E402
from engine.audit.privacy import AuditSecret, create_secret, load_secret  # noqa: E402
from engine.audit.segments import header_record, segment_end, segment_name, segment_number  # noqa: E402
from engine.audit.signing import Signer  # noqa: E402
from engine.errors import InfeasibleError  # noqa: E402
from engine.policy import Policy, Rotate  # noqa: E402
from engine.safeopen import dir_handle  # noqa: E402

PRODUCTS = (("support", "support-assistant.yaml", 0.52), ("legal", "legal-research.yaml", 0.30),
            ("code", "code-assistant.yaml", 0.18))
WORDS = ("refund plan annual monthly invoice account billing customer request support terms policy "
         "contract liability damages court appeal statute clause party breach notice claim evidence "
         "function return value error handler event process module class method import config test "
         "query index cache token budget context model answer source section paragraph").split()
START = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def _score(rng: random.Random) -> float:
    return round(rng.betavariate(2.2, 2.0), 4)


def support_candidates(rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    out.append({"source_id": "refund-terms", "content": _text(rng, 25), "relevance_score": _score(rng),
                "level": "SECTION"})  # pinned: the policy is infeasible without it
    for k in range(rng.randint(10, 60)):
        source = rng.choice(("kb", "faq", "ticket", "guide", "forum"))
        meta: dict[str, Any] = {"pii": True} if rng.random() < 0.03 else {}
        out.append({"source_id": f"{source}#{rng.randint(0, 40)}-{k}", "content": _text(rng, rng.randint(30, 400)),
                    "relevance_score": _score(rng), "level": "PARAGRAPH", "metadata": meta})
    return out


def legal_candidates(rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"source_id": f"disclaimer-{j}", "content": _text(rng, 15), "relevance_score": 0.1, "level": "PARAGRAPH"}
        for j in rng.choice((("eu",), ("us",), ("eu", "us")))]  # pinned: at least one
    for case in range(rng.randint(3, 10)):
        for s in range(rng.randint(1, 4)):
            meta: dict[str, Any] = {"doc_id": f"case-{case}"}
            if rng.random() < 0.03:
                meta["pii"] = True
            if rng.random() < 0.03:
                meta["privileged"] = True
            out.append({"source_id": f"case-{case}#s{s}", "content": _text(rng, rng.randint(150, 900)),
                        "relevance_score": _score(rng), "level": "SECTION", "metadata": meta})
            for p in range(rng.randint(1, 5)):
                out.append({"source_id": f"case-{case}#s{s}p{p}", "content": _text(rng, rng.randint(40, 250)),
                            "relevance_score": _score(rng), "level": "PARAGRAPH", "metadata": dict(meta)})
    return out


def code_candidates(rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    budget = rng.randint(20, 120)
    f = 0
    while len(out) < budget:
        path = f"src/pkg{rng.randint(0, 9)}/mod{f}.py"
        f += 1
        meta = {"doc_id": path}
        out.append({"source_id": path, "content": _text(rng, rng.randint(300, 3000)),
                    "relevance_score": _score(rng), "level": "FILE", "metadata": meta})
        for c in range(rng.randint(0, 3)):
            cls = f"{path}::C{c}"
            out.append({"source_id": cls, "content": _text(rng, rng.randint(100, 800)),
                        "relevance_score": _score(rng), "level": "CLASS", "parent_id": path, "metadata": meta})
            for m in range(rng.randint(1, 6)):
                out.append({"source_id": f"{cls}.m{m}", "content": _text(rng, rng.randint(20, 200)),
                            "relevance_score": _score(rng), "level": "FUNCTION", "parent_id": cls,
                            "metadata": meta})
    return out[:budget]


MAKERS = {"support": support_candidates, "legal": legal_candidates, "code": code_candidates}


def template(k: int, seed: int, policies: dict[str, Policy], secret: AuditSecret) -> dict[str, Any]:
    """Decision ``k``: a product drawn by weight, its candidates, the engine's record."""
    rng = random.Random(seed * 1_000_003 + k)
    product = rng.choices([p for p, _, _ in PRODUCTS], weights=[w for _, _, w in PRODUCTS])[0]
    policy = policies[product]
    cands = to_candidates(MAKERS[product](rng))
    now = START
    try:
        alloc = allocate(cands, policy)
    except InfeasibleError as exc:
        return audit.build_infeasible(policy, cands, exc, decision_id="template", now=now, secret=secret)
    return audit.build(policy, cands, alloc, decision_id="template", now=now, secret=secret)


def record_for(i: int, seed: int, templates: list[dict[str, Any]]) -> dict[str, Any]:
    """Record ``i`` of the log: template ``i mod len`` with its own ids and time."""
    rng = random.Random(seed * 7_919 + i)
    rec = dict(templates[i % len(templates)])
    rec["decision_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    rec["request_id"] = f"req-{uuid.UUID(int=rng.getrandbits(128), version=4).hex[:16]}"
    when = START + timedelta(seconds=i * 26 + rng.uniform(0, 25))  # 100,000 records: a month
    rec["timestamp"] = when.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return rec


PH_ID = "ffffffff-ffff-4fff-bfff-ffffffffffff"
PH_REQ = "req-ffffffffffffffff"
PH_TS = "2099-12-31T23:59:59.999999Z"


def encoded_template(rec: dict[str, Any]) -> bytes:
    """``rec`` compacted and encoded once, with placeholders where records differ."""
    data = encode_record(compact({**rec, "decision_id": PH_ID, "request_id": PH_REQ, "timestamp": PH_TS}))
    for ph in (PH_ID, PH_REQ, PH_TS):
        assert data.count(ph.encode()) == 1, ph
    return data


def encoded_record(i: int, seed: int, templates: list[bytes]) -> tuple[bytes, str]:
    """Record ``i`` as bytes (template ``i mod len`` with its own ids and time), and its timestamp."""
    rec = record_for(i, seed, [{}])
    data = templates[i % len(templates)]
    data = data.replace(PH_ID.encode(), rec["decision_id"].encode(), 1)
    data = data.replace(PH_REQ.encode(), rec["request_id"].encode(), 1)
    return data.replace(PH_TS.encode(), rec["timestamp"].encode(), 1), rec["timestamp"]


class BulkWriter:
    """Sealed lines appended to a log's segments in batches (one write and one fsync per
    batch), rotated after ``max_records`` lines per segment as :class:`AuditLog` rotates,
    each batch handed to ``signer`` as the log's writer hands it. Continues a log it
    finds (after cutting a torn tail)."""

    BATCH = 500

    def __init__(self, path: Path, signer: Signer | None, max_records: int) -> None:
        self.path, self.signer, self.max = path, signer, max_records
        names = AuditLog(path, signer=None).segments()
        self.number = segment_number(path.name, names[-1]) or 0
        self.name = names[-1]
        self.fd = os.open(path.with_name(self.name), os.O_RDWR | os.O_CREAT, 0o640)
        data_end, last = self._tail()
        os.ftruncate(self.fd, data_end)
        self.end = data_end
        self.lines = self._count()
        entry = scan_line(last, 0) if last else None
        self.seq = entry.seq if entry and entry.seq else 0
        self.hash = entry.stored_hash if entry and entry.stored_hash else GENESIS_HASH
        self.buf: list[bytes] = []

    def _tail(self) -> tuple[int, bytes | None]:
        """(end of the complete lines, the last complete line) of the open segment."""
        end = self._after_newline(os.fstat(self.fd).st_size)
        if end == 0:
            return 0, None
        start = self._after_newline(end - 1)
        return end, os.pread(self.fd, end - 1 - start, start)

    def _after_newline(self, end: int) -> int:
        pos = end
        while pos > 0:
            step = min(1 << 20, pos)
            k = os.pread(self.fd, step, pos - step).rfind(b"\n")
            if k >= 0:
                return pos - step + k + 1
            pos -= step
        return 0

    def _count(self) -> int:
        n, pos = 0, 0
        while pos < self.end:
            chunk = os.pread(self.fd, min(1 << 22, self.end - pos), pos)
            n += chunk.count(b"\n")
            pos += len(chunk)
        return n

    @property
    def decisions(self) -> int:
        return self.seq - self.number  # one header per segment after the first

    def add(self, record: bytes, at: str) -> None:
        if self.lines >= self.max:
            self._rotate(at)
        self._line(seal(self.seq + 1, self.hash, EnvelopeKind.DECISION, record))

    def _line(self, line: bytes) -> None:
        self.buf.append(line)
        self.seq += 1
        self.hash = line[9:80].decode()  # {"hash":"sha256:<64 hex>"
        self.lines += 1
        if len(self.buf) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        data = b"".join(self.buf)
        os.pwrite(self.fd, data, self.end)
        os.fsync(self.fd)
        if self.signer is not None:
            self.signer.after_append(self.path.with_name(self.name), self.fd, self.end, self.buf)
        self.end += len(data)
        self.buf = []

    def _rotate(self, at: str) -> None:
        self.flush()
        if self.signer is not None:
            self.signer.close(self.path.with_name(self.name), self.fd)
        os.close(self.fd)
        with dir_handle(self.path.parent) as dir_fd:
            previous = segment_end(dir_fd, self.name, self.number)
        assert previous is not None
        self.number += 1
        self.name = segment_name(self.path.name, self.number)
        self.fd = os.open(self.path.with_name(self.name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
        self.end, self.lines = 0, 0
        self._line(seal(self.seq + 1, self.hash, EnvelopeKind.SEGMENT, header_record(self.number, previous, at)))

    def close(self) -> None:
        self.flush()
        if self.signer is not None:
            self.signer.close(self.path.with_name(self.name), self.fd)
        os.close(self.fd)


def _keys(folder: Path) -> tuple[Path, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    private, public, secret = folder / "gen-log.key", folder / "gen-log.pub", folder / "audit.secret"
    if not private.exists():
        key = SigningKey.generate("gen-log")
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.pem())
        public.write_text(key.verifier.encode() + "\n", encoding="utf-8")
    if not secret.exists():
        create_secret(secret)
    return private, public, secret


def written(log: AuditLog) -> int:
    """Decision records already in ``log`` (0 when it does not exist)."""
    try:
        return sum(1 for env in log if env.get("kind") == "decision")
    except Exception:  # noqa: BLE001 - no log yet
        return 0


def _progress(i: int, start: int, t1: float) -> None:
    if (i + 1) % 10_000 == 0:
        rate = (i + 1 - start) / (time.perf_counter() - t1)
        print(f"  {i + 1:,} records ({rate:,.0f} appends/s)", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="the log to write (or continue)")
    ap.add_argument("--decisions", type=int, default=100_000, help="decision records in the log (default 100000)")
    ap.add_argument("--distinct", type=int, default=400, help="distinct decisions solved (default 400)")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--keys", type=Path, help="folder of the signing key and the secret (default: "
                    "<log folder>-keys, created once)")
    ap.add_argument("--rotate-records", type=int, default=10_000, help="lines per segment (default 10000)")
    ap.add_argument("--unsigned", action="store_true", help="write no signed checkpoints")
    ap.add_argument("--durable", action="store_true", help="append each record through AuditLog.append "
                    "(the production writer; slow: see above)")
    args = ap.parse_args(argv)

    out: Path = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    private, public, secret_path = _keys(args.keys or out.parent.with_name(out.parent.name + "-keys"))
    secret = load_secret(secret_path)
    policies = {p: load_policy(ROOT / "policies" / f) for p, f, _ in PRODUCTS}
    signer = None if args.unsigned else Signer.from_file(private, every_records=1000)
    log = AuditLog(out, signer=signer, rotate=Rotate(max_records=args.rotate_records))
    t0 = time.perf_counter()
    templates = [template(k, args.seed, policies, secret) for k in range(args.distinct)]
    solved_s = time.perf_counter() - t0
    for policy in policies.values():
        archive_policy(log, policy)
    t1 = time.perf_counter()
    if args.durable:
        start = written(log)
        for i in range(start, args.decisions):
            log.append(compact(record_for(i, args.seed, templates)))
            _progress(i, start, t1)
        log.close()
    else:
        encoded = [encoded_template(t) for t in templates]
        writer = BulkWriter(out, signer, args.rotate_records)
        start = writer.decisions
        try:
            for i in range(start, args.decisions):
                writer.add(*encoded_record(i, args.seed, encoded))
                _progress(i, start, t1)
        finally:
            writer.close()
    appended = args.decisions - start
    append_s = time.perf_counter() - t1
    size = sum((out.with_name(n)).stat().st_size for n in log.segments())
    print(f"{out}: {args.decisions:,} decisions ({appended:,} appended now, {start:,} before) in "
          f"{len(log.segments())} segment(s), {size / 2**20:,.1f} MiB; {args.distinct} distinct decisions "
          f"solved in {solved_s:.1f} s; {appended / append_s if append_s > 0 else 0:,.0f} appends/s")
    print(f"export CTXBUDGET_AUDIT_SECRET={secret_path}\n"
          f"ctxbudget audit verify {out} --key {public}\n"
          f"ctxbudget audit whatif {out} --policy examples/whatif/support-assistant.2026-12-01.1.yaml --workers 2")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
