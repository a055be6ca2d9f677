//! The built-in WorkSpaces Web simulator: a real HTTP/1.1 server on 127.0.0.1 that speaks
//! the service's restJson1 protocol (ListPortals, ListSessions, GetSession) the way the AWS
//! SDKs expect, over deterministic synthetic data. On the same endpoint it also answers STS
//! AssumeRole (awsQuery) and Organizations ListAccounts (JSON 1.1), for several accounts.
//! Used by the demo, the tests and the benchmarks; it never talks to AWS.
//!
//! - [`data`]: portals, sessions, the simulated clock and the paging queries (pure logic).
//! - [`accounts`]: callers, credentials issued by AssumeRole, organization members.
//! - [`rpc`]: the STS and Organizations wire formats.
//! - [`token`]: opaque pagination tokens (keyset or offset) with a keyed checksum.
//! - [`faults`]: throttling, server errors, latency, rate limit, denied portals, dropped
//!   connections, sessions hidden from listings, corrupted listing bodies, single sessions
//!   served oddly.
//! - [`http`]: the hyper server: API routes, error shapes, and the `/_sim/*` control API.
//! - [`wire`]: what both wire formats share (body type, percent-decoding).
//! - [`cli`]: `archiver simulator`, for out-of-process users.
//!
//! The [`Simulator`] handle is the in-process control surface; [`Simulator::record`] is the
//! independent truth tests compare the archive against, with [`Simulator::listable`],
//! [`Simulator::ever_listable`] and [`Simulator::served`] for what could be and was listed.

mod accounts;
mod cli;
mod data;
mod faults;
mod http;
mod rng;
mod rpc;
mod token;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use cli::{run_cli, AccountArgs, ClockArg, SimArgs};
pub use faults::{Faults, CORRUPT_LISTING_MODES, ODD_SESSION_MODES};

use accounts::Identities;
use data::{RecordView, World};
use faults::FaultState;

/// What a ListSessions `nextToken` means. The real service does not say, so the archiver is
/// tested against both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TokenMode {
    /// The token names the last session served: sessions added or aged out between two calls
    /// never make the next page skip or repeat one.
    #[default]
    Keyset,
    /// The token is an offset into the listing as it is at the next call (sorted as asked,
    /// after retention and hidden sessions): when sessions at the front of the listing age
    /// out, the next page skips as many; when new ones arrive at the front, it repeats as many.
    Offset,
}

/// How the simulated clock moves.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum SimClock {
    /// Only through the activity methods, [`Simulator::advance_clock`] and the control API.
    #[default]
    Simulated,
    /// Also with wall time from the moment the data is generated: `scale` simulated
    /// milliseconds per wall millisecond (1.0 = real time, 3600.0 = one hour per second), so
    /// sessions age out of retention while a listing runs. The other ways still move it too.
    Wall { scale: f64 },
}

