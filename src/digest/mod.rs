//! Digests: at the end of each `run`, `backfill`, `compact` and `verify --repair`, one small
//! file per state that lists the manifests written since the previous digest (key and
//! SHA-256) and chains to that previous digest by its SHA-256 and signature. See
//! [`format`] and `docs/audit.md`.
//!
//! Exactly once, whatever kills the process:
//! 1. every manifest's SHA-256 is recorded in the state as it is written
//!    (`run::flush::write_manifest`), waiting for a digest;
//! 2. the digest is built from the state, signed (one KMS call), and stored in the state with
//!    its exact bytes in one transaction that also marks its manifests as listed; the state is
//!    then made durable where it lives;
//! 3. the file is written, never overwriting (a local digest root: a durable create-new; S3:
//!    `If-None-Match: *`); a replayed write finds the same bytes;
//! 4. the digest is marked written (its bytes are dropped from the state).
//!
//! A command that finds a digest stored but not written writes those bytes first. So a chain
//! has no gap, and one seq never has two different digests: a digest is built only once the
//! one before it is written, and a digest stored is the only one that seq ever gets.

pub mod format;
pub mod walk;

use anyhow::{Context, Result};
use tracing::info;

use crate::clock::{now_ms, rfc3339};
use crate::config::{Config, Output};
use crate::failpoint;
use crate::model::PortalId;
use crate::sign::SigningKey;
use crate::sink::manifest::sha256_hex;
use crate::sink::{manifest_key, Role, Sink, MANIFEST, STAGING};
use crate::state::{DigestBasis, ManifestRow, NewDigest, StateHandle};
use format::{Body, ManifestRef, PortalPass, Previous, Range, Signing};

/// What one portal's work in the command came to (its `PortalPass`, less the watermark the
/// state supplies).
#[derive(Clone, Debug)]
pub struct Pass {
    pub portal_id: String,
    /// `backfill`, `incremental`, `compaction`, `repair`, or `none`.
    pub pass: String,
    pub ok: bool,
    pub rows: u64,
}

/// The digest writer of a command: where digests go, where the manifests are, the signing key.
pub struct Digests {
    /// The digest root.
    sink: Sink,
    /// The output (for an archive older than digests: its manifests are read once).
    output: Sink,
    key: Option<SigningKey>,
}

impl Digests {
    /// At the start of a command that writes digests: the digest root, and the signing key
    /// (`--sign-key`; a KMS key is checked now, so a bad one fails before anything is
    /// archived). `sdk` is the command's AWS configuration if it has one already.
    pub async fn open(
        cfg: &Config,
        s3: Option<&aws_sdk_s3::Client>,
        sdk: Option<&aws_config::SdkConfig>,
        state: &StateHandle,
    ) -> Result<Digests> {
        let output = Sink::open(&cfg.output, s3, &cfg.s3, Role::Digests).await?;
        let sink = match &cfg.digests {
            None => output.clone(),
            Some(root) => {
                // Another bucket (another account) takes its own defaults: the output's
                // expected owner and KMS key are not its.
                let mut opts = cfg.s3.clone();
                if !same_bucket(root, &cfg.output) {
                    opts.expected_bucket_owner = None;
                    opts.kms_key_id = None;
                    opts.sse = None;
                }
                let sink = Sink::open(root, s3, &opts, Role::Digests).await?;
                match &sink {
                    // A folder: made and probed now.
                    Sink::Local(_) => sink.check_writable().await,
                    // A bucket whose role may write digests but delete nothing (the output's
                    // probe deletes what it writes): listing this state's digests shows the
                    // bucket is there and reachable; a write refused later fails that
                    // command, and every next one, until its stored digest is written.
                    Sink::S3(_) => sink
                        .list(format::state_prefix(state.state_id()))
                        .await
                        .map(drop),
                }
                .with_context(|| format!("--digests {root}"))?;
                sink
            }
        };
        let key = match cfg.sign_key.as_deref() {
            None => None,
            Some(spec) => Some(
                open_key(cfg, spec, sdk, state)
                    .await
                    .with_context(|| format!("--sign-key {spec}"))?,
            ),
        };
        Ok(Digests { sink, output, key })
    }

    /// Write the digest a killed command stored but did not write, with its exact bytes.
    /// Call it at the start of a command, once the state is open.
    pub async fn recover(&self, state: &StateHandle) -> Result<()> {
        let Some(d) = state.db(|st| st.unwritten_digest()).await? else {
            return Ok(());
        };
        info!(key = %d.key, "writing the digest an interrupted command stored");
        self.put(state, d.seq, &d.key, d.bytes).await
    }

