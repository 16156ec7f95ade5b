// A WebSocket to one of this server's relays that comes back when it drops:
// exponential back-off from 1 s up to 30 s, reset once a connection has
// lasted a while. When the session has ended it stops and says so.

import { loginAgainLink } from "./api.js";

const FIRST_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;
/** A connection that lived this long resets the back-off. */
const STABLE_MS = 10000;
/** Close codes after which retrying cannot help. */
const POLICY_VIOLATION = 1008;
const AUTH_FAILED = 4001;

/** The ws(s):// URL of `path`, relative to the page. */
export function socketUrl(path) {
  const url = new URL(path, document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url;
}

/** The delay before reconnection attempt number `attempt` (0-based). */
function backoff(attempt) {
  const delay = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** attempt);
  // ±20 %, so that many pages do not all come back at the same instant.
  return Math.round(delay * (0.8 + Math.random() * 0.4));
}

/** Shows a connection state in a status element (`data-state` styles it). */
export function showState(element, state, text) {
  element.dataset.state = state;
  element.replaceChildren(document.createTextNode(text));
  if (state === "login") {
    element.append(document.createTextNode(" "), loginAgainLink());
  }
}

/** Whether this browser's session still holds tokens (the token API answers). */
async function sessionAlive() {
  try {
    const response = await fetch(new URL("tokens", document.baseURI), { credentials: "same-origin" });
    return response.status !== 401;
  } catch {
    return true; // Unreachable: keep trying, it may come back.
  }
}

/**
 * What every live connection of the page shares: `start()`, `stop()`, and
 * attempts again after a back-off. A subclass has `connect()` and
 * `disconnect()`, and counts `connections` when one opens.
 */
export class Reconnecting {
  constructor() {
    this.attempt = 0;
    this.timer = null;
    this.stopped = false;
    /** How many connections were opened: tests and curious people read it. */
    this.connections = 0;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.disconnect();
  }

  /** Calls `connect()` again after the next back-off delay, and returns that delay. */
  later() {
    const delay = backoff(this.attempt);
    this.attempt += 1;
    this.timer = setTimeout(() => this.connect(), delay);
    return delay;
  }
}

/**
 * Keeps a socket open to `url()` (called again on every attempt, so it can
 * carry a resume point) and hands each message, parsed as JSON when it is,
 * to `onMessage`. `status` is the element that tells the person what is
 * happening.
 */
export class LiveSocket extends Reconnecting {
  constructor({ url, onMessage, status, liveText = "Live" }) {
    super();
    this.url = url;
    this.onMessage = onMessage;
    this.status = status;
    this.liveText = liveText;
    this.socket = null;
  }

  disconnect() {
    if (this.socket) this.socket.close(1000, "closed by the page");
    this.socket = null;
  }

  connect() {
    showState(this.status, "connecting", this.attempt === 0 ? "Connecting…" : "Reconnecting…");
    let socket;
    try {
      socket = new WebSocket(this.url());
    } catch {
      this.retry(false);
      return;
    }
    this.socket = socket;
    let openedAt = null;
    socket.addEventListener("open", () => {
      openedAt = Date.now();
      this.connections += 1;
      this.status.dataset.connections = String(this.connections);
      showState(this.status, "live", this.liveText);
    });
    socket.addEventListener("message", (event) => this.receive(event.data));
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket || this.stopped) return;
      this.socket = null;
      if (openedAt !== null && Date.now() - openedAt >= STABLE_MS) this.attempt = 0;
      if (event.code === POLICY_VIOLATION || event.code === AUTH_FAILED) {
        showState(this.status, "login", "The Clever Cloud API refused your token.");
        // The relay's own words, for whoever wants the detail.
        if (event.reason) this.status.title = event.reason;
        this.stopped = true;
        return;
      }
      this.retry(openedAt !== null);
    });
  }

  receive(data) {
    let message = data;
    try {
      message = JSON.parse(data);
    } catch {
      // Not JSON: hand it over as it is.
    }
    // The relay answers the API's heartbeats itself; the socket_ready
    // greeting only confirms what "open" said.
    if (message && (message.type === "heartbeat" || message.message_type === "socket_ready")) return;
    if (message && message.type === "error") {
      showState(this.status, "error", `The API reported an error: ${message.message ?? message.id ?? "unknown"}.`);
      return;
    }
    this.onMessage(message);
  }

  async retry(wasOpen) {
    // A refused upgrade looks like any dropped connection to a page: ask
    // whether the session is still there before trying again.
    if (!(await sessionAlive())) {
      showState(this.status, "login", "Your session has ended.");
      this.stopped = true;
      return;
    }
    if (this.stopped) return;
    const delay = this.later();
    const lost = wasOpen ? "Connection lost." : "Cannot connect.";
    showState(this.status, "reconnecting", `${lost} Reconnecting in ${Math.ceil(delay / 1000)} s…`);
  }
}
