"""The wire format: AI Chat Protocol request models and the encoding of pipeline events.

Requests are validated with pydantic against limits from the settings. Responses are
encoded here and nowhere else: one NDJSON line per event for ``/api/chat/stream``, and one
JSON object for ``/api/chat`` built from the same events. Keys are camelCase, as the
protocol's published client expects.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from chat.errors import ChatError, InvalidRequest
from chat.events import AnswerDelta, ChatEvent, Completed, FollowupQuestions, Notice, RetrievalMode, SearchResult, Stage
from chat.settings import LimitSettings, SecuritySettings


class _ClientModel(BaseModel):
    # Unknown keys are ignored, not refused: clients of the protocol may send more than we read.
    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True, frozen=True)


class Message(_ClientModel):
    role: str
    content: str

    @field_validator("role")
    @classmethod
    def _client_role(cls, role: str) -> str:
        if role == "system":
            raise ValueError("role 'system' is set by the server and not accepted from clients")
        if role not in ("user", "assistant"):
            raise ValueError("role must be 'user' or 'assistant'")
        return role

    @field_validator("content")
    @classmethod
    def _content_within_limit(cls, content: str, info: ValidationInfo) -> str:
        limits = _limits(info)
        if limits and len(content) > limits.chat_max_message_chars:
            raise ValueError(f"content is longer than {limits.chat_max_message_chars} characters")
        return content


class Overrides(_ClientModel):
    """Per-request options, under ``context.overrides``.

    The ones that cost money are bounded by the security settings: ``top`` by CHAT_MAX_TOP, and
    turning the semantic ranker on by CHAT_ALLOW_SEMANTIC_RANKER_OVERRIDE (turning it off, which
    costs less, is always allowed).
    """

    top: int = Field(5, ge=1, le=50)
    retrieval_mode: RetrievalMode = "hybrid"
    temperature: float = Field(0.3, ge=0.0, le=2.0)
    suggest_followup_questions: bool = False
    # None: the AZURE_SEARCH_SEMANTIC_RANKER setting decides (Azure AI Search only).
    semantic_ranker: bool | None = None

    @field_validator("top")
    @classmethod
    def _top_within_limit(cls, top: int, info: ValidationInfo) -> int:
        security = _security(info)
        if security and top > security.chat_max_top:
            raise ValueError(f"top is larger than {security.chat_max_top}")
        return top

    @field_validator("semantic_ranker")
    @classmethod
    def _semantic_ranker_allowed(cls, semantic_ranker: bool | None, info: ValidationInfo) -> bool | None:
        security = _security(info)
        if semantic_ranker and security and not security.chat_allow_semantic_ranker_override:
            raise ValueError("this server does not let requests turn the semantic ranker on")
        return semantic_ranker


class RequestContext(_ClientModel):
    overrides: Overrides = Field(default_factory=Overrides)


class ChatRequest(_ClientModel):
    messages: list[Message]
    context: RequestContext = Field(default_factory=RequestContext)
    session_state: Any = None

    @field_validator("context", mode="before")
    @classmethod
    def _null_context(cls, context: Any) -> Any:
        return {} if context is None else context

    @model_validator(mode="after")
    def _conversation_shape(self, info: ValidationInfo) -> ChatRequest:
        if not self.messages:
            raise ValueError("messages must contain at least one message")
        limits = _limits(info)
        if limits and len(self.messages) > limits.chat_max_messages:
            raise ValueError(f"messages has more than {limits.chat_max_messages} entries")
        last = self.messages[-1]
        if last.role != "user":
            raise ValueError("the last message must be from the user")
        if not last.content.strip():
            raise ValueError("the last message is empty")
        return self

    @property
    def question(self) -> str:
        return self.messages[-1].content


def _limits(info: ValidationInfo) -> LimitSettings | None:
    return (info.context or {}).get("limits")


def _security(info: ValidationInfo) -> SecuritySettings | None:
    return (info.context or {}).get("security")


# Deeper JSON than this is refused: the protocol needs a few levels, and sessionState is echoed
# back, so an unbounded nesting would reach the encoders' recursion limits (orjson stops at 254).
MAX_JSON_DEPTH = 64


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and objects deeper than ``limit``; iterative, so any depth is safe."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                pending.append((child, depth + 1))
    return False


def parse_chat_request(body: bytes, limits: LimitSettings, security: SecuritySettings) -> ChatRequest:
    """Decode and validate a request body, raising InvalidRequest with a readable reason."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(f"The body is not valid JSON: {error.msg}.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object with a 'messages' list.")
    if _depth_exceeds(data, MAX_JSON_DEPTH):
        raise InvalidRequest(f"The body nests objects or lists deeper than {MAX_JSON_DEPTH} levels.")
    try:
        return ChatRequest.model_validate(data, context={"limits": limits, "security": security})
    except ValidationError as error:
        raise InvalidRequest(_describe(error)) from None


