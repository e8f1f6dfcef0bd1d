// The main chart: the period's series as a line, the comparison period's as a dashed line,
// drawn as SVG from the report's rows (one per point, empty points included).
import { s, h } from "./dom.js";
import { METRIC_LABELS, formatPoint, formatValue } from "./format.js";

const WIDTH = 800;
const HEIGHT = 240;
const PAD = { left: 48, right: 12, top: 12, bottom: 28 };

/** The chart of `rows` (a time-series report) for `metric`. */
export function chart(rows, metric, currency, compare) {
  const values = rows.map((row) => row.values[0]?.value ?? 0);
  const previous = compare ? rows.map((row) => row.comparisonValues[0]?.value ?? 0) : [];
  const top = Math.max(1, ...values, ...previous);
  const x = (i) =>
    PAD.left + (rows.length <= 1 ? 0 : (i * (WIDTH - PAD.left - PAD.right)) / (rows.length - 1));
  const y = (v) => PAD.top + (1 - v / top) * (HEIGHT - PAD.top - PAD.bottom);
  const line = (series, className) =>
    s("polyline", {
      class: className,
      points: series.map((v, i) => `${x(i)},${y(v)}`).join(" "),
      fill: "none",
    });
  const label = METRIC_LABELS[metric];
  const first = rows[0]?.dimensions[0] ?? "";
  const last = rows.at(-1)?.dimensions[0] ?? "";
  const svg = s(
    "svg",
    {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      role: "img",
      "aria-label": `${label} from ${formatPoint(first)} to ${formatPoint(last)}`,
      preserveAspectRatio: "none",
    },
    s("line", { class: "axis", x1: PAD.left, x2: WIDTH - PAD.right, y1: y(0), y2: y(0) }),
    s("text", { class: "tick", x: PAD.left - 6, y: y(top) + 4, "text-anchor": "end" }, formatValue(metric, top, currency)),
    s("text", { class: "tick", x: PAD.left - 6, y: y(0) + 4, "text-anchor": "end" }, "0"),
    s("text", { class: "tick", x: x(0), y: HEIGHT - 8 }, formatPoint(first)),
    s("text", { class: "tick", x: x(rows.length - 1), y: HEIGHT - 8, "text-anchor": "end" }, formatPoint(last)),
    compare ? line(previous, "previous") : null,
    line(values, "current"),
    rows.map((row, i) => {
      const title = `${formatPoint(row.dimensions[0])}: ${formatValue(metric, values[i], currency)}` +
        (compare ? ` (before: ${formatValue(metric, previous[i], currency)})` : "");
      return s("circle", { class: "point", cx: x(i), cy: y(values[i]), r: 3 }, s("title", {}, title));
    }),
  );
  // The textual equivalent for screen readers and for checking: each point and its value.
  const table = h(
    "table",
    { class: "visually-hidden", "data-testid": "series" },
    h("caption", {}, label),
    h("tr", {}, h("th", { scope: "col" }, "Point"), h("th", { scope: "col" }, label),
      compare ? h("th", { scope: "col" }, "Comparison") : null),
    rows.map((row, i) =>
      h("tr", {}, h("td", {}, row.dimensions[0]), h("td", {}, formatValue(metric, values[i], currency)),
        compare ? h("td", {}, formatValue(metric, previous[i], currency)) : null),
    ),
  );
  return h("figure", { class: "chart" }, svg, table);
}
