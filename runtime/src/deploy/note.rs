//! The deployment note: what the coordinator puts to use at a silo, signed with the key of its
//! certificate.
//!
//! The body is JSON (readable in the silo's deployment directory by whoever audits it); the
//! signature is ECDSA P-256 over exactly those bytes, and the signer's certificate travels with
//! it so that a silo — or `silo-node score`, long after — checks it against nothing but its
//! own consortium CA and the coordinator's name it was configured with.

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::DeployError;
use crate::identity::signature::{verify, CaCheck};
use crate::identity::{Identity, Role};
use crate::model::scaling::Scaling;
use crate::model::{Architecture, Digest};
use crate::tls::NodeCredentials;

/// What is deployed: one version's values, and what is needed to score with them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentNote {
    /// The order it carries out (its id in the coordinator's book).
    pub deployment: u64,
    /// The version.
    pub version: u64,
    /// SHA-256 of the values (little-endian f32): the version's parameter digest.
    pub digest: Digest,
    /// Number of values.
    pub values: u64,
    /// The architecture the values are for.
    pub spec: Architecture,
    /// The feature scaling the version was trained with (empty for a described model).
    pub scaling: Scaling,
    /// Who ordered it (an operator's certificate or token name, `policy auto_deploy`, or a
    /// rollback's operator).
    pub ordered_by: String,
    /// When the coordinator signed it, ms since the Unix epoch.
    pub signed_ms: u64,
    /// The silos it is for: a silo refuses a note meant for others (relayed by another peer).
    pub target: super::Target,
}

/// A [`DeploymentNote`] as signed: its JSON body, the signature and the signer's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedNote {
    /// The note, JSON.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// ECDSA P-256 / SHA-256 over `body`, ASN.1 DER.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    /// The signer's certificate, DER.
    #[serde(with = "serde_bytes")]
    pub certificate: Vec<u8>,
}

impl SignedNote {
    /// Signs `note` with the key of `creds` (the coordinator's).
    pub fn sign(note: &DeploymentNote, creds: &NodeCredentials) -> Result<Self, DeployError> {
        let body = serde_json::to_vec_pretty(note).map_err(|e| DeployError::Note(e.to_string()))?;
        let cannot = |e: String| DeployError::Signature(format!("cannot sign: {e}"));
        let signer = creds.signer().map_err(|e| cannot(e.to_string()))?;
        let signature = signer.sign(&body).map_err(|e| cannot(e.to_string()))?;
        Ok(SignedNote {
            body,
            signature,
            certificate: creds.cert_der().to_vec(),
        })
    }

    /// The note, if `ca` issued the signer's certificate (valid when it signed), the
    /// certificate is of role coordinator named `coordinator`, and the signature matches.
    pub fn verify(&self, ca: &CaCheck, coordinator: &str) -> Result<DeploymentNote, DeployError> {
        let refuse = |why: String| DeployError::Signature(why);
        let signer = Identity::from_cert_der(&self.certificate, "the deployment's signer")
            .map_err(|e| refuse(e.to_string()))?;
        if signer.role != Role::Coordinator || signer.name != coordinator {
            return Err(refuse(format!(
                "signed by {} (role {}); this silo takes deployments only from its coordinator `{coordinator}`",
                signer.name, signer.role
            )));
        }
        verify(&self.certificate, &self.body, &self.signature)
            .map_err(|e| refuse(e.to_string()))?;
        let note: DeploymentNote =
            serde_json::from_slice(&self.body).map_err(|e| DeployError::Note(e.to_string()))?;
        let at = UNIX_EPOCH + Duration::from_millis(note.signed_ms);
        ca.issued(&self.certificate, at)
            .map_err(|e| refuse(e.to_string()))?;
        Ok(note)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::CertificateAuthority;
    use crate::identity::signature::tests::kit;
    use crate::model::ModelSpec;

    fn note() -> DeploymentNote {
        DeploymentNote {
            deployment: 1,
            version: 3,
            digest: Digest::of_f32(&[1.0, 2.0]),
            values: 2,
            spec: ModelSpec {
                inputs: 1,
                hidden: vec![],
            }
            .into(),
            scaling: Scaling {
                mean: vec![0.0],
                std: vec![1.0],
            },
            ordered_by: "alice".into(),
            signed_ms: crate::audit::entry::now_ms(),
            target: super::super::Target::All,
        }
    }

    #[test]
    fn a_note_signed_by_the_coordinator_verifies_and_any_change_is_refused() {
        let ca = CertificateAuthority::generate("test", 30).unwrap().0;
        let coordinator = kit(&ca, "coordinator", Role::Coordinator);
        let check = CaCheck::new(coordinator.roots());
        let note = note();
        let signed = SignedNote::sign(&note, &coordinator).unwrap();
        assert_eq!(signed.verify(&check, "coordinator").unwrap(), note);

        // Another coordinator name than the silo was configured with.
        let e = signed.verify(&check, "other").unwrap_err().to_string();
        assert!(e.contains("only from its coordinator `other`"), "{e}");
        // A body changed after signing.
        let mut tampered = signed.clone();
        let text = String::from_utf8(tampered.body.clone()).unwrap();
        tampered.body = text
            .replace("\"version\": 3", "\"version\": 4")
            .into_bytes();
        assert_ne!(tampered.body, signed.body);
        let e = tampered
            .verify(&check, "coordinator")
            .unwrap_err()
            .to_string();
        assert!(e.contains("signature does not match"), "{e}");
    }

    #[test]
    fn a_silo_or_a_foreign_ca_cannot_sign_a_deployment() {
        let ca = CertificateAuthority::generate("test", 30).unwrap().0;
        let check = CaCheck::new(kit(&ca, "coordinator", Role::Coordinator).roots());
        // A consortium member, but a silo: refused whatever its name.
        let silo = kit(&ca, "coordinator", Role::Silo);
        let e = SignedNote::sign(&note(), &silo)
            .unwrap()
            .verify(&check, "coordinator")
            .unwrap_err()
            .to_string();
        assert!(e.contains("role silo"), "{e}");
        // A coordinator certificate from another CA.
        let other = CertificateAuthority::generate("another", 30).unwrap().0;
        let foreign = kit(&other, "coordinator", Role::Coordinator);
        let e = SignedNote::sign(&note(), &foreign)
            .unwrap()
            .verify(&check, "coordinator")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not issued by the consortium CA"), "{e}");
    }
}
