//! Signed digests end to end: `run --sign-key` with a KMS key of moto's KMS (real ECDSA
//! signatures), reached through a counting proxy, and with a local key file. Each digest's
//! signature is checked by Python's `cryptography` against a public key the test obtained on
//! its own (from KMS with the SDK, or from the private key file with `cryptography`), never
//! through archiver's code. A state makes one KMS call per command once it knows its key.

mod util;

use std::path::Path;

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use util::s3::{FaultProxy, Moto};
use util::{sim_config, Env, Run};

/// Python: argv[1] a public key (PEM file, or DER as hex), argv[2..] digest files. Checks each
/// digest's signature over its first line and its `public_key_sha256`; prints one line per
/// digest: `<seq> ok`, or exits non-zero naming the first that fails.
const CHECK: &str = r#"
import base64, hashlib, json, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
key = sys.argv[1]
if key.endswith('.pem'):
    pem = open(key, 'rb').read()
    try:
        public = serialization.load_pem_private_key(pem, None).public_key()
    except ValueError:
        public = serialization.load_pem_public_key(pem)
else:
    public = serialization.load_der_public_key(bytes.fromhex(key))
der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
for path in sys.argv[2:]:
    text = open(path, 'rb').read()
    body, sig, end = text.split(b'\n')
    assert end == b'', path
    b = json.loads(body)
    s = json.loads(sig)['signature']
    assert b['signing']['algorithm'] == 'ECDSA_SHA_256', b['signing']
    assert b['signing']['public_key_sha256'] == hashlib.sha256(der).hexdigest(), path
    public.verify(base64.b64decode(s, validate=True), body, ec.ECDSA(hashes.SHA256()))
    print(b['seq'], 'ok')
"#;

fn digests(archive: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = util::files_below(&archive.join("_digest"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

fn python_check(key: &str, files: &[std::path::PathBuf]) -> String {
    let out = std::process::Command::new(util::python_with("cryptography"))
        .arg("-c")
        .arg(CHECK)
        .arg(key)
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python rejected a digest:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// KMS calls (by `X-Amz-Target`) the proxy has seen so far.
fn kms_calls(proxy: &FaultProxy) -> Vec<String> {
    proxy
        .faults()
        .seen
        .iter()
        .flat_map(|(_, _, headers)| {
            headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("x-amz-target"))
                .map(|(_, v)| v.clone())
        })
        .collect()
}

async fn run_with_kms(env: &Env, endpoint: &str, args: &[&str]) -> Run {
    let mut c = env.cmd(args);
    c.env("AWS_ENDPOINT_URL_KMS", endpoint);
    Run::from(c.output().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_signed_digests_verify_independently_with_one_kms_call_per_command() {
    let moto = Moto::start().await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let kms = util::kms::client(&moto.endpoint, "us-east-1");
    let arn = util::kms::create_key(&kms, KeyUsageType::SignVerify, KeySpec::EccNistP256).await;
    let der = kms.get_public_key().key_id(&arn).send().await.unwrap();
    let der_hex: String = der
        .public_key()
        .unwrap()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    let env = Env::new(sim_config(2, 30, 2)).await;
    // The first command checks the key (GetPublicKey) and signs its digest (Sign).
    run_with_kms(&env, &proxy.endpoint, &["--sign-key", &arn, "run"])
        .await
        .ok();
    let first = kms_calls(&proxy);
    assert_eq!(
        first,
        ["TrentService.GetPublicKey", "TrentService.Sign"],
        "KMS calls of the first run"
    );
    // Later commands of the same state: one call each, the digest's Sign.
    for _ in 0..2 {
        run_with_kms(&env, &proxy.endpoint, &["--sign-key", &arn, "run"])
            .await
            .ok();
    }
    let all = kms_calls(&proxy);
    assert_eq!(
        all[first.len()..],
        ["TrentService.Sign", "TrentService.Sign"]
    );
    env.assert_exact();

    let files = digests(&env.archive());
    assert_eq!(files.len(), 3, "{files:?}");
    let out = python_check(&der_hex, &files);
    assert_eq!(out.lines().count(), 3, "{out}");
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let body: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(body["signing"]["key_id"], arn.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_signed_digests_verify_independently_and_a_tampered_one_does_not() {
    let env = Env::new(sim_config(2, 30, 2)).await;
    let key = env.dir.path().join("sign.pem");
    let key = key.to_str().unwrap();
    env.run(&["keygen", "--out", key]).await.ok();
    env.run(&["--sign-key", key, "run"]).await.ok();
    env.run(&["--sign-key", key, "run"]).await.ok();
    env.assert_exact();
    let files = digests(&env.archive());
    assert_eq!(files.len(), 2, "{files:?}");
    // The public key is derived by Python from the private key file, not by archiver.
    python_check(key, &files);

    // One changed byte in a signed body: Python's check refuses it.
    let text = std::fs::read_to_string(&files[1]).unwrap();
    let tampered = text.replacen("\"command\":\"run\"", "\"command\":\"ran\"", 1);
    assert_ne!(tampered, text);
    std::fs::write(&files[1], tampered).unwrap();
    let out = std::process::Command::new(util::python_with("cryptography"))
        .arg("-c")
        .arg(CHECK)
        .arg(key)
        .args(&files)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InvalidSignature"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
