//! The ingest baseline: bare JetStream async publish of the same events, one message each,
//! with async-nats against a fresh nats-server, thousands in flight.

use std::time::Instant;

use async_nats::jetstream::{self, stream};
use beacon_testkit::NatsServer;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prost::Message;

use crate::Plan;
use crate::traffic::{TrafficConfig, TrafficModel};

/// Publishes in flight at once.
const IN_FLIGHT: usize = 4096;

/// What the baseline measured.
pub struct Baseline {
    /// Events (messages) per second acknowledged by JetStream.
    pub events_per_s: f64,
    /// CPU seconds of nats-server per million events stored.
    pub nats_cpu_per_million: f64,
}

/// Publishes `plan.events` encoded events and returns the acknowledged rate.
pub async fn jetstream_publish(plan: &Plan) -> anyhow::Result<Baseline> {
    let nats = NatsServer::start()?;
    let client = beacon_core::backends::connect_nats(&nats.url()).await?;
    let js = jetstream::new(client);
    js.get_or_create_stream(stream::Config {
        name: "BENCH".into(),
        subjects: vec!["bench.*".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let mut model = TrafficModel::new(TrafficConfig {
        seed: plan.seed,
        tenants: plan.tenants,
        zipf_exponent: 1.1,
    });
    let now = beacon_core::time::now_ms();
    let payloads: Vec<(String, bytes::Bytes)> = (0..plan.events)
        .map(|_| {
            let (tenant, event) = model.next_event(now);
            (
                format!("bench.{}", tenant % 8),
                event.encode_to_vec().into(),
            )
        })
        .collect();
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for (subject, payload) in payloads {
        if in_flight.len() >= IN_FLIGHT
            && let Some(ack) = in_flight.next().await
        {
            ack?;
        }
        in_flight.push(js.publish(subject, payload).await?.into_future());
    }
    while let Some(ack) = in_flight.next().await {
        ack?;
    }
    let elapsed = started.elapsed();
    Ok(Baseline {
        events_per_s: plan.events as f64 / elapsed.as_secs_f64(),
        nats_cpu_per_million: nats
            .pid()
            .and_then(crate::procs::cpu_seconds)
            .unwrap_or(0.0)
            * 1e6
            / plan.events.max(1) as f64,
    })
}
