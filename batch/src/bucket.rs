//! The lake bucket's own settings, as a store's lake should have them (`shoplake lake init`,
//! `shoplake config check`): default encryption, public access blocked, and lifecycle rules that
//! expire the raw archive and the quarantine after their retention and abort stale multipart
//! uploads.
//!
//! [`inspect`] reads what the bucket has and compares it with [`BucketSettings`]; with
//! `apply`, it creates the bucket when it is missing and puts each setting that differs. Each
//! setting is one [`Finding`]: what is wanted, what was found, and what was done. Lifecycle rules
//! that are not ours (their id does not start with [`RULE_PREFIX`]) are kept as they are: a
//! bucket may hold other rules of the store's.
//!
//! object_store stays the data path (reads, writes, lists); it has no calls for a bucket's
//! configuration, which is what aws-sdk-s3 is here for. The client takes its configuration as the
//! lake does: the `AWS_*` environment and the lake's storage options (endpoint, region).

use std::collections::HashMap;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint,
    CreateBucketConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleFilter, PublicAccessBlockConfiguration, ServerSideEncryption,
    ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
};
use serde::Serialize;

use crate::{Error, Result};

/// Lifecycle rules whose id starts with this are the platform's; others are left alone.
pub const RULE_PREFIX: &str = "shoplake-";

/// The bucket's default encryption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encryption {
    /// SSE-S3 (AES256, keys managed by S3).
    S3,
    /// SSE-KMS with this key (an id, ARN or alias); None: the account's `aws/s3` key.
    Kms { key_id: Option<String> },
}

impl std::fmt::Display for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Encryption::S3 => f.write_str("SSE-S3 (AES256)"),
            Encryption::Kms { key_id: None } => f.write_str("SSE-KMS (aws/s3 key)"),
            Encryption::Kms { key_id: Some(k) } => write!(f, "SSE-KMS ({k})"),
        }
    }
}

/// Objects under `prefix` (from the bucket's root) expire `days` after they were written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Expiry {
    /// The rule's id (starts with [`RULE_PREFIX`]).
    pub id: String,
    pub prefix: String,
    pub days: i32,
}

/// What the lake's bucket should have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BucketSettings {
    pub encryption: Encryption,
    /// The raw archive's and the quarantine's expiry, when they have a retention period and live
    /// in this bucket.
    pub expiries: Vec<Expiry>,
    /// Multipart uploads not completed this many days after they started are aborted (their
    /// parts are stored, and billed, until then).
    pub abort_multipart_days: i32,
}

impl BucketSettings {
    /// Whole days of a retention period, at least one (S3 expires in days).
    pub fn days(period: std::time::Duration) -> i32 {
        let days = period.as_secs().div_ceil(86_400).max(1);
        i32::try_from(days).unwrap_or(i32::MAX)
    }
}

/// The state of one setting after [`inspect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The bucket already had it.
    Ok,
    /// It differed (or was missing) and was put.
    Changed,
    /// It differs (or is missing); nothing was changed (a check).
    Differs,
}

/// One setting of the bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `bucket`, `encryption`, `public access`, or `lifecycle RULE-ID`.
    pub setting: String,
    pub wanted: String,
    pub found: String,
    pub state: State,
}

/// The bucket and the key prefix of `s3://BUCKET/PREFIX`; None for another scheme.
pub fn parse_location(location: &str) -> Option<(String, String)> {
    let rest = location.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return None;
    }
    let prefix = prefix.trim_matches('/');
    Some((bucket.to_owned(), prefix.to_owned()))
}

/// A client configured as the lake's object store is: the `AWS_*` environment (credentials,
/// region, `AWS_ENDPOINT_URL_S3`), the lake's storage options taking precedence for the endpoint
/// and region; path-style addressing when an endpoint is set (S3-compatible servers, emulators).
pub async fn client(storage_options: &HashMap<String, String>) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some((_, region)) = storage_options.iter().find(|(key, _)| {
        key.eq_ignore_ascii_case("aws_region") || key.eq_ignore_ascii_case("region")
    }) {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let sdk = loader.load().await;
    let endpoint = crate::lake::s3_endpoint(storage_options);
    let mut conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(endpoint.is_some());
    conf.set_endpoint_url(endpoint);
    Client::from_conf(conf.build())
}

