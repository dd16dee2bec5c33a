//! The key index: which keys each lake file holds, so that compaction drops a staged row whose
//! key the table already holds — whatever happened to any worker's state — without reading the
//! table.
//!
//! ## Why
//! The streaming stage de-duplicates by event id within its own window (72 h / 5M ids). Past
//! it — a client's retry after the id left the window, a Kinesis lease that moved the shard to
//! another worker, a worker that lost its disk — the copy that reaches staging has the same id and
//! a new `received_at`. Compaction is the one place every copy passes through, so it is where
//! exactly once is decided for good.
//!
//! ## How
//! For every data file of `events`, `bad_rows` and `fraud_decisions`, the index holds the 64-bit
//! xxHash of each key in the file, sorted: an object `_index/<table>/<file's path>.keys` beside
//! the lake (8 bytes a key; 76 MiB for a day of 10 million events), and in memory the files of
//! the days recently looked up. A staged row of day *d* is looked up in the files of days
//! *d − 1*, *d* and *d + 1* of the snapshot the round commits against; a hash that matches names
//! the files that may hold the key, and only those files' key column is read to confirm it (a
//! 64-bit hash can collide; a key is dropped only when the file really holds it). So a round
//! costs the hashes of its own rows plus the key column of the few files holding real
//! duplicates, never a scan of the table.
//!
//! The index is derived from the table and never trusted beyond it: a file of the snapshot
//! without an index object (written by a compactor that died before indexing it, by optimize,
//! or by an older version) is indexed from its key column when first needed, and an index object
//! that does not parse is rebuilt. Files that leave the table (optimize, a delete) leave the
//! index as the days are looked up again. Nothing in the index can make a key pass that the
//! snapshot holds, and nothing can drop a key the snapshot does not hold.
//!
//! ## The window
//! A row's day is the date of its corrected event time, `occurred_at` moved by the device's clock
//! skew measured at the send. A retry is the same event sent again from the same device, so its
//! day differs from the first copy's only as much as the device's clock changed between the two
//! sends; the lookup of the day either side covers any change up to a day. A duplicate can pass
//! only when the device's clock moved by more than that between sends — which needs one of the
//! copies to carry a correction of over 12 hours. Compaction counts the events it writes with such
//! a correction (`CompactReport::beyond_dedup_window`, on `/metrics`), the bound on what can pass.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use arrow::array::{AsArray, RecordBatch, StringArray};
use arrow::datatypes::Date32Type;
use bytes::Bytes;
use deltalake::DeltaTable;
use futures::{StreamExt, TryStreamExt};
use object_store::path::{Path, PathPart};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
// parquet 59.3 deprecates its object_store reader in favour of one's own `AsyncFileReader`
// (arrow-rs#10308); it still does what the index needs — ranged reads of one column's pages —
// and writing our own would copy it.
use parquet::arrow::ProjectionMask;
#[expect(deprecated, reason = "see above")]
use parquet::arrow::async_reader::ParquetObjectReader;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use shoplake_events::fields::EVENT_DATE;
use tracing::debug;
use twox_hash::XxHash64;

use crate::tables::TableDescriptor;
use crate::{Error, Lake, Result};

/// The folder, under the lake root, that holds the key index.
pub const INDEX: &str = "_index";

/// The first bytes of an index object (the format's version is its last two).
const MAGIC: &[u8; 8] = b"SLKEYS01";

/// Index objects read or built at once.
const CONCURRENT_LOADS: usize = 8;

/// Keys the in-memory index keeps before it forgets the days least recently looked up (8 bytes
/// each: 128 MiB). The days of the round being looked up are always kept.
const DEFAULT_BUDGET: usize = 16 << 20;

/// The hash of a key in the index.
fn hash(key: &str) -> u64 {
    XxHash64::oneshot(0, key.as_bytes())
}

/// The sorted, distinct hashes of one data file's keys.
type FileKeys = Arc<Vec<u64>>;

/// One day of one table: its data files' keys, by the file's path in the table.
#[derive(Default)]
struct Day {
    files: HashMap<String, FileKeys>,
    last_used: u64,
}

impl Day {
    fn keys(&self) -> usize {
        self.files.values().map(|f| f.len()).sum()
    }
}

