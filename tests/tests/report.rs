//! Reports end to end in cluster mode, against an oracle that shares no code with Beacon:
//! three weeks of imported traffic across a month's end and New York's end of daylight saving
//! time, for tenants in UTC, a 30-minute, a 45-minute and a DST zone, with bots, sessions across
//! midnight and at the 30-minute boundary, sessions that start with a custom event, and one
//! tenant's events arriving visitor by visitor (late for the others). Every dimension, week and
//! month points, filters (each operator, nested), comparisons and paging are checked exactly.

use std::collections::BTreeMap;
use std::time::Duration;

use beacon_proto::ingest::v1::Event;
use beacon_proto::insights::v1::{
    Comparison, ComparisonMode, Condition, DateRange, Dimension, Filter, Filters, Interval, Metric,
    Operator, OrderBy, ReportDimension, ReportSource, RunReportRequest, RunReportResponse, filter,
    order_by, report_dimension,
};
use beacon_tests::client::{Counts, METRICS, counts};
use beacon_tests::reports::{Facts, Field, Grain, Grouping, Keep, Seen};
use beacon_tests::run::{import_all, wait_exact};
use beacon_tests::sessions::{
    BOT_AGENT, Order, arrange, by_visitor, event_ms, oracle, tricky_events,
};
use beacon_tests::traffic::{TenantSpec, Traffic, USER_AGENTS, visit_ends_by};
use beacon_tests::{Client, Cluster};
use jiff::civil::Date;

const TENANTS: &[(&str, &str, Order)] = &[
    ("report-utc", "UTC", Order::Time),
    ("report-kolkata", "Asia/Kolkata", Order::Time),
    (
        "report-kathmandu",
        "Asia/Kathmandu",
        Order::VisitorByVisitor,
    ),
    ("report-ny", "America/New_York", Order::Time),
];
const VISITORS: usize = 300;
/// The traffic's window, UTC.
const FROM: &str = "2026-10-20T00:00:00Z";
const TO: &str = "2026-11-10T00:00:00Z";
/// The reports' range: from a Wednesday, across October's end and 2026-11-01 (DST ends in
/// New York).
const START: &str = "2026-10-21";
const END: &str = "2026-11-09";

const REFERRERS: [&str; 5] = [
    "",
    "https://www.google.com/",
    "https://news.ycombinator.com/item?id=1",
    "https://t.co/abc",
    "https://www.bing.com/search?q=beacon",
];
/// Campaigns: source, medium, campaign, and the rest of the query (term and content).
const CAMPAIGNS: [Option<(&str, &str, &str, &str)>; 3] = [
    None,
    Some(("newsletter", "email", "spring", "")),
    Some((
        "google",
        "cpc",
        "brand",
        "&utm_term=shoes&utm_content=ad%201",
    )),
];

/// Every dimension a report can group by.
const DIMENSIONS: [Dimension; 18] = [
    Dimension::EventName,
    Dimension::Hostname,
    Dimension::Region,
    Dimension::City,
    Dimension::Referrer,
    Dimension::UtmTerm,
    Dimension::UtmContent,
    Dimension::Page,
    Dimension::EntryPage,
    Dimension::Source,
    Dimension::Country,
    Dimension::Device,
    Dimension::Browser,
    Dimension::Os,
    Dimension::Channel,
    Dimension::UtmSource,
    Dimension::UtmMedium,
    Dimension::UtmCampaign,
];

fn ms(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>()
        .expect("instant")
        .as_millisecond()
}

fn date(text: &str) -> Date {
    text.parse().expect("date")
}

/// The visitor number of a tricky-traffic address ("10.7.a.b").
fn visitor_of(event: &Event) -> usize {
    let octets: Vec<usize> = event
        .client_ip
        .split('.')
        .filter_map(|o| o.parse().ok())
        .collect();
    octets[2] * 256 + octets[3]
}

/// Gives each visitor a referrer and, for two thirds of them, a campaign on every URL; every
/// third visitor's pageviews are followed by an engagement report 5 seconds later, as
/// Plausible's tracker sends them.
fn with_sources(events: Vec<Event>) -> Vec<Event> {
    let mut out = Vec::with_capacity(events.len() * 2);
    for mut event in events {
        let v = visitor_of(&event);
        event.referrer = REFERRERS[v % REFERRERS.len()].into();
        if let Some((source, medium, campaign, rest)) = CAMPAIGNS[(v / 5) % CAMPAIGNS.len()] {
            event.url = format!(
                "{}?utm_source={source}&utm_medium={medium}&utm_campaign={campaign}{rest}",
                event.url
            );
        }
        with_props(&mut event, v);
        if v.is_multiple_of(3) && event.name == "pageview" {
            let mut engagement = event.clone();
            engagement.id = format!("{}-engagement", event.id);
            engagement.name = "engagement".into();
            if let Some(ts) = &mut engagement.timestamp {
                ts.seconds += 5;
            }
            out.push(engagement);
        }
        out.push(event);
    }
    out
}

/// Custom properties: the plan of every signup, the author of blog pageviews, and a number,
/// the docs version, on docs pageviews.
fn with_props(event: &mut Event, v: usize) {
    use beacon_proto::ingest::v1::{PropValue, prop_value::Kind};
    let mut set = |key: &str, kind: Kind| {
        event
            .props
            .insert(key.to_owned(), PropValue { kind: Some(kind) });
    };
    let path = event
        .url
        .split(".example")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    if event.name == "signup" {
        set(
            "plan",
            Kind::StringValue(["free", "pro", "team"][v % 3].into()),
        );
    } else if path.starts_with("/blog") {
        set("author", Kind::StringValue(["ann", "bob"][v % 2].into()));
    } else if path.starts_with("/docs") {
        set("version", Kind::NumberValue([2.0, 2.5][v % 2]));
    }
    if event.name == "signup" && !v.is_multiple_of(4) {
        event.revenue = Some(beacon_proto::ingest::v1::Revenue {
            amount: 9.99 * (v % 4) as f64,
            currency: "EUR".into(),
        });
    }
}

