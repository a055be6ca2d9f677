//! Several AWS accounts, end to end: the real binary assumes a role in each member account
//! through the simulator's STS, optionally lists them with its Organizations, and archives
//! every account's portals into one archive. Compared with the simulator's own record.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use archiver_simulator::{Faults, SimConfig, SimSession};
use util::{sim_config, Env, Run};

const A: &str = "111111111111";
const B: &str = "222222222222";
const C: &str = "333333333333";
const SUSPENDED: &str = "444444444444";

fn accounts_config(portals: usize, sessions: usize, active: usize) -> SimConfig {
    SimConfig {
        accounts: vec![A.into(), B.into(), C.into()],
        ..sim_config(portals, sessions, active)
    }
}

/// The account in an ARN (`arn:aws:SERVICE:REGION:ACCOUNT:...`).
fn account_of(arn: &str) -> String {
    arn.split(':').nth(4).unwrap_or_default().to_string()
}

/// The expected sessions of these accounts only.
fn expected_in(env: &Env, accounts: &[&str]) -> BTreeMap<String, SimSession> {
    env.expected()
        .into_iter()
        .filter(|(_, s)| accounts.contains(&account_of(&s.portal_arn).as_str()))
        .collect()
}

/// Run with STS and Organizations pointed at the simulator too.
async fn run(env: &Env, args: &[&str]) -> Run {
    let mut c = env.cmd(args);
    c.env("AWS_ENDPOINT_URL_STS", env.sim.endpoint_url())
        .env("AWS_ENDPOINT_URL_ORGANIZATIONS", env.sim.endpoint_url());
    Run::from(c.output().await.unwrap())
}

fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_accounts_one_denied_the_others_archived_exactly_and_the_third_named() {
    let env = Env::new(accounts_config(6, 300, 3)).await;
    env.sim.deny_role(C);
    let summary = env.dir.path().join("summary.json");
    let metrics = env.dir.path().join("metrics.prom");
    let accounts = format!("{A},{B},{C}");
    let args = [
        "run",
        "--accounts",
        &accounts,
        "--account-role",
        "archiver-read",
        "--summary-json",
        summary.to_str().unwrap(),
        "--metrics-file",
        metrics.to_str().unwrap(),
    ];
    let r = run(&env, &args).await;
    r.code(1);
    let last = r.last_line();
    assert!(
        last.contains(&format!("account {C}")) && last.contains("AccessDenied"),
        "the last line names the account and why: {last}"
    );
    assert!(!last.contains(&format!("account {A}")) && !last.contains(&format!("account {B}")));
    assert_eq!(
        r.stderr.matches("AccessDenied").count(),
        2,
        "the refusal is told twice (the account's error line, the last line), not a third time by the SDK:\n{}",
        r.stderr
    );

    // The two reachable accounts are archived exactly; nothing of the third.
    let rows = env.archived();
    util::assert_exact(&rows, &expected_in(&env, &[A, B]));
    assert!(rows.iter().all(|r| account_of(&r.portal_arn) != C));
    let accounts_seen: BTreeSet<String> = rows.iter().map(|r| account_of(&r.portal_arn)).collect();
    assert_eq!(
        accounts_seen,
        BTreeSet::from([A.to_string(), B.to_string()])
    );

    // The summary carries every account and each portal's account.
    let doc = read_json(&summary);
    assert_eq!(doc["outcome"], "failed");
    let by_account: BTreeMap<String, &serde_json::Value> = doc["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["account_id"].as_str().unwrap().to_string(), a))
        .collect();
    assert_eq!(by_account.len(), 3, "{doc:#}");
    assert_eq!(by_account[A]["outcome"], "ok");
    assert_eq!(by_account[B]["outcome"], "ok");
    assert_eq!(by_account[C]["outcome"], "failed");
    assert!(by_account[C]["error"]
        .as_str()
        .unwrap()
        .contains("AccessDenied"));
    assert_eq!(
        by_account[C]["role_arn"],
        format!("arn:aws:iam::{C}:role/archiver-read")
    );
    assert_eq!(doc["totals"]["accounts_failed"], 1);
    for p in doc["portals"].as_array().unwrap() {
        let id = p["portal_id"].as_str().unwrap();
        let arn = env.sim.portal_arn(id).unwrap();
        assert_eq!(p["account_id"], account_of(&arn), "{p}");
    }
    let portals_in = |a: &str| {
        env.sim
            .portal_ids()
            .into_iter()
            .filter(|p| account_of(&env.sim.portal_arn(p).unwrap()) == a)
            .count() as u64
    };
    assert_eq!(by_account[A]["portals"], portals_in(A));
    assert_eq!(by_account[B]["portals"], portals_in(B));
    assert_eq!(by_account[C]["portals"], 0);
    // One AssumeRole per reachable account: the role check's credentials serve its client.
    for a in [A, B] {
        assert_eq!(env.sim.assume_role_calls(a), 1, "{a}");
    }

    // Metrics: one sample per account, and the account on every portal's samples.
    let text = std::fs::read_to_string(&metrics).unwrap();
    for (a, v) in [(A, 0), (B, 0), (C, 1)] {
        let want = format!("archiver_account_failed{{account_id=\"{a}\"}} {v}");
        assert!(text.lines().any(|l| l == want), "missing {want}\n{text}");
    }
    for p in env.sim.portal_ids() {
        let a = account_of(&env.sim.portal_arn(&p).unwrap());
        let labelled =
            format!("archiver_portal_rows_written{{account_id=\"{a}\",portal_id=\"{p}\"}}");
        assert_eq!(
            text.lines().any(|l| l.starts_with(&labelled)),
            a != C,
            "{labelled}\n{text}"
        );
    }

    // Status: each portal's account; the last run names the failed account.
    let st = run(&env, &["status", "--json"]).await;
    st.ok();
    let doc: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert!(doc["last_run"]["detail"]
        .as_str()
        .unwrap()
        .contains(&format!("account {C}")));
    let listed = doc["portals"].as_array().unwrap();
    assert_eq!(listed.len() as u64, portals_in(A) + portals_in(B));
    for p in listed {
        let arn = env
            .sim
            .portal_arn(p["portal_id"].as_str().unwrap())
            .unwrap();
        assert_eq!(p["account_id"], account_of(&arn));
    }
    let table = run(&env, &["status"]).await;
    table.ok();
    assert!(table.stdout.contains(A) && table.stdout.contains(B));

    // The account of every row, the way docs/dataset.md says to query it, read by DuckDB.
    let py = util::python_with("duckdb");
    let q = format!(
        "import duckdb, json; print(json.dumps(dict(duckdb.sql(\"SELECT split_part(portal_arn, ':', 5), count(*) FROM read_parquet('{}/sessions/**/*.parquet') GROUP BY 1\").fetchall())))",
        env.archive().display()
    );
    let out = std::process::Command::new(&py)
        .args(["-c", &q])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counted: BTreeMap<String, usize> = serde_json::from_slice(&out.stdout).unwrap();
    let want: BTreeMap<String, usize> = [A, B]
        .iter()
        .map(|a| (a.to_string(), expected_in(&env, &[a]).len()))
        .collect();
    assert_eq!(counted, want);

    // verify proves the two reachable accounts' portals complete, and fails naming the third.
    let v = run(
        &env,
        &[
            "verify",
            "--json",
            "--accounts",
            &accounts,
            "--account-role",
            "archiver-read",
        ],
    )
    .await;
    v.code(1);
    assert!(
        v.last_line().contains(&format!("account {C}")),
        "{}",
        v.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&v.stdout).unwrap();
    let verified: BTreeSet<String> = report["portals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["ok"], true, "{p}");
            p["portal_id"].as_str().unwrap().to_string()
        })
        .collect();
    let reachable: BTreeSet<String> = [A, B]
        .iter()
        .flat_map(|a| env.sim.portal_ids_in(a))
        .collect();
    assert_eq!(verified, reachable);

    // Once the role is allowed again, the third account is backfilled; the others are not
    // written twice.
    env.sim.allow_role(C);
    run(&env, &args).await.ok();
    env.assert_exact();
    let doc = read_json(&summary);
    assert_eq!(doc["outcome"], "ok");
    assert_eq!(doc["totals"]["accounts_failed"], 0);
    run(
        &env,
        &[
            "verify",
            "--accounts",
            &accounts,
            "--account-role",
            "archiver-read",
        ],
    )
    .await
    .ok();
}

