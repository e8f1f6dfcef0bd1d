//! The generated SDKs against a running `beacon standalone`: each SDK's own test, in its own
//! ecosystem's runner (Node's test runner for TypeScript, pytest for Python), sends events with
//! ids through the SDK, resends one batch, and reads the numbers back exactly. Each runs on a
//! fresh tenant of its own. `sdk/generate.sh` installs what they need.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use beacon_proto::admin::v1::KeyKind;
use beacon_tests::process::free_port;
use beacon_tests::{Client, Standalone};

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")
}

/// Runs `program args` in `dir` with `envs`, failing with its output unless it succeeds.
fn run(dir: &Path, program: &str, args: &[&str], envs: &[(&str, String)]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .with_context(|| format!("starting {program} in {}", dir.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("$ {program} {}\n{text}", args.join(" "));
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}):\n{text}",
            args.join(" "),
            output.status
        );
    }
    Ok(())
}

/// A fresh UTC tenant's address, ingest key and read key, as the SDK tests take them.
async fn tenant(
    client: &Client,
    token: &str,
    id: &str,
    url: &str,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let (_, read) = client.create_tenant(token, id, "UTC").await?;
    let ingest = client.create_key(token, id, KeyKind::Ingest).await?;
    let target = url.trim_start_matches("http://").to_owned();
    Ok(vec![
        ("BEACON_URL", url.to_owned()),
        ("BEACON_GRPC_TARGET", target),
        ("BEACON_INGEST_KEY", ingest),
        ("BEACON_READ_KEY", read),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_sdks_send_retry_and_read_back_exactly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let beacon = Standalone::start(&dir.path().join("data"), free_port(), &[])?;
    let ready = beacon.ready.clone();
    let client = Client::connect(&ready.gateway, &ready.admin).await?;
    let sdk = sdk_dir();
    if !sdk.join("typescript/node_modules").is_dir() {
        bail!("sdk/typescript/node_modules is missing: run sdk/generate.sh (CI does)");
    }

    let node = tenant(&client, &ready.admin_token, "sdk-node", &ready.gateway).await?;
    run(&sdk.join("typescript"), "node", &["--test", "test/"], &node)?;

    let python = tenant(&client, &ready.admin_token, "sdk-python", &ready.gateway).await?;
    run(
        &sdk.join("python"),
        "python3",
        &["-m", "pytest", "-q", "-p", "no:cacheprovider"],
        &python,
    )?;
    Ok(())
}
