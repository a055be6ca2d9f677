//! S3 Object Lock on an output bucket: found at the start of every command that opens the
//! output (GetObjectLockConfiguration), and the retention each object written there gets.
//!
//! Under a lock every version is kept until its retain-until date, and a delete only adds a
//! delete marker. So archiver writes each final object exactly once (`If-None-Match: *`, with
//! its SHA-256), stages files in another, unlocked bucket, and never sends a delete there (see
//! [`super::s3`]). The retention is the bucket's default rule, which S3 applies itself (no
//! header, so no `s3:PutObjectRetention`), or `--retain-for` from each write, sent with it.

use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{ObjectLockEnabled, ObjectLockMode};
use aws_sdk_s3::Client;

use crate::aws::{bucket_error, AwsError};
use crate::cli::LockMode;
use crate::config::S3Options;

/// What a locked bucket's objects get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    /// `GOVERNANCE` or `COMPLIANCE`.
    pub mode: &'static str,
    pub retain: Retain,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retain {
    /// The bucket's default retention rule, as it reads: `1 day`, `7 years`.
    BucketDefault(String),
    /// `--retain-for`: from each write.
    Explicit(Duration),
}

/// A bucket's Object Lock configuration, as far as archiver needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketLock {
    /// The default rule's mode and period, if the bucket has one.
    pub default: Option<(&'static str, String)>,
}

impl Lock {
    /// The retention of objects written to a bucket with `bucket`'s configuration, given
    /// `--retain-for` and `--lock-mode`; an error (one line) for a locked bucket that would
    /// leave objects without retention.
    pub fn of(bucket: &str, lock: &BucketLock, opts: &S3Options) -> Result<Lock> {
        match (opts.retain_for, &lock.default) {
            (Some(d), default) => Ok(Lock {
                mode: match (opts.lock_mode, default) {
                    (Some(m), _) => m.as_s3(),
                    (None, Some((mode, _))) => mode,
                    (None, None) => LockMode::Governance.as_s3(),
                },
                retain: Retain::Explicit(d),
            }),
            (None, Some((mode, period))) => Ok(Lock {
                mode,
                retain: Retain::BucketDefault(period.clone()),
            }),
            (None, None) => bail!(
                "bucket {bucket} has Object Lock but no default retention: archived objects \
                 would not be locked; give --retain-for (e.g. --retain-for 7y), or set a \
                 default retention on the bucket"
            ),
        }
    }

    /// The mode and retain-until date to send with an object written now, when archiver sets
    /// them (`--retain-for`); `None` when the bucket's default applies.
    pub fn headers(&self) -> Option<(ObjectLockMode, DateTime)> {
        let Retain::Explicit(d) = self.retain else {
            return None;
        };
        let until = SystemTime::now() + d;
        Some((ObjectLockMode::from(self.mode), DateTime::from(until)))
    }

    /// For the line a command starts with.
    pub fn describe(&self) -> String {
        let mode = self.mode.to_ascii_lowercase();
        match &self.retain {
            Retain::BucketDefault(p) => format!(
                "each object is kept {p} after it is written ({mode} mode, the bucket's default retention)"
            ),
            Retain::Explicit(d) => format!(
                "each object is kept {} after it is written ({mode} mode, --retain-for)",
                period(*d)
            ),
        }
    }
}

/// `--retain-for` as people write it: `7 years` (of 365.25 days, humantime's `y`), `400 days`.
fn period(d: Duration) -> String {
    let plural = |n: u64, unit: &str| match n {
        1 => format!("1 {unit}"),
        n => format!("{n} {unit}s"),
    };
    match d.as_secs() {
        s if s % 31_557_600 == 0 => plural(s / 31_557_600, "year"),
        s if s % 86_400 == 0 => plural(s / 86_400, "day"),
        _ => humantime::format_duration(d).to_string(),
    }
}

