//! Adversarial ingest in cluster mode: one tenant floods its partition with long unique
//! non-ASCII values and distinct visitors; the partition keeps flowing, every other tenant's
//! numbers equal the oracle exactly, memory stays bounded, and what cannot be processed is
//! parked where the dead-letter CLI shows it.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use beacon_core::partition::partition_of;
use beacon_proto::ingest::v1::Event;
use beacon_proto::insights::v1::Dimension;
use beacon_proto::pipeline::v1::{EventBatch, LoggedEvent};
use beacon_tests::process::beacon_bin;
use beacon_tests::run::{BATCH, send_acknowledged, wait_exact};
use beacon_tests::traffic::{TenantSpec, Traffic, generate, local_date};
use beacon_tests::{Client, Cluster};
use prost::Message;

/// Partitions of the test cluster (see `Cluster::start_role`).
const PARTITIONS: u32 = 4;
/// Events the attacker sends.
const HOSTILE_EVENTS: usize = 2_000;
/// Events of each well-behaved tenant.
const CALM_EVENTS: usize = 300;
/// Distinct values one (tenant, day, dimension) keeps (the proto's stated cap).
const VALUES_PER_DAY: u64 = 1_000;
/// Longest dimension value, bytes (the proto's stated cap).
const VALUE_BYTES: usize = 256;
/// The stated bound on each role's peak resident memory.
const MAX_RSS: u64 = 1 << 30;
const WAIT: Duration = Duration::from_secs(180);

/// The attacker's events: 2,000-character URLs and referrers of non-ASCII characters, every
/// page, referrer and UTM value unique, every event from its own address.
fn hostile(now_ms: i64) -> Vec<Event> {
    (0..HOSTILE_EVENTS)
        .map(|i| {
            let fill = |n: usize| "ü".repeat(n);
            let url = format!(
                "https://evil.example/{i}{}?utm_source={i}{}&utm_medium={i}{}&utm_campaign={i}{}",
                fill(700),
                fill(380),
                fill(380),
                fill(380)
            );
            let url: String = url.chars().take(2_000).collect();
            let referrer = format!("https://r{i}.spam.example/{}", fill(2_000));
            Event {
                id: format!("evil-{i}"),
                name: "pageview".into(),
                url,
                referrer: referrer.chars().take(2_000).collect(),
                title: String::new(),
                user_agent:
                    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0".into(),
                client_ip: format!("10.{}.{}.{}", 200 + i / 65_536, (i / 256) % 256, i % 256),
                timestamp: Some(prost_types::Timestamp {
                    seconds: (now_ms - 20 * 60_000) / 1000,
                    nanos: 0,
                }),
                props: Default::default(),
                revenue: None,
                engagement: None,
                visitor_id: String::new(),
                non_interactive: false,
            }
        })
        .collect()
}

/// Twelve tenant ids, four of them sharing the attacker's partition.
fn calm_specs(attacker: &str) -> Vec<TenantSpec> {
    let target = partition_of(attacker, PARTITIONS);
    let zones = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York"];
    let (mut same, mut other) = (Vec::new(), Vec::new());
    let mut n = 0;
    while same.len() < 4 || other.len() < 8 {
        let id = format!("calm-{n}");
        n += 1;
        if partition_of(&id, PARTITIONS) == target {
            if same.len() < 4 {
                same.push(id);
            }
        } else if other.len() < 8 {
            other.push(id);
        }
    }
    same.into_iter()
        .chain(other)
        .enumerate()
        .map(|(n, id)| TenantSpec {
            id,
            time_zone: zones[n % zones.len()].into(),
        })
        .collect()
}

