//! Command-line flags, as the contract names them. Parsed once, then turned into a
//! validated [`crate::config::Config`].

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "archiver",
    version,
    about = "Keeps a permanent, queryable Parquet archive of AWS WorkSpaces Web sessions"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parse the process's arguments, exiting as clap does on a usage error (exit 2) or on
    /// `--help` and `--version` (exit 0).
    pub fn parse_from_env() -> Cli {
        Cli::parse_from(fence_simulator_args(std::env::args_os().collect()))
    }

    /// Parse `argv` (program name first) as [`Cli::parse_from_env`] does, without exiting.
    pub fn try_parse_argv(
        argv: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(fence_simulator_args(
            argv.into_iter().map(Into::into).collect(),
        ))
    }
}

/// `archiver [GLOBAL OPTIONS] simulator ARGS...`: every one of ARGS is the simulator's, also one
/// named like a global option of archiver (`--accounts`, `--external-id`), which clap would
/// otherwise take as archiver's when it comes first. A `--` right after the subcommand makes
/// them all trailing values. The subcommand is the first `simulator` word that the arguments
/// before it parse as (not a value such as `--state simulator`).
fn fence_simulator_args(mut argv: Vec<OsString>) -> Vec<OsString> {
    let at = (1..argv.len()).find(|&i| {
        argv[i] == "simulator"
            && matches!(
                Cli::try_parse_from(&argv[..=i]),
                Ok(Cli {
                    command: Command::Simulator(_),
                    ..
                })
            )
    });
    if let Some(i) = at {
        if argv.get(i + 1).is_none_or(|next| next != "--") {
            argv.insert(i + 1, "--".into());
        }
    }
    argv
}

