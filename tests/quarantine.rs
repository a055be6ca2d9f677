//! Odd replies are contained: a session that cannot be archived faithfully as the service
//! sends it (an unknown status, no start time, another portal's ARN, a GetSession answer for
//! another session) is quarantined, never stalls its portal, and is archived exactly once when
//! the service serves it normally again, whatever kills happen in between.

mod util;

use std::collections::BTreeMap;

use archiver_simulator::{Faults, SimSession};
use util::{sim_config, Env, Run};

/// A terminated session in the middle of the portal's history.
fn middle_session(env: &Env) -> SimSession {
    let ended: Vec<SimSession> = env
        .expected()
        .into_values()
        .filter(|s| s.portal_id == env.portal(0))
        .collect();
    let mut by_start = ended;
    by_start.sort_by_key(|s| s.start_time_ms);
    by_start[by_start.len() / 2].clone()
}

fn odd(id: &str, mode: &str) -> Faults {
    Faults {
        odd_sessions: BTreeMap::from([(id.to_string(), mode.to_string())]),
        ..Faults::default()
    }
}

/// What the archive must hold while `held` is quarantined.
fn expected_without(env: &Env, held: &str) -> BTreeMap<String, SimSession> {
    let mut e = env.expected();
    assert!(e.remove(held).is_some());
    e
}

/// The run's `--summary-json`, metrics text, and `status --json` of the first portal.
struct Reports {
    summary: serde_json::Value,
    metrics: String,
    status: serde_json::Value,
}

async fn run_reporting(env: &Env, args: &[&str], want_code: i32) -> (Run, Reports) {
    let summary = env.dir.path().join("summary.json");
    let metrics = env.dir.path().join("metrics.prom");
    let mut all = vec![
        "--summary-json",
        summary.to_str().unwrap(),
        "--metrics-file",
        metrics.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let r = env.run(&all).await;
    r.code(want_code);
    let st = env.run(&["status", "--json"]).await;
    st.ok();
    let status: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    let reports = Reports {
        summary: serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap(),
        metrics: std::fs::read_to_string(&metrics).unwrap(),
        status: status["portals"][0].clone(),
    };
    (r, reports)
}

#[track_caller]
fn assert_quarantined(env: &Env, rep: &Reports, n: u64) {
    let p = env.portal(0);
    assert_eq!(rep.summary["outcome"], "ok", "{}", rep.summary);
    assert_eq!(rep.summary["totals"]["quarantined"], n, "{}", rep.summary);
    assert_eq!(
        rep.summary["portals"][0]["quarantined"], n,
        "{}",
        rep.summary
    );
    let want = format!("archiver_portal_quarantined_sessions{{portal_id=\"{p}\"}} {n}");
    assert!(
        rep.metrics.lines().any(|l| l == want),
        "{want} not in\n{}",
        rep.metrics
    );
    assert_eq!(rep.status["quarantined"], n, "{}", rep.status);
    assert_eq!(
        rep.status["quarantine"].as_array().map(Vec::len),
        Some(n as usize),
        "{}",
        rep.status
    );
}

/// The one warning names the portal and the session, never the username.
#[track_caller]
fn assert_one_warning(r: &Run, portal: &str, s: &SimSession) {
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("quarantined") && l.contains(&s.session_id))
        .collect();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(lines[0].contains(portal), "{}", lines[0]);
    let user = s.username.as_deref().unwrap();
    assert!(!r.stderr.contains(user), "the username is in the log");
}