#[derive(Default)]
struct Cache {
    days: HashMap<(&'static str, i32), Day>,
    tick: u64,
}

/// The key index of a lake, shared by the compaction rounds of one process (it lives in
/// [`Lake`]); see the module docs.
pub struct KeyIndex {
    cache: Mutex<Cache>,
    budget: usize,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex {
            cache: Mutex::default(),
            budget: DEFAULT_BUDGET,
        }
    }
}

impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("KeyIndex")
            .field("days", &cache.days.len())
            .field("budget", &self.budget)
            .finish()
    }
}

/// What a lookup found and what it cost.
#[derive(Debug, Default)]
pub(crate) struct Lookup {
    /// The staged keys the table's snapshot already holds.
    pub existing: HashSet<String>,
    /// Index objects read from the store (files not in memory yet).
    pub index_objects_read: u64,
    /// Data files indexed from their key column (no usable index object).
    pub files_indexed: u64,
    /// Data files whose key column was read to confirm a hash that matched.
    pub files_checked: u64,
}

/// A data file of the snapshot: its day, its path in the table and its size.
struct DataFile {
    day: i32,
    path: String,
    size: u64,
}

/// The day (days since 1970-01-01) of an `event_date` partition value (`2026-03-01`).
fn day_of(value: &str) -> Option<i32> {
    let date = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from((date - epoch).num_days()).ok()
}

/// The (key, day) of every staged row of `batches` for `table`.
fn staged_keys<'a>(
    batches: &'a [RecordBatch],
    table: &TableDescriptor,
) -> Result<Vec<(&'a str, i32)>> {
    let key = table.key_column();
    let mut out = Vec::new();
    for b in batches {
        let keys = b
            .column_by_name(key)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| Error::missing_column(table.name, key))?;
        let days = b
            .column_by_name(EVENT_DATE)
            .and_then(|c| c.as_primitive_opt::<Date32Type>())
            .ok_or_else(|| Error::missing_column(table.name, EVENT_DATE))?;
        out.extend((0..b.num_rows()).map(|i| (keys.value(i), days.value(i))));
    }
    Ok(out)
}

/// The store path of a data file of `table` (its path in the table, as the Delta log has it).
fn data_path(table: &str, path: &str) -> Path {
    let inner = Path::parse(path).unwrap_or_else(|_| Path::from(path));
    std::iter::once(PathPart::from(table))
        .chain(inner.parts())
        .collect()
}

/// The store path of the index object of a data file of `table`.
pub(crate) fn index_path(table: &str, path: &str) -> Path {
    let inner = Path::parse(path).unwrap_or_else(|_| Path::from(path));
    let mut parts: Vec<PathPart<'static>> = [INDEX, table]
        .into_iter()
        .map(|p| PathPart::from(p.to_owned()))
        .chain(inner.parts().map(|p| PathPart::from(p.as_ref().to_owned())))
        .collect();
    if let Some(last) = parts.pop() {
        parts.push(PathPart::from(format!("{}.keys", last.as_ref())));
    }
    parts.into_iter().collect()
}

/// The key column of a data file, read alone (ranged reads of that column's pages).
async fn read_keys(
    store: Arc<dyn ObjectStore>,
    table: &TableDescriptor,
    file: &DataFile,
) -> Result<Vec<StringArray>> {
    let path = data_path(table.name, &file.path);
    let err = |source| Error::LakeFile {
        path: path.to_string(),
        source,
    };
    #[expect(deprecated, reason = "the imports say why")]
    let reader = ParquetObjectReader::new(store, path.clone()).with_file_size(file.size);
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(err)?;
    let key = table.key_column();
    let Some((index, _)) = builder.schema().column_with_name(key) else {
        return Err(Error::missing_column(table.name, key));
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let batches: Vec<RecordBatch> = builder
        .with_projection(mask)
        .build()
        .map_err(err)?
        .try_collect()
        .await
        .map_err(err)?;
    batches
        .iter()
        .map(|b| {
            let column = b.column(0);
            // Written as Utf8; other engines may write Utf8View or large strings.
            arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8)
                .map(|c| c.as_string::<i32>().clone())
                .map_err(Error::from)
        })
        .collect()
}

