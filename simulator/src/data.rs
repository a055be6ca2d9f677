//! The simulated account: portals, their sessions, the simulated clock, and the queries the
//! API answers. Pure data and logic, no I/O: the HTTP layer renders what this returns.
//!
//! Each portal keeps its sessions in one `Vec` sorted by `(start_ms, session_id)`. Session ids
//! are UUIDs held as `u128`, whose canonical lowercase text sorts exactly like the number, so
//! the wire order and the in-memory order agree. A page is a binary search to the token's
//! position plus a short scan: cheap even with millions of sessions in a portal. An offset
//! page (offset tokens) is a slice cut when no per-session filter applies, else a scan.
//!
//! Physical data: every Terminated session has `start <= end <= now` and every Active one
//! `start <= now`, for generated sessions and for those the activity methods add or end; the
//! clock never goes back, so this stays true as it moves.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::accounts::arn_account;
use crate::rng::{mix64, random_uuid, uuid_string, SplitMix64};
use crate::{SimClock, SimConfig, SimSession};

pub(crate) const MINUTE_MS: i64 = 60_000;
pub(crate) const HOUR_MS: i64 = 60 * MINUTE_MS;
pub(crate) const DAY_MS: i64 = 24 * HOUR_MS;

/// `Sess::user` when the session has no username.
const NO_USER: u16 = u16::MAX;

const FIRST_NAMES: [&str; 25] = [
    "alice", "bruno", "chen", "dana", "emeka", "fatima", "george", "hana", "ivan", "jasmine",
    "kofi", "lena", "mateo", "nadia", "oscar", "priya", "quentin", "rosa", "sven", "tomoko",
    "umar", "valeria", "wei", "ximena", "yusuf",
];
const LAST_NAMES: [&str; 25] = [
    "smith",
    "garcia",
    "kim",
    "muller",
    "rossi",
    "nguyen",
    "kowalski",
    "okafor",
    "silva",
    "tanaka",
    "dubois",
    "novak",
    "haddad",
    "johansson",
    "petrov",
    "mensah",
    "costa",
    "ivanova",
    "schmidt",
    "moreau",
    "sato",
    "lopez",
    "brown",
    "yilmaz",
    "andersen",
];
/// How many distinct users sessions are spread over: few enough that per-user queries
/// return many sessions.
const USER_POOL: usize = 50;

/// Session ids are random, so their low bits already hash well.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix64(self.0 ^ u64::from(b));
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = mix64((v as u64) ^ ((v >> 64) as u64));
    }
}

type IdMap = HashMap<u128, u32, BuildHasherDefault<IdHasher>>;
/// Session ids, e.g. those ListSessions must leave out.
pub(crate) type IdSet = HashSet<u128, BuildHasherDefault<IdHasher>>;

/// One session, compactly: formatted to text only when served.
#[derive(Clone, Debug)]
pub(crate) struct Sess {
    pub id: u128,
    pub start_ms: i64,
    /// `None` while the session is Active.
    pub end_ms: Option<i64>,
    user: u16,
    ips: [u32; 2],
    n_ips: u8,
}

impl Sess {
    pub(crate) fn key(&self) -> (i64, u128) {
        (self.start_ms, self.id)
    }

    pub(crate) fn is_active(&self) -> bool {
        self.end_ms.is_none()
    }

    pub(crate) fn status(&self) -> &'static str {
        if self.is_active() {
            "Active"
        } else {
            "Terminated"
        }
    }

    pub(crate) fn client_ips(&self) -> impl Iterator<Item = String> + '_ {
        self.ips[..usize::from(self.n_ips)]
            .iter()
            .map(|&ip| Ipv4Addr::from(ip).to_string())
    }
}

/// The simulated clock: `base_ms`, plus, with [`SimClock::Wall`], the wall time elapsed since
/// the data was generated times the scale. It never goes back.
#[derive(Debug)]
pub(crate) struct Clock {
    base_ms: i64,
    /// Wall-clock start and simulated milliseconds per wall millisecond.
    wall: Option<(Instant, f64)>,
}

impl Clock {
    fn fixed(ms: i64) -> Clock {
        Clock {
            base_ms: ms,
            wall: None,
        }
    }

    pub(crate) fn now_ms(&self) -> i64 {
        match self.wall {
            None => self.base_ms,
            Some((t0, scale)) => {
                let moved = t0.elapsed().as_secs_f64() * 1000.0 * scale;
                self.base_ms.saturating_add(moved as i64)
            }
        }
    }

    /// Moves the clock forward by `ms`; a negative step is ignored.
    pub(crate) fn advance(&mut self, ms: i64) {
        self.base_ms = self.base_ms.saturating_add(ms.max(0));
    }

    /// Moves the clock forward to `ms` if it is behind it.
    fn reach(&mut self, ms: i64) {
        let now = self.now_ms();
        if ms > now {
            self.base_ms += ms - now;
        }
    }
}

pub(crate) struct Portal {
    pub id: String,
    pub arn: String,
    pub display_name: String,
    pub created_ms: i64,
    /// Sorted by `(start_ms, id)`; new sessions always start after the newest, so positions
    /// never move.
    pub sessions: Vec<Sess>,
    by_id: IdMap,
    /// Positions of the Active sessions, ascending.
    active: Vec<u32>,
    /// One bit per position: the session was in a ListSessions page sent whole. Atomic, so
    /// pages served under the read lock can mark it.
    served: Vec<AtomicU64>,
}

