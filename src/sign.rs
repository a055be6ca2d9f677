//! Signing digests, and checking their signatures: an asymmetric KMS key (`Sign`,
//! `GetPublicKey`), or a local PKCS#8 PEM private key file for users without KMS (and the
//! demo). Verification needs only the public key: from KMS, or from a PEM file, offline.
//!
//! Algorithms carry KMS's names: `RSASSA_PSS_SHA_256`, `RSASSA_PSS_SHA_384`,
//! `RSASSA_PSS_SHA_512`, `ECDSA_SHA_256`, `ECDSA_SHA_384`. A signature is over a message's
//! bytes. KMS is sent a message of up to 4 KiB whole (`MessageType=RAW`), a longer one as its
//! hash (`MessageType=DIGEST`); both sign the same (see [`SigningKey::sign`]).
//!
//! - RSA keys sign RSASSA-PSS with SHA-256, MGF1 with SHA-256 and a 32-byte salt, as KMS's
//!   `RSASSA_PSS_SHA_256` does. Verification accepts a salt as long as the hash (KMS, and
//!   archiver's own local keys) or the longest the key allows (what `openssl` and Python's
//!   `cryptography` sign with `PSS.MAX_LENGTH`, and moto's KMS): either is a PSS signature
//!   only the private key can make.
//! - ECDSA signatures are DER (ASN.1) `Ecdsa-Sig-Value`s, as KMS returns them.
//! - A public key's fingerprint is the SHA-256 of its DER `SubjectPublicKeyInfo`, as
//!   re-encoded by the crypto library (so the same key read from KMS, from a PEM file or from
//!   its private key has the same fingerprint).
//!
//! Key bytes never appear in an error or a log: errors name the key (its ARN or file).

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, KeyPair as _};

use crate::aws::AwsError;
use crate::error::UsageError;

/// `RSASSA_PSS_SHA_256`: RSA keys.
pub const RSASSA_PSS_SHA_256: &str = "RSASSA_PSS_SHA_256";
/// `ECDSA_SHA_256`: EC P-256 keys.
pub const ECDSA_SHA_256: &str = "ECDSA_SHA_256";
/// `ECDSA_SHA_384`: EC P-384 keys.
pub const ECDSA_SHA_384: &str = "ECDSA_SHA_384";

/// The longest message KMS `Sign` takes whole (`MessageType=RAW`).
const KMS_RAW_MAX: usize = 4096;

/// The key types archiver signs with, and what their signatures are called.
const SUPPORTED: &str =
    "RSA 2048 to 4096 bits (RSASSA_PSS_SHA_256), EC P-256 (ECDSA_SHA_256) or EC P-384 (ECDSA_SHA_384)";

/// Is `spec` (a `--sign-key` value) a KMS key ARN, as opposed to a key file's path?
pub fn is_kms(spec: &str) -> bool {
    spec.starts_with("arn:")
}

/// A key that signs: `--sign-key`.
#[derive(Clone)]
pub struct SigningKey {
    signer: Signer,
    algorithm: &'static str,
    key_id: String,
    public: VerifyingKey,
}

#[derive(Clone)]
enum Signer {
    Kms(aws_sdk_kms::Client),
    Rsa(Arc<sig::RsaKeyPair>),
    Ecdsa(Arc<sig::EcdsaKeyPair>),
}

/// Names the key and its algorithm, never its bytes.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm)
            .field("public_key_sha256", &self.public.sha256)
            .finish()
    }
}

impl SigningKey {
    /// `spec` is a KMS key ARN (`arn:aws:kms:…:key/…`), or the path of a PKCS#8 PEM private
    /// key file (RSA or ECDSA P-256/P-384). A KMS key is checked (`GetPublicKey`: usage
    /// SIGN_VERIFY, a supported algorithm) before anything is archived.
    ///
    /// A KMS key is called in its ARN's region, whatever `kms`'s region is.
    pub async fn open(spec: &str, kms: Option<&aws_sdk_kms::Client>) -> Result<SigningKey> {
        if is_kms(spec) {
            let Some(kms) = kms else {
                bail!("signing key {spec}: a KMS key, but no KMS client was set up");
            };
            return open_kms(spec, kms).await;
        }
        open_file(Path::new(spec))
    }

    /// The algorithm its signatures use (KMS's name).
    pub fn algorithm(&self) -> &str {
        self.algorithm
    }