/// The index object's bytes for `hashes` (sorted, distinct).
fn encode(hashes: &[u64]) -> Bytes {
    let mut out = Vec::with_capacity(16 + hashes.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(hashes.len() as u64).to_le_bytes());
    for h in hashes {
        out.extend_from_slice(&h.to_le_bytes());
    }
    out.into()
}

/// The hashes of an index object; None when it is not one (truncated, another format).
fn decode(bytes: &[u8]) -> Option<Vec<u64>> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (count, rest) = rest.split_first_chunk::<8>()?;
    let count = usize::try_from(u64::from_le_bytes(*count)).ok()?;
    if rest.len() != count.checked_mul(8)? {
        return None;
    }
    let hashes: Vec<u64> = rest
        .chunks_exact(8)
        .filter_map(|c| c.try_into().ok().map(u64::from_le_bytes))
        .collect();
    hashes.is_sorted().then_some(hashes)
}

/// What loading one file's keys took.
enum Loaded {
    Read(FileKeys),
    Indexed(FileKeys),
}

/// The keys of `file`: its index object, or else its key column (and the index object written).
async fn load(
    store: Arc<dyn ObjectStore>,
    table: &TableDescriptor,
    file: &DataFile,
) -> Result<Loaded> {
    let at = index_path(table.name, &file.path);
    let store_err = |source| Error::Store {
        path: at.to_string(),
        source,
    };
    match store.get(&at).await {
        Ok(got) => {
            let bytes = got.bytes().await.map_err(store_err)?;
            if let Some(hashes) = decode(&bytes) {
                return Ok(Loaded::Read(Arc::new(hashes)));
            }
            debug!(path = %at, "an index object does not parse; indexing its file again");
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(source) => return Err(store_err(source)),
    }
    let keys = read_keys(store.clone(), table, file).await?;
    let mut hashes: Vec<u64> = keys
        .iter()
        .flat_map(|a| a.iter().flatten().map(hash))
        .collect();
    hashes.sort_unstable();
    hashes.dedup();
    store
        .put(&at, PutPayload::from(encode(&hashes)))
        .await
        .map_err(store_err)?;
    Ok(Loaded::Indexed(Arc::new(hashes)))
}

impl KeyIndex {
    /// The keys of the staged `batches` that `table` (the snapshot the round will commit against)
    /// already holds, for `target` (partitioned by `event_date`).
    pub(crate) async fn existing(
        &self,
        lake: &Lake,
        target: &TableDescriptor,
        table: &DeltaTable,
        batches: &[RecordBatch],
    ) -> Result<Lookup> {
        let mut lookup = Lookup::default();
        let staged = staged_keys(batches, target)?;
        if staged.is_empty() || table.version().is_none() {
            return Ok(lookup);
        }
        let days: HashSet<i32> = staged
            .iter()
            .flat_map(|&(_, d)| [d.saturating_sub(1), d, d.saturating_add(1)])
            .collect();

        // The snapshot's files of those days.
        let snapshot = table
            .snapshot()
            .map_err(|source| Error::delta(target.name, source))?;
        let mut active: HashMap<i32, Vec<DataFile>> = HashMap::new();
        let mut sizes: HashMap<String, u64> = HashMap::new();
        for f in snapshot.log_data() {
            let Some(day) = f
                .partition_values_map()
                .remove(EVENT_DATE)
                .flatten()
                .and_then(|v| day_of(&v))
            else {
                continue;
            };
            if days.contains(&day) {
                let (path, size) = (f.path().into_owned(), u64::try_from(f.size()).unwrap_or(0));
                sizes.insert(path.clone(), size);
                active
                    .entry(day)
                    .or_default()
                    .push(DataFile { day, path, size });
            }
        }

        // Those not in memory yet; and files in memory that left the table are forgotten.
        let mut missing = Vec::new();
        let mut gone = Vec::new();
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache.tick += 1;
            let tick = cache.tick;
            for &day in &days {
                let entry = cache.days.entry((target.name, day)).or_default();
                entry.last_used = tick;
                let files = active.remove(&day).unwrap_or_default();
                let paths: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
                entry.files.retain(|p, _| {
                    let keep = paths.contains(p.as_str());
                    if !keep {
                        gone.push(p.clone());
                    }
                    keep
                });
                missing.extend(
                    files
                        .into_iter()
                        .filter(|f| !entry.files.contains_key(&f.path)),
                );
            }
        }
        let store = lake.store();
        for path in gone {
            // Best effort: a later lookup that needs it builds it again.
            let _ = store.delete(&index_path(target.name, &path)).await;
        }
        let loaded: Vec<(DataFile, Loaded)> = futures::stream::iter(missing)
            .map(|f| {
                let store = store.clone();
                async move { load(store, target, &f).await.map(|l| (f, l)) }
            })
            .buffer_unordered(CONCURRENT_LOADS)
            .try_collect()
            .await?;

        // The files whose hashes match a staged key, with the keys to confirm in each.
        let mut candidates: HashMap<String, (DataFile, HashSet<&str>)> = HashMap::new();
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            for (f, l) in loaded {
                let keys = match l {
                    Loaded::Read(k) => {
                        lookup.index_objects_read += 1;
                        k
                    }
                    Loaded::Indexed(k) => {
                        lookup.files_indexed += 1;
                        k
                    }
                };
                cache
                    .days
                    .entry((target.name, f.day))
                    .or_default()
                    .files
                    .insert(f.path, keys);
            }
            for &(key, day) in &staged {
                let h = hash(key);
                for d in [day.saturating_sub(1), day, day.saturating_add(1)] {
                    let Some(entry) = cache.days.get(&(target.name, d)) else {
                        continue;
                    };
                    for (path, hashes) in &entry.files {
                        if hashes.binary_search(&h).is_ok() {
                            candidates
                                .entry(path.clone())
                                .or_insert_with(|| {
                                    (
                                        DataFile {
                                            day: d,
                                            path: path.clone(),
                                            size: 0,
                                        },
                                        HashSet::new(),
                                    )
                                })
                                .1
                                .insert(key);
                        }
                    }
                }
            }
            self.evict(&mut cache);
        }

        // Confirmed in the files themselves.
        // (The candidates are files of the lookup's days, whose sizes the first pass kept.)
        if !candidates.is_empty() {
            for (path, (mut file, keys)) in candidates {
                file.size = sizes.get(&path).copied().unwrap_or(0);
                lookup.files_checked += 1;
                for column in read_keys(store.clone(), target, &file).await? {
                    for k in column.iter().flatten() {
                        if keys.contains(k) {
                            lookup.existing.insert(k.to_owned());
                        }
                    }
                }
            }
        }
        Ok(lookup)
    }

    /// Forgets the days least recently looked up while the index holds more keys than its
    /// budget (the days of the lookup that just ran are kept).
    fn evict(&self, cache: &mut Cache) {
        let mut held: usize = cache.days.values().map(Day::keys).sum();
        while held > self.budget {
            let Some((&oldest, day)) = cache
                .days
                .iter()
                .filter(|(_, d)| d.last_used < cache.tick)
                .min_by_key(|(_, d)| d.last_used)
            else {
                return;
            };
            held -= day.keys();
            cache.days.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_object_round_trips_and_a_damaged_one_is_refused() {
        let hashes = vec![1, 5, 9, u64::MAX];
        let bytes = encode(&hashes);
        assert_eq!(decode(&bytes), Some(hashes));
        assert_eq!(decode(&bytes[..bytes.len() - 3]), None, "truncated");
        assert_eq!(decode(b"PAR1...."), None, "another format");
        let mut unsorted = bytes.to_vec();
        unsorted.swap(16, 24);
        assert_eq!(decode(&unsorted), None, "not sorted");
    }

    #[test]
    fn index_objects_sit_beside_their_data_files_under_the_index_folder() {
        let p = index_path(
            "events",
            "event_date=2026-12-01/part-00001-abc.zstd.parquet",
        );
        assert_eq!(
            p.as_ref(),
            "_index/events/event_date=2026-12-01/part-00001-abc.zstd.parquet.keys"
        );
        let d = data_path(
            "events",
            "event_date=2026-12-01/part-00001-abc.zstd.parquet",
        );
        assert_eq!(
            d.as_ref(),
            "events/event_date=2026-12-01/part-00001-abc.zstd.parquet"
        );
        assert_eq!(day_of("1970-01-02"), Some(1));
        assert_eq!(day_of("2026-13-01"), None);
    }
}
