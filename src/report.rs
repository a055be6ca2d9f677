//! Operator output: what a run did, as one log line, as JSON (`--summary-json`), and as a
//! Prometheus text file for node_exporter's textfile collector (`--metrics-file`).
//! Both files are replaced atomically (see [`crate::fsio::write_atomic`]), so a collector
//! never reads half a file.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;
use tracing::info;

use crate::config::Config;
use crate::error::{one_line, Interrupted};
use crate::fsio::write_atomic;
use crate::state::LastSuccesses;

use crate::model::{Gap, PassKind};

/// What one portal's work came to.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PortalReport {
    pub portal_id: String,
    /// The AWS account of the portal (from its ARN), when known.
    pub account_id: Option<String>,
    pub pass: Option<PassKind>,
    pub resumed: bool,
    pub completed: bool,
    pub pages: u64,
    pub listed: u64,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    pub pending: u64,
    pub token_restarts: u32,
    pub recovered_files: u64,
    /// Committed files recovery found lost (their staged copy gone before publishing).
    pub lost_files: Vec<crate::run::recover::LostFile>,
    /// A range this run found uncovered: sessions in it may have aged out unarchived.
    pub gap: Option<Gap>,
    /// Pending sessions the service did not find this run (kept, asked for again).
    pub pending_missing: u64,
    /// Pending sessions given up this run.
    pub pending_lost: u64,
    /// Sessions in quarantine after this run: sent in a form that cannot be archived
    /// faithfully, kept and tried again by every later pass.
    pub quarantined: u64,
    /// Quarantined sessions this run released: written, now pending, or found archived.
    pub quarantine_released: u64,
    /// Quarantined sessions given up this run (the service stopped returning them).
    pub quarantine_lost: u64,
    /// Quarantined sessions already named in a warning this run (one warning each).
    #[serde(skip)]
    pub quarantine_warned: std::collections::HashSet<String>,
}

/// What a run did.
#[derive(Debug, Default, Serialize)]
pub struct RunSummary {
    pub command: String,
    /// `ok`, `failed` or `interrupted`.
    pub outcome: String,
    /// Why the run failed or stopped, on one line (the one the process ends with); null when
    /// it succeeded.
    pub error: Option<String>,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    pub duration_ms: u64,
    pub totals: Totals,
    pub portals: Vec<PortalReport>,
    pub failed: Vec<Failure>,
    /// Portals the state or the archive knows that discovery no longer listed (deleted, or
    /// outside the regions, accounts or role searched): not archived, kept in the archive.
    /// Always empty with `--portal-id`.
    pub unlisted_portals: Vec<String>,
    /// Each account tried, with `--accounts` or `--organization` (empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<AccountReport>,
    /// With `--glue-table`: what became of the table's portal list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub glue: Option<GlueReport>,
}

/// `--glue-table`: the table brought up to date, or why not.
#[derive(Debug, Default, Serialize)]
pub struct GlueReport {
    /// `DATABASE.TABLE`.
    pub table: String,
    /// `portal_list` (the table projects its partitions: its portal list is kept) or
    /// `partitions` (its partitions are registered in Glue); null if the table could not be
    /// read.
    pub mode: Option<String>,
    /// Portals added to `projection.portal_id.values` (0: the list was already current).
    pub portals_added: u64,
    /// Partitions this run registered in Glue (those Glue already held not counted).
    pub partitions_added: u64,
    /// Partitions published and not registered yet: the next run with `--glue-table`
    /// registers them.
    pub partitions_pending: u64,
    /// This run turned the table's partition projection off (`--glue-partitions`), after
    /// registering every partition of the archive.
    pub projection_disabled: bool,
    /// Why the table could not be brought up to date (the run then fails, after archiving).
    pub error: Option<String>,
}

/// One account of a multi-account run.
#[derive(Debug, Default, Serialize)]
pub struct AccountReport {
    pub account_id: String,
    pub role_arn: Option<String>,
    /// `ok`, or `failed` (its role could not be assumed, its discovery failed, or one of its
    /// portals failed).
    pub outcome: String,
    /// Why the account could not be reached or discovered.
    pub error: Option<String>,
    /// Portals of the account this run worked on.
    pub portals: u64,
    pub failed_portals: u64,
}

/// Sums over the portals.
#[derive(Debug, Default, Serialize)]
pub struct Totals {
    pub portals: u64,
    pub failed: u64,
    /// Accounts that could not be reached or discovered.
    pub accounts_failed: u64,
    /// Known portals the service no longer lists (`unlisted_portals`).
    pub unlisted: u64,
    pub pages: u64,
    pub sessions_seen: u64,
    pub rows_written: u64,
    pub files: u64,
    pub bytes: u64,
    pub pending: u64,
    /// Sessions in quarantine after the run, over the portals.
    pub quarantined: u64,
    pub api_calls: u64,
    pub retries: u64,
    pub throttled: u64,
}