    /// The KMS key ARN, or `file`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// SHA-256 of the public key's DER SubjectPublicKeyInfo, 64 lowercase hex digits.
    pub fn public_key_sha256(&self) -> &str {
        self.public.sha256()
    }

    /// The public key that checks its signatures.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.public.clone()
    }

    /// Sign `message`: one KMS `Sign` call for a KMS key. Returns the signature's bytes.
    ///
    /// KMS is sent a message of up to 4 KiB as it is (`MessageType=RAW`) and a longer one as
    /// its SHA-256 or SHA-384, whichever the algorithm uses (`MessageType=DIGEST`): KMS
    /// documents both as the same signature of the message. The signature KMS returns is
    /// checked with the key's public key before it is returned, so a digest is never
    /// published with a signature that would not verify.
    pub async fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Rsa(key) => {
                let mut out = vec![0u8; key.public_modulus_len()];
                key.sign(&sig::RSA_PSS_SHA256, &rng, message, &mut out)
                    .map_err(|_| anyhow!("signing with the RSA key file failed"))?;
                Ok(out)
            }
            Signer::Ecdsa(key) => Ok(key
                .sign(&rng, message)
                .map_err(|_| anyhow!("signing with the EC key file failed"))?
                .as_ref()
                .to_vec()),
            Signer::Kms(client) => self.sign_kms(client, message).await,
        }
    }

    async fn sign_kms(&self, client: &aws_sdk_kms::Client, message: &[u8]) -> Result<Vec<u8>> {
        use aws_sdk_kms::primitives::Blob;
        use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
        let arn = &self.key_id;
        let (message_type, sent) = if !message.is_empty() && message.len() <= KMS_RAW_MAX {
            (MessageType::Raw, message.to_vec())
        } else {
            let hash = match self.algorithm {
                ECDSA_SHA_384 => &aws_lc_rs::digest::SHA384,
                _ => &aws_lc_rs::digest::SHA256,
            };
            let d = aws_lc_rs::digest::digest(hash, message);
            (MessageType::Digest, d.as_ref().to_vec())
        };
        let out = client
            .sign()
            .key_id(arn.as_str())
            .message(Blob::new(sent))
            .message_type(message_type)
            .signing_algorithm(SigningAlgorithmSpec::from(self.algorithm))
            .send()
            .await
            .map_err(AwsError::from)
            .map_err(|e| kms_error(arn, "Sign", e))?;
        let signature = out
            .signature()
            .with_context(|| format!("KMS key {arn}: Sign returned no signature"))?
            .as_ref()
            .to_vec();
        if !self.public.verify(self.algorithm, message, &signature) {
            bail!(
                "KMS key {arn}: the signature Sign returned does not verify with the key's public key ({}, {} message of {} bytes)",
                self.algorithm,
                if message.len() <= KMS_RAW_MAX { "RAW" } else { "DIGEST" },
                message.len()
            );
        }
        Ok(signature)
    }
}

async fn open_kms(arn: &str, kms: &aws_sdk_kms::Client) -> Result<SigningKey> {
    use aws_sdk_kms::types::KeyUsageType;
    let client = regional_client(kms, arn)?;
    let out = client
        .get_public_key()
        .key_id(arn)
        .send()
        .await
        .map_err(AwsError::from)
        .map_err(|e| kms_error(arn, "GetPublicKey", e))?;
    match out.key_usage() {
        Some(KeyUsageType::SignVerify) => {}
        Some(other) => bail!(
            "KMS key {arn} is for {}, not SIGN_VERIFY: --sign-key needs an asymmetric signing key, {SUPPORTED}",
            other.as_str()
        ),
        None => bail!("KMS key {arn}: GetPublicKey did not say the key's usage"),
    }
    // moto answers only the deprecated CustomerMasterKeySpec; KMS answers both.
    #[allow(deprecated)]
    let spec = out
        .key_spec()
        .map(|s| s.as_str().to_string())
        .or_else(|| {
            out.customer_master_key_spec()
                .map(|s| s.as_str().to_string())
        })
        .unwrap_or_default();
    let algorithm = match spec.as_str() {
        "RSA_2048" | "RSA_3072" | "RSA_4096" => RSASSA_PSS_SHA_256,
        "ECC_NIST_P256" => ECDSA_SHA_256,
        "ECC_NIST_P384" => ECDSA_SHA_384,
        other => bail!(
            "KMS key {arn} has key spec {}: archiver signs with RSA_2048, RSA_3072, RSA_4096 (RSASSA_PSS_SHA_256), ECC_NIST_P256 (ECDSA_SHA_256) or ECC_NIST_P384 (ECDSA_SHA_384)",
            if other.is_empty() { "(none)" } else { other }
        ),
    };
    let offered = out.signing_algorithms();
    if !offered.is_empty() && !offered.iter().any(|a| a.as_str() == algorithm) {
        bail!("KMS key {arn} (key spec {spec}) does not offer {algorithm}");
    }
    let der = out
        .public_key()
        .with_context(|| format!("KMS key {arn}: GetPublicKey returned no public key"))?;
    let public = VerifyingKey::from_der(der.as_ref())
        .with_context(|| format!("KMS key {arn}: the public key GetPublicKey returned"))?;
    // The key's own ARN (an alias ARN resolves to it): what the digests record.
    let key_id = out
        .key_id()
        .filter(|k| k.starts_with("arn:"))
        .unwrap_or(arn)
        .to_string();
    Ok(SigningKey {
        signer: Signer::Kms(client),
        algorithm,
        key_id,
        public,
    })
}