/// How the simulated account is generated. Same config (and seed) → same data.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub portals: usize,
    pub sessions_per_portal: usize,
    /// The most recent sessions of each portal that are still Active (no end time).
    pub active_per_portal: usize,
    /// Session starts are spread over this many days before `now_ms`.
    pub history_days: u32,
    /// Sessions that started longer ago than this are no longer served, like the real service.
    pub retention_days: u32,
    /// The simulated clock at start; it moves through the activity methods,
    /// [`Simulator::advance_clock`], and with wall time under [`SimClock::Wall`]. Never back.
    pub now_ms: i64,
    /// How the clock moves; default [`SimClock::Simulated`].
    pub clock: SimClock,
    pub region: String,
    /// Several regions: portal `k` lives in `regions[k % len]`, and each call sees only the
    /// portals of the region it was signed for (SigV4 credential scope), like the real
    /// service's regional endpoints. Empty: every portal is in `region` and calls from any
    /// region see them all.
    pub regions: Vec<String>,
    /// The "home" account: the account of every caller whose credentials were not issued by
    /// this simulator's AssumeRole (the job's own account, the organization's management
    /// account). Without `accounts` it holds every portal.
    pub account_id: String,
    /// Member accounts (12 digits) that hold the portals: portal `k` is in
    /// `accounts[(k / R) % A]`, with `R` = `regions.len()` (1 without regions) and `A` =
    /// `accounts.len()`, so the first `R * A` portals cover every account and region pair.
    /// Each WorkSpaces Web call then sees only the portals of its caller's account. Empty:
    /// every portal is in `account_id` and every caller sees them all.
    pub accounts: Vec<String>,
    /// Only the first `K` of `accounts` hold portals (0: all of them): portal `k` is then in
    /// `accounts[(k / R) % K]`, and the other accounts hold none, as in an estate where most
    /// accounts have no portal and a few have many.
    pub accounts_with_portals: usize,
    /// Further organization members, listed by ListAccounts as SUSPENDED; they hold nothing
    /// and AssumeRole into them is denied.
    pub suspended_accounts: Vec<String>,
    /// Wall-clock lifetime of credentials issued by AssumeRole (a `DurationSeconds` asked for
    /// can only shorten it). Shorter than STS's 900 s minimum is allowed, so tests can make
    /// credentials expire during a run. Default 1 h.
    pub credential_ttl: Duration,
    /// When set, AssumeRole without exactly this `ExternalId` is AccessDenied.
    pub external_id: Option<String>,
    /// Wall-clock lifetime of pagination tokens; `None` = until [`Simulator::expire_tokens`].
    pub token_ttl: Option<Duration>,
    /// What ListSessions tokens mean; default [`TokenMode::Keyset`].
    pub token_mode: TokenMode,
}

impl Default for SimConfig {
    fn default() -> Self {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        SimConfig {
            seed: 1,
            portals: 2,
            sessions_per_portal: 500,
            active_per_portal: 5,
            history_days: 30,
            retention_days: 35,
            now_ms: wall_ms - wall_ms.rem_euclid(60_000),
            clock: SimClock::Simulated,
            region: "us-east-1".to_owned(),
            regions: Vec::new(),
            account_id: "123456789012".to_owned(),
            accounts: Vec::new(),
            accounts_with_portals: 0,
            suspended_accounts: Vec::new(),
            credential_ttl: Duration::from_secs(3600),
            external_id: None,
            token_ttl: None,
            token_mode: TokenMode::Keyset,
        }
    }
}

/// One session as the simulator holds it: what the service would return, plus the portal id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimSession {
    pub portal_id: String,
    pub portal_arn: String,
    pub session_id: String,
    pub username: Option<String>,
    /// `"Active"` or `"Terminated"`.
    pub status: String,
    pub start_time_ms: i64,
    /// `None` while Active.
    pub end_time_ms: Option<i64>,
    pub client_ip_addresses: Vec<String>,
}

/// Call counters. Every API call counts towards its operation, including calls answered
/// with an injected fault; `throttled` and `server_errors` count those faults, `dropped`
/// the calls whose connection was closed without an answer, and `client_errors` counts 4xx
/// answers (validation, not found, access denied).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SimStats {
    pub list_portals_calls: u64,
    pub list_sessions_calls: u64,
    pub get_session_calls: u64,
    pub throttled: u64,
    pub server_errors: u64,
    #[serde(default)]
    pub client_errors: u64,
    #[serde(default)]
    pub dropped: u64,
    /// ListSessions calls by the portal id in the request path.
    pub list_sessions_by_portal: BTreeMap<String, u64>,
    /// STS AssumeRole calls, granted or not.
    #[serde(default)]
    pub assume_role_calls: u64,
    /// AssumeRole calls answered AccessDenied.
    #[serde(default)]
    pub assume_role_denied: u64,
    /// AssumeRole calls by the account of the role asked for (calls whose RoleArn names no
    /// account are not in it).
    #[serde(default)]
    pub assume_role_by_account: BTreeMap<String, u64>,
    /// Organizations ListAccounts calls.
    #[serde(default)]
    pub list_accounts_calls: u64,
    /// Calls of any API rejected because their credentials, issued by AssumeRole, had
    /// expired (`ExpiredTokenException`, or `ExpiredToken` from STS).
    #[serde(default)]
    pub expired_credentials: u64,
    /// STS and Organizations calls throttled by the `throttle_rpc_calls` fault (not counted
    /// as AssumeRole or ListAccounts calls).
    #[serde(default)]
    pub rpc_throttled: u64,
}

