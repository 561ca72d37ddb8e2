//! Data descriptions shared by coordinator and silos. The coordinator never sees rows; it
//! needs the [`Schema`] to know the model's input width and which features are scaled, and
//! checks each silo's data against a [`DataContract`].

mod contract;
mod schema;

pub use contract::DataContract;

pub use schema::{Feature, FeatureKind, Label, NotForMlp, Schema, Target};
