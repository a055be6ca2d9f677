//! S3 for the tests: moto's server and s3s-fs (two S3-compatible servers nobody here wrote;
//! s3s-fs checks SigV4 and honours conditional writes, but lacks ListMultipartUploads), each
//! started on 127.0.0.1, a fault-injecting proxy in front of them, and helpers to read what was
//! written.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use aws_sdk_s3::Client;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// moto's S3 server on a free port of 127.0.0.1, killed on drop.
pub struct Moto {
    pub endpoint: String,
    _child: tokio::process::Child,
}

impl Moto {
    pub async fn start() -> Moto {
        let bin = std::env::var("ARCHIVER_TEST_MOTO").unwrap_or_else(|_| "moto_server".into());
        let mut child = tokio::process::Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}; run the tests through tests/run"));
        // werkzeug prints " * Running on http://127.0.0.1:PORT" on stderr.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let endpoint = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(i) = line.find("http://127.0.0.1:") {
                    return line[i..].trim().to_string();
                }
            }
            panic!("moto_server exited before listening");
        })
        .await
        .expect("moto_server did not start in 60 s");
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Moto {
            endpoint,
            _child: child,
        }
    }
}

/// Which S3-compatible server a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Moto,
    S3sFs,
}

impl Server {
    /// Does it implement ListMultipartUploads?
    pub fn lists_uploads(self) -> bool {
        self == Server::Moto
    }
}

/// A running S3-compatible server, killed on drop.
pub enum S3Server {
    Moto(Moto),
    S3sFs(S3sFs),
}

impl S3Server {
    /// Start `server`. `None` (after printing why) if it is s3s-fs and that is not installed,
    /// outside CI; in CI (`CI` set) that is a failure.
    pub async fn start(server: Server) -> Option<S3Server> {
        Some(match server {
            Server::Moto => S3Server::Moto(Moto::start().await),
            Server::S3sFs => S3Server::S3sFs(S3sFs::start().await?),
        })
    }

    pub fn endpoint(&self) -> &str {
        match self {
            S3Server::Moto(m) => &m.endpoint,
            S3Server::S3sFs(s) => &s.endpoint,
        }
    }
}

/// s3s-fs (`cargo install s3s-fs --features binary`) serving a temporary folder on a free
/// port of 127.0.0.1, with the tests' keys (`test`/`test`), killed on drop.
pub struct S3sFs {
    pub endpoint: String,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl S3sFs {
    pub async fn start() -> Option<S3sFs> {
        let bin = std::env::var("ARCHIVER_TEST_S3S_FS").unwrap_or_else(|_| "s3s-fs".into());
        let found = std::process::Command::new(&bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            let why = format!(
                "{bin} is not installed (cargo install s3s-fs --version 0.14.1 --features binary --locked)"
            );
            assert!(std::env::var_os("CI").is_none(), "{why}; CI needs it");
            eprintln!("skipped: {why}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            // A free port: bind, note it, release it; retried if another process took it.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = tokio::process::Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", "test", "--secret-key", "test"])
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: the port was taken
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Some(S3sFs {
                        endpoint: format!("http://127.0.0.1:{port}"),
                        _child: child,
                        _dir: dir,
                    });
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let _ = child.kill().await;
        }
        panic!("{bin} did not start listening on 127.0.0.1");
    }
}

/// An S3 client for the tests' own checks (path-style, dummy keys).
pub fn client(endpoint: &str) -> Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        // moto reports a multipart object's composite CRC32 as if it were the whole object's;
        // real S3 marks it `-N` and the SDK then skips it. The tests compare bytes themselves.
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .build();
    Client::from_conf(conf)
}

pub async fn create_bucket(c: &Client, bucket: &str) {
    c.create_bucket().bucket(bucket).send().await.unwrap();
}

/// Every key in a bucket, sorted.
pub async fn keys(c: &Client, bucket: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pages = c.list_objects_v2().bucket(bucket).into_paginator().send();
    while let Some(p) = pages.next().await {
        for o in p.unwrap().contents() {
            out.push(o.key().unwrap().to_string());
        }
    }
    out.sort();
    out
}

