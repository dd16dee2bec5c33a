//! Daily rollups kept by compaction: per UTC day, what a report sums over a period, so that the
//! report reads a few thousand rows per day instead of a month of events (issue 18: `products`,
//! `search` and `promotions` grouped 3 million events a month and took 1–6 s on the 10M-event
//! lake). Exact, never approximate: a period's figures are sums over its days' rows, and a day's
//! rows are always computed from all of that day's events in the lake.
//!
//! Each rollup is a Delta table partitioned by `event_date` and an SQL file over a table named
//! `events` ([`Rollup::sql`]) whose rows carry `event_date`. A compaction round writes down the
//! days its staged events fall on ([`days_of`], [`mark_dirty`]: a small object under
//! `_rollups/dirty/`, written after the round's commits and before its staging files go, so that
//! a crash in between has the round run again and write them again). [`refresh`] computes the
//! rows of every day written down again from the lake (with the days before them when a day's
//! rows depend on the next day's events: [`Rollup::days_after`]), replaces them in one commit per
//! rollup (a Delta overwrite with a `replaceWhere` on the days: readers see the old rows or the
//! new ones, never a mix), and only then deletes the objects it read. A day costs a read of its
//! events however many rounds touched it: `shoplake batch compact` refreshes once after draining
//! staging, `shoplake up` every `[compaction] rollup_interval` (a minute by default), so that a
//! busy day is not read again every 15 seconds. Reports on rollups lag the events by at most
//! that interval. A re-run after a crash computes the same rows, as [`crate::derived`]'s tables
//! do.
//!
//! A table filled by another definition of its SQL (an older or newer shoplake) is filled again:
//! every fill records the definition it was made by as the version of the Delta application
//! transaction `shoplake-definition` (a hash of the SQL's code, comments and layout left out), and
//! a round that finds another version there fills the table before anything else — every day the
//! events hold is computed again and replaces its rows, in one commit. [`crate::derived`]'s
//! tables do the same (they are filled whole).
//!
//! Erasure ([`crate::erase`]) deletes the rows naming the person's orders, writes down the days
//! of their events (before and after the deletes) and refreshes, so those days are computed again
//! without them. Retention keeps the events'
//! days in the rollups too (`[retention] events`: they hold order ids and search text); an
//! event that arrives for a day whose events retention already deleted computes that day's
//! rows from what is left, and the next retention run takes them out again.

use std::collections::BTreeSet;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Date32Type;
use datafusion::common::ScalarValue;
use datafusion::prelude::{SessionContext, col, lit};
use deltalake::protocol::SaveMode;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use shoplake_events::fields::EVENT_DATE;
use shoplake_events::lake::EVENTS_TABLE;
use tracing::{debug, warn};

use crate::tables::{self, TableDescriptor};
use crate::write::{WriteOptions, commit_after, conform, create_empty, last_writer_version};
use crate::{Error, Lake, Result, delta_err, query_err};

/// A table of per-day rows computed from `events` by SQL.
#[derive(Debug)]
pub struct Rollup {
    pub table: &'static TableDescriptor,
    /// The SQL over a table named `events`; its rows carry `event_date`.
    pub sql: &'static str,
    /// How many days after a row's day hold events that can change it (a search on one day is
    /// judged by the session's clicks and orders, which can fall on the next).
    pub days_after: i32,
}

/// `rollup_products`: per day and product (sql/batch/rollup_products.sql).
pub const PRODUCTS: Rollup = Rollup {
    table: &tables::ROLLUP_PRODUCTS,
    sql: include_str!("../../sql/batch/rollup_products.sql"),
    days_after: 0,
};

/// `rollup_search`: per day and search query (sql/batch/rollup_search.sql).
pub const SEARCH: Rollup = Rollup {
    table: &tables::ROLLUP_SEARCH,
    sql: include_str!("../../sql/batch/rollup_search.sql"),
    days_after: 1,
};

/// `rollup_promotions`: per day and promotion (sql/batch/rollup_promotions.sql).
pub const PROMOTIONS: Rollup = Rollup {
    table: &tables::ROLLUP_PROMOTIONS,
    sql: include_str!("../../sql/batch/rollup_promotions.sql"),
    days_after: 1,
};

/// Every rollup, in the order compaction keeps them.
pub const ALL: [&Rollup; 3] = [&PRODUCTS, &SEARCH, &PROMOTIONS];

/// Where rounds write down the days whose rollups are to be computed again, relative to the lake
/// root.
pub const DIRTY_PREFIX: &str = "_rollups/dirty";

