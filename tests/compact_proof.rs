//! Compaction proves itself: it refuses inputs that differ from their manifests, and its
//! manifest's rows digest, recomputed independently (pyarrow + hashlib), equals its inputs'
//! and its output's; `verify` checks it long after the inputs are gone.

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use util::{sim_config, Env};

/// An archive with many small files in old partitions.
async fn fragmented() -> Env {
    let env = Env::new(sim_config(1, 1200, 4)).await;
    env.run(&["run", "--flush-rows", "100"]).await.ok();
    for p in env.sim.portal_ids() {
        env.sim.add_sessions(&p, 200, 2);
    }
    env.sim.end_active(None, 4);
    env.run(&["run", "--flush-rows", "100"]).await.ok();
    env.assert_exact();
    env
}

/// The partition folders with at least two files, oldest first.
fn fragmented_partitions(env: &Env) -> Vec<PathBuf> {
    let mut by_dir: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for f in util::parquet_files(&env.archive().join("sessions")) {
        *by_dir.entry(f.parent().unwrap().to_path_buf()).or_default() += 1;
    }
    by_dir
        .into_iter()
        .filter(|(_, n)| *n >= 2)
        .map(|(d, _)| d)
        .collect()
}

/// Every file below `dir` with its bytes, keyed relative to the archive.
/// Every file of the archive but its digests (a refused `compact` still ends with a digest of
/// what it did: nothing).
fn snapshot(env: &Env, dir: &Path) -> BTreeMap<String, Vec<u8>> {
    util::files_below(dir)
        .into_iter()
        .filter(|f| !f.starts_with(env.archive().join("_digest")))
        .map(|f| {
            let key = f
                .strip_prefix(env.archive())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (key, std::fs::read(&f).unwrap())
        })
        .collect()
}