impl SigningKey {
    /// What [`SigningKey::known_kms`] needs to open this KMS key again without a call:
    /// `(key ARN, algorithm, public key DER)`. `None` for a local key.
    pub fn kms_public(&self) -> Option<(String, String, Vec<u8>)> {
        match self.signer {
            Signer::Kms(_) => Some((
                self.key_id.clone(),
                self.algorithm.to_string(),
                self.public.der().to_vec(),
            )),
            _ => None,
        }
    }

    /// A KMS key opened before (its [`SigningKey::kms_public`]), without calling KMS: a KMS
    /// key pair never changes, so a state that recorded it signs with one `Sign` call per
    /// command. `spec` is the `--sign-key` it was opened as.
    pub fn known_kms(
        spec: &str,
        key_id: &str,
        algorithm: &str,
        der: &[u8],
        kms: &aws_sdk_kms::Client,
    ) -> Result<SigningKey> {
        let algorithm = match algorithm {
            RSASSA_PSS_SHA_256 => RSASSA_PSS_SHA_256,
            ECDSA_SHA_256 => ECDSA_SHA_256,
            ECDSA_SHA_384 => ECDSA_SHA_384,
            other => bail!(
                "signing key {spec}: recorded algorithm {other} is not one archiver signs with"
            ),
        };
        Ok(SigningKey {
            signer: Signer::Kms(regional_client(kms, spec)?),
            algorithm,
            key_id: key_id.to_string(),
            public: VerifyingKey::from_der(der)
                .with_context(|| format!("signing key {spec}: its recorded public key"))?,
        })
    }
}

/// A PKCS#8 PEM private key file.
fn open_file(path: &Path) -> Result<SigningKey> {
    let shown = path.display();
    let text =
        std::fs::read(path).with_context(|| format!("cannot read the signing key file {shown}"))?;
    let der = pem_block(&text, "PRIVATE KEY").map_err(|found| {
        let has = |l: &str| found.iter().any(|f| f == l);
        let hint = if has("RSA PRIVATE KEY") || has("EC PRIVATE KEY") {
            ": convert it with `openssl pkcs8 -topk8 -nocrypt -in OLD -out NEW`"
        } else if has("ENCRYPTED PRIVATE KEY") {
            ": archiver reads only unencrypted keys"
        } else {
            ""
        };
        anyhow!(
            "the signing key file {shown} is not a PEM PKCS#8 private key (-----BEGIN PRIVATE KEY-----){}{hint}",
            holds(&found)
        )
    })?;
    let (signer, algorithm, spki) = if let Ok(k) =
        sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, &der)
    {
        let spki = ec_spki(&k)?;
        (Signer::Ecdsa(Arc::new(k)), ECDSA_SHA_256, spki)
    } else if let Ok(k) = sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P384_SHA384_ASN1_SIGNING, &der)
    {
        let spki = ec_spki(&k)?;
        (Signer::Ecdsa(Arc::new(k)), ECDSA_SHA_384, spki)
    } else if let Ok(k) = sig::RsaKeyPair::from_pkcs8(&der) {
        let bits = k.public_modulus_len() * 8;
        if !(2048..=4096).contains(&bits) {
            bail!("the signing key file {shown} holds a {bits}-bit RSA key: archiver signs with {SUPPORTED}");
        }
        let spki = k
            .public_key()
            .as_der()
            .map_err(|_| anyhow!("the signing key file {shown}: encoding its public key"))?
            .as_ref()
            .to_vec();
        (Signer::Rsa(Arc::new(k)), RSASSA_PSS_SHA_256, spki)
    } else {
        bail!("the signing key file {shown} holds no key archiver signs with: {SUPPORTED}");
    };
    let public = VerifyingKey::from_der(&spki)
        .with_context(|| format!("the signing key file {shown}: its public key"))?;
    Ok(SigningKey {
        signer,
        algorithm,
        key_id: "file".to_string(),
        public,
    })
}

