//! `archiver` keeps a permanent, queryable Parquet archive of AWS WorkSpaces Web sessions.
//!
//! The data flow is the architecture, one module a step, in order:
//! - [`discover`](fetch::Source::list_portals) and [`fetch`]: ListPortals and ListSessions
//!   pages over the AWS SDK, with retries that honour `Retry-After`.
//! - [`dedup`]: per listed session, write it, keep it pending, or skip it (pure).
//! - [`encode`]: rows → Parquet bytes (schema, zstd, statistics).
//! - [`sink`]: stage → publish files on local disk or S3 ([`s3`]); object naming.
//! - [`state`]: SQLite checkpoints, watermarks, pending sessions, dedup ids, flushes, runs.
//! - [`pass`]: one portal's backfill or incremental pass, the loop tying the steps together.
//!
//! Around it:
//! - [`cli`] and [`config`]: flags, validated once into a `Config`.
//! - [`commands`] and [`status`]: `run`, `backfill`, `status`, `demo`.
//! - [`compact`]: rewrite each partition's files into one, exactly once.
//! - [`report`]: the run summary as a log line, `--summary-json` and `--metrics-file`.
//! - [`lock`] and [`state_store`]: the run lock on a local state; a state kept in S3 under a
//!   lease, uploaded after every commit.
//! - [`progress`]: progress lines on a terminal, none in logs.
//! - [`model`], [`clock`], [`error`]: the session record, time helpers, exit-code errors.
//! - [`failpoint`]: crash points for the crash-safety tests.
//! - [`simulator`]: the built-in WorkSpaces Web simulator (demo, tests, benchmarks).

pub mod cli;
pub mod clock;
pub mod commands;
pub mod compact;
pub mod config;
pub mod dedup;
pub mod encode;
pub mod error;
pub mod failpoint;
pub mod fetch;
pub mod lock;
pub mod mem;
pub mod model;
pub mod pass;
pub mod progress;
pub mod report;
pub mod s3;
pub mod simulator;
pub mod sink;
pub mod state;
pub mod state_store;
pub mod status;
