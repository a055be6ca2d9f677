//! Discover: the portals to archive, and where each is reached (its account and region).
//!
//! Without `--accounts` or `--organization`, one client per region with the SDK chain's own
//! credentials, for the whole run. With them, discovery takes the accounts `--concurrency` at
//! a time: each account's role is assumed (STS AssumeRole, through the run's one STS client),
//! its regions' portals are listed, and its clients are dropped. What discovery keeps is a
//! compact list of portals, each with its account and region, and the role check's
//! credentials of the accounts that have portals. An account's clients are made again when its
//! portals are archived ([`Clients`]) and dropped once they are done, so memory follows the
//! accounts in flight, not the accounts of the run. An account whose role cannot be assumed,
//! or whose ListPortals fails, is recorded as failed and the others go on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::Credentials;
use aws_sdk_sts::operation::assume_role::builders::AssumeRoleFluentBuilder;
use aws_sdk_workspacesweb::config::{ProvideCredentials, SharedCredentialsProvider};
use tracing::{debug, error, info};

use crate::aws::AwsError;
use crate::config::{AccountRole, Accounts, Config};
use crate::error::Interrupted;
use crate::model::PortalId;
use crate::sink::Sink;
use crate::source::{CallStats, FetchError, Source};
use crate::state::StateHandle;

/// Where a portal is reached: through the role of `account` (`None`: the job's own
/// credentials), in `region`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    pub account: Option<String>,
    pub region: String,
}

/// An account the run could not archive (fully), and why.
#[derive(Clone, Debug)]
pub struct AccountFailure {
    pub account: String,
    pub error: String,
}

/// The accounts and regions of a run, what makes their clients, and the accounts that could
/// not be reached.
pub struct Sources {
    regions: Vec<String>,
    /// Every account tried, in order (empty without `--accounts`/`--organization`).
    pub accounts: Vec<String>,
    /// `(account, role ARN)` of each account tried, in the order of `accounts`.
    pub roles: Vec<(String, String)>,
    pub failed: Vec<AccountFailure>,
    maker: Maker,
    /// The role check's credentials of each account with portals, until its clients take them
    /// (so one AssumeRole per account serves discovery and its first hour of archiving).
    checked: Mutex<HashMap<String, Credentials>>,
}

/// What makes the clients; cheap to clone into discovery's tasks.
#[derive(Clone)]
struct Maker {
    /// The job's configuration (with `--max-attempts` for STS and Organizations).
    sdk: aws_config::SdkConfig,
    max_attempts: u32,
    stop: Arc<AtomicBool>,
    /// Every source's calls, for the run's totals.
    stats: Arc<CallStats>,
    /// With accounts: AssumeRole through the run's one STS client, with the session name and
    /// external id; each account sets its role ARN.
    assume: Option<AssumeRoleFluentBuilder>,
    role: Option<AccountRole>,
    /// Without accounts: one source per region, for the whole run.
    own: Arc<Vec<(String, Source)>>,
}

impl Sources {
    fn fail(&mut self, account: &str, error: String) {
        error!(account_id = %account, error = %error, "account failed; the other accounts go on");
        match self.failed.iter_mut().find(|f| f.account == account) {
            Some(f) => {
                f.error.push_str("; ");
                f.error.push_str(&error);
            }
            None => self.failed.push(AccountFailure {
                account: account.to_string(),
                error,
            }),
        }
    }

    /// Where discovery looked: `regions R, ...`, or `accounts A, ... (regions R, ...)` for
    /// the accounts reached (the first ten of more, and how many).
    pub fn searched(&self) -> String {
        let regions = format!("regions {}", self.regions.join(", "));
        if self.accounts.is_empty() {
            return regions;
        }
        let failed: HashSet<&str> = self.failed.iter().map(|f| f.account.as_str()).collect();
        let reached: Vec<&str> = self
            .accounts
            .iter()
            .map(String::as_str)
            .filter(|a| !failed.contains(a))
            .collect();
        const SHOWN: usize = 10;
        let list = match reached.len() {
            n if n <= SHOWN => reached.join(", "),
            n => format!("{}, … ({n} accounts)", reached[..SHOWN].join(", ")),
        };
        format!("accounts {list} ({regions})")
    }