fn ec_spki(k: &sig::EcdsaKeyPair) -> Result<Vec<u8>> {
    Ok(k.public_key()
        .as_der()
        .map_err(|_| anyhow!("encoding an EC public key"))?
        .as_ref()
        .to_vec())
}

/// `kms` for the region of `arn` (`arn:PARTITION:kms:REGION:ACCOUNT:key/ID` or `…:alias/NAME`):
/// a key is called in its own region.
fn regional_client(kms: &aws_sdk_kms::Client, arn: &str) -> Result<aws_sdk_kms::Client> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "kms"
        && !parts[3].is_empty()
        && (parts[5].starts_with("key/") || parts[5].starts_with("alias/"));
    if !ok {
        return Err(UsageError(format!(
            "invalid signing key {arn:?}: a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID) or the path of a PEM private key file"
        ))
        .into());
    }
    let region = parts[3];
    if kms.config().region().map(|r| r.as_ref()) == Some(region) {
        return Ok(kms.clone());
    }
    let conf = kms
        .config()
        .to_builder()
        .region(aws_sdk_kms::config::Region::new(region.to_string()))
        .build();
    Ok(aws_sdk_kms::Client::from_conf(conf))
}

/// One line for a failed KMS call on `arn`.
fn kms_error(arn: &str, call: &str, e: AwsError) -> anyhow::Error {
    match e.code.as_deref() {
        Some("AccessDeniedException") => {
            anyhow!("KMS key {arn}: access denied to kms:{call} ({e})")
        }
        Some("NotFoundException") => anyhow!("KMS key {arn} not found ({e})"),
        Some("UnsupportedOperationException") if call == "GetPublicKey" => anyhow!(
            "KMS key {arn} is not an asymmetric key: --sign-key needs a SIGN_VERIFY key, {SUPPORTED} ({e})"
        ),
        Some("DisabledException") | Some("KMSInvalidStateException") => {
            anyhow!("KMS key {arn} cannot be used now ({e})")
        }
        _ => anyhow::Error::new(e).context(format!("KMS key {arn}: {call} failed")),
    }
}

/// A public key that checks signatures: `verify --public-key FILE.pem`, or from KMS.
#[derive(Clone, Debug)]
pub struct VerifyingKey {
    /// Its DER SubjectPublicKeyInfo, as the crypto library encodes it.
    der: Arc<[u8]>,
    sha256: String,
    kind: KeyKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
}

// Verification algorithms: a PSS salt as long as the hash (KMS), or the longest the key
// allows (openssl's and `cryptography`'s PSS.MAX_LENGTH, moto's KMS).
static PSS_SHA256_MAX: sig::RsaParameters =
    sig::RSA_PSS_2048_8192_SHA256.with_pss_salt_length(sig::RsaPssSaltLength::Max);
static PSS_SHA384_MAX: sig::RsaParameters =
    sig::RSA_PSS_2048_8192_SHA384.with_pss_salt_length(sig::RsaPssSaltLength::Max);
static PSS_SHA512_MAX: sig::RsaParameters =
    sig::RSA_PSS_2048_8192_SHA512.with_pss_salt_length(sig::RsaPssSaltLength::Max);
static PSS_SHA256: sig::RsaParameters = sig::RSA_PSS_2048_8192_SHA256;
static PSS_SHA384: sig::RsaParameters = sig::RSA_PSS_2048_8192_SHA384;
static PSS_SHA512: sig::RsaParameters = sig::RSA_PSS_2048_8192_SHA512;

