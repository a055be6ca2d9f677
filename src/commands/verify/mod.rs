//! `archiver verify`: prove the archive complete. Per portal, list every session the service
//! still holds (newest first, to the end) and compare it with the Parquet files themselves,
//! one UTC day at a time (see [`crate::verify`]): memory holds one day of the listing and one
//! partition's four compared columns, whatever the archive's size. Where the portal has
//! manifests, every file is also checked against them (sha256 and row count).
//!
//! `--repair` takes the run lock, runs recovery, then writes the missing sessions through the
//! flushes' exactly-once protocol and rewrites each partition holding duplicated sessions
//! through compaction's, then verifies again. Killed at any point, the next `verify --repair`
//! (or run) recovers first, and what is still missing or duplicated is found again.

pub mod integrity;
mod repair;
mod report;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::Array;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use tracing::{info, warn};

use crate::cli::VerifyArgs;
use crate::config::{parse_duration, Config, Output, Shard};
use crate::encode::{conform, schema};
use crate::error::{Differences, Interrupted, StateRefused, UsageError};
use crate::model::PortalId;
use crate::rows_digest::RowsDigest;
use crate::run::discover;
use crate::run::flush::Target;
use crate::run::recover::{check_unclaimed, claim, recover, Retired};
use crate::sign::VerifyingKey;
use crate::sink::layout::MANIFEST;
use crate::sink::manifest::sha256_hex;
use crate::sink::{Role, Sink};
use crate::source::{FetchError, Order, Source};
use crate::state::StateHandle;
use crate::verify::{
    compare_day, parse_manifest, ArchRow, Counts, FileCheck, ListedDay, Manifest, Walker,
};
use integrity::{Integrity, WalkOpts};
use repair::Repairer;
use report::print_table;
pub use report::{PortalVerify, Repaired, VerifyReport};

/// What the integrity walk needs from the command line: where the digests are, the public
/// key that checks their signatures, and `--max-age`.
pub struct Proof {
    /// The digest root; `None`: the output.
    pub digests: Option<Output>,
    pub public_key: Option<VerifyingKey>,
    pub max_age_ms: Option<i64>,
}

impl Proof {
    /// From `verify`'s options and the configuration's `--digests` and `--sign-key`: the
    /// public key is `--public-key`'s, else `--sign-key`'s (a KMS key: one `GetPublicKey`).
    pub async fn new(a: &VerifyArgs, cfg: &Config) -> Result<Proof> {
        let digests = cfg.digests.clone();
        let max_age_ms = match &a.max_age {
            None => None,
            Some(text) => Some(
                parse_duration(text)
                    .ok_or_else(|| {
                        UsageError(format!(
                            "invalid --max-age {text:?}: a number and a unit (s, m, h, d, w, ...), e.g. 2d or 36h"
                        ))
                    })?
                    .as_millis() as i64,
            ),
        };
        let public_key = match (&a.public_key, cfg.sign_key.as_deref()) {
            (Some(path), _) => Some(
                VerifyingKey::from_pem_file(path)
                    .with_context(|| format!("--public-key {}", path.display()))?,
            ),
            (None, Some(spec)) => Some(
                sign_key_public(cfg, spec)
                    .await
                    .with_context(|| format!("--sign-key {spec}"))?,
            ),
            (None, None) => None,
        };
        Ok(Proof {
            digests,
            public_key,
            max_age_ms,
        })
    }

    fn opts(&self) -> WalkOpts<'_> {
        WalkOpts {
            key: self
                .public_key
                .as_ref()
                .map(|k| k as &dyn crate::digest::walk::Verifier),
            max_age_ms: self.max_age_ms,
            ..WalkOpts::default()
        }
    }

    /// The sink of the digest root.
    fn sink(&self, cfg: &Config, s3: Option<&aws_sdk_s3::Client>) -> Result<Sink> {
        let Some(root) = &self.digests else {
            return Sink::new(&cfg.output, s3, &cfg.s3);
        };
        // Another bucket (another account) has its own owner, as the writer sees it.
        let mut opts = cfg.s3.clone();
        if !crate::digest::same_bucket(root, &cfg.output) {
            opts.expected_bucket_owner = None;
        }
        Sink::new(root, s3, &opts)
    }

    fn uses_s3(&self) -> bool {
        matches!(self.digests, Some(Output::S3(_)))
    }
}

