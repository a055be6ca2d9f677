//! Manifests: one small JSON object per committed flush or compaction, under
//! `_manifest/portal_id=<id>/<state_id>-<seq>.json`, naming each file it published (path,
//! rows, bytes, SHA-256) and, for a compaction, the files it replaced. They are written after
//! the commit and before the files are published, never overwritten, and outlive the state: the
//! live files of a portal are the union of the `files` of its manifests minus every path in
//! any `replaces`, so a file deleted or altered later can be detected from the archive alone.
//! A compaction's manifest also proves itself: it records its inputs (path, SHA-256, rows) and
//! the [rows digest](crate::rows_digest) of its output, which equals its inputs' (a repair
//! that removed duplicated rows records their count and digest too).
//! The format is described in `docs/dataset.md`.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The manifest format's version.
pub const VERSION: u32 = 1;

#[derive(Serialize)]
struct Manifest<'a> {
    version: u32,
    portal_id: &'a str,
    state_id: &'a str,
    seq: i64,
    kind: &'static str,
    files: Vec<Entry<'a>>,
    replaces: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inputs: Option<&'a [Input]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rows_sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    removed_rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    removed_rows_sha256: Option<&'a str>,
}

/// What a compaction's (or a repair's rewrite's) manifest proves about its rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proof {
    /// The files replaced, as read, sorted by path.
    pub inputs: Vec<Input>,
    /// The rows digest of the output file; for a compaction, also of the inputs together.
    pub rows_sha256: String,
    /// Rows of the inputs the output does not hold (a repair's duplicated rows; 0 for a
    /// compaction), and their rows digest: inputs = output + removed.
    pub removed_rows: u64,
    pub removed_rows_sha256: String,
}

/// One file a compaction replaced, as it read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Input {
    pub path: String,
    pub sha256: String,
    pub rows: u64,
}

/// One published file of a manifest.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Entry<'a> {
    /// Relative to the output root.
    pub path: &'a str,
    pub rows: i64,
    pub bytes: i64,
    /// 64 lowercase hex digits.
    pub sha256: &'a str,
}