/// The regression: a session with status `Pending` in the middle of a portal's history made
/// every run fail on the same page, and most of the portal was never archived. Also with no
/// start time, or another portal's ARN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_odd_session_in_the_middle_of_a_portal_is_quarantined_and_archived_once_it_can_be() {
    for mode in ["unknown_status", "missing_start_time", "foreign_portal_arn"] {
        let env = Env::new(sim_config(2, 3000, 5)).await;
        let p = env.portal(0);
        let s = middle_session(&env);
        env.sim.set_faults(odd(&s.session_id, mode));

        // (1) Every other session of both portals is archived in the first run, which exits 0
        // and counts the one quarantined session.
        let (r, rep) = run_reporting(&env, &["run", "--flush-rows", "500"], 0).await;
        util::assert_exact(&env.archived(), &expected_without(&env, &s.session_id));
        assert_quarantined(&env, &rep, 1);
        assert_one_warning(&r, &p, &s);
        let q = &rep.status["quarantine"][0];
        assert_eq!(q["session_id"], s.session_id.as_str(), "{q}");
        assert!(q.get("username").is_none(), "{q}");
        match mode {
            "unknown_status" => assert_eq!(q["status"], "Pending", "{q}"),
            "missing_start_time" => assert!(q["start_time"].is_null(), "{q}"),
            _ => assert_eq!(q["portal_arn"], env.sim.portal_arn(&env.portal(1)).unwrap()),
        }
        // The portal was not stalled: its pass completed, as did the other portal's.
        assert_eq!(rep.summary["portals"][0]["completed"], true);
        assert_eq!(rep.summary["failed"].as_array().unwrap().len(), 0);

        // Still odd: the next run tries again, keeps it, and archives nothing twice.
        let (_, rep) = run_reporting(&env, &["run"], 0).await;
        util::assert_exact(&env.archived(), &expected_without(&env, &s.session_id));
        assert_quarantined(&env, &rep, 1);

        // (2) Served normally again: the next run archives it, once, and the quarantine is
        // empty. An incremental pass does not list that far back (GetSession finds it); a
        // backfill lists it.
        env.sim.set_faults(Faults::default());
        let args: &[&str] = if mode == "missing_start_time" {
            &["backfill", "--portal-id", &p, "--restart"]
        } else {
            &["run"]
        };
        let (_, rep) = run_reporting(&env, args, 0).await;
        env.assert_exact();
        assert_quarantined(&env, &rep, 0);
        assert_eq!(rep.summary["portals"][0]["quarantine_released"], 1);
        // And never again.
        env.run(&["backfill", "--portal-id", &p, "--restart"])
            .await
            .ok();
        env.assert_exact();
    }
}

/// With --with-client-ips, a GetSession answer for another session than the one asked for is
/// never filed under the session asked for: that session is quarantined, and archived with its
/// own client IPs once GetSession answers for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_session_answer_for_another_session_is_quarantined_not_archived() {
    let env = Env::new(sim_config(1, 1200, 5)).await;
    let p = env.portal(0);
    let s = middle_session(&env);
    env.sim
        .set_faults(odd(&s.session_id, "get_session_other_id"));
    let (r, rep) = run_reporting(&env, &["--with-client-ips", "run"], 0).await;
    util::assert_exact(&env.archived(), &expected_without(&env, &s.session_id));
    assert_quarantined(&env, &rep, 1);
    assert_one_warning(&r, &p, &s);
    let record: BTreeMap<String, SimSession> = env
        .sim
        .record()
        .into_iter()
        .map(|s| (s.session_id.clone(), s))
        .collect();
    for row in env.archived() {
        assert_eq!(
            row.client_ips.as_ref(),
            Some(&record[&row.session_id].client_ip_addresses),
            "{}",
            row.session_id
        );
    }
    env.sim.set_faults(Faults::default());
    let (_, rep) = run_reporting(&env, &["--with-client-ips", "run"], 0).await;
    env.assert_exact();
    assert_quarantined(&env, &rep, 0);
    let row = env
        .archived()
        .into_iter()
        .find(|r| r.session_id == s.session_id)
        .unwrap();
    assert_eq!(row.client_ips, Some(s.client_ip_addresses.clone()));
}

