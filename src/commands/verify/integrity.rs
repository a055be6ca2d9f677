//! The integrity walk's I/O (its logic is [`crate::digest::walk`]): list the digests, walk
//! each state's chain from its newest digest down, then check every manifest and every file
//! of the archive against what vouches for it. One object in memory at a time; what is kept
//! is the manifests' keys and the file records of one portal.
//!
//! It needs no WorkSpaces Web call and no state: `verify --offline` is only this.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::digest::format::{parse_digest_key, DIGEST};
use crate::digest::walk::{
    check_file, check_manifest, max_age_finding, missing_files, newest_missing,
    unreferenced_digest, ChainCheck, Finding, LiveFiles, Newest, Seen, Verifier, Vouched,
};
use crate::model::PortalId;
use crate::sink::manifest::sha256_hex;
use crate::sink::{Sink, MANIFEST};
use crate::verify::parse_manifest;

/// What the walk is asked to do.
#[derive(Default)]
pub struct WalkOpts<'a> {
    /// The public key every digest must be signed by; `None`: signatures are not checked.
    pub key: Option<&'a dyn Verifier>,
    /// `--max-age`, in ms: a newest digest older than this is a finding.
    pub max_age_ms: Option<i64>,
    /// Only these portals' manifests and files (a shard's, or `--portal-id`); `None`: all.
    pub portals: Option<HashSet<String>>,
    /// Portals whose files `verify` already read and checked against the same manifests: the
    /// walk does not read them again (their findings are in the portal's report).
    pub files_checked: HashSet<String>,
    /// `(state id, seq)`: the newest digest each state says it wrote (online `verify`).
    pub expected_newest: Vec<(String, u64)>,
}

/// What the walk found: `verify`'s report's `integrity`.
#[derive(Debug, Serialize)]
pub struct Integrity {
    /// No finding.
    pub ok: bool,
    /// Digests read, of how many states.
    pub digests: u64,
    pub states: u64,
    /// Manifests and `.parquet` files read (files already checked by `verify` are counted
    /// too).
    pub manifests: u64,
    pub files: u64,
    /// `checked`, `not checked (give --public-key)`, or `none` (no signed digest).
    pub signatures: String,
    /// The newest digest of each state.
    pub newest: Vec<Newest>,
    pub findings: Vec<Finding>,
}

