// The chat page: keeps the conversation, sends it to the API, and shows the answer as it comes.

import { ChatError, getCompletion, streamChat } from "./api.js";
import { Reveal } from "./reveal.js";
import { AssistantTurn, stageText, userTurn } from "./turns.js";

// The API's base URL. On another site, point this meta tag at your function app
// (e.g. https://<app>.azurewebsites.net/api/chat) and allow that site's origin with CORS.
const ENDPOINT = document.querySelector('meta[name="chat-endpoint"]')?.content || "api/chat";
// Set by the server when the platform signs users in (CHAT_AUTH_MODE=entra): a 401 from the API
// means no session, or one that ended, so the page sends the reader to sign in and back here.
const SIGN_IN = document.querySelector('meta[name="chat-sign-in"]')?.content || "";
// The server reads the last few turns only; this keeps long conversations under its limits.
const MAX_MESSAGES = 20;
const REVEAL_DELAY_MS = 33;

const form = document.getElementById("composer");
const questionBox = document.getElementById("question");
const sendButton = document.getElementById("send");
const stopButton = document.getElementById("stop");
const clearButton = document.getElementById("clear");
const streamToggle = document.getElementById("stream");
const followupToggle = document.getElementById("followups");
const delayInput = document.getElementById("delay");
const conversationList = document.getElementById("conversation");
const intro = document.getElementById("intro");
const announcer = document.getElementById("announcer");

const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

let messages = []; // [{role, content}], sent with every question
let sessionState = null; // whatever the server sent last; returned as is
let current = null; // {controller, turn, reveal} while an answer is on its way
let lastTurn = null;

function setDefaultDelay() {
  delayInput.value = reducedMotion.matches ? 0 : REVEAL_DELAY_MS;
}
setDefaultDelay();
reducedMotion.addEventListener("change", setDefaultDelay);

function revealDelay() {
  const value = Number(delayInput.value);
  return Number.isFinite(value) && value > 0 ? Math.min(value, 1000) : 0;
}

/** Say something to screen readers (stage changes, the finished answer), not every token. */
function announce(text) {
  announcer.textContent = text;
}

function setBusy(busy) {
  sendButton.disabled = busy;
  stopButton.disabled = !busy;
}

/** Change the page, keeping the newest text in view unless the reader has scrolled up to read. */
function update(change) {
  const root = document.documentElement;
  const nearBottom = root.scrollHeight - (window.scrollY + window.innerHeight) < 120;
  change();
  if (nearBottom) scrollToEnd();
}

function scrollToEnd() {
  window.scrollTo({ top: document.documentElement.scrollHeight, behavior: "instant" });
}

function ask(question, { fromBox = false } = {}) {
  const text = question.trim();
  if (!text || current) return;
  intro.hidden = true;
  lastTurn?.dropRetry();
  messages.push({ role: "user", content: text });
  const request = messages.slice(-MAX_MESSAGES);
  const turn = new AssistantTurn({ onAsk: ask, onRetry: () => retry(turn, request) });
  conversationList.append(userTurn(text), turn.element);
  lastTurn = turn;
  if (fromBox) questionBox.value = "";
  run(turn, request);
}

function retry(turn, request) {
  questionBox.focus(); // the retry button goes away with the failed attempt
  run(turn, request);
}

async function run(turn, request) {
  if (current) return;
  turn.reset();
  const controller = new AbortController();
  const reveal = new Reveal((chunk) => update(() => turn.appendText(chunk)), revealDelay);
  current = { controller, turn, reveal };
  setBusy(true);
  scrollToEnd();
  const started = performance.now();
  const body = {
    messages: request,
    context: { overrides: { suggestFollowupQuestions: followupToggle.checked } },
    sessionState,
  };
  try {
    const result = streamToggle.checked
      ? await readStream(body, controller.signal, turn, reveal)
      : await readCompletion(body, controller.signal, turn);
    await reveal.drained();
    update(() => turn.finish({ ...result, seconds: (performance.now() - started) / 1000 }));
    messages.push({ role: "assistant", content: turn.text });
    announce([`Answer: ${turn.text}`, ...result.notices.map((notice) => notice.message)].join(" "));
  } catch (error) {
    reveal.flush();
    if (controller.signal.aborted) {
      update(() => turn.stopped());
      if (turn.text.trim()) messages.push({ role: "assistant", content: turn.text });
      announce("Stopped.");
    } else if (error instanceof ChatError && error.status === 401 && SIGN_IN) {
      update(() => turn.fail("Your session has ended. Taking you to sign in…"));
      window.location.assign(SIGN_IN);
    } else {
      const message = error instanceof ChatError ? error.message : `Something went wrong in the page: ${error.message}`;
      if (!(error instanceof ChatError)) console.error(error);
      update(() => turn.fail(message));
    }
  } finally {
    current = null;
    setBusy(false);
  }
}

/** POST /api/chat/stream: render each line as it arrives. */
async function readStream(body, signal, turn, reveal) {
  let final = null;
  let followupQuestions = [];
  const notices = [];
  for await (const line of streamChat(ENDPOINT, body, { signal })) {
    if (line.error) throw new ChatError(line.error.message, { code: line.error.code });
    const context = line.context ?? {};
    if (context.heartbeat) continue; // keeps the connection alive while the model thinks
    if ("sessionState" in line) sessionState = line.sessionState;
    if (context.stage) {
      update(() => turn.stage(context.stage));
      announce(stageText(context.stage));
    }
    if (line.delta?.content) reveal.push(line.delta.content);
    if (context.followupQuestions) followupQuestions = context.followupQuestions;
    if (context.notice) notices.push(context.notice);
    if (line.finishReason) final = line;
  }
  if (!final) throw new ChatError("The connection closed before the answer was complete.", { code: "incomplete" });
  return { dataPoints: final.context?.dataPoints ?? [], followupQuestions, notices };
}

/** POST /api/chat: the same answer in one piece, for when streaming is switched off. */
async function readCompletion(body, signal, turn) {
  const completion = await getCompletion(ENDPOINT, body, { signal });
  const context = completion.context ?? {};
  sessionState = completion.sessionState ?? null;
  update(() => {
    for (const stage of context.stages ?? []) turn.stage(stage);
    turn.appendText(completion.message?.content ?? "");
  });
  return {
    dataPoints: context.dataPoints ?? [],
    followupQuestions: context.followupQuestions ?? [],
    notices: context.notices ?? [],
  };
}

function stop() {
  if (!current) return;
  current.controller.abort();
  current.reveal.flush();
  questionBox.focus();
}

function clear() {
  stop();
  messages = [];
  sessionState = null;
  lastTurn = null;
  conversationList.replaceChildren();
  intro.hidden = false;
  announce("Conversation cleared.");
  questionBox.focus();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  ask(questionBox.value, { fromBox: true });
});

// Enter sends, Shift+Enter starts a new line (and Enter while composing with an IME does neither).
questionBox.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});

stopButton.addEventListener("click", stop);
clearButton.addEventListener("click", clear);
const settings = document.querySelector(".settings");
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  if (settings.open) {
    settings.open = false;
    settings.querySelector("summary").focus();
  } else if (current) {
    stop();
  }
});
for (const button of document.querySelectorAll("[data-question]")) {
  button.addEventListener("click", () => ask(button.dataset.question));
}

setBusy(false);