/// Runs `beacon deadletters …` against the cluster and parses its JSON.
fn deadletters(cluster: &Cluster, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let output = Command::new(beacon_bin())
        .arg("deadletters")
        .args(["--url", &cluster.admin(), "--token", &cluster.admin_token])
        .args(args)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "beacon deadletters {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// Puts what no ingest would accept straight into the event log: an undecodable message and an
/// event of an unknown time zone (as a buggy or older producer could).
async fn inject_bad_messages(cluster: &Cluster, partition: u32) -> anyhow::Result<()> {
    let client = cluster.nats_client().await?;
    let js = async_nats::jetstream::new(client);
    let subject = format!("events.{partition}");
    js.publish(
        subject.clone(),
        bytes::Bytes::from_static(b"\xff\xff not protobuf"),
    )
    .await?
    .await?;
    let event = LoggedEvent {
        tenant_id: "martian".into(),
        event_id: "m-1".into(),
        name: "pageview".into(),
        timestamp_ms: beacon_core::time::now_ms(),
        url: "https://mars.example/".into(),
        time_zone: "Mars/Olympus".into(),
        ..LoggedEvent::default()
    };
    let batch = EventBatch {
        events: vec![event],
        ..EventBatch::default()
    };
    js.publish(subject, bytes::Bytes::from(batch.encode_to_vec()))
        .await?
        .await?;
    Ok(())
}

/// Polls the attacker's numbers until its pageviews and visits are all there.
async fn wait_for_attacker(client: &Client, read: &str, date: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let want = HOSTILE_EVENTS as u64;
    let mut seen = None;
    while started.elapsed() < WAIT {
        if let Ok(totals) = client.totals(read, date, date).await {
            if (totals.pageviews, totals.visits, totals.events) == (want, want, want) {
                return Ok(());
            }
            seen = Some(totals);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("the attacker's {want} pageviews never all arrived: {seen:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_tenant_cannot_stall_its_partition() -> anyhow::Result<()> {
    let cluster = Cluster::start()?;
    let client = Client::of(&cluster).await?;
    let now = beacon_core::time::now_ms();
    let (evil_ingest, evil_read) = client
        .create_tenant(&cluster.admin_token, "evil", "UTC")
        .await?;
    let mut calm: Vec<(Traffic, String, String)> = Vec::new();
    for (n, spec) in calm_specs("evil").into_iter().enumerate() {
        let (ingest, read) = client
            .create_tenant(&cluster.admin_token, &spec.id, &spec.time_zone)
            .await?;
        calm.push((
            generate(100 + n as u64, &spec, CALM_EVENTS, now),
            ingest,
            read,
        ));
    }

    let attack = async {
        for batch in hostile(now).chunks(100) {
            send_acknowledged(&client, &evil_ingest, batch.to_vec(), WAIT).await?;
        }
        anyhow::Ok(())
    };
    let normal = futures::future::try_join_all(calm.iter().map(|(traffic, ingest, _)| {
        let client = client.clone();
        async move {
            for batch in traffic.events.chunks(BATCH) {
                send_acknowledged(&client, ingest, batch.to_vec(), WAIT).await?;
            }
            anyhow::Ok(())
        }
    }));
    futures::future::try_join(attack, normal).await?;
    inject_bad_messages(&cluster, partition_of("evil", PARTITIONS)).await?;

    for (traffic, _, read) in &calm {
        wait_exact(&client, read, traffic, WAIT)
            .await
            .map_err(|err| anyhow::anyhow!("{err}\n{}", cluster.logs()))?;
    }
    let date = local_date(now - 20 * 60_000, "UTC");
    wait_for_attacker(&client, &evil_read, &date)
        .await
        .map_err(|err| anyhow::anyhow!("{err}\n{}", cluster.logs()))?;

    // Every page is unique: past the cap, the day's new pages count under "(other)".
    let pages = client
        .breakdown(&evil_read, Dimension::Page, &date, &date)
        .await?;
    assert!(pages.iter().all(|(value, _)| value.len() <= VALUE_BYTES));
    let other: BTreeMap<&str, u64> = pages
        .iter()
        .filter(|(value, _)| value == "(other)")
        .map(|(value, counts)| (value.as_str(), counts.pageviews))
        .collect();
    assert_eq!(
        other.get("(other)").copied(),
        Some(HOSTILE_EVENTS as u64 - VALUES_PER_DAY),
        "pages: {} rows",
        pages.len()
    );

    let mut peaks = Vec::new();
    for (role, rss) in cluster.peak_rss() {
        println!("peak RSS of {}: {} MiB", role.name(), rss >> 20);
        peaks.push((role, rss));
    }
    assert_eq!(peaks.len(), 4, "every role is running: {peaks:?}");
    for (role, rss) in peaks {
        assert!(
            rss < MAX_RSS,
            "{} peaked at {} MiB, over the {} MiB bound",
            role.name(),
            rss >> 20,
            MAX_RSS >> 20
        );
    }

    // The dead-letter CLI shows what was parked, shows one letter whole, and drops it.
    let deadline = Instant::now() + WAIT;
    let listed = loop {
        let listed = deadletters(&cluster, &["list"])?;
        let counts = &listed["counts_by_cause"];
        if counts["undecodable_batch"] == 1 && counts["invalid_event"] == 1 {
            break listed;
        }
        anyhow::ensure!(Instant::now() < deadline, "not parked: {listed}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let letters = listed["letters"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no letters in {listed}"))?;
    let invalid = letters
        .iter()
        .find(|l| l["cause"] == "invalid_event")
        .ok_or_else(|| anyhow::anyhow!("no invalid_event in {listed}"))?;
    assert_eq!(invalid["tenant"], "martian");
    let (partition, seq) = (invalid["partition"].to_string(), invalid["seq"].to_string());
    let shown = deadletters(
        &cluster,
        &["show", "--partition", &partition, "--seq", &seq],
    )?;
    assert!(
        shown["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("Mars/Olympus"),
        "{shown}"
    );
    assert!(
        shown["item"].as_str().unwrap_or_default().contains("m-1"),
        "{shown}"
    );
    deadletters(
        &cluster,
        &["drop", "--partition", &partition, "--seq", &seq],
    )?;
    let after = deadletters(&cluster, &["list"])?;
    assert_eq!(
        after["counts_by_cause"]["invalid_event"],
        serde_json::Value::Null
    );
    assert_eq!(after["counts_by_cause"]["undecodable_batch"], 1);
    Ok(())
}
