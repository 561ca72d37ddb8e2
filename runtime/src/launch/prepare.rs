//! Everything read before a port opens or the state directory is touched: webhook secrets,
//! admin tokens, the schema and the model it implies, a pretrained model, the certificate
//! kit and the policy, and whether configuration and policy go together. A mistake here stops
//! the start with the file and the key.

use std::path::Path;

use anyhow::{bail, Context};
use fedsilo_policies::Policy;

use crate::admin::tokens::TokenFile;
use crate::compatibility::{self, Configured};
use crate::coordinator::PretrainedModel;
use crate::data::Schema;
use crate::federation::FederationConfig;
use crate::identity::Role;
use crate::model::{Digest, ModelSpec};
use crate::tls::NodeCredentials;
use crate::webhooks;

/// What the start read and checked.
pub struct Prepared {
    /// Webhooks, their secrets read.
    pub hooks: webhooks::Prepared,
    /// Admin API bearer tokens, if configured.
    pub tokens: Option<TokenFile>,
    /// The federation's schema.
    pub schema: Schema,
    /// The model it implies.
    pub spec: ModelSpec,
    /// A pretrained initial model, if configured.
    pub initial: Option<PretrainedModel>,
    /// The coordinator's certificate kit.
    pub creds: NodeCredentials,
    /// The policy.
    pub policy: Policy,
    /// What the configuration fixes, as the policy rules need it.
    pub configured: Configured,
}

/// Reads and checks what `cfg` names (see the module documentation).
pub fn prepare(cfg: &FederationConfig, origin: &str) -> anyhow::Result<Prepared> {
    // Webhook secrets and CA files are read now: a mistake stops the start, naming the hook.
    let hooks = webhooks::prepare(&cfg.webhooks, origin)?;
    let tokens = match cfg.admin.as_ref().and_then(|a| a.tokens.as_ref()) {
        Some(path) => Some(TokenFile::open(path).context("admin.tokens")?),
        None => None,
    };
    // The model first: a schema or pretrained file that does not fit is an error before any
    // certificate is read or port opened.
    let schema = Schema::load(&cfg.model.schema)?;
    let spec = ModelSpec {
        inputs: schema.encoded_width(),
        hidden: cfg.model.hidden.clone(),
    };
    spec.validate()
        .map_err(|e| anyhow::anyhow!("{origin}: [model]: {e}"))?;
    let initial = match &cfg.model.initial {
        None => None,
        Some(path) => Some(pretrained(path, &spec)?),
    };
    if let Some(plan) = &cfg.plan.lora {
        crate::model::lora::Adapters::new(&spec, plan)
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        if cfg.aggregation.server_optimizer.is_some() {
            bail!("{origin}: [plan.lora] with [aggregation.server_optimizer] is not supported: the optimiser's state is kept for full models");
        }
    }
    let creds = NodeCredentials::load_kit(&cfg.network.kit)
        .context("loading the coordinator's certificate kit")?;
    if creds.identity().role != Role::Coordinator {
        bail!(
            "{}: certificate of role {}, the coordinator needs role coordinator",
            cfg.network.kit.display(),
            creds.identity().role
        );
    }
    let policy = Policy::load(&cfg.federation.policy)?;
    for w in policy.warnings() {
        tracing::warn!("{}: {w}", cfg.federation.policy.display());
        eprintln!("fedsilo: warning: {}: {w}", cfg.federation.policy.display());
    }
    let compression = cfg
        .plan
        .compression()
        .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    // The same rules hold at every policy reload (the Policy actor checks them).
    let configured = Configured {
        aggregation: cfg.aggregation.clone(),
        lora: cfg.plan.lora.is_some(),
        compression,
    };
    compatibility::check(&configured, &policy).map_err(|e| {
        anyhow::anyhow!(
            "{} and {origin} disagree: {e}",
            cfg.federation.policy.display()
        )
    })?;
    Ok(Prepared {
        hooks,
        tokens,
        schema,
        spec,
        initial,
        creds,
        policy,
        configured,
    })
}

/// Reads `model.initial`: the tensors of `spec`'s layout, F32, finite; errors name the file
/// and the tensor.
fn pretrained(path: &Path, spec: &ModelSpec) -> anyhow::Result<PretrainedModel> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path)
        .with_context(|| format!("model.initial: reading the pretrained model {origin}"))?;
    let set = crate::model::tensor_file::TensorSet::from_bytes(&bytes, &origin)
        .with_context(|| format!("model.initial: reading the pretrained model {origin}"))?;
    let params = set.to_layout(&spec.layout(), &origin).with_context(|| {
        format!(
            "model.initial: {origin} is not a `{}` (hidden = {:?} in the federation file)",
            spec.describe(),
            spec.hidden
        )
    })?;
    Ok(PretrainedModel {
        params,
        origin: format!("{origin} (sha256 {})", Digest::of_bytes(&bytes).hex()),
    })
}
