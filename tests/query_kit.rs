//! The query kit (`sql/duckdb/`) run by DuckDB on an archive the binary wrote, every answer
//! checked against the same answer computed in plain Python from the simulator's record,
//! through `tests/py/query_kit.py` in the test venv that `tests/run` sets up. (The Athena
//! files in `sql/athena/` cannot run here.)

mod util;

use util::{sim_config, Env};

fn python() -> String {
    std::env::var("ARCHIVER_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_query_kit_answers_match_the_simulator() {
    let py = python();
    let probe = std::process::Command::new(&py)
        .args(["-c", "import duckdb"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}; run the tests through tests/run"));
    assert!(
        probe.status.success(),
        "{py} lacks duckdb: run the tests through tests/run\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );

    // Two portals, ~800 sessions, files from several flushes and from a second run.
    let env = Env::new(sim_config(2, 400, 6)).await;
    env.run(&["run", "--flush-rows", "150"]).await.ok();
    for p in env.sim.portal_ids() {
        env.sim.add_sessions(&p, 40, 2);
    }
    env.sim.end_active(None, 5);
    env.run(&["run"]).await.ok();
    env.assert_exact();

    let expected: Vec<_> = env.expected().into_values().collect();
    assert!(expected.len() >= 700, "{} sessions", expected.len());
    let expected_path = env.dir.path().join("expected.json");
    std::fs::write(&expected_path, serde_json::to_vec(&expected).unwrap()).unwrap();
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