pub async fn get(c: &Client, bucket: &str, key: &str) -> Vec<u8> {
    let o = c.get_object().bucket(bucket).key(key).send().await.unwrap();
    o.body.collect().await.unwrap().into_bytes().to_vec()
}

pub async fn put(c: &Client, bucket: &str, key: &str, body: Vec<u8>) {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .unwrap();
}

/// Multipart uploads in progress in a bucket.
pub async fn uploads(c: &Client, bucket: &str) -> Vec<String> {
    let l = c
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    l.uploads()
        .iter()
        .map(|u| u.key().unwrap_or_default().to_string())
        .collect()
}

/// Download every object under `prefix/` into `dir`, keeping the key layout (so the local
/// dataset reader reads an S3 dataset).
pub async fn download(c: &Client, bucket: &str, prefix: &str, dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let prefix = format!("{prefix}/");
    for k in keys(c, bucket).await {
        let Some(rel) = k.strip_prefix(&prefix) else {
            continue;
        };
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, get(c, bucket, &k).await).unwrap();
    }
}

/// What the proxy does to requests. Counters say what it did.
#[derive(Debug, Default)]
pub struct ProxyFaults {
    /// Every Nth request is answered 503 SlowDown without reaching S3.
    pub slow_down_every: u64,
    /// Every Nth request is answered 500 InternalError without reaching S3.
    pub internal_every: u64,
    /// Every Nth PUT with a body: half the body is sent to S3, then both connections drop.
    pub cut_put_every: u64,
    /// Answer 403 to UploadPart number 2 (a multipart upload that cannot finish).
    pub deny_part_2: bool,
    /// Like S3: a request whose `x-amz-expected-bucket-owner` differs gets 403.
    pub bucket_owner: Option<String>,
    /// Drop `If-Match` and `If-None-Match` (a store that ignores conditional writes; only for
    /// servers that do not check signatures, such as moto).
    pub drop_conditions: bool,
    /// Like S3 (moto ignores it): a CopyObject with `If-None-Match: *` onto an existing key
    /// gets 412 PreconditionFailed (the proxy HEADs the destination first).
    pub copy_if_none_match: bool,
    /// CopyObjects refused that way.
    pub copies_refused: u64,
    /// Like S3 for a caller whose `s3:ListBucket` is allowed only for prefixes under this
    /// one (`s3:prefix` condition): a GET or HEAD of a missing object gets 403 AccessDenied,
    /// not 404, and a listing whose prefix is not under it gets 403 (the proxy HEADs the key
    /// first).
    pub list_only_under: Option<String>,
    /// Like S3 for a role that may not delete under this key prefix: a DELETE there gets 403.
    pub deny_delete_under: Option<String>,
    /// The first attempt of every PUT to a key ending with this: forwarded whole, then the
    /// client's connection is dropped before the reply (a reply lost on the way back: the
    /// write landed, and the SDK retries it).
    pub lose_first_replies: Option<String>,
    pub replies_lost: u64,
    /// A PUT (not a copy) of a key under this prefix gets 403.
    pub deny_put_under: Option<String>,
    pub denied_deletes: u64,
    /// Requests answered 403 that way: missing objects, listings.
    pub denied_missing: u64,
    pub denied_listings: u64,
    pub requests: u64,
    pub puts: u64,
    pub slowed: u64,
    pub internal: u64,
    pub cut: u64,
    /// Requests seen: method, path and query, and the `x-amz-*` and `if-*` headers (names and
    /// values).
    pub seen: Vec<Seen>,
}

/// A request the proxy saw: method, path and query, `x-amz-*` and `if-*` headers.
pub type Seen = (String, String, Vec<(String, String)>);