fn s3_err<E>(bucket: &str, call: &'static str, e: aws_sdk_s3::error::SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = match e.as_service_error() {
        Some(s) => format!(
            "{}: {}",
            s.code().unwrap_or("error"),
            s.message().unwrap_or("no message")
        ),
        None => aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
    };
    Error::Bucket {
        bucket: bucket.to_owned(),
        call,
        detail,
    }
}

fn build_err(bucket: &str, e: aws_sdk_s3::error::BuildError) -> Error {
    Error::Bucket {
        bucket: bucket.to_owned(),
        call: "building a request",
        detail: e.to_string(),
    }
}

/// The service error's code of a failed call, when S3 answered.
fn code<E: ProvideErrorMetadata>(e: &aws_sdk_s3::error::SdkError<E>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

/// Compares `bucket`'s settings with `want`; with `apply`, creates the bucket when it is missing
/// (in the client's region) and puts what differs. Findings come in a fixed order: bucket,
/// encryption, public access, then one per lifecycle rule of ours.
pub async fn inspect(
    client: &Client,
    bucket: &str,
    want: &BucketSettings,
    apply: bool,
) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let state = |same: bool| match (same, apply) {
        (true, _) => State::Ok,
        (false, true) => State::Changed,
        (false, false) => State::Differs,
    };

    // The bucket itself.
    let exists = match client.head_bucket().bucket(bucket).send().await {
        Ok(_) => true,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => false,
        Err(e) => return Err(s3_err(bucket, "HeadBucket", e)),
    };
    findings.push(Finding {
        setting: "bucket".into(),
        wanted: "exists".into(),
        found: if exists { "exists" } else { "missing" }.into(),
        state: state(exists),
    });
    if !exists {
        if !apply {
            // Nothing more to read from a bucket that is not there.
            return Ok(findings);
        }
        let mut create = client.create_bucket().bucket(bucket);
        // us-east-1 is the default location and refuses to be named as a constraint.
        if let Some(region) = client.config().region().map(|r| r.as_ref().to_owned())
            && region != "us-east-1"
        {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region.as_str()))
                    .build(),
            );
        }
        create
            .send()
            .await
            .map_err(|e| s3_err(bucket, "CreateBucket", e))?;
    }

    findings.push(encryption(client, bucket, &want.encryption, apply, state).await?);
    findings.push(public_access(client, bucket, apply, state).await?);
    findings.extend(lifecycle(client, bucket, want, apply, state).await?);
    Ok(findings)
}

async fn encryption(
    client: &Client,
    bucket: &str,
    want: &Encryption,
    apply: bool,
    state: impl Fn(bool) -> State,
) -> Result<Finding> {
    let found = match client.get_bucket_encryption().bucket(bucket).send().await {
        Ok(out) => out
            .server_side_encryption_configuration()
            .and_then(|c| c.rules().first())
            .and_then(|r| r.apply_server_side_encryption_by_default())
            .and_then(|d| match d.sse_algorithm() {
                ServerSideEncryption::Aes256 => Some(Encryption::S3),
                ServerSideEncryption::AwsKms => Some(Encryption::Kms {
                    key_id: d.kms_master_key_id().map(str::to_owned),
                }),
                _ => None,
            }),
        Err(e) if code(&e) == Some("ServerSideEncryptionConfigurationNotFoundError") => None,
        Err(e) => return Err(s3_err(bucket, "GetBucketEncryption", e)),
    };
    let same = found.as_ref() == Some(want);
    if !same && apply {
        let (algorithm, key) = match want {
            Encryption::S3 => (ServerSideEncryption::Aes256, None),
            Encryption::Kms { key_id } => (ServerSideEncryption::AwsKms, key_id.clone()),
        };
        let default = ServerSideEncryptionByDefault::builder()
            .sse_algorithm(algorithm.clone())
            .set_kms_master_key_id(key)
            .build()
            .map_err(|e| build_err(bucket, e))?;
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(default)
            // S3 Bucket Keys cut KMS requests (and their cost) by orders of magnitude.
            .bucket_key_enabled(algorithm == ServerSideEncryption::AwsKms)
            .build();
        let configuration = ServerSideEncryptionConfiguration::builder()
            .rules(rule)
            .build()
            .map_err(|e| build_err(bucket, e))?;
        client
            .put_bucket_encryption()
            .bucket(bucket)
            .server_side_encryption_configuration(configuration)
            .send()
            .await
            .map_err(|e| s3_err(bucket, "PutBucketEncryption", e))?;
    }
    Ok(Finding {
        setting: "encryption".into(),
        wanted: want.to_string(),
        found: found.map_or_else(|| "none".into(), |f| f.to_string()),
        state: state(same),
    })
}

