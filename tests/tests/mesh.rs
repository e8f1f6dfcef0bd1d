//! The mesh: a cluster with TLS on every hop (certificates made by the test; nats-server and
//! every internal gRPC port demand a client certificate of the cluster's CA; the gateway finds
//! its ingest replicas through DNS) passes the end-to-end oracle; plaintext clients and
//! clients without a trusted certificate are refused; and one event's trace, exported over
//! OTLP to a collector the test runs, shows spans of the gateway, ingest, aggregator and query.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use beacon_core::auth::with_bearer;
use beacon_core::tls::{ClientAuth, Tls, TlsArgs};
use beacon_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use beacon_proto::ingest::v1::{Event, SendEventsRequest};
use beacon_tests::collector::Collector;
use beacon_tests::run::{send_all, wait_exact};
use beacon_tests::traffic::{TenantSpec, generate};
use beacon_tests::{Client, Cluster, Role};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The W3C trace id the traced call starts.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_hop_is_tls_and_one_trace_follows_an_event_to_the_shard() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let cluster = Cluster::start_mesh(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
    ])?;
    cluster.wait_all_ready(Duration::from_secs(60)).await?;
    let client = Client::of(&cluster).await?;

    // The oracle, through TLS on every hop.
    let now = beacon_core::time::now_ms();
    let mut work = Vec::new();
    for (i, (id, tz)) in [("mesh-utc", "UTC"), ("mesh-kathmandu", "Asia/Kathmandu")]
        .into_iter()
        .enumerate()
    {
        let (ingest, read) = client.create_tenant(&cluster.admin_token, id, tz).await?;
        let spec = TenantSpec {
            id: id.into(),
            time_zone: tz.into(),
        };
        work.push((generate(7 + i as u64, &spec, 2000, now), ingest, read));
    }
    let sends = work.iter().map(|(traffic, ingest, _)| {
        send_all(&client, ingest, traffic, 10, 4, Duration::from_secs(30))
    });
    futures::future::try_join_all(sends).await?;
    for (traffic, _, read) in &work {
        let lag = wait_exact(&client, read, traffic, Duration::from_secs(90))
            .await
            .map_err(|err| anyhow::anyhow!("{err}\n{}", cluster.logs()))?;
        println!(
            "{}: exact over TLS {lag:?} after the last acknowledgement",
            traffic.tenant.id
        );
    }

    refuses_strangers(&cluster).await?;
    one_trace_reaches_the_shard(&cluster, &client, &collector).await
}

/// Plaintext, TLS without a client certificate, and a certificate of another CA are refused at
/// every internal port and at NATS.
async fn refuses_strangers(cluster: &Cluster) -> anyhow::Result<()> {
    let certs = cluster.tls.as_ref().expect("a TLS cluster");
    let args = |cert: Option<(&std::path::Path, &std::path::Path)>| TlsArgs {
        tls_cert: cert.map(|(c, _)| c.to_owned()),
        tls_key: cert.map(|(_, k)| k.to_owned()),
        tls_ca: Some(certs.ca.clone()),
        tls_client_auth: ClientAuth::None,
    };
    let anonymous = Tls::load(&args(None))?;
    let stranger = Tls::load(&args(Some((&certs.stranger_cert, &certs.stranger_key))))?;
    let member = Tls::load(&args(Some((&certs.cert, &certs.key))))?;
    for role in [Role::Ingest, Role::Aggregator, Role::Query] {
        let url = cluster.role_url(role);
        let plain = url.replace("https://localhost", "http://127.0.0.1");
        let plaintext = health(&Tls::default(), &plain).await;
        assert!(plaintext.is_err(), "{role:?} answered a plaintext client");
        let without = health(&anonymous, &url).await;
        assert!(
            without.is_err(),
            "{role:?} answered a client without a certificate"
        );
        let other_ca = health(&stranger, &url).await;
        assert!(
            other_ca.is_err(),
            "{role:?} answered a certificate of another CA"
        );
        health(&member, &url)
            .await
            .map_err(|err| anyhow::anyhow!("{role:?} refused a cluster member: {err}"))?;
        println!(
            "{role:?}: plaintext refused ({}), no certificate refused, another CA refused",
            plaintext.err().unwrap_or_default()
        );
    }
    let nats = beacon_core::backends::connect_nats(&cluster.nats.url()).await;
    assert!(nats.is_err(), "nats-server took a plaintext client");
    Ok(())
}

/// Asks `url`'s gRPC health over `tls`.
async fn health(tls: &Tls, url: &str) -> Result<(), String> {
    let endpoint = tls.endpoint(url, None).map_err(|err| err.to_string())?;
    let channel = endpoint
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|err| format!("{err:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|status| status.to_string())
}

/// Sends one event inside a trace the test starts, and waits until the collector holds spans
/// of that trace from every role, the query role's applying the rollup among them.
async fn one_trace_reaches_the_shard(
    cluster: &Cluster,
    client: &Client,
    collector: &Collector,
) -> anyhow::Result<()> {
    let (ingest, _) = client
        .create_tenant(&cluster.admin_token, "mesh-traced", "UTC")
        .await?;
    let event = Event {
        name: "pageview".into(),
        url: "https://traced.example/".into(),
        user_agent: beacon_tests::traffic::USER_AGENTS[0].into(),
        client_ip: "10.1.2.3".into(),
        id: "traced-event-1".into(),
        ..Default::default()
    };
    let mut request = with_bearer(
        &ingest,
        SendEventsRequest {
            events: vec![event],
        },
    )?;
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-00f067aa0ba902b7-01").parse()?,
    );
    let reply = IngestServiceClient::new(client.channel())
        .send_events(request)
        .await?
        .into_inner();
    assert_eq!(reply.accepted, 1, "{reply:?}");

    let wanted = [
        "beacon-gateway",
        "beacon-ingest",
        "beacon-aggregator",
        "beacon-query",
    ];
    let started = Instant::now();
    loop {
        let spans = collector.trace(TRACE_ID);
        let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
        let applied = spans.iter().any(|s| s.name == "query.apply");
        if applied && wanted.iter().all(|w| services.contains(w)) {
            let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
            let orphans: Vec<_> = spans
                .iter()
                .filter(|s| {
                    s.parent_id != "00f067aa0ba902b7" && !ids.contains(s.parent_id.as_str())
                })
                .collect();
            assert!(
                orphans.is_empty(),
                "spans whose parent is not in the trace: {orphans:#?}"
            );
            for span in &spans {
                println!(
                    "trace {TRACE_ID}: {} {} (parent {})",
                    span.service, span.name, span.parent_id
                );
            }
            println!(
                "one trace: {} spans across {services:?} within {:?}",
                spans.len(),
                started.elapsed()
            );
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            anyhow::bail!(
                "the trace never reached every role: {spans:#?}\n{}",
                cluster.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
