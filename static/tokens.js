// Proxy tokens: create one with a preset or custom rules (shown once),
// list them with their scope and last use, show each one's recent calls,
// revoke, through /tokens.

import { api, applications, loadSummary, showError, showNotice } from "./api.js";
import { localToIso } from "./loglines.js";
import { APP_PRESETS, customScope, describeScope, presetScope, ruleError, splitList } from "./scopes.js";
import { timeElement } from "./time.js";

const form = document.getElementById("token-form");
const nameInput = document.getElementById("token-name");
const createButton = document.getElementById("token-create");
const status = document.getElementById("tokens-status");
const reveal = document.getElementById("token-created");
const list = document.getElementById("token-list");
const appFields = document.getElementById("token-app-fields");
const orgSelect = document.getElementById("token-org");
const appSelect = document.getElementById("token-app");
const customFields = document.getElementById("token-custom-fields");
const rulesInput = document.getElementById("token-rules");
const rulesError = document.getElementById("token-rules-error");
const eventsInput = document.getElementById("token-events");
const logsInput = document.getElementById("token-logs");
const preview = document.getElementById("token-preview");
const previewRules = document.getElementById("token-preview-rules");
const expiresInput = document.getElementById("token-expires");
const ipsInput = document.getElementById("token-ips");

/** The summary's applications ({id, name, org, owner}), once loaded. */
let apps = [];
/** The scope each listed token's item shows, to name its apps once known. */
const shownScopes = new WeakMap();

function element(tag, { className, text } = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function option(value, text) {
  const node = element("option", { text });
  node.value = value;
  return node;
}

// ---- The create form -------------------------------------------------

function chosenPreset() {
  return form.elements.preset.value || "full";
}

function chosenApp() {
  return apps.find((app) => app.owner === orgSelect.value && app.id === appSelect.value) ?? null;
}

function fillApps() {
  const inOrg = apps.filter((app) => app.owner === orgSelect.value);
  appSelect.replaceChildren(...inOrg.map((app) => option(app.id, app.name)));
  appSelect.disabled = inOrg.length === 0;
}

function fillOrganisations(all) {
  apps = all;
  const owners = new Map();
  for (const app of apps) if (!owners.has(app.owner)) owners.set(app.owner, app.org);
  if (owners.size === 0) {
    for (const select of [orgSelect, appSelect]) {
      select.replaceChildren(option("", "No application"));
      select.disabled = true;
    }
    return;
  }
  orgSelect.replaceChildren(...[...owners].map(([owner, name]) => option(owner, name)));
  orgSelect.disabled = false;
  fillApps();
}

/** Shows the fields of the chosen preset, and the rules it gives. */
function showPreset() {
  const preset = chosenPreset();
  appFields.hidden = !APP_PRESETS.has(preset);
  customFields.hidden = preset !== "custom";
  const scope = APP_PRESETS.has(preset) ? presetScope(preset, chosenApp()) : null;
  preview.hidden = !scope;
  previewRules.textContent = scope ? scope.rules.join("\n") : "";
}

function clearRuleError() {
  rulesError.hidden = true;
  rulesError.textContent = "";
  rulesInput.removeAttribute("aria-invalid");
}

/** Puts the caret on line `line` (from 1) of the rules. */
function selectLine(line) {
  const lines = rulesInput.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((sum, text) => sum + text.length + 1, 0);
  rulesInput.focus();
  rulesInput.setSelectionRange(start, start + (lines[line - 1]?.length ?? 0));
}

/** The body of `POST /tokens`, and the text-area lines of custom rules; null when a field is missing. */
function request() {
  const preset = chosenPreset();
  let scope = preset;
  let lines = [];
  if (APP_PRESETS.has(preset)) {
    scope = presetScope(preset, chosenApp());
    if (!scope) {
      showNotice(status, "Pick the application this token is for.");
      (orgSelect.disabled ? orgSelect : appSelect).focus();
      return null;
    }
  } else if (preset === "custom") {
    ({ scope, lines } = customScope({
      rulesText: rulesInput.value,
      events: eventsInput.checked,
      logsText: logsInput.value,
    }));
  }
  const body = { name: nameInput.value.trim(), scope };
  const expiresAt = localToIso(expiresInput.value);
  if (expiresAt) body.expires_at = expiresAt;
  const ips = splitList(ipsInput.value);
  if (ips.length) body.allowed_ips = ips;
  return { body, lines };
}

form.addEventListener("change", (event) => {
  if (event.target === orgSelect) fillApps();
  if (event.target === rulesInput) clearRuleError();
  showPreset();
});
rulesInput.addEventListener("input", clearRuleError);

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!nameInput.value.trim()) {
    nameInput.focus();
    return;
  }
  status.hidden = true;
  clearRuleError();
  const asked = request();
  if (!asked) return;
  createButton.disabled = true;
  try {
    const created = await api("tokens", { method: "POST", json: asked.body });
    document.getElementById("new-token").textContent = created.token;
    document.getElementById("new-token-name").textContent = `“${created.name}”`;
    document.getElementById("new-token-curl").textContent =
      `curl -H "Authorization: Bearer ${created.token}" ${new URL("api/v2/self", document.baseURI)}`;
    reveal.dataset.tokenId = created.id;
    reveal.hidden = false;
    reveal.querySelector("button.copy").focus();
    nameInput.value = "";
    list.querySelector("li.empty")?.remove();
    list.append(item(created));
  } catch (error) {
    const told = error.status === 400 && chosenPreset() === "custom" ? ruleError(error.message, asked.lines) : null;
    if (told?.line) {
      rulesError.textContent = told.message;
      rulesError.hidden = false;
      rulesInput.setAttribute("aria-invalid", "true");
      selectLine(told.line);
    } else {
      showError(status, error);
    }
  } finally {
    createButton.disabled = false;
  }
});

