// Runs the published JavaScript clients against a running local host and prints what they got, as JSON.
// Usage: node check_clients.mjs http://127.0.0.1:7071 "question" "question that fails mid-stream"
import { AIChatProtocolClient } from "@microsoft/ai-chat-protocol";
import readNDJSONStream from "ndjson-readablestream";

const [base, question, failingQuestion] = process.argv.slice(2);
const messages = [{ role: "user", content: question }];
const options = { context: { overrides: { suggestFollowupQuestions: true } }, sessionState: { turn: 1 } };
const client = new AIChatProtocolClient(`${base}/api/chat`);

const streamed = [];
for await (const chunk of await client.getStreamedCompletion(messages, options)) {
  streamed.push(chunk);
}

const completion = await client.getCompletion(messages, options);

const response = await fetch(`${base}/api/chat/stream`, {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify({ messages }),
});
const readable = [];
for await (const line of readNDJSONStream(response.body)) {
  readable.push(line);
}

let streamError = null;
const partial = [];
try {
  for await (const chunk of await client.getStreamedCompletion([{ role: "user", content: failingQuestion }])) {
    partial.push(chunk);
  }
} catch (error) {
  streamError = error;
}

let requestError = null;
try {
  await client.getCompletion([{ role: "system", content: "not allowed" }]);
} catch (error) {
  requestError = error;
}

console.log(JSON.stringify({ streamed, completion, readable, partial, streamError, requestError }));