/// A proxy on 127.0.0.1 in front of an S3 endpoint, injecting [`ProxyFaults`].
pub struct FaultProxy {
    pub endpoint: String,
    pub faults: Arc<Mutex<ProxyFaults>>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = upstream
            .strip_prefix("http://")
            .unwrap()
            .trim_end_matches('/')
            .to_string();
        let faults = Arc::new(Mutex::new(ProxyFaults::default()));
        let f = faults.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (f, upstream) = (f.clone(), upstream.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        proxy(req, f.clone(), upstream.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        FaultProxy {
            endpoint: format!("http://{addr}"),
            faults,
        }
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, ProxyFaults> {
        self.faults.lock().unwrap()
    }
}

#[derive(Debug)]
struct Cut;
impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection cut by the fault proxy")
    }
}
impl std::error::Error for Cut {}

fn s3_error(status: u16, code: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test proxy</Message><RequestId>test</RequestId></Error>"
    );
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

enum Action {
    Forward,
    LoseReply,
    Answer(u16, &'static str),
    Cut,
}

async fn proxy(
    req: Request<Incoming>,
    faults: Arc<Mutex<ProxyFaults>>,
    upstream: String,
) -> Result<Response<Full<Bytes>>, Cut> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let action = {
        let mut f = faults.lock().unwrap();
        f.requests += 1;
        let amz: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("x-amz-") || k.as_str().starts_with("if-"))
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let owner_header = amz
            .iter()
            .find(|(k, _)| k == "x-amz-expected-bucket-owner")
            .map(|(_, v)| v.clone());
        f.seen.push((method.clone(), path.clone(), amz));
        let is_put = method == "PUT" && !req.headers().contains_key("x-amz-copy-source");
        if is_put {
            f.puts += 1;
        }
        let n = f.requests;
        let wrong_owner =
            matches!((&f.bucket_owner, &owner_header), (Some(want), Some(got)) if want != got);
        let key = path
            .trim_start_matches('/')
            .split_once('/')
            .map_or("", |(_, k)| k);
        let under = |p: &Option<String>| p.as_ref().is_some_and(|p| key.starts_with(p.as_str()));
        let denied_delete = method == "DELETE" && under(&f.deny_delete_under);
        let denied_put = is_put && under(&f.deny_put_under);
        if denied_delete {
            f.denied_deletes += 1;
        }
        let first_attempt = req
            .headers()
            .get("amz-sdk-request")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("attempt=1;") || v == "attempt=1");
        let bare = key.split('?').next().unwrap_or_default();
        let lose_reply = is_put
            && first_attempt
            && f.lose_first_replies
                .as_ref()
                .is_some_and(|suffix| bare.ends_with(suffix.as_str()));
        if lose_reply {
            f.replies_lost += 1;
            Action::LoseReply
        } else if wrong_owner
            || denied_delete
            || denied_put
            || (f.deny_part_2 && path.contains("partNumber=2"))
        {
            Action::Answer(403, "AccessDenied")
        } else if f.slow_down_every > 0 && n.is_multiple_of(f.slow_down_every) {
            f.slowed += 1;
            Action::Answer(503, "SlowDown")
        } else if f.internal_every > 0 && n.is_multiple_of(f.internal_every) {
            f.internal += 1;
            Action::Answer(500, "InternalError")
        } else if is_put && f.cut_put_every > 0 && f.puts.is_multiple_of(f.cut_put_every) {
            f.cut += 1;
            Action::Cut
        } else {
            Action::Forward
        }
    };
    let conditional_copy = method == "PUT"
        && req.headers().contains_key("x-amz-copy-source")
        && req
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v.as_bytes() == b"*");
    let scoped = faults.lock().unwrap().list_only_under.clone();
    if let (Action::Forward, Some(allowed)) = (&action, scoped) {
        if let Some(denied) = scoped_listing_denial(&method, &path, &allowed, &upstream).await {
            {
                let mut f = faults.lock().unwrap();
                match denied {
                    Denied::Missing => f.denied_missing += 1,
                    Denied::Listing => f.denied_listings += 1,
                }
            }
            let _ = req.into_body().collect().await;
            return Ok(s3_error(403, "AccessDenied"));
        }
    }
    if matches!(action, Action::Forward)
        && conditional_copy
        && faults.lock().unwrap().copy_if_none_match
    {
        let key_path = path.split('?').next().unwrap_or_default().to_string();
        if exists_upstream(&upstream, &key_path).await {
            faults.lock().unwrap().copies_refused += 1;
            let _ = req.into_body().collect().await;
            return Ok(s3_error(412, "PreconditionFailed"));
        }
    }
    match action {
        Action::Answer(status, code) => {
            let _ = req.into_body().collect().await;
            Ok(s3_error(status, code))
        }
        Action::Cut => {
            // Send the head and half the body to S3, then drop both connections: S3 must not
            // keep a partial object, and the client must retry.
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map_err(|_| Cut)?.to_bytes();
            let mut up = tokio::net::TcpStream::connect(&upstream)
                .await
                .map_err(|_| Cut)?;
            let mut head = format!("{} {} HTTP/1.1\r\n", parts.method, path);
            for (k, v) in &parts.headers {
                head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or("")));
            }
            head.push_str("\r\n");
            let _ = up.write_all(head.as_bytes()).await;
            let _ = up.write_all(&body[..body.len() / 2]).await;
            let _ = up.flush().await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            drop(up);
            Err(Cut)
        }
        Action::Forward | Action::LoseReply => {
            let lose = matches!(action, Action::LoseReply);
            let (mut parts, body) = req.into_parts();
            if faults.lock().unwrap().drop_conditions {
                parts.headers.remove("if-match");
                parts.headers.remove("if-none-match");
            }
            let body = body.collect().await.map_err(|_| Cut)?.to_bytes();
            let stream = tokio::net::TcpStream::connect(&upstream)
                .await
                .map_err(|_| Cut)?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|_| Cut)?;
            tokio::spawn(conn);
            let fwd = Request::from_parts(parts, Full::new(body));
            let resp = sender.send_request(fwd).await.map_err(|_| Cut)?;
            if lose {
                return Err(Cut);
            }
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|_| Cut)?.to_bytes();
            Ok(Response::from_parts(parts, Full::new(body)))
        }
    }
}

