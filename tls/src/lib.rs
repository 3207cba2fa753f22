//! The cluster's certificate authority (rcgen) and the mutual-TLS settings of every
//! gRPC connection (tonic over rustls with the ring provider).
//!
//! Files in a certificates folder:
//! - `ca.pem`, `ca-key.pem`: the cluster CA (`ternctl certs init`). The key signs new
//!   certificates and belongs on the admin's machine only.
//! - `NAME.pem`, `NAME-key.pem`: a node or user certificate (`ternctl certs issue NAME`).
//!
//! Every server demands a client certificate signed by the CA and every client checks
//! the server's against it; a peer without one, or with one from another CA, fails the
//! handshake. Private keys are written with mode 0600.
//!
//! A certificate says who holds it, as URI subject alternative names that
//! [`identity_of`] reads on every call (the agent's authorisation table decides what
//! that identity may do):
//! - a node: `urn:tern:node:NAME`; usable as server and client (EKU serverAuth and
//!   clientAuth); DNS/IP names only those given, plus the loopback names only when
//!   asked for (local clusters and tests);
//! - a user: `urn:tern:user:NAME` and one `urn:tern:profile:SLUG` per rights profile
//!   (`ldoms-review`, `ldoms-management`, `system-administrator`); client only (EKU
//!   clientAuth), short-lived (30 days unless told otherwise).
//!
//! A certificate with neither (issued before roles existed) is refused every call.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

pub mod ticket;
pub use ticket::{Grant, Ticket, TicketVerifier};

/// The largest PEM file read.
pub const PEM_BYTES_MAX: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("{path} already exists; refusing to overwrite a certificate authority or key")]
    Exists { path: String },
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io { path: path.display().to_string(), source }
}

/// Installs ring as rustls's process-wide crypto provider. Call first thing in `main`
/// (and in tests); a second call is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Paths of one identity: the CA to trust, and our own certificate and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The identity `name` in certificates folder `dir`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self { ca: dir.join("ca.pem"), cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}-key.pem")) }
    }

    fn read(&self) -> Result<(String, String, String), TlsError> {
        private_checked(&self.key)?;
        Ok((read_pem(&self.ca)?, read_pem(&self.cert)?, read_pem(&self.key)?))
    }

    /// Client side: our identity, and the server's certificate must chain to the CA.
    pub fn client_config(&self) -> Result<ClientTlsConfig, TlsError> {
        let (ca, cert, key) = self.read()?;
        Ok(client_of(&ca, &cert, &key))
    }

    /// Reads and checks the identity of node `name` as a whole, for both sides of its
    /// connections: the certificate must name that node (`urn:tern:node:NAME`), the key
    /// must be the certificate's and private (mode 0600), the CA must parse. What it
    /// returns is used together or not at all, so a half-replaced set of files (a new
    /// certificate beside the old key) is refused instead of half taken.
    pub fn load_node(&self, name: &str) -> Result<NodeTls, TlsError> {
        let (ca, cert, key) = self.read()?;
        let bad = |path: &Path, e: &dyn std::fmt::Display| TlsError::Invalid(format!("{}: {e}", path.display()));
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&self.cert, &e))?;
        let leaf = chain.first().ok_or_else(|| bad(&self.cert, &"no certificate in the file"))?;
        match identity_of(leaf).map_err(|e| bad(&self.cert, &e))? {
            Holder::Node(n) if n == name => {}
            Holder::Node(n) => {
                return Err(bad(&self.cert, &format!("the certificate is node {n:?}'s; this agent is {name:?}")));
            }
            Holder::User { name: user, .. } => {
                return Err(bad(&self.cert, &format!("a user's certificate ({user:?}); an agent needs its node's")));
            }
        }
        let serial = serial_of(leaf).map_err(|e| bad(&self.cert, &e))?;
        let private = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| bad(&self.key, &e))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(c.map_err(|e| bad(&self.ca, &e))?).map_err(|e| bad(&self.ca, &e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| bad(&self.ca, &e))?;
        let tickets = TicketVerifier::new(verifier.clone());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_client_cert_verifier(verifier)
            // rustls compares the key with the certificate's public key here.
            .with_single_cert(chain, private)
            .map_err(|e| bad(&self.key, &format!("{e} (is it the key of {}?)", self.cert.display())))?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(NodeTls { server: Arc::new(server), client: client_of(&ca, &cert, &key), serial, tickets })
    }
}

