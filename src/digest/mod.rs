//! Digests: at the end of each `run`, `backfill`, `compact` and `verify --repair`, one small
//! file per state that lists the manifests written since the previous digest (key and
//! SHA-256) and chains to that previous digest by its SHA-256 and signature. See
//! [`format`] and `docs/audit.md`.

pub mod format;
pub mod walk;
