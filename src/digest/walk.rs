//! The integrity walk's pure core: what `verify` (and `verify --offline`) concludes from the
//! digests, the manifests and the files of an archive, with no help from the service. No I/O:
//! the command (`crate::commands::verify::integrity`) lists and reads, one object at a time,
//! and hands each here.
//!
//! 1. **Chains** ([`ChainCheck`]): per state, from the newest digest down to seq 1, each
//!    digest must parse, sit at its own key, be what the next one's `previous` records (key,
//!    SHA-256 of the whole file, signature), and the chain must end in `chain_start` at seq 1.
//!    With a public key, every digest must be signed by it.
//! 2. **Manifests** ([`Vouched`], [`check_manifest`]): every manifest a digest lists is
//!    present with the SHA-256 it records; every manifest no digest lists is a finding.
//! 3. **Files** ([`LiveFiles`], [`check_file`]): every live file (the manifests' files minus
//!    those replaced) is present with the size, SHA-256 and row count its manifest records;
//!    every `.parquet` file no manifest records as live is a finding.
//! 4. **Freshness** ([`max_age_finding`]): no digest at all, or a newest digest older than
//!    `--max-age`, is a finding (a stopped job, or a chain cut short).
//!
//! Each [`Finding`] names the object, and what vouched for it.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::format::{self, digest_key, Previous};
use crate::verify::{Manifest, ManifestFile};

/// What checks a digest's signature: [`crate::sign::VerifyingKey`], or a test's key.
pub trait Verifier {
    /// SHA-256 of the public key's DER SubjectPublicKeyInfo, 64 lowercase hex digits.
    fn sha256(&self) -> &str;
    /// Whether `signature` (base64, as a digest records it) is `algorithm`'s signature of
    /// `message` by this key.
    fn verify(&self, algorithm: &str, message: &[u8], signature: &str) -> bool;
}

impl Verifier for crate::sign::VerifyingKey {
    fn sha256(&self) -> &str {
        crate::sign::VerifyingKey::sha256(self)
    }
    fn verify(&self, algorithm: &str, message: &[u8], signature: &str) -> bool {
        crate::sign::base64_decode(signature)
            .is_some_and(|sig| crate::sign::VerifyingKey::verify(self, algorithm, message, &sig))
    }
}

/// What kind of finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// No digest at all under the digest root.
    NoDigest,
    /// The newest digest is older than `--max-age`.
    StaleDigest,
    /// The state records a newer digest than the newest the archive holds.
    NewestDigestMissing,
    /// A digest the chain needs is gone.
    MissingDigest,
    /// A digest does not parse, or its bytes are not those its successor records.
    AlteredDigest,
    /// A digest is not where its successor says, or the chain does not start at seq 1.
    BrokenLink,
    /// A digest's signature does not check with the public key, or it is unsigned while a
    /// key was given, or signed by another key.
    BadSignature,
    /// An object under `_digest/` that is not at a digest's key.
    UnreferencedDigest,
    /// A manifest a digest lists is gone.
    MissingManifest,
    /// A manifest's bytes are not those its digest records.
    AlteredManifest,
    /// A manifest no digest lists.
    UnreferencedManifest,
    /// A live file is gone.
    MissingFile,
    /// A live file's size, SHA-256 or row count are not those its manifest records.
    AlteredFile,
    /// A `.parquet` file no manifest records as live.
    UnreferencedFile,
    /// A compaction's proof fails: its live output's rows digest is not the one it recorded,
    /// or its inputs disagree with their own manifests, or its rows do not add up.
    UnprovedCompaction,
}