/// Writes down `days` (a round's) as days whose rollups [`refresh`] is to compute again.
pub async fn mark_dirty(lake: &Lake, days: &BTreeSet<i32>) -> Result<()> {
    if days.is_empty() {
        return Ok(());
    }
    let path = Path::from(format!("{DIRTY_PREFIX}/{}.json", uuid::Uuid::new_v4()));
    let body = serde_json::to_vec(days).map_err(|e| Error::BadOption {
        name: "rollup days",
        value: path.to_string(),
        reason: e.to_string(),
    })?;
    crate::erase::put(lake.store().as_ref(), &path, body.into()).await
}

/// Computes the rollups of every day written down ([`mark_dirty`]) again, then deletes what it
/// read; fills a rollup that is missing, was never filled or was filled by another definition.
/// Runs a step again when another writer committed first. Returns the rows written, None when
/// nothing was to do. A written-down object that cannot be read (cut short by a crash) refills
/// the rollups from all events: the days it named are not known.
pub async fn refresh(lake: &Lake, opts: &WriteOptions) -> Result<Option<u64>> {
    let store = lake.store();
    let listed = crate::erase::list(store.as_ref(), Some(DIRTY_PREFIX)).await?;
    let mut days = BTreeSet::new();
    let mut unreadable = false;
    for o in &listed {
        let read = match store.get(&o.location).await {
            Ok(got) => got.bytes().await,
            Err(e) => Err(e),
        };
        match read {
            Ok(bytes) => match serde_json::from_slice::<BTreeSet<i32>>(&bytes) {
                Ok(d) => days.extend(d),
                Err(e) => {
                    warn!(object = %o.location, error = %e, "unreadable rollup days: refilling the rollups");
                    unreadable = true;
                }
            },
            // Deleted by another refresh since the listing: its days are done.
            Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => {
                return Err(Error::Store {
                    path: o.location.to_string(),
                    source,
                });
            }
        }
    }
    let mut rows = None;
    let mut conflicts = 0;
    for rollup in ALL {
        let written = crate::compact::again_on_conflict(&mut conflicts, || async {
            if unreadable {
                rollup.refill(lake, opts).await
            } else {
                rollup
                    .update(lake, &days, u64::from(!days.is_empty()), opts)
                    .await
            }
        })
        .await?;
        rows = crate::compact::sum(rows, written);
    }
    for o in listed {
        crate::erase::delete(store.as_ref(), &o.location).await?;
    }
    Ok(rows)
}

/// The distinct `event_date`s (days since the epoch) of `batches`.
pub fn days_of(batches: &[RecordBatch]) -> BTreeSet<i32> {
    let mut days = BTreeSet::new();
    for b in batches {
        let Some(dates) = b
            .column_by_name(EVENT_DATE)
            .and_then(|c| c.as_primitive_opt::<Date32Type>())
        else {
            continue;
        };
        days.extend(dates.iter().flatten());
    }
    days
}

/// The Delta application id whose transaction version names the definition a table was last
/// filled by.
const DEFINITION_APP_ID: &str = "shoplake-definition";

