"""The budget policy: frozen dataclasses read from YAML, checked, hashed and rendered.

Flow: :func:`load_policy` reads a file (``engine.load``), resolves ``extends`` (same
folder only; maps deep-merge, lists replace, ``metadata`` comes from the extending file
alone; ``engine.extends``), validates the merged mapping against
``schemas/policy.schema.json`` (``engine.schema``), builds a :class:`Policy` and runs the
cross-field checks the schema cannot express (codes ``policy.semantic.*``;
``engine.semantic``). Every stage reports all of its issues in one
:class:`~engine.errors.PolicyError`.

A Policy carries its ``effective`` mapping: the whole policy *with every default filled
in*, in canonical form. Its RFC 8785 ``digest`` therefore changes whenever anything that
affects a decision changes, including a base policy or an engine default; and
:func:`render_policy` prints exactly that mapping, which loads back to the same digest.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .canonical import canonical_bytes, digest as canonical_digest
from .errors import Location, PolicyError
from .extends import resolve_extends
from .load import MAX_POLICY_BYTES, child_path, dump_yaml, gather_issues, nearest_location
from .schema import BUILTIN_LEVELS, matcher_label, suggest, validate_policy
from .semantic import semantic_issues

API_VERSION = "ctxbudget/v1"
KIND = "BudgetPolicy"


class BudgetStrategy(Enum):
    """How to choose items. Also the seed API's strategy enum (member order kept)."""

    GREEDY = "greedy"
    BALANCED = "balanced"
    OPTIMAL = "optimal"
    DENSITY = "density"


class Fallback(Enum):
    """What to do when the exact solver finds no solution in time or is missing."""

    GREEDY = "greedy"
    ERROR = "error"


class Ordering(Enum):
    """Order of the chosen items in the assembled context. ``pinned_first``: the pinned
    items first, in the order of the policy's ``pinned`` list (items of one pin by
    relevance), then the others by relevance."""

    RELEVANCE = "relevance"
    DOCUMENT = "document"
    LOST_IN_THE_MIDDLE = "lost_in_the_middle"
    PINNED_FIRST = "pinned_first"


class CountMode(Enum):
    """Which token count an item with a caller-supplied ``token_count`` weighs.

    ``max`` (default): the larger of the caller's count and the policy tokenizer's own,
    so an undercounting caller can never push the assembled context over the budget.
    ``caller``: the caller's count as given (for a model whose tokenizer the engine
    cannot load); the budget then holds on the caller's counts, and the audit record
    says so."""

    MAX = "max"
    CALLER = "caller"


class Transform(Enum):
    """How a relevance score becomes an objective weight (:meth:`Objective.weight`)."""

    IDENTITY = "identity"
    POWER = "power"
    RECIPROCAL_RANK = "reciprocal_rank"


class Calibration(Enum):
    """How a query's raw scores become [0, 1] before the transform (see
    :mod:`engine.objective`): ``max`` (score / best), ``minmax`` (the range onto [0, 1]),
    ``rank`` (mid-rank share: scale-free, any monotone scorer gives the same values),
    ``zscore`` (``exp((score - best) / standard deviation)``: unchanged by any positive
    rescaling and shift of the scores, so a cosine scorer's compressed range and BM25's
    wide one give comparable values)."""

    MAX = "max"
    MINMAX = "minmax"
    RANK = "rank"
    ZSCORE = "zscore"


class CalibrationGroup(Enum):
    """Which items a score is calibrated against: its own ``level``, or ``all`` pooled."""

    LEVEL = "level"
    ALL = "all"


class DocumentScore(Enum):
    """What a document's evidence is for ``objective.document_prior``: the ``mean`` or the
    ``max`` of the calibrated scores of its items (of one level)."""

    MEAN = "mean"
    MAX = "max"


class DocumentScope(Enum):
    """Which items the objective's document steps apply to: ``all`` that carry a
    ``doc_id``, or only ``flat`` ones (neither a parent nor a child candidate: the
    hierarchy's inherit and coverage already carry a document's evidence for the others)."""

    ALL = "all"
    FLAT = "flat"


class GroupBy(Enum):
    """What a "source" is for per-source caps (see :class:`SourceRule`)."""

    PREFIX = "prefix"
    METADATA = "metadata"
    DOCUMENT = "document"


class Measure(Enum):
    """How two items' shingle sets are compared (:class:`DuplicateRule`)."""

    JACCARD = "jaccard"


class SolverLog(Enum):
    """Whether the audit keeps the solver log or only its hash."""

    KEEP = "keep"
    HASH = "hash"


class TimeLimitScope(Enum):
    """What ``solver.time_limit_s`` bounds: ``solve`` (default) — the model build and the
    search only, starting after the tokens are counted, so a slow or cold count never
    turns an exact answer into a fallback; ``call`` — the whole ``allocate`` call,
    counting and the stages after the solver included."""

    SOLVE = "solve"
    CALL = "call"


@dataclass(frozen=True, slots=True)
class MessageOverhead:
    """Tokens a chat template adds that are in no item's text: ``per_item_tokens`` around
    each chosen item (each sent as its own message: OpenAI's chat format adds 3, the
    role and the message start/end markers) and ``per_request_tokens`` once per request
    (OpenAI's reply priming, 3). They count against the budget, so ``context_window``
    is what the model sees."""

    per_item_tokens: int = 0
    per_request_tokens: int = 0

    def tokens(self, items: int) -> int:
        """The overhead of a request carrying ``items`` chosen items."""
        return self.per_request_tokens + items * self.per_item_tokens


