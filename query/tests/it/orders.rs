//! The `orders` table follows what each lifecycle event says, field by field: an update that
//! carries some amounts leaves the others as they were (issue 18, item 6: 4% of a seeded store's
//! revenue had gone missing from `orders` when an update without `revenue` blanked it).

use std::sync::Arc;

use serde_json::{Value, json};
use shoplake_batch::{CompactOptions, compact_all};
use shoplake_ingest::{LocalLog, Record, StreamProducer};
use shoplake_query::QueryService;

use crate::lake::lake_and_stage;

pub(crate) fn event(name: &str, id: &str, at: &str, properties: Value) -> Record {
    let body = json!({
        "event_id": id,
        "event_name": name,
        "occurred_at": at,
        "anonymous_id": "a-1",
        "user_id": "u-1",
        "properties": properties,
    });
    Record {
        partition_key: "a-1".into(),
        data: serde_json::to_vec(&body).unwrap().into(),
    }
}

/// `record` with the payload field `field` set to `value`.
pub(crate) fn with(mut record: Record, field: &str, value: impl Into<Value>) -> Record {
    let mut body: Value = serde_json::from_slice(&record.data).unwrap();
    body[field] = value.into();
    record.data = serde_json::to_vec(&body).unwrap().into();
    record
}

/// The time `span` ago, as an event's RFC 3339 timestamp.
pub(crate) fn ago(span: chrono::Duration) -> String {
    (chrono::Utc::now() - span).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The properties of order `order_id`: one product at 10 EUR.
pub(crate) fn one_item_order(order_id: &str) -> Value {
    json!({"order_id": order_id, "total": 10.0, "revenue": 10.0, "currency": "EUR",
           "products": [{"product_id": "p-1", "price": 10.0, "quantity": 1}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_keeps_the_amounts_it_does_not_carry() {
    let dir = tempfile::tempdir().unwrap();
    let stream = Arc::new(LocalLog::open(&dir.path().join("stream.redb"), 1).unwrap());
    let at = |minutes: i64| ago(chrono::Duration::minutes(minutes));
    let product = json!({"product_id": "p-1", "price": 40.0, "quantity": 2});
    stream
        .put_records(vec![
            event(
                "order_completed",
                "00000000-0000-4000-8000-000000000001",
                &at(30),
                json!({"order_id": "o-1", "total": 90.0, "revenue": 80.0, "tax": 10.0,
                       "currency": "EUR", "coupon": "SPRING10", "products": [product]}),
            ),
            // A later update: a new total (shipping added), nothing else.
            event(
                "order_updated",
                "00000000-0000-4000-8000-000000000002",
                &at(20),
                json!({"order_id": "o-1", "total": 95.0, "shipping": 5.0, "currency": "EUR"}),
            ),
            event(
                "order_shipped",
                "00000000-0000-4000-8000-000000000003",
                &at(10),
                json!({"order_id": "o-1"}),
            ),
        ])
        .await
        .unwrap();
    let (lake, mut stage) = lake_and_stage(dir.path(), stream);
    let drained = stage.drain().await.unwrap();
    assert_eq!(drained.events, 3, "{drained:?}");
    compact_all(&lake, &CompactOptions::default())
        .await
        .unwrap();

    let service = QueryService::open(lake.root().as_str(), Default::default())
        .await
        .unwrap();
    let result = service
        .sql(
            "select status, cast(total as double) as total, cast(revenue as double) as revenue, \
             cast(tax as double) as tax, cast(shipping as double) as shipping, currency, coupon, \
             item_count from orders where order_id = 'o-1'",
        )
        .await
        .unwrap();
    let rows = shoplake_query::to_json_rows(&result).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["status"], json!("shipped"));
    // The update's own fields win; the others keep the order's values.
    assert_eq!(row["total"], json!(95.0));
    assert_eq!(row["shipping"], json!(5.0));
    assert_eq!(row["revenue"], json!(80.0), "{row}");
    assert_eq!(row["tax"], json!(10.0), "{row}");
    assert_eq!(row["coupon"], json!("SPRING10"), "{row}");
    assert_eq!(row["currency"], json!("EUR"));
    // Line items: from the latest event that lists products.
    assert_eq!(row["item_count"], json!(2), "{row}");
}

/// Two compactors that both find the `orders` table missing (a new lake, or one written before
/// the table existed) each derive every order. Before the writer transaction, both commits landed
/// — the second as a creating commit that delta-rs retries without a conflict check — and every
/// order came out twice (seen as 393 rows for 391 orders in the e2e test of two compactors).
/// Now exactly one fill lands, the other conflicts and runs again as compaction would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fills_of_a_missing_orders_table_write_each_order_once() {
    use shoplake_batch::derived::{ORDERS, Touched};

    let dir = tempfile::tempdir().unwrap();
    let stream = Arc::new(LocalLog::open(&dir.path().join("stream.redb"), 1).unwrap());
    let at = ago(chrono::Duration::minutes(5));
    let orders: u64 = 25;
    let records = (0..orders)
        .map(|i| {
            event(
                "order_completed",
                &format!("00000000-0000-4000-8000-{i:012}"),
                &at,
                one_item_order(&format!("o-{i}")),
            )
        })
        .collect();
    stream.put_records(records).await.unwrap();
    let (lake, mut stage) = lake_and_stage(dir.path(), stream);
    let drained = stage.drain().await.unwrap();
    assert_eq!(drained.events, orders, "{drained:?}");
    compact_all(&lake, &CompactOptions::default())
        .await
        .unwrap();
    // The lake as one written before `orders` existed: events, no orders table.
    std::fs::remove_dir_all(dir.path().join("lake").join("orders")).unwrap();

    let opts = CompactOptions::default().write_options();
    let none = Touched::default();
    let (a, b) = tokio::join!(
        ORDERS.update(&lake, &none, 1, &opts),
        ORDERS.update(&lake, &none, 1, &opts)
    );
    let mut conflicts = 0;
    for result in [a, b] {
        match result {
            Ok(rows) => assert_eq!(rows, Some(orders)),
            Err(e) if e.is_conflict() => {
                conflicts += 1;
                // What compaction does on a conflict: run again, against the winner's result.
                assert_eq!(ORDERS.update(&lake, &none, 1, &opts).await.unwrap(), None);
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(conflicts, 1, "the two fills should have raced");

    let service = QueryService::open(lake.root().as_str(), Default::default())
        .await
        .unwrap();
    let result = service
        .sql("select count(*) as n, count(distinct order_id) as orders from orders")
        .await
        .unwrap();
    let rows = shoplake_query::to_json_rows(&result).unwrap();
    assert_eq!(rows[0]["n"], json!(orders), "{rows:?}");
    assert_eq!(rows[0]["orders"], json!(orders), "{rows:?}");
}