    /// The error for named portals discovery did not find: where it looked, and the accounts
    /// it could not search.
    pub fn not_found(&self, missing: &[String]) -> anyhow::Error {
        let mut where_ = self.searched();
        if let Some(line) = self.failure_line() {
            where_.push_str(&format!("; not searched: {line}"));
        }
        anyhow::anyhow!("portal {} not found in {where_}", missing.join(", "))
    }

    /// One line naming each failed account and why, or `None`.
    pub fn failure_line(&self) -> Option<String> {
        if self.failed.is_empty() {
            return None;
        }
        let list: Vec<String> = self
            .failed
            .iter()
            .map(|f| format!("account {}: {}", f.account, f.error))
            .collect();
        Some(format!(
            "{} of {} accounts failed: {}",
            self.failed.len(),
            self.accounts.len(),
            list.join("; ")
        ))
    }

    /// The WorkSpaces Web calls of every client of the run, discovery's included.
    pub fn stats(&self) -> &CallStats {
        &self.maker.stats
    }

    /// Clients for portals taken one after another (see [`Clients`]).
    pub fn clients(&self) -> Clients<'_> {
        Clients {
            sources: self,
            current: None,
        }
    }

    /// An account's clients (`None`: the job's own), with the role check's credentials when
    /// discovery kept them.
    fn account(&self, account: Option<&str>) -> Account {
        let (Some(a), Some(assume), Some(role)) = (account, &self.maker.assume, &self.maker.role)
        else {
            return Account {
                account: None,
                conf: None,
                sources: self.maker.own.as_ref().clone(),
            };
        };
        let first = self
            .checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(a);
        let arn = role.arn(a, self.regions.first().map_or("", String::as_str));
        self.maker.account(a, assume.clone().role_arn(arn), first)
    }
}

/// The clients of portals taken one after another, an account's portals together (see
/// [`by_account`]): an account's clients are made when its first portal comes and the
/// previous account's are let go. Every [`Source`] handed out keeps its client (and the
/// account's credentials) alive while its portal's work holds it, so the portals of one
/// account and region paged side by side share one client, and its pacing.
pub struct Clients<'a> {
    sources: &'a Sources,
    current: Option<Account>,
}

impl Clients<'_> {
    /// The source of `reach`'s account and region.
    pub fn source(&mut self, reach: &Reach) -> Source {
        let current = match &mut self.current {
            Some(c) if c.account == reach.account => c,
            slot => slot.insert(self.sources.account(reach.account.as_deref())),
        };
        current.source(&self.sources.maker, &reach.region)
    }
}

/// One account's clients: a source per region, made on first use, all with the account's
/// credentials (one cache, refreshed before they expire).
struct Account {
    account: Option<String>,
    /// The account's configuration (credentials and their cache); `None`: the job's own
    /// sources, made at start.
    conf: Option<aws_config::SdkConfig>,
    sources: Vec<(String, Source)>,
}

impl Account {
    fn source(&mut self, maker: &Maker, region: &str) -> Source {
        if let Some((_, s)) = self.sources.iter().find(|(r, _)| r == region) {
            return s.clone();
        }
        let conf = self.conf.as_ref().unwrap_or(&maker.sdk);
        let s = maker.source(&regional(conf, region));
        self.sources.push((region.to_string(), s.clone()));
        s
    }
}

impl Maker {
    fn source(&self, conf: &aws_config::SdkConfig) -> Source {
        Source::new(conf, self.max_attempts, self.stop.clone()).counting_into(self.stats.clone())
    }

