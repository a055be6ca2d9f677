//! The errors a caller branches on. Everything else is `anyhow` with context.

use thiserror::Error;

/// Bad flags or arguments: exit code 2.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Another run holds the lock on this state: exit code 75.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct LockHeld(pub String);

/// The state file cannot be used (foreign, corrupt, or from a newer archiver): exit code 1,
/// and the file is left untouched.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct StateRefused(pub String);

/// `verify` found the archive differs from the service's listing or its manifests: exit
/// code 3. The report is printed before.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct Differences(pub String);

/// Stopped by a signal; progress up to the last flush is committed.
#[derive(Debug, Error)]
#[error("interrupted; progress up to the last flush is saved")]
pub struct Interrupted;

/// Exit codes of the contract.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const DIFFERENCES: u8 = 3;
    pub const LOCKED: u8 = 75;
}

/// `text` on one line, as the process's last line on stderr must be: the lines of a multi-line
/// error (the SDK's credentials chain lists each provider it tried on a line of its own) are
/// joined with `; `, or with a space after a line that ends in `:`.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str(if out.ends_with(':') { " " } else { "; " });
        }
        out.push_str(line);
    }
    out
}

/// The exit code for an error that ended the program.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<UsageError>()) {
        exit::USAGE
    } else if err.chain().any(|e| e.is::<Differences>()) {
        exit::DIFFERENCES
    } else if err.chain().any(|e| e.is::<LockHeld>()) {
        exit::LOCKED
    } else {
        exit::FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn multi_line_errors_become_one_line() {
        let chain = "listing portals: no credentials found in chain. Attempted:\n  Environment: not set\n  Profile: not enabled\n";
        assert_eq!(
            one_line(chain),
            "listing portals: no credentials found in chain. Attempted: Environment: not set; Profile: not enabled"
        );
        assert_eq!(one_line("one line"), "one line");
    }
}
