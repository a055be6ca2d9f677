//! One portal's work: recovery, then one pass listing newest first — a backfill (to the end)
//! or an incremental pass (until past what is archived) — taking each page through
//! dedup and flushing as it goes (see [`super::flush`]). A session the service sends in a form
//! that cannot be archived faithfully is quarantined, and the pass goes on past it; every pass
//! asks for the quarantined sessions it did not list, and writes them once they come usably.
//!
//! Killed at any line, the next run's recovery finishes the publish or drops the uncommitted
//! staging, then continues from the last committed checkpoint: at most one flush of pages is
//! fetched again, and dedup makes sure nothing fetched twice is written twice.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use tracing::{debug, info, warn};

use super::client_ips::fetch_client_ips;
use super::flush::{encode_days, Points, Target};
use super::recover::{check_unclaimed, claim, recover, Retired};
use super::Mode;
use crate::clock::now_ms;
use crate::dedup::{prune_cutoff, Dedup, Verdict, OVERLAP_MS};
use crate::error::Interrupted;
use crate::failpoint;
use crate::model::{Gap, OddSession, PassKind, PortalId, SessionStatus};
use crate::report::PortalReport;
use crate::sink::Sink;
use crate::source::{FetchError, Got, Order, Page, Source};
use crate::state::{FlushCommit, PassCheckpoint, PortalState, StateHandle};

/// Sessions may start this far in the future (clock skew) before the watermark ignores them.
const FUTURE_SKEW_MS: i64 = 5 * 60_000;

/// A pending session the service stops returning is given up after this many passes in a
/// row did not find it...
pub const GIVE_UP_AFTER_MISSES: i64 = 3;
/// ... and at least this long after the first of them.
pub const GIVE_UP_AFTER_MS: i64 = 86_400_000;

/// The crash points of a pass's flushes.
const POINTS: Points = Points {
    staged: "after_stage",
    committed_locally: "after_local_commit",
    committed: "after_commit",
    manifested: "after_manifest",
};

/// Token rejections tolerated in one pass of one run before giving up on the portal.
const MAX_TOKEN_RESTARTS: u32 = 3;

/// Everything one portal's task needs.
pub struct PortalCtx {
    pub source: Source,
    pub sink: Sink,
    pub state: StateHandle,
    pub flush_rows: usize,
    pub page_size: usize,
    /// Fetch each written session's client IPs with GetSession.
    pub with_client_ips: bool,
    /// Set on SIGTERM/SIGINT: flush what is buffered and stop.
    pub stop: Arc<AtomicBool>,
}

/// Archive one portal. Errors name the portal.
pub async fn archive_portal(
    ctx: &PortalCtx,
    portal: &PortalId,
    mode: Mode,
    report: &mut PortalReport,
) -> Result<()> {
    report.portal_id = portal.to_string();
    let id = portal.to_string();
    let ps = ctx.state.db(move |st| st.portal(&id)).await?;
    // A portal this state never archived: claim it first, before recovery deletes staged
    // files (another state's may be committed there).
    if ps.flush_seq == 0 && ps.pass.is_none() && !ps.backfill_done {
        check_unclaimed(&ctx.sink, portal, ctx.state.state_id()).await?;
        claim(&ctx.sink, portal, ctx.state.state_id()).await?;
    }
    let recovered = recover(&ctx.sink, &ctx.state, portal, Retired::DeleteIfAllowed).await?;
    report.recovered_files = recovered.published;
    report.lost_files = recovered.lost;
    PassRun::start(ctx, portal, ps, mode, report)
        .await?
        .go(report)
        .await?;
    if report.resumed {
        // The pass just finished began in an earlier run: sessions that started since then lie
        // above its first page. One fresh incremental pass (cheap: it stops at the watermark
        // the finished pass set) brings the archive up to now.
        let first = report.pass;
        let id = portal.to_string();
        let ps = ctx.state.db(move |st| st.portal(&id)).await?;
        PassRun::start(ctx, portal, ps, Mode::Run, report)
            .await?
            .go(report)
            .await?;
        report.pass = first;
        report.resumed = true;
    }
    Ok(())
}

/// What a portal's work will be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Continue the pass in progress from its checkpoint.
    Resume(PassCheckpoint),
    /// Start a pass: a backfill, or an incremental pass that stops past `stop_before_ms`
    /// (`None`: read to the end).
    New {
        kind: PassKind,
        stop_before_ms: Option<i64>,
    },
}

