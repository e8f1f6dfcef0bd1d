//! GeoIP: the client IP becomes a country through a MaxMind database (made here), and is
//! dropped; the country breakdown counts exactly.

use std::time::{Duration, Instant};

use beacon_proto::ingest::v1::Event;
use beacon_proto::insights::v1::Dimension;
use beacon_tests::client::Counts;
use beacon_tests::run::send_acknowledged;
use beacon_tests::traffic::{USER_AGENTS, local_date};
use beacon_tests::{Client, Standalone};
use maxminddb_writer::Database;
use maxminddb_writer::metadata::IpVersion;
use maxminddb_writer::paths::IpAddrWithMask;
use serde_json::json;

fn test_database(path: &std::path::Path) -> anyhow::Result<()> {
    let mut db = Database::default();
    db.metadata.ip_version = IpVersion::V4;
    db.metadata.database_type = "GeoIP2-City".into();
    db.metadata.languages = vec!["en".into()];
    db.metadata.binary_format_major_version = 2;
    for (network, country, city) in [
        ("81.2.69.0/24", "DE", "Berlin"),
        ("216.160.83.0/24", "US", "Milton"),
    ] {
        let record = db.insert_value(json!({
            "country": { "iso_code": country, "names": { "en": country } },
            "city": { "names": { "en": city } },
        }))?;
        db.insert_node(network.parse::<IpAddrWithMask>()?, record);
    }
    let file = std::fs::File::create(path)?;
    db.write_to(std::io::BufWriter::new(file))?;
    Ok(())
}

fn event(n: usize, ip: &str) -> Event {
    Event {
        id: format!("geo-{n}"),
        name: "pageview".into(),
        url: "https://demo.example/".into(),
        user_agent: USER_AGENTS[n % USER_AGENTS.len()].into(),
        client_ip: ip.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_ip_becomes_a_country_and_is_not_stored() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mmdb = dir.path().join("geo.mmdb");
    test_database(&mmdb)?;
    let data = dir.path().join("data");
    let beacon = Standalone::start(&data, 0, &[("BEACON_GEOIP_DB", mmdb.display().to_string())])?;
    let ready = beacon.ready.clone();
    let client = Client::connect(&ready.gateway, &ready.admin).await?;
    let mut events = Vec::new();
    for n in 0..12 {
        events.push(event(n, &format!("81.2.69.{}", 10 + n)));
    }
    for n in 12..19 {
        events.push(event(n, &format!("216.160.83.{}", n)));
    }
    for n in 19..22 {
        events.push(event(n, &format!("192.0.2.{}", n)));
    }
    // Events that state the visitor's address need a server key.
    let key = client
        .create_key(
            &ready.admin_token,
            &ready.tenant,
            beacon_proto::admin::v1::KeyKind::Server,
        )
        .await?;
    send_acknowledged(&client, &key, events, Duration::from_secs(10)).await?;

    let today = local_date(beacon_core::time::now_ms(), "UTC");
    let expected = |visitors: u64| Counts {
        visitors,
        visits: visitors,
        pageviews: visitors,
        events: visitors,
        bounces: visitors,
        duration_ms: 0,
    };
    let want = vec![
        ("DE".to_owned(), expected(12)),
        ("US".to_owned(), expected(7)),
        ("(unknown)".to_owned(), expected(3)),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        seen = client
            .breakdown(&ready.read_key, Dimension::Country, &today, &today)
            .await?;
        if seen == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen, want);

    // No stored file contains any of the client addresses.
    drop(beacon);
    for entry in walk(&data)? {
        let bytes = std::fs::read(&entry)?;
        for needle in ["81.2.69.", "216.160.83.", "192.0.2."] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} contains the client IP prefix {needle}",
                entry.display()
            );
        }
    }
    Ok(())
}

fn walk(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(walk(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}
