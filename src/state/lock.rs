//! The run lock on a local state: an exclusive OS lock on `<state>.lock`, held for the whole
//! run. The kernel drops it when the process dies, however it dies, so a killed run never
//! blocks the next one. The file says who holds it, for the refusal message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::clock::{now_ms, rfc3339};
use crate::error::LockHeld;

/// Held while alive; released on drop or process death.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// This machine's name, for telling who holds a lock or lease.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// Path of the lock file for a state file.
pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Take the lock for `state`, or fail with [`LockHeld`] naming the holder.
pub fn acquire(state: &Path, command: &str) -> Result<RunLock> {
    let path = lock_path(state);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the state folder {}", dir.display()))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            file.read_to_string(&mut holder).ok();
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another process".to_string()
            } else {
                holder.to_string()
            };
            return Err(LockHeld(format!(
                "another run holds the lock on state {}: {who}",
                state.display()
            ))
            .into());
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
    let host = hostname();
    let who = format!(
        "pid {} on {host}, `archiver {command}`, since {}",
        std::process::id(),
        rfc3339(now_ms())
    );
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(who.as_bytes())?;
    file.sync_data().ok();
    Ok(RunLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_name_and_a_released_lock_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.db");
        let first = acquire(&state, "run").unwrap();
        let err = acquire(&state, "backfill").unwrap_err();
        let msg = format!("{err:#}");
        assert!(err.is::<LockHeld>());
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("`archiver run`"), "{msg}");
        drop(first);
        acquire(&state, "run").unwrap();
    }
}
