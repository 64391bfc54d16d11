"""LlamaIndex: fill the context by token budget instead of top-k (``pip install 'ctxbudget[llamaindex]'``).

:class:`BudgetPostprocessor` is a ``llama_index.core`` ``BaseNodePostprocessor``: pass it
in ``node_postprocessors=[...]`` of a query engine, or call ``postprocess_nodes(nodes,
query_str=...)``.

What goes in: ``NodeWithScore`` objects. The score is ``NodeWithScore.score``, else the
policy's ``spec.candidates.default_score``, else ``CandidateError``
``candidate.missing_score``. The text counted is what the LLM sees,
``node.get_content(metadata_mode=MetadataMode.LLM)`` (``metadata_mode`` to change it).
The node's PARENT relationship is its ``parent_id`` for the hierarchy rule and its
SOURCE relationship its ``doc_id`` (for ``sources: {group_by: document}``);
``metadata["level"]`` names its level (default PARAGRAPH).

Auto-merging: with ``docstore=`` (e.g. ``storage_context.docstore`` of a
``HierarchicalNodeParser`` index), the ancestors of the retrieved nodes are fetched
from it and become candidates too, scored like LlamaIndex's ``AutoMergingRetriever``
scores a merged parent (the mean score of the retrieved nodes below it). The policy's
``hierarchy.prefer_parent_ratio`` plays ``simple_ratio_thresh``, solved jointly with
the budget instead of applied greedily — counted over the parent's children that are
candidates, and reached at ``>=`` (LlamaIndex divides by all of the parent's children
and merges at ``>``).

What comes out: the included nodes, in the policy's context order, each a
``NodeWithScore`` over a copy of its node whose metadata carries
``ctxbudget_decision_id``, ``ctxbudget_decision``, ``ctxbudget_reason`` and
``ctxbudget_tokens`` (excluded from the LLM's and the embedder's view of the metadata,
so they change no count); :meth:`BudgetPostprocessor.decide` returns the excluded ones
too. The inputs are not modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import ConfigDict, PrivateAttr

from ..candidates import DEFAULT_LEVEL
from ..errors import CandidateError
from .core import META_KEYS, AuditLogLike, Item, Outcome, PolicyLike, Selector, fetch_ancestors

SCORE_HINT = "set NodeWithScore.score (a retriever does)"


@dataclass(frozen=True, slots=True)
class Decision:
    """``nodes``: the included ones in context order; ``annotated``: every candidate
    (the input nodes in input order, then the ancestors fetched from the docstore),
    copied and annotated; ``outcome``: the engine's decision."""

    nodes: list[NodeWithScore]
    annotated: list[NodeWithScore]
    outcome: Outcome


class BudgetPostprocessor(BaseNodePostprocessor):
    """Selects retrieved nodes under a ctxbudget policy (see the module docstring).

    Args:
        policy: a :class:`~engine.policy.Policy` or the path of a policy file.
        audit_log: an ``AuditLog`` or a path; ``None`` (default): the policy's
            ``audit.log`` when it names one; ``False``: no record.
        docstore: where the ancestors of retrieved nodes are fetched from (auto-merging);
            ``None``: only the nodes given are candidates.
        metadata_mode: which view of a node is counted and decided.
        level_key: the metadata key naming a node's level.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    policy: Any
    audit_log: Any = None
    docstore: Any = None
    metadata_mode: MetadataMode = MetadataMode.LLM
    level_key: str = "level"
    _selector: Selector = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        audit_log: AuditLogLike = self.audit_log
        policy: PolicyLike = self.policy
        self._selector = Selector(policy, audit_log=audit_log, score_hint=SCORE_HINT)

    @classmethod
    def class_name(cls) -> str:
        return "CtxBudgetPostprocessor"

    @property
    def selector(self) -> Selector:
        return self._selector

    def _ancestors(self, nodes: Sequence[NodeWithScore]) -> list[NodeWithScore]:
        """The ancestors of ``nodes`` in the docstore (:func:`~engine.integrations.core.fetch_ancestors`)."""
        if self.docstore is None:
            return []
        store = self.docstore

        def parent_of(nws: NodeWithScore) -> str | None:
            rel = nws.node.parent_node
            return rel.node_id if rel is not None else None

        def fetch(node_id: str) -> NodeWithScore | None:
            node = store.get_node(node_id, raise_error=False)
            return NodeWithScore(node=node) if node is not None else None

        return [NodeWithScore(node=nws.node, score=score) for nws, score in fetch_ancestors(
            nodes, node_id=lambda n: n.node.node_id, parent_id=parent_of, score=lambda n: n.score, fetch=fetch)]

    def _item(self, index: int, nws: Any) -> Item:
        if not isinstance(nws, NodeWithScore):
            raise CandidateError("candidate.bad_type",
                                 f"item #{index}: expected a NodeWithScore, got {type(nws).__name__}",
                                 path=f"$[{index}]")
        node = nws.node
        meta = dict(node.metadata)
        source = node.source_node
        if source is not None and "doc_id" not in meta:
            meta["doc_id"] = source.node_id
        parent = node.parent_node
        return Item(source_id=node.node_id, content=node.get_content(metadata_mode=self.metadata_mode),
                    score=nws.score, level=meta.get(self.level_key, DEFAULT_LEVEL),
                    parent_id=parent.node_id if parent is not None else None, metadata=meta)

    def decide(self, nodes: Sequence[NodeWithScore], query: str | None = None) -> Decision:
        """Decide ``nodes`` (and, with a docstore, their ancestors)."""
        every = [*nodes, *self._ancestors(nodes)]
        outcome = self._selector.select([self._item(i, n) for i, n in enumerate(every)], query)
        annotated = []
        for nws, note in zip(every, outcome.annotations):
            node = nws.node.model_copy()
            node.metadata = {**node.metadata, **note.as_metadata()}
            # Our keys are bookkeeping: not shown to the LLM or the embedder.
            node.excluded_llm_metadata_keys = [*node.excluded_llm_metadata_keys,
                                               *(k for k in META_KEYS if k not in node.excluded_llm_metadata_keys)]
            node.excluded_embed_metadata_keys = [*node.excluded_embed_metadata_keys,
                                                 *(k for k in META_KEYS if k not in node.excluded_embed_metadata_keys)]
            annotated.append(NodeWithScore(node=node, score=nws.score))
        return Decision([annotated[i] for i in outcome.context_order], annotated, outcome)

    def _postprocess_nodes(self, nodes: list[NodeWithScore],
                           query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        """The included nodes, in context order (``BaseNodePostprocessor``)."""
        return self.decide(nodes, query_bundle.query_str if query_bundle is not None else None).nodes
