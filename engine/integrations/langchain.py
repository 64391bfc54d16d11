"""LangChain: fill the context by token budget instead of top-k (``pip install 'ctxbudget[langchain]'``).

:class:`BudgetCompressor` is a ``langchain_core`` ``BaseDocumentCompressor``: put it
wherever a compressor goes (``ContextualCompressionRetriever(base_compressor=...)``) or
call ``compress_documents(documents, query)``; :meth:`BudgetCompressor.as_runnable`
is the same step as a ``Runnable`` for LCEL chains.

What goes in: ``Document`` objects, or ``(Document, score)`` pairs as
``similarity_search_with_score`` returns them. The score is the pair's, else
``metadata["relevance_score"]`` (what LangChain's rerankers write), else the policy's
``spec.candidates.default_score``, else ``CandidateError`` ``candidate.missing_score``.
``Document.id`` may be ``None`` (the copy returned gets the id it was decided under,
see :func:`engine.integrations.core.default_ids`);
``metadata["parent_id"]`` links a chunk to its parent for the hierarchy rule and
``metadata["level"]`` names its level (keys configurable).

What comes out: the included documents, in the policy's context order, each a copy
whose metadata carries ``ctxbudget_decision_id``, ``ctxbudget_decision``,
``ctxbudget_reason`` and ``ctxbudget_tokens``; :meth:`BudgetCompressor.decide` returns
the excluded ones too. The inputs are not modified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.runnables import RunnableLambda
from pydantic import ConfigDict, PrivateAttr

from ..candidates import DEFAULT_LEVEL
from ..errors import CandidateError
from .core import AuditLogLike, Item, Outcome, PolicyLike, Selector

SCORE_HINT = ("pass (Document, score) pairs (similarity_search_with_score) or set "
              "metadata['relevance_score']")


@dataclass(frozen=True, slots=True)
class Decision:
    """``documents``: the included ones in context order; ``annotated``: every input
    document (copied, annotated) in input order; ``outcome``: the engine's decision."""

    documents: list[Document]
    annotated: list[Document]
    outcome: Outcome


class BudgetCompressor(BaseDocumentCompressor):
    """Selects retrieved documents under a ctxbudget policy (see the module docstring).

    Args:
        policy: a :class:`~engine.policy.Policy` or the path of a policy file.
        audit_log: an ``AuditLog`` or a path; ``None`` (default): the policy's
            ``audit.log`` when it names one; ``False``: no record.
        score_key / parent_key / level_key: the metadata keys read for the score, the
            parent's id (e.g. ``"doc_id"`` under a ParentDocumentRetriever) and the level.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    policy: Any
    audit_log: Any = None
    score_key: str = "relevance_score"
    parent_key: str = "parent_id"
    level_key: str = "level"
    _selector: Selector = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        audit_log: AuditLogLike = self.audit_log
        policy: PolicyLike = self.policy
        self._selector = Selector(policy, audit_log=audit_log, score_hint=SCORE_HINT)

    @property
    def selector(self) -> Selector:
        return self._selector

    def _item(self, index: int, entry: Any) -> tuple[Document, Item]:
        score: Any = None
        if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], Document):
            entry, score = entry
        if not isinstance(entry, Document):
            raise CandidateError("candidate.bad_type",
                                 f"item #{index}: expected a Document or a (Document, score) pair, "
                                 f"got {type(entry).__name__}", path=f"$[{index}]")
        meta = entry.metadata
        if score is None:
            score = meta.get(self.score_key)
        parent = meta.get(self.parent_key)
        return entry, Item(source_id=entry.id, content=entry.page_content, score=score,
                           level=meta.get(self.level_key, DEFAULT_LEVEL),
                           parent_id=parent if parent is None else str(parent), metadata=meta)

    def decide(self, documents: Sequence[Any], query: str | None = None) -> Decision:
        """Decide ``documents`` (``Document``s or ``(Document, score)`` pairs)."""
        pairs = [self._item(i, d) for i, d in enumerate(documents)]
        outcome = self._selector.select([item for _, item in pairs], query)
        # A document without an id gets the one it was decided (and recorded) under.
        annotated = [doc.model_copy(update={"id": doc.id or note.source_id,
                                            "metadata": {**doc.metadata, **note.as_metadata()}})
                     for (doc, _), note in zip(pairs, outcome.annotations)]
        return Decision([annotated[i] for i in outcome.context_order], annotated, outcome)

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Callbacks | None = None) -> Sequence[Document]:
        """The included documents, in context order (``BaseDocumentCompressor``)."""
        return self.decide(documents, query).documents

    def as_runnable(self) -> RunnableLambda[Any, list[Document]]:
        """This compressor as a ``Runnable``. Its input is a list of documents or
        ``(Document, score)`` pairs, or a mapping ``{"documents": [...], "query": "..."}``
        (e.g. ``{"documents": retriever, "query": RunnablePassthrough()} | runnable``)."""
        def budget(value: Any) -> list[Document]:
            if isinstance(value, Mapping):
                return self.decide(value["documents"], value.get("query")).documents
            return self.decide(value).documents

        return RunnableLambda(budget, name="ctxbudget")
