//! Who is in the federation: the silos whose trainers joined the `fedsilo.trainer` process
//! group over a session bound to a certificate of role `silo`, the regional aggregators of
//! `fedsilo.aggregator`, their health (a ping every heartbeat interval: a frozen peer never
//! closes its session) and the schema check every joining silo must pass — sending a silo
//! of a described model the pinned files it lacks first, when the coordinator holds them
//! (`[model] files`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use fedsilo_policies::admission::QuarantineBook;
use ractor::ActorRef;
use tokio::sync::watch;

use super::messages::CoordinatorMessage;
use super::state::CoordinatorState;
use crate::cluster::{AGGREGATOR_GROUP, TRAINER_GROUP};
use crate::events::Event;
use crate::events::EventLog;
use crate::identity::Role;
use crate::model::files::ModelFiles;
use crate::model::Digest;
use crate::protocol::regional::RegionalHandle;
use crate::protocol::transfer::{put_file, FileSendError};
use crate::protocol::SiloHandle;
use crate::protocol::{call, FeatureStats, Request, Response, TrainerMessage};

/// Where a silo stands with the schema check every joining silo must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaCheck {
    /// Not asked yet (or the last attempt failed in transit): ask on the next tick.
    Pending,
    /// Asked, no answer yet.
    Asking,
    /// Same schema digest as the federation.
    Passed,
}

/// A connected silo.
pub struct SiloEntry {
    /// Its session and trainer.
    pub handle: SiloHandle,
    /// Region from its certificate.
    pub region: String,
    /// Role from its certificate.
    pub role: String,
    /// The fedsilo version it reported.
    pub software_version: String,
    /// Training rows it reported at its schema check: the most examples an update may claim.
    pub reported_rows: Option<u64>,
    /// Its last answered ping.
    pub last_ok: Instant,
    /// Answering pings.
    pub healthy: bool,
    /// A ping is out.
    pub ping_inflight: bool,
    /// The last ping sent before its last delivery ended: an answer to it or an earlier one
    /// may predate the delivery, and does not say what the silo has deployed.
    pub settled_after: u64,
    /// The schema check.
    pub schema: SchemaCheck,
    /// Left out of every round, with why.
    pub blocked: Option<String>,
    /// The version deployed there, as it last said (heartbeat or delivery).
    pub deployed: Option<crate::protocol::ModelRef>,
    /// A deployment is being delivered to it.
    pub deploying: bool,
    /// The last order it refused, why, and when (asked again for it only a minute later: a
    /// full disk may have been cleared, a missing directory made).
    pub deploy_refused: Option<(u64, String, Instant)>,
}

/// The federation's members.
pub struct Members {
    /// Connected silos, by name.
    pub silos: BTreeMap<String, SiloEntry>,
    /// Regional aggregators linked to this coordinator, by name.
    pub aggregators: BTreeMap<String, RegionalHandle>,
    /// Names of silos whose heartbeats stopped (rounds watch it).
    pub unhealthy: watch::Sender<BTreeSet<String>>,
    /// The last ping's sequence number.
    pub ping_seq: u64,
    /// Last failed round per silo name (kept across reconnects, for the cool-down rule).
    pub failures: BTreeMap<String, u64>,
    /// Quarantines by admission rules.
    pub quarantine: QuarantineBook,
    /// The model's files sent in full, as (silo, SHA-256): a silo asking again for one is
    /// blocked rather than sent it at every heartbeat.
    pub files_sent: std::sync::Arc<std::sync::Mutex<BTreeSet<(String, String)>>>,
}

impl Default for Members {
    fn default() -> Self {
        Self {
            silos: BTreeMap::new(),
            aggregators: BTreeMap::new(),
            unhealthy: watch::Sender::new(BTreeSet::new()),
            ping_seq: 0,
            failures: BTreeMap::new(),
            quarantine: QuarantineBook::default(),
            files_sent: Default::default(),
        }
    }
}

