//! The query role end to end: rollup log in, authenticated gRPC answers out.

use std::time::{Duration, Instant};

use beacon_core::backends::{BackendArgs, Backends};
use beacon_core::partition::partition_of;
use beacon_proto::insights::v1::insights_service_client::InsightsServiceClient;
use beacon_proto::insights::v1::{DateRange, Dimension, GetAggregateRequest, Metric};
use beacon_proto::pipeline::v1::RollupBatch;
use prost::Message;
use prost::bytes::Bytes;
use tonic::Code;
use tonic::transport::Channel;

use super::*;
use crate::testing::{TempDir, hit, rollup};

fn request(key: Option<&str>) -> tonic::Request<GetAggregateRequest> {
    let mut request = tonic::Request::new(GetAggregateRequest {
        date_range: Some(DateRange {
            start_date: "2026-03-01".into(),
            end_date: "2026-03-01".into(),
        }),
        metrics: vec![Metric::Pageviews as i32],
    });
    if let Some(key) = key {
        let value = format!("Bearer {key}").parse().expect("metadata value");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

async fn pageviews(client: &mut InsightsServiceClient<Channel>, key: &str) -> f64 {
    try_pageviews(client, key).await.expect("aggregate")
}

async fn try_pageviews(
    client: &mut InsightsServiceClient<Channel>,
    key: &str,
) -> Result<f64, tonic::Status> {
    let reply = client.get_aggregate(request(Some(key))).await?;
    Ok(reply.into_inner().values[0].value)
}

#[tokio::test]
async fn serves_applied_rollups_to_the_key_holder_only() {
    let dir = TempDir::new("e2e");
    let backend_args = BackendArgs {
        data_dir: dir.path().to_owned(),
        nats_url: None,
        partitions: Some(2),
        nats_replicas: 1,
        event_log_max_bytes: None,
        store_cache: 64 << 20,
        stall_after: beacon_core::observe::DEFAULT_STALL_AFTER,
        raw_store: None,
        cassandra: beacon_core::backends::CassandraArgs::default(),
        tls: Default::default(),
    };
    let backends = Backends::open(&backend_args).await.expect("backends");
    let registry = Registry::new(backends.tenants.clone());
    let (tenant, ingest_key, read_key) = registry
        .create_tenant("acme", "Acme", "UTC")
        .await
        .expect("tenant");
    let partition = partition_of(&tenant.id, 2);
    let id_in = |wanted: u32| {
        (0..)
            .map(|i| format!("other{i}"))
            .find(|id| (partition_of(id, 2) == partition) == (wanted == partition))
            .expect("a tenant id")
    };
    let (_, _, other_key) = registry
        .create_tenant(&id_in(partition), "Other", "UTC")
        .await
        .expect("tenant");
    let (_, _, far_key) = registry
        .create_tenant(&id_in(1 - partition), "Far", "UTC")
        .await
        .expect("tenant");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let args = QueryArgs {
        listen: addr,
        shard_memory: 64_000_000,
        result_cache: 64 << 20,
        settled_cache: 64 << 20,
        own_partitions: vec![partition],
        max_serve_lag: Duration::from_secs(15),
        replica_id: None,
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(run(args, backends.clone(), listener, shutdown.clone()));

    let tenants = vec![rollup(
        &tenant.id,
        vec![hit(
            "2026-03-01T12:00:00Z",
            "UTC",
            Dimension::Unspecified,
            "",
            1,
        )],
    )];
    let payload = RollupBatch {
        partition,
        tenants,
        ..Default::default()
    }
    .encode_to_vec();
    backends
        .rollups
        .append(partition, "r1", Bytes::from(payload))
        .await
        .expect("append rollup");

    let mut client = connect(addr).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    // Unavailable until the replica has read the rollup log's end.
    while try_pageviews(&mut client, &read_key).await.unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "rollup never became visible");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pageviews(&mut client, &other_key).await, 0.0);
    let status = client
        .get_aggregate(request(Some(&far_key)))
        .await
        .expect_err("a partition this replica does not hold");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("does not hold the partition"),
        "{}",
        status.message()
    );

    let status = client
        .get_aggregate(request(None))
        .await
        .expect_err("no key");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = client
        .get_aggregate(request(Some(&ingest_key)))
        .await
        .expect_err("ingest key");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = client
        .get_aggregate(request(Some("bk_read_unknown")))
        .await
        .expect_err("unknown key");
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut invalid = request(Some(&read_key));
    invalid.get_mut().date_range = None;
    let status = client.get_aggregate(invalid).await.expect_err("no range");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("date_range is required"),
        "{}",
        status.message()
    );

    shutdown.cancel();
    server.await.expect("server task").expect("server result");
    let store =
        crate::DuckShardStore::new(dir.path().join("shards"), 2, 64_000_000).expect("store");
    assert_eq!(
        store.watermark(partition).await.expect("watermark"),
        Some(1),
        "the shard records what it applied"
    );
}

async fn connect(addr: std::net::SocketAddr) -> InsightsServiceClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match InsightsServiceClient::connect(format!("http://{addr}")).await {
            Ok(client) => return client,
            Err(err) => {
                assert!(Instant::now() < deadline, "cannot connect: {err}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
