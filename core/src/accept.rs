//! Operator decisions about logs that consumers refused to go on with (a log created anew,
//! trimmed past a consumer's position, or gone backwards): `beacon accept-log` records that the
//! log is to be taken as it is, and each refusing consumer of that role and partition then goes
//! on (see [`crate::consumer`]).
//!
//! A decision names the log's identity and where the log ended when it was taken, and holds for
//! [`VALID_FOR`] for the refusals that began before it: it settles the refusals the operator
//! looked at, not a later accident.

use std::time::Duration;

use bytes::Bytes;

use crate::log::Log;
use crate::meta::SnapshotStore;
use crate::{Error, Result};

/// How long a decision settles refusals after it was taken.
pub const VALID_FOR: Duration = Duration::from_secs(3600);

/// An operator's acceptance of a log as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    /// The log's identity ([`Log::identity`]).
    pub identity: String,
    /// Where the partition's log ended: a consumer whose log went backwards goes on after it.
    pub end: u64,
    /// When it was taken, Unix milliseconds.
    pub at_ms: i64,
}

/// The record of `role`'s decision about `partition`.
fn record_name(role: &str, partition: u32) -> String {
    format!("log-accept.{role}.p{partition}")
}

/// Records that `role`'s consumers of `partition` of `log` are to go on with it as it is now.
pub async fn accept(
    store: &dyn SnapshotStore,
    role: &str,
    partition: u32,
    log: &dyn Log,
) -> Result<Acceptance> {
    let identity = log.identity().await?;
    let last = log.last(partition).await?.map_or(0, |message| message.seq);
    let end = last.max(log.floor(partition).await?.saturating_sub(1));
    let acceptance = Acceptance {
        identity,
        end,
        at_ms: crate::time::now_ms(),
    };
    let text = format!(
        "{}\n{}\n{}",
        acceptance.identity, acceptance.end, acceptance.at_ms
    );
    store
        .save(&record_name(role, partition), Bytes::from(text))
        .await?;
    Ok(acceptance)
}

/// A still valid decision of `role` about `partition`, when it names the log `identity`.
pub async fn accepted(
    store: &dyn SnapshotStore,
    role: &str,
    partition: u32,
    identity: &str,
) -> Result<Option<Acceptance>> {
    let name = record_name(role, partition);
    let Some(bytes) = store.load(&name).await? else {
        return Ok(None);
    };
    let acceptance = parse(&bytes)
        .ok_or_else(|| Error::Corrupt(format!("the log acceptance {name:?} holds {bytes:?}")))?;
    let age_ms = crate::time::now_ms().saturating_sub(acceptance.at_ms);
    let fresh = u128::try_from(age_ms).is_ok_and(|age| age <= VALID_FOR.as_millis());
    Ok((fresh && acceptance.identity == identity).then_some(acceptance))
}

fn parse(bytes: &[u8]) -> Option<Acceptance> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines();
    Some(Acceptance {
        identity: lines.next()?.to_owned(),
        end: lines.next()?.parse().ok()?,
        at_ms: lines.next()?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::embedded::EmbeddedLog;
    use crate::meta::embedded::EmbeddedMeta;

    #[tokio::test]
    async fn a_decision_holds_for_its_log_only() {
        let dir = beacon_testkit::TempDir::new("accept").expect("temp dir");
        let store = EmbeddedMeta::open(&dir.path().join("meta.redb")).expect("meta");
        let log = EmbeddedLog::open(&dir.path().join("log.redb")).expect("log");
        log.append(2, "", Bytes::from_static(b"a"))
            .await
            .expect("append");
        let taken = accept(&store, "query", 2, &log).await.expect("accept");
        assert_eq!(taken.end, 1);
        let identity = log.identity().await.expect("identity");
        assert_eq!(
            accepted(&store, "query", 2, &identity)
                .await
                .expect("read")
                .map(|taken| taken.end),
            Some(1)
        );
        assert_eq!(
            accepted(&store, "query", 2, "another log")
                .await
                .expect("read"),
            None
        );
        assert_eq!(
            accepted(&store, "aggregator", 2, &identity)
                .await
                .expect("read"),
            None
        );
        assert_eq!(
            accepted(&store, "query", 3, &identity).await.expect("read"),
            None
        );
    }
}
