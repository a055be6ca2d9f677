//! Flags turned once into validated values: portal ids checked locally (the SDK does not),
//! the output URI parsed into a [`Output`] enum.

use std::path::PathBuf;

use crate::cli::GlobalArgs;
use crate::error::UsageError;
use crate::model::PortalId;

/// An S3 location: a bucket and a key (an object's key, or a prefix without trailing `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub key: String,
}

impl S3Url {
    /// `s3://bucket[/key]`; the bucket is checked against S3's naming rules.
    pub fn parse(uri: &str, what: &str) -> Result<S3Url, UsageError> {
        let rest = uri.strip_prefix("s3://").ok_or_else(|| {
            UsageError(format!("invalid {what} {uri:?}: expected s3://bucket/key"))
        })?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !ok {
            return Err(UsageError(format!(
                "invalid {what} {uri:?}: {bucket:?} is not a valid S3 bucket name"
            )));
        }
        let key = key.trim_end_matches('/');
        if key.split('/').any(|p| p == "." || p == "..") || key.contains("//") {
            return Err(UsageError(format!(
                "invalid {what} {uri:?}: the key must not contain empty, . or .. segments"
            )));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// The full key of `rel` under this prefix.
    pub fn join(&self, rel: &str) -> String {
        if self.key.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.key)
        }
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// `--digests`: a place like `--output`, but never the dataset itself (`sessions/` of the
/// output, or inside it), where readers would see the digests as data.
fn parse_digests(uri: &str, output: &Output) -> Result<Output, UsageError> {
    let d = Output::parse(uri).map_err(|e| UsageError(e.0.replacen("--output", "--digests", 1)))?;
    let inside = match (&d, output) {
        (Output::Local(d), Output::Local(o)) => {
            let dataset = o.join(crate::sink::DATASET);
            let norm = |p: &std::path::Path| -> Vec<std::ffi::OsString> {
                p.components()
                    .filter(|c| !matches!(c, std::path::Component::CurDir))
                    .map(|c| c.as_os_str().to_owned())
                    .collect()
            };
            norm(d).starts_with(&norm(&dataset))
        }
        (Output::S3(d), Output::S3(o)) => {
            let dataset = o.join(crate::sink::DATASET);
            d.bucket == o.bucket && (d.key == dataset || d.key.starts_with(&format!("{dataset}/")))
        }
        _ => false,
    };
    if inside {
        return Err(UsageError(format!(
            "invalid --digests {uri:?}: it is inside the output's {}/ (the dataset); use the \
             output itself, or better a place apart from it",
            crate::sink::DATASET
        )));
    }
    Ok(d)
}

/// Where the dataset goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Local(PathBuf),
    S3(S3Url),
}

impl Output {
    pub fn parse(uri: &str) -> Result<Output, UsageError> {
        if uri.is_empty() {
            return Err(UsageError("--output is empty".into()));
        }
        if let Some(rest) = uri.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(UsageError(format!(
                    "invalid --output {uri:?}: a file:// URI needs an absolute path (file:///abs/path)"
                )));
            }
            return Ok(Output::Local(PathBuf::from(rest)));
        }
        if uri.starts_with("s3://") {
            return Ok(Output::S3(S3Url::parse(uri, "--output")?));
        }
        if let Some((scheme, _)) = uri.split_once("://") {
            return Err(UsageError(format!(
                "invalid --output {uri:?}: unsupported scheme {scheme:?} (use a folder, file:///abs/path or s3://bucket/prefix)"
            )));
        }
        Ok(Output::Local(PathBuf::from(uri)))
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Local(p) => write!(f, "{}", p.display()),
            Output::S3(u) => u.fmt(f),
        }
    }
}

/// Where the state lives: a local SQLite file, or an object in S3 (downloaded at start,
/// uploaded after every commit, guarded by a lease).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateLoc {
    Local(PathBuf),
    S3(S3Url),
}

