// Beacon's merchant dashboard: sign in with a read key (or open a shared link carrying one),
// then the period's numbers, chart, breakdown panels and realtime visitors, every one of them
// read from the Insights API over gRPC-web. A row click filters the whole page.
import { Code, ConnectError } from "@connectrpc/connect";
import { Metric } from "../../../sdk/typescript/src/web.js";
import { TOP_METRICS, connect, realtime, series, site as siteOf, totals } from "./api.js";
import { chart } from "./chart.js";
import { download, toCsv } from "./csv.js";
import { h } from "./dom.js";
import { METRIC_LABELS, formatChange, formatValue } from "./format.js";
import { GOALS, PANELS, PROPERTIES, panel } from "./panels.js";
import { COMPARISONS, INTERVALS, PERIODS, dateRange, interval, parse, serialize } from "./state.js";

const STORED_KEY = "beacon.key";
const main = document.getElementById("main");
const state = parse(location.hash);
let beacon;
let site;
let generation = 0;
let realtimeText = "…";

/** The sign-in form; `problem` says why the last key did not work. */
function signIn(problem) {
  const input = h("input", { id: "key", name: "key", type: "password", autocomplete: "current-password", required: true });
  const form = h(
    "form",
    { class: "sign-in", onsubmit: (event) => { event.preventDefault(); start(input.value.trim(), false); } },
    h("h1", {}, "Sign in"),
    h("label", { for: "key" }, "Read key"),
    input,
    h("p", { class: "hint" }, "A read key of your site (beacon admin create-key --kind read)."),
    problem ? h("p", { class: "error", role: "alert" }, problem) : null,
    h("button", { type: "submit", class: "primary" }, "Show my numbers"),
  );
  main.replaceChildren(form);
  input.focus();
}

/** Opens the dashboard with `key` (from a shared link when `shared`). */
async function start(key, shared) {
  beacon = connect(key);
  try {
    site = await siteOf(beacon);
  } catch (error) {
    const e = ConnectError.from(error);
    const refused = [Code.Unauthenticated, Code.PermissionDenied].includes(e.code);
    // Only a refused key is forgotten: a network blip keeps the merchant signed in.
    if (refused) sessionStorage.removeItem(STORED_KEY);
    const why = refused
      ? "That key was not accepted: it may be wrong, revoked, or not a read key."
      : `Beacon did not answer: ${e.rawMessage}. Try again.`;
    return signIn(why);
  }
  if (!shared) sessionStorage.setItem(STORED_KEY, key);
  state.key = shared ? key : "";
  document.getElementById("site").textContent =
    `${site.name || site.tenantId} · times in ${site.timeZone}`;
  const out = document.getElementById("sign-out");
  out.hidden = false;
  out.onclick = () => {
    sessionStorage.removeItem(STORED_KEY);
    location.hash = "";
    location.reload();
  };
  render();
  refreshRealtime();
}

/** Changes the state; the URL records it, and the page follows. */
function update(patch) {
  Object.assign(state, patch);
  location.hash = serialize(state, Boolean(state.key));
}

window.addEventListener("hashchange", () => {
  const key = state.key;
  Object.assign(state, parse(location.hash), { key });
  if (site) render();
});

/** The period, interval and comparison controls, the export and the realtime figure. */
function controls(view) {
  const period = h(
    "select",
    { id: "period", onchange: (e) => update({ period: e.target.value, interval: "" }) },
    PERIODS.map((p) => h("option", { value: p.id, selected: p.id === state.period }, p.label)),
  );
  const custom = state.period === "custom"
    ? [
      h("label", { for: "start" }, "From"),
      h("input", { id: "start", type: "date", value: view.range.startDate, max: site.today, onchange: (e) => update({ start: e.target.value, end: view.range.endDate }) }),
      h("label", { for: "end" }, "To"),
      h("input", { id: "end", type: "date", value: view.range.endDate, max: site.today, onchange: (e) => update({ start: view.range.startDate, end: e.target.value }) }),
    ]
    : [];
  const every = h(
    "select",
    { id: "interval", onchange: (e) => update({ interval: e.target.value }) },
    INTERVALS.map((i) => h("option", { value: i.id, selected: i.value === view.interval }, i.label)),
  );
  const compare = h(
    "select",
    { id: "compare", onchange: (e) => update({ compare: e.target.value === "off" ? "" : e.target.value }) },
    COMPARISONS.map((c) => h("option", { value: c.id, selected: c.id === (state.compare || "off") }, c.label)),
  );
  return h(
    "div",
    { class: "controls" },
    h("label", { for: "period" }, "Period"), period, ...custom,
    h("label", { for: "interval" }, "Interval"), every,
    h("label", { for: "compare" }, "Compare with"), compare,
    h("button", { type: "button", id: "export", onclick: () => exportCsv(view) }, "Download CSV"),
    h("p", { id: "realtime", class: "realtime", "aria-live": "polite" }, realtimeText),
  );
}

