//! Bad input: each limit gets a clear error naming the field and the limit, and the events
//! accepted before and after are all counted.

use std::time::Duration;

use beacon_proto::admin::v1::KeyKind;
use beacon_proto::ingest::v1::Event;
use beacon_tests::run::{send_acknowledged, wait_exact};
use beacon_tests::traffic::{TenantSpec, generate};
use beacon_tests::{Client, Standalone};
use tonic::Code;

fn event(name: &str) -> Event {
    Event {
        name: name.into(),
        url: "https://demo.example/".into(),
        user_agent: beacon_tests::traffic::USER_AGENTS[0].into(),
        client_ip: "10.9.9.9".into(),
        ..Default::default()
    }
}

async fn rejected_with(client: &Client, key: &str, event: Event, expected: &str) {
    let reply = client
        .send(key, vec![event])
        .await
        .expect("the call itself succeeds");
    assert_eq!(reply.accepted, 0);
    let error = &reply.results[0].error;
    assert!(
        error.contains(expected),
        "{error:?} should contain {expected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_limit_has_a_clear_error_and_nothing_accepted_is_lost() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let beacon = Standalone::start(&dir.path().join("data"), 0, &[])?;
    let ready = beacon.ready.clone();
    let client = Client::connect(&ready.gateway, &ready.admin).await?;
    let spec = TenantSpec {
        id: ready.tenant.clone(),
        time_zone: "UTC".into(),
    };
    let traffic = generate(3, &spec, 400, beacon_core::time::now_ms());
    let (before, after) = traffic.events.split_at(200);
    // The traffic states each visitor's address, which only a server key may do.
    let server_key = client
        .create_key(&ready.admin_token, &ready.tenant, KeyKind::Server)
        .await?;
    send_acknowledged(
        &client,
        &server_key,
        before.to_vec(),
        Duration::from_secs(10),
    )
    .await?;

    let key = server_key.as_str();
    let long = |n: usize| "x".repeat(n);
    rejected_with(
        &client,
        key,
        event(&long(121)),
        "name: 121 characters, the limit is 120",
    )
    .await;
    let mut e = event("pageview");
    e.url = format!("https://demo.example/{}", long(2000));
    rejected_with(&client, key, e, "the limit is 2000").await;
    let mut e = event("pageview");
    e.referrer = long(2001);
    rejected_with(
        &client,
        key,
        e,
        "referrer: 2001 characters, the limit is 2000",
    )
    .await;
    let mut e = event("pageview");
    for i in 0..31 {
        e.props.insert(format!("k{i}"), Default::default());
    }
    rejected_with(&client, key, e, "props: 31 properties, the limit is 30").await;
    let mut e = event("pageview");
    e.timestamp = Some(prost_types::Timestamp {
        seconds: beacon_core::time::now_ms() / 1000 - 73 * 3600,
        nanos: 0,
    });
    rejected_with(&client, key, e, "more than 72 hours old").await;
    let mut e = event("pageview");
    e.timestamp = Some(prost_types::Timestamp {
        seconds: beacon_core::time::now_ms() / 1000 + 600,
        nanos: 0,
    });
    rejected_with(&client, key, e, "more than 5 minutes in the future").await;

    let too_many = client
        .send(key, vec![event("pageview"); 1001])
        .await
        .expect_err("too many");
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert!(
        too_many.message().contains("the limit is 1000"),
        "{}",
        too_many.message()
    );

    let mut huge = event("pageview");
    huge.title = long(1900);
    let oversized = client
        .send(key, vec![huge; 600])
        .await
        .expect_err("over 1 MiB");
    assert!(
        oversized.message().contains("1048576"),
        "{:?}: {}",
        oversized.code(),
        oversized.message()
    );

    let unknown = client
        .send("bk_ingest_nope", vec![event("pageview")])
        .await
        .expect_err("unknown key");
    assert_eq!(unknown.code(), Code::Unauthenticated);
    let wrong_kind = client
        .send(&ready.read_key, vec![event("pageview")])
        .await
        .expect_err("read key");
    assert_eq!(wrong_kind.code(), Code::PermissionDenied);
    let read_with_ingest = client
        .totals(key, "2026-01-01", "2026-01-02")
        .await
        .expect_err("ingest key");
    assert_eq!(read_with_ingest.code(), Code::PermissionDenied);

    let (status, body) = client.beacon(Some(key), b"{not json".to_vec(), &[]).await?;
    assert_eq!(status, 400);
    assert!(body.contains("malformed JSON"), "{body}");
    let big = format!(
        r#"{{"name":"pageview","url":"https://demo.example/","props":{{"a":"{}"}}}}"#,
        long(1_100_000)
    );
    let (status, body) = client.beacon(Some(key), big.into_bytes(), &[]).await?;
    assert_eq!(status, 413);
    assert!(body.contains("limit of 1048576 bytes"), "{body}");
    let (status, _) = client
        .beacon(
            None,
            br#"{"name":"pageview","url":"https://demo.example/"}"#.to_vec(),
            &[],
        )
        .await?;
    assert_eq!(status, 401);

    // Malformed protobuf over gRPC-web: a frame whose bytes are not a SendEventsRequest.
    let mut frame = vec![0u8, 0, 0, 0, 5];
    frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff]);
    let (headers, body) = client
        .post_raw(
            "/beacon.ingest.v1.IngestService/SendEvents",
            "application/grpc-web+proto",
            frame,
        )
        .await?;
    let text = format!("{headers:?} {}", String::from_utf8_lossy(&body));
    assert!(
        !text.contains("grpc-status: 0") && text.contains("grpc-status"),
        "{text}"
    );

    send_acknowledged(&client, key, after.to_vec(), Duration::from_secs(10)).await?;
    wait_exact(&client, &ready.read_key, &traffic, Duration::from_secs(60)).await?;
    Ok(())
}
