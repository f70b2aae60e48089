// The conversation on the page: a user turn, and an assistant turn that fills in as the
// answer's lines arrive (steps, text with citations, sources, follow-up questions, errors).

import { CitationParser, findSources } from "./citations.js";
import { h, uniqueId } from "./dom.js";

const STATUS_WORDS = { started: "In progress", done: "Done", failed: "Failed", stopped: "Stopped" };

/** The user's question, as one item of the conversation list. */
export function userTurn(question) {
  return h(
    "li",
    { class: "turn turn-user" },
    h("h3", { class: "visually-hidden" }, "You asked"),
    h("p", { class: "bubble" }, question),
  );
}

/** One step of the pipeline as a short sentence, e.g. "Generated search query: pizza recipes". */
export function stageText(stage) {
  if (stage.name === "query" && stage.detail?.query) return `${stage.title}: ${stage.detail.query}`;
  if (stage.name === "search" && stage.detail?.results) {
    const titles = stage.detail.results.map((result, index) => `${index + 1}) ${result.title}`);
    return titles.length ? `${stage.title}: ${titles.join(" ")}` : stage.title;
  }
  return stage.status === "started" ? `${stage.title}…` : stage.title;
}

/**
 * The assistant's side of one exchange. Callbacks: onAsk(question) for follow-up buttons,
 * onRetry() for the retry button.
 */
export class AssistantTurn {
  constructor({ onAsk, onRetry }) {
    this.onAsk = onAsk;
    this.onRetry = onRetry;
    this.summary = h("span", { class: "steps-summary" }, "Working on it…");
    this.stepList = h("ol", { class: "step-list" });
    this.steps = h("details", { class: "steps", open: true }, h("summary", {}, this.summary), this.stepList);
    this.answer = h("div", { class: "answer" });
    this.panelId = uniqueId("source");
    this.panel = h("div", { class: "source-panel", id: this.panelId, hidden: true });
    this.after = h("div", { class: "turn-after" });
    this.element = h(
      "li",
      { class: "turn turn-assistant" },
      h("h3", { class: "visually-hidden" }, "Answer"),
      this.steps,
      this.answer,
      this.panel,
      this.after,
    );
    this.reset();
  }

  /** Empty the turn, ready for a (new) attempt. */
  reset() {
    this.stepList.replaceChildren();
    this.answer.replaceChildren();
    this.after.replaceChildren();
    this.closePanel();
    this.steps.open = true;
    this.summary.textContent = "Working on it…";
    this.parser = new CitationParser();
    this.pendingText = document.createTextNode("");
    this.answer.append(this.pendingText);
    this.text = "";
    this.documents = new Map();
    this.steps.hidden = false;
    const waiting = h("span", {}, "Sending your question", h("span", { class: "ellipsis" }, "…"));
    this.waiting = this.addStep("waiting", "started", waiting);
    this.setBusy(true);
  }

  setBusy(busy) {
    if (busy) this.element.setAttribute("aria-busy", "true");
    else this.element.removeAttribute("aria-busy");
  }

  /** A stage line arrived: add its step, or update the step of the same name. */
  stage(stage) {
    this.waiting?.remove();
    this.waiting = null;
    for (const step of this.stepList.querySelectorAll('[data-status="started"]')) {
      if (step.dataset.stage !== stage.name) this.setStatus(step, "done"); // the pipeline has moved on
    }
    if (stage.name === "search") this.addDocuments(stage.detail?.results?.map((r) => ({ ...r, content: r.snippet })));
    const content = stepContent(stage);
    const time = typeof stage.elapsedMs === "number" ? `${(stage.elapsedMs / 1000).toFixed(2)} s` : "";
    const existing = this.stepList.querySelector(`[data-stage="${CSS.escape(stage.name)}"]`);
    if (existing) {
      existing.querySelector(".step-text").replaceWith(content);
      existing.querySelector(".step-time").textContent = time;
      this.setStatus(existing, stage.status);
    } else {
      this.addStep(stage.name, stage.status, content, time);
    }
  }

