//! moto's KMS for the tests: a client and signing keys.

use aws_sdk_kms::types::{KeySpec, KeyUsageType};

/// A KMS client for moto at `endpoint`, in `region`.
pub fn client(endpoint: &str, region: &str) -> aws_sdk_kms::Client {
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .http_client(archiver::aws::http_client())
        .build();
    aws_sdk_kms::Client::from_conf(conf)
}

/// A new key of `usage` and `spec`; its ARN.
pub async fn create_key(kms: &aws_sdk_kms::Client, usage: KeyUsageType, spec: KeySpec) -> String {
    let out = kms
        .create_key()
        .key_usage(usage)
        .key_spec(spec)
        .send()
        .await
        .unwrap();
    out.key_metadata().unwrap().arn().unwrap().to_string()
}
