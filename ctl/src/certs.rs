//! `ternctl certs`: the cluster's certificate authority and its certificates.

use anyhow::bail;
use std::path::Path;
use tern_model::Profile;
use tern_tls::Role;

/// The administrator's user certificate: profile System Administrator.
pub fn admin_role() -> Role {
    Role::User { profiles: vec![Profile::SystemAdministrator.slug().unwrap_or_default().to_string()] }
}

/// `certs init`: a new CA in `dir`, plus `ternctl`, the administrator's certificate.
pub fn init(dir: &Path, cluster: &str, days: u32) -> anyhow::Result<i32> {
    let ca = tern_tls::init_ca(dir, cluster)?;
    let client = tern_tls::issue(dir, "ternctl", &admin_role(), Some(days))?;
    println!("created CA {} (keep {} on this machine only)", ca.display(), dir.join("ca-key.pem").display());
    println!("created {} (user ternctl, System Administrator, {days} days)", client.cert.display());
    Ok(0)
}

/// `certs issue NAME`: a node certificate, or with `user` a user's with `profiles`.
pub fn issue(
    dir: &Path,
    name: &str,
    user: bool,
    profiles: &[String],
    sans: Vec<String>,
    loopback: bool,
    days: Option<u32>,
) -> anyhow::Result<i32> {
    let role = if user {
        let mut slugs = Vec::new();
        for p in profiles {
            match Profile::parse(p).slug() {
                Some(s) => slugs.push(s.to_string()),
                None => bail!("{p:?} is not a rights profile: LDoms Review, LDoms Management or System Administrator"),
            }
        }
        if slugs.is_empty() {
            bail!("a user certificate needs at least one --profile (e.g. --profile \"LDoms Review\")");
        }
        Role::User { profiles: slugs }
    } else {
        Role::Node { sans, loopback }
    };
    let files = tern_tls::issue(dir, name, &role, days)?;
    let what = if user { format!("user {name} ({})", profiles.join(", ")) } else { format!("node {name}") };
    println!("created {} and {} for {what}", files.cert.display(), files.key.display());
    Ok(0)
}

/// `certs revoke NAME`: NAME's serial goes on the revocation list in `dir`.
pub fn revoke(dir: &Path, name: &str) -> anyhow::Result<i32> {
    let serial = tern_tls::revoke(dir, name)?;
    println!(
        "revoked {name} (serial {serial}) in {}; copy it to each agent's [tls] revoked path",
        dir.join("revoked.txt").display()
    );
    Ok(0)
}
