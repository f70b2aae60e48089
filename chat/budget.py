"""How one answer's tokens are shared out within the model's context window.

Priorities, highest first: the answer's own cap (what the call may write), the latest question
(always whole), the retrieved sources (best-ranked first), then earlier turns (newest first,
and never more than CHAT_HISTORY_MAX_TOKENS). Whatever does not fit is left out, so no call is
ever refused upstream for its length, and what one request can spend is bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chat import tokens
from chat.errors import InvalidRequest
from chat.events import SearchResult
from chat.protocol import Message

# The fixed text around the question and sources (labels, markers, the reply's priming).
FRAMING_TOKENS = 32
# Each source's marker line (with its name) costs about this much on top of its text.
SOURCE_MARKER_TOKENS = 16
# A source cut shorter than this says too little to be worth sending.
MIN_SOURCE_TOKENS = 48


@dataclass(frozen=True, slots=True)
class Budget:
    context_tokens: int
    answer_tokens: int
    question_tokens: int
    sources_cap: int | None = None

    @classmethod
    def for_model(cls, context_tokens: int, answer_cap: int, question: str, sources_cap: int | None = None) -> Budget:
        """The plan for one answer; InvalidRequest when the question alone is more than the model can read."""
        answer_tokens = min(answer_cap, context_tokens // 4)
        question_tokens = tokens.message_tokens(question) + FRAMING_TOKENS
        room = context_tokens - answer_tokens
        if question_tokens > room // 2:
            raise InvalidRequest(
                f"The question is too long for this model (about {question_tokens} tokens; "
                f"at most {room // 2}). Shorten it and ask again.",
                code="question_too_long",
            )
        return cls(context_tokens, answer_tokens, question_tokens, sources_cap)

    @property
    def sources_tokens(self) -> int:
        """What the sources may take: the context less the answer, the question and its framing,
        and no more than the model's cap on them (ChatModel.sources_tokens)."""
        room = self.context_tokens - self.answer_tokens - self.question_tokens
        return room if self.sources_cap is None else min(room, self.sources_cap)

    def history(self, turns: Sequence[Message], fixed_text: str, max_tokens: int) -> list[Message]:
        """The newest ``turns`` that fit beside ``fixed_text`` (instructions, sources) and the question."""
        left = self.context_tokens - self.answer_tokens - self.question_tokens - tokens.message_tokens(fixed_text)
        return tokens.newest_within(turns, max(0, min(max_tokens, left)))


def fit_sources(
    results: Sequence[SearchResult], texts: Sequence[str], budget: int
) -> tuple[list[SearchResult], list[str]]:
    """The best-ranked sources whose texts fit ``budget``; the first one that does not fit is cut to size."""
    kept_results: list[SearchResult] = []
    kept_texts: list[str] = []
    left = budget
    for result, text in zip(results, texts, strict=True):
        room = left - SOURCE_MARKER_TOKENS
        cost = tokens.count(text)
        if cost > room and room >= MIN_SOURCE_TOKENS:
            text = tokens.truncate(text, room)
            cost = room
        elif cost > room:
            break
        kept_results.append(result)
        kept_texts.append(text)
        left -= cost + SOURCE_MARKER_TOKENS
    return kept_results, kept_texts
