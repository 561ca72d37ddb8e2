//! `fedsilo audit …`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use fedsilo::audit::verify::{verify_chain, verify_state, Checked};
use fedsilo::audit::Record;
use fedsilo::identity::signature::CaCheck;

/// The audit journal: verify it, or show it.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the whole journal (chain, signatures) and the state directory against it
    /// (checkpoint files, CURRENT). Names the first bad entry or file; exit status 1 if any.
    ///
    /// Example: fedsilo audit verify --state-dir run/state --ca certs/ca.pem
    Verify {
        /// The coordinator's state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// The consortium CA (a kit's ca.pem): the journal's signers must hold certificates it
        /// issued. Without it, signatures are checked against the certificates the journal
        /// itself names.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Print the journal's entries, oldest first (verified as they are read).
    ///
    /// Example: fedsilo audit show --state-dir run/state --round 3 --silo west
    Show {
        /// The coordinator's state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// Only entries of this round.
        #[arg(long)]
        round: Option<u64>,
        /// Only entries that concern this silo.
        #[arg(long)]
        silo: Option<String>,
        /// One JSON object per entry (seq, time_ms, record).
        #[arg(long)]
        json: bool,
    },
}

/// Runs an audit command.
pub fn run(a: AuditArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        AuditCommand::Verify { state_dir, ca } => {
            let ca = ca
                .as_deref()
                .map(CaCheck::load)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let v = verify_state(&state_dir, ca.as_ref())?;
            if let Some(p) = &v.problem {
                println!(
                    "audit verify: FAILED after {} good entries: {p}",
                    v.entries.len()
                );
                return Ok(ExitCode::FAILURE);
            }
            let signers: Vec<String> = v
                .entries
                .iter()
                .filter_map(|e| match &e.body.record {
                    Record::Signer { node, .. } => Some(node.clone()),
                    _ => None,
                })
                .collect();
            let commits = v
                .entries
                .iter()
                .filter(|e| matches!(e.body.record, Record::Committed { .. }))
                .count();
            println!(
                "audit verify: OK — {} entries, hash chain and signatures intact ({} signer sessions{}); {commits} committed checkpoint(s) match their SHA-256; CURRENT matches the journal",
                v.entries.len(),
                signers.len(),
                if ca.is_some() {
                    ", all issued by the consortium CA"
                } else {
                    "; pass --ca to check they were issued by the consortium CA"
                }
            );
            if v.torn_tail {
                println!("note: the last line is incomplete (a crash while it was written); the coordinator drops it when it starts");
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Show {
            state_dir,
            round,
            silo,
            json,
        } => {
            let path = state_dir.join("audit.jsonl");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let v = verify_chain(&text, "audit.jsonl", None);
            let keep = |e: &Checked| {
                round.is_none_or(|r| e.body.record.round() == Some(r))
                    && silo.as_deref().is_none_or(|s| e.body.record.mentions(s))
            };
            for e in v.entries.iter().filter(|e| keep(e)) {
                if json {
                    println!("{}", serde_json::to_string(&e.body)?);
                } else {
                    println!(
                        "{:>6}  {}  {:>5}  {}",
                        e.body.seq,
                        when(e.body.time_ms),
                        e.body
                            .record
                            .round()
                            .map_or("-".to_string(), |r| r.to_string()),
                        e.body.record
                    );
                }
            }
            if let Some(p) = v.problem {
                eprintln!("fedsilo: the journal does not verify from here on: {p}");
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `2026-11-28 19:04:05.123` (UTC).
pub fn when(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}
