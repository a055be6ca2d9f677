//! `archiver status`: what the state says, per portal. Reads only; takes no lock.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::clock::rfc3339;
use crate::config::Config;
use crate::state::State;

/// Print the status table (or JSON) of a state.
pub fn print(config: &Config, local: Option<&Path>, as_json: bool) -> Result<()> {
    let Some(local) = local else {
        anyhow::bail!(
            "no state at {} (nothing archived yet with this --state)",
            config.state
        );
    };
    let st = State::open_readonly(local)?;
    let last = st.last_run()?;
    let mut portals = Vec::new();
    for p in st.portals()? {
        let (archived_ids, pending) = st.sizes(&p.portal_id)?;
        let (rows, files) = st.file_totals(&p.portal_id)?;
        let last_outcome = st.last_portal_outcome(&p.portal_id)?;
        portals.push(json!({
            "portal_id": p.portal_id,
            "portal_arn": p.portal_arn,
            "backfill_done": p.backfill_done,
            "watermark": p.high_watermark_ms.map(rfc3339),
            "checkpoint": p.pass.as_ref().map(|c| json!({
                "pass": c.kind,
                "pages": c.pages,
                "has_token": c.token.is_some(),
                "started_at": rfc3339(c.started_at),
            })),
            "last_commit": p.updated_at.map(rfc3339),
            "pending": pending,
            "dedup_ids": archived_ids,
            "flushes": p.flush_seq,
            "rows_written": rows,
            "files_written": files,
            "last_run": last_outcome.map(|(started, o)| json!({
                "started_at": rfc3339(started),
                "pass": o.pass,
                "outcome": o.outcome,
                "rows": o.rows,
                "pages": o.pages,
                "error": o.error,
            })),
        }));
    }
    let doc = json!({
        "state": config.state.to_string(),
        "state_id": st.state_id()?,
        "last_run": last.map(|r| json!({
            "run_id": r.run_id,
            "command": r.command,
            "started_at": rfc3339(r.started_at),
            "ended_at": r.ended_at.map(rfc3339),
            "outcome": r.outcome,
            "detail": r.detail,
        })),
        "portals": portals,
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("state {}", config.state);
    match &doc["last_run"] {
        serde_json::Value::Null => println!("last run: none"),
        r => println!(
            "last run: #{} `{}` {} (started {}, ended {}){}",
            r["run_id"],
            r["command"].as_str().unwrap_or(""),
            r["outcome"].as_str().unwrap_or(""),
            r["started_at"].as_str().unwrap_or("-"),
            r["ended_at"].as_str().unwrap_or("-"),
            r["detail"]
                .as_str()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ),
    }
    println!(
        "{:<36}  {:<8}  {:<24}  {:>7}  {:<22}  {:<10}  {:>9}",
        "PORTAL", "BACKFILL", "WATERMARK", "PENDING", "CHECKPOINT", "LAST RUN", "ROWS"
    );
    for p in doc["portals"].as_array().into_iter().flatten() {
        let checkpoint = match &p["checkpoint"] {
            serde_json::Value::Null => "-".to_string(),
            c => format!(
                "{} after {} pages",
                c["pass"].as_str().unwrap_or(""),
                c["pages"]
            ),
        };
        println!(
            "{:<36}  {:<8}  {:<24}  {:>7}  {:<22}  {:<10}  {:>9}",
            p["portal_id"].as_str().unwrap_or(""),
            if p["backfill_done"].as_bool() == Some(true) {
                "done"
            } else {
                "not yet"
            },
            p["watermark"].as_str().unwrap_or("-"),
            p["pending"].as_i64().unwrap_or(0),
            checkpoint,
            p["last_run"]["outcome"].as_str().unwrap_or("-"),
            p["rows_written"].as_i64().unwrap_or(0),
        );
    }
    Ok(())
}

/// Every `session_id` in the dataset under a local output root (for `demo`'s self-check).
pub fn read_archive_ids(root: &Path) -> Result<Vec<String>> {
    use arrow_array::cast::AsArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut ids = Vec::new();
    let mut stack = vec![root.join(crate::sink::DATASET)];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for e in entries {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "parquet") {
                let file = std::fs::File::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                    .with_context(|| format!("reading {}", path.display()))?
                    .build()?;
                for batch in reader {
                    let batch = batch?;
                    let col = batch
                        .column_by_name("session_id")
                        .context("a file without session_id")?
                        .as_string::<i32>();
                    ids.extend(col.iter().flatten().map(str::to_string));
                }
            }
        }
    }
    Ok(ids)
}
