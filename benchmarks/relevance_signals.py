"""What tells a question the documents answer from one they do not: the relevance gate's signals, per question.

    python -m benchmarks.relevance_signals                     # the app's check wording
    python -m benchmarks.relevance_signals --check "The sources never mention: {missing}. Do they answer it?"

Every question of the answer evaluation sets (data/eval/answers*.jsonl) goes through the real
pipeline (the app's settings, the configured model, the relevance gate on) up to the gate's
decision; the answer itself is not generated, so a question costs one model call at most. For
each question it prints:
- how the gate decided: nothing found, no shared word, the yes-or-no rule, or the model's check
  and its verdict (with ``--check``, in another wording: ``{missing}`` stands for the question's
  words its sources lack, and a question whose sources hold all its words gets the app's wording);
- the question's words that the sources the model reads lack;
- the best vectors-mode score of any chunk (for the local index, the e5 cosine): the signal a
  score threshold would gate on.
Then, per set, how many answerable questions the gate lets through and how many unanswerable ones
it stops, and the score ranges of both. Used for the README's "Relevance gate" figures.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path

from openai.types.chat import ChatCompletionMessageParam

from chat import answer_eval, pipeline, prompts, relevance
from chat.events import Completed, SearchResult
from chat.localstack import running, servers_to_start
from chat.protocol import ChatRequest, Message, Overrides
from chat.providers.llm import ChatModel, Completion, StreamOutcome
from chat.services import close_services, get_services
from chat.settings import get_settings

# What the pipeline decided without asking the model, by the reason it gives (pipeline.GATE_THOUGHT).
GATE_REASONS = {
    "nothing was found": "nothing found",
    "no source shares a word with it": "no shared word",
    "the model found no answer in them": "check: no",
}


def missing_words(question_message: str) -> list[str]:
    """The distinctive words of the question that its sources lack, from the answer call's last
    message (prompts.answer_question: the sources, then the question on its own line)."""
    sources, _, question = question_message.rpartition("\n\nQuestion: ")
    return relevance.uncovered(question, [SearchResult(id="", title="", source="", content=sources)])


class CheckOnly(ChatModel):
    """The configured model, with the check's question line replaced and no answer written."""

    def __init__(self, model: ChatModel, check: str) -> None:
        vars(self).update(vars(model))  # the same client, model name and limits
        self.check = check
        self.verdict: str | None = None
        self.missing: list[str] = []

    async def complete(
        self, messages: list[ChatCompletionMessageParam], *, temperature: float, max_tokens: int
    ) -> Completion:
        last = str(messages[-1].get("content"))
        if not last.endswith(prompts.ANSWERABLE_CHECK):
            return await super().complete(messages, temperature=temperature, max_tokens=max_tokens)
        question_message = last.removesuffix(prompts.ANSWERABLE_CHECK).rstrip()
        self.missing = missing_words(question_message)
        wording = self.check if self.missing or "{missing}" not in self.check else prompts.ANSWERABLE_CHECK
        line = wording.replace("{missing}", ", ".join(self.missing))
        check: ChatCompletionMessageParam = {"role": "user", "content": f"{question_message}\n\n{line}"}
        completion = await super().complete([*messages[:-1], check], temperature=temperature, max_tokens=max_tokens)
        self.verdict = completion.text.strip()
        return completion

    async def stream(
        self,
        messages: list[ChatCompletionMessageParam],
        *,
        temperature: float,
        max_tokens: int,
        outcome: StreamOutcome,
    ) -> AsyncGenerator[str, None]:
        """No answer: the gate has let the question through, which is all this measures."""
        self.missing = missing_words(str(messages[-1].get("content")))
        return
        yield  # makes this an async generator that yields nothing


@dataclass(frozen=True, slots=True)
class Signals:
    case: answer_eval.Case
    decision: str
    passes: bool
    missing: list[str]
    best_score: float


async def signals(case: answer_eval.Case, check: str) -> Signals:
    services = get_services()
    model = CheckOnly(services.openai.chat, check)
    request = ChatRequest(messages=[Message(role="user", content=case.question)])
    stopped: str | None = None
    async for event in pipeline.answer(
        request, model, services.retriever, services.settings.answering, relevance_gate=True
    ):
        if isinstance(event, Completed):
            stopped = next((str(t.description) for t in event.thoughts if t.title == pipeline.GATE_THOUGHT), None)
    if stopped is not None:
        decision = GATE_REASONS.get(stopped, stopped)
    else:
        decision = "yes-or-no rule" if model.verdict is None else f"check: {model.verdict}"
    best = await services.retriever.search(case.question, top=1, mode="vectors", semantic_ranker=None)
    passes = stopped is None
    return Signals(case, decision, passes, model.missing, best[0].score if best else 0.0)


def summary(name: str, rows: Sequence[Signals]) -> list[str]:
    answerable = [row for row in rows if row.case.answerable]
    unanswerable = [row for row in rows if not row.case.answerable]
    let_through = [row for row in unanswerable if row.passes]

    def scores(group: Sequence[Signals]) -> str:
        values = sorted(row.best_score for row in group)
        return f"{values[0]:.4f}..{values[-1]:.4f}" if values else "-"

    return [
        f"{name}: answerable let through {sum(row.passes for row in answerable)}/{len(answerable)}, "
        f"unanswerable stopped {len(unanswerable) - len(let_through)}/{len(unanswerable)}",
        f"  best vectors score: answerable {scores(answerable)}, unanswerable {scores(unanswerable)}, "
        f"unanswerable the gate lets through {scores(let_through)}",
    ]


async def run(sets: Sequence[Path], check: str) -> list[str]:
    lines: list[str] = []
    try:
        for path in sets:
            rows = []
            for case in answer_eval.load(path):
                row = await signals(case, check)
                rows.append(row)
                kind = "answerable" if case.answerable else "UNANSWERABLE"
                print(
                    f"{path.name}\t{kind}\t{row.decision}\t{row.best_score:.4f}\t{' '.join(row.missing) or '-'}\t"
                    f"{case.question}",
                    flush=True,
                )
            lines += summary(path.name, rows)
    finally:
        await close_services()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", type=Path, nargs="+", default=list(answer_eval.DEFAULT_SETS))
    parser.add_argument("--check", default=prompts.ANSWERABLE_CHECK, help="the check's question line")
    args = parser.parse_args(argv)
    print(f"top {Overrides().top}, check: {args.check}", flush=True)
    with running(servers_to_start(get_settings(), chat_model=True)):
        lines = asyncio.run(run(args.sets, args.check))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
