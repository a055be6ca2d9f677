//! Verification's pure core: what `archiver verify` concludes from one UTC day of listed
//! sessions and the rows that day's partition holds, how a newest-first listing is cut into
//! days, which files the manifests say are live, and which row of a duplicated session a
//! repair keeps. No I/O: the command ([`crate::commands::verify`]) reads and writes.
//!
//! A session's partition is its UTC start date, and a newest-first listing arrives in start
//! order, so the listing and the archive are compared one day at a time: memory holds one day
//! of each, whatever the size of the archive.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::clock::utc_date;
use crate::model::{Session, SessionStatus};

const DAY_MS: i64 = 86_400_000;

/// One archived row, as much of it as verification reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchRow {
    pub session_id: String,
    pub status: String,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
}

/// What a portal's comparison counted. `missing`, `duplicated`, `differing` and `extra` are
/// differences; `active` and `expired` are expected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Distinct sessions listed by the service (Active ones included).
    pub listed: u64,
    /// Listed sessions still Active: not expected in the archive yet.
    pub active: u64,
    /// Rows in the archive's Parquet files.
    pub archived: u64,
    /// Listed Terminated sessions with no row.
    pub missing: u64,
    /// Session ids with more than one row.
    pub duplicated: u64,
    /// Rows whose status, start time or end time differ from the listing.
    pub differing: u64,
    /// Rows of sessions older than the oldest the service still lists (retention).
    pub expired: u64,
    /// Rows of sessions the service does not list, though newer than the oldest it lists.
    pub extra: u64,
    /// Duplicated sessions `verify --repair` could not rewrite (their files are under Object
    /// Lock) and recorded as kept: not a difference.
    pub kept_duplicates: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.listed += o.listed;
        self.active += o.active;
        self.archived += o.archived;
        self.missing += o.missing;
        self.duplicated += o.duplicated;
        self.differing += o.differing;
        self.expired += o.expired;
        self.extra += o.extra;
        self.kept_duplicates += o.kept_duplicates;
    }

    /// Rows or sessions that are not as they should be.
    pub fn differences(&self) -> u64 {
        self.missing + self.duplicated + self.differing + self.extra
    }
}

/// A session's values as the service lists them, for choosing among duplicated rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub status: &'static str,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
}

impl Listed {
    fn of(s: &Session) -> Listed {
        Listed {
            status: s.status.as_str(),
            start_ms: s.start_ms,
            end_ms: s.end_ms,
        }
    }

    /// Does an archived row hold these values?
    pub fn matches(&self, status: &str, start_ms: i64, end_ms: Option<i64>) -> bool {
        self.status == status && self.start_ms == start_ms && self.end_ms == end_ms
    }
}

/// What one day's comparison found, and what a repair needs.
#[derive(Debug, Default)]
pub struct DayResult {
    pub counts: Counts,
    /// The missing sessions, as listed, by start.
    pub missing: Vec<Session>,
    /// Duplicated ids, each with its listed values if the service lists it.
    pub duplicated: Vec<(String, Option<Listed>)>,
}

/// Compare one day: `listed` (deduplicated by id) with the rows of that day's partition.
/// Unlisted rows starting before `expire_before` (the oldest listed start) are expired, others
/// are extra.
pub fn compare_day(
    mut listed: HashMap<String, Session>,
    archived: &[ArchRow],
    expire_before: i64,
) -> DayResult {
    let mut c = Counts {
        listed: listed.len() as u64,
        active: listed
            .values()
            .filter(|s| s.status == SessionStatus::Active)
            .count() as u64,
        archived: archived.len() as u64,
        ..Counts::default()
    };
    let mut rows_of: HashMap<&str, u32> = HashMap::with_capacity(archived.len());
    for r in archived {
        *rows_of.entry(&r.session_id).or_default() += 1;
        match listed.get(&r.session_id) {
            Some(s) if Listed::of(s).matches(&r.status, r.start_ms, r.end_ms) => {}
            Some(_) => c.differing += 1,
            None if r.start_ms < expire_before => c.expired += 1,
            None => c.extra += 1,
        }
    }
    let mut duplicated: Vec<(String, Option<Listed>)> = rows_of
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(id, _)| (id.to_string(), listed.get(*id).map(Listed::of)))
        .collect();
    duplicated.sort_by(|a, b| a.0.cmp(&b.0));
    c.duplicated = duplicated.len() as u64;
    let missing_ids: Vec<String> = listed
        .iter()
        .filter(|(id, s)| {
            s.status == SessionStatus::Terminated && !rows_of.contains_key(id.as_str())
        })
        .map(|(id, _)| id.clone())
        .collect();
    let mut missing: Vec<Session> = missing_ids
        .iter()
        .filter_map(|id| listed.remove(id))
        .collect();
    missing.sort_by(|a, b| (a.start_ms, &a.session_id).cmp(&(b.start_ms, &b.session_id)));
    c.missing = missing.len() as u64;
    DayResult {
        counts: c,
        missing,
        duplicated,
    }
}

