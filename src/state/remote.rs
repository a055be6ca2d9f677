//! A state kept in S3 (`--state s3://bucket/key`), for containers whose disk dies with them.
//!
//! The run first checks that the store honours conditional writes, then takes the lease (see
//! [`super::lease`]). Then the state object is downloaded into a private temporary folder and
//! opened as usual, and **claimed**: uploaded again, with `If-Match` on the ETag just read (or
//! `If-None-Match: *` for a new state), before anything else happens. An older holder still
//! alive (paused, or stuck in retries past its lease) can then no longer upload a commit: its
//! `If-Match` fails, so it never publishes against files this run's recovery is about to drop.
//! After every commit that files are
//! published against, a consistent snapshot (`VACUUM INTO`) is uploaded **before the run goes
//! on**, with `If-Match` on the ETag this run last wrote or read: if anyone else wrote the
//! state meanwhile (a run that took over an expired lease), the upload fails and this run
//! publishes nothing more. So the state in S3 is always one this run's files agree with, and a
//! killed container's successor resumes from it.
//!
//! A holder also stops on its own once its lease may have expired (within a margin of its
//! expiry, see [`super::lease::margin`]): it stages, commits and publishes nothing more, as a
//! successor may already have taken over.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use tracing::{info, warn};

use super::lease::{margin, probe_conditional_writes, Lease};
use crate::aws::{bucket_error, is_missing, put_object, AwsError};
use crate::clock::now_ms;
use crate::config::{S3Options, S3Url};

/// Metadata key naming the writer of a state object version (to recognise our own write when
/// a retried conditional PUT reports 412 because its first attempt already landed).
const WRITER_META: &str = "archiver-writer";

/// An S3 state being worked on.
pub(super) struct Remote {
    client: Client,
    url: S3Url,
    opts: S3Options,
    pub(super) local: PathBuf,
    /// ETag of the state object this run last read or wrote; `None`: there is none yet.
    etag: tokio::sync::Mutex<Option<String>>,
    /// Checkpoints asked for, and the highest one included in an upload.
    requested: AtomicU64,
    uploaded: AtomicU64,
    /// Uploads attempted: with `writer`, names each version this run writes.
    uploads: AtomicU64,
    writer: String,
    lease: tokio::sync::Mutex<Lease>,
    /// When the lease expires (as last taken or renewed), and how long before that this run
    /// stops writing.
    expires_ms: AtomicI64,
    margin_ms: i64,
    /// The lease may have expired (a stop of its own, not a takeover seen).
    expired: AtomicBool,
    lost: AtomicBool,
}

impl Remote {
    /// Take the lease on the state at `url`, then download the state object to `local`.
    pub(super) async fn acquire(
        client: &Client,
        url: &S3Url,
        opts: &S3Options,
        command: &str,
        ttl: Duration,
        local: PathBuf,
    ) -> Result<Remote> {
        // Every save of a state in a locked bucket would stay (and be billed) as a version
        // until its retention ends: refused before anything is written there.
        if crate::sink::lock::detect(client, &url.bucket, opts, false)
            .await?
            .is_some()
        {
            bail!(
                "the state cannot be in bucket {}: it has Object Lock, so every save of the \
                 state would stay locked; put --state in a bucket without it",
                url.bucket
            );
        }
        probe_conditional_writes(client, url, opts).await?;
        let lease = Lease::acquire(client, url, opts, command, ttl).await?;
        let remote = Remote {
            client: client.clone(),
            url: url.clone(),
            opts: opts.clone(),
            local,
            etag: tokio::sync::Mutex::new(None),
            requested: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            uploads: AtomicU64::new(0),
            writer: lease.body.writer.clone(),
            expires_ms: AtomicI64::new(lease.body.expires_ms),
            margin_ms: margin(ttl).as_millis() as i64,
            lease: tokio::sync::Mutex::new(lease),
            expired: AtomicBool::new(false),
            lost: AtomicBool::new(false),
        };
        if let Err(e) = remote.download().await {
            remote.release().await;
            return Err(e);
        }
        Ok(remote)
    }

    /// Make this run's claim on the state visible in S3 before anything is written or deleted
    /// elsewhere: upload the state just opened, conditional on the ETag read (or on there
    /// being none). From then on an older holder's next upload fails.
    pub(super) async fn claim(&self) -> Result<()> {
        self.upload()
            .await
            .with_context(|| format!("claiming state {}", self.url))?;
        info!(state = %self.url, "state claimed");
        Ok(())
    }

    /// Make the final state durable (the run history) and release the lease. A lost lease is
    /// an error here, whatever else happened.
    pub(super) async fn finish(&self) -> Result<()> {
        self.check_lease()?;
        self.upload().await?;
        self.release().await;
        Ok(())
    }