impl VerifyingKey {
    /// A PEM `PUBLIC KEY` (SubjectPublicKeyInfo) file, as `openssl pkey -pubout` or
    /// `archiver public-key` writes.
    pub fn from_pem_file(path: &Path) -> Result<VerifyingKey> {
        let shown = path.display();
        let text = std::fs::read(path)
            .with_context(|| format!("cannot read the public key file {shown}"))?;
        let der = pem_block(&text, "PUBLIC KEY").map_err(|found| {
            anyhow!(
                "the public key file {shown} is not a PEM public key (-----BEGIN PUBLIC KEY-----){}",
                holds(&found)
            )
        })?;
        VerifyingKey::from_der(&der).with_context(|| format!("the public key file {shown}"))
    }

    /// The public key of a KMS key (`GetPublicKey`), called in the ARN's region.
    pub async fn from_kms(kms: &aws_sdk_kms::Client, key_id: &str) -> Result<VerifyingKey> {
        let client = regional_client(kms, key_id)?;
        let out = client
            .get_public_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(AwsError::from)
            .map_err(|e| kms_error(key_id, "GetPublicKey", e))?;
        let der = out
            .public_key()
            .with_context(|| format!("KMS key {key_id}: GetPublicKey returned no public key"))?;
        VerifyingKey::from_der(der.as_ref())
            .with_context(|| format!("KMS key {key_id}: the public key GetPublicKey returned"))
    }

    /// A DER SubjectPublicKeyInfo of an RSA, EC P-256 or EC P-384 key.
    pub fn from_der(der: &[u8]) -> Result<VerifyingKey> {
        let kinds: [(&'static dyn sig::VerificationAlgorithm, KeyKind); 3] = [
            (&sig::ECDSA_P256_SHA256_ASN1, KeyKind::P256),
            (&sig::ECDSA_P384_SHA384_ASN1, KeyKind::P384),
            (&PSS_SHA256, KeyKind::Rsa),
        ];
        for (alg, kind) in kinds {
            let Ok(parsed) = sig::ParsedPublicKey::new(alg, der) else {
                continue;
            };
            let canonical = parsed
                .as_der()
                .map_err(|_| anyhow!("re-encoding a public key"))?
                .as_ref()
                .to_vec();
            return Ok(VerifyingKey {
                sha256: sha256_hex(&canonical),
                der: canonical.into(),
                kind,
            });
        }
        bail!("not a public key archiver checks signatures with: {SUPPORTED}")
    }

    /// SHA-256 of its DER SubjectPublicKeyInfo, 64 lowercase hex digits.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Its DER SubjectPublicKeyInfo.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// It as a PEM `PUBLIC KEY`, as `openssl pkey -pubout` writes it.
    pub fn to_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &self.der)
    }

    /// What kind of key it is, for people: `RSA 2048-bit`, `EC P-256`, `EC P-384`.
    pub fn describe(&self) -> String {
        match self.kind {
            KeyKind::P256 => "EC P-256".into(),
            KeyKind::P384 => "EC P-384".into(),
            KeyKind::Rsa => sig::RsaSubjectPublicKey::from_der(&self.der)
                .ok()
                .and_then(|k| sig::RsaParameters::public_modulus_len(k.as_ref()).ok())
                .map_or_else(|| "RSA".into(), |bits| format!("RSA {bits}-bit")),
        }
    }

    /// Whether `signature` is `algorithm`'s signature of `message` by this key. An unknown
    /// algorithm, or one that does not fit the key, is `false`.
    pub fn verify(&self, algorithm: &str, message: &[u8], signature: &[u8]) -> bool {
        let algs: &[&'static dyn sig::VerificationAlgorithm] = match (algorithm, self.kind) {
            ("RSASSA_PSS_SHA_256", KeyKind::Rsa) => &[&PSS_SHA256, &PSS_SHA256_MAX],
            ("RSASSA_PSS_SHA_384", KeyKind::Rsa) => &[&PSS_SHA384, &PSS_SHA384_MAX],
            ("RSASSA_PSS_SHA_512", KeyKind::Rsa) => &[&PSS_SHA512, &PSS_SHA512_MAX],
            ("ECDSA_SHA_256", KeyKind::P256) => &[&sig::ECDSA_P256_SHA256_ASN1],
            ("ECDSA_SHA_384", KeyKind::P384) => &[&sig::ECDSA_P384_SHA384_ASN1],
            _ => return false,
        };
        algs.iter().any(|alg| {
            sig::UnparsedPublicKey::new(*alg, &*self.der)
                .verify(message, signature)
                .is_ok()
        })
    }
}

