"""Who asked, what for, which policy text (issue 12, part 5): figures.

    .venv/bin/python bench/audit_who.py

- planted secret: a fresh random word in the ``pack`` query, in a label masked by
  ``audit.mask`` and in a corpus file; with ``store_content: false`` (the default) the
  word, and the hex of the plain SHA-256 of each text carrying it, are counted in the log
  bytes (``tests/test_request.py`` asserts 0).
- record size: bytes the request fields and the ``query`` and ``corpus`` parts add to one ``pack``
  record (corpus of 1, 10 and 100 files).
- policy archive: the time a decision spends archiving its policy, the first time (the
  file is written: temp file, fsync, rename, fsync of the folder) and afterwards (one
  ``fstatat`` of a file this process verified).
- archive race: 1,000 archivings while a thread swaps ``<log>.policies`` for a symlink
  to another folder and back (each archived file removed again, so every attempt
  writes); files that reach the other folder (``tests/test_policies.py`` runs 150).

Figures only.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sys
import threading
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import AuditLog, load_policy  # noqa: E402
from engine.audit.policies import archive_dir, archive_policy  # noqa: E402
from engine.audit.privacy import SECRET_ENV, create_secret  # noqa: E402
from engine.audit.request import Request  # noqa: E402
from engine.errors import AuditError  # noqa: E402
from engine.policy import Policy  # noqa: E402
from engine.retrieval.pack import pack  # noqa: E402

HEAD = "apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: p, revision: '1'}\nspec:\n"


def policy(folder: Path, audit: str) -> Policy:
    path = folder / "p.yaml"
    path.write_text(HEAD + "  budget: {max_tokens: 400}\n" + f"  audit: {audit}\n")
    return load_policy(path)


def planted(tmp: Path) -> dict[str, int]:
    counts = {}
    for place in ("query", "label", "corpus file"):
        s = "zq" + secrets.token_hex(8)
        folder = tmp / place.replace(" ", "-")
        docs = folder / "docs"
        docs.mkdir(parents=True)
        body = f"# Vault\n\nThe vault code is {s if place == 'corpus file' else 'kept elsewhere'}.\n"
        (docs / "vault.md").write_text(body)
        query = f"vault code {s}" if place == "query" else "vault code"
        labels = {"customer_id": s} if place == "label" else {"team": "ops"}
        (folder / "logs").mkdir()
        log = AuditLog(folder / "logs" / "a.jsonl")
        pack(policy(folder, "{mask: ['customer_*']}"), query, [docs], audit_log=log,
             request=Request.of("r-1", "svc:bench", labels))
        data = log.path.read_bytes().lower()
        n = data.count(s.encode())
        for text in (s, query, body, json.dumps(s)):
            n += data.count(hashlib.sha256(text.encode()).hexdigest().encode())
        counts[place] = n
    return counts


def sizes(tmp: Path) -> dict[int, int]:
    out = {}
    for files in (1, 10, 100):
        folder = tmp / f"size-{files}"
        docs = folder / "docs"
        docs.mkdir(parents=True)
        for k in range(files):
            (docs / f"doc{k:03d}.md").write_text(f"# Section {k}\n\nParagraph {k} about refunds.\n")
        rec = pack(policy(folder, "{}"), "refunds", [docs],
                   request=Request.of("r-1", "svc:bench", {"team": "ops"})).decided.record
        out[files] = len(json.dumps({k: rec[k] for k in ("request_id", "request_id_generated", "requested_by",
                                                         "labels", "query", "corpus")}, separators=(",", ":")))
    return out


def archive_timing(tmp: Path) -> tuple[float, float]:
    (tmp / "arch").mkdir()
    log = AuditLog(tmp / "arch" / "a.jsonl")
    first = []
    for k in range(20):
        p = Policy.default(100 + k, revision=str(k))
        t = time.perf_counter()
        archive_policy(log, p)
        first.append(time.perf_counter() - t)
    p = Policy.default(100, revision="0")
    t = time.perf_counter()
    for _ in range(1000):
        archive_policy(log, p)
    again = (time.perf_counter() - t) / 1000
    assert len(list(archive_dir(log.path).glob("*.json"))) == 20
    return sorted(first)[len(first) // 2], again


def race(tmp: Path, attempts: int = 1000) -> tuple[int, int, int, int]:
    """(written, refused, swaps, files outside)."""
    (tmp / "race" / "logs").mkdir(parents=True)
    log = AuditLog(tmp / "race" / "logs" / "a.jsonl")
    p = Policy.default(100)
    real, held, outside = archive_dir(log.path), tmp / "race" / "logs" / "held", tmp / "race" / "outside"
    real.mkdir()
    outside.mkdir()
    stop, swaps = threading.Event(), [0]

    def clear() -> None:
        if real.is_symlink():
            real.unlink()
        elif real.exists():
            shutil.rmtree(real, ignore_errors=True)

    def swapper() -> None:
        while not stop.is_set():
            try:
                os.rename(real, held)
            except OSError:
                clear()
                if held.exists() and not real.exists():
                    os.rename(held, real)
                continue
            for _ in range(100):
                try:
                    os.symlink(outside, real)
                    break
                except FileExistsError:
                    clear()
            time.sleep(0.0003)
            for _ in range(100):
                clear()
                try:
                    os.rename(held, real)
                    break
                except OSError:
                    continue
            swaps[0] += 1
            time.sleep(0.0003)

    thread = threading.Thread(target=swapper)
    thread.start()
    written = refused = 0
    try:
        for _ in range(attempts):
            try:
                archive_policy(log, p)
                written += 1
            except AuditError:
                refused += 1
            for folder in (real, held):
                try:
                    for name in ([] if folder.is_symlink() else os.listdir(folder)):
                        if name.endswith(".json"):
                            os.unlink(folder / name)
                except OSError:
                    pass
    finally:
        stop.set()
        thread.join()
    return written, refused, swaps[0], len(list(outside.iterdir()))


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.environ[SECRET_ENV] = str(create_secret(tmp / "audit.secret").source)
        print("planted secret, occurrences in the log bytes (store_content: false):")
        for place, n in planted(tmp).items():
            print(f"  {place:<12} {n}")
        print("bytes added to a pack record by request + query + corpus:")
        for files, n in sizes(tmp).items():
            print(f"  {files:>3} corpus files  {n:,} bytes")
        first, again = archive_timing(tmp)
        print(f"policy archive per decision: first time (write + fsync) {first * 1e3:.2f} ms median, "
              f"known policy {again * 1e6:.0f} us")
        written, refused, swaps, out = race(tmp)
        print(f"archive race: {written + refused:,} archivings, {written:,} written, {refused:,} refused "
              f"(the folder was a symlink or being swapped), {swaps:,} swaps; files outside the log's folder: {out}")


if __name__ == "__main__":
    main()