/// The rows digest of each path (a file, or every file below a folder), by tests/py/rows_digest.py.
fn py_digests(paths: &[PathBuf]) -> BTreeMap<String, (u64, String)> {
    let py = util::python_with("pyarrow");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/rows_digest.py");
    let out = std::process::Command::new(py)
        .arg(script)
        .args(paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, d)| {
            (
                k.clone(),
                (
                    d["rows"].as_u64().unwrap(),
                    d["rows_sha256"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

use util::pyarrow as py;

/// The compaction manifests of the archive: (path, JSON).
fn compaction_manifests(env: &Env) -> Vec<(PathBuf, serde_json::Value)> {
    util::files_below(&env.archive().join("_manifest"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
        .map(|f| {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
            (f, v)
        })
        .filter(|(_, v)| v["kind"] == "compaction")
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    archiver::sink::manifest::sha256_hex(bytes)
}

/// Rewrites the Parquet file argv[1] without its first row (pyarrow).
const DROP_FIRST_ROW: &str = "import sys, pyarrow.parquet as pq
f = sys.argv[1]
t = pq.read_table(f, partitioning=None)
pq.write_table(t.slice(1), f, compression='zstd')";

use util::CHANGE_A_USERNAME;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_input_stops_compaction_naming_it_and_leaves_its_partition_untouched() {
    let env = fragmented().await;
    let parts = old_fragmented_partitions(&env);
    assert!(parts.len() >= 3, "{parts:?}");
    let archive = env.archive();
    let pristine = snapshot(&env, &archive);

    // One row removed from a file of the oldest fragmented partition (compacted first):
    // compaction would otherwise launder it. Nothing at all changes in the archive.
    let victim = util::parquet_files(&parts[0])[1].clone();
    py(DROP_FIRST_ROW, &[&victim]);
    let altered = snapshot(&env, &archive);
    assert_ne!(altered, pristine);
    let r = env.run(&["compact", "--older-than", "0s"]).await;
    r.code(1);
    let name = key_of(&env, &victim);
    assert!(
        r.last_line()
            .contains(&format!("{name}: altered since its manifest recorded it")),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&env, &archive), altered, "the archive was touched");

    // Put back; one byte flipped in a file of the newest old fragmented partition (compacted
    // last): refused naming it, that partition untouched.
    std::fs::write(&victim, &pristine[&name]).unwrap();
    let part = parts.last().unwrap();
    let flipped = util::parquet_files(part)[0].clone();
    let mut bytes = std::fs::read(&flipped).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&flipped, &bytes).unwrap();
    let before = snapshot(&env, part);
    let r = env.run(&["compact", "--older-than", "0s"]).await;
    r.code(1);
    assert!(
        r.last_line().contains(&key_of(&env, &flipped)),
        "{}",
        r.stderr
    );
    assert_eq!(snapshot(&env, part), before, "the partition was touched");

    // A file added to a partition, in no manifest: refused too.
    std::fs::write(&flipped, &pristine[&key_of(&env, &flipped)]).unwrap();
    let stray = part.join("part-stray.parquet");
    std::fs::copy(&flipped, &stray).unwrap();
    let r = env.run(&["compact", "--older-than", "0s"]).await;
    r.code(1);
    assert!(
        r.last_line()
            .contains(&format!("{}: in no manifest", key_of(&env, &stray))),
        "{}",
        r.stderr
    );
    std::fs::remove_file(&stray).unwrap();
    env.run(&["compact", "--older-than", "0s"]).await.ok();
    env.assert_exact();
    env.run(&["verify"]).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compaction_manifest_proves_its_rows_and_verify_checks_the_proof() {
    let env = fragmented().await;
    let parts = old_fragmented_partitions(&env);
    assert!(parts.len() >= 3, "{parts:?}");
    // The digest of each partition's rows before, computed by pyarrow + hashlib.
    let before = py_digests(&parts);
    env.run(&["compact", "--older-than", "0s"]).await.ok();
    let after = py_digests(&parts);
    assert_eq!(before, after, "compaction changed the rows of a partition");
    let manifests = compaction_manifests(&env);
    assert_eq!(manifests.len(), parts.len());
    for (path, m) in &manifests {
        let out = m["files"][0]["path"].as_str().unwrap();
        let dir = env.archive().join(out).parent().unwrap().to_path_buf();
        let (rows, digest) = &before[&dir.to_string_lossy().into_owned()];
        assert_eq!(m["rows_sha256"].as_str(), Some(digest.as_str()), "{path:?}");
        assert_eq!(m["files"][0]["rows"].as_u64(), Some(*rows));
        let inputs = m["inputs"].as_array().unwrap();
        let paths: Vec<&str> = inputs.iter().map(|i| i["path"].as_str().unwrap()).collect();
        let replaces: Vec<&str> = m["replaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(paths, replaces, "{path:?}");
        assert_eq!(
            inputs
                .iter()
                .map(|i| i["rows"].as_u64().unwrap())
                .sum::<u64>(),
            *rows
        );
        assert!(m.get("removed_rows").is_none());
    }
    let v = env.run(&["verify", "--json"]).await;
    v.ok();
    let doc: serde_json::Value = serde_json::from_str(&v.stdout).unwrap();
    assert_eq!(
        doc["portals"][0]["manifest"]["compactions_proved"].as_u64(),
        Some(parts.len() as u64)
    );

    // The manifest's rows digest edited: verify exits 3 naming the manifest and the file.
    let (path, m) = &manifests[0];
    let original = std::fs::read(path).unwrap();
    let want = m["rows_sha256"].as_str().unwrap();
    let forged = want.replacen(&want[..1], if &want[..1] == "0" { "1" } else { "0" }, 1);
    std::fs::write(
        path,
        String::from_utf8(original.clone())
            .unwrap()
            .replace(want, &forged),
    )
    .unwrap();
    let out = m["files"][0]["path"].as_str().unwrap();
    let v = env.run(&["verify"]).await;
    v.code(3);
    let mkey = key_of(&env, path);
    assert!(
        v.stdout.contains(&format!(
            "compaction not proved: {mkey}: {out}: its rows digest is {want}"
        )),
        "{}",
        v.stdout
    );
    std::fs::write(path, &original).unwrap();

    // The output replaced by a file with one username changed (which the service's listing
    // does not show), its bytes and SHA-256 fixed in the manifest: only the rows digest can
    // tell, and it does.
    let file = env.archive().join(out);
    let bytes = std::fs::read(&file).unwrap();
    py(CHANGE_A_USERNAME, &[&file]);
    let changed = std::fs::read(&file).unwrap();
    let text = String::from_utf8(original.clone())
        .unwrap()
        .replace(&sha256_hex(&bytes), &sha256_hex(&changed))
        .replace(
            &format!("\"bytes\":{},", bytes.len()),
            &format!("\"bytes\":{},", changed.len()),
        );
    std::fs::write(path, text).unwrap();
    let v = env.run(&["verify"]).await;
    v.code(3);
    assert!(
        v.stdout.contains(&format!(
            "compaction not proved: {mkey}: {out}: its rows digest is "
        )),
        "{}",
        v.stdout
    );
    assert!(!v.stdout.contains("altered:"), "{}", v.stdout);

    // And an input's record in the compaction manifest that is not its own manifest's.
    std::fs::write(&file, &bytes).unwrap();
    let input = m["inputs"][0]["sha256"].as_str().unwrap();
    let forged = input.replacen(&input[..1], if &input[..1] == "0" { "1" } else { "0" }, 1);
    std::fs::write(
        path,
        String::from_utf8(original.clone())
            .unwrap()
            .replace(input, &forged),
    )
    .unwrap();
    let v = env.run(&["verify"]).await;
    v.code(3);
    let in_path = m["inputs"][0]["path"].as_str().unwrap();
    assert!(
        v.stdout.contains(&format!(
            "compaction not proved: {mkey}: {in_path}: input differs from its own manifest"
        )),
        "{}",
        v.stdout
    );
    std::fs::write(path, &original).unwrap();
    env.run(&["verify"]).await.ok();
}

/// The key of a file of the archive, relative to its root.
fn key_of(env: &Env, path: &Path) -> String {
    path.strip_prefix(env.archive())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The partition folders with at least two files and old enough to compact, oldest first.
fn old_fragmented_partitions(env: &Env) -> Vec<PathBuf> {
    let now = archiver::clock::now_ms();
    fragmented_partitions(env)
        .into_iter()
        .filter(|d| {
            let name = d.file_name().unwrap().to_string_lossy().into_owned();
            let date = name.strip_prefix("start_date=").unwrap().to_string();
            archiver::commands::compact::old_enough(&date, std::time::Duration::ZERO, now)
        })
        .collect()
}

/// A portal with no manifest at all (an archive written before manifests) is compacted as
/// before: nothing to check its files against, and the new manifest records them as read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_without_manifests_is_compacted_and_its_inputs_recorded_as_read() {
    let env = fragmented().await;
    let parts = old_fragmented_partitions(&env);
    let originals = snapshot(&env, &env.archive().join("sessions"));
    std::fs::remove_dir_all(env.archive().join("_manifest")).unwrap();
    env.run(&["compact", "--older-than", "0s"]).await.ok();
    env.assert_exact();
    let manifests = compaction_manifests(&env);
    assert_eq!(manifests.len(), parts.len());
    for (path, m) in &manifests {
        for i in m["inputs"].as_array().unwrap() {
            let key = i["path"].as_str().unwrap();
            assert_eq!(
                i["sha256"].as_str().unwrap(),
                sha256_hex(&originals[key]),
                "{path:?}"
            );
        }
        assert!(m["rows_sha256"].is_string());
    }
}
