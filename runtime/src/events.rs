//! What a federation run reports, as it happens.
//!
//! Every [`Event`] is appended as one JSON line to `<state_dir>/events.jsonl` (flushed at once)
//! and printed to stdout, either as JSON lines (`--events json`, for scripts and tests) or as
//! a human-readable round table (`--events table`, the default).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::privacy::budget::RoundSpend;
use crate::protocol::EvalMetrics;
use crate::{Error, Result};

/// The outcome of one committed round.
#[derive(Debug, Clone, Serialize)]
pub struct RoundSummary {
    /// Round number (1-based).
    pub round: u64,
    /// The version committed.
    pub version: u64,
    /// Its parameter digest (hex).
    pub digest: String,
    /// Silos whose updates were aggregated, sorted.
    pub participants: Vec<String>,
    /// Silos in the cohort whose update was not aggregated, with the reason.
    pub missing: Vec<(String, String)>,
    /// Example-weighted mean of the participants' training loss.
    pub mean_train_loss: f64,
    /// Held-out metrics of the committed model at each silo that evaluated it.
    pub eval: BTreeMap<String, EvalMetrics>,
    /// Example-weighted held-out loss over the silos that evaluated.
    pub eval_loss: f64,
    /// Round wall time, seconds (dispatch to validated candidate).
    pub wall_seconds: f64,
    /// The slowest participant's local training time, seconds.
    pub slowest_train_seconds: f64,
    /// `wall_seconds − slowest_train_seconds`: what the federation itself cost.
    pub overhead_seconds: f64,
    /// Bytes each silo sent the coordinator during the round (cluster frames, on the wire).
    pub bytes_from_silos: BTreeMap<String, u64>,
    /// Bytes the coordinator sent each silo during the round (the base, when the silo did not
    /// hold it, the candidate to score, control messages).
    #[serde(default)]
    pub bytes_to_silos: BTreeMap<String, u64>,
    /// Where the round's time went.
    #[serde(default)]
    pub phases: Phases,
    /// Seconds from the previous commit to this one (`None` for a run's first commit): the
    /// round's period as the federation sees it, gaps between rounds included.
    #[serde(default)]
    pub period_seconds: Option<f64>,
    /// Size of one update in bytes (parameters × 4).
    pub update_bytes: u64,
    /// Kernel, clipping and server optimiser that made this version.
    pub aggregation: String,
    /// Digest of the policy in force for this round.
    pub policy_digest: String,
    /// Silos whose update an admission rule refused, with the reason.
    pub refused: Vec<(String, String)>,
    /// For selecting kernels: the silos whose updates were kept.
    pub selected: Option<Vec<String>>,
    /// Silos whose updates were clipped, with their norm before clipping.
    pub clipped: Vec<(String, f64)>,
    /// Examples each participant trained on.
    pub examples: BTreeMap<String, u64>,
    /// L2 norm of each participant's update as sent (after any noise the silo added itself).
    pub update_norms: BTreeMap<String, f64>,
    /// Silo-level DP: this round's spend and the cumulative spend after it.
    pub privacy: Option<RoundSpend>,
    /// The training run the round belonged to (a serving coordinator, [`crate::runs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
}

/// Where a round's time went, seconds on the coordinator's clock. `open`, `collect`,
/// `aggregate`, `validate` and `commit` follow one another; `dispatch`, `train` and `fetch` are
/// the slowest silo's within `collect` (silos overlap, so they do not add up to it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Phases {
    /// Opening the round: aggregators, and secure aggregation's key exchange.
    pub open: f64,
    /// The slowest base-model transfer to a silo (0 when every silo held the base).
    pub dispatch: f64,
    /// The slowest silo's local training, as it reported.
    pub train: f64,
    /// The slowest update fetch.
    pub fetch: f64,
    /// Collection, from dispatch until the last update was in (or collection ended) and the
    /// cohort was screened.
    pub collect: f64,
    /// Combining: regional aggregates, unmasking, the aggregate, noise, server optimiser.
    pub aggregate: f64,
    /// Federated validation: the candidate to the silos, their scores, the gate.
    pub validate: f64,
    /// Committing: checkpoint staged and synced, journal, `CURRENT`, registry (0 for a
    /// candidate that was not committed when its round ended).
    pub commit: f64,
}

