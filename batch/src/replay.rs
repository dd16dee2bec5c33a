//! Reading recent history back out of the lake, in event-time order: how the streaming stage's
//! live state (fraud windows, recommendations) is rebuilt when its saved copy is missing.

use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use shoplake_events::fields::{EVENT_DATE, EVENT_TIME};
use shoplake_events::lake::EVENTS_TABLE;

use crate::{Error, Lake, Result};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The events of the lake with an event time from `since` (UTC micros), oldest first, as a stream of batches (memory stays bounded by the sort's spilling, not the history).
/// None when the lake has no events table.
pub async fn recent_events(lake: &Lake, since: i64) -> Result<Option<SendableRecordBatchStream>> {
    let Some(table) = lake.table(EVENTS_TABLE).await? else {
        return Ok(None);
    };
    let qe = |source| Error::query(EVENTS_TABLE, source);
    let ctx = SessionContext::new();
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|source| Error::delta(EVENTS_TABLE, source))?;
    let provider = table.table_provider().await.map_err(qe)?;
    let ts = lit(ScalarValue::TimestampMicrosecond(
        Some(since),
        Some("UTC".into()),
    ));
    let day = lit(ScalarValue::Date32(Some(
        since.div_euclid(MICROS_PER_DAY) as i32
    )));
    let stream = ctx
        .read_table(provider)
        .and_then(|t| t.filter(col(EVENT_DATE).gt_eq(day).and(col(EVENT_TIME).gt_eq(ts))))
        .and_then(|t| t.sort(vec![col(EVENT_TIME).sort(true, false)]))
        // In the contract's types (the scan may hand back string views).
        .and_then(|t| {
            t.select(
                shoplake_events::events_schema()
                    .fields()
                    .iter()
                    .map(|f| {
                        datafusion::prelude::cast(col(f.name()), f.data_type().clone())
                            .alias(f.name())
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

/// The latest event time in the lake (UTC micros), if it has events.
pub async fn latest_event_time(lake: &Lake) -> Result<Option<i64>> {
    let Some(table) = lake.table(EVENTS_TABLE).await? else {
        return Ok(None);
    };
    let qe = |source| Error::query(EVENTS_TABLE, source);
    let ctx = SessionContext::new();
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|source| Error::delta(EVENTS_TABLE, source))?;
    let provider = table.table_provider().await.map_err(qe)?;
    let batches = ctx
        .read_table(provider)
        .and_then(|t| {
            t.aggregate(
                vec![],
                vec![datafusion::functions_aggregate::expr_fn::max(col(
                    EVENT_TIME,
                ))],
            )
        })
        .map_err(qe)?
        .collect()
        .await
        .map_err(qe)?;
    let v = batches
        .first()
        .filter(|b| b.num_rows() > 0)
        .map(|b| arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64))
        .transpose()?
        .and_then(|a| {
            use arrow::array::{Array, AsArray};
            let a = a.as_primitive::<arrow::datatypes::Int64Type>();
            (!a.is_null(0)).then(|| a.value(0))
        });
    Ok(v)
}
