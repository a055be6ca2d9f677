//! `keygen` and `public-key`: the keys that sign digests (see [`crate::sign`]).
//!
//! - `keygen --out FILE`: a new EC P-256 private key, PEM PKCS#8, mode 0600, never over an
//!   existing file; prints its public key's SHA-256 (the fingerprint digests record).
//! - `public-key --sign-key ARN|FILE [--out FILE]`: the PEM public key of a KMS key
//!   (`GetPublicKey`) or of a private key file, for `verify --offline --public-key`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::cli::GlobalArgs;
use crate::sign::{self, SigningKey};

/// `archiver keygen --out FILE`.
pub fn keygen(out: &Path) -> Result<()> {
    let shown = out.display();
    if out.symlink_metadata().is_ok() {
        bail!(
            "{shown} exists: keygen never overwrites a file (a key there may sign digests already)"
        );
    }
    let (pem, public) = sign::generate_p256_pem()?;
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // A temporary file (0600 from its creation) beside the target, then linked into place
    // only if nothing is there: no moment where the key is readable by others, or half
    // written under its name, and no race with another writer.
    let mut tmp = tempfile::Builder::new()
        .prefix(".keygen.tmp-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(pem.as_bytes())
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("writing {shown}"))?;
    match tmp.persist_noclobber(out) {
        Ok(_) => {}
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{shown} exists: keygen never overwrites a file (a key there may sign digests already)")
        }
        Err(e) => return Err(e.error).with_context(|| format!("creating {shown}")),
    }
    crate::fsio::sync_dir(dir)?;
    println!("wrote {shown}: a new EC P-256 private key (ECDSA_SHA_256); keep it secret");
    println!("public key SHA-256: {}", public.sha256());
    Ok(())
}

/// `archiver public-key --sign-key ARN|FILE [--out FILE]`.
pub async fn public_key(g: &GlobalArgs, spec: &str, out: Option<&Path>) -> Result<()> {
    let key = if sign::is_kms(spec) {
        // The key's own region (from its ARN) when none is configured; `open` calls KMS in
        // the ARN's region in any case.
        let mut regions = g.regions.clone();
        regions.extend(spec.split(':').nth(3).map(str::to_string));
        let sdk = crate::aws::load_sdk(&regions).await?;
        let kms = crate::aws::kms_client(&sdk, g.max_attempts);
        SigningKey::open(spec, Some(&kms)).await?
    } else {
        SigningKey::open(spec, None).await?
    };
    let public = key.verifying_key();
    let pem = public.to_pem();
    let what = format!(
        "{} public key of {} ({}), SHA-256 {}",
        public.describe(),
        if sign::is_kms(spec) {
            key.key_id()
        } else {
            spec
        },
        key.algorithm(),
        public.sha256()
    );
    match out {
        Some(path) => {
            crate::fsio::write_atomic(path, pem.as_bytes(), 0o644)?;
            println!("wrote {}: {what}", path.display());
        }
        None => {
            print!("{pem}");
            eprintln!("archiver: {what}");
        }
    }
    Ok(())
}
