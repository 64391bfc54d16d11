"""The analyzer settings a persistent index is built with, asked of the search module.

A stored index (engine.retrieval.store) keeps BM25 state computed by
:class:`~engine.retrieval.search.SemanticSearch`; it is only valid for a search that
tokenizes, drops stop words, stems and weights exactly as it was built. The manifest
records :func:`analyzer_settings`, and loading an index built with other settings is an
error (``index.settings_mismatch``), never a silently different ranking.

``engine.retrieval.search`` may define its own ``analyzer_settings()`` (a mapping of
JSON values that changes whenever its analysis or weighting changes); it is used when
present. Otherwise the settings are read from the module's constants. Either way they
include ``probe``: the terms ``search.tokenize`` gives for a fixed sentence, so a change
of stemmer or stop words that no setting names is still noticed.
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
    # What the analysis really does to a fixed sentence: a stemmer, stop list or token
    # rule that changes without a setting saying so still changes this.
    settings["probe"] = search.tokenize(PROBE)
    return settings


#: Analysed by :func:`analyzer_settings`: plurals, -ing forms, stop words, case, digits.
PROBE = "The Caching of refunds: how do running servers' HTTP/2 configurations differ, e.g. in 2024?"


#: Joins texts for one analysis call; chosen to be one term that no corpus holds (checked).
_SEPARATOR = "qqctxbudgetseparatorqq"


def analyze_many(texts: list[str]) -> list[list[str]]:
    """The search terms of each text, as ``engine.retrieval.search.tokenize`` gives them.

    ``search.analyze_many`` is used when the search module has one. Otherwise the texts
    are analysed in one ``tokenize`` call, joined by a separator word whose own analysis
    is one term, and the result is cut at that term; when that cannot be done exactly (a
    text holds the separator, or the separator is not one term) each text is analysed
    alone. The analysis works word by word, so both ways give the same terms."""
    from . import search

    own = getattr(search, "analyze_many", None)
    if callable(own):
        return [list(t) for t in own(texts)]
    if not texts:
        return []
    marker = search.tokenize(_SEPARATOR)
    if len(marker) == 1 and not any(_SEPARATOR in t.lower() for t in texts):
        flat = search.tokenize(f"\n{_SEPARATOR}\n".join(texts))
        out: list[list[str]] = []
        pos = 0
        for _ in range(len(texts) - 1):
            try:
                cut = flat.index(marker[0], pos)
            except ValueError:
                break
            out.append(flat[pos:cut])
            pos = cut + 1
        out.append(flat[pos:])
        if len(out) == len(texts) and marker[0] not in out[-1]:
            return out
    return [search.tokenize(t) if t.strip() else [] for t in texts]