impl StateLoc {
    pub fn parse(s: &str) -> Result<StateLoc, UsageError> {
        if s.is_empty() {
            return Err(UsageError("--state is empty".into()));
        }
        if s.starts_with("s3://") {
            let u = S3Url::parse(s, "--state")?;
            if u.key.is_empty() {
                return Err(UsageError(format!(
                    "invalid --state {s:?}: name the state object, e.g. s3://bucket/archiver/state.db"
                )));
            }
            return Ok(StateLoc::S3(u));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(UsageError(format!(
                "invalid --state {s:?}: unsupported scheme {scheme:?} (use a path or s3://bucket/key)"
            )));
        }
        Ok(StateLoc::Local(PathBuf::from(s)))
    }
}

impl std::fmt::Display for StateLoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateLoc::Local(p) => write!(f, "{}", p.display()),
            StateLoc::S3(u) => u.fmt(f),
        }
    }
}

/// How S3 objects are written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Options {
    /// `AES256` or `aws:kms`; `None`: the bucket's default.
    pub sse: Option<String>,
    pub kms_key_id: Option<String>,
    pub expected_bucket_owner: Option<String>,
    pub storage_class: Option<String>,
    /// Multipart part size and threshold, in bytes.
    pub part_size: usize,
    /// `--staging`: where files are staged, if not in the output.
    pub staging: Option<S3Url>,
    /// The state's location when it is in S3: under an output with Object Lock, files are
    /// staged in its folder unless `--staging` says otherwise.
    pub state: Option<S3Url>,
    /// `--retain-for`: each object's retention under Object Lock, from its write.
    pub retain_for: Option<std::time::Duration>,
    /// `--lock-mode`.
    pub lock_mode: Option<crate::cli::LockMode>,
}

impl S3Options {
    fn from_args(g: &GlobalArgs, state: &StateLoc) -> Result<S3Options, UsageError> {
        let sse = match (g.s3_sse.as_deref(), &g.s3_kms_key_id) {
            (None, None) => None,
            (None, Some(_)) => Some("aws:kms".to_string()),
            (Some(s), key) => {
                let canon = match s.to_ascii_lowercase().as_str() {
                    "aes256" | "sse-s3" => "AES256",
                    "aws:kms" | "sse-kms" | "kms" => "aws:kms",
                    _ => {
                        return Err(UsageError(format!(
                            "invalid --s3-sse {s:?}: use AES256 (SSE-S3) or aws:kms (SSE-KMS)"
                        )))
                    }
                };
                if canon == "AES256" && key.is_some() {
                    return Err(UsageError(
                        "--s3-kms-key-id needs --s3-sse aws:kms, not AES256".into(),
                    ));
                }
                Some(canon.to_string())
            }
        };
        if let Some(owner) = &g.s3_expected_bucket_owner {
            if owner.len() != 12 || !owner.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UsageError(format!(
                    "invalid --s3-expected-bucket-owner {owner:?}: expected a 12-digit account id"
                )));
            }
        }
        const CLASSES: [&str; 8] = [
            "STANDARD",
            "STANDARD_IA",
            "ONEZONE_IA",
            "INTELLIGENT_TIERING",
            "GLACIER_IR",
            "REDUCED_REDUNDANCY",
            "GLACIER",
            "DEEP_ARCHIVE",
        ];
        if let Some(c) = &g.s3_storage_class {
            if !CLASSES.contains(&c.as_str()) {
                return Err(UsageError(format!(
                    "invalid --s3-storage-class {c:?}: one of {}",
                    CLASSES.join(", ")
                )));
            }
            if matches!(c.as_str(), "GLACIER" | "DEEP_ARCHIVE") {
                return Err(UsageError(format!(
                    "--s3-storage-class {c}: Athena and the archiver cannot read archived objects; use GLACIER_IR or an S3 lifecycle rule"
                )));
            }
        }
        if !(5..=512).contains(&g.s3_part_size_mib) {
            return Err(UsageError(
                "--s3-part-size-mib must be between 5 and 512".into(),
            ));
        }
        Ok(S3Options {
            sse,
            kms_key_id: g.s3_kms_key_id.clone(),
            expected_bucket_owner: g.s3_expected_bucket_owner.clone(),
            storage_class: g.s3_storage_class.clone(),
            part_size: g.s3_part_size_mib as usize * 1024 * 1024,
            staging: g
                .staging
                .as_deref()
                .map(|s| S3Url::parse(s, "--staging"))
                .transpose()?,
            state: match state {
                StateLoc::S3(u) => Some(u.clone()),
                StateLoc::Local(_) => None,
            },
            retain_for: g.retain_for.as_deref().map(parse_retention).transpose()?,
            lock_mode: g.lock_mode,
        })
    }
}

