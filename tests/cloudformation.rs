//! The CloudFormation templates of `jobs/cloudformation/`: `cfn-lint` finds nothing in them (no
//! error, warning or informational finding), and the stacks, created in moto's CloudFormation,
//! hold what the job needs, as read back from moto's services (`tests/py/cfn_check.py`: which
//! resource types moto creates, and how the others are checked, is described there). The
//! command lines in the templates are checked with the real CLI by `tests/jobs.rs`.
//!
//! checkov finds nothing in `jobs/` (its CloudFormation, Kubernetes, Dockerfile and secrets
//! checks; the IAM policies in JSON through its CloudFormation IAM checks) but what a file
//! skips inline, with its reason. Both linters also check the archive-account template as
//! deployed with S3 Object Lock (its `ObjectLock` parameter's default turned to `Enabled`:
//! checkov evaluates conditions from the defaults, and leaves out the resources made only with
//! the lock).
//!
//! The IAM table of `docs/operations.md` names exactly what each shipped policy grants
//! (`tests/py/iam_table.py`).

mod util;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use util::s3::Moto;

/// cfn-lint's command, run by the venv's Python (the package has no `__main__`).
const CFN_LINT: &str = "import sys; from cfnlint.runner import main; sys.exit(main())";

fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/cloudformation")
}

/// The archive-account template with S3 Object Lock on by default, as a stack deployed with
/// `ObjectLock=Enabled` reads.
fn with_object_lock(text: &str) -> String {
    let off = "  ObjectLock:\n    Type: String\n    Default: Disabled\n";
    assert_eq!(text.matches(off).count(), 1, "no ObjectLock parameter");
    text.replace(off, &off.replace("Disabled", "Enabled"))
}

fn templates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(templates_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

#[test]
fn every_template_passes_cfn_lint() {
    let py = util::python_with("cfnlint");
    let files = templates();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["archive-account.yaml", "member-read-role.yaml"]);
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("archive-account.object-lock.yaml");
    std::fs::write(
        &locked,
        with_object_lock(&std::fs::read_to_string(&files[0]).unwrap()),
    )
    .unwrap();
    let out = std::process::Command::new(&py)
        .args(["-c", CFN_LINT, "--format", "parseable", "--"])
        .args(&files)
        .arg(&locked)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // Exit 0 means no finding at all (2: error, 4: warning, 8: informational, or-ed).
    assert!(
        out.status.success() && stdout.trim().is_empty(),
        "cfn-lint: {}\n{stdout}{stderr}",
        out.status
    );
    // The linter did read them: a broken template is reported.
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(&files[1]).unwrap();
    std::fs::write(
        &broken,
        text.replace("MaxSessionDuration: 3600", "MaxSessionDuration: 60"),
    )
    .unwrap();
    let out = std::process::Command::new(&py)
        .args(["-c", CFN_LINT, "--format", "parseable", "--"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stdout).contains(":E3034:"),
        "cfn-lint accepted MaxSessionDuration 60: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn the_stacks_in_moto_hold_what_the_job_needs() {
    let py = util::python_with("boto3, yaml");
    let moto = Moto::start().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/cfn_check.py");
    let out = tokio::process::Command::new(&py)
        .arg(&script)
        .arg(&moto.endpoint)
        .arg(templates_dir())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "cfn_check.py: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// checkov (`ARCHIVER_TEST_CHECKOV`, set by `tests/run`: a venv of its own, as its pinned
/// dependencies conflict with `tests/requirements.txt`).
fn checkov() -> String {
    let checkov = std::env::var("ARCHIVER_TEST_CHECKOV").unwrap_or_else(|_| {
        panic!("ARCHIVER_TEST_CHECKOV is not set: run the tests through tests/run")
    });
    assert!(
        Path::new(&checkov).is_file(),
        "{checkov} is missing: run the tests through tests/run"
    );
    checkov
}

/// A CloudFormation template holding one IAM resource: checkov has no framework for a bare
/// policy document, but its CloudFormation IAM checks read the same document there.
fn iam_template(name: &str, doc: Value) -> Value {
    let resource = if name.starts_with("iam-trust-") {
        json!({ "Type": "AWS::IAM::Role", "Properties": { "AssumeRolePolicyDocument": doc } })
    } else {
        json!({ "Type": "AWS::IAM::ManagedPolicy", "Properties": { "PolicyDocument": doc } })
    };
    json!({ "AWSTemplateFormatVersion": "2010-09-09", "Resources": { "Policy": resource } })
}

/// Copy `jobs/` into `to`, each IAM policy (`iam-*.json`) wrapped by [`iam_template`].
/// Returns the files checkov has checks for, as checkov names them (`/jobs/...`). (The ECS
/// JSON files have no checkov framework, and their checks through CloudFormation come down to
/// EFS volumes, which they have none of; the template's task definition is checked as it is.)
fn copy_for_checkov(from: &Path, to: &Path, rel: &str, checked: &mut Vec<String>) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let (src, dst, rel) = (e.path(), to.join(&name), format!("{rel}/{name}"));
        if src.is_dir() {
            copy_for_checkov(&src, &dst, &rel, checked);
        } else if name.starts_with("iam-") && name.ends_with(".json") {
            let doc: Value = serde_json::from_str(&std::fs::read_to_string(&src).unwrap()).unwrap();
            let wrapped = serde_json::to_string_pretty(&iam_template(&name, doc)).unwrap();
            std::fs::write(&dst, wrapped).unwrap();
            checked.push(rel);
        } else {
            std::fs::copy(&src, &dst).unwrap();
            if name == "Dockerfile" || name.ends_with(".yaml") {
                checked.push(rel);
            }
        }
    }
}