#[derive(Debug, Serialize)]
pub struct Failure {
    pub portal_id: String,
    pub error: String,
}

/// The outcome of a run, and its one-line reason unless it succeeded, as the state's history
/// and the summary record them.
pub fn outcome_of(result: &Result<()>) -> (&'static str, Option<String>) {
    match result {
        Ok(()) => ("ok", None),
        Err(e) if e.is::<Interrupted>() => ("interrupted", Some(e.to_string())),
        Err(e) => ("failed", Some(one_line(&format!("{e:#}")))),
    }
}

/// Where a run's reports go (`--summary-json`, `--metrics-file`), written at its end whatever
/// its outcome.
#[derive(Debug, Default)]
pub struct Reports {
    pub summary_json: Option<PathBuf>,
    pub metrics_file: Option<PathBuf>,
}

impl Reports {
    pub fn of(cfg: &Config) -> Reports {
        Reports {
            summary_json: cfg.summary_json.clone(),
            metrics_file: cfg.metrics_file.clone(),
        }
    }

    /// End a run: its outcome, times and totals into `summary`, then both files. `successes` is `None` when the state was never read (the run failed
    /// before, or on, taking it): the last successes are then those of the previous metrics
    /// file, so a failed run does not erase them. Portal lines are also kept from the
    /// previous file when the run reached no portal.
    pub fn close(
        &self,
        summary: &mut RunSummary,
        started: Instant,
        result: &Result<()>,
        successes: Option<LastSuccesses>,
    ) -> Result<()> {
        let (outcome, error) = outcome_of(result);
        summary.outcome = outcome.into();
        summary.error = error;
        summary.duration_ms = started.elapsed().as_millis() as u64;
        summary.ended_at_ms = crate::clock::now_ms();
        summary.sum_portals();
        let json = match &self.summary_json {
            Some(path) => summary.write_json(path),
            None => Ok(()),
        };
        let metrics = match &self.metrics_file {
            Some(path) => {
                let previous = std::fs::read_to_string(path).unwrap_or_default();
                let carried = Carried::from_text(&previous);
                write_metrics(path, &summary.metrics_text(successes.as_ref(), &carried))
            }
            None => Ok(()),
        };
        json.and(metrics)
    }
}

/// Samples of an earlier metrics file kept by a run that could not read the state.
#[derive(Debug, Default)]
pub struct Carried {
    last_success: Vec<(String, f64)>,
    portal_last_success: Vec<(String, f64)>,
}

impl Carried {
    fn from_text(text: &str) -> Carried {
        let samples = |name: &str| -> Vec<(String, f64)> {
            text.lines()
                .filter_map(|l| {
                    let rest = l.strip_prefix(name)?;
                    // Labelled samples only: `{...} value`.
                    let (labels, value) = rest.rsplit_once(' ')?;
                    (labels.starts_with('{') && labels.ends_with('}'))
                        .then_some((labels.to_string(), value.parse().ok()?))
                })
                .collect()
        };
        Carried {
            last_success: samples("archiver_last_success_timestamp_seconds"),
            portal_last_success: samples("archiver_portal_last_success_timestamp_seconds"),
        }
    }
}

impl RunSummary {
    /// A run's summary as it starts.
    pub fn started(command: &str) -> RunSummary {
        RunSummary {
            command: command.to_string(),
            outcome: "running".into(),
            started_at_ms: crate::clock::now_ms(),
            ..Default::default()
        }
    }

    /// Fill `totals` from the portal reports (API counters are set by the caller).
    pub fn sum_portals(&mut self) {
        let t = &mut self.totals;
        t.portals = self.portals.len() as u64;
        t.failed = self.failed.len() as u64;
        t.accounts_failed = self.accounts.iter().filter(|a| a.error.is_some()).count() as u64;
        t.unlisted = self.unlisted_portals.len() as u64;
        for r in &self.portals {
            t.pages += r.pages;
            t.sessions_seen += r.listed;
            t.rows_written += r.rows;
            t.files += r.files;
            t.bytes += r.bytes;
            t.pending += r.pending;
            t.quarantined += r.quarantined;
        }
    }

    /// The summary log line.
    pub fn log(&self) {
        let t = &self.totals;
        info!(
            command = %self.command,
            outcome = %self.outcome,
            portals = t.portals,
            failed = t.failed,
            unlisted = t.unlisted,
            pages = t.pages,
            sessions_seen = t.sessions_seen,
            rows_written = t.rows_written,
            files = t.files,
            bytes = t.bytes,
            pending = t.pending,
            quarantined = t.quarantined,
            api_calls = t.api_calls,
            retries = t.retries,
            duration_ms = self.duration_ms,
            "run finished"
        );
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        write_atomic(path, &bytes, 0o644)
            .with_context(|| format!("writing --summary-json {}", path.display()))
    }

