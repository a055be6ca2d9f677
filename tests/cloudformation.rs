//! The CloudFormation templates of `jobs/cloudformation/`: `cfn-lint` finds nothing in them (no
//! error, warning or informational finding), and the stacks, created in moto's CloudFormation,
//! hold what the job needs, as read back from moto's services (`tests/py/cfn_check.py`: which
//! resource types moto creates, and how the others are checked, is described there). The
//! command lines in the templates are checked with the real CLI by `tests/jobs.rs`.

mod util;

use std::path::{Path, PathBuf};

use util::s3::Moto;

/// cfn-lint's command, run by the venv's Python (the package has no `__main__`).
const CFN_LINT: &str = "import sys; from cfnlint.runner import main; sys.exit(main())";

fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/cloudformation")
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
    let out = std::process::Command::new(&py)
        .args(["-c", CFN_LINT, "--format", "parseable", "--"])
        .args(&files)
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
    let dir = tempfile::tempdir().unwrap();
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
