// Token scopes as the dashboard builds and shows them (static/scopes.js).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  customScope,
  describeScope,
  presetOf,
  presetScope,
  ruleError,
  rulesFromText,
  splitList,
} from "../../static/scopes.js";

// The presets the integration tests hold the server to (tests/it/scopes.rs).
const PRESETS = JSON.parse(readFileSync(new URL("../presets.json", import.meta.url), "utf8"));

function filled(template, org, app) {
  return JSON.parse(JSON.stringify(template).replaceAll("{org}", org).replaceAll("{app}", app));
}

test("each preset is the one the integration tests check", () => {
  const app = { id: "app_3", owner: "orga_1", name: "engine" };
  for (const name of ["full", "read-only", "deploy", "logs"]) {
    assert.deepEqual(presetScope(name, app), filled(PRESETS[name], "orga_1", "app_3"), name);
  }
});

test("an application preset names the app's owner, the user for the personal space", () => {
  const personal = { id: "app_9", owner: "user_42" };
  const scope = presetScope("deploy", personal);
  assert.ok(scope.rules.every((rule) => rule.includes("/organisations/user_42/applications/app_9")));
  assert.deepEqual(scope.logs, ["app_9"]);
  assert.equal(scope.events, false);
});

test("an application preset needs an app", () => {
  assert.equal(presetScope("logs", null), null);
  assert.equal(presetScope("deploy", { id: "app_1" }), null);
  assert.throws(() => presetScope("everything", null));
});

test("ids are path-encoded in the rules", () => {
  const scope = presetScope("logs", { id: "app 1", owner: "o/1" });
  assert.equal(scope.rules[0], "GET /v4/logs/organisations/o%2F1/applications/app%201/**");
  assert.deepEqual(scope.logs, ["app 1"], "the relay takes the id itself");
});

test("custom rules are one a line, and keep their line numbers", () => {
  assert.deepEqual(rulesFromText("GET /v2/self\n\n  POST /v2/x  \r\n"), {
    rules: ["GET /v2/self", "POST /v2/x"],
    lines: [1, 3],
  });
  assert.deepEqual(customScope({ rulesText: "GET /v2/self", events: true, logsText: "app_1, app_2 app_3" }), {
    scope: { rules: ["GET /v2/self"], events: true, logs: ["app_1", "app_2", "app_3"] },
    lines: [1],
  });
  assert.deepEqual(rulesFromText(""), { rules: [], lines: [] });
});

test("the server's refusal of a rule is told by its line", () => {
  const lines = [1, 3];
  assert.deepEqual(ruleError("scope: rule 2 `FETCH /v2/x`: unknown method `FETCH`", lines), {
    message: "Line 3: `FETCH /v2/x`: unknown method `FETCH`",
    line: 3,
  });
  assert.deepEqual(ruleError("scope: a scope holds at most 100 rules", lines), {
    message: "a scope holds at most 100 rules",
    line: null,
  });
  assert.equal(ruleError("scope: rule 9 `x`: bad", lines).line, null, "a rule the form did not send");
});

test("addresses are a comma or space list", () => {
  assert.deepEqual(splitList(" 192.0.2.7, 10.0.0.0/8  2001:db8::1 ,"), ["192.0.2.7", "10.0.0.0/8", "2001:db8::1"]);
  assert.deepEqual(splitList(""), []);
});

test("scopes read as words", () => {
  assert.equal(describeScope("full").label, "Full access");
  assert.equal(describeScope("read-only").label, "Read only");
  const names = new Map([["app_3", "engine"]]);
  const rules = describeScope({ rules: ["GET /v2/self"], events: true, logs: ["app_3", "app_4"] }, names);
  assert.equal(rules.label, "1 rule");
  assert.deepEqual(rules.rules, ["GET /v2/self"]);
  assert.deepEqual(rules.sockets, ["live events", "live logs of engine", "live logs of app_4"]);
  assert.equal(describeScope({ rules: [], events: false, logs: [] }).label, "Nothing");
  assert.equal(describeScope({ rules: ["a", "b"] }).label, "2 rules");
});

test("a scope made by an application preset is known as one", () => {
  const app = { id: "app_3", owner: "user_1" };
  assert.deepEqual(presetOf(presetScope("deploy", app)), { preset: "deploy", app: "app_3" });
  assert.deepEqual(presetOf(presetScope("logs", app)), { preset: "logs", app: "app_3" });
  const shown = describeScope(presetScope("logs", app), new Map([["app_3", "engine"]]));
  assert.equal(shown.label, "Logs of one application");
  assert.equal(shown.detail, "engine");
  assert.equal(shown.rules.length, 2, "its rules are still there to show");

  // One rule more, or the events socket, and it is custom.
  const more = presetScope("logs", app);
  more.rules.push("GET /v2/self");
  assert.equal(presetOf(more), null);
  assert.equal(presetOf({ ...presetScope("deploy", app), events: true }), null);
  assert.equal(presetOf({ rules: ["GET /v2/self"], events: false, logs: ["app_3"] }), null);
  assert.equal(presetOf("full"), null);
});