    /// Prometheus text exposition of this run, with the last successes from the state.
    pub fn metrics_text(&self, successes: Option<&LastSuccesses>, carried: &Carried) -> String {
        let secs = |ms: i64| ms as f64 / 1000.0;
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, samples: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP archiver_{name} {help}");
            let _ = writeln!(out, "# TYPE archiver_{name} gauge");
            for (labels, v) in samples {
                let _ = writeln!(out, "archiver_{name}{labels} {v}");
            }
        };
        let t = &self.totals;
        let run = format!("{{command=\"{}\"}}", self.command);
        gauge(
            "last_run_timestamp_seconds",
            "When the last run ended.",
            vec![(run.clone(), secs(self.ended_at_ms))],
        );
        gauge(
            "last_run_success",
            "1 if the last run succeeded, else 0.",
            vec![(run.clone(), f64::from(u8::from(self.outcome == "ok")))],
        );
        gauge(
            "last_run_duration_seconds",
            "How long the last run took.",
            vec![(run.clone(), self.duration_ms as f64 / 1000.0)],
        );
        gauge(
            "last_run_rows_written",
            "Sessions written by the last run.",
            vec![(run.clone(), t.rows_written as f64)],
        );
        gauge(
            "last_run_api_calls",
            "WorkSpaces Web API calls made by the last run.",
            vec![(run.clone(), t.api_calls as f64)],
        );
        gauge(
            "last_run_retries",
            "Calls retried by the last run (throttling, 5xx, timeouts).",
            vec![(run, t.retries as f64)],
        );
        gauge(
            "last_success_timestamp_seconds",
            "When each command last succeeded (from the state's run history).",
            match successes {
                Some(s) => s
                    .per_command
                    .iter()
                    .map(|(c, ms)| (format!("{{command=\"{c}\"}}"), secs(*ms)))
                    .collect(),
                None => carried.last_success.clone(),
            },
        );
        if !self.accounts.is_empty() {
            gauge(
                "account_failed",
                "1 if the account could not be reached (role not assumed, discovery failed) or one of its portals failed in the last run, else 0.",
                self.accounts
                    .iter()
                    .map(|a| {
                        (
                            format!("{{account_id=\"{}\"}}", a.account_id),
                            f64::from(u8::from(a.outcome != "ok")),
                        )
                    })
                    .collect(),
            );
        }
        let accounts: HashMap<&str, &str> = self
            .portals
            .iter()
            .filter_map(|r| Some((r.portal_id.as_str(), r.account_id.as_deref()?)))
            .collect();
        let label = |id: &str| match accounts.get(id) {
            Some(a) => format!("{{account_id=\"{a}\",portal_id=\"{id}\"}}"),
            None => format!("{{portal_id=\"{id}\"}}"),
        };
        let failed: Vec<&str> = self.failed.iter().map(|f| f.portal_id.as_str()).collect();
        gauge(
            "portal_failed",
            "1 if the portal failed in the last run, else 0.",
            self.portals
                .iter()
                .map(|r| {
                    (
                        label(&r.portal_id),
                        f64::from(u8::from(failed.contains(&r.portal_id.as_str()))),
                    )
                })
                .collect(),
        );
        gauge(
            "portal_unlisted",
            "1 if the state or the archive knows the portal and the last run's discovery did not list it (deleted, or outside the regions, accounts or role searched), else 0.",
            self.portals
                .iter()
                .map(|r| (label(&r.portal_id), 0.0))
                .chain(self.unlisted_portals.iter().map(|id| (label(id), 1.0)))
                .collect(),
        );
        gauge(
            "portal_rows_written",
            "Sessions written for the portal by the last run.",
            self.portals
                .iter()
                .map(|r| (label(&r.portal_id), r.rows as f64))
                .collect(),
        );
        gauge(
            "portal_pending_sessions",
            "Sessions still active, kept pending, after the last run.",
            self.portals
                .iter()
                .filter(|r| r.completed)
                .map(|r| (label(&r.portal_id), r.pending as f64))
                .collect(),
        );
        gauge(
            "portal_gap_seconds",
            "Length of a range the last run found uncovered (the service no longer lists it): sessions in it may have aged out unarchived. 0: none.",
            self.portals
                .iter()
                .filter(|r| r.completed)
                .map(|r| (label(&r.portal_id), r.gap.map_or(0.0, |g| g.seconds())))
                .collect(),
        );
        gauge(
            "portal_lost_files",
            "Committed files the last run found lost before they were published (their sessions are no longer recorded as archived: run `verify --repair`).",
            self.portals
                .iter()
                .map(|r| (label(&r.portal_id), r.lost_files.len() as f64))
                .collect(),
        );
        gauge(
            "portal_pending_missing_sessions",
            "Pending sessions the service did not find in the last run (kept, asked for again).",
            self.portals
                .iter()
                .filter(|r| r.completed)
                .map(|r| (label(&r.portal_id), r.pending_missing as f64))
                .collect(),
        );
        gauge(
            "portal_pending_lost_sessions",
            "Pending sessions given up in the last run after the service stopped returning them.",
            self.portals
                .iter()
                .filter(|r| r.completed)
                .map(|r| (label(&r.portal_id), r.pending_lost as f64))
                .collect(),
        );
        gauge(
            "portal_quarantined_sessions",
            "Sessions in quarantine after the last run: sent in a form that cannot be archived faithfully (an unknown status, no start time, another portal's ARN), kept and tried again by every run.",
            self.portals
                .iter()
                .filter(|r| r.completed)
                .map(|r| (label(&r.portal_id), r.quarantined as f64))
                .collect(),
        );
        gauge(
            "portal_quarantine_lost_sessions",
            "Quarantined sessions given up in the last run after the service stopped returning them.",
            self.portals
                .iter()
                .filter(|r| r.completed)
                .map(|r| (label(&r.portal_id), r.quarantine_lost as f64))
                .collect(),
        );
        gauge(
            "portal_last_success_timestamp_seconds",
            "When a run or backfill last archived the portal without error (start of that run).",
            match successes {
                Some(s) if !self.portals.is_empty() => self
                    .portals
                    .iter()
                    .filter_map(|r| {
                        s.per_portal
                            .get(&r.portal_id)
                            .map(|ms| (label(&r.portal_id), secs(*ms)))
                    })
                    .collect(),
                _ => carried.portal_last_success.clone(),
            },
        );
        out
    }
}

