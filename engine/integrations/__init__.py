"""Adapters for the frameworks users already retrieve with (DESIGN.md §2).

Each adapter module imports its framework at its top, so only the one a user imports is
loaded, and each is behind its own extra:

* :mod:`engine.integrations.langchain` (``ctxbudget[langchain]``): ``BudgetCompressor``,
  a ``BaseDocumentCompressor`` with a ``Runnable`` form;
* :mod:`engine.integrations.llamaindex` (``ctxbudget[llamaindex]``): ``BudgetPostprocessor``,
  a ``BaseNodePostprocessor``;
* :mod:`engine.integrations.haystack` (``ctxbudget[haystack]``): ``BudgetSelector``, a
  Haystack ``@component``.

The conversion rules they share (ids, missing scores, metadata written back) are in
:mod:`engine.integrations.core`, which needs no framework.
"""