impl TlsFiles {
    /// A bare rustls client of the cluster CA presenting this identity, for tools and
    /// tests that speak TLS without tonic (e.g. to read the certificate a server shows).
    pub fn rustls_client(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let (ca, cert, key) = self.read()?;
        let bad = |path: &Path, e: &dyn std::fmt::Display| TlsError::Invalid(format!("{}: {e}", path.display()));
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(c.map_err(|e| bad(&self.ca, &e))?).map_err(|e| bad(&self.ca, &e))?;
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&self.cert, &e))?;
        let private = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| bad(&self.key, &e))?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private)
            .map_err(|e| bad(&self.key, &e))?;
        Ok(Arc::new(config))
    }
}

/// A node's TLS identity as [`TlsFiles::load_node`] read it: the server side as rustls
/// takes it (client certificates must chain to the CA; ALPN h2, as gRPC needs), the
/// client side as tonic's channels take it, the serial of its certificate, and the
/// checker of migration tickets (the same CA, for client certificates).
#[derive(Clone)]
pub struct NodeTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: ClientTlsConfig,
    pub serial: String,
    pub tickets: TicketVerifier,
}

fn client_of(ca: &str, cert: &str, key: &str) -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).identity(Identity::from_pem(cert, key))
}

/// A private key must not be readable by group or others (as ssh refuses such keys).
fn private_checked(path: &Path) -> Result<(), TlsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(io(path))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(TlsError::Invalid(format!(
                "{}: private key has mode {:o}; it must not be readable by group or others (chmod 600)",
                path.display(),
                mode & 0o777
            )));
        }
    }
    Ok(())
}

fn read_pem(path: &Path) -> Result<String, TlsError> {
    let len = std::fs::metadata(path).map_err(io(path))?.len();
    if len > PEM_BYTES_MAX {
        return Err(TlsError::Invalid(format!("{}: {len} bytes is too large for a PEM file", path.display())));
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    if !text.contains("-----BEGIN ") {
        return Err(TlsError::Invalid(format!("{}: not a PEM file", path.display())));
    }
    Ok(text)
}

fn write_new(path: &Path, text: &str, private: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            TlsError::Exists { path: path.display().to_string() }
        } else {
            TlsError::Io { path: path.display().to_string(), source: e }
        }
    })?;
    f.write_all(text.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Creates the cluster CA in `dir` (`ca.pem`, `ca-key.pem`); refuses to overwrite one.
pub fn init_ca(dir: &Path, cluster: &str) -> Result<PathBuf, TlsError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "tern");
    dn.push(DnType::CommonName, format!("tern cluster CA {cluster}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    // Valid from an hour ago (clocks differ a little) for CA_DAYS: long enough to
    // outlive every certificate it signs (at most DAYS_MAX), not the 1975-2046 of
    // rcgen's defaults.
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(CA_DAYS));
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let ca = dir.join("ca.pem");
    let ca_key = dir.join("ca-key.pem");
    if ca.exists() || ca_key.exists() {
        return Err(TlsError::Exists { path: ca.display().to_string() });
    }
    write_new(&ca_key, &key.serialize_pem(), true)?;
    write_new(&ca, &cert.pem(), false)?;
    Ok(ca)
}

/// The URI SAN prefix naming a node.
pub const NODE_URI: &str = "urn:tern:node:";
/// The URI SAN prefix naming a user.
pub const USER_URI: &str = "urn:tern:user:";
/// The URI SAN prefix of each of a user's rights profiles.
pub const PROFILE_URI: &str = "urn:tern:profile:";
/// A node certificate's default lifetime.
pub const NODE_DAYS_DEFAULT: u32 = 3650;
/// A user certificate's default lifetime: short, as the holder is a person.
pub const USER_DAYS_DEFAULT: u32 = 30;
/// The longest lifetime [`issue`] gives.
pub const DAYS_MAX: u32 = 3650;
/// The cluster CA's lifetime: twice the longest certificate it signs.
pub const CA_DAYS: u32 = 2 * DAYS_MAX;
const _: () = assert!(CA_DAYS > DAYS_MAX, "the CA must outlive every certificate it signs");

/// What a certificate is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// An agent: `sans` are the host names and addresses it is reached by;
    /// `loopback` adds localhost, 127.0.0.1 and ::1 (local clusters only).
    Node { sans: Vec<String>, loopback: bool },
    /// A person or a tool, with its rights profiles (slugs, see the module doc).
    User { profiles: Vec<String> },
}