pub use crate::comparison::{ComparisonRow, Shortfall};

/// Something that happened in a federation.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The coordinator is listening.
    Listening {
        /// Bound address.
        addr: String,
        /// Coordinator name.
        node: String,
    },
    /// What this run trains and how it combines updates.
    Configured {
        /// The architecture, e.g. `mlp 22-32-1`.
        model: String,
        /// Kernel, clipping, server optimiser.
        aggregation: String,
        /// Rounds to run.
        rounds: u64,
    },
    /// Resumed from a committed version found in the state directory.
    Resumed {
        /// The version.
        version: u64,
        /// The next round number.
        next_round: u64,
    },
    /// A silo joined (its certificate verified, its trainer registered).
    SiloJoined {
        /// Name from its certificate.
        silo: String,
        /// Region from its certificate.
        region: String,
    },
    /// A regional aggregator linked (certificate verified, actor registered).
    AggregatorJoined {
        /// Its name.
        aggregator: String,
        /// Its region.
        region: String,
    },
    /// A regional aggregator left.
    AggregatorLeft {
        /// Its name.
        aggregator: String,
    },
    /// A silo that lacked some of the model's pinned files received them.
    ModelFilesSent {
        /// The silo.
        silo: String,
        /// The files' names.
        files: Vec<String>,
        /// Their bytes in all.
        bytes: u64,
    },
    /// A silo left (session closed).
    SiloLeft {
        /// The silo.
        silo: String,
    },
    /// A member of the roster (`[[members]]`) is missing: it never linked, its session closed,
    /// or its heartbeats stopped.
    MemberMissing {
        /// Its name.
        member: String,
        /// Its region, as the roster says.
        region: String,
        /// `silo` or `aggregator`.
        role: String,
    },
    /// A missing member of the roster is back.
    MemberReturned {
        /// Its name.
        member: String,
    },
    /// A node the roster does not list linked (it holds a consortium certificate: it may take
    /// part, but nobody expected it).
    UnexpectedMember {
        /// Its name.
        member: String,
        /// `silo` or `aggregator`.
        role: String,
    },
    /// A consortium certificate was refused a link: its declared name was not its own, or its
    /// identity already had a live link (a copied kit). Announced at most once per identity
    /// per 10 s; every refusal is in the log and the `fedsilo_link_refusals_total` metric.
    LinkRefused {
        /// The peer's address.
        peer: String,
        /// The certificate's identity (`name (role, region)`).
        certificate: String,
        /// Why.
        reason: String,
    },
    /// A dead link (silent beyond the silence limit) was replaced by a new link of the same
    /// identity.
    LinkReplaced {
        /// The identity's name.
        node: String,
        /// How long the old link had been silent, seconds.
        silent_secs: f64,
    },
    /// A silo stopped answering heartbeats.
    SiloUnhealthy {
        /// The silo.
        silo: String,
        /// Seconds since its last answer.
        silent_secs: f64,
    },
    /// A silo answers heartbeats again.
    SiloHealthy {
        /// The silo.
        silo: String,
    },
    /// Not enough eligible silos to start.
    WaitingForSilos {
        /// The policy's reasons.
        reasons: Vec<String>,
    },
    /// Feature scaling agreed from the silos' sums.
    ScalingAgreed {
        /// Silos that contributed.
        silos: Vec<String>,
        /// Training rows behind the statistics.
        rows: u64,
    },
    /// A silo was excluded from the federation (e.g. schema mismatch).
    SiloBlocked {
        /// The silo.
        silo: String,
        /// Why.
        reason: String,
    },
    /// A round was dispatched.
    RoundStarted {
        /// Round number.
        round: u64,
        /// Base version.
        base_version: u64,
        /// The cohort.
        cohort: Vec<String>,
        /// Left out, with reasons.
        excluded: Vec<(String, String)>,
        /// Silo-level DP: what dispatching it charged (the budget is spent at dispatch).
        privacy: Option<RoundSpend>,
    },
    /// An update was not admitted.
    UpdateRefused {
        /// Round number.
        round: u64,
        /// The silo.
        silo: String,
        /// Why.
        reason: String,
    },
    /// A round committed a new version.
    RoundCommitted(Box<RoundSummary>),
    /// A round's candidate failed validation; the current version stays and is announced again.
    RoundRejected {
        /// Round number.
        round: u64,
        /// The candidate, kept as a rejected version (none if there was none to keep).
        version: Option<u64>,
        /// The version that stays current; the next round trains from it.
        current: u64,
        /// Why.
        reason: String,
    },
    /// A silo was quarantined after repeated refusals.
    SiloQuarantined {
        /// The silo.
        silo: String,
        /// Excluded from rounds before this one.
        until_round: u64,
    },
    /// The policy file changed; the new policy applies from the next round.
    PolicyChanged {
        /// Digest of the new policy.
        digest: String,
    },
    /// The policy file changed but the new text is invalid; the old policy stays.
    PolicyRefused {
        /// The error.
        error: String,
    },
    /// A silo was left out of a round because the round would exceed its privacy budget.
    BudgetExcluded {
        /// Round number.
        round: u64,
        /// The silo.
        silo: String,
        /// The figures.
        reason: String,
    },
    /// The privacy budget leaves too few silos for another round: the federation stops.
    BudgetExhausted {
        /// The round that was refused.
        round: u64,
        /// Why.
        reason: String,
    },
    /// A candidate passed the gate and waits for an operator (`fedsilo models approve`); no
    /// round starts meanwhile.
    AwaitingApproval {
        /// The round that made it.
        round: u64,
        /// The candidate.
        version: u64,
    },
    /// An operator approved a candidate; it is now current.
    Approved {
        /// The version.
        version: u64,
        /// The operator.
        by: String,
    },
    /// Validation stopped improving (`validation.patience`): the run ends.
    EarlyStopped {
        /// The round whose version was the last without improvement.
        round: u64,
        /// The run's best version so far.
        best_version: u64,
        /// Its example-weighted held-out score.
        best_score: f64,
        /// Versions committed since, none better.
        since: u32,
    },
    /// An operator (or `validation.keep_best`) made an earlier version current again.
    RolledBack {
        /// The version that was current.
        from: u64,
        /// The version now current.
        to: u64,
        /// The operator.
        by: String,
    },
    /// An operator's decision was not applied.
    DecisionRefused {
        /// The decision file.
        file: String,
        /// Why.
        reason: String,
    },
    /// An operator (or a platform actor) paused the federation: no new round starts until it
    /// is resumed; a round in flight finishes.
    FederationPaused {
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// A training run started ([`crate::runs`]).
    RunStarted {
        /// Its id.
        run: u64,
        /// Rounds it asks for.
        rounds: u64,
        /// The round number its first round gets.
        first_round: u64,
    },
    /// A training run ended; the coordinator serves on (and starts the next queued run).
    RunEnded {
        /// Its id.
        run: u64,
        /// `finished`, `failed` or `cancelled`.
        outcome: String,
        /// Versions it committed.
        committed: u64,
        /// Why it failed, or why it was cancelled.
        reason: Option<String>,
    },
    /// A committed version was ordered deployed ([`crate::deploy`]).
    DeploymentOrdered {
        /// The order's id.
        deployment: u64,
        /// The version.
        version: u64,
        /// Where to, in words.
        target: String,
        /// Who ordered it.
        by: String,
    },
    /// A silo has a deployed version on its disk (it said so, or its heartbeat shows it).
    SiloDeployed {
        /// The silo.
        silo: String,
        /// The version.
        version: u64,
        /// The order it carried out (`None`: learned from its heartbeat).
        deployment: Option<u64>,
    },
    /// A silo refused a deployment; it is not asked again for that order.
    DeploymentRefused {
        /// The silo.
        silo: String,
        /// The version.
        version: u64,
        /// The order it refused.
        #[serde(default)]
        deployment: Option<u64>,
        /// Its reason.
        reason: String,
    },
    /// The federation was resumed: rounds start again.
    FederationResumed {
        /// Who.
        by: String,
    },
    /// While paused, an operator asked for one round to start.
    RoundRequested {
        /// Who.
        by: String,
        /// The round that will start.
        round: u64,
    },
    /// A round ended without a candidate (quorum lost, ...).
    RoundAbandoned {
        /// Round number.
        round: u64,
        /// Why.
        reason: String,
    },
    /// Local-only vs federated (vs pooled reference) comparison.
    Comparison {
        /// One row per silo.
        rows: Vec<ComparisonRow>,
        /// The silos where the federated model is worse than local-only, with the likely
        /// cause and what to try.
        shortfalls: Vec<Shortfall>,
    },
    /// The run is over.
    Finished {
        /// Rounds committed in this run.
        rounds_committed: u64,
        /// The current version.
        version: u64,
        /// Why it ended, when not successfully.
        error: Option<String>,
    },
}

