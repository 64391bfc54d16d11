"""What a reader of the log learns about content that is not stored (issue 12, part 4).

    .venv/bin/python bench/audit_privacy.py

- planted secret: a fresh random word in a document's body, in its heading, in the
  ``pack`` query, and in a metadata field named by ``audit.mask``; each run appends to its
  own log with ``store_content: false`` and counts the word in the log bytes (any case)
  and the hex of the plain SHA-256 of the word and of every text carrying it.
- the same with ``store_content: true`` (content and query are then stored, as asked).
- brute force: a 4-digit PIN as the whole content; the plain SHA-256 (what records held
  before) is looked up in a 10,000-entry dictionary, and the keyed digest is tried
  against the same dictionary, plainly and under three guessed keys.

Figures only; ``tests/test_privacy.py`` asserts them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import AuditLog, load_policy  # noqa: E402
from engine.audit.privacy import SECRET_ENV, create_secret  # noqa: E402
from engine.candidates import from_mappings  # noqa: E402
from engine.decide import decide  # noqa: E402
from engine.policy import AuditSettings, Policy  # noqa: E402
from engine.retrieval.index import HierarchicalIndex  # noqa: E402
from engine.retrieval.pack import pack  # noqa: E402

HEAD = "apiVersion: ctxbudget/v1\nkind: BudgetPolicy\nmetadata: {name: p, revision: '1'}\nspec:\n"


def occurrences(data: bytes, word: str, texts: list[str]) -> int:
    low = data.lower()
    n = low.count(word.lower().encode())
    for t in [word, *texts]:
        n += low.count(hashlib.sha256(t.encode()).hexdigest().encode())
    return n


def planted(root: Path, store: bool) -> dict[str, int]:
    out: dict[str, int] = {}
    audit = f"  audit: {{store_content: {'true' if store else 'false'}, mask: ['customer_*']}}\n"
    for place in ("content", "heading", "query", "masked metadata"):
        word = "zq" + secrets.token_hex(8)
        folder = root / ("stored" if store else "hidden") / place.replace(" ", "-")
        (folder / "docs").mkdir(parents=True)
        (folder / "logs").mkdir()
        policy_file = folder / "p.yaml"
        policy_file.write_text(HEAD + "  budget: {max_tokens: 400}\n" + audit)
        policy = load_policy(policy_file)
        log = AuditLog(folder / "logs" / "audit.jsonl")
        texts: list[str] = []
        if place == "masked metadata":
            value = f"{word}@example.com"
            decide(from_mappings([({"source_id": "a", "content": "hello", "relevance_score": 0.9,
                                    "metadata": {"customer_email": value}}, None)]), policy, audit_log=log)
            texts.append(value)
        else:
            heading = f"Vault {word}" if place == "heading" else "Vault access"
            body = f"The vault code is {word} today." if place == "content" else "Ask the vault team."
            text = f"# {heading}\n\n{body}\n\nOther paragraph about the vault.\n"
            (folder / "docs" / "vault.md").write_text(text)
            query = f"vault code {word}" if place == "query" else "vault code"
            pack(policy, query, [folder / "docs"], audit_log=log)
            index = HierarchicalIndex()
            index.index_document(text, "vault", markdown=True)
            texts += [heading, body, query, *(n.content for n in index.nodes.values())]
        out[place] = occurrences(Path(log.path).read_bytes(), word, texts)
    return out


def brute_force(root: Path) -> None:
    pins = [f"PIN {n:04d}" for n in range(10_000)]
    secret_pin = pins[secrets.randbelow(10_000)]
    rows = [({"source_id": "pin", "content": secret_pin, "relevance_score": 0.9}, None)]
    (root / "bf").mkdir()
    rec = decide(from_mappings(rows), Policy.default(500), audit_log=AuditLog(root / "bf" / "a.jsonl")).record
    keyed = rec["input"]["items"][0]["content_sha256"]
    plain = decide(from_mappings(rows), Policy.default(500, audit=AuditSettings(store_content=True))).record
    old = plain["items"][0]["content_sha256"]
    t0 = time.perf_counter()
    found = next((p for p in pins if hashlib.sha256(p.encode()).hexdigest() == old), None)
    t1 = time.perf_counter()
    guesses = (b"", b"ctxbudget", bytes(32))
    hits = sum(1 for p in pins if hashlib.sha256(p.encode()).hexdigest() == keyed.split(":", 1)[1])
    hits += sum(1 for k in guesses for p in pins
                if "hmac-sha256:" + hmac.new(k, p.encode(), hashlib.sha256).hexdigest() == keyed)
    t2 = time.perf_counter()
    print(f"brute force, plain SHA-256: {'recovered ' + repr(found) if found == secret_pin else 'not recovered'} "
          f"in {1000 * (t1 - t0):.1f} ms (10,000-word dictionary)")
    print(f"brute force, keyed digest: {hits} hits in {4 * len(pins):,} tries ({1000 * (t2 - t1):.1f} ms) "
          "without the secret")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as keys:
        if not os.environ.get(SECRET_ENV):  # a throw-away audit secret, outside the logs' folders
            os.environ[SECRET_ENV] = str(create_secret(Path(keys) / "audit.secret").source)
        root = Path(tmp)
        for store in (False, True):
            counts = planted(root, store)
            print(f"planted secret, store_content {str(store).lower()}: "
                  + ", ".join(f"{k} {v}" for k, v in counts.items()))
        brute_force(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
