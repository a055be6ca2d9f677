//! Where the SQLite state lives for a command, and how it is kept durable.
//!
//! - **Local** (`--state PATH`): the file itself, under an OS lock on `<state>.lock`.
//! - **S3** (`--state s3://bucket/key`): for containers whose disk dies with them. The run
//!   first takes a **lease**, the object `<key>.lease`, with S3 conditional writes: created
//!   with `If-None-Match: *`, renewed and released with `If-Match` on its ETag, and taken over
//!   (again with `If-Match`) only once it has expired. Then the state object is downloaded into
//!   a private temporary folder and opened as usual. After every commit that files are
//!   published against, a consistent snapshot (`VACUUM INTO`) is uploaded **before the run goes
//!   on**, with `If-Match` on the ETag this run last wrote or read: if anyone else wrote the
//!   state meanwhile (a run that took over an expired lease), the upload fails and this run
//!   publishes nothing more. So the state in S3 is always one this run's files agree with, and a
//!   killed container's successor resumes from it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::clock::{now_ms, rfc3339};
use crate::config::{Config, S3Options, S3Url, StateLoc};
use crate::error::LockHeld;
use crate::s3::{bucket_problem, describe, put_object, status};

/// Metadata key naming the writer of a state object version (to recognise our own write when
/// a retried conditional PUT reports 412 because its first attempt already landed).
const WRITER_META: &str = "archiver-writer";

/// The state of a command that writes, opened and held.
pub struct OpenState {
    /// The SQLite file to open.
    pub path: PathBuf,
    _lock: Option<crate::lock::RunLock>,
    remote: Option<Arc<Remote>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
    _tmp: Option<TempDir>,
    /// The state opened as ours (checked and migrated); until then nothing is uploaded, so a
    /// state refused at open (foreign, corrupt, newer) stays in S3 byte for byte.
    opened: AtomicBool,
}

impl OpenState {
    /// Lock a local state, or lease and download an S3 one. `stop` is set if the lease is lost.
    pub async fn acquire(
        cfg: &Config,
        command: &str,
        s3: Option<&Client>,
        stop: Arc<AtomicBool>,
    ) -> Result<OpenState> {
        match &cfg.state {
            StateLoc::Local(path) => Ok(OpenState {
                _lock: Some(crate::lock::acquire(path, command)?),
                path: path.clone(),
                remote: None,
                renewer: None,
                _tmp: None,
                opened: AtomicBool::new(false),
            }),
            StateLoc::S3(url) => {
                let client = s3.ok_or_else(|| anyhow!("no S3 client for {url}"))?;
                let lease = Lease::acquire(client, url, &cfg.s3, command, cfg.lease_ttl).await?;
                let tmp = TempDir::new()?;
                let path = tmp.0.join("state.db");
                let remote = Remote {
                    client: client.clone(),
                    url: url.clone(),
                    opts: cfg.s3.clone(),
                    local: path.clone(),
                    etag: tokio::sync::Mutex::new(None),
                    requested: AtomicU64::new(0),
                    uploaded: AtomicU64::new(0),
                    uploads: AtomicU64::new(0),
                    writer: lease.body.writer.clone(),
                    lease: tokio::sync::Mutex::new(lease),
                    lost: AtomicBool::new(false),
                };
                remote.download().await?;
                let remote = Arc::new(remote);
                let renewer = tokio::spawn(renew(remote.clone(), cfg.lease_ttl, stop));
                Ok(OpenState {
                    path,
                    _lock: None,
                    remote: Some(remote),
                    renewer: Some(renewer),
                    _tmp: Some(tmp),
                    opened: AtomicBool::new(false),
                })
            }
        }
    }

    /// Say the state opened as a good archiver state: from now on it is uploaded at the end.
    pub fn mark_opened(&self) {
        self.opened.store(true, Ordering::SeqCst);
    }

    /// The handle a portal's work calls after each commit.
    pub fn durability(&self) -> Durability {
        Durability(self.remote.clone())
    }

    /// Make the final state durable (run history) and release the lease. A lost lease is an
    /// error here, whatever else happened.
    pub async fn finish(mut self) -> Result<()> {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        let Some(remote) = self.remote.take() else {
            return Ok(());
        };
        remote.check_lease()?;
        if self.opened.load(Ordering::SeqCst) {
            remote.upload().await?;
        }
        remote.lease.lock().await.release(&remote.client).await;
        Ok(())
    }
}

impl Drop for OpenState {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }
}

/// A read-only copy of the state for `status` and `--dry-run` (no lock, no lease).
pub struct ReadOnlyState {
    pub path: PathBuf,
    _tmp: Option<TempDir>,
}