@dataclass(frozen=True, slots=True)
class Budget:
    """The token budget. Exactly one of ``max_tokens`` / ``context_window`` is set in a
    valid policy; the reserves only apply to ``context_window``. Each chosen item is
    rendered with ``template`` and items are joined with ``separator``: both count.
    ``counts`` says how caller-supplied token counts are used (:class:`CountMode`);
    ``message_overhead`` (None: none) the chat template's tokens per item and request."""

    max_tokens: int | None = None
    context_window: int | None = None
    reserve_output: int = 0
    reserve_prompt: int = 0
    template: str = "{content}"
    separator: str = "\n\n"
    counts: CountMode = CountMode.MAX
    message_overhead: MessageOverhead | None = None

    def overhead_tokens(self, items: int) -> int:
        """The chat overhead of a request carrying ``items`` chosen items (0 without
        ``message_overhead``): what the model sees besides the assembled context."""
        return 0 if self.message_overhead is None else self.message_overhead.tokens(items)

    @property
    def limit_tokens(self) -> int:
        """Tokens available to the context: ``max_tokens``, else ``context_window``
        minus both reserves. ValueError if neither is set (never in a loaded Policy)."""
        if self.max_tokens is not None:
            return self.max_tokens
        if self.context_window is None:
            raise ValueError("budget has neither max_tokens nor context_window")
        return self.context_window - self.reserve_output - self.reserve_prompt

    def render_item(self, *, source_id: str, content: str, level: str) -> str:
        """One item as it appears in the prompt (``template`` filled in)."""
        return self.template.format(source_id=source_id, content=content, level=level)


@dataclass(frozen=True, slots=True)
class LevelRule:
    """Quotas for the items of one level; ``None`` means no bound. ``share`` is the
    level's fraction of the budget in the BALANCED split (soft: unspent budget is
    reused; the shares of all levels add up to at most 1). ``min_relevance``, when set,
    replaces the global ``min_relevance`` for this level's items."""

    name: str
    min_items: int = 0
    max_items: int | None = None
    min_tokens: int = 0
    max_tokens: int | None = None
    share: float | None = None
    min_relevance: float | None = None


@dataclass(frozen=True, slots=True)
class SourceRule:
    """Per-source caps. The source of a candidate is, by ``group_by``: ``prefix`` — its
    source_id up to the first ``separator`` (the whole id if absent); ``metadata`` — the
    value of ``metadata[field]``; ``document`` — ``metadata.doc_id``, else the root
    ancestor reached through ``parent_id``."""

    group_by: GroupBy
    separator: str = "#"
    field: str | None = None
    max_items_per_source: int | None = None
    max_tokens_per_source: int | None = None


@dataclass(frozen=True, slots=True)
class Matcher:
    """One ``pinned`` / ``blocked`` entry: exactly one of ``id`` (exact source_id),
    ``glob`` (fnmatch, case-sensitive) or ``metadata`` (every key present and equal).
    ``path`` is the entry's JSON path, e.g. ``$.spec.pinned[1]``. ``required`` (pins
    only): a pin that matches no candidate makes the allocation infeasible, unless it is
    ``False``, in which case the pin is recorded as missing."""

    kind: str
    id: str | None
    glob: str | None
    metadata: tuple[tuple[str, object], ...]
    reason: str | None
    path: str
    required: bool = True

    def matches(self, source_id: str, metadata: Mapping[str, Any]) -> bool:
        """Whether a candidate is selected by this matcher. Metadata values compare
        strictly by type: booleans only equal booleans (``True != 1``), numbers equal
        numbers by value (``1 == 1.0``), strings only strings, null only null."""
        if self.kind == "id":
            return source_id == self.id
        if self.kind == "glob":
            return fnmatchcase(source_id, self.glob or "")
        return all(key in metadata and _same(metadata[key], want) for key, want in self.metadata)

    @property
    def label(self) -> str:
        """Short human description: ``id 'refund-terms'``, ``glob 'legal-*'``,
        ``metadata {kind: 'disclaimer', pii: true}``."""
        return matcher_label(self.kind, self.to_mapping()[self.kind])

    def to_mapping(self) -> dict[str, Any]:
        """The matcher as written in YAML (normalized; ``required`` only when false)."""
        selector = dict(self.metadata) if self.kind == "metadata" else self.id if self.kind == "id" else self.glob
        out: dict[str, Any] = {self.kind: selector}
        if self.reason is not None:
            out["reason"] = self.reason
        if not self.required:
            out["required"] = False
        return out


def _number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _same(have: Any, want: Any) -> bool:
    """Metadata equality (tests/semantics_cases.py): numbers by value, booleans only with
    booleans, strings exactly, null only null, lists and mappings deep under this rule."""
    if isinstance(have, bool) or isinstance(want, bool):
        return isinstance(have, bool) and isinstance(want, bool) and have == want
    if _number(have) or _number(want):
        return _number(have) and _number(want) and have == want
    if isinstance(have, Mapping) and isinstance(want, Mapping):
        return have.keys() == want.keys() and all(_same(have[k], want[k]) for k in have)
    if isinstance(have, (list, tuple)) and isinstance(want, (list, tuple)):
        return len(have) == len(want) and all(map(_same, have, want))
    return type(have) is type(want) and have == want