impl Kind {
    /// The words of the kind, as the report prints them.
    pub fn words(self) -> &'static str {
        match self {
            Kind::NoDigest => "no digest",
            Kind::StaleDigest => "stale digest",
            Kind::NewestDigestMissing => "newest digest missing",
            Kind::MissingDigest => "missing digest",
            Kind::AlteredDigest => "altered digest",
            Kind::BrokenLink => "broken link",
            Kind::BadSignature => "bad signature",
            Kind::UnreferencedDigest => "unreferenced digest",
            Kind::MissingManifest => "missing manifest",
            Kind::AlteredManifest => "altered manifest",
            Kind::UnreferencedManifest => "unreferenced manifest",
            Kind::MissingFile => "missing file",
            Kind::AlteredFile => "altered file",
            Kind::UnreferencedFile => "unreferenced file",
            Kind::UnprovedCompaction => "compaction not proved",
        }
    }
}

/// One finding: what, which object, what vouched for it, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: Kind,
    /// The object's key, relative to its root (the digest root for digests, the output for
    /// manifests and files); empty for [`Kind::NoDigest`].
    pub object: String,
    /// The digest or manifest that vouched for it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vouched_by: Option<String>,
    /// Why, in a few words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Finding {
    pub fn new(kind: Kind, object: impl Into<String>) -> Finding {
        Finding {
            kind,
            object: object.into(),
            vouched_by: None,
            detail: None,
        }
    }

    fn by(mut self, by: impl Into<String>) -> Finding {
        self.vouched_by = Some(by.into());
        self
    }

    pub fn because(mut self, detail: impl Into<String>) -> Finding {
        self.detail = Some(detail.into());
        self
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind.words())?;
        if !self.object.is_empty() {
            write!(f, " {}", self.object)?;
        }
        if let Some(by) = &self.vouched_by {
            let verb = match self.kind {
                Kind::MissingDigest | Kind::AlteredDigest | Kind::BrokenLink => "chained from",
                Kind::MissingFile | Kind::AlteredFile => "recorded by",
                _ => "listed by",
            };
            write!(f, " ({verb} {by})")?;
        }
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

/// The newest digest of a state, parsed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Newest {
    pub state_id: String,
    pub key: String,
    pub seq: u64,
    pub created_at: String,
}

/// One state's chain, checked from its newest digest down: call [`ChainCheck::digest`] for
/// each seq from the newest listed down to 1 (with `None` for a seq the digest root lacks),
/// then [`ChainCheck::finish`]. Holds one digest's link at a time.
pub struct ChainCheck<'a> {
    state_id: String,
    key: Option<&'a dyn Verifier>,
    /// What the digest checked last (seq + 1) records about the next one down, and its key.
    expect: Option<(Previous, String)>,
    /// The seq expected next.
    next: u64,
    /// Manifests listed so far: key → what vouches for it.
    pub manifests: Vec<(format::ManifestRef, String)>,
    /// Digests that parse, and signed ones left unchecked for want of a key.
    pub parsed: u64,
    pub unchecked_signatures: u64,
    /// The newest digest that parses.
    pub newest: Option<Newest>,
}

