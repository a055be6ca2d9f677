//! The AWS side shared by every step: the SDK configuration from the standard chain, the run's
//! S3 client, and [`AwsError`], which keeps a failed call's status, code and source.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::ServerSideEncryption;
use aws_sdk_s3::Client;

use crate::config::S3Options;
use crate::error::UsageError;

/// The HTTP response type of every SDK client of this family.
pub type HttpResponse = aws_sdk_s3::config::http::HttpResponse;

/// The AWS configuration from the standard chain, with one [`http_client`] for every client
/// made from it. Without a region there, the first of `regions` is the default (it is also
/// the S3 client's region).
pub async fn load_sdk(regions: &[String]) -> anyhow::Result<aws_config::SdkConfig> {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .load()
        .await;
    if sdk.region().is_some() {
        return Ok(sdk);
    }
    let Some(first) = regions.first() else {
        return Err(UsageError(
            "no AWS region configured: set AWS_REGION, --region, or a region in your AWS profile"
                .into(),
        )
        .into());
    };
    Ok(sdk
        .to_builder()
        .region(aws_config::Region::new(first.clone()))
        .build())
}

/// The SDK's default HTTP client (hyper 1 with rustls, proxies from the environment), as the
/// SDK makes it for a client given none, made once to be shared by every SDK client of the run:
/// S3, STS, Organizations, Glue and the WorkSpaces Web client of each account and region. A
/// client given none makes its own on its first call: its own connection pool, and a TLS
/// configuration holding its own parsed copy of the system's root certificates. Shared, the
/// clients of one timeout setting share one connector and its pooled connections, whatever
/// the account (requests are signed one by one, so connections carry no identity).
pub fn http_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    use aws_smithy_http_client::{proxy::ProxyConfig, Builder, ConnectorBuilder};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut b =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        b.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            b.set_sleep_impl(c.sleep_impl());
        }
        b.set_proxy_config(Some(ProxyConfig::from_env()));
        b.build()
    })
}

/// The run's S3 client: the SDK chain's configuration, standard retries (throttling, 500/503
/// SlowDown, dropped connections) with `max_attempts` and no retry quota (see
/// [`exact_attempts`]), and path-style addressing whenever the endpoint is overridden
/// (S3-compatible servers, VPC endpoints by URL).
pub fn s3_client(sdk: &aws_config::SdkConfig, max_attempts: u32) -> Client {
    let custom_endpoint = sdk.endpoint_url().is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL").is_some();
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(60))
        .operation_attempt_timeout(Duration::from_secs(300))
        .build();
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(max_attempts))
        .retry_partition(exact_attempts("archiver-s3"))
        .timeout_config(timeouts)
        .force_path_style(custom_endpoint)
        .build();
    Client::from_conf(conf)
}

/// The KMS client that signs digests (`--sign-key`) and fetches public keys: standard retries
/// with `max_attempts`, the same timeouts as S3's.
pub fn kms_client(sdk: &aws_config::SdkConfig, max_attempts: u32) -> aws_sdk_kms::Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(60))
        .operation_attempt_timeout(Duration::from_secs(300))
        .build();
    let conf = aws_sdk_kms::config::Builder::from(sdk)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(max_attempts))
        .retry_partition(exact_attempts("archiver-kms"))
        .timeout_config(timeouts)
        .build();
    aws_sdk_kms::Client::from_conf(conf)
}

/// A retry partition whose calls each get every one of their `--max-attempts`. The SDK's
/// default partition also holds a client-side retry quota, shared by the whole process: 500
/// tokens, of which each retry takes 5 (10 after a 5xx or a timeout), lost when that retry
/// fails too; a first-try success gives one back. On a store that fails often but briefly (a
/// night of 503 SlowDown) the quota runs dry after 50 to 100 failed retries, and from then on
/// every call fails on its first error: the portal is given up for the night. The job's calls
/// are already bounded (`--concurrency` portals, `--max-attempts` each, capped exponential
/// backoff), so the quota would only turn a survivable night into a failed one.
pub fn exact_attempts(name: &'static str) -> aws_sdk_s3::config::retry::RetryPartition {
    use aws_sdk_s3::config::retry::{RetryPartition, TokenBucket};
    RetryPartition::custom(name)
        .token_bucket(TokenBucket::unlimited())
        .build()
}

/// A failed AWS call. A service error shows as `Code (HTTP status): message`; a transport
/// failure (timeout, dropped connection) as its kind, with the underlying error as its source.
/// The SDK's error is kept whole in either case.
#[derive(Debug)]
pub struct AwsError {
    /// HTTP status, if the service answered.
    pub status: Option<u16>,
    /// The service's error code, e.g. `NoSuchKey`, `ThrottlingException` (`None` if its
    /// answer carried none, or if it did not answer).
    pub code: Option<String>,
    pub message: Option<String>,
    /// The service answered (as opposed to a transport failure).
    service: bool,
    sdk: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl AwsError {
    pub fn new<E>(e: SdkError<E, HttpResponse>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let (code, message) = match &e {
            SdkError::ServiceError(s) => (
                s.err().code().map(str::to_string),
                s.err().message().map(str::to_string),
            ),
            _ => (None, None),
        };
        AwsError {
            status,
            code,
            message,
            service: matches!(e, SdkError::ServiceError(_)),
            sdk: Box::new(e),
        }
    }

    /// Is this the service's answer (as opposed to a transport failure)?
    pub fn is_service_error(&self) -> bool {
        self.service
    }
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.service {
            // The SDK's kind ("dispatch failure", "timeout"); the cause follows as the source.
            return write!(f, "{}", self.sdk);
        }
        let code = self.code.as_deref().unwrap_or("error");
        match (self.status, &self.message) {
            (Some(status), Some(m)) => write!(f, "{code} (HTTP {status}): {m}"),
            (Some(status), None) => write!(f, "{code} (HTTP {status})"),
            (None, _) => f.write_str(code),
        }
    }
}

