// Live logs: pick an application and a tab (its logs, or its access logs),
// narrow them with the API's filters, and watch the lines stream in. They
// come from the API's v4 stream through the proxy (logstream.js); where that
// endpoint does not exist (404), application logs come from the legacy
// WebSocket relay /ws/logs/{app_id} instead. Pause, clear, follow the tail,
// download what is shown.

import { applications, loadSummary, showError } from "./api.js";
import { LiveSocket, showState, socketUrl } from "./live.js";
import {
  accessLine,
  applicationLine,
  endedByText,
  legacyLine,
  legacyQuery,
  lineText,
  localToIso,
  splitIds,
  streamQuery,
} from "./loglines.js";
import { LogStream } from "./logstream.js";
import { timeElement, toDate } from "./time.js";

const MAX_LINES = 2000;

/** What each tab reads. */
const KINDS = {
  application: {
    path: (owner, app) => `api/v4/logs/organisations/${owner}/applications/${app}/logs`,
    lineEvent: "APPLICATION_LOG",
    toLine: applicationLine,
    fileName: "logs",
    columns: ["Time", "Instance", "Severity", "Message"],
  },
  access: {
    path: (owner, app) => `api/v4/accesslogs/organisations/${owner}/applications/${app}/accesslogs`,
    lineEvent: "ACCESS_LOG",
    toLine: accessLine,
    fileName: "access-logs",
    columns: ["Time", "Method", "Path", "Status", "Source", "Duration"],
  },
};

const picker = document.getElementById("logs-app");
const tabs = [...document.querySelectorAll("#logs [role=tab]")];
const form = document.getElementById("logs-filters");
const pauseButton = document.getElementById("logs-pause");
const clearButton = document.getElementById("logs-clear");
const downloadButton = document.getElementById("logs-download");
const follow = document.getElementById("logs-follow");
const view = document.getElementById("log-lines");
const columns = document.getElementById("log-columns");
const status = document.getElementById("logs-status");
const note = document.getElementById("logs-note");

const apps = new Map();
let kind = "application";
/** The open stream (a LogStream, or the legacy LiveSocket). */
let source = null;
let paused = false;
let pending = [];
/** The text of each line shown, for the download, in step with the view. */
let shown = [];

function placeholder(text) {
  const element = document.createElement("p");
  element.className = "log-placeholder";
  element.textContent = text;
  view.replaceChildren(element);
  shown = [];
}

function showNote(text) {
  note.textContent = text;
  note.hidden = !text;
}

function cell(className, text, title) {
  const span = document.createElement("span");
  span.className = className;
  span.textContent = text;
  if (title) span.title = title;
  return span;
}

function render(line) {
  const row = document.createElement("div");
  row.className = "log-line";
  if (line.id) row.dataset.id = line.id;
  const when = timeElement(line.date, { timeOnly: true, fallback: "—" });
  when.className = "log-time";
  if (kind === "access") {
    const code = line.status ?? "";
    row.dataset.status = String(code).charAt(0);
    row.append(
      when,
      cell("log-method", line.method),
      cell("log-path", line.path, line.path),
      cell("log-status", String(code)),
      cell("log-source", line.source),
      cell("log-duration", line.durationMs === null ? "" : `${line.durationMs} ms`),
    );
  } else {
    if (line.severity) row.dataset.severity = line.severity.toLowerCase();
    row.append(
      when,
      // Instance ids are long: the first block tells them apart.
      cell("log-instance", line.instance.split("-")[0], line.instance),
      cell("log-severity", line.severity),
      cell("log-text", line.message),
    );
  }
  return row;
}

function append(lines) {
  if (lines.length === 0) return;
  if (view.querySelector(".log-placeholder")) view.replaceChildren();
  const fragment = document.createDocumentFragment();
  for (const line of lines) {
    fragment.append(render(line));
    shown.push(lineText(kind, line));
  }
  view.append(fragment);
  while (view.childElementCount > MAX_LINES) view.firstElementChild.remove();
  shown = shown.slice(-MAX_LINES);
  downloadButton.disabled = false;
  if (follow.checked) view.scrollTop = view.scrollHeight;
}

function receive(line) {
  if (paused) {
    pending.push(line);
    if (pending.length > MAX_LINES) pending.shift();
    pauseButton.textContent = `Resume (${pending.length} new)`;
  } else {
    append([line]);
  }
}

function setPaused(value) {
  paused = value;
  pauseButton.setAttribute("aria-pressed", String(paused));
  if (paused) {
    pauseButton.textContent = "Resume";
  } else {
    pauseButton.textContent = "Pause";
    append(pending);
    pending = [];
  }
}

/** The filter form's values, times in ISO 8601. */
function filters() {
  return {
    since: localToIso(form.elements.since.value),
    until: localToIso(form.elements.until.value),
    text: form.elements.filter.value.trim(),
    deployment: form.elements.deployment.value.trim(),
    instances: splitIds(form.elements.instance.value),
  };
}

/** Shows a LogStream's state; an ended stream says why. */
function streamState(state, text) {
  if (state === "ended") {
    showState(status, "ended", "Ended");
    showNote(`The stream has ended: ${endedByText(text)}. Apply the filters again to read more.`);
    return;
  }
  if (state === "live") status.dataset.connections = String(source.connections);
  showState(status, state, text);
}

