//! The floor of the comparative benchmark (`benches/compare.py`): the least a Rust program
//! must do to archive one portal. It pages ListSessions oldest-first (maxResults 100) with the
//! archiver's SDK client settings (SDK retries off, the same timeouts), turns each page into
//! rows and encodes them with the archiver's own Parquet writer (`archiver::encode::encode`:
//! zstd, same schema and properties), one file every 100,000 rows. Nothing else: no state, no
//! dedup, no partitioning, no retries, no staging or fsync.
//!
//! ```sh
//! cargo build --release --example floor
//! AWS_ENDPOINT_URL_WORKSPACES_WEB=http://127.0.0.1:PORT AWS_REGION=us-east-1 \
//!   AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
//!   target/release/examples/floor --portal-id ID --out /tmp/floor-out
//! ```
//!
//! Prints one JSON line: `{"pages":..,"rows":..,"files":..}`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use archiver::encode::encode;
use archiver::model::{Session, SessionStatus};
use aws_config::BehaviorVersion;
use aws_sdk_workspacesweb::primitives::DateTime;
use aws_sdk_workspacesweb::types::{SessionSortBy, SessionStatus as WireStatus};
use aws_sdk_workspacesweb::Client;
use clap::Parser;

const PAGE_SIZE: i32 = 100;
const FLUSH_ROWS: usize = 100_000;

#[derive(Parser)]
#[command(about = "Minimal ListSessions -> Parquet client (benchmark floor)")]
struct Args {
    /// The portal to list.
    #[arg(long)]
    portal_id: String,
    /// Folder the Parquet files are written to (created if missing).
    #[arg(long)]
    out: PathBuf,
}

fn millis(t: &DateTime) -> Option<i64> {
    let rounded = (i64::from(t.subsec_nanos()) + 500_000) / 1_000_000;
    t.secs().checked_mul(1000)?.checked_add(rounded)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn write_file(out: &std::path::Path, seq: usize, rows: &[Session]) -> Result<()> {
    let bytes = encode(rows, now_ms())?;
    let path = out.join(format!("part-{seq:05}.parquet"));
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    // The archiver's own client settings (retries off, same timeouts).
    let client = Client::from_conf(archiver::source::client_config(&sdk));

    let mut rows: Vec<Session> = Vec::with_capacity(FLUSH_ROWS);
    let mut token: Option<String> = None;
    let (mut pages, mut total, mut files) = (0usize, 0usize, 0usize);
    let mut arn: Option<Arc<str>> = None;
    loop {
        let resp = client
            .list_sessions()
            .portal_id(&args.portal_id)
            .sort_by(SessionSortBy::StartTimeAscending)
            .max_results(PAGE_SIZE)
            .set_next_token(token.take())
            .send()
            .await
            .context("ListSessions")?;
        pages += 1;
        // The reply's strings move into the rows, as the archiver's do.
        for s in resp.sessions {
            let (Some(id), Some(portal_arn), Some(start)) = (
                s.session_id,
                s.portal_arn.as_deref(),
                s.start_time.as_ref().and_then(millis),
            ) else {
                bail!("a session without sessionId, portalArn or startTime");
            };
            let status = match s.status {
                Some(WireStatus::Active) => SessionStatus::Active,
                Some(WireStatus::Terminated) => SessionStatus::Terminated,
                other => bail!("session {id}: unexpected status {other:?}"),
            };
            let portal_arn = match &arn {
                Some(a) if **a == *portal_arn => a.clone(),
                _ => arn.insert(Arc::from(portal_arn)).clone(),
            };
            rows.push(Session {
                portal_arn,
                session_id: id,
                username: s.username,
                status,
                start_ms: start,
                end_ms: s.end_time.as_ref().and_then(millis),
                // Only with the archiver's --with-client-ips (a GetSession per session).
                client_ips: None,
            });
        }
        if rows.len() >= FLUSH_ROWS {
            write_file(&args.out, files, &rows)?;
            files += 1;
            total += rows.len();
            rows.clear();
        }
        match resp.next_token {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
    }
    if !rows.is_empty() {
        write_file(&args.out, files, &rows)?;
        files += 1;
        total += rows.len();
    }
    println!(
        "{}",
        serde_json::json!({ "pages": pages, "rows": total, "files": files })
    );
    Ok(())
}
