//! Erasure of a person on request (GDPR art. 17, CCPA): their rows leave every table of the lake
//! at once, their bytes leave storage at the request's VACUUM.
//!
//! [`erase`] does, in this order:
//! 1. **Finds the person's ids**: the user and anonymous ids asked for, every id linked to them in
//!    `identities` (to a fixed point), and from their events the sessions, orders and e-mail
//!    addresses (identify traits). These are the needles ([`Mentions`]): a row or record that
//!    names one of them as a whole token is the person's.
//! 2. **Tombstones** their user and anonymous ids (digests only:
//!    [`shoplake_events::erasure`]): the stage drops their events still in flight, compaction
//!    drops their staged rows.
//! 3. **Compacts staging** (that round drops their staged rows), so nothing of theirs waits there.
//! 4. **Deletes their rows** from every table with personal columns (a Delta DELETE whose
//!    predicate is a function of the row, `shoplake_erasure(...)`, so the ids never appear in the
//!    Delta log, whose commit info records predicates): every row in which a personal column
//!    names one of the needles. The commits carry the writer transaction
//!    ([`crate::write`]'s *Concurrent writers*): a compaction racing the erasure runs its round
//!    again on the result.
//! 5. **Scrubs the objects**: raw archive objects are rewritten without the person's records;
//!    quarantined objects that name them are deleted.
//!
//! The files the DELETEs took out of the tables still hold the person's bytes. The request keeps
//! their paths (`_erasures/pending/ID.json`, paths only) and [`vacuum_erasures`] deletes them
//! once `grace` has passed since the erasure — the time a query that started before it may still
//! read them —, with every other file no longer in a table with personal columns (removed earlier
//! by optimize or a merge and not vacuumed yet, they may hold the person too), cleans those
//! tables' Delta logs, and records when the bytes were gone in the `erasures` table, one row per request
//! (its id, when, counts per table; never the person's ids).
//!
//! What lives outside the lake (the embedded stream's records, the stage's state, a running
//! service's caches) is the binary's to scrub with the same [`Mentions`]; the Delta log holds no
//! personal column statistics (tables are created with `delta.dataSkippingStatsColumns` set to
//! their other columns: [`crate::write`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::DataType;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{SessionContext, col, lit};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use shoplake_events::erasure::{Mentions, TOMBSTONES_PREFIX, Tombstones, tombstones_path};
use shoplake_events::fields::{ANONYMOUS_ID, ORDER_ID, RAW, SESSION_ID, TRAITS, USER_ID};
use shoplake_events::lake::{EVENTS_TABLE, IDENTITIES_TABLE, QUARANTINE};
use tracing::info;

use crate::compact::CompactOptions;
use crate::tables::{self, TableDescriptor};
use crate::write::{commit_after, last_writer_version, table_or_empty};
use crate::{Error, Lake, Result, delta_err, keys, query_err};

/// Where the pending VACUUMs of erasure requests are kept, relative to the lake root.
pub const PENDING_PREFIX: &str = "_erasures/pending";

/// Who is to be erased: a user id, anonymous ids (browsers, devices), or both.
#[derive(Clone, Debug, Default)]
pub struct Subject {
    pub user_id: Option<String>,
    pub anonymous_ids: Vec<String>,
}

impl Subject {
    /// An error unless the request names someone.
    pub fn check(&self) -> Result<()> {
        if self.user_id.as_deref().unwrap_or("").is_empty()
            && self.anonymous_ids.iter().all(String::is_empty)
        {
            return Err(Error::BadOption {
                name: "erasure",
                value: String::new(),
                reason: "name the person: a user id, an anonymous id, or both".into(),
            });
        }
        Ok(())
    }