async fn public_access(
    client: &Client,
    bucket: &str,
    apply: bool,
    state: impl Fn(bool) -> State,
) -> Result<Finding> {
    let found = match client.get_public_access_block().bucket(bucket).send().await {
        Ok(out) => out.public_access_block_configuration().map(|c| {
            [
                ("BlockPublicAcls", c.block_public_acls()),
                ("IgnorePublicAcls", c.ignore_public_acls()),
                ("BlockPublicPolicy", c.block_public_policy()),
                ("RestrictPublicBuckets", c.restrict_public_buckets()),
            ]
        }),
        Err(e) if code(&e) == Some("NoSuchPublicAccessBlockConfiguration") => None,
        Err(e) => return Err(s3_err(bucket, "GetPublicAccessBlock", e)),
    };
    let open: Vec<&str> = match &found {
        Some(flags) => flags
            .iter()
            .filter(|(_, on)| *on != Some(true))
            .map(|(name, _)| *name)
            .collect(),
        None => vec!["no public access block"],
    };
    let same = open.is_empty();
    if !same && apply {
        client
            .put_public_access_block()
            .bucket(bucket)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .ignore_public_acls(true)
                    .block_public_policy(true)
                    .restrict_public_buckets(true)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_err(bucket, "PutPublicAccessBlock", e))?;
    }
    Ok(Finding {
        setting: "public access".into(),
        wanted: "all blocked".into(),
        found: if same {
            "all blocked".into()
        } else {
            format!("not blocked: {}", open.join(", "))
        },
        state: state(same),
    })
}

/// Our rules as S3 keeps them: (id, prefix, expiration days, abort-multipart days).
type RuleShape = (String, String, Option<i32>, Option<i32>);

fn shape(rule: &LifecycleRule) -> Option<RuleShape> {
    if rule.status() != &ExpirationStatus::Enabled {
        return None;
    }
    let prefix = rule
        .filter()
        .and_then(LifecycleRuleFilter::prefix)
        .or_else(|| {
            #[allow(deprecated)]
            rule.prefix()
        })
        .unwrap_or_default();
    Some((
        rule.id().unwrap_or_default().to_owned(),
        prefix.to_owned(),
        rule.expiration().and_then(LifecycleExpiration::days),
        rule.abort_incomplete_multipart_upload()
            .and_then(AbortIncompleteMultipartUpload::days_after_initiation),
    ))
}

fn describe(shape: Option<&RuleShape>) -> String {
    match shape {
        None => "none".into(),
        Some((_, prefix, expire, abort)) => {
            let under = if prefix.is_empty() {
                "the whole bucket".to_owned()
            } else {
                format!("{prefix}*")
            };
            match (expire, abort) {
                (Some(d), _) => format!("expire {under} after {d} days"),
                (None, Some(d)) => format!("abort uploads of {under} after {d} days"),
                (None, None) => format!("{under}: no action"),
            }
        }
    }
}