/// (3) Killed between quarantining a session and the flush that commits it, or right after
/// that commit: nothing is lost or duplicated, and the session is archived once it can be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_quarantine_and_flush_loses_and_duplicates_nothing() {
    // The flush whose pages hold the session: pages of 100, newest first, 3 pages a flush.
    let flush_of = |env: &Env, s: &SimSession| {
        let mut listed = env.sim.listable();
        listed.sort_by_key(|l| std::cmp::Reverse((l.start_time_ms, l.session_id.clone())));
        let pos = listed
            .iter()
            .position(|l| l.session_id == s.session_id)
            .unwrap();
        pos / 100 / 3 + 1
    };
    for point in ["quarantined:1", "after_commit", "after_manifest"] {
        let env = Env::new(sim_config(1, 3000, 5)).await;
        let p = env.portal(0);
        let s = middle_session(&env);
        env.sim.set_faults(odd(&s.session_id, "unknown_status"));
        let point = if point.contains(':') {
            point.to_string()
        } else {
            format!("{point}:{}", flush_of(&env, &s))
        };
        let point = point.as_str();
        let args = ["backfill", "--portal-id", &p, "--flush-rows", "300"];
        let crashed = env.run_crashing(&args, point).await;
        assert_eq!(crashed.code, 134, "{point}: {}", crashed.stderr);
        let rows = env.archived();
        let ids: std::collections::BTreeSet<_> = rows.iter().map(|r| &r.session_id).collect();
        assert_eq!(ids.len(), rows.len(), "{point}: duplicates after the kill");
        assert!(!ids.contains(&s.session_id), "{point}");

        let (_, rep) = run_reporting(&env, &args, 0).await;
        util::assert_exact(&env.archived(), &expected_without(&env, &s.session_id));
        assert_quarantined(&env, &rep, 1);

        env.sim.set_faults(Faults::default());
        let (_, rep) = run_reporting(&env, &["run"], 0).await;
        env.assert_exact();
        assert_quarantined(&env, &rep, 0);
    }
}

/// A quarantined session the service no longer finds (it aged out) is kept and asked for again,
/// and given up only after three passes over at least a day, then counted as lost in the
/// summary, the metrics and `status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_session_the_service_no_longer_knows_is_given_up_after_a_day() {
    let env = Env::new(sim_config(1, 300, 0)).await;
    let p = env.portal(0);
    let s = middle_session(&env);
    env.sim.set_faults(odd(&s.session_id, "unknown_status"));
    env.run(&["run"]).await.ok();
    // verify cannot prove the portal complete while the service sends it unusably.
    let v = env.run(&["verify"]).await;
    v.code(1);
    assert!(
        v.last_line().contains(&p) && v.last_line().contains(&s.session_id),
        "{}",
        v.stderr
    );
    env.sim.advance_clock(40 * 86_400_000);
    for pass in 1..=3 {
        let (r, rep) = run_reporting(&env, &["run"], 0).await;
        assert_eq!(
            r.stderr.matches("kept and asked for again").count(),
            1,
            "pass {pass}: {}",
            r.stderr
        );
        assert_quarantined(&env, &rep, 1);
        assert_eq!(
            rep.status["quarantine"][0]["misses"], pass,
            "{}",
            rep.status
        );
    }
    let conn = rusqlite::Connection::open(env.state()).unwrap();
    conn.execute(
        "UPDATE quarantine SET first_missed_at = first_missed_at - 86400000",
        [],
    )
    .unwrap();
    drop(conn);
    let (r, rep) = run_reporting(&env, &["run"], 0).await;
    assert!(
        r.stderr.contains("given up and counted as lost"),
        "{}",
        r.stderr
    );
    assert_quarantined(&env, &rep, 0);
    assert_eq!(rep.summary["portals"][0]["quarantine_lost"], 1);
    assert_eq!(rep.status["quarantine_lost"], 1);
    let want = format!("archiver_portal_quarantine_lost_sessions{{portal_id=\"{p}\"}} 1");
    assert!(rep.metrics.lines().any(|l| l == want), "{}", rep.metrics);
}