/// Decide a portal's work from its state (pure: shared by runs and `--dry-run`).
pub fn plan(ps: &PortalState, oldest_pending: Option<i64>, mode: Mode) -> Plan {
    let restart = matches!(mode, Mode::Backfill { restart: true });
    match &ps.pass {
        Some(p) if !restart => Plan::Resume(p.clone()),
        _ if restart || !ps.backfill_done => Plan::New {
            kind: PassKind::Backfill,
            stop_before_ms: None,
        },
        _ => Plan::New {
            kind: PassKind::Incremental,
            stop_before_ms: [ps.high_watermark_ms, oldest_pending]
                .into_iter()
                .flatten()
                .min()
                .map(|m| m - OVERLAP_MS),
        },
    }
}

/// A pass being worked on.
struct PassRun<'a> {
    ctx: &'a PortalCtx,
    portal: &'a PortalId,
    ps: PortalState,
    pass: PassCheckpoint,
    dedup: Dedup,
    /// Pending sessions already seen by this pass (committed before a resume, or this run).
    seen_pending: HashSet<String>,
    /// Pending sessions the service did not find before: misses so far, and since when.
    missed_before: HashMap<String, (i64, i64)>,
    /// Quarantined sessions the service sent in this pass, unusably again: not asked for.
    seen_odd: HashSet<String>,
    /// Quarantined sessions the service did not find before: misses so far, and since when.
    odd_missed_before: HashMap<String, (i64, i64)>,
    /// Lowest start this pass listed.
    low_seen: Option<i64>,
    /// For the final flush: pending sessions not found this time, those given up, a gap.
    missed_now: Vec<String>,
    lost_now: i64,
    /// For the next flush: quarantined sessions not found this time, and those given up.
    odd_missed_now: Vec<String>,
    odd_lost_now: i64,
    gap: Option<Gap>,
    /// A session in the future was seen (warned once).
    warned_future: bool,
    seq: i64,
}

