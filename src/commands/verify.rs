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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{new_null_array, Array, ArrayRef, BooleanArray, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use serde::Serialize;

use tracing::{info, warn};

use crate::clock::now_ms;
use crate::config::Config;
use crate::encode::{schema, writer_properties};
use crate::error::Differences;
use crate::failpoint;
use crate::model::{PortalId, Session};
use crate::run::discover;
use crate::run::flush::{encode_days, Encoded, Points, Target};
use crate::run::recover::{check_unclaimed, recover};
use crate::sink::layout::MANIFEST;
use crate::sink::manifest::sha256_hex;
use crate::sink::Sink;
use crate::source::{FetchError, Order, Source};
use crate::state::{FlushCommit, StateHandle};
use crate::verify::{
    compare_day, keep_one, parse_manifest, ArchRow, Candidate, Counts, FileCheck, Listed,
    ListedDay, Manifest, Walker,
};

/// The crash points of a repair's writes.
const POINTS: Points = Points {
    staged: "repair_after_stage",
    committed_locally: "repair_after_local_commit",
    committed: "repair_after_commit",
    manifested: "repair_after_manifest",
};

/// Token rejections tolerated while listing one portal.
const MAX_TOKEN_RESTARTS: u32 = 3;

/// `verify --json`.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    /// Every portal matches.
    pub ok: bool,
    pub portals: Vec<PortalVerify>,
}

/// One portal's verification.
#[derive(Debug, Serialize)]
pub struct PortalVerify {
    pub portal_id: String,
    pub ok: bool,
    #[serde(flatten)]
    pub counts: Counts,
    /// `.parquet` files of the portal.
    pub files: u64,
    /// The files checked against the portal's manifests.
    pub manifest: FileCheck,
    /// Start of the oldest session the service still lists (RFC 3339): archive rows older
    /// than this are `expired`.
    pub oldest_listed: Option<String>,
    #[serde(skip)]
    oldest_listed_ms: Option<i64>,
    /// What `--repair` did before this (final) verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<Repaired>,
}

/// What `--repair` did to one portal.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Repaired {
    /// Missing sessions written.
    pub written: u64,
    /// Partitions rewritten without their duplicated rows.
    pub partitions_rewritten: u64,
    pub rows_removed: u64,
    /// Lost files recorded as replaced (their sessions were written again).
    pub lost_files: u64,
}

