//! The `product_affinity` table: per product, the products most often viewed in the same session
//! and bought in the same order over the lake's whole history. Analysts read it ("what sells with
//! this?"), and the streaming stage seeds its live recommendations from it on a cold start, so that
//! item-to-item starts from all of history rather than from the few days it replays.
//!
//! ```text
//! events (Delta) ─DataFusion: scan, filter, project─► product views (session, product, time)
//!                                                     order lines (order, product, time)
//!   ─polars: first view of each product per session, pairs within the session window, pairs
//!            within each order, decayed sums, cosine, strongest N per product─►
//!   product_affinity (Delta, overwritten whole; earlier versions stay readable by time travel)
//! ```
//!
//! It counts as the live engine (`shoplake_live::recs`) does, so that a seeded engine goes on
//! from where the table stops (its `as_of`):
//! - a session counts once per product, at the product's first view (views, clicks, cart and
//!   wishlist adds); a product pairs with the session's previous `session_window` distinct
//!   products, at the time of the later view;
//! - an order counts once per distinct product; its first `order_pair_limit` distinct products
//!   pair with each other;
//! - every count weighs `2^((t − as_of) / half_life)` (the engine's forward decay, seen from
//!   `as_of`); bots are left out.
//!
//! `score` is the cosine of the two counts, shrunk by evidence (`together / (together +
//! shrinkage)`): the engine's default normalisation. The engine re-scores the seeded counts with
//! its own normalisation, which is why the table keeps `neighbours` (twice the engine's
//! per-product list, as the engine collects) rather than only the best few.
//!
//! Why polars: the job is a handful of self-joins and group-bys over the whole history, which
//! polars runs multi-threaded and in a few readable lines. DataFusion reads the lake (Delta log,
//! S3, projection), and the data crosses to polars column by column, as plain slices: the two use
//! different Arrow implementations, and bridging them through the C data interface would take
//! unsafe code, which this workspace forbids.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Int64Type};
use deltalake::protocol::SaveMode;
use polars::prelude::{
    Column, DataFrame as PlFrame, DataType as PlType, Expr, IntoLazy, LazyFrame, PolarsError,
    SortMultipleOptions, col, len, lit, when,
};
use shoplake_events::EventName;
use shoplake_events::lake::{EVENTS_TABLE, PRODUCT_AFFINITY_TABLE};
use shoplake_events::product_affinity_schema;

use crate::tables::PRODUCT_AFFINITY as TABLE;
use crate::write::{WriteOptions, conform, table_or_empty, writer_commit};
use crate::{Error, Lake, Result};

/// Relation of a row: products viewed in the same session.
pub const VIEWED_TOGETHER: &str = "viewed_together";
/// Relation of a row: products bought in the same order.
pub const BOUGHT_TOGETHER: &str = "bought_together";

/// How the job counts: the live engine's settings (`shoplake_live::recs::RecsConfig`:
/// `half_life_hours`, `session_window`, `order_pair_limit`, 2 × `neighbours`, `shrinkage`), which
/// the binary passes in.
#[derive(Clone, Debug)]
pub struct AffinityOptions {
    /// Half-life of every count, in hours of event time.
    pub half_life_hours: f64,
    /// A product viewed in a session pairs with the session's previous this many distinct products.
    pub session_window: usize,
    /// An order pairs at most this many of its distinct products.
    pub order_pair_limit: usize,
    /// Neighbours kept per product and relation, strongest first.
    pub neighbours: usize,
    /// Evidence shrinkage of the score.
    pub shrinkage: f64,
    /// Count events up to this event time (µs) only; None: up to the lake's latest.
    pub until: Option<i64>,
}

/// What a run of the job did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct AffinityReport {
    /// The latest event time counted (µs); None when the lake has no events (nothing written).
    pub as_of: Option<i64>,
    /// Product views and order lines read from the lake.
    pub views: u64,
    pub order_lines: u64,
    /// Sessions that viewed a product, and orders.
    pub sessions: u64,
    pub orders: u64,
    /// Products with at least one neighbour, and rows written.
    pub products: u64,
    pub rows: u64,
    /// The table's version after the write.
    pub version: Option<u64>,
    /// Seconds reading the lake, in polars, and writing the table.
    pub read_secs: f64,
    pub compute_secs: f64,
    pub write_secs: f64,
}

fn polars_err(source: PolarsError) -> Error {
    Error::Polars {
        table: PRODUCT_AFFINITY_TABLE,
        source,
    }
}

