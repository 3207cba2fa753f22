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

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

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
        Ok((read_pem(&self.ca)?, read_pem(&self.cert)?, read_pem(&self.key)?))
    }

    /// Server side: our identity, and client certificates must chain to the CA.
    pub fn server_config(&self) -> Result<ServerTlsConfig, TlsError> {
        let (ca, cert, key) = self.read()?;
        Ok(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)).client_ca_root(Certificate::from_pem(ca)))
    }

    /// Client side: our identity, and the server's certificate must chain to the CA.
    pub fn client_config(&self) -> Result<ClientTlsConfig, TlsError> {
        let (ca, cert, key) = self.read()?;
        Ok(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).identity(Identity::from_pem(cert, key)))
    }
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
    params.not_after = rcgen::date_time_ymd(2046, 1, 1);
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

/// Issues certificate `name` signed by the CA in `dir`, valid as both server and
/// client. Its subject alternative names are `name`, `localhost`, 127.0.0.1, ::1 and
/// `extra_sans` (host names or IP addresses the agent is reached by).
pub fn issue(dir: &Path, name: &str, extra_sans: &[String]) -> Result<TlsFiles, TlsError> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(TlsError::Invalid(format!("certificate name {name:?} must be letters, digits, '-', '_' or '.'")));
    }
    let ca_pem = read_pem(&dir.join("ca.pem"))?;
    let ca_key_path = dir.join("ca-key.pem");
    let ca_key = KeyPair::from_pem(&read_pem(&ca_key_path)?)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", ca_key_path.display())))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let mut sans: Vec<String> = vec![name.to_string(), "localhost".into(), "127.0.0.1".into(), "::1".into()];
    sans.extend(extra_sans.iter().cloned());
    sans.dedup();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => s.as_str().try_into().map(SanType::DnsName),
        })
        .collect::<Result<_, _>>()?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "tern");
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.not_after = rcgen::date_time_ymd(2046, 1, 1);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let files = TlsFiles::in_dir(dir, name);
    write_new(&files.key, &key.serialize_pem(), true)?;
    write_new(&files.cert, &cert.pem(), false)?;
    Ok(files)
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
        let files = issue(dir.path(), "node-1", &["m10-1-1.example".into()]).unwrap();
        files.server_config().unwrap();
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
        issue(dir.path(), "a", &[]).unwrap();
        assert!(matches!(issue(dir.path(), "a", &[]), Err(TlsError::Exists { .. })));
        assert!(matches!(issue(dir.path(), "../evil", &[]), Err(TlsError::Invalid(_))));
    }
}
