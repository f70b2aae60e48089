"""The relevance gate (chat.relevance) and the answer grading of the evaluation (chat.answer_eval)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat.answer_eval import DEFAULT_SETS, has_fact, load, nearest_rank, refuses
from chat.events import SearchResult
from chat.relevance import asks_yes_or_no, covers, covers_all, uncovered
from chat.settings import PROJECT_ROOT

DOUGH = SearchResult(
    id="1",
    title="Neapolitan-Style Pizza Dough > Ingredients",
    source="neapolitan-dough.md",
    content="600 g tipo 00 flour, 390 g cool water (65% hydration), 18 g fine sea salt, preheating the oven.",
)


@pytest.mark.parametrize(
    "question",
    [
        "What hydration does the Neapolitan dough use?",
        "how much SALT?",
        "How long should I preheat it?",  # preheat ~ preheating
        "and what about it?",  # nothing distinctive to judge: let through, the model sees the sources
    ],
)
def test_a_question_sharing_a_distinctive_word_with_a_source_passes(question: str) -> None:
    assert covers(question, [DOUGH])


@pytest.mark.parametrize("question", ["What is the capital of Australia?", "Who won the 1998 World Cup?"])
def test_a_question_sharing_no_distinctive_word_is_stopped(question: str) -> None:
    assert not covers(question, [DOUGH])


def test_no_sources_cover_nothing() -> None:
    assert not covers("What hydration does the Neapolitan dough use?", [])


@pytest.mark.parametrize(
    ("answer", "options", "found"),
    [
        ("It uses 65 % hydration [neapolitan-dough.md].", ["65%"], True),
        ("Keep it for up to Three Days.", ["3 days", "three days"], True),
        ("Bake for 18 minutes.", ["8 min"], False),  # a number matches only whole
        ("Bake for 8 minutes.", ["8 min"], True),
        ("Use 0.5 to 1% yeast.", ["5 to 1"], False),
        ("Fold 4 times, at 30-minute intervals.", ["30 min"], True),  # a number's hyphen to its unit
        ("Bake for 22-25 minutes.", ["25"], True),  # a hyphen between numbers stays
        ("Heat the oven to 250 °C.", ["25"], False),  # whole on the right too
    ],
)
def test_facts_are_matched_loosely_but_numbers_whole(answer: str, options: list[str], found: bool) -> None:
    assert has_fact(answer, options) is found


@pytest.mark.parametrize(
    ("answer", "refusal"),
    [
        ("I don't know, the documents do not say.", True),
        ("The documents don't cover that.", True),
        ("That is not mentioned in the sources.", True),
        ("There is no information about wine.", True),
        ("Canberra is the capital of Australia.", False),
        ("Bake it for 10 minutes [hawaiian-pizza.md].", False),
    ],
)
def test_refusals_are_recognised(answer: str, refusal: bool) -> None:
    assert refuses(answer) is refusal


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 21)]
    assert nearest_rank(values, 0.5) == 10.0
    assert nearest_rank(values, 0.95) == 19.0
    assert nearest_rank([3.0], 0.95) == 3.0


@pytest.mark.parametrize("path", DEFAULT_SETS, ids=lambda path: path.name)
def test_each_answer_set_asks_enough_of_both_kinds_and_cites_real_documents(path: Path) -> None:
    documents = {document.name for document in (PROJECT_ROOT / "data" / "docs").iterdir()}
    cases = load(path)
    assert sum(case.answerable for case in cases) >= 16
    assert sum(not case.answerable for case in cases) >= 6
    assert len({case.question for case in cases}) == len(cases), "no question twice"
    for case in cases:
        assert {name.split("#")[0] for name in case.cite} <= documents, case.question
        assert case.answerable == bool(case.cite), case.question


def test_the_held_out_set_asks_nothing_the_tuned_set_asks() -> None:
    tuned, held_out = ({case.question.lower() for case in load(path)} for path in DEFAULT_SETS)
    assert not tuned & held_out


@pytest.mark.parametrize(
    ("question", "yes_or_no"),
    [
        ("Can I thaw frozen dough in the microwave?", True),
        ("My oven only reaches 250 degrees. Should I still use tipo 00 flour?", True),
        ("Is a stone or a steel better?", True),
        ("Isn't the float test reliable?", True),
        ("Won't the cheese burn?", True),
        ("Hi, can I freeze dough?", True),
        ("Dough: can I freeze it?", True),
        ("Can I freeze the bases? For how long?", True),
        ("How long should I preheat it?", False),
        ("Can you suggest a pizza with mushroom and pineapple?", False),  # a request
        ("Could you tell me how long to bake it?", False),
        ("Do the float test.", False),  # not a question
        ("Candied fruit, how much?", False),  # "can" only as a word's start
    ],
)
def test_a_question_answered_yes_or_no_is_told_by_how_a_sentence_opens(question: str, yes_or_no: bool) -> None:
    assert asks_yes_or_no(question) == yes_or_no


def test_covers_all_needs_every_distinctive_word_of_the_question() -> None:
    assert covers_all("Can I preheat the oven with fine sea salt?", [DOUGH])
    assert not covers_all("Can I preheat the oven with fine sea salt and a grill?", [DOUGH])
    assert not covers_all("Can I do that?", [DOUGH]), "no distinctive word: nothing says it is covered"


def test_uncovered_lists_the_distinctive_words_no_source_holds_once_in_order() -> None:
    question = "Can I preheat a Chicago deep-dish pan, or a chicago grill, with sea salt?"
    assert uncovered(question, [DOUGH]) == ["chicago", "deep", "dish", "pan", "grill"]
    assert uncovered("How much salt, and what hydration?", [DOUGH]) == []
    assert uncovered("Any salt?", []) == ["salt"]
    assert uncovered("Grill it, or is grilling worse?", [DOUGH]) == ["grill", "grilling", "worse"]
