// Your account: /v2/self and /v2/summary through this server's proxy.

import { api, loadSummary, showError } from "./api.js";

const section = document.getElementById("account");
const nameField = document.getElementById("account-name");
const emailField = document.getElementById("account-email");
const avatar = document.getElementById("account-avatar");
const orgsField = document.getElementById("account-orgs");
const status = document.getElementById("account-status");
const whoami = document.getElementById("whoami");

function initials(name) {
  const letters = String(name ?? "").split(/\s+/).filter(Boolean).map((word) => word[0]);
  return (letters.length > 1 ? letters[0] + letters[letters.length - 1] : letters[0] ?? "?").toUpperCase();
}

function showAvatar(user) {
  avatar.textContent = initials(user.name ?? user.email);
  if (!user.avatar) return;
  // Initials stay if the picture cannot be loaded (or is not allowed).
  const picture = new Image();
  picture.alt = "";
  picture.addEventListener("load", () => avatar.replaceChildren(picture));
  picture.src = user.avatar;
}

function showUser(user) {
  nameField.textContent = user.name || "Your account";
  emailField.textContent = user.email ?? "";
  whoami.textContent = user.name || user.email || "";
  whoami.hidden = !whoami.textContent;
  showAvatar(user);
}

const STATES = {
  SHOULD_BE_UP: "running",
  SHOULD_BE_DOWN: "stopped",
  WANTS_TO_BE_UP: "starting",
};

function showOrganisations(summary, userId) {
  const blocks = [];
  for (const org of summary?.organisations ?? []) {
    const block = document.createElement("div");
    block.className = "org";
    const title = document.createElement("h3");
    title.textContent = org.id === userId ? `${org.name ?? "Personal space"} (personal space)` : org.name ?? org.id;
    const apps = document.createElement("ul");
    apps.className = "apps";
    for (const app of org.applications ?? []) {
      const item = document.createElement("li");
      item.className = "app";
      const state = STATES[app.state] ?? String(app.state ?? "unknown").toLowerCase().replaceAll("_", " ");
      item.dataset.state = state;
      const name = document.createElement("span");
      name.className = "app-name";
      name.textContent = app.name ?? app.id;
      const badge = document.createElement("span");
      badge.className = "app-state";
      badge.textContent = state;
      item.append(name, badge);
      apps.append(item);
    }
    if (!apps.childElementCount) {
      const none = document.createElement("li");
      none.className = "muted";
      none.textContent = "No application";
      apps.append(none);
    }
    block.append(title, apps);
    blocks.push(block);
  }
  orgsField.replaceChildren(...blocks);
  document.getElementById("orgs-title").hidden = blocks.length === 0;
}

async function load() {
  let userId = null;
  try {
    const user = await api("api/v2/self");
    userId = user.id;
    showUser(user);
  } catch (error) {
    emailField.textContent = "";
    showError(status, error);
    section.setAttribute("aria-busy", "false");
    return;
  }
  try {
    showOrganisations(await loadSummary(), userId);
  } catch (error) {
    showError(status, error);
  }
  section.setAttribute("aria-busy", "false");
}

load();