function heartbeat() {
  status.dataset.heartbeats = String(Number(status.dataset.heartbeats ?? 0) + 1);
  const now = new Date();
  status.title = `Connected: last heartbeat at ${now.toLocaleTimeString()}`;
  // Restarts the pulse of the "connected" mark.
  status.classList.remove("beat");
  void status.offsetWidth;
  status.classList.add("beat");
}

function watch() {
  source?.stop();
  source = null;
  pending = [];
  setPaused(false);
  showNote("");
  status.title = "";
  delete status.dataset.heartbeats;
  delete status.dataset.connections;
  view.dataset.kind = kind;
  columns.dataset.kind = kind;
  columns.replaceChildren(...KINDS[kind].columns.map((name) => cell("log-column", name)));
  const app = apps.get(picker.value);
  downloadButton.disabled = true;
  if (!app) {
    columns.replaceChildren();
    pauseButton.disabled = true;
    showState(status, "idle", "Pick an application");
    placeholder("Pick an application to see its logs as they are written.");
    return;
  }
  pauseButton.disabled = false;
  placeholder(kind === "access" ? "Waiting for requests…" : "Waiting for log lines…");
  const wanted = filters();
  const { path, lineEvent, toLine } = KINDS[kind];
  status.dataset.source = "v4";
  source = new LogStream({
    url: () => {
      const query = streamQuery(kind, wanted).toString();
      const base = path(encodeURIComponent(app.owner), encodeURIComponent(app.id));
      return query ? `${base}?${query}` : base;
    },
    lineEvent,
    onLine: (data, id) => receive(toLine(data, id)),
    onState: streamState,
    onHeartbeat: heartbeat,
    onMissing: () => (kind === "access" ? noAccessLogs() : watchLegacy(app, wanted)),
  });
  source.start();
}

function noAccessLogs() {
  showState(status, "error", "Unavailable");
  placeholder("This API does not offer access logs.");
}

/** The legacy relay: it resumes from the last line's time, so lines seen at that time are skipped. */
function watchLegacy(app, wanted) {
  status.dataset.source = "websocket";
  const omitted = wanted.until || wanted.instances.length ? " It ignores the end time and instance filters." : "";
  showNote(`The API's v4 log stream is not available here: these lines come from the older log socket.${omitted}`);
  let lastTime = null;
  let lastRaw = null;
  let seenAtLast = new Set();
  const isNew = (line) => {
    const time = toDate(line.date)?.getTime();
    if (time === undefined) return true;
    if (lastTime !== null && time < lastTime) return false;
    if (time === lastTime) {
      if (seenAtLast.has(line.message)) return false;
    } else {
      lastTime = time;
      lastRaw = line.date;
      seenAtLast = new Set();
    }
    seenAtLast.add(line.message);
    return true;
  };
  source = new LiveSocket({
    url: () => {
      const url = socketUrl(`ws/logs/${encodeURIComponent(app.id)}`);
      url.search = legacyQuery(wanted, lastRaw).toString();
      return url;
    },
    onMessage: (message) => {
      const line = legacyLine(message);
      if (line && isNew(line)) receive(line);
    },
    status,
    liveText: "Live",
  });
  source.start();
}

function download() {
  const app = apps.get(picker.value);
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const file = new Blob([shown.map((line) => `${line}\n`).join("")], { type: "text/plain" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(file);
  link.download = `${app?.name ?? "app"}-${KINDS[kind].fileName}-${stamp}.txt`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 0);
}

function selectTab(tab) {
  for (const other of tabs) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
  }
  kind = tab.dataset.kind;
  // Access logs take only the times.
  for (const field of form.querySelectorAll("[data-application-only]")) field.hidden = kind !== "application";
  watch();
}

for (const tab of tabs) {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    const next = tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length];
    next.focus();
    selectTab(next);
  });
}
form.addEventListener("submit", (event) => {
  event.preventDefault();
  watch();
});
pauseButton.addEventListener("click", () => setPaused(!paused));
clearButton.addEventListener("click", () => {
  pending = [];
  if (paused) pauseButton.textContent = "Resume";
  view.replaceChildren();
  shown = [];
  downloadButton.disabled = true;
});
downloadButton.addEventListener("click", download);
follow.addEventListener("change", () => {
  if (follow.checked) view.scrollTop = view.scrollHeight;
});
picker.addEventListener("change", watch);

placeholder("Pick an application to see its logs as they are written.");

loadSummary()
  .then((summary) => {
    const none = document.createElement("option");
    const all = applications(summary);
    none.value = "";
    none.textContent = all.length ? "Choose an application…" : "No application on this account";
    const groups = new Map();
    for (const app of all) {
      apps.set(app.id, app);
      if (!groups.has(app.org)) {
        const group = document.createElement("optgroup");
        group.label = app.org;
        groups.set(app.org, group);
      }
      const option = document.createElement("option");
      option.value = app.id;
      option.textContent = app.name;
      groups.get(app.org).append(option);
    }
    picker.replaceChildren(none, ...groups.values());
    picker.disabled = all.length === 0;
  })
  .catch((error) => {
    const option = document.createElement("option");
    option.value = "";
    option.textContent = "Applications unavailable";
    picker.replaceChildren(option);
    status.dataset.state = "error";
    showError(status, error);
  });
