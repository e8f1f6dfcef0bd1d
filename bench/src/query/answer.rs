//! A dashboard's answer (totals, a daily series, top pages, top sources), as Beacon gives it
//! through the gateway and as the raw scan computes it, and the check that they agree.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::bail;
use beacon_proto::insights::v1::insights_service_client::InsightsServiceClient;
use beacon_proto::insights::v1::{
    DateRange, Dimension, GetAggregateRequest, GetBreakdownRequest, GetTimeseriesRequest, Interval,
    Metric, MetricValue,
};
use tonic::transport::Channel;

/// Largest relative error allowed on sketched visitors: four times the sketches' stated
/// relative standard error (0.8 %), plus one visitor for two sharing a coupon.
const VISITOR_ERROR: f64 = 4.0 * 0.008;
/// Rows of the pages and sources panels.
pub(super) const TOP: usize = 10;

/// The numbers of one group.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Counts {
    pub visitors: f64,
    pub visits: f64,
    pub pageviews: f64,
    pub events: f64,
    pub bounce_rate: f64,
}

/// One dashboard.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Answer {
    pub totals: Counts,
    pub bot_events: u64,
    /// By local date, `YYYY-MM-DD`.
    pub days: BTreeMap<String, Counts>,
    /// Best first.
    pub pages: Vec<(String, Counts)>,
    /// Best first.
    pub sources: Vec<(String, Counts)>,
}

/// The metrics the series and panels ask for, as the merchant dashboard does.
fn panel_metrics() -> Vec<i32> {
    [
        Metric::Visitors,
        Metric::Visits,
        Metric::Pageviews,
        Metric::Events,
        Metric::BounceRate,
    ]
    .map(|m| m as i32)
    .to_vec()
}

fn counts(values: &[MetricValue]) -> Counts {
    let mut counts = Counts::default();
    for value in values {
        let slot = match Metric::try_from(value.metric) {
            Ok(Metric::Visitors) => &mut counts.visitors,
            Ok(Metric::Visits) => &mut counts.visits,
            Ok(Metric::Pageviews) => &mut counts.pageviews,
            Ok(Metric::Events) => &mut counts.events,
            Ok(Metric::BounceRate) => &mut counts.bounce_rate,
            _ => continue,
        };
        *slot = value.value;
    }
    counts
}

/// One dashboard through the gateway: its four calls issued together, as a merchant's browser
/// issues them, each with the read key.
pub(super) async fn fetch(
    channel: &Channel,
    read_key: &str,
    range: &DateRange,
) -> anyhow::Result<Answer> {
    let date_range = Some(range.clone());
    use crate::send::authorized;
    let totals = authorized(
        read_key,
        GetAggregateRequest {
            date_range: date_range.clone(),
            metrics: vec![],
        },
    )?;
    let series = authorized(
        read_key,
        GetTimeseriesRequest {
            date_range: date_range.clone(),
            interval: Interval::Day as i32,
            metrics: panel_metrics(),
        },
    )?;
    let breakdown = |dimension: Dimension| {
        authorized(
            read_key,
            GetBreakdownRequest {
                date_range: date_range.clone(),
                dimension: dimension as i32,
                metrics: panel_metrics(),
                limit: TOP as u32,
            },
        )
    };
    let (pages, sources) = (breakdown(Dimension::Page)?, breakdown(Dimension::Source)?);
    let client = || InsightsServiceClient::new(channel.clone());
    let (mut a, mut b, mut c, mut d) = (client(), client(), client(), client());
    let (totals, series, pages, sources) = tokio::join!(
        a.get_aggregate(totals),
        b.get_timeseries(series),
        c.get_breakdown(pages),
        d.get_breakdown(sources),
    );
    let (totals, series) = (totals?.into_inner(), series?.into_inner());
    let rows = |rows: Vec<beacon_proto::insights::v1::BreakdownRow>| {
        rows.into_iter()
            .map(|row| (row.value, counts(&row.values)))
            .collect()
    };
    Ok(Answer {
        totals: counts(&totals.values),
        bot_events: totals.bot_events,
        days: series
            .points
            .into_iter()
            .map(|p| (p.label, counts(&p.values)))
            .collect(),
        pages: rows(pages?.into_inner().rows),
        sources: rows(sources?.into_inner().rows),
    })
}

