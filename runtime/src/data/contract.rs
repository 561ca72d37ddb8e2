//! What every silo's data must agree on, as the coordinator checks it: the digest of the data
//! description every silo holds (a tabular [`Schema`](super::Schema), or the manifest of a
//! described model, which names its text and label columns and classes) and how many numeric
//! features the federation scales. The coordinator never needs more of the data than this.

use crate::model::manifest::Manifest;
use crate::model::Digest;

use super::Schema;

/// See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataContract {
    /// The digest a silo's schema check must report.
    pub digest: Digest,
    /// Numeric features whose scaling the silos agree on (0 for text models).
    pub numeric: usize,
}

impl From<&Schema> for DataContract {
    fn from(schema: &Schema) -> Self {
        DataContract {
            digest: schema.digest(),
            numeric: schema.numeric_count(),
        }
    }
}

impl From<&Manifest> for DataContract {
    fn from(manifest: &Manifest) -> Self {
        DataContract {
            digest: manifest.digest,
            numeric: 0,
        }
    }
}
