"""Documents, chunking, the local index (BM25, vectors, fusion) and ingest, with small generated documents."""

from __future__ import annotations

import itertools
import os
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from pypdf import PdfWriter

from chat.errors import UpstreamError
from chat.evaluate import first_relevant_rank, load_questions
from chat.ingest.chunking import RUNT_FRACTION, chunk_text, count_tokens
from chat.ingest.cli import EXIT_ERROR, IngestError, chunk_documents, chunk_id, collect_files, main
from chat.ingest.documents import DocumentError, read_document
from chat.providers.llm import build_openai_clients
from chat.providers.local_index import SCHEMA_VERSION, LocalIndexRetriever, fts_query, rrf
from chat.services import get_services
from chat.settings import PROJECT_ROOT, get_settings
from tests.conftest import TEST_DOCUMENTS, build_index, write_documents
from tests.sdk_fakes import EmbeddingScript


def test_chunks_respect_size_and_overlap() -> None:
    sentences = [f"Sentence number {i} talks about dough and ovens." for i in range(40)]
    chunks = chunk_text(" ".join(sentences), size=50, overlap=12)
    assert len(chunks) > 5
    assert all(count_tokens(chunk) <= 50 + 50 // RUNT_FRACTION for chunk in chunks)
    for before, after in itertools.pairwise(chunks):
        last = next(sentence for sentence in sentences if before.endswith(sentence))
        assert after.startswith(last), "each chunk repeats the last sentence before it"
    text = " ".join(chunks)
    assert all(sentence in text for sentence in sentences), "nothing is lost"


def test_chunks_keep_the_lines_of_a_list_and_each_item_its_number() -> None:
    steps = "1. Mix the flour and water. Rest 20 minutes.\n2. Heat the oven to 230 °C.\n3. Bake for 22 minutes."
    assert chunk_text(steps, size=200, overlap=0) == [steps]
    assert chunk_text(steps, size=20, overlap=10) == [
        "1. Mix the flour and water. Rest 20 minutes.",
        "Rest 20 minutes.\n2. Heat the oven to 230 °C.",
        "2. Heat the oven to 230 °C.\n3. Bake for 22 minutes.",
    ]


def test_a_short_last_step_joins_the_chunk_before_instead_of_standing_alone() -> None:
    steps = "1. Mix the flour and water until smooth.\n2. Heat the oven to 230 °C."
    assert chunk_text(f"{steps}\n3. Bake.", size=20, overlap=0) == [f"{steps}\n3. Bake."], "4 tokens: joined"
    assert chunk_text(f"{steps}\n3. Bake.", size=20, overlap=10) == [f"{steps}\n3. Bake."], "its overlap not repeated"
    assert chunk_text(f"{steps}\n3. Bake it for 25 minutes.", size=20, overlap=0) == [
        steps,
        "3. Bake it for 25 minutes.",
    ], "8 tokens, over a quarter of the size: a chunk of its own"


def test_a_sentence_longer_than_a_chunk_is_cut_at_words() -> None:
    chunks = chunk_text("word " * 130, size=50, overlap=0)
    assert [count_tokens(chunk) for chunk in chunks] == [50, 50, 30]


def test_markdown_and_setext_headings_make_sections(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_text("# Pizza guide\n\nIntro.\n\n## Dough\n\nMix flour.\n\nSauce\n-----\n\nCook tomatoes.\n")
    sections = read_document(path, "guide.md")
    assert [(s.title, s.text) for s in sections] == [
        ("Pizza guide", "Intro."),
        ("Pizza guide: Dough", "Mix flour."),
        ("Pizza guide: Sauce", "Cook tomatoes."),
    ]
    assert {s.source for s in sections} == {"guide.md"}


def test_a_hash_line_in_code_is_not_a_heading(tmp_path: Path) -> None:
    """CommonMark decides: code blocks, fenced or indented, keep their # lines; CRLF files split alike."""
    path = tmp_path / "oven.md"
    fenced = "```sh\n# heat the stone first\nbake --at 280\n```"
    tilde = "~~~\n## not a section either\n~~~"
    path.write_bytes(
        (f"# Oven *guide*\n\nSet up:\n\n{fenced}\n\n    # indented code\n\nStone `steel`\n===\n\n{tilde}\n")
        .replace("\n", "\r\n")
        .encode()
    )
    sections = read_document(path, "oven.md")
    assert [(s.title, s.text) for s in sections] == [
        ("Oven guide", f"Set up:\n\n{fenced}\n\n    # indented code"),
        ("Oven guide: Stone steel", tilde),
    ]


def test_html_sections_skip_scripts(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>x</title><script>var secret = 1;</script></head><body>"
        "<h1>Stones</h1><p>Preheat for an hour.</p><h2>Steel</h2><ul><li>Faster</li><li>Heavier</li></ul></body></html>"
    )
    sections = read_document(path, "page.html")
    assert [s.title for s in sections] == ["Stones", "Stones: Steel"]
    assert "secret" not in " ".join(s.text for s in sections)
    assert sections[1].text.splitlines() == ["Faster", "Heavier"]


def test_pdf_pages_are_cited_by_page() -> None:
    sections = read_document(PROJECT_ROOT / "data" / "docs" / "pizza-oven-guide.pdf", "pizza-oven-guide.pdf")
    assert [s.source for s in sections] == [f"pizza-oven-guide.pdf#page={n}" for n in range(1, 5)]
    assert sections[1].title.endswith("Wood-Fired Ovens")


def test_unreadable_and_empty_pdfs(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 this is not really a pdf")
    with pytest.raises(DocumentError, match="not a readable PDF"):
        read_document(broken, "broken.pdf")
    blank = tmp_path / "blank.pdf"
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    with open(blank, "wb") as file:
        writer.write(file)
    with pytest.raises(DocumentError, match="no extractable text"):
        read_document(blank, "blank.pdf")


def test_fts_query_cannot_inject_syntax() -> None:
    assert (
        fts_query('mushroom AND "pineapple" NEAR(x) -crust*') == '"mushroom" OR "pineapple" OR "near" OR "x" OR "crust"'
    )
    assert fts_query("the and of") is None


def test_reciprocal_rank_fusion() -> None:
    fused = rrf([[1, 2, 3], [3, 1, 4]], k=60)
    assert [row for row, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


@pytest.mark.parametrize("mode", ["text", "vectors", "hybrid"])
async def test_search_modes_find_the_right_document(local_index: Path, mode: str) -> None:
    results = await get_services().retriever.search("mushroom pineapple", top=2, mode=mode, semantic_ranker=None)  # type: ignore[arg-type]
    assert results[0].source == "mushroom-pineapple.md"
    assert len(results) == 2
    scores = [result.score for result in results]
    assert scores == sorted(scores, reverse=True)


async def test_the_index_is_reloaded_when_ingest_replaces_it(local_index: Path, tmp_path: Path) -> None:
    retriever = get_services().retriever
    assert await retriever.check() == "5 chunks"
    more = write_documents(tmp_path / "more", {"focaccia.md": "# Focaccia\n\nDimpled olive oil bread.\n"})
    await build_index(more, local_index, prune=False)
    assert await retriever.check() == "6 chunks"
    [result] = await retriever.search("dimpled olive oil bread", top=1, mode="text", semantic_ranker=None)
    assert result.source == "focaccia.md"


async def test_missing_index_and_other_embedding_model(local_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = LocalIndexRetriever(local_index.with_name("absent.sqlite"), get_services().openai.embedder)
    with pytest.raises(UpstreamError, match=r"python -m chat\.ingest") as raised:
        await missing.search("x", top=1, mode="text", semantic_ranker=None)
    assert raised.value.code == "index_missing"
    monkeypatch.setenv("LOCAL_EMBEDDING_MODEL", "another-model")
    get_settings.cache_clear()
    other = LocalIndexRetriever(local_index, build_openai_clients(get_settings(), None).embedder)
    assert (await other.search("mushroom", top=1, mode="text", semantic_ranker=None))[0].source
    with pytest.raises(UpstreamError, match="another embedding model") as raised:
        await other.search("mushroom", top=1, mode="hybrid", semantic_ranker=None)
    assert raised.value.code == "index_mismatch"


async def test_reingest_embeds_only_what_changed(tmp_path: Path, embedding_script: EmbeddingScript) -> None:
    index = get_settings().local_search.index_path
    docs = write_documents(tmp_path / "docs")
    await build_index(docs, index)
    first = sum(len(call["input"]) for call in embedding_script.calls)
    assert first == 5
    ids_before = set(_ids(index))
    await build_index(docs, index)
    assert sum(len(call["input"]) for call in embedding_script.calls) == first, "nothing changed, nothing embedded"
    (docs / "margherita.md").write_text("# Margherita\n\nNow with buffalo mozzarella.\n")
    (docs / "oven.txt").unlink()
    await build_index(docs, index)
    assert sum(len(call["input"]) for call in embedding_script.calls) == first + 1
    assert set(_ids(index)) == ids_before - {chunk_id("oven.txt", 0)}, "stable: updated in place, removed when gone"
    assert all(call["extra_body"] == {"input_type": "passage"} for call in embedding_script.calls)


def _ids(index: Path) -> list[str]:
    with closing(sqlite3.connect(index)) as connection:
        return [row[0] for row in connection.execute("SELECT id FROM chunks")]


def test_bad_input_gets_a_clear_message_and_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.docx").write_text("unsupported")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "ok.md").write_text("# Fine\n\nText.\n")
    (broken / "bad.pdf").write_bytes(b"not a pdf")
    cases = [
        ([str(tmp_path / "absent")], "no such file or folder"),
        ([str(empty)], "has no documents to ingest"),
        ([str(broken)], "not a readable PDF"),
    ]
    index = get_settings().local_search.index_path
    for arguments, message in cases:
        assert main(arguments) == EXIT_ERROR
        assert message in capsys.readouterr().err
    assert not index.exists(), "nothing was written"
    assert not list(index.parent.glob("*.tmp-*")), "no temporary file left behind"


async def test_an_interrupted_run_leaves_the_previous_index(
    tmp_path: Path, embedding_script: EmbeddingScript, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = get_settings().local_search.index_path
    docs = write_documents(tmp_path / "docs")
    await build_index(docs, index)
    before = index.read_bytes()
    (docs / "new.md").write_text("# New\n\nA new document.\n")

    async def interrupted(**kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(embedding_script, "create", interrupted)
    with pytest.raises(KeyboardInterrupt):
        await build_index(docs, index)
    assert index.read_bytes() == before
    assert [name for name in os.listdir(index.parent) if ".tmp-" in name] == []


def test_collect_files_names_documents_relative_to_the_folder(tmp_path: Path) -> None:
    docs = write_documents(tmp_path / "docs")
    (docs / "sub").mkdir()
    (docs / "sub" / "extra.md").write_text("# Extra\n\nMore.\n")
    (docs / ".hidden.md").write_text("# Hidden\n")
    files = collect_files([docs])
    assert sorted(files) == sorted([*TEST_DOCUMENTS, "sub/extra.md"])
    chunks = chunk_documents(files, size=200, overlap=40)
    assert chunk_id("sub/extra.md", 0) in {chunk.id for chunk in chunks}
    with pytest.raises(IngestError):
        collect_files([tmp_path / "nope"])


def test_evaluation_set_is_well_formed() -> None:
    questions = load_questions(PROJECT_ROOT / "data" / "eval" / "questions.jsonl")
    documents = {path.name for path in (PROJECT_ROOT / "data" / "docs").iterdir()}
    assert len(questions) >= 25
    assert all(question.expected <= documents for question in questions)
    assert first_relevant_rank(["a.md", "b.md"], frozenset({"b.md"})) == 2


AZURE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_=-]{0,1023}")


def test_chunk_ids_are_unique_stable_keys(tmp_path: Path, embedding_script: EmbeddingScript) -> None:
    """Names that share a slug get different ids; an id depends on the name and position only."""
    names = ["pizza.dough.md", "pizza_dough.md", "pâte à pizza.md", "日本.md", "_notes.md", "x" * 200 + ".md"]
    docs = write_documents(tmp_path / "docs", {name: f"# {name}\n\nText of {name}.\n" for name in names})
    chunks = chunk_documents(collect_files([docs]), size=200, overlap=40)
    ids = [chunk.id for chunk in chunks]
    assert len(set(ids)) == len(names)
    assert all(AZURE_KEY.fullmatch(chunk_id) for chunk_id in ids), ids
    assert chunk_id("pizza.dough.md", 0).startswith("pizza_dough_md-"), "readable"
    (docs / "pizza.dough.md").write_text("# Other text\n\nSame name, same position, same id.\n")
    assert [chunk.id for chunk in chunk_documents(collect_files([docs]), size=200, overlap=40)] == ids

    assert main([str(docs)]) == 0
    stored = _ids(get_settings().local_search.index_path)
    assert sorted(stored) == sorted(ids), "both pizza dough documents are in the index"


def test_two_files_with_one_document_name_stop_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = write_documents(tmp_path / "a", {"notes.md": "# A\n\nOne.\n"})
    second = write_documents(tmp_path / "b", {"notes.md": "# B\n\nTwo.\n"})
    assert main([str(first / "notes.md"), str(second / "notes.md")]) == EXIT_ERROR
    assert "would both be the document 'notes.md'" in capsys.readouterr().err
    assert sorted(collect_files([first / "notes.md", first])) == ["notes.md"], "the same file twice is one document"


@pytest.mark.parametrize("damage", ["index without its chunks table", "index folder is a file"])
def test_a_local_index_that_cannot_be_written_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    index = get_settings().local_search.index_path
    if damage == "index folder is a file":
        (tmp_path / "taken").write_text("not a folder")
        index = tmp_path / "taken" / "index.sqlite"
        monkeypatch.setenv("LOCAL_INDEX_PATH", str(index))
        get_settings.cache_clear()
    else:  # the meta table of a current index, and nothing else
        model = build_openai_clients(get_settings(), None).embedder.model
        with closing(sqlite3.connect(index)) as connection, connection:
            connection.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            connection.executemany(
                "INSERT INTO meta VALUES (?, ?)", [("schema_version", SCHEMA_VERSION), ("embedding_model", model)]
            )
    before = index.read_bytes() if index.is_file() else None

    assert main([str(write_documents(tmp_path / "docs"))]) == EXIT_ERROR

    error = capsys.readouterr().err
    assert error.startswith("ingest: ") and error.count("\n") == 1, error
    assert "Traceback" not in error
    assert (index.read_bytes() if index.is_file() else None) == before
    assert not list(tmp_path.rglob("*.tmp-*")), "no temporary file left behind"