/** The active filters, each removable. */
function filterChips() {
  if (state.filters.length === 0) return null;
  return h(
    "ul",
    { class: "filters", "aria-label": "Filters" },
    state.filters.map((f, i) =>
      h("li", {}, h("button", {
        type: "button",
        class: "chip",
        "aria-label": `Remove filter ${filterName(f)} is ${f.value}`,
        onclick: () => update({ filters: state.filters.filter((_, j) => j !== i) }),
      }, `${filterName(f)} is ${f.value} ×`)),
    ),
  );
}

/** What a filter is on: the property key, or the dimension's name. */
function filterName(filter) {
  if (filter.property) return filter.property;
  for (const p of [...PANELS, GOALS]) {
    const t = p.tabs.find((tab) => tab.dimension === filter.dimension);
    if (t) return t.one;
  }
  return "Value";
}

/** The top row: each metric's total, its change, and a button choosing the chart's metric. */
function stats(answer, metrics) {
  const row = answer.rows[0];
  return h(
    "div",
    { class: "stats" },
    metrics.map((metric, i) => {
      const value = row?.values[i]?.value ?? 0;
      const change = row?.changes[i]?.change;
      return h(
        "button",
        {
          type: "button",
          class: "stat",
          "data-testid": `stat-${Metric[metric].toLowerCase()}`,
          "aria-pressed": metric === state.metric ? "true" : "false",
          onclick: () => update({ metric }),
        },
        h("span", { class: "label" }, METRIC_LABELS[metric]),
        h("span", { class: "figure" }, formatValue(metric, value, site.currency)),
        state.compare
          ? h("span", { class: "change", "data-testid": "change" }, formatChange(metric, change) || "new")
          : null,
      );
    }),
  );
}

function metricsOfSite() {
  return site.currency ? [...TOP_METRICS, Metric.TOTAL_REVENUE] : TOP_METRICS;
}

/** Draws the page for the state. */
async function render() {
  const mine = ++generation;
  const view = {
    range: dateRange(state, site.today),
    interval: interval(state),
    compare: state.compare,
    filters: state.filters,
  };
  const metrics = metricsOfSite();
  const metric = metrics.includes(state.metric) ? state.metric : Metric.VISITORS;
  const onFilter = (filter) => {
    const kept = state.filters.filter((f) => !(f.dimension === filter.dimension && f.property === filter.property));
    update({ filters: [...kept, filter] });
  };
  main.setAttribute("aria-busy", "true");
  // The page is drawn again from scratch: the control in use keeps the focus.
  const focused = document.activeElement?.id;
  try {
    const [top, points] = await Promise.all([
      totals(beacon, view, metrics),
      series(beacon, view, [metric], view.interval),
    ]);
    if (mine !== generation) return;
    const context = { beacon, view, site, onFilter };
    const panels = [...PANELS, ...(site.goals.length ? [GOALS] : []), PROPERTIES];
    main.replaceChildren(
      ...[controls(view), filterChips()].filter(Boolean),
      stats(top, metrics),
      chart(points.rows, metric, site.currency, state.compare),
      h("div", { class: "panels" }, panels.map((p) => panel(p, context))),
    );
    if (focused) document.getElementById(focused)?.focus();
  } catch (error) {
    if (mine !== generation) return;
    main.replaceChildren(...[controls(view), filterChips()].filter(Boolean),
      h("p", { class: "error", role: "alert" }, `Beacon did not answer: ${ConnectError.from(error).rawMessage}`));
  } finally {
    main.removeAttribute("aria-busy");
  }
}

/** Downloads the chart's points with every top-row metric as CSV. */
async function exportCsv(view) {
  const metrics = metricsOfSite();
  const button = document.getElementById("export");
  try {
    const answer = await series(beacon, { ...view, compare: false }, metrics, view.interval);
    const { startDate, endDate } = view.range;
    download(`beacon-${site.tenantId}-${startDate}-${endDate}.csv`, toCsv(answer.rows, metrics));
  } catch (error) {
    if (button) button.textContent = `CSV failed: ${ConnectError.from(error).rawMessage}`;
  }
}

/** Current visitors, every 15 seconds. */
async function refreshRealtime() {
  try {
    const now = await realtime(beacon);
    const n = Number(now.currentVisitors);
    realtimeText = `${n} current visitor${n === 1 ? "" : "s"}`;
    const element = document.getElementById("realtime");
    if (element) element.textContent = realtimeText;
  } catch {}
  setTimeout(refreshRealtime, 15_000);
}

const sharedKey = state.key;
const storedKey = sessionStorage.getItem(STORED_KEY);
if (sharedKey) start(sharedKey, true);
else if (storedKey) start(storedKey, false);
else signIn();