/// State shared by the handle and the server.
pub(crate) struct Inner {
    world: RwLock<World>,
    faults: Mutex<FaultState>,
    identities: Mutex<Identities>,
    stats: Mutex<SimStats>,
    /// Bumped by `expire_tokens`: tokens from an older epoch are rejected.
    epoch: AtomicU32,
    /// Keys the token checksum; differs per simulator instance.
    secret: u64,
    token_ttl: Option<Duration>,
    addr: SocketAddr,
    request_seq: AtomicU64,
    shutdown: watch::Sender<bool>,
}

/// A poisoned lock only means a panic elsewhere; the data is still usable for a simulator.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn world(&self) -> RwLockReadGuard<'_, World> {
        self.world.read().unwrap_or_else(|e| e.into_inner())
    }

    fn world_mut(&self) -> RwLockWriteGuard<'_, World> {
        self.world.write().unwrap_or_else(|e| e.into_inner())
    }

    fn stats(&self) -> MutexGuard<'_, SimStats> {
        lock(&self.stats)
    }

    fn fault_state(&self) -> MutexGuard<'_, FaultState> {
        lock(&self.faults)
    }

    fn identities(&self) -> MutexGuard<'_, Identities> {
        lock(&self.identities)
    }

    /// Who signed a request with this access key id, now.
    fn caller(&self, access_key: Option<&str>) -> accounts::Caller {
        let w = self.world();
        self.identities()
            .caller(&w.cfg, access_key, accounts::wall_ms())
    }

    fn endpoint_url(&self) -> String {
        let ip = if self.addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            self.addr.ip().to_string()
        };
        format!("http://{ip}:{}", self.addr.port())
    }

    fn set_faults(&self, f: Faults) {
        self.fault_state().set(f, Instant::now());
    }

    /// Runs simulated activity; `None` = every portal, each getting the same activity.
    fn activity(&self, req: &ActivityRequest) -> anyhow::Result<ActivityResult> {
        let mut w = self.world_mut();
        let targets: Vec<usize> = match &req.portal_id {
            Some(id) => {
                let pos = w
                    .portals
                    .iter()
                    .position(|p| &p.id == id)
                    .with_context(|| format!("unknown portal {id}"))?;
                vec![pos]
            }
            None => (0..w.portals.len())
                .filter(|&i| w.exists(&w.portals[i]))
                .collect(),
        };
        w.clock.advance(req.advance_ms.unwrap_or(0));
        let mut result = ActivityResult::default();
        for &p in &targets {
            result.ended.extend(
                w.end_active(Some(p), req.end_active)
                    .into_iter()
                    .map(rng::uuid_string),
            );
        }
        for &p in &targets {
            let added = w.add_sessions(p, req.new_sessions, req.new_active);
            result.added.extend(added.into_iter().map(rng::uuid_string));
        }
        Ok(result)
    }

    fn info(&self) -> SimInfo {
        let w = self.world();
        let (clock, time_scale) = match w.cfg.clock {
            SimClock::Simulated => ("simulated", None),
            SimClock::Wall { scale } => ("wall", Some(scale)),
        };
        // One reading of a running clock for both.
        let now_ms = w.now_ms();
        SimInfo {
            endpoint: self.endpoint_url(),
            now_ms,
            retention_cutoff_ms: w.retention_cutoff_at(now_ms),
            first_retention_cutoff_ms: w.first_cutoff_ms,
            portal_ids: w.portal_ids(),
            portal_arns: w
                .portals
                .iter()
                .filter(|p| w.exists(p))
                .map(|p| p.arn.clone())
                .collect(),
            region: w.cfg.region.clone(),
            account_id: w.cfg.account_id.clone(),
            accounts: w.cfg.accounts.clone(),
            suspended_accounts: w.cfg.suspended_accounts.clone(),
            denied_roles: self.identities().denied(),
            token_epoch: self.epoch.load(Ordering::SeqCst),
            token_mode: w.cfg.token_mode,
            clock: clock.to_owned(),
            time_scale,
        }
    }
}

