//! `--dry-run`: what each portal would get, and nothing written anywhere.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;

use crate::clock::rfc3339;
use crate::config::StateLoc;
use crate::model::{PassKind, PortalId};
use crate::run::discover::{discover, sources};
use crate::run::pass::{plan, Plan};
use crate::run::Job;
use crate::state::StateHandle;

/// `--dry-run`: what each portal would get, from the state (read only, no lock) and the
/// service's portal list. Writes nothing anywhere.
pub async fn dry_run(
    job: &Job,
    sdk: impl std::future::Future<Output = Result<aws_config::SdkConfig>>,
) -> Result<()> {
    let cfg = &job.config;
    // A local state is read first (a refused one fails before any AWS set-up); an S3 state is a
    // read-only copy, without the lease.
    let local = match &cfg.state {
        StateLoc::Local(_) => StateHandle::open_readonly(cfg, None).await?,
        StateLoc::S3(_) => None,
    };
    let sdk = sdk.await?;
    let state = match &cfg.state {
        StateLoc::Local(_) => local,
        StateLoc::S3(_) => {
            let s3 = crate::aws::s3_client(&sdk, cfg.max_attempts);
            StateHandle::open_readonly(cfg, Some(&s3)).await?
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut sources = sources(&sdk, cfg, &stop).await?;
    let found = discover(
        job.portals.as_deref(),
        &mut sources,
        None,
        cfg.concurrency,
        false,
    )
    .await?;
    let portals: Vec<(PortalId, Option<String>)> = found
        .into_iter()
        .filter(|f| cfg.shard.owns(&f.portal))
        .map(|f| (f.portal, f.account))
        .collect();
    println!(
        "dry run of `{}` (shard {}): {} portals; nothing is written",
        job.command,
        cfg.shard,
        portals.len()
    );
    for (account, role) in &sources.roles {
        let mine = portals
            .iter()
            .filter(|(_, a)| a.as_deref() == Some(account.as_str()))
            .count();
        match sources.failed.iter().find(|f| &f.account == account) {
            Some(f) => println!("account {account}: FAILED: {}", f.error),
            None => {
                println!("account {account}: role {role} assumed; {mine} portals in this shard")
            }
        }
    }
    for (p, account) in &portals {
        let (ps, pending) = match &state {
            Some(st) => {
                let id = p.to_string();
                st.db(move |st| {
                    let pending: Vec<i64> =
                        st.pending(&id)?.into_values().map(|p| p.start_ms).collect();
                    Ok((st.find(&id)?, pending))
                })
                .await?
            }
            None => (None, vec![]),
        };
        let known = ps.is_some();
        let ps = ps.unwrap_or_default();
        let what = match plan(&ps, pending.iter().copied().min(), job.mode) {
            Plan::Resume(c) => format!(
                "resume the {} pass from its checkpoint (after {} pages)",
                c.kind.as_str(),
                c.pages
            ),
            Plan::New {
                kind: PassKind::Backfill,
                ..
            } if !known || !ps.backfill_done => "backfill (never archived)".to_string(),
            Plan::New {
                kind: PassKind::Backfill,
                ..
            } => "backfill again: everything the service lists (--restart)".to_string(),
            Plan::New {
                stop_before_ms: Some(stop),
                ..
            } => format!("incremental pass, newest first, back to {}", rfc3339(stop)),
            Plan::New { .. } => "incremental pass over everything".to_string(),
        };
        match account {
            Some(a) => println!("{p}  (account {a})  {what}; {} pending", pending.len()),
            None => println!("{p}  {what}; {} pending", pending.len()),
        }
    }
    // The run would archive the others and fail naming these accounts: so does its dry run.
    if let Some(line) = sources.failure_line() {
        anyhow::bail!(line);
    }
    Ok(())
}
