//! The scheduled-job definitions in `jobs/` run the real CLI: every `archiver` command line in
//! them parses and validates exactly as at start-up, and every `ARCHIVER_*` name in them is one
//! archiver reads. No network, no subprocess.
//!
//! Extraction, per file (every file under `jobs/` must be listed in [`EXPECTED`] with the
//! number of command lines found in it, so a new file, a lost line or a line the rules below
//! no longer see fails the test):
//! - `Dockerfile` (final stage): the JSON arrays of `ENTRYPOINT` and `CMD` make one command
//!   line; `ENV NAME=value` is the image's environment, under which every container command
//!   line below is parsed.
//! - `*.json`: each entry of `containerDefinitions` (ECS task definition): its `entryPoint`
//!   (default: the image's) + `command` (default: the image's `CMD`), with the image's
//!   environment + its `environment`. Each entry of `containerOverrides` with a `command`
//!   (RunTask overrides), also inside a string field `Input` holding JSON (an EventBridge
//!   Scheduler target's input): the image's entry point + that command.
//! - `*.yaml`: read with `yaml-rust2` (invalid YAML, a duplicated key or a merge key `<<` is an
//!   error); a document with a `containers:` (or `initContainers:`) list holds exactly one
//!   container, whose `command:` (default: the image's entry point) and `args:` (default: the
//!   image's `CMD`), in flow or block style, must be lists of strings: anything else is an
//!   error, not a line silently skipped. The environment is the image's + the container's
//!   `env:` entries with a string `value`. An Indexed Job (a spec with `completionMode:
//!   Indexed`) is checked once per index with `JOB_COMPLETION_INDEX` set, and its shard count
//!   must equal that spec's `completions` and `parallelism`.
//! - `cloudformation/*.yaml` (CloudFormation templates, read into JSON with the short forms
//!   `!Ref`, `!Sub`, `!If`, `!GetAtt` ... as their long forms; anchors, aliases and duplicated
//!   keys are errors): each container of each `AWS::ECS::TaskDefinition`, its `EntryPoint`
//!   (default: the image's) + `Command` (default: the image's `CMD`), with the image's
//!   environment + its `Environment`, once per parameter set of [`CFN_VARIANTS`] (on top of
//!   the parameters' defaults). `Ref` and `Fn::Sub` read parameters, pseudo parameters
//!   ([`CFN_PSEUDO`]) and resources (a sample bucket name, or the logical id); `Fn::If`
//!   evaluates the template's conditions; `Fn::GetAtt` gives a sample ARN; any other function,
//!   or a parameter without a value, is an error.
//! - `crontab` (read line by line here): `NAME=value` lines are the environment; every entry
//!   (five time fields and a command, split as a shell line below), commented-out entries
//!   included, must run archiver.
//! - `*.md`: in fenced code blocks (backslash-newline continuations joined), lines starting
//!   with `archiver ` or `/usr/local/bin/archiver `, and `docker run` lines, whose arguments
//!   after the image (none: the image's `CMD`) follow the image's entry point, with the image's
//!   environment + the `-e NAME=value` options.
//!
//! Shell lines are split into words by `shell-words` (single and double quotes, backslash escapes),
//! after one quote-aware pass ([`command_text`]) does what `shell-words` leaves to the shell: the
//! command ends at an unquoted `;`, `|`, `&`, `<`, `>` (a file-descriptor number before a
//! redirection goes too) or a `#` starting a word; `$VAR` / `${VAR}` outside single quotes are
//! replaced from [`SAMPLE_VARS`] (quoted, so the value stays literal and in its word); any other
//! variable, `$` form, command substitution or backquote is an error.
//!
//! Each command line then goes through what `main` and `commands::execute` do before any I/O
//! ([`check`]): `Cli::try_parse_from`, `Config::from_args`, `parse_portal_ids` (run,
//! backfill), `config::parse_duration` (compact), with the process environment holding the
//! line's archiver variables and nothing else of archiver's. On top of that, lines for
//! ephemeral containers (`k8s/`, `ecs/`, `cloudformation/`) must keep both state and output in
//! S3, and a sharded line must give each shard its own state (`{shard}` in `--state`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use archiver::cli::{Cli, Command};
use archiver::config::{Config, Output, Shard, StateLoc};
use clap::{CommandFactory, Parser};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

/// Command lines per file under `jobs/`. Every file there must be listed.
const EXPECTED: &[(&str, usize)] = &[
    ("Dockerfile", 1),
    ("README.md", 6),
    ("cloudformation/archive-account.yaml", 3),
    ("cloudformation/member-read-role.yaml", 0),
    ("crontab", 2),
    ("ecs/scheduler.json", 0),
    ("ecs/task-definition.json", 1),
    ("iam-policy-maintenance.json", 0),
    ("iam-policy.json", 0),
    ("iam-trust-ecs.json", 0),
    ("iam-trust-irsa.json", 0),
    ("k8s/cronjob.yaml", 1),
    ("k8s/indexed-job.yaml", 1),
];

/// Values for the shell variables the job files use.
const SAMPLE_VARS: &[(&str, &str)] = &[("HOME", "/home/operator"), ("IMAGE", IMAGE)];

/// The image as the job files name it (`docker run` lines find their arguments after it).
const IMAGE: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/archiver:0.1.0";

/// Environment variables archiver reads outside clap (main.rs).
const NON_CLI_ENV: &[&str] = &["ARCHIVER_LOG"];

/// The scheduler index variables `--shard-count` reads.
const INDEX_ENV: &[&str] = &["JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX"];

/// Environment variables, in order (a later one wins).
type Env = Vec<(String, String)>;

/// One command line found in a job file.
#[derive(Debug, Clone)]
struct Line {
    /// Where: file and position, for messages.
    at: String,
    argv: Vec<String>,
    env: Env,
    /// An Indexed Job: (completions, parallelism).
    indexed: Option<(u32, u32)>,
}

/// The final stage of the Dockerfile: what every container line starts from.
#[derive(Debug, Clone, Default)]
struct Image {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Env,
    user: String,
}

// ---------------------------------------------------------------------------------------
// Checking one command line
// ---------------------------------------------------------------------------------------

