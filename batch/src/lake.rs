//! The lake: a root (local folder or `s3://bucket/prefix`) holding the Delta tables and the staging
//! area, and the object store that reaches it.
//!
//! On S3 the configuration is the AWS SDKs' own: the `AWS_*` environment (credentials, region,
//! `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_S3`), or the same keys passed as storage options.
//! Commits are safe against concurrent writers without a lock table: deltalake writes each log
//! entry with a conditional put (`If-None-Match: *`), which S3 has supported since 2024.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::{DeltaTable, DeltaTableBuilder};
use futures::StreamExt;
use object_store::ObjectStore;
use url::Url;

use crate::keys::KeyIndex;
use crate::{Error, Result};

/// Which version of a table [`Lake::table_at`] loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// A version number of the table's Delta log.
    Version(u64),
    /// The last version committed at or before this time (UTC microseconds since the epoch).
    Time(i64),
}

/// Where the lake lives and how to reach it.
#[derive(Clone, Debug)]
pub struct Lake {
    root: Url,
    storage_options: HashMap<String, String>,
    store: Arc<dyn ObjectStore>,
    /// The key index compaction keeps in memory between rounds ([`crate::keys`]).
    keys: Arc<KeyIndex>,
}

impl Lake {
    /// Opens the lake at `root`: a local path (created if missing) or a URL. `storage_options` are
    /// passed to deltalake and object_store (endpoint, region, credentials for S3).
    pub fn open(root: &str, mut storage_options: HashMap<String, String>) -> Result<Self> {
        // A URL of a scheme the lake does not speak is the user's mistake, refused in their words
        // (deltalake's own message lists schemes it knows but this platform does not use).
        if let Ok(url) = Url::parse(root)
            && url.scheme().len() > 1
            && !matches!(url.scheme(), "file" | "s3" | "s3a")
        {
            return Err(Error::BadLocation {
                location: root.to_owned(),
                reason: format!(
                    "{}:// is not supported (use a local path or s3://bucket/prefix)",
                    url.scheme()
                ),
            });
        }
        let root =
            deltalake::ensure_table_uri(root).map_err(|source| Error::delta(root, source))?;
        let store: Arc<dyn ObjectStore> = match root.scheme() {
            "file" => {
                let path = root.to_file_path().map_err(|()| Error::BadLocation {
                    location: root.to_string(),
                    reason: "a file:// URL must name a local path".into(),
                })?;
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(path).map_err(
                        |source| Error::Store {
                            path: root.to_string(),
                            source,
                        },
                    )?,
                )
            }
            "s3" | "s3a" => {
                storage_options = s3_options(storage_options);
                // deltalake's own S3 store (its factory is registered when the crate loads), so
                // that staging, checkpoints and the Delta log share one configuration: the
                // credential chain, region, endpoint and conditional puts.
                deltalake::logstore::store_for(&root, storage_options.clone())
                    .map_err(|source| Error::delta(root.as_str(), source))?
            }
            other => {
                return Err(Error::BadLocation {
                    location: root.to_string(),
                    reason: format!(
                        "{other}:// is not supported (use a local path or s3://bucket/prefix)"
                    ),
                });
            }
        };
        Ok(Lake {
            root,
            storage_options,
            store,
            keys: Arc::default(),
        })
    }

    /// The lake root as a URL (`file:///…/` or `s3://…/`), ending with a slash.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The object store rooted at the lake root; staging paths are relative to it.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The key index of the lake's appended tables ([`crate::keys`]).
    pub fn keys(&self) -> &KeyIndex {
        &self.keys
    }

    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.storage_options
    }

    /// URL of table `name`.
    pub fn table_url(&self, name: &str) -> Result<Url> {
        self.root
            .join(&format!("{name}/"))
            .map_err(|e| Error::BadLocation {
                location: format!("{}{name}/", self.root),
                reason: format!("{name:?} is not a usable table name ({e})"),
            })
    }

    /// Whether table `name` has a Delta log (was ever committed).
    pub async fn table_exists(&self, name: &str) -> Result<bool> {
        let log = object_store::path::Path::from(format!("{name}/_delta_log"));
        match self.store.list(Some(&log)).next().await {
            None | Some(Err(object_store::Error::NotFound { .. })) => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(source)) => Err(Error::Store {
                path: log.to_string(),
                source,
            }),
        }
    }

    /// Loads table `name`; `None` when it was never written.
    pub async fn table(&self, name: &str) -> Result<Option<DeltaTable>> {
        if !self.table_exists(name).await? {
            return Ok(None);
        }
        let url = self.table_url(name)?;
        let mut table = DeltaTableBuilder::from_url(url)
            .and_then(|b| b.with_storage_options(self.storage_options.clone()).build())
            .map_err(|source| Error::delta(name, source))?;
        table
            .load()
            .await
            .map_err(|source| Error::delta(name, source))?;
        Ok(Some(table))
    }

    /// Loads table `name` as it was at `at` (time travel: a version number, or the last version
    /// committed at or before a time). Versions whose files VACUUM deleted cannot be read: the
    /// reach is `[retention] deleted_files` ([`crate::lifecycle`]). `None` when the table was
    /// never written.
    pub async fn table_at(&self, name: &str, at: AsOf) -> Result<Option<DeltaTable>> {
        if !self.table_exists(name).await? {
            return Ok(None);
        }
        let url = self.table_url(name)?;
        let builder = DeltaTableBuilder::from_url(url)
            .map_err(|source| Error::delta(name, source))?
            .with_storage_options(self.storage_options.clone());
        let builder = match at {
            AsOf::Version(v) => builder.with_version(v),
            AsOf::Time(t) => builder.with_timestamp(
                chrono::DateTime::from_timestamp_micros(t).ok_or_else(|| Error::BadOption {
                    name: "time travel",
                    value: t.to_string(),
                    reason: "not a time shoplake can represent".into(),
                })?,
            ),
        };
        let table = builder
            .load()
            .await
            .map_err(|source| Error::delta(name, source))?;
        // delta-rs answers a time before the first commit with the first version; an empty or
        // later table would be a wrong answer about that time, so it is an error.
        if let AsOf::Time(t) = at {
            let snapshot = table
                .snapshot()
                .map_err(|source| Error::delta(name, source))?;
            let version = snapshot.version();
            if let Some(committed) = snapshot.version_timestamp(version)
                && committed > t.div_euclid(1_000)
            {
                return Err(Error::BadOption {
                    name: "time travel",
                    value: chrono::DateTime::from_timestamp_micros(t)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| t.to_string()),
                    reason: format!(
                        "table {name} has no version from then: its earliest readable version, \
                         {version}, was committed at {}",
                        chrono::DateTime::from_timestamp_millis(committed)
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_default()
                    ),
                });
            }
        }
        Ok(Some(table))
    }

    /// A DataFrame over the current version of table `name` in `ctx`; `None` when it was never
    /// written.
    pub async fn scan(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        name: &str,
    ) -> Result<Option<datafusion::dataframe::DataFrame>> {
        let Some(table) = self.table(name).await? else {
            return Ok(None);
        };
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|source| Error::delta(name, source))?;
        let provider = table
            .table_provider()
            .await
            .map_err(|source| Error::query(name, source))?;
        ctx.read_table(provider)
            .map(Some)
            .map_err(|source| Error::query(name, source))
    }

    /// An uninitialised handle on table `name`, for the write that creates it
    /// ([`crate::write`]'s `create_empty`: rows never go in by a creating commit).
    pub fn new_table(&self, name: &str) -> Result<DeltaTable> {
        let url = self.table_url(name)?;
        if let Ok(path) = url.to_file_path() {
            std::fs::create_dir_all(&path).map_err(|source| Error::CreateDir {
                path: path.clone(),
                source,
            })?;
        }
        DeltaTableBuilder::from_url(url)
            .and_then(|b| b.with_storage_options(self.storage_options.clone()).build())
            .map_err(|source| Error::delta(name, source))
    }
}

