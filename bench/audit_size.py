"""How many bytes one audit record takes, and which top-level keys take them.

Two decisions, each with content stored (``store_content: true``, as the example policy
has it) and not stored (the default: keyed digests):

- **7 candidates**: ``pack`` of the example corpus (``examples/``) for the README's
  question with ``top_k=7``, under ``examples/policy.yaml``;
- **10,000 candidates**: synthetic paragraphs (seeded), the same policy with an
  8,000-token budget.

    .venv/bin/python bench/audit_size.py [--n 10000] [--json]

Bytes are those of the record's canonical JSON as ``decide`` appends it (compact where the
checkout has :mod:`engine.audit.compact`), less the ~200-byte envelope. Run it against another checkout (``PYTHONPATH=OTHER``) for a
before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from engine.audit.lineformat import encode_record
from engine.audit.privacy import create_secret
from engine.decide import decide
from engine.policy import load_policy
from engine.retrieval.pack import pack

try:  # what decide() appends: the compact form, where this checkout has one
    from engine.audit.compact import compact as stored
except ImportError:  # an older checkout writes the record as built
    def stored(record: dict[str, Any]) -> dict[str, Any]:
        return record

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "How do I get a refund for an annual plan?"
WORDS = ("refund plan annual invoice billing export account security token limit request "
         "workspace subscription cancel payment tax discount session password api page").split()


def _policy(tmp: Path, store: bool, max_tokens: int | None = None) -> Any:
    text = (ROOT / "examples" / "policy.yaml").read_text(encoding="utf-8")
    text = text.replace("store_content: true", f"store_content: {str(store).lower()}")
    if max_tokens is not None:
        text = text.replace("max_tokens: 600", f"max_tokens: {max_tokens}")
    path = tmp / f"policy-{store}-{max_tokens}.yaml"
    path.write_text(text, encoding="utf-8")
    return load_policy(path)


def _synthetic(n: int, seed: int = 12) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        doc = f"doc-{i // 20:04d}"
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 90)))
        rows.append({"source_id": f"{doc}#p{i % 20}", "content": words.capitalize() + ".",
                     "relevance_score": round(rng.random(), 4), "level": "PARAGRAPH",
                     "metadata": {"doc_id": doc}})
    return rows


def shares(record: dict[str, Any]) -> tuple[int, dict[str, int]]:
    record = stored(record)
    total = len(encode_record(record))
    return total, {k: len(encode_record({k: v})) - 2 for k, v in record.items()}


def measure(n: int) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        secret = create_secret(tmp / "secret")
        for store in (True, False):
            small = pack(_policy(tmp, store), QUESTION, [ROOT / "examples" / "corpus"], top_k=7)
            rec = small.decided.record  # keyed with the process's ephemeral secret: same size
            out.append({"case": f"{len(rec['input']['items'])} candidates", "store_content": store,
                        **_row(rec)})
            big = decide(_synthetic(n), _policy(tmp, store, 8000), secret=secret).record
            out.append({"case": f"{n:,} candidates", "store_content": store, **_row(big)})
    return out


def _row(record: dict[str, Any]) -> dict[str, Any]:
    total, parts = shares(record)
    top = sorted(parts.items(), key=lambda kv: -kv[1])
    return {"bytes": total, "keys": {k: v for k, v in top}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = measure(args.n)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        shown = ", ".join(f"{k} {v / r['bytes']:.0%}" for k, v in list(r["keys"].items())[:6])
        print(f"{r['case']:>18}  store_content={str(r['store_content']).lower():5}  "
              f"{r['bytes']:>11,} B   {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
