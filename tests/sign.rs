//! Signing digests, against servers and tools nobody here wrote: moto's KMS (real RSA-PSS and
//! ECDSA signatures from `CreateKey KeyUsage=SIGN_VERIFY`, `Sign`, `GetPublicKey`), keys made
//! by `openssl genpkey`, and every signature checked again by Python's `cryptography` (or
//! `openssl`) with the public key `archiver public-key` printed, not only by archiver's code.

mod util;

use std::path::{Path, PathBuf};

use archiver::sign::{SigningKey, VerifyingKey};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use util::s3::Moto;
use util::{aws_env, python_with, Run, BIN};

/// Python `cryptography` checks `SIG` (a file) as `ALG`'s signature of `MSG` (a file) by the
/// PEM public key `PEM`, and prints the SHA-256 of the key's DER SubjectPublicKeyInfo. It
/// exits non-zero if the signature is not valid. `SALT` is `digest` (RSA-PSS with a salt as
/// long as the hash, what KMS signs with) or `auto` (any salt length).
const PY_VERIFY: &str = r#"
import hashlib, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
pem, alg, msg, sig, salt = sys.argv[1:6]
key = serialization.load_pem_public_key(open(pem, "rb").read())
msg = open(msg, "rb").read()
sig = open(sig, "rb").read()
h = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[-3:]]
if alg.startswith("RSASSA_PSS_"):
    length = padding.PSS.DIGEST_LENGTH if salt == "digest" else padding.PSS.AUTO
    key.verify(sig, msg, padding.PSS(mgf=padding.MGF1(h), salt_length=length), h)
elif alg.startswith("ECDSA_"):
    key.verify(sig, msg, ec.ECDSA(h))
else:
    sys.exit("unknown algorithm " + alg)
der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
print(hashlib.sha256(der).hexdigest())
"#;

