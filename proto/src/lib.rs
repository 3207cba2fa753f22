//! tern's gRPC API, generated from `proto/tern/v1/tern.proto` at build time.
//! Conversions between these messages and the model live in the agent (one module),
//! so this crate stays generated code, plus the message limits both ends of every
//! call share ([`limits`]).

pub mod limits;

include!(concat!(env!("OUT_DIR"), "/methods.rs"));

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("tern.v1");
}
