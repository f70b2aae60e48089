"""Which words a question and its sources share: the relevance gate's first step, and where an
uncited answer came from.

When none of the question's distinctive words occurs in any retrieved source, the documents do
not cover it, and the pipeline answers so (prompts.NO_SOURCES_ANSWER) without calling the model: a small model shown
unrelated sources answers from its own memory ("Canberra [guide.md]") instead of saying it does
not know. The test is lexical on purpose. A score threshold would depend on the embedding model
(e5 cosines sit far higher than text-embedding-3's) and on the retrieval mode (hybrid scores,
local and Azure alike, are reciprocal-rank fusions that say nothing about relevance), while the
words of the question and of the sources mean the same whatever found them. It is deliberately
lenient: one shared word (crudely stemmed) lets the question through, so it only stops
questions that are plainly about something else, and leaves the subtler "not in these documents"
cases to the gate's second step, the model's own yes/no (chat.pipeline). Measured on
data/eval/answers.jsonl by `python -m chat.evaluate`.

The same words also decide when that yes/no is not asked: a question answered "yes" or "no"
("Can I thaw dough in the microwave?") whose every distinctive word is in the sources. The 1.5B
model answers such a question instead of judging its sources ("No", the sources saying not to),
whatever the check's wording (tried: yes/no, A/B, FOUND/MISSING, the question quoted).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from chat.events import SearchResult

# Words that say nothing about a question's subject: function words and the verbs, adverbs and
# adjectives every question uses ("how long should I make ...").
_STOPWORDS = frozenset(
    """
    a about after again all also am an and any are as at be been before being best better between
    both but by can could did do does doing done during each either else ever every few for from
    get gets getting give go good got had has have having he her here how i if in into is it its
    just know like long make makes making many may me might more most much must my need needs no
    nor not now of off on once one only or other our out over own please right same say shall she
    should so some such take tell than that the their them then there these they thing things
    this those through to too try under until up us use used using very want was way we well were
    what when where whether which while who whom whose why will with without would yes you your
    """.split()
)
_WORD = re.compile(r"[^\W\d_]+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
# An optional short opening before a question's first word ("Hi, can I ...?", "Dough: can I freeze it?").
_OPENING = r"(?:[^,:;?]{0,24}[,:;]\s*)?"
# How a question answered yes or no begins ("Can I ...?", "Isn't it ...?").
_YES_NO_START = re.compile(
    _OPENING + r"(?:(?:am|is|are|was|were|do|does|did|can|could|shall|should|will|would|may|might|must|has|have|had)"
    r"(?:n['’]t)?|won['’]t)\b",
    re.IGNORECASE,
)
# "Can you suggest ...?", "Could you tell me ...?": a request, answered with content, not yes or no.
_REQUEST = re.compile(_OPENING + r"(?:can|could|would|will)\s+you\b", re.IGNORECASE)
_SENTENCE_BREAK = re.compile(r"(?<=[.?!])\s+")
STEM_CHARS = 5


def _words(text: str) -> list[str]:
    """The distinctive words of ``text``, lower-cased, in order."""
    return [word for word in _WORD.findall(text.lower()) if word not in _STOPWORDS and len(word) > 2]


def _stems(text: str) -> set[str]:
    """Word stems: distinctive words cut to a few characters (preheat, preheating and preheated agree)."""
    return {word[:STEM_CHARS] for word in _words(text)}


def covers(query: str, results: Sequence[SearchResult]) -> bool:
    """Whether the retrieved ``results`` may answer ``query`` (the text that was searched for).

    A query with no distinctive word at all ("what about it?") is let through: there is
    nothing to judge it by, and the model sees the sources and the conversation.
    """
    terms = _stems(query)
    if not results:
        return False
    if not terms:
        return True
    return not terms.isdisjoint(_source_stems(results))


def covers_all(query: str, results: Sequence[SearchResult]) -> bool:
    """Whether ``query`` has distinctive words and every one occurs in the retrieved ``results``."""
    return bool(_words(query)) and not uncovered(query, results)


def uncovered(query: str, results: Sequence[SearchResult]) -> list[str]:
    """The distinctive words of ``query`` whose stem none of ``results`` holds, in order; each
    word once (two words of one stem, "grill" and "grilling", are both listed)."""
    stems = _source_stems(results)
    return list(dict.fromkeys(word for word in _words(query) if word[:STEM_CHARS] not in stems))


def _source_stems(results: Iterable[SearchResult]) -> set[str]:
    stems: set[str] = set()
    for result in results:
        stems |= _stems(f"{result.title} {result.content}")
    return stems


def best_source(text: str, results: Sequence[SearchResult]) -> SearchResult | None:
    """The result an answer's ``text`` shares the most distinctive words and numbers with (the
    better-ranked on a tie), or None when it shares none: where an uncited answer came from."""
    terms = _stems(text) | set(_NUMBER.findall(text))
    best: SearchResult | None = None
    most = 0
    for result in results:
        passage = f"{result.title} {result.content}"
        shared = len(terms & (_stems(passage) | set(_NUMBER.findall(passage))))
        if shared > most:
            best, most = result, shared
    return best


def asks_yes_or_no(question: str) -> bool:
    """Whether a sentence of ``question`` asks to be answered yes or no ("My oven only reaches 250
    degrees. Should I still use tipo 00 flour?"); "or" questions ("Is a stone or a steel
    better?") count too, requests ("Can you suggest a pizza?") do not."""
    return any(
        sentence.endswith("?") and _YES_NO_START.match(sentence) is not None and _REQUEST.match(sentence) is None
        for sentence in _SENTENCE_BREAK.split(question.strip())
    )
