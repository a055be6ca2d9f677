//! Crash points for the crash-safety tests: `ARCHIVER_FAILPOINT=<name>:<n>` makes the process
//! abort (like `kill -9`: no destructors, no flush) the n-th time it reaches `<name>`;
//! `<name>:<n>:stop` makes it stop itself instead (`SIGSTOP`, like a paused container or a
//! process stuck long enough for its S3 lease to expire), to be resumed by `SIGCONT`.
//! Unset, a point costs one relaxed atomic load.
//!
//! Only a build with the `failpoints` feature has them: the tests turn it on (archiver is its
//! own dev-dependency with that feature), `cargo build`, `cargo run` and releases never do, and
//! there [`hit`] is empty and `ARCHIVER_FAILPOINT` is never read.

#[cfg(feature = "failpoints")]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "failpoints")]
use std::sync::OnceLock;

#[cfg(feature = "failpoints")]
struct Armed {
    name: String,
    n: u64,
    stop: bool,
}

#[cfg(feature = "failpoints")]
fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var("ARCHIVER_FAILPOINT").ok()?;
            let mut parts = v.split(':');
            let name = parts.next()?.to_string();
            let n = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
            let stop = parts.next() == Some("stop");
            Some(Armed { name, n, stop })
        })
        .as_ref()
}

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// Abort (or stop) here if this point is armed and this is the armed occurrence.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    if let Some(a) = armed() {
        if a.name == name && COUNT.fetch_add(1, Ordering::Relaxed) + 1 == a.n {
            if a.stop {
                eprintln!("archiver: failpoint {name}:{}:stop reached, stopping", a.n);
                let pid = std::process::id().to_string();
                // The signal stops every thread; `kill` returns once it is sent, and the
                // process resumes here on SIGCONT.
                let _ = std::process::Command::new("kill")
                    .args(["-STOP", &pid])
                    .status();
                eprintln!("archiver: failpoint {name}:{} resumed", a.n);
                return;
            }
            eprintln!("archiver: failpoint {name}:{} reached, aborting", a.n);
            std::process::abort();
        }
    }
}
