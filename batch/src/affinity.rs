//! The `product_affinity` table: per product, the products most often viewed in the same session
//! and bought in the same order over the lake's whole history. Analysts read it ("what sells with
//! this?"), and the streaming stage seeds its live recommendations from it on a cold start, so that
//! item-to-item starts from all of history rather than from the few days it replays.
//!
//! ```text
//! events (Delta) ─DataFusion: scan, filter, project─► product views (session, product, time)
//!                                                     order lines (order, product, position, time)
//!   ─DataFusion: first view of each product per session, pairs within the session window, pairs
//!               within each order, decayed sums, cosine, strongest N per product─►
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
//! The job is a handful of SQL statements, run by the DataFusion that reads the lake: each
//! product's first appearance per session or order is computed once and held in memory (a
//! `MemTable`, [`DataFrame::cache`]), then self-joined per session or order, summed, scored and
//! ranked with `row_number()`. (It ran in polars until issue 23: the hand-over copied every view
//! as strings into a second Arrow implementation, and polars cost the build 10 minutes of two
//! cores and the binary tens of MB; BENCHMARKS.md has the figures.)

use std::collections::HashSet;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;
use shoplake_events::EventName;
use shoplake_events::fields::{AS_OF, COMPUTED_AT, HALF_LIFE_HOURS, PRODUCT_ID};
use shoplake_events::lake::{EVENTS_TABLE, PRODUCT_AFFINITY_TABLE};

use crate::tables::PRODUCT_AFFINITY as TABLE;
use crate::write::{WriteOptions, conform, table_or_empty, writer_commit};
use crate::{Error, Lake, Result};

/// Relation of a row: products viewed in the same session.
pub const VIEWED_TOGETHER: &str = "viewed_together";
/// Relation of a row: products bought in the same order.
pub const BOUGHT_TOGETHER: &str = "bought_together";

/// The job's input views, registered in its session: `affinity_views` (key = session, product,
/// t) and `affinity_lines` (key = order event, product, line = the line's place in the order,
/// t); times are µs.
const VIEWS: &str = "affinity_views";
const LINES: &str = "affinity_lines";

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
    /// Seconds reading the lake (down to each product's first view per session and first line
    /// per order), pairing and scoring, and writing the table.
    pub read_secs: f64,
    pub compute_secs: f64,
    pub write_secs: f64,
}

/// The job's query returned what the job cannot use: a bug, not bad data.
fn unexpected(problem: &'static str) -> Error {
    Error::UnexpectedResult {
        table: PRODUCT_AFFINITY_TABLE,
        problem,
    }
}

fn query_err(source: datafusion::error::DataFusionError) -> Error {
    Error::query(PRODUCT_AFFINITY_TABLE, source)
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
    let ctx = SessionContext::new();
    let Some(as_of) = register_input(&ctx, lake, opts.until).await? else {
        return Ok((AffinityReport::default(), Vec::new()));
    };
    let (mut report, batches) = compute(&ctx, as_of, opts).await?;

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
        .write(batches.clone())
        .with_save_mode(SaveMode::Overwrite)
        .with_writer_properties(write.writer_properties(&TABLE)?)
        .with_target_file_size(write.target_file_size())
        .with_commit_properties(commit)
        .await
        .map_err(|e| Error::delta(PRODUCT_AFFINITY_TABLE, e))?;
    report.version = table.version();
    report.write_secs = started.elapsed().as_secs_f64();
    Ok((report, batches))
}

