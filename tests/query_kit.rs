//! The query kit (`sql/duckdb/`) run by DuckDB on an archive the binary wrote, every answer
//! checked against the same answer computed in plain Python from the simulator's record,
//! through `tests/py/query_kit.py` in the test venv that `tests/run` sets up; and its Session
//! Logger part, joined to such an archive, through `tests/py/session_logger.py`. (The Athena
//! files in `sql/athena/` cannot run here.)

mod util;

use util::{sim_config, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_query_kit_answers_match_the_simulator() {
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

    let (expected_path, count) = env.write_expected();
    assert!(count >= 700, "{count} sessions");
    let out = tokio::process::Command::new(&py)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/query_kit.py"
        ))
        .arg("--archive")
        .arg(env.archive())
        .arg("--expected")
        .arg(&expected_path)
        .arg("--sql-dir")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/duckdb"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the query kit disagrees with the simulator:\n{stdout}\n{stderr}"
    );
    assert!(stdout.starts_with("query_kit: ok"), "{stdout}");
    eprintln!("{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_session_logger_joins_match_the_simulator() {
    let py = util::python_with("duckdb");

    // Two portals, ~800 sessions; the script writes Session Logger files for them (and for
    // sessions the archive does not hold) and checks the joins against its own answers.
    let env = Env::new(sim_config(2, 400, 6)).await;
    env.run(&["run", "--flush-rows", "150"]).await.ok();
    env.assert_exact();

    let (expected_path, count) = env.write_expected();
    assert!(count >= 700, "{count} sessions");
    let out = tokio::process::Command::new(&py)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/session_logger.py"
        ))
        .arg("--archive")
        .arg(env.archive())
        .arg("--expected")
        .arg(&expected_path)
        .arg("--sql-dir")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/duckdb"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Session Logger queries disagree with the simulator:\n{stdout}\n{stderr}"
    );
    assert!(stdout.starts_with("session_logger: ok"), "{stdout}");
    eprintln!("{stdout}");
}