impl<'a> ChainCheck<'a> {
    /// A chain of `state_id` whose newest listed digest is `newest_seq`.
    pub fn new(state_id: &str, newest_seq: u64, key: Option<&'a dyn Verifier>) -> ChainCheck<'a> {
        ChainCheck {
            state_id: state_id.to_string(),
            key,
            expect: None,
            next: newest_seq,
            manifests: Vec::new(),
            parsed: 0,
            unchecked_signatures: 0,
            newest: None,
        }
    }

    /// Digest `seq`, the next one the digest root holds below those offered before: its
    /// file's bytes and their SHA-256. The seqs skipped since are missing.
    pub fn digest(&mut self, seq: u64, bytes: &[u8], sha: &str, out: &mut Vec<Finding>) {
        assert!(seq <= self.next, "digests are offered from the newest down");
        if seq < self.next {
            self.missing_down_to(seq + 1, out);
        }
        self.next = seq.saturating_sub(1);
        let key = digest_key(&self.state_id, seq);
        let expect = self.expect.take();
        let by = |f: Finding| match &expect {
            Some((_, by)) => f.by(by),
            None => f,
        };
        if let Some((prev, _)) = &expect {
            if prev.key != key {
                out.push(by(Finding::new(Kind::BrokenLink, &key)
                    .because(format!("the next digest links to {}", prev.key))));
            } else if !prev.sha256.eq_ignore_ascii_case(sha) {
                out.push(by(Finding::new(Kind::AlteredDigest, &key)
                    .because("its SHA-256 is not the one the next digest records")));
            }
        }
        let parsed = match format::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                out.push(by(Finding::new(Kind::AlteredDigest, &key).because(e)));
                return;
            }
        };
        let body = &parsed.body;
        let moved = body.state_id != self.state_id || body.seq != seq;
        if moved {
            out.push(by(Finding::new(Kind::AlteredDigest, &key).because(
                format!(
                    "it holds digest {} of state {} (moved?)",
                    body.seq, body.state_id
                ),
            )));
        }
        if let Some((prev, _)) = &expect {
            if prev.key == key && prev.signature != parsed.signature {
                out.push(by(Finding::new(Kind::AlteredDigest, &key)
                    .because("its signature is not the one the next digest records")));
            }
        }
        self.parsed += 1;
        if self.newest.is_none() && !moved {
            self.newest = Some(Newest {
                state_id: self.state_id.clone(),
                key: key.clone(),
                seq,
                created_at: body.created_at.clone(),
            });
        }
        self.check_signature(&key, &parsed, out);
        match (&body.previous, seq) {
            (None, 1) => {}
            (None, _) => out.push(Finding::new(Kind::BrokenLink, &key).because(format!(
                "it starts a chain, but digests 1 to {} come before it",
                seq - 1
            ))),
            (Some(p), 1) => out.push(
                Finding::new(Kind::BrokenLink, &key)
                    .because(format!("the first digest links to {}", p.key)),
            ),
            (Some(p), _) => self.expect = Some((p.clone(), key.clone())),
        }
        for m in &body.manifests {
            self.manifests.push((m.clone(), key.clone()));
        }
    }

    fn check_signature(&mut self, key: &str, parsed: &format::Parsed, out: &mut Vec<Finding>) {
        let signing = &parsed.body.signing;
        let sig = parsed.signature.as_deref();
        let Some(verifier) = self.key else {
            match (signing, sig) {
                (Some(_), Some(_)) => self.unchecked_signatures += 1,
                (None, None) => {}
                (Some(_), None) => out.push(
                    Finding::new(Kind::BadSignature, key)
                        .because("it records a signing key but has no signature"),
                ),
                (None, Some(_)) => out.push(
                    Finding::new(Kind::BadSignature, key)
                        .because("it has a signature but records no signing key"),
                ),
            }
            return;
        };
        let (Some(signing), Some(sig)) = (signing, sig) else {
            out.push(Finding::new(Kind::BadSignature, key).because("unsigned"));
            return;
        };
        if !signing
            .public_key_sha256
            .eq_ignore_ascii_case(verifier.sha256())
        {
            out.push(Finding::new(Kind::BadSignature, key).because(format!(
                "signed by another key ({}, public key SHA-256 {})",
                signing.key_id, signing.public_key_sha256
            )));
            return;
        }
        if !verifier.verify(&signing.algorithm, &parsed.body_bytes, sig) {
            out.push(Finding::new(Kind::BadSignature, key).because(format!(
                "the {} signature does not check",
                signing.algorithm
            )));
        }
    }

    /// Digests `low..=self.next` are missing: one finding, naming the highest (and how many
    /// below it), vouched for by the digest that links to it.
    fn missing_down_to(&mut self, low: u64, out: &mut Vec<Finding>) {
        let high = self.next;
        let mut f = Finding::new(Kind::MissingDigest, digest_key(&self.state_id, high));
        if let Some((_, by)) = self.expect.take() {
            f = f.by(by);
        }
        if high > low {
            f = f.because(format!(
                "and the {} digests below it, down to {}",
                high - low,
                digest_key(&self.state_id, low)
            ));
        }
        out.push(f);
        self.next = low - 1;
    }

    /// Every digest the root holds was offered: those left down to seq 1 are missing.
    pub fn finish(mut self, out: &mut Vec<Finding>) -> Self {
        if self.next > 0 {
            self.missing_down_to(1, out);
        }
        self
    }
}