/// Re-reads the regional aggregators from their process group, reporting arrivals and
/// departures.
pub fn refresh_aggregators(state: &mut CoordinatorState) {
    let dir = state.links.directory.clone();
    let mut now = BTreeMap::new();
    for cell in ractor::pg::get_members(&AGGREGATOR_GROUP.to_string()) {
        let id = cell.get_id();
        if id.is_local() {
            continue;
        }
        let Some(identity) = dir.identity_of(id.node()) else {
            continue;
        };
        if identity.role != Role::Aggregator {
            tracing::warn!(peer = %identity, "a non-aggregator node registered an aggregator; ignored");
            continue;
        }
        now.insert(
            identity.name.clone(),
            RegionalHandle {
                name: identity.name,
                region: identity.region,
                actor: cell.into(),
            },
        );
    }
    let events = &state.ledger.events;
    for (name, h) in &now {
        if !state.members.aggregators.contains_key(name) {
            events.emit(Event::AggregatorJoined {
                aggregator: name.clone(),
                region: h.region.clone(),
            });
        }
    }
    for name in state.members.aggregators.keys() {
        if !now.contains_key(name) {
            events.emit(Event::AggregatorLeft {
                aggregator: name.clone(),
            });
        }
    }
    state.members.aggregators = now;
}

/// The silos' trainers now in the process group, one session per certificate name (the one
/// already known wins).
fn present_silos(state: &CoordinatorState) -> BTreeMap<String, SiloHandle> {
    let dir = &state.links.directory;
    let mut present: BTreeMap<String, SiloHandle> = BTreeMap::new();
    for cell in ractor::pg::get_members(&TRAINER_GROUP.to_string()) {
        let id = cell.get_id();
        if id.is_local() {
            continue;
        }
        let node_id = id.node();
        let Some(identity) = dir.identity_of(node_id) else {
            continue;
        };
        if identity.role != Role::Silo {
            tracing::warn!(peer = %identity, "a non-silo node registered a trainer; ignored");
            continue;
        }
        let handle = SiloHandle {
            name: identity.name.clone(),
            node_id,
            actor: ActorRef::<TrainerMessage>::from(cell),
        };
        match present.get(&identity.name) {
            // Two sessions with one certificate: keep the one we already knew.
            Some(existing)
                if state
                    .members
                    .silos
                    .get(&identity.name)
                    .is_some_and(|e| e.handle.node_id == existing.node_id) => {}
            _ => {
                present.insert(identity.name.clone(), handle);
            }
        }
    }
    present
}

/// Re-reads the silos from their process group: departures and arrivals are reported, and a
/// silo that reconnected is a new member (its schema is checked again).
pub fn refresh_membership(state: &mut CoordinatorState) {
    let present = present_silos(state);
    let gone: Vec<String> = state
        .members
        .silos
        .iter()
        .filter(|(name, e)| {
            present
                .get(*name)
                .is_none_or(|h| h.node_id != e.handle.node_id)
        })
        .map(|(n, _)| n.clone())
        .collect();
    for name in gone {
        state.members.silos.remove(&name);
        state.members.unhealthy.send_modify(|u| {
            u.remove(&name);
        });
        state.ledger.events.emit(Event::SiloLeft { silo: name });
    }
    for (name, handle) in present {
        if state.members.silos.contains_key(&name) {
            continue;
        }
        let (region, role) = state
            .links
            .directory
            .identity_of(handle.node_id)
            .map(|i| (i.region, i.role.as_str().to_string()))
            .unwrap_or_default();
        state.ledger.events.emit(Event::SiloJoined {
            silo: name.clone(),
            region: region.clone(),
        });
        state.members.silos.insert(
            name,
            SiloEntry {
                handle,
                last_ok: Instant::now(),
                healthy: true,
                ping_inflight: false,
                settled_after: 0,
                region,
                role,
                software_version: "0.0.0".into(),
                reported_rows: None,
                schema: SchemaCheck::Pending,
                blocked: None,
                deployed: None,
                deploying: false,
                deploy_refused: None,
            },
        );
    }
}