  addStep(name, status, content, time = "") {
    const step = h(
      "li",
      { class: "step", "data-stage": name },
      h("span", { class: "step-icon", "aria-hidden": "true" }),
      h("span", { class: "visually-hidden step-status" }),
      content,
      h("span", { class: "step-time" }, time),
    );
    if (!content.classList.contains("step-text")) content.classList.add("step-text");
    this.setStatus(step, status);
    this.stepList.append(step);
    return step;
  }

  setStatus(step, status) {
    step.dataset.status = status;
    step.querySelector(".step-status").textContent = `${STATUS_WORDS[status] ?? status}: `;
  }

  /** Documents the answer may cite: search results first, then the final data points. */
  addDocuments(documents) {
    for (const document of documents ?? []) {
      const known = this.documents.get(document.id);
      this.documents.set(document.id, { ...known, ...document, content: document.content ?? known?.content ?? "" });
    }
  }

  /** Show one more piece of the answer's text; citations become buttons once complete. */
  appendText(chunk) {
    this.text += chunk;
    this.showParts(this.parser.push(chunk));
  }

  showParts(parts) {
    for (const part of parts) {
      const previous = this.pendingText.previousSibling;
      if (part.source !== undefined) this.pendingText.before(this.citationButton(part.source));
      else if (previous?.nodeType === Node.TEXT_NODE) previous.appendData(part.text);
      else this.pendingText.before(part.text);
    }
    // A "[" that may still become a citation shows as text meanwhile.
    this.pendingText.data = this.parser.pending;
  }

  citationButton(source) {
    return h(
      "button",
      {
        type: "button",
        class: "citation",
        "aria-expanded": "false",
        "aria-controls": this.panelId,
        "data-source": source,
        onclick: (event) => this.toggleSource(event.currentTarget),
      },
      h("span", { class: "visually-hidden" }, "Source: "),
      source,
    );
  }

  /** Show the passages of the cited source under the answer (or hide them again). */
  toggleSource(button) {
    const wasOpen = button.getAttribute("aria-expanded") === "true";
    this.closePanel();
    if (wasOpen) return;
    const cited = button.dataset.source;
    const titleId = `${this.panelId}-title`;
    this.panel.replaceChildren(
      h(
        "div",
        { class: "source-panel-header" },
        h("h4", { id: titleId }, "Source ", h("code", {}, cited)),
        h("button", { type: "button", class: "close", onclick: () => this.closePanel(button) }, "Close"),
      ),
      ...passages(cited, [...this.documents.values()]),
    );
    this.panel.setAttribute("role", "region");
    this.panel.setAttribute("aria-labelledby", titleId);
    this.panel.hidden = false;
    button.setAttribute("aria-expanded", "true");
  }

  /** Hide the source panel; `focusTo` gets the focus back (the citation that opened it). */
  closePanel(focusTo) {
    this.panel.hidden = true;
    this.panel.replaceChildren();
    this.panel.removeAttribute("role");
    this.panel.removeAttribute("aria-labelledby");
    for (const button of this.answer.querySelectorAll(".citation")) button.setAttribute("aria-expanded", "false");
    focusTo?.focus();
  }

  /** The text is complete: a "[" still waiting for its "]" is plain text after all. */
  endText() {
    this.showParts(this.parser.end());
    for (const button of this.answer.querySelectorAll(".citation")) {
      const known = findSources(button.dataset.source, [...this.documents.values()]).length > 0;
      button.classList.toggle("citation-unknown", !known);
    }
  }