/// Manifests the digests list: key → (SHA-256, the digest listing it). A manifest listed by
/// several digests (a killed run's, picked up again) is vouched for by the newest.
#[derive(Debug, Default)]
pub struct Vouched {
    map: HashMap<String, (String, String)>,
}

impl Vouched {
    pub fn add(&mut self, listed: Vec<(format::ManifestRef, String)>) {
        for (m, by) in listed {
            self.map.entry(m.key).or_insert((m.sha256, by));
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The digest that lists `key`, and the SHA-256 it records.
    pub fn get(&self, key: &str) -> Option<(&str, &str)> {
        self.map.get(key).map(|(s, b)| (s.as_str(), b.as_str()))
    }

    /// The listed manifests `seen` lacks, each a finding, sorted; only those `keep` accepts
    /// (the portals being verified).
    pub fn missing(&self, seen: &HashSet<String>, keep: impl Fn(&str) -> bool) -> Vec<Finding> {
        let mut out: Vec<Finding> = self
            .map
            .iter()
            .filter(|(k, _)| !seen.contains(*k) && keep(k))
            .map(|(k, (_, by))| Finding::new(Kind::MissingManifest, k).by(by))
            .collect();
        out.sort_by(|a, b| a.object.cmp(&b.object));
        out
    }
}

/// One manifest object present under `_manifest/`, read, with its bytes' SHA-256: a finding
/// if no digest lists it, or its bytes are not those its digest records.
pub fn check_manifest(vouched: &Vouched, key: &str, sha256: &str) -> Option<Finding> {
    match vouched.get(key) {
        None => Some(Finding::new(Kind::UnreferencedManifest, key)),
        Some((want, by)) if !want.eq_ignore_ascii_case(sha256) => Some(
            Finding::new(Kind::AlteredManifest, key)
                .by(by)
                .because("its SHA-256 is not the one the digest records"),
        ),
        Some(_) => None,
    }
}

/// The live files of one portal, each with the manifest that records it: every manifest's
/// files minus every path any manifest replaces; a path recorded twice keeps the record of
/// the higher `seq` (as [`crate::verify::live_files`]).
#[derive(Debug, Default)]
pub struct LiveFiles {
    pub files: BTreeMap<String, (ManifestFile, String)>,
}

impl LiveFiles {
    /// From `(manifest key, manifest)` pairs.
    pub fn new(manifests: &[(String, Manifest)]) -> LiveFiles {
        let mut order: Vec<&(String, Manifest)> = manifests.iter().collect();
        order.sort_by(|a, b| (a.1.seq, &a.1.state_id).cmp(&(b.1.seq, &b.1.state_id)));
        let replaced: HashSet<&str> = manifests
            .iter()
            .flat_map(|(_, m)| m.replaces.iter().map(String::as_str))
            .collect();
        let mut files = BTreeMap::new();
        for (key, m) in order {
            for f in &m.files {
                if !replaced.contains(f.path.as_str()) {
                    files.insert(f.path.clone(), (f.clone(), key.clone()));
                }
            }
        }
        LiveFiles { files }
    }
}

/// What was read of one file: its size, SHA-256, and row count from its Parquet footer
/// (`None` if the footer cannot be read).
#[derive(Clone, Debug)]
pub struct Seen {
    pub bytes: u64,
    pub sha256: String,
    pub rows: Option<u64>,
}

/// One `.parquet` file under `sessions/`, against the live files: a finding if it is not
/// live, or differs from its manifest's record.
pub fn check_file(live: &LiveFiles, path: &str, seen: &Seen) -> Option<Finding> {
    let Some((want, by)) = live.files.get(path) else {
        return Some(Finding::new(Kind::UnreferencedFile, path));
    };
    let mut why = Vec::new();
    if want.bytes != seen.bytes {
        why.push(format!("{} bytes, not {}", seen.bytes, want.bytes));
    }
    if !want.sha256.eq_ignore_ascii_case(&seen.sha256) {
        why.push("its SHA-256 differs".to_string());
    }
    match seen.rows {
        Some(r) if r != want.rows => why.push(format!("{r} rows, not {}", want.rows)),
        Some(_) => {}
        None => why.push("its Parquet footer cannot be read".to_string()),
    }
    (!why.is_empty()).then(|| {
        Finding::new(Kind::AlteredFile, path)
            .by(by)
            .because(why.join(", "))
    })
}

/// The live files of `live` not in `seen`, each a finding.
pub fn missing_files(live: &LiveFiles, seen: &HashSet<String>) -> Vec<Finding> {
    live.files
        .iter()
        .filter(|(p, _)| !seen.contains(*p))
        .map(|(p, (_, by))| Finding::new(Kind::MissingFile, p).by(by))
        .collect()
}

/// An object under `_digest/` that is not at a digest key.
pub fn unreferenced_digest(key: &str) -> Finding {
    Finding::new(Kind::UnreferencedDigest, key)
        .because("not a digest key (a moved or stray object)")
}

/// The state records digest `seq` as its newest, but the archive's newest is `have`.
pub fn newest_missing(state_id: &str, seq: u64, have: Option<u64>) -> Option<Finding> {
    (have.unwrap_or(0) < seq).then(|| {
        Finding::new(Kind::NewestDigestMissing, digest_key(state_id, seq)).because(format!(
            "the state wrote digest {seq}; the newest the digest root holds is {}",
            have.map_or("none".to_string(), |h| h.to_string())
        ))
    })
}

/// Freshness: no digest at all is a finding; so is a newest digest (of all states) older
/// than `max_age_ms`, at `now_ms`.
pub fn max_age_finding(newest: &[Newest], max_age_ms: Option<i64>, now_ms: i64) -> Option<Finding> {
    let Some(n) = newest
        .iter()
        .max_by_key(|n| created_ms(&n.created_at).unwrap_or(i64::MIN))
    else {
        return Some(Finding::new(Kind::NoDigest, "").because("nothing vouches for the archive"));
    };
    let max = max_age_ms?;
    let Some(at) = created_ms(&n.created_at) else {
        return Some(
            Finding::new(Kind::StaleDigest, &n.key)
                .because(format!("unreadable created_at {:?}", n.created_at)),
        );
    };
    (now_ms - at > max).then(|| {
        Finding::new(Kind::StaleDigest, &n.key).because(format!(
            "written {} ago, at {}: older than --max-age {}",
            human_ms(now_ms - at),
            n.created_at,
            human_ms(max)
        ))
    })
}

/// Epoch ms of a digest's `created_at`.
pub fn created_ms(text: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339(text).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(d.as_millis() as i64)
}

/// A duration in ms, as humantime prints it, to the second.
pub fn human_ms(ms: i64) -> String {
    let secs = (ms.max(0) / 1000) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::format::{body_bytes, file_bytes, Body, ManifestRef, Range, Signing};
    use crate::sink::manifest::sha256_hex;

    /// A stand-in key: a "signature" is the SHA-256 (hex) of the key's secret and the
    /// message. Real keys are tested in `src/sign.rs` and tests/audit.rs.
    struct TestKey {
        secret: &'static str,
        fp: String,
    }

    impl TestKey {
        fn new(secret: &'static str) -> TestKey {
            TestKey {
                secret,
                fp: sha256_hex(secret.as_bytes()),
            }
        }
        fn sign(&self, msg: &[u8]) -> String {
            let mut m = self.secret.as_bytes().to_vec();
            m.extend_from_slice(msg);
            sha256_hex(&m)
        }
    }

    impl Verifier for TestKey {
        fn sha256(&self) -> &str {
            &self.fp
        }
        fn verify(&self, alg: &str, msg: &[u8], sig: &str) -> bool {
            alg == "ECDSA_SHA_256" && self.sign(msg) == sig
        }
    }

    /// A chain of `n` digests of state `s`, digest i listing manifest `m-i`; signed by `key`.
    fn chain(n: u64, key: Option<&TestKey>) -> Vec<Vec<u8>> {
        let mut files: Vec<Vec<u8>> = Vec::new();
        for seq in 1..=n {
            let previous = files.last().map(|f| {
                let p = format::parse(f).unwrap();
                Previous {
                    key: digest_key("s", seq - 1),
                    sha256: sha256_hex(f),
                    signature: p.signature,
                }
            });
            let body = Body {
                version: format::VERSION,
                state_id: "s".into(),
                seq,
                command: "run".into(),
                created_at: format!("2026-12-0{seq}T10:00:00.000Z"),
                range: Range {
                    from: "a".into(),
                    to: "b".into(),
                },
                chain_start: previous.is_none(),
                previous,
                signing: key.map(|k| Signing {
                    algorithm: "ECDSA_SHA_256".into(),
                    key_id: "file".into(),
                    public_key_sha256: k.fp.clone(),
                }),
                portals: vec![],
                manifests: vec![ManifestRef {
                    key: format!("m-{seq}"),
                    sha256: sha256_hex(format!("manifest {seq}").as_bytes()),
                }],
            };
            let bytes = body_bytes(&body);
            let sig = key.map(|k| k.sign(&bytes));
            files.push(file_bytes(&bytes, sig.as_deref()));
        }
        files
    }

    /// Walk `files` (index = seq - 1; `None` = absent) as the I/O does.
    fn walk<'a>(
        files: &[Option<Vec<u8>>],
        key: Option<&'a dyn Verifier>,
    ) -> (Vec<String>, ChainCheck<'a>) {
        let mut out = Vec::new();
        let newest = files.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
        let mut c = ChainCheck::new("s", newest as u64, key);
        for seq in (1..=newest as u64).rev() {
            if let Some(f) = &files[seq as usize - 1] {
                c.digest(seq, f, &sha256_hex(f), &mut out);
            }
        }
        let c = c.finish(&mut out);
        (out.iter().map(|f| f.to_string()).collect(), c)
    }

    fn some(files: Vec<Vec<u8>>) -> Vec<Option<Vec<u8>>> {
        files.into_iter().map(Some).collect()
    }

    #[test]
    fn an_intact_chain_has_no_finding_and_lists_every_manifest() {
        let (found, c) = walk(&some(chain(4, None)), None);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(c.parsed, 4);
        assert_eq!(c.unchecked_signatures, 0);
        let mut listed: Vec<String> = c.manifests.iter().map(|(m, _)| m.key.clone()).collect();
        listed.sort();
        assert_eq!(listed, ["m-1", "m-2", "m-3", "m-4"]);
        assert_eq!(c.manifests[0].1, digest_key("s", 4));
        assert_eq!(c.newest.unwrap().seq, 4);
    }

    #[test]
    fn a_missing_middle_digest_is_named_with_the_digest_chained_from_it() {
        let mut files = some(chain(4, None));
        files[1] = None;
        let (found, c) = walk(&files, None);
        assert_eq!(
            found,
            [
                "missing digest _digest/state_id=s/0000000002.json (chained from _digest/state_id=s/0000000003.json)"
            ]
        );
        assert_eq!(c.parsed, 3);
    }

    #[test]
    fn missing_digests_below_are_one_finding_naming_the_range() {
        let mut files = some(chain(5, None));
        files[0] = None;
        files[1] = None;
        files[2] = None;
        let (found, _) = walk(&files, None);
        assert_eq!(
            found,
            [
                "missing digest _digest/state_id=s/0000000003.json (chained from _digest/state_id=s/0000000004.json): and the 2 digests below it, down to _digest/state_id=s/0000000001.json"
            ]
        );
    }

    #[test]
    fn one_altered_byte_anywhere_in_a_digest_is_found() {
        let good = chain(3, None);
        for i in 0..good[1].len() {
            let mut files = some(good.clone());
            let f = files[1].as_mut().unwrap();
            f[i] ^= 0x01;
            let (found, _) = walk(&files, None);
            assert!(
                found
                    .iter()
                    .any(|f| f.starts_with("altered digest _digest/state_id=s/0000000002.json")),
                "byte {i}: {found:?}"
            );
        }
        // The newest digest has no successor: an unsigned one altered in a way that still
        // parses is caught only by a key (or the state's seq, online); one that does not
        // parse is caught always.
        let mut files = some(good);
        files[2].as_mut().unwrap()[0] = b'[';
        let (found, _) = walk(&files, None);
        assert!(
            found[0].starts_with(
                "altered digest _digest/state_id=s/0000000003.json: not a digest body"
            ),
            "{found:?}"
        );
    }

    #[test]
    fn a_chain_not_starting_at_one_is_a_broken_link() {
        let mut files = some(chain(3, None));
        // Digest 2 replaced by a fresh chain start: digest 3 no longer links to its bytes.
        let mut fresh = format::parse(files[1].as_ref().unwrap()).unwrap().body;
        fresh.previous = None;
        fresh.chain_start = true;
        files[1] = Some(file_bytes(&body_bytes(&fresh), None));
        let (found, _) = walk(&files, None);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("altered digest _digest/state_id=s/0000000002.json"));
        assert!(found[1]
            .starts_with("broken link _digest/state_id=s/0000000002.json: it starts a chain"));
    }

