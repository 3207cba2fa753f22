//! Migration tickets: a user's certificate standing for the login on the target (OP-04).
//!
//! The user's client (`ternctl migrate-domain` without `user@`) signs, with the key of
//! its certificate, what it asks for: this domain, to this target, under this name, dry
//! run or not, at this time. The source's agent checks that the ticket's certificate
//! is the caller's and passes it on in Prepare; the target checks the certificate
//! against the cluster CA (chain, client use, validity), the signature over the same
//! fields as the Prepare names them, and the ticket's age. The agent then checks the
//! revocation list and the certificate's profiles. So the target trusts the user's own
//! key, not the source's word, and skips the argon2 login.
//!
//! A ticket can be used again for the same move while it is fresh
//! ([`TICKET_AGE_MAX_MS`]), only by a member (Prepare is a member call), and only for
//! exactly what it names; it asks for no more than the user could ask again.

use crate::{Holder, TlsError, TlsFiles, identity_of};
use rustls::SignatureScheme;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use std::sync::Arc;
use std::time::Duration;

/// How long a ticket stands after it is signed.
pub const TICKET_AGE_MAX_MS: u64 = 5 * 60 * 1000;
/// How far in the future a ticket may be signed (the clocks of client and target differ).
pub const TICKET_SKEW_MAX_MS: u64 = 60 * 1000;
/// The largest certificate a ticket may carry.
pub const TICKET_CERTIFICATE_BYTES_MAX: usize = 16 * 1024;
/// The largest signature a ticket may carry.
pub const TICKET_SIGNATURE_BYTES_MAX: usize = 1024;

/// The schemes a ticket is signed with, strongest-fit first; rcgen's keys are P-256.
const SCHEMES: [SignatureScheme; 3] =
    [SignatureScheme::ECDSA_NISTP256_SHA256, SignatureScheme::ECDSA_NISTP384_SHA384, SignatureScheme::ED25519];

/// What a ticket lets happen: one migration as the user asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant<'a> {
    pub domain: &'a str,
    /// The target as the user named it (a host name, or its agent's host:port).
    pub target: &'a str,
    /// Empty: the domain keeps its name (OP-05).
    pub new_name: &'a str,
    pub dry_run: bool,
}

impl Grant<'_> {
    /// The bytes signed: a fixed prefix, then each field with its length, then the time.
    fn message(&self, signed_at_ms: u64) -> Vec<u8> {
        let mut m = b"tern migration ticket v1\n".to_vec();
        for field in [self.domain, self.target, self.new_name] {
            m.extend_from_slice(&(field.len() as u64).to_be_bytes());
            m.extend_from_slice(field.as_bytes());
        }
        m.push(u8::from(self.dry_run));
        m.extend_from_slice(&signed_at_ms.to_be_bytes());
        m
    }
}

/// A signed [`Grant`], as it travels from the client through the source to the target.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Ticket {
    /// The signer's certificate (DER).
    pub certificate: Vec<u8>,
    /// The target as the user named it (the grant's `target`).
    pub target: String,
    pub signed_at_ms: u64,
    /// The TLS signature scheme's code point (e.g. 0x0403, ECDSA P-256 SHA-256).
    pub scheme: u16,
    pub signature: Vec<u8>,
}