/// One UTC day of listed sessions, deduplicated by id.
#[derive(Debug, Default)]
pub struct ListedDay {
    /// `YYYY-MM-DD`, the partition's `start_date`.
    pub date: String,
    pub sessions: HashMap<String, Session>,
}

/// Cuts a newest-first listing into UTC days. A session of a day already handed out is a
/// repeat (offset-based tokens shift when sessions are inserted at the top, and a restarted
/// listing begins again at the newest): it is ignored. A session listed twice within a day
/// counts once, with its latest values.
#[derive(Debug, Default)]
pub struct Walker {
    current: Option<(i64, HashMap<String, Session>)>,
    oldest: Option<i64>,
    /// Sessions of days already handed out, ignored.
    pub repeats: u64,
}

impl Walker {
    /// Offer the next listed session. Returns the previous day, complete, when this session
    /// is the first of an older day.
    pub fn push(&mut self, s: Session) -> Option<ListedDay> {
        let day = s.start_ms.div_euclid(DAY_MS);
        let done = match &mut self.current {
            Some((d, _)) if day > *d => {
                self.repeats += 1;
                return None;
            }
            Some((d, sessions)) if day == *d => {
                self.oldest = Some(self.oldest.map_or(s.start_ms, |o| o.min(s.start_ms)));
                sessions.insert(s.session_id.clone(), s);
                return None;
            }
            _ => self.current.take(),
        };
        self.oldest = Some(self.oldest.map_or(s.start_ms, |o| o.min(s.start_ms)));
        let mut sessions = HashMap::new();
        sessions.insert(s.session_id.clone(), s);
        self.current = Some((day, sessions));
        done.map(as_day)
    }

    /// The oldest start listed so far.
    pub fn oldest(&self) -> Option<i64> {
        self.oldest
    }

    /// The listing ended: its last day, if any.
    pub fn finish(&mut self) -> Option<ListedDay> {
        self.current.take().map(as_day)
    }
}

fn as_day((day, sessions): (i64, HashMap<String, Session>)) -> ListedDay {
    ListedDay {
        date: utc_date(day * DAY_MS),
        sessions,
    }
}

/// One manifest: `_manifest/portal_id=<id>/<state_id>-<seq:010>.json`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Manifest {
    pub version: u32,
    pub portal_id: String,
    pub state_id: String,
    pub seq: i64,
    /// `flush` or `compaction`.
    pub kind: String,
    pub files: Vec<ManifestFile>,
    #[serde(default)]
    pub replaces: Vec<String>,
    /// A compaction's inputs, as it read them (absent before compaction proofs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<ManifestInput>,
    /// A compaction's rows digest of its output (and of its inputs, less `removed_rows`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_sha256: Option<String>,
    /// Rows of the inputs a repair's rewrite removed (duplicated rows), and their digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_rows_sha256: Option<String>,
}

/// An input of a compaction, as its manifest records it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct ManifestInput {
    pub path: String,
    pub sha256: String,
    pub rows: u64,
}

