"""Text → BM25 terms: the one analyzer that indexing and querying share.

What goes in: texts. What comes out: their terms, lower-cased ``\\w\\w+`` runs (bm25s's
tokenizer) minus a stopword list of bm25s (default ``"en_plus"``, the NLTK English list
of 179 words: it drops question words such as "how" and "do", which the 33-word ``"en"``
list keeps), stemmed by a Snowball stemmer (PyStemmer; default English, i.e. Porter2), so
"cache"/"caching" and "refund"/"refunds"/"refunded" are one term. :meth:`Analyzer.settings`
says all of that as JSON, together with ``probe``, the terms of a fixed sentence
(:data:`PROBE`), so that a stemmer or stop list that changes without a setting saying so
still changes the settings; a persistent index (``engine.retrieval.store``) records them
in its manifest (:func:`engine.retrieval.search.analyzer_settings` adds the BM25
parameters and the calibration) and refuses to be searched under other ones.
:func:`analyze_many` is the batch analysis an index build runs.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import bm25s

from ..errors import CandidateError

#: bm25s's NLTK English list (179 words); see the module docstring for why not "en".
STOPWORDS = "en_plus"
#: The Snowball algorithm PyStemmer runs ("english" is Porter2).
STEMMER_LANGUAGE = "english"
#: bm25s's default split: runs of two or more word characters (after lower-casing).
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
#: A word with a lower-case letter or digit followed by a capital: a code identifier
#: written in camelCase ("readFile", "randomUUID", "existsSync").
_CAMEL_WORD = re.compile(r"\b\w*[a-z0-9][A-Z]\w*\b")
_CAMEL_CUT = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
#: Analysed for :meth:`Analyzer.settings`: plurals, -ing forms, stop words, case, digits,
#: a camelCase identifier.
PROBE = ("The Caching of refunds: how do running servers' HTTP/2 configurations differ, "
         "e.g. in 2024 with readFileSync?")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:  # pragma: no cover - both are dependencies
        return "unknown"


_STEMMERS: dict[str, Any] = {}
#: PyStemmer objects keep internal state and "must not be called concurrently".
_STEM_LOCK = threading.Lock()


def _stemmer(language: str) -> Callable[[list[str]], list[str]]:
    import Stemmer  # PyStemmer: imported on first use, like the rest of the retrieval stack

    with _STEM_LOCK:
        if language not in _STEMMERS:
            try:
                _STEMMERS[language] = Stemmer.Stemmer(language)
            except KeyError:
                names = ", ".join(Stemmer.algorithms())
                raise CandidateError("search.bad_stemmer", f"unknown stemmer language {language!r}; "
                                     f"use one of {names}", path="$.analyzer.stemmer") from None
    stem = _STEMMERS[language]

    def run(words: list[str]) -> list[str]:
        with _STEM_LOCK:
            out: list[str] = stem.stemWords(words)
        return out

    return run


@dataclass(frozen=True, slots=True)
class Analyzer:
    """Text → BM25 terms: lower-cased ``\\w\\w+`` runs, minus the ``stopwords`` list of
    bm25s, stemmed by the Snowball algorithm ``stemmer`` (``None``: no stemming).

    Stopwords are removed before stemming (bm25s's order), so "does" is dropped as a
    stopword rather than kept as the stem "doe". With ``split_identifiers`` a camelCase
    word also gives its parts ("readFile" → readfile, read, file), so a question in
    plain words ("read a file", "copy a file") meets the API names of technical
    documentation; the whole word is kept too, so an exact identifier still matches
    best."""

    stemmer: str | None = STEMMER_LANGUAGE
    stopwords: str = STOPWORDS
    split_identifiers: bool = True

    def _prepare(self, texts: Sequence[str]) -> list[str]:
        if not self.split_identifiers:
            return list(texts)
        return [_CAMEL_WORD.sub(lambda m: f"{m.group(0)} {_CAMEL_CUT.sub(' ', m.group(0))}", t) for t in texts]

    def terms_many(self, texts: Sequence[str]) -> list[list[str]]:
        """The terms of each text, in order (repeats kept: BM25 counts them)."""
        if not texts:
            return []
        stem = _stemmer(self.stemmer) if self.stemmer is not None else None
        out: list[list[str]] = bm25s.tokenize(self._prepare(texts), token_pattern=TOKEN_PATTERN,
                                              stopwords=self.stopwords, stemmer=stem, return_ids=False,
                                              show_progress=False)
        return out

    def terms(self, text: str) -> list[str]:
        """The terms of one text (see :meth:`terms_many`)."""
        return self.terms_many([text])[0]

    def words(self, text: str) -> dict[str, list[str]]:
        """Each distinct term of ``text`` with the words it comes from, in text order
        (``{"refund": ["refunds", "refund"]}``): how to show a user their own words."""
        plain: list[str] = bm25s.tokenize(self._prepare([text]), token_pattern=TOKEN_PATTERN,
                                          stopwords=self.stopwords, return_ids=False, show_progress=False)[0]
        distinct = list(dict.fromkeys(plain))
        stems = _stemmer(self.stemmer)(distinct) if self.stemmer is not None and distinct else distinct
        out: dict[str, list[str]] = {}
        for word, term in zip(distinct, stems):
            out.setdefault(term, []).append(word)
        return out

    def settings(self) -> dict[str, Any]:
        """What decides the terms, as plain JSON: tokenizer (library, version, pattern),
        stopword list (name, word count and a SHA-256 of the sorted list, so an edited
        list is noticed even under the same name) and stemmer (algorithm, language,
        library and version), and ``probe``: the terms of :data:`PROBE`."""
        from bm25s.tokenization import _infer_stopwords

        words = sorted(set(_infer_stopwords(self.stopwords)))
        digest = hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()
        return {
            "tokenizer": {"library": "bm25s", "version": _version("bm25s"), "pattern": TOKEN_PATTERN,
                          "lowercase": True, "split_identifiers": self.split_identifiers},
            "stopwords": {"name": self.stopwords, "source": "bm25s", "count": len(words),
                          "sha256": digest},
            "stemmer": None if self.stemmer is None else {
                "algorithm": "snowball", "language": self.stemmer, "library": "PyStemmer",
                "version": _version("PyStemmer")},
            "probe": self.terms(PROBE),
        }


#: The analyzer ``pack`` and :class:`SemanticSearch` use unless told otherwise.
DEFAULT_ANALYZER = Analyzer()


def analyze_many(texts: Sequence[str], analyzer: Analyzer = DEFAULT_ANALYZER) -> list[list[str]]:
    """The terms of each text under ``analyzer`` (:meth:`Analyzer.terms_many`, one batch),
    ``[]`` for a blank text: what an index build analyses its nodes with."""
    if not texts:
        return []
    blank = [not t.strip() for t in texts]
    filled = analyzer.terms_many([t for t, b in zip(texts, blank) if not b])
    it = iter(filled)
    return [[] if b else next(it) for b in blank]
