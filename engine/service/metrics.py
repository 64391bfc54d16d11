"""Prometheus metrics of one service (a registry of its own, so several apps in one
process, as in the tests, never share counters).

- ``ctxbudget_decisions_total{product, outcome}``: outcome is the solver verdict of a
  decision that was answered (``optimal``, ``feasible``, ``trivial``, ``heuristic``,
  ``fallback``), ``infeasible``, or ``error`` (any other engine error).
- ``ctxbudget_decision_seconds{product}``: wall time of the decide path (allocate, audit
  record, append and fsync).
- ``ctxbudget_stage_seconds{product, stage}``: the allocation's own stage timings.
- ``ctxbudget_fallbacks_total{product}``, ``ctxbudget_infeasible_total{product}``.
- ``ctxbudget_solver_gap{product}``: the relative optimality gap of each answered
  decision whose solver reports one (0: proven optimal).
- ``ctxbudget_audit_append_seconds{product}``: from handing the record to the log to its
  fsync (waiting for the group's batch included), for decisions and infeasible records.
- ``ctxbudget_policy_valid{product}``: 1 when the product's latest file is the one
  served, 0 when a newer text was refused; ``ctxbudget_policy_reloads_total``.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_GAP_BUCKETS = (0.0, 1e-6, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
#: Latency buckets (seconds): fine between 1 and 100 ms, where decisions fall, so that
#: a p50 or p99 read from them (histogram_quantile) is within a few ms.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075,
            0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter("ctxbudget_decisions", "Decisions answered, by product and outcome",
                                 ["product", "outcome"], registry=r)
        self.latency = Histogram("ctxbudget_decision_seconds", "Decide path wall time (allocate, "
                                 "record, append, fsync)", ["product"], buckets=_BUCKETS, registry=r)
        self.stages = Histogram("ctxbudget_stage_seconds", "Allocation stage timings", ["product", "stage"],
                                buckets=_BUCKETS, registry=r)
        self.fallbacks = Counter("ctxbudget_fallbacks", "Decisions the greedy fallback answered",
                                 ["product"], registry=r)
        self.infeasible = Counter("ctxbudget_infeasible", "Decisions whose hard rules cannot all hold",
                                  ["product"], registry=r)
        self.policy_valid = Gauge("ctxbudget_policy_valid", "1: the product's latest policy file is served; "
                                  "0: a newer text was refused", ["product"], registry=r)
        self.reloads = Counter("ctxbudget_policy_reloads", "Reloads of the policy folder", registry=r)
        self.gaps = Histogram("ctxbudget_solver_gap", "Relative optimality gap of answered decisions "
                              "(0: proven optimal)", ["product"], buckets=_GAP_BUCKETS, registry=r)
        self.appends = Histogram("ctxbudget_audit_append_seconds", "Audit record append to fsync "
                                 "(group commit wait included)", ["product"], buckets=_BUCKETS, registry=r)

    def decided(self, product: str, outcome: str, seconds: float, fallback: bool,
                stages: Mapping[str, float], gap: float | None = None) -> None:
        self.decisions.labels(product, outcome).inc()
        self.latency.labels(product).observe(seconds)
        if fallback:
            self.fallbacks.labels(product).inc()
        if gap is not None:
            self.gaps.labels(product).observe(gap)
        for stage, value in stages.items():
            self.stages.labels(product, stage).observe(value)

    def failed(self, product: str, outcome: str, seconds: float) -> None:
        self.decisions.labels(product, outcome).inc()
        self.latency.labels(product).observe(seconds)
        if outcome == "infeasible":
            self.infeasible.labels(product).inc()

    def policies(self, valid: Mapping[str, bool]) -> None:
        for product, ok in valid.items():
            self.policy_valid.labels(product).set(1 if ok else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
