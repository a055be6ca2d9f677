//! `archiver simulator`: run the simulator as its own process for scripts and benchmarks.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;

use crate::faults::CORRUPT_LISTING_MODES;
use crate::{Faults, SimClock, SimConfig, Simulator, TokenMode};

/// `--clock`: how the simulated clock moves.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockArg {
    /// Only through activity and the control API.
    Simulated,
    /// Also with wall time, `--time-scale` times as fast.
    Wall,
}

/// Options of `archiver simulator`: a command line of its own, parsed apart from archiver's
/// (whose global options it neither takes nor shows).
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "archiver simulator",
    about = "Serve the built-in WorkSpaces Web simulator on 127.0.0.1 until SIGINT or SIGTERM \
             (for tests and benchmarks); prints its endpoint as one JSON line first"
)]
pub struct SimArgs {
    /// Port on 127.0.0.1 (0 = any free port; the chosen one is printed).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Seed of the synthetic data and of the fault decisions.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Portals in the simulated account.
    #[arg(long, default_value_t = 2)]
    pub portals: usize,
    /// Sessions generated per portal.
    #[arg(long, default_value_t = 500)]
    pub sessions_per_portal: usize,
    /// The most recent sessions of each portal that are still Active.
    #[arg(long, default_value_t = 5)]
    pub active_per_portal: usize,
    /// Session starts are spread over this many days before now.
    #[arg(long, default_value_t = 30)]
    pub history_days: u32,
    /// Sessions older than this are no longer listed.
    #[arg(long, default_value_t = 35)]
    pub retention_days: u32,
    /// Delay before every API answer.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Fraction of API calls answered 429 ThrottlingException.
    #[arg(long, default_value_t = 0.0)]
    pub throttle_rate: f64,
    /// Fraction of API calls answered 500 InternalServerException.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Retry-After header sent with ThrottlingException.
    #[arg(long, default_value_t = 1)]
    pub retry_after_secs: u64,
    /// Token-bucket limit on API calls per second; calls above it are throttled.
    #[arg(long)]
    pub rate_limit: Option<f64>,
    /// Fraction of API calls whose connection is closed after reading the request, with no
    /// answer.
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Corrupt the first session of every ListSessions page in this way.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(CORRUPT_LISTING_MODES))]
    pub corrupt_listing: Option<String>,
    /// Session ids ListSessions leaves out while GetSession still returns them
    /// (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub hide_from_listing: Vec<String>,
    /// The simulated clock at start (epoch ms); default: now, rounded down to the minute.
    #[arg(long)]
    pub now_ms: Option<i64>,
    /// What ListSessions nextToken means: the last session served (keyset) or an offset into
    /// the listing as it is at the next call (offset).
    #[arg(long, value_enum, default_value_t = TokenMode::Keyset)]
    pub token_mode: TokenMode,
    /// How the simulated clock moves: only through activity and the control API (simulated),
    /// or also with wall time (wall).
    #[arg(long, value_enum, default_value_t = ClockArg::Simulated)]
    pub clock: ClockArg,
    /// With `--clock wall`: simulated seconds per wall second (3600 = one hour per second);
    /// default 1.
    #[arg(long)]
    pub time_scale: Option<f64>,
    /// Several accounts, STS and Organizations (boxed: most runs leave them out).
    #[command(flatten)]
    pub org: Box<AccountArgs>,
}

/// The account options of `archiver simulator`.
#[derive(clap::Args, Debug, Clone)]
pub struct AccountArgs {
    /// Member accounts (12 digits, comma-separated or repeated) holding the portals, reached
    /// through STS AssumeRole; default: every portal in the one account 123456789012.
    #[arg(long, value_delimiter = ',')]
    pub accounts: Vec<String>,
    /// Only the first N of `--accounts` hold portals (0: all); the others hold none.
    #[arg(long, default_value_t = 0)]
    pub accounts_with_portals: usize,
    /// Several regions (comma-separated or repeated): portal k is in the (k mod R)-th, and a
    /// call sees only the portals of the region it was signed for; default: every portal in
    /// us-east-1, seen from any region.
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Further organization members that ListAccounts returns as SUSPENDED.
    #[arg(long, value_delimiter = ',')]
    pub suspended_accounts: Vec<String>,
    /// Lifetime of credentials issued by AssumeRole (e.g. `1h`, `30s`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub credential_ttl: std::time::Duration,
    /// AssumeRole without exactly this ExternalId is denied.
    #[arg(long)]
    pub external_id: Option<String>,
}

/// Serves on 127.0.0.1 until SIGINT or SIGTERM. Prints exactly one line to stdout first:
/// `{"endpoint":"http://127.0.0.1:PORT","portal_ids":[...]}`.
pub async fn run_cli(args: SimArgs) -> anyhow::Result<()> {
    for (name, rate) in [
        ("--throttle-rate", args.throttle_rate),
        ("--error-rate", args.error_rate),
        ("--drop-rate", args.drop_rate),
    ] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&rate),
            "{name} must be between 0 and 1, got {rate}"
        );
    }
    if let Some(r) = args.rate_limit {
        anyhow::ensure!(
            r.is_finite() && r > 0.0,
            "--rate-limit must be a positive number, got {r}"
        );
    }
    if let Some(scale) = args.time_scale {
        anyhow::ensure!(
            args.clock == ClockArg::Wall,
            "--time-scale needs --clock wall"
        );
        anyhow::ensure!(
            scale.is_finite() && scale > 0.0,
            "--time-scale must be a positive number, got {scale}"
        );
    }
    let defaults = SimConfig::default();
    let cfg = SimConfig {
        seed: args.seed,
        portals: args.portals,
        sessions_per_portal: args.sessions_per_portal,
        active_per_portal: args.active_per_portal,
        history_days: args.history_days,
        retention_days: args.retention_days,
        now_ms: args.now_ms.unwrap_or(defaults.now_ms),
        clock: match args.clock {
            ClockArg::Simulated => SimClock::Simulated,
            ClockArg::Wall => SimClock::Wall {
                scale: args.time_scale.unwrap_or(1.0),
            },
        },
        token_mode: args.token_mode,
        accounts: args.org.accounts,
        accounts_with_portals: args.org.accounts_with_portals,
        regions: args.org.regions,
        suspended_accounts: args.org.suspended_accounts,
        credential_ttl: args.org.credential_ttl,
        external_id: args.org.external_id,
        ..defaults
    };
    let sim = Simulator::start_on(cfg, SocketAddr::from(([127, 0, 0, 1], args.port))).await?;
    sim.set_faults(Faults {
        throttle_rate: args.throttle_rate,
        error_rate: args.error_rate,
        latency_ms: args.latency_ms,
        retry_after_secs: args.retry_after_secs,
        rate_limit_per_sec: args.rate_limit,
        deny_portals: Vec::new(),
        deny_list_portals: Vec::new(),
        throttle_rpc_calls: 0,
        hide_from_listing: args.hide_from_listing,
        corrupt_listing: args.corrupt_listing,
        // Single sessions are named at run time, through the control API.
        odd_sessions: Default::default(),
        drop_rate: args.drop_rate,
    });
    let line = serde_json::json!({
        "endpoint": sim.endpoint_url(),
        "portal_ids": sim.portal_ids(),
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").context("writing the simulator endpoint to stdout")?;
        out.flush().context("flushing stdout")?;
    }
    tracing::info!(endpoint = %sim.endpoint_url(), portals = args.portals, "simulator serving");
    wait_for_signal().await?;
    tracing::info!("simulator stopping");
    sim.shutdown();
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
}
