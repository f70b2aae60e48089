// Citations: the model cites a source by its name in square brackets, e.g.
// "[mushroom-pineapple-pizza.md]" or "[pizza-oven-guide.pdf#page=2]".

// A file name with an extension, optionally followed by a #fragment such as #page=2.
const SOURCE_NAME = /^[^\s[\]][^[\]\n]{0,200}\.[A-Za-z0-9]{1,8}(#[^\s[\]]*)?$/;
// A "[" with no "]" after this many characters is plain text, not the start of a citation.
const LONGEST_CITATION = 220;

/** Whether the text between brackets looks like a source name. */
export function isSourceName(text) {
  return SOURCE_NAME.test(text);
}

/**
 * Splits streamed text into plain text and citations, chunk by chunk. A citation may arrive in
 * pieces ("[mushroom-" then "pizza.md]"), so an unclosed "[" waits in `pending` until its "]"
 * arrives or it can no longer be a citation.
 */
export class CitationParser {
  constructor() {
    this.pending = "";
  }

  /** Parts of the text that are final: [{text}] and [{source}] objects, in order. */
  push(chunk) {
    const parts = [];
    let text = this.pending + chunk;
    this.pending = "";
    while (text) {
      const open = text.indexOf("[");
      if (open === -1) {
        parts.push({ text });
        break;
      }
      if (open > 0) parts.push({ text: text.slice(0, open) });
      text = text.slice(open);
      const close = text.indexOf("]");
      if (close === -1) {
        if (text.length <= LONGEST_CITATION && !text.includes("\n")) {
          this.pending = text; // maybe a citation: wait for more
        } else {
          parts.push({ text: "[" });
          this.pending = "";
          text = text.slice(1);
          continue;
        }
        break;
      }
      const inside = text.slice(1, close);
      if (isSourceName(inside)) {
        parts.push({ source: inside });
        text = text.slice(close + 1);
      } else {
        parts.push({ text: "[" }); // not a citation: the "[" is text, look again after it
        text = text.slice(1);
      }
    }
    return merge(parts);
  }

  /** The end of the answer: whatever is pending is plain text. */
  end() {
    const rest = this.pending;
    this.pending = "";
    return rest ? [{ text: rest }] : [];
  }
}

function merge(parts) {
  const merged = [];
  for (const part of parts) {
    const last = merged[merged.length - 1];
    if (part.text !== undefined && last?.text !== undefined) last.text += part.text;
    else merged.push(part);
  }
  return merged;
}

/**
 * The passages a citation refers to: documents whose source is the cited name, or, when the
 * model left out the fragment (cited "guide.pdf" for "guide.pdf#page=2"), those of that file.
 * @param {string} cited the name between the brackets
 * @param {{source: string}[]} documents the answer's data points and search results
 */
export function findSources(cited, documents) {
  const exact = documents.filter((document) => document.source === cited);
  if (exact.length) return exact;
  const file = cited.split("#")[0];
  return documents.filter((document) => document.source.split("#")[0] === file);
}
