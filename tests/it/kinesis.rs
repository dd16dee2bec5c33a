//! End to end on Kinesis: `shoplake emit --stream kinesis://…` onto kinesalite, `shoplake stream
//! --drain` from it, `batch compact`, and the lake holds every valid event exactly once. The
//! binary finds Kinesis as a user's would: the standard AWS environment (credentials, region,
//! `AWS_ENDPOINT_URL_KINESIS`). Needs the emulators of ./scripts/test.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use shoplake_ingest::{KinesisConfig, KinesisStream, StreamConsumer};

use crate::e2e::{authorize, count, free_port, http_get, ok, shoplake, terminate};

pub(crate) fn kinesalite() -> Option<String> {
    emulator("SHOPLAKE_TEST_KINESALITE")
}

/// The endpoint an emulator of ./scripts/test was started on (`var`).
fn emulator(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("SHOPLAKE_SKIP_EMULATORS").as_deref() == Ok("1") => {
            eprintln!("skipped: {var} is not set and SHOPLAKE_SKIP_EMULATORS=1");
            None
        }
        _ => panic!(
            "{var} is not set: this test needs the AWS emulators that \
             ./scripts/test installs and starts; run ./scripts/test (or set \
             SHOPLAKE_SKIP_EMULATORS=1 to skip it)"
        ),
    }
}

/// `shoplake ARGS` on the Kinesis stream `stream` of the emulator at `endpoint`.
pub(crate) fn on_kinesis(data: &Path, endpoint: &str, stream: &str, args: &[&str]) -> Command {
    let mut cmd = shoplake(data, args);
    aws_env(&mut cmd);
    cmd.env("SHOPLAKE_STREAM", format!("kinesis://{stream}"))
        .env("SHOPLAKE_CONFIG", data.join("pipeline.toml"))
        .env("AWS_ENDPOINT_URL_KINESIS", endpoint);
    cmd
}

/// The standard AWS environment a user would set, with the emulators' any-will-do credentials.
fn aws_env(cmd: &mut Command) {
    cmd.env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL");
}

/// The count a `shoplake sql … --format json` command answers.
/// Rows of a `shoplake sql … --format json` command.
fn sql_rows(mut sql: Command) -> Vec<Value> {
    let out = ok(sql.output().unwrap());
    serde_json::from_str(out.trim()).unwrap()
}

fn count_of(mut sql: Command) -> u64 {
    let rows: Value = serde_json::from_str(ok(sql.output().unwrap()).trim()).unwrap();
    rows[0]
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(Value::as_u64)
        .expect("a count")
}

/// A lake on S3 (moto): `s3://BUCKET/lake` in a bucket of its own.
pub(crate) struct S3Lake {
    pub(crate) endpoint: String,
    pub(crate) url: String,
    /// The bucket, for reading back what the binary wrote.
    bucket: object_store::aws::AmazonS3,
}

impl S3Lake {
    /// Creates the bucket `bucket` on the moto server of ./scripts/test.
    pub(crate) fn create(runtime: &tokio::runtime::Runtime, bucket: &str) -> Option<S3Lake> {
        let endpoint = emulator("SHOPLAKE_TEST_MOTO")?;
        // moto takes an unsigned CreateBucket, as it takes any credentials.
        let status = runtime.block_on(async {
            reqwest::Client::new()
                .put(format!("{endpoint}/{bucket}"))
                .send()
                .await
                .unwrap()
                .status()
        });
        assert!(status.is_success(), "creating bucket {bucket}: {status}");
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap();
        Some(S3Lake {
            url: format!("s3://{bucket}/lake"),
            endpoint,
            bucket: store,
        })
    }

    /// `cmd` on this lake, found as a user's would: `--lake` and `AWS_ENDPOINT_URL_S3`.
    pub(crate) fn on(&self, cmd: &mut Command) {
        aws_env(cmd);
        cmd.env("SHOPLAKE_LAKE", &self.url)
            .env("AWS_ENDPOINT_URL_S3", &self.endpoint);
    }

    /// Keys (from the bucket's root) under the lake that start with `under`.
    fn keys(&self, runtime: &tokio::runtime::Runtime, under: &str) -> Vec<String> {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let prefix = object_store::path::Path::from(format!("lake/{under}"));
        let objects: Vec<_> = runtime
            .block_on(self.bucket.list(Some(&prefix)).try_collect())
            .unwrap();
        objects
            .into_iter()
            .map(|o| o.location.to_string())
            .collect()
    }