/// The bytes of the manifest of flush `seq` (a compaction if it `replaces` files). The same
/// inputs give the same bytes whatever their order, so a replayed write finds its own
/// manifest.
pub fn manifest_bytes(
    portal_id: &str,
    state_id: &str,
    seq: i64,
    files: &[Entry<'_>],
    replaces: &[String],
) -> Vec<u8> {
    proved_manifest_bytes(portal_id, state_id, seq, files, replaces, None)
}

/// [`manifest_bytes`], with a compaction's [`Proof`].
pub fn proved_manifest_bytes(
    portal_id: &str,
    state_id: &str,
    seq: i64,
    files: &[Entry<'_>],
    replaces: &[String],
    proof: Option<&Proof>,
) -> Vec<u8> {
    let mut entries: Vec<Entry> = files.to_vec();
    entries.sort_by(|a, b| a.path.cmp(b.path));
    let mut replaces: Vec<&str> = replaces.iter().map(String::as_str).collect();
    replaces.sort_unstable();
    let m = Manifest {
        version: VERSION,
        portal_id,
        state_id,
        seq,
        kind: if replaces.is_empty() {
            "flush"
        } else {
            "compaction"
        },
        files: entries,
        replaces,
        inputs: proof.map(|p| p.inputs.as_slice()),
        rows_sha256: proof.map(|p| p.rows_sha256.as_str()),
        removed_rows: proof.filter(|p| p.removed_rows > 0).map(|p| p.removed_rows),
        removed_rows_sha256: proof
            .filter(|p| p.removed_rows > 0)
            .map(|p| p.removed_rows_sha256.as_str()),
    };
    let mut out = serde_json::to_vec(&m).expect("a manifest serializes");
    out.push(b'\n');
    out
}

/// SHA-256 of `bytes`, as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A hex SHA-256 as S3's `x-amz-checksum-sha256` wants it: the 32 bytes in base64. `None` if
/// `hex` is not 64 hex digits.
pub fn checksum_base64(hex: &str) -> Option<String> {
    if hex.len() != 64 {
        return None;
    }
    let bytes = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(crate::sign::base64_encode(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_and_its_base64_match_known_values() {
        let empty = sha256_hex(b"");
        assert_eq!(
            empty,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            checksum_base64(&empty).unwrap(),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(checksum_base64("xyz"), None);
    }

    #[test]
    fn a_manifest_has_the_documented_shape_and_does_not_depend_on_order() {
        let sha = "ab".repeat(32);
        let f = |path| Entry {
            path,
            rows: 2,
            bytes: 10,
            sha256: &sha,
        };
        let (a, b) = (f("sessions/a.parquet"), f("sessions/b.parquet"));
        let one = manifest_bytes("p", "s", 3, &[a, b], &[]);
        assert_eq!(one, manifest_bytes("p", "s", 3, &[b, a], &[]));
        let v: serde_json::Value = serde_json::from_slice(&one).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["portal_id"], "p");
        assert_eq!(v["state_id"], "s");
        assert_eq!(v["seq"], 3);
        assert_eq!(v["kind"], "flush");
        assert_eq!(v["files"][0]["path"], "sessions/a.parquet");
        assert_eq!(v["files"][1]["rows"], 2);
        assert_eq!(v["files"][1]["bytes"], 10);
        assert_eq!(v["replaces"], serde_json::json!([]));
        let c = manifest_bytes(
            "p",
            "s",
            4,
            &[a],
            &["sessions/y.parquet".into(), "sessions/x.parquet".into()],
        );
        let v: serde_json::Value = serde_json::from_slice(&c).unwrap();
        assert_eq!(v["kind"], "compaction");
        assert_eq!(
            v["replaces"],
            serde_json::json!(["sessions/x.parquet", "sessions/y.parquet"])
        );
        assert!(String::from_utf8(c).unwrap().starts_with(
            r#"{"version":1,"portal_id":"p","state_id":"s","seq":4,"kind":"compaction","files":[{"path":"sessions/a.parquet","rows":2,"bytes":10,"sha256":"abab"#
        ));
        assert!(v.get("inputs").is_none() && v.get("rows_sha256").is_none());
    }

    #[test]
    fn a_proved_compaction_records_its_inputs_and_rows_digest_after_the_old_fields() {
        let sha = "ab".repeat(32);
        let out = Entry {
            path: "sessions/c.parquet",
            rows: 5,
            bytes: 10,
            sha256: &sha,
        };
        let input = |path: &str, rows| Input {
            path: path.into(),
            sha256: "cd".repeat(32),
            rows,
        };
        let mut proof = Proof {
            inputs: vec![
                input("sessions/a.parquet", 2),
                input("sessions/b.parquet", 3),
            ],
            rows_sha256: "ef".repeat(32),
            ..Proof::default()
        };
        let replaces = ["sessions/b.parquet".into(), "sessions/a.parquet".into()];
        let bytes = proved_manifest_bytes("p", "s", 4, &[out], &replaces, Some(&proof));
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains(r#""replaces":["sessions/a.parquet","sessions/b.parquet"],"inputs":[{"path":"sessions/a.parquet","sha256":"cdcd"#),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["inputs"][1]["rows"], 3);
        assert_eq!(v["rows_sha256"], "ef".repeat(32));
        assert!(v.get("removed_rows").is_none());
        proof.removed_rows = 1;
        proof.removed_rows_sha256 = "01".repeat(32);
        let bytes = proved_manifest_bytes("p", "s", 4, &[out], &replaces, Some(&proof));
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["removed_rows"], 1);
        assert_eq!(v["removed_rows_sha256"], "01".repeat(32));
    }
}