/// The visit dimensions of a visit starting with `event`, written out by hand from METRICS.md.
fn classify(event: &Event) -> BTreeMap<Dimension, String> {
    let v = visitor_of(event);
    let mut out = BTreeMap::new();
    let (source, kind, referrer) = match REFERRERS[v % REFERRERS.len()] {
        "" => ("Direct / None", "Direct", "Direct / None"),
        r if r.contains("google") => ("Google", "Organic Search", "google.com"),
        r if r.contains("bing") => ("Bing", "Organic Search", "bing.com/search"),
        r if r.contains("t.co") => ("Twitter", "Organic Social", "t.co/abc"),
        _ => (
            "news.ycombinator.com",
            "Referral",
            "news.ycombinator.com/item",
        ),
    };
    out.insert(Dimension::Referrer, referrer.into());
    out.insert(Dimension::Region, "(unknown)".into());
    out.insert(Dimension::City, "(unknown)".into());
    let (source, channel) = match CAMPAIGNS[(v / 5) % CAMPAIGNS.len()] {
        Some((utm_source, medium, campaign, rest)) => {
            out.insert(Dimension::UtmSource, utm_source.to_owned());
            out.insert(Dimension::UtmMedium, medium.to_owned());
            out.insert(Dimension::UtmCampaign, campaign.to_owned());
            if !rest.is_empty() {
                out.insert(Dimension::UtmTerm, "shoes".to_owned());
                out.insert(Dimension::UtmContent, "ad 1".to_owned());
            }
            match medium {
                "email" => ("newsletter", "Email"),
                _ => ("Google", "Paid Search"),
            }
        }
        None => (source, kind),
    };
    out.insert(Dimension::Source, source.into());
    out.insert(Dimension::Channel, channel.into());
    let path = event
        .url
        .split_once(".example")
        .map(|(_, rest)| rest.split('?').next().unwrap_or("/"))
        .unwrap_or("/");
    out.insert(Dimension::EntryPage, path.into());
    out.insert(Dimension::Country, "(unknown)".into());
    let agent = USER_AGENTS
        .iter()
        .position(|a| *a == event.user_agent)
        .expect("a browser agent");
    let (device, browser, os) = [
        ("Desktop", "Chrome", "Windows"),
        ("Desktop", "Safari", "macOS"),
        ("Mobile", "Safari", "iOS"),
        ("Mobile", "Chrome", "Android"),
        ("Desktop", "Firefox", "Linux"),
    ][agent];
    out.insert(Dimension::Device, device.into());
    out.insert(Dimension::Browser, browser.into());
    out.insert(Dimension::Os, os.into());
    out
}

fn range(start: &str, end: &str) -> Option<DateRange> {
    Some(DateRange {
        start_date: start.into(),
        end_date: end.into(),
    })
}

fn dimension(d: Dimension) -> ReportDimension {
    ReportDimension {
        kind: Some(report_dimension::Kind::Dimension(d as i32)),
    }
}

fn time(interval: Interval) -> ReportDimension {
    ReportDimension {
        kind: Some(report_dimension::Kind::Time(interval as i32)),
    }
}

fn condition(d: Dimension, operator: Operator, values: &[&str], ignore_case: bool) -> Filter {
    Filter {
        kind: Some(filter::Kind::Condition(Condition {
            dimension: d as i32,
            operator: operator as i32,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
            ignore_case,
            property: String::new(),
        })),
    }
}

fn node(kind: fn(Filters) -> filter::Kind, filters: Vec<Filter>) -> Filter {
    Filter {
        kind: Some(kind(Filters { filters })),
    }
}

fn request(dimensions: Vec<ReportDimension>) -> RunReportRequest {
    RunReportRequest {
        date_range: range(START, END),
        metrics: METRICS.iter().map(|m| *m as i32).collect(),
        dimensions,
        limit: 10_000,
        ..Default::default()
    }
}

/// A response's rows keyed like the oracle's: (time label, value), empty when not grouped.
fn keyed(req: &RunReportRequest, reply: &RunReportResponse) -> BTreeMap<(String, String), Counts> {
    let time_at = req
        .dimensions
        .iter()
        .position(|d| matches!(d.kind, Some(report_dimension::Kind::Time(_))));
    let values_at: Vec<usize> = (0..req.dimensions.len())
        .filter(|i| Some(*i) != time_at)
        .collect();
    let cell = |row: &beacon_proto::insights::v1::ReportRow, at: Option<usize>| {
        at.map(|i| row.dimensions[i].clone()).unwrap_or_default()
    };
    reply
        .rows
        .iter()
        .map(|row| {
            let values: Vec<&str> = values_at
                .iter()
                .map(|i| row.dimensions[*i].as_str())
                .collect();
            (
                (cell(row, time_at), values.join("\u{1e}")),
                counts(&row.values),
            )
        })
        .filter(|(_, c)| *c != Counts::default())
        .collect()
}

struct Tenant {
    read: String,
    facts: Facts,
    /// (source, revenue amount) of every event with revenue in the reports' range.
    revenues: Vec<(String, f64)>,
}

impl Tenant {
    /// Revenue total and count per source.
    fn revenue_by_source(&self) -> BTreeMap<String, (f64, u64)> {
        let mut out: BTreeMap<String, (f64, u64)> = BTreeMap::new();
        for (source, amount) in &self.revenues {
            let entry = out.entry(source.clone()).or_default();
            entry.0 += amount;
            entry.1 += 1;
        }
        out
    }
}

impl Tenant {
    async fn check(
        &self,
        client: &Client,
        what: &str,
        req: RunReportRequest,
        grouping: Grouping,
        keep: Option<&Keep<'_>>,
    ) -> anyhow::Result<RunReportResponse> {
        let reply = client.report(&self.read, req.clone()).await?;
        let (start, end) = dates(&req);
        let want = self.facts.report(start, end, grouping, keep);
        let got = keyed(&req, &reply);
        anyhow::ensure!(
            got == want,
            "{what}: report differs from the oracle\nwant {want:#?}\ngot {got:#?}"
        );
        anyhow::ensure!(
            reply.source == ReportSource::Rollups as i32,
            "{what}: source"
        );
        Ok(reply)
    }
}

