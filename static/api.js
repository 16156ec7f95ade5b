// Calls to this server (its proxy to the Clever Cloud API, and its token
// API), with failures turned into plain words.

/** A failed call, with a message meant for people. */
export class ApiError extends Error {
  constructor(message, { status = 0, loginAgain = false } = {}) {
    super(message);
    this.status = status;
    this.loginAgain = loginAgain;
  }
}

function describe(status, body) {
  const ours = body && typeof body.error === "string" ? body.error : null;
  const theirs = body && typeof body.message === "string" ? body.message : null;
  switch (status) {
    case 401:
      return "Your session has ended or your Clever Cloud token has expired.";
    case 403:
      return ours ?? `The Clever Cloud API refused this call: ${theirs ?? "your token lacks the rights for it"}.`;
    case 502:
      return "The Clever Cloud API cannot be reached right now. Try again in a moment.";
    case 503:
      return ours ?? "This server is unavailable right now. Try again in a moment.";
    case 504:
      return "The Clever Cloud API took too long to answer. Try again in a moment.";
    default:
      if (ours) return ours;
      if (theirs) return `The Clever Cloud API answered: ${theirs}`;
      return `Unexpected answer from the server (HTTP ${status}).`;
  }
}

/**
 * Calls `path` (relative to the page, e.g. `api/v2/self` or `tokens`) and
 * returns its JSON body, or null for an empty answer. Throws an ApiError.
 */
export async function api(path, { method = "GET", json } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(new URL(path, document.baseURI), init);
  } catch {
    throw new ApiError("This server cannot be reached. Check your connection, then reload the page.");
  }
  if (!response.ok) throw await failure(response);
  return jsonBody(response);
}

/** The JSON body of `response`; null when empty or not JSON. */
async function jsonBody(response) {
  const text = await response.text().catch(() => "");
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

/** The ApiError that a failed answer (not 2xx) stands for, read from its status and body. */
export async function failure(response) {
  const body = await jsonBody(response);
  return new ApiError(describe(response.status, body), {
    status: response.status,
    loginAgain: response.status === 401,
  });
}

let summary = null;

/** `/v2/summary` through the proxy, fetched once for the whole page. */
export function loadSummary() {
  summary ??= api("api/v2/summary");
  return summary;
}

/**
 * Every application of the summary, with its organisation's name and its
 * owner's id (the organisation's; the personal space's is the user's id).
 */
export function applications(summaryBody) {
  const apps = [];
  const add = (owner, name, app) => {
    if (apps.some((known) => known.id === app.id)) return;
    apps.push({ id: app.id, name: app.name ?? app.id, state: app.state, org: name ?? owner, owner });
  };
  for (const org of summaryBody?.organisations ?? []) {
    for (const app of org.applications ?? []) add(org.id, org.name, app);
  }
  // Personal applications listed under the user rather than as a space.
  const user = summaryBody?.user;
  for (const app of user?.applications ?? []) add(user.id, user.name, app);
  return apps;
}

/** Shows `error` in `element`: its message, and a way out when there is one. */
export function showError(element, error) {
  const message = error instanceof ApiError ? error.message : "Something went wrong on this page. Reload it to try again.";
  element.replaceChildren(document.createTextNode(`${message} `));
  if (error instanceof ApiError && error.loginAgain) {
    element.append(loginAgainLink());
  }
  element.dataset.kind = "error";
  element.hidden = false;
}

/** Shows a neutral `message` in `element`. */
export function showNotice(element, message) {
  element.replaceChildren(document.createTextNode(message));
  element.dataset.kind = "info";
  element.hidden = false;
}

/** A link back to the login page. */
export function loginAgainLink() {
  const link = document.createElement("a");
  link.href = new URL("login", document.baseURI).href;
  link.className = "login-again";
  link.textContent = "Log in again";
  return link;
}