    /// What the request names, for the `erasures` table (the kinds, never the values).
    fn kinds(&self) -> String {
        [
            self.user_id.as_ref().map(|_| USER_ID),
            (!self.anonymous_ids.is_empty()).then_some(ANONYMOUS_ID),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("+")
    }
}

/// How [`erase`] runs.
#[derive(Clone, Debug)]
pub struct EraseOptions {
    /// Compaction of what is staged (the round that drops the person's staged rows).
    pub compaction: CompactOptions,
    /// The raw archive's store, when records are archived.
    pub raw_archive: Option<Arc<dyn ObjectStore>>,
    /// How long the person's arriving events are dropped (a late event of theirs, a retry from
    /// their device): longer than the stream keeps records.
    pub tombstone_for: Duration,
}

/// The ids found of a person.
#[derive(Clone, Debug, Default)]
pub struct PersonIds {
    pub users: BTreeSet<String>,
    pub anonymous: BTreeSet<String>,
    /// Their sessions, orders and e-mail addresses.
    pub others: BTreeSet<String>,
}

impl PersonIds {
    /// How many ids were found.
    pub fn len(&self) -> usize {
        self.users.len() + self.anonymous.len() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The finder of every id.
    pub fn mentions(&self) -> Mentions {
        Mentions::new(self.users.iter().chain(&self.anonymous).chain(&self.others))
    }
}

/// What [`erase`] did. Counts only: it never holds the person's ids.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ErasureReport {
    pub request_id: String,
    pub requested_at: DateTime<Utc>,
    /// `user_id`, `anonymous_id` or both: what the request named.
    pub subject: String,
    /// Ids of the person found (user, anonymous, session and order ids, e-mail addresses).
    pub ids_found: u64,
    /// Per table, the rows deleted.
    pub rows_deleted: BTreeMap<String, u64>,
    /// Files the deletes took out of the tables (their bytes go at the request's VACUUM), and
    /// the files written in their place without the person's rows.
    pub files_removed: u64,
    pub bytes_removed: u64,
    pub files_rewritten: u64,
    pub bytes_rewritten: u64,
    /// Staged rows of the person dropped by the compaction round the erasure ran.
    pub staged_rows_dropped: u64,
    pub raw_archive_records: u64,
    pub raw_archive_objects_rewritten: u64,
    pub quarantine_objects_deleted: u64,
    /// Filled by the binary: records of the embedded stream and entries of the stage's state
    /// deleted.
    pub stream_records: u64,
    pub state_entries: u64,
    pub seconds: f64,
}

/// The files an erasure took out of the tables, waiting for their VACUUM.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    removed_at: DateTime<Utc>,
    report: ErasureReport,
    /// Paths relative to the lake root, with their sizes.
    files: Vec<(String, u64)>,
}

/// Compacts what is staged (so the person's newest rows are in the tables), then [`find`]s
/// their ids: what an erasure request does first.
pub async fn prepare(lake: &Lake, subject: &Subject, opts: &EraseOptions) -> Result<PersonIds> {
    subject.check()?;
    crate::compact_all(lake, &opts.compaction).await?;
    find(lake, subject).await
}

/// Finds the ids of `subject` in the lake: see the module docs.
pub async fn find(lake: &Lake, subject: &Subject) -> Result<PersonIds> {
    subject.check()?;
    let mut ids = PersonIds::default();
    ids.users.extend(subject.user_id.iter().cloned());
    ids.anonymous.extend(
        subject
            .anonymous_ids
            .iter()
            .filter(|a| !a.is_empty())
            .cloned(),
    );
    let ctx = SessionContext::new();
    // Identity links, to a fixed point: a user's anonymous ids, and those ids' other users.
    loop {
        let before = (ids.users.len(), ids.anonymous.len());
        for (table, extra) in [
            (IDENTITIES_TABLE, &[][..]),
            (EVENTS_TABLE, &[SESSION_ID, ORDER_ID, TRAITS][..]),
        ] {
            let Some(df) = lake.scan(&ctx, table).await? else {
                continue;
            };
            let qe = query_err(table);
            let of_person = in_list(USER_ID, &ids.users).or(in_list(ANONYMOUS_ID, &ids.anonymous));
            let columns: Vec<Expr> = [USER_ID, ANONYMOUS_ID]
                .iter()
                .chain(extra)
                .map(|c| col(*c))
                .collect();
            let batches = df
                .filter(of_person)
                .and_then(|df| df.select(columns))
                .and_then(|df| df.distinct())
                .map_err(&qe)?
                .collect()
                .await
                .map_err(&qe)?;
            for batch in &batches {
                for (i, name) in batch.schema().fields().iter().enumerate() {
                    let values = strings(batch.column(i))?;
                    let values = values.as_string::<i32>();
                    for v in values.iter().flatten().filter(|v| !v.is_empty()) {
                        match name.name().as_str() {
                            USER_ID => ids.users.insert(v.to_owned()),
                            ANONYMOUS_ID => ids.anonymous.insert(v.to_owned()),
                            TRAITS => {
                                ids.others.extend(emails(v));
                                false
                            }
                            _ => ids.others.insert(v.to_owned()),
                        };
                    }
                }
            }
        }
        if before == (ids.users.len(), ids.anonymous.len()) {
            break;
        }
    }
    Ok(ids)
}