    /// An account's clients, with credentials from its role: `first` (the role check's)
    /// while comfortably valid, then a fresh AssumeRole whenever the cache asks.
    fn account(
        &self,
        account: &str,
        assume: AssumeRoleFluentBuilder,
        first: Option<Credentials>,
    ) -> Account {
        let provider = RoleCredentials {
            assume,
            first: Mutex::new(first),
        };
        // The account's own credentials cache, shared by its regions' clients: the SDK's
        // shared one holds 64 providers, and evicting an account's credentials would cost
        // another AssumeRole.
        let conf = self
            .sdk
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .identity_cache(aws_config::identity::IdentityCache::lazy().build())
            .build();
        Account {
            account: Some(account.to_string()),
            conf: Some(conf),
            sources: Vec::new(),
        }
    }

    /// Discovery of one account (`None`: the job's own, in `regions`): its role checked, its
    /// portals listed in each region, its clients dropped.
    async fn discover(
        self,
        account: Option<String>,
        arn: Option<String>,
        regions: Arc<Vec<String>>,
    ) -> Discovered {
        let mut out = Discovered {
            account,
            credentials: Ok(None),
            listings: Vec::new(),
        };
        // Stopped (SIGTERM/SIGINT): the accounts not yet begun are not (see `discover`).
        if self.stop.load(Ordering::Relaxed) {
            return out;
        }
        let mut clients = match (&out.account, arn, &self.assume) {
            (Some(a), Some(arn), Some(assume)) => {
                let assume = assume.clone().role_arn(&arn);
                match assume_role(&assume).await {
                    Ok(c) => {
                        out.credentials = Ok(Some(c.clone()));
                        self.account(a, assume, Some(c))
                    }
                    Err(e) => {
                        out.credentials = Err(format!(
                            "cannot assume role {arn}: {}",
                            credentials_error(&e)
                        ));
                        return out;
                    }
                }
            }
            _ => Account {
                account: None,
                conf: None,
                sources: self.own.as_ref().clone(),
            },
        };
        for r in regions.iter() {
            let listed = clients.source(&self, r).list_portals().await;
            out.listings.push((r.clone(), listed));
        }
        // An account without portals keeps nothing, not even its credentials.
        let none = |l: &(String, Listing)| l.1.as_ref().is_ok_and(Vec::is_empty);
        if out.listings.iter().all(none) {
            out.credentials = Ok(None);
        }
        out
    }
}

/// What discovery found in one account.
struct Discovered {
    account: Option<String>,
    /// The role check's credentials (`None` without accounts), or why the role could not be
    /// assumed.
    credentials: Result<Option<Credentials>, String>,
    /// Each region's ListPortals: (id, ARN) of each portal.
    listings: Vec<(String, Listing)>,
}

/// One ListPortals: (id, ARN) of each portal.
type Listing = Result<Vec<(PortalId, String)>, FetchError>;

/// A portal found by discovery, with its account (from its ARN) and where it is reached.
#[derive(Clone, Debug)]
pub struct Found {
    pub portal: PortalId,
    pub account: Option<String>,
    pub reach: Reach,
}

/// `found` with each account's portals together (accounts in the order they first come, and
/// the order within each kept): the order [`Clients`] makes each account's clients once in.
pub fn by_account(mut found: Vec<Found>) -> Vec<Found> {
    let mut first: HashMap<Option<String>, usize> = HashMap::new();
    for f in &found {
        let n = first.len();
        first.entry(f.reach.account.clone()).or_insert(n);
    }
    found.sort_by_key(|f| first[&f.reach.account]);
    found
}

/// A portal known without asking the service, with its account when its ARN is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub portal: PortalId,
    pub account: Option<String>,
}

