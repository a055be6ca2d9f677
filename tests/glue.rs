//! `--glue-table`: the Athena table of `sql/athena/create_table.sql`, created in moto's Glue
//! (started on 127.0.0.1), has its portal projection kept current by `run`; an unfiltered query
//! over it, expanded the way Athena expands partition projection, reads every archived row.
//!
//! Truth is the simulator's portal ids and record; the table is read back from moto.

mod util;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use archiver_simulator::SimSession;
use aws_sdk_glue::types::{Column, SerDeInfo, StorageDescriptor, Table, TableInput};
use util::s3::{self as s3u, Moto};
use util::{sim_config, Env, Run};

const DB: &str = "archive_db";
const TABLE: &str = "archiver_sessions";
const BUCKET: &str = "archive-bucket";
const PREFIX: &str = "team/archive";

fn glue_client(endpoint: &str) -> aws_sdk_glue::Client {
    let conf = aws_sdk_glue::Config::builder()
        .behavior_version(aws_sdk_glue::config::BehaviorVersion::latest())
        .region(aws_sdk_glue::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_glue::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .build();
    aws_sdk_glue::Client::from_conf(conf)
}

/// The table of `sql/athena/create_table.sql` (placeholders replaced), as Athena's DDL would
/// create it in Glue: columns, partition keys, location and TBLPROPERTIES read from the file.
fn athena_table(location_root: &str) -> TableInput {
    let sql = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sql/athena/create_table.sql"
    ))
    .unwrap()
    .replace("s3://YOUR-BUCKET/YOUR-PREFIX", location_root);
    let lines: Vec<&str> = sql
        .lines()
        .map(|l| l.split("--").next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .collect();
    let block = |start: &str| -> Vec<&str> {
        let i = lines
            .iter()
            .position(|l| l.starts_with(start) && l.ends_with('('))
            .unwrap_or_else(|| panic!("no {start} in create_table.sql"));
        lines[i + 1..]
            .iter()
            .take_while(|l| !l.starts_with(')'))
            .copied()
            .collect()
    };
    let columns = |start: &str| -> Vec<Column> {
        block(start)
            .iter()
            .map(|l| {
                let (name, ty) = l.split_once(char::is_whitespace).unwrap();
                Column::builder()
                    .name(name)
                    .r#type(ty.trim().trim_end_matches(',').trim())
                    .build()
                    .unwrap()
            })
            .collect()
    };
    let location = lines
        .iter()
        .find_map(|l| l.strip_prefix("LOCATION "))
        .unwrap()
        .trim_matches('\'');
    assert!(lines.contains(&"STORED AS PARQUET"));
    let mut params: HashMap<String, String> = block("TBLPROPERTIES")
        .iter()
        .map(|l| {
            let (k, v) = l.trim_end_matches(',').split_once('=').unwrap();
            let unquote = |s: &str| s.trim().trim_matches('\'').to_string();
            (unquote(k), unquote(v))
        })
        .collect();
    params.insert("EXTERNAL".into(), "TRUE".into());
    let sd = StorageDescriptor::builder()
        .set_columns(Some(columns("CREATE EXTERNAL TABLE")))
        .location(location)
        .input_format("org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat")
        .output_format("org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat")
        .serde_info(
            SerDeInfo::builder()
                .serialization_library(
                    "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                )
                .parameters("serialization.format", "1")
                .build(),
        )
        .build();
    TableInput::builder()
        .name(TABLE)
        .description("archiver sessions")
        .owner("security-team")
        .retention(0)
        .table_type("EXTERNAL_TABLE")
        .set_storage_descriptor(Some(sd))
        .set_partition_keys(Some(columns("PARTITIONED BY")))
        .set_parameters(Some(params))
        .build()
        .unwrap()
}

/// moto (Glue and S3) with the database and the table of `create_table.sql` over
/// `location_root`, its `projection.portal_id` parameters replaced by `portal_params`.
async fn moto_with_table(location_root: &str, portal_params: &[(&str, &str)]) -> Moto {
    let moto = Moto::start().await;
    let glue = glue_client(&moto.endpoint);
    glue.create_database()
        .database_input(
            aws_sdk_glue::types::DatabaseInput::builder()
                .name(DB)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    create_table(&moto.endpoint, location_root, portal_params).await;
    moto
}

/// The table of `create_table.sql` over `location_root`, its `projection.portal_id`
/// parameters replaced by `portal_params`.
async fn create_table(endpoint: &str, location_root: &str, portal_params: &[(&str, &str)]) {
    let glue = glue_client(endpoint);
    let mut input = athena_table(location_root);
    let params = input.parameters.as_mut().unwrap();
    assert_eq!(params["projection.portal_id.type"], "injected");
    params.retain(|k, _| !k.starts_with("projection.portal_id."));
    for (k, v) in portal_params {
        params.insert(k.to_string(), v.to_string());
    }
    glue.create_table()
        .database_name(DB)
        .table_input(input)
        .send()
        .await
        .unwrap();
}

async fn get_table(endpoint: &str) -> Table {
    glue_client(endpoint)
        .get_table()
        .database_name(DB)
        .name(TABLE)
        .send()
        .await
        .unwrap()
        .table
        .unwrap()
}

/// How many versions of the table Glue (moto) holds: 1 + the UpdateTable calls made.
async fn versions(endpoint: &str) -> usize {
    glue_client(endpoint)
        .get_table_versions()
        .database_name(DB)
        .table_name(TABLE)
        .send()
        .await
        .unwrap()
        .table_versions()
        .len()
}

fn enum_values(t: &Table) -> Vec<String> {
    let p = t.parameters().unwrap();
    assert_eq!(p["projection.portal_id.type"], "enum");
    p["projection.portal_id.values"]
        .split(',')
        .map(str::to_string)
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Every field of the table but the portal projection's parameters and Glue's bookkeeping.
fn unchanged(before: &Table, after: &Table) {
    assert_eq!(after.name(), before.name());
    assert_eq!(after.description(), before.description());
    assert_eq!(after.owner(), before.owner());
    assert_eq!(after.retention(), before.retention());
    assert_eq!(after.table_type(), before.table_type());
    assert_eq!(after.storage_descriptor(), before.storage_descriptor());
    assert_eq!(after.partition_keys(), before.partition_keys());
    assert_eq!(after.view_original_text(), before.view_original_text());
    assert_eq!(after.target_table(), before.target_table());
    let others = |t: &Table| -> BTreeMap<String, String> {
        t.parameters()
            .unwrap()
            .iter()
            .filter(|(k, _)| !k.starts_with("projection.portal_id."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(others(after), others(before));
    assert!(others(after).contains_key("storage.location.template"));
}

/// Days since 1970-01-01 → `YYYY-MM-DD` (proleptic Gregorian).
fn civil(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The partition locations Athena reads for a query with no partition filter: the projection
/// of the table's parameters expanded (every `enum` portal × every day of the `date` range)
/// into `storage.location.template`.
fn projected_locations(t: &Table) -> HashSet<String> {
    let p = t.parameters().unwrap();
    assert_eq!(p["projection.enabled"], "true");
    let keys: Vec<&str> = t.partition_keys().iter().map(|c| c.name()).collect();
    assert_eq!(keys, ["portal_id", "start_date"]);
    let portals = enum_values(t);
    assert_eq!(p["projection.start_date.type"], "date");
    assert_eq!(p["projection.start_date.format"], "yyyy-MM-dd");
    assert_eq!(p["projection.start_date.interval"], "1");
    assert_eq!(p["projection.start_date.interval.unit"], "DAYS");
    let (from, to) = p["projection.start_date.range"].split_once(',').unwrap();
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        / 86_400;
    let day_of = |s: &str| -> i64 {
        if s.trim() == "NOW" {
            return today;
        }
        (0..30_000)
            .find(|d| civil(*d) == s.trim())
            .unwrap_or_else(|| panic!("range bound {s}"))
    };
    let (from, to) = (day_of(from), day_of(to));
    assert_eq!(civil(from), "2020-01-01");
    let template = &p["storage.location.template"];
    let mut out = HashSet::new();
    for portal in &portals {
        for d in from..=to {
            out.insert(
                template
                    .replace("${portal_id}", portal)
                    .replace("${start_date}", &civil(d)),
            );
        }
    }
    out
}

/// A row as read back: portal id, session id, username, start and end (epoch ms).
type Got = (String, String, Option<String>, i64, Option<i64>);

fn glue_env(c: &mut tokio::process::Command, moto: &Moto) {
    c.env("AWS_ENDPOINT_URL_GLUE", &moto.endpoint);
}

async fn run_with(env: &Env, moto: &Moto, args: &[&str]) -> Run {
    let mut c = env.cmd(args);
    glue_env(&mut c, moto);
    Run::from(c.output().await.unwrap())
}

fn summary_glue(path: &std::path::Path) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["glue"].clone()
}

/// The rows of these S3 objects (Parquet files of the archive), read with DuckDB as Hive
/// partitions, by session id; a session read twice fails.
async fn read_rows(
    py: &str,
    dir: &std::path::Path,
    s3: &aws_sdk_s3::Client,
    keys: &[&String],
) -> BTreeMap<String, Got> {
    let local = dir.join(format!("read-{}", keys.len()));
    let mut paths = Vec::new();
    for k in keys {
        let p = local.join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, s3u::get(s3, BUCKET, k).await).unwrap();
        paths.push(p.to_string_lossy().into_owned());
    }
    let script = r#"
import duckdb, json, sys
files = json.load(open(sys.argv[1]))
rows = duckdb.sql(
    "SELECT portal_id::VARCHAR, session_id, username, epoch_ms(start_time), epoch_ms(end_time) "
    "FROM read_parquet($files, hive_partitioning = true)", params={"files": files}).fetchall()
json.dump(rows, sys.stdout)
"#;
    let list = dir.join("files.json");
    std::fs::write(&list, serde_json::to_vec(&paths).unwrap()).unwrap();
    let out = tokio::process::Command::new(py)
        .args(["-c", script])
        .arg(&list)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Got> = serde_json::from_slice(&out.stdout).unwrap();
    let mut got: BTreeMap<String, Got> = BTreeMap::new();
    for r in rows {
        assert!(
            got.insert(r.1.clone(), r.clone()).is_none(),
            "{} twice",
            r.1
        );
    }
    got
}

/// The simulator's sessions as [`read_rows`] reads them.
fn want_rows<'a>(sessions: impl Iterator<Item = &'a SimSession>) -> BTreeMap<String, Got> {
    sessions
        .map(|s| {
            (
                s.session_id.clone(),
                (
                    s.portal_id.clone(),
                    s.session_id.clone(),
                    s.username.clone(),
                    s.start_time_ms,
                    s.end_time_ms,
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_lists_every_portal_and_an_unfiltered_query_reads_every_row() {
    let py = util::python_with("duckdb");
    let root = format!("s3://{BUCKET}/{PREFIX}");
    let moto = moto_with_table(&root, &[("projection.portal_id.type", "injected")]).await;
    let s3 = s3u::client(&moto.endpoint);
    s3u::create_bucket(&s3, BUCKET).await;
    let before = get_table(&moto.endpoint).await;
    let env = Env::new(sim_config(3, 400, 5)).await;
    let summary = env.dir.path().join("summary.json");
    let run = |extra: &'static [&'static str]| {
        let mut c = tokio::process::Command::new(util::BIN);
        c.arg("--state")
            .arg(env.state())
            .arg("--output")
            .arg(&root)
            .arg("--glue-table")
            .arg(format!("{DB}.{TABLE}"))
            .arg("--summary-json")
            .arg(&summary)
            .arg("run")
            .args(extra);
        for (k, v) in util::aws_env(&env.sim.endpoint_url()) {
            c.env(k, v);
        }
        c.env("AWS_ENDPOINT_URL_S3", &moto.endpoint);
        glue_env(&mut c, &moto);
        c.env_remove("ARCHIVER_FAILPOINT").kill_on_drop(true);
        c
    };
    let r = Run::from(run(&[]).output().await.unwrap());
    r.ok();
    assert!(
        r.stderr.contains("Glue table's portal list updated"),
        "{}",
        r.stderr
    );

    let after = get_table(&moto.endpoint).await;
    let want_ids = sorted(env.sim.portal_ids());
    assert_eq!(want_ids.len(), 3);
    assert_eq!(
        enum_values(&after),
        want_ids,
        "values sorted, exactly the portals"
    );
    unchanged(&before, &after);
    assert_eq!(versions(&moto.endpoint).await, 2, "one UpdateTable");
    let g = summary_glue(&summary);
    assert_eq!(g["table"], format!("{DB}.{TABLE}"));
    assert_eq!(g["portals_added"], 3);
    assert_eq!(g["mode"], "portal_list");
    assert_eq!(g["partitions_added"], 0);
    assert!(g["error"].is_null(), "{g}");

    // The query with no portal filter: Athena reads the projected locations. Every published
    // file lies in one, and the rows read from them are exactly the simulator's.
    let locations = projected_locations(&after);
    let keys = s3u::keys(&s3, BUCKET).await;
    let files: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with(&format!("{PREFIX}/sessions/")) && k.ends_with(".parquet"))
        .collect();
    assert!(!files.is_empty());
    let read: Vec<&String> = files
        .iter()
        .copied()
        .filter(|k| {
            let dir = &k[..k.rfind('/').unwrap() + 1];
            locations.contains(&format!("s3://{BUCKET}/{dir}"))
        })
        .collect();
    assert_eq!(read, files, "files outside every projected location");
    let rows = read_rows(&py, env.dir.path(), &s3, &read).await;
    let expected = env.expected();
    assert!(expected.len() > 1000, "{}", expected.len());
    let got = rows;
    let want = want_rows(expected.values());
    assert_eq!(got, want, "rows read through the projection");
    let portals_read: BTreeSet<&str> = got.values().map(|r| r.0.as_str()).collect();
    assert_eq!(portals_read.len(), 3);

    // Nothing new: no UpdateTable.
    let r = Run::from(run(&[]).output().await.unwrap());
    r.ok();
    assert!(
        !r.stderr.contains("Glue table's portal list updated"),
        "{}",
        r.stderr
    );
    assert_eq!(versions(&moto.endpoint).await, 2, "no UpdateTable");
    assert_eq!(summary_glue(&summary)["portals_added"], 0);
    assert_eq!(enum_values(&get_table(&moto.endpoint).await), want_ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_portals_are_added_and_none_is_removed() {
    // The table lists a portal deleted since (its archived sessions must stay queryable).
    let deleted = "deleted0-0000-0000-0000-000000000000";
    let moto = moto_with_table(
        "s3://b/p",
        &[
            ("projection.portal_id.type", "enum"),
            ("projection.portal_id.values", deleted),
        ],
    )
    .await;
    let env = Env::new(sim_config(3, 50, 0)).await;
    let ids = sorted(env.sim.portal_ids());
    let table = format!("{DB}.{TABLE}");
    let summary = env.dir.path().join("summary.json");
    let s = format!("--summary-json={}", summary.display());
    let base = ["--glue-table", table.as_str(), s.as_str(), "run"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|a| a.to_string()).collect()
    };
    let args = with(&["--portal-id", &ids[0]]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_with(&env, &moto, &args).await.ok();
    assert_eq!(
        enum_values(&get_table(&moto.endpoint).await),
        sorted(vec![deleted.to_string(), ids[0].clone()])
    );
    assert_eq!(summary_glue(&summary)["portals_added"], 1);

    // A mistyped (well-formed) portal id never reaches the table: with --glue-table it is
    // looked up in ListPortals and refused; and the state row an earlier run without
    // --glue-table left for it (no ARN, no files) is not listed by later runs.
    let typo = "00000000-1111-2222-3333-444444444444";
    let n = versions(&moto.endpoint).await;
    let args = with(&["--portal-id", typo]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run_with(&env, &moto, &args).await;
    r.code(1);
    assert!(
        r.stderr.contains(&format!("portal {typo} not found")),
        "{}",
        r.stderr
    );
    assert_eq!(versions(&moto.endpoint).await, n);
    env.run(&["run", "--portal-id", typo]).await.code(1);

    // The table reset to `injected` (re-created, say): the next run, on another portal, lists
    // the portals the state knows as well.
    update_params(&moto.endpoint, |params| {
        params.remove("projection.portal_id.values");
        params.insert("projection.portal_id.type".into(), "injected".into());
    })
    .await;
    let args = with(&["--portal-id", &ids[1]]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_with(&env, &moto, &args).await.ok();
    assert_eq!(
        enum_values(&get_table(&moto.endpoint).await),
        ids[..2].to_vec()
    );

    // Every portal: the third added, the others kept.
    let n = versions(&moto.endpoint).await;
    let args = with(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run_with(&env, &moto, &args).await;
    r.ok();
    assert_eq!(enum_values(&get_table(&moto.endpoint).await), ids);
    assert_eq!(versions(&moto.endpoint).await, n + 1);
    assert_eq!(summary_glue(&summary)["portals_added"], 1);
    env.assert_exact();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_fails_the_run_after_archiving_everything() {
    let moto = moto_with_table("s3://b/p", &[]).await;
    let env = Env::new(sim_config(2, 300, 3)).await;
    let summary = env.dir.path().join("summary.json");
    let s = format!("--summary-json={}", summary.display());

    let r = run_with(&env, &moto, &["--glue-table", "archive_db.nope", &s, "run"]).await;
    r.code(1);
    let last = r.last_line();
    assert!(
        last.starts_with("archiver: error: Glue table archive_db.nope"),
        "{last}"
    );
    assert!(last.contains("not found"), "{last}");
    assert_eq!(
        r.stderr
            .lines()
            .filter(|l| l.contains("ERROR") && l.contains("archive_db.nope"))
            .count(),
        1,
        "one error line naming the table:\n{}",
        r.stderr
    );
    env.assert_exact();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(v["outcome"], "failed");
    assert_eq!(v["glue"]["table"], "archive_db.nope");
    assert!(v["glue"]["error"].as_str().unwrap().contains("not found"));
    assert_eq!(v["totals"]["failed"], 0);

    // A missing database, and a table with no projection on portal_id (as created above).
    let r = run_with(&env, &moto, &["--glue-table", "nodb.sessions", "run"]).await;
    r.code(1);
    assert!(
        r.stderr.contains("Glue table nodb.sessions: not found"),
        "{}",
        r.stderr
    );
    let r = run_with(
        &env,
        &moto,
        &["--glue-table", &format!("{DB}.{TABLE}"), "run"],
    )
    .await;
    r.code(1);
    let last = r.last_line();
    assert!(
        last.contains("Glue table archive_db.archiver_sessions")
            && last.contains("no partition projection on portal_id"),
        "{last}"
    );
    assert_eq!(versions(&moto.endpoint).await, 1, "left as it was");
    env.assert_exact();
}

/// What the Glue proxy saw: each call's `X-Amz-Target` and JSON body.
type Calls = std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>;

/// A proxy on 127.0.0.1 in front of moto's Glue, recording every call. With `extra`, at the
/// first UpdateTable it acts as a concurrent writer (adds `extra` to the table's portal list,
/// straight in moto) and refuses the call with ConcurrentModificationException, as Glue does
/// for an update naming a version that is no longer current (moto itself does not check
/// `VersionId`).
async fn glue_proxy(upstream: &str, extra: Option<&'static str>) -> (String, Calls) {
    glue_proxy_denying(upstream, extra, Deny::default()).await
}

/// Calls (`X-Amz-Target`) the proxy answers `AccessDeniedException` without passing them on,
/// while listed.
type Deny = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// [`glue_proxy`], also refusing the calls `deny` lists.
async fn glue_proxy_denying(
    upstream: &str,
    extra: Option<&'static str>,
    deny: Deny,
) -> (String, Calls) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let calls: Calls = Default::default();
    let (seen, upstream) = (calls.clone(), upstream.to_string());
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (seen, upstream, deny) = (seen.clone(), upstream.clone(), deny.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (seen, upstream, deny) = (seen.clone(), upstream.clone(), deny.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let target = parts
                                .headers
                                .get("x-amz-target")
                                .map(|v| v.to_str().unwrap().to_string())
                                .unwrap_or_default();
                            let json = serde_json::from_slice(&body).unwrap_or_default();
                            let first_update = {
                                let mut s = seen.lock().unwrap();
                                s.push((target.clone(), json));
                                target == "AWSGlue.UpdateTable"
                                    && s.iter().filter(|(t, _)| *t == target).count() == 1
                            };
                            if deny.lock().unwrap().contains(&target) {
                                let body = r#"{"__type":"AccessDeniedException","Message":"not allowed (test proxy)"}"#;
                                return Ok::<_, hyper::Error>(
                                    hyper::Response::builder()
                                        .status(400)
                                        .header("content-type", "application/x-amz-json-1.1")
                                        .body(Full::new(bytes::Bytes::from(body)))
                                        .unwrap(),
                                );
                            }
                            if let (true, Some(extra)) = (first_update, extra) {
                                concurrent_add(&upstream, extra).await;
                                let body = r#"{"__type":"ConcurrentModificationException","Message":"the table changed (test proxy)"}"#;
                                return Ok::<_, hyper::Error>(
                                    hyper::Response::builder()
                                        .status(400)
                                        .header("content-type", "application/x-amz-json-1.1")
                                        .body(Full::new(bytes::Bytes::from(body)))
                                        .unwrap(),
                                );
                            }
                            let addr = upstream.strip_prefix("http://").unwrap();
                            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                            let (mut sender, conn) =
                                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                            tokio::spawn(conn);
                            let resp = sender
                                .send_request(hyper::Request::from_parts(parts, Full::new(body)))
                                .await?;
                            let (parts, body) = resp.into_parts();
                            let body = body.collect().await?.to_bytes();
                            Ok(hyper::Response::from_parts(parts, Full::new(body)))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    (endpoint, calls)
}

/// Another writer: `portal` added to the table's `enum` list (made one if `injected`).
async fn concurrent_add(moto: &str, portal: &str) {
    update_params(moto, |params| {
        params.insert("projection.portal_id.type".into(), "enum".into());
        params.insert("projection.portal_id.values".into(), portal.into());
    })
    .await;
}

/// The table rewritten as it is but for its parameters, changed by `change`.
async fn update_params(moto: &str, change: impl FnOnce(&mut HashMap<String, String>)) {
    let t = get_table(moto).await;
    let mut params = t.parameters().unwrap().clone();
    change(&mut params);
    let input = TableInput::builder()
        .name(TABLE)
        .set_storage_descriptor(t.storage_descriptor().cloned())
        .set_partition_keys(t.partition_keys.clone())
        .set_table_type(t.table_type().map(str::to_string))
        .set_parameters(Some(params))
        .build()
        .unwrap();
    glue_client(moto)
        .update_table()
        .database_name(DB)
        .table_input(input)
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_refused_for_a_concurrent_change_is_recomputed_keeping_it() {
    let concurrent = "concurr0-0000-0000-0000-000000000000";
    let moto = moto_with_table("s3://b/p", &[("projection.portal_id.type", "injected")]).await;
    let (proxy, calls) = glue_proxy(&moto.endpoint, Some(concurrent)).await;
    let env = Env::new(sim_config(2, 50, 0)).await;
    let mut c = env.cmd(&["--glue-table", &format!("{DB}.{TABLE}"), "run"]);
    c.env("AWS_ENDPOINT_URL_GLUE", &proxy);
    Run::from(c.output().await.unwrap()).ok();

    let mut want = env.sim.portal_ids();
    want.push(concurrent.to_string());
    assert_eq!(
        enum_values(&get_table(&moto.endpoint).await),
        sorted(want),
        "the concurrent writer's portal kept"
    );
    let calls = calls.lock().unwrap().clone();
    let targets: Vec<&str> = calls.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        targets,
        [
            "AWSGlue.GetTable",
            "AWSGlue.UpdateTable",
            "AWSGlue.GetTable",
            "AWSGlue.UpdateTable"
        ]
    );
    // Each update names the version it was computed from.
    assert_eq!(calls[1].1["VersionId"], "1");
    assert_eq!(calls[3].1["VersionId"], "2");
    env.assert_exact();
}

// ---------------------------------------------------------------- registered partitions

/// The partitions Glue (moto) holds, `(portal_id, start_date)` → location. With `expression`,
/// those GetPartitions selects with it: what Athena asks Glue for when a query filters on a
/// partition key.
async fn glue_partitions(
    endpoint: &str,
    expression: Option<&str>,
) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    let mut token = None;
    loop {
        let r = glue_client(endpoint)
            .get_partitions()
            .database_name(DB)
            .table_name(TABLE)
            .set_expression(expression.map(str::to_string))
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        for p in r.partitions() {
            let v = p.values();
            assert_eq!(v.len(), 2, "{v:?}");
            let loc = p
                .storage_descriptor()
                .and_then(|sd| sd.location())
                .unwrap()
                .to_string();
            let key = (v[0].clone(), v[1].clone());
            assert!(out.insert(key, loc).is_none(), "partition {v:?} twice");
        }
        token = r.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    out
}

type Published = BTreeMap<(String, String), Vec<String>>;

/// The partitions of a local archive: `(portal_id, start_date)` → its `.parquet` files.
fn local_partitions(archive: &std::path::Path) -> Published {
    let mut out = Published::new();
    let root = archive.join("sessions");
    let Ok(portals) = std::fs::read_dir(&root) else {
        return out;
    };
    for p in portals {
        let p = p.unwrap();
        let portal = p.file_name().to_string_lossy().into_owned();
        let portal = portal.strip_prefix("portal_id=").unwrap().to_string();
        for d in std::fs::read_dir(p.path()).unwrap() {
            let d = d.unwrap();
            let date = d.file_name().to_string_lossy().into_owned();
            let date = date.strip_prefix("start_date=").unwrap().to_string();
            let files: Vec<String> = std::fs::read_dir(d.path())
                .unwrap()
                .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|f| f.ends_with(".parquet"))
                .collect();
            if !files.is_empty() {
                out.insert((portal.clone(), date), files);
            }
        }
    }
    out
}

/// The partitions of the S3 archive under [`PREFIX`], from its keys.
fn s3_partitions(keys: &[String]) -> Published {
    let mut out = Published::new();
    for k in keys {
        let Some(rest) = k.strip_prefix(&format!("{PREFIX}/sessions/portal_id=")) else {
            continue;
        };
        if !k.ends_with(".parquet") {
            continue;
        }
        let (portal, rest) = rest.split_once('/').unwrap();
        let date = rest
            .strip_prefix("start_date=")
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        out.entry((portal.to_string(), date.to_string()))
            .or_default()
            .push(k.clone());
    }
    out
}

/// Each BatchCreatePartition call the proxy saw from `from` on: the partitions it sent.
fn batches(calls: &Calls, from: usize) -> Vec<Vec<(String, String)>> {
    calls.lock().unwrap()[from..]
        .iter()
        .filter(|(t, _)| t == "AWSGlue.BatchCreatePartition")
        .map(|(_, body)| {
            assert_eq!(body["DatabaseName"], DB);
            assert_eq!(body["TableName"], TABLE);
            body["PartitionInputList"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let v = p["Values"].as_array().unwrap();
                    (
                        v[0].as_str().unwrap().to_string(),
                        v[1].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .collect()
}

/// The Glue calls the proxy saw from `from` on.
fn targets(calls: &Calls, from: usize) -> Vec<String> {
    calls.lock().unwrap()[from..]
        .iter()
        .map(|(t, _)| t.trim_start_matches("AWSGlue.").to_string())
        .collect()
}

fn keys_of<K: Clone + Ord, A, B>(a: &BTreeMap<K, A>, b: &BTreeMap<K, B>) -> (Vec<K>, Vec<K>) {
    (a.keys().cloned().collect(), b.keys().cloned().collect())
}

/// The UTC date of an instant (epoch ms), as the layout writes it.
fn utc_date(ms: i64) -> String {
    civil(ms.div_euclid(86_400_000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_partitions_are_exactly_the_published_ones_and_a_day_selects_only_its_own() {
    let py = util::python_with("duckdb");
    let root = format!("s3://{BUCKET}/{PREFIX}");
    // A table of registered partitions: create_table.sql with partition projection off.
    let moto = moto_with_table(&root, &[("projection.enabled", "false")]).await;
    let (proxy, calls) = glue_proxy(&moto.endpoint, None).await;
    let s3 = s3u::client(&moto.endpoint);
    s3u::create_bucket(&s3, BUCKET).await;
    let before = get_table(&moto.endpoint).await;
    let env = Env::new(sim_config(3, 400, 5)).await;
    let summary = env.dir.path().join("summary.json");
    let run = || {
        let mut c = tokio::process::Command::new(util::BIN);
        c.arg("--state")
            .arg(env.state())
            .arg("--output")
            .arg(&root)
            .arg("--glue-table")
            .arg(format!("{DB}.{TABLE}"))
            .arg("--summary-json")
            .arg(&summary)
            .arg("run");
        for (k, v) in util::aws_env(&env.sim.endpoint_url()) {
            c.env(k, v);
        }
        c.env("AWS_ENDPOINT_URL_S3", &moto.endpoint);
        c.env("AWS_ENDPOINT_URL_GLUE", &proxy);
        c.env_remove("ARCHIVER_FAILPOINT").kill_on_drop(true);
        c
    };
    Run::from(run().output().await.unwrap()).ok();

    // Glue holds exactly the partitions published, each at its folder, each sent once.
    let keys = s3u::keys(&s3, BUCKET).await;
    let published = s3_partitions(&keys);
    assert!(published.len() > 30, "{}", published.len());
    let held = glue_partitions(&moto.endpoint, None).await;
    let (h, p) = keys_of(&held, &published);
    assert_eq!(h, p, "Glue's partitions are the published ones");
    for ((portal, date), loc) in &held {
        assert_eq!(
            loc,
            &format!("{root}/sessions/portal_id={portal}/start_date={date}/")
        );
    }
    let sent = batches(&calls, 0);
    assert_eq!(sent.len(), published.len().div_ceil(100), "full batches");
    let mut all: Vec<(String, String)> = sent.concat();
    assert_eq!(all.len(), published.len(), "each partition sent once");
    all.sort();
    assert_eq!(all, p);
    let g = summary_glue(&summary);
    assert_eq!(g["mode"], "partitions");
    assert_eq!(g["partitions_added"], published.len() as u64);
    assert_eq!(g["partitions_pending"], 0);
    assert_eq!(g["projection_disabled"], false);
    assert!(g["error"].is_null(), "{g}");
    // The table itself is as it was: no UpdateTable.
    let after = get_table(&moto.endpoint).await;
    unchanged(&before, &after);
    assert_eq!(after.parameters(), before.parameters());
    assert_eq!(versions(&moto.endpoint).await, 1, "no UpdateTable");

    // A query for one day across all portals: Athena asks Glue for the partitions of that
    // start_date, and reads the files under their locations. They are exactly that day's
    // files, and hold exactly the sessions that started that day (UTC).
    let mut per_day: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, d) in published.keys() {
        *per_day.entry(d.as_str()).or_default() += 1;
    }
    let (day, n) = per_day.iter().max_by_key(|(_, n)| **n).unwrap();
    assert_eq!(*n, 3, "a day with sessions in every portal");
    let day = day.to_string();
    let selected = glue_partitions(&moto.endpoint, Some(&format!("start_date = '{day}'"))).await;
    let want: Vec<(String, String)> = published
        .keys()
        .filter(|(_, d)| *d == day)
        .cloned()
        .collect();
    assert_eq!(selected.keys().cloned().collect::<Vec<_>>(), want);
    let mut read: Vec<&String> = keys
        .iter()
        .filter(|k| k.ends_with(".parquet"))
        .filter(|k| {
            selected
                .values()
                .any(|loc| k.starts_with(loc.strip_prefix(&format!("s3://{BUCKET}/")).unwrap()))
        })
        .collect();
    read.sort();
    let mut want_files: Vec<&String> = want.iter().flat_map(|k| &published[k]).collect();
    want_files.sort();
    assert_eq!(read, want_files, "only that day's files, all of them");
    let rows = read_rows(&py, env.dir.path(), &s3, &read).await;
    let expected = env.expected();
    let want_rows = want_rows(
        expected
            .values()
            .filter(|s| utc_date(s.start_time_ms) == day),
    );
    assert!(want_rows.len() > 10, "{}", want_rows.len());
    assert_eq!(rows, want_rows, "the day's sessions, exactly");

    // Nothing new: the next run reads the table and registers nothing.
    let seen = calls.lock().unwrap().len();
    Run::from(run().output().await.unwrap()).ok();
    assert_eq!(targets(&calls, seen), ["GetTable"]);
    assert_eq!(summary_glue(&summary)["partitions_added"], 0);

    // Sessions on a new day: the run that publishes them registers their partition.
    let p0 = env.portal(0);
    env.sim.advance_clock(2 * 86_400_000);
    env.sim.add_sessions(&p0, 4, 0);
    let seen = calls.lock().unwrap().len();
    Run::from(run().output().await.unwrap()).ok();
    let published = s3_partitions(&s3u::keys(&s3, BUCKET).await);
    let held = glue_partitions(&moto.endpoint, None).await;
    let (h, p) = keys_of(&held, &published);
    assert_eq!(h, p);
    let new = batches(&calls, seen).concat();
    assert!(
        !new.is_empty() && new.iter().all(|(p, _)| *p == p0),
        "{new:?}"
    );
    assert_eq!(
        summary_glue(&summary)["partitions_added"],
        (p.len() - all.len()) as u64
    );
    let dir = env.dir.path().join("downloaded");
    s3u::download(&s3, BUCKET, PREFIX, &dir).await;
    util::assert_exact(&util::read_dataset(&dir), &env.expected());

    // The table dropped and created again (its partitions went with it): the next run lists
    // the archive's partition folders again and registers them all.
    glue_client(&moto.endpoint)
        .delete_table()
        .database_name(DB)
        .name(TABLE)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    create_table(&moto.endpoint, &root, &[("projection.enabled", "false")]).await;
    assert!(glue_partitions(&moto.endpoint, None).await.is_empty());
    Run::from(run().output().await.unwrap()).ok();
    let held = glue_partitions(&moto.endpoint, None).await;
    let (h, p) = keys_of(&held, &published);
    assert_eq!(h, p, "registered again");
    assert_eq!(summary_glue(&summary)["partitions_added"], p.len() as u64);
}

/// `run_with`, with a failpoint armed (the process aborts there).
async fn run_crashing(env: &Env, moto: &Moto, args: &[&str], point: &str) -> Run {
    let mut c = env.cmd(args);
    glue_env(&mut c, moto);
    c.env("ARCHIVER_FAILPOINT", point);
    Run::from(c.output().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_between_publishing_and_registering_leaves_its_partitions_to_the_next() {
    let moto = moto_with_table("s3://b/p", &[("projection.enabled", "false")]).await;
    let env = Env::new(sim_config(3, 300, 3)).await;
    let table = format!("{DB}.{TABLE}");
    let summary = env.dir.path().join("summary.json");
    let s = format!("--summary-json={}", summary.display());
    let args = ["--glue-table", table.as_str(), s.as_str(), "run"];

    // Killed after publishing its tenth file: what it published is in the archive, and not in
    // Glue (a run registers at its end).
    run_crashing(&env, &moto, &args, "after_publish:10")
        .await
        .code(134);
    let published = local_partitions(&env.archive());
    assert!(!published.is_empty());
    assert!(glue_partitions(&moto.endpoint, None).await.is_empty());

    // A run without --glue-table (by hand, say) finishes the archive: it records what it
    // publishes too, registers nothing, and says that partitions wait.
    let r = env.run(&["run"]).await;
    r.ok();
    assert!(
        r.stderr.contains("are not registered yet") && r.stderr.contains(&table),
        "{}",
        r.stderr
    );
    assert!(glue_partitions(&moto.endpoint, None).await.is_empty());
    env.assert_exact();

    // The next run with --glue-table registers every one.
    run_with(&env, &moto, &args).await.ok();
    let published = local_partitions(&env.archive());
    let held = glue_partitions(&moto.endpoint, None).await;
    let (h, p) = keys_of(&held, &published);
    assert_eq!(h, p, "every published partition, none other");
    assert_eq!(summary_glue(&summary)["partitions_added"], p.len() as u64);
    assert_eq!(summary_glue(&summary)["partitions_pending"], 0);
    env.assert_exact();
    let r = env.run(&["run"]).await;
    r.ok();
    assert!(!r.stderr.contains("are not registered yet"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_registered_just_before_a_kill_are_registered_again_without_error() {
    let moto = moto_with_table("s3://b/p", &[("projection.enabled", "false")]).await;
    let (proxy, calls) = glue_proxy(&moto.endpoint, None).await;
    let env = Env::new(sim_config(2, 300, 0)).await;
    let table = format!("{DB}.{TABLE}");
    let summary = env.dir.path().join("summary.json");
    let s = format!("--summary-json={}", summary.display());
    let args = ["--glue-table", table.as_str(), s.as_str(), "run"];
    let through_proxy = |point: Option<&str>| {
        let mut c = env.cmd(&args);
        c.env("AWS_ENDPOINT_URL_GLUE", &proxy);
        if let Some(p) = point {
            c.env("ARCHIVER_FAILPOINT", p);
        }
        c
    };

    // Killed after Glue registered the run's partitions, before the state forgot them.
    let r = Run::from(
        through_proxy(Some("glue_after_register:1"))
            .output()
            .await
            .unwrap(),
    );
    r.code(134);
    let published = local_partitions(&env.archive());
    let held = glue_partitions(&moto.endpoint, None).await;
    let (h, p) = keys_of(&held, &published);
    assert_eq!(h, p);
    let first = batches(&calls, 0).concat();
    assert_eq!(first.len(), p.len());

    // The next run sends them again; Glue answers that it holds each (AlreadyExists), which
    // is no error: none is pending any more, none added, none lost.
    let seen = calls.lock().unwrap().len();
    Run::from(through_proxy(None).output().await.unwrap()).ok();
    let mut again = batches(&calls, seen).concat();
    again.sort();
    assert_eq!(again, p, "the same partitions, once each");
    let g = summary_glue(&summary);
    assert_eq!(g["partitions_added"], 0);
    assert_eq!(g["partitions_pending"], 0);
    assert!(g["error"].is_null(), "{g}");
    let held = glue_partitions(&moto.endpoint, None).await;
    assert_eq!(held.keys().cloned().collect::<Vec<_>>(), p);

    // And the run after sends nothing.
    let seen = calls.lock().unwrap().len();
    Run::from(through_proxy(None).output().await.unwrap()).ok();
    assert_eq!(targets(&calls, seen), ["GetTable"]);
    env.assert_exact();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_registration_fails_the_run_and_the_next_run_registers_it() {
    let moto = moto_with_table("s3://b/p", &[("projection.enabled", "false")]).await;
    let deny = Deny::default();
    let (proxy, _calls) = glue_proxy_denying(&moto.endpoint, None, deny.clone()).await;
    let env = Env::new(sim_config(2, 200, 0)).await;
    let table = format!("{DB}.{TABLE}");
    let summary = env.dir.path().join("summary.json");
    let s = format!("--summary-json={}", summary.display());
    let args = ["--glue-table", table.as_str(), s.as_str(), "run"];
    let run = || {
        let mut c = env.cmd(&args);
        c.env("AWS_ENDPOINT_URL_GLUE", &proxy);
        c
    };

    // BatchCreatePartition refused: everything archived, the run fails naming the table, and
    // the partitions wait in the state.
    deny.lock()
        .unwrap()
        .push("AWSGlue.BatchCreatePartition".into());
    let r = Run::from(run().output().await.unwrap());
    r.code(1);
    let last = r.last_line();
    assert!(
        last.contains(&format!("Glue table {table}")) && last.contains("not registered"),
        "{last}"
    );
    assert_eq!(
        r.stderr
            .lines()
            .filter(|l| l.contains("ERROR") && l.contains(&table))
            .count(),
        1,
        "one error line naming the table:\n{}",
        r.stderr
    );
    env.assert_exact();
    let published = local_partitions(&env.archive());
    assert!(glue_partitions(&moto.endpoint, None).await.is_empty());
    let g = summary_glue(&summary);
    assert_eq!(g["partitions_pending"], published.len() as u64);
    assert_eq!(g["partitions_added"], 0);

    // Allowed again: the next run registers them.
    deny.lock().unwrap().clear();
    Run::from(run().output().await.unwrap()).ok();
    let held = glue_partitions(&moto.endpoint, None).await;
    let (h, p) = keys_of(&held, &published);
    assert_eq!(h, p);
    let g = summary_glue(&summary);
    assert_eq!(g["partitions_added"], p.len() as u64);
    assert_eq!(g["partitions_pending"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glue_partitions_registers_every_partition_before_turning_projection_off() {
    let moto = moto_with_table("s3://b/p", &[("projection.portal_id.type", "injected")]).await;
    let env = Env::new(sim_config(3, 200, 3)).await;
    let table = format!("{DB}.{TABLE}");
    let summary = env.dir.path().join("summary.json");
    let s = format!("--summary-json={}", summary.display());

    // An archive and its portal-list table, as every run with --glue-table kept it so far.
    run_with(&env, &moto, &["--glue-table", &table, &s, "run"])
        .await
        .ok();
    assert_eq!(
        enum_values(&get_table(&moto.endpoint).await),
        sorted(env.sim.portal_ids())
    );
    assert!(glue_partitions(&moto.endpoint, None).await.is_empty());
    let before = get_table(&moto.endpoint).await;
    let published = local_partitions(&env.archive());

    // The migration: every partition of the archive registered, then (only then) projection
    // off, by an update naming the version read.
    let (proxy, calls) = glue_proxy(&moto.endpoint, None).await;
    let args = ["--glue-table", &table, "--glue-partitions", &s, "run"];
    let mut c = env.cmd(&args);
    c.env("AWS_ENDPOINT_URL_GLUE", &proxy);
    Run::from(c.output().await.unwrap()).ok();
    let t = targets(&calls, 0);
    let update = t
        .iter()
        .position(|x| x == "UpdateTable")
        .expect("an UpdateTable");
    assert_eq!(t.iter().filter(|x| *x == "UpdateTable").count(), 1, "{t:?}");
    let last_batch = t.iter().rposition(|x| x == "BatchCreatePartition").unwrap();
    assert!(
        last_batch < update,
        "registered before projection off: {t:?}"
    );
    let sent = batches(&calls, 0).concat();
    let mut sent_sorted = sent.clone();
    sent_sorted.sort();
    assert_eq!(
        sent_sorted,
        published.keys().cloned().collect::<Vec<_>>(),
        "the archive's partitions, each once"
    );
    let body = &calls.lock().unwrap()[update].1.clone();
    assert_eq!(body["VersionId"], before.version_id().unwrap());
    assert_eq!(
        body["TableInput"]["Parameters"]["projection.enabled"],
        "false"
    );

    let after = get_table(&moto.endpoint).await;
    let mut params = before.parameters().unwrap().clone();
    params.insert("projection.enabled".into(), "false".into());
    assert_eq!(
        after.parameters().unwrap(),
        &params,
        "only projection.enabled changed"
    );
    assert_eq!(after.storage_descriptor(), before.storage_descriptor());
    assert_eq!(after.partition_keys(), before.partition_keys());
    let held = glue_partitions(&moto.endpoint, None).await;
    let published = local_partitions(&env.archive());
    let (h, p) = keys_of(&held, &published);
    assert_eq!(h, p);
    let g = summary_glue(&summary);
    assert_eq!(g["mode"], "partitions");
    assert_eq!(g["projection_disabled"], true);
    assert_eq!(g["partitions_added"], p.len() as u64);

    // Done: the next run only reads the table.
    let seen = calls.lock().unwrap().len();
    let mut c = env.cmd(&args);
    c.env("AWS_ENDPOINT_URL_GLUE", &proxy);
    Run::from(c.output().await.unwrap()).ok();
    assert_eq!(targets(&calls, seen), ["GetTable"]);

    // The table put back to projection on (a CloudFormation stack update does that), and new
    // sessions meanwhile: the next run registers them and turns projection off again, without
    // listing the archive again.
    update_params(&moto.endpoint, |p| {
        p.insert("projection.enabled".into(), "true".into());
    })
    .await;
    let p0 = env.portal(0);
    env.sim.advance_clock(2 * 86_400_000);
    env.sim.add_sessions(&p0, 3, 0);
    let seen = calls.lock().unwrap().len();
    let mut c = env.cmd(&args);
    c.env("AWS_ENDPOINT_URL_GLUE", &proxy);
    Run::from(c.output().await.unwrap()).ok();
    let t = targets(&calls, seen);
    assert_eq!(t.iter().filter(|x| *x == "UpdateTable").count(), 1, "{t:?}");
    let new = batches(&calls, seen).concat();
    assert!(
        !new.is_empty() && new.iter().all(|(p, _)| *p == p0),
        "{new:?}"
    );
    let after = get_table(&moto.endpoint).await;
    assert_eq!(after.parameters().unwrap()["projection.enabled"], "false");
    let held = glue_partitions(&moto.endpoint, None).await;
    let published = local_partitions(&env.archive());
    let (h, p) = keys_of(&held, &published);
    assert_eq!(h, p);
    env.assert_exact();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_portals_are_registered_in_full_batches_and_a_day_selects_only_its_own() {
    const PORTALS: usize = 5_000;
    let moto = moto_with_table("s3://b/p", &[("projection.enabled", "false")]).await;
    let (proxy, calls) = glue_proxy(&moto.endpoint, None).await;
    let env = Env::new(sim_config(1, 60, 0)).await;
    let before = get_table(&moto.endpoint).await;
    // An archive of 5,000 more portals (other states' or shards'), three days each, the days
    // differing from portal to portal: files as the layout names them.
    let days: Vec<String> = (0..20).map(|i| civil(20_400 + i)).collect();
    for i in 0..PORTALS {
        let portal = format!("{i:08x}-0000-4000-8000-000000000000");
        for k in 0..3 {
            let day = &days[(i * 7 + k * 5) % days.len()];
            let dir = env
                .archive()
                .join(format!("sessions/portal_id={portal}/start_date={day}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("part-otherstate-0000000001.parquet"), b"x").unwrap();
        }
    }
    let fabricated = local_partitions(&env.archive());
    assert_eq!(fabricated.len(), PORTALS * 3);

    let table = format!("{DB}.{TABLE}");
    let summary = env.dir.path().join("summary.json");
    let s = format!("--summary-json={}", summary.display());
    let p0 = env.portal(0);
    let args = ["--glue-table", &table, &s, "run", "--portal-id", &p0];
    let mut c = env.cmd(&args);
    c.env("AWS_ENDPOINT_URL_GLUE", &proxy);
    let started = std::time::Instant::now();
    Run::from(c.output().await.unwrap()).ok();
    let took = started.elapsed();

    // Exactly the archive's partitions: the 15,000 listed before archiving, in 150 full
    // batches, then the run's own.
    let published = local_partitions(&env.archive());
    let held = glue_partitions(&moto.endpoint, None).await;
    let (h, p) = keys_of(&held, &published);
    assert_eq!(h.len(), p.len());
    assert_eq!(h, p);
    let sent = batches(&calls, 0);
    let own = published.keys().filter(|(p, _)| *p == p0).count();
    assert!(own > 0);
    assert_eq!(sent.len(), 150 + own.div_ceil(100), "calls");
    assert!(sent[..150].iter().all(|b| b.len() == 100), "full batches");
    assert_eq!(sent.concat().len(), published.len(), "each partition once");
    for ((portal, date), loc) in &held {
        assert_eq!(
            loc,
            &format!("s3://b/p/sessions/portal_id={portal}/start_date={date}/")
        );
    }
    let g = summary_glue(&summary);
    assert_eq!(g["partitions_added"], published.len() as u64);

    // The table's metadata does not grow with the portals: it is as it was.
    let after = get_table(&moto.endpoint).await;
    assert_eq!(after.parameters(), before.parameters());
    assert_eq!(versions(&moto.endpoint).await, 1);

    // One day across all portals: Glue selects that day's partitions only.
    let day = &days[3];
    let selected = glue_partitions(&moto.endpoint, Some(&format!("start_date = '{day}'"))).await;
    let want: Vec<(String, String)> = published
        .keys()
        .filter(|(_, d)| d == day)
        .cloned()
        .collect();
    assert!(want.len() > 500, "{}", want.len());
    assert_eq!(selected.keys().cloned().collect::<Vec<_>>(), want);

    // The next run lists nothing again and sends nothing.
    let seen = calls.lock().unwrap().len();
    let mut c = env.cmd(&args);
    c.env("AWS_ENDPOINT_URL_GLUE", &proxy);
    Run::from(c.output().await.unwrap()).ok();
    assert_eq!(targets(&calls, seen), ["GetTable"]);
    eprintln!("5,000 portals: first run {took:?}");
}
