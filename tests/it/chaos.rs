//! The fault campaign (issue 20, item 4; RELIABILITY.md): trials of a seeded workload, each
//! crashing the stage, compaction and optimize again and again — at the named fault points
//! (`shoplake_server::faults`: a staging flush before its checkpoint, a state commit, a lease
//! write, a lake commit before its staging files are deleted, between those deletes, after an
//! optimize commit), proven by the line the process prints as it dies there, or by a SIGKILL at
//! a random moment — then recovering as an operator would (the same commands, run again) and
//! checking the lake: every valid event exactly once, every bad input a bad row with its reason,
//! one fraud decision per order event, `orders` and `visits` equal to a derivation from all
//! events at once.
//!
//! Two backends: the embedded default (the log in the data folder, a local lake), and Kinesis
//! (kinesalite) with the lake on S3 (moto). `SHOPLAKE_CHAOS_TRIALS` trials each (1 in the
//! test suite; `scripts/chaos` runs 20), seeded by `SHOPLAKE_CHAOS_SEED`; each prints a table
//! of the faults hit and the events checked, lost and doubled.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::e2e::{ok, shoplake};
use crate::kinesis::{S3Lake, create_stream, kinesalite, on_kinesis};

/// Small batches and rounds: many flushes, commits and lease writes for the faults to land in;
/// leases of 2 s (10 s by default), so that a worker that took over a crashed one's shards
/// waits less for them to expire.
const CONFIG: &str = "[stage]\nmax_batch_records = 400\nread_batch = 200\n\
                      [compaction]\nmax_bytes = 120000\n\
                      [stream.leases]\nttl = \"2s\"\n";

/// splitmix64: the campaign's choices, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Where a trial's stream and lake live.
enum Backend {
    Embedded,
    /// A Kinesis stream of the emulator at `endpoint`, the lake on S3 (moto).
    Kinesis {
        endpoint: String,
        stream: String,
        lake: S3Lake,
    },
}

impl Backend {
    /// `shoplake ARGS` on this backend, with the campaign's config.
    fn command(&self, data: &Path, args: &[&str]) -> Command {
        let mut cmd = match self {
            Backend::Embedded => shoplake(data, args),
            Backend::Kinesis {
                endpoint,
                stream,
                lake,
            } => {
                let mut cmd = on_kinesis(data, endpoint, stream, args);
                lake.on(&mut cmd);
                cmd
            }
        };
        cmd.env("SHOPLAKE_CONFIG", data.join("pipeline.toml"));
        cmd
    }

    fn points(&self, component: &str) -> &'static [&'static str] {
        match (component, self) {
            ("stream", Backend::Embedded) => &["stage.staged", "stage.checkpoint"],
            ("stream", Backend::Kinesis { .. }) => {
                &["stage.staged", "stage.checkpoint", "lease.renew"]
            }
            ("compact", _) => &["compact.committed", "compact.staging.delete"],
            _ => &["optimize.committed"],
        }
    }
}