/// Python's verdict on a signature: `Some(public key SHA-256)` if valid, `None` if not.
fn python_verify(
    dir: &Path,
    pem: &Path,
    alg: &str,
    msg: &[u8],
    sig: &[u8],
    salt: &str,
) -> Option<String> {
    let py = python_with("cryptography");
    let (m, s) = (dir.join("msg.bin"), dir.join("sig.bin"));
    std::fs::write(&m, msg).unwrap();
    std::fs::write(&s, sig).unwrap();
    let out = std::process::Command::new(py)
        .args(["-c", PY_VERIFY])
        .arg(pem)
        .arg(alg)
        .arg(&m)
        .arg(&s)
        .arg(salt)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return Some(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    assert!(
        stderr.contains("InvalidSignature"),
        "python failed:\n{stderr}"
    );
    None
}

/// Run the binary with moto's KMS (when given) as its KMS endpoint.
async fn archiver(args: &[&str], kms_endpoint: Option<&str>) -> Run {
    let mut c = tokio::process::Command::new(BIN);
    c.args(args);
    let endpoint = kms_endpoint.unwrap_or("http://127.0.0.1:9");
    for (k, v) in aws_env(endpoint) {
        c.env(k, v);
    }
    c.env("AWS_ENDPOINT_URL_KMS", endpoint);
    c.env_remove("ARCHIVER_FAILPOINT");
    Run::from(c.output().await.unwrap())
}

/// A message of `len` bytes, not all alike.
fn message(len: usize) -> Vec<u8> {
    let base = br#"{"version":1,"seq":7,"manifests":[]}"#;
    (0..len)
        .map(|i| base[i % base.len()] ^ (i / base.len()) as u8)
        .collect()
}

/// For RSA_2048 and ECC_NIST_P256 (and P-384) KMS keys: `SigningKey::open(arn)` picks the
/// algorithm from the key spec, `sign` makes one `Sign` call, and the signature verifies with
/// `VerifyingKey::from_kms` and, independently, with Python's `cryptography` given the PEM that
/// `archiver public-key` printed; the fingerprints agree. An altered message fails both. A
/// client set up for another region still reaches the key (called in its ARN's region).
#[tokio::test]
async fn kms_keys_sign_and_python_verifies_with_the_printed_public_key() {
    let moto = Moto::start().await;
    let client = util::kms::client(&moto.endpoint, "us-east-1");
    let elsewhere = util::kms::client(&moto.endpoint, "eu-west-1");
    let dir = tempfile::tempdir().unwrap();
    for (spec, alg) in [
        (KeySpec::Rsa2048, "RSASSA_PSS_SHA_256"),
        (KeySpec::EccNistP256, "ECDSA_SHA_256"),
        (KeySpec::EccNistP384, "ECDSA_SHA_384"),
    ] {
        let arn = util::kms::create_key(&client, KeyUsageType::SignVerify, spec.clone()).await;
        let key = SigningKey::open(&arn, Some(&elsewhere)).await.unwrap();
        assert_eq!(key.algorithm(), alg, "{spec:?}");
        assert_eq!(key.key_id(), arn);
        // A digest body: up to 4 KiB is sent whole (RAW).
        let msg = message(4096);
        let sig = key.sign(&msg).await.unwrap();

        let from_kms = VerifyingKey::from_kms(&client, &arn).await.unwrap();
        assert_eq!(from_kms.sha256(), key.public_key_sha256());
        assert!(from_kms.verify(alg, &msg, &sig), "{spec:?}");
        let mut altered = msg.clone();
        altered[100] ^= 1;
        assert!(!from_kms.verify(alg, &altered, &sig), "{spec:?}");

        // What an auditor is handed, then checks with a tool of their own.
        let pem = dir.path().join(format!("{}.pem", spec.as_str()));
        let run = archiver(
            &[
                "public-key",
                "--sign-key",
                &arn,
                "--out",
                pem.to_str().unwrap(),
            ],
            Some(&moto.endpoint),
        )
        .await;
        run.ok();
        assert!(
            run.stdout.contains(key.public_key_sha256()) && run.stdout.contains(alg),
            "{}",
            run.stdout
        );
        // moto's RSA-PSS uses the longest salt (KMS's is the hash's length): any salt here.
        let fingerprint = python_verify(dir.path(), &pem, alg, &msg, &sig, "auto");
        assert_eq!(
            fingerprint.as_deref(),
            Some(key.public_key_sha256()),
            "{spec:?}"
        );
        assert_eq!(
            python_verify(dir.path(), &pem, alg, &altered, &sig, "auto"),
            None
        );
        // Without --out, the PEM on stdout is the same.
        let run = archiver(&["public-key", "--sign-key", &arn], Some(&moto.endpoint)).await;
        run.ok();
        assert_eq!(run.stdout, std::fs::read_to_string(&pem).unwrap());
    }
}

/// A signature that does not verify with the key's public key is never returned. moto's
/// `Sign` ignores `MessageType=DIGEST` (getmoto/moto#10202: it signs the hash it is sent as if
/// it were the message), which is what archiver sends KMS for a message over 4 KiB: against
/// moto, that signature is wrong, and `sign` says so in one line naming the key.
#[tokio::test]
async fn a_kms_signature_that_does_not_verify_is_refused() {
    let moto = Moto::start().await;
    let client = util::kms::client(&moto.endpoint, "us-east-1");
    let arn = util::kms::create_key(&client, KeyUsageType::SignVerify, KeySpec::EccNistP256).await;
    let key = SigningKey::open(&arn, Some(&client)).await.unwrap();
    let e = key.sign(&message(4097)).await.unwrap_err();
    let text = format!("{e:#}");
    assert!(
        text.contains(&arn) && text.contains("does not verify") && !text.contains('\n'),
        "{text}"
    );
}

/// A KMS key for ENCRYPT_DECRYPT is refused, in one line naming the key and its usage, by
/// `SigningKey::open` and by `archiver public-key` (exit 1). A key that does not exist too.
#[tokio::test]
async fn an_encrypt_decrypt_kms_key_is_refused_in_one_line() {
    let moto = Moto::start().await;
    let client = util::kms::client(&moto.endpoint, "us-east-1");
    let arn = util::kms::create_key(
        &client,
        KeyUsageType::EncryptDecrypt,
        KeySpec::SymmetricDefault,
    )
    .await;
    let e = SigningKey::open(&arn, Some(&client)).await.unwrap_err();
    let text = format!("{e:#}");
    assert!(
        text.contains(&arn) && text.contains("ENCRYPT_DECRYPT"),
        "{text}"
    );

    let run = archiver(&["public-key", "--sign-key", &arn], Some(&moto.endpoint)).await;
    run.code(1);
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
    assert!(
        run.last_line().contains(&arn) && run.last_line().contains("ENCRYPT_DECRYPT"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());

    let missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000";
    let run = archiver(&["public-key", "--sign-key", missing], Some(&moto.endpoint)).await;
    run.code(1);
    assert!(run.last_line().contains(missing), "{}", run.stderr);
    // Not an ARN of a KMS key: a usage error.
    let run = archiver(
        &["public-key", "--sign-key", "arn:aws:s3:::bucket"],
        Some(&moto.endpoint),
    )
    .await;
    run.code(2);
}

/// KMS answering AccessDeniedException (a stub answering as KMS does, since moto grants
/// everything): one line naming the key and the call denied.
#[tokio::test]
async fn access_denied_by_kms_is_one_line_naming_the_key() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                let body = r#"{"__type":"AccessDeniedException","message":"User: arn:aws:iam::123456789012:user/archiver is not authorized to perform: kms:GetPublicKey"}"#;
                let resp = format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    let arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let run = archiver(&["public-key", "--sign-key", arn], Some(&endpoint)).await;
    run.code(1);
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
    let line = run.last_line();
    assert!(
        line.contains(arn) && line.contains("access denied") && line.contains("kms:GetPublicKey"),
        "{line}"
    );
}

/// `archiver keygen`: a P-256 PKCS#8 key, mode 0600, never over an existing file; its printed
/// fingerprint is what `public-key` prints and what Python computes from that PEM; a digest
/// signed with it (also one over 4 KiB) verifies in Python, an altered one does not.
#[tokio::test]
async fn keygen_keys_sign_and_python_verifies() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("digest-key.pem");
    let k = key_file.to_str().unwrap();
    let run = archiver(&["keygen", "--out", k], None).await;
    run.ok();
    let printed = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("public key SHA-256: "))
        .unwrap_or_else(|| panic!("no fingerprint in:\n{}", run.stdout))
        .to_string();
    let meta = std::fs::metadata(&key_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let pem = std::fs::read_to_string(&key_file).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    // Never overwritten.
    let run = archiver(&["keygen", "--out", k], None).await;
    run.code(1);
    assert!(run.last_line().contains(k), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), pem);

    // openssl reads it as an EC P-256 PKCS#8 key.
    let text = std::process::Command::new("openssl")
        .args(["pkey", "-noout", "-text", "-in", k])
        .output()
        .expect("openssl is needed by this test");
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("NIST CURVE: P-256"));

    let pub_file = dir.path().join("digest-key.pub.pem");
    archiver(
        &[
            "public-key",
            "--sign-key",
            k,
            "--out",
            pub_file.to_str().unwrap(),
        ],
        None,
    )
    .await
    .ok();
    let key = SigningKey::open(k, None).await.unwrap();
    assert_eq!(key.algorithm(), "ECDSA_SHA_256");
    assert_eq!(key.public_key_sha256(), printed);
    for len in [100, 5000] {
        let msg = message(len);
        let sig = key.sign(&msg).await.unwrap();
        let fp = python_verify(dir.path(), &pub_file, "ECDSA_SHA_256", &msg, &sig, "digest");
        assert_eq!(fp.as_deref(), Some(printed.as_str()));
        let mut altered = msg.clone();
        altered[len / 2] ^= 0x20;
        assert_eq!(
            python_verify(
                dir.path(),
                &pub_file,
                "ECDSA_SHA_256",
                &altered,
                &sig,
                "digest"
            ),
            None
        );
    }
}

