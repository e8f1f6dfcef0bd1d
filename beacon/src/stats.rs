//! `beacon stats`: reads a tenant's insights through the gateway with a read key, as JSON.

use anyhow::Context;
use beacon_core::auth::with_bearer;
use beacon_proto::insights::v1::insights_service_client::InsightsServiceClient;
use beacon_proto::insights::v1::{
    DateRange, Dimension, GetAggregateRequest, GetBreakdownRequest, GetTimeseriesRequest, Interval,
    MetricValue,
};
use serde_json::{Map, Value, json};
use tonic::transport::Channel;

/// `beacon stats` flags.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Gateway URL.
    #[arg(long, env = "BEACON_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Read key of the tenant.
    #[arg(long, env = "BEACON_READ_KEY", hide_env_values = true)]
    key: String,
    /// First local date, YYYY-MM-DD (default: today in UTC).
    #[arg(long)]
    from: Option<String>,
    /// Last local date, YYYY-MM-DD, inclusive (default: --from).
    #[arg(long)]
    to: Option<String>,
    /// Also print a time series with this interval: hour or day.
    #[arg(long, value_parser = ["hour", "day"])]
    interval: Option<String>,
    /// Also print the top values of a dimension: page, entry_page, source, country, device,
    /// browser, os, channel, utm_source, utm_medium or utm_campaign.
    #[arg(long)]
    breakdown: Option<String>,
}

fn metrics(values: &[MetricValue]) -> Value {
    let mut map = Map::new();
    for value in values {
        let name = beacon_proto::insights::v1::Metric::try_from(value.metric)
            .map(|m| m.as_str_name().trim_start_matches("METRIC_").to_lowercase())
            .unwrap_or_else(|_| value.metric.to_string());
        map.insert(name, json!(value.value));
    }
    Value::Object(map)
}

/// Prints totals, and optionally a time series and a breakdown.
pub async fn run(args: StatsArgs) -> anyhow::Result<()> {
    let today = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date()
        .to_string();
    let from = args.from.clone().unwrap_or(today);
    let to = args.to.clone().unwrap_or_else(|| from.clone());
    let range = Some(DateRange {
        start_date: from,
        end_date: to,
    });
    let channel = Channel::from_shared(args.url.clone())
        .with_context(|| format!("gateway URL {:?}", args.url))?
        .connect()
        .await
        .with_context(|| format!("connecting to the gateway at {}", args.url))?;
    let mut client = InsightsServiceClient::new(channel);
    let totals = client
        .get_aggregate(with_bearer(
            &args.key,
            GetAggregateRequest {
                date_range: range.clone(),
                metrics: vec![],
            },
        )?)
        .await?
        .into_inner();
    let mut out = json!({ "totals": metrics(&totals.values), "bot_events": totals.bot_events });
    if let Some(interval) = &args.interval {
        let interval = if interval == "hour" {
            Interval::Hour
        } else {
            Interval::Day
        };
        let series = client
            .get_timeseries(with_bearer(
                &args.key,
                GetTimeseriesRequest {
                    date_range: range.clone(),
                    interval: interval as i32,
                    metrics: vec![],
                },
            )?)
            .await?
            .into_inner();
        out["timeseries"] = series
            .points
            .iter()
            .map(|p| json!({ "label": p.label, "metrics": metrics(&p.values) }))
            .collect();
    }
    if let Some(name) = &args.breakdown {
        let dimension = Dimension::from_str_name(&format!("DIMENSION_{}", name.to_uppercase()))
            .with_context(|| format!("unknown dimension {name:?}"))?;
        let rows = client
            .get_breakdown(with_bearer(
                &args.key,
                GetBreakdownRequest {
                    date_range: range,
                    dimension: dimension as i32,
                    metrics: vec![],
                    limit: 10,
                },
            )?)
            .await?
            .into_inner();
        out["breakdown"] = rows
            .rows
            .iter()
            .map(|r| json!({ "value": r.value, "metrics": metrics(&r.values) }))
            .collect();
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
