//! The query kit (`sql/duckdb/`) run by DuckDB on an archive the binary wrote, every answer
//! checked against the same answer computed in plain Python from the simulator's record,
//! through `tests/py/query_kit.py` in the test venv that `tests/run` sets up; and its Session
//! Logger part, joined to such an archive, through `tests/py/session_logger.py`. (The Athena
//! files in `sql/athena/` cannot run here.)

mod util;

use util::{sim_config, Env};

/// One archive, two checks: the kit's queries on the archive, and its Session Logger part
/// joined to it (the script writes the logger's files for the archive's sessions and for
/// sessions it does not hold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_query_kit_and_session_logger_answers_match_the_simulator() {
    let py = util::python_with("duckdb");

    // Two portals, ~800 sessions, files from several flushes and from a second run.
    let env = Env::new(sim_config(2, 400, 6)).await;
    env.run(&["run", "--flush-rows", "150"]).await.ok();
    for p in env.sim.portal_ids() {
        env.sim.add_sessions(&p, 40, 2);
    }
    env.sim.end_active(None, 5);
    env.run(&["run"]).await.ok();
    env.assert_exact();

    let (expected, count) = env.write_expected();
    assert!(count >= 700, "{count} sessions");
    for script in ["query_kit", "session_logger"] {
        check(&py, script, &env, &expected).await;
    }
}

/// Runs `tests/py/<script>.py` on the archive and the simulator's expected sessions: it must
/// exit 0 with its `<script>: ok` line.
async fn check(py: &str, script: &str, env: &Env, expected: &std::path::Path) {
    let out = tokio::process::Command::new(py)
        .arg(format!(
            "{}/tests/py/{script}.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg("--archive")
        .arg(env.archive())
        .arg("--expected")
        .arg(expected)
        .arg("--sql-dir")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/duckdb"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script}: DuckDB's answers disagree with the simulator's:\n{stdout}\n{stderr}"
    );
    assert!(stdout.starts_with(&format!("{script}: ok")), "{stdout}");
    eprintln!("{stdout}");
}
