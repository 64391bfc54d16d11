"""(Policy, candidates, counter) → item token counts, and the record of how they were got.

What goes in: a validated :class:`~engine.policy.Policy`, the candidates and the policy's
tokenizer, resolved once by the caller (:func:`policy_tokenizer`). What comes out:
:class:`Counted` — each item's token count *as rendered* with the policy's template, the
separator's count, the template's own overhead, and a :class:`TokenAccounting` that the
Problem, the Allocation and the audit record carry forward (nothing later recounts them).

Caller-supplied ``token_count`` (the count of the item's *content*) under the policy's
``budget.counts``:

* ``max`` (default) — the item weighs the larger of our exact count of the rendered item
  and the caller's (its ``token_count`` plus the item's template overhead). An
  undercounting caller therefore cannot push the assembled context over the budget; an
  overcounting one only wastes budget. The caller's count is compared with our count of
  the same thing (the content), and every disagreement is recorded (how many items, the
  largest difference and its item).
* ``caller`` — the caller's count is trusted as given (plus the item's template
  overhead), for a model whose tokenizer the engine cannot load. The budget then holds on
  the caller's counts; the record says so (``TokenAccounting.trusted``), and the recount
  of the assembled context may exceed the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import sub
from typing import Any, TypeAlias

from .candidates import Candidate
from .errors import TokenizerError
from .policy import CountMode, Policy
from .tokens import DEFAULT_ENCODING, HfCounter, TiktokenCounter, Utf8BytesCounter, get_tokenizer
from .tokfiles import TokenizerBase

#: The resolved counter a Problem carries (what :func:`~engine.tokens.get_tokenizer` returns).
Counter: TypeAlias = TiktokenCounter | HfCounter | Utf8BytesCounter


@dataclass(frozen=True, slots=True)
class TokenAccounting:
    """How the token counts of one call were obtained.

    ``caller_counts``: items that came with a ``token_count``; ``checked``: how many of
    them were compared with the policy tokenizer's own count (all under ``counts: max``,
    none under ``counts: caller``); ``disagreements`` / ``undercounts``: compared items
    whose count differs from ours / is below ours; ``largest_difference``: the caller's
    count minus ours with the largest magnitude (negative: the caller counted fewer
    tokens), on item ``largest_source_id``."""

    tokenizer: str = DEFAULT_ENCODING
    exact: bool = True
    mode: CountMode = CountMode.MAX
    separator_tokens: int = 0
    template_overhead_tokens: int = 0
    caller_counts: int = 0
    checked: int = 0
    disagreements: int = 0
    undercounts: int = 0
    largest_difference: int = 0
    largest_source_id: str | None = None

    @property
    def trusted(self) -> bool:
        """Whether some item weighs the caller's count unchecked (``counts: caller``):
        the budget then holds on the caller's counts, not necessarily on ours."""
        return self.mode is CountMode.CALLER and self.caller_counts > 0

    def caller_part(self) -> dict[str, Any]:
        """The audit record's ``budget.caller_counts``."""
        return {"items": self.caller_counts, "checked": self.checked, "disagreements": self.disagreements,
                "undercounts": self.undercounts, "largest_difference": self.largest_difference,
                "largest_source_id": self.largest_source_id, "trusted": self.trusted}


@dataclass(frozen=True, slots=True)
class Counted:
    """Per-item rendered token counts (input order) and the accounting behind them."""

    tokens: tuple[int, ...]
    accounting: TokenAccounting


def render(template: str, c: Candidate) -> str:
    """One item as the model will see it."""
    if template == "{content}":
        return c.content
    return template.format(source_id=c.source_id, content=c.content, level=c.level)


def template_overhead(template: str, c: Candidate) -> str:
    """The template rendered for ``c`` without its content: what a caller-supplied
    content count does not include."""
    return template.format(source_id=c.source_id, content="", level=c.level)


