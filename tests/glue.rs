//! `--glue-table`: the Athena table of `sql/athena/create_table.sql`, created in moto's Glue
//! (started on 127.0.0.1), has its portal projection kept current by `run`; an unfiltered query
//! over it, expanded the way Athena expands partition projection, reads every archived row.
//!
//! Truth is the simulator's portal ids and record; the table is read back from moto.

mod util;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

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
    moto
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
    let local = env.dir.path().join("read");
    let mut paths = Vec::new();
    for k in &read {
        let p = local.join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, s3u::get(&s3, BUCKET, k).await).unwrap();
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
    let list = env.dir.path().join("files.json");
    std::fs::write(&list, serde_json::to_vec(&paths).unwrap()).unwrap();
    let out = tokio::process::Command::new(&py)
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
    let expected = env.expected();
    assert!(expected.len() > 1000, "{}", expected.len());
    let mut got: BTreeMap<String, Got> = BTreeMap::new();
    for r in rows {
        assert!(
            got.insert(r.1.clone(), r.clone()).is_none(),
            "{} twice",
            r.1
        );
    }
    let want: BTreeMap<String, Got> = expected
        .values()
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
        .collect();
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

/// A proxy on 127.0.0.1 in front of moto's Glue. At the first UpdateTable it acts as a
/// concurrent writer (adds `extra` to the table's portal list, straight in moto) and refuses
/// the call with ConcurrentModificationException, as Glue does for an update naming a version
/// that is no longer current (moto itself does not check `VersionId`).
async fn glue_proxy(upstream: &str, extra: &'static str) -> (String, Calls) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let calls: Calls = Default::default();
    let (seen, upstream) = (calls.clone(), upstream.to_string());
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (seen, upstream) = (seen.clone(), upstream.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (seen, upstream) = (seen.clone(), upstream.clone());
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
                            if first_update {
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
    let (proxy, calls) = glue_proxy(&moto.endpoint, concurrent).await;
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