    /// Write this command's digest of the state: the manifests recorded since the previous
    /// digest, chained to it. Also when nothing was written. Logs `digest <key> written: N
    /// manifests`; see [`Digests::write_quietly`].
    pub async fn write(
        &self,
        state: &StateHandle,
        command: &str,
        passes: Vec<Pass>,
    ) -> Result<String> {
        let (key, listed) = self.write_quietly(state, command, passes).await?;
        info!("digest {key} written: {listed} manifests");
        Ok(key)
    }

    /// [`Digests::write`] without its log line (a command that failed before its work says
    /// so in its one error line alone). Returns the key and how many manifests it lists.
    pub async fn write_quietly(
        &self,
        state: &StateHandle,
        command: &str,
        passes: Vec<Pass>,
    ) -> Result<(String, usize)> {
        self.recover(state).await?;
        let basis = state.db(|st| st.digest_basis()).await?;
        let imported = if basis.import {
            self.import(state, &basis).await?
        } else {
            vec![]
        };
        let signing = self.key.as_ref().map(|k| Signing {
            algorithm: k.algorithm().to_string(),
            key_id: k.key_id().to_string(),
            public_key_sha256: k.public_key_sha256().to_string(),
        });
        let (body, recorded) = build(
            state.state_id(),
            command,
            &basis,
            &imported,
            &passes,
            signing,
        );
        let seq = body.seq;
        let key = format::digest_key(state.state_id(), seq);
        let body_bytes = format::body_bytes(&body);
        let signature = match &self.key {
            None => None,
            Some(k) => Some(crate::sign::base64_encode(
                &k.sign(&body_bytes)
                    .await
                    .with_context(|| format!("signing digest {key}"))?,
            )),
        };
        let bytes = format::file_bytes(&body_bytes, signature.as_deref());
        let listed = body.manifests.len();
        let digest = NewDigest {
            seq,
            key: key.clone(),
            sha256: sha256_hex(&bytes),
            signature,
            created_at: body.created_at.clone(),
            bytes: bytes.clone(),
            manifests: recorded,
            imported,
        };
        state.guard()?;
        state
            .db(move |st| st.store_digest(&digest))
            .await
            .with_context(|| format!("storing digest {key} in the state"))?;
        failpoint::hit("digest_stored_locally");
        state
            .checkpoint()
            .await
            .with_context(|| format!("saving the state after storing digest {key}"))?;
        failpoint::hit("digest_stored");
        self.put(state, seq, &key, bytes).await?;
        Ok((key, listed))
    }

    /// Write digest `seq` (never overwriting another), then mark it written.
    async fn put(&self, state: &StateHandle, seq: u64, key: &str, bytes: Vec<u8>) -> Result<()> {
        state.guard()?;
        // A flat name in one folder, which is left empty once the file is linked.
        let staging = format!(
            "{STAGING}/{}/{}-{seq:010}.json",
            format::DIGEST,
            state.state_id()
        );
        self.sink
            .put_new(key.to_string(), staging, bytes)
            .await
            .with_context(|| format!("writing digest {key}"))?;
        failpoint::hit("digest_written");
        state.db(move |st| st.mark_digest_written(seq)).await
    }

    /// An archive older than digests: the manifests of this state the output holds (for its
    /// portals' flushes so far), read and hashed, for the first digest to list.
    async fn import(&self, state: &StateHandle, basis: &DigestBasis) -> Result<Vec<ManifestRow>> {
        let state_id = state.state_id();
        let recorded: std::collections::HashSet<&str> =
            basis.manifests.iter().map(|(k, _)| k.as_str()).collect();
        let mut rows = Vec::new();
        for (id, flush_seq, _) in &basis.portals {
            let Ok(portal) = PortalId::parse(id) else {
                continue;
            };
            let listed: std::collections::HashSet<String> = self
                .output
                .list(format!("{MANIFEST}/portal_id={portal}"))
                .await?
                .into_iter()
                .collect();
            for seq in 1..=*flush_seq {
                let key = manifest_key(&portal, state_id, seq);
                if !listed.contains(&key) || recorded.contains(key.as_str()) {
                    continue;
                }
                let sha = sha256_hex(&self.output.read(key.clone()).await?);
                rows.push((key, id.clone(), seq, sha));
            }
        }
        info!(
            manifests = rows.len(),
            "first digest of a state that archived before digests: listing its manifests as the output holds them"
        );
        Ok(rows)
    }
}

