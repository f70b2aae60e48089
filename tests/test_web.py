"""The chat page in a real browser: Debian's chromium driven by Playwright, against the local host.

The page comes from the running local host (``local_stack``: chat.http.devserver and the simulated
upstream, tests/conftest.py); the upstream's timing and faults are chosen per question by a
``[[upstream ...]]`` directive (benchmarks/upstream.py). Every state is checked with axe-core
(axe-playwright-python) and photographed under test-artifacts/web/ for a person to look at.

Needs ``apt-get install chromium`` and ``pip install playwright axe-playwright-python``; never
``playwright install``: the browser is the system's.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import axe_playwright_python.sync_playwright as axe_sync
import playwright.sync_api as playwright_sync
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from chat.localstack import running
from chat.settings import PROJECT_ROOT
from tests.conftest import LocalStack, host_server, require

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "web"
VIEWPORT: ViewportSize = {"width": 1000, "height": 800}
# Generous for a loaded 2-core machine; every wait ends as soon as its condition holds.
TIMEOUT_MS = 20_000
# The simulated model's reply, one token per chunk (benchmarks/upstream.py WORDS).
ANSWER_START = "Sure! Here's a pizza with mushroom and pineapple"
FOLLOWUP = "What oven temperature should I use?"

LAST_TURN = ".turn-assistant:last-child"


def unique(text: str) -> str:
    """A question the upstream has not seen, so its per-question attempt counters start at zero."""
    return f"{text} ({uuid.uuid4().hex[:6]})"


# --- Browser fixtures ---


@pytest.fixture
def fresh_services() -> None:
    """Overrides the conftest's async fixture: these tests use no in-process services, and sync
    Playwright keeps its own event loop running while the browser is open, so no other loop may run."""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    require(Path(CHROMIUM).exists(), f"no chromium at {CHROMIUM} (apt-get install chromium)")
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


OpenPage = Callable[..., Page]
# Any Content-Security-Policy violation becomes a console error, which fails the test (open_page);
# the browser's own "Refused to ..." console message does too.
REPORT_CSP_VIOLATIONS = """
  document.addEventListener('securitypolicyviolation', (event) => {
    console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || 'inline code'}`);
  });
"""


@pytest.fixture
def open_page(chromium: Browser, local_stack: LocalStack) -> Iterator[OpenPage]:
    """Opens the chat page in a fresh browser context; fails the test on any script error in the page."""
    contexts = []
    errors: list[str] = []

    def console_error(kind: str, text: str) -> None:
        # The browser logs every HTTP error status; the tests that cause one check the page shows it.
        if kind == "error" and not text.startswith("Failed to load resource"):
            errors.append(text)

    def open_(color_scheme: str = "light", reduced_motion: str = "no-preference", init_script: str = "") -> Page:
        context = chromium.new_context(
            viewport=VIEWPORT,
            color_scheme=color_scheme,  # type: ignore[arg-type]
            reduced_motion=reduced_motion,  # type: ignore[arg-type]
        )
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: console_error(message.type, message.text))
        page.add_init_script(REPORT_CSP_VIOLATIONS)
        if init_script:
            page.add_init_script(init_script)
        page.goto(local_stack.url)
        expect(page.locator("#send")).to_be_enabled()  # the module script has run
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, f"errors in the page: {errors}"


@pytest.fixture
def chat(open_page: OpenPage) -> Page:
    """The chat page in light theme. (Not named ``page``: pytest-playwright, if installed, owns that name.)"""
    return open_page()


# --- Helpers ---


def ask(page: Page, question: str) -> None:
    page.fill("#question", question)
    page.press("#question", "Enter")


def wait_until_settled(page: Page) -> None:
    """The last answer is finished, stopped or failed: no longer busy."""
    page.wait_for_function(
        """() => { const turns = document.querySelectorAll('.turn-assistant');
                   return turns.length > 0 && !turns[turns.length - 1].hasAttribute('aria-busy'); }"""
    )


def answer_text(page: Page, turn: str = LAST_TURN) -> str:
    """The answer as a reader sees it (without the screen-reader-only 'Source:' labels)."""
    return str(
        page.eval_on_selector(
            f"{turn} .answer",
            """(answer) => { const copy = answer.cloneNode(true);
                             copy.querySelectorAll('.visually-hidden').forEach((hidden) => hidden.remove());
                             return copy.textContent; }""",
        )
    )


def answer_longer_than(page: Page, characters: int) -> None:
    # A function, not an expression: Playwright evaluates an expression string with eval, which the page's CSP refuses.
    page.wait_for_function(
        "(n) => document.querySelector('.turn-assistant:last-child .answer').textContent.length > n", arg=characters
    )


def assert_nothing_running(page: Page) -> None:
    """No spinner left: no step still 'started', no busy turn, Send usable, Stop not."""
    assert page.locator('.step[data-status="started"]').count() == 0
    assert page.locator(".turn-assistant[aria-busy]").count() == 0
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#stop")).to_be_disabled()


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), animations="disabled", caret="initial")
    return path


def assert_accessible(page: Page, state: str) -> None:
    """axe-core finds no violation (all rules axe runs by default: WCAG 2.x A/AA and best practices)."""
    results = axe_sync.Axe().run(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"axe-{state}.json").write_text(json.dumps(results.response["violations"], indent=2))
    if results.violations_count:
        print(results.generate_report())
    assert results.violations_count == 0, f"{state}: {results.generate_snapshot()}"


SAMPLE_FRAMES = """() => {
  // Sample the last answer on every animation frame: how many steps, how much text.
  window.frames_ = [];
  const sample = () => {
    const turns = document.querySelectorAll('.turn-assistant');
    const turn = turns[turns.length - 1];
    window.frames_.push({
      steps: turn ? turn.querySelectorAll('.step:not([data-stage="waiting"])').length : 0,
      text: turn ? turn.querySelector('.answer').textContent.length : 0,
      at: performance.now(),
    });
    requestAnimationFrame(sample);
  };
  requestAnimationFrame(sample);
}"""

RECORD_ANNOUNCEMENTS = """() => {
  window.announcements_ = [];
  const live = document.getElementById('announcer');
  // Every text the region was given, even several within one task.
  new MutationObserver((records) => {
    for (const record of records) for (const node of record.addedNodes) window.announcements_.push(node.textContent);
  }).observe(live, { childList: true });
}"""


# --- The page, end to end ---


def test_empty_page_is_accessible_in_both_themes(open_page: OpenPage) -> None:
    for scheme in ("light", "dark"):
        page = open_page(color_scheme=scheme)
        expect(page.get_by_role("banner")).to_contain_text("Chat with your documents")
        expect(page.get_by_role("main")).to_be_visible()
        expect(page.get_by_role("form", name="Ask a question")).to_be_visible()
        expect(page.get_by_role("textbox", name="Your question")).to_be_visible()
        expect(page.get_by_role("button", name="Clear conversation")).to_be_visible()
        assert page.locator("#delay").input_value() == "33"
        assert_accessible(page, f"empty-{scheme}")
        screenshot(page, f"empty-{scheme}")


def test_streamed_answer_shows_steps_then_grows_word_by_word(chat: Page) -> None:
    chat.evaluate(SAMPLE_FRAMES)
    chat.evaluate(RECORD_ANNOUNCEMENTS)
    # All 36 chunks arrive within ~0.1 s; the page shows one per 33 ms tick.
    ask(chat, "Which pizza has mushroom and pineapple? [[upstream ttft=0.3 tps=400 tokens=36]]")
    turn = chat.locator(LAST_TURN)
    expect(turn.locator('.step[data-stage="search"]')).to_contain_text("Found 5 results")
    wait_until_settled(chat)

    frames: list[dict[str, float]] = chat.evaluate("window.frames_")
    with_text = [frame for frame in frames if frame["text"] > 0]
    assert any(frame["steps"] >= 3 and frame["text"] == 0 for frame in frames), "steps were painted before the text"
    assert with_text[0]["steps"] == 4, "all four stages came before the first word"
    lengths = sorted({frame["text"] for frame in with_text})
    assert len(lengths) >= 8, f"the answer grew over several frames, not at once: {lengths}"
    assert with_text[-1]["at"] - with_text[0]["at"] > 300, "36 chunks at 33 ms each take about a second"
    assert answer_text(chat).startswith(ANSWER_START)

    # Once done, the steps are collapsed and can be opened again.
    steps = turn.locator("details.steps")
    expect(steps).not_to_have_attribute("open", "")
    expect(steps.locator("summary")).to_contain_text("Thought process: 4 steps")
    steps.locator("summary").click()
    expect(steps).to_have_attribute("open", "")
    # A first question is searched as asked (CHAT_QUERY_REWRITE=auto rewrites only with history).
    searched = "Searching for your question as asked: Which pizza has mushroom and pineapple?"
    expect(turn.locator('.step[data-stage="query"]')).to_contain_text(searched)
    expect(turn.locator(".results li")).to_have_count(5)
    expect(turn.locator('.step[data-status="done"]')).to_have_count(4)

    # Stage changes and the finished answer are announced; tokens are not.
    announcements: list[str] = chat.evaluate("window.announcements_")
    assert announcements[:3] == [
        "Processing your question",
        f"{searched} [[upstream ttft=0.3 tps=400 tokens=36]]",
        "Found 5 results: 1) Mushroom and pineapple pizza 2) Mushroom and pineapple pizza: Method"
        " 3) Pizza dough: Ingredients 4) Margherita 5) Oven notes",
    ]
    assert announcements[3] == "Generating answer…"
    assert announcements[-1].startswith(f"Answer: {ANSWER_START}")
    assert len(announcements) == 5


def test_citations_and_follow_ups_are_clickable(chat: Page) -> None:
    ask(chat, "Which pizza has mushroom and pineapple? [[upstream tps=400 tokens=12]]")
    wait_until_settled(chat)
    turn = chat.locator(LAST_TURN)
    citation = turn.locator(".citation").first
    expect(citation).to_be_visible()
    cited = citation.get_attribute("data-source")
    assert cited == "mushroom-pineapple.md"
    assert cited in turn.locator(".results code").all_text_contents()

    citation.click()
    panel = turn.locator(".source-panel")
    expect(panel).to_be_visible()
    expect(citation).to_have_attribute("aria-expanded", "true")
    expect(panel.get_by_role("heading", level=4)).to_have_text(f"Source {cited}")
    # The passages of that source, as retrieved from the test index (tests/conftest.py SAMPLE_DOCUMENTS).
    expect(panel.locator(".passage").first).to_contain_text("A meat-free take on the Hawaiian.")
    expect(citation).not_to_have_class(re.compile(r"\bcitation-unknown\b"))
    assert_accessible(chat, "finished-citation-open")
    screenshot(chat, "finished-citation-open")

    panel.get_by_role("button", name="Close").click()
    expect(panel).to_be_hidden()
    expect(citation).to_be_focused()
    expect(citation).to_have_attribute("aria-expanded", "false")

    # A follow-up question is asked with the conversation so far.
    with chat.expect_request("**/api/chat/stream") as request_info:
        turn.get_by_role("button", name=FOLLOWUP).click()
    sent = request_info.value.post_data_json
    assert sent is not None
    assert [message["role"] for message in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"].startswith(ANSWER_START)
    assert sent["messages"][2]["content"] == FOLLOWUP
    assert sent["context"]["overrides"]["suggestFollowupQuestions"] is True
    expect(chat.locator(".turn-user")).to_have_count(2)
    expect(chat.locator(".turn-user .bubble").last).to_have_text(FOLLOWUP)
    wait_until_settled(chat)
    assert answer_text(chat).startswith("Sure!")

    chat.get_by_role("button", name="Clear conversation").click()
    expect(chat.locator(".turn")).to_have_count(0)
    expect(chat.locator("#intro")).to_be_visible()
    expect(chat.locator("#question")).to_be_focused()


def test_stop_ends_the_answer_and_the_server_cancels_the_upstream_call(chat: Page, local_stack: LocalStack) -> None:
    ask(chat, unique("Tell me about mushroom pizza [[upstream ttft=0.2 tps=15 tokens=400]]"))
    answer_longer_than(chat, 20)
    expect(chat.locator("#stop")).to_be_enabled()
    expect(chat.locator(f'{LAST_TURN} .step[data-stage="answer"]')).to_have_attribute("data-status", "started")
    assert_accessible(chat, "mid-stream")
    screenshot(chat, "mid-stream")

    cancelled_before = len(local_stack.upstream_stats()["cancelled"])
    chat.get_by_role("button", name="Stop").click()
    expect(chat.locator(LAST_TURN)).to_contain_text("You stopped this answer.")
    assert_nothing_running(chat)
    expect(chat.locator("#question")).to_be_focused()
    stopped_text = answer_text(chat)

    deadline = time.monotonic() + 5
    while len(local_stack.upstream_stats()["cancelled"]) == cancelled_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(local_stack.upstream_stats()["cancelled"]) > cancelled_before, "the upstream saw the disconnect"
    assert answer_text(chat) == stopped_text, "nothing was added after Stop"
    expect(chat.locator(f'{LAST_TURN} .step[data-stage="answer"]')).to_have_attribute("data-status", "stopped")
    screenshot(chat, "stopped")


def test_escape_stops_and_the_keyboard_does_everything(chat: Page) -> None:
    chat.keyboard.press("Tab")
    expect(chat.locator(".skip-link")).to_be_focused()
    chat.keyboard.press("Enter")
    expect(chat.locator("#question")).to_be_focused()

    chat.keyboard.type("first line")
    chat.keyboard.press("Shift+Enter")
    chat.keyboard.type("second line [[upstream ttft=0.2 tps=15 tokens=400]]")
    assert chat.locator("#question").input_value().startswith("first line\nsecond line")
    expect(chat.locator(".turn")).to_have_count(0)
    chat.keyboard.press("Enter")
    expect(chat.locator(".turn-user .bubble")).to_have_text(re.compile(r"^first line\nsecond line"))
    answer_longer_than(chat, 5)
    chat.keyboard.press("Escape")
    expect(chat.locator(LAST_TURN)).to_contain_text("You stopped this answer.")
    assert_nothing_running(chat)

    # Tab reaches the citation; Enter opens its source; focus is visible all along.
    ask(chat, "Which pizza? [[upstream tps=400 tokens=12]]")
    wait_until_settled(chat)
    chat.locator(f"{LAST_TURN} summary").focus()
    for _ in range(10):
        chat.keyboard.press("Tab")
        if chat.evaluate("document.activeElement.classList.contains('citation')"):
            break
    citation = chat.locator(f"{LAST_TURN} .citation").first
    expect(citation).to_be_focused()
    outline = chat.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "keyboard focus is visible"
    chat.keyboard.press("Enter")
    expect(chat.locator(f"{LAST_TURN} .source-panel")).to_be_visible()


def test_the_non_streaming_toggle_uses_the_json_route(chat: Page) -> None:
    requests: list[str] = []
    chat.on("request", lambda request: requests.append(request.url) if request.method == "POST" else None)
    chat.get_by_text("Settings").click()
    chat.get_by_label("Stream the answer").uncheck()
    assert_accessible(chat, "settings-open")
    screenshot(chat, "settings-open")
    chat.keyboard.press("Escape")
    expect(chat.get_by_label("Stream the answer")).to_be_hidden()
    with chat.expect_response(lambda response: response.url.endswith("/api/chat")) as response_info:
        ask(chat, "Which pizza has mushroom and pineapple? [[upstream tps=400 tokens=12]]")
    assert response_info.value.status == 200
    wait_until_settled(chat)
    assert [url.removeprefix(chat.url.rstrip("/")) for url in requests] == ["/api/chat"]
    turn = chat.locator(LAST_TURN)
    assert answer_text(chat).startswith(ANSWER_START)
    expect(turn.locator(".step")).to_have_count(4)
    expect(turn.locator("details.steps summary")).to_contain_text("Thought process: 4 steps")
    expect(turn.locator(".citation")).to_have_count(1)
    expect(turn.get_by_role("button", name=FOLLOWUP)).to_be_visible()


@pytest.mark.parametrize("streaming", [True, False], ids=["ndjson-error-line", "http-error"])
def test_an_upstream_error_shows_the_message_and_retry_answers(chat: Page, streaming: bool) -> None:
    """The first attempt gets HTTP 400 from the model: an NDJSON error line, or HTTP 502 from /api/chat."""
    if not streaming:
        chat.get_by_text("Settings").click()
        chat.get_by_label("Stream the answer").uncheck()
    ask(chat, unique("Which pizza? [[upstream fail=status status=400 times=1 tps=400 tokens=12]]"))
    alert = chat.locator(LAST_TURN).get_by_role("alert")
    expect(alert).to_contain_text("The answer could not be completed. The model refused the request")
    assert_nothing_running(chat)
    if streaming:
        expect(chat.locator(f'{LAST_TURN} .step[data-stage="answer"]')).to_have_attribute("data-status", "failed")
    name = "error-stream" if streaming else "error-http"
    assert_accessible(chat, name)
    screenshot(chat, name)

    alert.get_by_role("button", name="Retry").click()
    wait_until_settled(chat)
    expect(chat.locator(".turn-assistant")).to_have_count(1)
    expect(chat.locator(LAST_TURN).get_by_role("alert")).to_have_count(0)
    assert answer_text(chat).startswith(ANSWER_START)


def test_dark_theme_answer_and_broken_stream(open_page: OpenPage) -> None:
    page = open_page(color_scheme="dark")
    ask(page, "Which pizza has mushroom and pineapple? [[upstream tps=400 tokens=24]]")
    wait_until_settled(page)
    page.locator(f"{LAST_TURN} .citation").first.click()
    assert_accessible(page, "finished-dark")
    screenshot(page, "finished-dark")

    # The model's stream breaks after 5 tokens: what came stays, the error says why.
    ask(page, unique("And a dessert pizza? [[upstream fail=drop after=5 tps=400]]"))
    expect(page.locator(LAST_TURN).get_by_role("alert")).to_contain_text("The answer could not be completed.")
    assert_nothing_running(page)
    assert answer_text(page) == "Sure! Here's a"
    assert_accessible(page, "error-dark")
    screenshot(page, "error-dark")


def test_reduced_motion_shows_text_without_delay(open_page: OpenPage) -> None:
    page = open_page(reduced_motion="reduce")
    assert page.locator("#delay").input_value() == "0"
    ask(page, "Which pizza? [[upstream ttft=1 tps=400 tokens=12]]")
    spinner = page.locator(f'{LAST_TURN} .step[data-status="started"] .step-icon').first
    expect(spinner).to_be_visible()
    # expect() resolves the icon again on every try: evaluate() on a handle read '' once, from an
    # icon the page had replaced in between (CI under load).
    expect(spinner).to_have_css("animation-name", "none")
    wait_until_settled(page)
    assert answer_text(page).startswith(ANSWER_START)


# --- NDJSON split across chunks ---

LINES: list[dict[str, Any]] = [
    {"delta": {"role": "assistant"}, "context": {"stage": {"name": "question", "status": "done"}}},
    {"delta": {"content": "Bake at 260 °C "}},
    {"delta": {}, "context": {"heartbeat": True}},
    {"delta": {"content": "🍕 [pizza-oven-guide.pdf#page=1]"}},
    {"delta": {}, "finishReason": "stop", "context": {"dataPoints": []}},
]


def _splits(data: bytes, rng: random.Random) -> list[list[bytes]]:
    """Ways to cut ``data`` into chunks: byte by byte, in one piece, at random, and mid-character."""
    random_cuts = []
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(data)), 12))
        random_cuts.append([data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)])
    degree = data.index("°".encode()) + 1  # inside the two bytes of "°"
    pizza = data.index("🍕".encode()) + 2  # inside the four bytes of the emoji
    return [
        [data[i : i + 1] for i in range(len(data))],
        [data],
        [data[:degree], data[degree:pizza], data[pizza:]],
        *random_cuts,
    ]


def test_ndjson_reader_splits_lines_across_chunk_boundaries(chat: Page) -> None:
    text = "\n".join(json.dumps(line, ensure_ascii=False) for line in LINES[:2])
    # CRLF endings, a blank line, and no newline after the last line.
    text += "\r\n\r\n" + "\n".join(json.dumps(line, ensure_ascii=False) for line in LINES[2:])
    data = text.encode()
    splits = _splits(data, random.Random(6))
    results = chat.evaluate(
        """async (splits) => {
          const { readNdjson } = await import('/assets/js/ndjson.js');
          const results = [];
          for (const chunks of splits) {
            const stream = new ReadableStream({
              start(controller) {
                for (const chunk of chunks) controller.enqueue(new Uint8Array(chunk));
                controller.close();
              },
            });
            const values = [];
            for await (const value of readNdjson(stream)) values.push(value);
            results.push(values);
          }
          // A reader that stops early cancels the stream (fetch then closes the connection).
          let cancelled = false;
          const endless = new ReadableStream({
            pull(controller) { controller.enqueue(new TextEncoder().encode('{"delta":{}}\\n')); },
            cancel() { cancelled = true; },
          });
          for await (const value of readNdjson(endless)) break;
          return { results, cancelled };
        }""",
        [[list(chunk) for chunk in chunks] for chunks in splits],
    )
    for chunks, values in zip(splits, results["results"], strict=True):
        assert values == LINES, f"split into {len(chunks)} chunks"
    assert results["cancelled"] is True


def test_citations_are_recognised_when_they_arrive_in_pieces(chat: Page) -> None:
    pieces = ["Bake hot [pizza-", "oven-guide.pdf#pa", "ge=2]", ". See [note] and [", "a.md][b.md", "]", " [unclosed"]
    result = chat.evaluate(
        """async (pieces) => {
          const { CitationParser, findSources } = await import('/assets/js/citations.js');
          const parser = new CitationParser();
          const parts = pieces.flatMap((piece) => parser.push(piece));
          parts.push(...parser.end());
          const documents = [{ source: 'guide.pdf#page=1' }, { source: 'guide.pdf#page=2' }, { source: 'x.md' }];
          const exact = findSources('guide.pdf#page=2', documents);
          return { parts, exact, file: findSources('guide.pdf', documents) };
        }""",
        pieces,
    )
    merged: list[dict[str, str]] = []
    for part in result["parts"]:
        if "text" in part and merged and "text" in merged[-1]:
            merged[-1] = {"text": merged[-1]["text"] + part["text"]}
        else:
            merged.append(part)
    assert merged == [
        {"text": "Bake hot "},
        {"source": "pizza-oven-guide.pdf#page=2"},
        {"text": ". See [note] and "},
        {"source": "a.md"},
        {"source": "b.md"},
        {"text": " [unclosed"},
    ]
    assert result["exact"] == [{"source": "guide.pdf#page=2"}]
    assert len(result["file"]) == 2, "a citation without #page matches every page of the file"


# --- A realistic answer, delivered in awkward chunks, for the citations and the README screenshot ---

QUESTION = "Can you suggest a pizza with mushroom and pineapple?"
DATA_POINTS = [
    {
        "id": "mushroom-pineapple-pizza_md-0000",
        "title": "Mushroom and Pineapple Pizza with Smoked Mozzarella",
        "source": "mushroom-pineapple-pizza.md",
        "content": "This pizza combines earthy, browned mushrooms with sweet, caramelised pineapple. Smoked "
        "mozzarella and a little red onion tie the two together, and a drizzle of chilli honey at the end adds "
        "heat. It is a good choice if you like Hawaiian pizza but want a meat-free version.",
    },
    {
        "id": "mushroom-pineapple-pizza_md-0002",
        "title": "Mushroom and Pineapple Pizza with Smoked Mozzarella: Tips",
        "source": "mushroom-pineapple-pizza.md",
        "content": "Both toppings hold a lot of water. Pre-cooking them is what keeps the crust crisp.",
    },
    {
        "id": "pizza-oven-guide_pdf-0001",
        "title": "Pizza Oven Guide: Home Oven Temperatures and Preheating",
        "source": "pizza-oven-guide.pdf#page=1",
        "content": "Heat the oven with the stone or steel inside for at least 45 minutes, and a full hour for a "
        "thick stone. A 30 cm pizza bakes in 5 to 7 minutes on a steel and 8 to 12 minutes on a stone.",
    },
]
ANSWER = (
    "Try the mushroom and pineapple pizza with smoked mozzarella: browned mushrooms and caramelised "
    "pineapple, tied together with red onion and a drizzle of chilli honey [mushroom-pineapple-pizza.md]. "
    "Pre-cook both toppings so the crust stays crisp [mushroom-pineapple-pizza.md]. Preheat the steel for "
    "at least 45 minutes at 260 °C, then bake for 5 to 7 minutes [pizza-oven-guide.pdf#page=1]."
)
FOLLOWUPS = ["Can I use canned pineapple?", "Which mushrooms work best?", "How do I make chilli honey?"]


def _scripted_lines() -> list[dict[str, Any]]:
    def stage(name: str, status: str, title: str, elapsed: int, detail: Any = None) -> dict[str, Any]:
        body = {"name": name, "status": status, "title": title, "elapsedMs": elapsed}
        return {"delta": {}, "context": {"stage": {**body, **({"detail": detail} if detail else {})}}}

    results = [
        {k: v for k, v in point.items() if k != "content"} | {"snippet": point["content"][:120]}
        for point in DATA_POINTS
    ]
    # Token-sized pieces, as a model sends them: a citation arrives in several.
    tokens = re.findall(r"\s*\w+|\s*[^\w\s]", ANSWER)
    assert "".join(tokens) == ANSWER
    return [
        {
            "delta": {"role": "assistant"},
            **stage("question", "done", "Processing your question", 0, {"question": QUESTION}),
        },
        stage("query", "done", "Generated search query", 402, {"query": "mushroom pineapple pizza"}),
        stage("search", "done", "Found 3 results", 471, {"results": results}),
        stage("answer", "started", "Generating answer", 473),
        {"delta": {}, "context": {"heartbeat": True}},
        *({"delta": {"content": token}} for token in tokens),
        {"delta": {}, "context": {"followupQuestions": FOLLOWUPS}},
        {"delta": {}, "finishReason": "stop", "context": {"dataPoints": DATA_POINTS, "thoughts": [], "usage": {}}},
    ]


def scripted_fetch(lines: list[dict[str, Any]], seed: int = 6, completion: dict[str, Any] | None = None) -> str:
    """An init script: fetch of /api/chat/stream answers ``lines`` in chunks cut at awkward places
    (mid-line, inside a UTF-8 character, several lines at once), 10 ms apart; with ``completion``,
    /api/chat answers it; other requests go to the network."""
    data = b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines)
    rng = random.Random(seed)
    degree = data.find("°".encode())
    inside_degree_sign = {degree + 1} if degree >= 0 else set()
    cuts = sorted({*rng.sample(range(1, len(data)), len(lines) // 2), *inside_degree_sign})
    chunks = [list(data[a:b]) for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return f"""
      const realFetch = window.fetch;
      const chunks = {json.dumps(chunks)};
      const completion = {json.dumps(completion)};
      window.fetch = (url, options) => {{
        if (completion && String(url).endsWith('api/chat')) {{
          const headers = {{ 'Content-Type': 'application/json' }};
          return Promise.resolve(new Response(JSON.stringify(completion), {{ headers }}));
        }}
        if (!String(url).endsWith('api/chat/stream')) return realFetch(url, options);
        let index = 0;
        const body = new ReadableStream({{
          async pull(controller) {{
            await new Promise((resolve) => setTimeout(resolve, 10));
            if (index < chunks.length) controller.enqueue(new Uint8Array(chunks[index++]));
            else controller.close();
          }},
        }});
        return Promise.resolve(new Response(body, {{ headers: {{ 'Content-Type': 'application/x-ndjson' }} }}));
      }};
    """


def test_a_stream_cut_at_awkward_places_renders_the_exact_answer_and_its_citations(open_page: OpenPage) -> None:
    page = open_page(init_script=scripted_fetch(_scripted_lines()))
    page.get_by_text("Settings").click()
    page.get_by_label("Delay between words (ms)").fill("5")  # ~110 tokens: keep the test short
    page.keyboard.press("Escape")
    page.get_by_role("button", name=QUESTION).click()
    wait_until_settled(page)
    assert answer_text(page) == ANSWER.replace("[", "").replace("]", "")
    turn = page.locator(LAST_TURN)
    citations = turn.locator(".citation")
    assert [c.get_attribute("data-source") for c in citations.all()] == [
        "mushroom-pineapple-pizza.md",
        "mushroom-pineapple-pizza.md",
        "pizza-oven-guide.pdf#page=1",
    ]
    expect(turn.locator(".citation-unknown")).to_have_count(0)
    expect(turn.locator(".followup")).to_have_text(FOLLOWUPS)

    # A file cited twice: both of its passages, in full (the data points, not the search snippets).
    citations.first.click()
    panel = turn.locator(".source-panel")
    expect(panel.locator(".passage")).to_have_count(2)
    expect(panel.locator(".passage").first).to_contain_text(str(DATA_POINTS[0]["content"]))
    citations.last.click()
    expect(citations.first).to_have_attribute("aria-expanded", "false")
    expect(panel.locator(".passage")).to_have_count(1)
    expect(panel).to_contain_text("Pizza Oven Guide: Home Oven Temperatures and Preheating")
    expect(panel).to_contain_text(str(DATA_POINTS[2]["content"]))
    assert_accessible(page, "finished-light")
    screenshot(page, "finished-light")

    # The whole story in one picture (docs/screenshot.png is picked from these).
    page.set_viewport_size({"width": VIEWPORT["width"], "height": 1000})
    turn.locator("details.steps summary").click()
    expect(turn.locator(".results li")).to_have_count(3)
    screenshot(page, "finished-light-steps-open")

    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    assert_accessible(page, "finished-phone")
    screenshot(page, "finished-phone")


@pytest.mark.parametrize("streaming", [True, False])
def test_an_answer_cut_by_the_content_filter_says_so(open_page: OpenPage, streaming: bool) -> None:
    notice = {"code": "content_filtered", "message": "The rest of this answer was withheld by the content filter."}
    lines: list[dict[str, Any]] = [
        {"delta": {"role": "assistant"}, "context": {"stage": {"name": "question", "status": "done", "title": "Q"}}},
        {"delta": {"content": "The first part of the answer"}},
        {"delta": {}, "context": {"notice": notice}},
        {"delta": {}, "finishReason": "content_filter", "context": {"dataPoints": [], "thoughts": [], "usage": {}}},
    ]
    completion = {
        "message": {"role": "assistant", "content": "The first part of the answer"},
        "finishReason": "content_filter",
        "context": {"dataPoints": [], "stages": [], "notices": [notice]},
        "sessionState": None,
    }
    page = open_page(init_script=scripted_fetch(lines, completion=completion))
    if not streaming:
        page.get_by_text("Settings").click()
        page.get_by_label("Stream the answer").uncheck()
        page.keyboard.press("Escape")
    ask(page, "Anything?")
    wait_until_settled(page)
    turn = page.locator(LAST_TURN)
    expect(turn.locator(".notice")).to_have_text(notice["message"])
    expect(turn.locator(".followup")).to_have_count(0)
    assert answer_text(page) == "The first part of the answer"
    state = f"content-filtered-{'stream' if streaming else 'json'}"
    assert_accessible(page, state)
    screenshot(page, state)


# --- Security: the policy is enforced, hostile text stays text, a 401 signs the reader in ---


def test_the_content_security_policy_is_enforced(chromium: Browser, local_stack: LocalStack) -> None:
    """Inline script, inline handlers, strings compiled as code and calls to other origins: all refused, each reported.

    (eval itself is not tried: Playwright's evaluate runs outside the page's policy; a string given
    to setTimeout is compiled by the page, under its policy.)
    """
    context = chromium.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        violations: list[str] = []
        page.on("console", lambda message: violations.append(message.text) if "CSP violation" in message.text else None)
        page.add_init_script(REPORT_CSP_VIOLATIONS)
        response = page.goto(local_stack.url)
        assert response is not None
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        expect(page.locator("#send")).to_be_enabled()  # the page's own module scripts run
        assert violations == [], "the page itself needs nothing the policy forbids"

        outcome = page.evaluate(
            """async () => {
              const script = document.createElement('script');
              script.textContent = 'window.inlineRan = true';
              document.body.append(script);
              const image = document.createElement('div');
              image.innerHTML = '<img src="data:," onerror="window.handlerRan = true">';
              document.body.append(image);
              setTimeout('window.timerRan = true', 0);  // a string to compile: eval by another name
              let fetchRefused = false;
              try { await fetch('https://www.example.com/'); } catch { fetchRefused = true; }
              await new Promise((resolve) => setTimeout(resolve, 200));
              const inline = window.inlineRan ?? false;
              return { inline, handler: window.handlerRan ?? false, timer: window.timerRan ?? false, fetchRefused };
            }"""
        )
        assert outcome == {"inline": False, "handler": False, "timer": False, "fetchRefused": True}
        directives = " ".join(violations)
        assert "script-src blocked eval" in directives, violations
        for directive in ("script-src-elem", "script-src-attr", "connect-src"):
            assert directive in directives, (directive, violations)
    finally:
        context.close()


HOSTILE = '<script>window.pwned = "script"</script><img src=x onerror="window.pwned = \'img\'">'
HOSTILE_POINTS = [
    {
        "id": "evil_md-0000",
        "title": f"Evil {HOSTILE}",
        "source": "evil.md",
        "content": f"Document text {HOSTILE} <a href=\"javascript:window.pwned='a'\">click</a>",
    },
    {"id": "js-0000", "title": "Link", "source": "javascript:window.pwned='source'", "content": "javascript: text"},
]
HOSTILE_ANSWER = [
    "Bake at 260 °C. Here ",
    "<script>window.pwned = 'answer'</script>",
    " and <img src=x onerror=\"window.pwned = 'answer-img'\"> ",
    "[evil.md] ",
    "[javascript:window.pwned='citation'] ",
    "[click](javascript:window.pwned='markdown').",
]


def test_model_output_and_document_text_render_inert(open_page: OpenPage) -> None:
    results = [{**point, "snippet": point["content"]} for point in HOSTILE_POINTS]
    lines: list[dict[str, Any]] = [
        {"delta": {"role": "assistant"}, "context": {"stage": {"name": "question", "status": "done", "title": "Q"}}},
        {
            "delta": {},
            "context": {
                "stage": {
                    "name": "search",
                    "status": "done",
                    "title": "Found 2 results",
                    "detail": {"results": results},
                }
            },
        },
        *({"delta": {"content": piece}} for piece in HOSTILE_ANSWER),
        {"delta": {}, "context": {"followupQuestions": [HOSTILE]}},
        {"delta": {}, "finishReason": "stop", "context": {"dataPoints": HOSTILE_POINTS, "thoughts": [], "usage": {}}},
    ]
    page = open_page(init_script=scripted_fetch(lines))
    page.get_by_text("Settings").click()
    page.get_by_label("Delay between words (ms)").fill("0")
    page.keyboard.press("Escape")
    ask(page, "Anything?")
    wait_until_settled(page)
    turn = page.locator(LAST_TURN)
    turn.locator("details.steps summary").click()
    for citation in turn.locator(".citation").all():
        citation.click()
    expect(turn.locator(".source-panel")).to_be_visible()
    page.wait_for_timeout(300)  # time for any handler that could have been planted to fire

    assert page.evaluate("window.pwned") is None
    conversation = page.locator("#conversation")
    assert conversation.locator("script, img, iframe, object, embed").count() == 0
    assert conversation.locator("a").count() == 0, "no link at all, so no javascript: link"
    assert "<script>window.pwned = 'answer'</script>" in answer_text(page), "shown as the text it is"
    expect(turn.locator(".followup")).to_have_text([HOSTILE])
    expect(turn.locator(".results")).to_contain_text("Evil <script>")


def test_a_401_in_entra_mode_sends_the_reader_to_sign_in(
    chromium: Browser, local_stack: LocalStack, tmp_path: Path
) -> None:
    """A host in entra mode without the platform's sign-in in front: the app itself answers 401."""
    environment = local_stack.environment(
        CHAT_AUTH_MODE="entra",
    )
    host, url = host_server(tmp_path, environment)
    with running([host]):
        context = chromium.new_context(viewport=VIEWPORT)
        context.set_default_timeout(TIMEOUT_MS)
        try:
            page = context.new_page()
            page.goto(url)
            expect(page.locator("#send")).to_be_enabled()
            with page.expect_navigation(url=re.compile(r"/\.auth/login/aad\?post_login_redirect_uri=/$")):
                ask(page, "Which pizza?")
        finally:
            context.close()
