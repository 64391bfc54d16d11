"""The service's request and response shapes (pydantic): what the OpenAPI document
publishes and what every answer is checked against before it is sent."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Candidate", "DecideRequest", "Decision", "ErrorBody", "Health", "Item", "PolicyInfo", "PolicyList",
           "PolicyRef", "Solver", "Strategy"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Candidate(_Closed):
    """One retrieved chunk (``schemas/candidates.schema.json``); ``token_count`` may be
    left out: the policy's tokenizer counts it."""

    source_id: str = Field(min_length=1)
    content: str
    relevance_score: float
    token_count: int | None = Field(default=None, ge=0)
    level: str | None = Field(default=None, min_length=1)
    metadata: dict[str, Any] | None = None
    parent_id: str | None = None


class DecideRequest(_Closed):
    candidates: list[Candidate]
    request_id: str | None = Field(default=None, description="the caller's id (trace or ticket id); "
                                   "generated and recorded as generated when left out")
    requested_by: str | None = None
    labels: dict[str, str] | None = None
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