impl std::error::Error for AwsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        if self.is_service_error() {
            // Code, status and message are the whole of the service's answer; the SDK's own
            // chain would only repeat them.
            None
        } else {
            self.sdk.source()
        }
    }
}

impl<E> From<SdkError<E, HttpResponse>> for AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    fn from(e: SdkError<E, HttpResponse>) -> AwsError {
        AwsError::new(e)
    }
}

/// A PutObject carrying the run's encryption and expected bucket owner: every object archiver
/// writes (files, state, lease) starts here.
pub fn put_object(
    client: &Client,
    opts: &S3Options,
    bucket: &str,
    key: &str,
) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .set_server_side_encryption(opts.sse.as_deref().map(ServerSideEncryption::from))
        .set_ssekms_key_id(opts.kms_key_id.clone())
        .set_expected_bucket_owner(opts.expected_bucket_owner.clone())
}

/// Does a failed GetObject or HeadObject of `key` mean there is no such object?
///
/// S3 answers a missing key with 404 only to callers allowed to list the bucket. A caller
/// whose `s3:ListBucket` is limited to a prefix (as the shipped policies are) gets 403, the
/// same answer as for a key it may not read. So on a 403 the key's own prefix is listed, which
/// such a policy allows: the key absent from that listing is missing. Present, or the listing
/// denied too, the 403 stands.
pub async fn is_missing(
    client: &Client,
    opts: &S3Options,
    bucket: &str,
    key: &str,
    e: &AwsError,
) -> bool {
    match e.status {
        // NoSuchKey, or a HEAD's `NotFound`; a missing bucket is not a missing object.
        Some(404) => e.code.as_deref() != Some("NoSuchBucket"),
        Some(403) => {
            let listed = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(key)
                .max_keys(1)
                .set_expected_bucket_owner(opts.expected_bucket_owner.clone())
                .send()
                .await;
            match listed {
                Ok(out) => !out.contents().iter().any(|o| o.key() == Some(key)),
                Err(_) => false,
            }
        }
        _ => false,
    }
}

/// What an S3 status says about the bucket, in one phrase naming it: missing, denied (or
/// another account's, with `--s3-expected-bucket-owner`), or in another region. `None` for
/// any other status.
pub fn bucket_problem(status: Option<u16>, bucket: &str, opts: &S3Options) -> Option<String> {
    match status? {
        404 => Some(format!("bucket {bucket} does not exist")),
        403 => Some(match &opts.expected_bucket_owner {
            Some(o) => format!(
                "access to bucket {bucket} denied, or the bucket is not owned by account {o}"
            ),
            None => format!("access to bucket {bucket} denied"),
        }),
        301 => Some(format!(
            "bucket {bucket} is in another region than the client's (set AWS_REGION to the bucket's region)"
        )),
        _ => None,
    }
}

/// An S3 call's failure as an error naming the bucket: [`bucket_problem`]'s phrase when the
/// status says what is wrong with the bucket, with the call's error kept as the source.
pub fn bucket_error(e: AwsError, bucket: &str, opts: &S3Options) -> anyhow::Error {
    match bucket_problem(e.status, bucket, opts) {
        Some(why) => anyhow::Error::new(e).context(why),
        None => anyhow::Error::new(e).context(format!("bucket {bucket}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::config::retry::{RetryPartition, TokenBucket};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback "S3" that answers the first two attempts of every call 503 SlowDown (by the
    /// SDK's `amz-sdk-request: attempt=N` header) and the third 200: every call loses one
    /// failed retry, which the SDK's default quota charges and never gives back.
    async fn twice_slowed_store() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        buf.drain(..end + 4);
                        let attempt: u32 = head
                            .split("attempt=")
                            .nth(1)
                            .and_then(|r| r.split(';').next())
                            .and_then(|a| a.trim().parse().ok())
                            .unwrap_or(1);
                        let reply = if attempt <= 2 {
                            let body =
                                "<Error><Code>SlowDown</Code><Message>slow</Message></Error>";
                            format!(
                                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            )
                        } else {
                            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_string()
                        };
                        if sock.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    /// 150 HeadBucket calls, each through two SlowDowns, with a 1 ms backoff.
    async fn calls_through(client: &Client) -> usize {
        let mut ok = 0;
        for _ in 0..150 {
            if client.head_bucket().bucket("b").send().await.is_ok() {
                ok += 1;
            }
        }
        ok
    }

    fn fast_retry(client: &Client) -> aws_sdk_s3::config::Builder {
        client.config().to_builder().retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(2)),
        )
    }

    #[tokio::test]
    async fn every_s3_call_gets_all_its_attempts_however_many_retries_failed_before() {
        let endpoint = twice_slowed_store().await;
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(
                aws_sdk_s3::config::Credentials::new("AKIDTEST", "secret", None, None, "test"),
            ))
            .build();
        let ours = Client::from_conf(fast_retry(&s3_client(&sdk, 3)).build());
        assert_eq!(calls_through(&ours).await, 150);
        // The control: the SDK's default quota (500 tokens, 10 per retry after a 503) gives out
        // after 50 such calls, and every call after that fails on its first SlowDown.
        let quota = RetryPartition::custom("control-default-quota")
            .token_bucket(TokenBucket::new(500))
            .build();
        let default = Client::from_conf(fast_retry(&ours).retry_partition(quota).build());
        let through = calls_through(&default).await;
        assert!(
            (45..=55).contains(&through),
            "{through} of 150 calls got through"
        );
    }
}
