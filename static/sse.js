// Server-Sent Events, parsed by hand: the page reads the API's log streams
// with fetch() rather than EventSource, which can neither send
// Last-Event-ID on a reconnection of its own nor tell a 404 from a drop.
// The format is the WHATWG "event stream" one; no DOM here.

/** Line ends: CRLF, LF, or a CR not at the end (it may be half a CRLF). */
const LINE_END = /\r\n|\n|\r(?=[^\n])/g;

/**
 * Turns the text of an event stream, fed in pieces as it arrives, into
 * events `{ type, data, id }`. `id` is the last event id seen so far, which
 * a reconnection sends back as `Last-Event-ID`.
 *
 * One departure from the standard: an event with no `data` line is still
 * dispatched, because the API's `HEARTBEAT`s may carry none.
 */
export class SseParser {
  constructor(lastEventId = "") {
    this.lastEventId = lastEventId;
    this.rest = "";
    this.clear();
  }

  /** Feeds `text`; returns the events it completed, in order. */
  push(text) {
    const buffer = this.rest + text;
    const events = [];
    let start = 0;
    LINE_END.lastIndex = 0;
    for (let end = LINE_END.exec(buffer); end !== null; end = LINE_END.exec(buffer)) {
      const event = this.line(buffer.slice(start, end.index));
      if (event) events.push(event);
      start = LINE_END.lastIndex;
    }
    this.rest = buffer.slice(start);
    return events;
  }

  /** Forgets the event being built (an incomplete one is never dispatched). */
  clear() {
    this.type = "";
    this.data = [];
    this.started = false;
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return null; // a comment, often a keep-alive
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.type = value;
        break;
      case "data":
        this.data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) this.lastEventId = value;
        break;
      default:
        return null; // `retry` and unknown fields: the page keeps its own pace
    }
    this.started = true;
    return null;
  }

  dispatch() {
    if (!this.started) return null;
    const event = { type: this.type || "message", data: this.data.join("\n"), id: this.lastEventId };
    this.clear();
    return event;
  }
}
