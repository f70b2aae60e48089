"""Read documents (.md, .txt, .html, .pdf) into titled sections that carry their citation.

Markdown and plain text are split at their headings as CommonMark reads them (markdown-it-py:
``#`` lines and lines underlined with ``===``/``---``, never a ``#`` line inside a code block),
HTML at h1-h6, PDF by page (cited as ``file.pdf#page=N``).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token
from pypdf import PdfReader
from pypdf.errors import PyPdfError

SUPPORTED_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".html", ".htm", ".pdf"})
# CommonMark, as GitHub renders it (tables included); only headings are read from the parse.
_MARKDOWN = MarkdownIt("commonmark").enable("table")
# Line ends as markdown-it counts lines, so its line numbers index the same list.
_NEWLINES = re.compile(r"\r\n?")


class DocumentError(Exception):
    """A document that cannot be read; the message names the file and the reason."""


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    source: str
    text: str


def _section_title(document_title: str, heading: str | None) -> str:
    return document_title if not heading or heading == document_title else f"{document_title}: {heading}"


def _sections(name: str, parts: list[tuple[str | None, str]], fallback_title: str) -> list[Section]:
    """Sections from (heading, text) parts; the first heading names the document."""
    document_title = next((heading for heading, _ in parts if heading), fallback_title)
    return [
        Section(_section_title(document_title, heading), name, text.strip()) for heading, text in parts if text.strip()
    ]


def _plain_text(inline: Token) -> str:
    """A heading's text without its Markdown: ``Pizza *guide*`` is ``Pizza guide``."""
    pieces = []
    for child in inline.children or []:
        if child.type in ("text", "code_inline", "image"):
            pieces.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            pieces.append(" ")
    return " ".join("".join(pieces).split())


def _markdown_parts(text: str) -> list[tuple[str | None, str]]:
    """(heading, text) parts split at the document's own headings, ATX (``#``) or setext (underlined).

    CommonMark decides what a heading is: a ``#`` line inside a fenced or indented code block, a
    quote or a list item is text. Each part keeps its Markdown source as it was written.
    """
    lines = _NEWLINES.sub("\n", text).split("\n")
    tokens = _MARKDOWN.parse("\n".join(lines))
    parts: list[tuple[str | None, str]] = []
    heading: str | None = None
    body_start = 0
    for token, inline in itertools.pairwise(tokens):
        if token.type == "heading_open" and token.level == 0 and token.map is not None:
            start, end = token.map
            parts.append((heading, "\n".join(lines[body_start:start])))
            heading, body_start = _plain_text(inline), end
    parts.append((heading, "\n".join(lines[body_start:])))
    return parts


class _HtmlSections(HTMLParser):
    """Collects (heading, text) parts from HTML, skipping scripts, styles and templates."""

    _HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
    _BLOCKS = frozenset({"p", "li", "br", "div", "tr", "section", "article", "ul", "ol", "pre"})
    _SKIPPED = frozenset({"script", "style", "template", "noscript", "title"})

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[tuple[str | None, str]] = []
        self._heading: str | None = None
        self._text: list[str] = []
        self._heading_text: list[str] | None = None
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIPPED:
            self._skipping += 1
        elif tag in self._HEADINGS:
            self.parts.append((self._heading, "".join(self._text)))
            self._heading_text, self._text = [], []
        elif tag in self._BLOCKS:
            self._text.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._HEADINGS and self._heading_text is not None:
            self._heading = " ".join("".join(self._heading_text).split())
            self._heading_text = None

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        (self._heading_text if self._heading_text is not None else self._text).append(data)

    def finish(self) -> list[tuple[str | None, str]]:
        self.close()
        self.parts.append((self._heading, "".join(self._text)))
        return [(heading, re.sub(r"[ \t]*\n\s*", "\n", text)) for heading, text in self.parts]


def _pdf_sections(path: Path, name: str) -> list[Section]:
    try:
        reader = PdfReader(path)
        pages = [page.extract_text() or "" for page in reader.pages]
        metadata_title = (reader.metadata.title if reader.metadata else None) or ""
    except (PyPdfError, OSError, ValueError) as error:
        raise DocumentError(f"{path}: not a readable PDF ({type(error).__name__}: {error})") from error
    if not any(page.strip() for page in pages):
        raise DocumentError(f"{path}: the PDF has no extractable text (scanned pages need OCR first)")
    document_title = metadata_title.strip() or path.stem.replace("-", " ").capitalize()
    sections = []
    for number, text in enumerate(pages, start=1):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            heading = lines[0] if len(lines[0]) <= 80 else None
            sections.append(Section(_section_title(document_title, heading), f"{name}#page={number}", text.strip()))
    return sections


def read_document(path: Path, name: str) -> list[Section]:
    """The sections of the document at ``path``; ``name`` is how citations refer to it."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DocumentError(f"{path}: unsupported file type (use {', '.join(sorted(SUPPORTED_SUFFIXES))})")
    if suffix == ".pdf":
        return _pdf_sections(path, name)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DocumentError(f"{path}: cannot be read as UTF-8 text ({error})") from error
    fallback = path.stem.replace("-", " ").capitalize()
    if suffix in (".html", ".htm"):
        parser = _HtmlSections()
        parser.feed(text)
        return _sections(name, parser.finish(), fallback)
    return _sections(name, _markdown_parts(text), fallback)