/// The public key of `--sign-key`: a KMS key's (`GetPublicKey`, in the ARN's region), or a
/// private key file's.
async fn sign_key_public(cfg: &Config, spec: &str) -> Result<VerifyingKey> {
    if !crate::sign::is_kms(spec) {
        return Ok(crate::sign::SigningKey::open(spec, None)
            .await?
            .verifying_key());
    }
    let sdk = crate::aws::load_sdk(&cfg.regions).await?;
    // Called in the ARN's region, whatever the SDK's (`crate::sign` switches it).
    let kms = crate::aws::kms_client(&sdk, cfg.max_attempts);
    VerifyingKey::from_kms(&kms, spec).await
}

/// `verify --offline`: only the integrity walk: no WorkSpaces Web call, no state. With
/// `--public-key`, no AWS call but reading the archive (from S3 when it is there). Findings
/// are an error of type [`Differences`] (exit 3), after the report.
pub async fn verify_offline(cfg: &Config, proof: &Proof, json: bool) -> Result<()> {
    let needs_s3 = matches!(cfg.output, Output::S3(_)) || proof.uses_s3();
    let s3 = match needs_s3 {
        true => {
            let sdk = crate::aws::load_sdk(&cfg.regions).await?;
            Some(crate::aws::s3_client(&sdk, cfg.max_attempts))
        }
        false => None,
    };
    let archive = Sink::open(&cfg.output, s3.as_ref(), &cfg.s3, Role::Read).await?;
    let digests = proof.sink(cfg, s3.as_ref())?;
    let integrity = integrity::walk(&archive, &digests, &proof.opts()).await?;
    let hidden = archive.hidden().await?;
    let report = VerifyReport {
        ok: integrity.ok && hidden.is_empty(),
        portals: Vec::new(),
        integrity: Some(integrity),
        delete_markers: hidden.into_iter().map(|(k, _)| k).collect(),
    };
    print_report(&report, json)?;
    finding_error(&report, None)
}

fn print_report(report: &VerifyReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    if !report.portals.is_empty() {
        print_table(report);
    }
    if let Some(i) = &report.integrity {
        integrity::print(i);
    }
    for key in &report.delete_markers {
        println!("hidden by a delete marker: {key}");
    }
    Ok(())
}

/// The error (exit 3) of a report that is not ok.
fn finding_error(report: &VerifyReport, unreachable: Option<&str>) -> Result<()> {
    if report.ok {
        return Ok(());
    }
    let bad = report.portals.iter().filter(|p| !p.ok).count();
    let mut parts = Vec::new();
    if bad > 0 {
        parts.push(format!(
            "the archive differs from the service in {bad} of {} portals",
            report.portals.len()
        ));
    }
    if let Some(i) = report.integrity.as_ref().filter(|i| !i.ok) {
        let first = &i.findings[0];
        parts.push(match i.findings.len() {
            1 => format!("the archive's proof has 1 finding: {first}"),
            n => format!("the archive's proof has {n} findings, the first: {first}"),
        });
    }
    if let Some(first) = report.delete_markers.first() {
        parts.push(match report.delete_markers.len() {
            1 => format!("1 archived object is hidden by a delete marker: {first}"),
            n => format!("{n} archived objects are hidden by delete markers, the first: {first}"),
        });
    }
    let mut line = parts.join("; ");
    if let Some(u) = unreachable {
        line.push_str(&format!("; not verified: {u}"));
    }
    Err(Differences(line).into())
}

/// Token rejections tolerated while listing one portal.
const MAX_TOKEN_RESTARTS: u32 = 3;