loadSummary()
  .then((summary) => {
    fillOrganisations(applications(summary));
    nameApps();
  })
  .catch(() => {
    for (const select of [orgSelect, appSelect]) {
      select.replaceChildren(option("", "Your applications could not be listed"));
      select.disabled = true;
    }
  })
  .finally(showPreset);
showPreset();

// ---- The list ----------------------------------------------------------

function emptyItem(text) {
  return element("li", { className: "empty", text });
}

function fact(label, ...content) {
  const wrapper = element("div");
  const dd = element("dd");
  dd.append(...content);
  wrapper.append(element("dt", { text: label }), dd);
  return wrapper;
}

function scopeContent(scope) {
  const names = new Map(apps.map((app) => [app.id, app.name]));
  const described = describeScope(scope, names);
  const content = [element("strong", { text: described.label })];
  if (described.detail) content.push(document.createTextNode(`: ${described.detail}`));
  if (described.sockets.length) {
    content.push(element("span", { className: "sockets", text: `Also ${described.sockets.join(", ")}.` }));
  }
  if (described.rules.length) {
    const rules = element("ul", { className: "rules" });
    for (const rule of described.rules) {
      const li = element("li");
      li.append(element("code", { text: rule }));
      rules.append(li);
    }
    // A preset says what it is by its name: its rules are folded away.
    if (described.preset) {
      const details = element("details", { className: "preset-rules" });
      const count = described.rules.length === 1 ? "its rule" : `its ${described.rules.length} rules`;
      details.append(element("summary", { text: `Show ${count}` }), rules);
      content.push(details);
    } else {
      content.push(rules);
    }
  }
  return content;
}

/** Shows the apps of the listed scopes by name, now that they are known. */
function nameApps() {
  for (const wrapper of list.querySelectorAll(".token-facts > div")) {
    const scope = shownScopes.get(wrapper);
    if (scope !== undefined) wrapper.querySelector("dd").replaceChildren(...scopeContent(scope));
  }
}

function lastUse(info) {
  const used = [timeElement(info.last_used_at, { fallback: "Never" })];
  if (info.last_used_at && info.last_used_from) used.push(document.createTextNode(` from ${info.last_used_from}`));
  return used;
}

function item(info) {
  const li = element("li", { className: "token" });
  li.dataset.tokenId = info.id;
  const head = element("div", { className: "token-head" });
  const name = element("h4", { className: "token-name", text: info.name });
  const actions = element("div", { className: "actions" });
  const callsId = `calls-${info.id}`;
  const calls = element("button", { className: "button small", text: "Recent calls" });
  calls.type = "button";
  calls.dataset.calls = info.id;
  calls.setAttribute("aria-expanded", "false");
  calls.setAttribute("aria-controls", callsId);
  calls.setAttribute("aria-label", `Recent calls of ${info.name}`);
  const revoke = element("button", { className: "button danger small", text: "Revoke" });
  revoke.type = "button";
  revoke.dataset.revoke = info.id;
  revoke.setAttribute("aria-label", `Revoke ${info.name}`);
  actions.append(calls, revoke);
  head.append(name, actions);

  const facts = element("dl", { className: "token-facts" });
  const scope = fact("Scope", ...scopeContent(info.scope ?? "full"));
  shownScopes.set(scope, info.scope ?? "full");
  facts.append(
    scope,
    fact("Expires", timeElement(info.expires_at, { fallback: "With its record" })),
    fact("Last used", ...lastUse(info)),
    fact("Addresses", document.createTextNode(info.allowed_ips?.length ? info.allowed_ips.join(", ") : "Anywhere")),
    fact("Created", timeElement(info.created_at)),
  );

  const panel = element("div", { className: "token-calls" });
  panel.id = callsId;
  panel.hidden = true;
  li.append(head, facts, panel);
  return li;
}

