//! GA4 Measurement Protocol against `beacon standalone`: a batch of 25 events counts exactly,
//! once however often it is resent, for the visitor its `client_id` names; a 26th event, a
//! wrong secret and a measurement id of another tenant are refused; `/debug/mp/collect`
//! answers GA4's validation messages and counts nothing.

use std::time::Duration;

use beacon_proto::insights::v1::{Dimension, Metric};
use beacon_tests::process::free_port;
use beacon_tests::{Client, Standalone};
use serde_json::{Value, json};

const TENANT: &str = "ga4-shop";

/// A GA4 batch of 25 events of visitor `client`, stamped `micros`: 10 pageviews, 10
/// `add_to_cart` with an item count, 5 purchases of 20 EUR.
fn batch(client: &str, micros: i64) -> Value {
    let mut events = Vec::new();
    for i in 0..10 {
        events.push(json!({"name": "page_view", "params": {
            "page_location": format!("https://ga4.example/p/{i}"),
            "page_referrer": "https://www.bing.com/", "page_title": "Product",
            "session_id": "1700000000", "engagement_time_msec": 100,
        }}));
        events.push(json!({"name": "add_to_cart", "params": {
            "page_location": format!("https://ga4.example/p/{i}"), "items_in_cart": i + 1,
        }}));
    }
    for _ in 0..5 {
        events.push(json!({"name": "purchase", "params": {"value": 20, "currency": "EUR"}}));
    }
    json!({
        "client_id": client,
        "timestamp_micros": micros,
        "user_properties": {"plan": {"value": "pro"}},
        "events": events,
    })
}

struct Mp {
    http: reqwest::Client,
    url: String,
    secret: String,
}

impl Mp {
    /// Posts `body` to `path` (`/mp/collect` or `/debug/mp/collect`) for `measurement_id`.
    async fn post(
        &self,
        path: &str,
        measurement_id: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .post(format!(
                "{}{path}?measurement_id={measurement_id}&api_secret={}",
                self.url, self.secret
            ))
            .body(body.to_string())
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        Ok((status, json))
    }

    /// The validation messages `/debug/mp/collect` answers for `body`.
    async fn validate(&self, body: &Value) -> anyhow::Result<Vec<(String, String, String)>> {
        let (status, answer) = self.post("/debug/mp/collect", TENANT, body).await?;
        assert_eq!(status, 200, "{answer}");
        Ok(answer["validationMessages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|m| {
                let field = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
                (
                    field("fieldPath"),
                    field("validationCode"),
                    field("description"),
                )
            })
            .collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measurement_protocol_batches_count_exactly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let beacon = Standalone::start(&dir.path().join("data"), free_port(), &[])?;
    let ready = beacon.ready.clone();
    let client = Client::connect(&ready.gateway, &ready.admin).await?;
    let (secret, read) = client
        .create_tenant(&ready.admin_token, TENANT, "UTC")
        .await?;
    client
        .set_currency(&ready.admin_token, TENANT, "EUR")
        .await?;
    let mp = Mp {
        http: reqwest::Client::new(),
        url: ready.gateway.clone(),
        secret,
    };
    let now = beacon_core::time::now_ms() * 1000;

    // Two visitors; the first visitor's batch is sent twice, as a retry after a lost answer.
    let first = batch("1234567.1700000000", now - 60_000_000);
    for body in [
        &first,
        &first,
        &batch("7654321.1700000001", now - 30_000_000),
    ] {
        let (status, answer) = mp.post("/mp/collect", TENANT, body).await?;
        assert_eq!(status, 204, "{answer}");
    }
    // A 26th event refuses the whole request.
    let mut too_many = batch("999.1", now);
    too_many["events"]
        .as_array_mut()
        .expect("events")
        .push(json!({"name": "extra"}));
    let (status, answer) = mp.post("/mp/collect", TENANT, &too_many).await?;
    assert_eq!(status, 400);
    assert_eq!(
        answer["validationMessages"][0]["validationCode"], "EXCEEDED_MAX_ENTITIES",
        "{answer}"
    );
    // A wrong secret, or the measurement id of another tenant, count nothing either.
    let wrong = Mp {
        http: mp.http.clone(),
        url: mp.url.clone(),
        secret: "bk_server_wrong".into(),
    };
    assert_eq!(
        wrong
            .post("/mp/collect", TENANT, &batch("1.1", now))
            .await?
            .0,
        401
    );
    assert_eq!(
        mp.post("/mp/collect", "demo", &batch("1.1", now)).await?.0,
        403
    );

    // The debug endpoint's messages, as GA4 words them; it counts nothing.
    let bad_name = json!({"client_id": "1.1", "events": [{"name": "_badEventName", "params": {}}]});
    assert_eq!(
        mp.validate(&bad_name).await?,
        [(
            "events".to_owned(),
            "NAME_INVALID".to_owned(),
            "Event at index: [0] has invalid name [_badEventName]. Names must start with an \
             alphabetic character."
                .to_owned()
        )]
    );
    let codes = |messages: Vec<(String, String, String)>| -> Vec<String> {
        messages.into_iter().map(|(_, code, _)| code).collect()
    };
    assert_eq!(
        codes(mp.validate(&json!({"events": [{"name": "a"}]})).await?),
        ["VALUE_REQUIRED"]
    );
    assert_eq!(
        codes(
            mp.validate(&json!({"client_id": "1.1", "events": [{"name": "session_start"}]}))
                .await?
        ),
        ["NAME_RESERVED"]
    );
    let long =
        json!({"client_id": "1.1", "events": [{"name": "a", "params": {"note": "x".repeat(101)}}]});
    let messages = mp.validate(&long).await?;
    assert_eq!(codes(messages.clone()), ["VALUE_OUT_OF_BOUNDS"]);
    assert!(
        messages[0].2.contains("[note]") && messages[0].2.contains("[100]"),
        "{messages:?}"
    );
    assert_eq!(
        codes(mp.validate(&too_many).await?),
        ["EXCEEDED_MAX_ENTITIES"]
    );
    assert!(
        mp.validate(&batch("5.5", now)).await?.is_empty(),
        "a valid batch has no messages"
    );

    // 2 visitors, 20 pageviews, 50 events, 200 EUR: the resent batch and the debug calls count
    // nothing, and user agents are not needed (the visitor is the client id).
    let day = |offset: i64| {
        jiff::Timestamp::from_millisecond(beacon_core::time::now_ms() + offset * 86_400_000)
            .map(|t| t.to_string()[..10].to_owned())
    };
    let (start, end) = (day(-1)?, day(1)?);
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < until {
        let seen = client.totals(&read, &start, &end).await?;
        if (seen.visitors, seen.pageviews, seen.events) == (2, 20, 50) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Stable, not merely equal once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = client.totals(&read, &start, &end).await?;
    assert_eq!(
        (seen.visitors, seen.visits, seen.pageviews, seen.events),
        (2, 2, 20, 50),
        "{seen:?}"
    );
    let names: std::collections::BTreeMap<String, u64> = client
        .breakdown(&read, Dimension::EventName, &start, &end)
        .await?
        .into_iter()
        .map(|(name, counts)| (name, counts.events))
        .collect();
    assert_eq!(
        names,
        [("add_to_cart", 20), ("pageview", 20), ("purchase", 10)]
            .into_iter()
            .map(|(n, c)| (n.to_owned(), c))
            .collect()
    );
    let revenue = client
        .aggregate(&read, &start, &end, &[Metric::TotalRevenue])
        .await?;
    assert_eq!(
        revenue,
        [200.0],
        "5 purchases of 20 EUR, the resent batch not counted"
    );
    Ok(())
}