impl TlsFiles {
    /// Signs `grant` at `now_ms` with this identity's key.
    pub fn sign_ticket(&self, grant: &Grant<'_>, now_ms: u64) -> Result<Ticket, TlsError> {
        let (_, cert, key) = self.read()?;
        let bad =
            |path: &std::path::Path, e: &dyn std::fmt::Display| TlsError::Invalid(format!("{}: {e}", path.display()));
        let certificate = CertificateDer::pem_slice_iter(cert.as_bytes())
            .next()
            .ok_or_else(|| bad(&self.cert, &"no certificate in the file"))?
            .map_err(|e| bad(&self.cert, &e))?;
        let private = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| bad(&self.key, &e))?;
        let key = rustls::crypto::ring::sign::any_supported_type(&private).map_err(|e| bad(&self.key, &e))?;
        let signer = key.choose_scheme(&SCHEMES).ok_or_else(|| {
            bad(
                &self.key,
                &"tickets are signed with ECDSA P-256/P-384 or Ed25519 keys (as `ternctl certs issue` makes)",
            )
        })?;
        let signature = signer.sign(&grant.message(now_ms)).map_err(|e| bad(&self.key, &e))?;
        Ok(Ticket {
            certificate: certificate.to_vec(),
            target: grant.target.to_string(),
            signed_at_ms: now_ms,
            scheme: u16::from(signer.scheme()),
            signature,
        })
    }
}

/// Checks tickets against the cluster CA.
#[derive(Clone)]
pub struct TicketVerifier {
    verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for TicketVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketVerifier")
    }
}

impl TicketVerifier {
    /// Tickets whose certificates chain to `verifier`'s roots as client certificates.
    pub(crate) fn new(verifier: Arc<dyn ClientCertVerifier>) -> Self {
        Self { verifier }
    }

    /// Who signed `ticket` for exactly `grant` (whose `target` must be the ticket's),
    /// if it is fresh at `now_ms` and its certificate is the cluster CA's and valid
    /// then; else why not, in words for the user. Revocation and profiles are the
    /// caller's to check.
    pub fn verify(&self, ticket: &Ticket, grant: &Grant<'_>, now_ms: u64) -> Result<Holder, String> {
        if ticket.certificate.len() > TICKET_CERTIFICATE_BYTES_MAX
            || ticket.signature.len() > TICKET_SIGNATURE_BYTES_MAX
        {
            return Err("the ticket's certificate or signature is too large".into());
        }
        if ticket.target != grant.target {
            return Err(format!("the ticket is for target {:?}, not {:?}", ticket.target, grant.target));
        }
        if ticket.signed_at_ms > now_ms.saturating_add(TICKET_SKEW_MAX_MS) {
            return Err(format!(
                "the ticket is signed {} s in the future; check the clocks",
                (ticket.signed_at_ms - now_ms) / 1000
            ));
        }
        let age = now_ms.saturating_sub(ticket.signed_at_ms);
        if age > TICKET_AGE_MAX_MS {
            return Err(format!(
                "the ticket was signed {} s ago and stands {} s; run the command again",
                age / 1000,
                TICKET_AGE_MAX_MS / 1000
            ));
        }
        let cert = CertificateDer::from(ticket.certificate.as_slice());
        let now = UnixTime::since_unix_epoch(Duration::from_millis(now_ms));
        self.verifier
            .verify_client_cert(&cert, &[], now)
            .map_err(|e| format!("the ticket's certificate is not a valid client certificate of this cluster: {e}"))?;
        let algorithm: &dyn rustls::pki_types::SignatureVerificationAlgorithm =
            match SignatureScheme::from(ticket.scheme) {
                SignatureScheme::ECDSA_NISTP256_SHA256 => webpki::ring::ECDSA_P256_SHA256,
                SignatureScheme::ECDSA_NISTP384_SHA384 => webpki::ring::ECDSA_P384_SHA384,
                SignatureScheme::ED25519 => webpki::ring::ED25519,
                other => return Err(format!("the ticket is signed with {other:?}, which tickets do not use")),
            };
        let end_entity = webpki::EndEntityCert::try_from(&cert).map_err(|e| format!("unreadable certificate: {e}"))?;
        end_entity
            .verify_signature(algorithm, &grant.message(ticket.signed_at_ms), &ticket.signature)
            .map_err(|_| "the ticket's signature does not match what it names (domain, target, name, dry run, time)")?;
        identity_of(&ticket.certificate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Role, init_ca, install_crypto_provider, issue};

    fn grant() -> Grant<'static> {
        Grant { domain: "ldom1", target: "m10-1-2", new_name: "", dry_run: false }
    }

