//! Signing digests, and checking their signatures: an asymmetric KMS key (`Sign`,
//! `GetPublicKey`), or a local PKCS#8 PEM private key file for users without KMS (and the
//! demo). Verification needs only the public key: from KMS, or from a PEM file, offline.
//!
//! Algorithms carry KMS's names: `RSASSA_PSS_SHA_256`, `RSASSA_PSS_SHA_384`,
//! `RSASSA_PSS_SHA_512`, `ECDSA_SHA_256`, `ECDSA_SHA_384`. A signature is over a message's
//! bytes (KMS is sent the message's hash with `MessageType=DIGEST`, which signs the same).

use anyhow::{bail, Result};

/// A key that signs: `--sign-key`.
#[derive(Clone, Debug)]
pub struct SigningKey {
    _private: (),
}

impl SigningKey {
    /// `spec` is a KMS key ARN (`arn:aws:kms:…:key/…`), or the path of a PKCS#8 PEM private
    /// key file (RSA or ECDSA P-256/P-384). A KMS key is checked (`GetPublicKey`: usage
    /// SIGN_VERIFY, a supported algorithm) before anything is archived.
    pub async fn open(spec: &str, kms: Option<&aws_sdk_kms::Client>) -> Result<SigningKey> {
        let _ = (spec, kms);
        bail!("signing is not built yet")
    }

    /// The algorithm its signatures use (KMS's name).
    pub fn algorithm(&self) -> &str {
        unimplemented!()
    }

    /// The KMS key ARN, or `file`.
    pub fn key_id(&self) -> &str {
        unimplemented!()
    }

    /// SHA-256 of the public key's DER SubjectPublicKeyInfo, 64 lowercase hex digits.
    pub fn public_key_sha256(&self) -> &str {
        unimplemented!()
    }

    /// The public key that checks its signatures.
    pub fn verifying_key(&self) -> VerifyingKey {
        unimplemented!()
    }

    /// Sign `message`: one KMS `Sign` call for a KMS key. Returns the signature's bytes.
    pub async fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let _ = message;
        bail!("signing is not built yet")
    }
}

/// A public key that checks signatures: `verify --public-key FILE.pem`, or from KMS.
#[derive(Clone, Debug)]
pub struct VerifyingKey {
    _private: (),
}

impl VerifyingKey {
    /// A PEM `PUBLIC KEY` (SubjectPublicKeyInfo) file, as `openssl pkey -pubout` or
    /// `archiver public-key` writes.
    pub fn from_pem_file(path: &std::path::Path) -> Result<VerifyingKey> {
        let _ = path;
        bail!("signing is not built yet")
    }

    /// The public key of a KMS key (`GetPublicKey`).
    pub async fn from_kms(kms: &aws_sdk_kms::Client, key_id: &str) -> Result<VerifyingKey> {
        let _ = (kms, key_id);
        bail!("signing is not built yet")
    }

    /// SHA-256 of its DER SubjectPublicKeyInfo, 64 lowercase hex digits.
    pub fn sha256(&self) -> &str {
        unimplemented!()
    }

    /// Whether `signature` is `algorithm`'s signature of `message` by this key. An unknown
    /// algorithm, or one that does not fit the key, is `false`.
    pub fn verify(&self, algorithm: &str, message: &[u8], signature: &[u8]) -> bool {
        let _ = (algorithm, message, signature);
        false
    }
}

/// Base64 (standard alphabet, padded) of `bytes`, as digests record signatures.
pub fn base64_encode(bytes: &[u8]) -> String {
    let _ = bytes;
    unimplemented!()
}

/// The bytes of a base64 string; `None` if it is not valid base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let _ = text;
    None
}
