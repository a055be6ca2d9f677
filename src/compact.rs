//! `archiver compact`: rewrite each partition's files into one, with the flushes'
//! exactly-once protocol. Per partition: read and re-encode its files → stage the new file →
//! commit it together with the list of files it replaces (one transaction) → publish it →
//! delete the replaced files. Killed at any point, the next run's or compaction's recovery
//! (see `pass::recover`) finishes the publish and the deletes, or drops the uncommitted stage.
//!
//! Readers can see both the new file and some old ones only between the publish (a rename)
//! and the last delete, done back to back before any sync: measured and reported.
//! Nothing is ever missing: old files go only after the new one is in place.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use arrow_array::{new_null_array, ArrayRef, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tracing::{info, warn};

use crate::clock::{now_ms, utc_date};
use crate::config::{Config, PortalId};
use crate::encode::{schema, writer_properties};
use crate::failpoint;
use crate::pass::{db, recover};
use crate::sink::{final_key, staging_key, Sink};
use crate::state::{FileRecord, State};
use crate::state_store::{Durability, OpenState};

/// What a compaction did.
#[derive(Debug, Default, serde::Serialize)]
pub struct CompactSummary {
    pub partitions: u64,
    pub files_before: u64,
    pub files_after: u64,
    pub rows: u64,
    pub bytes_after: u64,
    /// Longest time any reader could see a new file beside the ones it replaces.
    pub max_overlap_ms: f64,
}

/// Parse `90m`, `36h`, `2d`, `1w`, `0s`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(secs).map(Duration::from_secs)
}

/// Is the partition of `date` (YYYY-MM-DD) old enough: did its day end at least `older_than`
/// before `now_ms`?
pub fn old_enough(date: &str, older_than: Duration, now_ms: i64) -> bool {
    date_start_ms(date)
        .is_some_and(|start| start + 86_400_000 + older_than.as_millis() as i64 <= now_ms)
}

/// Epoch ms of a date's midnight (UTC); `None` unless `date` is a valid `YYYY-MM-DD`.
fn date_start_ms(date: &str) -> Option<i64> {
    let (y, rest) = date.split_once('-')?;
    let (m, d) = rest.split_once('-')?;
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    // days_from_civil (Howard Hinnant), the inverse of clock::utc_date.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let ms = (era * 146_097 + doe - 719_468) * 86_400_000;
    (utc_date(ms) == date).then_some(ms)
}

/// Compact every portal of this state (and shard).
pub async fn compact(
    cfg: &Config,
    older_than: Duration,
    s3: Option<&aws_sdk_s3::Client>,
) -> Result<CompactSummary> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store = OpenState::acquire(cfg, "compact", s3, stop).await?;
    let result = compact_on(cfg, older_than, s3, &store).await;
    let finished = store.finish().await;
    let summary = result?;
    finished?;
    Ok(summary)
}

