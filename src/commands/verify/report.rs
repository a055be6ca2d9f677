//! `verify`'s report: `--json` and the text table.

use serde::Serialize;

use crate::verify::{Counts, FileCheck};

/// `verify --json`.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    /// Every portal matches.
    pub ok: bool,
    pub portals: Vec<PortalVerify>,
    /// The archive's own proof: digest chains, manifests and files (see `docs/audit.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integrity: Option<super::integrity::Integrity>,
    /// Under Object Lock: archived objects (keys under the output) a delete marker hides from
    /// readers. `verify --repair` removes the markers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delete_markers: Vec<String>,
}

/// One portal's verification.
#[derive(Debug, Serialize)]
pub struct PortalVerify {
    pub portal_id: String,
    pub ok: bool,
    /// The service no longer lists the portal (deleted, or outside the regions, accounts or
    /// role searched): its files were checked against its manifests, and for duplicated rows,
    /// without a listing (`listed` and `active` are 0, every row is `expired`).
    pub unlisted: bool,
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
    pub(super) oldest_listed_ms: Option<i64>,
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
    /// Duplicated sessions in locked files (Object Lock), recorded as kept.
    pub duplicates_kept: u64,
}

/// The text report.
pub(super) fn print_table(r: &VerifyReport) {
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
        let (listed, active) = match p.unlisted {
            true => ("-".to_string(), "-".to_string()),
            false => (c.listed.to_string(), c.active.to_string()),
        };
        println!(
            "{:<36}  {:>8}  {:>6}  {:>8}  {:>7}  {:>10}  {:>9}  {:>7}  {:>5}  {}",
            p.portal_id,
            listed,
            active,
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
        if p.unlisted {
            println!(
                "{}: no longer listed by the service: the archive is its only record ({} rows); {}",
                p.portal_id,
                p.counts.archived,
                match p.manifest.checked {
                    true => "its files were checked against its manifests",
                    false => "without manifests, nothing could be checked",
                }
            );
        }
        let m = &p.manifest;
        for (what, paths) in [
            ("altered", &m.altered),
            ("deleted", &m.deleted),
            ("unlisted", &m.unlisted),
            ("unreadable manifest", &m.errors),
            ("compaction not proved", &m.unproved),
        ] {
            for path in paths.iter().take(20) {
                println!("{}: {what}: {path}", p.portal_id);
            }
            if paths.len() > 20 {
                println!("{}: {what}: {} more", p.portal_id, paths.len() - 20);
            }
        }
        if p.counts.kept_duplicates > 0 {
            println!(
                "{}: {} sessions have more than one row in locked files: kept, as recorded by verify --repair",
                p.portal_id, p.counts.kept_duplicates
            );
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
    let unlisted = r.portals.iter().filter(|p| p.unlisted).count();
    let unlisted = match unlisted {
        0 => String::new(),
        u => format!("; {u} no longer listed by the service, checked against their manifests"),
    };
    if r.ok {
        println!(
            "verified {n} portals: the archive matches the service ({expired} rows expired from the service, kept){unlisted}"
        );
    } else {
        let bad = r.portals.iter().filter(|p| !p.ok).count();
        println!("verified {n} portals: differences in {bad}{unlisted}");
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
        ("compactions not proved", m.unproved.len()),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(w, n)| format!("{n} {w}"))
    .collect();
    format!("{}: {}", p.files, parts.join(", "))
}
