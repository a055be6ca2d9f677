//! The lease on a state kept in S3: the object `<key>.lease`, taken with S3 conditional
//! writes. Created with `If-None-Match: *`, renewed and released with `If-Match` on its ETag,
//! and taken over (again with `If-Match`) only once it has expired, so that two runs never
//! both hold it.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::aws::{bucket_error, is_missing, put_object, AwsError};
use crate::clock::{now_ms, rfc3339};
use crate::config::{S3Options, S3Url};
use crate::error::LockHeld;

/// What the lease object says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct LeaseBody {
    holder: String,
    command: String,
    since_ms: i64,
    pub(super) expires_ms: i64,
    /// This run's nonce (also the state objects' writer metadata).
    pub(super) writer: String,
}

pub(super) struct Lease {
    bucket: String,
    key: String,
    opts: S3Options,
    etag: String,
    pub(super) body: LeaseBody,
    /// Someone else holds it now (a renewal found another ETag).
    pub(super) taken: bool,
}

impl Lease {
    pub(super) async fn acquire(
        client: &Client,
        state: &S3Url,
        opts: &S3Options,
        command: &str,
        ttl: Duration,
    ) -> Result<Lease> {
        let host = super::lock::hostname();
        let now = now_ms();
        let body = LeaseBody {
            holder: format!("pid {} on {host}", std::process::id()),
            command: command.to_string(),
            since_ms: now,
            expires_ms: now + ttl.as_millis() as i64,
            writer: crate::ids::nonce(),
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

    pub(super) async fn renew(&mut self, client: &Client, ttl: Duration) -> Result<()> {
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
    pub(super) async fn release(&mut self, client: &Client) {
        let etag = self.etag.clone();
        self.body.expires_ms = 0;
        if let Err(PutErr::Other(e)) = self.put(client, Some(&etag)).await {
            warn!(error = %format!("{e:#}"), "releasing the state lease failed; it expires by itself");
        }
    }

    /// Write the lease with its condition. A failed condition is checked against the object:
    /// it may be this run's own write, whose reply was lost (the SDK then retried it and the
    /// retry found the ETag changed), or a renewal cancelled in flight that landed all the
    /// same. The writer nonce tells: an object this run wrote is still its lease. If it is
    /// the write just made, that is success; if an earlier one, the write is made again on its
    /// ETag. Only an object of another writer is a failed condition.
    async fn put(&mut self, client: &Client, if_match: Option<&str>) -> Result<(), PutErr> {
        let mut if_match = if_match.map(str::to_string);
        for _ in 0..3 {
            match self.put_once(client, if_match.as_deref()).await {
                Err(PutErr::Precondition) => {}
                done => return done,
            }
            let found = self.read(client).await.map_err(PutErr::Other)?;
            match found {
                Some((etag, body)) if body == self.body => {
                    self.etag = etag;
                    return Ok(());
                }
                Some((etag, body)) if body.writer == self.body.writer => {
                    warn!(lease = %self.key, "an earlier write of this run's lease landed unseen; writing again on it");
                    if_match = Some(etag);
                }
                _ => return Err(PutErr::Precondition),
            }
        }
        Err(PutErr::Precondition)
    }

    async fn put_once(&mut self, client: &Client, if_match: Option<&str>) -> Result<(), PutErr> {
        let json = serde_json::to_vec(&self.body).expect("lease serialises");
        let put = put_object(client, &self.opts, &self.bucket, &self.key)
            .content_type("application/json")
            .body(ByteStream::from(json));
        let put = match if_match {
            Some(e) => put.if_match(e),
            None => put.if_none_match("*"),
        };
        match put.send().await.map_err(AwsError::new) {
            Ok(out) => {
                self.etag = out.e_tag().unwrap_or_default().to_string();
                Ok(())
            }
            // 412: the condition failed; 409: a concurrent conditional write won.
            Err(e) if matches!(e.status, Some(412) | Some(409)) => Err(PutErr::Precondition),
            Err(e) if if_match.is_some() && e.status == Some(404) => Err(PutErr::Precondition),
            Err(e) => Err(PutErr::Other(bucket_error(e, &self.bucket, &self.opts))),
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
        let got = match got.map_err(AwsError::new) {
            Ok(g) => g,
            Err(e) if is_missing(client, &self.opts, &self.bucket, &self.key, &e).await => {
                return Ok(None)
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("reading the lease s3://{}/{}", self.bucket, self.key)
                })
            }
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

/// How long before its lease's expiry a holder stops committing and publishing: a sixth of
/// the time to live, at least 5 s (room for a renewal's latency and some clock skew).
pub(super) fn margin(ttl: Duration) -> Duration {
    (ttl / 6).max(Duration::from_secs(5))
}

/// Check once, before the lease is taken, that the store of `state` honours the conditional
/// writes the lease and the state rely on: a probe object is created with `If-None-Match: *`,
/// which must then fail (412) a second time, as must a write with a wrong `If-Match`. A store
/// that ignores them (some S3-compatible servers do) is refused: two runs could both believe
/// they hold the lease, and write the same sessions twice or lose some.
pub(super) async fn probe_conditional_writes(
    client: &Client,
    state: &S3Url,
    opts: &S3Options,
) -> Result<()> {
    let bucket = &state.bucket;
    let key = format!("{}.probe-{}", state.key, crate::ids::nonce());
    let put = |cond: Cond| {
        let p = put_object(client, opts, bucket, &key)
            .content_type("text/plain")
            .body(ByteStream::from_static(b"archiver conditional-write probe"));
        let p = match cond {
            Cond::NoneMatch => p.if_none_match("*"),
            Cond::Match(e) => p.if_match(e),
        };
        async move { p.send().await.map_err(AwsError::new) }
    };
    let url = format!("s3://{bucket}/{key}");
    // Created (a 412 here: a retried first attempt of this very PUT landed).
    match put(Cond::NoneMatch).await {
        Ok(_) => {}
        Err(e) if e.status == Some(412) => {}
        Err(e) => {
            return Err(bucket_error(e, bucket, opts)
                .context(format!("state {state}: writing the probe object {url}")))
        }
    }
    let ignored = async {
        let mut ignored = Vec::new();
        match put(Cond::NoneMatch).await {
            Err(e) if e.status == Some(412) => {}
            Ok(_) => ignored.push("If-None-Match: * replaced an existing object"),
            Err(e) => {
                return Err(bucket_error(e, bucket, opts).context(format!(
                    "state {state}: probing conditional writes on {url}"
                )))
            }
        }
        match put(Cond::Match("\"00000000000000000000000000000000\"")).await {
            Err(e) if e.status == Some(412) => {}
            Ok(_) => ignored.push("a wrong If-Match did not stop a write"),
            Err(e) => {
                return Err(bucket_error(e, bucket, opts).context(format!(
                    "state {state}: probing conditional writes on {url}"
                )))
            }
        }
        Ok(ignored)
    }
    .await;
    let deleted = client
        .delete_object()
        .bucket(bucket)
        .key(&key)
        .set_expected_bucket_owner(opts.expected_bucket_owner.clone())
        .send()
        .await;
    if let Err(e) = deleted {
        warn!(error = %AwsError::new(e), object = %url, "deleting the conditional-write probe failed");
    }
    let ignored = ignored?;
    if !ignored.is_empty() {
        bail!(
            "the S3 store of bucket {bucket} ignores conditional writes ({}): the state's lease \
             cannot be kept safely there, so it is not used. Keep the state in a store that \
             honours If-None-Match and If-Match on PutObject (see docs/operations.md)",
            ignored.join("; ")
        );
    }
    Ok(())
}

enum Cond<'a> {
    NoneMatch,
    Match(&'a str),
}

#[cfg(test)]
mod tests {
    use super::margin;
    use std::time::Duration;

    #[test]
    fn the_margin_is_a_sixth_of_the_ttl_and_at_least_5_s() {
        assert_eq!(margin(Duration::from_secs(600)), Duration::from_secs(100));
        assert_eq!(margin(Duration::from_secs(30)), Duration::from_secs(5));
        assert_eq!(margin(Duration::from_secs(6)), Duration::from_secs(5));
    }
}
