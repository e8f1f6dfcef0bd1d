//! The public edge refuses everything that is not allowed, with the right code: ingest, read
//! and server keys of two tenants, revoked keys, no key, unknown keys, a spoofed
//! `X-Forwarded-For` from an untrusted peer, `client_ip` from a public key, admin calls on the
//! public port, reflection of internal protos, and an address that keeps failing to
//! authenticate.

use std::time::{Duration, Instant};

use futures::StreamExt;

use beacon_proto::admin::v1::admin_service_client::AdminServiceClient;
use beacon_proto::admin::v1::{KeyKind, ListKeysRequest, ListTenantsRequest, RevokeKeyRequest};
use beacon_proto::ingest::v1::{Event, EventStatus};
use beacon_tests::client::Counts;
use beacon_tests::traffic::{USER_AGENTS, local_date};
use beacon_tests::{Client, Cluster};
use tonic::Code;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const WAIT: Duration = Duration::from_secs(60);

fn pageview(id: &str, client_ip: &str) -> Event {
    Event {
        id: id.into(),
        name: "pageview".into(),
        url: "https://shop.example/".into(),
        user_agent: USER_AGENTS[0].into(),
        client_ip: client_ip.into(),
        ..Default::default()
    }
}

/// The gRPC code of a send with `key` (`Ok` when every event was accepted).
async fn send_code(client: &Client, key: &str, event: Event) -> Code {
    match client.send(key, vec![event]).await {
        Ok(reply) if reply.accepted == 1 => Code::Ok,
        Ok(reply) => panic!("the call succeeded but the event was refused: {reply:?}"),
        Err(status) => status.code(),
    }
}

