// Dates in the visitor's own locale and time zone.

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

/** A Date from an ISO 8601 string or milliseconds since the epoch; null if neither. */
export function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  const date = new Date(typeof value === "string" && /^\d+$/.test(value) ? Number(value) : value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** A `<time>` element showing `value` as a date and time (or `fallback`). */
export function timeElement(value, { fallback = "", timeOnly = false } = {}) {
  const element = document.createElement("time");
  const date = toDate(value);
  if (!date) {
    element.textContent = fallback;
    return element;
  }
  element.dateTime = date.toISOString();
  element.textContent = (timeOnly ? clock : dateTime).format(date);
  element.title = dateTime.format(date);
  return element;
}

/** Rewrites server-rendered `time.local-time` elements in the local format. */
export function localizeTimes(root = document) {
  for (const element of root.querySelectorAll("time.local-time[datetime]")) {
    const date = toDate(element.getAttribute("datetime"));
    if (date) element.textContent = dateTime.format(date);
  }
}