/// A file a manifest records.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct ManifestFile {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// Parse one manifest of `portal_id`.
pub fn parse_manifest(bytes: &[u8], portal_id: &str) -> Result<Manifest, String> {
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))?;
    if m.version != 1 {
        return Err(format!(
            "manifest version {} (this archiver reads 1)",
            m.version
        ));
    }
    if m.portal_id != portal_id {
        return Err(format!("manifest of portal {}", m.portal_id));
    }
    if !matches!(m.kind.as_str(), "flush" | "compaction") {
        return Err(format!("unknown manifest kind {:?}", m.kind));
    }
    Ok(m)
}

/// The live files of a portal: every manifest's files minus every path any manifest replaces.
/// A path recorded twice keeps the record of the higher `seq`.
pub fn live_files(manifests: &[Manifest]) -> BTreeMap<String, ManifestFile> {
    let mut order: Vec<&Manifest> = manifests.iter().collect();
    order.sort_by(|a, b| (a.seq, &a.state_id).cmp(&(b.seq, &b.state_id)));
    let replaced: HashSet<&str> = manifests
        .iter()
        .flat_map(|m| m.replaces.iter().map(String::as_str))
        .collect();
    let mut live = BTreeMap::new();
    for m in order {
        for f in &m.files {
            if !replaced.contains(f.path.as_str()) {
                live.insert(f.path.clone(), f.clone());
            }
        }
    }
    live
}

/// Why an input file of a rewrite (compaction, or a repair's) cannot be trusted, if it cannot:
/// `bytes`, `sha256` and `rows` as read, against the live files of its portal's manifests.
pub fn input_problem(
    live: &BTreeMap<String, ManifestFile>,
    path: &str,
    bytes: u64,
    sha256: &str,
    rows: u64,
) -> Option<String> {
    let f = match live.get(path) {
        None => return Some(format!("{path}: in no manifest of its portal")),
        Some(f) => f,
    };
    if f.bytes != bytes || !f.sha256.eq_ignore_ascii_case(sha256) {
        Some(format!(
            "{path}: altered since its manifest recorded it ({bytes} bytes with SHA-256 {sha256}; the manifest records {} bytes with SHA-256 {})",
            f.bytes, f.sha256
        ))
    } else if f.rows != rows {
        Some(format!(
            "{path}: altered since its manifest recorded it ({rows} rows; the manifest records {})",
            f.rows
        ))
    } else {
        None
    }
}

/// The live files under `prefix` (a partition's folder) that are not among `keys`.
pub fn missing_from(
    live: &BTreeMap<String, ManifestFile>,
    prefix: &str,
    keys: &[String],
) -> Vec<String> {
    let present: HashSet<&str> = keys.iter().map(String::as_str).collect();
    live.range(prefix.to_string()..)
        .take_while(|(p, _)| p.starts_with(prefix))
        .filter(|(p, _)| !present.contains(p.as_str()))
        .map(|(p, _)| p.clone())
        .collect()
}

/// The check of a portal's compaction proofs: each compaction manifest with a `rows_sha256`
/// must agree with the manifests of its inputs, and its output, while live, must hold rows of
/// that digest.
#[derive(Debug, Default)]
pub struct ProofCheck {
    /// Live output path → (its compaction manifest's key, the rows digest it must have).
    outputs: HashMap<String, (String, String)>,
    /// What the manifests alone show: `manifest: file: reason`.
    pub problems: Vec<String>,
    pub proved: u64,
}

