//! The WorkSpaces Web simulator against the real AWS SDK for Rust (and boto3), over real
//! sockets on 127.0.0.1. Every answer is compared with `Simulator::record()`, the simulator's
//! own truth, computed independently of the HTTP layer.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use archiver_simulator::{Faults, SimClock, SimConfig, SimSession, Simulator, TokenMode};
use aws_config::retry::RetryConfig;
use aws_config::BehaviorVersion;
use aws_sdk_workspacesweb::config::{Credentials, Region};
use aws_sdk_workspacesweb::primitives::DateTime;
use aws_sdk_workspacesweb::types::{SessionSortBy, SessionStatus, SessionSummary};
use aws_sdk_workspacesweb::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Fixed clock so failures reproduce; 40 days of history against 35 of retention, so some
/// held sessions are past retention and must not be served.
fn cfg(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        portals: 3,
        sessions_per_portal: 300,
        active_per_portal: 4,
        history_days: 40,
        retention_days: 35,
        now_ms: 1_764_150_000_000,
        ..SimConfig::default()
    }
}

async fn client_with(sim: &Simulator, retry: RetryConfig) -> Client {
    let conf = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(sim.endpoint_url())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .retry_config(retry)
        .load()
        .await;
    Client::new(&conf)
}

async fn client(sim: &Simulator) -> Client {
    client_with(sim, RetryConfig::disabled()).await
}

/// Epoch milliseconds of an SDK timestamp, rounded to the nearest millisecond: the SDK parses
/// epoch seconds through an `f64`, so `.123` can come back as `.122999…`.
fn ms(t: &DateTime) -> i64 {
    t.secs() * 1000 + i64::from((t.subsec_nanos() + 500_000) / 1_000_000)
}

#[derive(Clone, Copy, Debug)]
enum Order {
    Asc,
    Desc,
}

#[derive(Clone, Debug, Default)]
struct Filter {
    status: Option<&'static str>,
    username: Option<String>,
    session_id: Option<String>,
}

/// What ListSessions must return, computed from the record.
fn expected(sim: &Simulator, portal: &str, order: Order, f: &Filter) -> Vec<SimSession> {
    let cutoff = sim.retention_cutoff_ms();
    let mut v: Vec<SimSession> = sim
        .record()
        .into_iter()
        .filter(|s| s.portal_id == portal && s.start_time_ms >= cutoff)
        .filter(|s| f.status.is_none_or(|st| s.status == st))
        .filter(|s| f.username.is_none() || s.username == f.username)
        .filter(|s| f.session_id.as_ref().is_none_or(|id| &s.session_id == id))
        .collect();
    v.sort_by(|a, b| (a.start_time_ms, &a.session_id).cmp(&(b.start_time_ms, &b.session_id)));
    if let Order::Desc = order {
        v.reverse();
    }
    v
}

fn request(
    c: &Client,
    portal: &str,
    order: Option<Order>,
    f: &Filter,
    max: i32,
) -> aws_sdk_workspacesweb::operation::list_sessions::builders::ListSessionsFluentBuilder {
    let mut r = c.list_sessions().portal_id(portal).max_results(max);
    if let Some(o) = order {
        r = r.sort_by(match o {
            Order::Asc => SessionSortBy::StartTimeAscending,
            Order::Desc => SessionSortBy::StartTimeDescending,
        });
    }
    if let Some(st) = f.status {
        r = r.status(SessionStatus::from(st));
    }
    if let Some(u) = &f.username {
        r = r.username(u);
    }
    if let Some(id) = &f.session_id {
        r = r.session_id(id);
    }
    r
}

/// Pages through with the SDK paginator; also checks every page but the last is full.
async fn list_all(
    c: &Client,
    portal: &str,
    order: Option<Order>,
    f: &Filter,
    max: i32,
) -> Vec<SessionSummary> {
    let pages = request(c, portal, order, f, max)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("list sessions");
    let n = pages.len();
    let mut out = Vec::new();
    for (i, page) in pages.into_iter().enumerate() {
        let len = page.sessions().len();
        assert!(len <= max as usize, "page of {len} > maxResults {max}");
        if i + 1 < n {
            assert_eq!(len, max as usize, "a page followed by more is full");
            assert!(page.next_token().is_some());
        } else {
            assert!(page.next_token().is_none(), "last page has no nextToken");
        }
        out.extend(page.sessions);
    }
    out
}

fn assert_same(got: &[SessionSummary], want: &[SimSession], what: &str) {
    let got_ids: Vec<&str> = got.iter().map(|s| s.session_id().unwrap_or("")).collect();
    let want_ids: Vec<&str> = want.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(got_ids, want_ids, "{what}: ids and order");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.portal_arn(), Some(w.portal_arn.as_str()), "{what}");
        assert_eq!(
            g.username(),
            w.username.as_deref(),
            "{what}: username of {}",
            w.session_id
        );
        assert_eq!(
            g.status().map(|s| s.as_str()),
            Some(w.status.as_str()),
            "{what}"
        );
        assert_eq!(
            g.start_time().map(ms),
            Some(w.start_time_ms),
            "{what}: start"
        );
        assert_eq!(
            g.end_time().map(ms),
            w.end_time_ms,
            "{what}: end of {}",
            w.session_id
        );
        assert_eq!(w.end_time_ms.is_none(), w.status == "Active", "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_portals_pages_through_every_portal_once() {
    let sim = Simulator::start(SimConfig {
        portals: 5,
        sessions_per_portal: 10,
        ..cfg(2)
    })
    .await
    .unwrap();
    let extra = sim.add_portal();
    let c = client(&sim).await;
    let mut arns = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let out = c
            .list_portals()
            .max_results(4)
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        for p in out.portals() {
            assert_eq!(p.portal_status().map(|s| s.as_str()), Some("Active"));
            assert_eq!(p.browser_type().map(|s| s.as_str()), Some("Chrome"));
            assert!(p.display_name().is_some() && p.creation_date().is_some());
            arns.push(p.portal_arn().to_owned());
        }
        token = out.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let ids = sim.portal_ids();
    assert_eq!(ids.len(), 6);
    assert_eq!(ids.last(), Some(&extra));
    let want: Vec<String> = ids.iter().map(|id| sim.portal_arn(id).unwrap()).collect();
    assert_eq!(arns, want);
    assert_eq!(
        want[0],
        format!(
            "arn:aws:workspaces-web:us-east-1:123456789012:portal/{}",
            ids[0]
        )
    );
    assert_eq!(pages, 2);
    assert_eq!(sim.stats().list_portals_calls, 2);
    // Default page size (20) holds them all.
    let out = c.list_portals().send().await.unwrap();
    assert_eq!(out.portals().len(), 6);
    assert!(out.next_token().is_none());
}

