// What a proxy token may do, as the create form builds it and the token
// list shows it: the presets, custom rules, addresses. Pure: no DOM, so
// node's test runner checks it (tests/js/scopes.test.mjs).

/** The presets made for one application. */
export const APP_PRESETS = new Set(["deploy", "logs"]);

// The rules of each application preset, for an owner (organisation, or the
// user for the personal space) and an app, both already path-encoded.
const PRESET_RULES = {
  // Redeploy it, read its status, read its logs.
  deploy: (owner, app) => [
    `POST /v2/organisations/${owner}/applications/${app}/instances`,
    `GET /v2/organisations/${owner}/applications/${app}`,
    `GET /v2/organisations/${owner}/applications/${app}/instances`,
    `GET /v4/logs/organisations/${owner}/applications/${app}/**`,
  ],
  // Its application logs and access logs.
  logs: (owner, app) => [
    `GET /v4/logs/organisations/${owner}/applications/${app}/**`,
    `GET /v4/accesslogs/organisations/${owner}/applications/${app}/**`,
  ],
};

/**
 * The scope of preset `name` (`full`, `read-only`, `deploy`, `logs`) in the
 * JSON shape `POST /tokens` takes; `app` ({id, owner}, as `applications()`
 * of api.js gives it) for the application presets, which return null
 * without one.
 */
export function presetScope(name, app) {
  if (name === "full" || name === "read-only") return name;
  const rules = PRESET_RULES[name];
  if (!rules) throw new Error(`no preset ${name}`);
  if (!app?.id || !app?.owner) return null;
  return {
    rules: rules(encodeURIComponent(app.owner), encodeURIComponent(app.id)),
    events: false,
    // A logs relay is a read of that app's logs.
    logs: [app.id],
  };
}

/**
 * The rules of the custom text area, one a line, blank lines skipped;
 * `lines[i]` is the text-area line (from 1) of `rules[i]`.
 */
export function rulesFromText(text) {
  const rules = [];
  const lines = [];
  String(text ?? "").split(/\r?\n/).forEach((line, index) => {
    const rule = line.trim();
    if (rule) {
      rules.push(rule);
      lines.push(index + 1);
    }
  });
  return { rules, lines };
}

/** The items of a list typed with commas or spaces (`a, b c`). */
export function splitList(text) {
  return String(text ?? "").split(/[\s,]+/).filter(Boolean);
}

/** The custom scope of the form's fields, and the text-area line of each rule. */
export function customScope({ rulesText, events, logsText }) {
  const { rules, lines } = rulesFromText(rulesText);
  return { scope: { rules, events: Boolean(events), logs: splitList(logsText) }, lines };
}

/**
 * The server's refusal of a scope (`scope: rule N `…`: why`), told by the
 * text-area line the rule came from: `{message, line}`, `line` null when
 * the message names no rule of `lines`.
 */
export function ruleError(message, lines) {
  const text = String(message ?? "").replace(/^scope: /, "");
  const match = /^rule (\d+) (.*)$/s.exec(text);
  const line = match ? lines[Number(match[1]) - 1] : undefined;
  if (!line) return { message: text, line: null };
  return { message: `Line ${line}: ${match[2]}`, line };
}

/**
 * Which application preset `scope` is, if it is one: `{preset, app}` (the
 * app's id), else null.
 */
export function presetOf(scope) {
  const app = scope?.logs?.length === 1 ? scope.logs[0] : null;
  const owner = /^\S+ \/v[24]\/(?:logs\/)?organisations\/([^/]+)\/applications\//.exec(scope?.rules?.[0] ?? "")?.[1];
  if (!app || !owner || scope.events) return null;
  for (const preset of APP_PRESETS) {
    const built = presetScope(preset, { id: app, owner: decodeURIComponent(owner) });
    if (JSON.stringify(built) === JSON.stringify({ rules: scope.rules, events: false, logs: scope.logs })) {
      return { preset, app };
    }
  }
  return null;
}

const PRESET_LABELS = { deploy: "Deploy one application", logs: "Logs of one application" };

/**
 * How the list shows a scope: a label and a detail, the rules (as
 * written), and the live sockets it may open, apps named by `appNames` (a
 * Map of id to name) when known.
 */
export function describeScope(scope, appNames = new Map()) {
  if (scope === "full") return { label: "Full access", detail: "everything your account may do", rules: [], sockets: [] };
  if (scope === "read-only") {
    return { label: "Read only", detail: "GET and HEAD calls, and the live sockets", rules: [], sockets: [] };
  }
  const rules = Array.isArray(scope?.rules) ? scope.rules : [];
  const known = presetOf(scope);
  if (known) {
    return { label: PRESET_LABELS[known.preset], detail: appNames.get(known.app) ?? known.app, rules, sockets: [], preset: known.preset };
  }
  const sockets = [];
  if (scope?.events) sockets.push("live events");
  for (const app of scope?.logs ?? []) sockets.push(`live logs of ${appNames.get(app) ?? app}`);
  const count = rules.length === 1 ? "1 rule" : `${rules.length} rules`;
  return { label: rules.length || sockets.length ? count : "Nothing", detail: "", rules, sockets };
}
