// How numbers, dates and changes are written. Formatting only: every number comes from the
// Insights API as it is.
import { Metric } from "../../../sdk/typescript/src/web.js";

const whole = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });
const short = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 });
const decimal = new Intl.NumberFormat("en", { maximumFractionDigits: 2 });

/** The label of each metric the dashboard shows. */
export const METRIC_LABELS = {
  [Metric.VISITORS]: "Unique visitors",
  [Metric.VISITS]: "Total visits",
  [Metric.PAGEVIEWS]: "Total pageviews",
  [Metric.VIEWS_PER_VISIT]: "Views per visit",
  [Metric.BOUNCE_RATE]: "Bounce rate",
  [Metric.VISIT_DURATION]: "Visit duration",
  [Metric.EVENTS]: "Total events",
  [Metric.TOTAL_REVENUE]: "Revenue",
  [Metric.CONVERSION_RATE]: "Conversion rate",
  [Metric.SCROLL_DEPTH]: "Scroll depth",
  [Metric.TIME_ON_PAGE]: "Time on page",
};

/** `value` of `metric`, written for people (`currency` for revenue). */
export function formatValue(metric, value, currency) {
  switch (metric) {
    case Metric.BOUNCE_RATE:
    case Metric.CONVERSION_RATE:
    case Metric.SCROLL_DEPTH:
      return `${decimal.format(value)}%`;
    case Metric.VISIT_DURATION:
    case Metric.TIME_ON_PAGE:
      return duration(value);
    case Metric.VIEWS_PER_VISIT:
      return decimal.format(value);
    case Metric.TOTAL_REVENUE:
    case Metric.AVERAGE_REVENUE:
      return currency
        ? new Intl.NumberFormat("en", { style: "currency", currency }).format(value)
        : decimal.format(value);
    default:
      return value >= 100_000 ? short.format(value) : whole.format(value);
  }
}

/** Seconds as "1h 02m", "3m 05s" or "42s". */
function duration(seconds) {
  const s = Math.round(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  if (s >= 3600) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  return `${s}s`;
}

/** A change as the API gives it: percent, or percentage points for the bounce rate. */
export function formatChange(metric, change) {
  if (change === undefined) return "";
  const sign = change > 0 ? "+" : change < 0 ? "−" : "±";
  const unit = metric === Metric.BOUNCE_RATE ? " pp" : "%";
  return `${sign}${decimal.format(Math.abs(change))}${unit}`;
}

/** A date or hour label of the API ("YYYY-MM-DD", "YYYY-MM-DDTHH:00") for an axis. */
export function formatPoint(label) {
  if (!label) return "";
  const [date, time] = label.split("T");
  const [y, m, d] = date.split("-").map(Number);
  const day = new Date(Date.UTC(y, m - 1, d)).toLocaleDateString("en", {
    month: "short",
    day: "numeric",
    timeZone: "UTC",
  });
  return time ? `${day} ${time}` : day;
}