/// The largest page size (≤ 100) that ends a page right after position `i`.
fn boundary_after(i: usize) -> i32 {
    (1..=100usize)
        .rev()
        .find(|&m| (i + 1).is_multiple_of(m))
        .unwrap() as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_sessions_both_orders_match_the_record() {
    let sim = Simulator::start(cfg(3)).await.unwrap();
    let c = client(&sim).await;
    let record = sim.record();
    // The data exercises what the ordering rules are about.
    assert!(
        record
            .iter()
            .any(|s| s.start_time_ms < sim.retention_cutoff_ms()),
        "some past retention"
    );
    let mut starts = HashMap::new();
    for s in &record {
        *starts.entry((&s.portal_id, s.start_time_ms)).or_insert(0) += 1;
    }
    assert!(
        starts.values().any(|&n| n > 1),
        "some sessions share a start millisecond"
    );
    assert!(record.iter().any(|s| s.username.is_none()) || record.len() < 200);

    let mut split_ties = 0;
    for portal in sim.portal_ids() {
        let asc = expected(&sim, &portal, Order::Asc, &Filter::default());
        assert!(asc.len() > 100 && asc.iter().filter(|s| s.status == "Active").count() == 4);
        let got = list_all(&c, &portal, Some(Order::Asc), &Filter::default(), 7).await;
        assert_same(&got, &asc, "ascending");
        let desc = expected(&sim, &portal, Order::Desc, &Filter::default());
        let got = list_all(&c, &portal, Some(Order::Desc), &Filter::default(), 7).await;
        assert_same(&got, &desc, "descending");
        // No sortBy: the service defaults to newest first.
        let got = list_all(&c, &portal, None, &Filter::default(), 7).await;
        assert_same(&got, &desc, "default order");
        // Page boundaries between two sessions that share a start millisecond.
        if let Some(i) = asc
            .windows(2)
            .position(|w| w[0].start_time_ms == w[1].start_time_ms)
        {
            split_ties += 1;
            let got = list_all(
                &c,
                &portal,
                Some(Order::Asc),
                &Filter::default(),
                boundary_after(i),
            )
            .await;
            assert_same(&got, &asc, "ascending, boundary inside a tie");
            let j = asc.len() - 2 - i;
            let got = list_all(
                &c,
                &portal,
                Some(Order::Desc),
                &Filter::default(),
                boundary_after(j),
            )
            .await;
            assert_same(&got, &desc, "descending, boundary inside a tie");
        }
    }
    assert!(split_ties > 0, "the data has ties to split");
    let stats = sim.stats();
    assert!(stats.list_sessions_calls >= 3 * 3 * 15);
    assert_eq!(stats.list_sessions_by_portal.len(), 3);
    assert_eq!(
        stats.throttled + stats.server_errors + stats.client_errors,
        0
    );
}

/// The SDK parses epoch-second timestamps through an `f64`: `DateTime::to_millis()` then
/// truncates `.123` to 122 for many values. Millisecond times must be rounded, as `ms` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_timestamps_must_be_rounded_to_the_millisecond() {
    let sim = Simulator::start(cfg(16)).await.unwrap();
    let c = client(&sim).await;
    let portal = sim.portal_ids()[0].clone();
    let want = expected(&sim, &portal, Order::Asc, &Filter::default());
    let got = list_all(&c, &portal, Some(Order::Asc), &Filter::default(), 100).await;
    assert_same(&got, &want, "rounded");
    let truncated_wrong = got
        .iter()
        .zip(&want)
        .filter(|(g, w)| g.start_time().unwrap().to_millis().unwrap() != w.start_time_ms)
        .count();
    assert!(
        truncated_wrong > 0,
        "to_millis() is exact here; the rounding note can go"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_sessions_default_page_size_and_maximum() {
    let sim = Simulator::start(cfg(4)).await.unwrap();
    let c = client(&sim).await;
    let portal = &sim.portal_ids()[0];
    let out = c.list_sessions().portal_id(portal).send().await.unwrap();
    assert_eq!(out.sessions().len(), 20);
    let out = c
        .list_sessions()
        .portal_id(portal)
        .max_results(100)
        .send()
        .await
        .unwrap();
    assert_eq!(out.sessions().len(), 100);
    let want = expected(&sim, portal, Order::Desc, &Filter::default());
    assert_same(out.sessions(), &want[..100], "first 100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_matches_the_record() {
    let sim = Simulator::start(cfg(5)).await.unwrap();
    let c = client(&sim).await;
    let portal = sim.portal_ids()[1].clone();
    let listable = expected(&sim, &portal, Order::Asc, &Filter::default());
    let mut per_user: HashMap<String, usize> = HashMap::new();
    for s in &listable {
        if let Some(u) = &s.username {
            *per_user.entry(u.clone()).or_default() += 1;
        }
    }
    let busy_user = per_user.iter().max_by_key(|(_, n)| **n).unwrap().0.clone();
    assert!(per_user[&busy_user] > 7, "a user with more than one page");
    let active_user = listable
        .iter()
        .find(|s| s.status == "Active" && s.username.is_some())
        .and_then(|s| s.username.clone())
        .unwrap();
    let newest = listable.last().unwrap().session_id.clone();
    let retired = sim
        .record()
        .into_iter()
        .find(|s| s.portal_id == portal && s.start_time_ms < sim.retention_cutoff_ms())
        .unwrap()
        .session_id;

    let filters = [
        Filter {
            status: Some("Active"),
            ..Filter::default()
        },
        Filter {
            status: Some("Terminated"),
            ..Filter::default()
        },
        Filter {
            username: Some(busy_user.clone()),
            ..Filter::default()
        },
        Filter {
            username: Some(active_user.clone()),
            status: Some("Active"),
            ..Filter::default()
        },
        Filter {
            username: Some("nobody@example.com".into()),
            ..Filter::default()
        },
        Filter {
            session_id: Some(newest.clone()),
            ..Filter::default()
        },
        Filter {
            session_id: Some(retired),
            ..Filter::default()
        },
        Filter {
            session_id: Some(newest),
            status: Some("Terminated"),
            ..Filter::default()
        },
    ];
    for f in &filters {
        for order in [Order::Asc, Order::Desc] {
            let want = expected(&sim, &portal, order, f);
            let got = list_all(&c, &portal, Some(order), f, 7).await;
            assert_same(&got, &want, &format!("{f:?} {order:?}"));
        }
    }
    assert_eq!(expected(&sim, &portal, Order::Asc, &filters[0]).len(), 4);
    assert!(!expected(&sim, &portal, Order::Asc, &filters[3]).is_empty());
    assert_eq!(expected(&sim, &portal, Order::Asc, &filters[5]).len(), 1);
    assert!(expected(&sim, &portal, Order::Asc, &filters[6]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_session_returns_client_ips() {
    let sim = Simulator::start(cfg(6)).await.unwrap();
    let c = client(&sim).await;
    let cutoff = sim.retention_cutoff_ms();
    let record = sim.record();
    let mut seen_two_ips = false;
    for s in record
        .iter()
        .filter(|s| s.start_time_ms >= cutoff)
        .step_by(17)
        .take(25)
    {
        let out = c
            .get_session()
            .portal_id(&s.portal_id)
            .session_id(&s.session_id)
            .send()
            .await
            .unwrap();
        let g = out.session().expect("session");
        assert_eq!(g.session_id(), Some(s.session_id.as_str()));
        assert_eq!(g.portal_arn(), Some(s.portal_arn.as_str()));
        assert_eq!(g.username(), s.username.as_deref());
        assert_eq!(g.status().map(|x| x.as_str()), Some(s.status.as_str()));
        assert_eq!(g.start_time().map(ms), Some(s.start_time_ms));
        assert_eq!(g.end_time().map(ms), s.end_time_ms);
        assert_eq!(g.client_ip_addresses(), s.client_ip_addresses.as_slice());
        assert!((1..=2).contains(&s.client_ip_addresses.len()));
        seen_two_ips |= s.client_ip_addresses.len() == 2;
    }
    assert!(seen_two_ips);
    let active = record.iter().rfind(|s| s.status == "Active").unwrap();
    let out = c
        .get_session()
        .portal_id(&active.portal_id)
        .session_id(&active.session_id)
        .send()
        .await
        .unwrap();
    assert!(out.session().unwrap().end_time().is_none());

    // Past retention: gone, like the real service.
    let retired = record.iter().find(|s| s.start_time_ms < cutoff).unwrap();
    let err = c
        .get_session()
        .portal_id(&retired.portal_id)
        .session_id(&retired.session_id)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    assert_eq!(sim.stats().get_session_calls, 27);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_the_service_shapes() {
    let sim = Simulator::start(cfg(7)).await.unwrap();
    let c = client(&sim).await;
    let portal = sim.portal_ids()[0].clone();

    for bad in [101, 0, -1] {
        let err = c
            .list_sessions()
            .portal_id(&portal)
            .max_results(bad)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_validation_exception(), "maxResults {bad}: {err:?}");
    }
    let err = c
        .list_portals()
        .max_results(101)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_validation_exception(), "{err:?}");

    let unknown = "00000000-0000-4000-8000-000000000000";
    let err = c
        .list_sessions()
        .portal_id(unknown)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    match &err {
        aws_sdk_workspacesweb::operation::list_sessions::ListSessionsError::ResourceNotFoundException(e) => {
            assert_eq!(e.resource_id(), Some(unknown));
        }
        other => panic!("expected ResourceNotFoundException, got {other:?}"),
    }
    for malformed in [
        "short",
        "0000000000000000000000000000000000_x",
        "00000000-0000-4000-8000-0000000000001",
    ] {
        let err = c
            .list_sessions()
            .portal_id(malformed)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_validation_exception(), "{malformed}: {err:?}");
    }
    let err = c
        .list_sessions()
        .portal_id(&portal)
        .session_id("not-a-session-id")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_validation_exception(), "{err:?}");
    let err = c
        .get_session()
        .portal_id(&portal)
        .session_id("bad")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_validation_exception(), "{err:?}");
    let err = c
        .get_session()
        .portal_id(&portal)
        .session_id(unknown)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    let err = c
        .list_sessions()
        .portal_id(&portal)
        .status(SessionStatus::from("Paused"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_validation_exception(), "{err:?}");

    // Tokens: tampered, reused with another sort order or filter, foreign, expired.
    let first = c
        .list_sessions()
        .portal_id(&portal)
        .max_results(5)
        .send()
        .await
        .unwrap();
    let token = first.next_token().unwrap().to_owned();
    let other_portal = sim.portal_ids()[1].clone();
    assert_token_misuse_refused(&c, &portal, &other_portal, &token).await;
    // The token itself is still good, until the simulator expires every token.
    c.list_sessions()
        .portal_id(&portal)
        .next_token(&token)
        .send()
        .await
        .unwrap();
    sim.expire_tokens();
    let err = c
        .list_sessions()
        .portal_id(&portal)
        .next_token(&token)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_validation_exception(), "{err:?}");
    let msg = aws_sdk_workspacesweb::error::ProvideErrorMetadata::message(&err).unwrap_or_default();
    assert!(
        msg.contains("pagination token is invalid or expired"),
        "{msg}"
    );
    let stats = sim.stats();
    assert!(stats.client_errors >= 15, "{stats:?}");
    assert_eq!(stats.throttled + stats.server_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_after_their_ttl() {
    let sim = Simulator::start(SimConfig {
        token_ttl: Some(Duration::from_millis(1_000)),
        ..cfg(8)
    })
    .await
    .unwrap();
    let c = client(&sim).await;
    let portal = sim.portal_ids()[0].clone();
    let first = c
        .list_sessions()
        .portal_id(&portal)
        .max_results(5)
        .send()
        .await
        .unwrap();
    let token = first.next_token().unwrap().to_owned();
    c.list_sessions()
        .portal_id(&portal)
        .next_token(&token)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let err = c
        .list_sessions()
        .portal_id(&portal)
        .next_token(&token)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_validation_exception(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_reach_the_sdk_as_modeled_errors() {
    let sim = Simulator::start(cfg(9)).await.unwrap();
    let c = client(&sim).await;
    let portal = sim.portal_ids()[0].clone();

    sim.set_faults(Faults {
        throttle_rate: 1.0,
        retry_after_secs: 7,
        ..Faults::default()
    });
    let err = c
        .list_sessions()
        .portal_id(&portal)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    match &err {
        aws_sdk_workspacesweb::operation::list_sessions::ListSessionsError::ThrottlingException(
            e,
        ) => {
            assert_eq!(e.retry_after_seconds(), 7);
        }
        other => panic!("expected ThrottlingException, got {other:?}"),
    }
    let err = c
        .list_portals()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_throttling_exception(), "{err:?}");

    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let err = c
        .get_session()
        .portal_id(&portal)
        .session_id("00000000-0000-4000-8000-000000000000")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_internal_server_exception(), "{err:?}");

    sim.set_faults(Faults {
        deny_portals: vec![portal.clone()],
        ..Faults::default()
    });
    let err = c
        .list_sessions()
        .portal_id(&portal)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_access_denied_exception(), "{err:?}");
    let other = sim.portal_ids()[1].clone();
    c.list_sessions().portal_id(&other).send().await.unwrap();

    sim.set_faults(Faults {
        latency_ms: 200,
        ..Faults::default()
    });
    let t0 = Instant::now();
    c.list_sessions().portal_id(&portal).send().await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(200));

    sim.set_faults(Faults {
        // One call per 10 s: a burst of six lets exactly the first through, however slow.
        rate_limit_per_sec: Some(0.1),
        ..Faults::default()
    });
    let mut throttled = 0;
    for _ in 0..6 {
        if let Err(e) = c.list_sessions().portal_id(&portal).send().await {
            assert!(e.into_service_error().is_throttling_exception());
            throttled += 1;
        }
    }
    assert_eq!(throttled, 5, "of 6 calls at 0.1/s");

    let stats = sim.stats();
    assert_eq!(stats.list_portals_calls, 1);
    assert_eq!(stats.get_session_calls, 1);
    assert_eq!(stats.server_errors, 1);
    assert_eq!(stats.throttled, 2 + throttled);
    assert_eq!(stats.list_sessions_by_portal[&portal], 1 + 1 + 1 + 6);
    sim.reset_stats();
    assert_eq!(sim.stats().list_sessions_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_retries_through_random_faults_and_loses_nothing() {
    let sim = Simulator::start(cfg(10)).await.unwrap();
    let retry = RetryConfig::standard()
        .with_max_attempts(12)
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(5));
    let c = client_with(&sim, retry).await;
    sim.set_faults(Faults {
        throttle_rate: 0.2,
        error_rate: 0.2,
        ..Faults::default()
    });
    let portal = sim.portal_ids()[2].clone();
    let got = list_all(&c, &portal, Some(Order::Asc), &Filter::default(), 9).await;
    sim.set_faults(Faults::default());
    assert_same(
        &got,
        &expected(&sim, &portal, Order::Asc, &Filter::default()),
        "with retries",
    );
    let stats = sim.stats();
    assert!(stats.throttled > 0 && stats.server_errors > 0, "{stats:?}");
}

/// Drives ListSessions by hand so activity can happen between pages.
async fn page(
    c: &Client,
    portal: &str,
    order: Order,
    f: &Filter,
    token: Option<String>,
) -> (Vec<SessionSummary>, Option<String>) {
    let out = request(c, portal, Some(order), f, 7)
        .set_next_token(token)
        .send()
        .await
        .unwrap();
    (out.sessions().to_vec(), out.next_token().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_pages_stay_exact_while_sessions_arrive() {
    // History well inside retention: the clock moving during the test drops nothing.
    let sim = Simulator::start(SimConfig {
        history_days: 30,
        ..cfg(11)
    })
    .await
    .unwrap();
    let c = client(&sim).await;
    let portal = sim.portal_ids()[0].clone();

    // Newest first: sessions added after the first page are newer than the position, so they
    // do not appear, and nothing is skipped or repeated.
    let before = expected(&sim, &portal, Order::Desc, &Filter::default());
    let (mut got, mut token) = page(&c, &portal, Order::Desc, &Filter::default(), None).await;
    let added = sim.add_sessions(&portal, 25, 3);
    assert_eq!(added.len(), 25);
    while let Some(t) = token {
        let (p, next) = page(&c, &portal, Order::Desc, &Filter::default(), Some(t)).await;
        got.extend(p);
        token = next;
        if got.len() == 70 {
            sim.add_sessions(&portal, 5, 0);
        }
    }
    // The clock moved forward, so some of the oldest may have left retention meanwhile.
    let cutoff = sim.retention_cutoff_ms();
    let still_listable: Vec<SimSession> = before
        .into_iter()
        .filter(|s| s.start_time_ms >= cutoff)
        .collect();
    assert_same(&got, &still_listable, "descending across additions");

    // Oldest first: additions land after the position and are all picked up.
    let (mut got, mut token) = page(&c, &portal, Order::Asc, &Filter::default(), None).await;
    let mut rounds = 0;
    while let Some(t) = token {
        rounds += 1;
        if rounds % 10 == 0 {
            sim.add_sessions(&portal, 3, 1);
        }
        let (p, next) = page(&c, &portal, Order::Asc, &Filter::default(), Some(t)).await;
        got.extend(p);
        token = next;
    }
    let want = expected(&sim, &portal, Order::Asc, &Filter::default());
    let got_ids: Vec<_> = got
        .iter()
        .map(|s| s.session_id().unwrap().to_owned())
        .collect();
    let want_ids: Vec<_> = want.iter().map(|s| s.session_id.clone()).collect();
    assert_eq!(got_ids, want_ids);
    for a in &added {
        assert!(got_ids.contains(a));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_shows_up_in_the_api() {
    let sim = Simulator::start(cfg(12)).await.unwrap();
    let c = client(&sim).await;
    let portal = sim.portal_ids()[1].clone();
    let active = Filter {
        status: Some("Active"),
        ..Filter::default()
    };
    let before_now = sim.now_ms();

    let clock_at_end = sim.now_ms();
    let ended = sim.end_active(Some(&portal), 2);
    assert_eq!(ended.len(), 2);
    let added = sim.add_sessions(&portal, 6, 2);
    assert!(sim.now_ms() > before_now);
    let got = list_all(&c, &portal, Some(Order::Asc), &active, 7).await;
    assert_same(
        &got,
        &expected(&sim, &portal, Order::Asc, &active),
        "active after activity",
    );
    let got_ids: BTreeSet<&str> = got.iter().filter_map(|s| s.session_id()).collect();
    assert_eq!(got.len(), 4 - 2 + 2);
    assert!(ended.iter().all(|id| !got_ids.contains(id.as_str())));
    assert!(added[4..].iter().all(|id| got_ids.contains(id.as_str())));

    let record: HashMap<String, SimSession> = sim
        .record()
        .into_iter()
        .map(|s| (s.session_id.clone(), s))
        .collect();
    for id in &ended {
        let s = &record[id];
        assert_eq!(s.status, "Terminated");
        assert_eq!(s.end_time_ms, Some(clock_at_end));
        let out = c
            .get_session()
            .portal_id(&portal)
            .session_id(id)
            .send()
            .await
            .unwrap();
        assert_eq!(out.session().unwrap().end_time().map(ms), s.end_time_ms);
    }
    // Every portal, oldest Active first.
    let all_ended = sim.end_active(None, 100);
    assert_eq!(all_ended.len(), 3 * 4, "4 Active left in every portal");
    for p in sim.portal_ids() {
        assert!(list_all(&c, &p, Some(Order::Desc), &active, 7)
            .await
            .is_empty());
    }
    // Clock jumps push the oldest out of retention.
    let listable = expected(&sim, &portal, Order::Asc, &Filter::default()).len();
    sim.advance_clock(3 * 86_400_000);
    let after = list_all(&c, &portal, Some(Order::Asc), &Filter::default(), 100).await;
    assert!(after.len() < listable);
    assert_same(
        &after,
        &expected(&sim, &portal, Order::Asc, &Filter::default()),
        "after clock jump",
    );
}

/// One HTTP/1.1 exchange over a raw socket: (status, lowercase headers, body).
async fn raw(
    sim: &Simulator,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, HashMap<String, String>, String) {
    let mut s = tokio::net::TcpStream::connect(sim.local_addr())
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_api_over_http() {
    let sim = Simulator::start(cfg(13)).await.unwrap();
    let portal = sim.portal_ids()[0].clone();

    let (status, headers, body) = raw(&sim, "GET", "/_sim/record", "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let record: Vec<SimSession> = serde_json::from_str(&body).unwrap();
    assert_eq!(record, sim.record());
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v[0].get("startTimeMs").is_some() && v[0].get("clientIpAddresses").is_some());

    let (status, _, body) = raw(&sim, "GET", "/_sim/info", "").await;
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["endpoint"], sim.endpoint_url());
    assert_eq!(info["now_ms"], sim.now_ms());

    let (status, _, _) = raw(
        &sim,
        "POST",
        "/_sim/faults",
        r#"{"throttle_rate": 1.0, "retry_after_secs": 4}"#,
    )
    .await;
    assert_eq!(status, 200);
    let f = sim.faults();
    assert_eq!(
        (f.throttle_rate, f.retry_after_secs, f.error_rate),
        (1.0, 4, 0.0)
    );
    let (status, headers, body) =
        raw(&sim, "GET", &format!("/portals/{portal}/sessions"), "").await;
    assert_eq!(status, 429);
    assert_eq!(headers["x-amzn-errortype"], "ThrottlingException");
    assert_eq!(headers["retry-after"], "4");
    assert!(headers.contains_key("x-amzn-requestid"));
    assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["message"].is_string());
    let (status, _, _) = raw(&sim, "POST", "/_sim/faults", "{}").await;
    assert_eq!(status, 200);
    assert_eq!(sim.faults().throttle_rate, 0.0);
    let (status, _, _) = raw(&sim, "POST", "/_sim/faults", "{not json").await;
    assert_eq!(status, 400);

    let (_, _, body) = raw(&sim, "GET", "/_sim/stats", "").await;
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["list_sessions_calls"], 1);
    assert_eq!(stats["throttled"], 1);
    assert_eq!(stats["list_sessions_by_portal"][&portal], 1);
    let (status, _, _) = raw(&sim, "POST", "/_sim/reset-stats", "").await;
    assert_eq!(status, 200);
    assert_eq!(sim.stats().list_sessions_calls, 0);

    let (status, _, body) = raw(
        &sim,
        "POST",
        "/_sim/activity",
        &format!(r#"{{"portalId": "{portal}", "newSessions": 4, "newActive": 1, "endActive": 2, "advanceMs": 1000}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let act: serde_json::Value = serde_json::from_str(&body).unwrap();
    let added: Vec<String> = serde_json::from_value(act["added"].clone()).unwrap();
    let ended: Vec<String> = serde_json::from_value(act["ended"].clone()).unwrap();
    assert_eq!((added.len(), ended.len()), (4, 2));
    let record: HashMap<String, SimSession> = sim
        .record()
        .into_iter()
        .map(|s| (s.session_id.clone(), s))
        .collect();
    assert!(added.iter().all(|id| record[id].portal_id == portal));
    assert_eq!(
        added
            .iter()
            .filter(|id| record[*id].status == "Active")
            .count(),
        1
    );
    assert!(ended.iter().all(|id| record[id].status == "Terminated"));
    // No portalId: every portal gets the activity.
    let (_, _, body) = raw(&sim, "POST", "/_sim/activity", r#"{"newSessions": 2}"#).await;
    let act: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(act["added"].as_array().unwrap().len(), 2 * 3);
    let (status, _, _) = raw(&sim, "POST", "/_sim/activity", r#"{"portalId": "nope"}"#).await;
    assert_eq!(status, 404);

    let (status, _, body) = raw(&sim, "POST", "/_sim/expire-tokens", "").await;
    assert_eq!(status, 200, "{body}");

    let (status, _, body) = raw(&sim, "POST", "/_sim/portals", "").await;
    assert_eq!(status, 200);
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["portalId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sim.portal_ids().last(), Some(&id));

    // Unknown API paths get the service's unknown-operation error.
    let (status, headers, body) = raw(&sim, "GET", "/nothing/here", "").await;
    assert_eq!(status, 404);
    assert_eq!(headers["x-amzn-errortype"], "UnknownOperationException");
    assert!(body.contains("message"));
    let (status, _, _) = raw(&sim, "DELETE", "/portals", "").await;
    assert_eq!(status, 404);
    // Timestamps go out as epoch seconds with a millisecond fraction.
    let (status, headers, body) = raw(
        &sim,
        "GET",
        &format!("/portals/{portal}/sessions?maxResults=1&sortBy=StartTimeAscending"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("x-amzn-requestid"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let first = sim
        .listable()
        .into_iter()
        .find(|s| s.portal_id == portal)
        .unwrap();
    let start = v["sessions"][0]["startTime"].as_f64().unwrap();
    assert_eq!((start * 1000.0).round() as i64, first.start_time_ms);
    assert!(body.contains(&format!(
        "\"startTime\":{}.{:03}",
        first.start_time_ms / 1000,
        first.start_time_ms % 1000
    )));
}

/// The Python with boto3 (see tests/run); panics with a hint when there is none.
async fn boto3_python() -> String {
    let python = std::env::var("ARCHIVER_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let probe = tokio::process::Command::new(&python)
        .args(["-c", "import boto3"])
        .output()
        .await;
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "{python} cannot import boto3 ({}). Run the tests through tests/run, which prepares \
             a Python environment with boto3 and sets ARCHIVER_TEST_PYTHON.",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "cannot run {python} ({e}). Run the tests through tests/run, which prepares a Python \
             environment with boto3 and sets ARCHIVER_TEST_PYTHON."
        ),
    }
    python
}

/// Runs tests/py/boto3_check.py against `sim`; returns what it printed.
async fn run_boto3_check(python: &str, sim: &Simulator) -> String {
    let stdout = run_py_check(
        python,
        "boto3_check.py",
        &[sim.endpoint_url()],
        "boto3 check ok",
    )
    .await;
    assert!(sim.stats().list_sessions_calls > 10);
    stdout
}

/// Runs `tests/py/<script>` with the endpoints as its arguments; it must exit 0 and print
/// `ok_line`. Returns what it printed.
async fn run_py_check(python: &str, script: &str, endpoints: &[String], ok_line: &str) -> String {
    let script = format!("{}/tests/py/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(python)
        .arg(&script)
        .args(endpoints)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    eprint!("{stdout}");
    assert!(stdout.contains(ok_line), "{stdout}");
    stdout.into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_reads_the_simulator_like_the_real_service() {
    let python = boto3_python().await;
    let sim = Simulator::start(cfg(14)).await.unwrap();
    run_boto3_check(&python, &sim).await;
}

/// Scale check: `cargo test --release --test simulator -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "large; run in release mode"]
async fn a_million_sessions_page_quickly() {
    let t0 = Instant::now();
    let sim = Simulator::start(SimConfig {
        portals: 1,
        sessions_per_portal: 1_000_000,
        ..cfg(15)
    })
    .await
    .unwrap();
    let generated = t0.elapsed();
    eprintln!("generated 1,000,000 sessions in {generated:?}");
    if !cfg!(debug_assertions) {
        assert!(generated < Duration::from_secs(2), "{generated:?}");
    }
    let c = client(&sim).await;
    let portal = sim.portal_ids()[0].clone();
    let mut token = None;
    let t0 = Instant::now();
    for _ in 0..200 {
        let out = c
            .list_sessions()
            .portal_id(&portal)
            .max_results(100)
            .sort_by(SessionSortBy::StartTimeAscending)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        assert_eq!(out.sessions().len(), 100);
        token = out.next_token().map(str::to_owned);
    }
    eprintln!("200 pages of 100 over HTTP in {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_sessions_are_left_out_of_listings_but_get_session_finds_them() {
    let sim = Simulator::start(cfg(21)).await.unwrap();
    let c = client(&sim).await;
    let portal = sim.portal_ids()[1].clone();
    let all = expected(&sim, &portal, Order::Asc, &Filter::default());
    // Page size 6: a hidden run longer than a page, ids on page edges, both ends (the newest
    // is Active), and one id of another portal.
    let mut hidden: Vec<String> = [0, 5, 6, 11, 20, 21, 22, 23, 24, 25, 26, 27, 50]
        .iter()
        .map(|&i| all[i].session_id.clone())
        .collect();
    hidden.push(all[all.len() - 1].session_id.clone());
    hidden.push(all[all.len() - 7].session_id.clone());
    assert_eq!(all[all.len() - 1].status, "Active");
    let elsewhere =
        expected(&sim, &sim.portal_ids()[0], Order::Desc, &Filter::default())[0].clone();
    hidden.push(elsewhere.session_id.clone());

    // Through the control API, as an out-of-process user would set it.
    let body = serde_json::json!({ "hide_from_listing": hidden }).to_string();
    let (status, _, echoed) = raw(&sim, "POST", "/_sim/faults", &body).await;
    assert_eq!(status, 200, "{echoed}");
    assert_eq!(sim.faults().hide_from_listing, hidden);

    for order in [Order::Asc, Order::Desc] {
        for f in [
            Filter::default(),
            Filter {
                status: Some("Active"),
                ..Filter::default()
            },
        ] {
            // `list_all` also checks every page but the last is full.
            let got = list_all(&c, &portal, Some(order), &f, 6).await;
            let mut want = expected(&sim, &portal, order, &f);
            want.retain(|s| !hidden.contains(&s.session_id));
            assert_same(&got, &want, &format!("hidden, {order:?} {f:?}"));
        }
    }
    let got = list_all(&c, &elsewhere.portal_id, None, &Filter::default(), 100).await;
    assert!(got
        .iter()
        .all(|s| s.session_id() != Some(&elsewhere.session_id)));
    // Asking ListSessions for a hidden id by name does not find it either.
    let f = Filter {
        session_id: Some(hidden[3].clone()),
        ..Filter::default()
    };
    assert!(list_all(&c, &portal, None, &f, 5).await.is_empty());

    let record: HashMap<String, SimSession> = sim
        .record()
        .into_iter()
        .map(|s| (s.session_id.clone(), s))
        .collect();
    for id in &hidden {
        let s = &record[id];
        let out = c
            .get_session()
            .portal_id(&s.portal_id)
            .session_id(id)
            .send()
            .await
            .unwrap();
        let g = out.session().expect("session");
        assert_eq!(g.session_id(), Some(id.as_str()));
        assert_eq!(g.status().map(|x| x.as_str()), Some(s.status.as_str()));
        assert_eq!(g.start_time().map(ms), Some(s.start_time_ms));
        assert_eq!(g.client_ip_addresses(), s.client_ip_addresses.as_slice());
        assert!(!g.client_ip_addresses().is_empty());
    }

    // Cleared: everything is listed again.
    sim.set_faults(Faults::default());
    let got = list_all(&c, &portal, Some(Order::Asc), &Filter::default(), 100).await;
    assert_same(&got, &all, "unhidden");
}

/// First page (and, when there is one, second page) of ListSessions, 5 per page.
async fn corrupt_pages(
    c: &Client,
    portal: &str,
    order: Order,
) -> Vec<
    Result<
        aws_sdk_workspacesweb::operation::list_sessions::ListSessionsOutput,
        aws_sdk_workspacesweb::error::SdkError<
            aws_sdk_workspacesweb::operation::list_sessions::ListSessionsError,
            aws_sdk_workspacesweb::config::http::HttpResponse,
        >,
    >,
> {
    let first = request(c, portal, Some(order), &Filter::default(), 5)
        .send()
        .await;
    let token = first
        .as_ref()
        .ok()
        .and_then(|o| o.next_token().map(str::to_owned));
    let mut out = vec![first];
    if let Some(t) = token {
        out.push(
            request(c, portal, Some(order), &Filter::default(), 5)
                .next_token(t)
                .send()
                .await,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_listings_reach_the_sdk_like_this() {
    let sim = Simulator::start(cfg(22)).await.unwrap();
    let c = client(&sim).await;
    let portal = sim.portal_ids()[0].clone();

    for mode in [
        "missing_session_id",
        "missing_start_time",
        "unknown_status",
        "missing_portal_arn",
    ] {
        let body = format!(r#"{{"corrupt_listing": "{mode}"}}"#);
        let (status, _, echoed) = raw(&sim, "POST", "/_sim/faults", &body).await;
        assert_eq!(status, 200, "{echoed}");
        assert_eq!(sim.faults().corrupt_listing.as_deref(), Some(mode));
        for order in [Order::Asc, Order::Desc] {
            let want = expected(&sim, &portal, order, &Filter::default());
            let pages = corrupt_pages(&c, &portal, order).await;
            assert_eq!(pages.len(), 2, "{mode}: the token still works");
            for (n, page) in pages.into_iter().enumerate() {
                // The SDK accepts the page: the summary members are all optional.
                let out = page.unwrap_or_else(|e| panic!("{mode}: {e:?}"));
                let got = out.sessions();
                let want = &want[n * 5..n * 5 + 5];
                assert_eq!(got.len(), 5);
                // Every session but the first is intact.
                assert_same(&got[1..], &want[1..], mode);
                let (g, w) = (&got[0], &want[0]);
                match mode {
                    "missing_session_id" => {
                        assert_eq!(g.session_id(), None);
                        assert_eq!(g.portal_arn(), Some(w.portal_arn.as_str()));
                    }
                    "missing_start_time" => {
                        assert_eq!(g.start_time(), None);
                        assert_eq!(g.session_id(), Some(w.session_id.as_str()));
                    }
                    "unknown_status" => {
                        // `SessionStatus::Unknown(UnknownVariantValue("Hibernating"))`.
                        let st = g.status().expect("status");
                        assert!(
                            !matches!(st, SessionStatus::Active | SessionStatus::Terminated),
                            "{mode}: {st:?}"
                        );
                        assert_eq!(*st, SessionStatus::from("Hibernating"));
                        assert!(format!("{st:?}").starts_with("Unknown("), "{st:?}");
                        assert_eq!(st.as_str(), "Hibernating");
                        assert_eq!(g.session_id(), Some(w.session_id.as_str()));
                    }
                    "missing_portal_arn" => {
                        assert_eq!(g.portal_arn(), None);
                        assert_eq!(g.session_id(), Some(w.session_id.as_str()));
                    }
                    _ => unreachable!(),
                }
                if mode != "missing_start_time" {
                    assert_eq!(g.start_time().map(ms), Some(w.start_time_ms), "{mode}");
                }
            }
        }
    }

    sim.set_faults(Faults {
        corrupt_listing: Some("bad_json".to_owned()),
        ..Faults::default()
    });
    let (status, _, body) = raw(
        &sim,
        "GET",
        &format!("/portals/{portal}/sessions?maxResults=3"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.starts_with("{\"sessions\":[{\"portalArn\":"), "{body}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).is_err());
    let err = c
        .list_sessions()
        .portal_id(&portal)
        .send()
        .await
        .expect_err("bad JSON must fail");
    // `ServiceError` wrapping `ListSessionsError::Unhandled` (source: the JSON
    // `DeserializeError`, no error code), with the raw 200 response attached.
    assert!(
        matches!(err, aws_sdk_workspacesweb::error::SdkError::ServiceError(_)),
        "bad_json: {err:?}"
    );
    let raw_status = err.raw_response().map(|r| r.status().as_u16());
    assert_eq!(raw_status, Some(200));
    let service = err.into_service_error();
    let shown = format!("{service:?}");
    assert!(
        shown.starts_with("Unhandled(") && shown.contains("DeserializeError"),
        "bad_json: {shown}"
    );
    {
        use aws_sdk_workspacesweb::error::ProvideErrorMetadata as _;
        assert_eq!((service.code(), service.message()), (None, None));
    }
    // GetSession is never corrupted.
    let s = &expected(&sim, &portal, Order::Asc, &Filter::default())[0];
    let out = c
        .get_session()
        .portal_id(&portal)
        .session_id(&s.session_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.session().unwrap().session_id(),
        Some(s.session_id.as_str())
    );
    // An empty page is sent intact even in bad_json mode.
    let nobody = Filter {
        username: Some("nobody@example.com".to_owned()),
        ..Filter::default()
    };
    assert!(list_all(&c, &portal, None, &nobody, 5).await.is_empty());

    // Unknown modes and out-of-range rates are refused, and the knobs stay as they were.
    for body in [
        r#"{"corrupt_listing": "sideways"}"#,
        r#"{"drop_rate": 1.5}"#,
        r#"{"drop_rate": -0.5}"#,
    ] {
        let (status, _, msg) = raw(&sim, "POST", "/_sim/faults", body).await;
        assert_eq!(status, 400, "{body}: {msg}");
    }
    assert_eq!(sim.faults().corrupt_listing.as_deref(), Some("bad_json"));
}

/// `odd_sessions`: one named session served oddly, wherever it falls in the listing, in
/// ListSessions and GetSession alike; every other session intact; removed, it is served as the
/// record says again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_sessions_reach_the_sdk_like_this() {
    let sim = Simulator::start(cfg(24)).await.unwrap();
    let c = client(&sim).await;
    let portals = sim.portal_ids();
    let portal = portals[0].clone();
    let want = expected(&sim, &portal, Order::Desc, &Filter::default());
    // Three sessions in the middle of the listing, each odd in its own way, and a fourth
    // whose GetSession answers for another session.
    let (a, b, d, e) = (&want[50], &want[80], &want[110], &want[140]);
    let body = serde_json::json!({ "odd_sessions": {
        a.session_id.clone(): "unknown_status",
        b.session_id.clone(): "missing_start_time",
        d.session_id.clone(): "foreign_portal_arn",
        e.session_id.clone(): "get_session_other_id",
    }})
    .to_string();
    let (status, _, echoed) = raw(&sim, "POST", "/_sim/faults", &body).await;
    assert_eq!(status, 200, "{echoed}");
    assert_eq!(sim.faults().odd_sessions.len(), 4);

    let got = list_all(&c, &portal, Some(Order::Desc), &Filter::default(), 100).await;
    assert_eq!(got.len(), want.len());
    let other_arn = sim.portal_arn(&portals[1]).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.session_id(), Some(w.session_id.as_str()));
        let id = &w.session_id;
        if id == &a.session_id {
            assert_eq!(g.status().map(|s| s.as_str()), Some("Pending"));
            assert!(format!("{:?}", g.status().unwrap()).starts_with("Unknown("));
        } else if id == &b.session_id {
            assert_eq!(g.start_time(), None);
        } else if id == &d.session_id {
            assert_eq!(g.portal_arn(), Some(other_arn.as_str()));
        } else {
            assert_same(std::slice::from_ref(g), std::slice::from_ref(w), id);
        }
    }
    let get = |id: String| {
        let c = c.clone();
        let portal = portal.clone();
        async move {
            c.get_session()
                .portal_id(portal)
                .session_id(id)
                .send()
                .await
                .unwrap()
                .session()
                .cloned()
                .unwrap()
        }
    };
    let g = get(a.session_id.clone()).await;
    assert_eq!(g.status().map(|s| s.as_str()), Some("Pending"));
    assert_eq!(get(b.session_id.clone()).await.start_time(), None);
    assert_eq!(
        get(d.session_id.clone()).await.portal_arn(),
        Some(other_arn.as_str())
    );
    let g = get(e.session_id.clone()).await;
    assert_ne!(g.session_id(), Some(e.session_id.as_str()));
    assert!(want
        .iter()
        .any(|w| Some(w.session_id.as_str()) == g.session_id()));

    // A portal of its own: the foreign ARN names another, made-up portal.
    let alone = Simulator::start(SimConfig {
        portals: 1,
        ..cfg(25)
    })
    .await
    .unwrap();
    let only = alone.portal_ids()[0].clone();
    let s = alone.listable()[10].clone();
    let mut f = Faults::default();
    f.odd_sessions
        .insert(s.session_id.clone(), "foreign_portal_arn".into());
    alone.set_faults(f);
    let out = client(&alone)
        .await
        .get_session()
        .portal_id(&only)
        .session_id(&s.session_id)
        .send()
        .await
        .unwrap();
    let arn = out.session().unwrap().portal_arn().unwrap().to_string();
    assert!(
        !arn.contains(&only) && arn.ends_with("-000000000000"),
        "{arn}"
    );

    // Unknown modes are refused; removed, every session is served as the record says.
    let (status, _, msg) = raw(
        &sim,
        "POST",
        "/_sim/faults",
        &format!(r#"{{"odd_sessions": {{"{}": "sideways"}}}}"#, a.session_id),
    )
    .await;
    assert_eq!(status, 400, "{msg}");
    sim.set_faults(Faults::default());
    let got = list_all(&c, &portal, Some(Order::Desc), &Filter::default(), 100).await;
    assert_same(&got, &want, "cleared");
    let g = get(e.session_id.clone()).await;
    assert_eq!(g.session_id(), Some(e.session_id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_reach_the_sdk_like_this() {
    use aws_sdk_workspacesweb::error::SdkError;
    let sim = Simulator::start(cfg(23)).await.unwrap();
    let c = client(&sim).await;
    let portal = sim.portal_ids()[0].clone();
    let s = sim.listable()[0].clone();

    let (status, _, body) = raw(&sim, "POST", "/_sim/faults", r#"{"drop_rate": 1.0}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sim.faults().drop_rate, 1.0);

    let err = c
        .list_sessions()
        .portal_id(&portal)
        .send()
        .await
        .expect_err("dropped");
    // `DispatchFailure`: a `ConnectorError` of kind `Other(Some(TransientError))` around
    // hyper's `IncompleteMessage`; not `is_io()`, not a timeout, no raw response.
    match &err {
        SdkError::DispatchFailure(d) => {
            assert!(d.is_other() && !d.is_io() && !d.is_timeout(), "{d:?}");
            assert_eq!(format!("{:?}", d.as_other()), "Some(TransientError)");
            assert!(format!("{d:?}").contains("IncompleteMessage"), "{d:?}");
        }
        other => panic!("expected DispatchFailure, got {other:?}"),
    }
    assert!(err.raw_response().is_none());
    let err = c
        .get_session()
        .portal_id(&portal)
        .session_id(&s.session_id)
        .send()
        .await
        .expect_err("dropped");
    assert!(matches!(err, SdkError::DispatchFailure(_)), "{err:?}");
    let err = c.list_portals().send().await.expect_err("dropped");
    assert!(matches!(err, SdkError::DispatchFailure(_)), "{err:?}");

    // On the wire: the request is read and the connection closes without a single byte.
    let mut sock = tokio::net::TcpStream::connect(sim.local_addr())
        .await
        .unwrap();
    let req = format!("GET /portals/{portal}/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut buf))
        .await
        .expect("the server closes the connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf));

    // The control API is never dropped.
    let stats = sim.stats();
    assert_eq!(stats.dropped, 4);
    assert_eq!(
        (
            stats.list_sessions_calls,
            stats.get_session_calls,
            stats.list_portals_calls
        ),
        (2, 1, 1)
    );
    assert_eq!(
        (stats.throttled, stats.server_errors, stats.client_errors),
        (0, 0, 0)
    );
    let (_, _, body) = raw(&sim, "GET", "/_sim/stats", "").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["dropped"], 4);

    // Some but not all of 50 calls, and the answers that do come are right.
    sim.reset_stats();
    sim.set_faults(Faults {
        drop_rate: 0.3,
        ..Faults::default()
    });
    let mut dropped = 0;
    for _ in 0..50 {
        match c
            .get_session()
            .portal_id(&s.portal_id)
            .session_id(&s.session_id)
            .send()
            .await
        {
            Ok(out) => assert_eq!(
                out.session().unwrap().client_ip_addresses(),
                s.client_ip_addresses.as_slice()
            ),
            Err(SdkError::DispatchFailure(_)) => dropped += 1,
            Err(e) => panic!("expected DispatchFailure, got {e:?}"),
        }
    }
    assert!((1..50).contains(&dropped), "{dropped}");
    let stats = sim.stats();
    assert_eq!(stats.dropped, dropped);
    assert_eq!(stats.get_session_calls, 50);

    // The SDK's standard retry strategy treats a dropped connection as transient.
    let retry = RetryConfig::standard()
        .with_max_attempts(12)
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(5));
    let retrying = client_with(&sim, retry).await;
    sim.reset_stats();
    let got = list_all(
        &retrying,
        &portal,
        Some(Order::Desc),
        &Filter::default(),
        10,
    )
    .await;
    sim.set_faults(Faults::default());
    assert_same(
        &got,
        &expected(&sim, &portal, Order::Desc, &Filter::default()),
        "retried through drops",
    );
    assert!(sim.stats().dropped > 0);
}

// ---------------------------------------------------------------------------------------
// Offset tokens, retention as the clock moves, physical data

fn offset_cfg(seed: u64) -> SimConfig {
    SimConfig {
        token_mode: TokenMode::Offset,
        ..cfg(seed)
    }
}

fn ids_of(v: &[SimSession]) -> Vec<String> {
    v.iter().map(|s| s.session_id.clone()).collect()
}

fn got_ids(v: &[SessionSummary]) -> Vec<String> {
    v.iter()
        .map(|s| s.session_id().unwrap_or("").to_owned())
        .collect()
}

/// Pages through by hand from `first` on; returns everything served.
async fn rest(
    c: &Client,
    portal: &str,
    order: Order,
    mut token: Option<String>,
) -> Vec<SessionSummary> {
    let mut got = Vec::new();
    while let Some(t) = token {
        let (p, next) = page(c, portal, order, &Filter::default(), Some(t)).await;
        got.extend(p);
        token = next;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_pages_concatenate_to_the_listing_when_nothing_changes() {
    let sim = Simulator::start(offset_cfg(21)).await.unwrap();
    assert_eq!(sim.token_mode(), TokenMode::Offset);
    let c = client(&sim).await;
    let portal = sim.portal_ids()[0].clone();
    let active = Filter {
        status: Some("Active"),
        ..Filter::default()
    };
    let terminated = Filter {
        status: Some("Terminated"),
        ..Filter::default()
    };
    let user = Filter {
        username: sim
            .listable()
            .iter()
            .find(|s| s.portal_id == portal)
            .and_then(|s| s.username.clone()),
        ..Filter::default()
    };
    for order in [Order::Asc, Order::Desc] {
        for f in [&Filter::default(), &active, &terminated, &user] {
            for max in [1, 7, 100] {
                let got = list_all(&c, &portal, Some(order), f, max).await;
                assert_same(
                    &got,
                    &expected(&sim, &portal, order, f),
                    &format!("offset {order:?} {f:?} max {max}"),
                );
            }
        }
    }
    // Hidden sessions are left out before counting: pages stay full and nothing repeats.
    // Another portal, not listed so far.
    let portal = sim.portal_ids()[1].clone();
    let listing = expected(&sim, &portal, Order::Asc, &Filter::default());
    let hidden: Vec<String> = [0, 6, 7, 20]
        .iter()
        .map(|&i| listing[i].session_id.clone())
        .collect();
    sim.set_faults(Faults {
        hide_from_listing: hidden.clone(),
        ..Faults::default()
    });
    let got = list_all(&c, &portal, Some(Order::Asc), &Filter::default(), 7).await;
    let want: Vec<SimSession> = listing
        .into_iter()
        .filter(|s| !hidden.contains(&s.session_id))
        .collect();
    assert_same(&got, &want, "offset with hidden sessions");
    // Everything listed was recorded as served; nothing hidden was.
    let served: BTreeSet<String> = sim
        .served()
        .into_iter()
        .filter(|s| s.portal_id == portal)
        .map(|s| s.session_id)
        .collect();
    assert!(want.iter().all(|s| served.contains(&s.session_id)));
    assert!(hidden.iter().all(|id| !served.contains(id)));
}

/// The behaviour the archiver is tested against: with offset tokens, sessions ageing out at
/// the front of an oldest-first listing between two pages make the next page skip exactly as
/// many sessions that are still listable; keyset tokens skip none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_pages_skip_as_many_as_aged_out_at_the_front() {
    for mode in [TokenMode::Keyset, TokenMode::Offset] {
        let sim = Simulator::start(SimConfig {
            token_mode: mode,
            ..cfg(22)
        })
        .await
        .unwrap();
        let c = client(&sim).await;
        let portal = sim.portal_ids()[0].clone();
        let listing = expected(&sim, &portal, Order::Asc, &Filter::default());
        // Age out the k oldest listable sessions, k >= 3 with a distinct start after them.
        let k = (3..listing.len())
            .find(|&k| listing[k].start_time_ms > listing[k - 1].start_time_ms)
            .unwrap();
        let step = listing[k - 1].start_time_ms - sim.retention_cutoff_ms() + 1;

        let (first, token) = page(&c, &portal, Order::Asc, &Filter::default(), None).await;
        assert_same(&first, &listing[..7], "first page");
        sim.advance_clock_by(Duration::from_millis(step as u64));
        assert_eq!(
            expected(&sim, &portal, Order::Asc, &Filter::default()),
            listing[k..],
            "exactly {k} aged out"
        );
        let got = rest(&c, &portal, Order::Asc, token).await;
        let skipped = match mode {
            TokenMode::Keyset => 0,
            TokenMode::Offset => k,
        };
        assert_same(
            &got,
            &listing[7 + skipped..],
            &format!("{mode:?} after ageing"),
        );
        // The skipped ones are still listable but were never served: what an archiver using
        // offset tokens loses unless it lists again.
        let served: BTreeSet<String> = sim.served().into_iter().map(|s| s.session_id).collect();
        let listable: BTreeSet<String> = ids_of(&sim.listable()).into_iter().collect();
        for s in &listing[7..7 + skipped] {
            assert!(listable.contains(&s.session_id) && !served.contains(&s.session_id));
        }
        assert_eq!(served.len(), listing.len() - skipped, "{mode:?}");
        // Aged out: ever listable, no longer listable.
        let ever: BTreeSet<String> = ids_of(&sim.ever_listable()).into_iter().collect();
        for s in &listing[..k] {
            assert!(ever.contains(&s.session_id) && !listable.contains(&s.session_id));
        }
    }
}

/// With offset tokens, sessions arriving at the front of a newest-first listing between two
/// pages make the next page repeat as many; keyset tokens repeat none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_pages_repeat_as_many_as_arrive_at_the_front() {
    for mode in [TokenMode::Keyset, TokenMode::Offset] {
        // History well inside retention: the clock moving with the additions drops nothing.
        let sim = Simulator::start(SimConfig {
            token_mode: mode,
            history_days: 30,
            ..cfg(23)
        })
        .await
        .unwrap();
        let c = client(&sim).await;
        let portal = sim.portal_ids()[2].clone();
        let listing = expected(&sim, &portal, Order::Desc, &Filter::default());
        let (first, token) = page(&c, &portal, Order::Desc, &Filter::default(), None).await;
        assert_same(&first, &listing[..7], "first page");
        let added = sim.add_sessions(&portal, 4, 1);
        let now = expected(&sim, &portal, Order::Desc, &Filter::default());
        assert_eq!(
            ids_of(&now[..4]),
            added.iter().rev().cloned().collect::<Vec<_>>()
        );
        let got = rest(&c, &portal, Order::Desc, token).await;
        let repeated = match mode {
            TokenMode::Keyset => 0,
            TokenMode::Offset => 4,
        };
        assert_same(
            &got,
            &listing[7 - repeated..],
            &format!("{mode:?} after additions"),
        );
        let all: Vec<String> = got_ids(&first).into_iter().chain(got_ids(&got)).collect();
        let distinct: BTreeSet<&String> = all.iter().collect();
        assert_eq!(all.len() - distinct.len(), repeated);
    }
}

/// A `token` of `portal`'s first ListSessions page is refused (ValidationException) once
/// tampered with, reused with another sort order or status filter, sent for another portal or
/// to ListPortals; so is a token that is not one at all.
async fn assert_token_misuse_refused(c: &Client, portal: &str, other_portal: &str, token: &str) {
    let mut tampered = token.to_owned().into_bytes();
    tampered[10] = if tampered[10] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered).unwrap();
    let attempts = [
        c.list_sessions().portal_id(portal).next_token(&tampered),
        c.list_sessions()
            .portal_id(portal)
            .next_token(token)
            .sort_by(SessionSortBy::StartTimeAscending),
        c.list_sessions()
            .portal_id(portal)
            .next_token(token)
            .status(SessionStatus::Terminated),
        c.list_sessions().portal_id(other_portal).next_token(token),
        c.list_sessions().portal_id(portal).next_token("zz"),
    ];
    for (i, a) in attempts.into_iter().enumerate() {
        let err = a.send().await.unwrap_err().into_service_error();
        assert!(err.is_validation_exception(), "attempt {i}: {err:?}");
    }
    let err = c
        .list_portals()
        .next_token(token)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_validation_exception(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_tokens_are_checked_and_expire_like_keyset_ones() {
    let sim = Simulator::start(SimConfig {
        token_ttl: Some(Duration::from_millis(1_000)),
        ..offset_cfg(24)
    })
    .await
    .unwrap();
    let c = client(&sim).await;
    let portal = sim.portal_ids()[0].clone();
    let other_portal = sim.portal_ids()[1].clone();
    let token = c
        .list_sessions()
        .portal_id(&portal)
        .max_results(5)
        .send()
        .await
        .unwrap()
        .next_token()
        .unwrap()
        .to_owned();
    assert!(
        token.bytes().all(|b| b.is_ascii_hexdigit()),
        "opaque: {token}"
    );
    assert_token_misuse_refused(&c, &portal, &other_portal, &token).await;
    let err = c
        .list_sessions()
        .portal_id(&portal)
        .next_token("")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_validation_exception(), "empty token: {err:?}");
    // A good token works, until expire_tokens.
    let out = c
        .list_sessions()
        .portal_id(&portal)
        .next_token(&token)
        .send()
        .await
        .unwrap();
    let want = expected(&sim, &portal, Order::Desc, &Filter::default());
    assert_same(out.sessions(), &want[5..25], "offset 5, default page size");
    sim.expire_tokens();
    let err = c
        .list_sessions()
        .portal_id(&portal)
        .next_token(&token)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_validation_exception(), "{err:?}");
    // And the TTL.
    let token = c
        .list_sessions()
        .portal_id(&portal)
        .max_results(5)
        .send()
        .await
        .unwrap()
        .next_token()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let err = c
        .list_sessions()
        .portal_id(&portal)
        .next_token(&token)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_validation_exception(), "{err:?}");
    let msg = aws_sdk_workspacesweb::error::ProvideErrorMetadata::message(&err).unwrap_or_default();
    assert!(msg.contains("invalid or expired"), "{msg}");
}

async fn get_err(
    c: &Client,
    portal: &str,
    id: &str,
) -> Option<aws_sdk_workspacesweb::operation::get_session::GetSessionError> {
    c.get_session()
        .portal_id(portal)
        .session_id(id)
        .send()
        .await
        .err()
        .map(|e| e.into_service_error())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advancing_the_clock_ages_sessions_out_of_listings_and_get_session() {
    let sim = Simulator::start(cfg(25)).await.unwrap();
    let c = client(&sim).await;
    let portal = sim.portal_ids()[1].clone();
    let ever_at_start = sim.ever_listable();
    assert_eq!(ever_at_start, sim.listable());
    let listing = expected(&sim, &portal, Order::Asc, &Filter::default());
    let oldest = listing[0].clone();
    assert!(get_err(&c, &portal, &oldest.session_id).await.is_none());

    // One day: the sessions that started in the first day after the cutoff go.
    sim.advance_clock_by(Duration::from_secs(86_400));
    let cutoff = sim.retention_cutoff_ms();
    let gone: Vec<&SimSession> = listing
        .iter()
        .filter(|s| s.start_time_ms < cutoff)
        .collect();
    assert!(!gone.is_empty() && gone.len() < listing.len());
    for order in [Order::Asc, Order::Desc] {
        let got = list_all(&c, &portal, Some(order), &Filter::default(), 100).await;
        assert_same(
            &got,
            &expected(&sim, &portal, order, &Filter::default()),
            "after a day",
        );
        let ids: BTreeSet<String> = got_ids(&got).into_iter().collect();
        assert!(gone.iter().all(|s| !ids.contains(&s.session_id)));
    }
    for s in &gone {
        let err = get_err(&c, &portal, &s.session_id).await.unwrap();
        assert!(err.is_resource_not_found_exception(), "{err:?}");
        let out = c
            .list_sessions()
            .portal_id(&portal)
            .session_id(&s.session_id)
            .send()
            .await
            .unwrap();
        assert!(out.sessions().is_empty());
    }
    assert_eq!(sim.ever_listable(), ever_at_start, "ever listable stays");
    let listable: BTreeSet<String> = ids_of(&sim.listable()).into_iter().collect();
    assert!(gone.iter().all(|s| !listable.contains(&s.session_id)));

    // The clock never goes back.
    let now = sim.now_ms();
    sim.advance_clock(-5 * 86_400_000);
    assert_eq!(sim.now_ms(), now);

    // Over HTTP: POST /_sim/advance, and the record views.
    let (status, _, body) = raw(&sim, "POST", "/_sim/advance", r#"{"seconds": 172800}"#).await;
    assert_eq!(status, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["now_ms"], now + 172_800_000);
    assert_eq!(info["now_ms"], sim.now_ms());
    assert_eq!(info["retention_cutoff_ms"], sim.retention_cutoff_ms());
    assert_eq!(info["token_mode"], "keyset");
    assert_eq!(info["clock"], "simulated");
    let next = listing
        .iter()
        .find(|s| s.start_time_ms >= cutoff && s.start_time_ms < sim.retention_cutoff_ms())
        .expect("two more days age more out");
    let err = get_err(&c, &portal, &next.session_id).await.unwrap();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    for bad in [r#"{"seconds": -1}"#, r#"{"seconds": "x"}"#] {
        let (status, _, _) = raw(&sim, "POST", "/_sim/advance", bad).await;
        assert_eq!(status, 400, "{bad}");
    }
    assert_eq!(sim.now_ms(), now + 172_800_000);
    for (path, want) in [
        ("/_sim/listable", sim.listable()),
        ("/_sim/ever-listable", sim.ever_listable()),
        ("/_sim/served", sim.served()),
    ] {
        let (status, _, body) = raw(&sim, "GET", path, "").await;
        assert_eq!(status, 200);
        let got: Vec<SimSession> = serde_json::from_str(&body).unwrap();
        assert_eq!(got, want, "{path}");
    }
    // Served: what the listings above sent, all of it ever listable.
    let served = sim.served();
    assert!(!served.is_empty());
    let ever: BTreeSet<String> = ids_of(&sim.ever_listable()).into_iter().collect();
    assert!(served.iter().all(|s| ever.contains(&s.session_id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_ages_sessions_out_during_a_listing() {
    // One wall second is one simulated day; ~7.5 sessions a day.
    let sim = Simulator::start(SimConfig {
        clock: SimClock::Wall { scale: 86_400.0 },
        portals: 1,
        ..cfg(26)
    })
    .await
    .unwrap();
    let c = client(&sim).await;
    let portal = sim.portal_ids()[0].clone();
    let t0 = (Instant::now(), sim.now_ms());
    let (mut got, mut token) = page(&c, &portal, Order::Asc, &Filter::default(), None).await;
    while let Some(t) = token {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let (p, next) = page(&c, &portal, Order::Asc, &Filter::default(), Some(t)).await;
        got.extend(p);
        token = next;
    }
    let listable_at_end: Vec<String> = ids_of(&sim.listable());
    let wall = t0.0.elapsed();
    let moved = sim.now_ms() - t0.1;
    assert!(
        moved as f64 >= wall.as_millis() as f64 * 86_400.0 * 0.99,
        "{moved} in {wall:?}"
    );
    let ever: BTreeSet<String> = ids_of(&sim.ever_listable()).into_iter().collect();
    let aged_out = ever.len() - listable_at_end.len();
    assert!(aged_out >= 5, "{aged_out} aged out during the listing");
    // Keyset, oldest first: whatever is still listable was served, in order, once.
    let ids = got_ids(&got);
    let served: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(served.len(), ids.len());
    assert!(ids.iter().all(|id| ever.contains(id)));
    assert!(listable_at_end.iter().all(|id| served.contains(id)));
    let starts: Vec<i64> = got.iter().map(|s| ms(s.start_time().unwrap())).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]));
    // The first one served has aged out by now.
    let err = get_err(&c, &portal, &ids[0]).await.unwrap();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    let (_, _, body) = raw(&sim, "GET", "/_sim/info", "").await;
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["clock"], "wall");
    assert_eq!(info["time_scale"], 86_400.0);
    assert!(info["now_ms"].as_i64().unwrap() >= t0.1 + moved);
    assert_physical(&sim, "wall clock");
}

/// Terminated: `start <= end <= now`; Active: no end, `start <= now`.
fn assert_physical(sim: &Simulator, what: &str) {
    let record = sim.record();
    let now = sim.now_ms();
    assert!(!record.is_empty());
    for s in &record {
        match (s.status.as_str(), s.end_time_ms) {
            ("Terminated", Some(end)) => assert!(
                s.start_time_ms <= end && end <= now,
                "{what}: {} ends at {end}, starts at {}, now {now}",
                s.session_id,
                s.start_time_ms
            ),
            ("Active", None) => assert!(
                s.start_time_ms <= now,
                "{what}: {} starts after now",
                s.session_id
            ),
            (status, end) => panic!("{what}: {} is {status} with end {end:?}", s.session_id),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_physical_before_and_after_activity() {
    for (i, c) in [
        cfg(27),
        SimConfig::default(),
        SimConfig {
            history_days: 1,
            sessions_per_portal: 2_000,
            active_per_portal: 50,
            ..cfg(28)
        },
    ]
    .into_iter()
    .enumerate()
    {
        let sim = Simulator::start(c).await.unwrap();
        assert_physical(&sim, &format!("config {i} generated"));
        let portals = sim.portal_ids();
        sim.end_active(Some(&portals[0]), 2);
        assert_physical(&sim, "after end_active");
        sim.add_sessions(&portals[0], 30, 5);
        sim.add_sessions(&portals[1], 1, 1);
        sim.add_sessions(&portals[1], 3, 0);
        assert_physical(&sim, "after add_sessions");
        sim.end_active(None, usize::MAX);
        assert_physical(&sim, "after ending every active");
        sim.add_portal();
        assert_physical(&sim, "after add_portal");
        let (status, _, body) = raw(
            &sim,
            "POST",
            "/_sim/activity",
            r#"{"advanceMs": -100000000, "newSessions": 10, "newActive": 2, "endActive": 1}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_physical(&sim, "after activity with a negative advance");
        sim.advance_clock(-86_400_000);
        assert_physical(&sim, "after a negative advance");
        sim.advance_clock_by(Duration::from_secs(3_600));
        sim.add_sessions(&portals[1], 5, 2);
        sim.end_active(None, 1);
        assert_physical(&sim, "after more activity");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_reads_offset_tokens_like_keyset_ones() {
    let python = boto3_python().await;
    let sim = Simulator::start(offset_cfg(29)).await.unwrap();
    let out = run_boto3_check(&python, &sim).await;
    assert!(out.contains("offset tokens"), "{out}");
}

// ---------------------------------------------------------------------------------------
// Accounts: STS AssumeRole, Organizations ListAccounts, credentials that expire.

const ACCOUNT_A: &str = "111111111111";
const ACCOUNT_B: &str = "222222222222";
const SUSPENDED: &str = "333333333333";
const HOME: &str = "123456789012";

/// Five portals over two member accounts (A holds portals 0, 2, 4; B holds 1, 3), one
/// suspended member, and the home (management) account holding nothing.
fn org_cfg(seed: u64) -> SimConfig {
    SimConfig {
        portals: 5,
        sessions_per_portal: 60,
        accounts: vec![ACCOUNT_A.to_owned(), ACCOUNT_B.to_owned()],
        suspended_accounts: vec![SUSPENDED.to_owned()],
        ..cfg(seed)
    }
}

fn role(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/Archiver")
}

/// SDK config for the simulator with these credentials and no retries.
async fn sdk_conf(
    sim: &Simulator,
    creds: impl aws_sdk_sts::config::ProvideCredentials + 'static,
) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(sim.endpoint_url())
        .region(Region::new("us-east-1"))
        .credentials_provider(creds)
        .retry_config(RetryConfig::disabled())
        .load()
        .await
}

fn home_creds() -> Credentials {
    Credentials::new("AKIAHOMEEXAMPLE", "home-secret", None, None, "test")
}

async fn sts_client(sim: &Simulator, creds: Credentials) -> aws_sdk_sts::Client {
    aws_sdk_sts::Client::new(&sdk_conf(sim, creds).await)
}

/// AssumeRole with the home account's credentials; the granted credentials as static ones.
async fn assume(sim: &Simulator, account: &str, session: &str) -> (Credentials, i64) {
    let out = sts_client(sim, home_creds())
        .await
        .assume_role()
        .role_arn(role(account))
        .role_session_name(session)
        .send()
        .await
        .expect("assume role");
    let c = out.credentials().expect("credentials");
    let creds = Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "simulator-sts",
    );
    (creds, c.expiration().secs())
}

async fn portal_arns(c: &Client) -> Result<Vec<String>, String> {
    let mut arns = Vec::new();
    let mut token = None;
    loop {
        let out = c
            .list_portals()
            .max_results(1)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| {
                use aws_sdk_workspacesweb::error::ProvideErrorMetadata as _;
                format!(
                    "{} {}",
                    e.code().unwrap_or_default(),
                    e.raw_response().map_or(0, |r| r.status().as_u16())
                )
            })?;
        arns.extend(out.portals().iter().map(|p| p.portal_arn.clone()));
        token = out.next_token;
        if token.is_none() {
            return Ok(arns);
        }
    }
}

fn arns_in(sim: &Simulator, account: &str) -> Vec<String> {
    sim.portal_ids_in(account)
        .iter()
        .map(|id| sim.portal_arn(id).unwrap())
        .collect()
}

/// (HTTP status, error code, message) of an SDK error.
fn err_parts<E>(
    e: &aws_sdk_sts::error::SdkError<E, aws_sdk_sts::config::http::HttpResponse>,
) -> (u16, String, String)
where
    E: aws_sdk_sts::error::ProvideErrorMetadata,
{
    use aws_sdk_sts::error::ProvideErrorMetadata as _;
    (
        e.raw_response().map_or(0, |r| r.status().as_u16()),
        e.code().unwrap_or_default().to_owned(),
        e.message().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portals_are_spread_over_the_accounts_and_sessions_carry_them() {
    let sim = Simulator::start(org_cfg(31)).await.unwrap();
    let ids = sim.portal_ids();
    assert_eq!(
        sim.portal_ids_in(ACCOUNT_A),
        [ids[0].clone(), ids[2].clone(), ids[4].clone()]
    );
    assert_eq!(
        sim.portal_ids_in(ACCOUNT_B),
        [ids[1].clone(), ids[3].clone()]
    );
    assert!(sim.portal_ids_in(HOME).is_empty());
    for s in sim.record() {
        let account = if sim.portal_ids_in(ACCOUNT_A).contains(&s.portal_id) {
            ACCOUNT_A
        } else {
            ACCOUNT_B
        };
        assert_eq!(
            s.portal_arn,
            format!(
                "arn:aws:workspaces-web:us-east-1:{account}:portal/{}",
                s.portal_id
            )
        );
    }
    // Without accounts, everything is in the home account, as before.
    let single = Simulator::start(cfg(31)).await.unwrap();
    assert_eq!(single.portal_ids_in(HOME), single.portal_ids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assumed_roles_see_only_their_accounts_portals() {
    let sim = Simulator::start(org_cfg(32)).await.unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let out = sts_client(&sim, home_creds())
        .await
        .assume_role()
        .role_arn(role(ACCOUNT_A))
        .role_session_name("archiver-test")
        .send()
        .await
        .unwrap();
    let c = out.credentials().unwrap();
    assert!(c.access_key_id().starts_with("ASIA") && c.access_key_id().len() == 20);
    assert_eq!(c.secret_access_key().len(), 40);
    assert!(!c.session_token().is_empty());
    let ttl = c.expiration().secs() - before;
    assert!((3599..=3601).contains(&ttl), "expiration {ttl} s from now");
    let user = out.assumed_role_user().unwrap();
    assert_eq!(
        user.arn(),
        format!("arn:aws:sts::{ACCOUNT_A}:assumed-role/Archiver/archiver-test")
    );
    assert!(user.assumed_role_id().ends_with(":archiver-test"));
    use aws_sdk_sts::operation::RequestId as _;
    assert!(out.request_id().is_some_and(|id| !id.is_empty()));

    let creds = Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "sts",
    );
    let a = Client::new(&sdk_conf(&sim, creds).await);
    assert_eq!(portal_arns(&a).await.unwrap(), arns_in(&sim, ACCOUNT_A));
    let mine = sim.portal_ids_in(ACCOUNT_A)[1].clone();
    let got = list_all(&a, &mine, Some(Order::Asc), &Filter::default(), 9).await;
    assert!(!got.is_empty());
    assert_same(
        &got,
        &expected(&sim, &mine, Order::Asc, &Filter::default()),
        "account A's portal",
    );
    // Another account's portal is not found, exactly like a missing one.
    let theirs = sim.portal_ids_in(ACCOUNT_B)[0].clone();
    let err = a
        .list_sessions()
        .portal_id(&theirs)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    let their_session = sim
        .listable()
        .into_iter()
        .find(|s| s.portal_id == theirs)
        .unwrap();
    let err = a
        .get_session()
        .portal_id(&theirs)
        .session_id(&their_session.session_id)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");

    // The home (management) account holds no portals.
    let home = Client::new(&sdk_conf(&sim, home_creds()).await);
    assert_eq!(portal_arns(&home).await.unwrap(), Vec::<String>::new());

    // aws-config's AssumeRoleProvider, as the archiver uses it.
    let provider = aws_config::sts::AssumeRoleProvider::builder(role(ACCOUNT_B))
        .session_name("provider")
        .configure(&sdk_conf(&sim, home_creds()).await)
        .build()
        .await;
    let b = Client::new(&sdk_conf(&sim, provider).await);
    assert_eq!(portal_arns(&b).await.unwrap(), arns_in(&sim, ACCOUNT_B));
    assert_eq!(sim.assume_role_calls(ACCOUNT_A), 1);
    assert!(sim.assume_role_calls(ACCOUNT_B) >= 1);
    let stats = sim.stats();
    assert_eq!(stats.assume_role_denied, 0);
    assert_eq!(stats.client_errors, 2, "the two not-found answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_denials_and_validation_reach_the_sdk() {
    let sim = Simulator::start(org_cfg(33)).await.unwrap();
    let sts = sts_client(&sim, home_creds()).await;
    let try_assume = |account: String, session: &'static str| {
        let sts = sts.clone();
        async move {
            sts.assume_role()
                .role_arn(account)
                .role_session_name(session)
                .send()
                .await
        }
    };
    let denied_msg = |account: &str| {
        format!(
            "User: arn:aws:iam::{HOME}:root is not authorized to perform: sts:AssumeRole on \
             resource: {}",
            role(account)
        )
    };
    for account in [SUSPENDED, "444444444444"] {
        let e = try_assume(role(account), "s1").await.unwrap_err();
        assert_eq!(
            err_parts(&e),
            (403, "AccessDenied".to_owned(), denied_msg(account))
        );
    }
    sim.deny_role(ACCOUNT_B);
    let e = try_assume(role(ACCOUNT_B), "s1").await.unwrap_err();
    assert_eq!(
        err_parts(&e),
        (403, "AccessDenied".to_owned(), denied_msg(ACCOUNT_B))
    );
    sim.allow_role(ACCOUNT_B);
    try_assume(role(ACCOUNT_B), "s1").await.unwrap();

    let e = try_assume(role(ACCOUNT_A), "x").await.unwrap_err();
    let (status, code, message) = err_parts(&e);
    assert_eq!((status, code.as_str()), (400, "ValidationError"));
    assert_eq!(
        message,
        "1 validation error detected: Value 'x' at 'roleSessionName' failed to satisfy \
         constraint: Member must have length greater than or equal to 2"
    );
    let e = try_assume(format!("arn:aws:iam::{ACCOUNT_A}:user/bob"), "s1")
        .await
        .unwrap_err();
    assert_eq!(
        err_parts(&e),
        (
            400,
            "ValidationError".to_owned(),
            format!("arn:aws:iam::{ACCOUNT_A}:user/bob is invalid")
        )
    );
    let stats = sim.stats();
    assert_eq!(stats.assume_role_calls, 6);
    assert_eq!(stats.assume_role_denied, 3);
    assert_eq!(sim.assume_role_calls(ACCOUNT_B), 2);
    assert_eq!(sim.assume_role_calls(SUSPENDED), 1);
    assert_eq!(stats.client_errors, 5);

    // An external id, when configured, must match exactly.
    let sim = Simulator::start(SimConfig {
        external_id: Some("ext-1234".to_owned()),
        ..org_cfg(33)
    })
    .await
    .unwrap();
    let sts = sts_client(&sim, home_creds()).await;
    for given in [None, Some("ext-12345")] {
        let e = sts
            .assume_role()
            .role_arn(role(ACCOUNT_A))
            .role_session_name("s1")
            .set_external_id(given.map(str::to_owned))
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            err_parts(&e),
            (403, "AccessDenied".to_owned(), denied_msg(ACCOUNT_A)),
            "{given:?}"
        );
    }
    let ok = sts
        .assume_role()
        .role_arn(role(ACCOUNT_A))
        .role_session_name("s1")
        .external_id("ext-1234")
        .send()
        .await
        .unwrap();
    assert!(ok.credentials().is_some());
    assert_eq!(sim.stats().assume_role_denied, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_accounts_pages_through_the_organization() {
    use aws_sdk_organizations::types::{AccountJoinedMethod, AccountState, AccountStatus};
    let sim = Simulator::start(SimConfig {
        accounts: vec![
            ACCOUNT_A.to_owned(),
            ACCOUNT_B.to_owned(),
            "555555555555".to_owned(),
            "666666666666".to_owned(),
        ],
        ..org_cfg(34)
    })
    .await
    .unwrap();
    let org = aws_sdk_organizations::Client::new(&sdk_conf(&sim, home_creds()).await);
    // No MaxResults: the simulator still pages, 3 accounts at most.
    let pages: Vec<_> = org
        .list_accounts()
        .into_paginator()
        .send()
        .try_collect()
        .await
        .unwrap();
    let sizes: Vec<usize> = pages.iter().map(|p| p.accounts().len()).collect();
    assert_eq!(sizes, [3, 3]);
    assert_eq!(sim.stats().list_accounts_calls, 2);
    let accounts: Vec<_> = pages.iter().flat_map(|p| p.accounts().to_vec()).collect();
    let got: Vec<(&str, AccountStatus, AccountState)> = accounts
        .iter()
        .map(|a| {
            (
                a.id().unwrap(),
                a.status().unwrap().clone(),
                a.state().unwrap().clone(),
            )
        })
        .collect();
    let active = |id| (id, AccountStatus::Active, AccountState::Active);
    assert_eq!(
        got,
        [
            active(HOME),
            active(ACCOUNT_A),
            active(ACCOUNT_B),
            active("555555555555"),
            active("666666666666"),
            (SUSPENDED, AccountStatus::Suspended, AccountState::Suspended),
        ]
    );
    let mut last_joined = 0;
    for a in &accounts {
        let id = a.id().unwrap();
        let arn = a.arn().unwrap();
        assert!(
            arn.starts_with(&format!("arn:aws:organizations::{HOME}:account/o-"))
                && arn.ends_with(&format!("/{id}")),
            "{arn}"
        );
        assert_eq!(a.email(), Some(format!("aws+{id}@example.com").as_str()));
        assert_eq!(a.joined_method(), Some(&AccountJoinedMethod::Created));
        let joined = a.joined_timestamp().unwrap().secs();
        assert!(joined > last_joined && joined < 1_764_150_000);
        last_joined = joined;
    }
    // MaxResults 2: pages of 2.
    let pages: Vec<_> = org
        .list_accounts()
        .max_results(2)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .unwrap();
    let sizes: Vec<usize> = pages.iter().map(|p| p.accounts().len()).collect();
    assert_eq!(sizes, [2, 2, 2]);

    // Out-of-range MaxResults and forged tokens.
    let e = org
        .list_accounts()
        .max_results(21)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_invalid_input_exception(), "{e:?}");
    let e = org
        .list_accounts()
        .next_token("deadbeef")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_invalid_input_exception(), "{e:?}");

    // A member account's credentials may not list the organization.
    let (member, _) = assume(&sim, ACCOUNT_A, "member").await;
    let org_member = aws_sdk_organizations::Client::new(&sdk_conf(&sim, member).await);
    let e = org_member
        .list_accounts()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_access_denied_exception(), "{e:?}");
    use aws_sdk_organizations::error::ProvideErrorMetadata as _;
    assert_eq!(
        e.message(),
        Some("You don't have permissions to access this resource.")
    );

    // Without accounts there is no organization.
    let single = Simulator::start(cfg(34)).await.unwrap();
    let org = aws_sdk_organizations::Client::new(&sdk_conf(&single, home_creds()).await);
    let e = org
        .list_accounts()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_aws_organizations_not_in_use_exception(), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_credentials_are_rejected_by_every_api() {
    let sim = Simulator::start(SimConfig {
        credential_ttl: Duration::from_secs(2),
        ..org_cfg(35)
    })
    .await
    .unwrap();
    let (creds, expires) = assume(&sim, ACCOUNT_B, "short").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    assert!(
        (1..=2).contains(&(expires - now.as_secs() as i64)),
        "{expires} vs {now:?}"
    );
    let ws = Client::new(&sdk_conf(&sim, creds.clone()).await);
    assert_eq!(portal_arns(&ws).await.unwrap(), arns_in(&sim, ACCOUNT_B));
    // Past the expiration (whole seconds) by a margin.
    let wait = Duration::from_secs(expires as u64).saturating_sub(now) + Duration::from_millis(300);
    tokio::time::sleep(wait).await;

    let err = ws.list_portals().send().await.unwrap_err();
    use aws_sdk_workspacesweb::error::ProvideErrorMetadata as _;
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
    assert_eq!(err.code(), Some("ExpiredTokenException"));
    assert_eq!(
        err.message(),
        Some("The security token included in the request is expired")
    );
    let portal = sim.portal_ids_in(ACCOUNT_B)[0].clone();
    let err = ws
        .list_sessions()
        .portal_id(&portal)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ExpiredTokenException"));

    let e = sts_client(&sim, creds.clone())
        .await
        .assume_role()
        .role_arn(role(ACCOUNT_A))
        .role_session_name("chained")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err_parts(&e),
        (
            403,
            "ExpiredToken".to_owned(),
            "The security token included in the request is expired".to_owned()
        )
    );
    let org = aws_sdk_organizations::Client::new(&sdk_conf(&sim, creds).await);
    let e = org.list_accounts().send().await.unwrap_err();
    assert_eq!(e.code(), Some("ExpiredTokenException"));
    let stats = sim.stats();
    assert_eq!(stats.expired_credentials, 4);
    assert_eq!(
        stats.list_portals_calls,
        1 + 2,
        "the pages before, the call after"
    );
    assert_eq!(stats.list_sessions_calls, 1);
    // New credentials work again.
    let (fresh, _) = assume(&sim, ACCOUNT_B, "again").await;
    let ws = Client::new(&sdk_conf(&sim, fresh).await);
    assert_eq!(portal_arns(&ws).await.unwrap(), arns_in(&sim, ACCOUNT_B));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_actions_and_targets_get_their_protocols_errors() {
    let sim = Simulator::start(org_cfg(36)).await.unwrap();
    let (status, headers, body) = raw(
        &sim,
        "POST",
        "/",
        "Action=GetCallerIdentity&Version=2011-06-15",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], "text/xml");
    assert!(body.contains("<Code>InvalidAction</Code>"), "{body}");
    assert!(
        body.contains("Could not find operation GetCallerIdentity for version 2011-06-15"),
        "{body}"
    );
    assert!(body.contains(&format!(
        "<RequestId>{}</RequestId>",
        headers["x-amzn-requestid"]
    )));
    let (status, _, body) = raw(&sim, "POST", "/", "").await;
    assert_eq!(status, 400);
    assert!(body.contains("<Code>MissingAction</Code>"), "{body}");

    let mut s = tokio::net::TcpStream::connect(sim.local_addr())
        .await
        .unwrap();
    let req = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
               X-Amz-Target: AWSOrganizationsV20161128.DescribeOrganization\r\n\
               Content-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\n\r\n{}";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    assert!(buf.starts_with("HTTP/1.1 400"), "{buf}");
    let body: serde_json::Value =
        serde_json::from_str(buf.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["__type"], "UnknownOperationException");

    // The control API denies and allows roles too.
    let (status, _, body) = raw(
        &sim,
        "POST",
        "/_sim/deny-role",
        &format!("{{\"account\":\"{ACCOUNT_A}\"}}"),
    )
    .await;
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["denied_roles"], serde_json::json!([ACCOUNT_A]));
    assert_eq!(info["accounts"], serde_json::json!([ACCOUNT_A, ACCOUNT_B]));
    assert_eq!(
        info["portal_arns"][1],
        sim.portal_arn(&sim.portal_ids()[1]).unwrap()
    );
    let e = sts_client(&sim, home_creds())
        .await
        .assume_role()
        .role_arn(role(ACCOUNT_A))
        .role_session_name("s1")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err_parts(&e).1, "AccessDenied");
    let (status, _, body) = raw(
        &sim,
        "POST",
        "/_sim/allow-role",
        &format!("{{\"account\":\"{ACCOUNT_A}\"}}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assume(&sim, ACCOUNT_A, "s2").await;
    let (status, _, _) = raw(&sim, "POST", "/_sim/deny-role", "{\"account\":\"12\"}").await;
    assert_eq!(status, 400);
    let (status, _, body) = raw(&sim, "GET", "/_sim/stats", "").await;
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["assume_role_calls"], 2);
    assert_eq!(stats["assume_role_by_account"][ACCOUNT_A], 2);
}

/// Runs tests/py/boto3_accounts_check.py against a simulator with accounts and one whose
/// credentials expire after 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_reads_sts_and_organizations_like_the_real_services() {
    let python = boto3_python().await;
    let sim = Simulator::start(org_cfg(37)).await.unwrap();
    let expiring = Simulator::start(SimConfig {
        credential_ttl: Duration::from_secs(2),
        ..org_cfg(38)
    })
    .await
    .unwrap();
    run_py_check(
        &python,
        "boto3_accounts_check.py",
        &[sim.endpoint_url(), expiring.endpoint_url()],
        "boto3 accounts check ok",
    )
    .await;
    assert_eq!(sim.stats().assume_role_denied, 3);
    assert!(sim.stats().list_accounts_calls >= 3);
    assert_eq!(sim.stats().rpc_throttled, 2);
    assert_eq!(expiring.stats().expired_credentials, 3);
}
