//! # Models as flat parameter vectors with a named layout
//!
//! A model is one `Vec<f32>` of parameters plus a [`Layout`] that names its tensors
//! (`dense0.weight` of shape `[inputs, hidden]`, ...), derived from a [`ModelSpec`]. Kernels
//! and the wire see only the flat vector; checkpoints ([`checkpoint`]) write the named tensors as
//! safetensors so any framework can read them. A model's identity is the SHA-256 of its
//! parameters' little-endian bytes ([`Digest`]).
//!
//! The MLP is one [`Architecture`]; any other model is described by a [`manifest`] and seen
//! here only as its trainable tensors' layout and the manifest's digest.

pub mod architecture;
pub mod business;
pub mod checkpoint;
mod digest;
mod error;
pub mod eval;
pub mod files;
mod init;
pub mod lora;
pub mod manifest;
pub mod scaling;
mod spec;
pub mod spill;
pub mod tensor_file;

pub use architecture::{Architecture, Described};
pub use digest::Digest;
pub use error::ModelError;
pub use init::initial_params;
pub use spec::{Layout, ModelSpec, TensorSpec, MAX_PARAMETERS, MAX_WIDTH};