/// `--retain-for`: a duration of at least a day (humantime's grammar: `7y`, `400d`, `18M`).
fn parse_retention(s: &str) -> Result<std::time::Duration, UsageError> {
    parse_duration(s)
        .filter(|d| d.as_secs() >= 86_400)
        .ok_or_else(|| {
            UsageError(format!(
                "invalid --retain-for {s:?}: a duration of at least 1d, e.g. 7y or 400d"
            ))
        })
}

/// The slice of the portals this process handles: shard `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// `I/N`, with `0 <= I < N`.
    pub fn parse(s: &str) -> Result<Shard, UsageError> {
        let bad = || {
            UsageError(format!(
                "invalid --shard {s:?}: expected I/N with 0 <= I < N, e.g. 0/4"
            ))
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        Shard::new(index, count).ok_or_else(bad)
    }

    fn new(index: u32, count: u32) -> Option<Shard> {
        (count >= 1 && index < count).then_some(Shard { index, count })
    }

    /// From the flags, or from the scheduler's index variable with `--shard-count`.
    pub fn resolve(
        flag: Option<&str>,
        count: Option<u32>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Shard, UsageError> {
        if let Some(f) = flag {
            return Shard::parse(f);
        }
        let Some(count) = count else {
            return Ok(Shard::ALL);
        };
        for var in ["JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX"] {
            if let Some(v) = env(var) {
                let index: u32 = v
                    .trim()
                    .parse()
                    .map_err(|_| UsageError(format!("{var}={v:?} is not a shard index")))?;
                return Shard::new(index, count).ok_or_else(|| {
                    UsageError(format!(
                        "{var}={index} is out of range for --shard-count {count}"
                    ))
                });
            }
        }
        Err(UsageError(
            "--shard-count needs the shard index: set --shard I/N, JOB_COMPLETION_INDEX or \
             AWS_BATCH_JOB_ARRAY_INDEX"
                .into(),
        ))
    }

    /// Does this shard handle the portal? A stable hash of the id, so every process agrees
    /// without talking to the others.
    pub fn owns(&self, portal: &PortalId) -> bool {
        // FNV-1a, 64-bit: fixed forever, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in portal.as_str().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h % u64::from(self.count) == u64::from(self.index)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Everything a run needs, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub state: StateLoc,
    pub output: Output,
    pub flush_rows: usize,
    pub concurrency: usize,
    pub max_attempts: u32,
    pub shard: Shard,
    pub summary_json: Option<PathBuf>,
    pub metrics_file: Option<PathBuf>,
    pub with_client_ips: bool,
    /// Regions to archive; empty: the SDK chain's region.
    pub regions: Vec<String>,
    pub s3: S3Options,
    pub lease_ttl: std::time::Duration,
    /// Whose portals: the SDK credentials' account, or other accounts through a role.
    pub accounts: Accounts,
    /// `--glue-table`: the table the run keeps current (its portal list, or its partitions).
    pub glue_table: Option<GlueTable>,
    /// `--glue-partitions`: register partitions even in a projected table, then turn its
    /// projection off.
    pub glue_partitions: bool,
    /// `--digests`: where the digests go; `None`: the output.
    pub digests: Option<Output>,
    /// `--sign-key`: a KMS key ARN or a private key file that signs each digest.
    pub sign_key: Option<String>,
}

/// Whose portals a run archives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accounts {
    /// The account of the SDK chain's credentials (no role assumed).
    Own,
    /// These accounts (`--accounts`), through `role`.
    Listed { ids: Vec<String>, role: AccountRole },
    /// The active accounts of the organization (`--organization`), through `role`.
    Organization { role: AccountRole },
}

impl Accounts {
    pub fn role(&self) -> Option<&AccountRole> {
        match self {
            Accounts::Own => None,
            Accounts::Listed { role, .. } | Accounts::Organization { role } => Some(role),
        }
    }
}

/// `--account-role` and `--external-id`: how to reach an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRole {
    /// A role name (possibly with a path), or an ARN template holding `{account}`.
    template: String,
    pub external_id: Option<String>,
}