/// Body of `POST /_sim/deny-role` and `POST /_sim/allow-role`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RoleRequest {
    pub account: String,
}

/// Body of `POST /_sim/advance`: move the simulated clock forward by `seconds` (>= 0).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AdvanceRequest {
    pub seconds: f64,
}

/// Body of `POST /_sim/activity`. Order: advance the clock, end Active sessions, add new ones.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ActivityRequest {
    /// `None` = every portal (each one gets the whole activity).
    pub portal_id: Option<String>,
    pub new_sessions: usize,
    pub new_active: usize,
    pub end_active: usize,
    /// Moves the clock forward first; a negative value is ignored (the clock never goes back).
    pub advance_ms: Option<i64>,
}

/// Answer of `POST /_sim/activity`: session ids added and ended.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ActivityResult {
    pub added: Vec<String>,
    pub ended: Vec<String>,
}

/// Answer of `GET /_sim/info`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SimInfo {
    pub endpoint: String,
    /// The simulated clock (epoch ms), read at the time of the answer.
    pub now_ms: i64,
    /// Sessions that started before this are no longer listed.
    pub retention_cutoff_ms: i64,
    /// The retention cutoff at the start, the lowest there has been: sessions that started at
    /// or after it were listable at some moment.
    #[serde(default)]
    pub first_retention_cutoff_ms: i64,
    pub portal_ids: Vec<String>,
    /// The ARNs of `portal_ids`, in the same order: region and account of each portal.
    #[serde(default)]
    pub portal_arns: Vec<String>,
    pub region: String,
    /// The home account (see [`SimConfig::account_id`]).
    pub account_id: String,
    /// The member accounts holding the portals; empty: all are in `account_id`.
    #[serde(default)]
    pub accounts: Vec<String>,
    #[serde(default)]
    pub suspended_accounts: Vec<String>,
    /// Accounts whose roles AssumeRole currently refuses ([`Simulator::deny_role`]).
    #[serde(default)]
    pub denied_roles: Vec<String>,
    pub token_epoch: u32,
    #[serde(default)]
    pub token_mode: TokenMode,
    /// `"simulated"` or `"wall"`.
    #[serde(default)]
    pub clock: String,
    /// Simulated ms per wall ms with the wall clock; `None` otherwise.
    #[serde(default)]
    pub time_scale: Option<f64>,
}

/// Cheap-clone handle to a running simulator. The server runs on the tokio runtime that
/// started it until [`Simulator::shutdown`] or until that runtime ends.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

