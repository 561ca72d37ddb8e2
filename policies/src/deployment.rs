//! `[deployment]`: whether a version is put to use at the silos as soon as it becomes current.
//!
//! ```toml
//! [deployment]
//! auto_deploy = true   # every committed or approved version is deployed to every silo
//! ```
//!
//! Without it (the default) a version is deployed only when an operator orders it
//! (`fedsilo deploy create`, `POST /v1/deployments`). A rollback redeploys the version rolled
//! back to wherever a later one was deployed, whatever this says.

use serde::{Deserialize, Serialize};

/// `[deployment]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRules {
    /// Deploy every version that becomes current (committed, or approved) to every silo.
    #[serde(default)]
    pub auto_deploy: bool,
}

impl DeploymentRules {
    /// Whether the policy `rules` (its `[deployment]`, if any) deploys every new version.
    pub fn auto(rules: Option<&DeploymentRules>) -> bool {
        rules.is_some_and(|r| r.auto_deploy)
    }
}

#[cfg(test)]
mod tests {
    use crate::Policy;

    #[test]
    fn auto_deploy_is_off_unless_the_policy_says_so() {
        let p = Policy::from_toml_str("", "test").unwrap();
        assert!(!super::DeploymentRules::auto(p.deployment.as_ref()));
        let p = Policy::from_toml_str("[deployment]\nauto_deploy = true\n", "test").unwrap();
        assert!(super::DeploymentRules::auto(p.deployment.as_ref()));
        let e = Policy::from_toml_str("[deployment]\nauto = true\n", "test")
            .unwrap_err()
            .to_string();
        assert!(e.contains("auto"), "{e}");
    }
}
