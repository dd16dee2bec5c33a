//! The seeded lake every test here reads: built once per test binary, the way the binary builds it
//! (simulator → embedded stream → stage → compaction), so the golden results are the pipeline's.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use shoplake_batch::{CompactOptions, Lake, compact_all};
use shoplake_events::Event;
use shoplake_ingest::{LocalLog, Record, StreamProducer};
use shoplake_simulator::{RecordKind, SimConfig, SimStats, Simulator};
use shoplake_transform::{Stage, StageConfig};

/// The seed and size of the golden dataset. Changing them changes every `.slt` result: rewrite
/// them with `SHOPLAKE_SLT_COMPLETE=1 cargo test --workspace --test it golden`.
pub const SEED: u64 = 20260301;
pub const SESSIONS: u64 = 400;

pub struct Fixture {
    pub lake_root: String,
    pub stats: SimStats,
    /// Every identity link the simulator emitted (valid events only, each once).
    pub links: Vec<Link>,
    _dir: tempfile::TempDir,
}

/// An identity event as the simulator emitted it: it links `anonymous_id` to `user_id`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Link {
    pub anonymous_id: String,
    pub user_id: String,
    pub event_id: String,
}

/// Puts a seeded simulation of `sessions` sessions from 2026-03-01 onto `stream`; returns what it
/// emitted and the identity links among its valid events.
pub async fn simulate(stream: &LocalLog, seed: u64, sessions: u64) -> (SimStats, Vec<Link>) {
    let mut sim = Simulator::new(SimConfig {
        seed,
        start_micros: shoplake_events::parse_timestamp("2026-03-01T00:00:00Z").unwrap(),
        max_sessions: Some(sessions),
        ..SimConfig::default()
    });
    let mut pending = Vec::new();
    let mut links = Vec::new();
    while let Some(r) = sim.next() {
        if let RecordKind::Valid(name) = r.kind
            && name.requires_user_id()
        {
            let e: Event<'_> = serde_json::from_slice(&r.payload).unwrap();
            if let (Some(a), Some(u)) = (e.anonymous_id, e.user_id)
                && *a != *u
            {
                links.push(Link {
                    anonymous_id: a.to_string(),
                    user_id: u.to_string(),
                    event_id: e.event_id.unwrap().to_string(),
                });
            }
        }
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
    links.sort();
    (sim.stats().clone(), links)
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

/// A lake in `dir/lake`, and a stage with its state in `dir/stage.redb` reading `stream` into it.
pub fn lake_and_stage(dir: &Path, stream: Arc<LocalLog>) -> (Lake, Stage) {
    let lake = Lake::open(&dir.join("lake").display().to_string(), Default::default()).unwrap();
    let stage = Stage::open(
        stream,
        lake.store(),
        &dir.join("stage.redb"),
        StageConfig::default(),
    )
    .unwrap();
    (lake, stage)
}

/// A seeded simulation (`seed`, `sessions`) put through an embedded stream in `dir` and drained by
/// a stage with `config` into the staging of the lake `dir/lake`, not yet compacted.
pub async fn staged(
    dir: &Path,
    seed: u64,
    sessions: u64,
    config: StageConfig,
) -> (SimStats, Vec<Link>, Lake) {
    let stream = Arc::new(LocalLog::open(&dir.join("stream.redb"), 4).unwrap());
    let (stats, links) = simulate(&stream, seed, sessions).await;
    let lake = Lake::open(&dir.join("lake").display().to_string(), Default::default()).unwrap();
    let mut stage = Stage::open(stream, lake.store(), &dir.join("stage.redb"), config).unwrap();
    stage.drain().await.unwrap();
    (stats, links, lake)
}

async fn build() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (stats, links, lake) = staged(dir.path(), SEED, SESSIONS, StageConfig::default()).await;
    let lake_root = dir.path().join("lake").display().to_string();
    compact_all(&lake, &CompactOptions::default())
        .await
        .unwrap();
    Fixture {
        lake_root,
        stats,
        links,
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

/// The one number `sql` answers (a count) over the lake at `lake_root`, through the query service.
pub async fn count(lake_root: &Path, sql: &str) -> i64 {
    let service =
        shoplake_query::QueryService::open(&lake_root.display().to_string(), Default::default())
            .await
            .unwrap();
    let result = service.sql(sql).await.unwrap();
    arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(result.batches[0].column(0))
        .value(0)
}