def metadata_group(value: Any) -> str:
    """The source key of a ``group_by: metadata`` value: equal values (by the matchers'
    equality) share a key, different ones never do. A string is its own key (a leading
    ``<`` doubled); null or a missing field is ``<missing>``; any other value is
    ``<`` + its canonical JSON + ``>`` (``1`` and ``1.0`` are ``<1>``, ``true`` is
    ``<true>``)."""
    if isinstance(value, str):
        return "<" + value if value.startswith("<") else value
    if value is None:
        return "<missing>"
    return "<" + canonical_bytes(_plain_json(value)).decode("utf-8") + ">"


def _plain_json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return float(value) if _number(value) else value


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """``exclusive``: never a node together with its ancestor or descendant.
    ``prefer_parent_ratio``: prefer the parent once at least this fraction of its
    children would be chosen (needs ``exclusive``)."""

    exclusive: bool = True
    prefer_parent_ratio: float | None = None


@dataclass(frozen=True, slots=True)
class DuplicateRule:
    """Near-duplicates: no two included items whose texts have similarity ``>=
    threshold`` — Jaccard of their sets of ``shingle``-word shingles (normalised text;
    :mod:`engine.duplicates`). Pairs where one item is the other's ancestor are left to
    the hierarchy rule; two pinned items are both kept (pins win)."""

    threshold: float = 0.8
    measure: Measure = Measure.JACCARD
    shingle: int = 3


@dataclass(frozen=True, slots=True)
class Objective:
    """What the optimiser maximises: the sum of the items' values, computed by
    :func:`engine.objective.objective_values` — each score calibrated (``calibrate``
    within ``calibrate_within``), blended with its parent's (``inherit``), transformed
    (:meth:`weight`), multiplied by its level's weight (``level_weights``, sorted
    ``(level, weight)`` pairs) and, with ``coverage``, replaced for an item with child
    candidates by the sum of its children's values.

    The field defaults are the *base* values a written ``spec.objective`` starts from
    (best-score normalisation pooled over the levels, ``score ** 2``: the objective before
    issue 11), so an objective a policy spells out keeps its meaning when the shipped
    default moves. A policy without ``spec.objective`` gets :data:`DEFAULT_OBJECTIVE`."""

    transform: Transform = Transform.POWER
    exponent: float = 2.0
    k: int = 60
    calibrate: Calibration = Calibration.MAX
    calibrate_within: CalibrationGroup = CalibrationGroup.ALL
    inherit: float = 0.0
    coverage: bool = False
    level_weights: tuple[tuple[str, float], ...] = ()
    fill: bool = False
    #: Issue 11, documents: ``(1 - b) * own + b * document_score`` of the item's document
    #: (``metadata.doc_id``, one level), after ``inherit``; 0 = off (the base).
    document_prior: float = 0.0
    document_score: DocumentScore = DocumentScore.MEAN
    #: The r-th most valuable item (1-based) of a document and level is worth
    #: ``document_decay ** (r - 1)`` of its value: diminishing returns per document; 1 = off.
    document_decay: float = 1.0
    document_scope: DocumentScope = DocumentScope.ALL
    #: Issue 11, calibration: x in [0, 1]; the calibrated score c becomes
    #: ``c ** (1 - x) * z ** x`` with z the item's ``calibrate: zscore`` value (so the
    #: distance to the best counts in standard deviations too); 0 = off (the base).
    zscore_weight: float = 0.0
    #: Issue 11, reading order: the item at 0-based position r of its document
    #: (``metadata.doc_id``, one level, input order) is worth ``position_decay ** r`` of its
    #: value; 1 = off (the base).
    position_decay: float = 1.0
    #: The first item of each document is worth ``1 + lead_weight`` times its value; 0 = off.
    lead_weight: float = 0.0

    @property
    def uses_positions(self) -> bool:
        """Whether a reading-order step is on (its keys are spelled out only then)."""
        return self.position_decay < 1 or self.lead_weight > 0

    @property
    def uses_documents(self) -> bool:
        """Whether a document step is on (the keys appear in the effective policy only then,
        so policies that do not use them keep their digests)."""
        return self.document_prior > 0 or self.document_decay < 1

    def level_weight(self, level: str) -> float:
        """The factor on the values of ``level`` (1 when not named)."""
        return dict(self.level_weights).get(level, 1.0)

    def to_mapping(self) -> dict[str, Any]:
        """The YAML form, every key spelled out (``level_weights`` as a mapping)."""
        out: dict[str, Any] = {
            "transform": self.transform.value, "exponent": self.exponent, "k": self.k,
            "calibrate": self.calibrate.value, "calibrate_within": self.calibrate_within.value,
            "inherit": self.inherit, "coverage": self.coverage,
            "level_weights": dict(self.level_weights), "fill": self.fill}
        if self.uses_documents:
            out.update(document_prior=self.document_prior, document_score=self.document_score.value,
                       document_decay=self.document_decay, document_scope=self.document_scope.value)
        if self.zscore_weight > 0:  # spelled out only when on: other policies keep their digests
            out["zscore_weight"] = self.zscore_weight
        if self.uses_positions:  # likewise
            out.update(position_decay=self.position_decay, lead_weight=self.lead_weight)
        return out

    def weight(self, score: float, rank: int) -> float:
        """Weight of an item with relevance ``score`` and 1-based ``rank`` (1 = most
        relevant): identity → score; power → max(score, 0) ** exponent;
        reciprocal_rank → 1 / (k + rank)."""
        if self.transform is Transform.POWER:
            return float(max(score, 0.0) ** self.exponent)
        if self.transform is Transform.RECIPROCAL_RANK:
            if rank < 1:
                raise ValueError(f"rank is 1-based, got {rank}")
            return 1.0 / (self.k + rank)
        return float(score)