/// Keys made by `openssl genpkey` (RSA 2048 and 4096, EC P-256 and P-384) are accepted; what
/// archiver signs with them verifies with `openssl dgst -verify` on openssl's own public key
/// (RSA-PSS with a salt as long as the hash, as KMS signs), and with Python. A 1024-bit RSA
/// key, a P-521 key and an Ed25519 key are refused in one line naming the file.
#[tokio::test]
async fn openssl_genpkey_keys_are_accepted_and_openssl_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let openssl = util::openssl;
    let p = |name: &str| -> PathBuf { dir.path().join(name) };
    let s = |path: &Path| path.to_str().unwrap().to_string();
    for (name, genargs, alg, dgst) in [
        (
            "rsa2048",
            vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            "RSASSA_PSS_SHA_256",
            "-sha256",
        ),
        (
            "rsa4096",
            vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
            "RSASSA_PSS_SHA_256",
            "-sha256",
        ),
        (
            "p256",
            vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "ECDSA_SHA_256",
            "-sha256",
        ),
        (
            "p384",
            vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            "ECDSA_SHA_384",
            "-sha384",
        ),
    ] {
        let key_file = p(&format!("{name}.pem"));
        let mut args = vec!["genpkey"];
        args.extend(genargs.iter());
        let out = s(&key_file);
        args.extend(["-out", &out]);
        openssl(&args);
        let pub_file = p(&format!("{name}.pub.pem"));
        openssl(&["pkey", "-in", &out, "-pubout", "-out", &s(&pub_file)]);

        let key = SigningKey::open(&out, None).await.unwrap();
        assert_eq!(key.algorithm(), alg, "{name}");
        // archiver's public key is openssl's.
        let ours = p(&format!("{name}.archiver.pub.pem"));
        archiver(
            &["public-key", "--sign-key", &out, "--out", &s(&ours)],
            None,
        )
        .await
        .ok();
        assert_eq!(
            std::fs::read_to_string(&ours).unwrap(),
            std::fs::read_to_string(&pub_file).unwrap(),
            "{name}"
        );
        assert_eq!(
            VerifyingKey::from_pem_file(&pub_file).unwrap().sha256(),
            key.public_key_sha256()
        );

        let msg = message(3000);
        let sig = key.sign(&msg).await.unwrap();
        std::fs::write(p("m"), &msg).unwrap();
        std::fs::write(p("s"), &sig).unwrap();
        let mut verify = vec!["dgst", dgst, "-verify"];
        let pubs = s(&pub_file);
        verify.push(&pubs);
        if alg.starts_with("RSASSA_PSS") {
            verify.extend([
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:digest",
                "-sigopt",
                "rsa_mgf1_md:sha256",
            ]);
        }
        let (sf, mf) = (s(&p("s")), s(&p("m")));
        verify.extend(["-signature", &sf, &mf]);
        let ok = openssl(&verify);
        assert!(String::from_utf8_lossy(&ok).contains("Verified OK"));
        // The same check fails on an altered message (the check can fail).
        let mut altered = msg.clone();
        altered[0] ^= 1;
        std::fs::write(p("m"), &altered).unwrap();
        let bad = std::process::Command::new("openssl")
            .args(&verify)
            .output()
            .unwrap();
        assert!(!bad.status.success(), "{name}");
        let fp = python_verify(dir.path(), &pub_file, alg, &msg, &sig, "digest");
        assert_eq!(fp.as_deref(), Some(key.public_key_sha256()), "{name}");
    }

    for (name, genargs) in [
        (
            "rsa1024",
            vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
        ),
        (
            "p521",
            vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
        ),
        ("ed25519", vec!["-algorithm", "ED25519"]),
    ] {
        let key_file = s(&p(&format!("{name}.pem")));
        let mut args = vec!["genpkey"];
        args.extend(genargs.iter());
        args.extend(["-out", &key_file]);
        openssl(&args);
        let run = archiver(&["public-key", "--sign-key", &key_file], None).await;
        run.code(1);
        assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
        assert!(run.last_line().contains(&key_file), "{}", run.stderr);
        assert!(!run.stderr.contains("BEGIN"), "{}", run.stderr);
    }
    // A missing key file.
    let missing = s(&p("absent.pem"));
    let run = archiver(&["public-key", "--sign-key", &missing], None).await;
    run.code(1);
    assert!(run.last_line().contains(&missing) && run.last_line().contains("cannot read"));
}
