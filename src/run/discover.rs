//! Discover: the portals to archive, each with the WorkSpaces Web client of its account and
//! region.
//!
//! Without `--accounts` or `--organization`, one client per region with the SDK chain's own
//! credentials. With them, each account × region pair gets a client whose credentials come
//! from STS AssumeRole into that account (refreshed by the SDK before they expire). An account
//! whose role cannot be assumed, or whose ListPortals fails, is recorded as failed and the
//! others go on.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use aws_sdk_workspacesweb::config::{ProvideCredentials, SharedCredentialsProvider};
use tracing::{error, info};

use crate::aws::AwsError;
use crate::config::{AccountRole, Accounts, Config};
use crate::model::PortalId;
use crate::sink::Sink;
use crate::source::Source;
use crate::state::StateHandle;

/// Where portals are looked for: one account (`None`: the SDK credentials' own) in one region,
/// with its client.
#[derive(Clone)]
pub struct Scope {
    pub account: Option<String>,
    pub region: String,
    pub source: Source,
}

/// An account the run could not archive (fully), and why.
#[derive(Clone, Debug)]
pub struct AccountFailure {
    pub account: String,
    pub error: String,
}

/// The clients of a run, and the accounts that could not be reached.
pub struct Sources {
    pub scopes: Vec<Scope>,
    /// Every account tried, in order (empty without `--accounts`/`--organization`).
    pub accounts: Vec<String>,
    /// `(account, role ARN)` of each account tried.
    pub roles: Vec<(String, String)>,
    pub failed: Vec<AccountFailure>,
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
    /// the accounts reached.
    pub fn searched(&self) -> String {
        let mut regions: Vec<&str> = Vec::new();
        for s in &self.scopes {
            if !regions.contains(&s.region.as_str()) {
                regions.push(&s.region);
            }
        }
        let regions = format!("regions {}", regions.join(", "));
        if self.accounts.is_empty() {
            return regions;
        }
        let reached: Vec<&str> = self
            .accounts
            .iter()
            .filter(|a| !self.failed.iter().any(|f| &f.account == *a))
            .map(String::as_str)
            .collect();
        format!("accounts {} ({regions})", reached.join(", "))
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
}

/// A portal found by discovery, with its account (from its ARN) and client.
#[derive(Clone)]
pub struct Found {
    pub portal: PortalId,
    pub account: Option<String>,
    pub source: Source,
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

/// The clients of a run. With accounts, the organization's account list is read first
/// (`--organization`; its failure fails the run), then each account's role is assumed once to
/// check it; an account whose role cannot be assumed is recorded in [`Sources::failed`].
pub async fn sources(
    sdk: &aws_config::SdkConfig,
    cfg: &Config,
    stop: &Arc<AtomicBool>,
) -> Result<Sources> {
    let regions = regions(sdk, cfg);
    let mut out = Sources {
        scopes: Vec::new(),
        accounts: Vec::new(),
        roles: Vec::new(),
        failed: Vec::new(),
    };
    let Some(role) = cfg.accounts.role() else {
        out.scopes = regions
            .iter()
            .map(|r| Scope {
                account: None,
                region: r.clone(),
                source: Source::new(&regional(sdk, r), cfg.max_attempts, stop.clone()),
            })
            .collect();
        return Ok(out);
    };
    // STS and Organizations calls get `--max-attempts` too (the SDK's default is 3): both
    // services throttle bursts, and a throttled ListAccounts would fail the whole run.
    let sdk = &sdk
        .to_builder()
        .retry_config(
            aws_config::retry::RetryConfig::standard().with_max_attempts(cfg.max_attempts),
        )
        .build();
    out.accounts = match &cfg.accounts {
        Accounts::Listed { ids, .. } => ids.clone(),
        Accounts::Organization { .. } => organization_accounts(sdk).await?,
        Accounts::Own => unreachable!("no role without accounts"),
    };
    info!(accounts = out.accounts.len(), "accounts to archive");
    // The roles are assumed side by side (at most `--concurrency` at once): an organization of
    // hundreds of accounts is set up in a few round trips, not one per account.
    // A role name's ARN takes the partition of the first region (China, GovCloud, ...).
    let first_region = regions.first().map_or("", String::as_str);
    let arns: Vec<String> = out
        .accounts
        .iter()
        .map(|a| role.arn(a, first_region))
        .collect();
    let checked = side_by_side(cfg.concurrency, arns.clone(), |arn: String| {
        let (sdk, role) = (sdk.clone(), role.clone());
        async move { assume(&sdk, &role, &arn).await }
    })
    .await;
    for ((account, arn), result) in out.accounts.clone().into_iter().zip(arns).zip(checked) {
        out.roles.push((account.clone(), arn.clone()));
        match result {
            Ok(creds) => {
                // The account's own credentials cache, shared by its regions' clients: the
                // SDK's shared one holds 64 providers, and evicting an account's credentials
                // would cost another AssumeRole.
                let cache = aws_config::identity::IdentityCache::lazy().build();
                for r in &regions {
                    let conf = regional(sdk, r)
                        .to_builder()
                        .credentials_provider(creds.clone())
                        .identity_cache(cache.clone())
                        .build();
                    out.scopes.push(Scope {
                        account: Some(account.clone()),
                        region: r.clone(),
                        source: Source::new(&conf, cfg.max_attempts, stop.clone()),
                    });
                }
            }
            Err(e) => out.fail(&account, format!("cannot assume role {arn}: {e:#}")),
        }
    }
    Ok(out)
}

/// `f` of every item, at most `limit` at once, the results in the items' order.
async fn side_by_side<T, R, F, Fut>(limit: usize, items: Vec<T>, f: F) -> Vec<R>
where
    R: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let sem = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let n = items.len();
    for (i, item) in items.into_iter().enumerate() {
        let (sem, fut) = (sem.clone(), f(item));
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore open");
            (i, fut.await)
        });
    }
    let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, r) = joined.expect("discovery task panicked");
        out[i] = Some(r);
    }
    out.into_iter()
        .map(|r| r.expect("every task answered"))
        .collect()
}