/// Verify (and with `repair`, repair) the named portals, or every portal of this shard; print
/// the report. Differences are an error of type [`Differences`] (exit 3), after the report.
pub async fn verify(
    cfg: &Config,
    named: Option<Vec<PortalId>>,
    repair: bool,
    json: bool,
) -> Result<()> {
    let sdk = crate::aws::load_sdk(&cfg.regions).await?;
    let s3 = cfg
        .uses_s3()
        .then(|| crate::aws::s3_client(&sdk, cfg.max_attempts));
    let stop = Arc::new(AtomicBool::new(false));
    let state = if repair {
        Some(StateHandle::open(cfg, "verify", s3.as_ref(), stop.clone()).await?)
    } else {
        None
    };
    let result = async {
        let sink = Sink::new(&cfg.output, s3.as_ref(), &cfg.s3)?;
        let sources = discover::regional_sources(&sdk, cfg, &stop);
        let found = discover::discover(named.as_deref(), &sources, None).await?;
        let portals: Vec<(PortalId, Source)> = found
            .into_iter()
            .filter(|(p, _)| cfg.shard.owns(p))
            .collect();
        match &state {
            None => {
                let mut out = Vec::new();
                for (portal, source) in &portals {
                    let ctx = Ctx {
                        sink: &sink,
                        source,
                        portal,
                        page_size: cfg.page_size(),
                    };
                    out.push(verify_portal(&ctx, None).await?);
                }
                Ok(out)
            }
            Some(state) => repair_all(cfg, &sink, state, &portals).await,
        }
    }
    .await;
    if let Some(state) = &state {
        let finished = state.finish().await;
        if result.is_ok() {
            finished?;
        }
    }
    let portals = result?;
    let report = VerifyReport {
        ok: portals.iter().all(|p| p.ok),
        portals,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if !report.ok {
        let bad = report.portals.iter().filter(|p| !p.ok).count();
        return Err(Differences(format!(
            "the archive differs from the service in {bad} of {} portals",
            report.portals.len()
        ))
        .into());
    }
    Ok(())
}

/// `--repair`, under the run lock: per portal, recover, verify collecting what to repair,
/// repair, verify again. The run is recorded in the state's history.
async fn repair_all(
    cfg: &Config,
    sink: &Sink,
    state: &StateHandle,
    portals: &[(PortalId, Source)],
) -> Result<Vec<PortalVerify>> {
    sink.check_writable().await?;
    let run_id = state.db(|st| st.start_run("verify --repair")).await?;
    let result = async {
        let mut out = Vec::new();
        for (portal, source) in portals {
            let ctx = Ctx {
                sink,
                source,
                portal,
                page_size: cfg.page_size(),
            };
            // A portal this state never archived may belong to another state: refuse to write
            // into it (as a first run would).
            let id = portal.to_string();
            let known = state.db(move |st| st.find(&id)).await?;
            if known.is_none_or(|p| p.flush_seq == 0 && p.pass.is_none() && !p.backfill_done) {
                check_unclaimed(sink, portal, state.state_id()).await?;
            }
            recover(sink, state, portal).await?;
            let mut rep = Repairer {
                target: Target {
                    sink,
                    state,
                    portal,
                    points: &POINTS,
                },
                buffer: Vec::new(),
                flush_rows: cfg.flush_rows,
                dupes: Vec::new(),
                lost_files: Vec::new(),
                done: Repaired::default(),
            };
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
            let mut v =
                if repaired.written + repaired.partitions_rewritten + repaired.lost_files > 0 {
                    verify_portal(&ctx, None).await?
                } else {
                    first
                };
            info!(
                portal_id = %portal,
                written = repaired.written,
                partitions_rewritten = repaired.partitions_rewritten,
                rows_removed = repaired.rows_removed,
                ok = v.ok,
                "repaired"
            );
            v.repaired = Some(repaired);
            out.push(v);
        }
        Ok::<_, anyhow::Error>(out)
    }
    .await;
    let outcome = if result.is_ok() { "ok" } else { "failed" };
    let detail = result.as_ref().err().map(|e| format!("{e:#}"));
    state
        .db(move |st| st.finish_run(run_id, outcome, detail.as_deref()))
        .await?;
    result
}

/// What verifying one portal reads from.
struct Ctx<'a> {
    sink: &'a Sink,
    source: &'a Source,
    portal: &'a PortalId,
    page_size: usize,
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
    let mut day = DayCtx {
        ctx,
        parts: &mut parts,
        check: load_manifests(ctx.sink, portal).await?,
        counts: Counts::default(),
    };
    let mut walker = Walker::default();
    let mut token: Option<String> = None;
    let mut restarts = 0;
    loop {
        let page = match ctx
            .source
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
    })
}

/// The comparison of one portal in progress.
struct DayCtx<'a, 'b> {
    ctx: &'a Ctx<'b>,
    /// Partitions not compared yet: date → keys.
    parts: &'a mut BTreeMap<String, Vec<String>>,
    check: FileCheck,
    counts: Counts,
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
        for key in keys {
            let bytes = self.ctx.sink.read(key.clone()).await?;
            let hash = self.check.wants_hashes();
            let name = key.clone();
            let (sha, n, file_rows) = tokio::task::spawn_blocking(move || -> Result<_> {
                let sha = hash.then(|| sha256_hex(&bytes));
                let mut file_rows = Vec::new();
                let n = read_compared(bytes, &name, &mut file_rows)?;
                Ok((sha, n, file_rows))
            })
            .await
            .context("reader panicked")??;
            rows.extend(file_rows);
            self.check.file(&key, sha.as_deref().unwrap_or(""), n);
        }
        let r = compare_day(day.sessions, &rows, expire_before);
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
        if let Some(rep) = repair {
            if !r.duplicated.is_empty() {
                rep.dupes
                    .push((day.date, r.duplicated.into_iter().collect()));
            }
            rep.missing(r.missing).await?;
        }
        Ok(())
    }
}

/// The four compared columns of one file, appended to `out`. Returns the file's row count.
fn read_compared(bytes: Vec<u8>, name: &str, out: &mut Vec<ArchRow>) -> Result<u64> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
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
    let mask = ProjectionMask::leaves(descr, leaves);
    let reader = builder
        .with_projection(mask)
        .build()
        .with_context(|| format!("reading {name}"))?;
    out.reserve(rows as usize);
    for batch in reader {
        let b = batch.with_context(|| format!("reading {name}"))?;
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
    Ok(rows)
}