impl AccountRole {
    /// The role ARN in `account`. A bare name becomes `arn:PARTITION:iam::ACCOUNT:role/NAME`,
    /// in the partition of `region` (see [`partition`]); an ARN template is taken as written.
    pub fn arn(&self, account: &str, region: &str) -> String {
        if self.template.starts_with("arn:") {
            self.template.replace("{account}", account)
        } else {
            format!(
                "arn:{}:iam::{account}:role/{}",
                partition(region),
                self.template
            )
        }
    }

    fn parse(raw: &str, external_id: Option<&str>) -> Result<AccountRole, UsageError> {
        let raw = raw.trim();
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 512
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
        };
        let ok = if raw.starts_with("arn:") {
            raw.contains("{account}")
                && raw.contains(":role/")
                && name_ok(&raw.replace("{account}", "000000000000").replace(':', "/"))
        } else {
            name_ok(raw) && !raw.starts_with('/') && !raw.ends_with('/')
        };
        if !ok {
            return Err(UsageError(format!(
                "invalid --account-role {raw:?}: a role name, or an ARN template with {{account}} \
                 such as arn:aws:iam::{{account}}:role/archiver-read"
            )));
        }
        let external_id = match external_id.map(str::trim) {
            None => None,
            Some(x) => {
                let ok = (2..=1224).contains(&x.len())
                    && x.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+=,.@:/_-".contains(&b));
                if !ok {
                    return Err(UsageError(
                        "invalid --external-id: 2 to 1224 letters, digits or +=,.@:/_-".into(),
                    ));
                }
                Some(x.to_string())
            }
        };
        Ok(AccountRole {
            template: raw.to_string(),
            external_id,
        })
    }
}

/// The ARN partition of a region: a role in China, GovCloud or an isolated region has an ARN
/// of that partition, and an `arn:aws:` ARN names no role there.
pub fn partition(region: &str) -> &'static str {
    const PARTITIONS: &[(&str, &str)] = &[
        ("cn-", "aws-cn"),
        ("us-gov-", "aws-us-gov"),
        ("us-iso-", "aws-iso"),
        ("us-isob-", "aws-iso-b"),
        ("eu-isoe-", "aws-iso-e"),
        ("us-isof-", "aws-iso-f"),
    ];
    PARTITIONS
        .iter()
        .find(|(prefix, _)| region.starts_with(prefix))
        .map_or("aws", |&(_, partition)| partition)
}

impl Accounts {
    fn from_args(g: &GlobalArgs) -> Result<Accounts, UsageError> {
        let mut ids: Vec<String> = Vec::new();
        for a in &g.accounts {
            let a = a.trim();
            if a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UsageError(format!(
                    "invalid --accounts value {a:?}: an AWS account id is 12 digits"
                )));
            }
            if !ids.iter().any(|x| x == a) {
                ids.push(a.to_string());
            }
        }
        let role = match (&g.account_role, ids.is_empty() && !g.organization) {
            (None, true) if g.external_id.is_some() => {
                return Err(UsageError(
                    "--external-id needs --account-role with --accounts or --organization".into(),
                ))
            }
            (None, true) => return Ok(Accounts::Own),
            (Some(_), true) => {
                return Err(UsageError(
                    "--account-role needs --accounts or --organization".into(),
                ))
            }
            (None, false) => {
                return Err(UsageError(
                    "--accounts and --organization need --account-role (the role to assume in each account)"
                        .into(),
                ))
            }
            (Some(r), false) => AccountRole::parse(r, g.external_id.as_deref())?,
        };
        if g.organization {
            if !ids.is_empty() {
                return Err(UsageError(
                    "--accounts and --organization cannot be combined".into(),
                ));
            }
            return Ok(Accounts::Organization { role });
        }
        Ok(Accounts::Listed { ids, role })
    }
}

