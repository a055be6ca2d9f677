//! `archiver` keeps a permanent, queryable Parquet archive of AWS WorkSpaces Web sessions.
//!
//! The data flow is the architecture. Top down, imports only point down this list:
//! - [`commands`]: `run`, `backfill`, `status`, `verify`, `compact`, `demo`, `simulator`; dry runs.
//! - [`run`]: an archiving job, step by step: [`run::discover`] the portals →
//!   [`run::pass`] pages each through dedup → [`run::flush`] encodes, stages, commits and
//!   publishes → [`run::recover`] finishes what an interrupted run left.
//! - The steps' own modules:
//!   - [`source`]: WorkSpaces Web calls (ListPortals, ListSessions pages, GetSession), retries
//!     that honour `Retry-After`, pacing, and the wire → model conversion;
//!   - [`dedup`]: per listed session, write it, keep it pending, or skip it (pure);
//!   - [`encode`]: rows → Parquet bytes (schema, zstd, statistics);
//!   - [`sink`]: the key layout, and staging → publishing on local disk or in S3;
//!   - [`state`]: the SQLite state (checkpoints, watermarks, pending sessions, dedup ids,
//!     flushes, runs) and where it lives: a local file under a lock, or S3 under a lease;
//!   - [`report`]: the run summary as a log line, `--summary-json` and `--metrics-file`;
//!   - [`verify`]: `verify`'s comparison of listing and archive, day by day (pure);
//!   - [`rows_digest`]: the order-independent digest of rows that compaction manifests record.
//! - Foundations: [`cli`] and [`config`] (flags, validated once into a `Config`), [`aws`]
//!   (SDK configuration, S3 client, AWS errors), [`glue`] (`--glue-table`: the Athena
//!   table's portal list or partitions), [`model`] (session, portal id, pass kind),
//!   [`clock`], [`error`] (errors that choose the exit code), [`ids`], [`fsio`] (durable local
//!   writes), [`progress`] (progress lines on a terminal), [`mem`] (malloc arenas),
//!   [`failpoint`] (crash points for the crash-safety tests).
//!
//! The WorkSpaces Web simulator that `demo`, the tests and the benchmarks run against is the
//! workspace's other crate, `archiver-simulator` (`simulator/`).

pub mod commands;
pub mod run;

pub mod dedup;
pub mod digest;
pub mod encode;
pub mod report;
pub mod rows_digest;
pub mod sink;
pub mod source;
pub mod state;
pub mod verify;

pub mod aws;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod failpoint;
pub mod fsio;
pub mod glue;
pub mod ids;
pub mod mem;
pub mod model;
pub mod progress;
pub mod sign;