/// The options every command takes, shown in each command's help under their own heading,
/// after the command's own.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// SQLite state: checkpoints, watermarks, pending sessions, run history. A local path, or
    /// `s3://bucket/key` for a state kept in S3 under a lease. `{shard}` in it is replaced by
    /// this process's shard index.
    #[arg(
        long,
        global = true,
        env = "ARCHIVER_STATE",
        default_value = "./archiver-state.db"
    )]
    pub state: String,
    /// Where the dataset goes: a local folder, file:///abs/path or s3://bucket/prefix.
    #[arg(
        long,
        global = true,
        env = "ARCHIVER_OUTPUT",
        default_value = "./archive"
    )]
    pub output: String,
    /// Most rows buffered before a flush; every flush writes files and commits a checkpoint.
    #[arg(
        long,
        global = true,
        env = "ARCHIVER_FLUSH_ROWS",
        default_value_t = 100_000
    )]
    pub flush_rows: usize,
    /// Log format on stderr.
    #[arg(long, global = true, env = "ARCHIVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// This process handles shard I of N of the portals (0-based), e.g. `1/4`.
    #[arg(long, global = true, env = "ARCHIVER_SHARD", value_name = "I/N")]
    pub shard: Option<String>,
    /// Shard count N when the index comes from the scheduler: `JOB_COMPLETION_INDEX`
    /// (Kubernetes Indexed Jobs) or `AWS_BATCH_JOB_ARRAY_INDEX` (AWS Batch array jobs).
    #[arg(long, global = true, env = "ARCHIVER_SHARD_COUNT", value_name = "N")]
    pub shard_count: Option<u32>,
    /// Portals paged side by side.
    #[arg(long, global = true, env = "ARCHIVER_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Also archive each ended session's client IP addresses (one GetSession call per
    /// session written).
    #[arg(long, global = true, env = "ARCHIVER_WITH_CLIENT_IPS")]
    pub with_client_ips: bool,
    /// After every run/backfill, write what it did as JSON here (replaced atomically).
    #[arg(
        long,
        global = true,
        env = "ARCHIVER_SUMMARY_JSON",
        value_name = "PATH"
    )]
    pub summary_json: Option<PathBuf>,
    /// After every run/backfill, write Prometheus metrics here, for node_exporter's textfile
    /// collector (replaced atomically).
    #[arg(
        long,
        global = true,
        env = "ARCHIVER_METRICS_FILE",
        value_name = "PATH"
    )]
    pub metrics_file: Option<PathBuf>,
    /// Attempts per API call before a portal is given up for this run (throttling, 5xx,
    /// timeouts and dropped connections are retried with backoff).
    #[arg(
        long,
        global = true,
        env = "ARCHIVER_MAX_ATTEMPTS",
        default_value_t = 8
    )]
    pub max_attempts: u32,
    /// AWS region to archive (repeatable, or a comma-separated list); one client per region.
    /// Default: the region of the SDK's standard chain (AWS_REGION, profile).
    #[arg(
        long = "region",
        global = true,
        env = "ARCHIVER_REGIONS",
        value_name = "REGION",
        value_delimiter = ','
    )]
    pub regions: Vec<String>,
    /// S3 server-side encryption of written objects: `AES256` (SSE-S3) or `aws:kms` (SSE-KMS).
    /// Default: the bucket's default encryption.
    #[arg(
        long,
        global = true,
        env = "ARCHIVER_S3_SSE",
        value_name = "AES256|aws:kms"
    )]
    pub s3_sse: Option<String>,
    /// KMS key id or ARN for SSE-KMS (implies `--s3-sse aws:kms`).
    #[arg(
        long,
        global = true,
        env = "ARCHIVER_S3_KMS_KEY_ID",
        value_name = "KEY"
    )]
    pub s3_kms_key_id: Option<String>,
    /// Account id that must own the bucket (ExpectedBucketOwner on every S3 call).
    #[arg(
        long,
        global = true,
        env = "ARCHIVER_S3_EXPECTED_BUCKET_OWNER",
        value_name = "ACCOUNT"
    )]
    pub s3_expected_bucket_owner: Option<String>,
    /// Storage class of written Parquet files, e.g. STANDARD_IA or INTELLIGENT_TIERING.
    #[arg(
        long,
        global = true,
        env = "ARCHIVER_S3_STORAGE_CLASS",
        value_name = "CLASS"
    )]
    pub s3_storage_class: Option<String>,
    /// Files larger than this many MiB go up as multipart uploads of parts this size (5 to 512).
    #[arg(
        long,
        global = true,
        env = "ARCHIVER_S3_PART_SIZE_MIB",
        value_name = "MIB",
        default_value_t = 16
    )]
    pub s3_part_size_mib: u32,
    /// Where files are staged before they are published (`_staging/` under it), for an S3
    /// output: s3://bucket/prefix, in a bucket without Object Lock. Default: the output; for
    /// an output with Object Lock, the folder of an S3 `--state`.
    #[arg(long, global = true, env = "ARCHIVER_STAGING", value_name = "S3_URL")]
    pub staging: Option<String>,
    /// For an output bucket with Object Lock: keep each object archiver writes for this long
    /// after it is written (e.g. `7y`, `400d`), instead of the bucket's default retention.
    #[arg(
        long,
        global = true,
        env = "ARCHIVER_RETAIN_FOR",
        value_name = "DURATION"
    )]
    pub retain_for: Option<String>,
    /// With `--retain-for`: the Object Lock mode, `governance` or `compliance` (which nobody,
    /// root included, can shorten or remove). Default: the bucket's default mode, else
    /// governance.
    #[arg(
        long,
        global = true,
        env = "ARCHIVER_LOCK_MODE",
        value_enum,
        requires = "retain_for"
    )]
    pub lock_mode: Option<LockMode>,
    /// Lease on an S3 state: how long it holds without renewal (a crashed run's lease blocks
    /// others at most this long). Renewed every third of it while the run lives.
    #[arg(
        long,
        global = true,
        env = "ARCHIVER_LEASE_TTL",
        value_name = "DURATION",
        default_value = "10m"
    )]
    pub lease_ttl: String,
    /// Archive the portals of these AWS accounts (repeatable, or a comma-separated list), by
    /// assuming `--account-role` in each. Without it (or `--organization`), only the account
    /// of the SDK's credentials.
    #[arg(
        long = "accounts",
        global = true,
        env = "ARCHIVER_ACCOUNTS",
        value_name = "ID",
        value_delimiter = ','
    )]
    pub accounts: Vec<String>,
    /// Take the accounts from AWS Organizations ListAccounts (active accounts only), called
    /// with the job's own credentials.
    #[arg(long, global = true, env = "ARCHIVER_ORGANIZATION")]
    pub organization: bool,
    /// The role to assume in each account: a role name, or an ARN template containing
    /// `{account}` (e.g. `arn:aws:iam::{account}:role/archiver-read`).
    #[arg(
        long,
        global = true,
        env = "ARCHIVER_ACCOUNT_ROLE",
        value_name = "NAME|ARN-TEMPLATE"
    )]
    pub account_role: Option<String>,
    /// External id to present when assuming `--account-role`.
    #[arg(long, global = true, env = "ARCHIVER_EXTERNAL_ID", value_name = "ID")]
    pub external_id: Option<String>,
    /// Keep this Glue table current, so Athena queries across all portals need no upkeep:
    /// with partition projection on, its portal list; without, its partitions (each
    /// published partition registered in Glue).
    #[arg(
        long,
        global = true,
        env = "ARCHIVER_GLUE_TABLE",
        value_name = "DB.TABLE"
    )]
    pub glue_table: Option<String>,
    /// With `--glue-table`: register the partitions in Glue even if the table projects them,
    /// then turn its partition projection off (for thousands of portals).
    #[arg(long, global = true, env = "ARCHIVER_GLUE_PARTITIONS")]
    pub glue_partitions: bool,
    /// Where the digests go (`_digest/` under it): a local folder, file:///abs/path or
    /// s3://bucket/prefix. Default: the output. Best another bucket or account, with its own
    /// IAM and Object Lock, so that whoever can write the archive cannot rewrite its proof.
    #[arg(long, global = true, env = "ARCHIVER_DIGESTS", value_name = "URL")]
    pub digests: Option<String>,
    /// Sign each digest: an asymmetric KMS key's ARN (SIGN_VERIFY, RSASSA-PSS or ECDSA), or
    /// a PKCS#8 PEM private key file. Default: digests are unsigned (they still chain by
    /// SHA-256).
    #[arg(
        long,
        global = true,
        env = "ARCHIVER_SIGN_KEY",
        value_name = "KMS_ARN|FILE"
    )]
    pub sign_key: Option<String>,
}