/// `--glue-table DB.TABLE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlueTable {
    pub database: String,
    pub table: String,
}

impl GlueTable {
    fn parse(raw: &str) -> Result<GlueTable, UsageError> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 255
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        match raw.trim().split_once('.') {
            Some((d, t)) if name_ok(d) && name_ok(t) => Ok(GlueTable {
                database: d.to_string(),
                table: t.to_string(),
            }),
            _ => Err(UsageError(format!(
                "invalid --glue-table {raw:?}: expected DATABASE.TABLE"
            ))),
        }
    }
}

impl std::fmt::Display for GlueTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.database, self.table)
    }
}

/// Every `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>` set in the environment must be an
/// http(s) URL with a host, unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true` tells the SDK to
/// ignore them. The SDK only warns about a bad value and fails later, call by call (its STS
/// client, behind `--account-role`, even panics on an empty one); a template that leaves the
/// variable empty is a common slip.
pub fn check_endpoint_env(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<(), UsageError> {
    let vars: Vec<(String, Option<String>)> = vars
        .into_iter()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok())))
        .collect();
    let ignored = vars.iter().any(|(k, v)| {
        k == "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"
            && v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case("true"))
    });
    if ignored {
        return Ok(());
    }
    let mut bad: Vec<&(String, Option<String>)> = vars
        .iter()
        .filter(|(k, _)| k == "AWS_ENDPOINT_URL" || k.starts_with("AWS_ENDPOINT_URL_"))
        .filter(|(_, v)| !v.as_deref().is_some_and(is_endpoint_url))
        .collect();
    bad.sort();
    match bad.first() {
        None => Ok(()),
        Some((k, v)) => Err(UsageError(format!(
            "{k}={} is not an endpoint URL: expected http:// or https:// and a host, e.g. \
             https://s3.eu-west-1.amazonaws.com, or leave {k} unset",
            v.as_deref()
                .map_or("(not UTF-8)".to_string(), |v| format!("{v:?}"))
        ))),
    }
}

