//! Data descriptions shared by coordinator and silos. The coordinator never sees rows; it
//! needs the [`Schema`] to know the model's input width and which features are scaled.

mod schema;

pub use schema::{Feature, FeatureKind, Label, Schema, Target};
