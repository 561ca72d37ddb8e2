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
use crate::data::{DataContract, Schema};
use crate::federation::FederationConfig;
use crate::identity::Role;
use crate::model::files::ModelFiles;
use crate::model::manifest::Manifest;
use crate::model::{Architecture, Digest, ModelSpec};
use crate::tls::NodeCredentials;
use crate::webhooks;

/// What the start read and checked.
pub struct Prepared {
    /// Webhooks, their secrets read.
    pub hooks: webhooks::Prepared,
    /// Admin API bearer tokens, if configured.
    pub tokens: Option<TokenFile>,
    /// What every silo's data must agree on.
    pub data: DataContract,
    /// The model: the MLP the schema implies, or the one a manifest describes.
    pub spec: Architecture,
    /// The manifest's pinned files, to send to silos that lack them (`model.files`).
    pub files: Option<std::sync::Arc<ModelFiles>>,
    /// A pretrained initial model, if configured.
    pub initial: Option<PretrainedModel>,
    /// The pooled reference of the end-of-run comparison, if configured.
    pub pooled_reference: Option<PretrainedModel>,
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
    let (data, spec) = model(cfg)?;
    spec.validate()
        .map_err(|e| anyhow::anyhow!("{origin}: [model]: {e}"))?;
    let initial = match &cfg.model.initial {
        None => None,
        Some(path) => Some(pretrained("model.initial", path, &spec)?),
    };
    let pooled_reference = match &cfg.federation.pooled_reference {
        None => None,
        Some(path) => Some(pretrained("federation.pooled_reference", path, &spec)?),
    };
    let files = match (&cfg.model.files, &cfg.model.manifest) {
        (Some(dir), Some(manifest)) => {
            let m = Manifest::load(manifest)
                .with_context(|| format!("model.manifest: {}", manifest.display()))?;
            let files = ModelFiles::check(&m, dir)
                .with_context(|| format!("model.files: {}", dir.display()))?;
            Some(std::sync::Arc::new(files))
        }
        _ => None,
    };
    if let Some(plan) = &cfg.plan.lora {
        let Some(mlp) = spec.mlp() else {
            bail!("{origin}: [plan.lora] is for the built-in MLP; a model with a manifest declares its own adapters");
        };
        crate::model::lora::Adapters::new(mlp, plan)
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
    // The default plan's server optimiser, where it was chosen for (kernels::kernel): the
    // built-in MLP trained whole, without silo-level DP (momentum would sum the noise).
    let tuned_for =
        cfg.plan.lora.is_none() && cfg.model.manifest.is_none() && policy.privacy.is_none();
    // The same rules hold at every policy reload (the Policy actor checks them).
    let configured = Configured {
        aggregation: cfg.aggregation.clone().with_default_plan(tuned_for),
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
        data,
        spec,
        files,
        initial,
        pooled_reference,
        creds,
        policy,
        configured,
    })
}

/// The data contract and the model `[model]` names: a schema and the MLP it implies, or a
/// manifest and the model it describes.
fn model(cfg: &FederationConfig) -> anyhow::Result<(DataContract, Architecture)> {
    if let Some(path) = &cfg.model.manifest {
        let manifest =
            Manifest::load(path).with_context(|| format!("model.manifest: {}", path.display()))?;
        return Ok((
            (&manifest).into(),
            Architecture::Described(manifest.described()),
        ));
    }
    let Some(path) = &cfg.model.schema else {
        bail!("[model] needs `schema` or `manifest`");
    };
    let schema = Schema::load(path)?;
    schema
        .for_mlp()
        .with_context(|| format!("model.schema: {}", path.display()))?;
    let ignored = schema.text_columns();
    if !ignored.is_empty() {
        tracing::warn!(
            "{}: the built-in MLP ignores the text column(s) {}",
            path.display(),
            ignored.join(", ")
        );
    }
    let spec = ModelSpec {
        inputs: schema.encoded_width(),
        hidden: cfg.model.hidden.clone(),
    };
    Ok(((&schema).into(), Architecture::Mlp(spec)))
}

/// Reads the model file `key` names: the tensors of `spec`'s layout, finite; errors name the file and
/// the tensor.
fn pretrained(key: &str, path: &Path, spec: &Architecture) -> anyhow::Result<PretrainedModel> {
    let origin = path.display().to_string();
    let bytes =
        std::fs::read(path).with_context(|| format!("{key}: reading the model {origin}"))?;
    let set = crate::model::tensor_file::TensorSet::from_bytes(&bytes, &origin)
        .with_context(|| format!("{key}: reading the model {origin}"))?;
    if let Architecture::Described(d) = spec {
        written_for(key, &bytes, d, &origin)?;
    }
    let params = set
        .to_layout(&spec.layout(), &origin)
        .with_context(|| match spec {
            Architecture::Mlp(mlp) => format!(
                "{key}: {origin} is not a `{}` (hidden = {:?} in the federation file)",
                mlp.describe(),
                mlp.hidden
            ),
            Architecture::Described(_) => format!(
                "{key}: {origin} does not hold the trainable tensors of the manifest, `{}`",
                spec.describe()
            ),
        })?;
    Ok(PretrainedModel {
        params: std::sync::Arc::new(params),
        origin: format!("{origin} (sha256 {})", Digest::of_bytes(&bytes).hex()),
    })
}

/// fedsilo-model writes the manifest's digest into the initial values: another manifest's
/// values, even of the same shapes, are not this model's. A file without the mark (written by
/// other tools) is judged by its tensors alone.
fn written_for(
    key: &str,
    bytes: &[u8],
    d: &crate::model::Described,
    origin: &str,
) -> anyhow::Result<()> {
    let written = safetensors::SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, h)| h.metadata().clone())
        .and_then(|m| m.get("fedsilo.manifest").cloned());
    match written {
        Some(w) if w != d.manifest.hex() => bail!(
            "{key}: {origin} was written for manifest {}, not model.manifest's {}",
            w.chars().take(12).collect::<String>(),
            d.manifest.short()
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tensor_file::TensorSet;
    use std::collections::HashMap;

    #[test]
    fn initial_values_of_another_manifest_are_refused() {
        let d = crate::model::Described {
            architecture: "x".into(),
            manifest: Digest::of_bytes(b"ours"),
            tensors: vec![("w".into(), vec![2])],
        };
        let dir = tempfile::tempdir().unwrap();
        let set = TensorSet::from_layout(&d.layout(), &[0.5, 1.0]);
        let write = |mark: Option<String>| {
            let path = dir.path().join("initial.safetensors");
            let meta: HashMap<String, String> = mark
                .map(|m| ("fedsilo.manifest".to_string(), m))
                .into_iter()
                .collect();
            set.write_like(&set.values, &path, meta).unwrap();
            std::fs::read(&path).unwrap()
        };
        assert!(written_for("model.initial", &write(Some(d.manifest.hex())), &d, "i").is_ok());
        assert!(written_for("model.initial", &write(None), &d, "i").is_ok());
        let e = written_for(
            "model.initial",
            &write(Some(Digest::of_bytes(b"theirs").hex())),
            &d,
            "i",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("written for manifest") && e.contains(&d.manifest.short()),
            "{e}"
        );
        // A mark that is not even hex (multi-byte characters) is named, not a panic.
        let e = written_for("model.initial", &write(Some("é".repeat(20))), &d, "i")
            .unwrap_err()
            .to_string();
        assert!(e.contains("éééé"), "{e}");
    }
}
