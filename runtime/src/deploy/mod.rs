//! # Deployment: an approved version, put to use at the silos
//!
//! A version the federation committed (or an operator approved) is of no use to a bank until
//! it sits on the bank's own machine and scores its customers there. Deployment is the part of
//! the cycle that does this:
//!
//! | file | concern |
//! |---|---|
//! | `note` | what the coordinator deploys — version, digest, architecture, scaling — signed with its certificate's key ([`SignedNote`]) |
//! | `book` | which version goes where: the operators' and the policy's orders, a rollback's, and what each silo should hold ([`DeploymentBook`]) |
//! | `store` | the silo's side: the deployed versions on its disk, written atomically, checked (digest and signature) every time they are read ([`DeployStore`]) |
//!
//! The coordinator keeps the book and journals every order; each heartbeat tells it what a silo
//! holds, and a silo that holds something else is sent its version (only when no round is in
//! flight, so a deployment never competes with a round's transfers). A silo takes a note only
//! if the consortium CA issued the signer's certificate for the coordinator it links to, and a
//! model only if its values give the note's digest: neither a hostile peer nor a flipped bit on
//! disk gets a model scored with. The book and the note are pure data; the store is the only
//! part that touches a disk, and neither knows about the coordinator's actor.

pub mod book;
pub mod note;
pub mod store;

pub use book::{Deployment, DeploymentBook, Target};
pub use note::{DeploymentNote, SignedNote};
pub use store::{DeployStore, Deployed};

/// Why a deployment cannot be signed, taken, kept or read back.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The note is not what it says it is: its signature, signer or certificate.
    #[error("deployment note refused: {0}")]
    Signature(String),
    /// The note's body cannot be read.
    #[error("deployment note is not readable: {0}")]
    Note(String),
    /// The values do not give the note's digest, or are not as many as it says.
    #[error("the deployed model v{version} does not match its note: {what}")]
    Mismatch {
        /// The version.
        version: u64,
        /// What differs.
        what: String,
    },
    /// A file of the store cannot be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Nothing is deployed at this silo yet.
    #[error("no model is deployed in {}: a coordinator deploys one (`fedsilo deploy create --version N`), and the silo keeps it there", .0.display())]
    NothingDeployed(std::path::PathBuf),
}