impl ProofCheck {
    /// Check the manifests (`key`, manifest) among themselves.
    pub fn new(manifests: &[(String, Manifest)]) -> ProofCheck {
        let mut check = ProofCheck::default();
        let plain: Vec<Manifest> = manifests.iter().map(|(_, m)| m.clone()).collect();
        let live = live_files(&plain);
        // Every record of every file: path → (manifest key, record).
        let mut records: HashMap<&str, Vec<(&str, &ManifestFile)>> = HashMap::new();
        for (key, m) in manifests {
            for f in &m.files {
                records.entry(&f.path).or_default().push((key, f));
            }
        }
        for (key, m) in manifests {
            let Some(digest) = &m.rows_sha256 else {
                continue;
            };
            check.proved += 1;
            let mut bad = |what: String| check.problems.push(format!("{key}: {what}"));
            if crate::rows_digest::RowsDigest::parse(digest).is_none() {
                bad(format!("rows_sha256 {digest:?} is not 64 hex digits"));
            }
            let inputs: BTreeSet<&str> = m.inputs.iter().map(|i| i.path.as_str()).collect();
            let replaces: BTreeSet<&str> = m.replaces.iter().map(String::as_str).collect();
            if inputs != replaces {
                bad("its inputs are not the files it replaces".into());
            }
            for i in &m.inputs {
                let own: Vec<&(&str, &ManifestFile)> = records
                    .get(i.path.as_str())
                    .map(|r| r.iter().filter(|(k, _)| *k != key.as_str()).collect())
                    .unwrap_or_default();
                // An input written before manifests has none to agree with.
                if own.is_empty() {
                    continue;
                }
                let agrees = own
                    .iter()
                    .any(|(_, f)| f.sha256.eq_ignore_ascii_case(&i.sha256) && f.rows == i.rows);
                if !agrees {
                    bad(format!(
                        "{}: input differs from its own manifest {} (SHA-256 or rows)",
                        i.path, own[0].0
                    ));
                }
            }
            let rows_in: u64 = m.inputs.iter().map(|i| i.rows).sum();
            let rows_out: u64 = m.files.iter().map(|f| f.rows).sum();
            let removed = m.removed_rows.unwrap_or(0);
            if rows_in != rows_out + removed {
                bad(format!(
                    "its inputs hold {rows_in} rows, its output {rows_out} (and {removed} removed)"
                ));
            }
            match m.files.as_slice() {
                [out] if live.contains_key(&out.path) => {
                    check
                        .outputs
                        .insert(out.path.clone(), (key.clone(), digest.clone()));
                }
                [_] => {} // replaced since: its bytes are vouched for by the next compaction
                _ => bad(format!(
                    "{} output files (a compaction writes one)",
                    m.files.len()
                )),
            }
        }
        check
    }

    /// Is `path` the live output of a proved compaction (must its rows digest be computed)?
    pub fn wants(&self, path: &str) -> bool {
        self.outputs.contains_key(path)
    }

    /// The rows digest of `path`, computed from its bytes.
    pub fn output(&mut self, path: &str, rows_sha256: &str) {
        if let Some((key, want)) = self.outputs.get(path) {
            if !want.eq_ignore_ascii_case(rows_sha256) {
                self.problems.push(format!(
                    "{key}: {path}: its rows digest is {rows_sha256}, the compaction recorded {want}"
                ));
            }
        }
    }
}

/// The file check of one portal against its manifests.
#[derive(Debug, Default, Serialize)]
pub struct FileCheck {
    /// False when the portal has no manifest (an archive written before manifests).
    pub checked: bool,
    pub manifests: u64,
    pub live_files: u64,
    /// Live files whose sha256 or row count differ from their manifest.
    pub altered: Vec<String>,
    /// Live files that are gone.
    pub deleted: Vec<String>,
    /// `.parquet` files no manifest records as live.
    pub unlisted: Vec<String>,
    /// Manifests that cannot be read: `path: reason`.
    pub errors: Vec<String>,
    /// Compaction manifests with a rows digest, checked row for row.
    pub compactions_proved: u64,
    /// Compactions whose proof fails: `manifest: file: reason`.
    pub unproved: Vec<String>,
    #[serde(skip)]
    live: BTreeMap<String, ManifestFile>,
    #[serde(skip)]
    seen: HashSet<String>,
    #[serde(skip)]
    proofs: ProofCheck,
}

impl FileCheck {
    /// A check against these manifests (`errors`: manifests that could not be read).
    pub fn new(manifests: &[Manifest], errors: Vec<String>) -> FileCheck {
        let live = live_files(manifests);
        FileCheck {
            checked: !manifests.is_empty() || !errors.is_empty(),
            manifests: (manifests.len() + errors.len()) as u64,
            live_files: live.len() as u64,
            errors,
            live,
            ..FileCheck::default()
        }
    }

