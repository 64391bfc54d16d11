"""Haystack: fill the context by token budget instead of top-k (``pip install 'ctxbudget[haystack]'``).

:class:`BudgetSelector` is a Haystack 2.x ``@component``: put it between a retriever
(or ranker) and the prompt builder, ``run(documents, query)``.

What goes in: ``Document`` objects with text ``content``. The score is ``Document.score``,
else the policy's ``spec.candidates.default_score``, else ``CandidateError``
``candidate.missing_score``. The ``HierarchicalDocumentSplitter``'s meta feeds the
hierarchy rule: ``__parent_id`` is the parent's id and ``__level`` (0 for the whole
document) picks the level from ``levels`` (default DOCUMENT, SECTION, PARAGRAPH,
SENTENCE); a document without ``__level`` has ``meta["level"]`` or PARAGRAPH.

Auto-merging: with ``document_store=`` (where the splitter's parents were written, as for
Haystack's ``AutoMergingRetriever``), the ancestors of the given documents are fetched
and become candidates too, scored by the mean score of the given documents below them;
the policy's ``hierarchy.prefer_parent_ratio`` plays ``AutoMergingRetriever``'s
``threshold``, solved jointly with the budget (counted over the children that are
candidates, reached at ``>=``).

Outputs: ``documents``, the included ones in the policy's context order; ``excluded``,
the others in input order; ``decision_id``. Every output document is a copy whose meta
carries ``ctxbudget_decision_id``, ``ctxbudget_decision``, ``ctxbudget_reason`` and
``ctxbudget_tokens``. The inputs are not modified.

Haystack itself sends usage telemetry from ``Pipeline.run`` unless
``HAYSTACK_TELEMETRY_ENABLED=False`` is set before it is imported (this module leaves
that choice to the application; the example and the tests turn it off).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.core.errors import SerializationError
from haystack.document_stores.types import DocumentStore

from ..candidates import DEFAULT_LEVEL
from ..audit.log import AuditLog
from ..errors import CandidateError
from ..policy import Policy
from ..schema import BUILTIN_LEVELS
from .core import AuditLogLike, Item, PolicyLike, Selector, fetch_ancestors

SCORE_HINT = "set Document.score (a retriever or ranker does)"


def _parent(doc: Document) -> str | None:
    parent = doc.meta.get("__parent_id")
    return parent if isinstance(parent, str) and parent else None


@component
class BudgetSelector:
    """Selects documents under a ctxbudget policy (see the module docstring).

    Args:
        policy: a :class:`~engine.policy.Policy` or the path of a policy file.
        audit_log: an ``AuditLog`` or a path; ``None`` (default): the policy's
            ``audit.log`` when it names one; ``False``: no record.
        levels: the level of ``__level`` 0, 1, 2, ...
        document_store: where the ancestors of the given documents are fetched from
            (auto-merging); ``None``: only the documents given are candidates.
    """

    def __init__(self, policy: PolicyLike, audit_log: AuditLogLike = None,
                 levels: Sequence[str] = BUILTIN_LEVELS, document_store: DocumentStore | None = None) -> None:
        self.selector = Selector(policy, audit_log=audit_log, score_hint=SCORE_HINT)
        self.policy = policy
        self.audit_log = audit_log
        self.levels = tuple(levels)
        self.document_store = document_store

    def to_dict(self) -> dict[str, Any]:
        """The component for ``Pipeline.dumps``: the policy as its file's path (a Policy
        not read from a file cannot be written), the log as its path."""
        policy = self.policy.file if isinstance(self.policy, Policy) else os.fspath(self.policy)
        if policy is None:
            raise SerializationError("BudgetSelector holds a Policy that was not read from a file; pass "
                                     "policy=<path of the policy file> to serialize the pipeline")
        log = os.fspath(self.audit_log.path) if isinstance(self.audit_log, AuditLog) else self.audit_log
        if log is not None and not isinstance(log, (str, bool)):
            log = os.fspath(log)
        return default_to_dict(self, policy=policy, audit_log=log, levels=list(self.levels),
                               document_store=self.document_store)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BudgetSelector:
        """The component :meth:`to_dict` wrote (the policy file is read again)."""
        return default_from_dict(cls, data)

    def _fetch(self, doc_id: str) -> Document | None:
        assert self.document_store is not None
        found = self.document_store.filter_documents({"field": "id", "operator": "==", "value": doc_id})
        return found[0] if found else None

    def _item(self, index: int, doc: Any) -> Item:
        if not isinstance(doc, Document):
            raise CandidateError("candidate.bad_type",
                                 f"item #{index}: expected a haystack Document, got {type(doc).__name__}",
                                 path=f"$[{index}]")
        if doc.content is None:
            raise CandidateError("candidate.bad_content",
                                 f"document {doc.id!r} (#{index}) has no text content (a blob only); convert "
                                 "it to text before the budget (e.g. with a converter component)",
                                 path=f"$[{index}].content")
        depth = doc.meta.get("__level")
        if depth is None:
            level = doc.meta.get("level", DEFAULT_LEVEL)
        elif isinstance(depth, int) and not isinstance(depth, bool) and 0 <= depth < len(self.levels):
            level = self.levels[depth]
        else:
            raise CandidateError("candidate.bad_level",
                                 f"document {doc.id!r} (#{index}) has __level {depth!r}, but levels names "
                                 f"{len(self.levels)} ({', '.join(self.levels)}); pass BudgetSelector(levels=[...]) "
                                 "with one level name per depth of the splitter's hierarchy",
                                 path=f"$[{index}].level")
        return Item(source_id=doc.id or None, content=doc.content, score=doc.score, level=level,
                    parent_id=_parent(doc), metadata=doc.meta)

    @component.output_types(documents=list[Document], excluded=list[Document], decision_id=str)
    def run(self, documents: list[Document], query: str | None = None) -> dict[str, Any]:
        """Decide ``documents`` (and, with a document store, their ancestors) for ``query``."""
        every = list(documents)
        if self.document_store is not None:
            every += [dataclasses.replace(doc, score=score) for doc, score in fetch_ancestors(
                documents, node_id=lambda d: d.id, parent_id=_parent, score=lambda d: d.score, fetch=self._fetch)]
        outcome = self.selector.select([self._item(i, d) for i, d in enumerate(every)], query)
        annotated = [dataclasses.replace(doc, meta={**doc.meta, **note.as_metadata()})
                     for doc, note in zip(every, outcome.annotations)]
        chosen = set(outcome.context_order)
        return {"documents": [annotated[i] for i in outcome.context_order],
                "excluded": [d for i, d in enumerate(annotated) if i not in chosen],
                "decision_id": outcome.decision_id}