#: The objective of a policy that does not write ``spec.objective``, chosen by the
#: robustness protocol of issue 11 (``bench/robustness.py``: the best worst case over five
#: scorers, two candidate shapes and four budgets, tuned on one half of the HotpotQA
#: questions, reported on the other; README "Robustness"): each score divided by the best
#: of its level (so levels and scorers on different scales compare) and blended
#: geometrically with its z-score calibration (``zscore_weight`` 0.2: the distance to the
#: best in standard deviations, which a cosine and a BM25 scorer share), 15 % of the
#: parent's blended in, raised to the power 5 (close to score order, a strong prior), a
#: parent worth the sum of its children (a paragraph and its sentences trade fairly),
#: every takeable item worth at least 1 (``fill``); for items outside a hierarchy
#: (``flat``) 40 % of the mean of the item's document (``metadata.doc_id``) blended in and
#: each further item of a document worth half the one before; and reading order
#: (``position_decay`` 0.5, ``lead_weight`` 1): among its siblings, or its document's
#: items, the r-th in input order is worth 0.5 ** r, the first twice as much — a text
#: states what it is about first (59 % of HotpotQA's supporting facts open their
#: paragraph). Without ``hierarchy.exclusive`` its coverage is off (see :func:`_assemble`).
DEFAULT_OBJECTIVE = Objective(Transform.POWER, exponent=5.0, calibrate=Calibration.MAX,
                              calibrate_within=CalibrationGroup.LEVEL, inherit=0.15, coverage=True, fill=True,
                              document_prior=0.4, document_score=DocumentScore.MEAN, document_decay=0.5,
                              document_scope=DocumentScope.FLAT, zscore_weight=0.2, position_decay=0.5,
                              lead_weight=1.0)
#: The default before this session's reading-order and z-score steps (issue 11, second study).
PREVIOUS_DEFAULT_OBJECTIVE = Objective(Transform.POWER, exponent=6.0, calibrate=Calibration.MAX,
                                       calibrate_within=CalibrationGroup.LEVEL, inherit=0.15, coverage=True,
                                       fill=True, document_prior=0.3, document_score=DocumentScore.MEAN,
                                       document_decay=0.7, document_scope=DocumentScope.FLAT)
#: The sum of raw relevance scores (the seed's objective): ``Objective(Transform.IDENTITY)``.
PLAIN_IDENTITY = Objective(Transform.IDENTITY)
#: The default objective before issue 11 (score / best active score, pooled, squared): ``Objective()``.
POWER2_POOLED = Objective()


@dataclass(frozen=True, slots=True)
class SolverSettings:
    """Exact-solver knobs. Determinism needs fixed ``workers`` and ``seed``."""

    time_limit_s: float = 2.0
    workers: int = 1
    seed: int = 0
    fallback: Fallback = Fallback.GREEDY
    relative_gap: float = 0.0
    log: SolverLog = SolverLog.HASH
    time_limit_scope: TimeLimitScope = TimeLimitScope.SOLVE


@dataclass(frozen=True, slots=True)
class Rotate:
    """When the active audit segment is closed and a new one begun (``None``: no limit).
    See :mod:`engine.audit.segments`."""

    max_bytes: int | None = None
    max_records: int | None = None


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """Where decisions are logged (``None``: not logged), whether content is kept, the
    file holding the secret that keys the digests of content not kept (``secret_file``;
    the ``CTXBUDGET_AUDIT_SECRET`` variable wins), the metadata keys and request labels
    (globs) whose values are written masked (see :mod:`engine.audit.privacy`), whether
    ``pack``'s query is kept as text (``store_query``) and the signing key's file
    (``signing_key``; ``CTXBUDGET_AUDIT_KEY`` wins). Unset optional fields stay out of
    the effective policy, so adding them left every earlier digest unchanged."""

    log: str | None = None
    store_content: bool = False
    secret_file: str | None = None
    mask: tuple[str, ...] = ()
    rotate: Rotate | None = None
    retention_days: int | None = None
    allow_short_retention: bool | None = None
    #: ``pack``'s query kept as text (``None``: as ``store_content``).
    store_query: bool | None = None
    #: The Ed25519 key that signs the log's checkpoints (``CTXBUDGET_AUDIT_KEY`` wins).
    signing_key: str | None = None

    @property
    def keeps_query(self) -> bool:
        """Whether a ``pack`` query is recorded as text (else as its keyed digest)."""
        return self.store_content if self.store_query is None else self.store_query


@dataclass(frozen=True, slots=True)
class CandidateDefaults:
    """``spec.candidates``: what an item may leave out. ``default_score``: the relevance
    of an item that arrives without one (a framework document with no score); without
    it a missing score is an error (:mod:`engine.integrations`)."""

    default_score: float | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """Input size guards."""

    max_candidates: int = 200_000
    max_item_bytes: int = 10_485_760


