//! `archiver`: parse flags, set up logging, run, map the outcome to an exit code.

use std::process::ExitCode;

use archiver::cli::{Cli, Command, LogFormat};
use archiver::error::exit_code;

fn main() -> ExitCode {
    // Before any thread starts: one malloc arena keeps peak memory flat (see `mem`).
    archiver::mem::limit_arenas();
    let cli = Cli::parse_from_env();
    let long_work = matches!(cli.command, Command::Run(_) | Command::Backfill(_));
    archiver::progress::init(
        long_work
            && cli.global.log_format == LogFormat::Text
            && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    init_logging(cli.global.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("archiver: error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(archiver::commands::execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "archiver: error: {}",
                archiver::error::one_line(&format!("{e:#}"))
            );
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Logs go to stderr. `ARCHIVER_LOG` is a level for archiver's own logs (default `info`; other
/// crates stay at `warn`) or a list of `target=level` directives such as
/// `debug,aws_smithy_runtime=debug`. The SDK's configuration loading (`aws_config`: region and
/// credentials probing, instance metadata, profiles, AssumeRole) is kept to `error`: on a
/// machine without AWS configuration its WARNs are multi-line dumps of every provider it
/// tried, and when that is why a command fails, archiver's own error line says so.
fn init_logging(format: LogFormat) {
    const QUIET_SDK: &str = "warn,aws_config=error";
    use tracing_subscriber::filter::Targets;
    let spec = std::env::var("ARCHIVER_LOG").unwrap_or_else(|_| "info".into());
    let directive = if spec.contains('=') || spec.contains(',') {
        spec
    } else {
        format!("{QUIET_SDK},archiver={spec}")
    };
    let filter: Targets = directive.parse().unwrap_or_else(|e| {
        eprintln!("archiver: warning: ignoring ARCHIVER_LOG={directive:?}: {e}");
        format!("{QUIET_SDK},archiver=info")
            .parse()
            .expect("the default filter parses")
    });
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(|| archiver::progress::LogWriter)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).init(),
        LogFormat::Text => registry
            .with(fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .init(),
    }
}