/// A role that may be assumed but lacks `workspaces-web:ListPortals`: that account is named and
/// skipped, the others are archived; once allowed, it is backfilled and nothing is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_whose_portal_listing_is_refused_is_named_and_the_others_archived() {
    let env = Env::new(accounts_config(6, 120, 2)).await;
    env.sim.set_faults(Faults {
        deny_list_portals: vec![B.into()],
        ..Faults::default()
    });
    let summary = env.dir.path().join("summary.json");
    let accounts = format!("{A},{B},{C}");
    let args = [
        "run",
        "--accounts",
        &accounts,
        "--account-role",
        "archiver-read",
        "--summary-json",
        summary.to_str().unwrap(),
    ];
    let r = run(&env, &args).await;
    r.code(1);
    let last = r.last_line();
    assert!(
        last.contains(&format!("1 of 3 accounts failed: account {B}"))
            && last.contains("ListPortals")
            && last.contains("access denied"),
        "the last line names the account and why: {last}"
    );
    util::assert_exact(&env.archived(), &expected_in(&env, &[A, C]));
    let doc = read_json(&summary);
    let b = doc["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account_id"] == B)
        .unwrap();
    assert_eq!(b["outcome"], "failed", "{b}");
    assert_eq!(b["portals"], 0, "{b}");
    assert_eq!(doc["totals"]["accounts_failed"], 1);
    // The role itself was assumed: it is the listing that failed.
    assert_eq!(env.sim.assume_role_calls(B), 1);

    env.sim.set_faults(Faults::default());
    run(&env, &args).await.ok();
    env.assert_exact();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_discovery_archives_every_active_account_and_skips_suspended_ones() {
    // The organization's management account (the job's own) is A, a member holding portals
    // like the others: ListAccounts lists it, and it is reached through the role too.
    let env = Env::new(SimConfig {
        account_id: A.into(),
        suspended_accounts: vec![SUSPENDED.into()],
        external_id: Some("audit-2026".into()),
        ..accounts_config(5, 200, 2)
    })
    .await;
    let role = "arn:aws:iam::{account}:role/org/archiver-read";

    // Dry run: the accounts and their portals, nothing written.
    let dry = run(
        &env,
        &[
            "run",
            "--dry-run",
            "--organization",
            "--account-role",
            role,
            "--external-id",
            "audit-2026",
        ],
    )
    .await;
    dry.ok();
    for a in [A, B, C] {
        assert!(
            dry.stdout.contains(&format!(
                "account {a}: role arn:aws:iam::{a}:role/org/archiver-read assumed"
            )),
            "{}",
            dry.stdout
        );
    }
    assert!(!dry.stdout.contains(SUSPENDED), "{}", dry.stdout);
    for p in env.sim.portal_ids() {
        assert!(dry.stdout.contains(&p), "{}", dry.stdout);
    }
    assert!(!env.archive().exists());

    // A wrong external id: every account refused, each named.
    let r = run(
        &env,
        &[
            "run",
            "--organization",
            "--account-role",
            role,
            "--external-id",
            "wrong-id",
        ],
    )
    .await;
    r.code(1);
    for a in [A, B, C] {
        assert!(r.stderr.contains(&format!("account {a}")), "{}", r.stderr);
    }
    assert!(env.archived().is_empty());

    env.sim.reset_stats();
    run(
        &env,
        &[
            "run",
            "--organization",
            "--account-role",
            role,
            "--external-id",
            "audit-2026",
        ],
    )
    .await
    .ok();
    env.assert_exact();
    let stats = env.sim.stats();
    assert!(stats.list_accounts_calls >= 1, "{stats:?}");
    assert_eq!(env.sim.assume_role_calls(SUSPENDED), 0);
    for a in [A, B, C] {
        assert!(env.sim.assume_role_calls(a) >= 1, "{a}: {stats:?}");
    }
}