/// `column IN (values)`, false when there are none.
fn in_list(column: &str, values: &BTreeSet<String>) -> Expr {
    if values.is_empty() {
        return lit(false);
    }
    col(column).in_list(values.iter().map(|v| lit(v.clone())).collect(), false)
}

/// The e-mail addresses in identify traits (JSON text): every string value under a key that
/// names one.
fn emails(traits: &str) -> Vec<String> {
    fn walk(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| walk(v, k, out)),
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, key, out)),
            serde_json::Value::String(s) if key.to_ascii_lowercase().contains("email") => {
                out.push(s.clone())
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(traits) {
        walk(&v, "", &mut out);
    }
    out
}

/// `array` as Utf8 (ids are Utf8 or Utf8View, depending on who wrote the file).
fn strings(array: &ArrayRef) -> Result<ArrayRef> {
    Ok(arrow::compute::cast(array, &DataType::Utf8)?)
}

/// `shoplake_erasure(col, …)`: whether any of the columns names one of the person's ids (as a
/// whole token). Its SQL text, which Delta records in the commit, names the columns only.
#[derive(Debug)]
struct ErasureMatch {
    signature: Signature,
    mentions: Mentions,
}

impl PartialEq for ErasureMatch {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}
impl Eq for ErasureMatch {}
impl std::hash::Hash for ErasureMatch {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(self, state)
    }
}

impl ScalarUDFImpl for ErasureMatch {
    fn name(&self) -> &str {
        "shoplake_erasure"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let rows = args.number_rows;
        let mut hit = vec![false; rows];
        for arg in args.args {
            let array = arg.into_array(rows)?;
            mark(&self.mentions, &array, &mut hit)?;
        }
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(hit))))
    }
}

/// Sets `hit[i]` for each row `i` of `array` that names one of the ids.
fn mark(mentions: &Mentions, array: &ArrayRef, hit: &mut [bool]) -> datafusion::error::Result<()> {
    let mut check = |i: usize, bytes: Option<&[u8]>| {
        if !hit[i] && bytes.is_some_and(|b| mentions.in_bytes(b)) {
            hit[i] = true;
        }
    };
    match array.data_type() {
        DataType::Binary => array
            .as_binary::<i32>()
            .iter()
            .enumerate()
            .for_each(|(i, b)| check(i, b)),
        DataType::LargeBinary => array
            .as_binary::<i64>()
            .iter()
            .enumerate()
            .for_each(|(i, b)| check(i, b)),
        DataType::BinaryView => array
            .as_binary_view()
            .iter()
            .enumerate()
            .for_each(|(i, b)| check(i, b)),
        DataType::Utf8View => array
            .as_string_view()
            .iter()
            .enumerate()
            .for_each(|(i, s)| check(i, s.map(str::as_bytes))),
        _ => {
            let utf8 = arrow::compute::cast(array, &DataType::Utf8)?;
            utf8.as_string::<i32>()
                .iter()
                .enumerate()
                .for_each(|(i, s)| check(i, s.map(str::as_bytes)));
        }
    }
    Ok(())
}

/// The predicate of the person's rows in `table`, over its personal columns that its current
/// schema has; None when it has none.
fn predicate(table: &TableDescriptor, present: &[String], mentions: &Mentions) -> Option<Expr> {
    let columns: Vec<Expr> = table
        .personal_columns
        .iter()
        .filter(|c| present.iter().any(|p| p == *c))
        .map(|c| col(*c))
        .collect();
    if columns.is_empty() {
        return None;
    }
    let udf = ScalarUDF::new_from_impl(ErasureMatch {
        signature: Signature::variadic_any(Volatility::Immutable),
        mentions: mentions.clone(),
    });
    Some(udf.call(columns))
}

