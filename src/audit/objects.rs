//! Where the sealed Parquet files live, through `object_store`: the data
//! directory's `parquet/` folder (the default) or an S3-compatible bucket
//! (`s3://bucket/prefix`, credentials and endpoint from the standard
//! `AWS_*` environment variables).
//!
//! Files are named `<prefix>/<table>/<first index, 20 digits>.parquet`.
//! Each is written whole in one request (one S3 PUT, or for a directory a
//! temporary file, fdatasync, rename and directory sync), so a reader
//! sees a whole file or none. One listing per table says which segments
//! are sealed: a segment counts once its `receipts` file exists, which is
//! written last.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::SessionContext;
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::tables::Table;
use super::AuditError;
use crate::store::fsutil::{create_dir_durably, write_file_durably};
use crate::store::layout::Layout;

/// The place sealed segments are written to and queried from.
#[derive(Clone)]
pub struct ParquetStore {
    store: Arc<dyn ObjectStore>,
    /// The store's URL scheme and authority, `file://` or `s3://bucket`.
    base: url::Url,
    /// The folder inside the store.
    prefix: ObjectPath,
    /// For a local folder: its path, written with our own durable write.
    local: Option<PathBuf>,
}

/// Which segments each table has files for, and their sizes.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    tables: Vec<(Table, BTreeMap<u64, u64>)>,
}

impl Listing {
    /// Where the sealed files end: the first index not covered by a
    /// contiguous run of sealed segments from the log's start. `firsts`
    /// are the log's segments; the last one is active and never sealed.
    pub fn sealed_upto(&self, firsts: &[u64]) -> u64 {
        let Some((&active, sealed)) = firsts.split_last() else {
            return 0;
        };
        let receipts = self.of(Table::Receipts);
        sealed
            .iter()
            .copied()
            .find(|first| !receipts.is_some_and(|r| r.contains_key(first)))
            .unwrap_or(active)
    }

    /// Whether segment `first` is sealed (its receipts file exists).
    pub fn is_sealed(&self, first: u64) -> bool {
        self.of(Table::Receipts)
            .is_some_and(|r| r.contains_key(&first))
    }

    /// The bytes of every file listed.
    pub fn bytes(&self) -> u64 {
        self.tables.iter().flat_map(|(_, s)| s.values()).sum()
    }

    /// The segments below `upto` that `table` has files for, in order.
    pub fn files(&self, table: Table, upto: u64) -> Vec<u64> {
        self.of(table)
            .map(|s| s.range(..upto).map(|(&first, _)| first).collect())
            .unwrap_or_default()
    }

    fn of(&self, table: Table) -> Option<&BTreeMap<u64, u64>> {
        self.tables
            .iter()
            .find(|(t, _)| *t == table)
            .map(|(_, s)| s)
    }
}

impl ParquetStore {
    /// The data directory's `parquet/` folder.
    pub fn local(layout: &Layout) -> ParquetStore {
        let dir = layout.root().join("parquet");
        let absolute = std::path::absolute(&dir).unwrap_or(dir);
        ParquetStore {
            store: Arc::new(object_store::local::LocalFileSystem::new()),
            base: url::Url::parse("file:///").expect("a constant URL"),
            prefix: ObjectPath::from_filesystem_path(&absolute)
                .unwrap_or_else(|_| ObjectPath::from(absolute.to_string_lossy().as_ref())),
            local: Some(absolute),
        }
    }

    /// The store at `url`: `s3://bucket/prefix` for a bucket, or `None`
    /// for the data directory's own folder.
    pub fn open(url: Option<&str>, layout: &Layout) -> Result<ParquetStore, AuditError> {
        let Some(url) = url else {
            return Ok(ParquetStore::local(layout));
        };
        let bad = |why: String| AuditError::StoreUrl {
            url: url.to_string(),
            why,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if parsed.scheme() != "s3" {
            return Err(bad(format!(
                "the scheme is {:?}; use s3://bucket/prefix, or leave it out for the data directory",
                parsed.scheme()
            )));
        }
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| bad("it names no bucket".into()))?;
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(ParquetStore {
            store: Arc::new(store),
            base: url::Url::parse(&format!("s3://{bucket}")).map_err(|e| bad(e.to_string()))?,
            prefix: ObjectPath::from(parsed.path().trim_matches('/')),
            local: None,
        })
    }

