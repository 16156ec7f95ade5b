// One of the API's v4 log streams (Server-Sent Events), read through this
// server's proxy with fetch() and the session cookie. After a drop or a
// silence it reconnects with back-off and resumes from the last event id
// (Last-Event-ID), so no line is lost or shown twice. It stops for good at
// END_OF_STREAM, when the API refuses, or when the endpoint does not exist.

import { failure } from "./api.js";
import { Reconnecting } from "./live.js";
import { SseParser } from "./sse.js";

/** The API sends a heartbeat about every 2 s: this long without a byte is a dead stream. */
const SILENCE_MS = 5000;
/** Line ids remembered, to drop a line the API would send again. */
const MAX_IDS = 10000;

/**
 * Reads `url()` (called on every attempt). `lineEvent` names the events
 * that are lines (`APPLICATION_LOG`, `ACCESS_LOG`), handed to
 * `onLine(data, id)`. `onState(state, text)` hears "connecting", "live",
 * "reconnecting", "ended", "login" and "error"; `onHeartbeat()` each
 * heartbeat; `onMissing()` a 404, after which the stream stops.
 */
export class LogStream extends Reconnecting {
  constructor({ url, lineEvent, onLine, onState, onHeartbeat = () => {}, onMissing }) {
    super();
    Object.assign(this, { url, lineEvent, onLine, onState, onHeartbeat, onMissing });
    this.lastEventId = "";
    this.seen = new Set();
    this.controller = null;
  }

  disconnect() {
    this.controller?.abort();
  }

  async connect() {
    if (this.stopped) return;
    this.onState("connecting", this.attempt === 0 ? "Connecting…" : "Reconnecting…");
    const controller = new AbortController();
    this.controller = controller;
    const headers = { Accept: "text/event-stream" };
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    let response;
    try {
      response = await fetch(new URL(this.url(), document.baseURI), {
        headers,
        credentials: "same-origin",
        cache: "no-store",
        signal: controller.signal,
      });
    } catch {
      this.retry("Cannot connect.");
      return;
    }
    if (this.stopped) return;
    if (response.status === 404) {
      this.stopped = true;
      response.body?.cancel();
      this.onMissing();
      return;
    }
    if (!response.ok) {
      const error = await failure(response);
      // A refusal stays a refusal; an API or a server in trouble may come back.
      if (response.status >= 500 || response.status === 429) {
        this.retry(error.message);
      } else {
        this.stopped = true;
        this.onState(error.loginAgain ? "login" : "error", error.message);
      }
      return;
    }
    if (!response.headers.get("content-type")?.startsWith("text/event-stream")) {
      response.body?.cancel();
      this.retry("The API did not answer with a log stream.");
      return;
    }
    this.connections += 1;
    this.onState("live", "Live");
    await this.read(response, controller);
  }

  /** Reads one connection to its end, then decides what comes next. */
  async read(response, controller) {
    const parser = new SseParser(this.lastEventId);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let lastContact = Date.now();
    let silent = false;
    const watchdog = setInterval(() => {
      if (Date.now() - lastContact <= SILENCE_MS) return;
      silent = true;
      controller.abort();
    }, 1000);
    let endedBy;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        lastContact = Date.now();
        for (const event of parser.push(value)) {
          const ended = this.handle(event);
          if (ended !== undefined) endedBy = ended;
        }
      }
    } catch {
      // A drop, or the watchdog's abort: `silent` tells which.
    } finally {
      clearInterval(watchdog);
    }
    if (this.stopped) return;
    if (endedBy !== undefined) {
      this.stopped = true;
      this.onState("ended", endedBy);
      return;
    }
    // A close without END_OF_STREAM is a drop, as for the API's own clients.
    this.retry(silent ? `No heartbeat for ${SILENCE_MS / 1000} s.` : "Connection lost.");
  }

  /** Handles one event; returns END_OF_STREAM's `endedBy` (null if none given), else undefined. */
  handle(event) {
    this.lastEventId = event.id;
    this.attempt = 0;
    switch (event.type) {
      case "HEARTBEAT":
        this.onHeartbeat();
        return undefined;
      case "END_OF_STREAM":
        return parse(event.data)?.endedBy ?? null;
      case this.lineEvent:
        if (!this.firstSight(event.id)) return undefined;
        this.onLine(parse(event.data), event.id);
        return undefined;
      default:
        return undefined;
    }
  }

  /** Whether line `id` is new; remembers it. Lines without an id are always new. */
  firstSight(id) {
    if (!id) return true;
    if (this.seen.has(id)) return false;
    this.seen.add(id);
    if (this.seen.size > MAX_IDS) this.seen.delete(this.seen.values().next().value);
    return true;
  }

  retry(why) {
    if (this.stopped) return;
    const delay = this.later();
    this.onState("reconnecting", `${why} Reconnecting in ${Math.ceil(delay / 1000)} s…`);
  }
}

function parse(data) {
  try {
    return JSON.parse(data);
  } catch {
    return null;
  }
}
