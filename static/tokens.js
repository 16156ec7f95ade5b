// Proxy tokens: create (shown once), list, revoke, through /tokens.

import { api, showError, showNotice } from "./api.js";
import { timeElement } from "./time.js";

const form = document.getElementById("token-form");
const nameInput = document.getElementById("token-name");
const createButton = document.getElementById("token-create");
const status = document.getElementById("tokens-status");
const reveal = document.getElementById("token-created");
const list = document.getElementById("token-list");

function emptyRow(text) {
  const row = document.createElement("tr");
  row.className = "empty";
  const cell = document.createElement("td");
  cell.colSpan = 4;
  cell.textContent = text;
  row.append(cell);
  return row;
}

function row(info) {
  const tr = document.createElement("tr");
  tr.dataset.tokenId = info.id;
  const name = document.createElement("td");
  name.className = "token-name";
  name.textContent = info.name;
  const created = document.createElement("td");
  created.dataset.label = "Created";
  created.append(timeElement(info.created_at));
  const used = document.createElement("td");
  used.dataset.label = "Last used";
  used.append(timeElement(info.last_used_at, { fallback: "Never" }));
  const actions = document.createElement("td");
  actions.className = "actions";
  const revoke = document.createElement("button");
  revoke.type = "button";
  revoke.className = "button danger small";
  revoke.dataset.revoke = info.id;
  revoke.textContent = "Revoke";
  revoke.setAttribute("aria-label", `Revoke ${info.name}`);
  actions.append(revoke);
  tr.append(name, created, used, actions);
  return tr;
}

function showList(tokens) {
  list.replaceChildren(...(tokens.length ? tokens.map(row) : [emptyRow("No proxy token yet.")]));
}

async function refresh() {
  try {
    showList(await api("tokens"));
  } catch (error) {
    list.replaceChildren(emptyRow("Your tokens could not be listed."));
    showError(status, error);
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = nameInput.value.trim();
  if (!name) {
    nameInput.focus();
    return;
  }
  createButton.disabled = true;
  status.hidden = true;
  try {
    const created = await api("tokens", { method: "POST", json: { name } });
    document.getElementById("new-token").textContent = created.token;
    document.getElementById("new-token-name").textContent = `“${created.name}”`;
    document.getElementById("new-token-curl").textContent =
      `curl -H "Authorization: Bearer ${created.token}" ${new URL("api/v2/self", document.baseURI)}`;
    reveal.dataset.tokenId = created.id;
    reveal.hidden = false;
    reveal.querySelector("button.copy").focus();
    nameInput.value = "";
    list.querySelector("tr.empty")?.remove();
    list.append(row(created));
  } catch (error) {
    showError(status, error);
  } finally {
    createButton.disabled = false;
  }
});

// Revoking takes two clicks on the same button: no modal dialog, and no
// token lost to a stray click.
list.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-revoke]");
  if (!button) return;
  if (button.dataset.armed !== "true") {
    button.dataset.armed = "true";
    button.textContent = "Confirm revoke";
    return;
  }
  const id = button.dataset.revoke;
  const name = button.closest("tr").querySelector(".token-name").textContent;
  button.disabled = true;
  try {
    await api(`tokens/${encodeURIComponent(id)}`, { method: "DELETE" });
    button.closest("tr").remove();
    if (!list.querySelector("tr")) list.append(emptyRow("No proxy token yet."));
    if (reveal.dataset.tokenId === id) reveal.hidden = true;
    showNotice(status, `Token “${name}” revoked: it no longer works.`);
  } catch (error) {
    button.disabled = false;
    showError(status, error);
  }
});

refresh();
