//! Loads months of history into a shard store the way reprocessing does: the aggregator's
//! `Processor` folds the events and the store applies the rollups, one message per partition.

use std::sync::Arc;

use beacon_aggregator::Processor;
use beacon_core::meta::Tenant;
use beacon_core::partition::partition_of;
use beacon_proto::ingest::v1::Event;
use beacon_proto::pipeline::v1::LoggedEvent;
use beacon_query::{DuckShardStore, RollupMessage, ShardStore};

use crate::traffic::TenantSpec;

/// Partitions of the benchmark's stores (the default deployment's).
pub const PARTITIONS: u32 = 8;
/// Events folded before their rollups are applied.
const EVENTS_PER_APPLY: usize = 50_000;

/// A shard store being filled with history.
pub struct Loader {
    /// The store.
    pub store: DuckShardStore,
    processor: Processor,
    seqs: Vec<u64>,
    pending: usize,
}

impl Loader {
    /// A loader into a new store in `dir`.
    pub fn new(dir: &std::path::Path) -> anyhow::Result<Self> {
        Ok(Self {
            store: DuckShardStore::new(dir.join("shards"), PARTITIONS, 512_000_000)?,
            processor: Processor::new().historical(),
            seqs: vec![0; PARTITIONS as usize],
            pending: 0,
        })
    }

    /// Folds `event` of `tenant`, applying the rollups every [`EVENTS_PER_APPLY`] events.
    /// Blocks: call from a blocking context inside a runtime.
    pub fn add(&mut self, tenant: &Tenant, event: Event) -> anyhow::Result<LoggedEvent> {
        let event = logged(tenant, event);
        self.processor.process(&event, true)?;
        self.pending += 1;
        if self.pending >= EVENTS_PER_APPLY {
            self.flush()?;
        }
        Ok(event)
    }

    /// Applies every pending rollup. Blocks: call from a blocking context inside a runtime.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.pending = 0;
        let mut by_partition: Vec<Vec<_>> = vec![Vec::new(); PARTITIONS as usize];
        for rollup in self.processor.take_rollups() {
            let partition = partition_of(&rollup.tenant_id, PARTITIONS);
            by_partition[partition as usize].push(self.store.validate(partition, rollup)?);
        }
        let runtime = tokio::runtime::Handle::current();
        for (partition, tenants) in (0u32..).zip(by_partition) {
            if tenants.is_empty() {
                continue;
            }
            let seq = &mut self.seqs[partition as usize];
            *seq += 1;
            let message = RollupMessage {
                seq: *seq,
                logic_version: beacon_aggregator::LOGIC_VERSION,
                tenants,
                from_dead_letter: false,
                covered: None,
            };
            runtime.block_on(self.store.apply(partition, Arc::new([message])))?;
        }
        Ok(())
    }

    /// Applies what is pending and folds every shard's deltas.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        self.flush()?;
        tokio::runtime::Handle::current().block_on(self.store.fold())?;
        Ok(())
    }
}

/// The tenant of a model spec.
pub fn tenant(spec: &TenantSpec) -> Tenant {
    Tenant {
        id: spec.id.clone(),
        name: spec.id.clone(),
        time_zone: spec.time_zone.clone(),
        raw_retention_days: 0,
        goals: Vec::new(),
        currency: crate::traffic::currency_of(&spec.id).0.to_owned(),
        domains: Vec::new(),
        site_key: String::new(),
    }
}

/// Countries the benchmark's visitors come from, the first most often: a visitor's is fixed
/// by its address, as a GeoIP database would.
pub const COUNTRIES: [&str; 6] = ["US", "DE", "IN", "GB", "FR", "BR"];

/// The country of an address: the same one every time.
pub fn country_of(ip: &str) -> &'static str {
    // Half of the visitors from the first country, the rest spread over the others.
    let h = visitor_id(ip, "");
    match h % 10 {
        0..=4 => COUNTRIES[0],
        n => COUNTRIES[1 + (n as usize - 5) % (COUNTRIES.len() - 1)],
    }
}

/// The event as ingest would log it (a country from the address instead of GeoIP; a stable
/// unsalted visitor id).
pub fn logged(tenant: &Tenant, event: Event) -> LoggedEvent {
    let visitor = visitor_id(&event.client_ip, &event.user_agent);
    LoggedEvent {
        tenant_id: tenant.id.clone(),
        event_id: event.id,
        name: event.name,
        timestamp_ms: event
            .timestamp
            .map(|t| t.seconds * 1000)
            .unwrap_or_default(),
        received_ms: 0,
        url: event.url,
        referrer: event.referrer,
        title: event.title,
        user_agent: event.user_agent,
        props: event.props,
        revenue: event.revenue,
        country: country_of(&event.client_ip).to_owned(),
        region: String::new(),
        city: String::new(),
        visitor,
        time_zone: tenant.time_zone.clone(),
        currency: tenant.currency.clone(),
        engagement: event.engagement,
        previous_visitor: None,
        visitor_stated: false,
        non_interactive: false,
    }
}

/// A stable 64-bit visitor id for the benchmark (ingest uses a salted keyed hash).
fn visitor_id(ip: &str, user_agent: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in ip.bytes().chain([0]).chain(user_agent.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}
