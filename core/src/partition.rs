//! Partitioning: one tenant's data always flows through one ordered lane.

/// The partition of a tenant: a stable hash of its id modulo the partition count.
///
/// Invariant: the result depends only on `tenant_id` and `partitions`, on every machine and in
/// every version, because it names the event subject, the aggregator's work unit and the rollup
/// subject of the tenant.
pub fn partition_of(tenant_id: &str, partitions: u32) -> u32 {
    let hash = blake3::hash(tenant_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    (u64::from_le_bytes(first) % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_in_range() {
        assert_eq!(partition_of("acme", 8), partition_of("acme", 8));
        for i in 0..1000 {
            assert!(partition_of(&format!("t{i}"), 8) < 8);
        }
        assert_eq!(partition_of("anything", 1), 0);
    }

    #[test]
    fn spreads_tenants() {
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[partition_of(&format!("tenant-{i}"), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
