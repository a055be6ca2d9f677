//! Flags turned once into validated values: portal ids checked locally (the SDK does not),
//! the output URI parsed into a [`Output`] enum.

use std::path::PathBuf;

use crate::cli::GlobalArgs;
use crate::error::UsageError;

/// A WorkSpaces Web portal id: exactly 36 characters of `[a-zA-Z0-9-]`, as the service model
/// requires. Checked before any call, because the SDK sends whatever it is given.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortalId(String);

impl PortalId {
    pub fn parse(s: &str) -> Result<PortalId, UsageError> {
        let ok = s.len() == 36 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Ok(PortalId(s.to_string()))
        } else {
            Err(UsageError(format!(
                "invalid portal id {:?}: expected 36 characters of [a-zA-Z0-9-]",
                truncate(s, 80)
            )))
        }
    }

    /// The id at the end of a portal ARN (`arn:aws:workspaces-web:REGION:ACCOUNT:portal/ID`).
    pub fn from_arn(arn: &str) -> Result<PortalId, UsageError> {
        let id = arn.rsplit('/').next().unwrap_or_default();
        PortalId::parse(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PortalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Where the dataset goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Local(PathBuf),
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
            return Err(UsageError(format!(
                "--output {uri:?}: S3 output is not available in this build yet; use a local folder"
            )));
        }
        if let Some((scheme, _)) = uri.split_once("://") {
            return Err(UsageError(format!(
                "invalid --output {uri:?}: unsupported scheme {scheme:?} (use a folder or file:///abs/path)"
            )));
        }
        Ok(Output::Local(PathBuf::from(uri)))
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Local(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Everything a run needs, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub state: PathBuf,
    pub output: Output,
    pub flush_rows: usize,
    pub concurrency: usize,
    pub max_attempts: u32,
}

/// The service rejects `maxResults` above 100.
pub const MAX_PAGE_SIZE: usize = 100;

impl Config {
    pub fn from_args(g: &GlobalArgs) -> Result<Config, UsageError> {
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
        Ok(Config {
            state: g.state.clone(),
            output: Output::parse(&g.output)?,
            flush_rows: g.flush_rows,
            concurrency: g.concurrency,
            max_attempts: g.max_attempts,
        })
    }

    /// Sessions asked for per ListSessions call: never more than a flush holds.
    pub fn page_size(&self) -> usize {
        self.flush_rows.min(MAX_PAGE_SIZE)
    }
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

    #[test]
    fn portal_ids_are_validated_locally() {
        assert!(PortalId::parse("0a1b2c3d-0000-4000-8000-123456789abc").is_ok());
        for bad in [
            "",
            "short",
            "0a1b2c3d-0000-4000-8000-123456789abcd",
            "0a1b2c3d-0000-4000-8000-12345678/abc",
            "0a1b2c3d 0000-4000-8000-123456789abc",
            "0a1b2c3d-0000-4000-8000-12345678é9a",
        ] {
            assert!(PortalId::parse(bad).is_err(), "{bad:?} accepted");
        }
        let id = PortalId::from_arn(
            "arn:aws:workspaces-web:us-east-1:123456789012:portal/0a1b2c3d-0000-4000-8000-123456789abc",
        )
        .unwrap();
        assert_eq!(id.as_str(), "0a1b2c3d-0000-4000-8000-123456789abc");
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
        assert!(Output::parse("").is_err());
    }
}
