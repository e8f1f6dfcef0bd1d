// The dashboard's calls, all to the Insights API over gRPC-web through the generated client.
import {
  ComparisonMode,
  Dimension,
  Metric,
  Operator,
  createBeacon,
} from "../../../sdk/typescript/src/web.js";

/** The metrics of the top row (revenue added when the tenant has a currency). */
export const TOP_METRICS = [
  Metric.VISITORS,
  Metric.VISITS,
  Metric.PAGEVIEWS,
  Metric.VIEWS_PER_VISIT,
  Metric.BOUNCE_RATE,
  Metric.VISIT_DURATION,
  Metric.EVENTS,
];

/** The clients for `key`, at the gateway that served the page. */
export function connect(key) {
  return createBeacon({ baseUrl: location.origin, key, attempts: 2 });
}

/** The filter tree of the page's filters: all of them must hold. */
function filterOf(filters) {
  if (filters.length === 0) return undefined;
  return {
    kind: {
      case: "allOf",
      value: {
        filters: filters.map((f) => ({
          kind: {
            case: "condition",
            value: {
              dimension: f.dimension,
              property: f.property,
              operator: Operator.IS,
              values: [f.value],
            },
          },
        })),
      },
    },
  };
}

/** The common part of every report of the page. */
function base(view, metrics) {
  return {
    dateRange: view.range,
    metrics,
    filter: filterOf(view.filters),
    comparison: view.compare
      ? { mode: view.compare === "year" ? ComparisonMode.YEAR_OVER_YEAR : ComparisonMode.PREVIOUS_PERIOD }
      : undefined,
  };
}

/** Totals of `metrics`, with their comparison and changes. */
export function totals(beacon, view, metrics) {
  return beacon.insights.runReport(base(view, metrics));
}

/** The series of `metrics` at `interval`. */
export function series(beacon, view, metrics, interval) {
  return beacon.insights.runReport({
    ...base(view, metrics),
    dimensions: [{ kind: { case: "time", value: interval } }],
    // Every point: a year of hours is 8,760 (the default page is 1,000 rows).
    limit: 10_000,
  });
}

/** The top rows of a panel's tab: a dimension or a property key. */
export function breakdown(beacon, view, tab, metrics, limit = 10) {
  const kind = tab.property
    ? { case: "property", value: tab.property }
    : { case: "dimension", value: tab.dimension };
  return beacon.insights.runReport({
    ...base({ ...view, compare: false }, metrics),
    dimensions: [{ kind }],
    orderBy: [{ key: { case: "metric", value: metrics[0] }, descending: true }],
    limit,
  });
}

/**
 * One goal's visitors and conversion rate under the page's filters: goal rows come from the
 * rollups, which cannot filter them, so a filtered page asks the event store goal by goal
 * (the goal as a filter, METRIC_GROUP_CONVERSION_RATE), in the shape of a goal row.
 */
export async function filteredGoal(beacon, view, goal) {
  const filters = [...view.filters, { dimension: Dimension.GOAL, property: "", value: goal }];
  const answer = await beacon.insights.runReport({
    ...base({ ...view, compare: false, filters }, [Metric.VISITORS, Metric.GROUP_CONVERSION_RATE]),
  });
  const [visitors, rate] = answer.rows[0]?.values ?? [];
  return { dimensions: [goal], values: [visitors, { value: 0 }, rate] };
}

/** The key's tenant: name, time zone, today, currency, goals, property keys. */
export function site(beacon) {
  return beacon.insights.getSite({});
}

/** Visitors now, and the last 30 minutes. */
export function realtime(beacon) {
  return beacon.insights.getRealtime({ limit: 5 });
}
