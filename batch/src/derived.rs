//! Tables derived from `events` by SQL and kept current by compaction: `orders` (one row per
//! order, `sql/batch/orders.sql`) and `visits` (one row per session, `sql/batch/visits.sql`). The
//! `sessions` view of the query service is `visits` with the user filled in from `identities`, so
//! dashboards read one row per visit instead of grouping every event again. Their schemas are in
//! the registry ([`crate::tables`]).
//!
//! Each has a key (order_id, session_id). A compaction round collects the keys its staged events
//! carry ([`Touched`]), re-derives those keys' rows from *all* their events in the lake, and merges
//! them into the table on the key (a Delta MERGE: update when present, insert when new). The work
//! follows the round, not the lake's history, and a re-run after a crash derives the same rows,
//! because every row comes from the lake rather than from the round's events alone. A missing
//! table (a new lake, or one written before the table existed) is created empty, then filled from
//! the whole events table in one overwrite; a table created but never filled (a crash in between,
//! or a lake written before fills were marked) has no writer transaction yet, and is filled by the
//! next round. A table filled by another definition of its SQL (an older shoplake, before a
//! column was added) is filled again whole, as [`crate::rollup`]'s tables are: each fill records
//! its definition. Every merge and fill carries the writer transaction, so of two compactors that
//! touch the table at once exactly one commits and the other re-runs its round
//! ([`crate::write`]'s *Concurrent writers*: without it, two compactors that both found the table
//! missing each added every order, and orders came out twice).
//!
//! A session's events lie between its first and last event, so for `visits` the events read are
//! also restricted to a time window: from the earliest to the latest of the round's events and
//! of the touched sessions' rows already in the table (their `started_at` and `ended_at`). The
//! window prunes `event_date` partitions and, as files are sorted by `event_time`, row groups; a
//! round of recent events reads the last hours of the lake instead of all of it. Orders have no
//! such bound (a refund can come months after the order), so their rounds read every file's
//! `order_id` column.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::TimestampMicrosecondType;
use datafusion::common::{JoinType, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::{max, min};
use datafusion::prelude::{SessionContext, col, lit};
use deltalake::protocol::SaveMode;
use shoplake_events::codec::date_of;
use shoplake_events::fields::{EVENT_DATE, EVENT_TIME};
use shoplake_events::lake::EVENTS_TABLE;
use tracing::debug;

use crate::rollup::{definition_transaction, kept};
use crate::tables::{self, TableDescriptor};
use crate::write::{WriteOptions, commit_after, conform, upsert_on_key};
use crate::{Lake, Result, delta_err, query_err};

/// A table derived from `events` by SQL, one row per value of its key.
#[derive(Debug)]
pub struct Derived {
    /// The table: its name, schema and key column (in `events` and in the table).
    pub table: &'static TableDescriptor,
    /// The SQL over a table named `events` that derives the rows.
    pub sql: &'static str,
    /// The table's columns holding the first and last event time of a key's events, when all of
    /// them lie in between (the events read for a round are then restricted to that window).
    pub span: Option<(&'static str, &'static str)>,
}

/// `orders`: one row per order, from its lifecycle events.
pub const ORDERS: Derived = Derived {
    table: &tables::ORDERS,
    sql: include_str!("../../sql/batch/orders.sql"),
    span: None,
};

/// `visits`: one row per session (its time span, counts, funnel flags, first-touch source), from
/// its storefront events.
pub const VISITS: Derived = Derived {
    table: &tables::VISITS,
    sql: include_str!("../../sql/batch/visits.sql"),
    span: Some(("started_at", "ended_at")),
};

/// Every derived table, in the order compaction keeps them.
pub const ALL: [&Derived; 2] = [&ORDERS, &VISITS];

/// The keys a round's events carry, and the span of those events' times.
#[derive(Debug, Default)]
pub struct Touched {
    pub keys: Vec<String>,
    /// First and last event_time (µs) of the events carrying a key.
    pub span: Option<(i64, i64)>,
}

impl Touched {
    /// The distinct non-null values of `key` in `batches`, and the time span of their rows.
    pub fn of(batches: &[RecordBatch], key: &str) -> Touched {
        let mut keys = BTreeSet::new();
        let mut span: Option<(i64, i64)> = None;
        for b in batches {
            let Some(k) = b.column_by_name(key).and_then(|c| c.as_string_opt::<i32>()) else {
                continue;
            };
            let times = b
                .column_by_name(EVENT_TIME)
                .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>());
            for (i, v) in k.iter().enumerate() {
                let Some(v) = v else { continue };
                if !keys.contains(v) {
                    keys.insert(v.to_owned());
                }
                if let Some(t) = times.filter(|t| t.is_valid(i)).map(|t| t.value(i)) {
                    span = Some(span.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))));
                }
            }
        }
        Touched {
            keys: keys.into_iter().collect(),
            span,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn timestamp(micros: i64) -> datafusion::prelude::Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(micros),
        Some("UTC".into()),
    ))
}