/// The days (`event_date`) of the events in `lake` that mention the person.
async fn event_days(lake: &Lake, mentions: &Mentions) -> Result<BTreeSet<i32>> {
    let qe = query_err(EVENTS_TABLE);
    let ctx = SessionContext::new();
    let Some(events) = lake.scan(&ctx, EVENTS_TABLE).await? else {
        return Ok(BTreeSet::new());
    };
    let present: Vec<String> = events
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let Some(predicate) = predicate(&tables::EVENTS, &present, mentions) else {
        return Ok(BTreeSet::new());
    };
    let batches = events
        .filter(predicate)
        .and_then(|e| e.select_columns(&[shoplake_events::fields::EVENT_DATE]))
        .and_then(|e| e.distinct())
        .map_err(&qe)?
        .collect()
        .await
        .map_err(&qe)?;
    Ok(crate::rollup::days_of(&batches))
}

/// The tombstones of every request in `lake`, each request's object by its path (an object
/// deleted between the listing and its reading is left out).
async fn tombstone_objects(lake: &Lake) -> Result<Vec<(Path, Tombstones)>> {
    let store = lake.store();
    let objects = list(store.as_ref(), Some(TOMBSTONES_PREFIX)).await?;
    let mut out = Vec::with_capacity(objects.len());
    for o in objects {
        let bytes = match store.get(&o.location).await {
            Ok(got) => got.bytes().await.map_err(store_err(TOMBSTONES_PREFIX))?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(source) => return Err(store_err(TOMBSTONES_PREFIX)(source)),
        };
        let tombstones = Tombstones::from_json(&bytes).map_err(|e| Error::BadOption {
            name: "erasure tombstones",
            value: o.location.to_string(),
            reason: e.to_string(),
        })?;
        out.push((o.location, tombstones));
    }
    Ok(out)
}

/// The tombstones in force in `lake`: every request's, but those expired.
pub async fn load_tombstones(lake: &Lake) -> Result<Tombstones> {
    let objects = tombstone_objects(lake).await?;
    let now = Utc::now().timestamp_micros();
    Ok(Tombstones::merge(objects.iter().map(|(_, t)| t), now))
}

/// The rows of `batches` not of a tombstoned person (their user or anonymous id, or for bad rows
/// the ids in their raw bytes), and how many were dropped.
pub(crate) fn drop_erased(
    batches: Vec<RecordBatch>,
    tombstones: &Tombstones,
) -> Result<(Vec<RecordBatch>, u64)> {
    if tombstones.is_empty() {
        return Ok((batches, 0));
    }
    let mut dropped = 0;
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let column = |name: &str| -> Result<Option<ArrayRef>> {
            batch.column_by_name(name).map(strings).transpose()
        };
        let (users, anons) = (column(USER_ID)?, column(ANONYMOUS_ID)?);
        let raw = batch.column_by_name(RAW).cloned();
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|i| {
                let erased = tombstones.erases_either(value_at(&users, i), value_at(&anons, i))
                    || raw.as_ref().is_some_and(|r| {
                        r.as_binary_opt::<i32>()
                            .is_some_and(|r| r.is_valid(i) && tombstones.erases_raw(r.value(i)))
                    });
                Some(!erased)
            })
            .collect();
        let kept = arrow::compute::filter_record_batch(&batch, &keep)?;
        dropped += (batch.num_rows() - kept.num_rows()) as u64;
        out.push(kept);
    }
    Ok((out, dropped))
}

/// The tables of the lake with personal columns, loaded (those never written are left out).
async fn personal_tables(
    lake: &Lake,
) -> Result<Vec<(&'static TableDescriptor, deltalake::DeltaTable)>> {
    let mut out = Vec::new();
    for table in tables::ALL {
        if table.personal_columns.is_empty() {
            continue;
        }
        if let Some(t) = lake.table(table.name).await? {
            out.push((table, t));
        }
    }
    Ok(out)
}

/// Row `i` of an optional Utf8 column.
fn value_at(column: &Option<ArrayRef>, i: usize) -> Option<&str> {
    let a = column.as_ref()?.as_string::<i32>();
    a.is_valid(i).then(|| a.value(i))
}

/// What was scrubbed outside the lake before [`erase`] (the binary's: the embedded stream's
/// records, the stage's state entries), for the request's record.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outside {
    pub stream_records: u64,
    pub state_entries: u64,
}