/// The portals known without asking the service: the state's portals that discovery listed
/// once (they have an ARN) or that have files (`flush_seq > 0`), and every portal the output
/// holds files or manifests of (whichever state wrote them). A state's portal with neither
/// (a mistyped `--portal-id` of an earlier run) is not known. Reads only.
pub async fn known_portals(state: &StateHandle, sink: &Sink) -> Result<Vec<Known>> {
    let rows = state.db(|st| st.portals()).await?;
    let mut out: BTreeMap<PortalId, Option<String>> = BTreeMap::new();
    for p in rows
        .into_iter()
        .filter(|p| p.portal_arn.is_some() || p.flush_seq > 0)
    {
        let Ok(id) = PortalId::parse(&p.portal_id) else {
            continue;
        };
        let account = p.portal_arn.as_deref().and_then(arn_account);
        out.insert(id, account.map(str::to_string));
    }
    for id in sink
        .portals()
        .await
        .context("listing the portals the archive holds")?
    {
        out.entry(id).or_insert(None);
    }
    Ok(out
        .into_iter()
        .map(|(portal, account)| Known { portal, account })
        .collect())
}

/// The known portals discovery did not list, in `known`'s order. One of an account discovery
/// could not reach (`failed`) was not searched for, so it is not unlisted; nor is one of
/// unknown account while any account could not be reached.
pub fn unlisted(
    known: Vec<Known>,
    listed: &[&PortalId],
    failed: &[AccountFailure],
) -> Vec<PortalId> {
    known
        .into_iter()
        .filter(|k| !listed.contains(&&k.portal))
        .filter(|k| match &k.account {
            Some(a) => !failed.iter().any(|f| &f.account == a),
            None => failed.is_empty(),
        })
        .map(|k| k.portal)
        .collect()
}

/// The regions to archive: `--region` values, or the SDK chain's region alone.
fn regions(sdk: &aws_config::SdkConfig, cfg: &Config) -> Vec<String> {
    if cfg.regions.is_empty() {
        vec![sdk.region().map(|r| r.to_string()).unwrap_or_default()]
    } else {
        cfg.regions.clone()
    }
}

fn regional(sdk: &aws_config::SdkConfig, region: &str) -> aws_config::SdkConfig {
    sdk.to_builder()
        .region(aws_config::Region::new(region.to_string()))
        .build()
}

/// The run's accounts and regions. With accounts, the organization's account list is read
/// first (`--organization`; its failure fails the run); their roles are assumed by
/// [`discover`].
pub async fn sources(
    sdk: &aws_config::SdkConfig,
    cfg: &Config,
    stop: &Arc<AtomicBool>,
) -> Result<Sources> {
    let regions = regions(sdk, cfg);
    let stats: Arc<CallStats> = Arc::default();
    let Some(role) = cfg.accounts.role() else {
        let own = regions
            .iter()
            .map(|r| {
                let s = Source::new(&regional(sdk, r), cfg.max_attempts, stop.clone())
                    .counting_into(stats.clone());
                (r.clone(), s)
            })
            .collect();
        return Ok(Sources {
            regions,
            accounts: Vec::new(),
            roles: Vec::new(),
            failed: Vec::new(),
            maker: Maker {
                sdk: sdk.clone(),
                max_attempts: cfg.max_attempts,
                stop: stop.clone(),
                stats,
                assume: None,
                role: None,
                own: Arc::new(own),
            },
            checked: Mutex::default(),
        });
    };
    // STS and Organizations calls get `--max-attempts` too (the SDK's default is 3): both
    // services throttle bursts, and a throttled ListAccounts would fail the whole run.
    let sdk = sdk
        .to_builder()
        .retry_config(
            aws_config::retry::RetryConfig::standard().with_max_attempts(cfg.max_attempts),
        )
        .build();
    let accounts = match &cfg.accounts {
        Accounts::Listed { ids, .. } => ids.clone(),
        Accounts::Organization { .. } => organization_accounts(&sdk).await?,
        Accounts::Own => unreachable!("no role without accounts"),
    };
    info!(accounts = accounts.len(), "accounts to archive");
    // A role name's ARN takes the partition of the first region (China, GovCloud, ...).
    let first_region = regions.first().map_or("", String::as_str);
    let roles = accounts
        .iter()
        .map(|a| (a.clone(), role.arn(a, first_region)))
        .collect();
    // One STS client for every account's AssumeRole, with the job's own credentials.
    let assume = aws_sdk_sts::Client::new(&sdk)
        .assume_role()
        .role_session_name("archiver")
        .set_external_id(role.external_id.clone());
    Ok(Sources {
        regions,
        accounts,
        roles,
        failed: Vec::new(),
        maker: Maker {
            sdk,
            max_attempts: cfg.max_attempts,
            stop: stop.clone(),
            stats,
            assume: Some(assume),
            role: Some(role.clone()),
            own: Arc::default(),
        },
        checked: Mutex::default(),
    })
}

