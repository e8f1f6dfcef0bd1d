//! `beacon import FILE`: loads history (NDJSON) through the gateway's `ImportEvents`, for users
//! moving from another tool.
//!
//! Each line is one event, either a Plausible Events API body (`name`, `url`, `referrer`,
//! `props`, `revenue`, with `timestamp`, `user_agent` and `ip` standing in for the headers) or
//! the proto's JSON form of `Event` (`userAgent`, `clientIp`, RFC 3339 `timestamp`, props as
//! `{"stringValue": …}`). A line without an id gets one derived from its content, so importing a
//! file again counts every event once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use beacon_core::auth::with_bearer;
use beacon_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use beacon_proto::ingest::v1::{
    Engagement, Event, EventStatus, ImportEventsRequest, PropValue, Revenue, prop_value,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tonic::transport::Channel;

/// Events per call (the API's limit).
const BATCH: usize = 1000;
/// Attempts per batch while the gateway is unavailable.
const ATTEMPTS: u32 = 10;

/// `beacon import` flags.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// NDJSON file of events.
    file: PathBuf,
    /// Gateway URL.
    #[arg(long, env = "BEACON_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Server key of the tenant (imports need a secret key).
    #[arg(long, env = "BEACON_SERVER_KEY", hide_env_values = true)]
    key: String,
}

/// Imports the file; prints what was accepted and rejected, and fails when a line or an event
/// was refused.
pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let file = tokio::fs::File::open(&args.file)
        .await
        .with_context(|| format!("opening {}", args.file.display()))?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let channel = Channel::from_shared(args.url.clone())
        .with_context(|| format!("gateway URL {:?}", args.url))?
        .connect()
        .await
        .with_context(|| format!("connecting to the gateway at {}", args.url))?;
    let mut client = IngestServiceClient::new(channel);
    let bar = ProgressBar::new(size).with_style(
        ProgressStyle::with_template("[{bar:30}] {bytes}/{total_bytes} {msg} ETA {eta}")?
            .progress_chars("=> "),
    );
    let mut lines = tokio::io::BufReader::new(file).lines();
    let (mut batch, mut report) = (Vec::with_capacity(BATCH), Report::default());
    let mut number = 0usize;
    while let Some(line) = lines.next_line().await? {
        number += 1;
        bar.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(event) => batch.push(event),
            Err(err) => report.refused(format!("line {number}: {err}")),
        }
        if batch.len() == BATCH {
            send(
                &mut client,
                &args.key,
                std::mem::take(&mut batch),
                &mut report,
            )
            .await?;
            bar.set_message(format!("{} accepted", report.accepted));
        }
    }
    if !batch.is_empty() {
        send(&mut client, &args.key, batch, &mut report).await?;
    }
    bar.finish_and_clear();
    println!(
        "{}",
        serde_json::json!({
            "accepted": report.accepted,
            "rejected": report.rejected,
            "errors": report.errors,
        })
    );
    if report.rejected > 0 {
        bail!("{} lines or events were refused", report.rejected);
    }
    Ok(())
}

/// What an import did.
#[derive(Debug, Default)]
struct Report {
    accepted: u64,
    rejected: u64,
    /// The first errors (at most 20).
    errors: Vec<String>,
}

impl Report {
    fn refused(&mut self, error: String) {
        self.rejected += 1;
        if self.errors.len() < 20 {
            self.errors.push(error);
        }
    }
}

/// Sends one batch, again while the gateway is unavailable (ids make a resent event count once).
async fn send(
    client: &mut IngestServiceClient<Channel>,
    key: &str,
    batch: Vec<Event>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut attempt = 0;
    let reply = loop {
        attempt += 1;
        let request = with_bearer(
            key,
            ImportEventsRequest {
                events: batch.clone(),
            },
        )?;
        match client.import_events(request).await {
            Ok(reply) => break reply.into_inner(),
            Err(status)
                if attempt < ATTEMPTS
                    && matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                    ) =>
            {
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
            }
            Err(status) => bail!("importing a batch: {status}"),
        }
    };
    for result in reply.results {
        if result.status == EventStatus::Accepted as i32 {
            report.accepted += 1;
        } else {
            report.refused(format!("event {:?}: {}", result.id, result.error));
        }
    }
    Ok(())
}