async fn compact_on(
    cfg: &Config,
    older_than: Duration,
    s3: Option<&aws_sdk_s3::Client>,
    store: &OpenState,
) -> Result<CompactSummary> {
    let path = store.path.clone();
    let state = tokio::task::spawn_blocking(move || State::open(&path))
        .await
        .context("state task panicked")??;
    store.mark_opened();
    let state_id = state.state_id()?;
    let portals: Vec<PortalId> = state
        .portals()?
        .into_iter()
        .filter_map(|p| PortalId::parse(&p.portal_id).ok())
        .filter(|p| cfg.shard.owns(p))
        .collect();
    let sink = Sink::new(&cfg.output, s3, &cfg.s3)?;
    sink.check_writable().await?;
    let run_id = state.start_run("compact")?;
    let state = Arc::new(Mutex::new(state));
    let ctx = Ctx {
        sink,
        state,
        state_id,
        durable: store.durability(),
    };
    let mut summary = CompactSummary::default();
    let now = now_ms();
    let result = async {
        for portal in &portals {
            recover(&ctx.sink, &ctx.state, portal).await?;
            for (date, keys) in ctx.sink.partitions(portal).await? {
                if keys.len() < 2 || !old_enough(&date, older_than, now) {
                    continue;
                }
                compact_partition(&ctx, portal, &date, keys, &mut summary)
                    .await
                    .with_context(|| format!("compacting portal {portal} partition {date}"))?;
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let outcome = if result.is_ok() { "ok" } else { "failed" };
    let detail = result.as_ref().err().map(|e| format!("{e:#}"));
    ctx.state
        .lock()
        .expect("state")
        .finish_run(run_id, outcome, detail.as_deref())?;
    result?;
    info!(
        partitions = summary.partitions,
        files_before = summary.files_before,
        files_after = summary.files_after,
        rows = summary.rows,
        max_overlap_ms = summary.max_overlap_ms,
        "compaction finished"
    );
    Ok(summary)
}

/// What compacting one partition needs.
struct Ctx {
    sink: Sink,
    state: Arc<Mutex<State>>,
    state_id: String,
    durable: Durability,
}

async fn compact_partition(
    ctx: &Ctx,
    portal: &PortalId,
    date: &str,
    keys: Vec<String>,
    summary: &mut CompactSummary,
) -> Result<()> {
    let mut inputs = Vec::with_capacity(keys.len());
    for k in &keys {
        inputs.push(ctx.sink.read(k.clone()).await?);
    }
    let names = keys.clone();
    let (bytes, rows) = tokio::task::spawn_blocking(move || rewrite(inputs, &names))
        .await
        .context("compaction task panicked")??;
    let id = portal.to_string();
    let seq = db(&ctx.state, move |st| Ok(st.portal(&id)?.flush_seq + 1)).await?;
    let staging = staging_key(portal, date, &ctx.state_id, seq);
    let path = final_key(portal, date, &ctx.state_id, seq);
    let file = FileRecord {
        seq,
        path: path.clone(),
        staging: staging.clone(),
        rows: rows as i64,
        bytes: bytes.len() as i64,
    };
    let len = bytes.len() as u64;
    ctx.sink.stage(staging.clone(), bytes).await?;
    failpoint::hit("compact_after_stage");
    let (id, f, retired) = (portal.to_string(), file.clone(), keys.clone());
    db(&ctx.state, move |st| {
        st.commit_compaction(&id, seq, std::slice::from_ref(&f), &retired)
    })
    .await?;
    ctx.durable.checkpoint().await?;
    failpoint::hit("compact_after_commit");
    let window = ctx.sink.replace(staging, path, keys.clone()).await?;
    failpoint::hit("compact_after_replace");
    let overlap = window.as_secs_f64() * 1000.0;
    let (id, retired) = (portal.to_string(), keys.clone());
    db(&ctx.state, move |st| st.forget_retired(&id, &retired)).await?;
    let id = portal.to_string();
    db(&ctx.state, move |st| st.mark_published(&id, seq)).await?;
    summary.partitions += 1;
    summary.files_before += keys.len() as u64;
    summary.files_after += 1;
    summary.rows += rows;
    summary.bytes_after += len;
    summary.max_overlap_ms = summary.max_overlap_ms.max(overlap);
    info!(portal_id = %portal, date, files = keys.len(), rows, overlap_ms = overlap, "compacted partition");
    Ok(())
}

/// Re-encode several files as one, column by column into the current schema (a column an
/// older file lacks becomes nulls). Checks that every row made it.
fn rewrite(inputs: Vec<Vec<u8>>, names: &[String]) -> Result<(Vec<u8>, u64)> {
    let target = schema();
    let mut out = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut out, target.clone(), Some(writer_properties()))?;
    let mut rows_in = 0u64;
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
            writer.write(&RecordBatch::try_new(target.clone(), columns)?)?;
            rows_in += n as u64;
        }
    }
    let meta = writer.close()?;
    let rows_out = meta.file_metadata().num_rows() as u64;
    if rows_out != rows_in {
        bail!("compaction wrote {rows_out} rows of {rows_in}");
    }
    if rows_in == 0 {
        warn!("compacting files with no rows");
    }
    Ok((out, rows_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_partition_age() {
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        for bad in ["", "d", "2", "2y", "-1d", "1.5h"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        // 2026-11-26T12:00:00Z
        let now = 1_795_694_400_000;
        assert!(!old_enough("2026-11-26", Duration::ZERO, now));
        assert!(old_enough("2026-11-25", Duration::ZERO, now));
        assert!(!old_enough("2026-11-25", Duration::from_secs(86_400), now));
        assert!(old_enough("2026-11-24", Duration::from_secs(86_400), now));
        assert!(!old_enough("not-a-date", Duration::ZERO, now));
        for ms in [0i64, 951_868_800_000, 1_795_694_400_000] {
            assert_eq!(
                date_start_ms(&utc_date(ms)),
                Some(ms - ms.rem_euclid(86_400_000))
            );
        }
    }
}