/// Who a peer's certificate names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    Node(String),
    User { name: String, profiles: Vec<String> },
}

fn valid_name(what: &str, name: &str) -> Result<(), TlsError> {
    if name.is_empty()
        || name.len() > 64
        || name.starts_with(['-', '.'])
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(TlsError::Invalid(format!(
            "{what} {name:?} must be 1 to 64 letters, digits, '-', '_' or '.', not starting with '-' or '.'"
        )));
    }
    Ok(())
}

/// Issues certificate `name` for `role`, signed by the CA in `dir`, valid from an hour
/// ago (clock differences) for `days` (default by role: [`NODE_DAYS_DEFAULT`],
/// [`USER_DAYS_DEFAULT`]).
pub fn issue(dir: &Path, name: &str, role: &Role, days: Option<u32>) -> Result<TlsFiles, TlsError> {
    valid_name("certificate name", name)?;
    let days = days.unwrap_or(match role {
        Role::Node { .. } => NODE_DAYS_DEFAULT,
        Role::User { .. } => USER_DAYS_DEFAULT,
    });
    if days == 0 || days > DAYS_MAX {
        return Err(TlsError::Invalid(format!("a certificate lives 1 to {DAYS_MAX} days, not {days}")));
    }
    let ca_pem = read_pem(&dir.join("ca.pem"))?;
    let ca_key_path = dir.join("ca-key.pem");
    let ca_key = KeyPair::from_pem(&read_pem(&ca_key_path)?)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", ca_key_path.display())))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let uri = |s: String| s.as_str().try_into().map(SanType::URI);
    let mut params = CertificateParams::default();
    match role {
        Role::Node { sans, loopback } => {
            let mut names: Vec<String> = vec![name.to_string()];
            if *loopback {
                names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
            }
            names.extend(sans.iter().cloned());
            names.dedup();
            params.subject_alt_names.push(uri(format!("{NODE_URI}{name}"))?);
            for s in &names {
                params.subject_alt_names.push(match s.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(s.as_str().try_into()?),
                });
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        }
        Role::User { profiles } => {
            params.subject_alt_names.push(uri(format!("{USER_URI}{name}"))?);
            for p in profiles {
                valid_name("profile", p)?;
                params.subject_alt_names.push(uri(format!("{PROFILE_URI}{p}"))?);
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "tern");
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let files = TlsFiles::in_dir(dir, name);
    write_new(&files.key, &key.serialize_pem(), true)?;
    write_new(&files.cert, &cert.pem(), false)?;
    Ok(files)
}

/// The serial number of the DER certificate `der`, in lowercase hex without
/// separators (as a revocation list names it).
pub fn serial_of(der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("unreadable certificate: {e}"))?;
    Ok(cert.tbs_certificate.raw_serial().iter().map(|b| format!("{b:02x}")).collect())
}

/// The largest revocation list read.
pub const REVOKED_BYTES_MAX: u64 = 1024 * 1024;

/// Reads a revocation list: certificate serials in hex, one per line (`#` starts a
/// comment; `:` separators and case are ignored). A missing file revokes nothing.
pub fn read_revoked(path: &Path) -> Result<std::collections::BTreeSet<String>, TlsError> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(TlsError::Io { path: path.display().to_string(), source: e }),
    };
    if len > REVOKED_BYTES_MAX {
        return Err(TlsError::Invalid(format!("{}: {len} bytes is too large for a revocation list", path.display())));
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut out = std::collections::BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let serial: String = line.split('#').next().unwrap_or("").trim().replace(':', "").to_ascii_lowercase();
        if serial.is_empty() {
            continue;
        }
        if !serial.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(TlsError::Invalid(format!(
                "{} line {}: {serial:?} is not a serial number in hex",
                path.display(),
                i + 1
            )));
        }
        out.insert(serial);
    }
    Ok(out)
}

/// Revokes certificate `name` of `dir`: appends its serial to `dir/revoked.txt` (the
/// file each agent's `[tls] revoked` points at once copied there). Returns the serial.
pub fn revoke(dir: &Path, name: &str) -> Result<String, TlsError> {
    use std::io::Write;
    valid_name("certificate name", name)?;
    let path = dir.join(format!("{name}.pem"));
    let pem = read_pem(&path)?;
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))?;
    let serial = serial_of(&parsed.contents).map_err(TlsError::Invalid)?;
    let list = dir.join("revoked.txt");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&list).map_err(io(&list))?;
    writeln!(f, "{serial} # {name}").map_err(io(&list))?;
    f.sync_all().map_err(io(&list))?;
    Ok(serial)
}