impl Tenant {
    /// Checks a report the event store answers against the oracle's scan.
    async fn check_scan(
        &self,
        client: &Client,
        what: &str,
        req: RunReportRequest,
        (time, fields): (Option<Grain>, &[Field<'_>]),
        pass: &dyn Fn(&Seen<'_>) -> bool,
    ) -> anyhow::Result<RunReportResponse> {
        let reply = client.report(&self.read, req.clone()).await?;
        let want = self.facts.scan(dates(&req), time, fields, pass);
        let got = keyed(&req, &reply);
        anyhow::ensure!(
            got == want && !want.is_empty(),
            "{what}: report differs from the oracle\nwant {want:#?}\ngot {got:#?}"
        );
        anyhow::ensure!(
            reply.source == ReportSource::Events as i32,
            "{what}: source {}",
            reply.source
        );
        Ok(reply)
    }
}

fn dates(req: &RunReportRequest) -> (Date, Date) {
    let r = req.date_range.as_ref().expect("range");
    (date(&r.start_date), date(&r.end_date))
}

/// The (source of its visit, amount) of every event with revenue whose local date is in the
/// reports' range: sessionized by the oracle's rules (30 minutes idle, a visit ends at the first
/// local midnight 12 hours after its start).
fn revenues(zone: &str, events: &[Event]) -> Vec<(String, f64)> {
    let (start, end) = (date(START), date(END));
    let mut out = Vec::new();
    for list in by_visitor(events, &[BOT_AGENT]).into_values() {
        let (mut last, mut ends_by, mut source) = (i64::MIN, i64::MIN, String::new());
        for event in list {
            let ms = event_ms(event);
            if last == i64::MIN || ms - last > 30 * 60_000 || ms >= ends_by {
                ends_by = visit_ends_by(ms, zone);
                source = classify(event)[&Dimension::Source].clone();
            }
            last = ms;
            let day = date(&beacon_tests::traffic::local_date(ms, zone));
            if let (Some(revenue), true) = (&event.revenue, day >= start && day <= end) {
                out.push((source.clone(), revenue.amount));
            }
        }
    }
    out
}

async fn start_tenants(cluster: &Cluster, client: &Client) -> anyhow::Result<Vec<Tenant>> {
    let mut tenants = Vec::new();
    for (i, (id, zone, order)) in TENANTS.iter().enumerate() {
        let (server, read) = client.create_tenant(&cluster.admin_token, id, zone).await?;
        client.set_currency(&cluster.admin_token, id, "EUR").await?;
        let spec = TenantSpec {
            id: (*id).into(),
            time_zone: (*zone).into(),
        };
        let events = tricky_events(70 + i as u64, &spec, VISITORS, (ms(FROM), ms(TO)), &[]);
        let events = with_sources(events);
        let facts = Facts::of(zone, &events, &[BOT_AGENT], &classify);
        let traffic = Traffic {
            tenant: spec,
            expected: oracle(zone, &events, &[BOT_AGENT]),
            events: arrange(&events, *order, 5),
        };
        import_all(client, &server, &traffic.events, Duration::from_secs(60)).await?;
        wait_exact(client, &read, &traffic, Duration::from_secs(240)).await?;
        // The two oracles agree on the daily numbers.
        let (first, last) = traffic.date_range();
        let daily = facts.report(
            date(&first),
            date(&last),
            Grouping {
                time: Some(Grain::Day),
                dimension: None,
                property: None,
            },
            None,
        );
        let daily: BTreeMap<String, Counts> =
            daily.into_iter().map(|((day, _), c)| (day, c)).collect();
        anyhow::ensure!(daily == traffic.expected, "{id}: the oracles disagree");
        let revenues = revenues(zone, &traffic.events);
        tenants.push(Tenant {
            read,
            facts,
            revenues,
        });
    }
    Ok(tenants)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_match_the_oracle() -> anyhow::Result<()> {
    let cluster = Cluster::start()?;
    let client = Client::of(&cluster).await?;
    let tenants = start_tenants(&cluster, &client)
        .await
        .map_err(|err| anyhow::anyhow!("{err}\n{}", cluster.logs()))?;
    for (tenant, (id, _, _)) in tenants.iter().zip(TENANTS) {
        every_dimension(&client, tenant, id).await?;
        time_points(&client, tenant, id).await?;
        filters(&client, tenant, id).await?;
        comparisons(&client, tenant, id).await?;
        paging(&client, tenant, id).await?;
        csv_export(&client, tenant, id).await?;
        goals(&client, &cluster, tenant, id).await?;
        properties(&client, tenant, id).await?;
        revenue(&client, tenant, id).await?;
        scans(&client, tenant, id).await?;
        println!("{id}: every report equals the oracle");
    }
    Ok(())
}

async fn every_dimension(client: &Client, tenant: &Tenant, id: &str) -> anyhow::Result<()> {
    tenant
        .check(
            client,
            &format!("{id} totals"),
            request(vec![]),
            Grouping::default(),
            None,
        )
        .await?;
    for d in DIMENSIONS {
        let grouping = Grouping {
            time: None,
            dimension: Some(d),
            property: None,
        };
        let reply = tenant
            .check(
                client,
                &format!("{id} by {d:?}"),
                request(vec![dimension(d)]),
                grouping,
                None,
            )
            .await?;
        anyhow::ensure!(
            reply.total_rows == reply.rows.len() as u64,
            "{id} {d:?}: total"
        );
    }
    Ok(())
}

async fn time_points(client: &Client, tenant: &Tenant, id: &str) -> anyhow::Result<()> {
    for (interval, grain) in [
        (Interval::Day, Grain::Day),
        (Interval::Week, Grain::Week),
        (Interval::Month, Grain::Month),
    ] {
        let grouping = Grouping {
            time: Some(grain),
            dimension: None,
            property: None,
        };
        let reply = tenant
            .check(
                client,
                &format!("{id} by {grain:?}"),
                request(vec![time(interval)]),
                grouping,
                None,
            )
            .await?;
        let labels: Vec<&str> = reply
            .rows
            .iter()
            .map(|r| r.dimensions[0].as_str())
            .collect();
        let want: &[&str] = match grain {
            Grain::Day => &[],
            Grain::Week => &["2026-10-21", "2026-10-26", "2026-11-02", "2026-11-09"],
            Grain::Month => &["2026-10-21", "2026-11-01"],
        };
        anyhow::ensure!(
            want.is_empty() || labels == want,
            "{id} {grain:?}: labels {labels:?}"
        );
        if grain == Grain::Day {
            anyhow::ensure!(labels.len() == 20, "{id}: 20 days, every one listed");
        }
    }
    let grouping = Grouping {
        time: Some(Grain::Week),
        dimension: Some(Dimension::Source),
        property: None,
    };
    tenant
        .check(
            client,
            &format!("{id} weeks by source"),
            request(vec![dimension(Dimension::Source), time(Interval::Week)]),
            grouping,
            None,
        )
        .await?;
    Ok(())
}

async fn filters(client: &Client, tenant: &Tenant, id: &str) -> anyhow::Result<()> {
    let by_source = Grouping {
        time: None,
        dimension: Some(Dimension::Source),
        property: None,
    };
    // (is or contains) on the grouped dimension.
    let req = RunReportRequest {
        filter: Some(node(
            filter::Kind::AnyOf,
            vec![
                condition(Dimension::Source, Operator::Is, &["Google"], false),
                condition(Dimension::Source, Operator::Contains, &["NEWS"], true),
            ],
        )),
        ..request(vec![dimension(Dimension::Source)])
    };
    let test = |v: &str| v == "Google" || v.contains("news");
    let keep = Keep {
        dimension: Dimension::Source,
        property: None,
        test: &test,
    };
    tenant
        .check(
            client,
            &format!("{id} sources is/contains"),
            req,
            by_source,
            Some(&keep),
        )
        .await?;
    // not (is), on totals: every visit not direct.
    let req = RunReportRequest {
        filter: Some(node(
            filter::Kind::NoneOf,
            vec![condition(
                Dimension::Channel,
                Operator::Is,
                &["Direct"],
                false,
            )],
        )),
        ..request(vec![])
    };
    let test = |v: &str| v != "Direct";
    let keep = Keep {
        dimension: Dimension::Channel,
        property: None,
        test: &test,
    };
    tenant
        .check(
            client,
            &format!("{id} not direct"),
            req,
            Grouping::default(),
            Some(&keep),
        )
        .await?;
    // matches, on a daily series.
    let req = RunReportRequest {
        filter: Some(condition(
            Dimension::Source,
            Operator::Matches,
            &["^(Twitter|Bing)$"],
            false,
        )),
        ..request(vec![time(Interval::Day)])
    };
    let test = |v: &str| v == "Twitter" || v == "Bing";
    let keep = Keep {
        dimension: Dimension::Source,
        property: None,
        test: &test,
    };
    let daily = Grouping {
        time: Some(Grain::Day),
        dimension: None,
        property: None,
    };
    tenant
        .check(
            client,
            &format!("{id} days matching"),
            req,
            daily,
            Some(&keep),
        )
        .await?;
    // Nested: pages containing "/" but not /docs (and (…, not …)).
    let req = RunReportRequest {
        filter: Some(node(
            filter::Kind::AllOf,
            vec![
                condition(Dimension::Page, Operator::Contains, &["/"], false),
                node(
                    filter::Kind::NoneOf,
                    vec![condition(Dimension::Page, Operator::Is, &["/docs"], false)],
                ),
            ],
        )),
        ..request(vec![dimension(Dimension::Page)])
    };
    let test = |v: &str| v.contains('/') && v != "/docs";
    let keep = Keep {
        dimension: Dimension::Page,
        property: None,
        test: &test,
    };
    let by_page = Grouping {
        time: None,
        dimension: Some(Dimension::Page),
        property: None,
    };
    tenant
        .check(
            client,
            &format!("{id} pages but docs"),
            req,
            by_page,
            Some(&keep),
        )
        .await?;
    // is not, on a campaign breakdown: visits without a campaign are not in it.
    let req = RunReportRequest {
        filter: Some(condition(
            Dimension::UtmCampaign,
            Operator::IsNot,
            &["brand"],
            false,
        )),
        ..request(vec![
            dimension(Dimension::UtmCampaign),
            time(Interval::Month),
        ])
    };
    let test = |v: &str| v != "brand";
    let keep = Keep {
        dimension: Dimension::UtmCampaign,
        property: None,
        test: &test,
    };
    let grouping = Grouping {
        time: Some(Grain::Month),
        dimension: Some(Dimension::UtmCampaign),
        property: None,
    };
    tenant
        .check(
            client,
            &format!("{id} campaigns not brand"),
            req,
            grouping,
            Some(&keep),
        )
        .await?;
    // A page filter on totals: the event metrics only.
    let req = RunReportRequest {
        metrics: vec![
            Metric::Visitors as i32,
            Metric::Pageviews as i32,
            Metric::Events as i32,
        ],
        filter: Some(condition(
            Dimension::Page,
            Operator::Is,
            &["/pricing"],
            false,
        )),
        ..request(vec![])
    };
    let reply = client.report(&tenant.read, req).await?;
    let want = tenant.facts.report(
        date(START),
        date(END),
        Grouping::default(),
        Some(&Keep {
            dimension: Dimension::Page,
            property: None,
            test: &|v: &str| v == "/pricing",
        }),
    );
    let want = want.values().next().copied().unwrap_or_default();
    let got: Vec<f64> = reply.rows[0].values.iter().map(|v| v.value).collect();
    let expected = [want.visitors, want.pageviews, want.events].map(|n| n as f64);
    anyhow::ensure!(got == expected, "{id} /pricing: {got:?} != {expected:?}");
    // Custom events by name, over weeks: engagement reports are not among them.
    let req = RunReportRequest {
        filter: Some(condition(
            Dimension::EventName,
            Operator::IsNot,
            &["pageview"],
            false,
        )),
        ..request(vec![dimension(Dimension::EventName), time(Interval::Week)])
    };
    let test = |v: &str| v != "pageview";
    let keep = Keep {
        dimension: Dimension::EventName,
        property: None,
        test: &test,
    };
    let grouping = Grouping {
        time: Some(Grain::Week),
        dimension: Some(Dimension::EventName),
        property: None,
    };
    let reply = tenant
        .check(
            client,
            &format!("{id} custom events"),
            req,
            grouping,
            Some(&keep),
        )
        .await?;
    anyhow::ensure!(
        reply.rows.iter().all(|r| r.dimensions[0] == "signup"),
        "{id}: custom events {:?}",
        reply.rows
    );
    Ok(())
}

async fn comparisons(client: &Client, tenant: &Tenant, id: &str) -> anyhow::Result<()> {
    let (start, end) = (date("2026-11-01"), date("2026-11-09"));
    let (before_start, before_end) = (date("2026-10-23"), date("2026-10-31"));
    let previous = Some(Comparison {
        mode: ComparisonMode::PreviousPeriod as i32,
        date_range: None,
    });
    for grouping in [
        Grouping {
            time: Some(Grain::Day),
            dimension: None,
            property: None,
        },
        Grouping {
            time: None,
            dimension: Some(Dimension::Source),
            property: None,
        },
    ] {
        let mut dims = Vec::new();
        if grouping.time.is_some() {
            dims.push(time(Interval::Day));
        }
        if let Some(d) = grouping.dimension {
            dims.push(dimension(d));
        }
        let req = RunReportRequest {
            date_range: range("2026-11-01", "2026-11-09"),
            comparison: previous.clone(),
            ..request(dims)
        };
        let reply = client.report(&tenant.read, req).await?;
        let now = tenant.facts.report(start, end, grouping, None);
        let before = tenant
            .facts
            .report(before_start, before_end, grouping, None);
        anyhow::ensure!(
            reply.comparison_range == range("2026-10-23", "2026-10-31"),
            "{id}: comparison range {:?}",
            reply.comparison_range
        );
        for row in &reply.rows {
            let key = |dims: &[String]| match (grouping.time, grouping.dimension) {
                (Some(_), _) => (dims[0].clone(), String::new()),
                _ => (String::new(), dims[0].clone()),
            };
            let want_now = now.get(&key(&row.dimensions)).copied().unwrap_or_default();
            let want_before = before
                .get(&key(&row.comparison_dimensions))
                .copied()
                .unwrap_or_default();
            anyhow::ensure!(
                counts(&row.values) == want_now && counts(&row.comparison_values) == want_before,
                "{id} {grouping:?} row {:?} vs {:?}: {:?} / {:?}, want {want_now:?} / \
                 {want_before:?}",
                row.dimensions,
                row.comparison_dimensions,
                counts(&row.values),
                counts(&row.comparison_values)
            );
            let visits = row
                .changes
                .iter()
                .find(|c| c.metric == Metric::Visits as i32)
                .and_then(|c| c.change);
            let want = (want_before.visits > 0).then(|| {
                (want_now.visits as f64 - want_before.visits as f64) / want_before.visits as f64
                    * 100.0
            });
            anyhow::ensure!(
                match (visits, want) {
                    (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                    (a, b) => a == b,
                },
                "{id}: change of visits {visits:?}, want {want:?}"
            );
        }
        if grouping.time.is_some() {
            let first = &reply.rows[0];
            anyhow::ensure!(
                first.dimensions == ["2026-11-01"] && first.comparison_dimensions == ["2026-10-23"],
                "{id}: points pair by place"
            );
        }
    }
    Ok(())
}

async fn paging(client: &Client, tenant: &Tenant, id: &str) -> anyhow::Result<()> {
    let by_entry = Grouping {
        time: None,
        dimension: Some(Dimension::EntryPage),
        property: None,
    };
    let want = tenant.facts.report(date(START), date(END), by_entry, None);
    let mut sorted: Vec<(&String, &Counts)> = want.iter().map(|((_, v), c)| (v, c)).collect();
    sorted.sort_by(|a, b| b.1.visits.cmp(&a.1.visits).then(a.0.cmp(b.0)));
    let req = RunReportRequest {
        order_by: vec![
            OrderBy {
                key: Some(order_by::Key::Metric(Metric::Visits as i32)),
                descending: true,
            },
            OrderBy {
                key: Some(order_by::Key::DimensionIndex(0)),
                descending: false,
            },
        ],
        limit: 2,
        offset: 1,
        ..request(vec![dimension(Dimension::EntryPage)])
    };
    let reply = client.report(&tenant.read, req).await?;
    anyhow::ensure!(
        reply.total_rows == sorted.len() as u64,
        "{id}: total_rows {} != {}",
        reply.total_rows,
        sorted.len()
    );
    let got: Vec<(String, Counts)> = reply
        .rows
        .iter()
        .map(|r| (r.dimensions[0].clone(), counts(&r.values)))
        .collect();
    let want: Vec<(String, Counts)> = sorted
        .iter()
        .skip(1)
        .take(2)
        .map(|(v, c)| ((*v).clone(), **c))
        .collect();
    anyhow::ensure!(got == want, "{id}: page {got:?} != {want:?}");
    Ok(())
}

/// The CSV export equals the gRPC answer of the same request, as a body or as a link.
async fn csv_export(client: &Client, tenant: &Tenant, id: &str) -> anyhow::Result<()> {
    let json = r#"{"dateRange":{"startDate":"2026-11-01","endDate":"2026-11-09"},
        "comparison":{"mode":"COMPARISON_MODE_PREVIOUS_PERIOD"},
        "metrics":["METRIC_VISITORS","METRIC_VISITS","METRIC_BOUNCE_RATE"],
        "dimensions":[{"dimension":"DIMENSION_SOURCE"}],
        "filter":{"noneOf":{"filters":[{"condition":{"dimension":"DIMENSION_SOURCE",
            "operator":"OPERATOR_IS","values":["Direct / None"]}}]}}}"#;
    let reply = client
        .report(
            &tenant.read,
            RunReportRequest {
                date_range: range("2026-11-01", "2026-11-09"),
                comparison: Some(Comparison {
                    mode: ComparisonMode::PreviousPeriod as i32,
                    date_range: None,
                }),
                metrics: vec![
                    Metric::Visitors as i32,
                    Metric::Visits as i32,
                    Metric::BounceRate as i32,
                ],
                dimensions: vec![dimension(Dimension::Source)],
                filter: Some(node(
                    filter::Kind::NoneOf,
                    vec![condition(
                        Dimension::Source,
                        Operator::Is,
                        &["Direct / None"],
                        false,
                    )],
                )),
                ..Default::default()
            },
        )
        .await?;
    let mut want = vec![
        "source,visitors,visits,bounce_rate,comparison_source,comparison_visitors,\
         comparison_visits,comparison_bounce_rate,change_visitors,change_visits,\
         change_bounce_rate"
            .to_owned(),
    ];
    for row in &reply.rows {
        let mut cells = vec![row.dimensions[0].clone()];
        cells.extend(row.values.iter().map(|v| v.value.to_string()));
        cells.push(row.comparison_dimensions[0].clone());
        cells.extend(row.comparison_values.iter().map(|v| v.value.to_string()));
        cells.extend(
            row.changes
                .iter()
                .map(|c| c.change.map(|x| x.to_string()).unwrap_or_default()),
        );
        want.push(cells.join(","));
    }
    anyhow::ensure!(!reply.rows.is_empty(), "{id}: sources to export");
    anyhow::ensure!(
        !want.iter().any(|line| line.contains("Direct")),
        "{id}: the filter applies"
    );
    for link in [false, true] {
        let (status, body) = client.report_csv(&tenant.read, json, link).await?;
        let got: Vec<&str> = body.lines().collect();
        anyhow::ensure!(
            status == 200 && got == want,
            "{id} CSV (link {link}): {status}\n{body}\nwant\n{}",
            want.join("\n")
        );
    }
    let (status, body) = client.report_csv("not-a-key", json, false).await?;
    anyhow::ensure!(status == 401, "{id}: unknown key gave {status} {body}");
    let (status, body) = client
        .report_csv(&tenant.read, r#"{"metrics":["METRIC_NOPE"]}"#, false)
        .await?;
    anyhow::ensure!(
        status == 400 && body.contains("not a RunReportRequest"),
        "{id}: bad JSON gave {status} {body}"
    );
    let (status, body) = client
        .report_csv(
            &tenant.read,
            r#"{"dateRange":{"startDate":"2026-11-09","endDate":"2026-11-01"}}"#,
            false,
        )
        .await?;
    anyhow::ensure!(
        status == 400 && body.contains("date_range.start_date 2026-11-09 is after"),
        "{id}: bad range gave {status} {body}"
    );
    Ok(())
}

/// A page path pattern, matched by hand: `**` any characters, `*` any but "/".
fn glob(pattern: &str, path: &str) -> bool {
    if let Some(rest) = pattern.strip_prefix("**") {
        return (0..=path.len()).any(|i| path.is_char_boundary(i) && glob(rest, &path[i..]));
    }
    if let Some(rest) = pattern.strip_prefix('*') {
        let stop = path.find('/').unwrap_or(path.len());
        return (0..=stop).any(|i| path.is_char_boundary(i) && glob(rest, &path[i..]));
    }
    match (pattern.chars().next(), path.chars().next()) {
        (None, None) => true,
        (Some(p), Some(c)) if p == c => glob(&pattern[p.len_utf8()..], &path[c.len_utf8()..]),
        _ => false,
    }
}

/// Goals: an event goal and page-pattern goals, their visitors, conversions and conversion
/// rates per week and in total, against the oracle; a filter on the goal dimension.
async fn goals(
    client: &Client,
    cluster: &Cluster,
    tenant: &Tenant,
    id: &str,
) -> anyhow::Result<()> {
    use beacon_proto::admin::v1::{Goal, goal};
    let defined = [
        ("Signup", goal::Kind::EventName("signup".into())),
        ("Pricing", goal::Kind::PagePath("/pricing".into())),
        ("Docs or blog", goal::Kind::PagePath("/*o*".into())),
        ("Anything", goal::Kind::PagePath("/**".into())),
    ];
    let goals = defined
        .iter()
        .map(|(name, kind)| Goal {
            name: (*name).into(),
            kind: Some(kind.clone()),
        })
        .collect();
    client.set_goals(&cluster.admin_token, id, goals).await?;
    let metrics = vec![
        Metric::Visitors as i32,
        Metric::Events as i32,
        Metric::ConversionRate as i32,
    ];
    let (start, end) = (date(START), date(END));
    for weekly in [false, true] {
        let grain = weekly.then_some(Grain::Week);
        let mut dims = vec![dimension(Dimension::Goal)];
        if weekly {
            dims.push(time(Interval::Week));
        }
        let req = RunReportRequest {
            metrics: metrics.clone(),
            ..request(dims)
        };
        let all = tenant.facts.report(
            start,
            end,
            Grouping {
                time: grain,
                dimension: None,
                property: None,
            },
            None,
        );
        let mut want: BTreeMap<(String, String), (u64, u64, f64)> = BTreeMap::new();
        for (name, kind) in &defined {
            let test = |v: &str| match kind {
                goal::Kind::EventName(event) => v == event,
                goal::Kind::PagePath(pattern) => glob(pattern, v),
            };
            let keep = Keep {
                property: None,
                dimension: match kind {
                    goal::Kind::EventName(_) => Dimension::EventName,
                    goal::Kind::PagePath(_) => Dimension::Page,
                },
                test: &test,
            };
            let grouping = Grouping {
                time: grain,
                dimension: None,
                property: None,
            };
            for ((label, _), counts) in tenant.facts.report(start, end, grouping, Some(&keep)) {
                let everyone = all
                    .get(&(label.clone(), String::new()))
                    .map_or(0, |c| c.visitors);
                let rate = 100.0 * counts.visitors as f64 / everyone as f64;
                want.insert(
                    ((*name).to_owned(), label),
                    (counts.visitors, counts.events, rate),
                );
            }
        }
        // Retry while the gateway and query replicas pick the goals up (5 seconds).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let reply = client.report(&tenant.read, req.clone()).await?;
            let got: BTreeMap<(String, String), (u64, u64, f64)> = reply
                .rows
                .iter()
                .map(|row| {
                    let v: Vec<f64> = row.values.iter().map(|v| v.value).collect();
                    (
                        (
                            row.dimensions[0].clone(),
                            row.dimensions.get(1).cloned().unwrap_or_default(),
                        ),
                        (v[0] as u64, v[1] as u64, v[2]),
                    )
                })
                .collect();
            let same = got.len() == want.len()
                && got.iter().zip(&want).all(|((gk, g), (wk, w))| {
                    gk == wk && g.0 == w.0 && g.1 == w.1 && (g.2 - w.2).abs() < 1e-9
                });
            if same {
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{id} goals (weekly {weekly}): got {got:#?}\nwant {want:#?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // Only the page goals, through a filter on the goal dimension.
    let req = RunReportRequest {
        metrics,
        filter: Some(condition(
            Dimension::Goal,
            Operator::Contains,
            &["o"],
            false,
        )),
        ..request(vec![dimension(Dimension::Goal)])
    };
    let reply = client.report(&tenant.read, req).await?;
    let names: BTreeMap<&str, ()> = reply
        .rows
        .iter()
        .map(|r| (r.dimensions[0].as_str(), ()))
        .collect();
    anyhow::ensure!(
        names.keys().copied().collect::<Vec<_>>() == ["Docs or blog"],
        "{id}: goals containing \"o\": {names:?}"
    );
    Ok(())
}

fn property(key: &str) -> ReportDimension {
    ReportDimension {
        kind: Some(report_dimension::Kind::Property(key.into())),
    }
}

fn property_condition(key: &str, operator: Operator, values: &[&str]) -> Filter {
    let mut filter = condition(Dimension::Property, operator, values, false);
    if let Some(filter::Kind::Condition(c)) = &mut filter.kind {
        c.property = key.into();
    }
    filter
}

/// Custom properties: a breakdown by key over weeks, a filter on a property's values, number
/// values, and a refusal for what the rollups cannot count.
async fn properties(client: &Client, tenant: &Tenant, id: &str) -> anyhow::Result<()> {
    let plan_weeks = Grouping {
        time: Some(Grain::Week),
        dimension: Some(Dimension::Property),
        property: Some("plan"),
    };
    let reply = tenant
        .check(
            client,
            &format!("{id} plans by week"),
            request(vec![property("plan"), time(Interval::Week)]),
            plan_weeks,
            None,
        )
        .await?;
    anyhow::ensure!(
        reply.rows.iter().any(|r| r.dimensions[0] == "team"),
        "{id}: plans {:?}",
        reply.rows
    );
    let authors = Grouping {
        time: None,
        dimension: Some(Dimension::Property),
        property: Some("author"),
    };
    let req = RunReportRequest {
        filter: Some(property_condition("author", Operator::Is, &["ann"])),
        ..request(vec![property("author")])
    };
    let test = |v: &str| v == "ann";
    let keep = Keep {
        dimension: Dimension::Property,
        property: Some("author"),
        test: &test,
    };
    let reply = tenant
        .check(
            client,
            &format!("{id} author ann"),
            req,
            authors,
            Some(&keep),
        )
        .await?;
    anyhow::ensure!(reply.rows.len() == 1, "{id}: authors {:?}", reply.rows);
    // Numbers: docs pageviews of version 2.5, on totals (event metrics only).
    let req = RunReportRequest {
        metrics: vec![
            Metric::Visitors as i32,
            Metric::Pageviews as i32,
            Metric::Events as i32,
        ],
        filter: Some(property_condition(
            "version",
            Operator::Matches,
            &["^2\\.5$"],
        )),
        ..request(vec![])
    };
    let reply = client.report(&tenant.read, req).await?;
    let test = |v: &str| v == "2.5";
    let want = tenant.facts.report(
        date(START),
        date(END),
        Grouping::default(),
        Some(&Keep {
            dimension: Dimension::Property,
            property: Some("version"),
            test: &test,
        }),
    );
    let want = want.values().next().copied().unwrap_or_default();
    let got: Vec<f64> = reply.rows[0].values.iter().map(|v| v.value).collect();
    let expected = [want.visitors, want.pageviews, want.events].map(|n| n as f64);
    anyhow::ensure!(
        got == expected && want.pageviews > 0,
        "{id} version 2.5: {got:?} != {expected:?}"
    );
    // Events without the property pass `is_not`: the event store counts them.
    let req = RunReportRequest {
        metrics: METRICS.iter().map(|m| *m as i32).collect(),
        filter: Some(property_condition("plan", Operator::IsNot, &["free"])),
        ..request(vec![time(Interval::Week)])
    };
    let not_free = |e: &Seen<'_>| e.get(Field::Property("plan")).is_none_or(|v| v != "free");
    tenant
        .check_scan(
            client,
            &format!("{id} plan is not free"),
            req,
            (Some(Grain::Week), &[]),
            &not_free,
        )
        .await?;
    Ok(())
}

/// Group conversion rates (the "Signup" goal set by [`goals`], on docs and blog pages) and
/// percentages by source and week, from the event store: a source's visitors who signed up
/// on those pages over the source's visitors on them, and each source's share of the week's
/// visitors who did.
async fn conversions(client: &Client, tenant: &Tenant, id: &str) -> anyhow::Result<()> {
    let docs_or_blog = condition(
        Dimension::Page,
        Operator::Matches,
        &["^/(docs|blog)"],
        false,
    );
    let req = RunReportRequest {
        metrics: vec![
            Metric::Visitors as i32,
            Metric::GroupConversionRate as i32,
            Metric::Percentage as i32,
        ],
        filter: Some(node(
            filter::Kind::AllOf,
            vec![
                condition(Dimension::Goal, Operator::Is, &["Signup"], false),
                docs_or_blog,
            ],
        )),
        ..request(vec![time(Interval::Week), dimension(Dimension::Source)])
    };
    let reply = client.report(&tenant.read, req.clone()).await?;
    anyhow::ensure!(reply.source == ReportSource::Events as i32, "{id}: source");
    let source = [Field::Dimension(Dimension::Source)];
    let page = |e: &Seen<'_>| {
        e.get(Field::Dimension(Dimension::Page))
            .is_some_and(|p| p.starts_with("/docs") || p.starts_with("/blog"))
    };
    let signup = |e: &Seen<'_>| {
        page(e) && e.get(Field::Dimension(Dimension::EventName)).as_deref() == Some("signup")
    };
    let weeks = Some(Grain::Week);
    let converted = tenant.facts.scan(dates(&req), weeks, &source, &signup);
    let on_pages = tenant.facts.scan(dates(&req), weeks, &source, &page);
    let per_week = tenant.facts.scan(dates(&req), weeks, &[], &signup);
    let share = |part: u64, whole: u64| 100.0 * part as f64 / whole as f64;
    let want: BTreeMap<(String, String), Vec<f64>> = converted
        .iter()
        .map(|(key, counts)| {
            let base = on_pages.get(key).map_or(0, |c| c.visitors);
            let week = (key.0.clone(), String::new());
            let all = per_week.get(&week).map_or(0, |c| c.visitors);
            let values = vec![
                counts.visitors as f64,
                share(counts.visitors, base),
                share(counts.visitors, all),
            ];
            (key.clone(), values)
        })
        .collect();
    let got: BTreeMap<(String, String), Vec<f64>> = reply
        .rows
        .iter()
        .map(|r| {
            let key = (r.dimensions[0].clone(), r.dimensions[1].clone());
            (key, r.values.iter().map(|v| v.value).collect())
        })
        .collect();
    let close = |a: &Vec<f64>, b: &Vec<f64>| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    };
    let agree = got.len() == want.len()
        && want
            .iter()
            .all(|(k, v)| got.get(k).is_some_and(|g| close(g, v)));
    anyhow::ensure!(
        agree && !want.is_empty(),
        "{id} group conversion rates: want {want:#?}\ngot {got:#?}"
    );
    Ok(())
}

/// Reports the rollups cannot answer, read from the event store: filters across dimensions
/// (nested, each operator), two dimensions, exit pages, property filters on visit metrics,
/// and a comparison.
async fn scans(client: &Client, tenant: &Tenant, id: &str) -> anyhow::Result<()> {
    conversions(client, tenant, id).await?;
    let metrics: Vec<i32> = METRICS.iter().map(|m| *m as i32).collect();
    // Pages of visits from Google or on Safari, leaving out the blog.
    let filter = node(
        filter::Kind::AllOf,
        vec![
            node(
                filter::Kind::AnyOf,
                vec![
                    condition(Dimension::Source, Operator::Is, &["Google"], false),
                    condition(Dimension::Browser, Operator::Matches, &["^saf"], true),
                ],
            ),
            node(
                filter::Kind::NoneOf,
                vec![condition(
                    Dimension::Page,
                    Operator::Contains,
                    &["/blog"],
                    false,
                )],
            ),
        ],
    );
    let pass = |e: &Seen<'_>| {
        let is = |field, want: &str| e.get(field).is_some_and(|v| v == want);
        (is(Field::Dimension(Dimension::Source), "Google")
            || is(Field::Dimension(Dimension::Browser), "Safari"))
            && !e
                .get(Field::Dimension(Dimension::Page))
                .is_some_and(|p| p.contains("/blog"))
    };
    let req = RunReportRequest {
        metrics: metrics.clone(),
        filter: Some(filter.clone()),
        ..request(vec![dimension(Dimension::Page)])
    };
    let pages = [Field::Dimension(Dimension::Page)];
    tenant
        .check_scan(
            client,
            &format!("{id} pages of Google or Safari"),
            req,
            (None, &pages),
            &pass,
        )
        .await?;
    // Two dimensions by day, and the same filter on totals by week.
    let req = RunReportRequest {
        metrics: metrics.clone(),
        filter: Some(filter.clone()),
        ..request(vec![
            dimension(Dimension::Device),
            time(Interval::Day),
            dimension(Dimension::Channel),
        ])
    };
    let two = [
        Field::Dimension(Dimension::Device),
        Field::Dimension(Dimension::Channel),
    ];
    tenant
        .check_scan(
            client,
            &format!("{id} device by channel"),
            req,
            (Some(Grain::Day), &two),
            &pass,
        )
        .await?;
    let req = RunReportRequest {
        metrics: metrics.clone(),
        filter: Some(filter),
        ..request(vec![time(Interval::Week)])
    };
    tenant
        .check_scan(
            client,
            &format!("{id} weekly filtered"),
            req,
            (Some(Grain::Week), &[]),
            &pass,
        )
        .await?;
    // Exit pages of the visits of a visitor on the pro plan.
    let pro = |e: &Seen<'_>| e.get(Field::Property("plan")).is_some_and(|v| v == "pro");
    let req = RunReportRequest {
        metrics: metrics.clone(),
        filter: Some(property_condition("plan", Operator::Is, &["pro"])),
        ..request(vec![dimension(Dimension::ExitPage)])
    };
    let exits = [Field::ExitPage];
    let reply = tenant
        .check_scan(
            client,
            &format!("{id} exit pages of pro"),
            req,
            (None, &exits),
            &pro,
        )
        .await?;
    anyhow::ensure!(
        reply.rows.iter().any(|r| r.values[1].value > 0.0),
        "{id}: no visits on the pro plan"
    );
    // A comparison: last week against the week before, by source, filtered by entry page.
    let req = RunReportRequest {
        date_range: range("2026-11-03", "2026-11-09"),
        comparison: Some(Comparison {
            mode: ComparisonMode::PreviousPeriod as i32,
            date_range: None,
        }),
        metrics: metrics.clone(),
        filter: Some(condition(
            Dimension::EntryPage,
            Operator::IsNot,
            &["/"],
            false,
        )),
        ..request(vec![dimension(Dimension::Source), dimension(Dimension::Os)])
    };
    let entry = |e: &Seen<'_>| {
        e.get(Field::Dimension(Dimension::EntryPage))
            .is_none_or(|p| p != "/")
    };
    let fields = [
        Field::Dimension(Dimension::Source),
        Field::Dimension(Dimension::Os),
    ];
    let reply = tenant
        .check_scan(
            client,
            &format!("{id} sources by OS"),
            req,
            (None, &fields),
            &entry,
        )
        .await?;
    let before = tenant.facts.scan(
        (date("2026-10-27"), date("2026-11-02")),
        None,
        &fields,
        &entry,
    );
    for row in &reply.rows {
        let key = (String::new(), row.dimensions.join("\u{1e}"));
        let want = before.get(&key).copied().unwrap_or_default();
        let got = counts(&row.comparison_values);
        anyhow::ensure!(
            got == want,
            "{id} sources by OS, the week before, {key:?}: {got:?} != {want:?}"
        );
    }
    Ok(())
}

/// Revenue by source: the totals and averages of the signups that carried revenue (in the
/// tenant's currency), summed by hand from the events sent.
async fn revenue(client: &Client, tenant: &Tenant, id: &str) -> anyhow::Result<()> {
    let req = RunReportRequest {
        metrics: vec![
            Metric::TotalRevenue as i32,
            Metric::AverageRevenue as i32,
            Metric::Events as i32,
        ],
        ..request(vec![dimension(Dimension::Source)])
    };
    let reply = client.report(&tenant.read, req).await?;
    let want = tenant.revenue_by_source();
    let mut seen = 0;
    for row in &reply.rows {
        let (total, count) = want.get(&row.dimensions[0]).copied().unwrap_or((0.0, 0));
        let average = if count > 0 { total / count as f64 } else { 0.0 };
        let got = (row.values[0].value, row.values[1].value);
        anyhow::ensure!(
            (got.0 - total).abs() < 1e-6 && (got.1 - average).abs() < 1e-6,
            "{id} revenue of {}: {got:?}, want ({total}, {average})",
            row.dimensions[0]
        );
        seen += usize::from(count > 0);
    }
    anyhow::ensure!(
        seen == want.len() && seen > 0,
        "{id}: sources with revenue {seen}"
    );
    Ok(())
}