impl Simulator {
    /// Generates the data and serves on 127.0.0.1 on a free port.
    pub async fn start(cfg: SimConfig) -> anyhow::Result<Simulator> {
        Self::start_on(cfg, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Generates the data and serves on `addr`.
    pub async fn start_on(cfg: SimConfig, addr: SocketAddr) -> anyhow::Result<Simulator> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the simulator to {addr}"))?;
        let addr = listener.local_addr().context("simulator local address")?;
        let seed = cfg.seed;
        let token_ttl = cfg.token_ttl;
        for id in std::iter::once(&cfg.account_id)
            .chain(&cfg.accounts)
            .chain(&cfg.suspended_accounts)
        {
            anyhow::ensure!(
                accounts::is_account_id(id),
                "simulator account ids are 12 digits, got {id:?}"
            );
        }
        // Millions of sessions take a moment to generate: keep that off the async workers.
        let world = tokio::task::spawn_blocking(move || World::generate(cfg))
            .await
            .context("generating simulator data")?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            world: RwLock::new(world),
            faults: Mutex::new(FaultState::new(rng::mix64(seed ^ 0xFA17))),
            identities: Mutex::new(Identities::default()),
            stats: Mutex::new(SimStats::default()),
            epoch: AtomicU32::new(1),
            secret: instance_secret(seed, addr),
            token_ttl,
            addr,
            request_seq: AtomicU64::new(0),
            shutdown,
        });
        tokio::spawn(http::serve(listener, inner.clone(), shutdown_rx));
        Ok(Simulator { inner })
    }

    /// `http://127.0.0.1:PORT`, for `endpoint_url` / `AWS_ENDPOINT_URL_WORKSPACES_WEB`.
    pub fn endpoint_url(&self) -> String {
        self.inner.endpoint_url()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Portal ids in creation order (the order ListPortals returns them), deleted ones left out.
    pub fn portal_ids(&self) -> Vec<String> {
        self.inner.world().portal_ids()
    }

    pub fn portal_arn(&self, portal_id: &str) -> Option<String> {
        self.inner.world().portal(portal_id).map(|p| p.arn.clone())
    }

    /// The ids of the portals in `account`, in creation order: those its callers list. Without
    /// [`SimConfig::accounts`], every portal is in [`SimConfig::account_id`].
    pub fn portal_ids_in(&self, account: &str) -> Vec<String> {
        let w = self.inner.world();
        w.portals
            .iter()
            .filter(|p| accounts::arn_account(&p.arn) == account && w.exists(p))
            .map(|p| p.id.clone())
            .collect()
    }

    /// From now on, AssumeRole into any role of `account` is AccessDenied (credentials
    /// already issued keep working until they expire).
    pub fn deny_role(&self, account: &str) {
        self.inner.identities().deny(account);
    }

    /// Undoes [`Simulator::deny_role`].
    pub fn allow_role(&self, account: &str) {
        self.inner.identities().allow(account);
    }

    /// AssumeRole calls for roles in `account`, granted or denied (see [`SimStats`]).
    pub fn assume_role_calls(&self, account: &str) -> u64 {
        self.inner
            .stats()
            .assume_role_by_account
            .get(account)
            .copied()
            .unwrap_or(0)
    }

    /// Every session held, including those past retention, with its current status; per
    /// portal in creation order, then by `(start_time_ms, session_id)`.
    pub fn record(&self) -> Vec<SimSession> {
        self.inner.world().record()
    }

    /// The sessions ListSessions can currently return (started at or after the retention
    /// cutoff), in the same order as [`Simulator::record`]. Hidden sessions (a fault) are
    /// included. With a wall clock this is true of the moment of the call.
    pub fn listable(&self) -> Vec<SimSession> {
        self.inner.world().record_of(RecordView::Listable)
    }

    /// The sessions ListSessions could return at some moment since the start: those that
    /// started at or after the first retention cutoff (the clock never goes back). Sessions
    /// in it but not in [`Simulator::listable`] have aged out. Same order as the record.
    pub fn ever_listable(&self) -> Vec<SimSession> {
        self.inner.world().record_of(RecordView::EverListable)
    }

    /// The sessions ListSessions has sent in at least one page (a page cut off by the
    /// `bad_json` fault does not count), with their current status; same order as the record.
    pub fn served(&self) -> Vec<SimSession> {
        self.inner.world().record_of(RecordView::Served)
    }

    /// The simulated clock (epoch ms).
    pub fn now_ms(&self) -> i64 {
        self.inner.world().now_ms()
    }

    /// What ListSessions tokens mean in this simulator.
    pub fn token_mode(&self) -> TokenMode {
        self.inner.world().cfg.token_mode
    }

    /// Sessions that started before this are no longer served.
    pub fn retention_cutoff_ms(&self) -> i64 {
        self.inner.world().retention_cutoff_ms()
    }

    pub fn config(&self) -> SimConfig {
        self.inner.world().cfg.clone()
    }

    /// Moves the simulated clock forward by `ms` milliseconds: sessions that started before
    /// the new retention cutoff vanish from every listing and from GetSession at once. A
    /// negative `ms` is ignored: the clock never goes back.
    pub fn advance_clock(&self, ms: i64) {
        self.inner.world_mut().clock.advance(ms);
    }

    /// [`Simulator::advance_clock`] by a `Duration`.
    pub fn advance_clock_by(&self, by: Duration) {
        self.advance_clock(i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
    }

    /// Creates `n` sessions in the portal, all starting after its newest one and after the
    /// clock, and moves the clock past them; the `active` newest of them are still Active. Returns their ids in
    /// start order; empty for an unknown portal.
    pub fn add_sessions(&self, portal_id: &str, n: usize, active: usize) -> Vec<String> {
        let mut w = self.inner.world_mut();
        let Some(pos) = w.portals.iter().position(|p| p.id == portal_id) else {
            return Vec::new();
        };
        w.add_sessions(pos, n, active)
            .into_iter()
            .map(rng::uuid_string)
            .collect()
    }

    /// Ends up to `n` Active sessions, oldest first, at the current clock. `None` = the `n`
    /// oldest across all portals. Returns the ids ended.
    pub fn end_active(&self, portal_id: Option<&str>, n: usize) -> Vec<String> {
        let mut w = self.inner.world_mut();
        let portal = match portal_id {
            Some(id) => match w.portals.iter().position(|p| p.id == id) {
                Some(pos) => Some(pos),
                None => return Vec::new(),
            },
            None => None,
        };
        w.end_active(portal, n)
            .into_iter()
            .map(rng::uuid_string)
            .collect()
    }

    /// Creates a portal with `sessions_per_portal` sessions; returns its id.
    pub fn add_portal(&self) -> String {
        self.inner.world_mut().add_portal()
    }

    /// Deletes a portal, as WorkSpaces Web's DeletePortal does: ListPortals no longer returns
    /// it, and ListSessions and GetSession on it are `404 ResourceNotFoundException`. Its
    /// sessions stay in [`Simulator::record`] but leave [`Simulator::listable`]. Returns false
    /// if no such portal exists (or it was deleted already).
    pub fn delete_portal(&self, portal_id: &str) -> bool {
        self.inner.world_mut().delete_portal(portal_id)
    }

    /// Replaces every fault knob at once. Unlike `POST /_sim/faults` this does not call
    /// [`Faults::validate`]: an unknown `corrupt_listing` mode corrupts nothing.
    pub fn set_faults(&self, f: Faults) {
        self.inner.set_faults(f);
    }

    pub fn faults(&self) -> Faults {
        self.inner.fault_state().faults.clone()
    }

    /// Invalidates every pagination token issued so far.
    pub fn expire_tokens(&self) {
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
    }

    pub fn stats(&self) -> SimStats {
        self.inner.stats().clone()
    }

    pub fn reset_stats(&self) {
        *self.inner.stats() = SimStats::default();
    }

    /// Stops accepting connections and closes open ones. Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

/// A checksum key no other simulator instance shares, so tokens cannot cross instances.
fn instance_secret(seed: u64, addr: SocketAddr) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let salt = (u64::from(addr.port()) << 32) | u64::from(std::process::id());
    rng::mix64(seed ^ rng::mix64(nanos ^ rng::mix64(salt)))
}
