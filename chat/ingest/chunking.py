"""Split sections into overlapping chunks of about N tokens, on sentence and line boundaries.

Tokens are counted as words and punctuation marks (``\\w+|[^\\w\\s]``): no tokenizer model
to download, and within about a quarter of BPE counts for English prose, which is all a
chunk size needs.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\w+|[^\w\s]")
# A sentence ends at . ! or ? followed by space; list items and short lines end at the newline.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def split_sentences(text: str) -> list[str]:
    return [sentence.strip() for sentence in _SENTENCE_END.split(text) if sentence.strip()]


def _split_long(sentence: str, size: int) -> list[str]:
    """A sentence longer than a chunk, cut at word boundaries."""
    words = sentence.split()
    pieces: list[str] = []
    piece: list[str] = []
    tokens = 0
    for word in words:
        word_tokens = count_tokens(word)
        if piece and tokens + word_tokens > size:
            pieces.append(" ".join(piece))
            piece, tokens = [], 0
        piece.append(word)
        tokens += word_tokens
    if piece:
        pieces.append(" ".join(piece))
    return pieces


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    """Chunks of at most ``size`` tokens, each repeating the last sentences (<= ``overlap`` tokens) of the last."""
    if size < 1 or not 0 <= overlap < size:
        raise ValueError("need size >= 1 and 0 <= overlap < size")
    sentences: list[tuple[str, int]] = []
    for sentence in split_sentences(text):
        for piece in _split_long(sentence, size) if count_tokens(sentence) > size else [sentence]:
            sentences.append((piece, count_tokens(piece)))
    chunks: list[str] = []
    current: list[tuple[str, int]] = []
    tokens = 0
    for sentence, sentence_tokens in sentences:
        if current and tokens + sentence_tokens > size:
            chunks.append("\n".join(part for part, _ in current))
            carried: list[tuple[str, int]] = []
            carried_tokens = 0
            for part, part_tokens in reversed(current):
                if carried_tokens + part_tokens > overlap or carried_tokens + part_tokens + sentence_tokens > size:
                    break
                carried.insert(0, (part, part_tokens))
                carried_tokens += part_tokens
            current, tokens = carried, carried_tokens
        current.append((sentence, sentence_tokens))
        tokens += sentence_tokens
    if current:
        chunks.append("\n".join(part for part, _ in current))
    return chunks
