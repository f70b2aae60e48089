"""The typed events the RAG pipeline yields; the wire encoding lives in chat.protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

StageName = Literal["question", "query", "search", "answer"]
StageStatus = Literal["started", "done"]
RetrievalMode = Literal["text", "vectors", "hybrid"]


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One retrieved chunk; ``source`` is the citation the answer uses, e.g. ``oven-guide.pdf#page=2``."""

    id: str
    title: str
    source: str
    content: str
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class Stage:
    """A step of the pipeline became visible: its name, status, human title and details."""

    name: StageName
    status: StageStatus
    title: str
    elapsed_ms: int
    detail: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AnswerDelta:
    """A piece of the answer's text, as the model produced it."""

    content: str


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the reader of the answer must know about it (e.g. the content filter cut it short)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class FollowupQuestions:
    questions: list[str]


@dataclass(slots=True)
class Usage:
    """Tokens spent on every model call of one answer."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Thought:
    """A step of reasoning shown to the client on request (prompts, queries), never logged."""

    title: str
    description: Any


@dataclass(frozen=True, slots=True)
class Completed:
    """The answer is complete; carries what the client may show beside it."""

    finish_reason: str
    data_points: list[SearchResult]
    thoughts: list[Thought]
    usage: Usage = field(default_factory=Usage)


ChatEvent = Stage | AnswerDelta | Notice | FollowupQuestions | Completed
