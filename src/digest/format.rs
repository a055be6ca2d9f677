//! The digest format: what a digest file holds, its bytes, and how it is read back. Pure: no
//! I/O. Shared by the writer ([`super`]) and `verify`'s chain walk.
//!
//! A digest is a file of exactly two lines:
//!
//! ```text
//! {"version":1,"state_id":…,"seq":7,…}      <- the body: compact JSON, the signed message
//! {"signature":"<base64>"}                  <- or {"signature":null} when unsigned
//! ```
//!
//! - The **body** is the first line's bytes, without its newline. A signature is over exactly
//!   those bytes.
//! - The digest's **SHA-256** (what the next digest's `previous.sha256` records, and what
//!   chains it) is over the whole file, both lines and both newlines.
//! - Keys: `_digest/state_id=<state id>/<seq, 10 digits>.json`, relative to the digest root
//!   (the output root, or `--digests`). The leading underscore hides them from Hive, Athena,
//!   Spark and DuckDB globs, as `_manifest/` is.
//!
//! The format is described for users in `docs/audit.md`.

use serde::{Deserialize, Serialize};

/// The digest format's version.
pub const VERSION: u32 = 1;

/// Root folder of the digests inside the digest root.
pub const DIGEST: &str = "_digest";

/// Key of digest `seq` of state `state_id`, relative to the digest root.
pub fn digest_key(state_id: &str, seq: u64) -> String {
    format!("{DIGEST}/state_id={state_id}/{seq:010}.json")
}

/// The prefix every digest of `state_id` shares, relative to the digest root.
pub fn state_prefix(state_id: &str) -> String {
    format!("{DIGEST}/state_id={state_id}/")
}

/// `(state id, seq)` of a [`digest_key`]; `None` for any other key.
pub fn parse_digest_key(key: &str) -> Option<(&str, u64)> {
    let rest = key.strip_prefix(DIGEST)?.strip_prefix("/state_id=")?;
    let (state_id, name) = rest.split_once('/')?;
    let seq = name.strip_suffix(".json")?;
    if state_id.is_empty() || seq.len() != 10 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((state_id, seq.parse().ok()?))
}

/// A digest's body: the first line of the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    pub version: u32,
    /// The state whose chain this digest extends.
    pub state_id: String,
    /// 1 for the first digest of a state, then +1 each.
    pub seq: u64,
    /// The command that wrote it: `run`, `backfill`, `compact` or `verify --repair`.
    pub command: String,
    /// When it was written, RFC 3339 UTC with milliseconds (`2026-12-05T13:00:00.000Z`).
    pub created_at: String,
    /// The time the digest covers: from the previous digest's `created_at` (for the first
    /// digest, the state's creation) to this one's.
    pub range: Range,
    /// The previous digest of the state; `None` only for the first (`seq` 1), which starts
    /// the chain.
    pub previous: Option<Previous>,
    /// `true` exactly when `previous` is `None`: the chain starts here, explicitly.
    pub chain_start: bool,
    /// How the digest is signed; `None`: unsigned (it still chains by SHA-256).
    pub signing: Option<Signing>,
    /// What each portal's pass covered in the command that wrote the digest, sorted by
    /// portal id. Empty for a command that touched no portal.
    pub portals: Vec<PortalPass>,
    /// Every manifest the state wrote since the previous digest (and any an earlier killed
    /// command wrote but no digest listed), sorted by key. Empty when none was written.
    pub manifests: Vec<ManifestRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub from: String,
    pub to: String,
}

/// The link to the previous digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Previous {
    /// Its key, relative to the digest root.
    pub key: String,
    /// SHA-256 of its whole file, 64 lowercase hex digits.
    pub sha256: String,
    /// Its signature (base64), `None` if it was unsigned.
    pub signature: Option<String>,
}

/// The key that signed a digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signing {
    /// `RSASSA_PSS_SHA_256`, `RSASSA_PSS_SHA_384`, `RSASSA_PSS_SHA_512`, `ECDSA_SHA_256` or
    /// `ECDSA_SHA_384` (KMS's names).
    pub algorithm: String,
    /// The KMS key ARN, or `file` for a local key file.
    pub key_id: String,
    /// SHA-256 of the public key's DER `SubjectPublicKeyInfo`, 64 lowercase hex digits.
    pub public_key_sha256: String,
}

/// What one portal's pass covered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalPass {
    pub portal_id: String,
    /// `backfill`, `incremental`, `compaction`, `repair`, or `none` (recovery only).
    pub pass: String,
    /// `ok` or `failed`.
    pub outcome: String,
    /// Rows the pass archived.
    pub rows: u64,
    /// The portal's watermark (newest session start of a completed pass, epoch ms) after the
    /// pass; `None` before its first completed pass.
    pub watermark_ms: Option<i64>,
}