/// Verify (and with `repair`, repair) the named portals, or every portal of this shard; print
/// the report. Differences are an error of type [`Differences`] (exit 3), after the report.
///
/// `verify` works with the state that wrote the archive: none at `--state` is an error (a
/// mistyped path would otherwise verify with a new, empty state, and leave it there), unless
/// `new_state` says a new one is wanted.
pub async fn verify(
    cfg: &Config,
    named: Option<Vec<PortalId>>,
    repair: bool,
    json: bool,
    new_state: bool,
    proof: &Proof,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let sdk = crate::aws::load_sdk(&cfg.regions).await?;
    let s3 =
        (cfg.uses_s3() || proof.uses_s3()).then(|| crate::aws::s3_client(&sdk, cfg.max_attempts));
    if !new_state && !StateHandle::exists(cfg, s3.as_ref()).await? {
        return Err(StateRefused(format!(
            "no state at {}: verify uses the state that wrote the archive (check --state), or --new-state to verify with a new one",
            cfg.state
        ))
        .into());
    }
    // The run lock (or an S3 state's lease), also without --repair: a run publishing meanwhile
    // would show as differences.
    let state = StateHandle::open(cfg, "verify", s3.as_ref(), stop.clone()).await?;
    // Accounts that could not be reached: verified nothing there, so never "ok".
    let mut unreachable: Option<String> = None;
    let result = async {
        let role = match repair {
            true => Role::Output,
            false => Role::Read,
        };
        let sink = Sink::open(&cfg.output, s3.as_ref(), &cfg.s3, role).await?;
        // Under Object Lock, files and manifests hidden by a delete marker: a repair removes
        // the markers first, so what they hid is compared (and not written again).
        let mut hidden = sink.hidden().await?;
        if repair {
            for (key, markers) in &hidden {
                for version in markers {
                    sink.remove_marker(key, version).await?;
                }
                info!(key = %key, markers = markers.len(), "removed the delete marker that hid a locked object: it is back");
            }
            hidden.clear();
        }
        let mut sources = discover::sources(&sdk, cfg, &stop).await?;
        // Every portal the service lists, and those the state or the archive knows that it no
        // longer lists (`gone`): the archive is their only record, verified without the
        // service. Named portals are looked for among both.
        let found = discover::discover(None, &mut sources, None, cfg.concurrency, false).await?;
        unreachable = sources.failure_line();
        let listed: Vec<&PortalId> = found.iter().map(|f| &f.portal).collect();
        let known = discover::known_portals(&state, &sink).await?;
        let gone = discover::unlisted(known, &listed, &sources.failed);
        let (found, gone) = named_only(named.as_deref(), found, gone, &sources)?;
        let portals: Vec<(PortalId, discover::Reach)> = found
            .into_iter()
            .filter(|f| cfg.shard.owns(&f.portal))
            .map(|f| (f.portal, f.reach))
            .collect();
        let gone: Vec<PortalId> = gone.into_iter().filter(|p| cfg.shard.owns(p)).collect();
        if portals.is_empty() && gone.is_empty() {
            anyhow::bail!(nothing_to_verify(cfg, &sources));
        }
        let mut out = match repair {
            false => {
                let mut out = Vec::new();
                let mut clients = sources.clients();
                for (portal, reach) in &portals {
                    let source = clients.source(reach);
                    let ctx = Ctx {
                        sink: &sink,
                        state: &state,
                        source: Some(&source),
                        portal,
                        page_size: cfg.page_size(),
                        stop: &stop,
                    };
                    out.push(verify_portal(&ctx, None).await?);
                }
                out
            }
            true => {
                let digests = crate::digest::Digests::open(cfg, s3.as_ref(), Some(&sdk), &state).await?;
                let at = (&sink, &state, &digests);
                repair_all(cfg, at, &portals, &sources, &stop).await?
            }
        };
        // Without a listing there is nothing to repair from: checked, never repaired.
        for portal in &gone {
            info!(portal_id = %portal, "no longer listed by the service: verifying its files against the manifests");
            let ctx = Ctx {
                sink: &sink,
                state: &state,
                source: None,
                portal,
                page_size: cfg.page_size(),
                stop: &stop,
            };
            out.push(verify_portal(&ctx, None).await?);
        }
        // The archive's own proof, under the same lock. Files the comparison above already
        // hashed against the same manifests are not read again; the walk covers the portals
        // verified (all of them, unless sharded or named).
        let mut opts = proof.opts();
        if named.is_some() || cfg.shard != Shard::ALL {
            opts.portals = Some(out.iter().map(|p| p.portal_id.clone()).collect());
        }
        // The newest digest the state wrote must be there (one stored but not yet written is
        // written by the next command, so the one before it is the newest written).
        if let Some(d) = state.db(|st| st.newest_digest()).await? {
            let seq = if d.written { d.seq } else { d.seq - 1 };
            if seq > 0 {
                opts.expected_newest = vec![(state.state_id().to_string(), seq)];
            }
        }
        opts.files_checked = out
            .iter()
            .filter(|p| p.manifest.checked)
            .map(|p| p.portal_id.clone())
            .collect();
        let digests = proof.sink(cfg, s3.as_ref())?;
        let integrity = integrity::walk(&sink, &digests, &opts).await?;
        Ok::<_, anyhow::Error>((out, integrity, hidden))
    }
    .await;
    let finished = state.finish().await;
    if result.is_ok() {
        finished?;
    }
    let (portals, integrity, hidden): (Vec<PortalVerify>, Integrity, _) = result?;
    let report = VerifyReport {
        ok: portals.iter().all(|p| p.ok) && integrity.ok && hidden.is_empty(),
        portals,
        integrity: Some(integrity),
        delete_markers: hidden.into_iter().map(|(k, _)| k).collect(),
    };
    print_report(&report, json)?;
    finding_error(&report, unreachable.as_deref())?;
    if let Some(u) = unreachable {
        anyhow::bail!("not verified: {u}");
    }
    Ok(())
}

