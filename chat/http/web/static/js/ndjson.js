// Read a stream of newline-delimited JSON (NDJSON): one JSON value per line.
//
// The network hands us bytes in chunks of any size: a chunk may end in the middle of a line
// (even in the middle of a multi-byte character), and one chunk may hold several lines.
// So we decode with {stream: true}, keep the unfinished tail of the text in a buffer, and
// parse only whole lines.

/**
 * Yield each JSON value of an NDJSON byte stream, in order, as soon as its line is complete.
 * @param {ReadableStream<Uint8Array>} stream for example `response.body` of a fetch
 * @returns {AsyncGenerator<any>}
 */
export async function* readNdjson(stream) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let finished = false;
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline = buffer.indexOf("\n");
      while (newline !== -1) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        yield* parseLine(line);
        newline = buffer.indexOf("\n");
      }
    }
    finished = true;
    // The last line may lack its newline.
    buffer += decoder.decode();
    yield* parseLine(buffer);
  } finally {
    // The consumer stopped early (break, error or abort): tell the server we are done reading.
    if (!finished) reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

function* parseLine(line) {
  const text = line.trim(); // also drops the \r of \r\n line endings
  if (text) yield JSON.parse(text);
}