/// Registers the product views and order lines up to `until` (or the lake's latest event) as
/// [`VIEWS`] and [`LINES`]; returns the time counted up to, None when the lake has no events.
async fn register_input(
    ctx: &SessionContext,
    lake: &Lake,
    until: Option<i64>,
) -> Result<Option<i64>> {
    let Some(events) = lake.scan(ctx, EVENTS_TABLE).await? else {
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
        .map_err(query_err)?;
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
    // Each line with its place in the order (1 = first): an order pairs its first products.
    let lines = format!(
        "SELECT key, products[line]['product_id'] AS product, line, t FROM ( \
           SELECT event_id AS key, CAST(event_time AS BIGINT) AS t, products, \
                  unnest(range(1, CAST(cardinality(products) AS BIGINT) + 1)) AS line \
           FROM {EVENTS_TABLE} WHERE event_name = '{}' AND {humans}) \
         WHERE products[line]['product_id'] IS NOT NULL",
        EventName::OrderCompleted.as_str()
    );
    for (name, sql) in [(VIEWS, views), (LINES, lines)] {
        let frame = ctx.sql(&sql).await.map_err(query_err)?;
        ctx.register_table(name, frame.into_view())
            .map_err(query_err)?;
    }
    Ok(Some(as_of))
}

/// Runs `sql` and holds its result in memory (it is read more than once).
async fn cached(ctx: &SessionContext, sql: &str) -> Result<DataFrame> {
    ctx.sql(sql)
        .await
        .map_err(query_err)?
        .cache()
        .await
        .map_err(query_err)
}

/// The single row of a (sum of counts, count, sum of weights) query; a sum over no rows is 0.
async fn counts_and_total(frame: DataFrame) -> Result<(u64, u64, f64)> {
    let batches = frame.collect().await.map_err(query_err)?;
    let batch = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| unexpected("no row for a count"))?;
    let int = |i: usize| -> Result<u64> {
        let c = arrow::compute::cast(batch.column(i), &DataType::Int64)?;
        let c = c
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| unexpected("a count of an unexpected type"))?;
        Ok(if c.is_null(0) {
            0
        } else {
            u64::try_from(c.value(0)).unwrap_or_default()
        })
    };
    let total = arrow::compute::cast(batch.column(2), &DataType::Float64)?;
    let total = total.as_primitive::<arrow::datatypes::Float64Type>();
    let total = if total.is_null(0) {
        0.0
    } else {
        total.value(0)
    };
    Ok((int(0)?, int(1)?, total))
}