impl Portal {
    fn rebuild_indexes(&mut self) {
        self.by_id = IdMap::with_capacity_and_hasher(self.sessions.len(), Default::default());
        self.active.clear();
        for (pos, s) in self.sessions.iter().enumerate() {
            self.by_id.insert(s.id, pos as u32);
            if s.is_active() {
                self.active.push(pos as u32);
            }
        }
        self.served
            .resize_with(self.sessions.len().div_ceil(64), AtomicU64::default);
    }

    pub(crate) fn position(&self, id: u128) -> Option<usize> {
        self.by_id.get(&id).map(|&p| p as usize)
    }

    /// Notes that these sessions were sent in a listing.
    pub(crate) fn mark_served<'a>(&self, page: impl IntoIterator<Item = &'a Sess>) {
        for s in page {
            if let Some(pos) = self.position(s.id) {
                self.served[pos / 64].fetch_or(1 << (pos % 64), Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn was_served(&self, pos: usize) -> bool {
        self.served[pos / 64].load(Ordering::Relaxed) & (1 << (pos % 64)) != 0
    }
}

/// Which users a query asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UserFilter {
    Any,
    Is(u16),
    /// A username no session has: the answer is empty.
    Nobody,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusFilter {
    Any,
    Active,
    Terminated,
}

/// One ListSessions question, already validated.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionQuery {
    pub descending: bool,
    pub user: UserFilter,
    /// `Some(None)`: a session id was asked for that this portal does not hold.
    pub session_id: Option<Option<u128>>,
    pub status: StatusFilter,
    /// Keyset position: the last `(start_ms, id)` already served.
    pub after: Option<(i64, u128)>,
    /// Offset position: how many matching sessions of the current listing to skip (with
    /// `after` `None`).
    pub skip: usize,
    pub max: usize,
}

/// Which of the held sessions [`World::record_of`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordView {
    /// Every session held.
    All,
    /// Not past retention now.
    Listable,
    /// Not past retention at some moment since the start: the clock never goes back, so
    /// those not past the retention cutoff at the start.
    EverListable,
    /// In a ListSessions page sent whole at least once.
    Served,
}

pub(crate) struct World {
    pub cfg: SimConfig,
    pub clock: Clock,
    /// The retention cutoff when the data was generated: the lowest there has been.
    pub first_cutoff_ms: i64,
    pub portals: Vec<Portal>,
    portal_pos: HashMap<String, usize>,
    users: Vec<String>,
    user_pos: HashMap<String, u16>,
    /// Drives activity (new sessions); generation of portals uses per-portal streams.
    rng: SplitMix64,
}

fn user_pool() -> Vec<String> {
    (0..USER_POOL)
        .map(|i| {
            let first = FIRST_NAMES[i % FIRST_NAMES.len()];
            let last = LAST_NAMES[(i * 7 + i / FIRST_NAMES.len()) % LAST_NAMES.len()];
            format!("{first}.{last}{}@example.com", i + 1)
        })
        .collect()
}

fn random_ip(rng: &mut SplitMix64) -> u32 {
    let r = rng.next_u64();
    if r & 1 == 0 {
        // 10.x.y.z, avoiding .0 and .255 in the last octet.
        u32::from_be_bytes([
            10,
            (r >> 8) as u8,
            (r >> 16) as u8,
            1 + ((r >> 24) % 254) as u8,
        ])
    } else {
        u32::from_be_bytes([203, 0, 113, 1 + ((r >> 8) % 254) as u8])
    }
}

/// The region and account of portal `k`: region `regions[k % R]` (or `region`), account
/// `accounts[(k / R) % A]` (or `account_id`), so the first `R * A` portals cover every
/// region and account pair; with `accounts_with_portals` `K`, `A` is `K` (the first `K`
/// accounts hold every portal).
pub(crate) fn portal_home(cfg: &SimConfig, k: usize) -> (&str, &str) {
    let r = cfg.regions.len();
    let region = match r {
        0 => &cfg.region,
        n => &cfg.regions[k % n],
    };
    let account = match cfg.accounts.len() {
        0 => &cfg.account_id,
        n => {
            let holders = match cfg.accounts_with_portals {
                0 => n,
                k => k.min(n),
            };
            &cfg.accounts[(k / r.max(1)) % holders]
        }
    };
    (region, account)
}

impl World {
    pub(crate) fn generate(cfg: SimConfig) -> World {
        let users = user_pool();
        let user_pos = users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.clone(), i as u16))
            .collect();
        let mut world = World {
            clock: Clock::fixed(cfg.now_ms),
            first_cutoff_ms: cfg.now_ms - i64::from(cfg.retention_days) * DAY_MS,
            rng: SplitMix64::new(mix64(cfg.seed ^ 0xAC71_7171)),
            cfg,
            portals: Vec::new(),
            portal_pos: HashMap::new(),
            users,
            user_pos,
        };
        for _ in 0..world.cfg.portals {
            world.add_portal();
        }
        // The data is generated at a fixed instant; a wall clock runs from here on.
        if let SimClock::Wall { scale } = world.cfg.clock {
            world.clock.wall = Some((Instant::now(), scale));
        }
        world
    }

    /// The simulated clock (epoch ms).
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Sessions that started before this are past retention: held, but no longer served.
    pub(crate) fn retention_cutoff_ms(&self) -> i64 {
        self.retention_cutoff_at(self.now_ms())
    }

    /// The retention cutoff when the clock reads `now_ms`.
    pub(crate) fn retention_cutoff_at(&self, now_ms: i64) -> i64 {
        now_ms - i64::from(self.cfg.retention_days) * DAY_MS
    }

    pub(crate) fn portal(&self, id: &str) -> Option<&Portal> {
        self.portal_pos.get(id).map(|&i| &self.portals[i])
    }

    /// The ids of the portals not deleted, in creation order.
    pub(crate) fn portal_ids(&self) -> Vec<String> {
        self.portals
            .iter()
            .filter(|p| self.exists(p))
            .map(|p| p.id.clone())
            .collect()
    }

    /// Whether `p` still exists (was not deleted).
    pub(crate) fn exists(&self, p: &Portal) -> bool {
        self.portal_pos.contains_key(&p.id)
    }

    /// Deletes a portal, as DeletePortal does: from now on ListPortals omits it, and its
    /// ListSessions and GetSession are ResourceNotFoundException. Its sessions stay in the
    /// record (they happened), but are no longer listable. False if no such portal exists.
    pub(crate) fn delete_portal(&mut self, id: &str) -> bool {
        self.portal_pos.remove(id).is_some()
    }

    /// Whether a caller of `account` sees `p`: always without `accounts`.
    pub(crate) fn in_account(&self, p: &Portal, account: &str) -> bool {
        self.cfg.accounts.is_empty() || arn_account(&p.arn) == account
    }

    pub(crate) fn username(&self, s: &Sess) -> Option<&str> {
        (s.user != NO_USER).then(|| self.users[usize::from(s.user)].as_str())
    }

    pub(crate) fn user_filter(&self, username: Option<&str>) -> UserFilter {
        match username {
            None => UserFilter::Any,
            Some(name) => match self.user_pos.get(name) {
                Some(&i) => UserFilter::Is(i),
                None => UserFilter::Nobody,
            },
        }
    }

    /// Creates one more portal with `sessions_per_portal` sessions ending before the clock.
    /// Deterministic: portal `k` of a seed is always the same.
    pub(crate) fn add_portal(&mut self) -> String {
        let k = self.portals.len() as u64;
        let mut rng = SplitMix64::new(mix64(self.cfg.seed) ^ mix64(0x1000 + k));
        let id = uuid_string(random_uuid(&mut rng));
        let (region, account) = portal_home(&self.cfg, k as usize);
        let arn = format!("arn:aws:workspaces-web:{region}:{account}:portal/{id}");
        let history_ms = i64::from(self.cfg.history_days) * DAY_MS;
        let created_ms = self.now_ms() - history_ms - rng.range_i64(DAY_MS, 90 * DAY_MS);
        let sessions = self.generate_sessions(&mut rng, history_ms);
        let mut portal = Portal {
            display_name: format!("Portal {}", k + 1),
            id: id.clone(),
            arn,
            created_ms,
            sessions,
            by_id: IdMap::default(),
            active: Vec::new(),
            served: Vec::new(),
        };
        portal.rebuild_indexes();
        self.portal_pos.insert(id.clone(), self.portals.len());
        self.portals.push(portal);
        id
    }

    fn random_user(&self, rng: &mut SplitMix64) -> u16 {
        // About 1% of sessions carry no username.
        if rng.below(100) == 0 {
            NO_USER
        } else {
            rng.below(self.users.len() as u64) as u16
        }
    }

    fn random_session(&self, rng: &mut SplitMix64, start_ms: i64, end_ms: Option<i64>) -> Sess {
        let user = self.random_user(rng);
        let n_ips = 1 + rng.below(2) as u8;
        let ips = [random_ip(rng), random_ip(rng)];
        Sess {
            id: random_uuid(rng),
            start_ms,
            end_ms,
            user,
            ips,
            n_ips,
        }
    }

    fn generate_sessions(&self, rng: &mut SplitMix64, history_ms: i64) -> Vec<Sess> {
        let now = self.now_ms();
        let n = self.cfg.sessions_per_portal;
        let mut sessions: Vec<Sess> = Vec::with_capacity(n);
        for i in 0..n {
            let duration = rng.range_i64(2 * MINUTE_MS, 8 * HOUR_MS);
            // About 1% start in the same millisecond as another session: the id breaks the tie.
            let start = if i > 0 && rng.below(100) == 0 {
                sessions[i - 1].start_ms
            } else {
                rng.range_i64(now - history_ms, now - duration)
            };
            let end = (start + duration).min(now);
            sessions.push(self.random_session(rng, start, Some(end)));
        }
        sessions.sort_unstable_by_key(Sess::key);
        let active = self.cfg.active_per_portal.min(n);
        for s in &mut sessions[n - active..] {
            s.end_ms = None;
        }
        sessions
    }

    /// Appends `n` sessions starting after the portal's newest and after the clock, and moves
    /// the clock past them (so they have started, and those that ended have ended, by then);
    /// the `active` newest of them stay Active.
    pub(crate) fn add_sessions(&mut self, portal: usize, n: usize, active: usize) -> Vec<u128> {
        let mut rng = self.rng.clone();
        let now = self.now_ms();
        let newest = self.portals[portal].sessions.last().map(|s| s.start_ms);
        let mut start = newest.unwrap_or(i64::MIN).max(now);
        let mut new_now = now;
        let mut added = Vec::with_capacity(n);
        let mut fresh = Vec::with_capacity(n);
        for i in 0..n {
            start += rng.range_i64(1, 30_000);
            let end = if i + active >= n {
                None
            } else {
                Some(start + rng.range_i64(2 * MINUTE_MS, 20 * MINUTE_MS))
            };
            new_now = new_now.max(end.unwrap_or(start));
            let s = self.random_session(&mut rng, start, end);
            added.push(s.id);
            fresh.push(s);
        }
        self.rng = rng;
        if n > 0 {
            self.clock.reach(new_now + 1_000);
        }
        let p = &mut self.portals[portal];
        for s in fresh {
            let pos = p.sessions.len() as u32;
            p.by_id.insert(s.id, pos);
            if s.is_active() {
                p.active.push(pos);
            }
            p.sessions.push(s);
        }
        p.served
            .resize_with(p.sessions.len().div_ceil(64), AtomicU64::default);
        added
    }

    /// Ends up to `n` Active sessions, oldest first, at the current clock.
    pub(crate) fn end_active(&mut self, portal: Option<usize>, n: usize) -> Vec<u128> {
        let mut candidates: Vec<(i64, u128, usize, u32)> = Vec::new();
        let range = match portal {
            Some(p) => p..p + 1,
            None => 0..self.portals.len(),
        };
        for pi in range {
            let p = &self.portals[pi];
            candidates.extend(p.active.iter().take(n).map(|&pos| {
                let s = &p.sessions[pos as usize];
                (s.start_ms, s.id, pi, pos)
            }));
        }
        candidates.sort_unstable();
        candidates.truncate(n);
        let now = self.now_ms();
        let mut ended = Vec::with_capacity(candidates.len());
        for &(start, id, pi, pos) in &candidates {
            let p = &mut self.portals[pi];
            p.sessions[pos as usize].end_ms = Some(now.max(start));
            p.active.retain(|&a| a != pos);
            ended.push(id);
        }
        ended
    }

    pub(crate) fn to_sim_session(&self, p: &Portal, s: &Sess) -> SimSession {
        SimSession {
            portal_id: p.id.clone(),
            portal_arn: p.arn.clone(),
            session_id: uuid_string(s.id),
            username: self.username(s).map(str::to_owned),
            status: s.status().to_owned(),
            start_time_ms: s.start_ms,
            end_time_ms: s.end_ms,
            client_ip_addresses: s.client_ips().collect(),
        }
    }

    pub(crate) fn record(&self) -> Vec<SimSession> {
        self.record_of(RecordView::All)
    }

    /// The sessions of one view, per portal in creation order, then by `(start_ms, id)`.
    pub(crate) fn record_of(&self, view: RecordView) -> Vec<SimSession> {
        let cutoff = match view {
            RecordView::Listable => self.retention_cutoff_ms(),
            RecordView::EverListable => self.first_cutoff_ms,
            RecordView::All | RecordView::Served => i64::MIN,
        };
        let mut out = Vec::new();
        for p in &self.portals {
            if view == RecordView::Listable && !self.exists(p) {
                continue;
            }
            let lo = p.sessions.partition_point(|s| s.start_ms < cutoff);
            out.extend(
                p.sessions
                    .iter()
                    .enumerate()
                    .skip(lo)
                    .filter(|&(pos, _)| view != RecordView::Served || p.was_served(pos))
                    .map(|(_, s)| self.to_sim_session(p, s)),
            );
        }
        out
    }

    /// A session GetSession may return: held and not past retention.
    pub(crate) fn visible_session<'a>(&self, p: &'a Portal, id: u128) -> Option<&'a Sess> {
        let s = &p.sessions[p.position(id)?];
        (s.start_ms >= self.retention_cutoff_ms()).then_some(s)
    }

    /// Whether `s` is in the listing `q` asks for (retention aside).
    fn matches(q: &SessionQuery, hidden: &IdSet, s: &Sess) -> bool {
        let user_ok = match q.user {
            UserFilter::Any => true,
            UserFilter::Is(u) => s.user == u,
            UserFilter::Nobody => false,
        };
        let status_ok = match q.status {
            StatusFilter::Any => true,
            StatusFilter::Active => s.is_active(),
            StatusFilter::Terminated => !s.is_active(),
        };
        user_ok && status_ok && !hidden.contains(&s.id)
    }

    /// One offset page: the current listing (after retention and `hidden`) without its first
    /// `q.skip` sessions, at most `q.max` of them, and whether more follow.
    fn list_offset<'a>(
        &self,
        p: &'a Portal,
        q: &SessionQuery,
        hidden: &IdSet,
        lo: usize,
    ) -> (Vec<&'a Sess>, bool) {
        fn page<'a>(
            it: impl Iterator<Item = &'a Sess>,
            keep: impl Fn(&Sess) -> bool,
            skip: usize,
            max: usize,
        ) -> (Vec<&'a Sess>, bool) {
            let mut v: Vec<&Sess> = it.filter(|s| keep(s)).skip(skip).take(max + 1).collect();
            let more = v.len() > max;
            v.truncate(max);
            (v, more)
        }
        /// The part of `v` (in ascending order) left after skipping `skip` in listing order.
        fn cut<T>(v: &[T], skip: usize, descending: bool) -> &[T] {
            let skip = skip.min(v.len());
            if descending {
                &v[..v.len() - skip]
            } else {
                &v[skip..]
            }
        }
        let all = &p.sessions;
        let keep = |s: &Sess| Self::matches(q, hidden, s);
        if let Some(wanted) = q.session_id {
            let one = wanted
                .and_then(|id| p.position(id))
                .filter(|&pos| pos >= lo)
                .map(|pos| &all[pos]);
            return page(one.into_iter(), keep, q.skip, q.max);
        }
        // No per-session filter left: the offset is a position in the candidates.
        let plain = q.user == UserFilter::Any && hidden.is_empty();
        if q.status == StatusFilter::Active {
            let act = &p.active[p.active.partition_point(|&pos| (pos as usize) < lo)..];
            let (act, skip) = if plain {
                (cut(act, q.skip, q.descending), 0)
            } else {
                (act, q.skip)
            };
            let it = act.iter().map(|&pos| &all[pos as usize]);
            return if q.descending {
                page(it.rev(), keep, skip, q.max)
            } else {
                page(it, keep, skip, q.max)
            };
        }
        let plain = plain && q.status == StatusFilter::Any;
        let (cands, skip) = if plain {
            (cut(&all[lo..], q.skip, q.descending), 0)
        } else {
            (&all[lo..], q.skip)
        };
        if q.descending {
            page(cands.iter().rev(), keep, skip, q.max)
        } else {
            page(cands.iter(), keep, skip, q.max)
        }
    }

    /// One page of ListSessions: the matching sessions after `q.after` in the requested order,
    /// and whether more match beyond the page. Sessions in `hidden` are skipped as if they
    /// did not match, so pages stay full and keyset positions stay exact around them.
    pub(crate) fn list_sessions<'a>(
        &self,
        p: &'a Portal,
        q: &SessionQuery,
        hidden: &IdSet,
    ) -> (Vec<&'a Sess>, bool) {
        let all = &p.sessions;
        // One cutoff for the whole call, even with a wall clock running.
        let cutoff = self.retention_cutoff_ms();
        let lo = all.partition_point(|s| s.start_ms < cutoff);
        if q.skip > 0 {
            return self.list_offset(p, q, hidden, lo);
        }
        let matches = |s: &Sess| Self::matches(q, hidden, s);
        let beyond = |s: &Sess| match q.after {
            None => true,
            Some(k) if q.descending => s.key() < k,
            Some(k) => s.key() > k,
        };
        let mut page = Vec::with_capacity(q.max.min(1024) + 1);
        let mut take = |s: &'a Sess| {
            if matches(s) {
                page.push(s);
            }
            page.len() > q.max
        };

        if let Some(wanted) = q.session_id {
            if let Some(pos) = wanted.and_then(|id| p.position(id)) {
                let s = &all[pos];
                if pos >= lo && beyond(s) {
                    take(s);
                }
            }
        } else if q.status == StatusFilter::Active {
            // Few sessions are Active: walk their index instead of the whole portal.
            let act = &p.active;
            if q.descending {
                let end = match q.after {
                    Some(k) => act.partition_point(|&pos| all[pos as usize].key() < k),
                    None => act.len(),
                };
                for &pos in act[..end].iter().rev() {
                    if (pos as usize) < lo || take(&all[pos as usize]) {
                        break;
                    }
                }
            } else {
                let start = act.partition_point(|&pos| {
                    (pos as usize) < lo || q.after.is_some_and(|k| all[pos as usize].key() <= k)
                });
                for &pos in &act[start..] {
                    if take(&all[pos as usize]) {
                        break;
                    }
                }
            }
        } else if q.descending {
            let end = match q.after {
                Some(k) => all.partition_point(|s| s.key() < k),
                None => all.len(),
            };
            for s in all[lo.min(end)..end].iter().rev() {
                if take(s) {
                    break;
                }
            }
        } else {
            let start = match q.after {
                Some(k) => all.partition_point(|s| s.key() <= k).max(lo),
                None => lo,
            };
            for s in &all[start..] {
                if take(s) {
                    break;
                }
            }
        }

        let more = page.len() > q.max;
        page.truncate(q.max);
        (page, more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(sessions: usize, active: usize) -> SimConfig {
        SimConfig {
            seed: 9,
            portals: 2,
            sessions_per_portal: sessions,
            active_per_portal: active,
            history_days: 40,
            retention_days: 35,
            now_ms: 1_764_150_000_000,
            ..SimConfig::default()
        }
    }

    fn query() -> SessionQuery {
        SessionQuery {
            descending: false,
            user: UserFilter::Any,
            session_id: None,
            status: StatusFilter::Any,
            after: None,
            skip: 0,
            max: 7,
        }
    }

    /// Pages through with the given query and returns every key served.
    fn drain(w: &World, p: &Portal, q: SessionQuery) -> Vec<(i64, u128)> {
        drain_hiding(w, p, q, &IdSet::default())
    }

    /// Pages through, leaving out `hidden`, and returns every key served.
    fn drain_hiding(w: &World, p: &Portal, q: SessionQuery, hidden: &IdSet) -> Vec<(i64, u128)> {
        drain_by(w, p, q, hidden, |q, last, _| q.after = Some(last))
    }

    /// Pages through by offset, leaving out `hidden`, and returns every key served.
    fn drain_offset(w: &World, p: &Portal, q: SessionQuery, hidden: &IdSet) -> Vec<(i64, u128)> {
        drain_by(w, p, q, hidden, |q, _, served| q.skip += served)
    }

    /// Pages through, moving `q` on after each page with `next(q, last key, page length)`.
    fn drain_by(
        w: &World,
        p: &Portal,
        mut q: SessionQuery,
        hidden: &IdSet,
        next: impl Fn(&mut SessionQuery, (i64, u128), usize),
    ) -> Vec<(i64, u128)> {
        let mut out = Vec::new();
        loop {
            let (page, more) = w.list_sessions(p, &q, hidden);
            assert!(page.len() <= q.max);
            out.extend(page.iter().map(|s| s.key()));
            if !more {
                return out;
            }
            assert_eq!(page.len(), q.max, "a page with more after it is full");
            next(&mut q, page.last().unwrap().key(), page.len());
        }
    }

    fn expected(w: &World, p: &Portal, q: &SessionQuery) -> Vec<(i64, u128)> {
        let cutoff = w.retention_cutoff_ms();
        let mut v: Vec<(i64, u128)> = p
            .sessions
            .iter()
            .filter(|s| s.start_ms >= cutoff)
            .filter(|s| match q.status {
                StatusFilter::Any => true,
                StatusFilter::Active => s.is_active(),
                StatusFilter::Terminated => !s.is_active(),
            })
            .filter(|s| match q.user {
                UserFilter::Any => true,
                UserFilter::Is(u) => s.user == u,
                UserFilter::Nobody => false,
            })
            .map(Sess::key)
            .collect();
        v.sort();
        if q.descending {
            v.reverse();
        }
        v
    }

    #[test]
    fn generation_is_deterministic_and_well_formed() {
        let a = World::generate(cfg(300, 4));
        let b = World::generate(cfg(300, 4));
        assert_eq!(a.record(), b.record());
        for p in &a.portals {
            assert!(p.sessions.windows(2).all(|w| w[0].key() < w[1].key()));
            assert_eq!(p.active.len(), 4);
            for s in &p.sessions {
                let end = s.end_ms.unwrap_or(a.now_ms());
                assert!(s.start_ms <= end && end <= a.now_ms());
                assert!(s.n_ips >= 1 && s.n_ips <= 2);
            }
            let newest: Vec<bool> = p
                .sessions
                .iter()
                .rev()
                .take(5)
                .map(Sess::is_active)
                .collect();
            assert_eq!(newest, [true, true, true, true, false]);
        }
        let ids: std::collections::HashSet<_> =
            a.record().into_iter().map(|s| s.session_id).collect();
        assert_eq!(ids.len(), 600);
    }

    #[test]
    fn pages_match_a_full_sort_for_every_filter() {
        let w = World::generate(cfg(400, 6));
        let p = &w.portals[0];
        let some_user = p.sessions[10].user;
        assert!(p
            .sessions
            .iter()
            .any(|s| s.start_ms < w.retention_cutoff_ms()));
        for descending in [false, true] {
            for status in [
                StatusFilter::Any,
                StatusFilter::Active,
                StatusFilter::Terminated,
            ] {
                for user in [
                    UserFilter::Any,
                    UserFilter::Is(some_user),
                    UserFilter::Nobody,
                ] {
                    let q = SessionQuery {
                        descending,
                        status,
                        user,
                        ..query()
                    };
                    assert_eq!(drain(&w, p, q), expected(&w, p, &q), "{q:?}");
                }
            }
        }
    }

    #[test]
    fn session_id_filter_and_retention() {
        let w = World::generate(cfg(200, 2));
        let p = &w.portals[1];
        let newest = p.sessions.last().unwrap();
        let q = SessionQuery {
            session_id: Some(Some(newest.id)),
            ..query()
        };
        assert_eq!(drain(&w, p, q), vec![newest.key()]);
        let oldest = &p.sessions[0];
        assert!(oldest.start_ms < w.retention_cutoff_ms());
        let q = SessionQuery {
            session_id: Some(Some(oldest.id)),
            ..query()
        };
        assert!(drain(&w, p, q).is_empty());
        assert!(w.visible_session(p, oldest.id).is_none());
        let q = SessionQuery {
            session_id: Some(None),
            ..query()
        };
        assert!(drain(&w, p, q).is_empty());
    }

    #[test]
    fn hidden_sessions_are_skipped_and_pages_stay_full() {
        let w = World::generate(cfg(300, 6));
        let p = &w.portals[0];
        let cutoff = w.retention_cutoff_ms();
        let listable: Vec<&Sess> = p.sessions.iter().filter(|s| s.start_ms >= cutoff).collect();
        // Runs of neighbours (so whole pages can be hidden), page edges, both ends, and one
        // Active session; page size is 7.
        let mut hidden = IdSet::default();
        for i in [0, 1, 6, 7, 13, 14, 15, 16, 17, 18, 19, 20, 40] {
            hidden.insert(listable[i].id);
        }
        hidden.insert(listable[listable.len() - 1].id);
        hidden.insert(listable[listable.len() - 8].id);
        for descending in [false, true] {
            for status in [
                StatusFilter::Any,
                StatusFilter::Active,
                StatusFilter::Terminated,
            ] {
                let q = SessionQuery {
                    descending,
                    status,
                    ..query()
                };
                let mut want = expected(&w, p, &q);
                want.retain(|k| !hidden.contains(&k.1));
                assert_eq!(drain_hiding(&w, p, q, &hidden), want, "{q:?}");
            }
        }
        let gone = listable[7];
        let q = SessionQuery {
            session_id: Some(Some(gone.id)),
            ..query()
        };
        assert!(drain_hiding(&w, p, q, &hidden).is_empty());
        assert!(w.visible_session(p, gone.id).is_some());
    }

    #[test]
    fn offset_pages_match_a_full_sort_for_every_filter() {
        let w = World::generate(cfg(400, 6));
        let p = &w.portals[0];
        let some_user = p.sessions[10].user;
        let cutoff = w.retention_cutoff_ms();
        let listable: Vec<&Sess> = p.sessions.iter().filter(|s| s.start_ms >= cutoff).collect();
        let mut hidden = IdSet::default();
        for i in [0, 3, 7, 8, 50] {
            hidden.insert(listable[i].id);
        }
        hidden.insert(listable[listable.len() - 1].id);
        for hiding in [IdSet::default(), hidden] {
            for descending in [false, true] {
                for status in [
                    StatusFilter::Any,
                    StatusFilter::Active,
                    StatusFilter::Terminated,
                ] {
                    for user in [UserFilter::Any, UserFilter::Is(some_user)] {
                        let q = SessionQuery {
                            descending,
                            status,
                            user,
                            ..query()
                        };
                        let mut want = expected(&w, p, &q);
                        want.retain(|k| !hiding.contains(&k.1));
                        assert_eq!(drain_offset(&w, p, q, &hiding), want, "{q:?}");
                    }
                }
            }
        }
        let q = SessionQuery {
            session_id: Some(Some(listable[5].id)),
            skip: 1,
            ..query()
        };
        assert!(w.list_sessions(p, &q, &IdSet::default()).0.is_empty());
        let q = SessionQuery {
            skip: listable.len() + 5,
            ..query()
        };
        let (page, more) = w.list_sessions(p, &q, &IdSet::default());
        assert!(page.is_empty() && !more);
    }

    #[test]
    fn offsets_count_in_the_listing_as_it_is_now() {
        let mut w = World::generate(cfg(300, 3));
        let cutoff = w.retention_cutoff_ms();
        let oldest_first: Vec<(i64, u128)> = w.portals[0]
            .sessions
            .iter()
            .filter(|s| s.start_ms >= cutoff)
            .map(Sess::key)
            .collect();
        // Age the 4 oldest listable sessions out: offset 10 now starts 4 further on.
        let step = oldest_first[3].0 - cutoff + 1;
        assert!(
            oldest_first[4].0 - cutoff >= step,
            "distinct starts at the edge"
        );
        w.clock.advance(step);
        let q = SessionQuery {
            skip: 10,
            max: 5,
            ..query()
        };
        let (page, more) = w.list_sessions(&w.portals[0], &q, &IdSet::default());
        let got: Vec<_> = page.iter().map(|s| s.key()).collect();
        assert_eq!(got, oldest_first[14..19]);
        assert!(more);
    }

    #[test]
    fn portals_cover_every_account_and_region_pair() {
        let accounts = vec!["111111111111".to_owned(), "222222222222".to_owned()];
        let regions = vec![
            "us-east-1".to_owned(),
            "eu-west-1".to_owned(),
            "ap-south-1".to_owned(),
        ];
        let w = World::generate(SimConfig {
            portals: 7,
            accounts: accounts.clone(),
            regions: regions.clone(),
            ..cfg(3, 1)
        });
        let pairs: Vec<(&str, &str)> = w
            .portals
            .iter()
            .map(|p| (p.arn.split(':').nth(3).unwrap(), arn_account(&p.arn)))
            .collect();
        let distinct: std::collections::BTreeSet<_> = pairs[..6].iter().collect();
        assert_eq!(distinct.len(), 6, "{pairs:?}");
        // The region rule is the one without accounts.
        for (k, (region, _)) in pairs.iter().enumerate() {
            assert_eq!(*region, regions[k % 3]);
        }
        assert_eq!(pairs[6], ("us-east-1", "111111111111"));
        // Without regions, portal k is in accounts[k % A]; the sessions carry the ARN.
        let w = World::generate(SimConfig {
            portals: 3,
            accounts: accounts.clone(),
            ..cfg(3, 1)
        });
        let owners: Vec<&str> = w.portals.iter().map(|p| arn_account(&p.arn)).collect();
        assert_eq!(owners, [&accounts[0], &accounts[1], &accounts[0]]);
        for s in w.record() {
            let p = w.portal(&s.portal_id).unwrap();
            assert_eq!(s.portal_arn, p.arn);
            assert!(s
                .portal_arn
                .starts_with("arn:aws:workspaces-web:us-east-1:"));
        }
        assert!(w.in_account(&w.portals[1], &accounts[1]));
        assert!(!w.in_account(&w.portals[1], &accounts[0]));
    }

    #[test]
    fn with_accounts_with_portals_only_the_first_accounts_hold_portals() {
        let accounts: Vec<String> = (1..=5).map(|i| format!("{i}{i}{i}{i}00000000")).collect();
        let regions = vec!["us-east-1".to_owned(), "eu-west-1".to_owned()];
        let w = World::generate(SimConfig {
            portals: 9,
            accounts: accounts.clone(),
            accounts_with_portals: 2,
            regions: regions.clone(),
            ..cfg(3, 1)
        });
        let pairs: Vec<(&str, &str)> = w
            .portals
            .iter()
            .map(|p| (p.arn.split(':').nth(3).unwrap(), arn_account(&p.arn)))
            .collect();
        let a = |i: usize| accounts[i].as_str();
        assert_eq!(
            pairs,
            [
                ("us-east-1", a(0)),
                ("eu-west-1", a(0)),
                ("us-east-1", a(1)),
                ("eu-west-1", a(1)),
                ("us-east-1", a(0)),
                ("eu-west-1", a(0)),
                ("us-east-1", a(1)),
                ("eu-west-1", a(1)),
                ("us-east-1", a(0)),
            ]
        );
    }

    #[test]
    fn a_deleted_portal_is_gone_but_its_sessions_stay_in_the_record() {
        let mut w = World::generate(SimConfig {
            portals: 3,
            ..cfg(10, 1)
        });
        let ids = w.portal_ids();
        let all = w.record().len();
        assert!(w.delete_portal(&ids[1]));
        assert!(!w.delete_portal(&ids[1]), "already deleted");
        assert_eq!(w.portal_ids(), [ids[0].clone(), ids[2].clone()]);
        assert!(w.portal(&ids[1]).is_none());
        assert_eq!(w.record().len(), all);
        assert!(w
            .record_of(RecordView::Listable)
            .iter()
            .all(|s| s.portal_id != ids[1]));
        // A portal added later does not take its place.
        let added = w.add_portal();
        assert!(!ids.contains(&added));
    }

    #[test]
    fn the_clock_never_goes_back_and_a_wall_clock_runs() {
        let mut w = World::generate(cfg(10, 1));
        let t0 = w.now_ms();
        w.clock.advance(-5_000);
        assert_eq!(w.now_ms(), t0);
        w.clock.advance(5_000);
        assert_eq!(w.now_ms(), t0 + 5_000);
        let w = World::generate(SimConfig {
            clock: SimClock::Wall { scale: 3_600.0 },
            ..cfg(10, 1)
        });
        let t0 = w.now_ms();
        std::thread::sleep(std::time::Duration::from_millis(20));
        // 20 ms of wall time is at least 72 simulated seconds.
        assert!(w.now_ms() >= t0 + 72_000, "{} vs {t0}", w.now_ms());
    }

    /// `cargo test --release --lib simulator -- --ignored --nocapture`
    #[test]
    #[ignore = "large; meaningful in release mode"]
    fn a_million_sessions_generate_and_page_fast() {
        let t0 = std::time::Instant::now();
        let w = World::generate(SimConfig {
            portals: 1,
            sessions_per_portal: 1_000_000,
            history_days: 30,
            ..cfg(0, 5)
        });
        let generated = t0.elapsed();
        let p = &w.portals[0];
        let mut rng = SplitMix64::new(1);
        let pages = 2_000;
        let t0 = std::time::Instant::now();
        let mut served = 0;
        for i in 0..pages {
            let at = &p.sessions[rng.below(p.sessions.len() as u64 - 200) as usize];
            let q = SessionQuery {
                descending: i % 2 == 0,
                after: Some(at.key()),
                max: 100,
                ..query()
            };
            served += w.list_sessions(p, &q, &IdSet::default()).0.len();
        }
        let per_page = t0.elapsed() / pages;
        assert_eq!(served, 100 * pages as usize);
        eprintln!("1,000,000 sessions generated in {generated:?}; {per_page:?} per page of 100");
        if !cfg!(debug_assertions) {
            assert!(
                generated < std::time::Duration::from_secs(2),
                "{generated:?}"
            );
            assert!(
                per_page < std::time::Duration::from_micros(200),
                "{per_page:?}"
            );
        }
    }

    #[test]
    fn activity_appends_and_ends_oldest_first() {
        let mut w = World::generate(cfg(100, 3));
        let before = w.now_ms();
        let newest = w.portals[0].sessions.last().unwrap().start_ms;
        let added = w.add_sessions(0, 10, 2);
        assert_eq!(added.len(), 10);
        assert!(w.now_ms() > before);
        let p = &w.portals[0];
        assert!(p.sessions.windows(2).all(|w| w[0].key() < w[1].key()));
        let tail = &p.sessions[p.sessions.len() - 10..];
        assert!(tail
            .iter()
            .all(|s| s.start_ms > newest && s.start_ms <= w.now_ms()));
        assert!(tail
            .iter()
            .all(|s| s.end_ms.is_none_or(|e| e <= w.now_ms())));
        assert_eq!(tail.iter().filter(|s| s.is_active()).count(), 2);
        assert_eq!(p.active.len(), 5);

        let oldest_active = p.sessions[p.active[0] as usize].id;
        let ended = w.end_active(Some(0), 1);
        assert_eq!(ended, vec![oldest_active]);
        assert_eq!(w.portals[0].active.len(), 4);
        let ended = w.end_active(None, 100);
        assert_eq!(ended.len(), 4 + 3);
        assert!(w.portals.iter().all(|p| p.active.is_empty()));
        assert!(w.record().iter().all(|s| s.status == "Terminated"));
    }
}
