//! A sink under an S3 prefix. It keeps the local sink's protocol (see the parent module): a flush's files are **staged** as
//! objects under `<prefix>/_staging/`, the state **commits** them (and, for a state in S3, is
//! uploaded before anything goes on), then each is **published** by a server-side CopyObject to
//! its final `.parquet` key and the staged object deleted. A PUT or a copy is atomic in S3: an
//! object under `sessions/` is whole and committed, or absent.
//!
//! Publishing never overwrites: the copy is conditional (`If-None-Match: *`). Every staged
//! object carries its staging key in its metadata ([`STAGED_AS`], copied with it), so a copy
//! refused because the final key exists is recognised as our own (a lost reply, or a run
//! killed between the copy and the delete) or else is a clash. Staged PUTs carry the bytes'
//! SHA-256 (`x-amz-checksum-sha256`), which S3 verifies; parts of a multipart upload carry
//! their CRC32. A file larger than the part size
//! goes up as a multipart upload, aborted if any part fails; an upload left by a killed run is
//! invisible (it is not an object) and is aborted by the next run's recovery of that portal.
//! Listing them (ListMultipartUploads) is optional: a store that lacks the call (501) or a
//! policy that denies it (403) gets one warning per run, and the bucket's lifecycle rule for
//! incomplete multipart uploads is then what removes them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use aws_sdk_s3::Client;
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::clash;
use super::layout::{DATASET, STAGING};
use super::lock::{self, Lock};
use super::manifest::checksum_base64;
use crate::aws::{bucket_error, is_missing, put_object, AwsError};
use crate::config::{S3Options, S3Url};

/// User metadata of every staged object (and so of its published copy): its staging key,
/// relative to the output.
const STAGED_AS: &str = "archiver-staged-as";

/// A dataset under `s3://bucket/prefix`.
#[derive(Clone, Debug)]
pub struct S3Sink {
    client: Client,
    url: S3Url,
    opts: S3Options,
    /// ListMultipartUploads proved unavailable (not implemented, or denied) in this run:
    /// warned once, not tried again. Shared by the clones of one run's sink.
    uploads_unlisted: Arc<AtomicBool>,
    /// The bucket's Object Lock, found by [`S3Sink::open`]: then nothing is ever deleted
    /// from it, and every object is written there once.
    lock: Option<Lock>,
    /// Where `_staging/` keys go when not under `url` (`--staging`, or the state's folder
    /// under a lock).
    staging: Option<S3Url>,
}

/// What a sink is opened for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The archive: staging and publishing, and the checks a lock needs.
    Output,
    /// Digests: small objects written once; a lock only sets their retention.
    Digests,
    /// Reading and checking only (`verify`): a lock is found, nothing else is required.
    Read,
}

impl S3Sink {
    pub fn new(client: Client, url: S3Url, opts: S3Options) -> S3Sink {
        S3Sink {
            client,
            url,
            opts,
            uploads_unlisted: Arc::new(AtomicBool::new(false)),
            lock: None,
            staging: None,
        }
    }

