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