/// How events are shown on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFormat {
    /// A round table for people.
    Table,
    /// One JSON object per line.
    Json,
}

struct Inner {
    file: File,
    table: Option<TableLayout>,
}

/// The round table's columns, fixed by the first committed round.
struct TableLayout {
    /// One AUC column per silo.
    silos: Vec<String>,
    /// A cumulative-ε column (silo-level DP on).
    epsilon: bool,
}

/// Fed every event, synchronously, as it is emitted (the coordinator's metrics): unlike a
/// subscriber, an observer never misses one.
pub trait Observer: Send + Sync {
    /// Takes one event into account.
    fn observe(&self, event: &Event);
}

/// Writes events to the journal file and stdout, and hands them to observers and subscribers.
pub struct EventLog {
    format: EventFormat,
    inner: Mutex<Inner>,
    observers: Vec<Arc<dyn Observer>>,
    subscribers: tokio::sync::broadcast::Sender<Event>,
}

/// Events a subscriber may fall behind by before it misses some.
const SUBSCRIBER_BACKLOG: usize = 4096;

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("format", &self.format)
            .finish()
    }
}

impl EventLog {
    /// Opens (appends to) `<state_dir>/events.jsonl`; every event is also handed to
    /// `observers`.
    pub fn open(
        state_dir: &Path,
        format: EventFormat,
        observers: Vec<Arc<dyn Observer>>,
    ) -> Result<Self> {
        let path = state_dir.join("events.jsonl");
        // A line torn by a crash is cut off, so the next event starts on a line of its own.
        crate::line_file::read_complete(&path).map_err(|e| Error::io("reading", &path, e))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io("opening", &path, e))?;
        Ok(Self {
            format,
            inner: Mutex::new(Inner { file, table: None }),
            observers,
            subscribers: tokio::sync::broadcast::channel(SUBSCRIBER_BACKLOG).0,
        })
    }

    /// Every event emitted from now on, in order (webhooks, custom actors). A subscriber that
    /// falls more than 4096 events behind is told how many it missed; emitting never waits
    /// for a subscriber.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.subscribers.subscribe()
    }

    /// Records and shows an event.
    pub fn emit(&self, event: Event) {
        for o in &self.observers {
            o.observe(&event);
        }
        let json = serde_json::to_string(&event)
            .unwrap_or_else(|e| format!("{{\"event\":\"unserialisable\",\"error\":\"{e}\"}}"));
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = writeln!(inner.file, "{json}").and_then(|_| inner.file.flush()) {
            tracing::error!("cannot append to events.jsonl: {e}");
        }
        let mut out = std::io::stdout().lock();
        let text = match self.format {
            EventFormat::Json => Some(json),
            EventFormat::Table => render(&event, &mut inner.table),
        };
        if let Some(t) = text {
            let _ = writeln!(out, "{t}");
            let _ = out.flush();
        }
        // Under the lock, so subscribers see the order of events.jsonl (sending never waits);
        // no subscriber is not an error.
        let _ = self.subscribers.send(event);
        drop(inner);
    }
}

