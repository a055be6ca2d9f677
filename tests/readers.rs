//! The archive read by readers nobody here wrote: pyarrow, DuckDB, and Spark (the parquet-java
//! family behind Hive and Athena's older engine), through `tests/py/read_archive.py` in the
//! test venv that `tests/run` sets up.

mod util;

use util::{sim_config, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_duckdb_and_spark_read_the_archive_exactly() {
    let py = util::python_with("pyarrow, duckdb, pyspark");

    let env = Env::new(sim_config(2, 1200, 6)).await;
    env.run(&["run", "--flush-rows", "500"]).await.ok();
    // Activity and a second run: the dataset then holds files of several flushes.
    for p in env.sim.portal_ids() {
        env.sim.add_sessions(&p, 80, 2);
    }
    env.sim.end_active(None, 5);
    env.run(&["run"]).await.ok();
    // Compacted partitions too: the readers see files of both kinds.
    env.run(&["compact", "--older-than", "3d"]).await.ok();
    env.assert_exact();

    let (expected_path, count) = env.write_expected();
    assert!(count > 2000, "{count} sessions");
    let out = tokio::process::Command::new(&py)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/read_archive.py"
        ))
        .arg("--archive")
        .arg(env.archive())
        .arg("--expected")
        .arg(&expected_path)
        .arg("--spark")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "readers disagree:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("spark"), "{stdout}");
    eprintln!("{stdout}");
}