enum Denied {
    Missing,
    Listing,
}

/// What S3 denies a caller allowed `s3:ListBucket` only under the prefix `allowed`: a GET or
/// HEAD of a missing object (a path-style `/bucket/key`), and a listing (`/bucket?list-type=2`)
/// whose `prefix` is not under `allowed`.
async fn scoped_listing_denial(
    method: &str,
    path: &str,
    allowed: &str,
    upstream: &str,
) -> Option<Denied> {
    if method != "GET" && method != "HEAD" {
        return None;
    }
    let (key_path, query) = path.split_once('?').unwrap_or((path, ""));
    let is_object = key_path
        .trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(_, key)| !key.is_empty());
    if is_object {
        if query.contains("uploadId=") || exists_upstream(upstream, key_path).await {
            return None;
        }
        return Some(Denied::Missing);
    }
    // ListObjectsV2 (`s3:ListBucket`); not ListMultipartUploads (`?uploads`), a permission
    // of its own.
    if query
        .split('&')
        .any(|p| p == "uploads" || p.starts_with("uploads="))
        || !query
            .split('&')
            .any(|p| p == "list-type=2" || p.starts_with("prefix="))
    {
        return None;
    }
    let prefix = query
        .split('&')
        .find_map(|p| p.strip_prefix("prefix="))
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8()
                .unwrap()
                .into_owned()
        })
        .unwrap_or_default();
    (!prefix.starts_with(allowed)).then_some(Denied::Listing)
}

/// Whether the object at a path-style `path` (`/bucket/key`, percent-encoded) exists upstream.
async fn exists_upstream(upstream: &str, path: &str) -> bool {
    let path = percent_encoding::percent_decode_str(path.trim_start_matches('/'))
        .decode_utf8()
        .unwrap()
        .into_owned();
    let (bucket, key) = path.split_once('/').unwrap();
    client(&format!("http://{upstream}"))
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .is_ok()
}
