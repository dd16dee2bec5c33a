//! Reading recent history back out of the lake, in event-time order: how the streaming stage's
//! live state (fraud windows, recommendations) is rebuilt when its saved copy is missing.

use datafusion::execution::SendableRecordBatchStream;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::prelude::{SessionContext, cast, col, lit};
use datafusion::scalar::ScalarValue;
use shoplake_events::codec::date_of;
use shoplake_events::fields::{EVENT_DATE, EVENT_TIME};
use shoplake_events::lake::EVENTS_TABLE;

use crate::{Error, Lake, Result};

/// The latest event time (µs) of the lake's events; None when it has none.
pub async fn latest(lake: &Lake) -> Result<Option<i64>> {
    let ctx = SessionContext::new();
    match lake.scan(&ctx, EVENTS_TABLE).await? {
        Some(events) => latest_event_time(&events).await,
        None => Ok(None),
    }
}

/// The latest event time (µs) of `events`; None when it has no rows.
pub(crate) async fn latest_event_time(
    events: &datafusion::dataframe::DataFrame,
) -> Result<Option<i64>> {
    let qe = |source| Error::query(EVENTS_TABLE, source);
    let latest = events
        .clone()
        .aggregate(vec![], vec![max(col(EVENT_TIME))])
        .map_err(qe)?
        .collect()
        .await
        .map_err(qe)?;
    match latest
        .first()
        .filter(|b| b.num_rows() > 0)
        .map(|b| ScalarValue::try_from_array(b.column(0), 0))
        .transpose()
        .map_err(qe)?
    {
        Some(ScalarValue::TimestampMicrosecond(Some(latest), _)) => Ok(Some(latest)),
        _ => Ok(None),
    }
}

/// The events of the lake's last `window_micros` of event time (up to its latest event), oldest
/// first, in the contract's types, as a stream of batches (memory stays bounded by the sort's
/// spilling, not the history). None when the lake has no events.
pub async fn recent_events(
    lake: &Lake,
    window_micros: i64,
) -> Result<Option<SendableRecordBatchStream>> {
    let qe = |source| Error::query(EVENTS_TABLE, source);
    let ctx = SessionContext::new();
    let Some(events) = lake.scan(&ctx, EVENTS_TABLE).await? else {
        return Ok(None);
    };
    let Some(latest) = latest_event_time(&events).await? else {
        return Ok(None);
    };
    let since = latest.saturating_sub(window_micros);
    // A lake written by an older contract lacks the columns added since (until compaction next
    // evolves it): those read as typed nulls, as the query service reads them.
    let present = events.schema().clone();
    let stream = events
        .filter(
            col(EVENT_DATE)
                .gt_eq(lit(ScalarValue::Date32(Some(date_of(since)))))
                .and(col(EVENT_TIME).gt_eq(lit(ScalarValue::TimestampMicrosecond(
                    Some(since),
                    Some("UTC".into()),
                )))),
        )
        .and_then(|t| t.sort(vec![col(EVENT_TIME).sort(true, false)]))
        // In the contract's types (the scan may hand back string views).
        .and_then(|t| {
            t.select(
                shoplake_events::events_schema()
                    .fields()
                    .iter()
                    .map(|f| {
                        let value = if present.has_column_with_unqualified_name(f.name()) {
                            col(f.name())
                        } else {
                            lit(ScalarValue::try_from(f.data_type()).unwrap_or(ScalarValue::Null))
                        };
                        cast(value, f.data_type().clone()).alias(f.name())
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .map_err(qe)?
        .execute_stream()
        .await
        .map_err(qe)?;
    Ok(Some(stream))
}