/// Asks every silo not checked yet for its schema digest, marks silent silos unhealthy and
/// pings every silo that has no ping out.
pub fn check_health(state: &mut CoordinatorState, myself: &ActorRef<CoordinatorMessage>) {
    let timeout = state.settings.heartbeat_timeout;
    let digest = state.links.data.digest;
    let events = state.ledger.events.clone();
    let files = state.settings.model_files.clone();
    let sent = state.members.files_sent.clone();
    let members = &mut state.members;
    for (name, e) in members.silos.iter_mut() {
        if e.schema == SchemaCheck::Pending && e.blocked.is_none() {
            e.schema = SchemaCheck::Asking;
            let (actor, node_id, silo, me) = (
                e.handle.actor.clone(),
                e.handle.node_id,
                name.clone(),
                myself.clone(),
            );
            let (files, events, sent) = (files.clone(), events.clone(), sent.clone());
            tokio::spawn(async move {
                let files = Files {
                    held: files.as_deref(),
                    events: &events,
                    sent: &sent,
                };
                let result = schema_check(&actor, &silo, digest, timeout * 4, files).await;
                let _ = me.cast(CoordinatorMessage::SchemaChecked {
                    silo,
                    node_id,
                    result,
                });
            });
        }
        let silent = e.last_ok.elapsed();
        if e.healthy && silent > timeout {
            e.healthy = false;
            members.unhealthy.send_modify(|u| {
                u.insert(name.clone());
            });
            events.emit(Event::SiloUnhealthy {
                silo: name.clone(),
                silent_secs: silent.as_secs_f64(),
            });
        }
        if !e.ping_inflight {
            e.ping_inflight = true;
            members.ping_seq += 1;
            let (seq, actor, node_id, silo, me) = (
                members.ping_seq,
                e.handle.actor.clone(),
                e.handle.node_id,
                name.clone(),
                myself.clone(),
            );
            tokio::spawn(async move {
                let (ok, deployed) =
                    match call(&actor, &Request::Ping { seq }, timeout, &silo).await {
                        Ok(Response::Pong { seq: s, deployed }) if s == seq => (true, deployed),
                        _ => (false, None),
                    };
                let _ = me.cast(CoordinatorMessage::PingResult {
                    silo,
                    node_id,
                    ok,
                    seq,
                    deployed,
                });
            });
        }
    }
}

/// Why a silo is blocked at its schema check (it stays connected; an operator sees why).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    /// It holds the federation's schema but its data cannot be used.
    #[error("refused at the schema check: {0}")]
    Unusable(String),
    /// It holds another schema.
    #[error("its schema (digest {}) differs from the federation's ({}): check that it runs with the same schema.toml", theirs.short(), ours.short())]
    Schema {
        /// The silo's schema digest.
        theirs: Digest,
        /// The federation's.
        ours: Digest,
    },
    /// It answered with something else.
    #[error("answered the schema check with {0}")]
    Answer(&'static str),
    /// It lacks files of the model that cannot be sent to it.
    #[error("the model's files: {0}")]
    Files(String),
}

/// What a schema check needs to send a silo the model's files it lacks.
struct Files<'a> {
    /// The files this coordinator holds (`[model] files`), if any.
    held: Option<&'a ModelFiles>,
    /// Where their sending is recorded.
    events: &'a EventLog,
    /// What was sent in full to whom.
    sent: &'a std::sync::Mutex<BTreeSet<(String, String)>>,
}

/// One silo's schema check: `Ok(Some((software version, training rows)))` when it holds the
/// federation's schema, `Ok(None)` to ask again, `Err` to block it with why. A silo that
/// lacks some of the model's files is sent them first (and asked again).
async fn schema_check(
    actor: &ActorRef<TrainerMessage>,
    silo: &str,
    digest: Digest,
    timeout: std::time::Duration,
    files: Files<'_>,
) -> Result<Option<(String, u64)>, Blocked> {
    match call(actor, &Request::FeatureStats, timeout, silo).await {
        Ok(Response::FeatureStats(st)) if st.schema_digest == digest => {
            if !st.missing_files.is_empty() {
                return send_files(actor, silo, &st, files, timeout).await;
            }
            match (st.unusable, st.loading) {
                (Some(why), _) => Err(Blocked::Unusable(why)),
                (None, true) => Ok(None),
                (None, false) => Ok(Some((st.software_version, st.rows))),
            }
        }
        Ok(Response::FeatureStats(st)) => Err(Blocked::Schema {
            theirs: st.schema_digest,
            ours: digest,
        }),
        Ok(other) => Err(Blocked::Answer(other.kind())),
        Err(e) => {
            tracing::warn!(silo, "schema check failed, will ask again: {e}");
            Ok(None)
        }
    }
}