/// A manifest a digest vouches for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ManifestRef {
    /// Relative to the output root: `_manifest/portal_id=<id>/<state id>-<seq>.json`.
    pub key: String,
    /// SHA-256 of the manifest's bytes, 64 lowercase hex digits.
    pub sha256: String,
}

/// The second line.
#[derive(Serialize, Deserialize)]
struct SignatureLine {
    signature: Option<String>,
}

/// The body's bytes: the signed message.
pub fn body_bytes(body: &Body) -> Vec<u8> {
    serde_json::to_vec(body).expect("a digest body serializes")
}

/// The whole file: the body's bytes, a newline, the signature line, a newline. `body` must
/// be [`body_bytes`]'s output; `signature` is base64.
pub fn file_bytes(body: &[u8], signature: Option<&str>) -> Vec<u8> {
    let line = serde_json::to_vec(&SignatureLine {
        signature: signature.map(str::to_owned),
    })
    .expect("a signature line serializes");
    let mut out = Vec::with_capacity(body.len() + line.len() + 2);
    out.extend_from_slice(body);
    out.push(b'\n');
    out.extend_from_slice(&line);
    out.push(b'\n');
    out
}

/// A digest file read back.
#[derive(Clone, Debug)]
pub struct Parsed {
    pub body: Body,
    /// The exact bytes of the first line (what was signed).
    pub body_bytes: Vec<u8>,
    /// base64, as written.
    pub signature: Option<String>,
}

/// Read a digest file. Anything but exactly the two lines [`file_bytes`] writes is an error
/// (one line, for a finding).
pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    let Some(text) = text.strip_suffix('\n') else {
        return Err("does not end in a newline".to_owned());
    };
    let Some((body_line, sig_line)) = text.split_once('\n') else {
        return Err("not two lines".to_owned());
    };
    if sig_line.contains('\n') {
        return Err("more than two lines".to_owned());
    }
    let body: Body =
        serde_json::from_str(body_line).map_err(|e| format!("not a digest body: {e}"))?;
    if body.version != VERSION {
        return Err(format!(
            "digest version {} (this archiver reads {VERSION})",
            body.version
        ));
    }
    if body.chain_start != body.previous.is_none() {
        return Err("chain_start disagrees with previous".to_owned());
    }
    let sig: SignatureLine =
        serde_json::from_str(sig_line).map_err(|e| format!("not a signature line: {e}"))?;
    Ok(Parsed {
        body,
        body_bytes: body_line.as_bytes().to_vec(),
        signature: sig.signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Body {
        Body {
            version: VERSION,
            state_id: "s1".into(),
            seq: 2,
            command: "run".into(),
            created_at: "2026-12-05T13:00:00.000Z".into(),
            range: Range {
                from: "2026-12-04T13:00:00.000Z".into(),
                to: "2026-12-05T13:00:00.000Z".into(),
            },
            previous: Some(Previous {
                key: digest_key("s1", 1),
                sha256: "0".repeat(64),
                signature: None,
            }),
            chain_start: false,
            signing: None,
            portals: vec![],
            manifests: vec![ManifestRef {
                key: "_manifest/portal_id=p/s1-1.json".into(),
                sha256: "1".repeat(64),
            }],
        }
    }

    #[test]
    fn a_digest_reads_back_as_written() {
        let b = body();
        let bytes = body_bytes(&b);
        let file = file_bytes(&bytes, Some("c2ln"));
        let p = parse(&file).unwrap();
        assert_eq!(p.body, b);
        assert_eq!(p.body_bytes, bytes);
        assert_eq!(p.signature.as_deref(), Some("c2ln"));
        assert!(parse(&file_bytes(&bytes, None)).unwrap().signature.is_none());
    }

    #[test]
    fn damaged_digests_are_refused() {
        let file = file_bytes(&body_bytes(&body()), None);
        assert!(parse(&file[..file.len() - 1]).is_err());
        let mut extra = file.clone();
        extra.extend_from_slice(b"{}\n");
        assert!(parse(&extra).is_err());
        let mut b = body();
        b.chain_start = true;
        assert!(parse(&file_bytes(&body_bytes(&b), None)).is_err());
    }

    #[test]
    fn digest_keys_round_trip() {
        let k = digest_key("abc", 42);
        assert_eq!(k, "_digest/state_id=abc/0000000042.json");
        assert_eq!(parse_digest_key(&k), Some(("abc", 42)));
        assert_eq!(parse_digest_key("_digest/state_id=abc/42.json"), None);
        assert_eq!(parse_digest_key("_manifest/x.json"), None);
    }
}
