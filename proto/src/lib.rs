//! tern's gRPC API, generated from `proto/tern/v1/tern.proto` at build time.
//! Conversions between these messages and the model live in the agent (one module),
//! so this crate stays generated code, plus the message limits both ends of every
//! call share ([`limits`]) and the migration ticket's conversion, which the client
//! that signs it and the agents that pass it on and check it share.

pub mod limits;

impl From<tern_tls::Ticket> for v1::MigrationTicket {
    fn from(t: tern_tls::Ticket) -> Self {
        Self {
            certificate: t.certificate,
            target: t.target,
            signed_at_ms: t.signed_at_ms,
            scheme: u32::from(t.scheme),
            signature: t.signature,
        }
    }
}

impl From<v1::MigrationTicket> for tern_tls::Ticket {
    fn from(t: v1::MigrationTicket) -> Self {
        Self {
            certificate: t.certificate,
            target: t.target,
            signed_at_ms: t.signed_at_ms,
            // A scheme past u16 is none a ticket uses: the verifier refuses it by name.
            scheme: u16::try_from(t.scheme).unwrap_or(u16::MAX),
            signature: t.signature,
        }
    }
}

include!(concat!(env!("OUT_DIR"), "/methods.rs"));

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("tern.v1");
}
