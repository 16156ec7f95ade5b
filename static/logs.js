// Live logs: pick an application, watch its lines stream through
// /ws/logs/{app_id}. Pause, clear, follow the tail; after a drop the socket
// resumes from the last line's time (`since`), skipping lines already shown.

import { applications, loadSummary, showError } from "./api.js";
import { LiveSocket, showState, socketUrl } from "./live.js";
import { timeElement, toDate } from "./time.js";

const MAX_LINES = 2000;

const picker = document.getElementById("logs-app");
const pauseButton = document.getElementById("logs-pause");
const clearButton = document.getElementById("logs-clear");
const follow = document.getElementById("logs-follow");
const view = document.getElementById("log-lines");
const status = document.getElementById("logs-status");

let socket = null;
let paused = false;
let pending = [];
/** The resume point: the newest line's time, and the lines seen at it. */
let lastTime = null;
let lastRaw = null;
let seenAtLast = new Set();

function placeholder(text) {
  const note = document.createElement("p");
  note.className = "log-placeholder";
  note.textContent = text;
  view.replaceChildren(note);
}

/** A log message's fields (`message` in newer lines, `@message` in older). */
function parseLine(message) {
  const source = message?._source;
  if (!source) return null;
  return {
    raw: source["@timestamp"] ?? null,
    time: toDate(source["@timestamp"]),
    text: String(source.message ?? source["@message"] ?? ""),
    severity: String(source.syslog_severity ?? ""),
  };
}

/** Whether `line` is new, remembering it as the resume point if so. */
function isNew(line) {
  if (!line.time) return true;
  const time = line.time.getTime();
  if (lastTime !== null && time < lastTime) return false;
  if (lastTime !== null && time === lastTime) {
    if (seenAtLast.has(line.text)) return false;
  } else {
    lastTime = time;
    lastRaw = line.raw;
    seenAtLast = new Set();
  }
  seenAtLast.add(line.text);
  return true;
}

function render(line) {
  const row = document.createElement("div");
  row.className = "log-line";
  if (line.severity) row.dataset.severity = line.severity;
  const when = timeElement(line.raw, { timeOnly: true });
  when.className = "log-time";
  const text = document.createElement("span");
  text.className = "log-text";
  text.textContent = line.text;
  row.append(when, text);
  return row;
}

function append(lines) {
  if (lines.length === 0) return;
  if (view.querySelector(".log-placeholder")) view.replaceChildren();
  const fragment = document.createDocumentFragment();
  for (const line of lines) fragment.append(render(line));
  view.append(fragment);
  while (view.childElementCount > MAX_LINES) view.firstElementChild.remove();
  if (follow.checked) view.scrollTop = view.scrollHeight;
}

function receive(message) {
  const line = parseLine(message);
  if (!line || !isNew(line)) return;
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

function watch(appId) {
  if (socket) socket.stop();
  socket = null;
  lastTime = null;
  lastRaw = null;
  seenAtLast = new Set();
  pending = [];
  setPaused(false);
  if (!appId) {
    pauseButton.disabled = true;
    showState(status, "idle", "Pick an application");
    placeholder("Pick an application to see its logs as they are written.");
    return;
  }
  pauseButton.disabled = false;
  placeholder("Waiting for log lines…");
  socket = new LiveSocket({
    url: () => {
      const url = socketUrl(`ws/logs/${encodeURIComponent(appId)}`);
      if (lastRaw) url.searchParams.set("since", lastRaw);
      return url;
    },
    onMessage: receive,
    status,
    liveText: "Live",
  });
  socket.start();
}

pauseButton.addEventListener("click", () => setPaused(!paused));
clearButton.addEventListener("click", () => {
  pending = [];
  if (paused) pauseButton.textContent = "Resume";
  view.replaceChildren();
});
follow.addEventListener("change", () => {
  if (follow.checked) view.scrollTop = view.scrollHeight;
});
picker.addEventListener("change", () => watch(picker.value));

placeholder("Pick an application to see its logs as they are written.");

loadSummary()
  .then((summary) => {
    const apps = applications(summary);
    const none = document.createElement("option");
    none.value = "";
    none.textContent = apps.length ? "Choose an application…" : "No application on this account";
    const groups = new Map();
    for (const app of apps) {
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
    picker.disabled = apps.length === 0;
  })
  .catch((error) => {
    const option = document.createElement("option");
    option.value = "";
    option.textContent = "Applications unavailable";
    picker.replaceChildren(option);
    status.dataset.state = "error";
    showError(status, error);
  });
