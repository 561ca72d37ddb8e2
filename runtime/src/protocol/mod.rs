//! # The wire protocol between coordinator and silos
//!
//! Every frame is `b"FSLO"`, the protocol version (u16, little endian), then a bincode 2 body
//! ([`codec`]). A frame of another version is refused with an error naming both versions;
//! malformed bytes are an error, never a panic (bincode decodes with a size limit, and the
//! actors carry opaque bytes so ractor never has to decode them).
//!
//! The conversation is request/response, always started by the coordinator ([`Request`],
//! [`Response`]), carried as a ractor RPC to the silo's trainer actor ([`TrainerMessage`]). The
//! reply port lives on the session the request went out on, so a reply is bound to the
//! certificate identity of that session: a silo cannot answer in another's name.
//!
//! Models and updates larger than a frame travel in chunks ([`transfer`]).

pub mod codec;
pub mod messages;
pub mod regional;
pub mod silo_handle;
pub mod trainer_message;
pub mod transfer;

pub use codec::{decode, encode, PROTOCOL_VERSION};
pub use messages::*;
pub use silo_handle::{until_silent, SiloFailure, SiloHandle};
pub use trainer_message::{call, TrainerMessage};