/// A refreshing credentials provider for the role, checked by assuming it once.
async fn assume(
    sdk: &aws_config::SdkConfig,
    role: &AccountRole,
    arn: &str,
) -> Result<SharedCredentialsProvider> {
    let mut b = aws_config::sts::AssumeRoleProvider::builder(arn).session_name("archiver");
    if let Some(x) = &role.external_id {
        b = b.external_id(x);
    }
    let provider = b.configure(sdk).build().await;
    let first = provider
        .provide_credentials()
        .await
        .map_err(|e| anyhow::anyhow!(credentials_error(&e)))?;
    Ok(SharedCredentialsProvider::new(Checked {
        first: std::sync::Mutex::new(Some(first)),
        role: provider,
    }))
}

/// An account's credentials: those the role check obtained, once, then the role's. The
/// client's cache asks for new ones before they expire, so one AssumeRole per account serves
/// the first hour of a run.
#[derive(Debug)]
struct Checked {
    first: std::sync::Mutex<Option<aws_credential_types::Credentials>>,
    role: aws_config::sts::AssumeRoleProvider,
}

impl ProvideCredentials for Checked {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).take();
        // Served only while comfortably valid; else (a slow start) a fresh AssumeRole.
        let fresh = |c: &aws_credential_types::Credentials| {
            c.expiry().is_none_or(|t| {
                t > std::time::SystemTime::now() + std::time::Duration::from_secs(60)
            })
        };
        match first {
            Some(c) if fresh(&c) => {
                aws_credential_types::provider::future::ProvideCredentials::ready(Ok(c))
            }
            _ => self.role.provide_credentials(),
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

/// The portals to archive, each with its account's and region's client: the `named` portals,
/// or (`None`) every portal ListPortals returns in each scope. Named portals are looked up in
/// every scope's list (with one scope and no accounts, they are taken as given, unless
/// `list_named`). With `record`, every discovered portal and its ARN are recorded in the state.
/// The scopes are listed side by side, at most `concurrency` at once.
///
/// Without accounts, a failed ListPortals fails discovery. With accounts, it fails only its
/// account (recorded in `sources`), and the other accounts' portals are returned.
pub async fn discover(
    named: Option<&[PortalId]>,
    sources: &mut Sources,
    record: Option<&StateHandle>,
    concurrency: usize,
    list_named: bool,
) -> Result<Vec<Found>> {
    if let (Some(ids), [only], true, false) = (
        named,
        sources.scopes.as_slice(),
        sources.accounts.is_empty(),
        list_named,
    ) {
        return Ok(ids
            .iter()
            .map(|p| Found {
                portal: p.clone(),
                account: None,
                source: only.source.clone(),
            })
            .collect());
    }
    let mut found: Vec<Found> = Vec::new();
    let scopes = sources.scopes.clone();
    let listings = side_by_side(concurrency, scopes.clone(), |scope: Scope| async move {
        scope.source.list_portals().await
    })
    .await;
    for (scope, listed) in scopes.into_iter().zip(listings) {
        let Scope {
            account,
            region,
            source,
        } = scope;
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
            Some(a) => {
                info!(account_id = %a, region = %region, portals = listed.len(), "discovered portals")
            }
            None => info!(region = %region, portals = listed.len(), "discovered portals"),
        }
        if let (None, Some(state)) = (named, record) {
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
            if named.is_some_and(|ids| !ids.contains(&id)) {
                continue;
            }
            if !found.iter().any(|f| f.portal == id) {
                found.push(Found {
                    portal: id,
                    // With accounts, the ARN's account (the assumed one, unless the role
                    // reaches elsewhere); without, none: output stays as a one-account run's.
                    account: account
                        .as_ref()
                        .map(|a| arn_account(&arn).unwrap_or(a).to_string()),
                    source: source.clone(),
                });
            }
        }
    }
    if let Some(ids) = named {
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !found.iter().any(|f| &f.portal == *id))
            .map(|id| id.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(sources.not_found(&missing));
        }
        found.sort_by_key(|f| ids.iter().position(|i| i == &f.portal));
    }
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
