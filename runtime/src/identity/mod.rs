//! Who a node is: its name, role and region, as stated in its certificate.
//!
//! A node's [`Identity`] is read from its *verified* certificate ([`Identity::from_cert_der`]),
//! never from what a message claims. Certificates made by `fedsilo certs` carry the name as the
//! subject common name and as a DNS subject-alternative name (so TLS server-name checks use it),
//! and role and region as URI subject-alternative names `fedsilo:role/<role>` and
//! `fedsilo:region/<region>`.

pub mod revocation;
pub mod signature;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{Error, Result};

/// URI prefix of the role SAN.
pub const ROLE_URI_PREFIX: &str = "fedsilo:role/";
/// URI prefix of the region SAN.
pub const REGION_URI_PREFIX: &str = "fedsilo:region/";
/// The region of a node made without one.
pub const DEFAULT_REGION: &str = "global";

/// What a node does in the federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs the round state machine (and, for now, aggregation and validation).
    Coordinator,
    /// Combines updates (regional or sharded aggregators).
    Aggregator,
    /// Holds data and trains.
    Silo,
    /// A person (or their automation) who approves, rejects and rolls back versions.
    Operator,
}

impl Role {
    /// The lowercase name used in certificates and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Aggregator => "aggregator",
            Role::Silo => "silo",
            Role::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role or a name that cannot be a node's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not one of the four roles.
    #[error("unknown role `{0}` (allowed: coordinator, aggregator, silo, operator)")]
    UnknownRole(String),
    /// Not a DNS label.
    #[error("{what} `{name}` is not allowed: use 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'")]
    BadName {
        /// What it names ("node name", "region", ...).
        what: String,
        /// The name.
        name: String,
    },
}

impl FromStr for Role {
    type Err = IdentityError;
    fn from_str(s: &str) -> std::result::Result<Self, IdentityError> {
        match s {
            "coordinator" => Ok(Role::Coordinator),
            "aggregator" => Ok(Role::Aggregator),
            "silo" => Ok(Role::Silo),
            "operator" => Ok(Role::Operator),
            other => Err(IdentityError::UnknownRole(other.to_string())),
        }
    }
}

/// A node's identity. Invariant: `name` and `region` pass [`validate_name`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// Node name, unique in the consortium (a DNS label).
    pub name: String,
    /// The node's role.
    pub role: Role,
    /// The node's region (a DNS label, e.g. `eu-west`).
    pub region: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, region {})", self.name, self.role, self.region)
    }
}

/// Checks that `s` is usable as a node name or region: 1–63 characters of `a-z`, `0-9` and
/// `-`, not starting or ending with `-` (a DNS label, so it can be a TLS server name).
pub fn validate_name(what: &str, s: &str) -> std::result::Result<(), IdentityError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadName {
            what: what.to_string(),
            name: s.to_string(),
        })
    }
}

impl Identity {
    /// Reads the identity from a DER certificate. `origin` names the file or peer for errors.
    /// The certificate's signature is *not* checked here: call this only on a certificate that
    /// TLS has verified, or on one of your own.
    pub fn from_cert_der(der: &[u8], origin: &str) -> Result<Self> {
        let bad = |message: String| Error::Certificate {
            origin: origin.to_string(),
            message,
        };
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| bad(format!("not a valid X.509 certificate: {e}")))?;
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or_else(|| bad("no subject common name".into()))?
            .to_string();
        validate_name("node name", &name).map_err(|e| bad(e.to_string()))?;
        let mut role = None;
        let mut region = None;
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for gn in &san.value.general_names {
                if let GeneralName::URI(uri) = gn {
                    if let Some(r) = uri.strip_prefix(ROLE_URI_PREFIX) {
                        role = Some(Role::from_str(r).map_err(|e| bad(e.to_string()))?);
                    } else if let Some(r) = uri.strip_prefix(REGION_URI_PREFIX) {
                        validate_name("region", r).map_err(|e| bad(e.to_string()))?;
                        region = Some(r.to_string());
                    }
                }
            }
        }
        let role = role.ok_or_else(|| {
            bad(format!(
                "no role: expected a URI subject-alternative name `{ROLE_URI_PREFIX}<role>` (made by `fedsilo certs`)"
            ))
        })?;
        Ok(Identity {
            name,
            role,
            region: region.unwrap_or_else(|| DEFAULT_REGION.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        assert!(validate_name("n", "silo-1").is_ok());
        assert!(validate_name("n", "Silo").is_err());
        assert!(validate_name("n", "-a").is_err());
        assert!(validate_name("n", "").is_err());
        assert!(validate_name("n", "a_b").is_err());
    }

    #[test]
    fn garbage_is_an_error_naming_the_origin() {
        let e = Identity::from_cert_der(b"nope", "peer 1.2.3.4").unwrap_err();
        assert!(e.to_string().contains("peer 1.2.3.4"));
    }
}