/// The headline score (AUC, or a regression's R²) to three places, `-` without one.
fn score(m: Option<&EvalMetrics>) -> String {
    match m.and_then(EvalMetrics::score) {
        Some(a) => format!("{a:.3}"),
        None => "-".into(),
    }
}

fn render(event: &Event, layout: &mut Option<TableLayout>) -> Option<String> {
    Some(match event {
        Event::Listening { addr, node } => format!("coordinator `{node}` listening on {addr} (mTLS)"),
        Event::Configured { model, aggregation, rounds } => {
            format!("training {model} for {rounds} rounds; aggregation: {aggregation}")
        }
        Event::Resumed { version, next_round } => {
            format!("resumed from committed version {version}; next round {next_round}")
        }
        Event::SiloJoined { silo, region } => format!("+ silo {silo} joined (region {region})"),
        Event::SiloLeft { silo } => format!("- silo {silo} left"),
        Event::MemberMissing { member, region, role } => format!("! {role} {member} ({region}) of the roster is missing"),
        Event::MemberReturned { member } => format!("+ {member} of the roster is back"),
        Event::UnexpectedMember { member, role } => format!("! {role} {member} linked but is not in the roster ([[members]])"),
        Event::LinkRefused {
            peer,
            certificate,
            reason,
        } => format!("! link from {peer} ({certificate}) refused: {reason}"),
        Event::LinkReplaced { node, silent_secs } => {
            format!("! {node}: a dead link (silent {silent_secs:.1} s) was replaced by a new one")
        }
        Event::AggregatorJoined { aggregator, region } => format!("+ aggregator {aggregator} joined (region {region})"),
        Event::AggregatorLeft { aggregator } => format!("- aggregator {aggregator} left"),
        Event::SiloUnhealthy { silo, silent_secs } => {
            format!("! silo {silo} silent for {silent_secs:.1} s: excluded until it answers")
        }
        Event::SiloHealthy { silo } => format!("+ silo {silo} answers heartbeats again"),
        Event::WaitingForSilos { reasons } => format!("waiting for silos: {}", reasons.join("; ")),
        Event::ScalingAgreed { silos, rows } => format!(
            "feature scaling agreed from {} silos ({rows} training rows, sums only)",
            silos.len()
        ),
        Event::SiloBlocked { silo, reason } => format!("! silo {silo} blocked: {reason}"),
        Event::ModelFilesSent { silo, files, bytes } => format!(
            "sent {} ({}) to silo {silo}: the model's files it lacked, checked there against its manifest",
            files.join(", "),
            human_bytes(*bytes)
        ),
        Event::RoundStarted { .. } => return None,
        Event::UpdateRefused { round, silo, reason } => {
            format!("  round {round}: update of {silo} refused: {reason}")
        }
        Event::RoundCommitted(s) => {
            let mut text = String::new();
            let first = layout.is_none();
            let layout = layout.get_or_insert_with(|| TableLayout {
                silos: s.eval.keys().cloned().collect(),
                epsilon: s.privacy.is_some(),
            });
            let cols = &layout.silos;
            if first {
                text.push_str(&format!(
                    "{:>5} {:>7} {:>6} {:>10} {:>9}",
                    "round", "version", "silos", "train loss", "eval loss"
                ));
                let name = crate::model::eval::score_name(s.eval.values());
                for c in cols.iter() {
                    text.push_str(&format!(" {:>10}", format!("{name} {}", truncate(c, 6))));
                }
                text.push_str(&format!(" {:>8} {:>9} {:>10}", "wall s", "overhead", "max sent"));
                if layout.epsilon {
                    text.push_str(&format!(" {:>13}", "ε round/total"));
                }
                text.push('\n');
            }
            let silos = format!("{}/{}", s.participants.len(), s.participants.len() + s.missing.len());
            text.push_str(&format!(
                "{:>5} {:>7} {:>6} {:>10.4} {:>9.4}",
                s.round, s.version, silos, s.mean_train_loss, s.eval_loss
            ));
            for c in cols.iter() {
                text.push_str(&format!(" {:>10}", score(s.eval.get(c))));
            }
            let max_sent = s.bytes_from_silos.values().copied().max().unwrap_or(0);
            text.push_str(&format!(
                " {:>8.3} {:>9.3} {:>10}",
                s.wall_seconds,
                s.overhead_seconds,
                human_bytes(max_sent)
            ));
            if layout.epsilon {
                text.push_str(&match &s.privacy {
                    Some(p) => format!(" {:>13}", format!("{:.2}/{:.2}", p.round_epsilon, p.epsilon)),
                    None => format!(" {:>13}", "-"),
                });
            }
            for (silo, why) in &s.missing {
                text.push_str(&format!("\n        (no update from {silo}: {why})"));
            }
            text
        }
        Event::SiloQuarantined { silo, until_round } => {
            format!("! silo {silo} quarantined until round {until_round}")
        }
        Event::PolicyChanged { digest } => format!("policy changed (digest {}); applies from the next round", &digest[..12.min(digest.len())]),
        Event::PolicyRefused { error } => format!("! policy change refused, the current policy stays: {error}"),
        Event::RoundRejected {
            round,
            version,
            current,
            reason,
        } => format!(
            "{round:>5}  candidate{} rejected, v{current} stays current: {reason}",
            version.map_or(String::new(), |v| format!(" v{v}"))
        ),
        Event::RoundAbandoned { round, reason } => format!("{round:>5}  round abandoned: {reason}"),
        Event::FederationPaused { by, reason } => format!("federation paused by {by}: {reason} (no new round until resumed)"),
        Event::FederationResumed { by } => format!("federation resumed by {by}"),
        Event::RunStarted { run, rounds, first_round } => format!("run {run} started: {rounds} round(s) from round {first_round}"),
        Event::RunEnded { run, outcome, committed, reason } => format!(
            "run {run} {outcome}, {committed} version(s) committed{}; serving on (fedsilo run submit for another)",
            reason.as_ref().map_or(String::new(), |r| format!(": {r}"))
        ),
        Event::RoundRequested { by, round } => format!("round {round} requested by {by} while paused"),
        Event::DeploymentOrdered { deployment, version, target, by } => format!("deployment {deployment}: v{version} to {target}, ordered by {by}"),
        Event::SiloDeployed { silo, version, .. } => format!("{silo}: v{version} deployed"),
        Event::DeploymentRefused { silo, version, reason, .. } => format!("! {silo} refused the deployment of v{version}: {reason}"),
        Event::AwaitingApproval { round, version } => format!(
            "{round:>5}  candidate v{version} passed the gate; awaiting approval (fedsilo models approve {version} --kit <operator kit> --state-dir …)"
        ),
        Event::Approved { version, by } => format!("v{version} approved by {by}; it is current"),
        Event::EarlyStopped {
            round,
            best_version,
            best_score,
            since,
        } => format!(
            "{round:>5}  stopping early: {since} version(s) since v{best_version} ({best_score:.4}) without a better held-out score (validation.patience)"
        ),
        Event::RolledBack { from, to, by } => {
            format!("rolled back from v{from} to v{to} by {by}; the next round trains from v{to}")
        }
        Event::DecisionRefused { file, reason } => format!("! decision {file} refused: {reason}"),
        Event::BudgetExcluded { round, silo, reason } => {
            format!("  round {round}: {silo} left out: {reason}")
        }
        Event::BudgetExhausted { round, reason } => {
            format!("{round:>5}  round refused, privacy budget exhausted: {reason}")
        }
        Event::Comparison { rows, shortfalls } => crate::comparison::table(rows, shortfalls),
        Event::Finished {
            rounds_committed,
            version,
            error,
        } => match error {
            None => format!("federation finished: {rounds_committed} round(s) committed, current version {version}"),
            Some(e) => format!("federation stopped: {e} ({rounds_committed} round(s) committed, current version {version})"),
        },
    })
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn human_bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    } else if b >= 1 << 10 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(auc: Option<f64>, r2: Option<f64>) -> EvalMetrics {
        EvalMetrics {
            examples: 10,
            loss: 1.0,
            accuracy: auc.map(|_| 0.8),
            auc,
            r2,
            mae: r2.map(|_| 0.5),
            personalized: None,
            business: None,
        }
    }

    fn comparison(local: EvalMetrics, federated: EvalMetrics) -> String {
        let rows = vec![ComparisonRow {
            silo: "a".into(),
            examples: 10,
            local: Some(local),
            federated: Some(federated),
            pooled: None,
            note: None,
        }];
        let shortfalls = vec![];
        render(&Event::Comparison { rows, shortfalls }, &mut None).unwrap_or_default()
    }

    #[test]
    fn the_comparison_names_the_models_headline_score() {
        let c = comparison(figures(Some(0.7), None), figures(Some(0.8), None));
        assert!(c.contains("ROC AUC") && c.contains("+0.100"), "{c}");
        let r = comparison(figures(None, Some(0.2)), figures(None, Some(0.5)));
        assert!(r.contains("Held-out R²") && !r.contains("AUC"), "{r}");
        assert!(r.contains("0.200") && r.contains("+0.300"), "{r}");
    }
}