/// With `--portal-id`, the named portals among those the service lists (`found`, in the named
/// order) and those it no longer lists (`gone`); a named portal in neither is an error, as
/// in discovery. Without, both as they are.
fn named_only(
    named: Option<&[PortalId]>,
    found: Vec<discover::Found>,
    gone: Vec<PortalId>,
    sources: &discover::Sources,
) -> Result<(Vec<discover::Found>, Vec<PortalId>)> {
    let Some(ids) = named else {
        return Ok((found, gone));
    };
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !found.iter().any(|f| &f.portal == *id) && !gone.contains(id))
        .map(|id| id.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(sources.not_found(&missing));
    }
    let mut found: Vec<discover::Found> = found
        .into_iter()
        .filter(|f| ids.contains(&f.portal))
        .collect();
    found.sort_by_key(|f| ids.iter().position(|i| i == &f.portal));
    let gone = ids.iter().filter(|id| gone.contains(id)).cloned().collect();
    Ok((found, gone))
}

/// The line of a verification that found no portal at all: proving nothing is not a success.
fn nothing_to_verify(cfg: &Config, sources: &discover::Sources) -> String {
    let shard = match cfg.shard == Shard::ALL {
        true => String::new(),
        false => format!(" of shard {}", cfg.shard),
    };
    let mut line = format!(
        "no portal{shard} to verify: the service lists none in {}, and neither the state nor the archive at {} knows one",
        sources.searched(),
        cfg.output
    );
    if let Some(u) = sources.failure_line() {
        line.push_str(&format!("; not searched: {u}"));
    }
    line
}

