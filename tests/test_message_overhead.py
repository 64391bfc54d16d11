"""budget.message_overhead: a chat template's tokens per item and per request count
against the budget, so that context_window is what the model sees (issue 16)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from engine import BudgetItem, PolicyError, allocate
from engine.audit.log import AuditLog
from engine.audit.records import check_record
from engine.audit.recordschema import schema_error
from engine.decide import decide
from engine.policy import MessageOverhead, Policy, load_policy
from engine.tokens import get_tokenizer
from engine.verify import verify

OPENAI = MessageOverhead(per_item_tokens=4, per_request_tokens=3)


def _items(n: int = 10, size: int = 10) -> list[BudgetItem]:
    """n items of ``size`` bytes each (approx:utf8_bytes counts bytes: exact arithmetic)."""
    return [BudgetItem(f"{k:0{size}d}", 1.0 - k / 100, size, f"id{k}", "PARAGRAPH", {}) for k in range(n)]


def _policy(max_tokens: int, overhead: MessageOverhead | None, **more: Any) -> Policy:
    return Policy.default(max_tokens, tokenizer="approx:utf8_bytes", separator="", message_overhead=overhead, **more)


def test_without_the_option_nothing_changes() -> None:
    plain = Policy.default(100, tokenizer="approx:utf8_bytes", separator="")
    assert _policy(100, None) == plain and "message_overhead" not in plain.effective["spec"]["budget"]
    alloc = allocate(_items(), plain)
    assert len(alloc.included) == 10 and alloc.context_tokens == 100 and alloc.overhead_tokens == 0


def test_each_item_and_the_request_pay_their_overhead() -> None:
    """10-byte items under 100 tokens: all ten fit as plain text, but as chat messages
    (4 per message, 3 for the reply) only 6 do: 3 + 6 * 14 = 87, and a seventh would
    need 101."""
    from engine.allocate import to_candidates

    cands = to_candidates(_items())
    for strategy in ("optimal", "greedy", "balanced", "density"):
        policy = _policy(100, OPENAI, strategy=strategy)
        alloc = allocate(cands, policy)
        assert len(alloc.included) == 6, strategy
        assert (alloc.context_tokens, alloc.overhead_tokens) == (60, 27)
        assert alloc.context_tokens + alloc.overhead_tokens <= 100
        assert alloc.budgeted_tokens == 60  # the items and separators, as before
        budget = next(r for r in alloc.rules if r.path == "$.spec.budget")
        assert (budget.total, budget.upper) == (87, 100)
        assert verify(policy, cands, alloc) == ()


def test_the_verifier_recomputes_the_overhead() -> None:
    """An allocation made without the overhead breaks the policy that has it: the
    verifier's own sum of items, separators and overhead is over the budget."""
    from engine.allocate import to_candidates

    cands = to_candidates(_items())
    with_overhead = _policy(100, OPENAI)
    good = allocate(cands, with_overhead)
    assert verify(with_overhead, cands, good) == ()
    ignoring = allocate(cands, _policy(100, None))
    found = {v.code: v.message for v in verify(with_overhead, cands, ignoring)}
    assert found["budget.over"] == ("the included items and separators count 143 tokens (with 43 of chat "
                                    "overhead) > budget 100")
    assert found["budget.context_over"] == ("the assembled context counts 143 tokens (with 43 of chat overhead) "
                                            "> budget 100")
    assert found["budget.overhead"] == ("overhead_tokens is 0; the policy's chat overhead for 10 items is 43")


def test_an_item_that_fits_only_without_its_overhead_is_too_large() -> None:
    alloc = allocate(_items(2, size=95), _policy(100, OPENAI))
    assert alloc.included == () and {d.reason.code.value for d in alloc.decisions} == {"too_large"}
    assert alloc.overhead_tokens == 3


def test_the_recount_with_the_overhead_is_held_to_the_budget_by_repair() -> None:
    """The repair after assembly holds the recount plus the overhead to the budget: a
    selection of all ten items (100 tokens, 143 with the chat overhead) is
    cut back, least valuable first, to what fits, and every drop is recorded."""
    from engine.allocate import to_candidates
    from engine.allocation import build
    from engine.policy import BudgetStrategy
    from engine.problem import reduce
    from engine.strategies import Selection

    cands = to_candidates(_items())
    policy = _policy(100, OPENAI)
    problem = reduce(policy, cands)
    everything = frozenset(range(10))
    value = sum(problem.values[i] for i in everything)
    alloc = build(problem, Selection(BudgetStrategy.GREEDY, everything, {}, "heuristic", value),
                  BudgetStrategy.GREEDY, None)
    assert len(alloc.included) == 6 and alloc.context_tokens + alloc.overhead_tokens == 87
    assert [r["dropped"] for r in alloc.repairs] == ["id9", "id8", "id7", "id6"]
    first = next(d for d in alloc.decisions if d.source_id == "id9").reason
    assert first.code.value == "dropped_in_repair"
    assert first.evidence.startswith("the assembled text counted 100 tokens plus 43 of chat overhead (> 100)")
    assert verify(policy, cands, alloc) == ()