def policy_tokenizer(policy: Policy) -> Counter:
    """The policy's tokenizer; a failure to provide it points at ``$.spec.tokenizer``.
    A path in it (``name@path``, ``hf:path@sha256:...``) of a policy read from a file is
    resolved like ``extends``: relative to the file that wrote it, inside the policy's
    folder (or ``$CTXBUDGET_TOKENIZER_DIR``), no symlinks (:mod:`engine.tokfiles`)."""
    where = policy.location_of("$.spec.tokenizer")
    try:
        return get_tokenizer(policy.tokenizer, base=TokenizerBase.of(policy.file, where.file if where else None))
    except TokenizerError as exc:
        path = "$.spec.tokenizer"
        raise TokenizerError(exc.code, exc.message, path=path, location=policy.location_of(path)) from None


def _rendered(counter: Counter, template: str, cands: Sequence[Candidate]) -> list[int]:
    """Exact counts of the items as rendered (the plain template reuses content hashes)."""
    if template == "{content}":
        return counter.count_many([c.content for c in cands], keys=[c.count_key for c in cands])
    return counter.count_many([render(template, c) for c in cands])


def _caller_totals(counter: Counter, template: str, cands: Sequence[Candidate],
                   given: Sequence[int]) -> list[int]:
    """The caller's count of each rendered item in ``given``: its ``token_count`` plus
    the item's template overhead (the template rendered without content)."""
    if template == "{content}":
        return [int(cands[k].token_count or 0) for k in given]
    extra = counter.count_many([template_overhead(template, cands[k]) for k in given])
    return [int(cands[k].token_count or 0) + e for k, e in zip(given, extra)]


def _caller_mode(counter: Counter, template: str, cands: Sequence[Candidate], given: Sequence[int]) -> list[int]:
    """``counts: caller``: the caller's count where given, else our own."""
    out = [0] * len(cands)
    need = [k for k, c in enumerate(cands) if c.token_count is None]
    for k, n in zip(need, _rendered(counter, template, [cands[k] for k in need])):
        out[k] = n
    for k, n in zip(given, _caller_totals(counter, template, cands, given)):
        out[k] = n
    return out


def count_tokens(policy: Policy, cands: Sequence[Candidate], counter: Counter) -> Counted:
    """Every item's token count under the policy's template and ``budget.counts``
    (see the module docstring), with the accounting the audit record reports."""
    b = policy.budget
    template = b.template
    plain = template == "{content}"
    given = [k for k, c in enumerate(cands) if c.token_count is not None]
    sep = counter.count(b.separator) if b.separator else 0
    overhead = 0 if plain else counter.count(template.format(source_id="", content="", level=""))
    base: dict[str, Any] = {"tokenizer": counter.name, "exact": counter.exact, "separator_tokens": sep,
            "template_overhead_tokens": overhead, "caller_counts": len(given)}
    if b.counts is CountMode.CALLER:
        return Counted(tuple(_caller_mode(counter, template, cands, given)),
                       TokenAccounting(mode=CountMode.CALLER, **base))
    rendered = _rendered(counter, template, cands)
    # Disagreements compare like with like: the caller counted the content.
    if plain:
        ours = rendered if len(given) == len(cands) else [rendered[k] for k in given]
    else:
        ours = counter.count_many([cands[k].content for k in given], keys=[cands[k].count_key for k in given])
    # Each item weighs the larger of our rendered count and the caller's.
    theirs = _caller_totals(counter, template, cands, given)
    if len(given) == len(cands):
        tokens = list(map(max, rendered, theirs))
    else:
        tokens = list(rendered)
        for k, total in zip(given, theirs):
            tokens[k] = max(tokens[k], total)
    caller = theirs if plain else [int(cands[k].token_count or 0) for k in given]
    diffs = list(map(sub, caller, ours))
    disagree = len(diffs) - diffs.count(0)
    under = sum(1 for d in diffs if d < 0) if disagree else 0
    largest = max(diffs, key=abs, default=0)  # the first of the largest magnitude
    largest_id = cands[given[diffs.index(largest)]].source_id if largest else None
    return Counted(tuple(tokens), TokenAccounting(
        mode=CountMode.MAX, checked=len(given), disagreements=disagree, undercounts=under,
        largest_difference=largest, largest_source_id=largest_id, **base))
