// Live events: the /ws/events relay as a list, newest first.

import { applications, loadSummary } from "./api.js";
import { LiveSocket, socketUrl } from "./live.js";
import { timeElement } from "./time.js";

const MAX_EVENTS = 100;

const list = document.getElementById("event-list");
const empty = document.getElementById("events-empty");
const status = document.getElementById("events-status");

const appNames = new Map();
loadSummary()
  .then((summary) => {
    for (const app of applications(summary)) appNames.set(app.id, app.name);
  })
  .catch(() => {
    // The account panel says what went wrong; events just show ids.
  });

/** The application an event is about: `data` is a JSON document in a string. */
function eventApp(event) {
  let data = event.data;
  if (typeof data === "string") {
    try {
      data = JSON.parse(data);
    } catch {
      return null;
    }
  }
  return data?.appId ?? data?.id ?? null;
}

/** "DEPLOYMENT_SUCCESS" → "Deployment success". */
function humanName(name) {
  const words = String(name).toLowerCase().replaceAll("_", " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function tone(name) {
  if (/FAIL|ERROR|CANCEL/.test(name)) return "bad";
  if (/SUCCESS|UP$/.test(name)) return "good";
  return "neutral";
}

function show(event) {
  if (!event || typeof event !== "object" || !event.event) return;
  const item = document.createElement("li");
  item.className = "event";
  item.dataset.event = event.event;
  item.dataset.tone = tone(event.event);

  const name = document.createElement("span");
  name.className = "event-name";
  name.textContent = humanName(event.event);
  name.title = event.event;

  const appId = eventApp(event);
  const app = document.createElement("span");
  app.className = "event-app";
  app.textContent = appId ? appNames.get(appId) ?? appId : "Account";
  if (appId) app.dataset.appId = appId;

  const when = timeElement(event.date, { fallback: "just now" });
  when.className = "event-date";

  item.append(name, app, when);
  empty.hidden = true;
  list.insertBefore(item, empty.nextSibling);
  while (list.children.length > MAX_EVENTS + 1) list.lastElementChild.remove();
}

new LiveSocket({
  url: () => socketUrl("ws/events"),
  onMessage: show,
  status,
  liveText: "Live",
}).start();