YAML = """apiVersion: ctxbudget/v1
kind: BudgetPolicy
metadata: {{name: chat, revision: "1"}}
spec:
  tokenizer: approx:utf8_bytes
  budget:
    context_window: 160
    reserve_output: 40
    reserve_prompt: 20
    separator: ""
    message_overhead: {overhead}
  audit: {{store_content: true}}
"""


def test_a_policy_file_sets_it_and_the_record_carries_it(tmp_path: Path) -> None:
    path = tmp_path / "chat.yaml"
    path.write_text(YAML.format(overhead="{per_item_tokens: 4, per_request_tokens: 3}"))
    policy = load_policy(path)
    assert policy.budget.message_overhead == OPENAI and policy.budget.limit_tokens == 100
    assert policy.effective["spec"]["budget"]["message_overhead"] == {"per_item_tokens": 4, "per_request_tokens": 3}
    log = AuditLog(tmp_path / "audit.jsonl")
    done = decide(_items(), policy, audit_log=log)
    budget = done.record["budget"]
    assert budget["message_overhead"] == {"per_item_tokens": 4, "per_request_tokens": 3, "tokens": 27}
    assert (budget["assembled_tokens"], budget["free_tokens"], budget["budgeted_tokens"]) == (60, 13, 60)
    assert schema_error(done.record) is None and check_record(done.record) == ()
    # A record whose overhead or free tokens were edited no longer holds together.
    edited = copy.deepcopy(done.record)
    edited["budget"]["message_overhead"]["tokens"] = 3
    assert {f.path for f in check_record(edited)} >= {"$.budget.message_overhead.tokens", "$.budget.free_tokens"}
    edited = copy.deepcopy(done.record)
    edited["budget"]["message_overhead"]["per_item_tokens"] = 0
    codes = {(f.code, f.path) for f in check_record(edited)}
    assert ("record.budget_limit", "$.budget.message_overhead") in codes


def test_records_of_policies_without_it_keep_their_shape() -> None:
    done = decide(_items(), _policy(100, None))
    assert "message_overhead" not in done.record["budget"]
    assert done.record["budget"]["free_tokens"] == 0 and check_record(done.record) == ()


@pytest.mark.parametrize(("overhead", "code", "message"), [
    ("{per_item_tokens: 60, per_request_tokens: 40}", "policy.semantic.overhead_exceeds_budget",
     "message_overhead per_request_tokens + per_item_tokens (100) must be less than the budget (100 tokens), "
     "or no item fits; lower the overhead or raise the budget"),
    ("{per_item_tokens: -1}", "policy.out_of_range", None),
    ("{per_message: 3}", "policy.unknown_field", None),
])
def test_bad_overheads_are_refused_where_they_are_written(tmp_path: Path, overhead: str, code: str,
                                                         message: str | None) -> None:
    path = tmp_path / "chat.yaml"
    path.write_text(YAML.format(overhead=overhead))
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert err.value.code == code, err.value
    assert err.value.location is not None and err.value.location.line == 11
    if message:
        assert err.value.message == message


def test_the_budget_counts_what_openais_chat_format_counts() -> None:
    """OpenAI's count of a chat request (the cookbook's num_tokens_from_messages): 3 per
    message, plus the tokens of each role and content, plus 3 priming the reply. With
    each chosen item sent as a user message, per_item_tokens = 3 + the role's tokens and
    per_request_tokens = 3 make the budget rule's total exactly that count."""
    tok = get_tokenizer("o200k_base")
    lines = [line for line in (Path(__file__).parent / "fixtures" / "multilingual.txt").read_text().splitlines()
             if line.strip()]
    items = [BudgetItem(line, 1.0 - k / 100, tok.count(line), f"m{k}", "PARAGRAPH", {}) for k, line in enumerate(lines)]
    overhead = MessageOverhead(per_item_tokens=3 + tok.count("user"), per_request_tokens=3)
    policy = Policy.default(10_000, tokenizer="o200k_base", separator="", message_overhead=overhead)
    alloc = allocate(items, policy)
    messages = [{"role": "user", "content": items[d.index].content} for d in alloc.included]
    openai = 3 + sum(3 + sum(tok.count(value) for value in m.values()) for m in messages)
    budget = next(r for r in alloc.rules if r.path == "$.spec.budget")
    assert len(messages) == len(lines) and budget.total == openai
    assert alloc.budgeted_tokens + alloc.overhead_tokens == openai