fn is_endpoint_url(v: &str) -> bool {
    let Some(rest) = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // The last `:` starts a port unless it is inside an IPv6 literal (`[::1]`).
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    !host.is_empty()
        && !host.contains(char::is_whitespace)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The service rejects `maxResults` above 100.
pub const MAX_PAGE_SIZE: usize = 100;

/// `--flush-rows`, `--concurrency` and `--max-attempts`, the options of how a job pages and
/// flushes: checked here for every command that archives, `demo` included (a zero
/// `--concurrency` would be a semaphore no portal ever gets a permit of).
pub fn check_job_limits(g: &GlobalArgs) -> Result<(), UsageError> {
    if g.flush_rows == 0 {
        return Err(UsageError("--flush-rows must be at least 1".into()));
    }
    if g.concurrency == 0 || g.concurrency > 64 {
        return Err(UsageError("--concurrency must be between 1 and 64".into()));
    }
    if g.max_attempts == 0 || g.max_attempts > 100 {
        return Err(UsageError(
            "--max-attempts must be between 1 and 100".into(),
        ));
    }
    Ok(())
}

impl Config {
    pub fn from_args(g: &GlobalArgs) -> Result<Config, UsageError> {
        check_job_limits(g)?;
        check_endpoint_env(std::env::vars_os())?;
        let shard = Shard::resolve(g.shard.as_deref(), g.shard_count, |k| std::env::var(k).ok())?;
        let state = StateLoc::parse(&g.state.replace("{shard}", &shard.index.to_string()))?;
        let mut regions: Vec<String> = Vec::new();
        for r in &g.regions {
            let r = r.trim();
            let ok = !r.is_empty()
                && r.len() <= 32
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(UsageError(format!(
                    "invalid --region {r:?}: expected a region name such as us-east-1"
                )));
            }
            if !regions.iter().any(|x| x == r) {
                regions.push(r.to_string());
            }
        }
        if g.glue_partitions && g.glue_table.is_none() {
            return Err(UsageError(
                "--glue-partitions needs --glue-table (the table whose partitions to register)"
                    .into(),
            ));
        }
        let lease_ttl = parse_duration(&g.lease_ttl)
            .filter(|d| d.as_secs() >= 30)
            .ok_or_else(|| {
                UsageError(format!(
                    "invalid --lease-ttl {:?}: a duration of at least 30s, e.g. 10m",
                    g.lease_ttl
                ))
            })?;
        let output = Output::parse(&g.output)?;
        let digests = match g.digests.as_deref() {
            None => None,
            Some(d) => Some(parse_digests(d, &output)?),
        };
        let s3 = S3Options::from_args(g, &state)?;
        if !matches!(output, Output::S3(_)) {
            for (set, flag) in [
                (s3.staging.is_some(), "--staging"),
                (s3.retain_for.is_some(), "--retain-for"),
            ] {
                if set {
                    return Err(UsageError(format!(
                        "{flag} is for an S3 output (s3://bucket/prefix), not {}",
                        g.output
                    )));
                }
            }
        }
        let sign_key = match g.sign_key.as_deref() {
            Some("") => return Err(UsageError("--sign-key is empty".into())),
            k => k.map(str::to_string),
        };
        Ok(Config {
            digests,
            sign_key,
            summary_json: g.summary_json.clone(),
            with_client_ips: g.with_client_ips,
            metrics_file: g.metrics_file.clone(),
            shard,
            state,
            output,
            regions,
            s3,
            lease_ttl,
            accounts: Accounts::from_args(g)?,
            glue_table: g.glue_table.as_deref().map(GlueTable::parse).transpose()?,
            glue_partitions: g.glue_partitions,
            flush_rows: g.flush_rows,
            concurrency: g.concurrency,
            max_attempts: g.max_attempts,
        })
    }

    /// Does this run talk to S3 (output or state)?
    pub fn uses_s3(&self) -> bool {
        matches!(self.output, Output::S3(_))
            || matches!(self.state, StateLoc::S3(_))
            || matches!(self.digests, Some(Output::S3(_)))
    }

    /// Where the digests go: `--digests`, or the output.
    pub fn digest_root(&self) -> &Output {
        self.digests.as_ref().unwrap_or(&self.output)
    }

    /// Sessions asked for per ListSessions call: never more than a flush holds.
    pub fn page_size(&self) -> usize {
        self.flush_rows.min(MAX_PAGE_SIZE)
    }
}

/// Parse a duration such as `90m`, `36h`, `2d`, `1w`, `1.5h` or `1h 30m` (humantime's grammar:
/// a number, possibly with a decimal fraction, and a unit, repeated and added up; the units
/// are case-sensitive, `M` is months).
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    humantime::parse_duration(s.trim()).ok()
}