@dataclass(frozen=True, slots=True)
class Policy:
    """A checked, immutable budget policy. Build it with :func:`load_policy`,
    :meth:`from_mapping` or :meth:`default`, never directly."""

    api_version: str
    kind: str
    name: str
    product: str | None
    revision: str
    owner: str | None
    description: str | None
    tokenizer: str
    budget: Budget
    min_relevance: float
    levels: tuple[LevelRule, ...]
    custom_levels: tuple[str, ...]
    sources: SourceRule | None
    pinned: tuple[Matcher, ...]
    blocked: tuple[Matcher, ...]
    hierarchy: Hierarchy
    objective: Objective
    strategy: BudgetStrategy
    solver: SolverSettings
    ordering: Ordering
    audit: AuditSettings
    limits: Limits
    duplicates: DuplicateRule | None
    candidates: CandidateDefaults | None
    file: str | None
    effective: Mapping[str, Any]
    digest: str
    locations: Mapping[str, Location]

    def __hash__(self) -> int:
        # The generated hash would fail on the mapping fields; the digest identifies the
        # content (equality still compares every field).
        return hash((self.digest, self.file))

    def location_of(self, path: str) -> Location | None:
        """Where ``path`` (or its nearest located ancestor) is written; the bare file
        when nothing is located; ``None`` for a policy not read from a file."""
        return nearest_location(self.locations, path, self.file)

    def level(self, name: str) -> LevelRule | None:
        """The rule of level ``name``, or ``None`` when the policy sets none."""
        return next((rule for rule in self.levels if rule.name == name), None)

    @property
    def known_levels(self) -> tuple[str, ...]:
        """Built-in level names followed by ``custom_levels``."""
        return BUILTIN_LEVELS + tuple(name for name in self.custom_levels if name not in BUILTIN_LEVELS)

    def to_dict(self) -> dict[str, Any]:
        """A plain, mutable deep copy of :attr:`effective` (JSON-ready)."""
        out: dict[str, Any] = thaw(self.effective)
        return out

    @classmethod
    def from_record(cls, effective: Any, *, file: str | None = None) -> Policy:
        """The Policy an audit record's ``policy.effective`` describes.

        A record spells out every key its engine knew, so a key missing from it did not
        exist yet when the record was written: it is read as the value that reproduces
        what that engine did (:data:`LEGACY_VALUES`), never as today's default.
        ``file``: the record's ``policy.file``, where a tokenizer path in the policy
        (``name@path``) is resolved from (the digest does not depend on it).

        Built once per distinct mapping (a replay reads many records of few policies):
        the same JSON object, keys in any order, gives the same immutable Policy."""
        file = file if isinstance(file, str) and file else None
        try:
            key = json.dumps([effective, file], sort_keys=True, allow_nan=False)
        except (TypeError, ValueError):  # not plain JSON (a frozen mapping): not cached
            return cls.from_mapping(with_legacy_values(effective), file=file)
        policy = _RECORD_POLICIES.get(key)
        if policy is None:
            policy = cls.from_mapping(with_legacy_values(effective), file=file)  # an invalid one raises, uncached
            _RECORD_POLICIES[key] = policy
            if len(_RECORD_POLICIES) > RECORD_POLICIES_KEPT:
                del _RECORD_POLICIES[next(iter(_RECORD_POLICIES))]
        return policy

    @classmethod
    def from_mapping(
        cls, data: Any, *, file: str | None = None, locations: Mapping[str, Location] | None = None
    ) -> Policy:
        """Validate a policy mapping (schema, then semantic checks) and build the Policy.

        ``data`` must not contain ``extends`` (only :func:`load_policy` can resolve it);
        a frozen mapping such as another policy's :attr:`effective` is accepted.
        Raises one :class:`PolicyError` with every issue found by the failing stage."""
        data = thaw(data) if isinstance(data, Mapping) else data
        locs = MappingProxyType(dict(locations or {}))
        validate_policy(data, locations=locs, file=file)
        if "extends" in data:
            raise PolicyError(
                "policy.extends_unresolved",
                "extends is resolved only when reading a file; use load_policy(path)",
                path="$.extends",
                location=nearest_location(locs, "$.extends", file),
            )
        return _assemble(_parts_from_mapping(data), file, locs, raw_spec=data["spec"])

    @classmethod
    def default(cls, max_tokens: int, **overrides: Any) -> Policy:
        """A policy without a file: every default, ``budget.max_tokens = max_tokens``,
        and ``overrides`` as for :meth:`replace`.

        No schema validation (the values are typed); the semantic checks still run.
        Results are cached per arguments, so the hot path pays for this once."""
        changes = tuple(sorted(overrides.items()))
        # The types are part of the cache key: 10 == 10.0 == True, but only 10 is valid.
        key = (max_tokens, changes, (type(max_tokens), *(type(value) for _, value in changes)))
        try:
            hash(key)
        except TypeError:  # e.g. levels=[...]: fine, just not cached
            return _default_policy(max_tokens, changes)
        return _cached_default(*key)

    def replace(self, **changes: Any) -> Policy:
        """A copy with ``changes``, its ``effective`` mapping and ``digest`` recomputed
        (``dataclasses.replace`` would leave them stale) and the semantic checks re-run.

        Keys are Policy field names (``strategy="greedy"`` or ``BudgetStrategy.GREEDY``,
        ``min_relevance=0.3``, ``levels=(LevelRule(...),)``, ``budget=Budget(...)``) or
        Budget field names (``max_tokens=...``, ``separator=""``), which change the
        budget. ``file`` and ``locations`` are kept."""
        parts = {name: getattr(self, name) for name in _DEFAULT_PARTS}
        return _rebuild(parts, tuple(changes.items()), self.file, self.locations)