/// The bucket's Object Lock configuration: `None` if it has none. A store without the call
/// (501, 405) has none; a policy that denies it (403) is taken as none, so a role without
/// `s3:GetBucketObjectLockConfiguration` works as before on unlocked buckets (`warn`: with a
/// warning, for the output, where a lock changes how archiver writes).
pub async fn detect(
    client: &Client,
    bucket: &str,
    opts: &S3Options,
    warn: bool,
) -> Result<Option<BucketLock>> {
    let got = client
        .get_object_lock_configuration()
        .bucket(bucket)
        .set_expected_bucket_owner(opts.expected_bucket_owner.clone())
        .send()
        .await
        .map_err(AwsError::new);
    let got = match got {
        Ok(got) => got,
        Err(e)
            if matches!(e.status, Some(404) | Some(501) | Some(405))
                && e.code.as_deref() != Some("NoSuchBucket") =>
        {
            return Ok(None)
        }
        Err(e) if e.status == Some(403) && !warn => return Ok(None),
        Err(e) if e.status == Some(403) => {
            tracing::warn!(
                bucket,
                "cannot read the bucket's Object Lock configuration (s3:GetBucketObjectLockConfiguration denied): taken as unlocked"
            );
            return Ok(None);
        }
        Err(e) => return Err(bucket_error(e, bucket, opts)),
    };
    let Some(conf) = got.object_lock_configuration() else {
        return Ok(None);
    };
    if conf.object_lock_enabled() != Some(&ObjectLockEnabled::Enabled) {
        return Ok(None);
    }
    let default = conf
        .rule()
        .and_then(|r| r.default_retention())
        .and_then(|d| {
            let mode = match d.mode()?.as_str() {
                "COMPLIANCE" => "COMPLIANCE",
                _ => "GOVERNANCE",
            };
            let period = match (d.days().filter(|n| *n > 0), d.years().filter(|n| *n > 0)) {
                (Some(1), _) => "1 day".to_string(),
                (Some(n), _) => format!("{n} days"),
                (None, Some(1)) => "1 year".to_string(),
                (None, Some(n)) => format!("{n} years"),
                (None, None) => return None,
            };
            Some((mode, period))
        });
    Ok(Some(BucketLock { default }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(retain_for: Option<u64>, mode: Option<LockMode>) -> S3Options {
        S3Options {
            retain_for: retain_for.map(|d| Duration::from_secs(d * 86_400)),
            lock_mode: mode,
            ..S3Options::default()
        }
    }

    #[test]
    fn retention_comes_from_the_flags_else_the_bucket_default() {
        let default = BucketLock {
            default: Some(("COMPLIANCE", "1 day".into())),
        };
        let none = BucketLock { default: None };
        let l = Lock::of("b", &default, &opts(None, None)).unwrap();
        assert_eq!(l.mode, "COMPLIANCE");
        assert!(
            l.headers().is_none(),
            "the bucket's default needs no header"
        );
        let l = Lock::of("b", &default, &opts(Some(400), None)).unwrap();
        assert_eq!(l.mode, "COMPLIANCE", "the bucket's mode unless told");
        let (mode, until) = l.headers().unwrap();
        assert_eq!(mode, ObjectLockMode::Compliance);
        let days = (until.secs() - DateTime::from(SystemTime::now()).secs()) / 86_400;
        assert!((399..=400).contains(&days), "{days}");
        let l = Lock::of("b", &none, &opts(Some(2), Some(LockMode::Governance))).unwrap();
        assert_eq!(l.mode, "GOVERNANCE");
        assert_eq!(
            Lock::of("b", &none, &opts(Some(2), None)).unwrap().mode,
            "GOVERNANCE"
        );
        let seven = Lock {
            mode: "COMPLIANCE",
            retain: Retain::Explicit(humantime::parse_duration("7y").unwrap()),
        };
        assert!(
            seven.describe().contains("kept 7 years after"),
            "{}",
            seven.describe()
        );
        assert!(
            l.describe().contains("kept 2 days after"),
            "{}",
            l.describe()
        );
        let e = Lock::of("b", &none, &opts(None, None)).unwrap_err();
        assert!(e.to_string().contains("no default retention"), "{e}");
    }
}