    /// The object at `key`; `None` when it is gone.
    fn get(&self, runtime: &tokio::runtime::Runtime, key: &str) -> Option<bytes::Bytes> {
        use object_store::ObjectStoreExt;
        runtime.block_on(async {
            match self.bucket.get(&key.into()).await {
                Ok(object) => Some(object.bytes().await.unwrap()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("reading {key} from S3: {e}"),
            }
        })
    }
}

fn emulator_client(endpoint: &str) -> aws_sdk_kinesis::Client {
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "test", "test", None, None, "emulator",
        ))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

/// Creates the stream `name` of `shards` shards on the emulator at `endpoint`, and waits until it
/// is active.
pub(crate) async fn create_stream(endpoint: &str, name: &str, shards: u32) {
    KinesisStream::with_client(&emulator_client(endpoint), name, KinesisConfig::default())
        .unwrap()
        .create(shards)
        .await
        .unwrap();
}

/// Kinesis records in the stream, as Kinesis stores them (aggregates count once).
async fn raw_records(client: &aws_sdk_kinesis::Client, stream: &str) -> usize {
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    let mut n = 0;
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap();
        loop {
            let out = client
                .get_records()
                .shard_iterator(&iterator)
                .send()
                .await
                .unwrap();
            if out.records.is_empty() {
                break;
            }
            n += out.records.len();
            iterator = out.next_shard_iterator.unwrap();
        }
    }
    n
}

#[test]
fn simulator_to_kinesis_to_lake_is_exact() {
    simulator_to_kinesis_to_lake(false, false);
}

/// The same with KPL aggregation: the stage's checkpoints fall inside aggregates (`S.K`), and a
/// second drain from them reads nothing.
#[test]
fn simulator_to_aggregated_kinesis_to_lake_is_exact() {
    simulator_to_kinesis_to_lake(true, false);
}

/// The whole AWS path: simulator → Kinesis (kinesalite) → stream stage → S3 staging →
/// compaction → Delta on S3 (moto) → SQL, with nothing of the lake on the local disk.
#[test]
fn simulator_to_kinesis_to_s3_lake_is_exact() {
    simulator_to_kinesis_to_lake(false, true);
}