/// A new EC P-256 private key as a PEM PKCS#8 `PRIVATE KEY` (what `archiver keygen` writes),
/// with its public key.
pub fn generate_p256_pem() -> Result<(String, VerifyingKey)> {
    let rng = SystemRandom::new();
    let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| anyhow!("generating an EC P-256 key failed"))?;
    let key = sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
        .map_err(|_| anyhow!("reading back the generated key failed"))?;
    let public = VerifyingKey::from_der(&ec_spki(&key)?)?;
    Ok((pem_encode("PRIVATE KEY", pkcs8.as_ref()), public))
}

/// SHA-256 of `bytes`, 64 lowercase hex digits.
fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// PEM: `-----BEGIN LABEL-----`, the base64 in lines of 64, `-----END LABEL-----`.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The bytes of the first PEM block labelled `label` in `text`. Otherwise `Err` with what is
/// there instead: the labels of the other blocks, or of the block that is malformed (empty if
/// there is no PEM block at all).
fn pem_block(text: &[u8], label: &str) -> Result<Vec<u8>, Vec<String>> {
    let text = String::from_utf8_lossy(text);
    let mut others = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(found) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        if found != label {
            others.push(found.to_string());
            continue;
        }
        let end = format!("-----END {label}-----");
        let mut b64 = String::new();
        for l in lines.by_ref() {
            if l == end {
                return base64_decode(&b64)
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| vec![format!("malformed {label}")]);
            }
            if l.contains(':') {
                // RFC 1421 headers (Proc-Type: 4,ENCRYPTED): not a plain PKCS#8 block.
                return Err(vec![format!("{label} with headers")]);
            }
            b64.push_str(l);
        }
        return Err(vec![format!("{label} without its END line")]);
    }
    Err(others)
}

