//! The `identities` table: which user each anonymous id (a browser, a device) belongs to.
//!
//! Storefronts send events before the shopper logs in under an anonymous id only; the identity
//! events — `signed_up`, `logged_in`, `identify` (both ids), and `alias` (its `previousId` kept as
//! `anonymous_id`) — link that anonymous id to a user id. The table holds one row per link
//! (anonymous_id → user_id): when it was first and last seen, the event that made it and its
//! source, how many events carried it. The views of `sql/views` join it to attribute a session
//! that carried no user id to the user its anonymous id is linked to.
//!
//! ## Conflicts
//! An anonymous id linked to two users is a shared device (a family computer, a kiosk, a shopper
//! with two accounts). Both links stay in the table, each anonymous id's rows say how many users it
//! is linked to (`users_linked`), and exactly one of them is `is_current`: the user of the latest
//! link event, which is the one attribution uses. So the latest link wins, and whoever wants to
//! leave shared devices out of an analysis filters on `users_linked = 1`. The derivation is
//! `sql/batch/identities.sql`.
//!
//! ## Maintenance
//! Compaction calls [`update_identities`] after each round's commits, with the anonymous ids that
//! identity events of the round touched (found in the round's staged events before they were
//! appended); it re-derives those ids' links from *all* their identity
//! events in the lake, and merges them into the table on (anonymous_id, user_id) — a Delta MERGE,
//! like the `orders` upsert: the work follows the round, not the lake's history, and a re-run
//! derives the same rows. When the table is missing (a new lake, or one written before this table
//! existed) it is created, then filled from the whole events table the same way, in a commit that
//! carries a Delta application transaction ([`FILLED_APP_ID`]): a table created but not filled (a
//! crash in between) is filled by the next round, and two compactors cannot both fill it. Rows only
//! ever grow: events are append-only. Erasing a user (GDPR) must drop the table so that the next
//! round fills it again.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::JoinType;
use datafusion::prelude::{SessionContext, col, lit};
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use shoplake_events::EventName;
use shoplake_events::fields::{ANONYMOUS_ID, EVENT_NAME, USER_ID};
use shoplake_events::lake::{EVENTS_TABLE, IDENTITIES_TABLE};
use tracing::debug;

use crate::tables::{self, IDENTITIES as TABLE};
use crate::write::{WriteOptions, conform, create_empty, upsert_on_key, writer_commit};
use crate::{Error, Lake, Result};

/// The SQL that derives the links from the identity events (`link_events`).
pub const IDENTITIES_SQL: &str = include_str!("../../sql/batch/identities.sql");

/// The events that link an anonymous id to a user id: those that identify a known user.
fn link_event_names() -> impl Iterator<Item = &'static str> {
    EventName::ALL
        .iter()
        .filter(|n| n.requires_user_id())
        .map(|n| n.as_str())
}

/// The Delta application id of the commit that fills the table from the whole events table.
/// A table without it was created but never filled (a crash in between): it is filled again.
pub const FILLED_APP_ID: &str = "shoplake-identities-filled";

/// Brings the `identities` table up to date with a compaction round whose identity events linked
/// the anonymous ids `touched` ([`linked_anonymous_ids`]; the events are in the lake by now);
/// returns the rows merged, or `None` when the round touched no link. When the table is missing, or was never filled, it is created and filled from
/// the whole events table instead.
pub async fn update_identities(
    lake: &Lake,
    touched: Vec<String>,
    opts: &WriteOptions,
) -> Result<Option<u64>> {
    let table = match crate::write::evolved(lake, &TABLE).await? {
        Some(table) => table,
        None if lake.table_exists(EVENTS_TABLE).await? => create_empty(lake, &TABLE, opts).await?,
        None => return Ok(None),
    };
    let filled = table
        .snapshot()
        .map_err(|source| Error::delta(IDENTITIES_TABLE, source))?
        .transaction_version(table.log_store().as_ref(), FILLED_APP_ID)
        .await
        .map_err(|source| Error::delta(IDENTITIES_TABLE, source))?
        .is_some();
    if !filled {
        return Ok(Some(merge(lake, table, None, opts).await?));
    }
    if touched.is_empty() {
        return Ok(None);
    }
    Ok(Some(merge(lake, table, Some(touched), opts).await?))
}