/// Walk the archive at `archive`, whose digests are at `digests`.
pub async fn walk(archive: &Sink, digests: &Sink, opts: &WalkOpts<'_>) -> Result<Integrity> {
    let mut findings = Vec::new();
    let mut vouched = Vouched::default();
    let mut newest = Vec::new();
    let (mut parsed, mut unchecked) = (0u64, 0u64);

    // 1. The chains.
    let keys = digests.list_tree(DIGEST.to_string()).await?;
    let any_digest = !keys.is_empty();
    let mut states: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for key in &keys {
        match parse_digest_key(key) {
            Some((state, seq)) if seq > 0 => {
                states.entry(state.to_string()).or_default().insert(seq);
            }
            _ => findings.push(unreferenced_digest(key)),
        }
    }
    drop(keys);
    for (state, seqs) in &states {
        let top = *seqs.last().expect("a state listed has a digest");
        let mut chain = ChainCheck::new(state, top, opts.key);
        for &seq in seqs.iter().rev() {
            let key = crate::digest::format::digest_key(state, seq);
            let bytes = digests.read(key).await?;
            let sha = sha256_hex(&bytes);
            chain.digest(seq, &bytes, &sha, &mut findings);
        }
        let chain = chain.finish(&mut findings);
        parsed += chain.parsed;
        unchecked += chain.unchecked_signatures;
        newest.extend(chain.newest.clone());
        vouched.add(chain.manifests);
    }
    for (state, seq) in &opts.expected_newest {
        let have = states.get(state).and_then(|s| s.last().copied());
        findings.extend(newest_missing(state, *seq, have));
    }
    // No digest at all is a finding; digests none of which could be read are findings
    // already.
    if !any_digest || !newest.is_empty() {
        findings.extend(max_age_finding(
            &newest,
            opts.max_age_ms,
            crate::clock::now_ms(),
        ));
    }

    // 2. The manifests, portal by portal, and 3. each portal's files.
    let wanted = |portal: &str| opts.portals.as_ref().is_none_or(|p| p.contains(portal));
    let mut by_portal: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen_manifests: HashSet<String> = HashSet::new();
    for key in archive.list_tree(MANIFEST.to_string()).await? {
        match portal_of(&key) {
            Some(p) if wanted(p) => by_portal.entry(p.to_string()).or_default().push(key),
            Some(_) => {}
            // Not a portal's manifest: only whether a digest lists it can be checked.
            None if opts.portals.is_none() => {
                let bytes = archive.read(key.clone()).await?;
                findings.extend(check_manifest(&vouched, &key, &sha256_hex(&bytes)));
                seen_manifests.insert(key);
            }
            None => {}
        }
    }
    for p in archive.portals().await? {
        if wanted(p.as_str()) {
            by_portal.entry(p.to_string()).or_default();
        }
    }
    let mut files = 0u64;
    for (portal, keys) in by_portal {
        let mut manifests = Vec::new();
        for key in keys {
            let bytes = archive.read(key.clone()).await?;
            let sha = sha256_hex(&bytes);
            let finding = check_manifest(&vouched, &key, &sha);
            match parse_manifest(&bytes, &portal) {
                Ok(m) => manifests.push((key.clone(), m)),
                // An altered or unreferenced one is a finding already.
                Err(e) if finding.is_none() => findings.push(Finding {
                    kind: crate::digest::walk::Kind::AlteredManifest,
                    object: key.clone(),
                    vouched_by: vouched.get(&key).map(|(_, by)| by.to_string()),
                    detail: Some(e),
                }),
                Err(_) => {}
            }
            findings.extend(finding);
            seen_manifests.insert(key);
        }
        let live = LiveFiles::new(&manifests);
        // Compactions prove themselves: their manifests among themselves now, each live
        // output's rows digest as it is read.
        let mut proofs = crate::verify::ProofCheck::new(&manifests);
        drop(manifests);
        let Ok(id) = PortalId::parse(&portal) else {
            continue;
        };
        let parts = archive.partitions(&id).await?;
        let skip = opts.files_checked.contains(&portal);
        let mut seen = HashSet::new();
        for key in parts.into_iter().flat_map(|(_, keys)| keys) {
            files += 1;
            if skip {
                continue;
            }
            let bytes = archive.read(key.clone()).await?;
            let name = key.clone();
            let proved = proofs.wants(&key);
            let (got, rows_digest) = tokio::task::spawn_blocking(move || {
                let digest = proved.then(|| {
                    crate::rows_digest::file_rows_digest(bytes::Bytes::from(bytes.clone()), &name)
                        .map(|(_, d)| d.hex())
                        .unwrap_or_else(|e| format!("unreadable ({e:#})"))
                });
                (seen_of(bytes), digest)
            })
            .await
            .with_context(|| format!("reading {key}"))?;
            if let Some(d) = rows_digest {
                proofs.output(&key, &d);
            }
            findings.extend(check_file(&live, &key, &got));
            seen.insert(key);
        }
        if !skip {
            findings.extend(missing_files(&live, &seen));
            // (Checked by the portal's own file check when `skip`.)
            findings.extend(proofs.problems.drain(..).map(|p| {
                let (manifest, why) = p.split_once(": ").unwrap_or((&p, ""));
                Finding::new(crate::digest::walk::Kind::UnprovedCompaction, manifest).because(why)
            }));
        }
    }
    findings.extend(
        vouched.missing(&seen_manifests, |key| match portal_of(key) {
            Some(p) => wanted(p),
            None => opts.portals.is_none(),
        }),
    );

    let signatures = match (opts.key.is_some(), unchecked) {
        (true, _) => "checked",
        (false, 0) => "none",
        (false, _) => "not checked (give --public-key)",
    };
    Ok(Integrity {
        ok: findings.is_empty(),
        digests: parsed,
        states: states.len() as u64,
        manifests: seen_manifests.len() as u64,
        files,
        signatures: signatures.to_string(),
        newest,
        findings,
    })
}

/// The portal id of a manifest key `_manifest/portal_id=<id>/<name>`.
fn portal_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(MANIFEST)?.strip_prefix("/portal_id=")?;
    let (portal, name) = rest.split_once('/')?;
    (!portal.is_empty() && !name.contains('/')).then_some(portal)
}

/// A file's size, SHA-256 and row count (from its Parquet footer).
fn seen_of(bytes: Vec<u8>) -> Seen {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let sha256 = sha256_hex(&bytes);
    let len = bytes.len() as u64;
    let rows = SerializedFileReader::new(bytes::Bytes::from(bytes))
        .ok()
        .map(|r| r.metadata().file_metadata().num_rows() as u64);
    Seen {
        bytes: len,
        sha256,
        rows,
    }
}

/// The text report of the walk.
pub fn print(i: &Integrity) {
    for f in i.findings.iter().take(200) {
        println!("{f}");
    }
    if i.findings.len() > 200 {
        println!("... and {} more findings", i.findings.len() - 200);
    }
    let newest = i
        .newest
        .iter()
        .max_by_key(|n| crate::digest::walk::created_ms(&n.created_at))
        .map(|n| {
            let age = crate::digest::walk::created_ms(&n.created_at)
                .map(|at| crate::digest::walk::human_ms(crate::clock::now_ms() - at))
                .unwrap_or_else(|| "?".into());
            format!("; newest digest {} ({age} old)", n.key)
        })
        .unwrap_or_default();
    let verdict = match i.findings.len() {
        0 => "intact".to_string(),
        1 => "1 finding".to_string(),
        n => format!("{n} findings"),
    };
    println!(
        "integrity: {verdict}: {} digests of {} states, {} manifests, {} files; signatures {}{newest}",
        i.digests, i.states, i.manifests, i.files, i.signatures
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_keys_name_their_portal() {
        assert_eq!(
            portal_of("_manifest/portal_id=p1/s-0000000001.json"),
            Some("p1")
        );
        assert_eq!(portal_of("_manifest/portal_id=p1/x/y.json"), None);
        assert_eq!(portal_of("_manifest/other.json"), None);
    }
}