/// The portal's manifests, read and parsed; unreadable ones are problems of the check.
async fn load_manifests(sink: &Sink, portal: &PortalId) -> Result<FileCheck> {
    let prefix = format!("{MANIFEST}/portal_id={portal}");
    let keys = sink.list(prefix).await?;
    let mut manifests: Vec<Manifest> = Vec::new();
    let mut errors = Vec::new();
    for key in keys.into_iter().filter(|k| k.ends_with(".json")) {
        let bytes = sink.read(key.clone()).await?;
        match parse_manifest(&bytes, portal.as_str()) {
            Ok(m) => manifests.push(m),
            Err(e) => errors.push(format!("{key}: {e}")),
        }
    }
    Ok(FileCheck::new(&manifests, errors))
}

/// What a repair of one portal gathers while verifying, and writes.
struct Repairer<'a> {
    target: Target<'a>,
    /// Missing sessions not written yet.
    buffer: Vec<Session>,
    flush_rows: usize,
    /// Partitions with duplicated ids: date → id → listed values.
    dupes: Vec<(String, HashMap<String, Option<Listed>>)>,
    /// Files the manifests list as live that are gone from the output.
    lost_files: Vec<String>,
    done: Repaired,
}

impl Repairer<'_> {
    async fn missing(&mut self, rows: Vec<Session>) -> Result<()> {
        self.buffer.extend(rows);
        if self.buffer.len() >= self.flush_rows {
            self.flush().await?;
        }
        Ok(())
    }

    /// Write the buffered missing sessions: encode → stage → commit (their ids become archived
    /// ids of the state, and leave its pending sessions) → publish.
    async fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.buffer);
        let (state, portal) = (self.target.state, self.target.portal);
        let ids: Vec<String> = rows.iter().map(|s| s.session_id.clone()).collect();
        let id = portal.to_string();
        // Ids the state already counts as archived (their file was lost) are not recorded
        // twice; all of them stop being pending, so no later run writes them again.
        let (seq, known) = state
            .db(move |st| {
                let seq = st.portal(&id)?.flush_seq + 1;
                let known = st.archived_among(&id, ids.iter().map(String::as_str))?;
                Ok((seq, known))
            })
            .await?;
        let n = rows.len() as u64;
        let (encoded, archived) = encode_days(rows, now_ms()).await?;
        let files = self.target.stage(seq, encoded).await?;
        let commit = FlushCommit {
            seq,
            pending_remove: archived.iter().map(|(id, _)| id.clone()).collect(),
            archived: archived
                .into_iter()
                .filter(|(id, _)| !known.contains(id))
                .collect(),
            files: files.clone(),
            ..FlushCommit::default()
        };
        let id = portal.to_string();
        self.target
            .commit(seq, move |st| st.commit_flush(&id, &commit))
            .await?;
        self.target.publish(seq, &files).await?;
        self.done.written += n;
        info!(portal_id = %portal, seq, rows = n, files = files.len(), "wrote missing sessions");
        Ok(())
    }

    /// Write what is left, record the lost files as replaced, then rewrite each partition
    /// with duplicated ids.
    async fn finish(mut self) -> Result<Repaired> {
        self.flush().await?;
        self.forget_lost_files().await?;
        if self.dupes.is_empty() {
            return Ok(self.done);
        }
        let (sink, portal) = (self.target.sink, self.target.portal);
        let parts: HashMap<String, Vec<String>> =
            sink.partitions(portal).await?.into_iter().collect();
        for (date, expected) in std::mem::take(&mut self.dupes) {
            let Some(keys) = parts.get(&date) else {
                continue;
            };
            let removed = self
                .dedup_partition(&date, keys.clone(), expected)
                .await
                .with_context(|| format!("partition {date}"))?;
            self.done.partitions_rewritten += 1;
            self.done.rows_removed += removed;
        }
        Ok(self.done)
    }

    /// Files the manifests still list but the output lost: their sessions were written again
    /// (the missing ones above), so a manifest records them as replaced, through compaction's
    /// protocol with no new file: commit them as retired → write the manifest → forget them.
    /// Killed before the manifest, the next `verify --repair` finds them again.
    async fn forget_lost_files(&mut self) -> Result<()> {
        if self.lost_files.is_empty() {
            return Ok(());
        }
        let (state, portal) = (self.target.state, self.target.portal);
        let lost = std::mem::take(&mut self.lost_files);
        let (id, retired) = (portal.to_string(), lost.clone());
        let seq = state
            .db(move |st| {
                let seq = st.portal(&id)?.flush_seq + 1;
                st.commit_compaction(&id, seq, &[], &retired)?;
                Ok(seq)
            })
            .await?;
        state.checkpoint().await?;
        self.target.manifest(seq, &[], &lost).await?;
        let (id, retired) = (portal.to_string(), lost.clone());
        state.db(move |st| st.forget_retired(&id, &retired)).await?;
        self.done.lost_files += lost.len() as u64;
        info!(portal_id = %portal, seq, files = lost.len(), "recorded lost files as replaced in a manifest");
        Ok(())
    }

    /// Rewrite one partition keeping one row per session id, through compaction's protocol:
    /// stage → commit with the partition's files as retired → replace → forget them.
    async fn dedup_partition(
        &self,
        date: &str,
        keys: Vec<String>,
        expected: HashMap<String, Option<Listed>>,
    ) -> Result<u64> {
        let (sink, state, portal) = (self.target.sink, self.target.state, self.target.portal);
        let mut inputs = Vec::with_capacity(keys.len());
        for k in &keys {
            inputs.push(sink.read(k.clone()).await?);
        }
        let names = keys.clone();
        let (bytes, rows, removed) =
            tokio::task::spawn_blocking(move || rewrite_deduplicated(inputs, &names, &expected))
                .await
                .context("rewrite task panicked")??;
        let id = portal.to_string();
        let seq = state
            .db(move |st| Ok(st.portal(&id)?.flush_seq + 1))
            .await?;
        let encoded = Encoded::new(date.to_string(), rows as usize, bytes);
        let mut files = self.target.stage(seq, vec![encoded]).await?;
        let file = files.pop().expect("one file staged");
        let (id, f, retired) = (portal.to_string(), file.clone(), keys.clone());
        self.target
            .commit(seq, move |st| {
                st.commit_compaction(&id, seq, std::slice::from_ref(&f), &retired)
            })
            .await?;
        self.target
            .manifest(seq, std::slice::from_ref(&file), &keys)
            .await?;
        state.guard()?;
        sink.replace(file.staging, file.path, keys.clone()).await?;
        failpoint::hit("repair_after_replace");
        let (id, retired) = (portal.to_string(), keys);
        state.db(move |st| st.forget_retired(&id, &retired)).await?;
        self.target.mark_published(seq).await?;
        info!(portal_id = %portal, date, rows, removed, "rewrote partition without duplicated rows");
        Ok(removed)
    }
}