/// The events query returned what the job cannot use: a bug, not bad data.
fn unexpected(problem: &'static str) -> Error {
    Error::UnexpectedResult {
        table: PRODUCT_AFFINITY_TABLE,
        problem,
    }
}

/// Recomputes `product_affinity` from the whole `events` table and overwrites it in one commit.
/// Safe to re-run at any time: readers see the previous version or the new one, never a mix.
pub async fn rebuild(
    lake: &Lake,
    opts: &AffinityOptions,
    write: &WriteOptions,
) -> Result<AffinityReport> {
    Ok(rebuild_rows(lake, opts, write).await?.0)
}

/// [`rebuild`], also returning the rows written, in the table's schema (none when the lake has
/// no events).
pub async fn rebuild_rows(
    lake: &Lake,
    opts: &AffinityOptions,
    write: &WriteOptions,
) -> Result<(AffinityReport, Vec<RecordBatch>)> {
    let mut report = AffinityReport::default();
    let started = Instant::now();
    let Some(input) = read(lake, opts.until).await? else {
        return Ok((report, Vec::new()));
    };
    report.as_of = Some(input.as_of);
    report.views = input.views.height() as u64;
    report.order_lines = input.lines.height() as u64;
    report.read_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let half_life_hours = opts.half_life_hours;
    let opts = opts.clone();
    let (frame, sessions, orders) = tokio::task::spawn_blocking(move || compute(input, &opts))
        .await
        .map_err(|source| Error::Panicked {
            table: PRODUCT_AFFINITY_TABLE,
            source,
        })??;
    report.sessions = sessions;
    report.orders = orders;
    report.rows = frame.height() as u64;
    report.products = frame
        .column("product")
        .and_then(|c| c.n_unique())
        .map_err(polars_err)? as u64;
    let batch = to_arrow(&frame, half_life_hours)?;
    report.compute_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    // Created empty, then overwritten with the writer transaction: of two jobs at once exactly
    // one lands (`write`'s *Concurrent writers*); the other fails with a conflict.
    let table = table_or_empty(lake, &TABLE, write).await?;
    let commit = writer_commit(
        &table,
        PRODUCT_AFFINITY_TABLE,
        "product_affinity",
        Some(report.rows as usize),
    )
    .await?;
    let table = table
        .write(vec![batch.clone()])
        .with_save_mode(SaveMode::Overwrite)
        .with_writer_properties(write.writer_properties(&TABLE)?)
        .with_target_file_size(write.target_file_size())
        .with_commit_properties(commit)
        .await
        .map_err(|e| Error::delta(PRODUCT_AFFINITY_TABLE, e))?;
    report.version = table.version();
    report.write_secs = started.elapsed().as_secs_f64();
    Ok((report, vec![batch]))
}

/// The job's input, in polars: `views` (key = session, product, t) and `lines` (key = order
/// event, product, t), in arrival order; times are µs.
struct Input {
    as_of: i64,
    views: PlFrame,
    lines: PlFrame,
}

/// Reads the product views and order lines up to `until` (or the lake's latest event).
async fn read(lake: &Lake, until: Option<i64>) -> Result<Option<Input>> {
    let qe = |source| Error::query(PRODUCT_AFFINITY_TABLE, source);
    let ctx = datafusion::prelude::SessionContext::new();
    let Some(events) = lake.scan(&ctx, EVENTS_TABLE).await? else {
        return Ok(None);
    };
    let as_of = match until {
        Some(t) => t,
        None => match crate::history::latest_event_time(&events).await? {
            Some(t) => t,
            None => return Ok(None),
        },
    };
    ctx.register_table(EVENTS_TABLE, events.into_view())
        .map_err(qe)?;
    let views = [
        EventName::ProductViewed,
        EventName::ProductClicked,
        EventName::ProductAdded,
        EventName::WishlistProductAdded,
    ]
    .map(|n| format!("'{}'", n.as_str()))
    .join(", ");
    let humans = format!("is_bot IS NOT TRUE AND CAST(event_time AS BIGINT) <= {as_of}");
    let views = format!(
        "SELECT session_id AS key, products[1]['product_id'] AS product, \
                CAST(event_time AS BIGINT) AS t \
         FROM {EVENTS_TABLE} \
         WHERE event_name IN ({views}) AND {humans} \
           AND session_id IS NOT NULL AND products[1]['product_id'] IS NOT NULL"
    );
    let lines = format!(
        "SELECT key, line['product_id'] AS product, t FROM ( \
           SELECT event_id AS key, CAST(event_time AS BIGINT) AS t, unnest(products) AS line \
           FROM {EVENTS_TABLE} WHERE event_name = '{}' AND {humans}) \
         WHERE line['product_id'] IS NOT NULL",
        EventName::OrderCompleted.as_str()
    );
    let query = |sql: String| {
        let ctx = &ctx;
        async move {
            let batches = ctx
                .sql(&sql)
                .await
                .map_err(qe)?
                .collect()
                .await
                .map_err(qe)?;
            to_polars(&batches)
        }
    };
    let views = query(views).await?;
    let lines = query(lines).await?;
    Ok(Some(Input {
        as_of,
        views,
        lines,
    }))
}

