//! Decides, for every listed session, whether it is written, kept pending, quarantined, or
//! skipped, so that each terminated session is written exactly once whatever the page
//! boundaries, repeats and restarts. Pure: the caller supplies what the committed state knows.
//!
//! What the state knows about a portal:
//! - `pending`: sessions seen `Active` (never pruned; written once seen ended);
//! - `quarantined`: sessions the service sent in a form that cannot be archived faithfully
//!   (never pruned; written once sent usably, like a pending session);
//! - `archived` ids of written sessions, kept only inside a window below the newest covered
//!   start time; below it, `floor` says "everything starting earlier has been seen".

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use crate::model::{OddSession, Session, SessionStatus};

/// An incremental pass reads this far past the newest archived and the oldest pending start,
/// to catch sessions that show up late or share a start time.
pub const OVERLAP_MS: i64 = 15 * 60_000;

/// Archived ids are kept this far below the oldest point a future pass can read back to.
pub const DEDUP_WINDOW_MS: i64 = 3 * 86_400_000;

/// What to do with a listed session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Ended and not archived: write it.
    Write,
    /// Active and new: remember it as pending.
    NewPending,
    /// Active and already pending: note it was seen.
    StillPending,
    /// Archived already (or an inconsistent repeat): nothing to do.
    Skip,
    /// Sent in a form that cannot be archived faithfully, and not archived: quarantined (new,
    /// or again).
    Quarantine,
}

/// A quarantined session, as dedup needs it. The state never holds a quarantined id that is
/// archived: archiving a session ends its quarantine in the same commit. So a quarantined
/// session sent usably is written like a pending one, whatever the floor says since, with one
/// exception below.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Its start, when a reply had a usable one.
    pub start_ms: Option<i64>,
    /// Quarantined without a start: the dedup floor at that moment. Its id was looked up then,
    /// but ids below the floor were pruned before: if its real start lies below this, it had
    /// been seen (archived) by an earlier pass, and it is not written again.
    pub floor_ms: Option<i64>,
}

/// The decision rule, from what is known about one session.
pub fn classify(
    status: SessionStatus,
    start_ms: i64,
    archived: bool,
    pending: bool,
    floor: Option<i64>,
) -> Verdict {
    let below_floor = floor.is_some_and(|f| start_ms < f);
    match status {
        SessionStatus::Terminated if pending => Verdict::Write,
        SessionStatus::Terminated if archived || below_floor => Verdict::Skip,
        SessionStatus::Terminated => Verdict::Write,
        // Once written, a session is never taken back, whatever a later listing says.
        SessionStatus::Active if archived => Verdict::Skip,
        SessionStatus::Active if pending => Verdict::StillPending,
        SessionStatus::Active => Verdict::NewPending,
    }
}

/// Where archived ids may be pruned: below the oldest start a future pass can read back to,
/// less the dedup window. `covered_to` is the newest start below which every session has been
/// listed by some pass.
pub fn prune_cutoff(covered_to: Option<i64>, oldest_pending: Option<i64>) -> Option<i64> {
    let base = match (covered_to, oldest_pending) {
        (Some(c), Some(p)) => c.min(p),
        (Some(c), None) => c,
        (None, _) => return None,
    };
    Some(base - OVERLAP_MS - DEDUP_WINDOW_MS)
}

/// The sessions and pending changes gathered for one flush.
#[derive(Debug, Default)]
pub struct Batch {
    pub rows: Vec<Session>,
    pub pending_upsert: HashMap<String, i64>,
    pub pending_remove: HashSet<String>,
    /// Sessions quarantined (new or again), with their [`Held::floor_ms`].
    pub quarantine_upsert: HashMap<String, (OddSession, Option<i64>)>,
    /// Quarantined sessions released (written, now pending, archived already) or given up.
    pub quarantine_remove: HashSet<String>,
    /// Sessions listed (whatever their verdict) since the last flush.
    pub listed: usize,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.pending_upsert.is_empty()
            && self.pending_remove.is_empty()
            && self.quarantine_upsert.is_empty()
            && self.quarantine_remove.is_empty()
    }
}

