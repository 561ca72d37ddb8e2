//! # The Coordinator: the federation's state machine
//!
//! The only actor that advances the model version. It learns silos from the
//! `fedsilo.trainer` process group (sessions bound to certificates of role `silo`), pings
//! them, and when idle asks the Policy actor for a cohort: the first cohort agrees on feature
//! scaling, every later one runs a round ([`crate::round::run_round`], off the mailbox). A
//! validated candidate is committed here; operators pause, resume, approve, reject and roll
//! back through [`crate::control`] or signed decision files.
//!
//! One concern per file:
//!
//! | file | concern |
//! |---|---|
//! | `messages` | what the actor is sent, control requests and their errors |
//! | `settings` | what it starts with, what it reports at the end |
//! | `phase` | what it is doing ([`Phase`]) and whether it is paused ([`Hold`]): the state machine |
//! | `state` | its state: settings, links, ledger, versions, members, run, phase, hold |
//! | `actor` | the actor; `handle` is the only match on messages |
//! | `recovery` | the state from the state directory at start |
//! | `membership` | silos and aggregators joining and leaving, heartbeats, schema checks |
//! | `roster` | the members the federation file expects: who is missing, who is unexpected |
//! | `cohort` | who may train next (a pure function) and where updates are combined |
//! | `schedule` | starting work when idle: policy reload, budget, selection, dispatch |
//! | `scaling` | agreeing on feature scaling, once |
//! | `outcome` | what a finished round leaves: commit, approval pending, rejected, abandoned |
//! | `ledger` | the one order of every write: checkpoint → journal → `CURRENT` → registry |
//! | `versions` | the current version; `make_current` is the one place it changes |
//! | `governance` | pause, resume, a round by hand, approve, reject, roll back |
//! | `lifecycle` | the end of a run: comparison, `run_over`, `finish` |
//! | `stopping` | early stopping and keeping a run's best version (`[validation]` rules) |
//! | `jobs` | runs as jobs (serving): submit, cancel, start the next queued run, close one |
//! | `deployments` | deployment orders (operator, `auto_deploy`, rollback) and their delivery to each silo |
//! | `publish` | the status for the admin API |
//! | `fixture`, `tests`, `run_tests`, `deploy_tests` | the state machine's unit tests (no processes, no sockets) |
//!
//! The *federation* (members, versions, ledger, hold) lives as long as the coordinator; a
//! *run* ([`state::Run`]) is one series of rounds. The state directory's files and which
//! module writes each are listed in `docs/design.md`.

mod actor;
mod cohort;
mod deployments;
mod governance;
mod jobs;
mod ledger;
mod lifecycle;
mod membership;
mod messages;
mod outcome;
pub mod phase;
mod publish;
mod recovery;
mod roster;
mod scaling;
mod schedule;
mod settings;
pub mod state;
mod stopping;
mod versions;

#[cfg(test)]
mod deploy_tests;
#[cfg(test)]
mod fixture;
#[cfg(test)]
mod run_tests;
#[cfg(test)]
mod tests;

pub use actor::CoordinatorActor;
pub use lifecycle::task_failure;
pub use messages::{ControlError, ControlRequest, CoordinatorMessage, RunRequest, ScalingOutcome};
pub use phase::{Hold, Phase};
pub use settings::{CoordinatorArgs, CoordinatorSettings, PretrainedModel, RunResult};