    fn cluster() -> (tempfile::TempDir, TicketVerifier) {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "t").unwrap();
        issue(dir.path(), "m10-1-2", &Role::Node { sans: vec![], loopback: true }, None).unwrap();
        let user = Role::User { profiles: vec!["ldoms-management".into()] };
        issue(dir.path(), "alice", &user, None).unwrap();
        let tickets = TlsFiles::in_dir(dir.path(), "m10-1-2").load_node("m10-1-2").unwrap().tickets;
        (dir, tickets)
    }

    fn now_ms() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
    }

    #[test]
    fn a_ticket_names_its_signer_for_exactly_what_it_grants() {
        // Goal: a fresh ticket signed by alice's key verifies as alice for its own grant and no other.
        let (dir, tickets) = cluster();
        let now = now_ms();
        let t = TlsFiles::in_dir(dir.path(), "alice").sign_ticket(&grant(), now).unwrap();
        assert_eq!(t.scheme, u16::from(SignatureScheme::ECDSA_NISTP256_SHA256));
        let holder = tickets.verify(&t, &grant(), now + 1000).unwrap();
        assert_eq!(holder, Holder::User { name: "alice".into(), profiles: vec!["ldoms-management".into()] });
        for other in [
            Grant { domain: "ldom2", ..grant() },
            Grant { new_name: "ldom9", ..grant() },
            Grant { dry_run: true, ..grant() },
        ] {
            let e = tickets.verify(&t, &other, now).unwrap_err();
            assert!(e.contains("signature does not match"), "{other:?}: {e}");
        }
        let e = tickets.verify(&t, &Grant { target: "m10-1-3", ..grant() }, now).unwrap_err();
        assert!(e.contains("for target \"m10-1-2\", not \"m10-1-3\""), "{e}");
        let mut moved = t.clone();
        moved.signed_at_ms += 1;
        assert!(tickets.verify(&moved, &grant(), now).unwrap_err().contains("signature does not match"));
    }

    #[test]
    fn a_stale_or_future_ticket_is_refused() {
        // Goal: a ticket stands TICKET_AGE_MAX_MS after signing and at most TICKET_SKEW_MAX_MS before.
        let (dir, tickets) = cluster();
        let now = now_ms();
        let t = TlsFiles::in_dir(dir.path(), "alice").sign_ticket(&grant(), now).unwrap();
        assert!(tickets.verify(&t, &grant(), now + TICKET_AGE_MAX_MS).is_ok());
        let e = tickets.verify(&t, &grant(), now + TICKET_AGE_MAX_MS + 1000).unwrap_err();
        assert!(e.contains("signed 301 s ago and stands 300 s"), "{e}");
        let e = tickets.verify(&t, &grant(), now - TICKET_SKEW_MAX_MS - 2000).unwrap_err();
        assert!(e.contains("in the future"), "{e}");
    }

    #[test]
    fn a_ticket_from_another_ca_or_a_server_only_certificate_is_refused() {
        // Goal: only a client certificate of this cluster's CA signs tickets it takes.
        let (_dir, tickets) = cluster();
        let other = tempfile::tempdir().unwrap();
        init_ca(other.path(), "other").unwrap();
        issue(other.path(), "alice", &Role::User { profiles: vec!["system-administrator".into()] }, None).unwrap();
        let now = now_ms();
        let t = TlsFiles::in_dir(other.path(), "alice").sign_ticket(&grant(), now).unwrap();
        let e = tickets.verify(&t, &grant(), now).unwrap_err();
        assert!(e.contains("not a valid client certificate of this cluster"), "{e}");
        let mut garbage = t.clone();
        garbage.certificate = b"not a certificate".to_vec();
        assert!(tickets.verify(&garbage, &grant(), now).is_err());
        garbage.certificate = vec![0; TICKET_CERTIFICATE_BYTES_MAX + 1];
        assert!(tickets.verify(&garbage, &grant(), now).unwrap_err().contains("too large"));
    }
}
