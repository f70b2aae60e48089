"""Quality of the configured stack: retrieval (hit rate, MRR), then answers (correct, cited, refused).

    python -m chat.evaluate [--questions data/eval/questions.jsonl] [--k 5] [--answers SET [SET ...]]
    python -m chat.evaluate --skip-answers     # retrieval only, no model needed

Retrieval: each line of the question set is {"question": ..., "expected": [document file names]};
a result counts when its document (its citation without ``#page=N``) is expected. The questions
go to the retriever as they are, without the model's query rewriting, so the figures measure
retrieval alone.

Answers: chat.answer_eval runs each question of each set through the real pipeline against whatever
model is configured, and prints one table per set: by default the tuning set and the held-out set
(answer_eval.DEFAULT_SETS). In local mode the servers the configuration needs are started if they are
not running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from chat import answer_eval
from chat.events import RetrievalMode
from chat.localstack import StartupError, running, servers_to_start
from chat.providers.retriever import Retriever
from chat.services import close_services, get_services
from chat.settings import PROJECT_ROOT, get_settings

DEFAULT_QUESTIONS = PROJECT_ROOT / "data" / "eval" / "questions.jsonl"
CUTOFFS = (1, 3, 5)


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    expected: frozenset[str]


@dataclass(frozen=True, slots=True)
class Scores:
    mode: str
    hits: dict[int, float]
    mrr: float


def load_questions(path: Path) -> list[Question]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Question(item["question"], frozenset(item["expected"])) for item in map(json.loads, lines)]


def first_relevant_rank(documents: list[str], expected: frozenset[str]) -> int | None:
    return next((rank for rank, document in enumerate(documents, start=1) if document in expected), None)


async def score(retriever: Retriever, questions: list[Question], mode: RetrievalMode, k: int) -> Scores:
    ranks: list[int | None] = []
    for question in questions:
        results = await retriever.search(question.text, top=k, mode=mode, semantic_ranker=None)
        ranks.append(first_relevant_rank([result.source.split("#")[0] for result in results], question.expected))
    hits = {cutoff: sum(rank is not None and rank <= cutoff for rank in ranks) / len(ranks) for cutoff in CUTOFFS}
    mrr = sum(1 / rank for rank in ranks if rank is not None) / len(ranks)
    return Scores(mode, hits, mrr)


def table(scores: list[Scores], k: int, count: int) -> str:
    """A Markdown table, ready for the README."""

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    header = ["mode", *(f"hit@{cutoff}" for cutoff in CUTOFFS), f"MRR@{k}"]
    rows = [row([s.mode, *(f"{s.hits[cutoff]:.2f}" for cutoff in CUTOFFS), f"{s.mrr:.3f}"]) for s in scores]
    return "\n".join([f"{count} questions", row(header), row(["---"] * len(header)), *rows])


async def evaluate(questions: list[Question], k: int) -> list[Scores]:
    retriever = get_services().retriever
    try:
        return [await score(retriever, questions, mode, k) for mode in get_args(RetrievalMode)]
    finally:
        await close_services()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    parser.add_argument("--k", type=int, default=max(CUTOFFS), help="results retrieved per question")
    parser.add_argument(
        "--answers", type=Path, nargs="+", default=list(answer_eval.DEFAULT_SETS), help="answer evaluation sets"
    )
    parser.add_argument("--skip-answers", action="store_true", help="evaluate retrieval only (no model)")
    args = parser.parse_args(argv)
    questions = load_questions(args.questions)
    try:
        with running(servers_to_start(get_settings(), chat_model=not args.skip_answers)):
            scores = asyncio.run(evaluate(questions, args.k))
            print("Retrieval\n" + table(scores, args.k, len(questions)), flush=True)
            if not args.skip_answers:
                for answer_set in args.answers:
                    print(f"\nAnswers to {answer_set.name} (the pipeline, the configured model)", flush=True)
                    report = asyncio.run(answer_eval.evaluate(answer_eval.load(answer_set), progress=True))
                    print(report.table(), flush=True)
    except StartupError as error:
        print(f"evaluate: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