/// The job proper, over [`VIEWS`] and [`LINES`] registered in `ctx`: the report (without the
/// write's figures) and the output rows in the table's schema, sorted by product, relation, rank.
async fn compute(
    ctx: &SessionContext,
    as_of: i64,
    opts: &AffinityOptions,
) -> Result<(AffinityReport, Vec<RecordBatch>)> {
    let mut report = AffinityReport {
        as_of: Some(as_of),
        ..AffinityReport::default()
    };
    let started = Instant::now();
    // Numbers go into the SQL by Display, which never writes an exponent and round-trips.
    let half_life_micros = opts.half_life_hours * 3_600.0 * 1e6;
    let weight = |t: &str| {
        format!(
            "power(CAST(2 AS DOUBLE), (CAST({t} AS DOUBLE) - CAST({as_of} AS DOUBLE)) \
             / CAST({half_life_micros} AS DOUBLE))"
        )
    };

    // Each product once per session (its first view) and once per order (its first line), with
    // its place in the session or order (1 = first, by the first `order` then product id; signed,
    // as places are subtracted) and its weight; `n` is how many input rows it stands for.
    let firsts = |input: &str, order: &str| {
        format!(
            "SELECT key, product, t, n, {w} AS w, \
                    CAST(row_number() OVER (PARTITION BY key ORDER BY first, product) \
                         AS BIGINT) AS pos \
             FROM (SELECT key, product, min(t) AS t, min({order}) AS first, count(*) AS n \
                   FROM {input} GROUP BY key, product)",
            w = weight("t"),
        )
    };
    let views = cached(ctx, &firsts(VIEWS, "t")).await?;
    let lines = cached(ctx, &firsts(LINES, "line")).await?;
    ctx.register_table("affinity_view_firsts", views.into_view())
        .map_err(query_err)?;
    ctx.register_table("affinity_line_firsts", lines.into_view())
        .map_err(query_err)?;
    report.read_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    // Input rows, and keys (sessions, orders) with their decayed total: a key weighs as at its
    // first product.
    let mut totals = [0.0; 2];
    for (i, (firsts, rows, keys)) in [
        (
            "affinity_view_firsts",
            &mut report.views,
            &mut report.sessions,
        ),
        (
            "affinity_line_firsts",
            &mut report.order_lines,
            &mut report.orders,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let sql = format!(
            "SELECT (SELECT sum(n) FROM {firsts}), count(*), sum({w}) \
             FROM (SELECT key, min(t) AS t FROM {firsts} GROUP BY key)",
            w = weight("t")
        );
        let row = ctx.sql(&sql).await.map_err(query_err)?;
        (*rows, *keys, totals[i]) = counts_and_total(row).await?;
    }
    // Pairs, both directions: within the session window at the weight of the later view; within
    // the order's first products at the order's weight.
    let viewed = format!(
        "SELECT a.product, b.product AS related, CASE WHEN a.pos > b.pos THEN a.w ELSE b.w END AS w \
         FROM affinity_view_firsts a JOIN affinity_view_firsts b ON a.key = b.key \
         WHERE a.pos <> b.pos AND a.pos - b.pos <= {window} AND b.pos - a.pos <= {window}",
        window = opts.session_window
    );
    let bought = format!(
        "SELECT a.product, b.product AS related, a.w \
         FROM affinity_line_firsts a JOIN affinity_line_firsts b ON a.key = b.key \
         WHERE a.pos <> b.pos AND a.pos <= {limit} AND b.pos <= {limit}",
        limit = opts.order_pair_limit.max(2)
    );
    let scored = |pairs: &str, relation: &str, total: f64| {
        format!(
            "SELECT * FROM ( \
               SELECT product AS {PRODUCT_ID}, related AS related_product_id, \
                      '{relation}' AS relation, together, product_count, related_count, \
                      relation_total, score, \
                      CAST(row_number() OVER (PARTITION BY product ORDER BY score DESC, related) \
                           AS INT) AS rank \
               FROM (SELECT p.product, p.related, p.together, \
                            c.count AS product_count, r.count AS related_count, \
                            CAST({total} AS DOUBLE) AS relation_total, \
                            p.together / sqrt(c.count * r.count) \
                              * (p.together / (p.together + CAST({shrinkage} AS DOUBLE))) AS score \
                     FROM (SELECT product, related, sum(w) AS together FROM ({pairs}) \
                           GROUP BY product, related) p \
                     JOIN counts_{relation} c ON c.product = p.product \
                     JOIN counts_{relation} r ON r.product = p.related)) \
             WHERE rank <= {neighbours}",
            shrinkage = opts.shrinkage,
            neighbours = opts.neighbours.max(1),
        )
    };
    for (firsts, relation) in [
        ("affinity_view_firsts", VIEWED_TOGETHER),
        ("affinity_line_firsts", BOUGHT_TOGETHER),
    ] {
        let counts = ctx
            .sql(&format!(
                "SELECT product, sum(w) AS count FROM {firsts} GROUP BY product"
            ))
            .await
            .map_err(query_err)?;
        ctx.register_table(format!("counts_{relation}").as_str(), counts.into_view())
            .map_err(query_err)?;
    }
    let sql = format!(
        "SELECT *, to_timestamp_micros({as_of}) AS {AS_OF}, \
                CAST({half_life} AS DOUBLE) AS {HALF_LIFE_HOURS}, \
                to_timestamp_micros({now}) AS {COMPUTED_AT} \
         FROM ({} UNION ALL {}) ORDER BY {PRODUCT_ID}, relation, rank",
        scored(&viewed, VIEWED_TOGETHER, totals[0]),
        scored(&bought, BOUGHT_TOGETHER, totals[1]),
        half_life = opts.half_life_hours,
        now = chrono::Utc::now().timestamp_micros(),
    );
    let batches = ctx
        .sql(&sql)
        .await
        .map_err(query_err)?
        .collect()
        .await
        .map_err(query_err)?;
    let batches = conform(batches, &TABLE)?;
    report.rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    let products: HashSet<&str> = batches
        .iter()
        .flat_map(|b| b.column(0).as_string::<i32>().iter().flatten())
        .collect();
    report.products = products.len() as u64;
    report.compute_secs = started.elapsed().as_secs_f64();
    Ok((report, batches))
}

/// Every row of `product_affinity`, in the table's schema; None when the job never ran.
pub async fn read_table(lake: &Lake) -> Result<Option<Vec<RecordBatch>>> {
    let ctx = SessionContext::new();
    let Some(table) = lake.scan(&ctx, PRODUCT_AFFINITY_TABLE).await? else {
        return Ok(None);
    };
    let batches = table.collect().await.map_err(query_err)?;
    Ok(Some(conform(batches, &TABLE)?))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::ArrayRef;

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

    /// A (key, product, t) table; with `line`, also each row's place (1 = first row).
    fn table(rows: &[(&str, &str, i64)], line: bool) -> Arc<datafusion::datasource::MemTable> {
        use arrow::array::{Int64Array, StringArray};
        let mut columns: Vec<(&str, ArrayRef)> = vec![
            (
                "key",
                Arc::new(rows.iter().map(|r| Some(r.0)).collect::<StringArray>()),
            ),
            (
                "product",
                Arc::new(rows.iter().map(|r| Some(r.1)).collect::<StringArray>()),
            ),
        ];
        if line {
            columns.push((
                "line",
                Arc::new(Int64Array::from_iter_values(1..=rows.len() as i64)),
            ));
        }
        columns.push((
            "t",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ));
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        Arc::new(
            datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap(),
        )
    }

    /// (product, related, relation)
    type Key = (String, String, String);
    /// (together, product_count, related_count, relation_total, score, rank)
    type Row = (f64, f64, f64, f64, f64, i32);

    async fn rows(
        views: &[(&str, &str, i64)],
        lines: &[(&str, &str, i64)],
        opts: &AffinityOptions,
    ) -> std::collections::BTreeMap<Key, Row> {
        let ctx = SessionContext::new();
        ctx.register_table(VIEWS, table(views, false)).unwrap();
        ctx.register_table(LINES, table(lines, true)).unwrap();
        let (report, batches) = compute(&ctx, 10 * HOUR, opts).await.unwrap();
        assert_eq!(report.views, views.len() as u64);
        assert_eq!(report.order_lines, lines.len() as u64);
        let mut out = std::collections::BTreeMap::new();
        for batch in batches {
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
            for i in 0..batch.num_rows() {
                out.insert(
                    (p.value(i).into(), r.value(i).into(), rel.value(i).into()),
                    (
                        tg.value(i),
                        pc.value(i),
                        rc.value(i),
                        tot.value(i),
                        sc.value(i),
                        rank.value(i),
                    ),
                );
            }
        }
        out
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    fn key(p: &str, r: &str, rel: &str) -> (String, String, String) {
        (p.into(), r.into(), rel.into())
    }

    /// A lake whose sessions each viewed one product (a crash left it small) gives no pairs:
    /// an empty table, not a panic (found by scripts/chaos in a warm start).
    #[tokio::test]
    async fn a_lake_without_a_pair_gives_no_rows() {
        let views = [("s1", "A", 9 * HOUR), ("s2", "B", 9 * HOUR)];
        assert!(rows(&views, &[], &engine_defaults()).await.is_empty());
    }

    #[tokio::test]
    async fn counts_decay_normalise_and_rank_as_the_engine_does() {
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
        let out = rows(&views, &lines, &opts).await;
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

    #[tokio::test]
    async fn pairs_stay_within_the_session_window_and_the_order_pair_limit() {
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
        let out = rows(&views, &lines, &opts).await;
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