/// Re-encode a partition's files as one, keeping one row per session id (see
/// [`keep_one`]). Returns the bytes, the rows kept and the rows removed.
fn rewrite_deduplicated(
    inputs: Vec<Vec<u8>>,
    names: &[String],
    expected: &HashMap<String, Option<Listed>>,
) -> Result<(Vec<u8>, u64, u64)> {
    let target = schema();
    let mut batches = Vec::new();
    for (bytes, name) in inputs.into_iter().zip(names) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .with_context(|| format!("reading {name}"))?
            .build()?;
        for batch in reader {
            let batch = batch.with_context(|| format!("reading {name}"))?;
            let n = batch.num_rows();
            let columns = target
                .fields()
                .iter()
                .map(|f| match batch.column_by_name(f.name()) {
                    Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
                    Some(c) => bail!(
                        "{name}: column {} is {}, expected {}",
                        f.name(),
                        c.data_type(),
                        f.data_type()
                    ),
                    None if f.is_nullable() => Ok(new_null_array(f.data_type(), n)),
                    None => bail!("{name}: no column {}", f.name()),
                })
                .collect::<Result<Vec<ArrayRef>>>()?;
            batches.push(RecordBatch::try_new(target.clone(), columns)?);
        }
    }
    let col = |b: &RecordBatch, n: &str| b.column_by_name(n).expect("schema column").clone();
    let views: Vec<_> = batches
        .iter()
        .map(|b| {
            (
                col(b, "session_id"),
                col(b, "status"),
                col(b, "start_time"),
                col(b, "end_time"),
                col(b, "archived_at"),
            )
        })
        .collect();
    let mut candidates = Vec::new();
    for (ids, status, start, end, at) in &views {
        let (ids, status) = (ids.as_string::<i32>(), status.as_string::<i32>());
        let start = start.as_primitive::<TimestampMillisecondType>();
        let end = end.as_primitive::<TimestampMillisecondType>();
        let at = at.as_primitive::<TimestampMillisecondType>();
        for i in 0..ids.len() {
            let id = ids.value(i);
            let matches_listing = expected.get(id).and_then(Option::as_ref).is_some_and(|l| {
                l.matches(
                    status.value(i),
                    start.value(i),
                    end.is_valid(i).then(|| end.value(i)),
                )
            });
            candidates.push(Candidate {
                session_id: id,
                matches_listing,
                archived_at_ms: at.value(i),
            });
        }
    }
    let keep = keep_one(&candidates);
    let rows_in = keep.len() as u64;
    drop(candidates);
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, target.clone(), Some(writer_properties()))?;
    let mut at = 0;
    for b in &batches {
        let mask = BooleanArray::from(keep[at..at + b.num_rows()].to_vec());
        at += b.num_rows();
        writer.write(&arrow_select::filter::filter_record_batch(b, &mask)?)?;
    }
    let meta = writer.close()?;
    let rows_out = meta.file_metadata().num_rows() as u64;
    let kept = keep.iter().filter(|k| **k).count() as u64;
    if rows_out != kept {
        bail!("rewrote {rows_out} rows of {kept}");
    }
    Ok((out, rows_out, rows_in - rows_out))
}