function showList(tokens) {
  list.replaceChildren(...(tokens.length ? tokens.map(item) : [emptyItem("No proxy token yet.")]));
}

async function refresh() {
  try {
    showList(await api("tokens"));
  } catch (error) {
    list.replaceChildren(emptyItem("Your tokens could not be listed."));
    showError(status, error);
  }
}

// ---- Recent calls ------------------------------------------------------

function callsTable(name, calls) {
  const table = element("table", { className: "calls" });
  const caption = element("caption", { className: "visually-hidden", text: `Recent calls of ${name}, newest first` });
  const head = element("thead");
  const headRow = element("tr");
  for (const title of ["Time", "Call", "Status", "Address"]) {
    const th = element("th", { text: title });
    th.scope = "col";
    headRow.append(th);
  }
  head.append(headRow);
  const body = element("tbody");
  for (const call of calls) {
    const tr = element("tr");
    tr.dataset.status = String(call.status).charAt(0);
    // Today's calls by their time alone (the date is in the tooltip).
    const time = element("td");
    const today = new Date(call.at).toDateString() === new Date().toDateString();
    time.append(timeElement(call.at, { timeOnly: today }));
    const what = element("td", { className: "call" });
    what.append(element("span", { className: "call-method", text: call.method }), document.createTextNode(" "));
    what.append(element("code", { text: call.path }));
    tr.append(time, what, element("td", { className: "call-status", text: String(call.status) }));
    tr.append(element("td", { text: call.client ?? "unknown" }));
    body.append(tr);
  }
  table.append(caption, head, body);
  return table;
}

async function showCalls(panel, id, name) {
  panel.setAttribute("aria-busy", "true");
  const top = element("div", { className: "calls-head" });
  const again = element("button", { className: "button small", text: "Refresh" });
  again.type = "button";
  again.dataset.refreshCalls = id;
  again.setAttribute("aria-label", `Refresh the recent calls of ${name}`);
  top.append(element("h5", { text: "Recent calls" }), again);
  try {
    const calls = await api(`tokens/${encodeURIComponent(id)}/calls`);
    const shown = calls.length
      ? callsTable(name, calls)
      : element("p", { className: "hint", text: "No call yet. The last 50 are kept." });
    panel.replaceChildren(top, shown);
  } catch (error) {
    const failed = element("p", { className: "notice" });
    showError(failed, error);
    panel.replaceChildren(top, failed);
  } finally {
    panel.removeAttribute("aria-busy");
  }
}

async function onCalls(button) {
  const li = button.closest("li.token");
  const panel = li.querySelector(".token-calls");
  const name = li.querySelector(".token-name").textContent;
  const open = button.getAttribute("aria-expanded") === "true";
  button.setAttribute("aria-expanded", String(!open));
  panel.hidden = open;
  if (!open) await showCalls(panel, button.dataset.calls, name);
}

// Revoking takes two clicks on the same button: no modal dialog, and no
// token lost to a stray click.
async function onRevoke(button) {
  if (button.dataset.armed !== "true") {
    button.dataset.armed = "true";
    button.textContent = "Confirm revoke";
    return;
  }
  const id = button.dataset.revoke;
  const li = button.closest("li.token");
  const name = li.querySelector(".token-name").textContent;
  button.disabled = true;
  try {
    await api(`tokens/${encodeURIComponent(id)}`, { method: "DELETE" });
    li.remove();
    if (!list.querySelector("li")) list.append(emptyItem("No proxy token yet."));
    if (reveal.dataset.tokenId === id) reveal.hidden = true;
    showNotice(status, `Token “${name}” revoked: it no longer works.`);
  } catch (error) {
    button.disabled = false;
    showError(status, error);
  }
}

list.addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button) return;
  if (button.dataset.revoke) onRevoke(button);
  else if (button.dataset.calls) onCalls(button);
  else if (button.dataset.refreshCalls) {
    const li = button.closest("li.token");
    showCalls(li.querySelector(".token-calls"), button.dataset.refreshCalls, li.querySelector(".token-name").textContent);
  }
});

refresh();
