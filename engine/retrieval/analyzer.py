"""Text → BM25 terms: the one analyzer that indexing and querying share.

What goes in: texts. What comes out: their terms, lower-cased ``\\w\\w+`` runs (bm25s's
tokenizer pattern, run here with ``re``) minus a stopword list of bm25s (default ``"en_plus"``, the NLTK English list
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
import os
import re
import threading
from collections.abc import Callable, Sequence
from itertools import chain
from dataclasses import dataclass
from typing import Any

from ..errors import CandidateError

#: bm25s's NLTK English list (179 words); see the module docstring for why not "en".
STOPWORDS = "en_plus"
#: That list, as bm25s 0.2 ships it (``bm25s.stopwords.STOPWORDS_EN_PLUS``; a test holds
#: them equal): kept here so a query does not import bm25s (and tqdm) to read it.
_EN_PLUS = (
    "a about above after again against ain all am an and any are aren aren't as at be because been "
    "before being below between both but by can couldn couldn't d did didn didn't do does doesn "
    "doesn't doing don don't down during each few for from further had hadn hadn't has hasn hasn't "
    "have haven haven't having he her here hers herself him himself his how i if in into is isn "
    "isn't it it's its itself just ll m ma me mightn mightn't more most mustn mustn't my myself "
    "needn needn't no nor not now o of off on once only or other our ours ourselves out over own re "
    "s same shan shan't she she's should should've shouldn shouldn't so some such t than that "
    "that'll the their theirs them themselves then there these they this those through to too under "
    "until up ve very was wasn wasn't we were weren weren't what when where which while who whom why "
    "will with won won't wouldn wouldn't y you you'd you'll you're you've your yours yourself "
    "yourselves").split()
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


def _version(dist: str, module: str | None = None) -> str:
    """The installed version of ``dist``: from its ``*.dist-info`` folder beside the
    ``module`` file when there is one (one folder listing, where importlib.metadata's
    first lookup scans every entry of sys.path: ~30 ms per ``pack --index``), else
    importlib.metadata."""
    from importlib import import_module

    if module is not None:
        found: str | None = getattr(import_module(module), "__file__", None)
        if found:
            prefix = dist.lower().replace("-", "_") + "-"
            names: list[str]
            try:
                names = os.listdir(os.path.dirname(found))
            except OSError:
                names = []
            hits = [n for n in names if n.lower().startswith(prefix) and n.endswith(".dist-info")]
            if len(hits) == 1:
                return hits[0][len(prefix):-len(".dist-info")]
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:  # pragma: no cover - both are dependencies
        return "unknown"


_TOKEN = re.compile(TOKEN_PATTERN)
#: A word: what a token can come from (a token never spans two of these).
_RUN = re.compile(r"\w+")
#: (stemmer, stopwords, split_identifiers) -> word run -> its terms.
_RUN_CACHE: dict[tuple[str | None, str, bool], dict[str, tuple[str, ...]]] = {}
_STOPSETS: dict[str, frozenset[str]] = {STOPWORDS: frozenset(_EN_PLUS)}


def stopword_list(name: str) -> tuple[str, ...]:
    """The words of bm25s's stopword list ``name`` ("en_plus" without importing bm25s)."""
    if name == STOPWORDS:
        return tuple(_EN_PLUS)
    from bm25s.tokenization import _infer_stopwords

    return tuple(_infer_stopwords(name))


def _stopset(name: str) -> frozenset[str]:
    found = _STOPSETS.get(name)
    if found is None:
        found = _STOPSETS[name] = frozenset(stopword_list(name))
    return found


_STEMMERS: dict[str, Any] = {}
#: word -> stem, per language: a word is stemmed once per process.
_STEM_CACHE: dict[str, dict[str, str]] = {}
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

    cache = _STEM_CACHE.setdefault(language, {})

    def run(words: list[str]) -> list[str]:
        with _STEM_LOCK:  # the cache and the stemmer, one thread at a time
            new = [w for w in dict.fromkeys(words) if w not in cache]
            if new:
                if len(cache) + len(new) > 1_000_000:  # a bound for long-running processes
                    cache.clear()
                cache.update(zip(new, stem.stemWords(new)))
            return [cache[w] for w in words]

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
        """The terms of each text, in order (repeats kept: BM25 counts them).

        Each distinct word (``\\w+`` run) is analysed once per process and remembered:
        a run's terms are those of the run alone (tokens never cross a run, and neither
        the camelCase split nor lower-casing joins two runs), so this equals lower-casing
        the whole text, matching :data:`TOKEN_PATTERN`, dropping stopwords and stemming."""
        if not texts:
            return []
        runs, known = self.runs_many(texts)
        get = known.__getitem__
        return [list(chain.from_iterable(map(get, rs))) for rs in runs]

    def runs_many(self, texts: Sequence[str]) -> tuple[list[list[str]], dict[str, tuple[str, ...]]]:
        """The word runs of each text and each distinct run's terms: what
        :meth:`terms_many` joins (a text's terms are its runs' terms in order), for a
        caller that maps runs to term ids without making every text's term list."""
        runs = [_RUN.findall(t) for t in texts]
        cache = _RUN_CACHE.setdefault((self.stemmer, self.stopwords, self.split_identifiers), {})
        known: dict[str, tuple[str, ...]] = {}
        new: list[str] = []
        for run in set(chain.from_iterable(runs)):
            got = cache.get(run)
            if got is None:
                new.append(run)
            else:
                known[run] = got
        if new:
            known.update(zip(new, self._analyse_runs(new)))
            if len(cache) + len(new) > 1_000_000:  # a bound for long-running processes
                cache.clear()
            cache.update((r, known[r]) for r in new)
        return runs, known

    def _analyse_runs(self, runs: list[str]) -> list[tuple[str, ...]]:
        """The terms of each word run (camelCase parts, lower case, stopwords, stems)."""
        stop = _stopset(self.stopwords)
        words = [[w for w in _TOKEN.findall(t.lower()) if w not in stop] for t in self._prepare(runs)]
        if self.stemmer is not None:
            stem = _stemmer(self.stemmer)
            flat = stem([w for ws in words for w in ws])
            pos = 0
            for i, ws in enumerate(words):
                words[i] = flat[pos:pos + len(ws)]
                pos += len(ws)
        return [tuple(ws) for ws in words]

    def terms(self, text: str) -> list[str]:
        """The terms of one text (see :meth:`terms_many`)."""
        return self.terms_many([text])[0]

    def words(self, text: str) -> dict[str, list[str]]:
        """Each distinct term of ``text`` with the words it comes from, in text order
        (``{"refund": ["refunds", "refund"]}``): how to show a user their own words."""
        stop = _stopset(self.stopwords)
        plain = [w for w in _TOKEN.findall(self._prepare([text])[0].lower()) if w not in stop]
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
        words = sorted(set(stopword_list(self.stopwords)))
        digest = hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()
        return {
            "tokenizer": {"library": "ctxbudget", "version": 2, "pattern": TOKEN_PATTERN,
                          "lowercase": True, "split_identifiers": self.split_identifiers},
            "stopwords": {"name": self.stopwords, "source": "bm25s", "count": len(words),
                          "sha256": digest},
            "stemmer": None if self.stemmer is None else {
                "algorithm": "snowball", "language": self.stemmer, "library": "PyStemmer",
                "version": _version("PyStemmer", "Stemmer")},
            # Analysed afresh (not from the word cache), so it shows the stemmer as it is now.
            "probe": list(chain.from_iterable(self._analyse_runs(_RUN.findall(PROBE)))),
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
