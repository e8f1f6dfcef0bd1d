use std::sync::atomic::AtomicU32;

use super::*;

fn upstreams(n: usize) -> Upstreams {
    let urls: Vec<String> = (0..n)
        .map(|i| format!("http://127.0.0.1:{}", 1 + i))
        .collect();
    Upstreams::new("query", &urls, Probe::Partitions(4)).expect("upstreams")
}

fn seen(upstreams: &Upstreams, i: usize, serving: bool, partitions: &[u32]) {
    lock(&upstreams.replicas[i].state).seen = Some((
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
    for _ in 0..4 {
        let order = up.order(Some(0));
        assert_eq!(order[0], 1, "{order:?}");
        assert_eq!(
            order.len(),
            3,
            "the others are still tried, last: {order:?}"
        );
    }
    let firsts: HashSet<usize> = (0..4).map(|_| up.order(Some(1))[0]).collect();
    assert_eq!(firsts, HashSet::from([0, 1]), "round robin among equals");
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
    let err = Upstreams::new("query", &[], Probe::Partitions(4))
        .err()
        .expect("no replicas");
    assert!(err.to_string().contains("no query replica"), "{err}");
}
