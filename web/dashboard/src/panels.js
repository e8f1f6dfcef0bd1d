// The breakdown panels: tabs of dimensions, each row a button that filters the whole page.
import { ConnectError } from "@connectrpc/connect";
import { Dimension, Metric } from "../../../sdk/typescript/src/web.js";
import { breakdown, filteredGoal } from "./api.js";
import { h } from "./dom.js";
import { formatValue } from "./format.js";

const tab = (label, dimension, one) => ({ label, dimension, one });

/** The property key last shown, kept while the page redraws. */
let propertyKey = "";

/** The panels and their tabs (goals and properties are added per tenant). */
export const PANELS = [
  { title: "Pages", tabs: [tab("Top pages", Dimension.PAGE, "Page"), tab("Entry pages", Dimension.ENTRY_PAGE, "Entry page"), tab("Exit pages", Dimension.EXIT_PAGE, "Exit page")] },
  {
    title: "Sources",
    tabs: [
      tab("Sources", Dimension.SOURCE, "Source"),
      tab("Referrers", Dimension.REFERRER, "Referrer"),
      tab("Channels", Dimension.CHANNEL, "Channel"),
      tab("UTM source", Dimension.UTM_SOURCE, "UTM source"),
      tab("UTM medium", Dimension.UTM_MEDIUM, "UTM medium"),
      tab("UTM campaign", Dimension.UTM_CAMPAIGN, "UTM campaign"),
      tab("UTM term", Dimension.UTM_TERM, "UTM term"),
      tab("UTM content", Dimension.UTM_CONTENT, "UTM content"),
    ],
  },
  {
    title: "Locations",
    tabs: [tab("Countries", Dimension.COUNTRY, "Country"), tab("Regions", Dimension.REGION, "Region"), tab("Cities", Dimension.CITY, "City")],
    // The free country database scripts/geoip.sh installs asks for this credit (CC BY 4.0).
    credit: () => h("p", { class: "attribution" }, h("a", { href: "https://db-ip.com" }, "IP Geolocation by DB-IP")),
  },
  { title: "Devices", tabs: [tab("Devices", Dimension.DEVICE, "Device"), tab("Browsers", Dimension.BROWSER, "Browser"), tab("Operating systems", Dimension.OS, "Operating system")] },
  { title: "Events", tabs: [tab("Event names", Dimension.EVENT_NAME, "Event name"), tab("Hostnames", Dimension.HOSTNAME, "Hostname")] },
];

/** The goals panel, for a tenant with goals. */
export const GOALS = { title: "Goals", tabs: [tab("Goals", Dimension.GOAL, "Goal")], goals: true };

/** The metrics of a tab's rows: the first orders them and sizes the bars. */
function metricsOf(panel) {
  return panel.goals
    ? [Metric.VISITORS, Metric.EVENTS, Metric.CONVERSION_RATE]
    : [Metric.VISITORS, Metric.PAGEVIEWS, Metric.PERCENTAGE];
}

/** A panel element that loads its selected tab; `onFilter(filter)` when a row is chosen. */
export function panel(definition, context) {
  const { beacon, view, site, onFilter } = context;
  const id = definition.title.toLowerCase();
  const body = h("div", { class: "rows", id: `${id}-rows`, role: "tabpanel" });
  // Only the last tab chosen fills the panel, however the answers arrive.
  let shown = 0;
  const propertyInput = definition.properties ? keyPicker(site.propertyKeys) : null;
  const tabs = definition.tabs.map((t, index) =>
    h("button", {
      type: "button",
      role: "tab",
      class: "tab",
      "aria-selected": index === 0 ? "true" : "false",
      "aria-controls": `${id}-rows`,
      onclick: (event) => select(event.currentTarget, t),
    }, t.label),
  );
  const metrics = metricsOf(definition);

  async function select(button, t) {
    const mine = ++shown;
    for (const other of tabs) other.setAttribute("aria-selected", other === button ? "true" : "false");
    const chosen = definition.properties ? { property: propertyInput.value.trim() } : t;
    if (definition.properties && !chosen.property) {
      body.replaceChildren(h("p", { class: "empty" }, "No custom properties in the last 30 days: type a key to see its values."));
      return;
    }
    body.setAttribute("aria-busy", "true");
    try {
      const answer = definition.goals && view.filters.length > 0
        ? { rows: await Promise.all(site.goals.map((goal) => filteredGoal(beacon, view, goal))) }
        : await breakdown(beacon, view, chosen, metrics);
      if (mine !== shown) return;
      body.replaceChildren(rows(answer.rows, chosen, t.label));
      const located = answer.rows.some((row) => row.dimensions[0] && row.dimensions[0] !== "(unknown)");
      if (definition.credit && located) body.append(definition.credit());
    } catch (error) {
      if (mine !== shown) return;
      body.replaceChildren(h("p", { class: "empty" }, `Not available: ${ConnectError.from(error).rawMessage}`));
    } finally {
      body.removeAttribute("aria-busy");
    }
  }

  function rows(list, chosen, label) {
    if (list.length === 0) return h("p", { class: "empty" }, "No data for this period.");
    const second = metrics[1];
    return h(
      "ol",
      { class: "list", "aria-label": label },
      list.map((row) => {
        const value = row.dimensions[0];
        const [visitors, other, third] = row.values.map((v) => v.value);
        const share = row.values.at(-1).value;
        const filter = { dimension: chosen.property ? Dimension.PROPERTY : chosen.dimension, property: chosen.property ?? "", value };
        return h(
          "li",
          {},
          h(
            "button",
            {
              type: "button",
              class: "row",
              title: `Filter by ${label.toLowerCase()}: ${value}`,
              onclick: () => onFilter(filter),
              style: `--share:${Math.min(100, share)}%`,
            },
            h("span", { class: "value" }, value || "(none)"),
            h("span", { class: "number", "data-metric": "visitors" }, formatValue(Metric.VISITORS, visitors)),
            h("span", { class: "number secondary" }, definition.goals
              ? formatValue(Metric.CONVERSION_RATE, third)
              : formatValue(second, other, site.currency)),
          ),
        );
      }),
    );
  }

  const header = h(
    "div",
    { class: "panel-head" },
    h("h2", {}, definition.title),
    h("div", { role: "tablist", "aria-label": definition.title }, tabs),
  );
  if (propertyInput) {
    propertyInput.addEventListener("change", () => {
      propertyKey = propertyInput.value.trim();
      select(tabs[0], definition.tabs[0]);
    });
    header.append(propertyInput);
  }
  const columns = h("div", { class: "columns", "aria-hidden": "true" },
    h("span", {}, ""), h("span", {}, "Visitors"), h("span", {}, definition.goals ? "CR" : "Pageviews"));
  const element = h("section", { class: "panel", "aria-labelledby": `${id}-title` }, header, columns, body);
  header.querySelector("h2").id = `${id}-title`;
  select(tabs[0], definition.tabs[0]);
  return element;
}

/** The property key picker: the tenant's recent keys (GetSite), or a field to type one. */
function keyPicker(keys) {
  if (!propertyKey || (keys.length > 0 && !keys.includes(propertyKey))) propertyKey = keys[0] ?? "";
  if (keys.length === 0) {
    return h("input", { id: "property-key", type: "text", placeholder: "plan", "aria-label": "Property key", value: propertyKey });
  }
  return h(
    "select",
    { id: "property-key", "aria-label": "Property key" },
    keys.map((key) => h("option", { value: key, selected: key === propertyKey }, key)),
  );
}

/** The custom-properties panel. */
export const PROPERTIES = { title: "Properties", tabs: [tab("Values", Dimension.PROPERTY)], properties: true };