    /// One `.parquet` file of the portal, read: its sha256 (lowercase hex) and row count.
    pub fn file(&mut self, path: &str, sha256: &str, rows: u64) {
        if !self.checked {
            return;
        }
        self.seen.insert(path.to_string());
        match self.live.get(path) {
            None => self.unlisted.push(path.to_string()),
            Some(f) if !f.sha256.eq_ignore_ascii_case(sha256) || f.rows != rows => {
                self.altered.push(path.to_string())
            }
            Some(_) => {}
        }
    }

    /// Every file of the portal was offered: the live ones not seen are deleted.
    pub fn finish(&mut self) {
        if !self.checked {
            return;
        }
        self.deleted = self
            .live
            .keys()
            .filter(|p| !self.seen.contains(*p))
            .cloned()
            .collect();
        self.altered.sort();
        self.unlisted.sort();
        self.seen = HashSet::new();
        self.unproved = std::mem::take(&mut self.proofs.problems);
        self.unproved.sort();
    }

    pub fn problems(&self) -> u64 {
        (self.altered.len()
            + self.deleted.len()
            + self.unlisted.len()
            + self.errors.len()
            + self.unproved.len()) as u64
    }

    /// Check the compaction proofs of these manifests (`key`, manifest) too.
    pub fn with_proofs(mut self, manifests: &[(String, Manifest)]) -> FileCheck {
        self.proofs = ProofCheck::new(manifests);
        self.compactions_proved = self.proofs.proved;
        self
    }

    /// Is `path` the live output of a proved compaction (is its rows digest needed)?
    pub fn wants_rows_digest(&self, path: &str) -> bool {
        self.proofs.wants(path)
    }

    /// The rows digest of `path`, computed from its bytes.
    pub fn rows_digest(&mut self, path: &str, rows_sha256: &str) {
        self.proofs.output(path, rows_sha256);
    }

    /// Is a sha256 needed for the files (is there anything to check them against)?
    pub fn wants_hashes(&self) -> bool {
        self.checked
    }
}

/// One row of a partition being deduplicated.
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    pub session_id: &'a str,
    /// The row holds the values the service lists.
    pub matches_listing: bool,
    pub archived_at_ms: i64,
}