# --------------------------------------------------------------------------- building


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _matchers(items: list[dict[str, Any]], base: str) -> tuple[Matcher, ...]:
    out = []
    for index, item in enumerate(items):
        kind = next(key for key in ("id", "glob", "metadata") if key in item)
        meta = tuple(sorted(item["metadata"].items())) if kind == "metadata" else ()
        out.append(Matcher(kind, item.get("id"), item.get("glob"), meta, item.get("reason"), child_path(base, index),
                           bool(item.get("required", True))))
    return tuple(out)


def _objective(obj: Mapping[str, Any]) -> Objective:
    """A written ``spec.objective``: each key it leaves out takes the base value (the
    :class:`Objective` field default), not :data:`DEFAULT_OBJECTIVE`'s."""
    base = Objective()
    return Objective(
        Transform(obj.get("transform", base.transform.value)), float(obj.get("exponent", base.exponent)),
        int(obj.get("k", base.k)), Calibration(obj.get("calibrate", base.calibrate.value)),
        CalibrationGroup(obj.get("calibrate_within", base.calibrate_within.value)),
        float(obj.get("inherit", base.inherit)), bool(obj.get("coverage", base.coverage)),
        tuple(sorted((str(k), float(w)) for k, w in obj.get("level_weights", {}).items())),
        bool(obj.get("fill", base.fill)),
        float(obj.get("document_prior", base.document_prior)),
        DocumentScore(obj.get("document_score", base.document_score.value)),
        float(obj.get("document_decay", base.document_decay)),
        DocumentScope(obj.get("document_scope", base.document_scope.value)),
        float(obj.get("zscore_weight", base.zscore_weight)),
        float(obj.get("position_decay", base.position_decay)),
        float(obj.get("lead_weight", base.lead_weight)),
    )


def _parts_from_mapping(data: Mapping[str, Any]) -> dict[str, Any]:
    """Policy constructor arguments (all but file/effective/digest/locations) from a
    schema-valid mapping, defaults filled in. Integer fields go through ``int`` because
    YAML 1.2 reads ``8e3`` as the float 8000.0, which the schema accepts as an integer."""
    meta, spec = data["metadata"], data["spec"]
    b, src, dup, cand = spec["budget"], spec.get("sources"), spec.get("duplicates"), spec.get("candidates")
    hier, obj = spec.get("hierarchy", {}), spec.get("objective", {})
    solver, audit, limits = spec.get("solver", {}), spec.get("audit", {}), spec.get("limits", {})
    return {
        "api_version": data["apiVersion"], "kind": data["kind"], "name": meta["name"],
        "product": meta.get("product"), "revision": meta["revision"], "owner": meta.get("owner"),
        "description": meta.get("description"), "tokenizer": spec.get("tokenizer", "cl100k_base"),
        "budget": Budget(
            _int(b.get("max_tokens")), _int(b.get("context_window")), int(b.get("reserve_output", 0)),
            int(b.get("reserve_prompt", 0)), b.get("template", "{content}"), b.get("separator", "\n\n"),
            CountMode(b.get("counts", "max")),
            None if "message_overhead" not in b else MessageOverhead(
                int(b["message_overhead"].get("per_item_tokens", 0)),
                int(b["message_overhead"].get("per_request_tokens", 0))),
        ),
        "min_relevance": float(spec.get("min_relevance", 0.0)),
        "levels": tuple(
            LevelRule(
                name, int(rule.get("min_items", 0)), _int(rule.get("max_items")), int(rule.get("min_tokens", 0)),
                _int(rule.get("max_tokens")), _float(rule.get("share")), _float(rule.get("min_relevance")),
            )
            for name, rule in sorted(spec.get("levels", {}).items())
        ),
        "custom_levels": tuple(spec.get("custom_levels", ())),
        "sources": None if src is None else SourceRule(
            GroupBy(src["group_by"]), src.get("separator", "#"), src.get("field"),
            _int(src.get("max_items_per_source")), _int(src.get("max_tokens_per_source")),
        ),
        "pinned": _matchers(spec.get("pinned", []), "$.spec.pinned"),
        "blocked": _matchers(spec.get("blocked", []), "$.spec.blocked"),
        "hierarchy": Hierarchy(bool(hier.get("exclusive", True)), _float(hier.get("prefer_parent_ratio"))),
        "objective": DEFAULT_OBJECTIVE if "objective" not in spec else _objective(obj),
        "strategy": BudgetStrategy(spec.get("strategy", "optimal")),
        "solver": SolverSettings(
            float(solver.get("time_limit_s", 2.0)), int(solver.get("workers", 1)), int(solver.get("seed", 0)),
            Fallback(solver.get("fallback", "greedy")), float(solver.get("relative_gap", 0.0)),
            SolverLog(solver.get("log", "hash")), TimeLimitScope(solver.get("time_limit_scope", "solve")),
        ),
        "ordering": Ordering(spec.get("ordering", "relevance")),
        "audit": AuditSettings(audit.get("log"), bool(audit.get("store_content", False)),
                               audit.get("secret_file"), tuple(audit.get("mask", ())),
                               None if "rotate" not in audit else Rotate(
                                   audit["rotate"].get("max_bytes"), audit["rotate"].get("max_records")),
                               audit.get("retention_days"), audit.get("allow_short_retention"),
                               store_query=audit.get("store_query"),
                               signing_key=audit.get("signing_key")),
        "limits": Limits(int(limits.get("max_candidates", 200_000)), int(limits.get("max_item_bytes", 10_485_760))),
        "duplicates": None if dup is None else DuplicateRule(
            float(dup.get("threshold", 0.8)), Measure(dup.get("measure", "jaccard")), int(dup.get("shingle", 3))),
        "candidates": None if cand is None else CandidateDefaults(_float(cand.get("default_score"))),
    }


