// The hand-written Server-Sent Events parser (static/sse.js).

import assert from "node:assert/strict";
import { test } from "node:test";

import { SseParser } from "../../static/sse.js";

test("an event is its fields up to the blank line", () => {
  const parser = new SseParser();
  const events = parser.push('id: 7\nevent: APPLICATION_LOG\ndata: {"message":"hi"}\n\n');
  assert.deepEqual(events, [{ type: "APPLICATION_LOG", data: '{"message":"hi"}', id: "7" }]);
});

test("events split anywhere across chunks come out whole, once", () => {
  const text = "id: 1\nevent: A\ndata: one\n\nid: 2\nevent: A\ndata: two\n\n";
  for (let cut = 0; cut <= text.length; cut += 1) {
    const parser = new SseParser();
    const events = [...parser.push(text.slice(0, cut)), ...parser.push(text.slice(cut))];
    assert.deepEqual(
      events.map((event) => [event.id, event.data]),
      [["1", "one"], ["2", "two"]],
      `cut at ${cut}`,
    );
  }
});

test("CRLF, LF and lone CR all end lines, even a CRLF split between chunks", () => {
  const parser = new SseParser();
  const events = [
    ...parser.push("data: a\r\n\r\ndata: b\r\r"),
    ...parser.push("data: c\r"),
    ...parser.push("\n\r\n"),
  ];
  assert.deepEqual(
    events.map((event) => event.data),
    ["a", "b", "c"],
  );
});

test("data lines join with newlines; one leading space is dropped, not more", () => {
  const parser = new SseParser();
  const [event] = parser.push("data:first\ndata:  second\ndata\n\n");
  assert.equal(event.data, "first\n second\n");
  assert.equal(event.type, "message", "the default type");
});

test("comments, retry and unknown fields make no event", () => {
  const parser = new SseParser();
  assert.deepEqual(parser.push(": keep-alive\n\nretry: 10\n\nfoo: bar\n\n"), []);
});

test("an event without data is still dispatched, as the API's heartbeats are", () => {
  const parser = new SseParser();
  assert.deepEqual(parser.push("event: HEARTBEAT\n\n"), [{ type: "HEARTBEAT", data: "", id: "" }]);
});

test("the last event id carries over events without one, and survives a reconnection", () => {
  const parser = new SseParser();
  const events = parser.push("id: 41\ndata: x\n\nevent: HEARTBEAT\n\n");
  assert.deepEqual(
    events.map((event) => event.id),
    ["41", "41"],
  );
  assert.equal(parser.lastEventId, "41");
  const resumed = new SseParser(parser.lastEventId);
  assert.equal(resumed.push("event: HEARTBEAT\n\n")[0].id, "41");
  assert.equal(resumed.push("id\ndata: y\n\n")[0].id, "", "an empty id resets it");
});

test("an id holding NUL is ignored", () => {
  const parser = new SseParser("5");
  assert.equal(parser.push("id: 6\0\ndata: x\n\n")[0].id, "5");
});

test("an event cut off by the end of the stream is never dispatched", () => {
  const parser = new SseParser();
  assert.deepEqual(parser.push("id: 9\ndata: half"), []);
  assert.deepEqual(new SseParser(parser.lastEventId).push("data: next\n\n")[0].data, "next");
});