/// Which rows to keep so that each session id has exactly one: the first row matching the
/// service's listing, else the newest `archived_at` (the first of equals).
pub fn keep_one(rows: &[Candidate]) -> Vec<bool> {
    let mut best: HashMap<&str, usize> = HashMap::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        match best.get(r.session_id) {
            None => {
                best.insert(r.session_id, i);
            }
            Some(&j) => {
                let b = &rows[j];
                let better =
                    (r.matches_listing, r.archived_at_ms) > (b.matches_listing, b.archived_at_ms);
                if better {
                    best.insert(r.session_id, i);
                }
            }
        }
    }
    let mut keep = vec![false; rows.len()];
    for i in best.into_values() {
        keep[i] = true;
    }
    keep
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const D: i64 = 1_795_651_200_000; // 2026-11-26T00:00:00Z

    fn s(id: &str, start: i64, end: Option<i64>) -> Session {
        Session {
            portal_arn: Arc::from("arn"),
            session_id: id.into(),
            username: None,
            status: if end.is_some() {
                SessionStatus::Terminated
            } else {
                SessionStatus::Active
            },
            start_ms: start,
            end_ms: end,
            client_ips: None,
        }
    }

    fn row(id: &str, start: i64, end: Option<i64>) -> ArchRow {
        ArchRow {
            session_id: id.into(),
            status: if end.is_some() {
                "Terminated"
            } else {
                "Active"
            }
            .into(),
            start_ms: start,
            end_ms: end,
        }
    }

    fn day(sessions: &[Session]) -> HashMap<String, Session> {
        sessions
            .iter()
            .map(|s| (s.session_id.clone(), s.clone()))
            .collect()
    }

    #[test]
    fn a_matching_day_counts_only_listed_active_and_archived() {
        let listed = day(&[
            s("a", D + 1, Some(D + 5)),
            s("b", D + 2, Some(D + 6)),
            s("c", D + 3, None),
        ]);
        let rows = [row("a", D + 1, Some(D + 5)), row("b", D + 2, Some(D + 6))];
        let r = compare_day(listed, &rows, D - 100);
        assert_eq!(
            r.counts,
            Counts {
                listed: 3,
                active: 1,
                archived: 2,
                ..Counts::default()
            }
        );
        assert_eq!(r.counts.differences(), 0);
    }

    #[test]
    fn missing_duplicated_differing_expired_and_extra_are_told_apart() {
        let listed = day(&[
            s("gone", D + 10, Some(D + 11)),
            s("twice", D + 20, Some(D + 21)),
            s("changed", D + 30, Some(D + 31)),
            s("ok", D + 40, Some(D + 41)),
        ]);
        let rows = [
            row("twice", D + 20, Some(D + 21)),
            row("twice", D + 20, Some(D + 21)),
            row("changed", D + 30, Some(D + 99)),
            row("ok", D + 40, Some(D + 41)),
            row("old", D + 1, Some(D + 2)),
            row("stray", D + 50, Some(D + 51)),
        ];
        let r = compare_day(listed, &rows, D + 5);
        assert_eq!(r.counts.missing, 1);
        assert_eq!(r.missing[0].session_id, "gone");
        assert_eq!(r.counts.duplicated, 1);
        assert_eq!(r.duplicated[0].0, "twice");
        assert!(r.duplicated[0].1.is_some());
        assert_eq!(r.counts.differing, 1);
        assert_eq!(r.counts.expired, 1, "older than the oldest listed");
        assert_eq!(
            r.counts.extra, 1,
            "newer than the oldest listed, but not listed"
        );
        assert_eq!(r.counts.archived, 6);
        assert_eq!(r.counts.differences(), 4);
    }

    #[test]
    fn an_active_session_is_not_missing_but_an_archived_active_one_differs() {
        let listed = day(&[s("a", D + 1, None), s("b", D + 2, None)]);
        let rows = [row("b", D + 2, Some(D + 3))];
        let r = compare_day(listed, &rows, i64::MIN);
        assert_eq!(r.counts.missing, 0);
        assert_eq!(r.counts.active, 2);
        assert_eq!(r.counts.differing, 1);
    }

    #[test]
    fn the_walker_hands_out_each_day_once_and_ignores_repeats() {
        let mut w = Walker::default();
        let mut days = Vec::new();
        let listing = [
            s("d2a", D + DAY_MS + 50, Some(1)),
            s("d2b", D + DAY_MS + 10, Some(1)),
            s("d2b", D + DAY_MS + 10, Some(2)), // repeat within the day: latest values
            s("d1a", D + 70, Some(1)),
            s("d2a", D + DAY_MS + 50, Some(1)), // repeat of a day handed out: ignored
            s("d1b", D + 5, Some(1)),
            s("d0a", D - 10, Some(1)),
        ];
        for x in listing {
            days.extend(w.push(x));
        }
        days.extend(w.finish());
        let got: Vec<(String, usize)> = days
            .iter()
            .map(|d| (d.date.clone(), d.sessions.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("2026-11-27".to_string(), 2),
                ("2026-11-26".to_string(), 2),
                ("2026-11-25".to_string(), 1)
            ]
        );
        assert_eq!(days[0].sessions["d2b"].end_ms, Some(2));
        assert_eq!(w.repeats, 1);
        assert_eq!(w.oldest(), Some(D - 10));
    }

    fn mf(path: &str, sha: &str) -> ManifestFile {
        ManifestFile {
            path: path.into(),
            rows: 3,
            bytes: 10,
            sha256: sha.into(),
        }
    }

    fn manifest(seq: i64, kind: &str, files: Vec<ManifestFile>, replaces: &[&str]) -> Manifest {
        Manifest {
            version: 1,
            portal_id: "p".into(),
            state_id: "s".into(),
            seq,
            kind: kind.into(),
            files,
            replaces: replaces.iter().map(|r| r.to_string()).collect(),
            ..Manifest::default()
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_the_proof_fields_are_read() {
        let text = r#"{"version":1,"portal_id":"p","state_id":"s","seq":4,"kind":"compaction",
            "files":[{"path":"c","rows":5,"bytes":10,"sha256":"ab"}],"replaces":["a","b"],
            "inputs":[{"path":"a","sha256":"11","rows":2},{"path":"b","sha256":"22","rows":3}],
            "rows_sha256":"ff","a_field_of_the_future":{"x":1}}"#;
        let m = parse_manifest(text.as_bytes(), "p").unwrap();
        assert_eq!(m.inputs.len(), 2);
        assert_eq!(m.rows_sha256.as_deref(), Some("ff"));
        assert_eq!(m.removed_rows, None);
        let old = manifest(1, "flush", vec![mf("a", "1")], &[]);
        let text = serde_json::to_string(&old).unwrap();
        assert!(
            !text.contains("inputs") && !text.contains("rows_sha256"),
            "{text}"
        );
    }

    #[test]
    fn an_input_is_checked_by_bytes_sha256_and_rows_and_missing_files_are_found() {
        let ms = [manifest(
            1,
            "flush",
            vec![mf("d1/a", "aa"), mf("d1/b", "bb"), mf("d2/c", "cc")],
            &[],
        )];
        let live = live_files(&ms);
        assert_eq!(input_problem(&live, "d1/a", 10, "AA", 3), None);
        assert!(input_problem(&live, "d1/a", 11, "aa", 3)
            .unwrap()
            .starts_with("d1/a: altered"));
        assert!(input_problem(&live, "d1/a", 10, "ab", 3).is_some());
        assert!(input_problem(&live, "d1/a", 10, "aa", 2)
            .unwrap()
            .contains("2 rows; the manifest records 3"));
        assert!(input_problem(&live, "d1/x", 10, "aa", 3)
            .unwrap()
            .contains("in no manifest"));
        assert_eq!(missing_from(&live, "d1/", &["d1/a".into()]), ["d1/b"]);
        assert!(missing_from(&live, "d2/", &["d2/c".into()]).is_empty());
    }

    fn proved(seq: i64, out: ManifestFile, inputs: &[(&str, &str, u64)], digest: &str) -> Manifest {
        Manifest {
            inputs: inputs
                .iter()
                .map(|(p, sha, rows)| ManifestInput {
                    path: p.to_string(),
                    sha256: sha.to_string(),
                    rows: *rows,
                })
                .collect(),
            rows_sha256: Some(digest.into()),
            ..manifest(
                seq,
                "compaction",
                vec![out],
                &inputs.iter().map(|i| i.0).collect::<Vec<_>>(),
            )
        }
    }

    #[test]
    fn compaction_proofs_agree_with_the_inputs_manifests_and_the_output_rows() {
        let d = "0".repeat(63) + "7";
        let flush = manifest(1, "flush", vec![mf("a", "1"), mf("b", "2")], &[]);
        let out = |rows| ManifestFile {
            rows,
            ..mf("ab", "4")
        };
        let good = proved(2, out(6), &[("a", "1", 3), ("b", "2", 3)], &d);
        let keyed = |ms: Vec<Manifest>| -> Vec<(String, Manifest)> {
            ms.into_iter().map(|m| (format!("m{}", m.seq), m)).collect()
        };
        let mut c = ProofCheck::new(&keyed(vec![flush.clone(), good.clone()]));
        assert_eq!(c.proved, 1);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert!(c.wants("ab") && !c.wants("a"));
        c.output("ab", &d.to_uppercase());
        assert!(c.problems.is_empty());
        c.output("ab", &"0".repeat(64));
        assert_eq!(c.problems.len(), 1);
        assert!(
            c.problems[0].starts_with("m2: ab: its rows digest is 000"),
            "{:?}",
            c.problems
        );

        // An input whose recorded SHA-256 is not its own manifest's; rows that do not add up;
        // inputs that are not what it replaces.
        let bad_sha = proved(2, out(6), &[("a", "9", 3), ("b", "2", 3)], &d);
        let c = ProofCheck::new(&keyed(vec![flush.clone(), bad_sha]));
        assert_eq!(
            c.problems,
            ["m2: a: input differs from its own manifest m1 (SHA-256 or rows)"]
        );
        let bad_rows = proved(2, out(5), &[("a", "1", 3), ("b", "2", 3)], &d);
        let c = ProofCheck::new(&keyed(vec![flush.clone(), bad_rows]));
        assert_eq!(
            c.problems,
            ["m2: its inputs hold 6 rows, its output 5 (and 0 removed)"]
        );
        let mut removed = proved(2, out(5), &[("a", "1", 3), ("b", "2", 3)], &d);
        removed.removed_rows = Some(1);
        assert!(ProofCheck::new(&keyed(vec![flush.clone(), removed]))
            .problems
            .is_empty());
        let mut other = good.clone();
        other.replaces = vec!["a".into()];
        let c = ProofCheck::new(&keyed(vec![flush.clone(), other]));
        assert_eq!(c.problems, ["m2: its inputs are not the files it replaces"]);

        // Compacted again: the first output is an input of the second, which vouches for it.
        let again = proved(
            3,
            ManifestFile {
                rows: 6,
                ..mf("abc", "5")
            },
            &[("ab", "4", 6)],
            &d,
        );
        let c = ProofCheck::new(&keyed(vec![flush, good, again]));
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert!(!c.wants("ab") && c.wants("abc"));
        assert_eq!(c.proved, 2);
    }

    #[test]
    fn live_files_are_all_files_minus_the_replaced_ones() {
        let ms = [
            manifest(1, "flush", vec![mf("a", "1"), mf("b", "2")], &[]),
            manifest(2, "flush", vec![mf("c", "3")], &[]),
            manifest(3, "compaction", vec![mf("ab", "4")], &["a", "b"]),
        ];
        let live: Vec<String> = live_files(&ms).into_keys().collect();
        assert_eq!(live, ["ab", "c"]);
        let mut check = FileCheck::new(&ms, vec![]);
        check.file("ab", "4", 3);
        check.file("c", "FF", 3);
        check.file("stray", "5", 1);
        check.finish();
        assert_eq!(check.altered, ["c"]);
        assert_eq!(check.unlisted, ["stray"]);
        assert!(check.deleted.is_empty());
        let mut check = FileCheck::new(&ms, vec![]);
        check.file("ab", "4", 4);
        check.finish();
        assert_eq!(check.altered, ["ab"], "row count differs");
        assert_eq!(check.deleted, ["c"]);
        assert_eq!(check.problems(), 2);
    }

    #[test]
    fn without_manifests_files_are_not_checked() {
        let mut check = FileCheck::new(&[], vec![]);
        check.file("x", "1", 1);
        check.finish();
        assert!(!check.checked);
        assert_eq!(check.problems(), 0);
    }

    #[test]
    fn manifests_of_another_portal_or_version_are_refused() {
        let m = manifest(1, "flush", vec![mf("a", "1")], &[]);
        let bytes = serde_json::to_vec(&m).unwrap();
        assert!(parse_manifest(&bytes, "p").is_ok());
        assert!(parse_manifest(&bytes, "q").unwrap_err().contains("portal"));
        let mut v2 = m.clone();
        v2.version = 2;
        assert!(parse_manifest(&serde_json::to_vec(&v2).unwrap(), "p").is_err());
        assert!(parse_manifest(b"{", "p").is_err());
    }

    #[test]
    fn duplicates_keep_the_row_matching_the_service_else_the_newest() {
        let c = |id, m, at| Candidate {
            session_id: id,
            matches_listing: m,
            archived_at_ms: at,
        };
        let rows = [
            c("a", false, 9),
            c("a", true, 1),
            c("b", false, 1),
            c("b", false, 5),
            c("b", false, 5),
            c("u", false, 1),
        ];
        assert_eq!(keep_one(&rows), [false, true, false, true, false, true]);
    }
}
