use std::sync::atomic::AtomicU32;
use tonic::Code;

use super::*;

fn upstreams(n: usize) -> Upstreams {
    let urls: Vec<String> = (0..n)
        .map(|i| format!("http://127.0.0.1:{}", 1 + i))
        .collect();
    Upstreams::new("query", &urls, Probe::Partitions(4), &Tls::default()).expect("upstreams")
}

fn seen(upstreams: &Upstreams, i: usize, serving: bool, partitions: &[u32]) {
    lock(&upstreams.replicas()[i].state).seen = Some((
        Instant::now(),
        serving,
        partitions.iter().copied().collect(),
    ));
}

#[tokio::test]
async fn replicas_serving_the_partition_come_first_in_turn() {
    let up = upstreams(3);
    seen(&up, 0, true, &[1]);
    seen(&up, 1, true, &[0, 1]);
    seen(&up, 2, false, &[]);
    let urls = |order: Vec<Arc<Replica>>| -> Vec<String> {
        order.iter().map(|replica| replica.url.clone()).collect()
    };
    for _ in 0..4 {
        let order = urls(up.order(Some(0)));
        assert_eq!(order[0], "http://127.0.0.1:2", "{order:?}");
        assert_eq!(
            order.len(),
            3,
            "the others are still tried, last: {order:?}"
        );
    }
    let firsts: HashSet<String> = (0..4).map(|_| urls(up.order(Some(1)))[0].clone()).collect();
    assert_eq!(
        firsts,
        HashSet::from([
            "http://127.0.0.1:1".to_owned(),
            "http://127.0.0.1:2".to_owned()
        ]),
        "round robin among equals"
    );
}

#[tokio::test]
async fn unavailable_is_retried_on_another_replica_only_when_allowed() {
    let up = upstreams(2);
    let calls = AtomicU32::new(0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let answer = up
        .call(None, deadline, true, |_, _| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(Status::unavailable("restarting"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
    assert_eq!(answer.expect("retried"), 1);

    let calls = AtomicU32::new(0);
    let status = up
        .call(None, deadline, false, |_, _| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(Status::unavailable("restarting")) }
        })
        .await
        .expect_err("not retried");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let status = up
        .call(None, deadline, true, |_, _| async {
            Err::<(), _>(Status::invalid_argument("bad field"))
        })
        .await
        .expect_err("not retried");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn retries_stop_at_the_deadline() {
    let up = upstreams(2);
    let started = Instant::now();
    let deadline = started + Duration::from_millis(600);
    let status = up
        .call(None, deadline, true, |_, budget| async move {
            assert!(budget <= Duration::from_millis(600), "{budget:?}");
            Err::<(), _>(Status::unavailable("down"))
        })
        .await
        .expect_err("every replica down");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("down"), "{}", status.message());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn grpc_timeouts_parse() {
    assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
    assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
    assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_grpc_timeout("123456789S"), None, "at most 8 digits");
    assert_eq!(parse_grpc_timeout("S"), None);
    assert_eq!(parse_grpc_timeout("10x"), None);
    assert_eq!(parse_grpc_timeout(""), None);
}

#[test]
fn a_role_without_replicas_is_refused() {
    let err = Upstreams::new("query", &[], Probe::Partitions(4), &Tls::default())
        .err()
        .expect("no replicas");
    assert!(err.to_string().contains("no query replica"), "{err}");
}

#[tokio::test]
async fn a_dns_name_adds_and_removes_replicas_as_its_addresses_change() {
    let addresses = Arc::new(Mutex::new(vec![[10, 0, 0, 1], [10, 0, 0, 2]]));
    let answer = addresses.clone();
    let resolve: Resolver = Arc::new(move |_host: String, port: u16| {
        let now: Vec<std::net::SocketAddr> = lock(&answer)
            .iter()
            .map(|ip| std::net::SocketAddr::from((*ip, port)))
            .collect();
        Box::pin(async move { Ok(now) })
    });
    let urls = [
        "http://127.0.0.1:1".to_owned(),
        "dns+http://query:7003".to_owned(),
    ];
    let up = Upstreams::new("query", &urls, Probe::Partitions(4), &Tls::default())
        .expect("upstreams")
        .with_resolver(resolve);
    let listed = |up: &Upstreams| -> Vec<String> {
        up.replicas()
            .iter()
            .map(|replica| replica.url.clone())
            .collect()
    };
    assert_eq!(
        listed(&up),
        ["http://127.0.0.1:1"],
        "names wait for the first lookup"
    );
    up.resolve_names().await;
    assert_eq!(
        listed(&up),
        [
            "http://127.0.0.1:1",
            "http://10.0.0.1:7003",
            "http://10.0.0.2:7003"
        ]
    );
    seen(&up, 2, true, &[0]);
    *lock(&addresses) = vec![[10, 0, 0, 2], [10, 0, 0, 3]];
    up.resolve_names().await;
    assert_eq!(
        listed(&up),
        [
            "http://127.0.0.1:1",
            "http://10.0.0.2:7003",
            "http://10.0.0.3:7003"
        ]
    );
    assert!(
        lock(&up.replicas()[1].state).seen.is_some(),
        "a replica still listed keeps what was learned of it"
    );
}

#[test]
fn dns_sources_must_match_the_tls_setting_at_start() {
    let err = Upstreams::new(
        "query",
        &["dns+https://query:7003".to_owned()],
        Probe::Partitions(4),
        &Tls::default(),
    )
    .err()
    .expect("TLS without a CA");
    assert!(err.to_string().contains("--tls-ca"), "{err}");
}

#[tokio::test]
async fn no_replica_known_yet_is_unavailable_at_once() {
    let up = Upstreams::new(
        "query",
        &["dns+http://query:7003".to_owned()],
        Probe::Partitions(4),
        &Tls::default(),
    )
    .expect("upstreams");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = up
        .call(None, deadline, true, |_, _| async { Ok::<_, Status>(()) })
        .await
        .expect_err("no replica");
    assert_eq!(status.code(), Code::Unavailable);
}
