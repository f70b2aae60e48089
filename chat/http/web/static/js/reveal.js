// Word-by-word reveal: show one chunk of the answer per timer tick.
//
// A fast network can deliver many chunks between two frames; appended all at once they would
// appear as one jump. Showing one chunk per tick (33 ms, about two frames) lets the browser
// repaint between chunks, so the answer visibly grows word by word. A delay of 0 (the
// default when the user prefers reduced motion) shows each chunk as soon as it arrives.

export class Reveal {
  /**
   * @param {(chunk: string) => void} show puts one chunk on the page
   * @param {() => number} delay milliseconds between chunks, read at every tick
   */
  constructor(show, delay) {
    this.show = show;
    this.delay = delay;
    this.queue = [];
    this.timer = null;
    this.waiting = [];
  }

  push(chunk) {
    if (this.timer !== null) {
      this.queue.push(chunk); // the next tick shows it
    } else if (this.delay() > 0) {
      this.show(chunk);
      this.schedule();
    } else {
      this.show(chunk);
    }
  }

  /** Show everything that is queued, now. */
  flush() {
    clearTimeout(this.timer);
    this.timer = null;
    while (this.queue.length) this.show(this.queue.shift());
    this.settle();
  }

  /** Resolves once every pushed chunk is on the page. */
  drained() {
    if (this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  schedule() {
    this.timer = setTimeout(() => this.tick(), this.delay());
  }

  tick() {
    this.timer = null;
    if (this.queue.length === 0) return;
    this.show(this.queue.shift());
    if (this.queue.length === 0) this.settle();
    this.schedule();
  }

  settle() {
    for (const resolve of this.waiting.splice(0)) resolve();
  }
}