/// One portal's dedup view: the committed state plus the flush being gathered.
#[derive(Debug, Default)]
pub struct Dedup {
    /// Pending sessions (committed, with this batch's changes applied): id → start.
    pending: HashMap<String, i64>,
    /// Quarantined sessions (committed, with this batch's changes applied).
    quarantined: HashMap<String, Held>,
    /// Newest archived start when the pass began: ids archived by earlier passes lie at or
    /// below it.
    prior_max: Option<i64>,
    /// Lowest start this pass has committed: ids it archived lie at or above it.
    band_low: Option<i64>,
    floor: Option<i64>,
    /// Ids written by the batch being gathered.
    written: Written,
    batch: Batch,
}

/// The ids of the rows of the batch being gathered, without a second copy of each id: a hash
/// of the id → its row's index in `Batch::rows`. Two different ids with the same hash (all but
/// impossible with 64 bits) are still told apart: the later one goes to `collided`.
#[derive(Debug, Default)]
struct Written {
    seed: u64,
    by_hash: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
    collided: HashSet<String>,
    /// Tests: every id hashes alike, so every lookup goes through `collided`.
    #[cfg(test)]
    degenerate: bool,
}

impl Written {
    fn hash(&self, id: &str) -> u64 {
        #[cfg(test)]
        if self.degenerate {
            return 7;
        }
        // FxHash-style over 8-byte words, then a splitmix64 finaliser: ids are short ASCII
        // UUIDs, and SipHash (std's default) costs several times more per id.
        let mut h = self.seed ^ (id.len() as u64);
        let mut chunks = id.as_bytes().chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            h = (h.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(tail)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }

    fn contains(&self, id: &str, rows: &[Session]) -> bool {
        if self.by_hash.is_empty() {
            return false;
        }
        match self.by_hash.get(&self.hash(id)) {
            Some(&i) if rows[i as usize].session_id == id => true,
            Some(_) => self.collided.contains(id),
            None => false,
        }
    }

    /// `rows[index]` has just been pushed with this id (not yet in the set).
    fn insert(&mut self, id: &str, index: usize) {
        if self.seed == 0 {
            self.seed = std::collections::hash_map::RandomState::new().hash_one(0u64) | 1;
        }
        let h = self.hash(id);
        match self.by_hash.entry(h) {
            Entry::Vacant(e) => {
                e.insert(index as u32);
            }
            Entry::Occupied(_) => {
                self.collided.insert(id.to_string());
            }
        }
    }

    fn clear(&mut self) {
        self.by_hash.clear();
        self.collided.clear();
    }
}

/// The keys of `Written::by_hash` are hashes already.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl Dedup {
    /// A pass's dedup view: the pending sessions, the newest archived start when the pass
    /// began (`prior_max`), the lowest start the pass has committed so far (`band_low`, for a
    /// resumed pass) and the floor.
    pub fn new(
        pending: HashMap<String, i64>,
        prior_max: Option<i64>,
        band_low: Option<i64>,
        floor: Option<i64>,
    ) -> Dedup {
        Dedup {
            pending,
            prior_max,
            band_low,
            floor,
            ..Default::default()
        }
    }

    /// The quarantined sessions the state holds (see [`Held`]).
    pub fn with_quarantine(mut self, quarantined: HashMap<String, Held>) -> Dedup {
        self.quarantined = quarantined;
        self
    }

