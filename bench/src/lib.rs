//! beacon-bench
