//! `beacon deadletters`: what failed after it was accepted, through the gateway's admin API.

use beacon_proto::admin::v1::{
    DeadLetterInfo, DropDeadLetterRequest, GetDeadLetterRequest, ListDeadLettersRequest,
    ReplayDeadLetterRequest,
};
use beacon_proto::pipeline::v1::{EventBatch, LoggedEvent, RollupBatch, TenantRollup};
use prost::Message;

use crate::admin::AdminConnection;

/// `beacon deadletters` flags.
#[derive(Debug, clap::Args)]
pub struct DeadLettersArgs {
    #[command(flatten)]
    connection: AdminConnection,
    #[command(subcommand)]
    command: DeadLettersCommand,
}

/// Names one dead letter.
#[derive(Debug, Clone, Copy, clap::Args)]
struct LetterId {
    /// Partition of the dead letter.
    #[arg(long)]
    partition: u32,
    /// Its sequence in the dead-letter log (as `list` shows it).
    #[arg(long)]
    seq: u64,
}

#[derive(Debug, clap::Subcommand)]
enum DeadLettersCommand {
    /// Lists dead letters, oldest first per partition, with counts per cause.
    List {
        /// Only letters of this cause (for example invalid_event).
        #[arg(long, default_value = "")]
        cause: String,
        /// Most letters listed (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Shows one dead letter and its failed item.
    Show(LetterId),
    /// Sends the failed item through the pipeline again and removes the letter.
    Replay(LetterId),
    /// Removes a dead letter for good.
    Drop(LetterId),
}

/// Runs one dead-letter command and prints its result as JSON.
pub async fn run(args: DeadLettersArgs) -> anyhow::Result<()> {
    let admin = &args.connection;
    let mut client = admin.connect().await?;
    let output = match args.command {
        DeadLettersCommand::List { cause, limit } => {
            let request = ListDeadLettersRequest {
                limit,
                page_token: String::new(),
                cause,
            };
            let reply = client
                .list_dead_letters(admin.request(request)?)
                .await?
                .into_inner();
            serde_json::json!({
                "counts_by_cause": reply.counts_by_cause,
                "letters": reply.letters.iter().map(letter_json).collect::<Vec<_>>(),
                "more": !reply.next_page_token.is_empty(),
            })
        }
        DeadLettersCommand::Show(id) => {
            let request = GetDeadLetterRequest {
                partition: id.partition,
                seq: id.seq,
            };
            let reply = client
                .get_dead_letter(admin.request(request)?)
                .await?
                .into_inner();
            let letter = reply.letter.unwrap_or_default();
            let item = describe(&letter, &reply.payload);
            let mut json = letter_json(&letter);
            json["item"] = item.into();
            json
        }
        DeadLettersCommand::Replay(id) => {
            let request = ReplayDeadLetterRequest {
                partition: id.partition,
                seq: id.seq,
            };
            let reply = client
                .replay_dead_letter(admin.request(request)?)
                .await?
                .into_inner();
            serde_json::json!({ "replayed_to": reply.log, "seq": reply.seq })
        }
        DeadLettersCommand::Drop(id) => {
            let request = DropDeadLetterRequest {
                partition: id.partition,
                seq: id.seq,
            };
            client.drop_dead_letter(admin.request(request)?).await?;
            serde_json::json!({ "dropped": { "partition": id.partition, "seq": id.seq } })
        }
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

fn letter_json(letter: &DeadLetterInfo) -> serde_json::Value {
    serde_json::json!({
        "partition": letter.partition,
        "seq": letter.seq,
        "source": letter.source,
        "source_seq": letter.source_seq,
        "index": letter.index,
        "cause": letter.cause,
        "reason": letter.reason,
        "tenant": letter.tenant_id,
        "parked_ms": letter.parked_ms,
        "payload_bytes": letter.payload_bytes,
        "payload_kept": letter.payload_kept,
    })
}

/// The failed item, decoded as what its source and cause say it is.
fn describe(letter: &DeadLetterInfo, payload: &[u8]) -> String {
    if payload.is_empty() {
        return format!(
            "not kept ({} bytes): see {} seq {} index {}",
            letter.payload_bytes, letter.source, letter.source_seq, letter.index
        );
    }
    let whole = beacon_core::deadletter::holds_whole_message(&letter.cause);
    let decoded = match (letter.source.as_str(), whole) {
        ("events", false) => LoggedEvent::decode(payload).map(|e| format!("{e:?}")),
        ("events", true) => EventBatch::decode(payload).map(|b| format!("{b:?}")),
        ("rollups", false) => TenantRollup::decode(payload).map(|t| format!("{t:?}")),
        _ => RollupBatch::decode(payload).map(|b| format!("{b:?}")),
    };
    decoded.unwrap_or_else(|err| format!("{} undecodable bytes: {err}", payload.len()))
}
