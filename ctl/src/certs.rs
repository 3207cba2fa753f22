//! `ternctl certs`: the cluster's certificate authority and its certificates.

use std::path::Path;

/// `certs init`: a new CA in `dir`, plus the `ternctl` client certificate.
pub fn init(dir: &Path, cluster: &str) -> anyhow::Result<i32> {
    let ca = tern_tls::init_ca(dir, cluster)?;
    let client = tern_tls::issue(dir, "ternctl", &[])?;
    println!("created CA {} (keep {} on this machine only)", ca.display(), dir.join("ca-key.pem").display());
    println!("created client certificate {}", client.cert.display());
    Ok(0)
}

/// `certs issue NAME`: a node or user certificate signed by the CA in `dir`.
pub fn issue(dir: &Path, name: &str, sans: &[String]) -> anyhow::Result<i32> {
    let files = tern_tls::issue(dir, name, sans)?;
    println!("created {} and {}", files.cert.display(), files.key.display());
    Ok(0)
}