/// Parse and deduplicate `--portal-id` values, keeping their order.
pub fn parse_portal_ids(raw: &[String]) -> Result<Vec<PortalId>, UsageError> {
    let mut out: Vec<PortalId> = Vec::new();
    for r in raw {
        let id = PortalId::parse(r)?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn endpoint_variables_must_be_urls_unless_ignored() {
        for good in [
            "http://127.0.0.1:4566",
            "https://s3.eu-west-1.amazonaws.com",
            "http://localhost:9000/",
            "http://[::1]:9000",
            "https://vpce-1.s3.eu-west-1.vpce.amazonaws.com/path",
        ] {
            let r = check_endpoint_env(env(&[("AWS_ENDPOINT_URL_S3", good)]));
            assert!(r.is_ok(), "{good}: {r:?}");
        }
        for bad in [
            "",
            "localhost:9000",
            "s3.amazonaws.com",
            "http://",
            "http://:9000",
            "http://h:port",
            "ftp://h",
        ] {
            for var in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS"] {
                let e = check_endpoint_env(env(&[("HOME", "/root"), (var, bad)])).unwrap_err();
                assert!(
                    e.0.starts_with(&format!("{var}={bad:?} is not an endpoint URL")),
                    "{}",
                    e.0
                );
            }
        }
        // Other variables are not looked at; the SDK's switch turns the check off.
        assert!(check_endpoint_env(env(&[("AWS_ENDPOINT", "")])).is_ok());
        let ignored = [
            ("AWS_ENDPOINT_URL", ""),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "TRUE"),
        ];
        assert!(check_endpoint_env(env(&ignored)).is_ok());
    }

    #[test]
    fn a_role_name_becomes_an_arn_in_the_regions_partition() {
        for (region, want) in [
            ("eu-west-1", "aws"),
            ("us-east-1", "aws"),
            ("cn-north-1", "aws-cn"),
            ("cn-northwest-1", "aws-cn"),
            ("us-gov-west-1", "aws-us-gov"),
            ("us-iso-east-1", "aws-iso"),
            ("us-isob-east-1", "aws-iso-b"),
            ("eu-isoe-west-1", "aws-iso-e"),
            ("us-isof-south-1", "aws-iso-f"),
            ("", "aws"),
        ] {
            assert_eq!(partition(region), want, "{region}");
        }
        let role = AccountRole::parse("audit/archiver-read", Some("x-123")).unwrap();
        assert_eq!(
            role.arn("111111111111", "cn-north-1"),
            "arn:aws-cn:iam::111111111111:role/audit/archiver-read"
        );
        assert_eq!(
            role.arn("111111111111", "eu-west-1"),
            "arn:aws:iam::111111111111:role/audit/archiver-read"
        );
        // An ARN template is the operator's: its partition is kept as written.
        let template =
            AccountRole::parse("arn:aws-us-gov:iam::{account}:role/archiver-read", None).unwrap();
        assert_eq!(
            template.arn("222222222222", "eu-west-1"),
            "arn:aws-us-gov:iam::222222222222:role/archiver-read"
        );
    }

    #[test]
    fn digests_go_anywhere_but_into_the_dataset() {
        let local = Output::parse("/data/archive").unwrap();
        for ok in [
            "/data/archive",
            "/data/proof",
            "/data/archive/_digests",
            "/data/sessions",
        ] {
            assert_eq!(
                parse_digests(ok, &local).unwrap(),
                Output::parse(ok).unwrap(),
                "{ok}"
            );
        }
        for bad in [
            "/data/archive/sessions",
            "/data/archive/sessions/",
            "/data/archive/./sessions/x",
            "file:///data/archive/sessions/p",
        ] {
            let e = parse_digests(bad, &local).unwrap_err();
            assert!(e.0.contains("--digests"), "{bad}: {}", e.0);
        }
        let s3 = Output::parse("s3://bucket/team/archive").unwrap();
        for ok in [
            "s3://bucket/team/archive",
            "s3://proof/team/archive/sessions",
            "s3://bucket/team/sessions",
        ] {
            assert!(parse_digests(ok, &s3).is_ok(), "{ok}");
        }
        for bad in [
            "s3://bucket/team/archive/sessions",
            "s3://bucket/team/archive/sessions/x/",
        ] {
            assert!(parse_digests(bad, &s3).is_err(), "{bad}");
        }
        let e = parse_digests("gs://x/y", &s3).unwrap_err();
        assert!(
            e.0.contains("--digests") && !e.0.contains("--output"),
            "{}",
            e.0
        );
    }

    #[test]
    fn durations_take_a_number_and_a_unit() {
        use std::time::Duration;
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        // As docs/cli.md says: terms added up with or without spaces, long unit names, a space
        // before the unit, months as `M`; units are case-sensitive.
        assert_eq!(parse_duration("1h30m"), parse_duration("1h 30m"));
        assert_eq!(parse_duration("1d 12h"), Some(Duration::from_secs(129_600)));
        assert_eq!(parse_duration("2weeks"), parse_duration("14d"));
        assert_eq!(parse_duration("45 s"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("1M"), Some(Duration::from_secs(2_630_016)));
        for bad in ["", "d", "2", "2 fortnights", "-1d", "1.5", "36H"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn shards_parse_resolve_and_split_portals_once() {
        assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
        for bad in ["4/4", "1", "a/2", "0/0", "-1/3", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad:?}");
        }
        let none = |_: &str| None;
        assert_eq!(Shard::resolve(None, None, none).unwrap(), Shard::ALL);
        assert!(Shard::resolve(None, Some(3), none).is_err());
        let k8s = |k: &str| (k == "JOB_COMPLETION_INDEX").then(|| "2".to_string());
        assert_eq!(
            Shard::resolve(None, Some(3), k8s).unwrap(),
            Shard { index: 2, count: 3 }
        );
        assert!(Shard::resolve(None, Some(2), k8s).is_err());
        let batch = |k: &str| (k == "AWS_BATCH_JOB_ARRAY_INDEX").then(|| "0".to_string());
        assert_eq!(
            Shard::resolve(None, Some(2), batch).unwrap(),
            Shard { index: 0, count: 2 }
        );
        assert_eq!(
            Shard::resolve(Some("1/2"), Some(9), k8s).unwrap(),
            Shard { index: 1, count: 2 }
        );
        // Every portal belongs to exactly one shard, and the split is not degenerate.
        let ids: Vec<PortalId> = (0..300)
            .map(|i| PortalId::parse(&format!("{i:08x}-0000-4000-8000-000000000000")).unwrap())
            .collect();
        let mut per_shard = [0; 4];
        for id in &ids {
            let owners: Vec<u32> = (0..4)
                .filter(|&i| Shard { index: i, count: 4 }.owns(id))
                .collect();
            assert_eq!(owners.len(), 1);
            per_shard[owners[0] as usize] += 1;
        }
        assert!(per_shard.iter().all(|&n| n > 40), "{per_shard:?}");
    }

    #[test]
    fn outputs_parse_into_the_enum() {
        assert_eq!(
            Output::parse("./archive").unwrap(),
            Output::Local("./archive".into())
        );
        assert_eq!(
            Output::parse("file:///data/a").unwrap(),
            Output::Local("/data/a".into())
        );
        assert!(Output::parse("file://relative").is_err());
        assert!(Output::parse("gs://bucket/x").is_err());
        assert_eq!(
            Output::parse("s3://my-bucket/a/b/").unwrap(),
            Output::S3(S3Url {
                bucket: "my-bucket".into(),
                key: "a/b".into()
            })
        );
        assert_eq!(
            Output::parse("s3://my-bucket").unwrap(),
            Output::S3(S3Url {
                bucket: "my-bucket".into(),
                key: "".into()
            })
        );
        for bad in [
            "s3://",
            "s3://B/x",
            "s3://ab/x",
            "s3://-ab/x",
            "s3://abc/a//b",
            "s3://abc/../x",
        ] {
            assert!(Output::parse(bad).is_err(), "{bad:?}");
        }
        assert!(StateLoc::parse("s3://bucket").is_err());
        assert_eq!(
            StateLoc::parse("s3://bucket/k/state.db").unwrap(),
            StateLoc::S3(S3Url {
                bucket: "bucket".into(),
                key: "k/state.db".into()
            })
        );
        assert_eq!(
            StateLoc::parse("./s.db").unwrap(),
            StateLoc::Local("./s.db".into())
        );
        assert!(Output::parse("").is_err());
    }
}