/// The process environment is global: every test that touches it holds this.
static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Every `ARCHIVER_*` (or other) variable the CLI reads, from clap's own definitions.
fn cli_env_names() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for a in cmd.get_arguments() {
            if let Some(e) = a.get_env() {
                out.insert(e.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&Cli::command(), &mut out);
    out
}

/// Parse and validate `argv` as archiver does at start-up, with exactly `env`'s archiver
/// variables set (and the scheduler index variables). Returns the parsed flags and the
/// validated config, or the error archiver would print (with exit 2).
fn check(argv: &[String], env: &[(String, String)]) -> Result<(Cli, Config), String> {
    let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let names: BTreeSet<String> = cli_env_names()
        .into_iter()
        .chain(INDEX_ENV.iter().map(|s| s.to_string()))
        .collect();
    for n in &names {
        std::env::remove_var(n);
    }
    for (k, v) in env {
        if names.contains(k) {
            std::env::set_var(k, v);
        }
    }
    let result = parse_and_validate(argv);
    for n in &names {
        std::env::remove_var(n);
    }
    result
}

fn parse_and_validate(argv: &[String]) -> Result<(Cli, Config), String> {
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    let config = Config::from_args(&cli.global).map_err(|e| e.to_string())?;
    match &cli.command {
        Command::Run(a) => {
            archiver::config::parse_portal_ids(&a.portal_ids).map_err(|e| e.to_string())?;
        }
        Command::Backfill(a) => {
            archiver::config::parse_portal_ids(&a.portal_ids).map_err(|e| e.to_string())?;
        }
        Command::Verify(a) => {
            archiver::config::parse_portal_ids(&a.portal_ids).map_err(|e| e.to_string())?;
        }
        Command::Compact(a) => {
            archiver::config::parse_duration(&a.older_than)
                .ok_or_else(|| format!("invalid --older-than {:?}", a.older_than))?;
        }
        Command::Status(_) => {}
        Command::Demo(_) | Command::Simulator(_) => {
            return Err("a job runs demo or simulator, not the archiver".into());
        }
        Command::Keygen(_) | Command::PublicKey(_) => {
            return Err("a job runs keygen or public-key, not the archiver".into());
        }
    }
    Ok((cli, config))
}

/// Check one extracted line: every index of an Indexed Job, the S3 rule for containers, a
/// state per shard. Returns how many parses it took.
fn check_line(line: &Line) -> Result<usize, String> {
    let container = ["k8s/", "ecs/", "cloudformation/"]
        .iter()
        .any(|d| line.at.starts_with(d));
    let runs: Vec<(Env, Option<u32>)> = match line.indexed {
        None => vec![(line.env.clone(), None)],
        Some((completions, parallelism)) => {
            if completions != parallelism {
                return Err(format!(
                    "completions {completions} != parallelism {parallelism}: shards would run in turns"
                ));
            }
            (0..completions)
                .map(|i| {
                    let mut env = line.env.clone();
                    env.push(("JOB_COMPLETION_INDEX".into(), i.to_string()));
                    (env, Some(i))
                })
                .collect()
        }
    };
    for (env, index) in &runs {
        let (cli, cfg) =
            check(&line.argv, env).map_err(|e| format!("{e} (argv {:?})", line.argv))?;
        if let (Some(i), Some((n, _))) = (index, line.indexed) {
            if cfg.shard
                != (Shard {
                    index: *i,
                    count: n,
                })
            {
                return Err(format!(
                    "index {i} of {n} runs shard {} (--shard-count must be {n})",
                    cfg.shard
                ));
            }
        }
        if cfg.shard.count > 1 {
            if !cli.global.state.contains("{shard}") {
                return Err(format!(
                    "sharded ({}) but --state {:?} has no {{shard}}: the shards would share one state",
                    cfg.shard, cli.global.state
                ));
            }
            let want = cli
                .global
                .state
                .replace("{shard}", &cfg.shard.index.to_string());
            if cfg.state.to_string() != want {
                return Err(format!("state {} is not {want}", cfg.state));
            }
        }
        let in_s3 = matches!(cfg.state, StateLoc::S3(_)) && matches!(cfg.output, Output::S3(_));
        if container && !in_s3 {
            return Err(format!(
                "an ephemeral container must keep state and output in S3, not {} and {}",
                cfg.state, cfg.output
            ));
        }
    }
    Ok(runs.len())
}

// ---------------------------------------------------------------------------------------
// Shell words
// ---------------------------------------------------------------------------------------

fn sample_var(name: &str) -> Option<String> {
    SAMPLE_VARS
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Split one command into words as `sh` does: [`command_text`] cuts it at its end and replaces
/// its variables, then `shell-words` splits that into words (quotes, backslash escapes).
fn shell_words(text: &str) -> Result<Vec<String>, String> {
    let command = command_text(text)?;
    // A backslash with nothing after it is a line continuation cut short in a job file: refused
    // (shell-words would keep it as a literal backslash).
    if (command.len() - command.trim_end_matches('\\').len()) % 2 == 1 {
        return Err(format!("trailing backslash in {text:?}"));
    }
    shell_words::split(&command)
        .map_err(|_| format!("unterminated quote or trailing backslash in {text:?}"))
}

/// What `shell-words` leaves to the shell, in one pass over `text` that follows its quotes: the
/// command ends at the first unquoted `;`, `|`, `&`, `<` or `>` (the unquoted digits of `2>&1`
/// before a redirection are a file descriptor, not a word) or at a `#` that starts a word;
/// outside single quotes, `$VAR` and `${VAR}` become their [`SAMPLE_VARS`] value, quoted so
/// that `shell-words` reads it as literal text of the same word, and any other `$` form (command
/// substitution, special parameters) and backquotes are errors. Returns the command's text,
/// for `shell-words` to split; an unterminated quote is left for `shell-words` to refuse.
fn command_text(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let (mut single, mut double) = (false, false);
    // Where the current word starts in `out`, and whether it is only unquoted digits so far.
    let mut word: Option<usize> = None;
    let mut fd = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if single {
            single = c != '\'';
            out.push(c);
            continue;
        }
        let start = out.len();
        match c {
            '\\' => {
                out.push(c);
                out.extend(chars.next());
            }
            '"' => {
                double = !double;
                out.push(c);
            }
            '$' => out.push_str(&expand(&mut chars, text, double)?),
            '`' => return Err(format!("backquotes in {text:?}")),
            _ if double => out.push(c),
            '\'' => {
                single = true;
                out.push(c);
            }
            ' ' | '\t' | '\n' => {
                word = None;
                out.push(c);
                continue;
            }
            ';' | '|' | '&' | '<' | '>' => {
                if let (Some(w), true) = (word, fd && matches!(c, '<' | '>')) {
                    out.truncate(w);
                }
                return Ok(out);
            }
            '#' if word.is_none() => return Ok(out),
            _ => out.push(c),
        }
        if word.is_none() {
            word = Some(start);
            fd = true;
        }
        // A quote, a backslash or a `$` in the word makes it more than digits.
        fd = fd && c.is_ascii_digit();
    }
    Ok(out)
}

/// After a `$`: `NAME` or `{NAME}`, replaced from [`SAMPLE_VARS`] and quoted for where it
/// stands (inside double quotes or not), so that `shell-words` keeps it literal and in one word.
fn expand(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    text: &str,
    in_double_quotes: bool,
) -> Result<String, String> {
    let braced = chars.peek() == Some(&'{');
    if braced {
        chars.next();
    }
    let mut name = String::new();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_alphanumeric() || c == '_' {
            name.push(c);
            chars.next();
        } else {
            break;
        }
    }
    if braced && chars.next() != Some('}') {
        return Err(format!("unsupported ${{...}} form in {text:?}"));
    }
    if name.is_empty() {
        return Err(format!(
            "unsupported $ form (command substitution or special parameter) in {text:?}"
        ));
    }
    let value = sample_var(&name)
        .ok_or_else(|| format!("${name} in {text:?} has no sample value: add it to SAMPLE_VARS"))?;
    if in_double_quotes {
        Ok(value
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' | '$' | '`' => vec!['\\', c],
                _ => vec![c],
            })
            .collect())
    } else {
        if value.contains('\0') {
            return Err(format!("${name}: a NUL byte cannot be quoted"));
        }
        Ok(shell_words::quote(&value).into_owned())
    }
}

/// `/usr/local/bin/archiver` or `archiver`.
fn is_archiver(word: &str) -> bool {
    word == "archiver" || word.ends_with("/archiver")
}

// ---------------------------------------------------------------------------------------
// Extraction, per file type
// ---------------------------------------------------------------------------------------

/// Join `\`-newline continuations.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (start, mut acc) = cur.take().unwrap_or((i + 1, String::new()));
        let t = raw.trim_end();
        if let Some(head) = t.strip_suffix('\\') {
            acc.push_str(head);
            acc.push(' ');
            cur = Some((start, acc));
        } else {
            acc.push_str(t);
            out.push((start, acc));
        }
    }
    if let Some(c) = cur {
        out.push(c);
    }
    out
}

fn json_array(text: &str, what: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(text.trim())
        .map_err(|e| format!("{what}: not a JSON array of strings: {e}"))
}

fn dockerfile(text: &str) -> Result<Image, String> {
    let lines = logical_lines(text);
    let last_from = lines
        .iter()
        .rposition(|(_, l)| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .ok_or("no FROM")?;
    let mut image = Image::default();
    let (mut entrypoint, mut cmd) = (None, None);
    for (n, l) in &lines[last_from..] {
        let l = l.trim();
        let (instr, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
        match instr.to_ascii_uppercase().as_str() {
            "ENTRYPOINT" => {
                entrypoint = Some(json_array(rest, &format!("Dockerfile:{n} ENTRYPOINT"))?)
            }
            "CMD" => cmd = Some(json_array(rest, &format!("Dockerfile:{n} CMD"))?),
            "USER" => image.user = rest.trim().to_string(),
            "ENV" => {
                let words = shell_words(rest)?;
                if words.len() >= 2 && !words[0].contains('=') {
                    image.env.push((words[0].clone(), words[1..].join(" ")));
                } else {
                    for w in words {
                        let (k, v) = w
                            .split_once('=')
                            .ok_or_else(|| format!("Dockerfile:{n}: ENV {w:?} without ="))?;
                        image.env.push((k.to_string(), v.to_string()));
                    }
                }
            }
            _ => {}
        }
    }
    image.entrypoint = entrypoint.ok_or("the final stage has no ENTRYPOINT")?;
    image.cmd = cmd.ok_or("the final stage has no CMD")?;
    Ok(image)
}

fn json_env(v: Option<&Value>) -> Env {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    Some((
                        e.get("name")?.as_str()?.to_string(),
                        e.get("value")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, String> {
    serde_json::from_value(v.clone()).map_err(|e| format!("{what}: not an array of strings: {e}"))
}

fn json_lines(file: &str, v: &Value, image: &Image, out: &mut Vec<Line>) -> Result<(), String> {
    match v {
        Value::Object(o) => {
            if let Some(defs) = o.get("containerDefinitions").and_then(Value::as_array) {
                for (i, d) in defs.iter().enumerate() {
                    let at = format!("{file} containerDefinitions[{i}]");
                    let mut argv = match d.get("entryPoint") {
                        Some(e) => strings(e, &at)?,
                        None => image.entrypoint.clone(),
                    };
                    argv.extend(match d.get("command") {
                        Some(c) => strings(c, &at)?,
                        None => image.cmd.clone(),
                    });
                    let mut env = image.env.clone();
                    env.extend(json_env(d.get("environment")));
                    out.push(Line {
                        at,
                        argv,
                        env,
                        indexed: None,
                    });
                }
            }
            if let Some(ovs) = o.get("containerOverrides").and_then(Value::as_array) {
                for (i, ov) in ovs.iter().enumerate() {
                    if let Some(c) = ov.get("command") {
                        let at = format!("{file} containerOverrides[{i}]");
                        let mut argv = image.entrypoint.clone();
                        argv.extend(strings(c, &at)?);
                        let mut env = image.env.clone();
                        env.extend(json_env(ov.get("environment")));
                        out.push(Line {
                            at,
                            argv,
                            env,
                            indexed: None,
                        });
                    }
                }
            }
            for (k, x) in o {
                if k == "Input" {
                    if let Some(Ok(inner)) = x.as_str().map(serde_json::from_str::<Value>) {
                        json_lines(&format!("{file} Input"), &inner, image, out)?;
                    }
                }
                if k != "containerDefinitions" && k != "containerOverrides" {
                    json_lines(file, x, image, out)?;
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                json_lines(file, x, image, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A list of strings in YAML (`["a", "b"]` or a block list), as Kubernetes wants `args`,
/// `command`: anything else (a scalar, a number, a mapping) is an error, never skipped.
fn yaml_strings(v: &Yaml, what: &str) -> Result<Vec<String>, String> {
    v.as_vec()
        .and_then(|items| items.iter().map(|x| x.as_str().map(String::from)).collect())
        .ok_or_else(|| format!("{what}: not a list of strings (quote numbers): {v:?}"))
}

/// Everything in one YAML document this test reads: the entries of every `containers:` and
/// `initContainers:` list, and every mapping with a `completionMode` (a Job's spec). A merge
/// key (`<<`) is an error: the loader does not apply it, so what it brings would go unchecked.
fn yaml_walk<'a>(
    node: &'a Yaml,
    at: &str,
    containers: &mut Vec<&'a Yaml>,
    job_specs: &mut Vec<&'a Yaml>,
) -> Result<(), String> {
    match node {
        Yaml::Hash(h) => {
            for (k, v) in h {
                match k.as_str() {
                    Some("<<") => return Err(format!("{at}: merge keys (<<) are not supported")),
                    Some("containers" | "initContainers") => containers.extend(
                        v.as_vec()
                            .ok_or(format!("{at}: `{}` is not a list", k.as_str().unwrap()))?,
                    ),
                    Some("completionMode") => job_specs.push(node),
                    _ => {}
                }
                yaml_walk(v, at, containers, job_specs)?;
            }
        }
        Yaml::Array(items) => {
            for x in items {
                yaml_walk(x, at, containers, job_specs)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A Job spec's `completions` or `parallelism`.
fn yaml_count(spec: &Yaml, key: &str, at: &str) -> Result<u32, String> {
    match &spec[key] {
        Yaml::BadValue => Err(format!("{at}: an Indexed Job without {key}")),
        v => v
            .as_i64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(format!("{at}: {key} is not a count: {v:?}")),
    }
}

fn yaml_lines(file: &str, text: &str, image: &Image) -> Result<Vec<Line>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("{file}: invalid YAML: {e}"))?;
    let mut out = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        let at = format!("{file} document {}", d + 1);
        let (mut containers, mut job_specs) = (Vec::new(), Vec::new());
        yaml_walk(doc, &at, &mut containers, &mut job_specs)?;
        let container = match containers[..] {
            [] => continue,
            [c] if c.as_hash().is_some() => c,
            [_] => return Err(format!("{at}: a container that is not a mapping")),
            _ => {
                return Err(format!(
                    "{at}: one container per document, please ({} found)",
                    containers.len()
                ))
            }
        };
        let mut argv = match &container["command"] {
            Yaml::BadValue => image.entrypoint.clone(),
            c => yaml_strings(c, &format!("{at} command"))?,
        };
        argv.extend(match &container["args"] {
            Yaml::BadValue => image.cmd.clone(),
            a => yaml_strings(a, &format!("{at} args"))?,
        });
        let mut env = image.env.clone();
        match &container["env"] {
            Yaml::BadValue => {}
            Yaml::Array(vars) => {
                for var in vars {
                    let name = var["name"]
                        .as_str()
                        .ok_or(format!("{at} env: an entry without a name: {var:?}"))?;
                    match &var["value"] {
                        // `valueFrom`: nothing this test can know.
                        Yaml::BadValue => {}
                        Yaml::String(v) => env.push((name.to_string(), v.clone())),
                        v => {
                            return Err(format!(
                                "{at} env {name}: the value must be a string (quote it): {v:?}"
                            ))
                        }
                    }
                }
            }
            e => return Err(format!("{at}: env is not a list: {e:?}")),
        }
        let indexed = match job_specs
            .iter()
            .find(|s| s["completionMode"].as_str() == Some("Indexed"))
        {
            Some(spec) => Some((
                yaml_count(spec, "completions", &at)?,
                yaml_count(spec, "parallelism", &at)?,
            )),
            None => None,
        };
        out.push(Line {
            at,
            argv,
            env,
            indexed,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// CloudFormation templates
// ---------------------------------------------------------------------------------------

/// Parameter values: (name, value).
type Params = &'static [(&'static str, &'static str)];

/// Parameter values for each template's command lines: one set per line checked, on top of
/// the parameters' defaults (a parameter without a default needs a value here).
const CFN_VARIANTS: &[(&str, &str, Params)] = &[
    (
        "cloudformation/archive-account.yaml",
        "defaults",
        &[
            ("Image", IMAGE),
            ("ExternalId", "archiver-ext-7f3a"),
            (
                "Subnets",
                "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
            ),
            ("SecurityGroup", "sg-0123456789abcdef0"),
        ],
    ),
    (
        "cloudformation/archive-account.yaml",
        "listed accounts",
        &[
            ("Image", IMAGE),
            ("ExternalId", "archiver-ext-7f3a"),
            ("Subnets", "subnet-0123456789abcdef0"),
            ("SecurityGroup", "sg-0123456789abcdef0"),
            ("AccountIds", "111111111111,222222222222"),
            ("Regions", "eu-west-1,us-east-1"),
            ("MemberRoleName", "archiver-read"),
            ("GlueDatabaseName", "audit"),
            ("GlueTableName", "workspaces_web_sessions"),
            (
                "DigestSigningKeyArn",
                "arn:aws:kms:eu-west-1:123456789012:key/11111111-1111-1111-1111-111111111111",
            ),
        ],
    ),
    (
        "cloudformation/archive-account.yaml",
        "object lock",
        &[
            ("Image", IMAGE),
            ("ExternalId", "archiver-ext-7f3a"),
            ("Subnets", "subnet-0123456789abcdef0"),
            ("SecurityGroup", "sg-0123456789abcdef0"),
            ("OrganizationId", "o-a1b2c3d4e5"),
            ("ObjectLock", "Enabled"),
            ("ObjectLockRetentionDays", "2557"),
            ("Prefix", "audit/workspaces-web"),
        ],
    ),
];

/// Pseudo parameters, as a stack in the job files' sample account and region would see them.
const CFN_PSEUDO: &[(&str, &str)] = &[
    ("AWS::AccountId", "123456789012"),
    ("AWS::Region", "eu-west-1"),
    ("AWS::Partition", "aws"),
    ("AWS::StackName", "archiver"),
    ("AWS::URLSuffix", "amazonaws.com"),
];

/// Reads a template into JSON, the short forms of intrinsic functions (`!Ref X`, `!Sub ...`,
/// `!GetAtt A.B`, `!If [...]`) turned into their long forms (`{"Ref": "X"}`,
/// `{"Fn::Sub": ...}`), as CloudFormation does. Anchors, aliases and duplicated keys are errors.
struct CfnReader {
    stack: Vec<(Value, Option<String>, Option<String>)>,
    doc: Option<Value>,
    error: Option<String>,
}

impl CfnReader {
    fn tagged(value: Value, tag: Option<String>) -> Value {
        match tag.as_deref() {
            None => value,
            Some("Ref") => serde_json::json!({ "Ref": value }),
            Some("GetAtt") => {
                let v = match value {
                    Value::String(s) => match s.split_once('.') {
                        Some((a, b)) => serde_json::json!([a, b]),
                        None => Value::String(s),
                    },
                    v => v,
                };
                serde_json::json!({ "Fn::GetAtt": v })
            }
            Some(t) => serde_json::json!({ format!("Fn::{t}"): value }),
        }
    }

    fn add(&mut self, v: Value) {
        match self.stack.last_mut() {
            None => self.doc = Some(v),
            Some((Value::Array(a), _, _)) => a.push(v),
            Some((Value::Object(o), _, key)) => match key.take() {
                None => match v {
                    Value::String(k) => *key = Some(k),
                    k => self.error = Some(format!("a key that is not a string: {k}")),
                },
                Some(k) => {
                    if o.insert(k.clone(), v).is_some() {
                        self.error = Some(format!("duplicated key {k:?}"));
                    }
                }
            },
            Some(_) => unreachable!(),
        }
    }
}

impl yaml_rust2::parser::MarkedEventReceiver for CfnReader {
    fn on_event(&mut self, ev: yaml_rust2::Event, mark: yaml_rust2::scanner::Marker) {
        use yaml_rust2::scanner::TScalarStyle;
        use yaml_rust2::Event;
        let tag =
            |t: Option<yaml_rust2::parser::Tag>| t.filter(|t| t.handle == "!").map(|t| t.suffix);
        match ev {
            Event::Alias(_) => self.error = Some(format!("an alias at line {}", mark.line())),
            Event::Scalar(_, _, aid, _)
            | Event::SequenceStart(aid, _)
            | Event::MappingStart(aid, _)
                if aid != 0 =>
            {
                self.error = Some(format!("an anchor at line {}", mark.line()))
            }
            Event::Scalar(s, style, _, t) => {
                let v = if style != TScalarStyle::Plain {
                    Value::String(s)
                } else if let Ok(n) = s.parse::<i64>() {
                    Value::from(n)
                } else {
                    match s.as_str() {
                        "true" => Value::Bool(true),
                        "false" => Value::Bool(false),
                        "null" | "~" => Value::Null,
                        _ => Value::String(s),
                    }
                };
                self.add(Self::tagged(v, tag(t)));
            }
            Event::SequenceStart(_, t) => self.stack.push((Value::Array(vec![]), tag(t), None)),
            Event::MappingStart(_, t) => {
                self.stack
                    .push((Value::Object(Default::default()), tag(t), None))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (v, t, _) = self.stack.pop().unwrap();
                self.add(Self::tagged(v, t));
            }
            _ => {}
        }
    }
}

fn cfn_template(file: &str, text: &str) -> Result<Value, String> {
    let mut r = CfnReader {
        stack: Vec::new(),
        doc: None,
        error: None,
    };
    yaml_rust2::parser::Parser::new_from_str(text)
        .load(&mut r, false)
        .map_err(|e| format!("{file}: invalid YAML: {e}"))?;
    match (r.error, r.doc) {
        (Some(e), _) => Err(format!("{file}: {e}")),
        (None, Some(doc)) => Ok(doc),
        (None, None) => Err(format!("{file}: empty")),
    }
}

/// The values of a stack's parameters, its conditions, and how its references read.
struct CfnStack<'a> {
    template: &'a Value,
    params: Vec<(String, String)>,
}

/// `AWS::NoValue`: the item or property is left out.
const NO_VALUE: &str = "\u{0}AWS::NoValue";

impl CfnStack<'_> {
    fn scalar(v: &Value) -> Result<String, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            v => Err(format!("not a scalar: {v}")),
        }
    }

    fn reference(&self, name: &str) -> Result<String, String> {
        if name == "AWS::NoValue" {
            return Ok(NO_VALUE.into());
        }
        if let Some((_, v)) = CFN_PSEUDO.iter().find(|(k, _)| *k == name) {
            return Ok(v.to_string());
        }
        if let Some((_, v)) = self.params.iter().find(|(k, _)| k == name) {
            return Ok(v.clone());
        }
        match self.template["Resources"][name]["Type"].as_str() {
            // The physical id of a resource: a sample of the right shape, one per bucket.
            Some("AWS::S3::Bucket") if name == "Bucket" => Ok("my-archive-bucket".into()),
            Some("AWS::S3::Bucket") => Ok(format!("my-archive-{}", name.to_ascii_lowercase())),
            Some(_) => Ok(name.to_ascii_lowercase()),
            None => Err(format!(
                "Ref {name}: neither a parameter with a value (a default or one in CFN_VARIANTS), \
                 a pseudo parameter nor a resource"
            )),
        }
    }

    fn condition(&self, name: &str) -> Result<bool, String> {
        let c = &self.template["Conditions"][name];
        if c.is_null() {
            return Err(format!("no condition {name}"));
        }
        self.truth(c)
    }

    fn truth(&self, v: &Value) -> Result<bool, String> {
        let (f, args) = single(v).ok_or(format!("not a condition: {v}"))?;
        let list = || args.as_array().ok_or(format!("{f}: not a list: {args}"));
        match f {
            "Fn::Equals" => match &list()?[..] {
                [a, b] => Ok(self.resolve(a)? == self.resolve(b)?),
                _ => Err(format!("Fn::Equals of {args}")),
            },
            "Fn::Not" => Ok(!self.truth(&list()?[0])?),
            "Fn::And" => list()?
                .iter()
                .try_fold(true, |acc, x| Ok(acc & self.truth(x)?)),
            "Fn::Or" => list()?
                .iter()
                .try_fold(false, |acc, x| Ok(acc | self.truth(x)?)),
            "Condition" => self.condition(args.as_str().ok_or("Condition: not a name")?),
            _ => Err(format!("{f}: not a condition function")),
        }
    }

    /// A value with every intrinsic function replaced by what it gives in this stack;
    /// `AWS::NoValue` items and properties are dropped. A function this check does not know is
    /// an error, never passed through as text.
    fn resolve(&self, v: &Value) -> Result<Value, String> {
        if let Some((f, args)) = single(v) {
            match f {
                "Ref" => {
                    return Ok(Value::String(
                        self.reference(args.as_str().ok_or(format!("Ref {args}"))?)?,
                    ))
                }
                "Fn::GetAtt" => {
                    let parts: Vec<String> = serde_json::from_value(args.clone())
                        .map_err(|_| format!("Fn::GetAtt {args}"))?;
                    return Ok(Value::String(format!(
                        "arn:aws:sample::123456789012:{}",
                        parts.join("/")
                    )));
                }
                "Fn::Sub" => {
                    let s = args
                        .as_str()
                        .ok_or(format!("Fn::Sub with variables: {args}"))?;
                    return Ok(Value::String(self.sub(s)?));
                }
                "Fn::If" => {
                    return match args.as_array().map(Vec::as_slice) {
                        Some([Value::String(c), yes, no]) => {
                            self.resolve(if self.condition(c)? { yes } else { no })
                        }
                        _ => Err(format!("Fn::If {args}")),
                    }
                }
                f if f.starts_with("Fn::") => {
                    return Err(format!("{f}: not resolved by tests/jobs.rs"))
                }
                _ => {}
            }
        }
        Ok(match v {
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| self.resolve(x))
                    .filter(|x| !matches!(x, Ok(Value::String(s)) if s == NO_VALUE))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => {
                let mut out = serde_json::Map::new();
                for (k, x) in o {
                    match self.resolve(x)? {
                        Value::String(s) if s == NO_VALUE => {}
                        r => {
                            out.insert(k.clone(), r);
                        }
                    }
                }
                Value::Object(out)
            }
            v => v.clone(),
        })
    }

    /// `${Name}` (a parameter, pseudo parameter or resource), `${Res.Attr}`, `${!Literal}`.
    fn sub(&self, s: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = s;
        while let Some(p) = rest.find("${") {
            out.push_str(&rest[..p]);
            let end = rest[p..]
                .find('}')
                .ok_or(format!("Fn::Sub {s:?}: unclosed ${{"))?
                + p;
            let name = &rest[p + 2..end];
            if let Some(lit) = name.strip_prefix('!') {
                out.push_str(&format!("${{{lit}}}"));
            } else if let Some((res, att)) = name.split_once('.') {
                out.push_str(&format!("arn:aws:sample::123456789012:{res}/{att}"));
            } else {
                out.push_str(&self.reference(name)?);
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// `{"Ref": x}` or `{"Fn::...": x}`: the function and its arguments.
fn single(v: &Value) -> Option<(&str, &Value)> {
    let o = v.as_object()?;
    if o.len() != 1 {
        return None;
    }
    let (k, x) = o.iter().next()?;
    (k == "Ref" || k == "Condition" || k.starts_with("Fn::")).then_some((k.as_str(), x))
}

/// The command lines of a template: every container of every `AWS::ECS::TaskDefinition`,
/// once per parameter set of [`CFN_VARIANTS`] for this file (a template with task
/// definitions and no parameter set is an error).
fn cfn_lines(file: &str, text: &str, image: &Image) -> Result<Vec<Line>, String> {
    let variants: Vec<(&str, Params)> = CFN_VARIANTS
        .iter()
        .filter(|(f, _, _)| *f == file)
        .map(|(_, v, values)| (*v, *values))
        .collect();
    cfn_lines_with(file, text, image, &variants)
}

/// [`cfn_lines`] with these parameter sets.
fn cfn_lines_with(
    file: &str,
    text: &str,
    image: &Image,
    variants: &[(&str, Params)],
) -> Result<Vec<Line>, String> {
    let template = cfn_template(file, text)?;
    let resources = template["Resources"]
        .as_object()
        .ok_or(format!("{file}: no Resources"))?;
    let tasks: Vec<(&String, &Value)> = resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::ECS::TaskDefinition")
        .collect();
    if !tasks.is_empty() && variants.is_empty() {
        return Err(format!(
            "{file}: a task definition but no parameters in CFN_VARIANTS"
        ));
    }
    let mut out = Vec::new();
    for &(variant, values) in variants {
        let mut params: Vec<(String, String)> = Vec::new();
        let declared = template["Parameters"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (k, p) in &declared {
            let given = values
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_string());
            let value = match (given, p.get("Default")) {
                (Some(v), _) => v,
                (None, Some(d)) => CfnStack::scalar(d).map_err(|e| format!("{file} {k}: {e}"))?,
                // Left out: a Ref to it fails, naming it.
                (None, None) => continue,
            };
            params.push((k.clone(), value));
        }
        for (n, _) in values.iter() {
            if !declared.contains_key(*n) {
                return Err(format!("{file}: CFN_VARIANTS sets {n}, not a parameter"));
            }
        }
        let stack = CfnStack {
            template: &template,
            params,
        };
        for (name, task) in &tasks {
            let props = stack
                .resolve(&task["Properties"])
                .map_err(|e| format!("{file} {name} ({variant}): {e}"))?;
            let defs = props["ContainerDefinitions"]
                .as_array()
                .ok_or(format!("{file} {name}: no ContainerDefinitions"))?;
            for (i, d) in defs.iter().enumerate() {
                let at = format!("{file} {name} ContainerDefinitions[{i}] ({variant})");
                let mut argv = match d.get("EntryPoint") {
                    Some(e) => strings(e, &at)?,
                    None => image.entrypoint.clone(),
                };
                argv.extend(match d.get("Command") {
                    Some(c) => strings(c, &at)?,
                    None => image.cmd.clone(),
                });
                let mut env = image.env.clone();
                for e in d["Environment"].as_array().into_iter().flatten() {
                    let (Some(k), Some(v)) = (e["Name"].as_str(), e.get("Value")) else {
                        return Err(format!(
                            "{at}: an Environment entry without Name or Value: {e}"
                        ));
                    };
                    env.push((
                        k.to_string(),
                        CfnStack::scalar(v).map_err(|x| format!("{at} {k}: {x}"))?,
                    ));
                }
                out.push(Line {
                    at,
                    argv,
                    env,
                    indexed: None,
                });
            }
        }
    }
    Ok(out)
}

/// A crontab variable's value, without one pair of enclosing quotes (as cron strips them).
fn cron_value(s: &str) -> String {
    let s = s.trim();
    let unq = s
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')));
    unq.unwrap_or(s).to_string()
}

fn is_cron_field(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b"*/,-".contains(&b))
}

/// The command of a crontab entry (after five time fields), if `line` is one.
fn cron_command(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    for _ in 0..5 {
        let end = rest.find(char::is_whitespace)?;
        if !is_cron_field(&rest[..end]) {
            return None;
        }
        rest = rest[end..].trim_start();
    }
    Some(rest)
}

fn crontab_lines(file: &str, text: &str) -> Result<Vec<Line>, String> {
    let mut env = Vec::new();
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let at = format!("{file}:{}", i + 1);
        let t = raw.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(c) = t.strip_prefix('#') {
            if let Some(cmd) = cron_command(c) {
                entries.push((at, cmd.to_string()));
            }
            continue;
        }
        if let Some((k, v)) = t.split_once('=') {
            if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                env.push((k.to_string(), cron_value(v)));
                continue;
            }
        }
        let cmd = cron_command(t).ok_or(format!("{at}: neither an entry nor NAME=value: {t:?}"))?;
        entries.push((at, cmd.to_string()));
    }
    let mut out = Vec::new();
    for (at, cmd) in entries {
        let words = shell_words(&cmd).map_err(|e| format!("{at}: {e}"))?;
        if !words.first().is_some_and(|w| is_archiver(w)) {
            return Err(format!(
                "{at}: an entry that does not run archiver: {cmd:?}"
            ));
        }
        let mut argv = vec!["archiver".to_string()];
        argv.extend(words.into_iter().skip(1));
        out.push(Line {
            at,
            argv,
            env: env.clone(),
            indexed: None,
        });
    }
    Ok(out)
}

fn markdown_lines(file: &str, text: &str, image: &Image) -> Result<Vec<Line>, String> {
    let mut out = Vec::new();
    let mut in_fence = false;
    for (n, l) in logical_lines(text) {
        let t = l.trim();
        if t.starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            continue;
        }
        let at = format!("{file}:{n}");
        if t.starts_with("archiver ") || t.starts_with("/usr/local/bin/archiver ") {
            let words = shell_words(t).map_err(|e| format!("{at}: {e}"))?;
            let mut argv = vec!["archiver".to_string()];
            argv.extend(words.into_iter().skip(1));
            out.push(Line {
                at,
                argv,
                env: Vec::new(),
                indexed: None,
            });
        } else if t.starts_with("docker run ") {
            let words = shell_words(t).map_err(|e| format!("{at}: {e}"))?;
            let pos = words.iter().position(|w| w == IMAGE).ok_or(format!(
                "{at}: a docker run line without the image {IMAGE} (or \"$IMAGE\")"
            ))?;
            let mut env = image.env.clone();
            for pair in words[..pos].windows(2) {
                if pair[0] == "-e" || pair[0] == "--env" {
                    if let Some((k, v)) = pair[1].split_once('=') {
                        env.push((k.to_string(), v.to_string()));
                    }
                }
            }
            let mut argv = image.entrypoint.clone();
            if pos + 1 == words.len() {
                argv.extend(image.cmd.iter().cloned());
            } else {
                argv.extend(words[pos + 1..].iter().cloned());
            }
            out.push(Line {
                at,
                argv,
                env,
                indexed: None,
            });
        }
    }
    if in_fence {
        return Err(format!("{file}: an unclosed code fence"));
    }
    Ok(out)
}

/// Every `ARCHIVER_X` name in `text` that archiver does not read.
fn unknown_env_names(text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(p) = rest.find("ARCHIVER_") {
        let tail = &rest[p..];
        let len = tail
            .bytes()
            .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
            .count();
        let name = &tail[..len];
        if len > "ARCHIVER_".len() && !known.contains(name) {
            out.insert(name.to_string());
        }
        rest = &tail[len.max(1)..];
    }
    out
}

fn known_env_names() -> BTreeSet<String> {
    let mut known = cli_env_names();
    known.extend(NON_CLI_ENV.iter().map(|s| s.to_string()));
    known
}

// ---------------------------------------------------------------------------------------
// The files
// ---------------------------------------------------------------------------------------

fn jobs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs")
}

/// Every file under `jobs/`, as paths relative to it with `/`.
fn job_files() -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                let rel = p.strip_prefix(base).unwrap();
                let parts: Vec<String> = rel
                    .iter()
                    .map(|s| s.to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(&jobs_dir(), &jobs_dir(), &mut out);
    out.sort();
    out
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(jobs_dir().join(rel)).unwrap_or_else(|e| panic!("jobs/{rel}: {e}"))
}

fn image() -> Image {
    dockerfile(&read("Dockerfile")).unwrap_or_else(|e| panic!("jobs/Dockerfile: {e}"))
}

/// The command lines of one job file, by the rules at the top.
fn lines_of(rel: &str, text: &str, image: &Image) -> Result<Vec<Line>, String> {
    let name = rel.rsplit('/').next().unwrap();
    if name == "Dockerfile" {
        let mut argv = image.entrypoint.clone();
        argv.extend(image.cmd.iter().cloned());
        return Ok(vec![Line {
            at: format!("{rel} ENTRYPOINT+CMD"),
            argv,
            env: image.env.clone(),
            indexed: None,
        }]);
    }
    if name == "crontab" {
        return crontab_lines(rel, text);
    }
    if rel.starts_with("cloudformation/") {
        return cfn_lines(rel, text, image);
    }
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("json") => {
            let v: Value =
                serde_json::from_str(text).map_err(|e| format!("{rel}: invalid JSON: {e}"))?;
            let mut out = Vec::new();
            json_lines(rel, &v, image, &mut out)?;
            Ok(out)
        }
        Some("yaml") | Some("yml") => yaml_lines(rel, text, image),
        Some("md") => markdown_lines(rel, text, image),
        _ => Err(format!(
            "{rel}: no extraction rule for this kind of file (see tests/jobs.rs)"
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn every_command_line_in_jobs_parses_with_the_real_cli() {
    let files = job_files();
    let listed: Vec<String> = EXPECTED.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(
        files, listed,
        "files under jobs/ differ from EXPECTED in tests/jobs.rs"
    );

    let image = image();
    let mut failures = Vec::new();
    let mut parses = 0;
    for &(rel, want) in EXPECTED {
        let lines = match lines_of(rel, &read(rel), &image) {
            Ok(l) => l,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        if lines.len() != want {
            failures.push(format!(
                "jobs/{rel}: {} command lines found, EXPECTED says {want}: {:#?}",
                lines.len(),
                lines.iter().map(|l| &l.at).collect::<Vec<_>>()
            ));
        }
        for line in &lines {
            match check_line(line) {
                Ok(n) => parses += n,
                Err(e) => failures.push(format!("jobs/{}: {e}", line.at)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // 15 lines, the Indexed Job's once per index (4).
    assert_eq!(parses, 18);
}

#[test]
fn every_archiver_variable_in_jobs_is_one_archiver_reads() {
    let known = known_env_names();
    // clap's definitions were found at all (the check below is not vacuous).
    for n in [
        "ARCHIVER_STATE",
        "ARCHIVER_OUTPUT",
        "ARCHIVER_SHARD_COUNT",
        "ARCHIVER_S3_SSE",
    ] {
        assert!(known.contains(n), "{n} not among {known:?}");
    }
    let mut bad = Vec::new();
    let mut seen = 0;
    for rel in job_files() {
        let text = read(&rel);
        seen += text.matches("ARCHIVER_").count();
        for n in unknown_env_names(&text, &known) {
            bad.push(format!("jobs/{rel}: {n}"));
        }
    }
    assert!(
        bad.is_empty(),
        "archiver reads no such variable:\n{}",
        bad.join("\n")
    );
    assert!(seen >= 10, "only {seen} ARCHIVER_ names in jobs/");
    // And the env entries the lines carry are among those parsed (not only mentioned).
    let image = image();
    let env_lines: usize = EXPECTED
        .iter()
        .flat_map(|(rel, _)| lines_of(rel, &read(rel), &image).unwrap())
        .filter(|l| {
            l.env
                .iter()
                .any(|(k, _)| k.starts_with("ARCHIVER_") && k != "ARCHIVER_LOG_FORMAT")
        })
        .count();
    assert!(env_lines >= 3, "{env_lines}");
}

#[test]
fn the_image_is_what_the_job_files_assume() {
    let image = image();
    assert_eq!(image.entrypoint, ["archiver"]);
    assert_eq!(image.cmd, ["run"]);
    // k8s runAsUser / ECS user 10001: the image's own numeric user.
    assert!(image.user.starts_with("10001"), "USER {:?}", image.user);
}

#[test]
fn wrong_lines_are_rejected_by_the_same_checks() {
    let argv = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
    let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    let none = Vec::new();
    let bad: &[(&str, Env)] = &[
        ("archiver --shard 4/4 run", none.clone()),
        ("archiver --stat x.db run", none.clone()),
        ("archiver run --portal-id not-a-portal-id", none.clone()),
        ("archiver --output gs://bucket/x run", none.clone()),
        ("archiver --state s3://my-archive-bucket run", none.clone()),
        ("archiver --s3-expected-bucket-owner 1234 run", none.clone()),
        ("archiver --lease-ttl 10 run", none.clone()),
        ("archiver compact --older-than 2fortnights", none.clone()),
        ("archiver --shard-count 4 run", none.clone()),
        (
            "archiver --shard-count 4 run",
            env("JOB_COMPLETION_INDEX", "4"),
        ),
        ("archiver run", env("ARCHIVER_LOG_FORMAT", "jsn")),
        ("archiver run", env("ARCHIVER_S3_SSE", "aws:kmss")),
        ("archiver demo", none.clone()),
    ];
    for (line, env) in bad {
        assert!(check(&argv(line), env).is_err(), "accepted: {line} {env:?}");
    }
    // (And their corrected forms pass: the refusals above are about what they say.)
    assert!(check(&argv("archiver --shard 3/4 run"), &none).is_ok());
    let index = env("JOB_COMPLETION_INDEX", "3");
    assert!(check(&argv("archiver --shard-count 4 run"), &index).is_ok());
    // The same lines through the extraction: they are found, then refused.
    let image = image();
    let yaml = "kind: CronJob\nspec:\n  containers:\n    - name: archiver\n      args: [\"--shard\",\n        \"4/4\", \"run\"]\n";
    let lines = yaml_lines("k8s/x.yaml", yaml, &image).unwrap();
    assert_eq!(lines.len(), 1);
    assert!(check_line(&lines[0]).is_err());
    // A block list is read like a flow list, and checked the same.
    let block = "spec:\n  containers:\n    - name: archiver\n      args:\n        - --shard\n        - 4/4\n        - run\n";
    let lines = yaml_lines("k8s/x.yaml", block, &image).unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].argv, ["archiver", "--shard", "4/4", "run"]);
    assert!(check_line(&lines[0]).is_err());
    // What cannot be checked is an error, not a line silently skipped or half-read.
    let c = |rest: &str| format!("spec:\n  containers:\n    - name: a\n{rest}");
    let job = |rest: &str| c(&format!("  completionMode: Indexed\n{rest}"));
    for (yaml, why) in [
        (c("      args: run\n"), "not a list of strings"),
        (
            c("      args: [--shard-count, 4, run]\n"),
            "not a list of strings",
        ),
        (c("      command: {a: b}\n"), "not a list of strings"),
        (
            c("      env: [{name: ARCHIVER_X, value: 4}]\n"),
            "must be a string",
        ),
        (c("      env: {ARCHIVER_X: \"4\"}\n"), "env is not a list"),
        (
            c("      args: [run]\n      args: [--shard, 4/4, run]\n"),
            "duplicated key",
        ),
        (c("    - name: b\n"), "one container per document"),
        (
            c("  initContainers:\n    - name: b\n"),
            "one container per document",
        ),
        (c("      <<: {args: [--shard, 4/4, run]}\n"), "merge keys"),
        (c("      args: [\"run\"\n"), "invalid YAML"),
        (
            job("  completions: four\n  parallelism: 4\n"),
            "not a count",
        ),
        (job("  completions: 4\n"), "without parallelism"),
    ] {
        match yaml_lines("k8s/x.yaml", &yaml, &image) {
            Err(e) => assert!(e.contains(why), "{e} (wanted: {why}) for {yaml}"),
            Ok(lines) => panic!("{why} went unchecked: {yaml} gave {lines:?}"),
        }
    }
    let shared = "spec:\n  completionMode: Indexed\n  completions: 4\n  parallelism: 4\n  containers:\n    - args: [\"--state\", \"s3://b-1/state.db\", \"--output\", \"s3://b-1/a\", \"--shard-count\", \"4\", \"run\"]\n";
    let lines = yaml_lines("k8s/x.yaml", shared, &image).unwrap();
    let err = check_line(&lines[0]).unwrap_err();
    assert!(err.contains("{shard}"), "{err}");
    let local = "spec:\n  containers:\n    - args: [\"--state\", \"/data/state.db\", \"run\"]\n";
    let lines = yaml_lines("k8s/x.yaml", local, &image).unwrap();
    assert!(check_line(&lines[0]).unwrap_err().contains("S3"));
    let typo_env = "spec:\n  containers:\n    - args: [\"--state\", \"s3://b-1/s.db\", \"--output\", \"s3://b-1/a\", \"run\"]\n      env:\n        - name: ARCHIVER_CONCURRENCY\n          value: \"0\"\n";
    let lines = yaml_lines("k8s/x.yaml", typo_env, &image).unwrap();
    assert!(
        check_line(&lines[0]).is_err(),
        "ARCHIVER_CONCURRENCY=0 accepted"
    );
    let cron = "17 2 * * * archiver --statte /x run >>/log 2>&1\n";
    let lines = crontab_lines("crontab", cron).unwrap();
    assert_eq!(lines.len(), 1);
    assert!(check_line(&lines[0]).is_err());
    assert!(crontab_lines("crontab", "17 2 * * * /usr/bin/true\n").is_err());
    let task = r#"{"containerDefinitions": [{"name": "a", "command": ["--shard", "4/4", "run"]}]}"#;
    let mut lines = Vec::new();
    json_lines(
        "ecs/x.json",
        &serde_json::from_str(task).unwrap(),
        &image,
        &mut lines,
    )
    .unwrap();
    assert_eq!(lines.len(), 1);
    assert!(check_line(&lines[0]).is_err());
    // An EventBridge Scheduler target whose Input overrides the command is checked too.
    let input =
        r#"{"containerOverrides": [{"name": "archiver", "command": ["--shard", "4/4", "run"]}]}"#;
    let schedule = serde_json::json!({"Target": {"Input": input}});
    let mut lines = Vec::new();
    json_lines("ecs/s.json", &schedule, &image, &mut lines).unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].at, "ecs/s.json Input containerOverrides[0]");
    assert!(check_line(&lines[0]).is_err());
    let known = known_env_names();
    assert_eq!(
        unknown_env_names(
            "ARCHIVER_CONCURENCY=4 ARCHIVER_STATE ARCHIVER_LOG ARCHIVER_*",
            &known
        ),
        BTreeSet::from(["ARCHIVER_CONCURENCY".to_string()])
    );
}

#[test]
fn shell_words_split_like_sh() {
    let w = |s: &str| shell_words(s).unwrap();
    assert_eq!(
        w("a 'b c' \"d $HOME\" e\\ f"),
        ["a", "b c", "d /home/operator", "e f"]
    );
    assert_eq!(
        w("archiver --x ''  run >>/log 2>&1; echo no"),
        ["archiver", "--x", "", "run"]
    );
    assert_eq!(w("archiver run 2>>/log"), ["archiver", "run"]);
    assert_eq!(w("a ${IMAGE} # comment"), ["a", IMAGE]);
    assert_eq!(
        w("a 's3://b/state-{shard}.db' b"),
        ["a", "s3://b/state-{shard}.db", "b"]
    );
    // Quoted or escaped, the operators, `#` and `$` are text; single quotes expand nothing.
    assert_eq!(
        w("a \"b;c|d\" 'e>f' g\\&h x#y '$HOME' \"${HOME}\"/x $HOME'/'\"\""),
        [
            "a",
            "b;c|d",
            "e>f",
            "g&h",
            "x#y",
            "$HOME",
            "/home/operator/x",
            "/home/operator/"
        ]
    );
    // Only unquoted digits right before a redirection are a file descriptor.
    assert_eq!(w("a \"2\">/log"), ["a", "2"]);
    assert_eq!(w("a x2>/log"), ["a", "x2"]);
    assert_eq!(w("a \"$IMAGE\" ''"), ["a", IMAGE, ""]);
    for bad in [
        "a $UNSET",
        "a \"$UNSET\"",
        "a $(date)",
        "a \"$(date)\"",
        "a `date`",
        "a \"`date`\"",
        "a $?",
        "a ${HOME:-x}",
        "a 'open",
        "a \"open",
        "a trailing\\",
    ] {
        assert!(shell_words(bad).is_err(), "accepted: {bad}");
    }
    let joined = logical_lines("x a \\\n  b\ny");
    assert_eq!(joined, [(1, "x a    b".to_string()), (3, "y".to_string())]);
    let md = "text\n```sh\narchiver --state s.db \\\n  status\nkubectl get pods\n```\narchiver outside a fence\n";
    let lines = markdown_lines("README.md", md, &image()).unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].argv, ["archiver", "--state", "s.db", "status"]);
}