  /** The answer is complete: collapse the steps, say why it ended early if it did, offer follow-up questions. */
  finish({ dataPoints, followupQuestions, notices, seconds }) {
    this.addDocuments(dataPoints);
    this.endText();
    this.settleSteps("done");
    if (!this.text.trim()) this.answer.prepend("The server sent an empty answer.");
    const count = this.stepList.children.length;
    this.summary.textContent = `Thought process: ${count} step${count === 1 ? "" : "s"}, ${seconds.toFixed(1)} s`;
    this.steps.open = false;
    for (const notice of notices ?? []) {
      this.after.append(h("p", { class: "note notice", "data-code": notice.code }, notice.message));
    }
    if (followupQuestions?.length) this.after.append(followupSection(followupQuestions, this.onAsk));
    this.setBusy(false);
  }

  /** The user pressed Stop. */
  stopped() {
    this.endText();
    this.settleSteps("stopped");
    this.summary.textContent = "Thought process (stopped)";
    this.steps.open = false;
    this.after.append(h("p", { class: "note" }, "You stopped this answer."));
    this.setBusy(false);
  }

  /** The request failed: say why, and offer to try again. */
  fail(message) {
    this.endText();
    this.settleSteps("failed");
    this.summary.textContent = "Thought process (failed)";
    this.after.append(
      h(
        "div",
        { class: "error", role: "alert" },
        h("p", {}, h("strong", {}, "The answer could not be completed. "), message),
        h("button", { type: "button", class: "retry", onclick: () => this.onRetry() }, "Retry"),
      ),
    );
    this.setBusy(false);
  }

  /** No retry once the conversation has moved on. */
  dropRetry() {
    for (const button of this.after.querySelectorAll(".retry")) button.remove();
  }

  /** Steps still running end as `status` (done, stopped or failed): no spinner is left behind. */
  settleSteps(status) {
    this.waiting?.remove();
    this.waiting = null;
    for (const step of this.stepList.querySelectorAll('[data-status="started"]')) this.setStatus(step, status);
    this.steps.hidden = this.stepList.children.length === 0; // failed before the first step
  }
}

/** The words of a step: "Generated search query: …", "Found 3 results: 1) … 2) …", "Generating answer…". */
function stepContent(stage) {
  if (stage.name === "query" && stage.detail?.query) {
    return h("span", { class: "step-text" }, `${stage.title}: `, h("q", { class: "query" }, stage.detail.query));
  }
  if (stage.name === "search" && stage.detail?.results?.length) {
    const results = stage.detail.results.map((result) =>
      h("li", {}, h("span", { class: "result-title" }, result.title), " ", h("code", {}, result.source)),
    );
    return h("span", { class: "step-text" }, `${stage.title}:`, h("ol", { class: "results" }, results));
  }
  // The ellipsis shows while the step runs ("Generating answer…"); chat.css hides it once done.
  return h("span", { class: "step-text" }, stage.title, h("span", { class: "ellipsis" }, "…"));
}

/** The passages a citation points to, each with its title and text. */
function passages(cited, documents) {
  const found = findSources(cited, documents);
  if (!found.length) {
    const missing = `No retrieved source is called “${cited}”. The model may have made it up.`;
    return [h("p", { class: "passage-missing" }, missing)];
  }
  return found.map((document) => {
    // Name the passage's own source when it differs from the citation (a cited file, a passage's page).
    const source = document.source !== cited ? [" ", h("code", {}, document.source)] : null;
    const title = h("h5", {}, document.title || document.source, source);
    return h("article", { class: "passage" }, title, h("p", {}, document.content));
  });
}

/** Buttons that ask the suggested follow-up questions. */
function followupSection(questions, onAsk) {
  const headingId = uniqueId("followups");
  const buttons = questions.map((question) =>
    h("li", {}, h("button", { type: "button", class: "followup", onclick: () => onAsk(question) }, question)),
  );
  return h(
    "section",
    { class: "followups", "aria-labelledby": headingId },
    h("h4", { id: headingId }, "Ask a follow-up"),
    h("ul", {}, buttons),
  );
}