impl ReadOnlyState {
    /// `None` when there is no state yet.
    pub async fn open(cfg: &Config, s3: Option<&Client>) -> Result<Option<ReadOnlyState>> {
        match &cfg.state {
            StateLoc::Local(p) => Ok(p.exists().then(|| ReadOnlyState {
                path: p.clone(),
                _tmp: None,
            })),
            StateLoc::S3(url) => {
                let client = s3.ok_or_else(|| anyhow!("no S3 client for {url}"))?;
                let tmp = TempDir::new()?;
                let path = tmp.0.join("state.db");
                match fetch(client, url, &cfg.s3, &path).await? {
                    Some(_) => Ok(Some(ReadOnlyState {
                        path,
                        _tmp: Some(tmp),
                    })),
                    None => Ok(None),
                }
            }
        }
    }
}

/// Called after each commit: for an S3 state, returns once a state that includes the commit
/// is in S3. For a local state there is nothing to do (the commit is already durable).
#[derive(Clone, Default)]
pub struct Durability(Option<Arc<Remote>>);

impl Durability {
    pub async fn checkpoint(&self) -> Result<()> {
        match &self.0 {
            None => Ok(()),
            Some(r) => r.checkpoint().await,
        }
    }
}

/// An S3 state being worked on.
struct Remote {
    client: Client,
    url: S3Url,
    opts: S3Options,
    local: PathBuf,
    /// ETag of the state object this run last read or wrote; `None`: there is none yet.
    etag: tokio::sync::Mutex<Option<String>>,
    /// Checkpoints asked for, and the highest one included in an upload.
    requested: AtomicU64,
    uploaded: AtomicU64,
    /// Uploads attempted: with `writer`, names each version this run writes.
    uploads: AtomicU64,
    writer: String,
    lease: tokio::sync::Mutex<Lease>,
    lost: AtomicBool,
}

impl Remote {
    async fn download(&self) -> Result<()> {
        let etag = fetch(&self.client, &self.url, &self.opts, &self.local).await?;
        match &etag {
            Some(_) => info!(state = %self.url, "state downloaded"),
            None => info!(state = %self.url, "no state in S3 yet: starting a new one"),
        }
        *self.etag.lock().await = etag;
        Ok(())
    }

    fn check_lease(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            bail!(
                "lost the lease on state {}: another run took it over; this run stopped without publishing more",
                self.url
            );
        }
        Ok(())
    }

    async fn checkpoint(&self) -> Result<()> {
        let mine = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut etag = self.etag.lock().await;
        if self.uploaded.load(Ordering::SeqCst) >= mine {
            return Ok(()); // an upload that started after our commit already carried it
        }
        let upto = self.requested.load(Ordering::SeqCst);
        self.upload_locked(&mut etag, upto).await
    }

    async fn upload(&self) -> Result<()> {
        let upto = self.requested.load(Ordering::SeqCst);
        let mut etag = self.etag.lock().await;
        self.upload_locked(&mut etag, upto).await
    }

    async fn upload_locked(&self, etag: &mut Option<String>, upto: u64) -> Result<()> {
        self.check_lease()?;
        let body = snapshot(&self.local).await?;
        let n = self.uploads.fetch_add(1, Ordering::SeqCst);
        let version = format!("{}-{upto}-{n}", self.writer);
        let key = &self.url.key;
        let put = put_object(&self.client, &self.opts, &self.url.bucket, key)
            .body(ByteStream::from(body.clone()))
            .metadata(WRITER_META, &version);
        let put = match etag.as_deref() {
            Some(e) => put.if_match(e),
            None => put.if_none_match("*"),
        };
        let new_etag = match put.send().await {
            Ok(out) => out.e_tag().map(str::to_string),
            Err(e) if matches!(status(&e), Some(412) | Some(404) | Some(409)) => {
                // Either an earlier attempt of this very PUT landed (its reply was lost), or
                // someone else wrote the state.
                match self.head().await? {
                    Some((tag, w)) if w.as_deref() == Some(version.as_str()) => Some(tag),
                    _ => {
                        self.lost.store(true, Ordering::SeqCst);
                        bail!(
                            "state {} was changed by another run since this one read it; this run stops without publishing more",
                            self.url
                        );
                    }
                }
            }
            Err(e) => bail!("uploading state {}: {}", self.url, describe(&e)),
        };
        *etag = Some(new_etag.ok_or_else(|| anyhow!("S3 returned no ETag for {}", self.url))?);
        self.uploaded.fetch_max(upto, Ordering::SeqCst);
        tracing::debug!(state = %self.url, bytes = body.len(), "state uploaded");
        Ok(())
    }

    /// ETag and writer of the state object now.
    async fn head(&self) -> Result<Option<(String, Option<String>)>> {
        match self
            .client
            .head_object()
            .bucket(&self.url.bucket)
            .key(&self.url.key)
            .set_expected_bucket_owner(self.opts.expected_bucket_owner.clone())
            .send()
            .await
        {
            Ok(h) => Ok(Some((
                h.e_tag().unwrap_or_default().to_string(),
                h.metadata().and_then(|m| m.get(WRITER_META)).cloned(),
            ))),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => bail!("HeadObject {}: {}", self.url, describe(&e)),
        }
    }
}