/// `--repair`, under the run lock: per portal, recover, verify collecting what to repair,
/// repair, verify again. The run is recorded in the state's history.
/// It ends with the state's digest, whatever its outcome.
async fn repair_all(
    cfg: &Config,
    (sink, state, digests): (&Sink, &StateHandle, &crate::digest::Digests),
    portals: &[(PortalId, discover::Reach)],
    sources: &discover::Sources,
    stop: &AtomicBool,
) -> Result<Vec<PortalVerify>> {
    sink.check_writable().await?;
    digests.recover(state).await?;
    let run_id = state.db(|st| st.start_run("verify --repair")).await?;
    // What each portal's repair came to, for the digest; failed until it is done.
    let mut passes: Vec<crate::digest::Pass> = Vec::new();
    let result = async {
        let mut out = Vec::new();
        let mut clients = sources.clients();
        for (portal, reach) in portals {
            passes.push(crate::digest::Pass {
                portal_id: portal.to_string(),
                pass: "repair".into(),
                ok: false,
                rows: 0,
            });
            let source = clients.source(reach);
            let ctx = Ctx {
                sink,
                state,
                source: Some(&source),
                portal,
                page_size: cfg.page_size(),
                stop,
            };
            // A portal this state never archived may belong to another state: refuse to write
            // into it (as a first run would).
            let id = portal.to_string();
            let known = state.db(move |st| st.find(&id)).await?;
            if known.is_none_or(|p| p.flush_seq == 0 && p.pass.is_none() && !p.backfill_done) {
                check_unclaimed(sink, portal, state.state_id()).await?;
                claim(sink, portal, state.state_id()).await?;
            }
            recover(sink, state, portal, Retired::Delete).await?;
            let mut rep = Repairer::new(
                Target {
                    sink,
                    state,
                    portal,
                    points: &repair::POINTS,
                },
                cfg.flush_rows,
            );
            let first = verify_portal(&ctx, Some(&mut rep)).await?;
            // A lost file whose whole day the service still lists had its sessions written
            // again above; one from an older day held sessions no one can bring back, and stays
            // reported.
            rep.lost_files = first
                .manifest
                .deleted
                .iter()
                .filter(|path| {
                    let day = path
                        .split('/')
                        .find_map(|seg| seg.strip_prefix("start_date="))
                        .and_then(crate::clock::date_start_ms);
                    matches!((day, first.oldest_listed_ms), (Some(d), Some(o)) if d >= o)
                })
                .cloned()
                .collect();
            let repaired = rep
                .finish()
                .await
                .with_context(|| format!("repairing portal {portal}"))?;
            let mut v = if repaired.written
                + repaired.partitions_rewritten
                + repaired.lost_files
                + repaired.duplicates_kept
                > 0
            {
                verify_portal(&ctx, None).await?
            } else {
                first
            };
            info!(
                portal_id = %portal,
                written = repaired.written,
                partitions_rewritten = repaired.partitions_rewritten,
                rows_removed = repaired.rows_removed,
                duplicates_kept = repaired.duplicates_kept,
                ok = v.ok,
                "repaired"
            );
            if let Some(p) = passes.last_mut() {
                p.ok = true;
                p.rows = repaired.written;
            }
            v.repaired = Some(repaired);
            out.push(v);
        }
        Ok::<_, anyhow::Error>(out)
    }
    .await;
    let result = match (
        result,
        digests.write(state, "verify --repair", passes).await,
    ) {
        (result, Ok(_)) => result,
        (Ok(_), Err(e)) => Err(e),
        (Err(e), Err(w)) => {
            tracing::error!(error = %format!("{w:#}"), "writing the digest failed");
            Err(e)
        }
    };
    let (outcome, detail) = match &result {
        Ok(_) => ("ok", None),
        Err(e) if e.is::<Interrupted>() => ("interrupted", Some(e.to_string())),
        Err(e) => ("failed", Some(format!("{e:#}"))),
    };
    state
        .db(move |st| st.finish_run(run_id, outcome, detail.as_deref()))
        .await?;
    result
}

/// What verifying one portal reads from.
struct Ctx<'a> {
    sink: &'a Sink,
    /// Its duplicated sessions recorded as kept (under Object Lock) are read from it.
    state: &'a StateHandle,
    /// `None`: the service no longer lists the portal; the archive is verified alone.
    source: Option<&'a Source>,
    portal: &'a PortalId,
    page_size: usize,
    /// SIGTERM or SIGINT (or a lost lease): stop before the next page. What repair wrote so
    /// far is committed; what is left is found again by the next `verify --repair`.
    stop: &'a AtomicBool,
}

