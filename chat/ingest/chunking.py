"""Split sections into overlapping chunks of about N tokens, on sentence and line boundaries.

Tokens are counted as words and punctuation marks (``\\w+|[^\\w\\s]``): no tokenizer model
to download, and within about a quarter of BPE counts for English prose, which is all a
chunk size needs.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\w+|[^\w\s]")
# Within a line, a sentence ends at . ! or ? followed by space; list items and short lines end
# with their line.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# A numbered list item's marker ("7."), which is not a sentence of its own.
_LIST_NUMBER = re.compile(r"\d{1,3}[.)]")
# A section's tail of at most 1/RUNT_FRACTION of a chunk joins the chunk before it (which may
# then run that much over size) instead of making a chunk of its own.
RUNT_FRACTION = 4


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def split_sentences(text: str) -> list[tuple[str, bool]]:
    """The sentences of ``text``, each with whether it ends its line.

    The line ends are kept so that a chunk keeps the lines of its text (a list stays a list),
    and a list item's number stays with its text: "7. Bake for 25 minutes." is one sentence.
    """
    sentences: list[tuple[str, bool]] = []
    for line in text.splitlines():
        parts = [part.strip() for part in _SENTENCE_END.split(line) if part.strip()]
        while len(parts) > 1 and _LIST_NUMBER.fullmatch(parts[0]):
            parts[:2] = [f"{parts[0]} {parts[1]}"]
        sentences += [(part, number == len(parts) - 1) for number, part in enumerate(parts)]
    return sentences


def _join(sentences: list[tuple[str, int, bool]]) -> str:
    """Sentences back into text: a space between those of one line, a line break after a line's last."""
    return "".join(sentence + ("\n" if ends_line else " ") for sentence, _, ends_line in sentences).strip()


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
    """Chunks of about ``size`` tokens, each repeating the last sentences (<= ``overlap`` tokens) of the
    last; only a chunk that took in a section's short tail (RUNT_FRACTION) is longer."""
    if size < 1 or not 0 <= overlap < size:
        raise ValueError("need size >= 1 and 0 <= overlap < size")
    sentences: list[tuple[str, int, bool]] = []
    for sentence, ends_line in split_sentences(text):
        pieces = _split_long(sentence, size) if count_tokens(sentence) > size else [sentence]
        for number, piece in enumerate(pieces):
            sentences.append((piece, count_tokens(piece), ends_line and number == len(pieces) - 1))
    chunks: list[list[tuple[str, int, bool]]] = []
    current: list[tuple[str, int, bool]] = []
    tokens = 0
    carried_count = 0  # how many of ``current``'s sentences repeat the end of the chunk before
    for item in sentences:
        item_tokens = item[1]
        if current and tokens + item_tokens > size:
            chunks.append(current)
            carried: list[tuple[str, int, bool]] = []
            carried_tokens = 0
            for part in reversed(current):
                if carried_tokens + part[1] > overlap or carried_tokens + part[1] + item_tokens > size:
                    break
                carried.insert(0, part)
                carried_tokens += part[1]
            current, tokens, carried_count = carried, carried_tokens, len(carried)
        current.append(item)
        tokens += item_tokens
    tail = current[carried_count:]  # what the last chunk adds to the overlap it carries
    if chunks and sum(item_tokens for _, item_tokens, _ in tail) <= size // RUNT_FRACTION:
        # A last step or two of a section on its own is too little to be found or read well:
        # "7. Bake for 22 to 25 minutes." belongs with the steps before it.
        chunks[-1] += tail
    elif current:
        chunks.append(current)
    return [_join(chunk) for chunk in chunks]