/// `, it holds A, B` for [`pem_block`]'s error (nothing if it found no block).
fn holds(found: &[String]) -> String {
    if found.is_empty() {
        String::new()
    } else {
        format!(" (it holds {})", found.join(", "))
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 (standard alphabet, padded) of `bytes`, as digests record signatures.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The bytes of a base64 string; `None` if it is not valid base64.
///
/// Strict: the standard alphabet, padded to a multiple of 4, no whitespace, and the unused
/// bits of the last group zero, so that each byte string has exactly one encoding.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        ALPHABET.iter().position(|&a| a == c).map(|v| v as u32)
    }
    let t = text.as_bytes();
    if !t.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(t.len() / 4 * 3);
    for (g, group) in t.chunks(4).enumerate() {
        let last = g == t.len() / 4 - 1;
        let pad = group.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &group[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = 3 - pad;
        // Bits below the kept bytes must be zero (one encoding per byte string).
        if bytes[keep..].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&bytes[..keep]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pem(dir: &Path, name: &str, label: &str, der: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, pem_encode(label, der)).unwrap();
        p
    }

    fn rsa_pkcs8(bits: aws_lc_rs::rsa::KeySize) -> Vec<u8> {
        let k = sig::RsaKeyPair::generate(bits).unwrap();
        AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&k)
            .unwrap()
            .as_ref()
            .to_vec()
    }

    fn ec_pkcs8(alg: &'static sig::EcdsaSigningAlgorithm) -> Vec<u8> {
        let rng = SystemRandom::new();
        sig::EcdsaKeyPair::generate_pkcs8(alg, &rng)
            .unwrap()
            .as_ref()
            .to_vec()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Each kind of local key: signs with its algorithm; its own signature verifies (also
    /// through its public key written as PEM and read back); another key's, an altered
    /// message's, an altered signature's, or another algorithm's does not.
    #[test]
    fn local_keys_sign_and_verify_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let keys = [
            (
                "rsa2048",
                rsa_pkcs8(aws_lc_rs::rsa::KeySize::Rsa2048),
                RSASSA_PSS_SHA_256,
            ),
            (
                "rsa3072",
                rsa_pkcs8(aws_lc_rs::rsa::KeySize::Rsa3072),
                RSASSA_PSS_SHA_256,
            ),
            (
                "p256",
                ec_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING),
                ECDSA_SHA_256,
            ),
            (
                "p384",
                ec_pkcs8(&sig::ECDSA_P384_SHA384_ASN1_SIGNING),
                ECDSA_SHA_384,
            ),
        ];
        let opened: Vec<SigningKey> = keys
            .iter()
            .map(|(name, der, alg)| {
                let p = write_pem(dir.path(), name, "PRIVATE KEY", der);
                let k = block_on(SigningKey::open(p.to_str().unwrap(), None)).unwrap();
                assert_eq!(k.algorithm(), *alg, "{name}");
                assert_eq!(k.key_id(), "file");
                assert_eq!(k.public_key_sha256().len(), 64);
                k
            })
            .collect();
        // Longer than KMS's 4 KiB RAW limit: local keys sign any length.
        let message: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        for (i, k) in opened.iter().enumerate() {
            let name = keys[i].0;
            let s = block_on(k.sign(&message)).unwrap();
            let vk = k.verifying_key();
            assert!(vk.verify(k.algorithm(), &message, &s), "{name}");
            // Through its PEM public key, as an auditor has it.
            let pem = write_pem(dir.path(), &format!("{name}.pub"), "PUBLIC KEY", vk.der());
            let read = VerifyingKey::from_pem_file(&pem).unwrap();
            assert_eq!(read.sha256(), k.public_key_sha256(), "{name}");
            assert!(read.verify(k.algorithm(), &message, &s), "{name}");
            // An altered message.
            let mut altered = message.clone();
            altered[4321] ^= 1;
            assert!(!vk.verify(k.algorithm(), &altered, &s), "{name}");
            // An altered signature.
            let mut bad = s.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0x40;
            assert!(!vk.verify(k.algorithm(), &message, &bad), "{name}");
            // An algorithm that is not the key's, or unknown.
            for other in [
                "ECDSA_SHA_256",
                "ECDSA_SHA_384",
                "RSASSA_PSS_SHA_384",
                "nope",
            ] {
                if other != k.algorithm() {
                    assert!(!vk.verify(other, &message, &s), "{name} {other}");
                }
            }
            // Every other key refuses it.
            for (j, other) in opened.iter().enumerate() {
                if i != j {
                    assert!(
                        !other.verifying_key().verify(k.algorithm(), &message, &s),
                        "{name} by {}",
                        keys[j].0
                    );
                    assert_ne!(other.public_key_sha256(), k.public_key_sha256());
                }
            }
        }
    }

    /// A second key of the same kind does not verify the first's signatures.
    #[test]
    fn a_signature_by_another_key_of_the_same_kind_fails() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_pem(
            dir.path(),
            "a",
            "PRIVATE KEY",
            &ec_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING),
        );
        let b = write_pem(
            dir.path(),
            "b",
            "PRIVATE KEY",
            &ec_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING),
        );
        let a = block_on(SigningKey::open(a.to_str().unwrap(), None)).unwrap();
        let b = block_on(SigningKey::open(b.to_str().unwrap(), None)).unwrap();
        let s = block_on(a.sign(b"digest body")).unwrap();
        assert!(a.verifying_key().verify(ECDSA_SHA_256, b"digest body", &s));
        assert!(!b.verifying_key().verify(ECDSA_SHA_256, b"digest body", &s));
    }

    /// RSA-PSS with the longest salt (openssl's and `cryptography`'s PSS.MAX_LENGTH, moto's
    /// KMS) verifies as well as with KMS's hash-length salt; another salt length does not.
    #[test]
    fn rsa_pss_verifies_with_the_hash_length_or_the_longest_salt() {
        let der = rsa_pkcs8(aws_lc_rs::rsa::KeySize::Rsa2048);
        let key = sig::RsaKeyPair::from_pkcs8(&der).unwrap();
        let vk = VerifyingKey::from_der(key.public_key().as_der().unwrap().as_ref()).unwrap();
        assert_eq!(vk.describe(), "RSA 2048-bit");
        let rng = SystemRandom::new();
        static MAX: sig::RsaSignatureEncoding =
            sig::RSA_PSS_SHA256.with_pss_salt_length(sig::RsaPssSaltLength::Max);
        static TEN: sig::RsaSignatureEncoding =
            sig::RSA_PSS_SHA256.with_pss_salt_length(sig::RsaPssSaltLength::Custom(10));
        for (enc, ok) in [(&sig::RSA_PSS_SHA256, true), (&MAX, true), (&TEN, false)] {
            let mut s = vec![0; key.public_modulus_len()];
            key.sign(enc, &rng, b"m", &mut s).unwrap();
            assert_eq!(vk.verify(RSASSA_PSS_SHA_256, b"m", &s), ok);
        }
    }

    #[test]
    fn key_files_that_are_not_pkcs8_are_refused_in_one_line_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let open = |p: &Path| {
            let e = block_on(SigningKey::open(p.to_str().unwrap(), None)).unwrap_err();
            let text = format!("{e:#}");
            assert!(!text.contains('\n'), "{text}");
            assert!(text.contains(&p.display().to_string()), "{text}");
            text
        };
        let missing = open(&dir.path().join("absent.pem"));
        assert!(missing.contains("cannot read"), "{missing}");
        // SEC1 (`openssl ecparam -genkey`): named, with the conversion.
        let p = dir.path().join("sec1");
        let sec1 =
            pem_encode("EC PARAMETERS", &[6, 1, 1]) + &pem_encode("EC PRIVATE KEY", &[1, 2, 3]);
        std::fs::write(&p, sec1).unwrap();
        let text = open(&p);
        assert!(
            text.contains("EC PRIVATE KEY") && text.contains("openssl pkcs8"),
            "{text}"
        );
        let p = write_pem(dir.path(), "pub", "PUBLIC KEY", &[1, 2, 3]);
        assert!(open(&p).contains("PUBLIC KEY"));
        let p = dir.path().join("text");
        std::fs::write(&p, "not a key").unwrap();
        assert!(open(&p).contains("not a PEM PKCS#8 private key"));
        // A PKCS#8 block that holds garbage.
        let p = write_pem(dir.path(), "junk", "PRIVATE KEY", &[0x30, 3, 2, 1, 0]);
        let text = open(&p);
        assert!(text.contains("holds no key"), "{text}");
        // A private key file given as a public key.
        let q = write_pem(
            dir.path(),
            "priv",
            "PRIVATE KEY",
            &ec_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING),
        );
        let e = VerifyingKey::from_pem_file(&q).unwrap_err();
        assert!(format!("{e:#}").contains("PRIVATE KEY"), "{e:#}");
    }

    #[test]
    fn kms_specs_are_arns() {
        assert!(is_kms("arn:aws:kms:eu-west-1:111122223333:key/1234abcd"));
        assert!(!is_kms("./keys/digest.pem"));
        let kms = aws_sdk_kms::Client::from_conf(
            aws_sdk_kms::Config::builder()
                .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
                .region(aws_sdk_kms::config::Region::new("us-east-1"))
                .build(),
        );
        let c = regional_client(&kms, "arn:aws:kms:eu-west-1:111122223333:key/1234abcd").unwrap();
        assert_eq!(c.config().region().unwrap().as_ref(), "eu-west-1");
        let e = regional_client(&kms, "arn:aws:s3:::bucket").unwrap_err();
        assert!(e.is::<UsageError>(), "{e}");
    }

    #[test]
    fn base64_round_trips_and_is_strict() {
        // RFC 4648's test vectors: every padding case.
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes(), "{enc}");
        }
        for len in 0..70usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 255) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&bytes)).unwrap(), bytes);
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        for bad in [
            "Zg", "Zg=", "Zg===", "Z===", "Zh==", "Zm9=", "Zg==Zg==", "Zm9v\n", "Zm 9v", "Zm9-",
            "Zm9_", "====",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pem_round_trips_and_names_other_blocks() {
        let der: Vec<u8> = (0..200u8).collect();
        let pem = pem_encode("PUBLIC KEY", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(pem_block(pem.as_bytes(), "PUBLIC KEY").unwrap(), der);
        // Text around it, CRLF line ends.
        let framed = format!("comment\r\n{}\r\n", pem.replace('\n', "\r\n"));
        assert_eq!(pem_block(framed.as_bytes(), "PUBLIC KEY").unwrap(), der);
        assert_eq!(
            pem_block(pem.as_bytes(), "PRIVATE KEY"),
            Err(vec!["PUBLIC KEY".to_string()])
        );
        assert_eq!(pem_block(b"nothing", "PRIVATE KEY"), Err(vec![]));
    }
}