    /// Does this session need a lookup in the committed archived ids? Only where an archived
    /// id can be: at or below the newest start archived before this pass, or at or above the
    /// lowest start this pass committed (a repeat: a listing shifted by new sessions, a resumed
    /// or restarted pass). Whatever the listing order, a session outside both has never been
    /// written. Sessions decided by this batch, the pending set or the quarantine need none
    /// either.
    pub fn needs_lookup(&self, s: &Session) -> bool {
        (self.prior_max.is_some_and(|m| s.start_ms <= m)
            || self.band_low.is_some_and(|l| s.start_ms >= l))
            && !self.written.contains(&s.session_id, &self.batch.rows)
            && !self.pending.contains_key(&s.session_id)
            && !self.quarantined.contains_key(&s.session_id)
    }

    /// Does this odd session need a lookup in the committed archived ids? Its start may be
    /// unknown, so wherever it lies, unless the batch, the pending set or the quarantine
    /// decide it.
    pub fn odd_needs_lookup(&self, o: &OddSession) -> bool {
        !self.written.contains(&o.session_id, &self.batch.rows)
            && !self.pending.contains_key(&o.session_id)
            && !self.quarantined.contains_key(&o.session_id)
    }

    /// Take one listed session; `archived` is what the committed state says (false when
    /// `needs_lookup` was false).
    pub fn offer(&mut self, s: Session, archived: bool) -> Verdict {
        self.batch.listed += 1;
        let archived = archived || self.written.contains(&s.session_id, &self.batch.rows);
        let mut pending = self.pending.contains_key(&s.session_id);
        // (Hashing the id only when something is quarantined: almost never.)
        let held = if self.quarantined.is_empty() {
            None
        } else {
            self.quarantined.remove(&s.session_id)
        };
        if let Some(held) = held {
            // Sent usably at last: out of the quarantine, and decided like a pending session
            // (it is not archived), unless it started below the floor it was quarantined under.
            self.batch.quarantine_upsert.remove(&s.session_id);
            self.batch.quarantine_remove.insert(s.session_id.clone());
            pending |= held.floor_ms.is_none_or(|f| s.start_ms >= f);
        }
        let verdict = classify(s.status, s.start_ms, archived, pending, self.floor);
        match verdict {
            Verdict::Write => {
                if pending {
                    self.pending.remove(&s.session_id);
                    self.batch.pending_upsert.remove(&s.session_id);
                    self.batch.pending_remove.insert(s.session_id.clone());
                }
                self.written.insert(&s.session_id, self.batch.rows.len());
                self.batch.rows.push(s);
            }
            Verdict::NewPending | Verdict::StillPending => {
                self.pending.insert(s.session_id.clone(), s.start_ms);
                self.batch.pending_remove.remove(&s.session_id);
                self.batch.pending_upsert.insert(s.session_id, s.start_ms);
            }
            // `classify` never quarantines: only `offer_odd` does.
            Verdict::Skip | Verdict::Quarantine => {}
        }
        verdict
    }

    /// Take one session sent in a form that cannot be archived faithfully; `archived` is what
    /// the committed state says (false when `odd_needs_lookup` was false). An archived session
    /// stays archived (never taken back); one starting below the floor and not pending was
    /// seen, so archived, by an earlier pass. Any other is quarantined.
    pub fn offer_odd(&mut self, o: OddSession, archived: bool) -> Verdict {
        self.batch.listed += 1;
        let id = o.session_id.clone();
        if archived || self.written.contains(&id, &self.batch.rows) {
            return Verdict::Skip;
        }
        let held = match self.quarantined.get(&id) {
            Some(h) => Held {
                start_ms: o.start_ms.or(h.start_ms),
                floor_ms: h.floor_ms,
            },
            None if !self.pending.contains_key(&id)
                && o.start_ms.zip(self.floor).is_some_and(|(s, f)| s < f) =>
            {
                return Verdict::Skip;
            }
            None => Held {
                start_ms: o.start_ms,
                floor_ms: if o.start_ms.is_none() {
                    self.floor
                } else {
                    None
                },
            },
        };
        self.quarantined.insert(id.clone(), held);
        self.batch.quarantine_remove.remove(&id);
        self.batch.quarantine_upsert.insert(id, (o, held.floor_ms));
        Verdict::Quarantine
    }

