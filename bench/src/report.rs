//! The result table: figure, same-run baseline, ratio.

use crate::Plan;

/// One line of the table.
#[derive(Debug, Clone)]
struct Row {
    scenario: String,
    figure: String,
    baseline: String,
    ratio: String,
}

/// The benchmark's output.
#[derive(Debug)]
pub struct Table {
    header: String,
    rows: Vec<Row>,
}

/// Formats bytes as MiB.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl Table {
    /// An empty table for `plan`.
    pub fn new(plan: &Plan) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|k| k.parse::<u64>().ok())
            })
            .map(|kib| format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0))
            .unwrap_or_default();
        let date = jiff::Timestamp::now()
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .date();
        Self {
            header: format!(
                "{date}, {cores} cores, {memory}; {} events per ingest run, {} tenants, seed {}, freshness load {} events/s",
                plan.events, plan.tenants, plan.seed, plan.rate
            ),
            rows: Vec::new(),
        }
    }

    /// Adds a row with explicit texts.
    pub fn row(&mut self, scenario: &str, figure: String, baseline: String, ratio: String) {
        self.rows.push(Row {
            scenario: scenario.to_owned(),
            figure,
            baseline,
            ratio,
        });
        if let Some(row) = self.rows.last() {
            eprintln!(
                "bench: {} | {} | {} | {}",
                row.scenario, row.figure, row.baseline, row.ratio
            );
        }
    }

    /// Adds an events-per-second row against a baseline rate.
    pub fn throughput(&mut self, scenario: &str, events_per_s: f64, baseline: f64) {
        self.row(
            scenario,
            format!("{events_per_s:.0} events/s"),
            format!("{baseline:.0} events/s (JetStream publish)"),
            format!("{:.2}x", events_per_s / baseline.max(f64::MIN_POSITIVE)),
        );
    }

    /// Adds a latency row (milliseconds) against a baseline latency.
    pub fn latency(&mut self, scenario: &str, ms: f64, baseline_name: &str, baseline_ms: f64) {
        self.row(
            scenario,
            format!("{ms:.1} ms"),
            format!("{baseline_ms:.1} ms ({baseline_name})"),
            format!("{:.2}x", ms / baseline_ms.max(f64::MIN_POSITIVE)),
        );
    }

    /// Prints the table as Markdown on stdout.
    pub fn print(&self) {
        println!("\nBeacon benchmark: {}\n", self.header);
        println!("| scenario | figure | same-run baseline | ratio (figure / baseline) |");
        println!("| --- | --- | --- | --- |");
        for row in &self.rows {
            println!(
                "| {} | {} | {} | {} |",
                row.scenario, row.figure, row.baseline, row.ratio
            );
        }
    }
}