/// The version number of the definition `sql`: a hash (FNV-1a, stable across Rust versions,
/// unlike std's hasher) of its text without comments and with runs of whitespace as one space,
/// so that a comment or a line ending changes nothing.
pub(crate) fn definition_version(sql: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let code = sql
        .lines()
        .map(|l| l.split_once("--").map_or(l, |(code, _)| code))
        .flat_map(str::split_whitespace);
    for word in code {
        for b in word.bytes().chain([b' ']) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    (hash >> 1) as i64
}

/// The transaction that records the definition `sql` in a fill's commit.
pub(crate) fn definition_transaction(sql: &str) -> deltalake::kernel::Transaction {
    deltalake::kernel::Transaction::new(DEFINITION_APP_ID, definition_version(sql))
}

/// Whether `table` was last filled by the definition `sql` (see the module docs).
pub(crate) async fn filled_by(
    table: &deltalake::DeltaTable,
    name: &str,
    sql: &str,
) -> Result<bool> {
    Ok(table
        .snapshot()
        .map_err(delta_err(name))?
        .transaction_version(table.log_store().as_ref(), DEFINITION_APP_ID)
        .await
        .map_err(delta_err(name))?
        == Some(definition_version(sql)))
}

/// A derived or rollup table as a round keeps it: loaded (its schema brought up to the
/// registry's), or created empty when the lake lacks it and `create`; with its last writer
/// version and whether the definition `sql` filled it. None when missing and not `create`.
pub(crate) async fn kept(
    lake: &Lake,
    descriptor: &TableDescriptor,
    sql: &str,
    create: bool,
    opts: &WriteOptions,
) -> Result<Option<(deltalake::DeltaTable, Option<i64>, bool)>> {
    let table = match crate::write::evolved(lake, descriptor).await? {
        Some(table) => table,
        None if create => create_empty(lake, descriptor, opts).await?,
        None => return Ok(None),
    };
    let last = last_writer_version(&table, descriptor.name).await?;
    let filled = filled_by(&table, descriptor.name, sql).await?;
    Ok(Some((table, last, filled)))
}

/// `events` with the columns the event contract gained since the lake was written, as nulls of
/// their types (the rollups' SQL names today's columns; a lake written by an older contract
/// gets them at its next append).
fn with_contract_columns(
    mut events: datafusion::dataframe::DataFrame,
) -> datafusion::error::Result<datafusion::dataframe::DataFrame> {
    let wanted = tables::EVENTS.schema();
    for field in wanted.fields() {
        if events
            .schema()
            .field_with_unqualified_name(field.name())
            .is_err()
        {
            let null = ScalarValue::try_from(field.data_type())?;
            events = events.with_column(field.name(), lit(null))?;
        }
    }
    Ok(events)
}

fn date(day: i32) -> datafusion::prelude::Expr {
    lit(ScalarValue::Date32(Some(day)))
}

impl Rollup {
    /// The days whose rows the events of `days` can change.
    fn affected(&self, days: &BTreeSet<i32>) -> BTreeSet<i32> {
        days.iter()
            .flat_map(|d| (0..=self.days_after).map(move |k| d - k))
            .collect()
    }

    /// The rows of `days` (all days when None), computed from the events of those days and the
    /// [`Rollup::days_after`] after each.
    async fn compute(&self, lake: &Lake, days: Option<&BTreeSet<i32>>) -> Result<Vec<RecordBatch>> {
        let qe = query_err(self.table.name);
        let ctx = SessionContext::new();
        let Some(events) = lake.scan(&ctx, EVENTS_TABLE).await? else {
            return Ok(Vec::new());
        };
        let mut events = with_contract_columns(events).map_err(&qe)?;
        if let Some(days) = days {
            let read: BTreeSet<i32> = days
                .iter()
                .flat_map(|d| (0..=self.days_after).map(move |k| d + k))
                .collect();
            events = events
                .filter(col(EVENT_DATE).in_list(read.into_iter().map(date).collect(), false))
                .map_err(&qe)?;
        }
        ctx.register_table(EVENTS_TABLE, events.into_view())
            .map_err(&qe)?;
        let mut rows = ctx.sql(self.sql).await.map_err(&qe)?;
        if let Some(days) = days {
            rows = rows
                .filter(col(EVENT_DATE).in_list(days.iter().map(|d| date(*d)).collect(), false))
                .map_err(&qe)?;
        }
        conform(rows.collect().await.map_err(&qe)?, self.table)
    }

    /// Fills the table from all events (created empty, never filled, or filled by another
    /// definition): the rows of every day the events hold replace that day's, in one commit that
    /// records this definition; days whose events retention deleted keep their rows. Returns the
    /// rows written.
    async fn fill(
        &self,
        lake: &Lake,
        table: deltalake::DeltaTable,
        last: Option<i64>,
        opts: &WriteOptions,
    ) -> Result<u64> {
        let days = self.event_days(lake).await?;
        let mut batches = self.compute(lake, None).await?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(self.table.schema()));
        }
        let name = self.table.name;
        let commit = commit_after(last, &format!("fill_{name}"), Some(rows))
            .with_application_transaction(definition_transaction(self.sql));
        // No day at all: a predicate no row matches, so that the commit still records the
        // definition and takes nothing out.
        let days = if days.is_empty() {
            col(EVENT_DATE).is_null()
        } else {
            col(EVENT_DATE).in_list(days.into_iter().map(date).collect(), false)
        };
        table
            .write(batches)
            .with_save_mode(SaveMode::Overwrite)
            .with_replace_where(days)
            .with_writer_properties(opts.writer_properties(self.table)?)
            .with_commit_properties(commit)
            .await
            .map_err(delta_err(name))?;
        debug!(table = name, rows, "rollup filled");
        Ok(rows as u64)
    }

    /// The days the events table holds.
    async fn event_days(&self, lake: &Lake) -> Result<BTreeSet<i32>> {
        let qe = query_err(self.table.name);
        let ctx = SessionContext::new();
        let Some(events) = lake.scan(&ctx, EVENTS_TABLE).await? else {
            return Ok(BTreeSet::new());
        };
        let batches = events
            .select_columns(&[EVENT_DATE])
            .and_then(|e| e.distinct())
            .map_err(&qe)?
            .collect()
            .await
            .map_err(&qe)?;
        Ok(days_of(&batches))
    }

    /// Computes the rows of `days` again and replaces theirs, in one commit.
    async fn replace(
        &self,
        lake: &Lake,
        table: deltalake::DeltaTable,
        last: Option<i64>,
        days: &BTreeSet<i32>,
        opts: &WriteOptions,
    ) -> Result<u64> {
        let mut batches = self.compute(lake, Some(days)).await?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if batches.is_empty() {
            // No rows left for these days: the write still takes the old ones out.
            batches.push(RecordBatch::new_empty(self.table.schema()));
        }
        let name = self.table.name;
        let commit = commit_after(last, &format!("replace_{name}"), Some(rows));
        table
            .write(batches)
            .with_save_mode(SaveMode::Overwrite)
            .with_replace_where(
                col(EVENT_DATE).in_list(days.iter().map(|d| date(*d)).collect(), false),
            )
            .with_writer_properties(opts.writer_properties(self.table)?)
            .with_commit_properties(commit)
            .await
            .map_err(delta_err(name))?;
        debug!(
            table = name,
            rows,
            days = days.len(),
            "rollup days replaced"
        );
        Ok(rows as u64)
    }

    /// Keeps the table current after a round whose events fell on `days`: replaces the rows of
    /// the days they change, or fills the table when it is missing (and the lake has events),
    /// was never filled, or was filled by another definition. Returns the rows written, None when
    /// nothing was to do.
    pub async fn update(
        &self,
        lake: &Lake,
        days: &BTreeSet<i32>,
        events_written: u64,
        opts: &WriteOptions,
    ) -> Result<Option<u64>> {
        let create = events_written > 0 || !days.is_empty();
        let Some((table, last, filled)) = kept(lake, self.table, self.sql, create, opts).await?
        else {
            return Ok(None);
        };
        if !filled {
            return Ok(Some(self.fill(lake, table, last, opts).await?));
        }
        if days.is_empty() {
            return Ok(None);
        }
        let affected = self.affected(days);
        Ok(Some(
            self.replace(lake, table, last, &affected, opts).await?,
        ))
    }

    /// Fills the table if it is missing, was never filled or was filled by another definition,
    /// while the lake has events; returns the rows written.
    pub async fn ensure(&self, lake: &Lake, opts: &WriteOptions) -> Result<Option<u64>> {
        if !lake.table_exists(EVENTS_TABLE).await? {
            return Ok(None);
        }
        match kept(lake, self.table, self.sql, true, opts).await? {
            Some((table, last, false)) => Ok(Some(self.fill(lake, table, last, opts).await?)),
            _ => Ok(None),
        }
    }

    /// Fills the table from all events whatever definition filled it (the days to compute again
    /// are not known); returns the rows written, None when the table is missing.
    async fn refill(&self, lake: &Lake, opts: &WriteOptions) -> Result<Option<u64>> {
        let Some(table) = crate::write::evolved(lake, self.table).await? else {
            return Ok(None);
        };
        let last = last_writer_version(&table, self.table.name).await?;
        Ok(Some(self.fill(lake, table, last, opts).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_changes_itself_and_the_days_whose_rows_read_it() {
        let days = BTreeSet::from([100, 105]);
        assert_eq!(PRODUCTS.affected(&days), days);
        assert_eq!(SEARCH.affected(&days), BTreeSet::from([99, 100, 104, 105]));
    }

    #[test]
    fn a_definition_is_named_by_its_code_not_its_comments_or_layout() {
        let v = definition_version(SEARCH.sql);
        assert!(v >= 0);
        assert_ne!(v, definition_version(PROMOTIONS.sql));
        assert_eq!(
            definition_version("-- one\nSELECT a,\n  b FROM t -- why\n"),
            definition_version("SELECT a, b\r\nFROM t")
        );
        assert_ne!(
            definition_version("SELECT a FROM t"),
            definition_version("SELECT b FROM t")
        );
    }
}