def _describe(error: ValidationError) -> str:
    """The first problems, by location; pydantic's messages name the rule, never the input."""
    problems = []
    for item in error.errors(include_url=False, include_input=False)[:3]:
        location = ".".join(str(part) for part in item["loc"]) or "body"
        problems.append(f"{location}: {item['msg'].removeprefix('Value error, ')}")
    return "Invalid request: " + "; ".join(problems) + "."


def error_body(error: ChatError) -> dict[str, Any]:
    return {"error": {"code": error.code, "message": error.message}}


def encode_error(error: ChatError) -> bytes:
    """The last line of a stream that failed after it started."""
    return orjson.dumps({"delta": {}, "error": error_body(error)["error"]}, option=orjson.OPT_APPEND_NEWLINE)


HEARTBEAT_LINE = b'{"delta":{},"context":{"heartbeat":true}}\n'
_CONTENT_PREFIX = b'{"delta":{"content":'
_CONTENT_SUFFIX = b"}}\n"


def stage_body(stage: Stage) -> dict[str, Any]:
    body: dict[str, Any] = {"name": stage.name, "status": stage.status, "title": stage.title}
    if stage.detail is not None:
        body["detail"] = stage.detail
    body["elapsedMs"] = stage.elapsed_ms
    return body


def notice_body(notice: Notice) -> dict[str, str]:
    return {"code": notice.code, "message": notice.message}


def data_point(result: SearchResult) -> dict[str, str]:
    return {"id": result.id, "title": result.title, "source": result.source, "content": result.content}


def completion_context(done: Completed) -> dict[str, Any]:
    usage = done.usage
    return {
        "dataPoints": [data_point(result) for result in done.data_points],
        "thoughts": [{"title": thought.title, "description": thought.description} for thought in done.thoughts],
        "usage": {
            "promptTokens": usage.prompt_tokens,
            "completionTokens": usage.completion_tokens,
            "totalTokens": usage.total_tokens,
        },
    }


class StreamEncoder:
    """Encodes one response's events as NDJSON lines, in the order the protocol wants."""

    def __init__(self, session_state: Any) -> None:
        self._session_state = session_state
        self._first_line = True

    def encode(self, event: ChatEvent) -> bytes:
        if type(event) is AnswerDelta:  # the hot path: one line per token, no dict, one small dumps
            return _CONTENT_PREFIX + orjson.dumps(event.content) + _CONTENT_SUFFIX
        line: dict[str, Any] = {"delta": {}}
        if self._first_line:
            line["delta"] = {"role": "assistant"}
        if isinstance(event, Stage):
            line["context"] = {"stage": stage_body(event)}
        elif isinstance(event, FollowupQuestions):
            line["context"] = {"followupQuestions": event.questions}
        elif isinstance(event, Notice):
            line["context"] = {"notice": notice_body(event)}
        elif isinstance(event, Completed):
            line["finishReason"] = event.finish_reason
            line["context"] = completion_context(event)
        if self._first_line or isinstance(event, Completed):
            line["sessionState"] = self._session_state
        self._first_line = False
        return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


class CompletionBuilder:
    """Collects one response's events into the single JSON answer of ``/api/chat``."""

    def __init__(self, session_state: Any) -> None:
        self._session_state = session_state
        self._content: list[str] = []
        self._stages: list[dict[str, Any]] = []
        self._followups: list[str] = []
        self._notices: list[dict[str, str]] = []
        self._done: Completed | None = None

    def add(self, event: ChatEvent) -> None:
        if isinstance(event, AnswerDelta):
            self._content.append(event.content)
        elif isinstance(event, Stage):
            self._stages.append(stage_body(event))
        elif isinstance(event, FollowupQuestions):
            self._followups = event.questions
        elif isinstance(event, Notice):
            self._notices.append(notice_body(event))
        elif isinstance(event, Completed):
            self._done = event

    def build(self) -> dict[str, Any]:
        if self._done is None:
            raise RuntimeError("the pipeline ended without a Completed event")
        context = completion_context(self._done)
        context["stages"] = self._stages
        if self._followups:
            context["followupQuestions"] = self._followups
        if self._notices:
            context["notices"] = self._notices
        return {
            "message": {"role": "assistant", "content": "".join(self._content)},
            "finishReason": self._done.finish_reason,
            "context": context,
            "sessionState": self._session_state,
        }