#[test]
fn cloudformation_lines_resolve_the_templates_functions() {
    let image = image();
    let rel = "cloudformation/archive-account.yaml";
    let lines = cfn_lines(rel, &read(rel), &image).unwrap();
    let env_of = |l: &Line, k: &str| {
        l.env
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    // `!Sub`, `!Ref` of parameters, pseudo parameters and resources, `!If` on conditions.
    let (org, listed, locked) = (&lines[0], &lines[1], &lines[2]);
    assert_eq!(org.argv, ["archiver", "--log-format", "json", "run"]);
    assert_eq!(
        env_of(org, "ARCHIVER_STATE").as_deref(),
        Some("s3://my-archive-bucket/state/archiver.db")
    );
    assert_eq!(
        env_of(org, "ARCHIVER_OUTPUT").as_deref(),
        Some("s3://my-archive-bucket/archiver")
    );
    assert_eq!(
        env_of(org, "ARCHIVER_REGIONS").as_deref(),
        Some("eu-west-1")
    );
    assert_eq!(
        env_of(org, "ARCHIVER_ORGANIZATION").as_deref(),
        Some("true")
    );
    assert_eq!(env_of(org, "ARCHIVER_ACCOUNTS"), None);
    assert_eq!(
        env_of(org, "ARCHIVER_GLUE_TABLE").as_deref(),
        Some("archiver.sessions")
    );
    assert_eq!(env_of(listed, "ARCHIVER_ORGANIZATION"), None);
    assert_eq!(
        env_of(listed, "ARCHIVER_ACCOUNTS").as_deref(),
        Some("111111111111,222222222222")
    );
    assert_eq!(
        env_of(listed, "ARCHIVER_GLUE_TABLE").as_deref(),
        Some("audit.workspaces_web_sessions")
    );
    let (_, cfg) = check(&listed.argv, &listed.env).unwrap();
    assert_eq!(cfg.regions, ["eu-west-1", "us-east-1"]);
    // Without Object Lock nothing says where to stage (the output); with it, the state and the
    // staged files are in the second bucket, the staged files under the output's prefix there.
    assert_eq!(env_of(org, "ARCHIVER_STAGING"), None);
    assert_eq!(
        env_of(locked, "ARCHIVER_STATE").as_deref(),
        Some("s3://my-archive-statebucket/state/archiver.db")
    );
    assert_eq!(
        env_of(locked, "ARCHIVER_OUTPUT").as_deref(),
        Some("s3://my-archive-bucket/audit/workspaces-web")
    );
    assert_eq!(
        env_of(locked, "ARCHIVER_STAGING").as_deref(),
        Some("s3://my-archive-statebucket/audit/workspaces-web")
    );
    let (_, cfg) = check(&locked.argv, &locked.env).unwrap();
    let staging = cfg.s3.staging.as_ref().unwrap();
    assert_eq!(
        (staging.bucket.as_str(), staging.key.as_str()),
        ("my-archive-statebucket", "audit/workspaces-web")
    );
    assert_eq!((cfg.s3.retain_for, cfg.s3.lock_mode), (None, None));
    // What cannot be resolved is an error; a bad value is refused by the CLI.
    let task = |env: &str| {
        format!(
            "Parameters:\n  P: {{Type: String}}\nResources:\n  T:\n    Type: AWS::ECS::TaskDefinition\n    Properties:\n      ContainerDefinitions:\n        - Name: a\n          Environment:\n            - {{Name: ARCHIVER_STATE, Value: s3://b-1/s.db}}\n            - {{Name: ARCHIVER_OUTPUT, Value: s3://b-1/a}}\n            - {env}\n"
        )
    };
    let sample: &[(&str, Params)] = &[("sample", &[])];
    for (env, why) in [
        ("{Name: X, Value: !Ref P}", "Ref P"),
        ("{Name: X, Value: !Join [\",\", [a, b]]}", "Fn::Join"),
        ("{Name: X, Value: !If [Nope, a, b]}", "no condition Nope"),
        ("{Name: X, Value: &a y}", "anchor"),
    ] {
        let err = cfn_lines_with(rel, &task(env), &image, sample).unwrap_err();
        assert!(err.contains(why), "{err} (wanted {why})");
    }
    let lines = cfn_lines_with(
        rel,
        &task("{Name: ARCHIVER_ACCOUNTS, Value: \"1234\"}"),
        &image,
        sample,
    )
    .unwrap();
    assert_eq!(lines.len(), 1);
    assert!(check_line(&lines[0]).is_err());
    let err = cfn_lines(
        "cloudformation/x.yaml",
        &task("{Name: X, Value: y}"),
        &image,
    )
    .unwrap_err();
    assert!(err.contains("CFN_VARIANTS"), "{err}");
}
