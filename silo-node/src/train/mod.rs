//! The built-in trainers: logistic regression and a small MLP (ReLU hidden layers, sigmoid
//! output), trained by mini-batch SGD on binary cross-entropy. Forward and backward passes are
//! matrix products through ndarray, which hands them to BLAS (`sgemm`).

pub mod dp_sgd;
mod metrics;
mod mlp;
mod sgd;

pub use metrics::{evaluate, roc_auc};
pub use mlp::Mlp;
pub use sgd::{train, Sgd, TrainOutcome};