/// `--lock-mode`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Governance,
    Compliance,
}

impl LockMode {
    /// The name S3 gives it.
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The scheduled job: backfill new portals, incremental pass for archived ones.
    Run(RunArgs),
    /// List everything the service holds for a portal, resumable after any failure.
    Backfill(BackfillArgs),
    /// Per portal: checkpoint, watermark, pending sessions, last run.
    Status(StatusArgs),
    /// Prove the archive complete: compare every session the service lists with the Parquet
    /// files (and their manifests), and walk its digest chains. Exit 3 on differences;
    /// `--repair` fixes missing and duplicated sessions; `--offline` walks the chains alone.
    Verify(VerifyArgs),
    /// Rewrite each partition's files into one (old partitions only), exactly once.
    Compact(CompactArgs),
    /// The whole job end to end against the built-in simulator, in a local folder.
    Demo(DemoArgs),
    /// Serve the built-in WorkSpaces Web simulator on 127.0.0.1 (for tests and benchmarks).
    Simulator(SimulatorArgs),
    /// Make a new EC P-256 private key file to sign digests with (`--sign-key FILE`), for
    /// users without KMS.
    Keygen(KeygenArgs),
    /// Print the PEM public key of a signing key (a KMS key or a private key file): what an
    /// auditor is handed for `verify --offline --public-key`.
    PublicKey(PublicKeyArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Only these portals (repeatable); without it every portal ListPortals returns.
    #[arg(long = "portal-id", value_name = "ID")]
    pub portal_ids: Vec<String>,
    /// Say what each portal would get (backfill, resume, incremental) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct BackfillArgs {
    /// The portal to backfill (repeatable).
    #[arg(long = "portal-id", value_name = "ID", required = true)]
    pub portal_ids: Vec<String>,
    /// List everything again; nothing already archived is written twice.
    #[arg(long)]
    pub restart: bool,
    /// Say what each portal would get and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Only these portals (repeatable); without it every portal ListPortals returns.
    #[arg(long = "portal-id", value_name = "ID")]
    pub portal_ids: Vec<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Write missing sessions and remove duplicated rows (under the run lock), then verify
    /// again.
    #[arg(long)]
    pub repair: bool,
    /// No state exists at --state yet: create it (to verify an archive whose state was lost).
    /// Without it, a missing state is an error.
    #[arg(long)]
    pub new_state: bool,
    /// Check only the archive's own proof (digest chains, manifests, files), without calling
    /// WorkSpaces Web and without a state: what an auditor runs.
    #[arg(long, conflicts_with_all = ["repair", "new_state", "portal_ids"])]
    pub offline: bool,
    /// A newest digest older than this is a finding (a stopped job, or a truncated chain): a
    /// number and a unit, e.g. 2d or 36h.
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
    /// Check every digest's signature with this public key (PEM SubjectPublicKeyInfo), with no
    /// AWS call; an unsigned digest, or one signed by another key, is a finding.
    #[arg(long, value_name = "FILE.pem")]
    pub public_key: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CompactArgs {
    /// Leave partitions whose day ended less than this long ago: a number and a unit (s, m, h,
    /// d, w, ...), or several added up, e.g. 36h, 1.5d or 1d 12h.
    #[arg(long, default_value = "2d", value_name = "DURATION")]
    pub older_than: String,
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// The private key file to create (PEM PKCS#8, mode 0600). An existing file is never
    /// overwritten.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct PublicKeyArgs {
    /// The signing key: a KMS key ARN (`arn:aws:kms:REGION:ACCOUNT:key/ID`) or a PEM PKCS#8
    /// private key file.
    #[arg(long, value_name = "ARN|FILE")]
    pub sign_key: String,
    /// Write the PEM public key to this file instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Folder for the demo's state and archive (replaced if it holds an earlier demo).
    #[arg(long, default_value = "./archiver-demo")]
    pub dir: PathBuf,
    /// Portals in the simulated account.
    #[arg(long, default_value_t = 3)]
    pub portals: usize,
    /// Sessions per portal in the simulated history.
    #[arg(long, default_value_t = 2_000)]
    pub sessions: usize,
}

/// `archiver simulator`'s arguments, parsed by the simulator's own parser (`archiver
/// simulator`): its help lists its options alone, and its `--accounts` and `--external-id` are
/// its own. archiver's global options go before `simulator`.
#[derive(Debug)]
pub struct SimulatorArgs(pub archiver_simulator::SimArgs);

const SIMULATOR_ARGS: &str = "simulator_args";

impl Args for SimulatorArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.disable_help_flag(true)
            // `archiver help simulator` shows what `archiver simulator --help` shows.
            .override_help(archiver_simulator::SimArgs::command().render_help())
            .arg(
                clap::Arg::new(SIMULATOR_ARGS)
                    .value_name("SIMULATOR OPTIONS")
                    .num_args(0..)
                    .trailing_var_arg(true)
                    .allow_hyphen_values(true)
                    .value_parser(clap::value_parser!(OsString)),
            )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for SimulatorArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let args = m.get_many::<OsString>(SIMULATOR_ARGS).into_iter().flatten();
        let argv =
            std::iter::once(OsStr::new("archiver simulator")).chain(args.map(OsString::as_os_str));
        archiver_simulator::SimArgs::try_parse_from(argv).map(SimulatorArgs)
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
        archiver_simulator::SimArgs::command().debug_assert();
    }