    #[test]
    fn signatures_are_checked_with_the_key_given() {
        let key = TestKey::new("k1");
        let signed = some(chain(3, Some(&key)));
        let (found, c) = walk(&signed, Some(&key));
        assert!(found.is_empty(), "{found:?}");
        // Without a key: not checked, not a finding.
        let (found, c2) = walk(&signed, None);
        assert!(found.is_empty());
        assert_eq!((c.unchecked_signatures, c2.unchecked_signatures), (0, 3));
        // Another key.
        let other = TestKey::new("k2");
        let (found, _) = walk(&signed, Some(&other));
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found
            .iter()
            .all(|f| f.contains("bad signature") && f.contains("signed by another key")));
        // Unsigned digests when a key is given.
        let (found, _) = walk(&some(chain(2, None)), Some(&key));
        assert_eq!(found.len(), 2);
        assert!(found[0].ends_with(": unsigned"), "{found:?}");
    }

    #[test]
    fn a_newest_digest_re_signed_by_another_key_is_caught_by_the_key_only() {
        let key = TestKey::new("k1");
        let other = TestKey::new("k2");
        let mut files = some(chain(2, Some(&key)));
        let mut body = format::parse(files[1].as_ref().unwrap()).unwrap().body;
        body.manifests.clear();
        body.signing.as_mut().unwrap().public_key_sha256 = key.fp.clone();
        let bytes = body_bytes(&body);
        files[1] = Some(file_bytes(&bytes, Some(&other.sign(&bytes))));
        let (found, _) = walk(&files, Some(&key));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("signature does not check"), "{found:?}");
    }

    #[test]
    fn manifests_are_checked_against_the_digests_that_list_them() {
        let (_, c) = walk(&some(chain(2, None)), None);
        let mut v = Vouched::default();
        v.add(c.manifests);
        let good = sha256_hex(b"manifest 1");
        assert_eq!(check_manifest(&v, "m-1", &good), None);
        let f = check_manifest(&v, "m-2", &good).unwrap();
        assert_eq!(
            f.to_string(),
            "altered manifest m-2 (listed by _digest/state_id=s/0000000002.json): its SHA-256 is not the one the digest records"
        );
        assert_eq!(
            check_manifest(&v, "m-9", &good).unwrap().to_string(),
            "unreferenced manifest m-9"
        );
        let seen: HashSet<String> = ["m-1".to_string()].into();
        let missing = v.missing(&seen, |_| true);
        assert_eq!(
            missing[0].to_string(),
            "missing manifest m-2 (listed by _digest/state_id=s/0000000002.json)"
        );
        assert!(v.missing(&seen, |k| k != "m-2").is_empty());
    }

    fn manifest(seq: i64, files: &[(&str, &str)], replaces: &[&str]) -> (String, Manifest) {
        (
            format!("_manifest/portal_id=p/s-{seq:010}.json"),
            Manifest {
                version: 1,
                portal_id: "p".into(),
                state_id: "s".into(),
                seq,
                kind: if replaces.is_empty() {
                    "flush"
                } else {
                    "compaction"
                }
                .into(),
                files: files
                    .iter()
                    .map(|(p, sha)| ManifestFile {
                        path: p.to_string(),
                        rows: 5,
                        bytes: 100,
                        sha256: sha.to_string(),
                    })
                    .collect(),
                replaces: replaces.iter().map(|r| r.to_string()).collect(),
                ..Manifest::default()
            },
        )
    }

    #[test]
    fn files_are_checked_against_the_manifest_that_records_them() {
        let live = LiveFiles::new(&[
            manifest(1, &[("a", "aa"), ("b", "bb")], &[]),
            manifest(2, &[("c", "cc")], &[]),
            manifest(3, &[("ab", "ab")], &["a", "b"]),
        ]);
        assert_eq!(live.files.keys().collect::<Vec<_>>(), ["ab", "c"]);
        let seen = |bytes, sha: &str, rows| Seen {
            bytes,
            sha256: sha.into(),
            rows,
        };
        assert_eq!(check_file(&live, "ab", &seen(100, "AB", Some(5))), None);
        assert_eq!(
            check_file(&live, "c", &seen(101, "cd", Some(4)))
                .unwrap()
                .to_string(),
            "altered file c (recorded by _manifest/portal_id=p/s-0000000002.json): 101 bytes, not 100, its SHA-256 differs, 4 rows, not 5"
        );
        assert_eq!(
            check_file(&live, "a", &seen(100, "aa", Some(5)))
                .unwrap()
                .to_string(),
            "unreferenced file a",
            "replaced by compaction, yet still there"
        );
        let found = missing_files(&live, &["ab".to_string()].into());
        assert_eq!(
            found[0].to_string(),
            "missing file c (recorded by _manifest/portal_id=p/s-0000000002.json)"
        );
    }

    #[test]
    fn no_digest_or_an_old_one_is_a_finding() {
        let now = created_ms("2026-12-05T12:00:00.000Z").unwrap();
        assert_eq!(
            max_age_finding(&[], None, now).unwrap().to_string(),
            "no digest: nothing vouches for the archive"
        );
        let n = |at: &str| Newest {
            state_id: "s".into(),
            key: digest_key("s", 1),
            seq: 1,
            created_at: at.into(),
        };
        let newest = [n("2026-12-01T12:00:00.000Z"), n("2026-12-04T12:00:00.000Z")];
        assert_eq!(max_age_finding(&newest, None, now), None);
        let day = 86_400_000;
        assert_eq!(max_age_finding(&newest, Some(2 * day), now), None);
        let f = max_age_finding(&newest, Some(day / 2), now).unwrap();
        assert_eq!(f.kind, Kind::StaleDigest);
        assert!(f.to_string().contains("written 1day ago"), "{f}");
        assert_eq!(newest_missing("s", 4, Some(4)), None);
        assert_eq!(
            newest_missing("s", 5, Some(4)).unwrap().to_string(),
            "newest digest missing _digest/state_id=s/0000000005.json: the state wrote digest 5; the newest the digest root holds is 4"
        );
    }
}
