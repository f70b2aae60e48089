"""benchmarks.relevance_signals: the gate's decision, its check in another wording, and no answer call."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.relevance_signals import signals, summary
from chat.answer_eval import Case
from chat.prompts import ANSWERABLE_CHECK
from tests.sdk_fakes import ChatScript, EmbeddingScript

RECIPE = frozenset({"mushroom-pineapple.md"})
WORDING = "These words are in no source: {missing}. " + ANSWERABLE_CHECK


@pytest.mark.parametrize(
    ("question", "reply", "decision", "missing"),
    [
        ("Can I grill the mushrooms for the pineapple pizza?", "Yes", "check: Yes", ["grill"]),
        ("Can I grill the mushrooms for the pineapple pizza?", "No", "check: no", ["grill"]),
        ("Can I brown the mushrooms for the pineapple pizza?", "Yes", "yes-or-no rule", []),
        ("What is the capital of Australia?", "Yes", "no shared word", []),
    ],
)
async def test_each_question_gets_the_gates_decision_without_an_answer_call(
    local_index: Path,
    chat_script: ChatScript,
    embedding_script: EmbeddingScript,
    question: str,
    reply: str,
    decision: str,
    missing: list[str],
) -> None:
    chat_script.check_text = reply
    row = await signals(Case(question, (("mushroom",),), RECIPE), WORDING)

    stops = decision in {"check: no", "no shared word"}
    assert (row.decision, row.passes, row.missing) == (decision, not stops, missing)
    assert not chat_script.answer_calls, "the answer is never generated"
    checks = [call["messages"][-1]["content"] for call in chat_script.calls if not call.get("stream")]
    if decision.startswith("check"):
        [check] = checks
        assert check.endswith(f"\n\nQuestion: {question}\n\nThese words are in no source: grill. {ANSWERABLE_CHECK}")
    else:
        assert checks == []
    assert 0 < row.best_score <= 1.0, "the best vectors-mode score of the index"


async def test_a_question_whose_sources_lack_no_word_is_asked_the_apps_own_check(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript
) -> None:
    question = "How do I brown the mushrooms for the pineapple pizza?"
    row = await signals(Case(question, (("mushroom",),), RECIPE), WORDING)

    [check] = [call["messages"][-1]["content"] for call in chat_script.calls if not call.get("stream")]
    assert (row.decision, row.missing) == ("check: Yes", [])
    assert check.endswith(f"\n\nQuestion: {question}\n\n{ANSWERABLE_CHECK}")


async def test_the_summary_counts_both_kinds_and_the_scores_of_the_unanswerable_let_through(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript
) -> None:
    answerable = await signals(Case("Can I brown the mushrooms for the pineapple pizza?", (("x",),), RECIPE), WORDING)
    stopped = await signals(Case("What is the capital of Australia?"), WORDING)
    through = await signals(Case("Can I grill the mushrooms for the pineapple pizza?"), WORDING)

    first, scores = summary("set.jsonl", [answerable, stopped, through])
    assert first == "set.jsonl: answerable let through 1/1, unanswerable stopped 1/2"
    assert scores.endswith(f"unanswerable the gate lets through {through.best_score:.4f}..{through.best_score:.4f}")