/// Download the state object to `to` (0600). `None` if there is none.
async fn fetch(
    client: &Client,
    url: &S3Url,
    opts: &S3Options,
    to: &Path,
) -> Result<Option<String>> {
    let got = client
        .get_object()
        .bucket(&url.bucket)
        .key(&url.key)
        .set_expected_bucket_owner(opts.expected_bucket_owner.clone())
        .send()
        .await;
    let got = match got {
        Ok(g) => g,
        Err(e) if status(&e) == Some(404) && is_no_such_key(&e) => return Ok(None),
        Err(e) => {
            let why = bucket_problem(status(&e), &url.bucket, opts).unwrap_or_else(|| describe(&e));
            bail!("state {url}: {why}");
        }
    };
    let etag = got.e_tag().map(str::to_string);
    let bytes = got
        .body
        .collect()
        .await
        .with_context(|| format!("downloading state {url}"))?
        .into_bytes();
    write_private(to, &bytes)?;
    Ok(etag)
}

fn is_no_such_key<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    e.as_service_error()
        .and_then(|s| s.code())
        .is_none_or(|c| c == "NoSuchKey")
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// A consistent copy of the state: `VACUUM INTO` reads one snapshot (every committed
/// transaction, none half-done) into a compact file.
async fn snapshot(local: &Path) -> Result<bytes::Bytes> {
    let local = local.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<bytes::Bytes> {
        let snap = local.with_extension("snapshot");
        let _ = std::fs::remove_file(&snap);
        let conn = rusqlite::Connection::open_with_flags(
            &local,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.execute("VACUUM INTO ?1", [snap.to_string_lossy()])
            .context("snapshotting the state")?;
        drop(conn);
        let bytes = std::fs::read(&snap)?;
        std::fs::remove_file(&snap).ok();
        Ok(bytes::Bytes::from(bytes))
    })
    .await
    .context("snapshot task panicked")?
}

/// Renew the lease every third of its time to live; on loss, stop the run.
async fn renew(remote: Arc<Remote>, ttl: Duration, stop: Arc<AtomicBool>) {
    let every = (ttl / 3).max(Duration::from_secs(5));
    loop {
        tokio::time::sleep(every).await;
        let mut lease = remote.lease.lock().await;
        match lease.renew(&remote.client, ttl).await {
            Ok(()) => {}
            Err(e) => {
                // Still ours until it expires: keep trying while there is time.
                if now_ms() + 5_000 < lease.body.expires_ms && !lease.taken {
                    warn!(state = %remote.url, error = %format!("{e:#}"), "renewing the state lease failed; retrying");
                    continue;
                }
                remote.lost.store(true, Ordering::SeqCst);
                stop.store(true, Ordering::SeqCst);
                warn!(state = %remote.url, error = %format!("{e:#}"), "lost the state lease: stopping");
                return;
            }
        }
    }
}

/// What the lease object says.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LeaseBody {
    holder: String,
    command: String,
    since_ms: i64,
    expires_ms: i64,
    /// This run's nonce (also the state objects' writer metadata).
    writer: String,
}

struct Lease {
    bucket: String,
    key: String,
    opts: S3Options,
    etag: String,
    body: LeaseBody,
    /// Someone else holds it now (a renewal found another ETag).
    taken: bool,
}

