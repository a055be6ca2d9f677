//! Crash points for the crash-safety tests: `ARCHIVER_FAILPOINT=<name>:<n>` makes the process
//! abort (like `kill -9`: no destructors, no flush) the n-th time it reaches `<name>`.
//! Unset, a point costs one relaxed atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

fn armed() -> Option<&'static (String, u64)> {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var("ARCHIVER_FAILPOINT").ok()?;
            let (name, n) = v.split_once(':').unwrap_or((v.as_str(), "1"));
            Some((name.to_string(), n.parse().unwrap_or(1)))
        })
        .as_ref()
}

/// Abort here if this point is armed and this is the armed occurrence.
pub fn hit(name: &str) {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    if let Some((armed, n)) = armed() {
        if armed == name && COUNT.fetch_add(1, Ordering::Relaxed) + 1 == *n {
            eprintln!("archiver: failpoint {name}:{n} reached, aborting");
            std::process::abort();
        }
    }
}
