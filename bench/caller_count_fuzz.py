"""Caller-count fuzzing: does any caller-supplied ``token_count`` push the context over budget?

    .venv/bin/python bench/caller_count_fuzz.py                  # 20,000 inputs (~2 min, 1 core)
    .venv/bin/python bench/caller_count_fuzz.py --inputs 500     # a quick look
    .venv/bin/python bench/caller_count_fuzz.py --seed 7 --cli-every 5

Each input is a random candidate set (1-30 items of BPE-unfriendly text: words, spaces,
newlines, digits, accents, braces, ``<|endoftext|>``) whose items carry no count, the
exact count, an undercount (down to 0), a tenth of the count, or an overcount; a random
template and separator; a random budget (1-4,000 tokens, log-uniform); sometimes a
``required: false`` glob pin; and one of the four strategies. It is allocated under the
default ``budget.counts: max`` through :func:`engine.allocate` (the verifier on), and
every ``--cli-every``-th input also through ``ctxbudget allocate`` (in process, with a
candidates file). The assembled context is recounted with the policy's tokenizer; a
recount above the limit is a context over budget.

Prints the inputs tried, the contexts over budget (must be 0) and the outcomes per
strategy and path; exit status 1 when any context was over budget. Deterministic: the
same ``--seed`` and ``--inputs`` try the same inputs. The script uses only APIs the
engine had before ``budget.counts`` existed, so it can be pointed at an older checkout
(``PYTHONPATH=old/checkout``) to see the overshoot it guards against.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # an explicit PYTHONPATH (an older checkout) still wins

from engine import BudgetStrategy, EngineError, InfeasibleError, allocate, cli, get_tokenizer  # noqa: E402
from engine.policy import Matcher, Policy  # noqa: E402

WORDS = ("refund", "annual", "plan", "the", "customer", "invoice", " ", "  ", "\n", "\n\n", "x", "1234", "007",
         "éé", "ü", "!!", "<|endoftext|>", "don't", "'s", "{", "}", "ab", "c", "\t", "日本", "🙂", ".", ",")
TEMPLATES = ("{content}", "[{source_id}] {content}", "{level}: {content}\n", "<doc id={source_id}>{content}</doc>",
             "{content}{source_id}", "{{literal}} {content}", "# {source_id}\n{content}")
SEPARATORS = ("", "\n\n", " ", "\n---\n", "ab", "\n")
COUNT_MODES = ("none", "exact", "under", "zero", "tenth", "over")


def _pin() -> Matcher:
    try:
        return Matcher("glob", None, "s0#*", (), None, "$.spec.pinned[0]", required=False)  # type: ignore[call-arg]
    except TypeError:  # an engine without optional pins (its pins never fail anyway)
        return Matcher("glob", None, "s0#*", (), None, "$.spec.pinned[0]")


def make_input(rng: random.Random, tok: Any) -> tuple[list[dict[str, Any]], Policy, BudgetStrategy]:
    rows: list[dict[str, Any]] = []
    for k in range(rng.randint(1, 30)):
        content = "".join(rng.choice(WORDS) for _ in range(rng.randint(0, 60)))
        row: dict[str, Any] = {"source_id": f"s{k % 4}#{k}", "content": content,
                               "relevance_score": round(rng.random(), 4),
                               "level": rng.choice(("PARAGRAPH", "SECTION", "SENTENCE"))}
        mode = rng.choice(COUNT_MODES)
        if mode != "none":
            exact = tok.count(content)
            row["token_count"] = {"exact": exact, "under": rng.randint(0, max(0, exact - 1)), "zero": 0,
                                  "tenth": exact // 10, "over": exact + rng.randint(1, 50)}[mode]
        if k and rng.random() < 0.15:
            row["parent_id"] = f"s{(k - 1) % 4}#{k - 1}"
        rows.append(row)
    overrides: dict[str, Any] = {"template": rng.choice(TEMPLATES), "separator": rng.choice(SEPARATORS)}
    if rng.random() < 0.3:
        overrides["pinned"] = (_pin(),)
    budget = max(1, int(math.exp(rng.uniform(0, math.log(4000)))))
    return rows, Policy.default(budget, **overrides), rng.choice(list(BudgetStrategy))


def via_cli(rows: list[dict[str, Any]], policy: Policy, strategy: BudgetStrategy, folder: Path) -> tuple[str, str]:
    """(outcome, context) of ``ctxbudget allocate`` on the input, run in process."""
    import yaml

    pfile, cfile = folder / "policy.yaml", folder / "candidates.jsonl"
    pfile.write_text(yaml.safe_dump(policy.to_dict(), allow_unicode=True), encoding="utf-8")
    cfile.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["allocate", "--policy", str(pfile), "--candidates", str(cfile), "--strategy",
                         strategy.value])
    if code != 0:
        return {3: "infeasible"}.get(code, f"exit {code}"), ""
    return "allocated", json.loads(out.getvalue())["context"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=20_000, help="random inputs to try")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cli-every", type=int, default=10, help="also run every N-th input through the CLI (0: never)")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    tok = get_tokenizer()
    tried = over = 0
    outcomes: Counter[str] = Counter()
    examples: list[str] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.inputs):
            rows, policy, strategy = make_input(rng, tok)
            paths = ["library"] + (["cli"] if args.cli_every and n % args.cli_every == 0 else [])
            for path in paths:
                tried += 1
                if path == "cli":
                    outcome, context = via_cli(rows, policy, strategy, Path(tmp))
                else:
                    try:
                        context, outcome = allocate(rows, policy, strategy=strategy).context, "allocated"
                    except InfeasibleError:
                        outcome, context = "infeasible", ""
                    except EngineError as exc:
                        outcome, context = f"error {exc.code}", ""
                recount = tok.count(context)
                if recount > policy.budget.limit_tokens:
                    over += 1
                    outcome = "OVER BUDGET"
                    if len(examples) < 5:
                        examples.append(f"input {n} via {path}, {strategy.value}: {recount:,} > "
                                        f"{policy.budget.limit_tokens:,} tokens")
                outcomes[f"{path}/{strategy.value}: {outcome}"] += 1
    print(f"caller-count fuzz (seed {args.seed}, {time.perf_counter() - t0:.0f} s)")
    for key in sorted(outcomes):
        print(f"  {key:<40} {outcomes[key]:>6}")
    for line in examples:
        print(f"  e.g. {line}")
    print(f"inputs tried: {tried:,}, contexts over budget: {over:,}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