def _fields(part: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A dataclass part as its YAML mapping: enums as their strings, ``None`` left out."""
    values = {f.name: getattr(part, f.name) for f in dataclasses.fields(part) if f.name not in skip}
    return {name: _plain(value) for name, value in values.items() if value is not None}


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _normalized(p: Mapping[str, Any]) -> dict[str, Any]:
    """The effective mapping of Policy parts ``p``: the YAML form with every default."""
    spec: dict[str, Any] = {
        "tokenizer": p["tokenizer"],
        "budget": _fields(p["budget"], skip=("message_overhead",)),
        "min_relevance": p["min_relevance"],
        "levels": {rule.name: _fields(rule, skip=("name",)) for rule in p["levels"]},
        "custom_levels": list(p["custom_levels"]),
        # Pins spell out ``required`` (every default filled in); blocked entries have none.
        "pinned": [{**m.to_mapping(), "required": m.required} for m in p["pinned"]],
        "blocked": [m.to_mapping() for m in p["blocked"]],
        **{name: _fields(p[name]) for name in ("hierarchy", "solver", "audit", "limits")},
        "objective": p["objective"].to_mapping(),
        "strategy": p["strategy"].value,
        "ordering": p["ordering"].value,
    }
    if p["sources"] is not None:
        spec["sources"] = _fields(p["sources"])
    # Present only when set, so policies without chat overhead keep their digests.
    if p["budget"].message_overhead is not None:
        spec["budget"]["message_overhead"] = _fields(p["budget"].message_overhead)
    # Present only when set, so policies without the rule keep their digests.
    if p["duplicates"] is not None:
        spec["duplicates"] = _fields(p["duplicates"])
    if p["candidates"] is not None:  # likewise
        spec["candidates"] = _fields(p["candidates"])
    # An empty mask is left out, so policies that mask nothing keep their digests.
    spec["audit"]["mask"] = list(spec["audit"].get("mask", ()))
    if not spec["audit"]["mask"]:
        del spec["audit"]["mask"]
    # Rotation and retention are written only when set, so older policies keep their digests.
    if p["audit"].rotate is not None:
        spec["audit"]["rotate"] = _fields(p["audit"].rotate)
    metadata = {key: p[key] for key in ("name", "product", "revision", "owner", "description") if p[key] is not None}
    return {"apiVersion": p["api_version"], "kind": p["kind"], "metadata": metadata, "spec": spec}


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """A plain dict/list deep copy of a frozen mapping (e.g. :attr:`Policy.effective`)."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(item) for item in value]
    return value


def _assemble(
    parts: dict[str, Any],
    file: str | None,
    locations: Mapping[str, Location],
    raw_spec: Mapping[str, Any] | None = None,
) -> Policy:
    """The Policy of ``parts`` once its effective mapping passes the semantic checks.

    The default objective's ``coverage`` needs ``hierarchy.exclusive`` (a parent worth its
    children's sum, taken with them, would count them twice): a policy that turns the rule
    off and leaves the objective alone gets the default without coverage, so the effective
    policy, the values and the verifier agree. A written ``coverage: true`` without the
    rule stays an error (``policy.semantic.coverage_needs_exclusive``)."""
    if parts["objective"] == DEFAULT_OBJECTIVE and not parts["hierarchy"].exclusive:
        parts = dict(parts, objective=dataclasses.replace(parts["objective"], coverage=False))
    effective = _normalized(parts)
    issues = semantic_issues(effective, raw_spec=raw_spec, locations=locations, file=file)
    if issues:
        raise gather_issues(issues)
    return Policy(
        **parts, file=file, effective=_freeze(effective), digest=canonical_digest(effective), locations=locations
    )


# --------------------------------------------------------------------------- defaults

_DEFAULT_PARTS: dict[str, Any] = {
    "api_version": API_VERSION, "kind": KIND, "name": "default", "product": None, "revision": "0",
    "owner": None, "description": None, "tokenizer": "cl100k_base", "budget": Budget(), "min_relevance": 0.0,
    "levels": (), "custom_levels": (), "sources": None, "pinned": (), "blocked": (), "hierarchy": Hierarchy(),
    "objective": DEFAULT_OBJECTIVE, "strategy": BudgetStrategy.OPTIMAL, "solver": SolverSettings(),
    "ordering": Ordering.RELEVANCE, "audit": AuditSettings(), "limits": Limits(), "duplicates": None,
    "candidates": None,
}
_ENUM_OVERRIDES: dict[str, type[Enum]] = {"strategy": BudgetStrategy, "ordering": Ordering, "counts": CountMode}
_BUDGET_FIELDS = tuple(f.name for f in dataclasses.fields(Budget))
_SETTINGS = tuple(name for name in _DEFAULT_PARTS if name not in ("api_version", "kind")) + _BUDGET_FIELDS


def _override(name: str, value: Any) -> Any:
    """A value for :meth:`Policy.replace` / :meth:`Policy.default`, coerced and checked."""
    if name not in _SETTINGS:
        match = suggest(name, _SETTINGS)
        hint = f"; did you mean {match!r}?" if match else ""
        raise PolicyError("policy.unknown_field", f"unknown policy setting {name!r}{hint}", path="$")
    if name in _ENUM_OVERRIDES:
        enum = _ENUM_OVERRIDES[name]
        try:
            return enum(value.value if isinstance(value, Enum) else value)
        except ValueError:
            choices = ", ".join(member.value for member in enum)
            message = f"{name} must be one of: {choices}; got {value!r}"
            where = f"$.spec.budget.{name}" if name in _BUDGET_FIELDS else f"$.spec.{name}"
            raise PolicyError("policy.bad_value", message, path=where) from None
    if name == "min_relevance":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            message = f"min_relevance must be a number from 0 to 1; got {value!r}"
            raise PolicyError("policy.out_of_range", message, path="$.spec.min_relevance")
        return float(value)
    if name == "levels":
        return tuple(sorted(value, key=lambda rule: rule.name))
    if name in ("custom_levels", "pinned", "blocked"):
        return tuple(value)
    return value


def _default_policy(max_tokens: Any, overrides: tuple[tuple[str, Any], ...]) -> Policy:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= 1_000_000_000:
        message = f"max_tokens must be an integer from 1 to 1000000000; got {max_tokens!r}"
        raise PolicyError("policy.out_of_range", message, path="$.spec.budget.max_tokens")
    return _rebuild(dict(_DEFAULT_PARTS, budget=Budget(max_tokens=max_tokens)), overrides, None, MappingProxyType({}))


def _rebuild(parts: dict[str, Any], changes: tuple[tuple[str, Any], ...], file: str | None,
             locations: Mapping[str, Location]) -> Policy:
    budget_changes = {}
    for name, value in changes:
        if name in _BUDGET_FIELDS:
            budget_changes[name] = _override(name, value)
        else:
            parts[name] = _override(name, value)
    if budget_changes:
        parts["budget"] = dataclasses.replace(parts["budget"], **budget_changes)
    return _assemble(parts, file, locations)


@lru_cache(maxsize=256)
def _cached_default(max_tokens: Any, changes: tuple[tuple[str, Any], ...], _types: tuple[type, ...]) -> Policy:
    return _default_policy(max_tokens, changes)


# --------------------------------------------------------------------------- files


def load_policy(path: str | Path, *, max_bytes: int = MAX_POLICY_BYTES) -> Policy:
    """Read a policy file, resolve ``extends``, validate, check and build the Policy.

    Locations name each value's own file (a base policy's values point into the base
    file). Raises :class:`PolicyError` (load, ``policy.extends_*``, schema or
    ``policy.semantic.*`` codes), each stage reporting all of its issues."""
    loaded = resolve_extends(path, max_bytes=max_bytes)
    return Policy.from_mapping(loaded.data, file=loaded.file, locations=loaded.locations)


# --------------------------------------------------------------------------- rendering


def render_policy(policy: Policy) -> str:
    """The effective policy as YAML (sorted keys, every default spelled out), then a
    ``# digest: sha256:...`` line. Same policy, same bytes; loading the output back
    gives a policy with the same digest."""
    return f"{dump_yaml(policy.to_dict())}# digest: {policy.digest}\n"


#: Keys added to the effective policy after records were first written, each with the
#: value under which a record written before it was decided (paths from the top).
LEGACY_VALUES: Mapping[tuple[str, ...], Any] = MappingProxyType({
    ("spec", "objective", "calibrate"): "max",
    ("spec", "objective", "calibrate_within"): "all",
    ("spec", "objective", "inherit"): 0.0,
    ("spec", "objective", "coverage"): False,
    ("spec", "objective", "level_weights"): {},
    ("spec", "objective", "fill"): False,
    # Before it, the time limit covered the whole call, counting included.
    ("spec", "solver", "time_limit_scope"): "call",
})


#: Policies :meth:`Policy.from_record` keeps, by the JSON of their effective mapping.
RECORD_POLICIES_KEPT = 64
_RECORD_POLICIES: dict[str, Policy] = {}


def with_legacy_values(effective: Any) -> Any:
    """``effective`` with each missing :data:`LEGACY_VALUES` key filled in, where its
    parent object exists (a copy; anything not a mapping is returned as is)."""
    if not isinstance(effective, Mapping):
        return effective
    out = thaw(effective)
    for path, value in LEGACY_VALUES.items():
        node = out
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] not in node:
            node[path[-1]] = thaw(value) if isinstance(value, Mapping) else value
    return out