/// Erases the person `subject` whose ids [`find`] found, from the lake as of `now` (see the
/// module docs); returns what it did.
pub async fn erase(
    lake: &Lake,
    subject: &Subject,
    ids: &PersonIds,
    outside: Outside,
    opts: &EraseOptions,
    now: DateTime<Utc>,
) -> Result<ErasureReport> {
    subject.check()?;
    let started = std::time::Instant::now();
    let mut report = ErasureReport {
        request_id: uuid::Uuid::new_v4().to_string(),
        requested_at: now,
        subject: subject.kinds(),
        ids_found: ids.len() as u64,
        stream_records: outside.stream_records,
        state_entries: outside.state_entries,
        ..Default::default()
    };
    let mentions = ids.mentions();

    // Tombstones first: from here on, what arrives of the person is dropped. Each request has
    // its own object; those of earlier requests all expired go.
    let until =
        now + chrono::Duration::from_std(opts.tombstone_for).unwrap_or(chrono::Duration::MAX);
    let tombstones = Tombstones::of_request(
        &report.request_id,
        ids.users.iter().chain(&ids.anonymous),
        until.timestamp_micros(),
    );
    put(
        lake.store().as_ref(),
        &Path::from(tombstones_path(&report.request_id)),
        tombstones
            .to_json()
            .map_err(|e| Error::BadOption {
                name: "erasure tombstones",
                value: report.request_id.clone(),
                reason: e.to_string(),
            })?
            .into(),
    )
    .await?;
    for (path, earlier) in tombstone_objects(lake).await? {
        if earlier.expired(now.timestamp_micros()) {
            delete(lake.store().as_ref(), &path).await?;
        }
    }

    let compacted = crate::compact_all(lake, &opts.compaction).await?;
    report.staged_rows_dropped = compacted.erased_in_staging;

    // The days of the person's events: their rollups are computed again once the events are
    // gone. Written down for the rollups' refresh before the deletes (a request that stops after
    // them still has the days computed by the next refresh, when no event names the person any
    // more) and again after them (a refresh that ran in between computed them with the person).
    let days = event_days(lake, &mentions).await?;
    crate::rollup::mark_dirty(lake, &days).await?;
    let mut removed: Vec<(String, u64)> = Vec::new();
    for (table, t) in personal_tables(lake).await? {
        let delta = delta_err(table.name);
        let snapshot = t.snapshot().map_err(&delta)?;
        let present: Vec<String> = snapshot
            .schema()
            .fields()
            .map(|f| f.name().clone())
            .collect();
        let Some(predicate) = predicate(table, &present, &mentions) else {
            continue;
        };
        let before: BTreeMap<String, u64> = snapshot
            .log_data()
            .iter()
            .map(|f| (f.path().into_owned(), u64::try_from(f.size()).unwrap_or(0)))
            .collect();
        let commit = commit_after(last_writer_version(&t, table.name).await?, "erase", None);
        let (after, metrics) = t
            .delete()
            .with_predicate(predicate)
            .with_commit_properties(commit)
            .await
            .map_err(&delta)?;
        report.rows_deleted.insert(
            table.name.to_owned(),
            metrics.num_deleted_rows.unwrap_or(0) as u64,
        );
        if metrics.num_removed_files == 0 {
            continue;
        }
        let now_files: BTreeMap<String, u64> = after
            .snapshot()
            .map_err(&delta)?
            .log_data()
            .iter()
            .map(|f| (f.path().into_owned(), u64::try_from(f.size()).unwrap_or(0)))
            .collect();
        for (path, size) in &before {
            if !now_files.contains_key(path) {
                removed.push((format!("{}/{path}", table.name), *size));
                report.files_removed += 1;
                report.bytes_removed += size;
            }
        }
        for (path, size) in &now_files {
            if !before.contains_key(path) {
                report.files_rewritten += 1;
                report.bytes_rewritten += size;
            }
        }
    }

    crate::rollup::mark_dirty(lake, &days).await?;
    crate::rollup::refresh(lake, &opts.compaction.write_options()).await?;

    let store = lake.store();
    for o in list(store.as_ref(), Some(QUARANTINE)).await? {
        let bytes = get(store.as_ref(), &o.location).await?;
        if mentions.in_bytes(&bytes) {
            delete(store.as_ref(), &o.location).await?;
            report.quarantine_objects_deleted += 1;
        }
    }
    if let Some(archive) = &opts.raw_archive {
        let (records, objects) = scrub_archive(archive.as_ref(), &mentions).await?;
        report.raw_archive_records = records;
        report.raw_archive_objects_rewritten = objects;
    }
    report.seconds = started.elapsed().as_secs_f64();
    let pending = Pending {
        removed_at: Utc::now(),
        report: report.clone(),
        files: removed,
    };
    let body = serde_json::to_vec_pretty(&pending).map_err(|e| Error::BadOption {
        name: "erasure",
        value: report.request_id.clone(),
        reason: e.to_string(),
    })?;
    put(
        store.as_ref(),
        &pending_path(&report.request_id),
        body.into(),
    )
    .await?;
    record(lake, &report, &opts.compaction.write_options()).await?;
    info!(request = %report.request_id, ids = report.ids_found, rows = ?report.rows_deleted,
          "erasure: the person's rows left the lake; their bytes go at the request's VACUUM");
    Ok(report)
}