    /// A row of a batch already taken for a flush that cannot be written after all (GetSession
    /// for its client IPs answered for another session): quarantined by that flush instead,
    /// under the row's start (its verdict was `Write`, so it is not archived).
    pub fn quarantine_taken(&mut self, batch: &mut Batch, mut o: OddSession) {
        let Some(at) = batch.rows.iter().position(|s| s.session_id == o.session_id) else {
            return;
        };
        let row = batch.rows.remove(at);
        o.start_ms = Some(row.start_ms);
        let held = Held {
            start_ms: o.start_ms,
            floor_ms: None,
        };
        self.quarantined.insert(o.session_id.clone(), held);
        batch.quarantine_remove.remove(&o.session_id);
        batch
            .quarantine_upsert
            .insert(o.session_id.clone(), (o, None));
    }

    /// A quarantined session given up (the service no longer finds it): forget it.
    pub fn drop_quarantined(&mut self, session_id: &str) {
        if self.quarantined.remove(session_id).is_some() {
            self.batch.quarantine_upsert.remove(session_id);
            self.batch.quarantine_remove.insert(session_id.to_string());
        }
    }

    pub fn is_quarantined(&self, session_id: &str) -> bool {
        self.quarantined.contains_key(session_id)
    }

    pub fn quarantined_ids(&self) -> impl Iterator<Item = &String> {
        self.quarantined.keys()
    }

    pub fn quarantined_len(&self) -> usize {
        self.quarantined.len()
    }

    /// A pending session found gone from the service: forget it.
    pub fn drop_pending(&mut self, session_id: &str) {
        if self.pending.remove(session_id).is_some() {
            self.batch.pending_upsert.remove(session_id);
            self.batch.pending_remove.insert(session_id.to_string());
        }
    }

    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// Hand over the gathered batch for a flush. Until [`Dedup::committed`], offer nothing
    /// more: the rows of the batch taken are no longer here to tell repeats apart (a flush
    /// that fails ends the pass).
    pub fn take_batch(&mut self) -> Batch {
        self.written.clear();
        std::mem::take(&mut self.batch)
    }