/// The text report.
fn print_table(r: &VerifyReport) {
    println!(
        "{:<36}  {:>8}  {:>6}  {:>8}  {:>7}  {:>10}  {:>9}  {:>7}  {:>5}  FILES",
        "PORTAL",
        "LISTED",
        "ACTIVE",
        "ARCHIVED",
        "MISSING",
        "DUPLICATED",
        "DIFFERING",
        "EXPIRED",
        "EXTRA"
    );
    for p in &r.portals {
        let c = &p.counts;
        println!(
            "{:<36}  {:>8}  {:>6}  {:>8}  {:>7}  {:>10}  {:>9}  {:>7}  {:>5}  {}",
            p.portal_id,
            c.listed,
            c.active,
            c.archived,
            c.missing,
            c.duplicated,
            c.differing,
            c.expired,
            c.extra,
            files_summary(p)
        );
    }
    for p in &r.portals {
        let m = &p.manifest;
        for (what, paths) in [
            ("altered", &m.altered),
            ("deleted", &m.deleted),
            ("unlisted", &m.unlisted),
            ("unreadable manifest", &m.errors),
        ] {
            for path in paths.iter().take(20) {
                println!("{}: {what}: {path}", p.portal_id);
            }
            if paths.len() > 20 {
                println!("{}: {what}: {} more", p.portal_id, paths.len() - 20);
            }
        }
        if let Some(rep) = p
            .repaired
            .filter(|r| r.written + r.partitions_rewritten > 0)
        {
            println!(
                "{}: repaired: wrote {} missing sessions, rewrote {} partitions ({} duplicated rows removed)",
                p.portal_id, rep.written, rep.partitions_rewritten, rep.rows_removed
            );
        }
    }
    let n = r.portals.len();
    let expired: u64 = r.portals.iter().map(|p| p.counts.expired).sum();
    if r.ok {
        println!(
            "verified {n} portals: the archive matches the service ({expired} rows expired from the service, kept)"
        );
    } else {
        let bad = r.portals.iter().filter(|p| !p.ok).count();
        println!("verified {n} portals: differences in {bad}");
    }
}

fn files_summary(p: &PortalVerify) -> String {
    let m = &p.manifest;
    if !m.checked {
        return format!("{}, no manifest (not checked)", p.files);
    }
    if m.problems() == 0 {
        return format!("{} ok", p.files);
    }
    let parts: Vec<String> = [
        ("altered", m.altered.len()),
        ("deleted", m.deleted.len()),
        ("unlisted", m.unlisted.len()),
        ("unreadable manifests", m.errors.len()),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(w, n)| format!("{n} {w}"))
    .collect();
    format!("{}: {}", p.files, parts.join(", "))
}
