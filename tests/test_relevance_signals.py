"""benchmarks.relevance_signals: the gate's decision, its check in another wording, and no answer call."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.relevance_signals import signals, summary
from chat.answer_eval import Case
from chat.prompts import ANSWERABLE_CHECK
from tests.sdk_fakes import ChatScript, EmbeddingScript

RECIPE = frozenset({"mushroom-pineapple.md"})
FACTS = (("mushroom",),)
WORDING = "These words are in no source: {missing}. " + ANSWERABLE_CHECK


def check_messages(chat_script: ChatScript) -> list[str]:
    return [call["messages"][-1]["content"] for call in chat_script.calls if not call.get("stream")]


@pytest.mark.parametrize(
    ("question", "reply", "decision", "missing"),
    [
        ("Can I grill the mushrooms for the pineapple pizza?", "Yes", "check: Yes", ["grill"]),
        ("Can I grill the mushrooms for the pineapple pizza?", " No.", "check: No.", ["grill"]),
        (
            "Can I grill the mushrooms for the pineapple pizza on a barbecue?",
            "Yes",
            "check: Yes",
            ["grill", "barbecue"],
        ),
        ("Can I brown the mushrooms for the pineapple pizza?", "Yes", "yes-or-no rule", []),
        ("What is the capital of Australia?", "Yes", "no source shares a word with it", ["capital", "australia"]),
    ],
)
async def test_each_question_gets_the_gates_decision_and_the_words_its_sources_lack_without_an_answer_call(
    local_index: Path,
    chat_script: ChatScript,
    embedding_script: EmbeddingScript,
    question: str,
    reply: str,
    decision: str,
    missing: list[str],
) -> None:
    chat_script.check_text = reply
    row = await signals(Case(question, FACTS, RECIPE), WORDING)

    stops = decision in {"check: No.", "no source shares a word with it"}
    assert (row.decision, row.passes, row.missing) == (decision, not stops, missing)
    assert not chat_script.answer_calls, "the answer is never generated"
    if decision.startswith("check"):
        [check] = check_messages(chat_script)
        line = f"These words are in no source: {', '.join(missing)}. {ANSWERABLE_CHECK}"
        assert check.endswith(f"\n\nQuestion: {question}\n\n{line}")
    else:
        assert check_messages(chat_script) == []
    assert 0 < row.best_score <= 1.0, "the best vectors-mode score of the index"


async def test_a_question_whose_sources_lack_no_word_is_asked_the_apps_own_check(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript
) -> None:
    question = "How do I brown the mushrooms for the pineapple pizza?"
    row = await signals(Case(question, FACTS, RECIPE), WORDING)

    [check] = check_messages(chat_script)
    assert (row.decision, row.missing) == ("check: Yes", [])
    assert check.endswith(f"\n\nQuestion: {question}\n\n{ANSWERABLE_CHECK}")


async def test_words_only_in_the_prompts_frame_count_as_missing(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript
) -> None:
    """The source names, the markers and the citation line are not sources: "cite", "fact" and
    "sources" are lacking like any other word no passage holds."""
    question = "Can I cite a fact about the sources of the pineapple pizza?"
    row = await signals(Case(question, FACTS, RECIPE), WORDING)

    assert row.missing == ["cite", "fact", "sources"]


async def test_the_summary_counts_both_kinds_and_gives_the_score_ranges(
    local_index: Path, chat_script: ChatScript, embedding_script: EmbeddingScript
) -> None:
    answerable = await signals(Case("Can I brown the mushrooms for the pineapple pizza?", FACTS, RECIPE), WORDING)
    stopped = await signals(Case("What is the capital of Australia?"), WORDING)
    through = await signals(Case("Can I grill the mushrooms for the pineapple pizza?"), WORDING)
    low, high = sorted([stopped.best_score, through.best_score])

    assert summary("set.jsonl", [answerable, stopped, through]) == [
        "set.jsonl: answerable let through 1/1, unanswerable stopped 1/2",
        f"  best vectors score: answerable {answerable.best_score:.4f}..{answerable.best_score:.4f}, "
        f"unanswerable {low:.4f}..{high:.4f}, "
        f"unanswerable the gate lets through {through.best_score:.4f}..{through.best_score:.4f}",
    ]
