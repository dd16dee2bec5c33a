//! Warm start: the live engines attached to a stage, loaded from the stage's saved state, or
//! rebuilt from the lake when there is none (a new disk, a new worker). This is the one place
//! where the live state reads the lake (`shoplake-batch`): the item-to-item history of
//! `product_affinity` and the last hours of `events`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use shoplake_batch::CompactOptions;
use shoplake_batch::affinity::{self, AffinityOptions};
use shoplake_transform::Stage;
use tracing::{info, warn};

use crate::recs::{Affinity, RecsConfig};
use crate::{Error, Live, Result};

/// Attaches `live` to `stage`. When nothing was saved (a new stage state, or one from before the
/// live engines existed) and the lake has events, the recommendations are first seeded with the
/// lake's whole item-to-item history (`product_affinity`, rebuilt first when it does not reach the
/// replayed window), then both engines are fed the last `rebuild_window` of events, so that fraud
/// windows and recommendations do not start empty.
pub async fn attach(
    stage: Stage,
    live: &Arc<Live>,
    lake: &shoplake_batch::Lake,
    rebuild_window: Duration,
    write: &CompactOptions,
) -> Result<Stage> {
    if !live.is_enabled() {
        return Ok(stage);
    }
    let (stage, loaded) = stage.with_observer(live.clone())?;
    if loaded > 0 {
        info!(entities = loaded, "live state loaded");
        return Ok(stage);
    }
    let window = i64::try_from(rebuild_window.as_micros()).unwrap_or(i64::MAX);
    if let Err(e) = seed(live, lake, window, write).await {
        // The replay below still gives the engines the recent days.
        warn!(error = %e, "live recommendations could not be seeded from product_affinity");
    }
    let mut stage = stage;
    rebuild(&mut stage, live, lake, window).await?;
    Ok(stage)
}

/// The `product_affinity` job's options for counting as the engine configured by `recs` does.
pub fn affinity_options(recs: &RecsConfig) -> AffinityOptions {
    AffinityOptions {
        half_life_hours: recs.half_life_hours(),
        session_window: recs.session_window,
        order_pair_limit: recs.order_pair_limit,
        neighbours: 2 * recs.neighbours,
        shrinkage: recs.shrinkage,
        until: None,
    }
}

/// Seeds the recommendations from `product_affinity`, rebuilding it first when it is missing or
/// ends before the replayed window (`window_micros` before the lake's latest event) begins.
async fn seed(
    live: &Live,
    lake: &shoplake_batch::Lake,
    window_micros: i64,
    write: &CompactOptions,
) -> Result<usize> {
    let Some(config) = live.recs_config() else {
        return Ok(0);
    };
    let Some(latest) = shoplake_batch::history::latest(lake).await? else {
        return Ok(0);
    };
    let mut table = Affinity::from_batches(&affinity::read_table(lake).await?.unwrap_or_default())?;
    if table
        .as_ref()
        .is_none_or(|a| a.as_of < latest.saturating_sub(window_micros))
    {
        let options = AffinityOptions {
            until: Some(latest),
            ..affinity_options(config)
        };
        let (report, rows) = affinity::rebuild_rows(lake, &options, &write.write_options()).await?;
        info!(
            rows = report.rows,
            products = report.products,
            sessions = report.sessions,
            orders = report.orders,
            secs = report.read_secs + report.compute_secs + report.write_secs,
            "product_affinity rebuilt from the lake's history"
        );
        table = Affinity::from_batches(&rows)?;
    }
    let Some(table) = table else {
        return Ok(0);
    };
    if (table.half_life_hours - config.half_life_hours()).abs() > 1e-9 {
        warn!(
            table = table.half_life_hours,
            engine = config.half_life_hours(),
            "product_affinity was decayed with another half-life than the engine's; loaded as it is"
        );
    }
    let pairs = live.seed_affinity(&table);
    info!(
        pairs,
        as_of = %chrono::DateTime::from_timestamp_micros(table.as_of).unwrap_or_default(),
        "live recommendations seeded from product_affinity"
    );
    Ok(pairs)
}

/// Feeds the stage's live engines the lake's last `window` microseconds of events (oldest
/// first), which also join its de-duplication window; returns how many.
async fn rebuild(
    stage: &mut Stage,
    live: &Live,
    lake: &shoplake_batch::Lake,
    window: i64,
) -> Result<usize> {
    if window == 0 {
        return Ok(0);
    }
    let Some(mut stream) = shoplake_batch::history::recent_events(lake, window).await? else {
        return Ok(0);
    };
    let started = std::time::Instant::now();
    let (mut fed, mut refused) = (0, 0);
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|source| Error::History {
            source: Box::new(source),
        })?;
        let (f, r) = tokio::task::block_in_place(|| stage.seed_from_lake(&batch))?;
        fed += f;
        refused += r;
    }
    if refused > 0 {
        warn!(
            rows = refused,
            "events of the lake no longer pass the contract; the live state was rebuilt without them"
        );
    }
    info!(
        events = fed,
        window_hours = window as f64 / 3.6e9,
        entities = live.entities(),
        secs = started.elapsed().as_secs_f64(),
        "live state rebuilt from the lake"
    );
    Ok(fed)
}