/// One NDJSON line as an event.
fn parse_line(line: &str) -> anyhow::Result<Event> {
    let value: Value = serde_json::from_str(line).context("not a JSON object")?;
    let Value::Object(map) = &value else {
        bail!("not a JSON object");
    };
    let text = |keys: &[&str]| -> String {
        keys.iter()
            .find_map(|k| map.get(*k).and_then(Value::as_str))
            .unwrap_or_default()
            .to_owned()
    };
    let number = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| map.get(*k).and_then(Value::as_u64))
            .unwrap_or_default()
    };
    let name = text(&["name", "n"]);
    let engagement = (name == "engagement").then(|| Engagement {
        // Out of range becomes u32::MAX, which ingest refuses naming the field.
        scroll_depth: u32::try_from(number(&["scroll_depth", "sd"])).unwrap_or(u32::MAX),
        engaged_ms: number(&["engaged_ms", "e"]),
    });
    let mut event = Event {
        id: text(&["id"]),
        name,
        url: text(&["url", "u"]),
        referrer: text(&["referrer", "r"]),
        title: text(&["title"]),
        user_agent: text(&["user_agent", "userAgent"]),
        client_ip: text(&["client_ip", "clientIp", "ip"]),
        timestamp: Some(timestamp(map.get("timestamp"))?),
        props: props(map.get("props").or_else(|| map.get("p")))?,
        revenue: revenue(map.get("revenue"))?,
        engagement,
        visitor_id: text(&["visitor_id", "visitorId"]),
        non_interactive: map.get("interactive").and_then(serde_json::Value::as_bool) == Some(false),
    };
    if event.id.is_empty() {
        let hash = blake3::hash(line.trim().as_bytes());
        event.id = format!("import-{}", &hash.to_hex()[..32]);
    }
    Ok(event)
}

/// An RFC 3339 string or Unix milliseconds.
fn timestamp(value: Option<&Value>) -> anyhow::Result<prost_types::Timestamp> {
    let ms = match value {
        Some(Value::String(text)) => text
            .parse::<jiff::Timestamp>()
            .with_context(|| format!("timestamp {text:?} is not an RFC 3339 instant"))?
            .as_millisecond(),
        Some(Value::Number(n)) => n
            .as_i64()
            .with_context(|| format!("timestamp {n} is not whole Unix milliseconds"))?,
        _ => bail!("timestamp: required (RFC 3339 or Unix milliseconds)"),
    };
    Ok(prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

/// Props as plain values or as the proto's `{"stringValue": …}` / `{"numberValue": …}`.
fn props(value: Option<&Value>) -> anyhow::Result<HashMap<String, PropValue>> {
    let Some(value) = value else {
        return Ok(HashMap::new());
    };
    let Value::Object(map) = value else {
        bail!("props: an object of strings and numbers");
    };
    map.iter()
        .map(|(key, value)| {
            let value = match value {
                Value::Object(inner) => inner
                    .get("stringValue")
                    .or_else(|| inner.get("numberValue"))
                    .cloned()
                    .unwrap_or(Value::Null),
                other => other.clone(),
            };
            let kind = match value {
                Value::String(s) => prop_value::Kind::StringValue(s),
                Value::Number(n) => prop_value::Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
                Value::Bool(b) => prop_value::Kind::StringValue(b.to_string()),
                other => bail!("props[{key:?}]: {other} is not a string or a number"),
            };
            Ok((key.clone(), PropValue { kind: Some(kind) }))
        })
        .collect()
}

/// `{"amount": 12.5 | "12.50", "currency": "EUR"}`.
fn revenue(value: Option<&Value>) -> anyhow::Result<Option<Revenue>> {
    let Some(Value::Object(map)) = value else {
        return Ok(None);
    };
    let amount = match map.get("amount") {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => s
            .parse()
            .with_context(|| format!("revenue.amount {s:?} is not a number"))?,
        _ => bail!("revenue.amount: required"),
    };
    let currency = map
        .get("currency")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok(Some(Revenue { amount, currency }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plausible_bodies_and_the_proto_json_form() {
        let plausible = r#"{"name":"pageview","url":"https://a.example/x","domain":"a.example","referrer":"https://google.com/","props":{"plan":"pro","seats":3},"revenue":{"amount":"12.50","currency":"EUR"},"timestamp":"2025-01-02T03:04:05Z","user_agent":"UA","ip":"10.0.0.1"}"#;
        let event = parse_line(plausible).expect("plausible");
        assert_eq!(event.name, "pageview");
        assert_eq!(
            (event.user_agent.as_str(), event.client_ip.as_str()),
            ("UA", "10.0.0.1")
        );
        assert_eq!(event.timestamp.map(|t| t.seconds), Some(1_735_787_045));
        assert_eq!(event.props.len(), 2);
        assert_eq!(event.revenue.map(|r| r.amount), Some(12.5));
        assert!(event.id.starts_with("import-"), "derived id");
        assert_eq!(parse_line(plausible).expect("again").id, event.id, "stable");

        let proto = r#"{"id":"e1","name":"signup","url":"https://a.example/","userAgent":"UA","clientIp":"10.0.0.2","timestamp":1735787045123,"props":{"plan":{"stringValue":"pro"}}}"#;
        let event = parse_line(proto).expect("proto");
        assert_eq!(
            (event.id.as_str(), event.client_ip.as_str()),
            ("e1", "10.0.0.2")
        );
        assert_eq!(event.timestamp.map(|t| t.nanos), Some(123_000_000));

        let err = parse_line(r#"{"name":"pageview","url":"https://a.example/"}"#)
            .expect_err("no timestamp");
        assert!(err.to_string().contains("timestamp"), "{err}");
    }
}