/// `f` of every item, at most `limit` at once (a task is made only when a place is free), the
/// results in the items' order.
async fn side_by_side<T, R, F, Fut>(limit: usize, items: Vec<T>, f: F) -> Vec<R>
where
    R: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let n = items.len();
    let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
    let mut done = |joined: Result<(usize, R), tokio::task::JoinError>| {
        let (i, r) = joined.expect("discovery task panicked");
        out[i] = Some(r);
    };
    for (i, item) in items.into_iter().enumerate() {
        if tasks.len() >= limit.max(1) {
            done(tasks.join_next().await.expect("a task is running"));
        }
        let fut = f(item);
        tasks.spawn(async move { (i, fut.await) });
    }
    while let Some(joined) = tasks.join_next().await {
        done(joined);
    }
    out.into_iter()
        .map(|r| r.expect("every task answered"))
        .collect()
}

/// One AssumeRole: the role's temporary credentials.
async fn assume_role(assume: &AssumeRoleFluentBuilder) -> Result<Credentials, CredentialsError> {
    let out = assume
        .clone()
        .send()
        .await
        .map_err(CredentialsError::provider_error)?;
    let c = out
        .credentials()
        .ok_or_else(|| CredentialsError::unhandled("AssumeRole answered without credentials"))?;
    let expiry = SystemTime::try_from(*c.expiration())
        .map_err(|e| CredentialsError::unhandled(format!("AssumeRole's expiration: {e}")))?;
    Ok(Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        Some(expiry),
        "AssumeRole",
    ))
}

/// An account's credentials: those the role check obtained, once, while comfortably valid;
/// then a fresh AssumeRole whenever the account's cache asks (before they expire). So one
/// AssumeRole per account serves the first hour of a run.
#[derive(Debug)]
struct RoleCredentials {
    assume: AssumeRoleFluentBuilder,
    first: Mutex<Option<Credentials>>,
}

impl ProvideCredentials for RoleCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).take();
        // Served only while comfortably valid; else (a slow start) a fresh AssumeRole.
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|t| t > SystemTime::now() + Duration::from_secs(60))
        };
        match first {
            Some(c) if fresh(&c) => {
                aws_credential_types::provider::future::ProvideCredentials::ready(Ok(c))
            }
            _ => aws_credential_types::provider::future::ProvideCredentials::new(assume_role(
                &self.assume,
            )),
        }
    }
}