/// The anonymous ids that identity events among `events` (a round's staged events) link to a
/// user.
pub(crate) fn linked_anonymous_ids(events: &[RecordBatch]) -> Result<Vec<String>> {
    let links: BTreeSet<&str> = link_event_names().collect();
    let mut ids = BTreeSet::new();
    for batch in events {
        let column = |name: &str| -> Result<StringArray> {
            let c = batch
                .column_by_name(name)
                .ok_or_else(|| Error::missing_column(tables::EVENTS.name, name))?;
            Ok(arrow::compute::cast(c, &DataType::Utf8)?
                .as_string::<i32>()
                .clone())
        };
        let (names, anonymous, users) =
            (column(EVENT_NAME)?, column(ANONYMOUS_ID)?, column(USER_ID)?);
        for i in 0..batch.num_rows() {
            if names.is_valid(i)
                && links.contains(names.value(i))
                && anonymous.is_valid(i)
                && users.is_valid(i)
                && anonymous.value(i) != users.value(i)
            {
                ids.insert(anonymous.value(i).to_owned());
            }
        }
    }
    Ok(ids.into_iter().collect())
}

/// Runs the identities SQL over the lake's identity events — all of them, or only those of the
/// anonymous ids in `only` — and returns the rows in the table's schema.
async fn derive(lake: &Lake, only: Option<Vec<String>>) -> Result<Vec<RecordBatch>> {
    let qe = |source| Error::query(IDENTITIES_TABLE, source);
    let ctx = SessionContext::new();
    let Some(events) = lake.scan(&ctx, EVENTS_TABLE).await? else {
        return Ok(Vec::new());
    };
    let names = link_event_names().map(lit).collect();
    let mut links = events
        .filter(
            col(EVENT_NAME)
                .in_list(names, false)
                .and(col(ANONYMOUS_ID).is_not_null())
                .and(col(USER_ID).is_not_null())
                .and(col(ANONYMOUS_ID).not_eq(col(USER_ID))),
        )
        .map_err(qe)?;
    if let Some(ids) = only {
        let ids = RecordBatch::try_from_iter([(
            "touched_anonymous_id",
            Arc::new(StringArray::from(ids)) as _,
        )])?;
        let touched = ctx.read_batch(ids).map_err(qe)?;
        links = links
            .join_on(
                touched,
                JoinType::LeftSemi,
                [col(ANONYMOUS_ID).eq(col("touched_anonymous_id"))],
            )
            .map_err(qe)?;
    }
    ctx.register_table("link_events", links.into_view())
        .map_err(qe)?;
    let batches = ctx
        .sql(IDENTITIES_SQL)
        .await
        .map_err(qe)?
        .collect()
        .await
        .map_err(qe)?;
    let mut batches = conform(batches, &TABLE)?;
    batches.retain(|b| b.num_rows() > 0);
    Ok(batches)
}

/// Derives the links of `only` (or all) and merges them into `table` on (anonymous_id, user_id):
/// updated when present, inserted when new. Returns the rows merged.
///
/// Filling the table (`only` = None) commits with the [`FILLED_APP_ID`] transaction — an empty
/// commit when there is no link yet — so that it happens once: two compactors filling at the same
/// time conflict, and the loser re-runs its round as an update.
async fn merge(
    lake: &Lake,
    table: deltalake::DeltaTable,
    only: Option<Vec<String>>,
    opts: &WriteOptions,
) -> Result<u64> {
    let fill = only.is_none();
    let operation = if fill {
        "fill_identities"
    } else {
        "upsert_identities"
    };
    let batches = derive(lake, only).await?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    // The writer transaction makes any two merges at once conflict (`write`'s *Concurrent
    // writers*); the fill's own transaction makes it happen once.
    let mut commit = writer_commit(&table, IDENTITIES_TABLE, operation, Some(rows)).await?;
    if fill {
        commit = commit.with_application_transaction(Transaction::new(FILLED_APP_ID, 1));
    }
    if rows == 0 {
        if fill {
            table
                .write(vec![RecordBatch::new_empty(TABLE.schema())])
                .with_save_mode(SaveMode::Append)
                .with_commit_properties(commit)
                .await
                .map_err(|source| Error::delta(IDENTITIES_TABLE, source))?;
        }
        return Ok(0);
    }
    let source = SessionContext::new()
        .read_batches(batches)
        .map_err(|source| Error::query(IDENTITIES_TABLE, source))?;
    let (inserted, updated) = upsert_on_key(table, &TABLE, source, opts, commit).await?;
    debug!(operation, inserted, updated, "identities merged");
    Ok(rows as u64)
}
