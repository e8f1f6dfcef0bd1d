//! The realtime view end to end in cluster mode: live events of the last 45 minutes, a bot
//! among them; current visitors (last 5 minutes), the per-minute series of the last 30 minutes
//! and the top pages and sources equal what was sent, seconds after it was acknowledged.

use std::time::{Duration, Instant};

use beacon_proto::ingest::v1::Event;
use beacon_proto::insights::v1::{GetRealtimeRequest, GetRealtimeResponse, Metric};
use beacon_tests::sessions::BOT_AGENT;
use beacon_tests::traffic::USER_AGENTS;
use beacon_tests::{Client, Cluster};

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;

/// (visitor, seconds ago, page, referrer)
const SENT: &[(u32, i64, &str, &str)] = &[
    (0, 20, "/live", "https://www.google.com/"),
    (1, 20, "/live", "https://www.google.com/"),
    (2, 25, "/live", "https://www.google.com/"),
    (3, 30, "/live", "https://www.google.com/"),
    (4, 150, "/live", ""),
    (5, 150, "/pricing", ""),
    (6, 600, "/pricing", "https://t.co/x"),
    (7, 1_500, "/old", ""),
    (8, 2_700, "/ancient", ""),
];

fn event(
    n: usize,
    visitor: u32,
    ago_s: i64,
    page: &str,
    referrer: &str,
    now: i64,
    agent: &str,
) -> Event {
    let ms = now - ago_s * SECOND;
    Event {
        id: format!("rt-{n}"),
        name: "pageview".into(),
        url: format!("https://live.example{page}"),
        referrer: referrer.into(),
        user_agent: agent.into(),
        client_ip: format!("10.9.0.{visitor}"),
        timestamp: Some(prost_types::Timestamp {
            seconds: ms / 1000,
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn top(rows: &[beacon_proto::insights::v1::BreakdownRow]) -> Vec<(String, u64)> {
    rows.iter()
        .map(|r| {
            let visitors = r
                .values
                .iter()
                .find(|v| v.metric == Metric::Visitors as i32)
                .map_or(0.0, |v| v.value);
            (r.value.clone(), visitors as u64)
        })
        .collect()
}

fn matches(view: &GetRealtimeResponse) -> bool {
    let pageviews: u64 = view.minutes.iter().map(|m| m.pageviews).sum();
    view.current_visitors == 6
        && view.minutes.len() == 30
        && pageviews == 8
        && top(&view.top_pages)
            == [
                ("/live".to_owned(), 5),
                ("/pricing".to_owned(), 2),
                ("/old".to_owned(), 1),
            ]
        && top(&view.top_sources)
            == [
                ("Google".to_owned(), 4),
                ("Direct / None".to_owned(), 3),
                ("Twitter".to_owned(), 1),
            ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn realtime_shows_the_last_minutes() -> anyhow::Result<()> {
    let cluster = Cluster::start()?;
    let with_logs = |err: anyhow::Error| anyhow::anyhow!("{err}\n{}", cluster.logs());
    let client = Client::of(&cluster).await.map_err(with_logs)?;
    let (server, read) = client
        .create_tenant(&cluster.admin_token, "live", "Asia/Kathmandu")
        .await
        .map_err(with_logs)?;
    let now = beacon_core::time::now_ms();
    let mut events: Vec<Event> = SENT
        .iter()
        .enumerate()
        .map(|(n, (v, ago, page, referrer))| {
            event(n, *v, *ago, page, referrer, now, USER_AGENTS[0])
        })
        .collect();
    events.push(event(99, 9, 20, "/live", "", now, BOT_AGENT));
    let reply = client.send(&server, events).await?;
    anyhow::ensure!(reply.accepted == 10, "accepted {reply:?}");
    let acked = Instant::now();
    let mut view = GetRealtimeResponse::default();
    while acked.elapsed() < Duration::from_secs(30) {
        view = client
            .realtime(&read, GetRealtimeRequest { limit: 3 })
            .await?;
        if matches(&view) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::ensure!(
        matches(&view),
        "realtime view: {view:#?}\n{}",
        cluster.logs()
    );
    println!(
        "realtime view exact {:?} after the acknowledgement",
        acked.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = client
        .realtime(&read, GetRealtimeRequest { limit: 3 })
        .await?;
    anyhow::ensure!(matches(&again), "the view changed: {again:#?}");
    // The last point is the current minute in the tenant's zone (UTC+5:45).
    let last = again
        .minutes
        .last()
        .map(|m| m.label.clone())
        .unwrap_or_default();
    let zone = jiff::tz::TimeZone::get("Asia/Kathmandu")?;
    let after = beacon_core::time::now_ms();
    let local = |ms: i64| -> anyhow::Result<String> {
        Ok(jiff::Timestamp::from_millisecond(ms)?
            .to_zoned_datetime(zone.clone())
            .strftime("%Y-%m-%dT%H:%M")
            .to_string())
    };
    anyhow::ensure!(
        last == local(after)? || last == local(after - MINUTE)?,
        "the last minute {last} is not now in the tenant's zone ({})",
        local(after)?
    );
    Ok(())
}