    /// Where files go, for messages: a folder or `s3://bucket/prefix`.
    pub fn describe(&self) -> String {
        match &self.local {
            Some(dir) => dir.display().to_string(),
            None => format!(
                "{}/{}",
                self.base.as_str().trim_end_matches('/'),
                self.prefix
            ),
        }
    }

    fn location(&self, table: Table, first: u64) -> ObjectPath {
        self.prefix
            .clone()
            .join(table.name())
            .join(format!("{first:020}.parquet"))
    }

    /// The URL DataFusion reads `table`'s file of segment `first` from.
    pub fn url(&self, table: Table, first: u64) -> Result<ListingTableUrl, AuditError> {
        let text = match &self.local {
            Some(dir) => dir
                .join(table.name())
                .join(format!("{first:020}.parquet"))
                .to_string_lossy()
                .into_owned(),
            None => format!(
                "{}/{}",
                self.base.as_str().trim_end_matches('/'),
                self.location(table, first)
            ),
        };
        ListingTableUrl::parse(&text).map_err(|e| AuditError::StoreUrl {
            url: text,
            why: e.to_string(),
        })
    }

    /// Lets `ctx` read this store's URLs.
    pub fn register(&self, ctx: &SessionContext) {
        if self.local.is_none() {
            ctx.register_object_store(&self.base, Arc::clone(&self.store));
        }
    }

    /// Which segments each table has files for: one listing per table.
    pub async fn list(&self, tables: &[Table]) -> Result<Listing, AuditError> {
        let mut listing = Listing::default();
        for &table in tables {
            let dir = self.prefix.clone().join(table.name());
            let mut segments = BTreeMap::new();
            let mut files = self.store.list(Some(&dir));
            while let Some(meta) = files.next().await {
                let meta = match meta {
                    Ok(m) => m,
                    Err(object_store::Error::NotFound { .. }) => break,
                    Err(e) => return Err(self.failed("list", &dir, e)),
                };
                let first = meta
                    .location
                    .filename()
                    .and_then(|n| n.strip_suffix(".parquet"))
                    .filter(|n| n.len() == 20)
                    .and_then(|n| n.parse::<u64>().ok());
                if let Some(first) = first {
                    segments.insert(first, meta.size);
                }
            }
            listing.tables.push((table, segments));
        }
        Ok(listing)
    }

    /// Writes `table`'s file of segment `first` whole.
    pub async fn put(&self, table: Table, first: u64, data: Vec<u8>) -> Result<(), AuditError> {
        if let Some(dir) = &self.local {
            let table_dir = dir.join(table.name());
            let path = table_dir.join(format!("{first:020}.parquet"));
            let root = dir.clone();
            return tokio::task::spawn_blocking(move || {
                create_dir_durably(&root).map_err(AuditError::write(&root))?;
                create_dir_durably(&table_dir).map_err(AuditError::write(&table_dir))?;
                write_file_durably(&path, &data, 0o644).map_err(AuditError::write(&path))
            })
            .await
            .map_err(|e| AuditError::Write {
                path: dir.clone(),
                source: std::io::Error::other(e),
            })?;
        }
        let location = self.location(table, first);
        self.store
            .put(&location, PutPayload::from(data))
            .await
            .map_err(|e| self.failed("write", &location, e))?;
        Ok(())
    }

    fn failed(
        &self,
        what: &'static str,
        at: &ObjectPath,
        source: object_store::Error,
    ) -> AuditError {
        AuditError::Objects {
            what,
            at: format!("{}/{at}", self.base.as_str().trim_end_matches('/')),
            source,
        }
    }
}
