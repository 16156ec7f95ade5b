// Log lines as the page shows and saves them, from the three shapes the API
// sends (v4 application logs, v4 access logs, the legacy WebSocket's), and
// the query strings that ask for them. No DOM here.

import { toDate } from "./time.js";

/** A line of an `APPLICATION_LOG` event's data. */
export function applicationLine(data, id = "") {
  return {
    id,
    date: data?.date ?? null,
    instance: String(data?.instanceId ?? ""),
    severity: String(data?.severity ?? ""),
    message: String(data?.message ?? ""),
  };
}

/** A line of an `ACCESS_LOG` event's data. */
export function accessLine(data, id = "") {
  const request = data?.http?.request ?? {};
  const response = data?.http?.response ?? {};
  return {
    id,
    date: data?.date ?? null,
    method: String(request.method ?? ""),
    path: String(request.path ?? ""),
    status: Number.isInteger(response.statusCode) ? response.statusCode : null,
    source: String(data?.source?.ip ?? ""),
    // The API gives milliseconds.
    durationMs: Number.isFinite(response.time) ? response.time : null,
  };
}

/** A line of the legacy WebSocket (`message`, or `@message` in older lines); null if not one. */
export function legacyLine(message) {
  const source = message?._source;
  if (!source) return null;
  return {
    id: "",
    date: source["@timestamp"] ?? null,
    instance: String(source.instanceId ?? ""),
    severity: String(source.syslog_severity ?? ""),
    message: String(source.message ?? source["@message"] ?? ""),
  };
}

/** `line` as one line of the downloaded text file (`kind`: "application" or "access"). */
export function lineText(kind, line) {
  const when = toDate(line.date)?.toISOString() ?? "-";
  if (kind === "access") {
    const duration = line.durationMs === null ? "-" : `${line.durationMs}ms`;
    return [when, line.method || "-", line.path || "-", line.status ?? "-", line.source || "-", duration].join(" ");
  }
  const message = line.message.replace(/\r?\n/g, "\n    ");
  return [when, line.instance || "-", line.severity || "-", message].join(" ");
}

/** Instance ids typed in one field, separated by commas or spaces. */
export function splitIds(text) {
  return String(text ?? "").split(/[\s,]+/).filter(Boolean);
}

/** A `datetime-local` value (the visitor's time zone) in ISO 8601 UTC; "" when empty or invalid. */
export function localToIso(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

/**
 * The query of a v4 stream for `filters` ({since, until, text, deployment,
 * instances}, times in ISO 8601). Access logs take only the times.
 */
export function streamQuery(kind, filters) {
  const query = new URLSearchParams();
  if (filters.since) query.set("since", filters.since);
  if (filters.until) query.set("until", filters.until);
  if (kind === "application") {
    if (filters.text) query.set("filter", filters.text);
    if (filters.deployment) query.set("deploymentId", filters.deployment);
    for (const id of filters.instances ?? []) query.append("instanceId", id);
  }
  return query;
}

/**
 * The query of the legacy log socket: it knows `since`, `filter` and
 * `deployment_id` (no end time, no instance). `resumeFrom` (the last line's
 * time) replaces `since` after a drop.
 */
export function legacyQuery(filters, resumeFrom = null) {
  const query = new URLSearchParams();
  const since = resumeFrom ?? filters.since;
  if (since) query.set("since", since);
  if (filters.text) query.set("filter", filters.text);
  if (filters.deployment) query.set("deployment_id", filters.deployment);
  return query;
}

/** `END_OF_STREAM`'s `endedBy` in words: "UNTIL_REACHED" → "until reached". */
export function endedByText(endedBy) {
  if (endedBy === null || endedBy === undefined || endedBy === "") return "no reason given";
  return String(endedBy).toLowerCase().replaceAll("_", " ");
}