impl<'a> PassRun<'a> {
    async fn start(
        ctx: &'a PortalCtx,
        portal: &'a PortalId,
        ps: PortalState,
        mode: Mode,
        report: &mut PortalReport,
    ) -> Result<PassRun<'a>> {
        let id = portal.to_string();
        let (pending, quarantine) = ctx
            .state
            .db(move |st| Ok((st.pending(&id)?, st.quarantine(&id)?)))
            .await?;
        let oldest_pending = pending.values().map(|p| p.start_ms).min();
        let (pass, resumed) = match plan(&ps, oldest_pending, mode) {
            Plan::Resume(p) => (p, true),
            Plan::New {
                kind,
                stop_before_ms,
            } => {
                let pass = PassCheckpoint {
                    kind,
                    token: None,
                    stop_before_ms,
                    high_ms: None,
                    low_ms: None,
                    prior_max_ms: ps.archived_max_ms,
                    pages: 0,
                    started_at: now_ms(),
                };
                let (id, p) = (portal.to_string(), pass.clone());
                ctx.state.db(move |st| st.begin_pass(&id, &p)).await?;
                (pass, false)
            }
        };
        report.pass = Some(pass.kind);
        report.resumed = resumed;
        if resumed {
            info!(portal_id = %portal, pass = pass.kind.as_str(), pages = pass.pages, "resuming from checkpoint");
        } else {
            info!(portal_id = %portal, pass = pass.kind.as_str(), "starting pass");
        }
        let seen_pending = pending
            .iter()
            .filter(|(_, p)| p.seen_at >= pass.started_at)
            .map(|(id, _)| id.clone())
            .collect();
        let missed_before = pending
            .iter()
            .filter_map(|(id, p)| Some((id.clone(), (p.misses, p.first_missed_at?))))
            .collect();
        let odd_missed_before = quarantine
            .iter()
            .filter_map(|q| Some((q.session_id.clone(), (q.misses, q.first_missed_at?))))
            .collect();
        let dedup = Dedup::new(
            pending
                .into_iter()
                .map(|(id, p)| (id, p.start_ms))
                .collect(),
            pass.prior_max_ms,
            pass.low_ms,
            ps.dedup_floor_ms,
        )
        .with_quarantine(
            quarantine
                .iter()
                .map(|q| (q.session_id.clone(), q.held()))
                .collect(),
        );
        Ok(PassRun {
            ctx,
            portal,
            seq: ps.flush_seq,
            ps,
            pass,
            dedup,
            seen_pending,
            missed_before,
            seen_odd: HashSet::new(),
            odd_missed_before,
            low_seen: None,
            missed_now: Vec::new(),
            lost_now: 0,
            odd_missed_now: Vec::new(),
            odd_lost_now: 0,
            gap: None,
            warned_future: false,
        })
    }

    async fn go(&mut self, report: &mut PortalReport) -> Result<()> {
        // Newest first for every pass: sessions ageing out at the bottom of the listing cannot
        // shift what is still to come, whatever the service's tokens mean (a key, or an offset
        // into the current listing). New sessions at the top can only make a page repeat what an
        // earlier one showed, and dedup drops repeats.
        let order = Order::NewestFirst;
        let portal = self.portal;
        let mut covered_from: Option<i64> = None;
        let bar = crate::progress::portal(portal.as_str());
        loop {
            let token = self.pass.token.clone();
            let page = match self
                .ctx
                .source
                .list_sessions(portal, order, token.as_deref(), self.ctx.page_size)
                .await
            {
                Ok(p) => p,
                Err(FetchError::TokenRejected(msg)) if token.is_some() => {
                    report.token_restarts += 1;
                    if report.token_restarts > MAX_TOKEN_RESTARTS {
                        return Err(anyhow!(
                            "portal {portal}: pagination tokens rejected {} times in one pass: {msg}",
                            report.token_restarts
                        ));
                    }
                    warn!(
                        portal_id = %portal,
                        pass = self.pass.kind.as_str(),
                        reason = %msg,
                        "the service rejected the saved pagination token; restarting the pass from its start (nothing is written twice)"
                    );
                    self.pass.token = None;
                    continue;
                }
                Err(FetchError::Stopped) => {
                    self.flush_on_the_way_out(report).await?;
                    return Err(Interrupted.into());
                }
                Err(e) => {
                    // Keep what the pages before this one brought: they are complete.
                    if let Err(flush_err) = self.flush(false, report).await {
                        warn!(portal_id = %portal, error = %format!("{flush_err:#}"), "could not save progress before failing");
                    }
                    return Err(anyhow!(e).context(format!("portal {portal}: ListSessions")));
                }
            };
            failpoint::hit("after_page");
            self.pass.pages += 1;
            report.pages += 1;
            report.listed += (page.sessions.len() + page.odd.len()) as u64;
            if let Some(bar) = &bar {
                bar.set_message(format!(
                    "{} pass: {} pages, {} sessions listed, {} written, {} pending",
                    self.pass.kind.as_str(),
                    report.pages,
                    report.listed,
                    report.rows + self.dedup.batch().rows.len() as u64,
                    self.dedup.pending_len()
                ));
            }
            let next_token = page.next_token.clone();
            let reached_stop = self.take_page(page, report).await?;
            if let Some(low) = reached_stop {
                covered_from = Some(low);
            }
            self.pass.token = next_token;
            let done = reached_stop.is_some() || self.pass.token.is_none();
            if done {
                break;
            }
            if self.ctx.stop.load(Ordering::Relaxed) {
                self.flush_on_the_way_out(report).await?;
                return Err(Interrupted.into());
            }
            if self.dedup.batch().listed + self.ctx.page_size > self.ctx.flush_rows {
                self.flush(false, report).await?;
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if covered_from.is_none() {
            self.gap = self.find_gap();
            report.gap = self.gap;
        }
        let asked = self.resolve_missing_pending(covered_from, report).await?;
        self.retry_quarantined(&asked, report).await?;
        self.flush(true, report).await?;
        report.completed = true;
        report.pending = self.dedup.pending_len() as u64;
        report.quarantined = self.dedup.quarantined_len() as u64;
        Ok(())
    }

    /// After an incremental pass that listed everything the service holds without reaching
    /// back to its watermark: the oldest session still listed is newer than what the last pass
    /// covered, so sessions that started in between may have aged out of the service unseen.
    /// (An empty listing proves nothing either way and reports nothing.)
    fn find_gap(&self) -> Option<Gap> {
        if self.pass.kind != PassKind::Incremental {
            return None;
        }
        let (from_ms, to_ms) = (self.ps.high_watermark_ms?, self.low_seen?);
        if to_ms <= from_ms {
            return None;
        }
        let gap = Gap { from_ms, to_ms };
        warn!(
            portal_id = %self.portal,
            from = %crate::clock::rfc3339(from_ms),
            to = %crate::clock::rfc3339(to_ms),
            gap_seconds = gap.seconds(),
            "the service no longer lists sessions this old: any session that started in this range was not archived (the job did not run for longer than the service keeps sessions?)"
        );
        Some(gap)
    }

    /// Offer one page to dedup. Returns the page's oldest start if the incremental pass went
    /// past its stop point on it. Its odd sessions are quarantined (unless archived already),
    /// and the page goes on past them.
    async fn take_page(&mut self, page: Page, report: &mut PortalReport) -> Result<Option<i64>> {
        let Page { sessions, odd, .. } = page;
        let lookups: Vec<String> = sessions
            .iter()
            .filter(|s| self.dedup.needs_lookup(s))
            .map(|s| s.session_id.clone())
            .chain(
                odd.iter()
                    .filter(|o| self.dedup.odd_needs_lookup(o))
                    .map(|o| o.session_id.clone()),
            )
            .collect();
        let archived = if lookups.is_empty() {
            HashSet::new()
        } else {
            let id = self.portal.to_string();
            self.ctx
                .state
                .db(move |st| st.archived_among(&id, lookups.iter().map(String::as_str)))
                .await?
        };
        let mut low: Option<i64> = None;
        let future = now_ms() + FUTURE_SKEW_MS;
        let starts = sessions.iter().map(|s| (s.start_ms, &s.session_id)).chain(
            odd.iter()
                .filter_map(|o| Some((o.start_ms?, &o.session_id))),
        );
        for (start, id) in starts {
            if start <= future {
                self.pass.high_ms = self.pass.high_ms.max(Some(start));
            } else if !self.warned_future {
                // Archived as listed, but a start in the future must not move the watermark
                // above sessions a later pass still has to read.
                warn!(portal_id = %self.portal, session_id = %id, start = %crate::clock::rfc3339(start), "a session starts in the future; the watermark ignores it");
                self.warned_future = true;
            }
            low = Some(low.map_or(start, |l: i64| l.min(start)));
        }
        for s in sessions {
            let is_archived = !archived.is_empty() && archived.contains(&s.session_id);
            // The id is copied only for the few sessions that need it after the offer.
            let keep_id = (s.status == SessionStatus::Active
                || self.dedup.is_quarantined(&s.session_id))
            .then(|| s.session_id.clone());
            let was_held = keep_id
                .as_ref()
                .is_some_and(|id| self.dedup.is_quarantined(id));
            let verdict = self.dedup.offer(s, is_archived);
            let Some(id) = keep_id else { continue };
            if was_held {
                report.quarantine_released += 1;
                info!(portal_id = %self.portal, session_id = %id, "a quarantined session was listed usably; released");
            }
            if matches!(verdict, Verdict::NewPending | Verdict::StillPending) {
                self.seen_pending.insert(id);
            }
        }
        for o in odd {
            let is_archived = archived.contains(&o.session_id);
            self.take_odd(o, is_archived, report);
        }
        if let Some(l) = low {
            self.low_seen = Some(self.low_seen.map_or(l, |x| x.min(l)));
        }
        let past_stop = match (self.pass.stop_before_ms, low) {
            (Some(stop), Some(l)) if l < stop => Some(l),
            _ => None,
        };
        Ok(past_stop)
    }

    /// Offer a session the service sent unusably to dedup: quarantined (the one warning of
    /// this run naming it: portal and session id, never the username), or skipped if archived.
    fn take_odd(&mut self, o: OddSession, archived: bool, report: &mut PortalReport) {
        let (id, reason) = (o.session_id.clone(), o.reason.clone());
        if self.dedup.offer_odd(o, archived) != Verdict::Quarantine {
            debug!(portal_id = %self.portal, session_id = %id, reason = %reason, "an archived session was sent unusably; it stays as archived");
            return;
        }
        failpoint::hit("quarantined");
        warn_quarantined(self.portal, &id, &reason, report);
        self.seen_odd.insert(id);
    }

    /// Pending sessions this pass should have listed but did not: ask for each one. One the
    /// service does not find is kept pending and asked for again by later passes; it is given
    /// up (and counted as lost) only once [`GIVE_UP_AFTER_MISSES`] passes in a row, over at least
    /// [`GIVE_UP_AFTER_MS`], did not find it.
    /// Returns the ids asked for.
    async fn resolve_missing_pending(
        &mut self,
        covered_from: Option<i64>,
        report: &mut PortalReport,
    ) -> Result<HashSet<String>> {
        let missing: Vec<(String, i64)> = self
            .dedup
            .pending_ids()
            .filter(|(id, start)| {
                !self.seen_pending.contains(*id) && covered_from.is_none_or(|low| **start >= low)
            })
            .map(|(id, start)| (id.clone(), *start))
            .collect();
        let mut asked = HashSet::new();
        for (id, _) in missing {
            asked.insert(id.clone());
            match self.ctx.source.get_session(self.portal, &id).await {
                Ok(Got::Session(mut s)) => {
                    debug!(portal_id = %self.portal, session_id = %id, "pending session resolved by GetSession");
                    if !self.ctx.with_client_ips {
                        s.client_ips = None; // opt-in only, wherever they came from
                    }
                    if self.dedup.is_quarantined(&id) {
                        report.quarantine_released += 1;
                    }
                    self.seen_pending.insert(id);
                    self.dedup.offer(s, false);
                }
                Ok(Got::Odd(o)) => {
                    // Found, but unusable: it stays pending, and is quarantined too.
                    self.seen_pending.insert(id);
                    self.take_odd(o, false, report);
                }
                Ok(Got::NotFound) => {
                    let now = now_ms();
                    let (before, since) = self.missed_before.get(&id).copied().unwrap_or((0, now));
                    let misses = before + 1;
                    if misses >= GIVE_UP_AFTER_MISSES && now - since >= GIVE_UP_AFTER_MS {
                        warn!(portal_id = %self.portal, session_id = %id, misses, since = %crate::clock::rfc3339(since), "pending session not found by the service on several passes over a day; given up and counted as lost");
                        self.dedup.drop_pending(&id);
                        self.lost_now += 1;
                        report.pending_lost += 1;
                    } else {
                        warn!(portal_id = %self.portal, session_id = %id, misses, "pending session not found by the service; kept pending and asked for again next time");
                        self.missed_now.push(id);
                        report.pending_missing += 1;
                    }
                }
                Err(FetchError::Stopped) => return Err(Interrupted.into()),
                Err(e) => {
                    return Err(anyhow!(e).context(format!(
                        "portal {}: GetSession for pending session {id}",
                        self.portal
                    )))
                }
            }
        }
        Ok(asked)
    }

    /// Quarantined sessions this pass did not get (usably or not), and not asked for as
    /// pending: ask for each one. One sent usably is written (or kept pending) through the
    /// next flush; one still unusable stays quarantined; one the service does not find is kept
    /// and asked for again, and given up (counted as lost) under the rule for pending sessions.
    async fn retry_quarantined(
        &mut self,
        asked: &HashSet<String>,
        report: &mut PortalReport,
    ) -> Result<()> {
        let mut todo: Vec<String> = self
            .dedup
            .quarantined_ids()
            .filter(|id| !self.seen_odd.contains(*id) && !asked.contains(*id))
            .cloned()
            .collect();
        todo.sort();
        for id in todo {
            match self.ctx.source.get_session(self.portal, &id).await {
                Ok(Got::Session(mut s)) => {
                    info!(portal_id = %self.portal, session_id = %id, "a quarantined session was sent usably by GetSession; released");
                    if !self.ctx.with_client_ips {
                        s.client_ips = None; // opt-in only, wherever they came from
                    }
                    report.quarantine_released += 1;
                    self.dedup.offer(s, false);
                }
                Ok(Got::Odd(o)) => self.take_odd(o, false, report),
                Ok(Got::NotFound) => {
                    let now = now_ms();
                    let (before, since) =
                        self.odd_missed_before.get(&id).copied().unwrap_or((0, now));
                    let misses = before + 1;
                    if misses >= GIVE_UP_AFTER_MISSES && now - since >= GIVE_UP_AFTER_MS {
                        warn!(portal_id = %self.portal, session_id = %id, misses, since = %crate::clock::rfc3339(since), "quarantined session not found by the service on several passes over a day; given up and counted as lost");
                        self.dedup.drop_quarantined(&id);
                        self.odd_lost_now += 1;
                        report.quarantine_lost += 1;
                    } else {
                        warn!(portal_id = %self.portal, session_id = %id, misses, "quarantined session not found by the service; kept and asked for again next time");
                        self.odd_missed_now.push(id);
                    }
                }
                Err(FetchError::Stopped) => return Err(Interrupted.into()),
                Err(e) => {
                    return Err(anyhow!(e).context(format!(
                        "portal {}: GetSession for quarantined session {id}",
                        self.portal
                    )))
                }
            }
        }
        Ok(())
    }

    /// On a stop: save the buffered pages if that is quick. With `--with-client-ips` it would
    /// take a GetSession call per row, so those pages are left for the resume to fetch again.
    async fn flush_on_the_way_out(&mut self, report: &mut PortalReport) -> Result<()> {
        if self.ctx.with_client_ips && !self.dedup.batch().rows.is_empty() {
            info!(portal_id = %self.portal, rows = self.dedup.batch().rows.len(), "stopping without the unflushed pages; the next run fetches them again");
            return Ok(());
        }
        self.flush(false, report).await
    }

    /// Encode, stage, commit, publish (see [`super::flush`]).
    async fn flush(&mut self, complete: bool, report: &mut PortalReport) -> Result<()> {
        let mut batch = self.dedup.take_batch();
        let portal = self.portal;
        if self.ctx.with_client_ips {
            let odd = fetch_client_ips(&self.ctx.source, portal, &mut batch.rows).await?;
            for o in odd {
                failpoint::hit("quarantined");
                warn_quarantined(portal, &o.session_id, &o.reason, report);
                self.dedup.quarantine_taken(&mut batch, o);
            }
        }
        let seq = if batch.rows.is_empty() {
            self.seq
        } else {
            self.seq + 1
        };
        let rows_min = batch.rows.iter().map(|s| s.start_ms).min();
        if let Some(m) = rows_min {
            self.pass.low_ms = Some(self.pass.low_ms.map_or(m, |l| l.min(m)));
        }
        let (encoded, archived) = encode_days(batch.rows, now_ms()).await?;
        let target = Target {
            sink: &self.ctx.sink,
            state: &self.ctx.state,
            portal,
            points: &POINTS,
        };
        let files = target.stage(seq, encoded).await?;
        let covered_to = match (self.pass.kind, complete) {
            (_, true) => self.ps.high_watermark_ms.max(self.pass.high_ms),
            (PassKind::Incremental, false) => self.ps.high_watermark_ms,
            // A backfill in progress has covered nothing for good: a listing shifted by new
            // sessions, or restarted from the top, repeats what it already wrote, and only
            // the ids tell those repeats apart. Its ids are kept until it completes.
            (PassKind::Backfill, false) => None,
        };
        let prune = prune_cutoff(covered_to, self.dedup.oldest_pending());
        let commit = FlushCommit {
            seq,
            archived,
            pending_upsert: batch.pending_upsert.into_iter().collect(),
            pending_remove: batch.pending_remove.into_iter().collect(),
            files: files.clone(),
            pass: Some(self.pass.clone()),
            complete,
            prune_before_ms: prune,
            pending_missed: std::mem::take(&mut self.missed_now),
            pending_lost: std::mem::take(&mut self.lost_now),
            gap: self.gap.take(),
            quarantine_upsert: batch.quarantine_upsert.into_values().collect(),
            quarantine_remove: batch.quarantine_remove.into_iter().collect(),
            quarantine_missed: std::mem::take(&mut self.odd_missed_now),
            quarantine_lost: std::mem::take(&mut self.odd_lost_now),
        };
        let id = portal.to_string();
        target
            .commit(seq, move |st| st.commit_flush(&id, &commit))
            .await?;
        self.seq = seq;
        self.dedup.committed(rows_min, prune);
        if complete {
            self.ps.high_watermark_ms = covered_to;
        }
        target.publish(seq, &files).await?;
        // The batch's rows and the encoder's buffers are freed: give the pages back, or the
        // next batch may grow beside them (see `mem`).
        crate::mem::release_free_memory();
        let rows: i64 = files.iter().map(|f| f.rows).sum();
        let bytes: i64 = files.iter().map(|f| f.bytes).sum();
        report.rows += rows as u64;
        report.files += files.len() as u64;
        report.bytes += bytes as u64;
        info!(
            portal_id = %portal,
            seq,
            rows,
            files = files.len(),
            bytes,
            pages = self.pass.pages,
            pending = self.dedup.pending_len(),
            complete,
            "flushed"
        );
        Ok(())
    }
}

/// The one warning of a run naming a quarantined session: portal and session id and why,
/// never the username (a quarantined session holds none).
fn warn_quarantined(portal: &PortalId, session_id: &str, reason: &str, report: &mut PortalReport) {
    if report.quarantine_warned.insert(session_id.to_string()) {
        warn!(portal_id = %portal, session_id = %session_id, reason = %reason, "session quarantined: it cannot be archived faithfully as the service sent it; the pass goes on, and later passes try it again");
    }
}