    /// What `archiver ARGS --help` prints.
    fn help(args: &[&str]) -> String {
        let argv = ["archiver"].iter().chain(args).chain(&["--help"]);
        let e = Cli::try_parse_argv(argv).expect_err("--help ends parsing");
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{e}");
        e.to_string()
    }

    #[test]
    fn a_commands_help_shows_its_own_options_before_the_global_ones() {
        for (command, own) in [
            ("run", "--dry-run"),
            ("backfill", "--restart"),
            ("status", "--json"),
            ("verify", "--repair"),
            ("compact", "--older-than"),
            ("demo", "--dir"),
            ("keygen", "--out"),
            ("public-key", "--sign-key"),
        ] {
            let text = help(&[command]);
            // Option lines, not mentions in a description.
            let own_at = text
                .find(&format!("\n      {own}"))
                .unwrap_or_else(|| panic!("{command}: no {own}:\n{text}"));
            let global_at = text
                .find("\nGlobal options:\n")
                .unwrap_or_else(|| panic!("{command}: no global heading:\n{text}"));
            let state_at = text.find("\n      --state <").unwrap();
            assert!(
                own_at < global_at && global_at < state_at,
                "{command}:\n{text}"
            );
        }
    }

    #[test]
    fn the_simulator_has_a_command_line_of_its_own() {
        let text = help(&["simulator"]);
        assert!(text.contains("Usage: archiver simulator"), "{text}");
        assert!(text.contains("--sessions-per-portal"), "{text}");
        for global in ["--state", "--output", "--concurrency", "Global options"] {
            assert!(!text.contains(global), "{global} in:\n{text}");
        }
        // Its `--accounts` and `--external-id` are its own, first or not; archiver's global
        // options still go before the subcommand, even one whose value is `simulator`.
        for argv in [
            &[
                "archiver",
                "simulator",
                "--accounts",
                "111111111111,222222222222",
            ][..],
            &[
                "archiver",
                "--state",
                "simulator",
                "simulator",
                "--accounts",
                "111111111111,222222222222",
            ],
            &[
                "archiver",
                "simulator",
                "--portals",
                "3",
                "--accounts",
                "111111111111",
                "--accounts",
                "222222222222",
            ],
            &[
                "archiver",
                "simulator",
                "--",
                "--accounts",
                "111111111111,222222222222",
            ],
        ] {
            let cli = Cli::try_parse_argv(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let Command::Simulator(SimulatorArgs(sim)) = cli.command else {
                panic!("{argv:?}: not the simulator");
            };
            assert_eq!(
                sim.org.accounts,
                ["111111111111", "222222222222"],
                "{argv:?}"
            );
            assert!(cli.global.accounts.is_empty(), "{argv:?}");
        }
        let cli = Cli::try_parse_argv([
            "archiver",
            "--state",
            "simulator",
            "simulator",
            "--external-id",
            "x",
        ])
        .unwrap();
        assert_eq!(cli.global.state, "simulator");
        let Command::Simulator(SimulatorArgs(sim)) = cli.command else {
            panic!("not the simulator");
        };
        assert_eq!(sim.org.external_id.as_deref(), Some("x"));
        // archiver's options after `simulator` are not the simulator's: refused.
        let e = Cli::try_parse_argv(["archiver", "simulator", "--state", "s.db"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument, "{e}");
    }
}
