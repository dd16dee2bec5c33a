//! The lake: a root (local folder or `s3://bucket/prefix`) holding the Delta tables and the staging
//! area, and the object store that reaches it.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::{DeltaTable, DeltaTableBuilder};
use futures::StreamExt;
use object_store::ObjectStore;
use url::Url;

use crate::{Error, Result};

/// Where the lake lives and how to reach it.
#[derive(Clone, Debug)]
pub struct Lake {
    root: Url,
    storage_options: HashMap<String, String>,
    store: Arc<dyn ObjectStore>,
}

impl Lake {
    /// Opens the lake at `root`: a local path (created if missing) or a URL. `storage_options` are
    /// passed to deltalake and object_store (endpoint, region, credentials for S3).
    pub fn open(root: &str, storage_options: HashMap<String, String>) -> Result<Self> {
        let root =
            deltalake::ensure_table_uri(root).map_err(|source| Error::delta(root, source))?;
        let store: Arc<dyn ObjectStore> = match root.scheme() {
            "file" => {
                let path = root.to_file_path().map_err(|_| Error::Lake {
                    message: format!("{root} is not a local path"),
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
            other => {
                return Err(Error::Lake {
                    message: format!(
                        "lake scheme {other}:// is not supported by this build (use a local path)"
                    ),
                });
            }
        };
        Ok(Lake {
            root,
            storage_options,
            store,
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

    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.storage_options
    }

    /// URL of table `name`.
    pub fn table_url(&self, name: &str) -> Result<Url> {
        self.root
            .join(&format!("{name}/"))
            .map_err(|e| Error::Lake {
                message: format!("bad table name {name}: {e}"),
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

    /// The table handle for writing: loaded when it exists, uninitialised (created by the first
    /// write) otherwise.
    pub async fn table_for_write(&self, name: &str) -> Result<DeltaTable> {
        match self.table(name).await? {
            Some(table) => Ok(table),
            None => self.new_table(name),
        }
    }

    /// An uninitialised handle on table `name`, for the write that creates it.
    pub fn new_table(&self, name: &str) -> Result<DeltaTable> {
        let url = self.table_url(name)?;
        if let Ok(path) = url.to_file_path() {
            std::fs::create_dir_all(&path).map_err(|e| Error::Lake {
                message: format!("creating {}: {e}", path.display()),
            })?;
        }
        DeltaTableBuilder::from_url(url)
            .and_then(|b| b.with_storage_options(self.storage_options.clone()).build())
            .map_err(|source| Error::delta(name, source))
    }
}
