//! A version deployed to this silo: the coordinator's signed note is checked against the
//! silo's consortium CA and coordinator name, the model against this silo's data (the same
//! schema and scaling width, or the same manifest), and the values against the note's digest;
//! then they are kept on disk ([`fedsilo::deploy::DeployStore`]) and reported with every
//! heartbeat. `silo-node score` reads them back from there.
//!
//! The values come from the models this silo holds in memory (a committed version is usually
//! the candidate it scored, or the base it trained from), from a version it kept on disk (a
//! rollback), or else are asked for: the answer `Holds { held: false }` makes the coordinator
//! send them with `PutModel` and deploy again. The write is synced before the answer, so a
//! silo that says `Deployed` has it on disk.

use fedsilo::deploy::{DeploymentNote, SignedNote};
use fedsilo::model::Architecture;
use fedsilo::protocol::{ModelRef, Response};

use super::refusal::Refusal;
use super::requests::tabular;
use super::state::{err, LocalData, TrainerState};

/// The answer to `Deploy`.
pub(super) fn deploy(state: &mut TrainerState, signed: &SignedNote) -> Response {
    let Some(store) = state.args.deploy.clone() else {
        return err("this silo keeps no deployed models: start silo-node with --deploy-dir DIR");
    };
    let note = match store.verify(signed) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("refusing a deployment: {e}");
            return err(e);
        }
    };
    // A note for other silos, or older than the order this silo carried out last (a replay by
    // a peer that kept one), is refused: only the coordinator's latest order for it counts.
    let (name, region) = (&state.args.name, state.args.region.as_str());
    if !note.target.covers(name, region) {
        return err(format!(
            "deployment {} is for {}, not this silo",
            note.deployment,
            note.target.describe()
        ));
    }
    if let Some(last) = state.deployment.filter(|last| note.deployment < *last) {
        return err(format!(
            "deployment {} is older than deployment {last}, which this silo carried out already",
            note.deployment
        ));
    }
    if let Err(e) = fits(state, &note) {
        tracing::warn!(version = note.version, "refusing a deployment: {e}");
        return err(format!("cannot deploy v{}: {e}", note.version));
    }
    let model = ModelRef {
        version: note.version,
        digest: note.digest,
    };
    let values = match state.model(&model) {
        Ok(v) => v,
        Err(_) => match store.find(note.version, &note.digest) {
            Some(kept) => kept.values,
            None => return Response::Holds { held: false },
        },
    };
    match store.install(signed, &values) {
        Ok(_) => {
            if state.deployed != Some(model) {
                tracing::info!(
                    version = note.version,
                    digest = %note.digest.short(),
                    by = %note.ordered_by,
                    "deployed v{}",
                    note.version
                );
            }
            state.deployed = Some(model);
            state.deployment = Some(note.deployment);
            state.args.metrics.deployed(note.version);
            state.args.board.report(crate::status::Change::Deployed(
                note.version,
                note.digest.hex(),
            ));
            Response::Deployed { model }
        }
        Err(e) => {
            tracing::warn!(version = note.version, "cannot keep a deployment: {e}");
            err(e)
        }
    }
}

/// Whether the note's model is one this silo can score: the MLP of its schema under a scaling
/// of its width, or the model of its manifest.
fn fits(state: &TrainerState, note: &DeploymentNote) -> Result<(), Refusal> {
    match &note.spec {
        Architecture::Mlp(mlp) => {
            let data = tabular(state, &note.spec)?;
            state.check_spec(&data, mlp, &note.scaling)?;
            if note.values != mlp.layout().len as u64 {
                return Err(Refusal::Size("deployed model"));
            }
            Ok(())
        }
        Architecture::Described(d) => {
            let manifest = match &state.args.data {
                LocalData::Described(t) => Some(t.manifest().digest),
                LocalData::Awaiting(a) => Some(a.manifest.digest),
                LocalData::Tabular(_) => None,
            };
            if manifest != Some(d.manifest) {
                return Err(Refusal::WrongModel {
                    asked: note.spec.describe(),
                    holds: state.args.data.describe(),
                });
            }
            if note.values != d.layout().len as u64 {
                return Err(Refusal::Size("deployed model"));
            }
            Ok(())
        }
    }
}