/// How a step ended.
enum Outcome {
    /// Died at the fault point it was armed with.
    Hit(&'static str),
    /// Killed with SIGKILL while running.
    Killed,
    /// Ended on its own, before its fault came.
    Finished,
}

/// Runs `cmd` with one fault: a point armed after `skip` passes, or a SIGKILL after `kill_after`.
fn step(mut cmd: Command, point: Option<(&'static str, u64)>, kill_after: Duration) -> Outcome {
    let log = tempfile::NamedTempFile::new().unwrap();
    if let Some((name, skip)) = point {
        cmd.env("FAILPOINTS", format!("{name}={skip}*off->return"));
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::from(log.reopen().unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now()
        + if point.is_some() {
            Duration::from_secs(300)
        } else {
            kill_after
        };
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stderr = || std::fs::read_to_string(log.path()).unwrap_or_default();
    match (status, point) {
        (None, None) => {
            let _ = child.kill();
            let _ = child.wait();
            Outcome::Killed
        }
        (None, Some((name, _))) => {
            let _ = child.kill();
            panic!("{name}: the command hung for 300 s; stderr:\n{}", stderr())
        }
        (Some(status), point) => {
            let err = stderr();
            if let Some((name, _)) = point
                && err.contains(&format!("shoplake fault: killed at {name}"))
            {
                assert!(!status.success(), "{name}: the process did not die");
                return Outcome::Hit(name);
            }
            assert!(
                status.success(),
                "a command failed without a fault ({status}); stderr:\n{err}"
            );
            Outcome::Finished
        }
    }
}

/// What the campaign saw on one backend.
#[derive(Default)]
struct Tally {
    trials: u64,
    steps: u64,
    /// Faults by kind: a point's name, or `sigkill`.
    hit: BTreeMap<&'static str, u64>,
    finished: u64,
    events: u64,
    lost: u64,
    doubled: u64,
    bad_rows_off: u64,
    decisions_off: u64,
    derived_off: u64,
}

impl Tally {
    fn print(&self, backend: &str) {
        eprintln!(
            "\nchaos on {backend}: {} trials, {} crashing steps ({} ended before their fault)",
            self.trials, self.steps, self.finished
        );
        eprintln!("| fault | hits |\n|---|---|");
        for (kind, n) in &self.hit {
            eprintln!("| {kind} | {n} |");
        }
        eprintln!(
            "| events checked | lost | doubled | bad rows off | decisions off | derived rows off |\n\
             |---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} |",
            self.events,
            self.lost,
            self.doubled,
            self.bad_rows_off,
            self.decisions_off,
            self.derived_off
        );
    }
}

/// One row of a query's answer on `backend`.
fn row(backend: &Backend, data: &Path, query: &str) -> Vec<Value> {
    let out = ok(backend
        .command(data, &["sql", query, "--format", "json"])
        .output()
        .unwrap());
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Compares the lake of `data` with the simulator's `stats`, adding what is off to `tally`.
fn check(backend: &Backend, data: &Path, stats: &Value, tally: &mut Tally) {
    let visits = include_str!("../../sql/batch/visits.sql");
    let got = &row(
        backend,
        data,
        &format!(
            "select \
               (select count(*) from events) as events, \
               (select count(distinct event_id) from events) as distinct_events, \
               (select count(*) from fraud_decisions) as decisions, \
               (select count(*) from fraud_decisions d join events e using (event_id) \
                 where e.event_name = 'order_completed') as decided, \
               (select count(*) from events where event_name = 'order_completed') as order_events, \
               (select count(*) from orders) as orders, \
               (select count(distinct order_id) from events \
                 where event_name = 'order_completed') as distinct_orders, \
               (select count(*) from ((select * from visits except select * from ({visits})) \
                 union all (select * from ({visits}) except select * from visits))) as visits_off"
        ),
    )[0];
    let n = |k: &str| got[k].as_u64().unwrap_or_else(|| panic!("{k} in {got}"));
    let valid = stats["valid_unique"].as_u64().unwrap();
    tally.events += valid;
    tally.lost += valid.saturating_sub(n("distinct_events"));
    tally.doubled += n("events") - n("distinct_events");
    tally.decisions_off +=
        n("decisions").abs_diff(n("order_events")) + n("decided").abs_diff(n("order_events"));
    tally.derived_off += n("orders").abs_diff(n("distinct_orders")) + n("visits_off");
    let by_reason = row(
        backend,
        data,
        "select reason, count(*) as n from bad_rows group by reason",
    );
    let mut bad: BTreeMap<String, u64> = by_reason
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap().to_owned(),
                r["n"].as_u64().unwrap(),
            )
        })
        .collect();
    for (reason, expected) in stats["bad_by_reason"].as_object().unwrap() {
        let got = bad.remove(reason).unwrap_or(0);
        tally.bad_rows_off += got.abs_diff(expected.as_u64().unwrap());
    }
    tally.bad_rows_off += bad.values().sum::<u64>();
}

/// The number of trials, and the campaign's seed.
fn settings() -> (u64, u64) {
    let var = |name, default| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        var("SHOPLAKE_CHAOS_TRIALS", 1),
        var("SHOPLAKE_CHAOS_SEED", 20_261_206),
    )
}

/// Runs the campaign's trials on backends made by `backend` (one per trial), and checks that
/// nothing was lost or doubled.
fn campaign(name: &str, mut backend: impl FnMut(u64) -> Option<Backend>) {
    let (trials, seed) = settings();
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    for trial in 0..trials {
        let Some(backend) = backend(trial) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        std::fs::write(data.join("pipeline.toml"), CONFIG).unwrap();
        let sim_seed = (seed + trial).to_string();
        let out = ok(backend
            .command(
                data,
                &[
                    "emit",
                    "--seed",
                    &sim_seed,
                    "--sessions",
                    "700",
                    "--start",
                    "2026-03-01T00:00:00Z",
                    "--stats-json",
                ],
            )
            .output()
            .unwrap());
        let stats: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        let mut steps = Vec::new();
        for _ in 0..6 {
            let component = *rng.pick(&["stream", "stream", "compact", "compact", "optimize"]);
            let args: &[&str] = match component {
                "stream" => &["stream", "--drain"],
                "compact" => &["batch", "compact"],
                _ => &["batch", "optimize"],
            };
            let point =
                (rng.below(5) < 3).then(|| (*rng.pick(backend.points(component)), rng.below(3)));
            let kill_after = Duration::from_millis(100 + rng.below(1500));
            tally.steps += 1;
            let outcome = match step(backend.command(data, args), point, kill_after) {
                Outcome::Hit(name) => {
                    *tally.hit.entry(name).or_default() += 1;
                    format!("died at {name}")
                }
                Outcome::Killed => {
                    *tally.hit.entry("sigkill").or_default() += 1;
                    format!("SIGKILL after {kill_after:?}")
                }
                Outcome::Finished => {
                    tally.finished += 1;
                    "ended before its fault".to_owned()
                }
            };
            steps.push(format!("{component} {point:?}: {outcome}"));
        }
        // Recovery, as an operator would: the same commands, run again to the end.
        let out = backend
            .command(data, &["stream", "--drain"])
            .env("SHOPLAKE_LOG", "info")
            .output()
            .unwrap();
        let drain_log = String::from_utf8_lossy(&out.stderr).into_owned();
        let drained = ok(out);
        let compacted = ok(backend
            .command(data, &["batch", "compact"])
            .output()
            .unwrap());
        let off = tally.lost + tally.doubled + tally.bad_rows_off;
        check(&backend, data, &stats, &mut tally);
        if tally.lost + tally.doubled + tally.bad_rows_off != off {
            eprintln!(
                "trial {trial} (simulator seed {sim_seed}) is off; its steps:\n  {}\n\
                 recovery drain: {drained}recovery compaction: {compacted}\n\
                 recovery drain's log:\n{drain_log}",
                steps.join("\n  "),
            );
        }
        tally.trials += 1;
        eprintln!(
            "{name}: trial {trial} done: {} events checked so far, {} lost, {} doubled",
            tally.events, tally.lost, tally.doubled
        );
    }
    tally.print(name);
    assert!(
        tally.lost + tally.doubled + tally.bad_rows_off + tally.decisions_off + tally.derived_off
            == 0,
        "the lake is not exact after the faults on {name} (table above)"
    );
    assert!(!tally.hit.is_empty(), "no fault landed on {name}");
}

#[test]
fn chaos_on_the_embedded_default_loses_and_doubles_nothing() {
    campaign("the embedded default", |_| Some(Backend::Embedded));
}

#[test]
fn chaos_on_kinesis_and_s3_loses_and_doubles_nothing() {
    let Some(endpoint) = kinesalite() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    campaign("Kinesis and S3", |trial| {
        let name = format!("chaos-{}-{trial}", std::process::id());
        runtime.block_on(create_stream(&endpoint, &name, 2));
        let lake = S3Lake::create(&runtime, &name)?;
        Some(Backend::Kinesis {
            endpoint: endpoint.clone(),
            stream: name,
            lake,
        })
    });
}
