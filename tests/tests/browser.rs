//! Browser tests in headless Chromium against `beacon standalone`: Beacon's tracker and
//! Plausible's published tracker (npm), each on a page visited by several browser contexts,
//! counted exactly, and the merchant dashboard showing, filtering and exporting a tenant's
//! numbers (`web/test/`, Node's test runner driving Playwright). Screenshots go to
//! `browser-screenshots` under Cargo's scratch folder for integration tests. `scripts/test.sh`
//! installs Chromium and the npm packages.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use beacon_proto::admin::v1::KeyKind;
use beacon_tests::process::free_port;
use beacon_tests::{Client, Standalone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trackers_and_dashboard_in_chromium() -> anyhow::Result<()> {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    if !web.join("node_modules/playwright-core").is_dir() {
        bail!("web/node_modules is missing: run `npm ci` in web/ (scripts/test.sh does)");
    }
    let dir = tempfile::tempdir()?;
    let beacon = Standalone::start(&dir.path().join("data"), free_port(), &[])?;
    let ready = beacon.ready.clone();
    let client = Client::connect(&ready.gateway, &ready.admin).await?;
    let token = &ready.admin_token;

    let (_, read) = client.create_tenant(token, "shop", "UTC").await?;
    let ingest = client.create_key(token, "shop", KeyKind::Ingest).await?;
    client.set_currency(token, "shop", "EUR").await?;
    let (_, plausible_read) = client.create_tenant(token, "plausible-shop", "UTC").await?;
    client.set_currency(token, "plausible-shop", "EUR").await?;
    client
        .set_domains(token, "plausible-shop", &["plausible.example"])
        .await?;

    let (_, dashboard_read) = client.create_tenant(token, "dashboard-shop", "UTC").await?;
    let dashboard_ingest = client
        .create_key(token, "dashboard-shop", KeyKind::Ingest)
        .await?;
    client.set_currency(token, "dashboard-shop", "EUR").await?;
    let signup = beacon_proto::admin::v1::Goal {
        name: "Signup".into(),
        kind: Some(beacon_proto::admin::v1::goal::Kind::EventName(
            "signup".into(),
        )),
    };
    client
        .set_goals(token, "dashboard-shop", vec![signup])
        .await?;

    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    let output = Command::new("node")
        .args(["--test", "--test-concurrency=1", "test/"])
        .current_dir(&web)
        .env("BEACON_URL", &ready.gateway)
        .env("BEACON_INGEST_KEY", ingest)
        .env("BEACON_READ_KEY", read)
        .env("PLAUSIBLE_READ_KEY", plausible_read)
        .env("DASHBOARD_INGEST_KEY", dashboard_ingest)
        .env("DASHBOARD_READ_KEY", dashboard_read)
        .env("BEACON_ADMIN_URL", &ready.admin)
        .env("BEACON_ADMIN_TOKEN", token)
        .env("SCREENSHOTS", &screenshots)
        .output()
        .context("starting node in web/")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{text}\nscreenshots: {}", screenshots.display());
    if !output.status.success() {
        bail!("the browser tests failed ({}):\n{text}", output.status);
    }
    Ok(())
}