/// Sends `silo` the pinned files it lacks (`missing`, by SHA-256), one after the other; then
/// `Ok(None)`: the schema check asks again once the silo has loaded its model. A transfer cut
/// in transit is tried again at the next check; a silo that refuses a file (its disk, its
/// digest check), asks for more files than the manifest pins, or asks again for one it was
/// sent in full is blocked with the reason rather than sent files at every heartbeat.
async fn send_files(
    actor: &ActorRef<TrainerMessage>,
    silo: &str,
    stats: &FeatureStats,
    files: Files<'_>,
    timeout: std::time::Duration,
) -> Result<Option<(String, u64)>, Blocked> {
    let missing = &stats.missing_files;
    let Some(held) = files.held else {
        return Err(Blocked::Files(format!(
            "it lacks {} of the files its manifest pins, and this coordinator has none to send (install them in the silo's --model-dir, or set [model] files in the federation file)",
            missing.len()
        )));
    };
    let missing: BTreeSet<String> = missing.iter().map(|s| s.to_lowercase()).collect();
    // A transfer cut off goes on from the bytes the silo holds.
    let from = |sha: &String| match &stats.partial {
        Some((s, held)) if s.eq_ignore_ascii_case(sha) => *held,
        _ => 0,
    };
    if missing.len() > held.files.len() {
        return Err(Blocked::Files(format!(
            "it asks for {} files; the manifest pins {}",
            missing.len(),
            held.files.len()
        )));
    }
    let sent_before = |sha: &String| {
        files
            .sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(silo.to_string(), sha.clone()))
    };
    let (mut names, mut bytes) = (Vec::new(), 0u64);
    for sha in &missing {
        let Some((asset, path, len)) = held.find(sha) else {
            return Err(Blocked::Files(format!(
                "it asks for a file (sha256 {sha}) the manifest does not pin"
            )));
        };
        if sent_before(sha) {
            return Err(Blocked::Files(format!(
                "it asks again for `{}`, which it was sent in full: its model directory lost it, or it misbehaves (this coordinator sends each file to a silo once)",
                asset.name
            )));
        }
        match put_file(actor, &asset.sha256, &path, (from(sha), len), timeout, silo).await {
            Ok(()) => {}
            Err(FileSendError::Refused(why)) => {
                return Err(Blocked::Files(format!(
                    "it refused `{}`: {why}",
                    asset.name
                )))
            }
            Err(e) => {
                tracing::warn!(silo, "sending `{}` failed, will try again: {e}", asset.name);
                return Ok(None);
            }
        }
        files
            .sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((silo.to_string(), sha.clone()));
        names.push(asset.name.clone());
        bytes += len;
    }
    files.events.emit(Event::ModelFilesSent {
        silo: silo.to_string(),
        files: names,
        bytes,
    });
    Ok(None)
}

/// A heartbeat answered (or not) by `silo`'s session `node_id`.
pub fn on_ping(
    state: &mut CoordinatorState,
    silo: String,
    node_id: u64,
    ok: bool,
    seq: u64,
    deployed: Option<crate::protocol::ModelRef>,
) {
    let Some(e) = state.members.silos.get_mut(&silo) else {
        return;
    };
    if e.handle.node_id != node_id {
        return;
    }
    e.ping_inflight = false;
    if ok {
        e.last_ok = Instant::now();
        // While a delivery is out, its answer says what the silo holds; a ping sent before it
        // ended may have been answered before it began.
        if !e.deploying && seq > e.settled_after && e.deployed != deployed {
            e.deployed = deployed;
            if let Some(m) = deployed {
                state.ledger.events.emit(Event::SiloDeployed {
                    silo: silo.clone(),
                    version: m.version,
                    deployment: None,
                });
            }
        }
        if !e.healthy {
            e.healthy = true;
            state.members.unhealthy.send_modify(|u| {
                u.remove(&silo);
            });
            state.ledger.events.emit(Event::SiloHealthy { silo });
        }
    }
}