/// Who the DER certificate `der` names (see the module doc). The handshake already
/// proved it chains to the cluster CA; this only reads it.
pub fn identity_of(der: &[u8]) -> Result<Holder, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("unreadable certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("unreadable subject alternative names: {e}"))?
        .ok_or("the certificate names no tern identity (no subject alternative names)")?;
    let (mut node, mut user, mut profiles) = (None, None, Vec::new());
    for name in &san.value.general_names {
        let GeneralName::URI(u) = name else { continue };
        if let Some(n) = u.strip_prefix(NODE_URI) {
            node = Some(n.to_string());
        } else if let Some(n) = u.strip_prefix(USER_URI) {
            user = Some(n.to_string());
        } else if let Some(p) = u.strip_prefix(PROFILE_URI) {
            profiles.push(p.to_string());
        }
    }
    match (node, user) {
        (Some(n), None) if !n.is_empty() => Ok(Holder::Node(n)),
        (None, Some(name)) if !name.is_empty() => Ok(Holder::User { name, profiles }),
        (Some(_), Some(_)) => Err("the certificate names both a node and a user".into()),
        _ => Err(format!(
            "the certificate names no tern identity ({NODE_URI}NAME or {USER_URI}NAME); it predates roles: issue a new one"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_certificates_signed_by_the_cluster_ca() {
        // Goal: init then issue writes four PEM files, keys private, and loads as TLS configs.
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "test").unwrap();
        let role = Role::Node { sans: vec!["m10-1-1.example".into()], loopback: false };
        let files = issue(dir.path(), "node-1", &role, None).unwrap();
        let loaded = files.load_node("node-1").unwrap();
        assert_eq!(loaded.server.alpn_protocols, vec![b"h2".to_vec()]);
        assert_eq!(loaded.serial, serial_of(&der_of(&files.cert)).unwrap());
        files.client_config().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "private key readable by others: {mode:o}");
        }
    }

    #[test]
    fn refuses_to_overwrite_a_ca_or_a_certificate() {
        // Goal: running init or issue twice never destroys a key.
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "test").unwrap();
        assert!(matches!(init_ca(dir.path(), "test"), Err(TlsError::Exists { .. })));
        let node = Role::Node { sans: vec![], loopback: true };
        issue(dir.path(), "a", &node, None).unwrap();
        assert!(matches!(issue(dir.path(), "a", &node, None), Err(TlsError::Exists { .. })));
        assert!(matches!(issue(dir.path(), "../evil", &node, None), Err(TlsError::Invalid(_))));
        assert!(matches!(issue(dir.path(), "b", &node, Some(0)), Err(TlsError::Invalid(_))));
    }

    #[test]
    fn revoke_lists_the_serial_and_the_list_reads_it_back() {
        // Goal: revoke appends NAME's serial (what serial_of reads from its certificate); comments, colons and case
        // do not matter; junk names its line; a missing list revokes nothing.
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "test").unwrap();
        let files = issue(dir.path(), "alice", &Role::User { profiles: vec![] }, None).unwrap();
        assert!(read_revoked(&dir.path().join("revoked.txt")).unwrap().is_empty());
        let serial = revoke(dir.path(), "alice").unwrap();
        assert_eq!(serial_of(&der_of(&files.cert)).unwrap(), serial);
        let list = dir.path().join("revoked.txt");
        assert!(read_revoked(&list).unwrap().contains(&serial));
        std::fs::write(&list, "# old\nAB:cd # bob\n").unwrap();
        assert!(read_revoked(&list).unwrap().contains("abcd"));
        std::fs::write(&list, "ok\nnot-hex\n").unwrap();
        let err = read_revoked(&list).unwrap_err().to_string();
        assert!(err.contains("line 1") || err.contains("line 2"), "{err}");
    }

    /// Runs a TLS handshake in memory between `client` (offering server name
    /// `localhost`) and `server`; the first error either side reports.
    fn handshake(client: Arc<rustls::ClientConfig>, server: Arc<rustls::ServerConfig>) -> Result<(), rustls::Error> {
        let mut c = rustls::ClientConnection::new(client, "localhost".try_into().unwrap())?;
        let mut s = rustls::ServerConnection::new(server)?;
        for _ in 0..20 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets()?;
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not end");
    }

    #[test]
    fn a_user_certificate_cannot_serve_and_a_node_one_serves_only_its_names() {
        // Goal: a user's certificate (clientAuth only) fails the handshake as a server even on loopback; a node
        // certificate issued without the loopback names is refused for localhost; one with them passes.
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "test").unwrap();
        let local = issue(dir.path(), "local", &Role::Node { sans: vec![], loopback: true }, None).unwrap();
        let remote =
            issue(dir.path(), "remote", &Role::Node { sans: vec!["m10.example".into()], loopback: false }, None);
        let user = issue(dir.path(), "alice", &Role::User { profiles: vec!["system-administrator".into()] }, None);
        let client = local.rustls_client().unwrap();
        handshake(client.clone(), local.load_node("local").unwrap().server).unwrap();
        let err = handshake(client.clone(), remote.unwrap().load_node("remote").unwrap().server).unwrap_err();
        assert!(err.to_string().contains("not valid for name \"localhost\""), "{err}");
        // A user's certificate as a server (load_node refuses to build one; built here by hand).
        let user = user.unwrap();
        let chain = CertificateDer::pem_file_iter(&user.cert).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_file(&user.key).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let err = handshake(client, Arc::new(server)).unwrap_err();
        assert!(err.to_string().contains("does not allow extended key usage for server authentication"), "{err}");
    }

    #[test]
    fn a_private_key_readable_by_others_is_refused() {
        // Goal: like ssh, a key file with group or other permissions is not loaded; the error says chmod 600.
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "test").unwrap();
        let files = issue(dir.path(), "n", &Role::Node { sans: vec![], loopback: false }, None).unwrap();
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = files.load_node("n").err().unwrap().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_node_identity_is_refused_when_its_files_do_not_belong_together() {
        // Goal: load_node takes only a node certificate of this agent's name with its own key: another node's
        // certificate, a user's, or a new certificate beside the old key are each refused with the reason.
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "test").unwrap();
        let node = Role::Node { sans: vec![], loopback: true };
        let a = issue(dir.path(), "a", &node, None).unwrap();
        let b = issue(dir.path(), "b", &node, None).unwrap();
        let u = issue(dir.path(), "u", &Role::User { profiles: vec![] }, None).unwrap();
        let err = |f: TlsFiles, name: &str| f.load_node(name).err().expect("refused").to_string();
        let why = err(b.clone(), "a");
        assert!(why.contains("node \"b\"'s; this agent is \"a\""), "{why}");
        let why = err(u, "u");
        assert!(why.contains("a user's certificate"), "{why}");
        let mixed = TlsFiles { key: a.key.clone(), ..b };
        let why = err(mixed, "b");
        assert!(why.contains("is it the key of"), "{why}");
        a.load_node("a").unwrap();
    }

    fn der_of(path: &Path) -> Vec<u8> {
        let pem = std::fs::read_to_string(path).unwrap();
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap().1.contents
    }

    #[test]
    fn the_ca_is_valid_from_now_for_ca_days_and_outlives_what_it_signs() {
        // Goal: the cluster CA's validity starts within the hour and lasts CA_DAYS (not rcgen's 1975-2046).
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(dir.path(), "t").unwrap();
        let der = der_of(&ca);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let v = cert.validity();
        let (from, to) = (v.not_before.timestamp(), v.not_after.timestamp());
        assert!((now - 2 * 3600..=now).contains(&from), "not before {from}, now {now}");
        let days = (to - from) / 86_400;
        assert!((i64::from(CA_DAYS) - 1..=i64::from(CA_DAYS) + 1).contains(&days), "{days} days");
    }

    #[test]
    fn a_certificate_names_its_node_or_its_user_and_profiles() {
        // Goal: identity_of reads back the role issue wrote: a node, or a user with its profiles.
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "test").unwrap();
        let node = issue(dir.path(), "m10-1-1", &Role::Node { sans: vec![], loopback: false }, None).unwrap();
        assert_eq!(identity_of(&der_of(&node.cert)), Ok(Holder::Node("m10-1-1".into())));
        let role = Role::User { profiles: vec!["ldoms-review".into()] };
        let alice = issue(dir.path(), "alice", &role, Some(1)).unwrap();
        assert_eq!(
            identity_of(&der_of(&alice.cert)),
            Ok(Holder::User { name: "alice".into(), profiles: vec!["ldoms-review".into()] })
        );
        assert!(identity_of(b"not a certificate").is_err());
    }
}