/// `Code: message` of an STS refusal, or the error chain of any other failure.
fn credentials_error(e: &(dyn std::error::Error + 'static)) -> String {
    use aws_sdk_sts::error::ProvideErrorMetadata;
    use aws_sdk_sts::operation::assume_role::AssumeRoleError;
    let mut src: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = src {
        if let Some(sdk) = s.downcast_ref::<aws_sdk_sts::error::SdkError<AssumeRoleError>>() {
            if let Some(svc) = sdk.as_service_error() {
                return format!(
                    "{}: {}",
                    svc.code().unwrap_or("error"),
                    svc.message().unwrap_or("(no message)")
                );
            }
        }
        src = s.source();
    }
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}

/// The organization's active accounts, sorted (AWS Organizations ListAccounts with the job's
/// own credentials).
async fn organization_accounts(sdk: &aws_config::SdkConfig) -> Result<Vec<String>> {
    use aws_sdk_organizations::types::{AccountState, AccountStatus};
    let client = aws_sdk_organizations::Client::new(sdk);
    let mut pages = client.list_accounts().into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page
            .map_err(AwsError::new)
            .context("listing the organization's accounts (Organizations ListAccounts)")?;
        for a in page.accounts() {
            // `State` supersedes `Status`; either says whether the account is active.
            let active = match (a.state(), a.status()) {
                (Some(s), _) => *s == AccountState::Active,
                (None, Some(s)) => *s == AccountStatus::Active,
                (None, None) => false,
            };
            match a.id() {
                Some(id) if active => out.push(id.to_string()),
                _ => {}
            }
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        bail!("the organization lists no active account (Organizations ListAccounts)");
    }
    Ok(out)
}

/// The account in a portal ARN (`arn:PARTITION:workspaces-web:REGION:ACCOUNT:portal/ID`).
pub fn arn_account(arn: &str) -> Option<&str> {
    arn.split(':')
        .nth(4)
        .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
}

/// The portals to archive, each with its account and where it is reached: the `named`
/// portals, or (`None`) every portal ListPortals returns in each account and region. Named
/// portals are looked up in every listing (with one region and no accounts, they are taken as
/// given, unless `list_named`). With `record`, every discovered portal and its ARN are recorded
/// in the state. Accounts (or, without accounts, regions) are taken side by side, at most
/// `concurrency` at once; with accounts, each account's role is assumed first.
///
/// Without accounts, a failed ListPortals fails discovery. With accounts, a role that cannot
/// be assumed or a failed ListPortals fails only its account (recorded in `sources`), and the
/// other accounts' portals are returned. On SIGTERM/SIGINT the accounts not yet begun are
/// skipped and discovery ends with [`Interrupted`].
pub async fn discover(
    named: Option<&[PortalId]>,
    sources: &mut Sources,
    record: Option<&StateHandle>,
    concurrency: usize,
    list_named: bool,
) -> Result<Vec<Found>> {
    if let (Some(ids), [only], true, false) = (
        named,
        sources.regions.as_slice(),
        sources.accounts.is_empty(),
        list_named,
    ) {
        return Ok(ids
            .iter()
            .map(|p| Found {
                portal: p.clone(),
                account: None,
                reach: Reach {
                    account: None,
                    region: only.clone(),
                },
            })
            .collect());
    }
    // What is discovered together: an account in all regions (its account and role ARN), or
    // without accounts a region.
    struct Unit(Option<String>, Option<String>, Arc<Vec<String>>);
    let units: Vec<Unit> = match sources.accounts.is_empty() {
        true => sources
            .regions
            .iter()
            .map(|r| Unit(None, None, Arc::new(vec![r.clone()])))
            .collect(),
        false => {
            let regions = Arc::new(sources.regions.clone());
            sources
                .roles
                .iter()
                .map(|(a, arn)| Unit(Some(a.clone()), Some(arn.clone()), regions.clone()))
                .collect()
        }
    };
    let maker = sources.maker.clone();
    let discovered = side_by_side(concurrency, units, |Unit(account, arn, regions)| {
        maker.clone().discover(account, arn, regions)
    })
    .await;
    if maker.stop.load(Ordering::Relaxed) {
        return Err(Interrupted.into());
    }
    let mut found: Vec<Found> = Vec::new();
    let mut seen: HashSet<PortalId> = HashSet::new();
    let mut keep: HashMap<String, Credentials> = HashMap::new();
    for d in discovered {
        let account = d.account;
        let credentials = match d.credentials {
            Ok(c) => c,
            Err(e) => {
                sources.fail(account.as_deref().expect("roles with accounts"), e);
                continue;
            }
        };
        let before = found.len();
        for (region, listed) in d.listings {
            let listed = match listed {
                Ok(listed) => listed,
                Err(e) => {
                    let e = anyhow::Error::new(e)
                        .context(format!("discovering portals in {region} (ListPortals)"));
                    match &account {
                        Some(a) => {
                            sources.fail(a, format!("{e:#}"));
                            continue;
                        }
                        None => return Err(e),
                    }
                }
            };
            match &account {
                Some(a) if listed.is_empty() => {
                    debug!(account_id = %a, region = %region, portals = 0, "discovered portals")
                }
                Some(a) => {
                    info!(account_id = %a, region = %region, portals = listed.len(), "discovered portals")
                }
                None => info!(region = %region, portals = listed.len(), "discovered portals"),
            }
            if let (None, Some(state), false) = (named, record, listed.is_empty()) {
                let arns: Vec<(String, String)> = listed
                    .iter()
                    .map(|(id, arn)| (id.to_string(), arn.clone()))
                    .collect();
                state
                    .db(move |st| {
                        for (id, arn) in &arns {
                            st.portal(id)?;
                            st.set_portal_arn(id, arn)?;
                        }
                        Ok(())
                    })
                    .await?;
            }
            for (id, arn) in listed {
                if named.is_some_and(|ids| !ids.contains(&id)) || seen.contains(&id) {
                    continue;
                }
                seen.insert(id.clone());
                found.push(Found {
                    portal: id,
                    // With accounts, the ARN's account (the assumed one, unless the role
                    // reaches elsewhere); without, none: output stays as a one-account run's.
                    account: account
                        .as_ref()
                        .map(|a| arn_account(&arn).unwrap_or(a).to_string()),
                    reach: Reach {
                        account: account.clone(),
                        region: region.clone(),
                    },
                });
            }
        }
        // An account without portals keeps nothing; one with portals keeps its role check's
        // credentials for its clients.
        if let (Some(a), Some(c), true) = (&account, credentials, found.len() > before) {
            keep.insert(a.clone(), c);
        }
    }
    if let Some(ids) = named {
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !seen.contains(*id))
            .map(|id| id.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(sources.not_found(&missing));
        }
        found.sort_by_key(|f| ids.iter().position(|i| i == &f.portal));
    }
    let reached = sources.accounts.len() - sources.failed.len();
    if !sources.accounts.is_empty() {
        info!(
            accounts = reached,
            accounts_with_portals = keep.len(),
            portals = found.len(),
            "discovery done"
        );
    }
    *sources.checked.lock().unwrap_or_else(|p| p.into_inner()) = keep;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::{arn_account, unlisted, AccountFailure, Known};
    use crate::model::PortalId;

    #[test]
    fn known_portals_not_listed_are_unlisted_unless_their_account_was_not_searched() {
        let id = |c: char| PortalId::parse(&c.to_string().repeat(36)).unwrap();
        let known = |c: char, account: Option<&str>| Known {
            portal: id(c),
            account: account.map(str::to_string),
        };
        let all = vec![
            known('a', None),
            known('b', Some("111111111111")),
            known('c', Some("222222222222")),
            known('d', None),
        ];
        let (a, d) = (id('a'), id('d'));
        assert_eq!(
            unlisted(all.clone(), &[&a, &d], &[]),
            [id('b'), id('c')],
            "every known portal not listed"
        );
        let failed = [AccountFailure {
            account: "222222222222".into(),
            error: "AccessDenied".into(),
        }];
        assert_eq!(
            unlisted(all, &[&a], &failed),
            [id('b')],
            "c's account and d's unknown one may be the failed account"
        );
    }

    #[test]
    fn the_account_of_a_portal_arn() {
        assert_eq!(
            arn_account("arn:aws:workspaces-web:us-east-1:123456789012:portal/abc"),
            Some("123456789012")
        );
        assert_eq!(
            arn_account("arn:aws:workspaces-web:us-east-1::portal/abc"),
            None
        );
        assert_eq!(arn_account("portal/abc"), None);
    }
}