async fn read_code(client: &Client, key: &str) -> Code {
    let today = local_date(beacon_core::time::now_ms(), "UTC");
    match client.totals(key, &today, &today).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Polls `read`'s totals for today until they equal `want`.
async fn wait_totals(client: &Client, read: &str, want: (u64, u64)) -> anyhow::Result<()> {
    let today = local_date(beacon_core::time::now_ms(), "UTC");
    let started = Instant::now();
    let mut seen = Counts::default();
    while started.elapsed() < WAIT {
        seen = client.totals(read, &today, &today).await?;
        if (seen.events, seen.visitors) == want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("wanted (events, visitors) {want:?}, saw {seen:?}")
}

/// Whether reflection on `client`'s public port hands out the file `name`.
async fn reflects_file(client: &Client, name: &str) -> anyhow::Result<bool> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileByFilename(name.into())),
    };
    let mut replies = ServerReflectionClient::new(client.channel())
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    // An unknown file ends the stream with NOT_FOUND, or answers with an error message.
    Ok(matches!(
        replies.message().await,
        Ok(Some(reply)) if matches!(
            reply.message_response,
            Some(MessageResponse::FileDescriptorResponse(_))
        )
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn everything_not_allowed_is_refused_with_the_right_code() -> anyhow::Result<()> {
    // Only 192.0.2.0/24 is a trusted proxy: this test, on loopback, is an ordinary caller.
    let cluster = Cluster::start_with(&[("BEACON_TRUSTED_PROXIES", "192.0.2.0/24".to_owned())])?;
    let client = Client::of(&cluster).await?;
    let token = cluster.admin_token.as_str();
    let (a_server, a_read) = client.create_tenant(token, "alpha", "UTC").await?;
    let a_ingest = client.create_key(token, "alpha", KeyKind::Ingest).await?;
    let (b_server, b_read) = client.create_tenant(token, "beta", "UTC").await?;
    let b_ingest = client.create_key(token, "beta", KeyKind::Ingest).await?;

    // Keys do what their kind allows and nothing else.
    assert_eq!(
        send_code(&client, &a_ingest, pageview("a1", "")).await,
        Code::Ok
    );
    assert_eq!(
        send_code(&client, &a_server, pageview("a2", "198.51.100.7")).await,
        Code::Ok
    );
    assert_eq!(
        send_code(&client, &b_ingest, pageview("b1", "")).await,
        Code::Ok
    );
    assert_eq!(
        send_code(&client, &b_server, pageview("b2", "198.51.100.8")).await,
        Code::Ok
    );
    assert_eq!(
        send_code(&client, &a_read, pageview("x", "")).await,
        Code::PermissionDenied
    );
    assert_eq!(read_code(&client, &a_ingest).await, Code::PermissionDenied);
    assert_eq!(read_code(&client, &a_server).await, Code::PermissionDenied);
    assert_eq!(read_code(&client, &a_read).await, Code::Ok);
    assert_eq!(read_code(&client, &b_read).await, Code::Ok);

    // A public key may not state the visitor's address.
    let reply = client
        .send(&a_ingest, vec![pageview("a3", "203.0.113.50")])
        .await?;
    assert_eq!(reply.results[0].status, EventStatus::Rejected as i32);
    assert!(reply.results[0].error.contains("client_ip"), "{reply:?}");

    // No key, unknown keys.
    assert_eq!(
        send_code(&client, "", pageview("x", "")).await,
        Code::Unauthenticated
    );
    assert_eq!(
        send_code(&client, "bk_ingest_0000", pageview("x", "")).await,
        Code::Unauthenticated
    );
    assert_eq!(
        read_code(&client, "bk_read_0000").await,
        Code::Unauthenticated
    );

    // A spoofed X-Forwarded-For from an untrusted peer is ignored: five "addresses" with one
    // user agent are one visitor (the TCP peer).
    for n in 0..5 {
        let body =
            format!(r#"{{"name":"pageview","url":"https://shop.example/s{n}","id":"s{n}"}}"#);
        let headers = [
            ("user-agent", USER_AGENTS[1]),
            ("x-forwarded-for", &format!("203.0.113.{n}") as &str),
        ];
        let (status, text) = client
            .beacon(Some(&b_ingest), body.into_bytes(), &headers)
            .await?;
        assert_eq!(status, 202, "{text}");
    }

    // Each tenant reads its own numbers only: alpha a1 + a2, beta b1 + b2 + five beacons of one
    // visitor.
    wait_totals(&client, &a_read, (2, 2)).await?;
    wait_totals(&client, &b_read, (7, 3)).await?;

    // The admin API is not on the public port; on its own listener it wants the token.
    let public_admin = AdminServiceClient::new(client.channel())
        .list_tenants(beacon_core::auth::with_bearer(
            token,
            ListTenantsRequest {},
        )?)
        .await
        .expect_err("no admin API on the public port");
    assert_eq!(public_admin.code(), Code::Unimplemented);
    let mut admin = client.admin();
    let without = admin
        .list_tenants(ListTenantsRequest {})
        .await
        .expect_err("no token");
    assert_eq!(without.code(), Code::Unauthenticated);
    let with_read_key = admin
        .list_tenants(beacon_core::auth::with_bearer(
            &a_read,
            ListTenantsRequest {},
        )?)
        .await
        .expect_err("a read key is not the admin token");
    assert_eq!(with_read_key.code(), Code::Unauthenticated);
    assert!(!reflects_file(&client, "beacon/admin/v1/admin.proto").await?);
    assert!(!reflects_file(&client, "beacon/pipeline/v1/pipeline.proto").await?);
    assert!(reflects_file(&client, "beacon/ingest/v1/ingest.proto").await?);

    // A revoked key stops working within seconds.
    let keys = admin
        .list_keys(beacon_core::auth::with_bearer(
            token,
            ListKeysRequest {
                tenant_id: "alpha".into(),
            },
        )?)
        .await?
        .into_inner()
        .keys;
    let mut kinds: Vec<i32> = keys.iter().map(|k| k.kind).collect();
    kinds.sort_unstable();
    let mut want = [
        KeyKind::Ingest,
        KeyKind::Ingest,
        KeyKind::Read,
        KeyKind::Server,
    ]
    .map(|k| k as i32);
    want.sort_unstable();
    assert_eq!(kinds, want, "{keys:?}");
    let a_ingest_id: String = beacon_core::auth::key_hash(&a_ingest)
        .chars()
        .take(12)
        .collect();
    assert!(keys.iter().any(|k| k.id == a_ingest_id), "{keys:?}");
    admin
        .revoke_key(beacon_core::auth::with_bearer(
            token,
            RevokeKeyRequest {
                tenant_id: "alpha".into(),
                key_id: a_ingest_id.clone(),
                grace_seconds: 0,
            },
        )?)
        .await?;
    let started = Instant::now();
    loop {
        let code = send_code(&client, &a_ingest, pageview("late", "")).await;
        if code == Code::Unauthenticated {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {code:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("revoked key refused after {:?}", started.elapsed());

    // An address that keeps failing to authenticate is refused for a while, valid keys too.
    // The guesses go out together, faster than the limit refills even on a loaded machine.
    let guesses = (0..400).map(|n| {
        let client = client.clone();
        async move { send_code(&client, &format!("bk_ingest_guess{n}"), pageview("x", "")).await }
    });
    let codes: Vec<Code> = futures::stream::iter(guesses)
        .buffer_unordered(32)
        .collect()
        .await;
    let refused = codes
        .iter()
        .filter(|&&c| c == Code::ResourceExhausted)
        .count();
    println!("{refused} of 400 unknown keys refused before any lookup");
    assert!(refused > 0, "400 unknown keys were all looked up");
    assert!(
        codes
            .iter()
            .all(|&c| c == Code::ResourceExhausted || c == Code::Unauthenticated),
        "{codes:?}"
    );
    assert_eq!(read_code(&client, &b_read).await, Code::ResourceExhausted);
    Ok(())
}
