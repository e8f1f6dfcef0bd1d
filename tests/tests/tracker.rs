//! Traffic shaped like Plausible's tracker, end to end in cluster mode: one-letter JSON beacons
//! to `POST /api/event` with pageviews, custom events with props and revenue, non-interactive
//! events (`"i": false`), and engagement reports (`sd` scroll depth, `e` engaged
//! milliseconds), some pages reported twice. Event counts leave the engagement reports out,
//! bounces are visits of one interactive event, and scroll depth and time on page equal their
//! definitions (METRICS.md), computed here by hand.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use beacon_proto::admin::v1::KeyKind;
use beacon_proto::insights::v1::{
    Condition, DateRange, Dimension, Filter, Metric, Operator, ReportDimension, ReportSource,
    RunReportRequest, RunReportResponse, filter, report_dimension,
};
use beacon_tests::{Client, Cluster};

const VISITORS: usize = 12;
const SHOP: &str = "https://tracked.example";

/// One beacon as the tracker sends it.
enum Beacon {
    Pageview(&'static str),
    Signup,
    /// A non-interactive event (`"i": false`): counted, but it ends no bounce.
    Autoplay,
    /// Page, deepest scroll (percent), engaged milliseconds.
    Engagement(&'static str, u32, u64),
}

/// What visitor `v` does: a lone pageview (a bounce), a second page read twice, or a signup.
fn visit(v: usize) -> Vec<Beacon> {
    use Beacon::*;
    match v % 3 {
        0 => vec![
            Pageview("/"),
            Autoplay,
            Engagement("/", 20 + v as u32, 1_000 * v as u64 + 500),
        ],
        1 => vec![
            Pageview("/"),
            Engagement("/", 50, 3_000),
            Pageview("/pricing"),
            Engagement("/pricing", 90, 7_000),
            Engagement("/pricing", 100, 1_000),
        ],
        _ => vec![Pageview("/"), Signup, Engagement("/", 70, 2_000)],
    }
}

fn agent(v: usize) -> String {
    format!(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
         Chrome/120.0.{v}.0 Safari/537.36"
    )
}

fn body(beacon: &Beacon) -> serde_json::Value {
    let url = |page: &str| format!("{SHOP}{page}");
    match beacon {
        Beacon::Pageview(page) => serde_json::json!({
            "n": "pageview", "u": url(page), "d": "tracked.example",
            "r": "https://www.google.com/",
        }),
        Beacon::Autoplay => serde_json::json!({
            "n": "autoplay", "u": url("/"), "d": "tracked.example", "i": false,
        }),
        Beacon::Signup => serde_json::json!({
            "n": "signup", "u": url("/"), "d": "tracked.example",
            "p": "{\"plan\":\"pro\"}", "$": {"amount": "29", "currency": "EUR"},
        }),
        Beacon::Engagement(page, sd, e) => serde_json::json!({
            "n": "engagement", "u": url(page), "d": "tracked.example", "sd": sd, "e": e,
        }),
    }
}

/// The expected numbers, by definition.
#[derive(Debug, Default)]
struct Expected {
    pageviews: u64,
    events: u64,
    autoplays: u64,
    bounces: u64,
    signups: u64,
    /// Per page: each visitor's deepest scroll and summed engaged milliseconds.
    engaged: BTreeMap<&'static str, Vec<(u32, u64)>>,
}

fn expected() -> Expected {
    let mut out = Expected::default();
    for v in 0..VISITORS {
        let mut per_page: BTreeMap<&'static str, (u32, u64)> = BTreeMap::new();
        let (mut counted, mut interactive) = (0, 0);
        for beacon in visit(v) {
            match beacon {
                Beacon::Pageview(_) => {
                    out.pageviews += 1;
                    counted += 1;
                    interactive += 1;
                }
                Beacon::Signup => {
                    out.signups += 1;
                    counted += 1;
                    interactive += 1;
                }
                Beacon::Autoplay => {
                    out.autoplays += 1;
                    counted += 1;
                }
                Beacon::Engagement(page, sd, e) => {
                    let entry = per_page.entry(page).or_default();
                    *entry = (entry.0.max(sd), entry.1 + e);
                }
            }
        }
        out.events += counted;
        out.bounces += u64::from(interactive == 1);
        for (page, pair) in per_page {
            out.engaged.entry(page).or_default().push(pair);
        }
    }
    out
}

fn report(metrics: &[Metric], dimension: Option<Dimension>) -> RunReportRequest {
    // Yesterday too, should the test run across midnight.
    let today = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date();
    RunReportRequest {
        date_range: Some(DateRange {
            start_date: today.yesterday().expect("a date").to_string(),
            end_date: today.to_string(),
        }),
        metrics: metrics.iter().map(|m| *m as i32).collect(),
        dimensions: dimension
            .map(|d| ReportDimension {
                kind: Some(report_dimension::Kind::Dimension(d as i32)),
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

fn values(reply: &RunReportResponse) -> BTreeMap<String, Vec<f64>> {
    reply
        .rows
        .iter()
        .map(|r| {
            (
                r.dimensions.first().cloned().unwrap_or_default(),
                r.values.iter().map(|v| v.value).collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plausible_shaped_traffic_counts_by_definition() -> anyhow::Result<()> {
    let cluster = Cluster::start()?;
    // Beacons are sent once: ingest must be up before the first (the admin calls retry).
    cluster.wait_all_ready(Duration::from_secs(60)).await?;
    let client = Client::of(&cluster).await?;
    let (_, read) = client
        .create_tenant(&cluster.admin_token, "tracked", "UTC")
        .await?;
    client
        .set_currency(&cluster.admin_token, "tracked", "EUR")
        .await?;
    let key = client
        .create_key(&cluster.admin_token, "tracked", KeyKind::Ingest)
        .await?;
    for v in 0..VISITORS {
        for beacon in visit(v) {
            let agent = agent(v);
            let (status, text) = client
                .beacon(
                    Some(&key),
                    body(&beacon).to_string().into_bytes(),
                    &[("user-agent", agent.as_str())],
                )
                .await?;
            anyhow::ensure!(status == 202, "beacon refused: {status} {text}");
        }
    }
    let want = expected();
    let totals = [
        Metric::Visitors,
        Metric::Visits,
        Metric::Pageviews,
        Metric::Events,
        Metric::BounceRate,
        Metric::TotalRevenue,
    ];
    let visits = VISITORS as f64;
    let wanted = vec![
        visits,
        visits,
        want.pageviews as f64,
        want.events as f64,
        100.0 * want.bounces as f64 / visits,
        29.0 * want.signups as f64,
    ];
    // The numbers must reach the definition and stay there.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stable_since: Option<Instant> = None;
    let got = loop {
        let reply = client.report(&read, report(&totals, None)).await;
        let got = reply.map(|r| values(&r).remove("").unwrap_or_default());
        match &got {
            Ok(got) if *got == wanted => {
                let since = *stable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_secs(3) {
                    break got.clone();
                }
            }
            _ => stable_since = None,
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "totals {got:?} never held {wanted:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("totals (visitors, visits, pageviews, events, bounce rate, revenue): {got:?}");

    // Engagement reports are not events: the names are pageviews, autoplays and signups only.
    let names = client
        .report(&read, report(&[Metric::Events], Some(Dimension::EventName)))
        .await?;
    assert_eq!(names.source, ReportSource::Rollups as i32);
    assert_eq!(
        values(&names),
        BTreeMap::from([
            ("autoplay".to_owned(), vec![want.autoplays as f64]),
            ("pageview".to_owned(), vec![want.pageviews as f64]),
            ("signup".to_owned(), vec![want.signups as f64]),
        ])
    );

    // The event store agrees on bounces: every visit (all in Chrome) has an event on /.
    let chrome = Condition {
        dimension: Dimension::Browser as i32,
        operator: Operator::Is as i32,
        values: vec!["Chrome".into()],
        ..Default::default()
    };
    let home = client
        .report(
            &read,
            RunReportRequest {
                filter: Some(Filter {
                    kind: Some(filter::Kind::Condition(chrome)),
                }),
                ..report(&[Metric::Visits, Metric::BounceRate], Some(Dimension::Page))
            },
        )
        .await?;
    assert_eq!(home.source, ReportSource::Events as i32);
    assert_eq!(values(&home)["/"], [visits, wanted[4]]);

    // Scroll depth and time on page: per page, the mean over visitors of their deepest scroll
    // and of their summed engaged time.
    let pages = client
        .report(
            &read,
            report(
                &[Metric::ScrollDepth, Metric::TimeOnPage, Metric::Pageviews],
                Some(Dimension::Page),
            ),
        )
        .await?;
    assert_eq!(pages.source, ReportSource::Events as i32);
    let got = values(&pages);
    for (page, pairs) in &want.engaged {
        let n = pairs.len() as f64;
        let depth = pairs.iter().map(|p| f64::from(p.0)).sum::<f64>() / n;
        let seconds = pairs.iter().map(|p| p.1 as f64).sum::<f64>() / 1000.0 / n;
        let row = &got[*page];
        assert!(
            (row[0] - depth).abs() < 1e-9 && (row[1] - seconds).abs() < 1e-9,
            "{page}: scroll depth and time on page {row:?}, want {depth} and {seconds}"
        );
        println!("{page}: scroll depth {depth:.2} %, time on page {seconds:.3} s");
    }
    assert_eq!(got.len(), want.engaged.len());

    // Revenue and props of the signups.
    let plans = client
        .report(
            &read,
            RunReportRequest {
                dimensions: vec![ReportDimension {
                    kind: Some(report_dimension::Kind::Property("plan".into())),
                }],
                ..report(&[Metric::Events, Metric::TotalRevenue], None)
            },
        )
        .await?;
    assert_eq!(
        values(&plans),
        BTreeMap::from([(
            "pro".to_owned(),
            vec![want.signups as f64, 29.0 * want.signups as f64]
        )])
    );
    Ok(())
}

/// A site switches from Plausible by changing only the tracker's endpoint: beacons without a
/// key, as `text/plain`, name their sites in `domain`; a comma-separated list sends to each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyless_beacons_count_for_the_sites_they_name() -> anyhow::Result<()> {
    let cluster = Cluster::start()?;
    // Beacons are sent once: ingest must be up before the first (the admin calls retry).
    cluster.wait_all_ready(Duration::from_secs(60)).await?;
    let client = Client::of(&cluster).await?;
    let mut reads = Vec::new();
    for (tenant, domain) in [("site-a", "a.example"), ("site-b", "B.Example")] {
        let (_, read) = client
            .create_tenant(&cluster.admin_token, tenant, "UTC")
            .await?;
        let stored = client
            .set_domains(&cluster.admin_token, tenant, &[domain])
            .await?;
        assert_eq!(stored, [domain.to_ascii_lowercase()]);
        reads.push(read);
    }
    // A domain belongs to one tenant.
    let taken = client
        .set_domains(&cluster.admin_token, "site-b", &["a.example"])
        .await
        .expect_err("taken");
    assert!(taken.message().contains("site-a"), "{taken:?}");
    let beacon = |name: &str, domain: &str| {
        serde_json::json!({"n": name, "u": "https://a.example/", "d": domain}).to_string()
    };
    let send = |body: String, agent: String| {
        let client = &client;
        async move {
            let headers = [
                ("user-agent", agent.as_str()),
                ("content-type", "text/plain"),
            ];
            client.beacon(None, body.into_bytes(), &headers).await
        }
    };
    // Visitor 1 on both sites at once, visitor 2 on site a with a signup.
    let sent = [
        (beacon("pageview", "a.example,b.example"), agent(1)),
        (beacon("pageview", "a.example"), agent(2)),
        (beacon("signup", "a.example"), agent(2)),
    ];
    for (body, agent) in sent {
        let (status, text) = send(body, agent).await?;
        anyhow::ensure!(status == 202 && text == "ok", "refused: {status} {text}");
    }
    let (status, text) = send(beacon("pageview", "unknown.example"), agent(3)).await?;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("unknown.example"), "{text}");
    // Site a: 2 visitors, 2 pageviews, 3 events; site b: 1 visitor, 1 pageview.
    let totals = [Metric::Visitors, Metric::Pageviews, Metric::Events];
    for (read, want) in reads.iter().zip([[2.0, 2.0, 3.0], [1.0, 1.0, 1.0]]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = client
                .report(read, report(&totals, None))
                .await
                .map(|r| values(&r).remove("").unwrap_or_default());
            if got.as_deref().ok() == Some(&want[..]) {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "{got:?} never reached {want:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
