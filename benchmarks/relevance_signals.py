"""What tells a question the documents answer from one they do not: the relevance gate's signals, per question.

    python -m benchmarks.relevance_signals          # the app's check wording
    python -m benchmarks.relevance_signals --check "The sources above never mention: {missing}. \\
        Do the sources above answer the question? Reply yes or no."

Every question of the answer evaluation sets (data/eval/answers*.jsonl) goes through the real
pipeline (the app's settings, the configured model, the relevance gate on) up to the gate's
decision. The answer itself is not generated, so a question costs one model call at most (a
first question is not rewritten unless CHAT_QUERY_REWRITE=always). For each question it prints:
- the gate's decision: the pipeline's reason when it stopped before asking the model ("nothing
  was found", "no source shares a word with it"), the yes-or-no rule, or the model's check and
  its reply;
- the question's distinctive words that the sources the model reads lack (all of them when the
  gate stopped before asking the model);
- the best vectors-mode score of any chunk (for the local index, the e5 cosine): the signal a
  score threshold would gate on.
Then, per set, how many answerable questions the gate lets through and how many unanswerable ones
it stops, and the score ranges of both. Used for the README's "Relevance gate" figures.

``--check`` asks the check in another wording. It must still ask for yes or no: the pipeline
stops on a reply that starts with "no". ``{missing}`` in it stands for the lacking words; a
question whose sources lack none is asked the app's wording.
"""

from __future__ import annotations

import argparse
import asyncio
import re
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

# What the relevance check adds to the answer call's last message.
CHECK_SUFFIX = prompts.answerability_check("")
_SOURCES_BLOCK = re.compile(r"^<<SOURCES \w+>>$(.*?)^<<END SOURCES \w+>>$", re.MULTILINE | re.DOTALL)
_SOURCE_NAME = re.compile(r"^\[[^\]\n]*\]", re.MULTILINE)


def sources_read(question_message: str) -> list[SearchResult]:
    """The sources' titles and passages as the model reads them, from the answer call's last
    message: the text the gate's word test looks at. prompts.sources_block opens each source at
    the margin with its ``[name]`` and title and indents its lines; the block's markers, the
    names and the citation line around it are left out."""
    block = _SOURCES_BLOCK.search(question_message)
    text = _SOURCE_NAME.sub("", block.group(1)) if block else ""
    return [SearchResult(id="", title="", source="", content=text)]


class CheckOnly(ChatModel):
    """The configured model for one question: its check asked in ``wording``, and no answer written."""

    def __init__(self, model: ChatModel, question: str, wording: str) -> None:
        super().__init__(
            model.client,
            model.model,
            model.timeout_seconds,
            kind=model.kind,
            context_tokens=model.context_tokens,
            sources_tokens=model.sources_tokens,
        )
        self.question = question
        self.wording = wording
        self.verdict: str | None = None
        self.missing: list[str] = []
        self.answered = False

    async def complete(
        self, messages: list[ChatCompletionMessageParam], *, temperature: float, max_tokens: int
    ) -> Completion:
        last = str(messages[-1].get("content"))
        if not last.endswith(CHECK_SUFFIX):
            return await super().complete(messages, temperature=temperature, max_tokens=max_tokens)
        question_message = last.removesuffix(CHECK_SUFFIX)
        self.missing = relevance.uncovered(self.question, sources_read(question_message))
        wording = self.wording if self.missing or "{missing}" not in self.wording else prompts.ANSWERABLE_CHECK
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
        self.answered = True
        return
        yield  # makes this an async generator that yields nothing


@dataclass(frozen=True, slots=True)
class Signals:
    case: answer_eval.Case
    decision: str
    passes: bool
    missing: list[str]
    best_score: float


async def signals(case: answer_eval.Case, wording: str) -> Signals:
    services = get_services()
    model = CheckOnly(services.openai.chat, case.question, wording)
    request = ChatRequest(messages=[Message(role="user", content=case.question)])
    stopped: str | None = None
    async for event in pipeline.answer(
        request, model, services.retriever, services.settings.answering, relevance_gate=True
    ):
        if isinstance(event, Completed):
            stopped = next((str(t.description) for t in event.thoughts if t.title == pipeline.GATE_THOUGHT), None)
    if model.verdict is not None:
        decision, missing = f"check: {model.verdict}", model.missing
    elif stopped is not None:  # before the model was asked: no source shares a word with the question
        decision, missing = stopped, relevance.uncovered(case.question, [])
    elif model.answered and relevance.asks_yes_or_no(case.question):  # all its words are in the sources
        decision, missing = "yes-or-no rule", []
    else:
        raise RuntimeError(f"the pipeline let {case.question!r} through without a check this tool recognises")
    best = await services.retriever.search(case.question, top=1, mode="vectors", semantic_ranker=None)
    return Signals(case, decision, stopped is None, missing, best[0].score if best else 0.0)


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
