"""The service's request and response shapes (pydantic): what the OpenAPI document
publishes. Requests are validated against them; the decide answer is built as a dict of
the :class:`Decision` shape (tests check every answer against the document)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..audit.request import MAX_BY_CHARS, MAX_ID_CHARS, MAX_LABEL_VALUE_CHARS, MAX_LABELS

__all__ = ["Candidate", "DecideRequest", "Decision", "ErrorBody", "Health", "Item", "PolicyInfo", "PolicyList",
           "PolicyRef", "Solver", "Strategy"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "1" is not a number: no coercion


class Candidate(_Closed):
    """One retrieved chunk (``schemas/candidates.schema.json``); ``token_count`` may be
    left out: the policy's tokenizer counts it."""

    source_id: str = Field(min_length=1)
    content: str
    relevance_score: float
    token_count: int | None = Field(default=None, ge=0)
    level: str | None = Field(default=None, min_length=1)
    metadata: dict[str, Any] | None = Field(default=None, description="JSON values; integers within "
                                            "±(2^53 - 1), nested at most 32 levels")
    parent_id: str | None = Field(default=None, min_length=1)


#: What engine.audit.request accepts, published so that a client can check before sending.
_NO_CONTROL = "\x00-\x1f\x7f-\x9f\u2028\u2029"
_BY = f"^[^\\s{_NO_CONTROL}](?:[^{_NO_CONTROL}]*[^\\s{_NO_CONTROL}])?$"
LabelKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-/]{0,62}$")]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE_CHARS, pattern=f"^[^{_NO_CONTROL}]*$")]


class DecideRequest(_Closed):
    candidates: list[Candidate]
    request_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:@/+=-]{1,%d}$" % MAX_ID_CHARS,
                                   description="the caller's id (trace or ticket id); generated and "
                                   "recorded as generated when left out")
    requested_by: str | None = Field(default=None, max_length=MAX_BY_CHARS, pattern=_BY,
                                     description="the user, service or team asking")
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=MAX_LABELS,
                                               json_schema_extra={"additionalProperties": False})
    query: str | None = Field(default=None, description="the question the candidates answer; recorded "
                              "as the policy's audit.store_query says")


class Item(_Closed):
    source_id: str
    tokens: int
    reason: str
    evidence: str
    rule: str | None


class Solver(_Closed):
    status: str
    objective: float | None
    best_bound: float | None
    gap: float | None


class Strategy(_Closed):
    requested: str
    used: str
    fallback_reason: str | None


class PolicyRef(_Closed):
    name: str
    revision: str
    digest: str


class Decision(_Closed):
    decision_id: str
    product: str
    policy: PolicyRef
    context: str
    context_tokens: int
    limit_tokens: int
    included: list[Item]
    excluded: list[Item]
    solver: Solver
    strategy: Strategy
    unmet: list[str]
    warnings: list[str]


class PolicyInfo(_Closed):
    product: str
    name: str
    revision: str
    digest: str
    loaded_at: str
    file: str | None
    problem: str | None = Field(description="why the latest text of the file was refused (the "
                                "revision shown is still served), or null")
    effective: dict[str, Any] | None = None


class PolicyList(_Closed):
    policies: list[PolicyInfo]


class Health(_Closed):
    status: str = Field(description="ok, or failing (with problems)")
    products: int
    problems: list[str]


class ErrorBody(_Closed):
    error: str
    code: str
    path: str
    message: str
    location: dict[str, Any] | None
    details: dict[str, Any] | None = None
    issues: list[dict[str, Any]]