    /// The sink, with the bucket's Object Lock found (one GetObjectLockConfiguration) and,
    /// for the output, where its files are staged. Under a lock, the state and the staged
    /// files must be in another, unlocked bucket: every version written to a locked bucket
    /// stays (and is billed) until its retention ends. Errors are one line naming the fix.
    pub async fn open(client: Client, url: S3Url, opts: S3Options, role: Role) -> Result<S3Sink> {
        let b = url.bucket.clone();
        let found = lock::detect(&client, &b, &opts, role != Role::Read).await?;
        let lock = match (found, role) {
            (Some(l), Role::Read) => Some(Lock::of(&b, &l, &opts).unwrap_or(Lock {
                mode: "GOVERNANCE",
                retain: lock::Retain::BucketDefault("none".into()),
            })),
            (Some(l), _) => Some(Lock::of(&b, &l, &opts)?),
            (None, Role::Output) if opts.retain_for.is_some() => bail!(
                "--retain-for: bucket {b} has no Object Lock, so its objects cannot be retained; \
                 use a bucket created with Object Lock enabled, or drop --retain-for"
            ),
            (None, _) => None,
        };
        let mut staging = None;
        if role == Role::Output {
            staging = match (&lock, &opts.staging) {
                (_, Some(s)) => Some(s.clone()),
                (None, None) => None,
                (Some(_), None) => match &opts.state {
                    Some(st) if st.bucket != b => Some(S3Url {
                        bucket: st.bucket.clone(),
                        key: st
                            .key
                            .rsplit_once('/')
                            .map_or("", |(dir, _)| dir)
                            .to_string(),
                    }),
                    _ => bail!(
                        "output bucket {b} has Object Lock: files must be staged elsewhere, or \
                         each staged copy stays locked; give --staging s3://BUCKET/PREFIX in a \
                         bucket without Object Lock (or keep the state in one: --state s3://...)"
                    ),
                },
            };
            if let Some(l) = &lock {
                if let Some(s) = &staging {
                    let locked = s.bucket == b
                        || lock::detect(&client, &s.bucket, &opts, false)
                            .await?
                            .is_some();
                    if locked {
                        bail!(
                            "staging bucket {} has Object Lock: each staged copy would stay \
                             locked; stage in a bucket without it (--staging s3://BUCKET/PREFIX)",
                            s.bucket
                        );
                    }
                }
                tracing::info!("output {url} has Object Lock: {}", l.describe());
            }
        }
        Ok(S3Sink {
            lock,
            staging,
            ..S3Sink::new(client, url, opts)
        })
    }

    /// The bucket's Object Lock, if it has one.
    pub fn lock(&self) -> Option<&Lock> {
        self.lock.as_ref()
    }

    /// The place of a key: the staging place for `_staging/` keys, the output's otherwise.
    fn loc(&self, rel: &str) -> &S3Url {
        let staged = rel == STAGING || rel.starts_with(&format!("{STAGING}/"));
        match &self.staging {
            Some(s) if staged => s,
            _ => &self.url,
        }
    }

    /// The bucket and full key of a key relative to the output.
    fn at(&self, rel: &str) -> (&str, String) {
        let loc = self.loc(rel);
        (&loc.bucket, loc.join(rel))
    }

    fn key(&self, rel: &str) -> String {
        self.url.join(rel)
    }

    fn bucket(&self) -> &str {
        &self.url.bucket
    }