/// `silo` left in the middle of a round (its link closed): it is not dispatched to again until
/// it answers a heartbeat — the round that saw it go may end before the cluster's process
/// group says so, and the next round must not count on it.
pub fn left_mid_round(state: &mut CoordinatorState, silo: &str) {
    if let Some(e) = state.members.silos.get_mut(silo) {
        if e.healthy {
            e.healthy = false;
            state.members.unhealthy.send_modify(|u| {
                u.insert(silo.to_string());
            });
            tracing::info!(
                silo,
                "left mid-round: not dispatched to until it answers a heartbeat"
            );
        }
    }
}

/// `silo`'s session `node_id` answered its schema check.
pub fn on_schema_checked(
    state: &mut CoordinatorState,
    silo: String,
    node_id: u64,
    result: Result<Option<(String, u64)>, Blocked>,
) {
    let Some(e) = state.members.silos.get_mut(&silo) else {
        return;
    };
    if e.handle.node_id != node_id {
        return;
    }
    match result {
        Ok(Some((version, rows))) => {
            e.schema = SchemaCheck::Passed;
            e.software_version = version;
            e.reported_rows = Some(rows);
        }
        Ok(None) => e.schema = SchemaCheck::Pending,
        Err(blocked) => {
            let reason = blocked.to_string();
            e.schema = SchemaCheck::Pending;
            e.blocked = Some(reason.clone());
            // The silo is told too, so that its own log and status say why it never trains.
            let (actor, timeout) = (e.handle.actor.clone(), state.settings.heartbeat_timeout);
            let (to, why) = (silo.clone(), reason.clone());
            tokio::spawn(async move {
                let told = Request::Blocked { reason: why };
                if let Err(e) = call(&actor, &told, timeout, &to).await {
                    tracing::debug!(silo = %to, "could not tell the silo it is blocked: {e}");
                }
            });
            state
                .ledger
                .events
                .emit(Event::SiloBlocked { silo, reason });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::manifest::Manifest;
    use crate::protocol::{decode, encode};
    use ractor::{Actor, ActorProcessingErr};

    /// The offsets of the chunks a fake silo took.
    type Offsets = std::sync::Arc<std::sync::Mutex<Vec<u64>>>;

    /// A silo's trainer that takes every chunk of a file (noting its offset), or refuses each
    /// with the reason given.
    struct FakeSilo;

    impl Actor for FakeSilo {
        type Msg = TrainerMessage;
        type State = (Option<String>, Offsets);
        type Arguments = (Option<String>, Offsets);

        async fn pre_start(
            &self,
            _: ActorRef<Self::Msg>,
            args: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(args)
        }

        async fn handle(
            &self,
            _: ActorRef<Self::Msg>,
            msg: Self::Msg,
            (refuse, offsets): &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let TrainerMessage::Rpc { frame, reply } = msg {
                let answer = match (decode::<Request>(&frame, "t")?, refuse.as_ref()) {
                    (_, Some(why)) => Response::Error {
                        message: why.clone(),
                    },
                    (Request::PutFile { offset, bytes, .. }, None) => {
                        offsets.lock().unwrap().push(offset);
                        Response::FileChunkStored {
                            received: offset + bytes.len() as u64,
                        }
                    }
                    (other, None) => Response::Error {
                        message: format!("unexpected {}", other.kind()),
                    },
                };
                let _ = reply.send(encode(&answer));
            }
            Ok(())
        }
    }

    /// A coordinator holding one pinned file, and the digest of that file.
    fn held(dir: &std::path::Path) -> (ModelFiles, String) {
        std::fs::write(dir.join("tokenizer.json"), b"{\"vocab\": 3}").unwrap();
        let sha = crate::model::files::sha256_file(&dir.join("tokenizer.json")).unwrap();
        let manifest = Manifest::parse(&format!(
            "architecture = \"x\"\n[task]\nkind = \"binary\"\nclasses = [\"a\", \"b\"]\n[data]\nlabel = \"y\"\n[[trainable]]\nname = \"w\"\nshape = [1]\n[[asset]]\nname = \"tokenizer.json\"\nsha256 = \"{sha}\"\n"
        ))
        .unwrap();
        (ModelFiles::check(&manifest, dir).unwrap(), sha)
    }

    /// A schema check's answer asking for `missing`, holding `partial`.
    fn asking(missing: &[String], partial: Option<(String, u64)>) -> FeatureStats {
        FeatureStats {
            schema_digest: Digest([0; 32]),
            software_version: "0".into(),
            rows: 1,
            count: vec![],
            sum: vec![],
            sum_sq: vec![],
            unusable: None,
            missing_files: missing.to_vec(),
            loading: false,
            partial,
        }
    }

    #[tokio::test]
    async fn each_file_goes_to_a_silo_once_and_a_silo_that_asks_too_much_is_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let (files, sha) = held(dir.path());
        let events = EventLog::open(dir.path(), crate::events::EventFormat::Json, vec![]).unwrap();
        let sent = std::sync::Mutex::new(BTreeSet::new());
        let with = |held| Files {
            held,
            events: &events,
            sent: &sent,
        };
        let offsets = Offsets::default();
        let (silo, _) = Actor::spawn(None, FakeSilo, (None, offsets.clone()))
            .await
            .unwrap();
        let t = std::time::Duration::from_secs(5);
        // Asked twice in one answer (and in capitals): sent once.
        let twice = vec![sha.clone(), sha.to_uppercase()];
        let r = send_files(&silo, "s", &asking(&twice, None), with(Some(&files)), t).await;
        assert_eq!(r, Ok(None));
        let log = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
        assert_eq!(log.matches("model_files_sent").count(), 1, "{log}");
        // Asked again after it arrived in full: blocked, not sent again.
        let again = send_files(
            &silo,
            "s",
            &asking(std::slice::from_ref(&sha), None),
            with(Some(&files)),
            t,
        )
        .await;
        assert!(
            matches!(&again, Err(Blocked::Files(w)) if w.contains("asks again")),
            "{again:?}"
        );
        // Another silo may have it; its cut transfer goes on from the byte it holds.
        let other = send_files(
            &silo,
            "s2",
            &asking(std::slice::from_ref(&sha), Some((sha.clone(), 5))),
            with(Some(&files)),
            t,
        )
        .await;
        assert_eq!(other, Ok(None));
        assert_eq!(
            *offsets.lock().unwrap(),
            vec![0, 5],
            "from 0 for s, from 5 for s2"
        );
        // More files than the manifest pins, or one it does not pin.
        let many = vec![sha.clone(), "ab".repeat(32)];
        let r = send_files(&silo, "s3", &asking(&many, None), with(Some(&files)), t).await;
        assert!(
            matches!(&r, Err(Blocked::Files(w)) if w.contains("pins 1")),
            "{r:?}"
        );
        let r = send_files(
            &silo,
            "s3",
            &asking(&["ab".repeat(32)], None),
            with(Some(&files)),
            t,
        )
        .await;
        assert!(
            matches!(&r, Err(Blocked::Files(w)) if w.contains("does not pin")),
            "{r:?}"
        );
        // Nothing to send from.
        let r = send_files(
            &silo,
            "s4",
            &asking(std::slice::from_ref(&sha), None),
            with(None),
            t,
        )
        .await;
        assert!(
            matches!(&r, Err(Blocked::Files(w)) if w.contains("[model] files")),
            "{r:?}"
        );
        // A silo that refuses the file is blocked with its reason, not sent it again.
        let refusing = (Some("disk full".to_string()), Offsets::default());
        let (refusing, _) = Actor::spawn(None, FakeSilo, refusing).await.unwrap();
        let r = send_files(
            &refusing,
            "s5",
            &asking(std::slice::from_ref(&sha), None),
            with(Some(&files)),
            t,
        )
        .await;
        assert!(
            matches!(&r, Err(Blocked::Files(w)) if w.contains("disk full")),
            "{r:?}"
        );
    }
}
