// CSV export of the chart's report: one line per time point with every top-row metric, as the
// API answered them (numbers unformatted).
import { Metric } from "../../../sdk/typescript/src/web.js";

/** A CSV field, quoted when it needs to be. */
function field(text) {
  const value = String(text);
  return /[",\n\r]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

/** The CSV text of a time-series report of `metrics`. */
export function toCsv(rows, metrics) {
  const header = ["date", ...metrics.map((m) => Metric[m].toLowerCase())];
  const lines = rows.map((row) => [row.dimensions[0], ...row.values.map((v) => v.value)]);
  return [header, ...lines].map((line) => line.map(field).join(",")).join("\r\n") + "\r\n";
}

/** Offers `text` as a download named `name`. */
export function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/csv;charset=utf-8" }));
  const link = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