/// Verify one portal, day by day. With a repairer, missing sessions are handed to it (and
/// written in flushes as they accumulate) and duplicated ids recorded per partition.
async fn verify_portal(
    ctx: &Ctx<'_>,
    mut repair: Option<&mut Repairer<'_>>,
) -> Result<PortalVerify> {
    let portal = ctx.portal;
    let mut parts: BTreeMap<String, Vec<String>> =
        ctx.sink.partitions(portal).await?.into_iter().collect();
    let files = parts.values().map(|k| k.len() as u64).sum();
    let id = portal.to_string();
    let kept = ctx.state.db(move |st| st.kept_duplicates(&id)).await?;
    let mut day = DayCtx {
        ctx,
        parts: &mut parts,
        check: load_manifests(ctx.sink, portal).await?,
        counts: Counts::default(),
        kept,
    };
    let mut walker = Walker::default();
    let mut token: Option<String> = None;
    let mut restarts = 0;
    // A portal the service no longer lists has no listing: every row is expired, and its
    // files are checked against the manifests (duplicated rows still count).
    while let Some(source) = ctx.source {
        if ctx.stop.load(Ordering::SeqCst) {
            return Err(Interrupted.into());
        }
        let page = match source
            .list_sessions(portal, Order::NewestFirst, token.as_deref(), ctx.page_size)
            .await
        {
            Ok(p) => p,
            Err(FetchError::TokenRejected(msg))
                if token.is_some() && restarts < MAX_TOKEN_RESTARTS =>
            {
                // Listing again from the newest repeats only days already compared (ignored)
                // and the day in progress (deduplicated).
                restarts += 1;
                warn!(portal_id = %portal, reason = %msg, "the service rejected the pagination token; listing again from the newest");
                token = None;
                continue;
            }
            Err(e) => return Err(anyhow!(e).context(format!("portal {portal}: ListSessions"))),
        };
        // A session the service sends unusably (quarantined by runs) cannot be compared: the
        // portal cannot be proved complete until the service sends it usably.
        if let Some(o) = page.odd.first() {
            anyhow::bail!(
                "portal {portal}: cannot verify: the service sent session {} in a form that cannot be compared ({})",
                o.session_id,
                o.reason
            );
        }
        for mut s in page.sessions {
            s.client_ips = None;
            if repair.is_none() {
                s.username = None; // only a repair writes sessions
            }
            if let Some(done) = walker.push(s) {
                let oldest = walker.oldest().unwrap_or(i64::MIN);
                day.compare(done, oldest, repair.as_deref_mut()).await?;
            }
        }
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    // Rows older than the oldest listed session are expired; with nothing listed, all are.
    let oldest = walker.oldest().unwrap_or(i64::MAX);
    if let Some(last) = walker.finish() {
        day.compare(last, oldest, repair.as_deref_mut()).await?;
    }
    let rest: Vec<String> = day.parts.keys().cloned().collect();
    for date in rest {
        if ctx.stop.load(Ordering::SeqCst) {
            return Err(Interrupted.into());
        }
        let empty = ListedDay {
            date,
            sessions: HashMap::new(),
        };
        day.compare(empty, oldest, repair.as_deref_mut()).await?;
    }
    let DayCtx {
        mut check, counts, ..
    } = day;
    check.finish();
    let ok = counts.differences() == 0 && check.problems() == 0;
    Ok(PortalVerify {
        portal_id: portal.to_string(),
        ok,
        counts,
        files,
        manifest: check,
        oldest_listed: walker.oldest().map(crate::clock::rfc3339),
        oldest_listed_ms: walker.oldest(),
        repaired: None,
        unlisted: ctx.source.is_none(),
    })
}

/// The comparison of one portal in progress.
struct DayCtx<'a, 'b> {
    ctx: &'a Ctx<'b>,
    /// Partitions not compared yet: date → keys.
    parts: &'a mut BTreeMap<String, Vec<String>>,
    check: FileCheck,
    counts: Counts,
    /// Duplicated sessions recorded as kept: counted as `kept_duplicates`.
    kept: std::collections::HashSet<String>,
}

impl DayCtx<'_, '_> {
    /// Compare one day of the listing with its partition, then drop both.
    async fn compare(
        &mut self,
        day: ListedDay,
        expire_before: i64,
        repair: Option<&mut Repairer<'_>>,
    ) -> Result<()> {
        let keys = self.parts.remove(&day.date).unwrap_or_default();
        let mut rows = Vec::new();
        for key in keys.clone() {
            let bytes = self.ctx.sink.read(key.clone()).await?;
            let hash = self.check.wants_hashes();
            let proved = self.check.wants_rows_digest(&key);
            let name = key.clone();
            let (sha, n, file_rows, digest) = tokio::task::spawn_blocking(move || -> Result<_> {
                let sha = hash.then(|| sha256_hex(&bytes));
                // The output of a proved compaction: its rows digest too, a batch at a time.
                let mut file_rows = Vec::new();
                let (n, digest) = read_compared(bytes.into(), &name, &mut file_rows, proved)?;
                Ok((sha, n, file_rows, digest.map(|d| d.hex())))
            })
            .await
            .context("reader panicked")??;
            rows.extend(file_rows);
            self.check.file(&key, sha.as_deref().unwrap_or(""), n);
            if let Some(d) = digest {
                self.check.rows_digest(&key, &d);
            }
        }
        let mut r = compare_day(day.sessions, &rows, expire_before);
        if !self.kept.is_empty() {
            let before = r.duplicated.len();
            r.duplicated.retain(|(id, _)| !self.kept.contains(id));
            let kept = (before - r.duplicated.len()) as u64;
            r.counts.duplicated -= kept;
            r.counts.kept_duplicates += kept;
        }
        self.counts.add(&r.counts);
        if r.counts.differences() > 0 {
            info!(
                portal_id = %self.ctx.portal,
                date = %day.date,
                missing = r.counts.missing,
                duplicated = r.counts.duplicated,
                differing = r.counts.differing,
                extra = r.counts.extra,
                "partition differs from the listing"
            );
        }
        drop(rows);
        if let Some(rep) = repair {
            if !r.duplicated.is_empty() {
                let expected = r.duplicated.into_iter().collect();
                rep.duplicated(&day.date, keys, expected).await?;
            }
            rep.missing(r.missing).await?;
        }
        Ok(())
    }
}

/// The four compared columns of one file, appended to `out`. Returns the file's row count,
/// and with `digest` its rows digest (every column is read then, in one pass).
fn read_compared(
    bytes: bytes::Bytes,
    name: &str,
    out: &mut Vec<ArchRow>,
    digest: bool,
) -> Result<(u64, Option<RowsDigest>)> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .with_context(|| format!("reading {name}"))?;
    let rows = builder.metadata().file_metadata().num_rows() as u64;
    let descr = builder.parquet_schema();
    let leaves = ["session_id", "status", "start_time", "end_time"]
        .iter()
        .map(|w| {
            descr
                .columns()
                .iter()
                .position(|c| c.path().parts() == [*w])
                .ok_or_else(|| anyhow!("{name}: no column {w}"))
        })
        .collect::<Result<Vec<usize>>>()?;
    let builder = match digest {
        true => builder,
        false => {
            let mask = ProjectionMask::leaves(descr, leaves);
            builder.with_projection(mask)
        }
    };
    let reader = builder.build().with_context(|| format!("reading {name}"))?;
    let (target, mut sum) = (schema(), digest.then(RowsDigest::default));
    out.reserve(rows as usize);
    for batch in reader {
        let mut b = batch.with_context(|| format!("reading {name}"))?;
        if let Some(sum) = sum.as_mut() {
            b = conform(b, &target, name)?;
            sum.add_batch(&b)
                .with_context(|| format!("reading {name}"))?;
        }
        let col = |n: &str| {
            b.column_by_name(n)
                .ok_or_else(|| anyhow!("{name}: no column {n}"))
        };
        let ids = col("session_id")?
            .as_string_opt::<i32>()
            .ok_or_else(|| anyhow!("{name}: session_id is not a string"))?;
        let status = col("status")?
            .as_string_opt::<i32>()
            .ok_or_else(|| anyhow!("{name}: status is not a string"))?;
        let start = col("start_time")?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| anyhow!("{name}: start_time is not a timestamp in ms"))?;
        let end = col("end_time")?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| anyhow!("{name}: end_time is not a timestamp in ms"))?;
        for i in 0..b.num_rows() {
            out.push(ArchRow {
                session_id: ids.value(i).to_string(),
                status: status.value(i).to_string(),
                start_ms: start.value(i),
                end_ms: end.is_valid(i).then(|| end.value(i)),
            });
        }
    }
    Ok((rows, sum))
}

/// The portal's manifests, read and parsed; unreadable ones are problems of the check.
async fn load_manifests(sink: &Sink, portal: &PortalId) -> Result<FileCheck> {
    let (keyed, errors) = read_manifests(sink, portal).await?;
    let manifests: Vec<Manifest> = keyed.iter().map(|(_, m)| m.clone()).collect();
    Ok(FileCheck::new(&manifests, errors).with_proofs(&keyed))
}

/// The portal's manifests, each with its key, and those that cannot be read (`key: reason`).
pub(crate) async fn read_manifests(
    sink: &Sink,
    portal: &PortalId,
) -> Result<(Vec<(String, Manifest)>, Vec<String>)> {
    let prefix = format!("{MANIFEST}/portal_id={portal}");
    let keys = sink.list(prefix).await?;
    let mut manifests = Vec::new();
    let mut errors = Vec::new();
    for key in keys.into_iter().filter(|k| k.ends_with(".json")) {
        let bytes = sink.read(key.clone()).await?;
        match parse_manifest(&bytes, portal.as_str()) {
            Ok(m) => manifests.push((key, m)),
            Err(e) => errors.push(format!("{key}: {e}")),
        }
    }
    Ok((manifests, errors))
}
