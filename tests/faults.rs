//! Faults over real sockets: throttling, server errors, denied portals, signals, a full disk,
//! hostile flags and files, and the logs at debug and trace level holding no personal data.

mod util;

use std::time::{Duration, Instant};

use archiver_simulator::{Faults, SimConfig, TokenMode};
use util::{sim_config, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_percent_throttling_and_five_percent_server_errors_still_give_the_exact_archive() {
    // Under both token semantics the simulator offers: keys, and offsets into the listing.
    for token_mode in [TokenMode::Keyset, TokenMode::Offset] {
        let env = Env::new(SimConfig {
            token_mode,
            ..sim_config(2, 3000, 10)
        })
        .await;
        env.sim.set_faults(Faults {
            throttle_rate: 0.20,
            error_rate: 0.05,
            retry_after_secs: 0,
            ..Faults::default()
        });
        env.run(&["run", "--flush-rows", "700"]).await.ok();
        // Activity, then an incremental run under the same faults.
        for p in env.sim.portal_ids() {
            env.sim.add_sessions(&p, 150, 5);
        }
        env.sim.end_active(None, 12);
        env.run(&["run", "--flush-rows", "700"]).await.ok();
        env.sim.set_faults(Faults::default());
        env.assert_exact();
        let s = env.sim.stats();
        assert!(s.throttled >= 5 && s.server_errors >= 1, "{s:?}");
        eprintln!(
            "{token_mode:?}: {} ListSessions calls, {} throttled, {} server errors: archive exact",
            s.list_sessions_calls, s.throttled, s.server_errors
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let env = Env::new(sim_config(1, 600, 0)).await;
    env.sim.set_faults(Faults {
        throttle_rate: 0.3,
        retry_after_secs: 1,
        ..Faults::default()
    });
    let p = env.portal(0);
    let t = Instant::now();
    env.run(&["backfill", "--portal-id", &p]).await.ok();
    let elapsed = t.elapsed();
    let throttled = env.sim.stats().throttled;
    env.assert_exact();
    assert!(throttled >= 1, "no throttling happened");
    // One portal pages sequentially: every throttled call waited at least its Retry-After.
    assert!(
        elapsed >= Duration::from_millis(950 * throttled),
        "{throttled} throttled calls but the run took only {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_fail_the_portal_with_its_id_named() {
    let env = Env::new(sim_config(1, 100, 0)).await;
    env.sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let p = env.portal(0);
    let r = env
        .run(&["backfill", "--portal-id", &p, "--max-attempts", "3"])
        .await;
    r.code(1);
    assert!(r.stderr.contains(&p), "{}", r.stderr);
    assert!(
        r.stderr.contains("gave up after 3 attempts"),
        "{}",
        r.stderr
    );
    assert_eq!(env.sim.stats().list_sessions_calls, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_portal_does_not_stop_or_roll_back_the_others() {
    let env = Env::new(sim_config(3, 400, 3)).await;
    let denied = env.portal(1);
    env.sim.set_faults(Faults {
        deny_portals: vec![denied.clone()],
        ..Faults::default()
    });
    let r = env.run(&["run"]).await;
    r.code(1);
    let last = r.last_line();
    assert!(
        last.starts_with("archiver: error: 1 of 3 portals failed"),
        "{}",
        r.stderr
    );
    assert!(
        last.contains(&denied) && last.contains("access denied"),
        "{last}"
    );
    // The two others are archived in full.
    let mut expected = env.expected();
    expected.retain(|_, s| s.portal_id != denied);
    util::assert_exact(&env.archived(), &expected);
    // Status tells which failed; access restored, the next run catches up.
    let st = env.run(&["status", "--json"]).await;
    let doc: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    let outcomes: Vec<(String, String)> = doc["portals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["portal_id"].as_str().unwrap().to_string(),
                p["last_run"]["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (id, outcome) in &outcomes {
        assert_eq!(
            outcome,
            if *id == denied { "failed" } else { "ok" },
            "{outcomes:?}"
        );
    }
    env.sim.set_faults(Faults::default());
    env.run(&["run"]).await.ok();
    env.assert_exact();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_run_within_seconds_keeping_its_progress_and_the_next_run_resumes() {
    let env = Env::new(sim_config(2, 4000, 5)).await;
    env.sim.set_faults(Faults {
        latency_ms: 40,
        ..Faults::default()
    });
    let mut child = env.cmd(&["run", "--flush-rows", "1000"]).spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = child.id().unwrap().to_string();
    let signalled = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("still running 10 s after SIGTERM")
        .unwrap();
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(1));
    assert!(took < Duration::from_secs(3), "took {took:?} to stop");
    // What was fetched before the signal is kept: flushed on the way out, not lost.
    let kept = env.archived().len();
    assert!(kept > 0, "nothing kept");
    let st = env.run(&["status", "--json"]).await;
    let doc: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(doc["last_run"]["outcome"], "interrupted", "{}", st.stdout);
    env.sim.set_faults(Faults::default());
    env.sim.reset_stats();
    env.run(&["run", "--flush-rows", "1000"]).await.ok();
    env.assert_exact();
    // It resumed: it did not list both portals from the start again.
    assert!(
        env.sim.stats().list_sessions_calls < 80,
        "{:?}",
        env.sim.stats()
    );
    eprintln!("stopped {took:?} after SIGTERM with {kept} rows kept; resumed to an exact archive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_cleanly_and_loses_nothing_already_archived() {
    let env = Env::new(sim_config(1, 3000, 0)).await;
    let p = env.portal(0);
    let out = env.dir.path().join("tiny");
    std::fs::create_dir_all(&out).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=96k", "tmpfs"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "this test mounts a tiny tmpfs and needs root"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            std::process::Command::new("umount")
                .arg(&self.0)
                .status()
                .ok();
        }
    }
    let _guard = Unmount(out.clone());
    let mut c = env.cmd(&["backfill", "--portal-id", &p, "--flush-rows", "200"]);
    c.arg("--output").arg(&out);
    let r = util::Run::from(c.output().await.unwrap());
    r.code(1);
    let line = r.last_line();
    assert!(line.contains("No space left on device"), "{}", r.stderr);
    assert!(line.contains(&p), "{line}");
    // Whatever was published is complete and committed, no duplicates.
    let rows = util::read_dataset(&out);
    assert!(!rows.is_empty(), "nothing fit before the disk filled");
    let ids: std::collections::BTreeSet<_> = rows.iter().map(|r| &r.session_id).collect();
    assert_eq!(ids.len(), rows.len());
    // Copy the archive to a roomy disk and finish there: exact.
    let roomy = env.archive();
    std::process::Command::new("cp")
        .arg("-a")
        .arg(&out)
        .arg(&roomy)
        .status()
        .unwrap();
    env.run(&["backfill", "--portal-id", &p]).await.ok();
    env.assert_exact();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_options_and_a_newer_state_are_refused() {
    let env = Env::new(sim_config(1, 50, 0)).await;
    let p = env.portal(0);
    let r = env.run(&["run", "--frobnicate"]).await;
    r.code(2);
    assert!(r.stderr.contains("--frobnicate"), "{}", r.stderr);
    let r = env.run(&["run", "--flush-rows", "0"]).await;
    r.code(2);
    // A state from a newer archiver: refused, untouched, nothing archived lost.
    env.run(&["backfill", "--portal-id", &p]).await.ok();
    let before_rows = env.archived();
    {
        let c = rusqlite::Connection::open(env.state()).unwrap();
        c.pragma_update(None, "user_version", 42).unwrap();
    }
    let before = std::fs::read(env.state()).unwrap();
    let r = env.run(&["run"]).await;
    r.code(1);
    assert!(r.stderr.contains("newer"), "{}", r.stderr);
    assert_eq!(std::fs::read(env.state()).unwrap(), before);
    assert_eq!(env.archived(), before_rows);
}

/// Usernames and client IPs are personal data: not in the logs at any level, the SDK's and
/// HTTP stack's own included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_username_or_ip_in_json_logs_at_debug_or_trace() {
    let env = Env::new(sim_config(2, 50, 5)).await;
    env.sim.set_faults(Faults {
        throttle_rate: 0.1,
        error_rate: 0.05,
        retry_after_secs: 0,
        ..Faults::default()
    });
    let mut logs = String::new();
    let mut hidden = Vec::new();
    for filter in ["debug", "trace"] {
        let mut c = env.cmd(&[
            "run",
            "--log-format",
            "json",
            "--flush-rows",
            "100",
            "--with-client-ips",
        ]);
        // A full filter: every crate at this level.
        c.env("ARCHIVER_LOG", format!("{filter},archiver={filter}"));
        let r = util::Run::from(c.output().await.unwrap());
        r.ok();
        assert!(r.stderr.lines().count() > 20, "suspiciously few log lines");
        for line in r.stderr.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        }
        logs.push_str(&r.stderr);
        // Hide some pending sessions from the listing and end them: the next run fetches them
        // with GetSession, whose replies carry client IPs.
        let active: Vec<String> = env
            .sim
            .record()
            .into_iter()
            .filter(|s| s.status == "Active")
            .map(|s| s.session_id)
            .take(3)
            .collect();
        hidden.extend(active);
        env.sim.set_faults(Faults {
            hide_from_listing: hidden.clone(),
            throttle_rate: 0.1,
            error_rate: 0.05,
            retry_after_secs: 0,
            ..Faults::default()
        });
        env.sim.end_active(None, usize::MAX);
        for p in env.sim.portal_ids() {
            env.sim.add_sessions(&p, 40, 2);
        }
    }
    assert!(
        env.sim.stats().get_session_calls >= 3,
        "no GetSession: no IPs on the wire"
    );
    env.sim.set_faults(Faults::default());
    env.run(&["run"]).await.ok();
    env.assert_exact();
    let record = env.sim.record();
    let (mut checked, mut ips) = (0, 0);
    for s in &record {
        if let Some(u) = &s.username {
            assert!(!logs.contains(u.as_str()), "username {u} in the logs");
            checked += 1;
        }
        for ip in &s.client_ip_addresses {
            assert!(!contains_address(&logs, ip), "client IP {ip} in the logs");
            ips += 1;
        }
    }
    assert!(
        checked > 100 && ips > 100,
        "{checked} usernames, {ips} IPs checked"
    );
}

/// `ip` occurs in `hay` as a whole address (not inside a longer number).
fn contains_address(hay: &str, ip: &str) -> bool {
    let bytes = hay.as_bytes();
    hay.match_indices(ip).any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + ip.len()).copied();
        let digitish = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_digit() || b == b'.');
        !digitish(before) && !digitish(after)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_retried_to_an_exact_archive() {
    let env = Env::new(sim_config(2, 2000, 5)).await;
    env.sim.set_faults(Faults {
        drop_rate: 0.15,
        retry_after_secs: 0,
        ..Faults::default()
    });
    env.run(&["run", "--flush-rows", "500"]).await.ok();
    let dropped = env.sim.stats().dropped;
    env.sim.set_faults(Faults::default());
    env.assert_exact();
    assert!(dropped >= 2, "only {dropped} connections dropped");
}

/// A reply nothing can be kept of (a session without an id, a body cut off) fails the
/// portal and writes nothing of it; the next run resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_without_session_ids_or_not_json_fails_the_portal_and_alters_nothing() {
    for mode in ["missing_session_id", "bad_json"] {
        let env = Env::new(sim_config(1, 300, 4)).await;
        let p = env.portal(0);
        env.run(&["run"]).await.ok();
        let before = env.archived();
        env.sim.add_sessions(&p, 150, 2);
        env.sim.end_active(None, 4);
        env.sim.set_faults(Faults {
            corrupt_listing: Some(mode.to_string()),
            ..Faults::default()
        });
        let r = env.run(&["run"]).await;
        r.code(1);
        let last = r.last_line();
        assert!(last.contains(&p), "{mode}: {}", r.stderr);
        assert_eq!(env.archived(), before, "{mode}: the archive changed");
        env.sim.set_faults(Faults::default());
        env.run(&["run"]).await.ok();
        env.assert_exact();
    }
}

/// Sessions sent with a missing field or an unknown status, on every page, are quarantined:
/// the run archives everything else and exits 0, and the next run without the fault archives
/// them, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_missing_fields_or_with_an_unknown_status_on_every_page_are_quarantined() {
    for mode in ["missing_start_time", "unknown_status", "missing_portal_arn"] {
        let env = Env::new(sim_config(1, 300, 4)).await;
        let p = env.portal(0);
        env.run(&["run"]).await.ok();
        env.sim.add_sessions(&p, 450, 2);
        env.sim.end_active(None, 4);
        env.sim.set_faults(Faults {
            corrupt_listing: Some(mode.to_string()),
            ..Faults::default()
        });
        let r = env.run(&["run"]).await;
        r.ok();
        let held = r.stderr.matches("session quarantined").count();
        assert!(held >= 2, "{mode}: {}", r.stderr);
        let rows: std::collections::BTreeSet<String> =
            env.archived().into_iter().map(|r| r.session_id).collect();
        let missing = env
            .expected()
            .keys()
            .filter(|id| !rows.contains(*id))
            .count();
        assert!(
            missing <= held,
            "{mode}: {missing} missing, {held} quarantined"
        );
        env.sim.set_faults(Faults::default());
        env.run(&["run"]).await.ok();
        env.assert_exact();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_session_missing_from_the_listing_is_resolved_with_get_session() {
    let env = Env::new(sim_config(1, 400, 6)).await;
    env.run(&["run"]).await.ok();
    let active: Vec<String> = env
        .sim
        .record()
        .into_iter()
        .filter(|s| s.status == "Active")
        .map(|s| s.session_id)
        .collect();
    assert_eq!(active.len(), 6);
    env.sim.set_faults(Faults {
        hide_from_listing: active[..2].to_vec(),
        ..Faults::default()
    });
    env.sim.end_active(None, usize::MAX);
    env.sim.reset_stats();
    env.run(&["run"]).await.ok();
    assert_eq!(env.sim.stats().get_session_calls, 2);
    env.assert_exact();
    // Client IPs are opt-in, even for sessions that came through GetSession.
    assert!(env.archived().iter().all(|r| r.client_ips.is_none()));
}

/// The first portal's row of `status --json`.
async fn portal_status(env: &Env) -> serde_json::Value {
    let st = env.run(&["status", "--json"]).await;
    let doc: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    doc["portals"][0].clone()
}

/// GetSession's "not found" on a pending session is not final at once: the session is kept and
/// asked for again, and given up only after three passes over at least a day, then counted as
/// lost in the run's summary, metrics and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_session_the_service_no_longer_knows_is_kept_then_given_up_after_a_day() {
    let env = Env::new(sim_config(1, 200, 3)).await;
    env.run(&["run"]).await.ok();
    let archived = env.archived();
    // Forty days later everything is past the service's retention: nothing is listed and
    // GetSession answers 404 for the three sessions still pending.
    env.sim.advance_clock(40 * 86_400_000);
    for pass in 1..=3 {
        let r = env.run(&["run"]).await;
        r.ok();
        assert_eq!(
            r.stderr.matches("kept pending and asked for again").count(),
            3,
            "pass {pass}: {}",
            r.stderr
        );
        let p = portal_status(&env).await;
        assert_eq!(p["pending"], 3, "{p}");
        assert_eq!(p["pending_missing"], 3, "{p}");
        assert_eq!(p["pending_lost"], 0, "{p}");
    }
    assert_eq!(env.archived(), archived);
    // A day after the first miss (the state's record of it moved back by a day), the next
    // pass gives them up and counts them.
    let conn = rusqlite::Connection::open(env.state()).unwrap();
    conn.execute(
        "UPDATE pending SET first_missed_at = first_missed_at - 86400000",
        [],
    )
    .unwrap();
    drop(conn);
    let metrics = env.dir.path().join("metrics.prom");
    let r = env
        .run(&["--metrics-file", metrics.to_str().unwrap(), "run"])
        .await;
    r.ok();
    assert_eq!(
        r.stderr.matches("given up and counted as lost").count(),
        3,
        "{}",
        r.stderr
    );
    let p = portal_status(&env).await;
    assert_eq!(p["pending"], 0, "{p}");
    assert_eq!(p["pending_lost"], 3, "{p}");
    let text = std::fs::read_to_string(&metrics).unwrap();
    let want = format!(
        "archiver_portal_pending_lost_sessions{{portal_id=\"{}\"}} 3",
        env.portal(0)
    );
    assert!(text.lines().any(|l| l == want), "{want} not in\n{text}");
    assert_eq!(env.archived(), archived);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlapping_run_is_refused_with_75_naming_the_holder_and_a_killed_holder_blocks_nothing(
) {
    let env = Env::new(sim_config(2, 3000, 0)).await;
    env.sim.set_faults(Faults {
        latency_ms: 30,
        ..Faults::default()
    });
    let mut first = env.cmd(&["run"]).spawn().unwrap();
    let pid = first.id().unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let second = env.run(&["run"]).await;
    second.code(75);
    let line = second.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains(&format!("pid {pid}")) && line.contains("since"),
        "{line}"
    );
    // The holder dies without releasing anything: the next run goes ahead and resumes.
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    env.sim.set_faults(Faults::default());
    env.run(&["run"]).await.ok();
    env.assert_exact();
}