/// (key, product, t) batches → a polars frame of the same columns.
fn to_polars(batches: &[RecordBatch]) -> Result<PlFrame> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let strings = |a: &ArrayRef| arrow::compute::cast(a, &DataType::Utf8);
    // The string columns are cast to one type first (the scan may hand back views); they must
    // outlive the slices borrowed from them.
    let mut owned = Vec::with_capacity(batches.len());
    for b in batches {
        owned.push((
            strings(b.column(0))?,
            strings(b.column(1))?,
            b.column(2).clone(),
        ));
    }
    let (mut keys, mut products, mut times) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    for (k, p, t) in &owned {
        let (Some(k), Some(p), Some(t)) = (
            k.as_string_opt::<i32>(),
            p.as_string_opt::<i32>(),
            t.as_primitive_opt::<Int64Type>(),
        ) else {
            return Err(unexpected("columns of unexpected types"));
        };
        // The queries filter nulls out; one here is a bug, not a row to drop.
        if k.null_count() + p.null_count() + t.null_count() > 0 {
            return Err(unexpected("a null key, product or time"));
        }
        keys.extend(k.iter().flatten());
        products.extend(p.iter().flatten());
        times.extend(t.values().iter().copied());
    }
    PlFrame::new(
        keys.len(),
        vec![
            Column::new("key".into(), keys),
            Column::new("product".into(), products),
            Column::new("t".into(), times),
        ],
    )
    .map_err(polars_err)
}

/// Adds `name`: the position of each row within its `key` (0 = first), in the frame's order.
fn with_position(frame: LazyFrame, key: &str, name: &str) -> Result<LazyFrame> {
    let row = format!("_{name}_row");
    let first = col(row.as_str())
        .min()
        .over([col(key)])
        .map_err(polars_err)?;
    Ok(frame.with_row_index(row.as_str(), None).with_column(
        (col(row.as_str()).cast(PlType::Int64) - first.cast(PlType::Int64)).alias(name),
    ))
}