    /// The flush holding `rows` committed: their ids are now in the committed state.
    /// `rows_min_start`: the oldest start among them.
    pub fn committed(&mut self, rows_min_start: Option<i64>, new_floor: Option<i64>) {
        self.written.clear();
        self.band_low = match (self.band_low, rows_min_start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.floor = self.floor.max(new_floor);
    }

    /// The lowest start this pass has committed.
    pub fn band_low(&self) -> Option<i64> {
        self.band_low
    }

    pub fn oldest_pending(&self) -> Option<i64> {
        self.pending.values().copied().min()
    }

    pub fn pending_ids(&self) -> impl Iterator<Item = (&String, &i64)> {
        self.pending.iter()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn sess(id: u32, start: i64, active: bool) -> Session {
        Session {
            portal_arn: "arn".into(),
            session_id: format!("s{id:05}"),
            username: Some(format!("user{id}")),
            status: if active {
                SessionStatus::Active
            } else {
                SessionStatus::Terminated
            },
            start_ms: start,
            end_ms: (!active).then_some(start + 10),
            client_ips: None,
        }
    }

    #[test]
    fn the_rule_table() {
        use SessionStatus::*;
        use Verdict::*;
        assert_eq!(classify(Terminated, 5, false, false, None), Write);
        assert_eq!(classify(Terminated, 5, true, false, None), Skip);
        assert_eq!(classify(Terminated, 5, false, true, None), Write);
        assert_eq!(classify(Terminated, 5, false, false, Some(6)), Skip);
        assert_eq!(classify(Terminated, 5, false, true, Some(6)), Write);
        assert_eq!(classify(Active, 5, false, false, None), NewPending);
        assert_eq!(classify(Active, 5, false, true, None), StillPending);
        assert_eq!(classify(Active, 5, true, false, None), Skip);
    }

    #[test]
    fn written_ids_are_told_apart_even_when_their_hashes_collide() {
        for degenerate in [false, true] {
            let mut d = Dedup::default();
            d.written.degenerate = degenerate;
            for i in 0..50 {
                assert_eq!(d.offer(sess(i, i as i64, false), false), Verdict::Write);
            }
            for i in 0..50 {
                assert_eq!(d.offer(sess(i, i as i64, false), false), Verdict::Skip);
            }
            assert_eq!(d.batch().rows.len(), 50);
            assert!(!d.written.contains("s99999", &d.batch.rows));
            let b = d.take_batch();
            d.committed(b.rows.iter().map(|s| s.start_ms).min(), None);
            assert!(d.needs_lookup(&sess(3, 3, false)));
        }
    }

    #[test]
    fn lookups_happen_only_where_an_archived_id_can_be() {
        // Archived before the pass: starts up to 100. The pass has committed down to 500.
        let d = Dedup::new(HashMap::new(), Some(100), Some(500), None);
        assert!(d.needs_lookup(&sess(1, 100, false)));
        assert!(d.needs_lookup(&sess(2, 50, false)));
        assert!(
            d.needs_lookup(&sess(3, 500, false)),
            "a repeat at the band's edge"
        );
        assert!(
            d.needs_lookup(&sess(4, 900, false)),
            "a repeat above the band"
        );
        assert!(!d.needs_lookup(&sess(5, 101, false)));
        assert!(!d.needs_lookup(&sess(6, 499, false)));
        // A fresh portal: nothing to look up until the pass commits.
        let mut d = Dedup::new(HashMap::new(), None, None, None);
        assert!(!d.needs_lookup(&sess(7, 5, false)));
        d.offer(sess(8, 40, false), false);
        d.offer(sess(9, 30, false), false);
        let b = d.take_batch();
        d.committed(b.rows.iter().map(|s| s.start_ms).min(), None);
        assert_eq!(d.band_low(), Some(30));
        assert!(d.needs_lookup(&sess(8, 40, false)));
        assert!(!d.needs_lookup(&sess(10, 29, false)));
    }

    fn odd_of(s: &Session, with_start: bool) -> OddSession {
        OddSession {
            session_id: s.session_id.clone(),
            reason: "unknown status \"Pending\"".into(),
            start_ms: with_start.then_some(s.start_ms),
            raw: Default::default(),
        }
    }

    #[test]
    fn an_odd_session_is_quarantined_then_written_once_when_sent_usably() {
        let mut d = Dedup::new(HashMap::new(), None, None, None);
        let s = sess(1, 50, false);
        assert_eq!(d.offer_odd(odd_of(&s, false), false), Verdict::Quarantine);
        assert_eq!(d.offer_odd(odd_of(&s, true), false), Verdict::Quarantine);
        assert!(d.is_quarantined(&s.session_id));
        let b = d.take_batch();
        assert_eq!(b.quarantine_upsert.len(), 1);
        d.committed(None, None);
        // Sent usably, even below a floor raised since: written, and out of the quarantine.
        let mut d = Dedup::new(HashMap::new(), Some(900), None, Some(100)).with_quarantine(
            HashMap::from([(
                s.session_id.clone(),
                Held {
                    start_ms: Some(50),
                    floor_ms: None,
                },
            )]),
        );
        assert!(!d.needs_lookup(&s), "a quarantined id is never archived");
        assert_eq!(d.offer(s.clone(), false), Verdict::Write);
        assert_eq!(d.offer(s.clone(), false), Verdict::Skip);
        let b = d.take_batch();
        assert_eq!(b.rows.len(), 1);
        assert!(b.quarantine_remove.contains(&s.session_id));
        assert!(!d.is_quarantined(&s.session_id));
        // Sent usably but still active: pending, out of the quarantine.
        let a = sess(2, 60, true);
        let mut d = Dedup::default()
            .with_quarantine(HashMap::from([(a.session_id.clone(), Held::default())]));
        assert_eq!(d.offer(a.clone(), false), Verdict::StillPending);
        assert_eq!(d.pending_len(), 1);
        assert_eq!(d.quarantined_len(), 0);
    }

    #[test]
    fn an_archived_session_sent_unusably_is_never_quarantined_nor_written_again() {
        let s = sess(1, 500, false);
        // Archived (looked up), or written by this batch.
        let mut d = Dedup::new(HashMap::new(), Some(900), None, Some(100));
        assert!(d.odd_needs_lookup(&odd_of(&s, false)));
        assert_eq!(d.offer_odd(odd_of(&s, false), true), Verdict::Skip);
        let t = sess(2, 600, false);
        assert_eq!(d.offer(t.clone(), false), Verdict::Write);
        assert_eq!(d.offer_odd(odd_of(&t, true), false), Verdict::Skip);
        // Below the floor with its start: seen (archived) by an earlier pass.
        let old = sess(3, 50, false);
        assert_eq!(d.offer_odd(odd_of(&old, true), false), Verdict::Skip);
        // Below the floor without its start: quarantined under that floor, and when its start
        // shows it was below, taken as archived (its id may have been pruned).
        assert_eq!(d.offer_odd(odd_of(&old, false), false), Verdict::Quarantine);
        assert_eq!(d.offer(old.clone(), false), Verdict::Skip);
        assert!(!d.is_quarantined(&old.session_id));
        // ... but written when its start shows its id was looked up.
        let new = sess(4, 150, false);
        assert_eq!(d.offer_odd(odd_of(&new, false), false), Verdict::Quarantine);
        assert_eq!(d.offer(new, false), Verdict::Write);
    }

    #[test]
    fn a_row_whose_client_ips_cannot_be_had_is_quarantined_in_its_flush() {
        let mut d = Dedup::default();
        let s = sess(1, 50, false);
        d.offer(s.clone(), false);
        let mut b = d.take_batch();
        d.quarantine_taken(&mut b, odd_of(&s, false));
        assert!(b.rows.is_empty());
        let (o, floor) = &b.quarantine_upsert[&s.session_id];
        assert_eq!((o.start_ms, *floor), (Some(50), None));
        d.committed(None, None);
        assert_eq!(d.offer(s, false), Verdict::Write);
    }

    #[test]
    fn prune_cutoff_follows_the_oldest_pending() {
        let w = OVERLAP_MS + DEDUP_WINDOW_MS;
        assert_eq!(prune_cutoff(None, Some(5)), None);
        assert_eq!(prune_cutoff(Some(100 + w), None), Some(100));
        assert_eq!(prune_cutoff(Some(100 + w), Some(50 + w)), Some(50));
    }

    /// A model of the service over time and of the archiver's committed state, driven through
    /// `Dedup` exactly as the pass loop drives it: any page size, flushes that crash before
    /// committing and passes resumed from their checkpoint, passes in both orders, sessions
    /// ending between passes, sessions the service sends unusably for a while (quarantined,
    /// with or without their start), `verify --repair` between a crash and the resume.
    /// Afterwards every terminated session is archived exactly once and nothing else is.
    /// (Compaction rewrites files and never the archived ids: nothing to model here.)
    #[derive(Default)]
    struct Committed {
        archived: BTreeMap<String, i64>,
        pending: HashMap<String, i64>,
        quarantined: HashMap<String, Held>,
        floor: Option<i64>,
        written: Vec<String>,
        covered: Option<i64>,
    }

    impl Committed {
        fn commit(&mut self, d: &mut Dedup, b: Batch, covered: Option<i64>) {
            let min = b.rows.iter().map(|s| s.start_ms).min();
            for s in &b.rows {
                assert!(
                    self.archived
                        .insert(s.session_id.clone(), s.start_ms)
                        .is_none(),
                    "{} written twice",
                    s.session_id
                );
                self.written.push(s.session_id.clone());
            }
            for id in &b.pending_remove {
                self.pending.remove(id);
            }
            for (id, st) in &b.pending_upsert {
                self.pending.insert(id.clone(), *st);
            }
            // As `commit_quarantine` does: archived or pending ends a quarantine.
            for id in b
                .rows
                .iter()
                .map(|s| &s.session_id)
                .chain(b.pending_upsert.keys())
                .chain(&b.quarantine_remove)
            {
                self.quarantined.remove(id);
            }
            for (id, (o, floor)) in b.quarantine_upsert {
                let start = o
                    .start_ms
                    .or(self.quarantined.get(&id).and_then(|h| h.start_ms));
                let floor = self.quarantined.get(&id).map_or(floor, |h| h.floor_ms);
                assert!(
                    !self.archived.contains_key(&id),
                    "{id} quarantined while archived"
                );
                self.quarantined.insert(
                    id,
                    Held {
                        start_ms: start,
                        floor_ms: floor,
                    },
                );
            }
            self.covered = self.covered.max(covered);
            let cut = prune_cutoff(self.covered, self.pending.values().copied().min());
            if let Some(c) = cut {
                self.archived.retain(|_, st| *st >= c);
                self.floor = self.floor.max(Some(c));
            }
            d.committed(min, cut);
        }
    }

    /// Where a crashed pass resumes: its listing order and page size, the first page after
    /// its last committed flush, and its dedup bounds as the state's checkpoint keeps them.
    #[derive(Clone, Debug)]
    struct Checkpoint {
        ascending: bool,
        page: usize,
        next_page: usize,
        prior_max: Option<i64>,
        band_low: Option<i64>,
    }

    /// A pass, new or resumed from `resume`; returns its checkpoint if it crashed. The sessions
    /// named in `odd` are sent unusably (every other one without its start).
    fn run_pass(
        c: &mut Committed,
        world: &[Session],
        odd: &HashSet<String>,
        resume: Option<Checkpoint>,
        fresh: (bool, usize),
        flush_every: usize,
        crash_at: Option<usize>,
    ) -> Option<Checkpoint> {
        let mut cp = resume.unwrap_or_else(|| Checkpoint {
            ascending: fresh.0,
            page: fresh.1.max(1),
            next_page: 0,
            prior_max: c.archived.values().copied().max(),
            band_low: None,
        });
        let mut listing: Vec<Session> = world.to_vec();
        listing.sort_by_key(|s| (s.start_ms, s.session_id.clone()));
        if !cp.ascending {
            listing.reverse();
        }
        let mut d = Dedup::new(c.pending.clone(), cp.prior_max, cp.band_low, c.floor)
            .with_quarantine(c.quarantined.clone());
        let mut pages_since = 0;
        for (n, chunk) in listing.chunks(cp.page).enumerate().skip(cp.next_page) {
            for s in chunk {
                if odd.contains(&s.session_id) {
                    let n: u32 = s.session_id[1..].parse().unwrap();
                    let o = OddSession {
                        session_id: s.session_id.clone(),
                        reason: "unknown status".into(),
                        start_ms: n.is_multiple_of(2).then_some(s.start_ms),
                        raw: Default::default(),
                    };
                    let archived = d.odd_needs_lookup(&o) && c.archived.contains_key(&o.session_id);
                    d.offer_odd(o, archived);
                    continue;
                }
                let archived = d.needs_lookup(s) && c.archived.contains_key(&s.session_id);
                d.offer(s.clone(), archived);
            }
            pages_since += 1;
            if pages_since >= flush_every {
                if crash_at == Some(n) {
                    return Some(cp); // the batch dies with the process
                }
                let covered = if cp.ascending {
                    chunk.iter().map(|s| s.start_ms).max()
                } else {
                    None
                };
                let b = d.take_batch();
                c.commit(&mut d, b, covered);
                cp.next_page = n + 1;
                cp.band_low = d.band_low();
                pages_since = 0;
            }
        }
        if crash_at.is_some() {
            return Some(cp);
        }
        let covered = listing.iter().map(|s| s.start_ms).max();
        let b = d.take_batch();
        c.commit(&mut d, b, covered);
        None
    }

    /// `verify --repair`: every terminated session the archive lacks is written, in one
    /// commit outside any pass; a pass in progress then looks up every id at or below the
    /// newest start written (what `commit_flush` does to the checkpoint's `prior_max`).
    fn repair(c: &mut Committed, world: &[Session], cp: Option<&mut Checkpoint>) {
        let written: std::collections::HashSet<&String> = c.written.iter().collect();
        let missing: Vec<Session> = world
            .iter()
            .filter(|s| s.status == SessionStatus::Terminated && !written.contains(&s.session_id))
            .cloned()
            .collect();
        let Some(max) = missing.iter().map(|s| s.start_ms).max() else {
            return;
        };
        for s in &missing {
            assert!(c
                .archived
                .insert(s.session_id.clone(), s.start_ms)
                .is_none());
            c.written.push(s.session_id.clone());
            c.pending.remove(&s.session_id);
            c.quarantined.remove(&s.session_id);
        }
        if let Some(cp) = cp {
            cp.prior_max = cp.prior_max.max(Some(max));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn every_terminated_session_is_written_exactly_once(
            n in 1usize..120,
            starts in proptest::collection::vec(0i64..(10 * 86_400_000), 120),
            active_mask in proptest::collection::vec(any::<bool>(), 120),
            rounds in proptest::collection::vec((any::<bool>(), 1usize..30, 1usize..5, proptest::option::of(0usize..10), any::<bool>(), any::<u64>()), 1..6),
        ) {
            let mut world: Vec<Session> = (0..n)
                .map(|i| sess(i as u32, starts[i], active_mask[i]))
                .collect();
            let mut c = Committed::default();
            let mut crashed: Option<Checkpoint> = None;
            for (ascending, page, flush_every, crash, repair_first, odd_bits) in rounds {
                // A crashed pass resumes from its checkpoint; `verify --repair` may run first.
                if repair_first {
                    repair(&mut c, &world, crashed.as_mut());
                }
                // A few sessions are sent unusably in this pass.
                let odd: HashSet<String> = world
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| odd_bits.rotate_left(*i as u32) & 0b1111 == 0b1011)
                    .map(|(_, s)| s.session_id.clone())
                    .collect();
                crashed = run_pass(&mut c, &world, &odd, crashed, (ascending, page), flush_every, crash);
                // Between passes, half the active sessions end.
                for (i, s) in world.iter_mut().enumerate() {
                    if s.status == SessionStatus::Active && i % 2 == 0 {
                        s.status = SessionStatus::Terminated;
                        s.end_ms = Some(s.start_ms + 1);
                    }
                }
            }
            // End everything, then a clean pass: the archive must equal the terminated set.
            for s in world.iter_mut() {
                s.status = SessionStatus::Terminated;
            }
            let none = HashSet::new();
            run_pass(&mut c, &world, &none, crashed, (false, 7), 2, None);
            run_pass(&mut c, &world, &none, None, (true, 100), 1, None);
            let mut written = c.written.clone();
            written.sort();
            let mut expected: Vec<String> = world.iter().map(|s| s.session_id.clone()).collect();
            expected.sort();
            prop_assert_eq!(written, expected);
            prop_assert!(c.pending.is_empty());
            prop_assert!(c.quarantined.is_empty());
        }
    }
}