#[test]
fn checkov_finds_nothing_in_jobs_but_argued_skips() {
    let checkov = checkov();
    // Not tempdir()'s `.tmpXXXX`: checkov's Kubernetes runner ignores hidden folders.
    let dir = tempfile::Builder::new()
        .prefix("checkov-")
        .tempdir()
        .unwrap();
    let jobs = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
    let mut checked = Vec::new();
    copy_for_checkov(&jobs, &dir.path().join("jobs"), "/jobs", &mut checked);
    let template = jobs.join("cloudformation/archive-account.yaml");
    std::fs::write(
        dir.path()
            .join("jobs/cloudformation/archive-account.object-lock.yaml"),
        with_object_lock(&std::fs::read_to_string(template).unwrap()),
    )
    .unwrap();
    checked.push("/jobs/cloudformation/archive-account.object-lock.yaml".into());
    checked.sort();
    // The control: a policy granting everything, which checkov must fail (so the policies
    // above were really checked, not skipped as unparsed).
    let admin = json!({ "Version": "2012-10-17", "Statement": [
        { "Effect": "Allow", "Action": "*", "Resource": "*" } ] });
    std::fs::create_dir(dir.path().join("control")).unwrap();
    std::fs::write(
        dir.path().join("control/iam-admin.json"),
        iam_template("iam-admin.json", admin).to_string(),
    )
    .unwrap();

    let out = std::process::Command::new(&checkov)
        .arg("--directory")
        .arg(dir.path())
        .args([
            "--framework",
            "cloudformation",
            "kubernetes",
            "dockerfile",
            "secrets",
        ])
        .args(["--output", "json", "--soft-fail"])
        // Nothing from the network: no rule mappings or policies from Prisma Cloud, no PyPI
        // version check.
        .arg("--skip-download")
        .env("BC_SKIP_MAPPING", "TRUE")
        .env("CKV_SKIP_PACKAGE_UPDATE_CHECK", "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "checkov: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("checkov's output is not JSON ({e}): {stdout}"));
    // One report per framework that found files: a list, or the report itself if only one.
    let reports = match reports {
        Value::Array(list) => list,
        one => vec![one],
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut resources = std::collections::BTreeSet::new();
    let (mut failed, mut unargued, mut control) = (Vec::new(), Vec::new(), 0);
    for report in &reports {
        let results = &report["results"];
        let list = |key: &str| results[key].as_array().cloned().unwrap_or_default();
        for c in list("passed_checks")
            .iter()
            .chain(&list("failed_checks"))
            .chain(&list("skipped_checks"))
        {
            seen.insert(c["file_path"].as_str().unwrap_or("").to_string());
            resources.insert(format!(
                "{} {}",
                c["file_path"].as_str().unwrap_or(""),
                c["resource"].as_str().unwrap_or("")
            ));
        }
        let line = |c: &Value| {
            format!(
                "{} {} ({}): {} {} lines {}",
                report["check_type"].as_str().unwrap_or("?"),
                c["check_id"].as_str().unwrap_or("?"),
                c["check_name"].as_str().unwrap_or("?"),
                c["file_path"].as_str().unwrap_or("?"),
                c["resource"].as_str().unwrap_or("?"),
                c["file_line_range"]
            )
        };
        for c in list("failed_checks") {
            if c["file_path"].as_str() == Some("/control/iam-admin.json") {
                control += 1;
            } else {
                failed.push(line(&c));
            }
        }
        // Every skip carries its reason, in words.
        for c in list("skipped_checks") {
            let why = c["check_result"]["suppress_comment"].as_str().unwrap_or("");
            if why.trim().len() < 20 {
                unargued.push(format!("{} ({why:?})", line(&c)));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "checkov: {} failed checks (fix them, or skip one inline with its reason):\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert!(
        unargued.is_empty(),
        "skips without a reason:\n{}",
        unargued.join("\n")
    );
    assert!(
        control >= 3,
        "checkov passed a policy granting everything: {stdout}"
    );
    let missed: Vec<&String> = checked.iter().filter(|f| !seen.contains(*f)).collect();
    assert!(
        missed.is_empty(),
        "checkov checked nothing in {missed:?} (it checked {seen:?})"
    );
    // The second bucket exists only with Object Lock, and was checked then.
    let state_bucket = "archive-account.object-lock.yaml AWS::S3::Bucket.StateBucket";
    assert!(
        resources.contains(&format!("/jobs/cloudformation/{state_bucket}")),
        "checkov did not check the state bucket: {resources:?}"
    );
}

/// `tests/py/iam_table.py` on an operations.md and a jobs folder.
fn iam_table(py: &str, doc: &Path, jobs: &Path) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/iam_table.py");
    std::process::Command::new(py)
        .arg(script)
        .arg(doc)
        .arg(jobs)
        .output()
        .unwrap()
}

#[test]
fn the_iam_table_names_what_every_shipped_policy_grants() {
    let py = util::python_with("yaml");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (doc, jobs) = (root.join("docs/operations.md"), root.join("jobs"));
    let out = iam_table(&py, &doc, &jobs);
    assert!(
        out.status.success(),
        "iam_table.py: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The check does compare: without the row of an action the policies grant, it fails.
    let text = std::fs::read_to_string(&doc).unwrap();
    let row = "| `s3:AbortMultipartUpload` |";
    assert_eq!(text.matches(row).count(), 1, "no single row {row}");
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("operations.md");
    let without: Vec<&str> = text.lines().filter(|l| !l.starts_with(row)).collect();
    std::fs::write(&cut, without.join("\n")).unwrap();
    let out = iam_table(&py, &cut, &jobs);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("jobs/iam-policy.json names s3:AbortMultipartUpload"),
        "iam_table.py accepted a table without {row}: {}\n{stderr}",
        out.status
    );
    // Nor does it accept a table that no longer says what the roles deny.
    let row = "| `s3:BypassGovernanceRetention` |";
    let (i, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.starts_with(row))
        .unwrap_or_else(|| panic!("no row {row}"));
    let mut cells: Vec<&str> = line.trim_matches('|').split('|').collect();
    cells[2] = " — ";
    let unsaid = format!("|{}|", cells.join("|"));
    let mut lines: Vec<&str> = text.lines().collect();
    lines[i] = &unsaid;
    std::fs::write(&cut, lines.join("\n")).unwrap();
    let out = iam_table(&py, &cut, &jobs);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("a Deny statement names s3:BypassGovernanceRetention"),
        "iam_table.py accepted a nightly column not saying it denies s3:BypassGovernanceRetention: {}\n{stderr}",
        out.status
    );
}
