//! Wiring of the stage's live engines (fraud scoring, recommendations): made from the config,
//! loaded from the stage's saved state, or rebuilt from the lake when there is none.

use std::sync::Arc;

use anyhow::Context;
use futures::StreamExt;
use shoplake_transform::{Live, Stage};
use tracing::{info, warn};

/// Attaches `live` to `stage`. When nothing was saved (a new stage state, or one from before the
/// live engines existed) and the lake has events, the engines are first fed the last
/// `stage.live_rebuild_hours` of them, so that fraud windows and recommendations do not start
/// empty.
pub async fn attach(
    stage: Stage,
    live: &Arc<Live>,
    lake: &shoplake_batch::Lake,
    rebuild_hours: u64,
) -> anyhow::Result<Stage> {
    let (stage, loaded) = stage.with_live(live.clone())?;
    if !live.is_enabled() {
        return Ok(stage);
    }
    if loaded > 0 {
        info!(entities = loaded, "live state loaded");
        return Ok(stage);
    }
    let mut stage = stage;
    rebuild(&mut stage, live, lake, rebuild_hours).await?;
    Ok(stage)
}

/// Feeds the stage's live engines the lake's last `hours` of events (oldest first), which also
/// join its de-duplication window; returns how many.
async fn rebuild(
    stage: &mut Stage,
    live: &Live,
    lake: &shoplake_batch::Lake,
    hours: u64,
) -> anyhow::Result<usize> {
    if hours == 0 {
        return Ok(0);
    }
    let window = (hours as i64).saturating_mul(3_600_000_000);
    let Some(mut stream) = shoplake_batch::replay::recent_events(lake, window).await? else {
        return Ok(0);
    };
    let started = std::time::Instant::now();
    let (mut fed, mut refused) = (0, 0);
    while let Some(batch) = stream.next().await {
        let batch = batch.context("reading the lake's events to rebuild the live state")?;
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
        hours,
        entities = live.entities(),
        secs = started.elapsed().as_secs_f64(),
        "live state rebuilt from the lake"
    );
    Ok(fed)
}
