//! The seeded lake every test here reads: built once per test binary, the way the binary builds it
//! (simulator → embedded stream → stage → compaction), so the golden results are the pipeline's.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use shoplake_batch::{CompactOptions, Lake, compact_all};
use shoplake_ingest::{LocalLog, Record, StreamProducer};
use shoplake_storefront_emitter::simulator::{SimConfig, SimStats, Simulator};
use shoplake_transform::{Stage, StageConfig};

/// The seed and size of the golden dataset. Changing them changes every `.slt` result: rewrite
/// them with `SHOPLAKE_SLT_COMPLETE=1 cargo test -p shoplake-query --test it golden`.
pub const SEED: u64 = 20260301;
pub const SESSIONS: u64 = 400;

pub struct Fixture {
    pub lake_root: String,
    pub stats: SimStats,
    _dir: tempfile::TempDir,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

/// The lake, built on first use.
pub fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        // Built on its own runtime: each test has its own, and this one outlives none of them.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(build())
        })
        .join()
        .unwrap()
    })
}

async fn build() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let stream = Arc::new(LocalLog::open(&dir.path().join("stream.redb"), 4).unwrap());
    let mut sim = Simulator::new(SimConfig {
        seed: SEED,
        start_micros: shoplake_events::parse_timestamp("2026-03-01T00:00:00Z").unwrap(),
        max_sessions: Some(SESSIONS),
        ..SimConfig::default()
    });
    let mut pending = Vec::new();
    while let Some(r) = sim.next() {
        pending.push(Record {
            partition_key: r.partition_key,
            data: r.payload.into(),
        });
        if pending.len() == 500 {
            stream
                .put_records(std::mem::take(&mut pending))
                .await
                .unwrap();
        }
    }
    stream.put_records(pending).await.unwrap();
    let stats = sim.stats().clone();

    let lake_root: PathBuf = dir.path().join("lake");
    let lake_root = lake_root.display().to_string();
    let lake = Lake::open(&lake_root, Default::default()).unwrap();
    let mut stage = Stage::open(
        stream,
        lake.store(),
        &dir.path().join("stage.redb"),
        StageConfig::default(),
    )
    .unwrap();
    stage.drain().await.unwrap();
    compact_all(&lake, &CompactOptions::default())
        .await
        .unwrap();
    Fixture {
        lake_root,
        stats,
        _dir: dir,
    }
}

/// A query service over the fixture's lake.
pub async fn service() -> Arc<shoplake_query::QueryService> {
    let root = fixture().lake_root.clone();
    Arc::new(
        shoplake_query::QueryService::open(&root, Default::default())
            .await
            .unwrap(),
    )
}
