//! `fedsilo models …`: the versions a coordinator made, read from its state directory (safe
//! while it runs), and the operator's decisions on them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use fedsilo::model::checkpoint::{write_atomic, Checkpoint};
use fedsilo::model::Digest;
use fedsilo::registry::{RegistryReader, Status, VersionMeta};
use fedsilo::store::ModelStore;

use super::decision_cmd::{self, DecisionArgs};

/// Versions: list, inspect, export, compare; approve, reject, roll back.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Every version, oldest first, with its status (`*` marks the current one).
    ///
    /// Example: fedsilo models list --state-dir run/state
    List {
        /// The coordinator's state directory.
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Everything recorded about one version.
    ///
    /// Example: fedsilo models show 7 --state-dir run/state
    Show {
        /// The version.
        version: u64,
        /// The coordinator's state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy a version's checkpoint (safetensors) out, after checking its SHA-256.
    ///
    /// Example: fedsilo models export 7 --state-dir run/state --out churn-v7.safetensors
    Export {
        /// The version.
        version: u64,
        /// The coordinator's state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// How two versions differ: parameters (overall and per tensor) and what made them.
    ///
    /// Example: fedsilo models diff 3 7 --state-dir run/state
    Diff {
        /// The first version.
        a: u64,
        /// The second version.
        b: u64,
        /// The coordinator's state directory.
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Approve a candidate awaiting approval: it becomes current at the coordinator's next
    /// step. Signed with an operator's certificate key.
    Approve(DecisionArgs),
    /// Reject a candidate awaiting approval; the current version stays.
    Reject(DecisionArgs),
    /// Make an earlier committed version current again; silos train from it next round.
    Rollback(DecisionArgs),
}

/// Runs a models command.
pub fn run(a: ModelsArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        ModelsCommand::List { state_dir } => list(&state_dir),
        ModelsCommand::Show {
            version,
            state_dir,
            json,
        } => show(&state_dir, version, json),
        ModelsCommand::Export {
            version,
            state_dir,
            out,
        } => export(&state_dir, version, &out),
        ModelsCommand::Diff { a, b, state_dir } => diff(&state_dir, a, b),
        ModelsCommand::Approve(d) => decision_cmd::run(d, decision_cmd::Kind::Approve),
        ModelsCommand::Reject(d) => decision_cmd::run(d, decision_cmd::Kind::Reject),
        ModelsCommand::Rollback(d) => decision_cmd::run(d, decision_cmd::Kind::Rollback),
    }
}

fn current(state_dir: &Path) -> anyhow::Result<Option<u64>> {
    Ok(ModelStore::at(state_dir).current_version()?)
}

fn meta(state_dir: &Path, v: u64) -> anyhow::Result<VersionMeta> {
    RegistryReader::open(state_dir)?
        .get(v)?
        .with_context(|| format!("no version {v} in {}", state_dir.display()))
}

fn list(state_dir: &Path) -> anyhow::Result<ExitCode> {
    let cur = current(state_dir)?;
    let all = RegistryReader::open(state_dir)?.list()?;
    println!(
        "{:>8} {:<18} {:>6} {:>5} {:>5} {:>8} {:>8}  {:<23}  reason",
        "version",
        "status",
        "parent",
        "round",
        "silos",
        fedsilo::model::eval::score_name(all.iter().flat_map(|m| m.validation.values())),
        "ε",
        "created (UTC)"
    );
    for m in &all {
        let mark = if Some(m.version) == cur { "*" } else { " " };
        println!(
            "{:>7}{mark} {:<18} {:>6} {:>5} {:>5} {:>8} {:>8}  {:<23}  {}",
            m.version,
            m.status.as_str(),
            m.parent,
            m.round,
            m.participants.len(),
            m.mean_score().map_or("-".into(), |a| format!("{a:.4}")),
            m.privacy
                .as_ref()
                .map_or("-".into(), |p| format!("{:.3}", p.epsilon)),
            super::audit_cmd::when(m.created_ms),
            truncate(&m.reason, 60)
        );
    }
    if all.is_empty() {
        println!("(no versions yet)");
    }
    Ok(ExitCode::SUCCESS)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

fn show(state_dir: &Path, v: u64, json: bool) -> anyhow::Result<ExitCode> {
    let m = meta(state_dir, v)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(ExitCode::SUCCESS);
    }
    let cur = current(state_dir)?;
    println!(
        "version      {}{}",
        m.version,
        if Some(m.version) == cur {
            " (current)"
        } else {
            ""
        }
    );
    println!(
        "status       {} (decided by {})",
        m.status.as_str(),
        m.decided_by
    );
    println!("parent       {}", m.parent);
    println!("round        {}", m.round);
    println!("created      {} UTC", super::audit_cmd::when(m.created_ms));
    println!(
        "checkpoint   {} (SHA-256 {})",
        file_of(state_dir, &m).display(),
        m.file_sha256
    );
    println!("parameters   digest {}", m.digest);
    println!("aggregation  {}", m.aggregation);
    println!(
        "policy       {}",
        if m.policy_digest.is_empty() {
            "-"
        } else {
            &m.policy_digest
        }
    );
    for (s, n) in &m.participants {
        println!("participant  {s} ({n} examples)");
    }
    for (s, e) in &m.validation {
        println!(
            "validation   {s}: {} {} loss {:.4} {} on {} held-out",
            e.score_name(),
            e.score().map_or("-".into(), |a| format!("{a:.4}")),
            e.loss,
            match (e.accuracy, e.mae) {
                (Some(a), _) => format!("accuracy {a:.4}"),
                (None, Some(m)) => format!("MAE {m:.4}"),
                (None, None) => "accuracy -".into(),
            },
            e.examples
        );
    }
    if let Some(p) = &m.privacy {
        println!(
            "privacy      {} DP, z = {:.3}: this round ε {:.3}, cumulative ε {:.3} at δ = {:e}",
            p.mode, p.noise_multiplier, p.round_epsilon, p.epsilon, p.delta
        );
    }
    if !m.reason.is_empty() {
        println!("reason       {}", m.reason);
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a version's checkpoint lives: `models/` once committed, `models/candidates/` if it
/// never was.
fn file_of(state_dir: &Path, m: &VersionMeta) -> PathBuf {
    let store = ModelStore::at(state_dir);
    let candidate = store.candidate_path(m.version);
    if m.status == Status::Committed || !candidate.exists() {
        store.model_path(m.version)
    } else {
        candidate
    }
}

/// A version's checkpoint, checked against the SHA-256 the registry recorded.
fn load_checked(state_dir: &Path, m: &VersionMeta) -> anyhow::Result<(Vec<u8>, Checkpoint)> {
    let path = file_of(state_dir, m);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    if Digest::of_bytes(&bytes).hex() != m.file_sha256 {
        bail!(
            "{}: its SHA-256 differs from the one recorded for version {}: the file was modified (run `fedsilo audit verify`)",
            path.display(),
            m.version
        );
    }
    let ckpt = Checkpoint::from_bytes(&bytes, &path.display().to_string())?;
    Ok((bytes, ckpt))
}

fn export(state_dir: &Path, v: u64, out: &Path) -> anyhow::Result<ExitCode> {
    let m = meta(state_dir, v)?;
    let (bytes, _) = load_checked(state_dir, &m)?;
    write_atomic(out, &bytes)?;
    println!(
        "exported version {v} ({}, SHA-256 {}) to {}",
        m.status.as_str(),
        m.file_sha256,
        out.display()
    );
    if m.status != Status::Committed {
        println!("note: version {v} was never current ({})", m.reason);
    }
    Ok(ExitCode::SUCCESS)
}

fn diff(state_dir: &Path, a: u64, b: u64) -> anyhow::Result<ExitCode> {
    let (ma, mb) = (meta(state_dir, a)?, meta(state_dir, b)?);
    let ((_, ca), (_, cb)) = (load_checked(state_dir, &ma)?, load_checked(state_dir, &mb)?);
    println!("version {a} → {b}");
    if ca.spec != cb.spec {
        println!(
            "architecture differs: {} vs {} (parameters not compared)",
            ca.spec.describe(),
            cb.spec.describe()
        );
    } else {
        let l2 = |x: &[f32], y: &[f32]| {
            x.iter()
                .zip(y)
                .map(|(p, q)| ((q - p) as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let max = ca
            .params
            .iter()
            .zip(&cb.params)
            .map(|(p, q)| (q - p).abs())
            .fold(0.0f32, f32::max);
        println!(
            "parameters   L2 distance {:.6}, largest change {:.6}, L2 norm {:.6} → {:.6}",
            l2(&ca.params, &cb.params),
            max,
            l2(&vec![0.0; ca.params.len()], &ca.params),
            l2(&vec![0.0; cb.params.len()], &cb.params)
        );
        for t in ca.spec.layout().tensors {
            let n: usize = t.shape.iter().product();
            let r = t.offset..t.offset + n;
            println!(
                "  {:<16} {:?}: L2 distance {:.6}",
                t.name,
                t.shape,
                l2(&ca.params[r.clone()], &cb.params[r])
            );
        }
    }
    let line = |what: &str, x: String, y: String| {
        if x != y {
            println!("{what:<12} {x} → {y}");
        }
    };
    line(
        "status",
        ma.status.as_str().into(),
        mb.status.as_str().into(),
    );
    line("parent", ma.parent.to_string(), mb.parent.to_string());
    line(
        "aggregation",
        ma.aggregation.clone(),
        mb.aggregation.clone(),
    );
    line("policy", ma.policy_digest.clone(), mb.policy_digest.clone());
    let names = |m: &VersionMeta| {
        m.participants
            .iter()
            .map(|(s, _)| s.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    line("participants", names(&ma), names(&mb));
    let mut silos: Vec<&String> = ma.validation.keys().chain(mb.validation.keys()).collect();
    silos.sort();
    silos.dedup();
    for s in silos {
        let score = |m: &VersionMeta| m.validation.get(s).and_then(|e| e.score());
        let name = fedsilo::model::eval::score_name(
            [&ma, &mb].into_iter().filter_map(|m| m.validation.get(s)),
        );
        match (score(&ma), score(&mb)) {
            (Some(x), Some(y)) => println!("{name} {s:<8} {x:.4} → {y:.4} ({:+.4})", y - x),
            (x, y) => println!(
                "{name} {s:<8} {} → {}",
                x.map_or("-".into(), |v| format!("{v:.4}")),
                y.map_or("-".into(), |v| format!("{v:.4}"))
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
