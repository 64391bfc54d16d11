"""Semantic checks: the cross-field rules of a policy that a JSON Schema cannot express.

In: a policy's *effective* mapping (schema-valid, every default filled in; see
:mod:`engine.policy`), optionally the spec as written (to see what was left out) and
the locations of its JSON paths.

Out: a tuple of :class:`~engine.errors.PolicyError` with codes ``policy.semantic.*``,
in policy order, each located at the nearest written ancestor of its path (empty when
every rule holds). Nothing is raised here; :mod:`engine.policy` gathers the issues.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from .errors import Location, PolicyError
from .load import child_path, nearest_location
from .schema import BUILTIN_LEVELS, matcher_label, suggest
from .tokens import tokenizer_name_problem

TEMPLATE_FIELDS = ("source_id", "content", "level")
"""The only placeholders a ``budget.template`` may use."""


def semantic_issues(
    effective: Mapping[str, Any],
    *,
    raw_spec: Mapping[str, Any] | None = None,
    locations: Mapping[str, Location] | None = None,
    file: str | None = None,
) -> tuple[PolicyError, ...]:
    """The cross-field rules of a schema-valid policy, in policy order (empty when all
    hold). ``effective`` has every default filled in; ``raw_spec`` (the spec as written)
    is needed only to see what was left out."""
    issues: list[PolicyError] = []
    locs = locations or {}

    def add(code: str, path: str, message: str) -> None:
        location = nearest_location(locs, path, file)
        issues.append(PolicyError(f"policy.semantic.{code}", message, path=path, location=location))

    spec = effective["spec"]
    bad_tokenizer = tokenizer_name_problem(spec["tokenizer"])
    if bad_tokenizer:
        add("unknown_tokenizer", "$.spec.tokenizer", bad_tokenizer)
    limit = _budget_limit(spec["budget"], add)
    _check_overhead(spec["budget"], limit, add)
    _check_template(spec["budget"]["template"], add)
    _check_levels(spec, limit, add)
    hierarchy = spec["hierarchy"]
    if hierarchy.get("prefer_parent_ratio") is not None and not hierarchy["exclusive"]:
        add("prefer_parent_needs_exclusive", "$.spec.hierarchy.prefer_parent_ratio",
            "prefer_parent_ratio needs hierarchy.exclusive: true; set it, or remove prefer_parent_ratio")
    default_score = spec.get("candidates", {}).get("default_score")
    if default_score is not None and default_score < spec["min_relevance"]:
        add("default_score_below_min_relevance", "$.spec.candidates.default_score",
            f"default_score {default_score} is below min_relevance {spec['min_relevance']}: every item "
            "without a score would be excluded; raise default_score to at least min_relevance, or remove it")
    sources = spec.get("sources")
    if sources is not None and sources["group_by"] == "metadata" and sources.get("field") is None:
        add("group_field_missing", "$.spec.sources", "group_by: metadata needs `field:` naming the metadata "
            "key to group by, e.g. field: vendor")
    for b_index, blocked in enumerate(spec["blocked"]):
        for p_index, pinned in enumerate(spec["pinned"]):
            if _same_selector(pinned, blocked):
                add("pinned_and_blocked", f"$.spec.blocked[{b_index}]", f"{matcher_label(*_selector(blocked))} is "
                    f"both pinned ($.spec.pinned[{p_index}]) and blocked; remove it from one of the lists")
    objective = (raw_spec or {}).get("objective", {})
    if objective.get("transform") == "power" and "exponent" not in objective:
        add("power_exponent", "$.spec.objective", "transform: power needs an exponent > 0; add "
            "objective.exponent, e.g. 2.0")
    _check_objective(spec, add)
    _check_mask(spec, add)
    _check_retention(spec, add)
    return tuple(issues)


def _check_objective(spec: Mapping[str, Any], add: Any) -> None:
    """``level_weights`` name known levels; ``coverage`` needs exclusive hierarchy (a
    parent worth its children's sum, taken together with them, would count them twice)."""
    objective = spec.get("objective", {})
    custom = list(spec["custom_levels"])
    known = list(BUILTIN_LEVELS) + [name for name in custom if name not in BUILTIN_LEVELS]
    for name in objective.get("level_weights", {}):
        if name not in known:
            match = suggest(name, known)
            guess = f"did you mean {match!r}? " if match else ""
            add("unknown_level", child_path("$.spec.objective.level_weights", name),
                f"objective.level_weights names unknown level {name!r}; {guess}known levels: "
                f"{', '.join(known)} (declare new ones in spec.custom_levels)")
    if objective.get("coverage") and not spec["hierarchy"]["exclusive"]:
        add("coverage_needs_exclusive", "$.spec.objective.coverage",
            "coverage: true values a parent at the sum of its children, so taking both would count them "
            "twice; set hierarchy.exclusive: true, or remove coverage")


#: EU AI Act Art. 19(1) and 26(6): automatically generated logs are kept for a period
#: appropriate to the purpose, of at least six months (183 days covers any six months).
MIN_RETENTION_DAYS = 183


def _check_retention(spec: Mapping[str, Any], add: Any) -> None:
    """A retention period shorter than six months needs ``allow_short_retention: true``."""
    audit = spec["audit"]
    days = audit.get("retention_days")
    if days is not None and days < MIN_RETENTION_DAYS and not audit.get("allow_short_retention"):
        add("retention_too_short", "$.spec.audit.retention_days", f"retention_days {days} is shorter "
            f"than six months: the EU AI Act (Art. 19, Art. 26(6)) requires deployers and providers "
            f"of high-risk systems to keep automatic logs at least six months; set retention_days >= "
            f"{MIN_RETENTION_DAYS}, or add allow_short_retention: true if the law that applies to you "
            "permits less")


def _rule_fields(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(metadata key, JSON path of the rule that reads it) for every rule reading metadata."""
    out: list[tuple[str, str]] = []
    sources = spec.get("sources")
    if sources is not None and sources.get("group_by") == "metadata" and sources.get("field"):
        out.append((sources["field"], "$.spec.sources.field"))
    for kind in ("pinned", "blocked"):
        for i, matcher in enumerate(spec[kind]):
            out += [(key, f"$.spec.{kind}[{i}].metadata") for key in sorted(matcher.get("metadata") or {})]
    return out


def _check_mask(spec: Mapping[str, Any], add: Any) -> None:
    """``audit.mask`` entries are globs over top-level metadata keys (fnmatch, case
    sensitive). An unclosed ``[`` would match only itself, silently masking nothing; a
    mask over a key that a rule reads would make the record unreplayable (replay would
    see the masked value, not the one the rule saw)."""
    fields = _rule_fields(spec)
    for k, pattern in enumerate(spec["audit"].get("mask", ())):
        for key, where in fields:
            if fnmatchcase(key, pattern):
                add("mask_hides_rule_field", f"$.spec.audit.mask[{k}]", f"mask {pattern!r} hides metadata "
                    f"key {key!r}, which {where} reads: a replay of the record could not apply that rule; "
                    "narrow the mask or group/match on another key")
        depth = 0
        for ch in pattern:
            depth = depth + 1 if ch == "[" else (depth - 1 if ch == "]" and depth else depth)
        if depth:
            add("mask_glob", f"$.spec.audit.mask[{k}]", f"mask {pattern!r} has an unclosed '['; close it "
                "(e.g. 'customer_[ab]*') or escape a literal bracket as '[[]'")
        elif pattern != pattern.strip():
            add("mask_glob", f"$.spec.audit.mask[{k}]", f"mask {pattern!r} has leading or trailing spaces; "
                "metadata keys are matched exactly: remove them")


def _selector(matcher: Mapping[str, Any]) -> tuple[str, Any]:
    kind = next(key for key in ("id", "glob", "metadata") if key in matcher)
    value = matcher[kind]
    return kind, (dict(value) if kind == "metadata" else value)


def _same_selector(one: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    """Whether two matchers select the same candidates (``true`` is not ``1`` here)."""
    def key(matcher: Mapping[str, Any]) -> tuple[str, Any]:
        kind, value = _selector(matcher)
        return kind, sorted((k, isinstance(v, bool), v) for k, v in value.items()) if kind == "metadata" else value
    return key(one) == key(other)


def _budget_limit(budget: Mapping[str, Any], add: Any) -> int | None:
    """The budget's token limit, or None (with an issue) when the budget is unusable."""
    max_tokens, window = budget.get("max_tokens"), budget.get("context_window")
    output, prompt = budget["reserve_output"], budget["reserve_prompt"]
    if max_tokens is None and window is None:
        add("budget_missing", "$.spec.budget", "set max_tokens (the budget itself) or context_window "
            "(the budget is then context_window minus reserve_output and reserve_prompt)")
    elif max_tokens is not None and window is not None:
        add("budget_conflict", "$.spec.budget.context_window", "max_tokens and context_window are both set; "
            "keep one — max_tokens is the budget itself, context_window minus the reserves derives it")
    elif window is not None:
        if output + prompt < window:
            return int(window - output - prompt)
        add("reserves_exceed_window", "$.spec.budget", f"reserve_output + reserve_prompt ({output} + {prompt}) "
            f"must be less than context_window ({window}); lower the reserves or raise context_window")
    elif output or prompt:
        field = "reserve_output" if output else "reserve_prompt"
        add("reserves_without_window", f"$.spec.budget.{field}", f"{field} only applies with context_window; "
            "remove it, or replace max_tokens with context_window")
    elif max_tokens is not None:
        return int(max_tokens)
    return None


def _check_overhead(budget: Mapping[str, Any], limit: int | None, add: Any) -> None:
    """The chat overhead of one item must leave room for it: per_request + per_item < limit."""
    overhead = budget.get("message_overhead")
    if overhead is None or limit is None:
        return
    one = overhead.get("per_request_tokens", 0) + overhead.get("per_item_tokens", 0)
    if one >= limit:
        add("overhead_exceeds_budget", "$.spec.budget.message_overhead",
            f"message_overhead per_request_tokens + per_item_tokens ({one}) must be less than the budget "
            f"({limit} tokens), or no item fits; lower the overhead or raise the budget")


def _check_template(template: str, add: Any) -> None:
    path = "$.spec.budget.template"
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        add("template_syntax", path, f"template has unbalanced braces ({exc}); write a literal brace as "
            "'{{' or '}}'")
        return
    names = []
    for _text, name, spec, conversion in parsed:
        if name is None:
            continue
        names.append(name)
        if name not in TEMPLATE_FIELDS:
            add("template_placeholder", path, f"unknown placeholder {{{name}}} in template; use only {{source_id}}, "
                "{content} and {level} (write a literal brace as '{{' or '}}')")
        elif spec or conversion:
            add("template_placeholder", path, f"placeholder {{{name}}} has a conversion or format spec; write it "
                f"plainly as {{{name}}}")
    # str.format also takes an empty spec ('{content:}'), which parse() does not show:
    # the template must be exactly its literal text and plain fields.
    plain = "".join(text.replace("{", "{{").replace("}", "}}") + ("" if name is None else f"{{{name}}}")
                    for text, name, _spec, _conv in parsed)
    if plain != template and all(name is None or (name in TEMPLATE_FIELDS and not spec and not conversion)
                                 for _text, name, spec, conversion in parsed):
        add("template_placeholder", path, "a placeholder has an empty format spec (e.g. {content:}); write "
            "it plainly as {content}")
    if "content" not in names:
        add("template_missing_content", path, "template has no {content}, so the items' text would never reach "
            "the prompt; add it, e.g. '[{source_id}] {content}'")


def _check_levels(spec: Mapping[str, Any], limit: int | None, add: Any) -> None:
    custom = list(spec["custom_levels"])
    for index, name in enumerate(custom):
        if name in BUILTIN_LEVELS:
            add("custom_level_builtin", f"$.spec.custom_levels[{index}]", f"{name!r} is a built-in level; remove "
                "it from custom_levels")
    known = list(BUILTIN_LEVELS) + [name for name in custom if name not in BUILTIN_LEVELS]
    levels = spec["levels"]
    for name, rule in levels.items():
        path = child_path("$.spec.levels", name)
        if name not in known:
            match = suggest(name, known)
            guess = f"did you mean {match!r}? " if match else ""
            add("unknown_level", path, f"unknown level {name!r}; {guess}known levels: {', '.join(known)} "
                "(declare new ones in spec.custom_levels)")
        for unit in ("items", "tokens"):
            low, high = rule.get(f"min_{unit}", 0), rule.get(f"max_{unit}")
            if high is not None and low > high:
                add(f"level_{unit}_range", f"{path}.min_{unit}", f"min_{unit} ({low}) is greater than "
                    f"max_{unit} ({high}); lower min_{unit} or raise max_{unit}")
    total_min = sum(rule.get("min_tokens", 0) for rule in levels.values())
    if limit is not None and total_min > limit:
        add("level_min_tokens_exceed_budget", "$.spec.levels", f"the levels' min_tokens add up to {total_min}, "
            f"more than the budget of {limit} tokens; lower them or raise the budget")
    shares = sum(rule["share"] for rule in levels.values() if rule.get("share") is not None)
    if shares > 1 + 1e-9:
        add("shares_exceed_one", "$.spec.levels", f"the levels' shares add up to {shares:g}, more than 1; "
            "lower them so they add up to at most 1")
