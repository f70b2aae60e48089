// A tiny helper to build DOM elements without innerHTML (so text from the server is never HTML).

/**
 * h("button", {class: "citation", type: "button", onclick: show}, "guide.md")
 * Attributes are set with setAttribute, except on* functions (event listeners) and `hidden`;
 * children are strings (text) or nodes; null and false are skipped.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") element.addEventListener(name.slice(2), value);
    else if (name === "hidden") element.hidden = Boolean(value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.flat().filter((child) => child !== null && child !== false && child !== undefined));
  return element;
}

let counter = 0;

/** A document-unique id, for aria-controls and aria-labelledby. */
export function uniqueId(prefix) {
  counter += 1;
  return `${prefix}-${counter}`;
}