/// Write the metrics text file (replaced atomically).
pub fn write_metrics(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, text.as_bytes(), 0o644)
        .with_context(|| format!("writing --metrics-file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_valid_prometheus_text_with_one_sample_per_portal() {
        let mut s = RunSummary {
            command: "run".into(),
            outcome: "failed".into(),
            ended_at_ms: 1_700_000_000_500,
            duration_ms: 2500,
            portals: vec![
                PortalReport {
                    portal_id: "a".into(),
                    rows: 7,
                    pending: 2,
                    quarantined: 1,
                    completed: true,
                    ..Default::default()
                },
                PortalReport {
                    portal_id: "b".into(),
                    ..Default::default()
                },
            ],
            failed: vec![Failure {
                portal_id: "b".into(),
                error: "x".into(),
            }],
            unlisted_portals: vec!["c".into()],
            ..Default::default()
        };
        s.sum_portals();
        let successes = LastSuccesses {
            per_command: [
                ("run".to_string(), 1_650_000_000_000),
                ("compact".to_string(), 1_660_000_000_000),
            ]
            .into(),
            per_portal: HashMap::from([("a".to_string(), 1_600_000_000_000)]),
        };
        let text = s.metrics_text(Some(&successes), &Carried::default());
        for want in [
            "archiver_last_run_success{command=\"run\"} 0",
            "archiver_last_run_timestamp_seconds{command=\"run\"} 1700000000.5",
            "archiver_last_run_rows_written{command=\"run\"} 7",
            "archiver_last_success_timestamp_seconds{command=\"run\"} 1650000000",
            "archiver_last_success_timestamp_seconds{command=\"compact\"} 1660000000",
            "archiver_portal_failed{portal_id=\"a\"} 0",
            "archiver_portal_failed{portal_id=\"b\"} 1",
            "archiver_portal_unlisted{portal_id=\"a\"} 0",
            "archiver_portal_unlisted{portal_id=\"c\"} 1",
            "archiver_portal_pending_sessions{portal_id=\"a\"} 2",
            "archiver_portal_quarantined_sessions{portal_id=\"a\"} 1",
            "archiver_portal_last_success_timestamp_seconds{portal_id=\"a\"} 1600000000",
        ] {
            assert!(
                text.lines().any(|l| l == want),
                "missing {want:?} in\n{text}"
            );
        }
        // Every sample line belongs to a declared metric; every metric is declared once.
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(declared.insert(rest.split(' ').next().unwrap().to_string()));
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(declared.contains(name), "{line}");
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
        assert!(!text.contains("portal_pending_sessions{portal_id=\"b\"}"));
        assert_eq!(s.totals.unlisted, 1);
        assert!(!text.contains("portal_failed{portal_id=\"c\"}"));
    }
}