    /// Run `f` while no renewal of the lease is in flight (renewals hold the lease's lock for
    /// the whole PUT).
    pub(super) async fn while_no_renewal(&self, f: impl FnOnce()) {
        let _lease = self.lease.lock().await;
        f();
    }

    /// Release the lease without uploading (a state refused at open stays as it is in S3).
    pub(super) async fn release(&self) {
        self.lease.lock().await.release(&self.client).await;
    }

    async fn download(&self) -> Result<()> {
        let etag = fetch(&self.client, &self.url, &self.opts, &self.local).await?;
        match &etag {
            Some(_) => info!(state = %self.url, "state downloaded"),
            None => info!(state = %self.url, "no state in S3 yet: starting a new one"),
        }
        *self.etag.lock().await = etag;
        Ok(())
    }

    /// Refuse once the lease is lost, or may have expired (within the margin): a successor
    /// may have taken over, so this run must not stage, commit or publish any more.
    pub(super) fn check_lease(&self) -> Result<()> {
        let expires = self.expires_ms.load(Ordering::SeqCst);
        if self.expired.load(Ordering::SeqCst) || now_ms() > expires - self.margin_ms {
            self.expired.store(true, Ordering::SeqCst);
            self.lost.store(true, Ordering::SeqCst);
            bail!(
                "the lease on state {} expires at {} (or has expired) without a renewal: another run may take it over, so this run stopped without publishing more",
                self.url,
                crate::clock::rfc3339(expires)
            );
        }
        if self.lost.load(Ordering::SeqCst) {
            bail!(
                "lost the lease on state {}: another run took it over; this run stopped without publishing more",
                self.url
            );
        }
        Ok(())
    }

    /// Returns once a state that includes every commit made so far is in S3.
    pub(super) async fn checkpoint(&self) -> Result<()> {
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
        let body = snapshot(&self.local).await?;
        self.check_lease()?;
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
        let new_etag = match put.send().await.map_err(AwsError::new) {
            Ok(out) => out.e_tag().map(str::to_string),
            Err(e) if matches!(e.status, Some(412) | Some(404) | Some(409)) => {
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
            Err(e) => return Err(e).with_context(|| format!("uploading state {}", self.url)),
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
            Err(e) => match AwsError::new(e) {
                e if is_missing(
                    &self.client,
                    &self.opts,
                    &self.url.bucket,
                    &self.url.key,
                    &e,
                )
                .await =>
                {
                    Ok(None)
                }
                e => Err(e).with_context(|| format!("HeadObject {}", self.url)),
            },
        }
    }
}

/// Whether the state object exists.
pub(super) async fn exists(client: &Client, url: &S3Url, opts: &S3Options) -> Result<bool> {
    let head = client
        .head_object()
        .bucket(&url.bucket)
        .key(&url.key)
        .set_expected_bucket_owner(opts.expected_bucket_owner.clone())
        .send()
        .await;
    match head.map_err(AwsError::new) {
        Ok(_) => Ok(true),
        Err(e) if is_missing(client, opts, &url.bucket, &url.key, &e).await => Ok(false),
        Err(e) => Err(bucket_error(e, &url.bucket, opts).context(format!("state {url}"))),
    }
}

/// Download the state object to `to` (0600). `None` if there is none.
pub(super) async fn fetch(
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
    let got = match got.map_err(AwsError::new) {
        Ok(g) => g,
        // No state yet (a 404, or a 403 to a caller that may list only the state's prefix).
        Err(e) if is_missing(client, opts, &url.bucket, &url.key, &e).await => return Ok(None),
        Err(e) => return Err(bucket_error(e, &url.bucket, opts).context(format!("state {url}"))),
    };
    let etag = got.e_tag().map(str::to_string);
    let bytes = got
        .body
        .collect()
        .await
        .with_context(|| format!("downloading state {url}"))?
        .into_bytes();
    crate::fsio::write_atomic(to, &bytes, 0o600)?;
    Ok(etag)
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
pub(super) async fn renew(remote: Arc<Remote>, ttl: Duration, stop: Arc<AtomicBool>) {
    let every = (ttl / 3).max(Duration::from_secs(5));
    loop {
        tokio::time::sleep(every).await;
        let mut lease = remote.lease.lock().await;
        if remote.check_lease().is_err() {
            // Woken too late (the process was paused, or renewals kept failing): the lease
            // may have expired, and a successor may hold it. Renewing now could hide that.
            stop.store(true, Ordering::SeqCst);
            warn!(state = %remote.url, "the state lease may have expired before it was renewed: stopping");
            return;
        }
        match lease.renew(&remote.client, ttl).await {
            Ok(()) => {
                remote
                    .expires_ms
                    .store(lease.body.expires_ms, Ordering::SeqCst);
            }
            Err(e) => {
                // Still ours until it expires: keep trying while there is time.
                if now_ms() + remote.margin_ms < lease.body.expires_ms && !lease.taken {
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
