// Log lines and stream queries (static/loglines.js).

import assert from "node:assert/strict";
import { test } from "node:test";

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
} from "../../static/loglines.js";

const APP_LOG = {
  id: "log-1",
  date: "2026-05-01T12:00:00.250Z",
  instanceId: "3b1f0c52-7d7e-4a0a-9c43-7f2d1c000001",
  severity: "ERROR",
  message: "boom\nat line 2",
};

const ACCESS_LOG = {
  date: "2026-05-01T12:00:01Z",
  http: { request: { method: "GET", path: "/health" }, response: { statusCode: 200, time: 12 } },
  source: { ip: "203.0.113.9", port: 51234 },
};

test("an application log becomes a line and one line of text", () => {
  const line = applicationLine(APP_LOG, "17");
  assert.equal(line.id, "17");
  assert.equal(line.severity, "ERROR");
  assert.equal(
    lineText("application", line),
    "2026-05-01T12:00:00.250Z 3b1f0c52-7d7e-4a0a-9c43-7f2d1c000001 ERROR boom\n    at line 2",
  );
});

test("an access log becomes a line with method, path, status, source and duration", () => {
  const line = accessLine(ACCESS_LOG, "3");
  assert.deepEqual(
    [line.method, line.path, line.status, line.source, line.durationMs],
    ["GET", "/health", 200, "203.0.113.9", 12],
  );
  assert.equal(lineText("access", line), "2026-05-01T12:00:01.000Z GET /health 200 203.0.113.9 12ms");
});

test("missing or odd fields give dashes, not errors", () => {
  assert.equal(lineText("application", applicationLine(null)), "- - - ");
  assert.equal(lineText("access", accessLine({ http: { response: { statusCode: "x" } } })), "- - - - - -");
});

test("a legacy socket line reads message, or @message in older lines", () => {
  assert.equal(legacyLine({ _source: { "@timestamp": "2026-05-01T00:00:00Z", message: "new" } }).message, "new");
  assert.equal(legacyLine({ _source: { "@message": "old" } }).message, "old");
  assert.equal(legacyLine({ type: "heartbeat" }), null);
});

test("the application stream gets every filter, the access stream only the times", () => {
  const filters = {
    since: "2026-05-01T00:00:00.000Z",
    until: "2026-05-02T00:00:00.000Z",
    text: "error 500",
    deployment: "deployment_1",
    instances: ["a", "b"],
  };
  assert.equal(
    streamQuery("application", filters).toString(),
    "since=2026-05-01T00%3A00%3A00.000Z&until=2026-05-02T00%3A00%3A00.000Z&filter=error+500&deploymentId=deployment_1&instanceId=a&instanceId=b",
  );
  assert.equal(
    streamQuery("access", filters).toString(),
    "since=2026-05-01T00%3A00%3A00.000Z&until=2026-05-02T00%3A00%3A00.000Z",
  );
  assert.equal(streamQuery("application", { instances: [] }).toString(), "");
});

test("the legacy socket gets its own names, and resumes from the last line's time", () => {
  const filters = { since: "2026-05-01T00:00:00.000Z", text: "x", deployment: "d", instances: ["i"] };
  assert.equal(legacyQuery(filters).toString(), "since=2026-05-01T00%3A00%3A00.000Z&filter=x&deployment_id=d");
  assert.equal(legacyQuery(filters, "2026-05-03T00:00:00Z").get("since"), "2026-05-03T00:00:00Z");
});

test("typed values are tidied: instance lists split, local times in UTC, reasons in words", () => {
  assert.deepEqual(splitIds(" a, b  c,,"), ["a", "b", "c"]);
  assert.equal(localToIso(""), "");
  assert.equal(localToIso("not a date"), "");
  assert.equal(localToIso("2026-05-01T10:00"), new Date(2026, 4, 1, 10, 0).toISOString());
  assert.equal(endedByText("UNTIL_REACHED"), "until reached");
  assert.equal(endedByText(null), "no reason given");
});