/// The S3 storage options: `options` completed from the environment's endpoint. An `http://`
/// endpoint (a local emulator) is allowed as such, as the AWS SDKs allow it; object_store would
/// otherwise refuse plain HTTP. Buckets are addressed by path, which emulators need and AWS
/// accepts, unless `aws_virtual_hosted_style_request` says otherwise.
fn s3_options(mut options: HashMap<String, String>) -> HashMap<String, String> {
    if let Some(endpoint) = s3_endpoint(&options).filter(|e| e.starts_with("http://")) {
        options.entry("aws_endpoint_url".into()).or_insert(endpoint);
        options
            .entry("aws_allow_http".into())
            .or_insert("true".into());
    }
    options
}

/// The S3 endpoint the lake is reached at: a storage option (the first of `aws_endpoint_url_s3`,
/// `aws_endpoint_url`, `aws_endpoint`, `endpoint`, in any case), else `AWS_ENDPOINT_URL_S3`, else
/// `AWS_ENDPOINT_URL`; None: AWS's own.
pub(crate) fn s3_endpoint(options: &HashMap<String, String>) -> Option<String> {
    [
        "aws_endpoint_url_s3",
        "aws_endpoint_url",
        "aws_endpoint",
        "endpoint",
    ]
    .iter()
    .find_map(|k| {
        options
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    })
    .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
    .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsupported_location_is_refused_naming_it() {
        let e = Lake::open("ftp://example.com/lake", HashMap::new()).unwrap_err();
        assert!(
            matches!(&e, Error::BadLocation { location, .. } if location.starts_with("ftp://example.com/lake")),
            "{e}"
        );
        assert!(e.to_string().contains("s3://bucket/prefix"), "{e}");
    }
}