/// The rows of `keys` in `frame` (a semi-join on the key column).
fn only_keys(
    ctx: &SessionContext,
    frame: DataFrame,
    column: &str,
    keys: &[String],
) -> datafusion::error::Result<DataFrame> {
    let keys = StringArray::from_iter_values(keys);
    let keys = RecordBatch::try_from_iter([("touched_key", Arc::new(keys) as _)])?;
    frame.join_on(
        ctx.read_batch(keys)?,
        JoinType::LeftSemi,
        [col(column).eq(col("touched_key"))],
    )
}

impl Derived {
    /// The key column, in `events` and in the table.
    pub fn key(&self) -> &'static str {
        self.table.key_column()
    }

    /// The window holding every event of the touched keys: the round's events and the span the
    /// table already records for those keys. None when the table has no span columns.
    async fn window(
        &self,
        table: &deltalake::DeltaTable,
        touched: &Touched,
    ) -> Result<Option<(i64, i64)>> {
        let (Some((first, last)), Some(round)) = (self.span, touched.span) else {
            return Ok(None);
        };
        let qe = query_err(self.table.name);
        let ctx = SessionContext::new();
        table
            .update_datafusion_session(&ctx.state())
            .map_err(delta_err(self.table.name))?;
        let rows = ctx
            .read_table(table.table_provider().await.map_err(&qe)?)
            .and_then(|t| only_keys(&ctx, t, self.key(), &touched.keys))
            .and_then(|t| t.aggregate(vec![], vec![min(col(first)), max(col(last))]))
            .map_err(&qe)?
            .collect()
            .await
            .map_err(&qe)?;
        let known = |i: usize| {
            rows.first()
                .map(|b| b.column(i).as_primitive::<TimestampMicrosecondType>())
                .filter(|c| c.is_valid(0))
                .map(|c| c.value(0))
        };
        let lo = known(0).map_or(round.0, |t| t.min(round.0));
        let hi = known(1).map_or(round.1, |t| t.max(round.1));
        Ok(Some((lo, hi)))
    }

    /// Runs the SQL over `events`, all of it or only the events of `touched` keys (within
    /// `window` when given), and returns the rows in the table's schema.
    async fn derive(
        &self,
        lake: &Lake,
        touched: Option<(&Touched, Option<(i64, i64)>)>,
    ) -> Result<Vec<RecordBatch>> {
        let qe = query_err(self.table.name);
        let ctx = SessionContext::new();
        let Some(mut events) = lake.scan(&ctx, EVENTS_TABLE).await? else {
            return Ok(Vec::new());
        };
        if let Some((touched, window)) = touched {
            if let Some((lo, hi)) = window {
                // event_date prunes partitions; event_time prunes row groups within them.
                let date = |t| lit(ScalarValue::Date32(Some(date_of(t))));
                events = events
                    .filter(
                        col(EVENT_DATE)
                            .between(date(lo), date(hi))
                            .and(col(EVENT_TIME).between(timestamp(lo), timestamp(hi))),
                    )
                    .map_err(&qe)?;
            }
            events = events
                .filter(col(self.key()).is_not_null())
                .and_then(|t| only_keys(&ctx, t, self.key(), &touched.keys))
                .map_err(&qe)?;
        }
        ctx.register_table(EVENTS_TABLE, events.into_view())
            .map_err(&qe)?;
        let batches = ctx
            .sql(self.sql)
            .await
            .map_err(&qe)?
            .collect()
            .await
            .map_err(&qe)?;
        conform(batches, self.table)
    }

    /// Fills `table` (created empty, or never filled: no writer transaction yet) from the whole
    /// events table, in one overwrite with the writer transaction; returns its rows.
    async fn fill(
        &self,
        lake: &Lake,
        table: deltalake::DeltaTable,
        last: Option<i64>,
        opts: &WriteOptions,
    ) -> Result<u64> {
        let mut batches = self.derive(lake, None).await?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if batches.is_empty() {
            // Nothing yet: the table is written empty (a write needs at least one batch), which
            // still marks it filled.
            batches.push(RecordBatch::new_empty(self.table.schema()));
        }
        let name = self.table.name;
        let commit = commit_after(last, &format!("fill_{name}"), Some(rows))
            .with_application_transaction(definition_transaction(self.sql));
        table
            .write(batches)
            .with_save_mode(SaveMode::Overwrite)
            .with_writer_properties(opts.writer_properties(self.table)?)
            .with_commit_properties(commit)
            .await
            .map_err(delta_err(name))?;
        Ok(rows as u64)
    }

    /// Re-derives the `touched` keys from all their events in the lake and merges them into the
    /// table on the key, `last` being the table's [`last_writer_version`]; returns the rows
    /// merged.
    async fn upsert(
        &self,
        lake: &Lake,
        table: deltalake::DeltaTable,
        last: Option<i64>,
        touched: &Touched,
        opts: &WriteOptions,
    ) -> Result<u64> {
        let window = self.window(&table, touched).await?;
        let batches = self.derive(lake, Some((touched, window))).await?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows == 0 {
            return Ok(0);
        }
        let qe = query_err(self.table.name);
        let source = SessionContext::new().read_batches(batches).map_err(&qe)?;
        let name = self.table.name;
        let commit = commit_after(last, &format!("upsert_{name}"), Some(rows));
        let (inserted, updated) = upsert_on_key(table, self.table, source, opts, commit).await?;
        debug!(
            table = self.table.name,
            inserted,
            updated,
            ?window,
            "derived rows merged"
        );
        Ok(rows as u64)
    }

    /// Keeps the table current after a round: merges the touched keys, or fills the table when
    /// it is missing (and the lake has events), was never filled or was filled by another
    /// definition. Returns the rows written, None when nothing was to do.
    pub async fn update(
        &self,
        lake: &Lake,
        touched: &Touched,
        events_written: u64,
        opts: &WriteOptions,
    ) -> Result<Option<u64>> {
        let create = events_written > 0 || !touched.is_empty();
        let Some((table, last, filled)) = kept(lake, self.table, self.sql, create, opts).await?
        else {
            return Ok(None);
        };
        if !filled {
            return Ok(Some(self.fill(lake, table, last, opts).await?));
        }
        if touched.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.upsert(lake, table, last, touched, opts).await?))
    }

    /// Fills the table if it is missing, was never filled or was filled by another definition,
    /// while the lake has events (a lake written before the table existed); returns the rows
    /// written.
    pub async fn ensure(&self, lake: &Lake, opts: &WriteOptions) -> Result<Option<u64>> {
        if !lake.table_exists(EVENTS_TABLE).await? {
            return Ok(None);
        }
        match kept(lake, self.table, self.sql, true, opts).await? {
            Some((table, last, false)) => Ok(Some(self.fill(lake, table, last, opts).await?)),
            _ => Ok(None),
        }
    }
}