/// The job proper: returns the output rows (sorted by product, relation, rank), and how many
/// sessions and orders were counted.
fn compute(input: Input, opts: &AffinityOptions) -> Result<(PlFrame, u64, u64)> {
    let half_life_micros = opts.half_life_hours * 3_600.0 * 1e6;
    let as_of = input.as_of;
    let weight = move |t: Expr| {
        lit(2.0f64).pow((t.cast(PlType::Float64) - lit(as_of as f64)) / lit(half_life_micros))
    };
    let by = |names: &[&str]| names.iter().map(|n| col(*n)).collect::<Vec<_>>();
    let sort = |frame: LazyFrame, names: &[&str], descending: &[bool]| {
        frame.sort(
            names
                .iter()
                .map(|n| (*n).into())
                .collect::<Vec<polars::prelude::PlSmallStr>>(),
            SortMultipleOptions::default()
                .with_order_descending_multi(descending.to_vec())
                .with_maintain_order(true),
        )
    };

    // Each product once per session (its first view) and once per order (its first line), in
    // the order the session or order met them, with its position and weight.
    let firsts = |frame: PlFrame, order_by: &str| -> Result<LazyFrame> {
        let frame = frame.lazy().with_row_index("line", None);
        let firsts = frame
            .group_by(by(&["key", "product"]))
            .agg([col("t").min(), col("line").min()]);
        let sorted = sort(
            firsts,
            &["key", order_by, "product"],
            &[false, false, false],
        );
        Ok(with_position(sorted, "key", "pos")?.with_column(weight(col("t")).alias("w")))
    };
    let views = firsts(input.views, "t")?.collect().map_err(polars_err)?;
    let lines = firsts(input.lines, "line")?.collect().map_err(polars_err)?;

    // c_i: decayed sessions / orders with the product; n: decayed sessions / orders.
    let counts = |frame: &PlFrame| {
        frame
            .clone()
            .lazy()
            .group_by([col("product")])
            .agg([col("w").sum().alias("count")])
    };
    let total = |frame: &PlFrame| -> Result<(f64, u64)> {
        let per_key = frame
            .clone()
            .lazy()
            .group_by([col("key")])
            .agg([col("t").min()])
            .select([weight(col("t")).sum().alias("n"), len().alias("keys")])
            .collect()
            .map_err(polars_err)?;
        let n = per_key
            .column("n")
            .and_then(|c| c.f64().map(|c| c.get(0)))
            .map_err(polars_err)?
            .unwrap_or_default();
        let keys = per_key
            .column("keys")
            .and_then(|c| c.cast(&PlType::UInt64))
            .and_then(|c| c.u64().map(|c| c.get(0)))
            .map_err(polars_err)?
            .unwrap_or_default();
        Ok((n, keys))
    };
    let (session_total, sessions) = total(&views)?;
    let (order_total, orders) = total(&lines)?;

    // Pairs: both directions, at the weight of the later of the two (views), or of the order.
    let pairs = |frame: &PlFrame, keep: Expr| {
        let left = frame
            .clone()
            .lazy()
            .filter(keep.clone())
            .select(by(&["key", "product", "pos", "w"]));
        let right = frame.clone().lazy().filter(keep).select([
            col("key"),
            col("product").alias("related"),
            col("pos").alias("rpos"),
            col("w").alias("rw"),
        ]);
        left.inner_join(right, col("key"), col("key"))
    };
    let window = opts.session_window as i64;
    let viewed = pairs(&views, lit(true))
        .filter(
            col("pos")
                .neq(col("rpos"))
                .and((col("pos") - col("rpos")).lt_eq(lit(window)))
                .and((col("rpos") - col("pos")).lt_eq(lit(window))),
        )
        .with_column(
            when(col("pos").gt(col("rpos")))
                .then(col("w"))
                .otherwise(col("rw"))
                .alias("w"),
        );
    let bought = pairs(
        &lines,
        col("pos").lt(lit(opts.order_pair_limit.max(2) as i64)),
    )
    .filter(col("pos").neq(col("rpos")));

    let scored =
        |pairs: LazyFrame, counts: LazyFrame, relation: &str, n: f64| -> Result<LazyFrame> {
            let together = pairs
                .group_by(by(&["product", "related"]))
                .agg([col("w").sum().alias("together")]);
            let with_counts = together
                .inner_join(
                    counts
                        .clone()
                        .select([col("product"), col("count").alias("product_count")]),
                    col("product"),
                    col("product"),
                )
                .inner_join(
                    counts.select([
                        col("product").alias("related"),
                        col("count").alias("related_count"),
                    ]),
                    col("related"),
                    col("related"),
                )
                .with_column(
                    ((col("together") / (col("product_count") * col("related_count")).sqrt())
                        * (col("together") / (col("together") + lit(opts.shrinkage))))
                    .alias("score"),
                );
            let sorted = sort(
                with_counts,
                &["product", "score", "related"],
                &[false, true, false],
            );
            Ok(with_position(sorted, "product", "rank")?
                .filter(col("rank").lt(lit(opts.neighbours.max(1) as i64)))
                .with_column((col("rank") + lit(1i64)).alias("rank"))
                .with_columns([
                    lit(relation).alias("relation"),
                    lit(n).alias("relation_total"),
                ]))
        };
    let out = polars::prelude::concat(
        [
            scored(viewed, counts(&views), VIEWED_TOGETHER, session_total)?,
            scored(bought, counts(&lines), BOUGHT_TOGETHER, order_total)?,
        ],
        Default::default(),
    )
    .map_err(polars_err)?
    .with_column(lit(as_of).alias("as_of"));
    let out = sort(
        out,
        &["product", "relation", "rank"],
        &[false, false, false],
    )
    .collect()
    .map_err(polars_err)?;
    Ok((out, sessions, orders))
}

