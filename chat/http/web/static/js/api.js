// The two calls of the chat API (the Microsoft AI Chat Protocol's wire format).
//
//   POST {endpoint}         -> one JSON completion
//   POST {endpoint}/stream  -> NDJSON lines, one per event, as they are produced
//
// Both take {messages, context: {overrides}, sessionState}. A refused or failed request
// answers 4xx/5xx with {"error": {"code", "message"}}; we turn that into a ChatError.

import { readNdjson } from "./ndjson.js";

/** An error to show the user: `message` is readable, `code` is the server's machine-readable code. */
export class ChatError extends Error {
  constructor(message, { code = "error", status = 0 } = {}) {
    super(message);
    this.name = "ChatError";
    this.code = code;
    this.status = status;
  }
}

/**
 * Stream an answer: yields each NDJSON line (a parsed object) as it arrives.
 * Pass an AbortSignal to stop; the server then cancels its call to the model.
 */
export async function* streamChat(endpoint, request, { signal } = {}) {
  const response = await post(`${endpoint}/stream`, request, signal);
  if (!response.body) throw new ChatError("This browser cannot read streamed responses.");
  yield* readNdjson(response.body);
}

/** Ask for the whole answer at once: resolves to {message, finishReason, context, sessionState}. */
export async function getCompletion(endpoint, request, { signal } = {}) {
  const response = await post(endpoint, request, signal);
  return response.json();
}

async function post(url, request, signal) {
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    // fetch only rejects when no HTTP answer came back at all: offline, DNS, or CORS refused.
    const message =
      "Could not reach the server. Check your connection. " +
      "(A page on another site also needs the server to allow its origin: CORS.)";
    throw new ChatError(message, { code: "network_error" });
  }
  if (!response.ok) throw await httpError(response);
  return response;
}

async function httpError(response) {
  let message = `The server answered HTTP ${response.status}${response.statusText ? ` (${response.statusText})` : ""}.`;
  let code = `http_${response.status}`;
  try {
    const body = await response.json();
    if (body?.error?.message) {
      message = body.error.message;
      code = body.error.code ?? code;
    }
  } catch {
    // Not JSON (a proxy's error page, say): keep the status line.
  }
  return new ChatError(message, { code, status: response.status });
}
