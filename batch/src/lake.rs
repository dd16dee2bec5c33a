//! The lake: a root (local folder or `s3://bucket/prefix`) holding the Delta tables and the staging
//! area, and the object store that reaches it.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::{DeltaTable, DeltaTableBuilder};
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

    /// Loads table `name`; `None` when it was never written.
    pub async fn table(&self, name: &str) -> Result<Option<DeltaTable>> {
        let url = self.table_url(name)?;
        let mut table = DeltaTableBuilder::from_url(url)
            .and_then(|b| b.with_storage_options(self.storage_options.clone()).build())
            .map_err(|source| Error::delta(name, source))?;
        match table.load().await {
            Ok(()) => Ok(Some(table)),
            Err(deltalake::DeltaTableError::NotATable(_)) => Ok(None),
            Err(source) => Err(Error::delta(name, source)),
        }
    }

    /// The table handle for writing (loaded when it exists, uninitialised otherwise).
    pub async fn table_for_write(&self, name: &str) -> Result<DeltaTable> {
        let url = self.table_url(name)?;
        DeltaTable::try_from_url_with_storage_options(url, self.storage_options.clone())
            .await
            .map_err(|source| Error::delta(name, source))
    }
}