/// Organizations and STS throttle bursts: their calls are retried up to `--max-attempts`, like
/// every other call. Three throttled answers in a row fail a run allowed 3 attempts a call (the
/// SDK's own default), not one with the default 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_sts_and_organizations_calls_are_retried_up_to_max_attempts() {
    let env = Env::new(SimConfig {
        account_id: A.into(),
        ..accounts_config(3, 30, 0)
    })
    .await;
    let throttle = |n| {
        env.sim.reset_stats();
        env.sim.set_faults(Faults {
            throttle_rpc_calls: n,
            ..Faults::default()
        });
    };
    let org = ["run", "--organization", "--account-role", "archiver-read"];

    throttle(3);
    let r = run(&env, &[&org[..], &["--max-attempts", "3"]].concat()).await;
    r.code(1);
    let last = r.last_line();
    assert!(
        last.contains("ListAccounts") && last.contains("TooManyRequestsException"),
        "{last}"
    );
    assert_eq!(env.sim.stats().rpc_throttled, 3);
    assert!(env.archived().is_empty());

    throttle(3);
    run(&env, &org).await.ok();
    env.assert_exact();
    let stats = env.sim.stats();
    assert_eq!(stats.rpc_throttled, 3, "{stats:?}");
    assert!(stats.list_accounts_calls >= 1, "{stats:?}");

    // AssumeRole, throttled while the three roles are assumed side by side.
    throttle(3);
    let accounts = format!("{A},{B},{C}");
    run(
        &env,
        &[
            "run",
            "--accounts",
            &accounts,
            "--account-role",
            "archiver-read",
        ],
    )
    .await
    .ok();
    env.assert_exact();
    assert_eq!(env.sim.stats().rpc_throttled, 3);
    for a in [A, B, C] {
        assert_eq!(env.sim.assume_role_calls(a), 1, "{a}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_expiring_mid_backfill_are_refreshed() {
    // Credentials live 12 s (the SDK refreshes them 10-15 s before they expire); the backfill
    // is slowed to outlast them.
    let ttl = Duration::from_secs(12);
    let env = Env::new(SimConfig {
        accounts: vec![A.into()],
        credential_ttl: ttl,
        ..sim_config(2, 2500, 2)
    })
    .await;
    env.sim.set_faults(Faults {
        latency_ms: 500,
        ..Faults::default()
    });
    let started = Instant::now();
    run(
        &env,
        &[
            "run",
            "--accounts",
            A,
            "--account-role",
            "archiver-read",
            "--concurrency",
            "1",
            "--flush-rows",
            "500",
        ],
    )
    .await
    .ok();
    let took = started.elapsed();
    env.assert_exact();
    assert!(
        took > ttl + Duration::from_secs(5),
        "the backfill must outlast the credentials: took {took:?}"
    );
    let stats = env.sim.stats();
    assert_eq!(
        stats.expired_credentials, 0,
        "no call may be made with expired credentials: {stats:?}"
    );
    // The check at start-up (whose credentials the client uses first), and refreshes.
    assert!(
        env.sim.assume_role_calls(A) >= 3,
        "credentials were not refreshed: {} AssumeRole calls in {took:?}",
        env.sim.assume_role_calls(A)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_split_the_portals_of_all_accounts() {
    let env = Env::new(accounts_config(9, 120, 1)).await;
    let accounts = format!("{A},{B},{C}");
    // Each shard its own state (`{shard}`), one archive.
    let state = env.dir.path().join("state-{shard}.db");
    let shard_run = |shard: &str, args: &[&str]| {
        let mut c = tokio::process::Command::new(util::BIN);
        c.args(["--state", state.to_str().unwrap(), "--output"])
            .arg(env.archive())
            .args(["--accounts", &accounts, "--account-role", "archiver-read"])
            .args(["--shard", shard])
            .args(args);
        for (k, v) in util::aws_env(&env.sim.endpoint_url()) {
            c.env(k, v);
        }
        c.env("AWS_ENDPOINT_URL_STS", env.sim.endpoint_url());
        c
    };
    let mut by_shard: Vec<BTreeSet<String>> = Vec::new();
    for shard in ["0/2", "1/2"] {
        let summary = env.dir.path().join(format!("summary-{}.json", &shard[..1]));
        let out = shard_run(shard, &["run", "--summary-json", summary.to_str().unwrap()])
            .output()
            .await
            .unwrap();
        Run::from(out).ok();
        let doc = read_json(&summary);
        by_shard.push(
            doc["portals"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["portal_id"].as_str().unwrap().to_string())
                .collect(),
        );
    }
    assert!(by_shard[0].is_disjoint(&by_shard[1]), "{by_shard:?}");
    let all: BTreeSet<String> = by_shard.iter().flatten().cloned().collect();
    assert_eq!(
        all,
        env.sim.portal_ids().into_iter().collect::<BTreeSet<_>>()
    );
    for s in &by_shard {
        assert!(!s.is_empty(), "{by_shard:?}");
    }
    env.assert_exact();

    // A named portal is found through its account's role, by the shard that owns it.
    let p = env.sim.portal_ids_in(C)[0].clone();
    let shard = if by_shard[0].contains(&p) {
        "0/2"
    } else {
        "1/2"
    };
    env.sim.add_sessions(&p, 40, 0);
    let out = shard_run(shard, &["backfill", "--portal-id", &p])
        .output()
        .await
        .unwrap();
    Run::from(out).ok();
    let rows = env.archived();
    let expected: BTreeMap<String, SimSession> = env
        .expected()
        .into_iter()
        .filter(|(_, s)| s.portal_id == p)
        .collect();
    util::assert_exact(
        &rows
            .into_iter()
            .filter(|r| r.portal_id == p)
            .collect::<Vec<_>>(),
        &expected,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_options_are_checked_before_any_call() {
    let env = Env::new(accounts_config(1, 10, 0)).await;
    for (args, want) in [
        (vec!["run", "--accounts", "12345"], "12 digits"),
        (vec!["run", "--accounts", A], "--account-role"),
        (
            vec!["run", "--account-role", "archiver-read"],
            "--accounts or --organization",
        ),
        (
            vec![
                "run",
                "--accounts",
                A,
                "--organization",
                "--account-role",
                "r",
            ],
            "cannot be combined",
        ),
        (
            vec![
                "run",
                "--accounts",
                A,
                "--account-role",
                "arn:aws:iam::111111111111:role/fixed",
            ],
            "{account}",
        ),
    ] {
        let r = run(&env, &args).await;
        r.code(2);
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
    }
    // An endpoint variable left empty (a template's slip) is refused up front; the SDK would
    // only warn, and its STS client then panics.
    let args = ["run", "--accounts", A, "--account-role", "archiver-read"];
    let mut c = env.cmd(&args);
    c.env("AWS_ENDPOINT_URL_STS", "")
        .env("AWS_ENDPOINT_URL_ORGANIZATIONS", env.sim.endpoint_url());
    let r = Run::from(c.output().await.unwrap());
    r.code(2);
    assert_eq!(
        r.stderr.trim_end(),
        "archiver: error: AWS_ENDPOINT_URL_STS=\"\" is not an endpoint URL: expected http:// or \
         https:// and a host, e.g. https://s3.eu-west-1.amazonaws.com, or leave \
         AWS_ENDPOINT_URL_STS unset"
    );
    assert_eq!(env.sim.stats().assume_role_calls, 0);
    assert_eq!(env.sim.stats().list_portals_calls, 0);
}

/// An estate as large organizations have it: thousands of accounts, most without a portal and
/// a few with several, in three regions. A run killed mid-way and the run after it archive
/// every session exactly once; each account's role is assumed once a run (accounts with
/// portals use the role check's credentials for their clients).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_accounts_most_without_portals_archived_exactly_across_a_kill() {
    const ACCOUNTS: usize = 2000;
    const WITH_PORTALS: usize = 8;
    let accounts: Vec<String> = (0..ACCOUNTS)
        .map(|i| format!("{}", 300_000_000_000u64 + i as u64))
        .collect();
    let regions = ["us-east-1", "eu-west-1", "ap-southeast-2"];
    let env = Env::new(SimConfig {
        accounts: accounts.clone(),
        accounts_with_portals: WITH_PORTALS,
        regions: regions.map(String::from).to_vec(),
        // 40 portals: 3 to 6 in each of the first 8 accounts, spread over the three regions.
        ..sim_config(40, 40, 2)
    })
    .await;
    // Portals by account, from the simulator.
    let mut holders: BTreeMap<String, u64> = BTreeMap::new();
    for p in env.sim.portal_ids() {
        *holders
            .entry(account_of(&env.sim.portal_arn(&p).unwrap()))
            .or_default() += 1;
    }
    assert_eq!(holders.len(), WITH_PORTALS);
    assert!(holders.values().all(|&n| n >= 3), "{holders:?}");
    let summary = env.dir.path().join("summary.json");
    let list = accounts.join(",");
    let regions = regions.join(",");
    let args = [
        "run",
        "--accounts",
        &list,
        "--account-role",
        "archiver-read",
        "--region",
        &regions,
        "--summary-json",
        summary.to_str().unwrap(),
    ];

    // Killed after 15 of its 40 portals' commits: some accounts done, some mid-way, some not
    // started.
    let mut c = env.cmd(&args);
    c.env("AWS_ENDPOINT_URL_STS", env.sim.endpoint_url())
        .env("ARCHIVER_FAILPOINT", "after_commit:15");
    let killed = Run::from(c.output().await.unwrap());
    assert_ne!(killed.code, 0, "{}", killed.stderr);
    assert!(killed.stderr.contains("failpoint after_commit:15 reached"));
    let partial = env.archived().len();
    assert!(partial > 0 && partial < env.expected().len(), "{partial}");

    let started = Instant::now();
    run(&env, &args).await.ok();
    let took = started.elapsed();
    env.assert_exact();

    let doc = read_json(&summary);
    assert_eq!(doc["outcome"], "ok");
    let reports = doc["accounts"].as_array().unwrap();
    assert_eq!(reports.len(), ACCOUNTS);
    for r in reports {
        let a = r["account_id"].as_str().unwrap();
        assert_eq!(r["outcome"], "ok", "{r}");
        assert_eq!(r["portals"], holders.get(a).copied().unwrap_or(0), "{r}");
    }
    assert_eq!(doc["portals"].as_array().unwrap().len(), 40);
    // Two runs, one AssumeRole each per account: none more for the accounts with portals,
    // whose clients are made again after discovery with the role check's credentials.
    let stats = env.sim.stats();
    for a in &accounts {
        assert_eq!(stats.assume_role_by_account.get(a), Some(&2), "{a}");
    }
    assert_eq!(stats.expired_credentials, 0);
    eprintln!("the second run of {ACCOUNTS} accounts x 3 regions took {took:?}");
}
