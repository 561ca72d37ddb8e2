//! Who is calling the admin API, and whether they may.
//!
//! A caller authenticates with an operator certificate (mutual TLS, issued by the consortium
//! CA to role `operator`: every scope) or with a bearer token (`Authorization: Bearer …`, the
//! scope its entry in the tokens file gives). A token, when sent, decides; a certificate of
//! another role (a silo's, say) grants nothing.

use axum::http::HeaderMap;

use super::tokens::{Scope, TokenFile};
use crate::identity::{Identity, Role};

/// The verified client certificate of a connection, if it presented one.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Its identity and DER (hex), read from the certificate the TLS handshake verified.
    pub certificate: Option<(Identity, String)>,
    /// The client's address, for the log of refusals.
    pub addr: String,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    /// An operator, by certificate.
    Operator {
        /// Name from the certificate.
        name: String,
        /// The certificate, DER, hex.
        certificate: String,
    },
    /// An automation tool, by token.
    Token {
        /// The token's name.
        name: String,
        /// Its scope.
        scope: Scope,
    },
}

impl Caller {
    /// What the caller may do.
    pub fn scope(&self) -> Scope {
        match self {
            Caller::Operator { .. } => Scope::Operate,
            Caller::Token { scope, .. } => *scope,
        }
    }

    /// How the audit journal names the caller.
    pub fn by(&self) -> String {
        match self {
            Caller::Operator { name, .. } => name.clone(),
            Caller::Token { name, .. } => format!("token {name}"),
        }
    }

    /// The certificate (DER, hex) the caller authenticated with, if any.
    pub fn certificate(&self) -> String {
        match self {
            Caller::Operator { certificate, .. } => certificate.clone(),
            Caller::Token { .. } => String::new(),
        }
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, or unknown ones (HTTP 401).
    Unauthenticated(String),
    /// Known, but not allowed this (HTTP 403).
    Forbidden(String),
}

/// Authenticates a request from its headers and its connection's certificate.
pub fn authenticate(
    headers: &HeaderMap,
    peer: &Peer,
    tokens: Option<&TokenFile>,
) -> Result<Caller, Denied> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                Denied::Unauthenticated("the Authorization header must be `Bearer <token>`".into())
            })?;
        let Some(tokens) = tokens else {
            return Err(Denied::Unauthenticated(
                "this coordinator accepts no tokens (admin.tokens is not set); use an operator certificate".into(),
            ));
        };
        return match tokens.lookup(token) {
            Some((name, scope)) => Ok(Caller::Token { name, scope }),
            None => Err(Denied::Unauthenticated("unknown or revoked token".into())),
        };
    }
    match &peer.certificate {
        Some((id, der)) if id.role == Role::Operator => Ok(Caller::Operator {
            name: id.name.clone(),
            certificate: der.clone(),
        }),
        Some((id, _)) => Err(Denied::Forbidden(format!(
            "certificate of {} has role {}; the admin API needs an operator certificate or a bearer token",
            id.name, id.role
        ))),
        None => Err(Denied::Unauthenticated(
            "no credentials: present an operator certificate (mutual TLS) or `Authorization: Bearer <token>`".into(),
        )),
    }
}

/// Whether `caller` may do what needs `needed`.
pub fn require(caller: &Caller, needed: Scope) -> Result<(), Denied> {
    if caller.scope() >= needed {
        Ok(())
    } else {
        Err(Denied::Forbidden(format!(
            "{} has scope {}; this needs scope {}",
            caller.by(),
            caller.scope().as_str(),
            needed.as_str()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(role: Role) -> Identity {
        Identity {
            name: "alice".into(),
            role,
            region: "eu".into(),
        }
    }

    #[test]
    fn roles_and_scopes() {
        let none = HeaderMap::new();
        let op = Peer {
            certificate: Some((id(Role::Operator), "00".into())),
            ..Default::default()
        };
        let silo = Peer {
            certificate: Some((id(Role::Silo), "00".into())),
            ..Default::default()
        };
        let caller = authenticate(&none, &op, None).unwrap();
        assert_eq!(caller.scope(), Scope::Operate);
        assert!(matches!(
            authenticate(&none, &silo, None),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(
            authenticate(&none, &Peer::default(), None),
            Err(Denied::Unauthenticated(_))
        ));
        let mut bearer = HeaderMap::new();
        bearer.insert("authorization", "Basic abc".parse().unwrap());
        assert!(matches!(
            authenticate(&bearer, &op, None),
            Err(Denied::Unauthenticated(_))
        ));
        let reader = Caller::Token {
            name: "dash".into(),
            scope: Scope::Read,
        };
        assert!(require(&reader, Scope::Read).is_ok());
        let Err(Denied::Forbidden(why)) = require(&reader, Scope::Approve) else {
            panic!("a read token approved");
        };
        assert!(why.contains("token dash has scope read"), "{why}");
    }
}