impl Lease {
    async fn acquire(
        client: &Client,
        state: &S3Url,
        opts: &S3Options,
        command: &str,
        ttl: Duration,
    ) -> Result<Lease> {
        let host = crate::lock::hostname();
        let now = now_ms();
        let body = LeaseBody {
            holder: format!("pid {} on {host}", std::process::id()),
            command: command.to_string(),
            since_ms: now,
            expires_ms: now + ttl.as_millis() as i64,
            writer: nonce(),
        };
        let mut lease = Lease {
            bucket: state.bucket.clone(),
            key: format!("{}.lease", state.key),
            opts: opts.clone(),
            etag: String::new(),
            body,
            taken: false,
        };
        let url = format!("s3://{}/{}", lease.bucket, lease.key);
        for _ in 0..3 {
            // Fresh: create it only if there is none.
            match lease.put(client, None).await {
                Ok(()) => return Ok(lease),
                Err(PutErr::Precondition) => {}
                Err(PutErr::Other(e)) => return Err(e.context(format!("taking the lease {url}"))),
            }
            let Some((etag, held)) = lease.read(client).await? else {
                continue; // released and deleted meanwhile: try again
            };
            if held.expires_ms > now_ms() {
                return Err(LockHeld(format!(
                    "another run holds the lease on state {}: {}, `archiver {}`, since {}, until {}",
                    state,
                    held.holder,
                    held.command,
                    rfc3339(held.since_ms),
                    rfc3339(held.expires_ms)
                ))
                .into());
            }
            if held.expires_ms > 0 {
                warn!(state = %state, holder = %held.holder, expired = %rfc3339(held.expires_ms), "taking over an expired lease");
            }
            match lease.put(client, Some(&etag)).await {
                Ok(()) => return Ok(lease),
                Err(PutErr::Precondition) => continue, // someone else took it first
                Err(PutErr::Other(e)) => return Err(e.context(format!("taking the lease {url}"))),
            }
        }
        Err(LockHeld(format!(
            "another run took the lease on state {state} at the same moment"
        ))
        .into())
    }

    async fn renew(&mut self, client: &Client, ttl: Duration) -> Result<()> {
        let etag = self.etag.clone();
        let prev = self.body.expires_ms;
        self.body.expires_ms = now_ms() + ttl.as_millis() as i64;
        match self.put(client, Some(&etag)).await {
            Ok(()) => Ok(()),
            Err(PutErr::Precondition) => {
                self.body.expires_ms = prev;
                self.taken = true;
                bail!("the lease was taken over by another run")
            }
            Err(PutErr::Other(e)) => {
                self.body.expires_ms = prev;
                Err(e)
            }
        }
    }

    /// Mark the lease released (expired now), if it is still ours.
    async fn release(&mut self, client: &Client) {
        let etag = self.etag.clone();
        self.body.expires_ms = 0;
        if let Err(PutErr::Other(e)) = self.put(client, Some(&etag)).await {
            warn!(error = %format!("{e:#}"), "releasing the state lease failed; it expires by itself");
        }
    }

    async fn put(&mut self, client: &Client, if_match: Option<&str>) -> Result<(), PutErr> {
        let json = serde_json::to_vec(&self.body).expect("lease serialises");
        let put = put_object(client, &self.opts, &self.bucket, &self.key)
            .content_type("application/json")
            .body(ByteStream::from(json));
        let put = match if_match {
            Some(e) => put.if_match(e),
            None => put.if_none_match("*"),
        };
        match put.send().await {
            Ok(out) => {
                self.etag = out.e_tag().unwrap_or_default().to_string();
                Ok(())
            }
            // 412: the condition failed; 409: a concurrent conditional write won.
            Err(e) if matches!(status(&e), Some(412) | Some(409)) => Err(PutErr::Precondition),
            Err(e) if if_match.is_some() && status(&e) == Some(404) => Err(PutErr::Precondition),
            Err(e) => Err(PutErr::Other(anyhow!(
                "{}",
                bucket_problem(status(&e), &self.bucket, &self.opts)
                    .unwrap_or_else(|| describe(&e))
            ))),
        }
    }

    async fn read(&self, client: &Client) -> Result<Option<(String, LeaseBody)>> {
        let got = client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_expected_bucket_owner(self.opts.expected_bucket_owner.clone())
            .send()
            .await;
        let got = match got {
            Ok(g) => g,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => bail!(
                "reading the lease s3://{}/{}: {}",
                self.bucket,
                self.key,
                describe(&e)
            ),
        };
        let etag = got.e_tag().unwrap_or_default().to_string();
        let bytes = got.body.collect().await?.into_bytes();
        // An unreadable lease object is treated as expired: it names no live holder.
        let body = serde_json::from_slice(&bytes).unwrap_or(LeaseBody {
            holder: "unknown".into(),
            command: "unknown".into(),
            since_ms: 0,
            expires_ms: 0,
            writer: String::new(),
        });
        Ok(Some((etag, body)))
    }
}

enum PutErr {
    Precondition,
    Other(anyhow::Error),
}

/// A value unique to this run.
fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut rnd = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut rnd);
    }
    format!(
        "{:x}-{:x}-{}",
        std::process::id(),
        t.as_nanos(),
        rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// A private temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!("archiver-state-{}", nonce()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating a temporary folder {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