/// The polars result → one Arrow batch in the table's schema.
fn to_arrow(frame: &PlFrame, half_life_hours: f64) -> Result<RecordBatch> {
    let e = polars_err;
    let text = |name: &str| -> Result<ArrayRef> {
        let c = frame
            .column(name)
            .and_then(|c| c.str().cloned())
            .map_err(e)?;
        // A null meets the table's non-null schema and fails the batch: no row turns into "".
        Ok(Arc::new(c.iter().collect::<StringArray>()))
    };
    let float = |name: &str| -> Result<ArrayRef> {
        let c = frame
            .column(name)
            .and_then(|c| c.f64().cloned())
            .map_err(e)?;
        Ok(Arc::new(c.iter().collect::<Float64Array>()))
    };
    let rows = frame.height();
    let rank = frame
        .column("rank")
        .and_then(|c| c.cast(&PlType::Int32))
        .map_err(e)?;
    let rank: Int32Array = rank.i32().map_err(e)?.iter().collect();
    let as_of = frame
        .column("as_of")
        // An empty frame (no product seen with another yet) has no first row; polars' `get`
        // panics on one (found by scripts/chaos: a warm start on a lake a crash left small).
        .and_then(|c| c.i64().map(|c| if rows == 0 { None } else { c.get(0) }))
        .map_err(e)?
        .unwrap_or_default();
    let now = chrono::Utc::now().timestamp_micros();
    let stamp = |t: i64| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(vec![t; rows]).with_timezone("UTC"))
    };
    let columns: Vec<ArrayRef> = vec![
        text("product")?,
        text("related")?,
        text("relation")?,
        float("together")?,
        float("product_count")?,
        float("related_count")?,
        float("relation_total")?,
        float("score")?,
        Arc::new(rank),
        stamp(as_of),
        Arc::new(Float64Array::from(vec![half_life_hours; rows])),
        stamp(now),
    ];
    Ok(RecordBatch::try_new(product_affinity_schema(), columns)?)
}