fn simulator_to_kinesis_to_lake(aggregate: bool, on_s3: bool) {
    let Some(endpoint) = kinesalite() else {
        return;
    };
    let stream = format!("e2e-{}-{aggregate}-{on_s3}", std::process::id());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lake = if on_s3 {
        let Some(lake) = S3Lake::create(&runtime, &format!("e2e-{}", std::process::id())) else {
            return;
        };
        Some(lake)
    } else {
        None
    };
    // Every command of the test, on the S3 lake when there is one.
    let on_lake = |mut cmd: Command| {
        if let Some(lake) = &lake {
            lake.on(&mut cmd);
        }
        cmd
    };
    let count = |data: &Path, query: &str| -> u64 {
        count_of(on_lake(shoplake(data, &["sql", query, "--format", "json"])))
    };
    let compact = |data: &Path| {
        ok(on_lake(shoplake(data, &["batch", "compact"]))
            .output()
            .unwrap())
    };
    let client = emulator_client(&endpoint);
    runtime.block_on(create_stream(&endpoint, &stream, 3));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    std::fs::write(
        data.join("pipeline.toml"),
        format!("[stream.kinesis]\naggregate = {aggregate}\n"),
    )
    .unwrap();
    let out = on_kinesis(
        data,
        &endpoint,
        &stream,
        &[
            "emit",
            "--seed",
            "11",
            "--sessions",
            "400",
            "--start",
            "2026-03-01T00:00:00Z",
            "--stats-json",
        ],
    )
    .output()
    .unwrap();
    let stats: Value = serde_json::from_str(ok(out).lines().last().unwrap()).unwrap();
    assert!(
        !data.join("stream").exists(),
        "the embedded log was not used"
    );
    let drain = |data: &Path| -> Value {
        let out = on_lake(on_kinesis(data, &endpoint, &stream, &["stream", "--drain"]))
            .output()
            .unwrap();
        serde_json::from_str(ok(out).trim()).unwrap()
    };
    let drained = drain(data);
    assert_eq!(drained["records"], stats["records"], "every record read");
    let raw = runtime.block_on(raw_records(&client, &stream)) as u64;
    let records = stats["records"].as_u64().unwrap();
    if aggregate {
        assert!(
            raw * 20 < records,
            "{raw} Kinesis records for {records} events"
        );
    } else {
        assert_eq!(raw, records);
    }
    if let Some(lake) = &lake {
        let staged = lake.keys(&runtime, "_staging/");
        assert!(!staged.is_empty(), "the stage wrote its files to S3");
    }
    compact(data);
    let valid = stats["valid_unique"].as_u64().unwrap();
    let bad = stats["bad"].as_u64().unwrap();
    assert!(valid > 500 && bad > 0, "{stats}");
    let check = |data: &Path| {
        assert_eq!(count(data, "select count(*) from events"), valid);
        assert_eq!(
            count(data, "select count(distinct event_id) from events"),
            valid
        );
        assert_eq!(count(data, "select count(*) from bad_rows"), bad);
    };
    check(data);
    // From its checkpoints, a second drain reads nothing new and the lake stays exact.
    let again = drain(data);
    assert_eq!(again["records"], 0, "{again}");
    compact(data);
    check(data);
    if let Some(lake) = &lake {
        assert!(
            !data.join("lake").exists(),
            "nothing of the lake on the local disk"
        );
        let log = lake.keys(&runtime, "events/_delta_log/");
        assert!(
            log.iter().any(|k| k.ends_with("00000000000000000000.json")),
            "the events table is a Delta table on S3: {log:?}"
        );
        assert!(
            lake.keys(&runtime, "_staging/events/").is_empty(),
            "compaction removed the staged files it committed"
        );
        // Time travel on S3: the first version with rows reads as it stood.
        let first_version = "select count(*) from table_at('events', 1)";
        let then = count(data, first_version);
        assert!(then > 0 && then <= valid, "{then} of {valid}");

        // Erasure of a person on S3: their rows leave the tables, and after the request's
        // VACUUM no object of the bucket holds their id.
        let user = sql_rows(on_lake(shoplake(
            data,
            &["sql", crate::erasure::TOP_USER, "--format", "json"],
        )))[0]["user_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let of_user = format!("select count(*) from events where user_id = '{user}'");
        let theirs = count(data, &of_user);
        assert!(theirs > 0);
        let erased = ok(on_lake(shoplake(
            data,
            &["erase", "--user", &user, "--vacuum-after", "0s"],
        ))
        .output()
        .unwrap());
        let report: Value = serde_json::from_str(erased.lines().next().unwrap()).unwrap();
        assert!(
            report["rows_deleted"]["events"].as_u64().unwrap() >= theirs,
            "{report}"
        );
        assert_eq!(count(data, &of_user), 0);
        let left: Vec<String> = lake
            .keys(&runtime, "")
            .into_iter()
            .filter(|k| {
                let bytes = lake.get(&runtime, k).unwrap_or_default();
                bytes.windows(user.len()).any(|w| w == user.as_bytes())
            })
            .collect();
        assert!(left.is_empty(), "{user} is still in {left:?}");
        // Versions before the erasure are gone with their files and log: travelling there is
        // refused, not answered from what is left.
        let travel = on_lake(shoplake(data, &["sql", first_version]))
            .output()
            .unwrap();
        assert!(
            !travel.status.success(),
            "{}",
            String::from_utf8_lossy(&travel.stdout)
        );
        let valid = count(data, "select count(*) from events");
        let bad = count(data, "select count(*) from bad_rows");

        // The lake's lifecycle on S3. VACUUM lists the table's objects and deletes none of those
        // optimize just merged (a query may still read them); retention takes these events,
        // from March, out of the table, and their objects stay until a VACUUM after the grace.
        ok(on_lake(shoplake(data, &["batch", "optimize"]))
            .output()
            .unwrap());
        let vacuumed = ok(
            on_lake(shoplake(data, &["batch", "vacuum", "--table", "events"]))
                .output()
                .unwrap(),
        );
        let r: Value = serde_json::from_str(vacuumed.trim()).unwrap();
        assert_eq!(r["files_deleted"], 0, "{r}");
        let config = data.join("retention.toml");
        std::fs::write(&config, "[retention]\nevents = \"30d\"\n").unwrap();
        let config = config.display().to_string();
        let retained = ok(
            on_lake(shoplake(data, &["--config", &config, "batch", "retain"]))
                .output()
                .unwrap(),
        );
        let r: Value = serde_json::from_str(retained.trim()).unwrap();
        assert_eq!(r["tables"]["events"]["rows"], valid, "{r}");
        assert_eq!(count(data, "select count(*) from events"), 0);
        assert_eq!(count(data, "select count(*) from bad_rows"), bad);
        assert!(
            lake.keys(&runtime, "events/")
                .iter()
                .any(|k| k.ends_with(".parquet")),
            "the files stay on S3 until VACUUM"
        );
        return;
    }

    // A running stage shows the Kinesis client's own counters on /metrics.
    let addr = format!("127.0.0.1:{}", free_port());
    authorize(data, &addr);
    let child = on_kinesis(
        data,
        &endpoint,
        &stream,
        &["stream", "--metrics-addr", &addr],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let calls = format!("shoplake_kinesis_get_records_calls_total{{stream=\"{stream}\"}} ");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n = http_get(&addr, "/metrics")
            .and_then(|(_, text)| {
                text.lines()
                    .find_map(|l| l.strip_prefix(calls.as_str())?.parse::<u64>().ok())
            })
            .unwrap_or(0);
        if n > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no Kinesis counters on /metrics of the running stage"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(terminate(child).success());
}

/// Resharding while the stage consumes (kinesis-local): the stage reads a shard, the shard is
/// split, its children are merged, events keep coming in between, and a stage run after each
/// step ends with every valid event in the lake exactly once: it finishes a parent before its
/// children and goes on to the merged shard.
#[test]
fn the_stage_follows_splits_and_merges_and_the_lake_ends_exact() {
    let Some(endpoint) = emulator("SHOPLAKE_TEST_KINESIS_MOCK") else {
        return;
    };
    let stream = format!("reshard-{}", std::process::id());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = emulator_client(&endpoint);
    let s = KinesisStream::with_client(&client, &stream, KinesisConfig::default()).unwrap();
    runtime.block_on(async { s.create(1).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    std::fs::write(data.join("pipeline.toml"), "").unwrap();
    let mut valid = 0;
    let mut emit = |seed: &str| {
        let out = on_kinesis(
            data,
            &endpoint,
            &stream,
            &[
                "emit",
                "--seed",
                seed,
                "--sessions",
                "40",
                "--start",
                "2026-03-01T00:00:00Z",
                "--stats-json",
            ],
        )
        .output()
        .unwrap();
        let stats: Value = serde_json::from_str(ok(out).lines().last().unwrap()).unwrap();
        valid += stats["valid_unique"].as_u64().unwrap();
    };
    let drain = || {
        ok(on_kinesis(data, &endpoint, &stream, &["stream", "--drain"])
            .output()
            .unwrap())
    };
    let parent = "shardId-000000000000";

    emit("21");
    drain();
    runtime.block_on(async {
        client
            .split_shard()
            .stream_name(&stream)
            .shard_to_split(parent)
            .new_starting_hash_key((1u128 << 127).to_string())
            .send()
            .await
            .unwrap();
        s.wait_until_active(std::time::Duration::from_secs(30))
            .await
            .unwrap();
    });
    emit("22");
    drain();
    let children: Vec<String> = runtime.block_on(async {
        s.list_shards()
            .await
            .unwrap()
            .into_iter()
            .filter(|x| x.parent_shard_ids.iter().any(|p| p.0 == parent))
            .map(|x| x.shard_id.0)
            .collect()
    });
    assert_eq!(children.len(), 2, "{children:?}");
    runtime.block_on(async {
        client
            .merge_shards()
            .stream_name(&stream)
            .shard_to_merge(&children[0])
            .adjacent_shard_to_merge(&children[1])
            .send()
            .await
            .unwrap();
        s.wait_until_active(std::time::Duration::from_secs(30))
            .await
            .unwrap();
    });
    emit("23");
    drain();
    ok(shoplake(data, &["batch", "compact"]).output().unwrap());
    assert!(valid > 500, "{valid}");
    assert_eq!(count(data, "select count(*) from events"), valid);
    assert_eq!(
        count(data, "select count(distinct event_id) from events"),
        valid
    );
    // The merged shard's events are in: the stage went on past both generations of parents.
    assert_eq!(
        count(data, "select count(distinct stream_shard) from events"),
        4,
        "events from the parent, both children and the merged shard"
    );
}

/// The value of metric `name` on the /metrics of the stage at `addr`.
fn metric(addr: &str, name: &str) -> Option<u64> {
    let (_, text) = http_get(addr, "/metrics")?;
    text.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse::<u64>()
            .ok()
    })
}

/// Waits until `ready` holds, or fails with `what`.
fn wait_until(what: &str, secs: u64, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Two `shoplake stream` workers on one Kinesis stream and one S3 lake share its four shards
/// (two each, never the same one); one is killed (SIGKILL) with a batch read but not staged; the
/// other takes its shards over from their checkpoints once the leases expire, and the lake ends
/// with every valid event exactly once.
#[test]
fn workers_share_shards_and_a_killed_one_is_taken_over() {
    let Some(endpoint) = kinesalite() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(lake) = S3Lake::create(&runtime, &format!("workers-{}", std::process::id())) else {
        return;
    };
    let stream = format!("workers-{}", std::process::id());
    runtime.block_on(create_stream(&endpoint, &stream, 4));
    let dir = tempfile::tempdir().unwrap();
    let config = "[stream.leases]\nttl = \"2s\"\n[stage]\nmax_batch_age = \"1500ms\"\n";
    let dirs: Vec<_> = ["emit", "a", "b", "c"]
        .iter()
        .map(|name| {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("pipeline.toml"), config).unwrap();
            d
        })
        .collect();
    let on = |data: &Path, args: &[&str]| {
        let mut cmd = on_kinesis(data, &endpoint, &stream, args);
        lake.on(&mut cmd);
        cmd
    };
    let mut totals = (0, 0);
    let mut emit = |seed: &str, start: &str| {
        let out = on(
            &dirs[0],
            &[
                "emit",
                "--seed",
                seed,
                "--sessions",
                "150",
                "--start",
                start,
                "--stats-json",
            ],
        )
        .output()
        .unwrap();
        let stats: Value = serde_json::from_str(ok(out).lines().last().unwrap()).unwrap();
        totals.0 += stats["valid_unique"].as_u64().unwrap();
        totals.1 += stats["bad"].as_u64().unwrap();
    };
    let worker = |data: &Path| {
        let addr = format!("127.0.0.1:{}", free_port());
        authorize(data, &addr);
        let child = on(data, &["stream", "--metrics-addr", &addr])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        (child, addr)
    };
    const HELD: &str = "shoplake_stage_leases_held";
    const READ: &str = "shoplake_stage_records_read_total";

    emit("21", "2026-03-01T00:00:00Z");
    let (mut a, a_addr) = worker(&dirs[1]);
    wait_until("worker a holds every shard", 60, || {
        metric(&a_addr, HELD) == Some(4)
    });
    let (b, b_addr) = worker(&dirs[2]);
    wait_until("the workers hold two shards each", 60, || {
        metric(&a_addr, HELD) == Some(2) && metric(&b_addr, HELD) == Some(2)
    });
    // In the lease objects, each of the four shards has one owner, and the two workers own two
    // each. (Leases keep moving as the workers checkpoint: read until a listing and its reads
    // agree.)
    wait_until(
        "the lease objects show two owners of two shards each",
        30,
        || {
            let mut latest = std::collections::BTreeMap::<String, String>::new();
            for key in lake.keys(&runtime, &format!("_checkpoints/{stream}/")) {
                let (folder, _) = key.rsplit_once('/').unwrap();
                let newest = latest.entry(folder.to_owned()).or_default();
                if key > *newest {
                    *newest = key;
                }
            }
            let mut per_owner = std::collections::BTreeMap::<String, usize>::new();
            for key in latest.values() {
                // Replaced and deleted since the listing: read again.
                let Some(lease) = lake.get(&runtime, key) else {
                    return false;
                };
                let lease: Value = serde_json::from_slice(&lease).unwrap();
                let Some(owner) = lease["owner"].as_str() else {
                    return false;
                };
                *per_owner.entry(owner.to_owned()).or_default() += 1;
            }
            latest.len() == 4 && per_owner.len() == 2 && per_owner.values().all(|n| *n == 2)
        },
    );

    // More events; a reads its share and is killed before its 1.5 s batch is staged.
    let before = metric(&a_addr, READ).unwrap();
    emit("22", "2026-03-02T00:00:00Z");
    wait_until("worker a reads the new events", 30, || {
        metric(&a_addr, READ).unwrap_or(0) > before
    });
    a.kill().unwrap();
    a.wait().unwrap();

    // b takes a's shards over once their leases expire, and reads what comes next too.
    wait_until("worker b takes the dead worker's shards", 30, || {
        metric(&b_addr, HELD) == Some(4)
    });
    assert!(metric(&b_addr, "shoplake_stage_leases_acquired_total").unwrap() >= 4);
    emit("23", "2026-03-03T00:00:00Z");
    let read_total = || metric(&b_addr, READ).unwrap_or(0);
    let mut last = read_total();
    wait_until("worker b catches up", 60, || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let now = read_total();
        let idle = now == last;
        last = now;
        idle
    });
    assert!(terminate(b).success());

    // A new worker finds every lease released or at the stream's end: nothing left to read.
    let out = on(&dirs[3], &["stream", "--drain"]).output().unwrap();
    let drained: Value = serde_json::from_str(ok(out).trim()).unwrap();
    assert_eq!(drained["records"], 0, "{drained}");

    ok(on(&dirs[3], &["batch", "compact"]).output().unwrap());
    let count = |query: &str| count_of(on(&dirs[3], &["sql", query, "--format", "json"]));
    let (valid, bad) = totals;
    assert!(valid > 1000 && bad > 0, "{totals:?}");
    assert_eq!(count("select count(*) from events"), valid);
    assert_eq!(count("select count(distinct event_id) from events"), valid);
    assert_eq!(count("select count(*) from bad_rows"), bad);
}

/// A Firehose delivery stream `name` into `s3://BUCKET/PREFIX` on moto.
async fn create_delivery_stream(moto: &str, name: &str, bucket: &str, prefix: &str) {
    use aws_sdk_firehose::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_firehose::types::{DeliveryStreamType, ExtendedS3DestinationConfiguration};
    let conf = aws_sdk_firehose::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "emulator"))
        .endpoint_url(moto)
        .build();
    aws_sdk_firehose::Client::from_conf(conf)
        .create_delivery_stream()
        .delivery_stream_name(name)
        .delivery_stream_type(DeliveryStreamType::DirectPut)
        .extended_s3_destination_configuration(
            ExtendedS3DestinationConfiguration::builder()
                .role_arn("arn:aws:iam::123456789012:role/firehose")
                .bucket_arn(format!("arn:aws:s3:::{bucket}"))
                .prefix(prefix)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// The Firehose path on the emulators: the stage archives every record it reads through one
/// delivery stream (into `LAKE/raw/`) and sends its enriched events through another (into the
/// lake's staging, as NDJSON), and compaction makes the lake exact from them. Then `shoplake
/// replay` puts the archive back on the stream, read by a worker that lost its disk (no
/// de-duplication memory): compaction keeps every event once. Last, the archive alone rebuilds
/// the lake on a new stream.
#[test]
fn firehose_archive_and_events_sink_then_replay_keep_the_lake_exact() {
    let Some(endpoint) = kinesalite() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let id = std::process::id();
    let bucket = format!("fh-{id}");
    let Some(lake) = S3Lake::create(&runtime, &bucket) else {
        return;
    };
    let (stream, rebuilt_stream) = (format!("fh-{id}"), format!("fh-rebuilt-{id}"));
    let (archive, events) = (format!("raw-{id}"), format!("events-{id}"));
    runtime.block_on(async {
        create_delivery_stream(&lake.endpoint, &archive, &bucket, "lake/raw/").await;
        create_delivery_stream(&lake.endpoint, &events, &bucket, "lake/_staging/events/").await;
        create_stream(&endpoint, &stream, 2).await;
        create_stream(&endpoint, &rebuilt_stream, 1).await;
    });
    let config =
        format!("[firehose]\narchive_stream = \"{archive}\"\nevents_stream = \"{events}\"\n");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for d in &dirs[..2] {
        std::fs::write(d.path().join("pipeline.toml"), &config).unwrap();
    }
    std::fs::write(dirs[2].path().join("pipeline.toml"), "").unwrap();
    let run = |data: &Path, args: &[&str]| -> String {
        let mut cmd = on_kinesis(data, &endpoint, &stream, args);
        lake.on(&mut cmd);
        cmd.env("AWS_ENDPOINT_URL_FIREHOSE", &lake.endpoint);
        if data == dirs[2].path() {
            cmd.env("SHOPLAKE_LAKE", format!("s3://{bucket}/rebuilt"))
                .env("SHOPLAKE_STREAM", format!("kinesis://{rebuilt_stream}"));
        }
        ok(cmd.output().unwrap())
    };
    let json =
        |text: String| -> Value { serde_json::from_str(text.lines().last().unwrap()).unwrap() };
    let count = |data: &Path, sql: &str| -> u64 {
        json(run(data, &["sql", sql, "--format", "json"]))[0]
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_u64)
            .expect("a count")
    };
    let (first, second, third) = (dirs[0].path(), dirs[1].path(), dirs[2].path());

    let stats = json(run(
        first,
        &[
            "emit",
            "--seed",
            "12",
            "--sessions",
            "200",
            "--start",
            "2026-03-01T00:00:00Z",
            "--stats-json",
        ],
    ));
    let records = stats["records"].as_u64().unwrap();
    let valid = stats["valid_unique"].as_u64().unwrap();
    let bad = stats["bad"].as_u64().unwrap();
    assert!(valid > 300 && bad > 0, "{stats}");
    let drained = json(run(first, &["stream", "--drain"]));
    assert_eq!(drained["records"].as_u64(), Some(records), "{drained}");

    // Firehose delivered the events into staging (NDJSON under its hourly folders, no Parquet),
    // and every record read into the archive, one line each.
    let staged = lake.keys(&runtime, "_staging/events/");
    assert!(!staged.is_empty(), "Firehose delivered events into staging");
    assert!(
        staged
            .iter()
            .all(|k| !k.ends_with(".parquet") && k.contains(&format!("/{events}-"))),
        "{staged:?}"
    );
    let archived_lines = |runtime: &tokio::runtime::Runtime| -> u64 {
        lake.keys(runtime, "raw/")
            .iter()
            .map(|k| {
                let bytes = lake.get(runtime, k).unwrap();
                bytes
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count() as u64
            })
            .sum()
    };
    assert_eq!(
        archived_lines(&runtime),
        records,
        "every record archived once"
    );

    run(first, &["batch", "compact"]);
    let check = |data: &Path, bad: u64| {
        assert_eq!(count(data, "select count(*) from events"), valid);
        assert_eq!(
            count(data, "select count(distinct event_id) from events"),
            valid
        );
        assert_eq!(count(data, "select count(*) from bad_rows"), bad);
    };
    check(first, bad);
    assert!(
        lake.keys(&runtime, "_staging/events/").is_empty(),
        "staging consumed"
    );

    // Replay, read by a worker with a new disk: everything is staged again, compaction drops it.
    let replayed = json(run(second, &["replay"]));
    assert_eq!(
        replayed["replayed"].as_u64(),
        Some(records - bad),
        "{replayed}"
    );
    assert_eq!(replayed["still_invalid"].as_u64(), Some(bad), "{replayed}");
    assert_eq!(replayed["malformed_lines"].as_u64(), Some(0), "{replayed}");
    let drained = json(run(second, &["stream", "--drain"]));
    assert_eq!(
        drained["records"].as_u64(),
        Some(records - bad),
        "{drained}"
    );
    assert_eq!(drained["bad_rows"].as_u64(), Some(0), "{drained}");
    // The new worker remembers only the lake's most recent events (read back for its live
    // state): nearly every event is staged again, and compaction finds each one in the lake.
    let staged_again = drained["events"].as_u64().unwrap();
    assert!(staged_again * 10 > valid * 9, "{drained}");
    let compacted = json(run(second, &["batch", "compact"]));
    assert_eq!(compacted["events_written"].as_u64(), Some(0), "{compacted}");
    assert_eq!(
        compacted["already_in_lake"].as_u64(),
        Some(staged_again),
        "{compacted}"
    );
    check(second, bad);

    // The archive alone (now holding both reads) rebuilds the lake on a new stream.
    let rebuilt = json(run(
        third,
        &["replay", "--from", &format!("s3://{bucket}/lake/raw")],
    ));
    assert_eq!(
        rebuilt["replayed"].as_u64(),
        Some(2 * (records - bad)),
        "{rebuilt}"
    );
    run(third, &["stream", "--drain"]);
    run(third, &["batch", "compact"]);
    check(third, 0);

    // Erasure reaches the raw archive: the person's records leave its objects (rewritten), and
    // after the request's VACUUM no object of the lake holds their id.
    let user = json(run(
        first,
        &["sql", crate::erasure::TOP_USER, "--format", "json"],
    ))[0]["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let lines_before = archived_lines(&runtime);
    let report = run(first, &["erase", "--user", &user, "--vacuum-after", "0s"]);
    let report: Value = serde_json::from_str(report.lines().next().unwrap()).unwrap();
    let dropped = report["raw_archive_records"].as_u64().unwrap();
    assert!(dropped >= 2, "both reads of their records: {report}");
    assert_eq!(archived_lines(&runtime), lines_before - dropped);
    let mentioning = |runtime: &tokio::runtime::Runtime| -> Vec<String> {
        lake.keys(runtime, "")
            .into_iter()
            .filter(|k| {
                let bytes = lake.get(runtime, k).unwrap_or_default();
                bytes.windows(user.len()).any(|w| w == user.as_bytes())
            })
            .collect()
    };
    let left = mentioning(&runtime);
    assert!(left.is_empty(), "{user} is still in {left:?}");

    // An event of theirs sent after the request: the stage drops it (tombstones), so neither
    // the lake nor the raw archive gets it.
    runtime.block_on(async {
        let producer = KinesisStream::with_client(
            &emulator_client(&endpoint),
            &stream,
            KinesisConfig::default(),
        )
        .unwrap();
        let event = serde_json::json!({
            "event_id": uuid::Uuid::new_v4().to_string(),
            "event_name": "page_viewed",
            "occurred_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "user_id": user,
            "anonymous_id": "a-late",
        });
        let record = shoplake_ingest::Record {
            partition_key: "a-late".into(),
            data: serde_json::to_vec(&event).unwrap().into(),
        };
        shoplake_ingest::StreamProducer::put_records(&producer, vec![record])
            .await
            .unwrap();
    });
    let drained = json(run(first, &["stream", "--drain"]));
    assert_eq!(drained["records"].as_u64(), Some(1), "{drained}");
    assert_eq!(drained["events"].as_u64(), Some(0), "{drained}");
    run(first, &["batch", "compact"]);
    let left = mentioning(&runtime);
    assert!(left.is_empty(), "{user} is back in {left:?}");
}

/// Schema evolution on S3: an `events` table written on moto as a shoplake that did not know the
/// contract's three newest columns would have written it takes today's compaction. The columns
/// are added (a commit of their own), the old rows read them as null, and every report answers.
#[test]
fn a_lake_on_s3_from_an_older_contract_takes_todays_events() {
    use arrow::datatypes::{Field, Schema};
    const GAINED: [&str; 3] = ["promotion_name", "creative", "rating"];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(lake) = S3Lake::create(&runtime, &format!("evolve-{}", std::process::id())) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The older lake's events: a seeded day compacted locally, written to S3 without GAINED.
    let local = dir.path().join("local");
    crate::e2e::emit(&local, "31", "200");
    crate::e2e::run(&local, &["stream", "--drain"]);
    crate::e2e::run(&local, &["batch", "compact"]);
    let old_rows = count(&local, "select count(*) from events");
    runtime.block_on(async {
        let service = shoplake_query::QueryService::open(
            &local.join("lake").display().to_string(),
            Default::default(),
        )
        .await
        .unwrap();
        let rows = service.sql("SELECT * FROM events").await.unwrap();
        let old = std::sync::Arc::new(Schema::new(
            shoplake_events::events_schema()
                .fields()
                .iter()
                .filter(|f| !GAINED.contains(&f.name().as_str()))
                .map(|f| f.as_ref().clone())
                .collect::<Vec<Field>>(),
        ));
        let batches: Vec<_> = rows
            .batches
            .iter()
            .map(|b| {
                let columns = old
                    .fields()
                    .iter()
                    .map(|f| {
                        arrow::compute::cast(b.column_by_name(f.name()).unwrap(), f.data_type())
                            .unwrap()
                    })
                    .collect();
                arrow::array::RecordBatch::try_new(old.clone(), columns).unwrap()
            })
            .collect();
        let options = [
            ("aws_endpoint_url", lake.endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_access_key_id", "test"),
            ("aws_secret_access_key", "test"),
            ("aws_region", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        shoplake_batch::Lake::open(&lake.url, options)
            .unwrap()
            .new_table("events")
            .unwrap()
            .write(batches)
            .with_partition_columns(["event_date"])
            .await
            .unwrap();
    });

    // Today's binary stages other shoppers' events and compacts them into the S3 lake.
    let data = dir.path().join("s3");
    let stats = crate::e2e::emit(&data, "32", "150");
    let on_lake = |args: &[&str]| {
        let mut cmd = shoplake(&data, args);
        lake.on(&mut cmd);
        ok(cmd.output().unwrap())
    };
    on_lake(&["stream", "--drain"]);
    on_lake(&["batch", "compact"]);
    let count_on = |sql: &str| -> u64 {
        let rows: Value =
            serde_json::from_str(on_lake(&["sql", sql, "--format", "json"]).trim()).unwrap();
        rows[0]
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_u64)
            .expect("a count")
    };
    let new_rows = stats["valid_unique"].as_u64().unwrap();
    assert_eq!(count_on("select count(*) from events"), old_rows + new_rows);
    // The old rows read the gained columns as null; today's events carry them where they apply:
    // as many as the same events compacted into a lake of their own.
    let gained = "select count(*) from events where rating is not null \
                  or creative is not null or promotion_name is not null";
    assert!(
        count(&local, gained) > 0,
        "the older day had values in the gained columns"
    );
    let alone = dir.path().join("alone");
    crate::e2e::emit(&alone, "32", "150");
    crate::e2e::run(&alone, &["stream", "--drain"]);
    crate::e2e::run(&alone, &["batch", "compact"]);
    assert_eq!(count_on(gained), count(&alone, gained));
    let history = lake.keys(&runtime, "events/_delta_log/");
    let evolved = history.iter().any(|k| {
        k.ends_with(".json")
            && lake
                .get(&runtime, k)
                .is_some_and(|b| String::from_utf8_lossy(&b).contains("evolve_schema"))
    });
    assert!(
        evolved,
        "the columns were added by a commit of their own: {history:?}"
    );
    // Every report answers on the evolved lake.
    let reports = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/reports");
    let mut answered = 0;
    for entry in std::fs::read_dir(reports).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
            continue;
        };
        // Over March, for the reports that take a period.
        let header = std::fs::read_to_string(&path).unwrap();
        let mut args = vec!["report", name, "--format", "csv"];
        if header.contains("-- param: from ") {
            args.extend(["--param", "from=2026-03-01", "--param", "to=2026-03-31"]);
        }
        on_lake(&args);
        answered += 1;
    }
    assert!(answered >= 20, "{answered} reports");
}
