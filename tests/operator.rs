//! What a run tells its operator: `--summary-json`, `--metrics-file`, `status`, `--dry-run`.

mod util;

use archiver_simulator::Faults;
use util::{sim_config, Env};

fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_json_and_metrics_file_report_what_the_run_did() {
    let env = Env::new(sim_config(3, 500, 4)).await;
    let summary = env.dir.path().join("summary.json");
    let metrics = env.dir.path().join("archiver.prom");
    let (s, m) = (
        format!("--summary-json={}", summary.display()),
        format!("--metrics-file={}", metrics.display()),
    );
    env.run(&["run", &s, &m]).await.ok();
    env.assert_exact();
    let expected = env.expected().len() as u64;

    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(doc["outcome"], "ok");
    assert_eq!(doc["totals"]["rows_written"], expected);
    assert_eq!(doc["totals"]["portals"], 3);
    assert_eq!(doc["totals"]["pending"], 12);
    assert_eq!(
        doc["totals"]["api_calls"].as_u64().unwrap(),
        {
            let st = env.sim.stats();
            st.list_portals_calls + st.list_sessions_calls + st.get_session_calls
        },
        "the summary's call count disagrees with the simulator's"
    );

    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(
        metric(&text, "archiver_last_run_success{command=\"run\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "archiver_last_run_rows_written{command=\"run\"}"),
        Some(expected as f64)
    );
    let per_portal: f64 = env
        .sim
        .portal_ids()
        .iter()
        .map(|p| {
            metric(
                &text,
                &format!("archiver_portal_rows_written{{portal_id=\"{p}\"}}"),
            )
            .unwrap()
        })
        .sum();
    assert_eq!(per_portal, expected as f64);
    let first_success = metric(
        &text,
        "archiver_last_success_timestamp_seconds{command=\"run\"}",
    )
    .unwrap();

    // A run where one portal is denied: failure shows, the last success stays.
    let denied = env.portal(2);
    env.sim.set_faults(Faults {
        deny_portals: vec![denied.clone()],
        ..Faults::default()
    });
    env.run(&["run", &s, &m]).await.code(1);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(
        metric(&text, "archiver_last_run_success{command=\"run\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            &format!("archiver_portal_failed{{portal_id=\"{denied}\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            &format!("archiver_portal_failed{{portal_id=\"{}\"}}", env.portal(0))
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "archiver_last_success_timestamp_seconds{command=\"run\"}"
        ),
        Some(first_success)
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(doc["outcome"], "failed");
    assert_eq!(doc["failed"][0]["portal_id"], denied);
    // No temp files left beside them.
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn summary_of(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Lines of the metrics text whose name starts with `name`.
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(name)).collect()
}

/// Wherever a run fails (discovery, the lock, a refused option), its metrics and summary say
/// so, with the line it ended on, and keep when each command last succeeded. The nightly
/// run's freshness is its own: a compaction's success does not refresh it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failed_run_reads_as_failed_in_its_metrics_and_summary() {
    let env = Env::new(sim_config(2, 300, 2)).await;
    let summary = env.dir.path().join("summary.json");
    let metrics = env.dir.path().join("archiver.prom");
    let (s, m) = (
        format!("--summary-json={}", summary.display()),
        format!("--metrics-file={}", metrics.display()),
    );
    let run_success = "archiver_last_success_timestamp_seconds{command=\"run\"}";
    env.run(&["run", &s, &m]).await.ok();
    let good = std::fs::read_to_string(&metrics).unwrap();
    let t_run = metric(&good, run_success).unwrap();
    let portal_lines = samples(&good, "archiver_portal_last_success_timestamp_seconds{");
    assert_eq!(portal_lines.len(), 2, "{good}");
    env.run(&["compact", "--older-than", "0s"]).await.ok();

    let failed_run = |code: i32, why: &'static str| {
        let (summary, metrics) = (summary.clone(), metrics.clone());
        let portal_lines: Vec<String> = portal_lines.iter().map(|l| l.to_string()).collect();
        move |r: util::Run| {
            r.code(code);
            let doc = summary_of(&summary);
            assert_eq!(doc["outcome"], "failed", "{why}: {doc}");
            let line = r.last_line().strip_prefix("archiver: error: ").unwrap();
            assert_eq!(doc["error"], line, "{why}: {doc}");
            let text = std::fs::read_to_string(&metrics).unwrap();
            assert_eq!(
                metric(&text, "archiver_last_run_success{command=\"run\"}"),
                Some(0.0),
                "{why}: {text}"
            );
            assert_eq!(metric(&text, run_success), Some(t_run), "{why}: {text}");
            // No portal was reached: their last successes are kept as they were.
            assert_eq!(
                samples(&text, "archiver_portal_last_success_timestamp_seconds{"),
                portal_lines,
                "{why}"
            );
            text
        }
    };

    // ListPortals denied: discovery fails. The state was read, so compact's success shows
    // beside run's, and run's is not refreshed by it.
    env.sim.set_faults(Faults {
        deny_list_portals: vec!["123456789012".into()],
        ..Faults::default()
    });
    let text = failed_run(1, "discovery")(env.run(&["run", &s, &m]).await);
    let t_compact = metric(
        &text,
        "archiver_last_success_timestamp_seconds{command=\"compact\"}",
    )
    .unwrap();
    assert!(t_compact > t_run, "{text}");
    env.sim.set_faults(Faults::default());

    // The lock held by another process: the state is never read.
    let held = archiver::state::lock::acquire(&env.state(), "run").unwrap();
    let text = failed_run(75, "lock")(env.run(&["run", &s, &m]).await);
    assert!(text.contains("command=\"compact\""), "carried: {text}");
    drop(held);

    // An option refused before anything starts (exit 2).
    failed_run(2, "usage")(env.run(&["run", &s, &m, "--shard", "3/2"]).await);

    // (Saving an S3 state at the end failing: tests/s3.rs.) A good run again:
    env.run(&["run", &s, &m]).await.ok();
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(metric(&text, run_success).unwrap() > t_run, "{text}");
    assert_eq!(summary_of(&summary)["error"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_says_what_each_portal_would_get_and_writes_nothing() {
    let env = Env::new(sim_config(2, 1500, 3)).await;
    let (p0, p1) = (env.portal(0), env.portal(1));

    // Nothing archived yet: both would be backfilled; no state, no output appear.
    let r = env.run(&["run", "--dry-run"]).await;
    r.ok();
    for p in [&p0, &p1] {
        assert!(
            r.stdout
                .contains(&format!("{p}  backfill (never archived)")),
            "{}",
            r.stdout
        );
    }
    assert!(!env.state().exists() && !env.archive().exists());
    assert_eq!(env.sim.stats().list_sessions_calls, 0);

    // One portal archived, the other's backfill killed mid-way.
    env.run(&["backfill", "--portal-id", &p0]).await.ok();
    let crashed = env
        .run_crashing(
            &["backfill", "--portal-id", &p1, "--flush-rows", "300"],
            "after_commit:2",
        )
        .await;
    assert_eq!(crashed.code, 134, "{}", crashed.stderr);
    let before = std::fs::read(env.state()).unwrap();
    env.sim.reset_stats();
    let r = env.run(&["run", "--dry-run"]).await;
    r.ok();
    assert!(
        r.stdout
            .contains(&format!("{p0}  incremental pass, newest first, back to ")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("{p0}  ")) && r.stdout.contains("; 3 pending"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!(
            "{p1}  resume the backfill pass from its checkpoint (after 6 pages)"
        )),
        "{}",
        r.stdout
    );
    let r = env
        .run(&["backfill", "--portal-id", &p0, "--restart", "--dry-run"])
        .await;
    assert!(
        r.stdout
            .contains("backfill again: everything the service lists (--restart)"),
        "{}",
        r.stdout
    );
    assert_eq!(env.sim.stats().list_sessions_calls, 0);
    assert_eq!(
        std::fs::read(env.state()).unwrap(),
        before,
        "a dry run changed the state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_line_on_a_terminal_and_none_in_logs() {
    let env = Env::new(sim_config(1, 3000, 0)).await;
    env.sim.set_faults(Faults {
        latency_ms: 25,
        ..Faults::default()
    });
    let p = env.portal(0);
    // stderr is a pipe here, as under cron: no progress line.
    let r = env.run(&["backfill", "--portal-id", &p]).await;
    r.ok();
    assert!(!r.stderr.contains("sessions listed"), "{}", r.stderr);
    // Under a terminal (`script` gives the command a pty): the progress line shows.
    let cmdline = format!(
        "{} --state {} --output {} backfill --portal-id {p} --restart",
        util::BIN,
        env.state().display(),
        env.archive().display()
    );
    let mut c = tokio::process::Command::new("script");
    c.args(["-qec", &cmdline, "/dev/null"]);
    for (k, v) in util::aws_env(&env.sim.endpoint_url()) {
        c.env(k, v);
    }
    let out = c.output().await.expect("script(1) from util-linux");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(
        tty.contains("sessions listed"),
        "no progress on a terminal:\n{tty}"
    );
    env.assert_exact();
}

/// The demo's last two lines are commands that run as printed, from the folder the demo ran
/// in: after `cargo run` there is no `archiver` on PATH, so they name the binary by its path.
/// `status` lists the portals; `verify --offline` finds the archive's signed proof intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demos_printed_status_and_audit_commands_run_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = env!("CARGO_MANIFEST_DIR");
    let demo = util::Run::from(
        tokio::process::Command::new(util::BIN)
            .args(["demo", "--portals", "2", "--sessions", "150", "--dir"])
            .arg(dir.path().join("demo"))
            .current_dir(cwd)
            .env("PATH", "/usr/bin:/bin")
            .env_remove("ARCHIVER_STATE")
            .output()
            .await
            .unwrap(),
    );
    demo.ok();
    let last: Vec<&str> = demo.stdout.trim_end().lines().rev().take(2).collect();
    let (line, audit_line) = (last[1], last[0]);
    let command = line
        .strip_prefix("Status:")
        .unwrap_or_else(|| {
            panic!("the demo's last line but one is not the status command: {line:?}")
        })
        .trim();
    let audit = audit_line
        .strip_prefix("Audit:")
        .unwrap_or_else(|| panic!("the demo's last line is not the audit command: {audit_line:?}"))
        .trim();
    let proof = util::Run::from(
        tokio::process::Command::new("sh")
            .args(["-c", audit])
            .current_dir(cwd)
            .env("PATH", "/usr/bin:/bin")
            .output()
            .await
            .unwrap(),
    );
    proof.ok();
    assert!(
        proof.stdout.contains("integrity: intact") && proof.stdout.contains("signatures checked"),
        "`{audit}` printed:\n{}",
        proof.stdout
    );
    assert!(
        !command.starts_with("archiver "),
        "no archiver on PATH, yet the demo says {command:?}"
    );
    let status = util::Run::from(
        tokio::process::Command::new("sh")
            .args(["-c", command])
            .current_dir(cwd)
            .env("PATH", "/usr/bin:/bin")
            .output()
            .await
            .unwrap(),
    );
    status.ok();
    // One row per portal of the simulator's account, each backfilled.
    let rows = status
        .stdout
        .lines()
        .filter(|l| l.contains(" 123456789012 ") && l.contains(" done "))
        .count();
    assert_eq!(rows, 2, "`{command}` printed:\n{}", status.stdout);
}

/// On a machine with no AWS configuration at all (no region, no credentials, no profile, and
/// an instance-metadata endpoint that refuses), a command prints archiver's one line, not the
/// SDK's probing.
#[tokio::test]
async fn with_no_aws_configuration_a_command_prints_one_line() {
    let home = tempfile::tempdir().unwrap();
    // A closed loopback port for the instance-metadata probe: as on a laptop, nothing answers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let imds = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    for args in [
        vec!["verify"],
        vec!["run"],
        vec!["--region", "eu-west-1", "run"],
    ] {
        let mut c = tokio::process::Command::new(util::BIN);
        c.arg("--state")
            .arg(home.path().join("state.db"))
            .arg("--output")
            .arg(home.path().join("archive"))
            .args(&args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home.path())
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds);
        let run = util::Run::from(c.output().await.unwrap());
        assert_ne!(run.code, 0, "{args:?} succeeded with no AWS configuration");
        let lines: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{args:?}: expected archiver's one line, got:\n{}",
            run.stderr
        );
        assert!(lines[0].starts_with("archiver: error: "), "{}", lines[0]);
        // No credentials anywhere is not worth a retry: the call fails at once.
        assert!(!lines[0].contains("gave up after"), "{}", lines[0]);
    }
}

/// Run the binary with `args` and no archiver variables from the test's environment.
async fn archiver(args: &[&str]) -> util::Run {
    let mut c = tokio::process::Command::new(util::BIN);
    c.args(args).kill_on_drop(true);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ARCHIVER_") {
            c.env_remove(k);
        }
    }
    util::Run::from(c.output().await.unwrap())
}

/// `archiver simulator` has a command line of its own: its help shows none of archiver's
/// global options, and its `--accounts` reaches the simulator (which checks it), also first.
#[tokio::test]
async fn the_simulators_options_are_its_own() {
    let help = archiver(&["simulator", "--help"]).await;
    help.ok();
    assert!(
        help.stdout.contains("Usage: archiver simulator"),
        "{}",
        help.stdout
    );
    assert!(help.stdout.contains("--accounts"), "{}", help.stdout);
    for global in ["--state", "--output", "--concurrency", "Global options"] {
        assert!(
            !help.stdout.contains(global),
            "{global} in:\n{}",
            help.stdout
        );
    }
    // A value archiver's `--accounts` would take and the simulator refuses: the simulator's
    // own check answers.
    let run = archiver(&["simulator", "--accounts", "1234"]).await;
    run.code(1);
    assert_eq!(
        run.last_line(),
        "archiver: error: simulator account ids are 12 digits, got \"1234\"",
        "{}",
        run.stderr
    );
    // archiver's options after `simulator` are not the simulator's.
    let run = archiver(&["simulator", "--state", "s.db"]).await;
    run.code(2);
    assert!(
        run.stderr.contains("unexpected argument '--state'"),
        "{}",
        run.stderr
    );
}

/// A command's help lists its own options before the global ones.
#[tokio::test]
async fn a_commands_help_lists_its_own_options_first() {
    let help = archiver(&["run", "--help"]).await;
    help.ok();
    let own = help.stdout.find("--dry-run").unwrap();
    let global = help.stdout.find("Global options:").unwrap();
    let state = help.stdout.find("--state <").unwrap();
    assert!(own < global && global < state, "{}", help.stdout);
}

/// `demo` checks the global options it takes as `run` does: a usage error in one line, exit 2,
/// before anything is started or written (a zero `--concurrency` used to hang it).
#[tokio::test]
async fn demo_and_run_refuse_a_zero_concurrency_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let state = dir.path().join("state.db");
    let demo_dir_arg = demo_dir.to_str().unwrap();
    for (args, want) in [
        (
            vec!["demo", "--concurrency", "0", "--dir", demo_dir_arg],
            "--concurrency must be between 1 and 64",
        ),
        (
            vec!["--flush-rows", "0", "demo", "--dir", demo_dir_arg],
            "--flush-rows must be at least 1",
        ),
        (
            vec!["demo", "--max-attempts", "101", "--dir", demo_dir_arg],
            "--max-attempts must be between 1 and 100",
        ),
        (
            vec![
                "--state",
                state.to_str().unwrap(),
                "run",
                "--concurrency",
                "0",
            ],
            "--concurrency must be between 1 and 64",
        ),
    ] {
        let run = tokio::time::timeout(std::time::Duration::from_secs(60), archiver(&args))
            .await
            .unwrap_or_else(|_| panic!("{args:?} still running after 60 s"));
        run.code(2);
        assert_eq!(
            run.stderr.trim_end(),
            format!("archiver: error: {want}"),
            "{args:?}"
        );
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    assert!(!demo_dir.exists(), "the refused demo created its folder");
    assert!(!state.exists(), "the refused run created its state");
}

/// The variables of the on/off options take exactly `true` or `false`, as docs/cli.md says.
#[tokio::test]
async fn boolean_variables_take_true_or_false_only() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    for (value, code) in [
        ("true", 1),
        ("false", 1),
        ("1", 2),
        ("yes", 2),
        ("TRUE", 2),
        ("", 2),
    ] {
        let run = util::Run::from(
            tokio::process::Command::new(util::BIN)
                .arg("--state")
                .arg(&state)
                .arg("status")
                .env("ARCHIVER_WITH_CLIENT_IPS", value)
                .output()
                .await
                .unwrap(),
        );
        // 1: past the options, `status` finds no state; 2: the value is refused.
        run.code(code);
        if code == 2 {
            assert!(
                run.stderr.contains("--with-client-ips"),
                "{value:?}: {}",
                run.stderr
            );
        }
    }
}