fn pending_path(request_id: &str) -> Path {
    Path::from(format!("{PENDING_PREFIX}/{request_id}.json"))
}

/// What [`vacuum_erasures`] did for one request.
#[derive(Clone, Debug, Serialize)]
pub struct ErasureVacuumed {
    pub request_id: String,
    pub files_deleted: u64,
    pub bytes_reclaimed: u64,
}

/// What one [`vacuum_erasures`] run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ErasuresVacuumed {
    /// The requests whose grace had passed: the files each one's deletes removed.
    pub requests: Vec<ErasureVacuumed>,
    /// Every file deleted (the requests' and the tables' other removed files), and its bytes.
    pub files_deleted: u64,
    pub bytes_reclaimed: u64,
}

/// For the erasure requests made `grace` or more before `now`: deletes the files their deletes
/// took out of the tables (with their key-index objects), then — once for all of them — every
/// other file no longer in a table with personal columns, and cleans those tables' logs; sets
/// each request's `bytes_gone_at` in `erasures` and drops its pending entry. Nothing is done
/// when no request is due.
pub async fn vacuum_erasures(
    lake: &Lake,
    grace: Duration,
    now: DateTime<Utc>,
    write: &crate::WriteOptions,
) -> Result<ErasuresVacuumed> {
    let store = lake.store();
    let chrono_grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let mut due = Vec::new();
    for entry in list(store.as_ref(), Some(PENDING_PREFIX)).await? {
        let pending: Pending = serde_json::from_slice(&get(store.as_ref(), &entry.location).await?)
            .map_err(|e| Error::BadOption {
                name: "erasure",
                value: entry.location.to_string(),
                reason: e.to_string(),
            })?;
        if now - pending.removed_at >= chrono_grace {
            due.push((entry.location, pending));
        }
    }
    let mut done = ErasuresVacuumed::default();
    if due.is_empty() {
        return Ok(done);
    }
    for (_, pending) in &due {
        let mut vacuumed = ErasureVacuumed {
            request_id: pending.report.request_id.clone(),
            files_deleted: 0,
            bytes_reclaimed: 0,
        };
        for (path, size) in &pending.files {
            let location = Path::parse(path).unwrap_or_else(|_| Path::from(path.as_str()));
            if delete(store.as_ref(), &location).await? {
                vacuumed.files_deleted += 1;
                vacuumed.bytes_reclaimed += size;
            }
            if let Some((table, file)) = path.split_once('/') {
                delete(store.as_ref(), &keys::index_path(table, file)).await?;
            }
        }
        done.files_deleted += vacuumed.files_deleted;
        done.bytes_reclaimed += vacuumed.bytes_reclaimed;
        done.requests.push(vacuumed);
    }
    // Files removed from the tables before the erasures (by optimize, merges, retention) and
    // not vacuumed yet hold the people's bytes too: every file no longer in a table with
    // personal columns goes now, as a VACUUM with the erasures' grace. (Time travel before the
    // erasures ends with the log cleaning below anyway.)
    for (table, _) in personal_tables(lake).await? {
        let r = crate::lifecycle::vacuum_within(lake, table.name, grace, now).await?;
        done.files_deleted += r.files_deleted;
        done.bytes_reclaimed += r.bytes_reclaimed;
    }
    clean_logs(lake).await?;
    for (location, pending) in &due {
        // The row is normally written with the request; `erase` writes it after the pending
        // entry, so a crash between the two leaves it to this.
        record(lake, &pending.report, write).await?;
        mark_gone(lake, &pending.report.request_id, now, write).await?;
        delete(store.as_ref(), location).await?;
        info!(request = %pending.report.request_id, "erasure: the person's bytes left storage");
    }
    Ok(done)
}