    /// Under a lock, nothing is deleted from the locked bucket: the refusal reads as a denied
    /// permission (see `run::recover::is_denied`), which it is.
    fn refuse_delete(&self, key: &str) -> anyhow::Error {
        anyhow::Error::new(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "not deleting s3://{}/{key}: the bucket has Object Lock, and archiver never deletes there",
                self.bucket()
            ),
        ))
    }

    /// The bucket exists, is the expected owner's, and the prefix can be written, listed and
    /// deleted from: checked before any page is fetched, with one line naming the bucket. (No
    /// HeadBucket: it needs `s3:ListBucket` without a prefix, which a policy scoped to the
    /// prefix does not grant.)
    ///
    /// The probe goes where files are staged: never into a locked bucket, where it would stay.
    /// A staging place apart from the output leaves the output to be checked by a listing.
    pub async fn check_writable(&self) -> Result<()> {
        if self.staging.is_some() {
            let b = self.bucket();
            let listed = self
                .client
                .list_objects_v2()
                .bucket(b)
                .prefix(format!("{}/", self.key(DATASET)))
                .max_keys(1)
                .set_expected_bucket_owner(self.opts.expected_bucket_owner.clone())
                .send()
                .await;
            if let Err(e) = listed {
                return Err(bucket_error(e.into(), b, &self.opts).context(format!(
                    "output: cannot list s3://{b}/{}/",
                    self.key(DATASET)
                )));
            }
        }
        let what = match self.staging {
            Some(_) => "staging",
            None => "output",
        };
        let (b, probe) = self.at(&format!("{STAGING}/.probe-{}", std::process::id()));
        let sent = self
            .put(b, &probe, Bytes::from_static(b"probe"))
            .send()
            .await
            .map_err(AwsError::new);
        if let Err(e) = sent {
            return Err(bucket_error(e, b, &self.opts).context(what));
        }
        // Our probe, and any a killed run left behind.
        let probes = match self
            .client
            .list_objects_v2()
            .bucket(b)
            .prefix(self.at(&format!("{STAGING}/.probe-")).1)
            .set_expected_bucket_owner(self.opts.expected_bucket_owner.clone())
            .send()
            .await
        {
            Ok(l) => l
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string))
                .collect::<Vec<_>>(),
            Err(e) => {
                return Err(bucket_error(e.into(), b, &self.opts)
                    .context(format!("{what}: cannot list {}/", self.at(STAGING).1)))
            }
        };
        for key in probes.iter().chain(std::iter::once(&probe)) {
            if let Err(e) = self
                .client
                .delete_object()
                .bucket(b)
                .key(key)
                .set_expected_bucket_owner(self.opts.expected_bucket_owner.clone())
                .send()
                .await
            {
                return Err(bucket_error(e.into(), b, &self.opts)
                    .context(format!("{what}: cannot delete {key}")));
            }
        }
        Ok(())
    }

    /// A PutObject with the run's encryption settings (staged and small objects are STANDARD:
    /// see `stage`).
    fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        put_object(&self.client, &self.opts, bucket, key).body(ByteStream::from(body))
    }

    /// Write a staged object (a replayed stage overwrites its own key), with its staging key
    /// in its metadata and, for a single PUT, the SHA-256 S3 checks the body against. Staged
    /// objects are STANDARD whatever `--s3-storage-class` says: they live seconds, and
    /// infrequent-access classes bill 30 days minimum.
    pub async fn stage(&self, rel: String, bytes: Vec<u8>, sha256: &str) -> Result<()> {
        let (b, key) = self.at(&rel);
        let body = Bytes::from(bytes);
        if body.len() <= self.opts.part_size {
            return self
                .put(b, &key, body)
                .metadata(STAGED_AS, &rel)
                .set_checksum_sha256(checksum_base64(sha256))
                .send()
                .await
                .map_err(AwsError::new)
                .map(|_| ())
                .with_context(|| format!("uploading s3://{b}/{key}"));
        }
        self.multipart(b, &key, &rel, body, false)
            .await
            .with_context(|| format!("uploading s3://{b}/{key} in parts"))
    }

    /// Write a small object under `rel` only if there is none (`If-None-Match: *`); one already
    /// there with the same bytes (a replayed write) is fine, one with other bytes is a clash.
    /// Under a lock it gets its retention (see [`Lock::headers`]).
    pub async fn put_new(&self, rel: String, bytes: Vec<u8>) -> Result<()> {
        let (b, key) = self.at(&rel);
        let sha = super::manifest::sha256_hex(&bytes);
        let body = Bytes::from(bytes);
        let retention = self.lock.as_ref().and_then(Lock::headers);
        let sent = self
            .put(b, &key, body.clone())
            .if_none_match("*")
            .set_checksum_sha256(checksum_base64(&sha))
            // What S3 asks of an upload under Object Lock (the value is the one above).
            .set_checksum_algorithm(self.lock.as_ref().map(|_| ChecksumAlgorithm::Sha256))
            .set_object_lock_mode(retention.as_ref().map(|r| r.0.clone()))
            .set_object_lock_retain_until_date(retention.map(|r| r.1))
            .send()
            .await
            .map_err(AwsError::new);
        match sent {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.status, Some(412) | Some(409)) => {
                if self.read(rel.clone()).await? == body {
                    Ok(())
                } else {
                    Err(clash(&format!("s3://{b}/{key}")))
                }
            }
            Err(e) => Err(e).with_context(|| format!("writing s3://{b}/{key}")),
        }
    }

    /// A multipart upload of `body` to `key`, its metadata naming `rel` as where it was staged.
    /// `fin`: the final object in a locked bucket, with its retention and storage class,
    /// completed only if the key is free (`If-None-Match: *`).
    async fn multipart(
        &self,
        bucket: &str,
        key: &str,
        rel: &str,
        body: Bytes,
        fin: bool,
    ) -> Result<()> {
        let o = &self.opts;
        let retention = fin
            .then(|| self.lock.as_ref().and_then(Lock::headers))
            .flatten();
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .metadata(STAGED_AS, rel)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .set_storage_class(
                o.storage_class
                    .as_deref()
                    .filter(|_| fin)
                    .map(StorageClass::from),
            )
            .set_object_lock_mode(retention.as_ref().map(|r| r.0.clone()))
            .set_object_lock_retain_until_date(retention.map(|r| r.1))
            .set_server_side_encryption(o.sse.as_deref().map(ServerSideEncryption::from))
            .set_ssekms_key_id(o.kms_key_id.clone())
            .set_expected_bucket_owner(o.expected_bucket_owner.clone())
            .send()
            .await
            .map_err(AwsError::new)
            .context("CreateMultipartUpload")?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| anyhow!("CreateMultipartUpload returned no upload id"))?
            .to_string();
        let result = async {
            let mut parts = Vec::new();
            let mut offset = 0;
            let mut number = 1;
            while offset < body.len() {
                let end = (offset + o.part_size).min(body.len());
                let part = self
                    .client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .body(ByteStream::from(body.slice(offset..end)))
                    .set_expected_bucket_owner(o.expected_bucket_owner.clone())
                    .send()
                    .await
                    .map_err(AwsError::new)
                    .with_context(|| format!("UploadPart {number}"))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(part.e_tag().map(str::to_string))
                        .set_checksum_crc32(part.checksum_crc32().map(str::to_string))
                        .build(),
                );
                crate::failpoint::hit("s3_after_part");
                offset = end;
                number += 1;
            }
            self.client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .set_if_none_match(fin.then(|| "*".to_string()))
                .set_expected_bucket_owner(o.expected_bucket_owner.clone())
                .send()
                .await
                .map_err(AwsError::new)
                .context("CompleteMultipartUpload")?;
            Ok::<(), anyhow::Error>(())
        }
        .await;
        if result.is_err() {
            // Best effort: a failed abort leaves an invisible upload for the next recovery.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .set_expected_bucket_owner(o.expected_bucket_owner.clone())
                .send()
                .await;
        }
        result
    }

    /// Abort the multipart uploads left under a staging prefix (by a killed run). Returns how
    /// many. A store without ListMultipartUploads (501), or a policy denying it (403), is
    /// warned about once per run and skipped: the uploads are invisible, and the bucket's
    /// lifecycle rule for incomplete multipart uploads removes them.
    pub async fn abort_uploads(&self, rel_prefix: &str) -> Result<usize> {
        if self.uploads_unlisted.load(Ordering::Relaxed) {
            return Ok(0);
        }
        let (bucket, prefix) = self.at(rel_prefix);
        let prefix = format!("{prefix}/");
        let mut aborted = 0;
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let page = match self
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(&prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .set_expected_bucket_owner(self.opts.expected_bucket_owner.clone())
                .send()
                .await
                .map_err(AwsError::new)
            {
                Ok(page) => page,
                Err(e) if matches!(e.status, Some(501) | Some(403)) => {
                    if !self.uploads_unlisted.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            bucket = %bucket,
                            error = %e,
                            "cannot list multipart uploads: those an interrupted run left are not aborted by archiver; \
                             the bucket's lifecycle rule for incomplete multipart uploads must remove them"
                        );
                    }
                    return Ok(aborted);
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("listing multipart uploads under s3://{bucket}/{prefix}")
                    })
                }
            };
            for u in page.uploads() {
                let (Some(k), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                self.client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(k)
                    .upload_id(id)
                    .set_expected_bucket_owner(self.opts.expected_bucket_owner.clone())
                    .send()
                    .await
                    .map_err(AwsError::new)
                    .with_context(|| format!("aborting upload of s3://{bucket}/{k}"))?;
                aborted += 1;
            }
            if page.is_truncated() != Some(true) {
                return Ok(aborted);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
        }
    }

    /// Copy a committed staged object to its final key, never overwriting, then delete the
    /// staged one. Idempotent: a file already published (staged copy gone, or our own copy
    /// under the final key) is left as it is.
    pub async fn publish(&self, staging: String, rel: String) -> Result<()> {
        match self.lock {
            Some(_) => self.write_final(&staging, &rel).await?,
            None => self.copy(&staging, &rel).await?,
        }
        crate::failpoint::hit("s3_after_copy");
        self.delete(staging).await
    }

    /// Under a lock, a committed staged file is read from the staging bucket and written to
    /// its final key directly: one PutObject, only if the key is free (`If-None-Match: *`),
    /// with its SHA-256 (which S3 checks and stores) and its retention: the object's one
    /// version. (CopyObject would let S3 compute the checksum instead of checking it, and not
    /// every S3 honours `If-None-Match` on a copy.) A file over the part size goes up in
    /// parts, completed only if the key is free. Idempotent like [`S3Sink::copy`].
    async fn write_final(&self, staging: &str, rel: &str) -> Result<()> {
        let (src, from) = self.at(staging);
        let to = self.key(rel);
        let b = self.bucket();
        let got = self
            .client
            .get_object()
            .bucket(src)
            .key(&from)
            .set_expected_bucket_owner(self.opts.expected_bucket_owner.clone())
            .send()
            .await
            .map_err(AwsError::new);
        let body = match got {
            Ok(got) => got
                .body
                .collect()
                .await
                .with_context(|| format!("reading s3://{src}/{from}"))?
                .into_bytes(),
            Err(e) if matches!(e.status, Some(404) | Some(403)) && self.exists(b, &to).await? => {
                return Ok(()) // published, then the staged copy deleted
            }
            Err(e) if e.status == Some(404) => bail!(
                "committed file s3://{b}/{to} is missing from staging (s3://{src}/{from}); the output was changed outside archiver"
            ),
            Err(e) => return Err(e).with_context(|| format!("reading s3://{src}/{from}")),
        };
        let written = if body.len() <= self.opts.part_size {
            let sha = super::manifest::sha256_hex(&body);
            let retention = self.lock.as_ref().and_then(Lock::headers);
            self.put(b, &to, body)
                .metadata(STAGED_AS, staging)
                .if_none_match("*")
                .set_checksum_sha256(checksum_base64(&sha))
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .set_storage_class(self.opts.storage_class.as_deref().map(StorageClass::from))
                .set_object_lock_mode(retention.as_ref().map(|r| r.0.clone()))
                .set_object_lock_retain_until_date(retention.map(|r| r.1))
                .send()
                .await
                .map(drop)
                .map_err(|e| anyhow::Error::new(AwsError::new(e)))
        } else {
            self.multipart(b, &to, staging, body, true).await
        };
        let Err(e) = written else {
            return Ok(());
        };
        let taken = e.chain().any(|c| {
            c.downcast_ref::<AwsError>()
                .is_some_and(|a| matches!(a.status, Some(412) | Some(409)))
        });
        if !taken {
            return Err(e)
                .with_context(|| format!("publishing s3://{src}/{from} as s3://{b}/{to}"));
        }
        match self.staged_as(&to).await? {
            Some(s) if s == staging => Ok(()), // our own write: a lost reply or a crash
            _ => Err(clash(&format!("s3://{b}/{to}"))),
        }
    }

    async fn copy(&self, staging: &str, rel: &str) -> Result<()> {
        let ((src, from), to) = (self.at(staging), self.key(rel));
        let o = &self.opts;
        let copied = self
            .client
            .copy_object()
            .bucket(self.bucket())
            .key(&to)
            .copy_source(format!("{src}/{}", encode_key(&from)))
            .set_server_side_encryption(o.sse.as_deref().map(ServerSideEncryption::from))
            .set_ssekms_key_id(o.kms_key_id.clone())
            .set_storage_class(o.storage_class.as_deref().map(StorageClass::from))
            .set_expected_bucket_owner(o.expected_bucket_owner.clone())
            .set_expected_source_bucket_owner(o.expected_bucket_owner.clone())
            .if_none_match("*")
            .send()
            .await;
        match copied.map_err(AwsError::new) {
            Ok(_) => Ok(()),
            // The final key exists (409: a conflicting conditional write in flight).
            Err(e) if matches!(e.status, Some(412) | Some(409)) => {
                match self.staged_as(&to).await? {
                    Some(s) if s == staging => Ok(()), // our own copy: a lost reply or a crash
                    _ => Err(clash(&format!("s3://{}/{to}", self.bucket()))),
                }
            }
            Err(e) if e.status == Some(404) && self.exists(self.bucket(), &to).await? => Ok(()),
            Err(e) if e.status == Some(404) => bail!(
                "committed file s3://{}/{to} is missing from staging (s3://{src}/{from}); the output was changed outside archiver",
                self.bucket(),
            ),
            Err(e) => Err(e).with_context(|| {
                format!("publishing s3://{src}/{from} as s3://{}/{to}", self.bucket())
            }),
        }
    }

    /// Whether a key (relative to the output) exists.
    pub async fn exists_rel(&self, rel: &str) -> Result<bool> {
        let (b, key) = self.at(rel);
        self.exists(b, &key).await
    }

    /// The staging key an object was published from (its [`STAGED_AS`] metadata); `None` if
    /// it has none.
    async fn staged_as(&self, key: &str) -> Result<Option<String>> {
        let head = self
            .client
            .head_object()
            .bucket(self.bucket())
            .key(key)
            .set_expected_bucket_owner(self.opts.expected_bucket_owner.clone())
            .send()
            .await
            .map_err(AwsError::new)
            .with_context(|| format!("HeadObject s3://{}/{key}", self.bucket()))?;
        Ok(head.metadata().and_then(|m| m.get(STAGED_AS)).cloned())
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool> {
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .set_expected_bucket_owner(self.opts.expected_bucket_owner.clone())
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match AwsError::new(e) {
                e if is_missing(&self.client, &self.opts, bucket, key, &e).await => Ok(false),
                e => Err(e).with_context(|| format!("HeadObject s3://{bucket}/{key}")),
            },
        }
    }

    /// Keys (relative to the output) under a relative prefix, sorted.
    async fn list(&self, rel_prefix: &str) -> Result<Vec<String>> {
        let loc = self.loc(rel_prefix);
        let (bucket, prefix) = (&loc.bucket, format!("{}/", loc.join(rel_prefix)));
        let root = loc.join("");
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(&prefix)
            .set_expected_bucket_owner(self.opts.expected_bucket_owner.clone())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page
                .map_err(AwsError::new)
                .with_context(|| format!("listing s3://{bucket}/{prefix}"))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    let rel = if root.is_empty() {
                        k
                    } else {
                        k.strip_prefix(&root).unwrap_or(k)
                    };
                    out.push(rel.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The names of the "folders" directly under a relative prefix (a delimited listing: one
    /// call per 1000 folders, whatever the number of keys below them), sorted.
    pub async fn folders(&self, rel_prefix: &str) -> Result<Vec<String>> {
        let prefix = format!("{}/", self.key(rel_prefix));
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(&prefix)
            .delimiter("/")
            .set_expected_bucket_owner(self.opts.expected_bucket_owner.clone())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page
                .map_err(AwsError::new)
                .with_context(|| format!("listing s3://{}/{prefix}", self.bucket()))?;
            for p in page.common_prefixes() {
                let name = p
                    .prefix()
                    .and_then(|k| k.strip_prefix(&prefix))
                    .map(|k| k.trim_end_matches('/'));
                if let Some(name) = name.filter(|n| !n.is_empty()) {
                    out.push(name.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every key under a prefix, sorted.
    pub async fn list_keys(&self, rel_prefix: String) -> Result<Vec<String>> {
        self.list(&rel_prefix).await
    }

    /// Delete an object (no error if it is gone).
    /// Never in a locked bucket: refused (see [`S3Sink::refuse_delete`]).
    pub async fn delete(&self, rel: String) -> Result<()> {
        let (b, key) = self.at(&rel);
        if self.lock.is_some() && b == self.bucket() {
            return Err(self.refuse_delete(&key));
        }
        self.client
            .delete_object()
            .bucket(b)
            .key(&key)
            .set_expected_bucket_owner(self.opts.expected_bucket_owner.clone())
            .send()
            .await
            .map_err(AwsError::new)
            .with_context(|| format!("deleting s3://{b}/{key}"))?;
        Ok(())
    }

    /// Delete markers that hide an object version under these prefixes (relative to the
    /// output): `(key, the marker's version id)`, sorted. ListObjectVersions, one call per
    /// 1000 versions and markers.
    pub async fn hidden(&self, rel_prefixes: &[&str]) -> Result<Vec<(String, String)>> {
        let b = self.bucket();
        let root = self.key("");
        let mut out = Vec::new();
        for rel in rel_prefixes {
            let prefix = format!("{}/", self.key(rel));
            let (mut kept, mut markers) = (std::collections::HashSet::new(), Vec::new());
            let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
            loop {
                let page = self
                    .client
                    .list_object_versions()
                    .bucket(b)
                    .prefix(&prefix)
                    .set_key_marker(key_marker.take())
                    .set_version_id_marker(version_marker.take())
                    .set_expected_bucket_owner(self.opts.expected_bucket_owner.clone())
                    .send()
                    .await
                    .map_err(AwsError::new)
                    .with_context(|| format!("listing the versions under s3://{b}/{prefix}"))?;
                for v in page.versions() {
                    kept.extend(v.key().map(str::to_string));
                }
                for m in page.delete_markers() {
                    if let (Some(k), Some(id), Some(true)) =
                        (m.key(), m.version_id(), m.is_latest())
                    {
                        markers.push((k.to_string(), id.to_string()));
                    }
                }
                if page.is_truncated() != Some(true) {
                    break;
                }
                key_marker = page.next_key_marker().map(str::to_string);
                version_marker = page.next_version_id_marker().map(str::to_string);
            }
            for (k, id) in markers {
                if kept.contains(&k) {
                    let rel = if root.is_empty() {
                        &k
                    } else {
                        k.strip_prefix(&root).unwrap_or(&k)
                    };
                    out.push((rel.to_string(), id));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Remove a delete marker (the one delete archiver sends to a locked bucket: it deletes
    /// no data, it makes the version under it current again).
    pub async fn remove_marker(&self, rel: &str, version_id: &str) -> Result<()> {
        let key = self.key(rel);
        self.client
            .delete_object()
            .bucket(self.bucket())
            .key(&key)
            .version_id(version_id)
            .set_expected_bucket_owner(self.opts.expected_bucket_owner.clone())
            .send()
            .await
            .map_err(AwsError::new)
            .with_context(|| {
                format!(
                    "removing the delete marker over s3://{}/{key} (needs s3:DeleteObjectVersion)",
                    self.bucket()
                )
            })?;
        Ok(())
    }

    pub async fn delete_all(&self, keys: Vec<String>) -> Result<()> {
        for k in keys {
            self.delete(k).await?;
        }
        Ok(())
    }

    /// Publish a compaction's file, then delete the files it replaces: readers can see both
    /// for the time between the copy and the last delete, which is returned.
    pub async fn replace(
        &self,
        staging: String,
        rel: String,
        replaced: Vec<String>,
    ) -> Result<Duration> {
        if let Some(k) = replaced.first().filter(|_| self.lock.is_some()) {
            return Err(self.refuse_delete(&self.key(k)));
        }
        self.copy(&staging, &rel).await?;
        let visible = Instant::now();
        crate::failpoint::hit("compact_mid_replace");
        for k in replaced {
            self.delete(k).await?;
        }
        let window = visible.elapsed();
        self.delete(staging).await?;
        Ok(window)
    }

    /// `(date, keys)` of one portal's published files, sorted.
    pub async fn partitions(&self, rel_prefix: &str) -> Result<Vec<(String, Vec<String>)>> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for k in self.list(rel_prefix).await? {
            if !k.ends_with(".parquet") {
                continue;
            }
            let Some(date) = k.split('/').find_map(|seg| seg.strip_prefix("start_date=")) else {
                continue;
            };
            match out.last_mut() {
                Some((d, keys)) if d == date => keys.push(k.clone()),
                _ => out.push((date.to_string(), vec![k.clone()])),
            }
        }
        Ok(out)
    }

    pub async fn read(&self, rel: String) -> Result<Vec<u8>> {
        let (b, key) = self.at(&rel);
        let got = self
            .client
            .get_object()
            .bucket(b)
            .key(&key)
            .set_expected_bucket_owner(self.opts.expected_bucket_owner.clone())
            .send()
            .await
            .map_err(AwsError::new)
            .with_context(|| format!("reading s3://{b}/{key}"))?;
        let body = got
            .body
            .collect()
            .await
            .with_context(|| format!("reading s3://{b}/{key}"))?;
        Ok(body.into_bytes().to_vec())
    }
}

/// `x-amz-copy-source` encoding: everything but unreserved characters and `/`.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Percent-encode a key for `x-amz-copy-source`.
fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, COPY_SOURCE).to_string()
}

/// Where the dataset's published files start, for messages.
pub fn dataset_url(url: &S3Url) -> String {
    format!("s3://{}/{}", url.bucket, url.join(DATASET))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_are_percent_encoded_but_keep_slashes() {
        assert_eq!(
            encode_key("p/sessions/portal_id=a/start_date=2026-01-01/x.parquet"),
            "p/sessions/portal_id%3Da/start_date%3D2026-01-01/x.parquet"
        );
    }
}