/// Every row of `product_affinity`, in the table's schema; None when the job never ran.
pub async fn read_table(lake: &Lake) -> Result<Option<Vec<RecordBatch>>> {
    let qe = |source| Error::query(PRODUCT_AFFINITY_TABLE, source);
    let ctx = datafusion::prelude::SessionContext::new();
    let Some(table) = lake.scan(&ctx, PRODUCT_AFFINITY_TABLE).await? else {
        return Ok(None);
    };
    let batches = table.collect().await.map_err(qe)?;
    Ok(Some(conform(batches, &TABLE)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000;

    /// The live engine's default settings.
    fn engine_defaults() -> AffinityOptions {
        AffinityOptions {
            half_life_hours: 14.0 * 24.0,
            session_window: 10,
            order_pair_limit: 20,
            neighbours: 60,
            shrinkage: 1.0,
            until: None,
        }
    }

    fn frame(rows: &[(&str, &str, i64)]) -> PlFrame {
        PlFrame::new(
            rows.len(),
            vec![
                Column::new("key".into(), rows.iter().map(|r| r.0).collect::<Vec<_>>()),
                Column::new(
                    "product".into(),
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                ),
                Column::new("t".into(), rows.iter().map(|r| r.2).collect::<Vec<_>>()),
            ],
        )
        .unwrap()
    }

    /// (product, related, relation)
    type Key = (String, String, String);
    /// (together, product_count, related_count, relation_total, score, rank)
    type Row = (f64, f64, f64, f64, f64, i32);

    fn rows(
        views: &[(&str, &str, i64)],
        lines: &[(&str, &str, i64)],
        opts: &AffinityOptions,
    ) -> std::collections::BTreeMap<Key, Row> {
        let input = Input {
            as_of: 10 * HOUR,
            views: frame(views),
            lines: frame(lines),
        };
        let (out, _, _) = compute(input, opts).unwrap();
        let batch = to_arrow(&out, opts.half_life_hours).unwrap();
        let s = |i: usize| batch.column(i).as_string::<i32>().clone();
        let f = |i: usize| {
            batch
                .column(i)
                .as_primitive::<arrow::datatypes::Float64Type>()
                .clone()
        };
        let (p, r, rel) = (s(0), s(1), s(2));
        let (tg, pc, rc, tot, sc) = (f(3), f(4), f(5), f(6), f(7));
        let rank = batch
            .column(8)
            .as_primitive::<arrow::datatypes::Int32Type>()
            .clone();
        (0..batch.num_rows())
            .map(|i| {
                (
                    (p.value(i).into(), r.value(i).into(), rel.value(i).into()),
                    (
                        tg.value(i),
                        pc.value(i),
                        rc.value(i),
                        tot.value(i),
                        sc.value(i),
                        rank.value(i),
                    ),
                )
            })
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    fn key(p: &str, r: &str, rel: &str) -> (String, String, String) {
        (p.into(), r.into(), rel.into())
    }

    /// A lake whose sessions each viewed one product (a crash left it small) gives no pairs:
    /// an empty table, not a panic (found by scripts/chaos in a warm start).
    #[test]
    fn a_lake_without_a_pair_gives_no_rows() {
        let views = [("s1", "A", 9 * HOUR), ("s2", "B", 9 * HOUR)];
        assert!(rows(&views, &[], &engine_defaults()).is_empty());
    }

    #[test]
    fn counts_decay_normalise_and_rank_as_the_engine_does() {
        let opts = AffinityOptions {
            half_life_hours: 1.0,
            ..engine_defaults()
        };
        // Session 1 an hour before as_of (weight 1/2), A viewed twice; session 2 at as_of (1).
        let views = [
            ("s1", "A", 9 * HOUR),
            ("s1", "B", 9 * HOUR),
            ("s1", "A", 9 * HOUR),
            ("s1", "C", 9 * HOUR),
            ("s2", "B", 10 * HOUR),
            ("s2", "C", 10 * HOUR),
        ];
        // Order 1 (two hours before: 1/4) has A twice; order 2 at as_of.
        let lines = [
            ("o1", "A", 8 * HOUR),
            ("o1", "B", 8 * HOUR),
            ("o1", "A", 8 * HOUR),
            ("o2", "A", 10 * HOUR),
            ("o2", "C", 10 * HOUR),
        ];
        let out = rows(&views, &lines, &opts);
        let cosine = |c: f64, ci: f64, cj: f64| c / (ci * cj).sqrt() * c / (c + 1.0);

        // Viewed together: sessions count once per product; n = 1.5 sessions.
        let (tg, pc, rc, total, score, _) = out[&key("A", "B", VIEWED_TOGETHER)];
        assert!(close(tg, 0.5) && close(pc, 0.5) && close(rc, 1.5) && close(total, 1.5));
        assert!(close(score, cosine(0.5, 0.5, 1.5)));
        let (tg, pc, rc, ..) = out[&key("B", "C", VIEWED_TOGETHER)];
        assert!(
            close(tg, 1.5) && close(pc, 1.5) && close(rc, 1.5),
            "{tg} {pc} {rc}"
        );
        assert_eq!(
            out[&key("C", "B", VIEWED_TOGETHER)].0,
            out[&key("B", "C", VIEWED_TOGETHER)].0
        );
        // B's strongest neighbour is C (together in both sessions), then A.
        assert_eq!(out[&key("B", "C", VIEWED_TOGETHER)].5, 1);
        assert_eq!(out[&key("B", "A", VIEWED_TOGETHER)].5, 2);

        // Bought together: A counts once in order 1; n = 1.25 orders.
        let (tg, pc, rc, total, score, _) = out[&key("A", "B", BOUGHT_TOGETHER)];
        assert!(close(tg, 0.25) && close(pc, 1.25) && close(rc, 0.25) && close(total, 1.25));
        assert!(close(score, cosine(0.25, 1.25, 0.25)));
        assert!(close(out[&key("A", "C", BOUGHT_TOGETHER)].0, 1.0));
        assert!(!out.contains_key(&key("B", "C", BOUGHT_TOGETHER)));
        assert!(!out.contains_key(&key("A", "A", BOUGHT_TOGETHER)));
        assert_eq!(out.len(), 6 + 4);
    }

    #[test]
    fn pairs_stay_within_the_session_window_and_the_order_pair_limit() {
        let opts = AffinityOptions {
            session_window: 1,
            order_pair_limit: 2,
            neighbours: 1,
            ..engine_defaults()
        };
        let t = 10 * HOUR;
        // At the same time, the session meets them in id order.
        let views = [("s", "Z", t), ("s", "X", t), ("s", "Y", t)];
        let lines = [("o", "P", t), ("o", "Q", t), ("o", "R", t)];
        let out = rows(&views, &lines, &opts);
        // X–Z are two products apart; R is beyond the pair limit. One neighbour each (Y has two
        // candidates of equal score: the smaller id wins).
        let pairs: Vec<_> = out
            .keys()
            .map(|(p, r, rel)| format!("{p}{r} {rel}"))
            .collect();
        assert_eq!(
            pairs,
            [
                "PQ bought_together",
                "QP bought_together",
                "XY viewed_together",
                "YX viewed_together",
                "ZY viewed_together",
            ]
        );
    }
}