/// Cleans the Delta log of every table with personal columns: a checkpoint of its current
/// version, then the log entries before it are deleted. The log's file statistics hold no
/// personal column, but a MERGE records in its commit the range of the keys it touched (delta-rs'
/// early filter: the smallest and largest order id, session id, identity), which would keep an
/// erased person's id in `_delta_log` for good. Versions before the checkpoint can no longer be
/// travelled to — their erased files are gone anyway.
async fn clean_logs(lake: &Lake) -> Result<()> {
    for (table, t) in personal_tables(lake).await? {
        let delta = delta_err(table.name);
        deltalake::checkpoints::create_checkpoint(&t, None)
            .await
            .map_err(&delta)?;
        let version = t.snapshot().map_err(&delta)?.version();
        deltalake::checkpoints::cleanup_expired_logs_for(
            version,
            t.log_store().as_ref(),
            Utc::now().timestamp_millis(),
            None,
        )
        .await
        .map_err(&delta)?;
    }
    Ok(())
}

/// Sets `bytes_gone_at` of request `request_id` in `erasures` to `gone_at`.
async fn mark_gone(
    lake: &Lake,
    request_id: &str,
    gone_at: DateTime<Utc>,
    write: &crate::WriteOptions,
) -> Result<()> {
    let table_desc = &tables::ERASURES;
    let table = table_or_empty(lake, table_desc, write).await?;
    let commit = commit_after(
        last_writer_version(&table, table_desc.name).await?,
        "erasure_vacuumed",
        Some(1),
    );
    let at = datafusion::scalar::ScalarValue::TimestampMicrosecond(
        Some(gone_at.timestamp_micros()),
        Some("UTC".into()),
    );
    table
        .update()
        .with_predicate(col("request_id").eq(lit(request_id.to_owned())))
        .with_update("bytes_gone_at", lit(at))
        .with_writer_properties(write.writer_properties(table_desc)?)
        .with_commit_properties(commit)
        .await
        .map_err(delta_err(table_desc.name))?;
    Ok(())
}

/// Appends request `report`'s row to `erasures`, its `bytes_gone_at` empty until its VACUUM
/// (once: a re-run finds the row there).
async fn record(lake: &Lake, report: &ErasureReport, write: &crate::WriteOptions) -> Result<()> {
    use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    let table_desc = &tables::ERASURES;
    let table = table_or_empty(lake, table_desc, write).await?;
    let ctx = SessionContext::new();
    if let Some(df) = lake.scan(&ctx, table_desc.name).await? {
        let qe = query_err(table_desc.name);
        let n = df
            .filter(col("request_id").eq(lit(report.request_id.clone())))
            .map_err(&qe)?
            .count()
            .await
            .map_err(&qe)?;
        if n > 0 {
            return Ok(());
        }
    }
    let ts = |t: DateTime<Utc>| {
        Arc::new(TimestampMicrosecondArray::from(vec![t.timestamp_micros()]).with_timezone("UTC"))
            as ArrayRef
    };
    let int =
        |v: u64| Arc::new(Int64Array::from(vec![i64::try_from(v).unwrap_or(i64::MAX)])) as ArrayRef;
    let text = |v: String| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    let rows_deleted =
        serde_json::to_string(&report.rows_deleted).map_err(|e| Error::BadOption {
            name: "erasure",
            value: report.request_id.clone(),
            reason: e.to_string(),
        })?;
    let batch = RecordBatch::try_new(
        table_desc.schema(),
        vec![
            text(report.request_id.clone()),
            ts(report.requested_at),
            text(report.subject.clone()),
            int(report.ids_found),
            text(rows_deleted),
            int(report.staged_rows_dropped),
            int(report.raw_archive_records),
            int(report.quarantine_objects_deleted),
            int(report.stream_records),
            int(report.state_entries),
            int(report.files_removed),
            int(report.bytes_rewritten),
            Arc::new(TimestampMicrosecondArray::from(vec![None::<i64>]).with_timezone("UTC")),
        ],
    )?;
    let commit = commit_after(
        last_writer_version(&table, table_desc.name).await?,
        "erase",
        Some(1),
    );
    table
        .write(vec![batch])
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .with_writer_properties(write.writer_properties(table_desc)?)
        .with_commit_properties(commit)
        .await
        .map_err(delta_err(table_desc.name))?;
    Ok(())
}