/// The body of the next digest, and the keys of the recorded manifests it lists.
fn build(
    state_id: &str,
    command: &str,
    basis: &DigestBasis,
    imported: &[ManifestRow],
    passes: &[Pass],
    signing: Option<Signing>,
) -> (Body, Vec<String>) {
    let created_at = rfc3339(now_ms());
    let (seq, from, previous) = match &basis.previous {
        Some(p) => (
            p.seq + 1,
            p.created_at.clone(),
            Some(Previous {
                key: p.key.clone(),
                sha256: p.sha256.clone(),
                signature: p.signature.clone(),
            }),
        ),
        None => (1, rfc3339(basis.created_at_ms), None),
    };
    let mut manifests: Vec<ManifestRef> = basis
        .manifests
        .iter()
        .map(|(key, sha256)| ManifestRef {
            key: key.clone(),
            sha256: sha256.clone(),
        })
        .chain(imported.iter().map(|(key, _, _, sha256)| ManifestRef {
            key: key.clone(),
            sha256: sha256.clone(),
        }))
        .collect();
    manifests.sort();
    manifests.dedup();
    let mut portals: Vec<PortalPass> = passes
        .iter()
        .map(|p| PortalPass {
            portal_id: p.portal_id.clone(),
            pass: p.pass.clone(),
            outcome: if p.ok { "ok" } else { "failed" }.to_string(),
            rows: p.rows,
            watermark_ms: basis
                .portals
                .iter()
                .find(|(id, _, _)| *id == p.portal_id)
                .and_then(|(_, _, w)| *w),
        })
        .collect();
    portals.sort_by(|a, b| a.portal_id.cmp(&b.portal_id));
    let recorded = basis.manifests.iter().map(|(k, _)| k.clone()).collect();
    let body = Body {
        version: format::VERSION,
        state_id: state_id.to_string(),
        seq,
        command: command.to_string(),
        range: Range {
            from,
            to: created_at.clone(),
        },
        created_at,
        chain_start: previous.is_none(),
        previous,
        signing,
        portals,
        manifests,
    };
    (body, recorded)
}

/// What each portal's pass in run `run_id` (a `run` or `backfill`) covered, from the run
/// history. Portals the run only found unlisted did no pass and are left out.
pub async fn passes_of_run(state: &StateHandle, run_id: i64) -> Result<Vec<Pass>> {
    let rows = state.db(move |st| st.run_passes(run_id)).await?;
    Ok(rows
        .into_iter()
        .filter(|o| o.outcome != "unlisted")
        .map(|o| Pass {
            ok: o.outcome == "ok",
            pass: o.pass.unwrap_or_else(|| "none".to_string()),
            rows: o.rows.max(0) as u64,
            portal_id: o.portal_id,
        })
        .collect())
}

pub fn same_bucket(a: &Output, b: &Output) -> bool {
    match (a, b) {
        (Output::S3(a), Output::S3(b)) => a.bucket == b.bucket,
        _ => false,
    }
}

/// `--sign-key`: a KMS key ARN (its region is the ARN's), or a private key file. A KMS key
/// is checked with `GetPublicKey` the first time a state uses it; the state then records its
/// public key (a KMS key pair never changes), so each later command makes one KMS call, its
/// digest's `Sign`.
async fn open_key(
    cfg: &Config,
    spec: &str,
    sdk: Option<&aws_config::SdkConfig>,
    state: &StateHandle,
) -> Result<SigningKey> {
    if !crate::sign::is_kms(spec) {
        return SigningKey::open(spec, None).await;
    }
    let sdk = match sdk {
        Some(sdk) => sdk.clone(),
        None => crate::aws::load_sdk(&cfg.regions).await?,
    };
    // Called in the ARN's region, whatever the SDK's (`crate::sign` switches it).
    let kms = crate::aws::kms_client(&sdk, cfg.max_attempts);
    let owned = spec.to_string();
    if let Some((key_id, algorithm, der)) = state.db(move |st| st.kms_key_record(&owned)).await? {
        return SigningKey::known_kms(spec, &key_id, &algorithm, &der, &kms);
    }
    let key = SigningKey::open(spec, Some(&kms)).await?;
    if let Some((key_id, algorithm, der)) = key.kms_public() {
        let owned = spec.to_string();
        state
            .db(move |st| st.record_kms_key(&owned, &key_id, &algorithm, &der))
            .await?;
    }
    Ok(key)
}