/// Checks Beacon's answer against the raw scan's `want` (with every page and source row, not
/// only the top): exact counts equal, visitors within the sketches' error, the top rows the
/// true top. Fails naming every difference.
pub(super) fn check(tenant: &str, got: &Answer, want: &Answer) -> anyhow::Result<()> {
    let mut differences = String::new();
    let mut differ = |what: String| {
        let _ = writeln!(differences, "  {what}");
    };
    if got.bot_events != want.bot_events {
        differ(format!(
            "bot events: {} != {}",
            got.bot_events, want.bot_events
        ));
    }
    compare("totals", &got.totals, &want.totals, true, &mut differ);
    let empty = Counts::default();
    for (day, want_day) in &want.days {
        let got_day = got.days.get(day).unwrap_or(&empty);
        compare(&format!("day {day}"), got_day, want_day, true, &mut differ);
    }
    for (day, got_day) in &got.days {
        if !want.days.contains_key(day) && got_day != &empty {
            differ(format!(
                "day {day}: {got_day:?} where the raw events have none"
            ));
        }
    }
    // Rollups count no visits under an event dimension such as the page.
    top("pages", &got.pages, &want.pages, false, &mut differ);
    top("sources", &got.sources, &want.sources, true, &mut differ);
    if differences.is_empty() {
        return Ok(());
    }
    bail!(
        "tenant {tenant}: the dashboard through the gateway differs from the raw scan:\n{differences}"
    )
}

/// The top rows: each equal to the raw scan's row of its value, and no value left out that has
/// clearly more visitors than the last row shown.
fn top(
    panel: &str,
    got: &[(String, Counts)],
    want: &[(String, Counts)],
    visits: bool,
    differ: &mut impl FnMut(String),
) {
    let want_top = want.len().min(TOP);
    if got.len() != want_top {
        differ(format!("{panel}: {} rows, want {want_top}", got.len()));
    }
    let empty = Counts::default();
    for (value, got_row) in got {
        let want_row = want
            .iter()
            .find(|(v, _)| v == value)
            .map_or(&empty, |(_, c)| c);
        compare(
            &format!("{panel} {value:?}"),
            got_row,
            want_row,
            visits,
            differ,
        );
    }
    let floor = got.last().map_or(0.0, |(_, c)| c.visitors);
    for (value, want_row) in want {
        if !got.iter().any(|(v, _)| v == value)
            && want_row.visitors > floor * (1.0 + 2.0 * VISITOR_ERROR) + 1.0
        {
            differ(format!(
                "{panel}: {value:?} ({} visitors) is missing from the top {TOP}, whose last row has {floor}",
                want_row.visitors
            ));
        }
    }
}

fn compare(what: &str, got: &Counts, want: &Counts, visits: bool, differ: &mut impl FnMut(String)) {
    let allowed = want.visitors * VISITOR_ERROR + 1.0;
    if (got.visitors - want.visitors).abs() > allowed {
        differ(format!(
            "{what}: visitors {} != {} (more than {allowed:.0} apart)",
            got.visitors, want.visitors
        ));
    }
    let mut exact = vec![
        ("pageviews", got.pageviews, want.pageviews),
        ("events", got.events, want.events),
    ];
    if visits {
        exact.push(("visits", got.visits, want.visits));
    }
    for (metric, g, w) in exact {
        if g != w {
            differ(format!("{what}: {metric} {g} != {w}"));
        }
    }
    if visits && (got.bounce_rate - want.bounce_rate).abs() > 0.01 {
        differ(format!(
            "{what}: bounce rate {} != {:.4}",
            got.bounce_rate, want.bounce_rate
        ));
    }
}