/// Rewrites each raw archive object that holds records of the person without them (gzip again
/// when it was gzip); returns the records dropped and the objects rewritten.
async fn scrub_archive(store: &dyn ObjectStore, mentions: &Mentions) -> Result<(u64, u64)> {
    let objects = list(store, None).await?;
    let (mut records, mut rewritten) = (0, 0);
    for o in objects {
        let bytes = get(store, &o.location).await?;
        let gzip = bytes.starts_with(&[0x1f, 0x8b]);
        let text = crate::staged::gunzip_if_gzip(bytes).map_err(|source| Error::StagedObject {
            path: o.location.to_string(),
            source,
        })?;
        let mut kept = Vec::with_capacity(text.len());
        let mut dropped = 0;
        for line in text.split_inclusive(|b| *b == b'\n') {
            if archived_mentions(line, mentions) {
                dropped += 1;
            } else {
                kept.extend_from_slice(line);
            }
        }
        if dropped == 0 {
            continue;
        }
        records += dropped;
        rewritten += 1;
        let body = if gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&kept)
                .and_then(|()| enc.finish())
                .map_err(|source| Error::StagedObject {
                    path: o.location.to_string(),
                    source,
                })?
        } else {
            kept
        };
        put(store, &o.location, body.into()).await?;
    }
    Ok((records, rewritten))
}

/// Whether an archive line is a record of the person: its payload (plain or base64) or its
/// partition key names one of their ids. A line that is not a record is judged by its bytes.
fn archived_mentions(line: &[u8], mentions: &Mentions) -> bool {
    use base64::Engine as _;
    match serde_json::from_slice::<shoplake_ingest::firehose::ArchivedRecord>(line) {
        Ok(r) => {
            mentions.in_bytes(r.partition_key.as_bytes())
                || r.data
                    .as_deref()
                    .is_some_and(|d| mentions.in_bytes(d.as_bytes()))
                || r.data_base64.as_deref().is_some_and(|d| {
                    base64::engine::general_purpose::STANDARD
                        .decode(d)
                        .is_ok_and(|d| mentions.in_bytes(&d))
                })
        }
        Err(_) => mentions.in_bytes(line),
    }
}

/// The objects under `prefix` (all of the store's without one).
pub(crate) async fn list(store: &dyn ObjectStore, prefix: Option<&str>) -> Result<Vec<ObjectMeta>> {
    let path = prefix.map(Path::from);
    store
        .list(path.as_ref())
        .try_collect()
        .await
        .map_err(store_err(prefix.unwrap_or("the raw archive")))
}

fn store_err(path: &str) -> impl Fn(object_store::Error) -> Error + '_ {
    move |source| Error::Store {
        path: path.to_owned(),
        source,
    }
}

pub(crate) async fn get(store: &dyn ObjectStore, path: &Path) -> Result<Bytes> {
    let err = |source| Error::Store {
        path: path.to_string(),
        source,
    };
    store
        .get(path)
        .await
        .map_err(err)?
        .bytes()
        .await
        .map_err(err)
}

pub(crate) async fn put(store: &dyn ObjectStore, path: &Path, payload: PutPayload) -> Result<()> {
    store
        .put(path, payload)
        .await
        .map_err(|source| Error::Store {
            path: path.to_string(),
            source,
        })?;
    Ok(())
}

/// Deletes `path`; false when it was gone already.
pub(crate) async fn delete(store: &dyn ObjectStore, path: &Path) -> Result<bool> {
    match store.delete(path).await {
        Ok(()) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(source) => Err(Error::Store {
            path: path.to_string(),
            source,
        }),
    }
}
