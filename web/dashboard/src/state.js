// What the page shows, kept in the URL's fragment so that a view can be bookmarked or shared
// (the fragment never reaches a server): the period, the interval, the chart's metric,
// what to compare with, the filters, and, in a shared link, the key.
import { Dimension, Interval, Metric } from "../../../sdk/typescript/src/web.js";

/** The periods of the date picker: label and length in days ("month": this month). */
export const PERIODS = [
  { id: "today", label: "Today" },
  { id: "7d", label: "Last 7 days" },
  { id: "30d", label: "Last 30 days" },
  { id: "month", label: "This month" },
  { id: "12mo", label: "Last 12 months" },
  { id: "custom", label: "Custom range" },
];

/** The intervals of the chart. */
export const INTERVALS = [
  { id: "hour", label: "Hours", value: Interval.HOUR },
  { id: "day", label: "Days", value: Interval.DAY },
  { id: "week", label: "Weeks", value: Interval.WEEK },
  { id: "month", label: "Months", value: Interval.MONTH },
];

/** What the numbers are compared with: the API's comparison modes, or nothing. */
export const COMPARISONS = [
  { id: "previous", label: "Previous period" },
  { id: "year", label: "Year before" },
  { id: "off", label: "Nothing" },
];

/** The comparison named `id` in a URL: "" for none, "previous" when unknown. */
function comparison(id) {
  if (id === "off" || id === "0") return "";
  return COMPARISONS.some((c) => c.id === id) ? id : "previous";
}

/** Dimension names as they appear in the URL. */
const DIMENSIONS = Object.fromEntries(
  Object.entries(Dimension)
    .filter(([name, value]) => typeof value === "number" && value > 0)
    .map(([name, value]) => [name.toLowerCase(), value]),
);
const DIMENSION_NAMES = Object.fromEntries(Object.entries(DIMENSIONS).map(([k, v]) => [v, k]));

/** The state in `hash` (`location.hash`), with defaults. */
export function parse(hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const filters = params.getAll("f").flatMap((text) => {
    const at = text.indexOf("~");
    if (at < 0) return [];
    const head = text.slice(0, at);
    const dot = head.indexOf(".");
    const [name, property] = dot < 0 ? [head, undefined] : [head.slice(0, dot), head.slice(dot + 1)];
    const dimension = DIMENSIONS[name];
    return dimension ? [{ dimension, property: property ?? "", value: text.slice(at + 1) }] : [];
  });
  return {
    key: params.get("key") ?? "",
    period: PERIODS.some((p) => p.id === params.get("period")) ? params.get("period") : "30d",
    start: params.get("start") ?? "",
    end: params.get("end") ?? "",
    interval: INTERVALS.some((i) => i.id === params.get("interval")) ? params.get("interval") : "",
    metric: Number(params.get("metric")) || Metric.VISITORS,
    compare: comparison(params.get("compare") ?? "previous"),
    filters,
  };
}

/** `state` as a fragment, without the key unless `withKey`. */
export function serialize(state, withKey = false) {
  const params = new URLSearchParams();
  if (withKey && state.key) params.set("key", state.key);
  params.set("period", state.period);
  if (state.period === "custom") {
    params.set("start", state.start);
    params.set("end", state.end);
  }
  if (state.interval) params.set("interval", state.interval);
  params.set("metric", String(state.metric));
  if (state.compare !== "previous") params.set("compare", state.compare || "off");
  for (const f of state.filters) {
    const name = DIMENSION_NAMES[f.dimension] + (f.property ? `.${f.property}` : "");
    params.append("f", `${name}~${f.value}`);
  }
  return `#${params}`;
}

/** Calendar arithmetic on "YYYY-MM-DD" dates. */
export function addDays(date, days) {
  const [y, m, d] = date.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d + days)).toISOString().slice(0, 10);
}

/** The date range of `state`, ending on the tenant's `today`. */
export function dateRange(state, today) {
  switch (state.period) {
    case "today":
      return { startDate: today, endDate: today };
    case "7d":
      return { startDate: addDays(today, -6), endDate: today };
    case "month":
      return { startDate: `${today.slice(0, 8)}01`, endDate: today };
    case "12mo":
      return { startDate: addDays(today, -364), endDate: today };
    case "custom":
      if (state.start && state.end && state.start <= state.end) {
        return { startDate: state.start, endDate: state.end };
      }
      return { startDate: addDays(today, -29), endDate: today };
    default:
      return { startDate: addDays(today, -29), endDate: today };
  }
}

/** The chart's interval: the chosen one, else hours for a day, months for a year, else days. */
export function interval(state) {
  const chosen = INTERVALS.find((i) => i.id === state.interval);
  if (chosen) return chosen.value;
  if (state.period === "today") return Interval.HOUR;
  if (state.period === "12mo") return Interval.MONTH;
  return Interval.DAY;
}