async fn lifecycle(
    client: &Client,
    bucket: &str,
    want: &BucketSettings,
    apply: bool,
    state: impl Fn(bool) -> State,
) -> Result<Vec<Finding>> {
    let existing: Vec<LifecycleRule> = match client
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(out) => out.rules().to_vec(),
        Err(e) if code(&e) == Some("NoSuchLifecycleConfiguration") => Vec::new(),
        Err(e) => return Err(s3_err(bucket, "GetBucketLifecycleConfiguration", e)),
    };
    let mut wanted: Vec<RuleShape> = want
        .expiries
        .iter()
        .map(|e| (e.id.clone(), e.prefix.clone(), Some(e.days), None))
        .collect();
    wanted.push((
        format!("{RULE_PREFIX}abort-multipart-uploads"),
        String::new(),
        None,
        Some(want.abort_multipart_days),
    ));
    let ours: HashMap<String, RuleShape> = existing
        .iter()
        .filter(|r| r.id().is_some_and(|id| id.starts_with(RULE_PREFIX)))
        .filter_map(|r| shape(r).map(|s| (s.0.clone(), s)))
        .collect();
    let findings: Vec<Finding> = wanted
        .iter()
        .map(|w| {
            let found = ours.get(&w.0);
            Finding {
                setting: format!("lifecycle {}", w.0),
                wanted: describe(Some(w)),
                found: describe(found),
                state: state(found == Some(w)),
            }
        })
        .collect();
    // A rule of ours the settings no longer ask for (a retention removed) differs too.
    let stale: Vec<Finding> = ours
        .values()
        .filter(|o| !wanted.iter().any(|w| w.0 == o.0))
        .map(|o| Finding {
            setting: format!("lifecycle {}", o.0),
            wanted: "none".into(),
            found: describe(Some(o)),
            state: state(false),
        })
        .collect();
    let same = findings.iter().chain(&stale).all(|f| f.state == State::Ok);
    if !same && apply {
        // The store's other rules stay as they are; ours are replaced.
        let mut rules: Vec<LifecycleRule> = existing
            .into_iter()
            .filter(|r| !r.id().is_some_and(|id| id.starts_with(RULE_PREFIX)))
            .collect();
        for (id, prefix, expire, abort) in &wanted {
            let mut rule = LifecycleRule::builder()
                .id(id)
                .status(ExpirationStatus::Enabled)
                .filter(LifecycleRuleFilter::builder().prefix(prefix).build());
            if let Some(days) = expire {
                rule = rule.expiration(LifecycleExpiration::builder().days(*days).build());
            }
            if let Some(days) = abort {
                rule = rule.abort_incomplete_multipart_upload(
                    AbortIncompleteMultipartUpload::builder()
                        .days_after_initiation(*days)
                        .build(),
                );
            }
            rules.push(rule.build().map_err(|e| build_err(bucket, e))?);
        }
        let configuration = BucketLifecycleConfiguration::builder()
            .set_rules(Some(rules))
            .build()
            .map_err(|e| build_err(bucket, e))?;
        client
            .put_bucket_lifecycle_configuration()
            .bucket(bucket)
            .lifecycle_configuration(configuration)
            .send()
            .await
            .map_err(|e| s3_err(bucket, "PutBucketLifecycleConfiguration", e))?;
    }
    Ok(findings.into_iter().chain(stale).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_splits_into_bucket_and_prefix() {
        assert_eq!(
            parse_location("s3://shop-lake/prod/lake/"),
            Some(("shop-lake".into(), "prod/lake".into()))
        );
        assert_eq!(
            parse_location("s3://shop-lake"),
            Some(("shop-lake".into(), String::new()))
        );
        assert_eq!(parse_location("s3:///lake"), None);
        assert_eq!(parse_location("/var/lake"), None);
    }

    #[test]
    fn a_retention_period_expires_in_whole_days_at_least_one() {
        let day = 86_400;
        assert_eq!(
            BucketSettings::days(std::time::Duration::from_secs(30 * day)),
            30
        );
        // Three months as humantime counts them: 91.3 days, kept 92.
        assert_eq!(
            BucketSettings::days(std::time::Duration::from_secs(3 * 2_630_016)),
            92
        );
        assert_eq!(
            BucketSettings::days(std::time::Duration::from_secs(3_600)),
            1
        );
    }
}
