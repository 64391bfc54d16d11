"""The analyzer settings a persistent index is built with, asked of the search module.

A stored index (engine.retrieval.store) keeps BM25 state computed by
:class:`~engine.retrieval.search.SemanticSearch`; it is only valid for a search that
tokenizes, drops stop words, stems and weights exactly as it was built. The manifest
records :func:`analyzer_settings`, and loading an index built with other settings is an
error (``index.settings_mismatch``), never a silently different ranking.

``engine.retrieval.search`` may define its own ``analyzer_settings()`` (a mapping of
JSON values that changes whenever its analysis or weighting changes); it is used when
present. Otherwise the settings are read from the module's constants.
"""

from __future__ import annotations

from typing import Any


def analyzer_settings() -> dict[str, Any]:
    """JSON-ready settings that decide the BM25 state: tokenizer, stop words, stemmer,
    k1, b and the BM25 variant (and the bm25s version that computes it)."""
    import bm25s

    from . import search

    own = getattr(search, "analyzer_settings", None)
    if callable(own):
        settings = dict(own())
    else:
        settings = {
            "tokenizer": "bm25s.tokenize: lower-cased \\w\\w+ runs",
            "stopwords": getattr(search, "STOPWORDS", None),
            "stemmer": getattr(search, "STEMMER", None),
            "k1": getattr(search, "BM25_K1", None),
            "b": getattr(search, "BM25_B", None),
            "method": "lucene",
        }
    settings.setdefault("bm25s", getattr(bm25s, "__version__", "unknown"))
    return settings
