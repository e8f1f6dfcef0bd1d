//! The metrics, computed from summed rollup counters and distinct visitors.

use beacon_proto::insights::v1::{Metric, MetricValue};

use crate::QueryError;

/// The seven metrics of every group, in enum order: what an empty `metrics` list means
/// (conversion rates, for goal rows only, are asked for by name).
pub const ALL_METRICS: [Metric; 7] = [
    Metric::Visitors,
    Metric::Visits,
    Metric::Pageviews,
    Metric::Events,
    Metric::BounceRate,
    Metric::VisitDuration,
    Metric::ViewsPerVisit,
];

/// Summed counters of one group of rollup rows (a day, an hour, a dimension value or the
/// whole range) and the number of distinct visitors seen in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sums {
    /// The group's dimension value; empty when not grouped by value.
    pub key: String,
    /// The group's time: an hour bucket's Unix milliseconds, or the first date's days since
    /// 1970-01-01; 0 when not grouped by time.
    pub time: i64,
    /// Distinct visitors.
    pub visitors: u64,
    /// Visits.
    pub visits: i64,
    /// Pageviews.
    pub pageviews: i64,
    /// Events, pageviews included.
    pub events: i64,
    /// Visits with at most one pageview.
    pub bounces: i64,
    /// Summed visit duration, milliseconds.
    pub duration_ms: i64,
    /// Bot events (excluded from every metric).
    pub bot_events: i64,
    /// Revenue, millionths of the tenant's currency.
    pub revenue_micros: i64,
    /// Events that carried revenue.
    pub revenue_events: i64,
    /// Distinct visitors of the whole time point or range, for conversion rates (goal rows);
    /// with a group conversion rate, the group's visitors without the goal conditions.
    pub total_visitors: u64,
    /// Distinct visitors of every group of the time point (or range), for percentages.
    pub point_visitors: u64,
    /// Visitor-page pairs that sent engagement reports.
    pub engaged_pages: i64,
    /// Summed deepest scroll of those pairs, percent.
    pub scroll_sum: i64,
    /// Summed engaged time of those pairs, milliseconds.
    pub engaged_ms: i64,
}

/// The metrics a request asks for, in its order without repeats; [`ALL_METRICS`] when empty.
pub fn requested(metrics: &[i32]) -> Result<Vec<Metric>, QueryError> {
    if metrics.is_empty() {
        return Ok(ALL_METRICS.to_vec());
    }
    let mut out = Vec::with_capacity(ALL_METRICS.len());
    for (index, &raw) in metrics.iter().enumerate() {
        let metric = parse(raw, &format!("metrics[{index}] ="))?;
        if !out.contains(&metric) {
            out.push(metric);
        }
    }
    Ok(out)
}

/// The metric `raw` of the request field `field`: a known one, not unspecified.
pub fn parse(raw: i32, field: &str) -> Result<Metric, QueryError> {
    Metric::try_from(raw)
        .ok()
        .filter(|m| *m != Metric::Unspecified)
        .ok_or_else(|| {
            let (first, last) = (Metric::Visitors, Metric::TimeOnPage);
            QueryError::invalid(format!(
                "{field} {raw} is not a metric: use {} ({}) to {} ({})",
                first.as_str_name(),
                first as i32,
                last.as_str_name(),
                last as i32
            ))
        })
}

/// The value of `metric` over `sums`. Ratios are 0 when there were no visits.
pub fn value(metric: Metric, sums: &Sums) -> f64 {
    let visits = sums.visits as f64;
    let per_visit = |x: f64| if sums.visits > 0 { x / visits } else { 0.0 };
    match metric {
        Metric::Unspecified => 0.0,
        Metric::Visitors => sums.visitors as f64,
        Metric::Visits => visits,
        Metric::Pageviews => sums.pageviews as f64,
        Metric::Events => sums.events as f64,
        Metric::BounceRate => per_visit(100.0 * sums.bounces as f64),
        Metric::VisitDuration => per_visit(sums.duration_ms as f64) / 1000.0,
        Metric::ViewsPerVisit => per_visit(sums.pageviews as f64),
        Metric::ConversionRate => share(sums.visitors, sums.total_visitors),
        Metric::TotalRevenue => sums.revenue_micros as f64 / 1e6,
        Metric::AverageRevenue if sums.revenue_events > 0 => {
            sums.revenue_micros as f64 / 1e6 / sums.revenue_events as f64
        }
        Metric::AverageRevenue => 0.0,
        Metric::GroupConversionRate => share(sums.visitors, sums.total_visitors),
        Metric::Percentage => share(sums.visitors, sums.point_visitors),
        Metric::ScrollDepth if sums.engaged_pages > 0 => {
            sums.scroll_sum as f64 / sums.engaged_pages as f64
        }
        Metric::TimeOnPage if sums.engaged_pages > 0 => {
            sums.engaged_ms as f64 / 1000.0 / sums.engaged_pages as f64
        }
        Metric::ScrollDepth | Metric::TimeOnPage => 0.0,
    }
}

/// `part` of `whole` in percent, at most 100 (both may be sketch estimates); 0 of nothing.
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (100.0 * part as f64 / whole as f64).min(100.0)
}

/// One [`MetricValue`] per metric, in order.
pub fn values(metrics: &[Metric], sums: &Sums) -> Vec<MetricValue> {
    metrics
        .iter()
        .map(|&metric| MetricValue {
            metric: metric as i32,
            value: value(metric, sums),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums() -> Sums {
        Sums {
            visitors: 3,
            visits: 4,
            pageviews: 10,
            events: 12,
            bounces: 1,
            duration_ms: 8_000,
            bot_events: 2,
            ..Sums::default()
        }
    }

    #[test]
    fn computes_every_metric() {
        let got: Vec<f64> = values(&ALL_METRICS, &sums())
            .iter()
            .map(|v| v.value)
            .collect();
        assert_eq!(got, vec![3.0, 4.0, 10.0, 12.0, 25.0, 2.0, 2.5]);
    }

    #[test]
    fn ratios_are_zero_without_visits() {
        let empty = Sums::default();
        for metric in ALL_METRICS {
            assert_eq!(value(metric, &empty), 0.0, "{metric:?}");
        }
    }

    #[test]
    fn empty_means_all_in_enum_order() {
        assert_eq!(requested(&[]).expect("metrics"), ALL_METRICS.to_vec());
    }

    #[test]
    fn keeps_order_and_drops_repeats() {
        let raw = [
            Metric::Pageviews as i32,
            Metric::Visitors as i32,
            Metric::Pageviews as i32,
        ];
        assert_eq!(
            requested(&raw).expect("metrics"),
            vec![Metric::Pageviews, Metric::Visitors]
        );
    }

    #[test]
    fn rejects_unknown_metrics_by_index() {
        let err = requested(&[1, 0]).expect_err("unspecified");
        assert!(err.to_string().contains("metrics[1] = 0"), "{err}");
        let err = requested(&[42]).expect_err("unknown");
        assert!(err.to_string().contains("metrics[0] = 42"), "{err}");
    }
}
