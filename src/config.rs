//! The pipeline config file (what the pipeline does) and the flag groups shared by commands (how
//! the process runs). Every flag reads a `SHOPLAKE_…` environment variable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
pub use shoplake_ingest::backend::{Stream, StreamUri};
use shoplake_live::LiveConfig;
use shoplake_transform::StageConfig;

/// The TOML config file. Every table is optional.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// The streaming stage and the live engines it feeds.
    pub stage: StageSection,
    /// Compaction into the lake.
    pub compaction: CompactionConfig,
    /// How long the lake keeps what: retention periods and VACUUM.
    pub retention: RetentionConfig,
    /// The lake bucket's settings on S3 (`shoplake lake init`): encryption, upload clean-up.
    pub lake: LakeConfig,
    /// The embedded stream.
    pub stream: StreamConfig,
    /// The HTTP collector (`shoplake collect`).
    pub collector: shoplake_collector::CollectorConfig,
    /// Firehose: the raw archive (for `shoplake replay`) and the events sink into staging.
    pub firehose: shoplake_ingest::FirehoseConfig,
    /// What a SQL statement may take (time, memory, rows, turns) and the result cache.
    pub query: shoplake_query::QueryConfig,
    /// Who may reach the servers: allowed `Host` names, an open `/metrics`, the refresh of users
    /// and tokens.
    pub auth: shoplake_server::auth::AuthConfig,
}

/// `[stage]`: one table in the file, two owners — the streaming stage's settings
/// ([`StageConfig`]) and those of the live engines it feeds ([`LiveConfig`]: `[stage.fraud]`,
/// `[stage.recommendations]`, `live_rebuild_hours`). Each keeps `deny_unknown_fields`: the
/// table is split by [`LiveConfig::KEYS`] before either reads its part.
#[derive(Clone, Debug, Default)]
pub struct StageSection {
    pub stage: StageConfig,
    pub live: LiveConfig,
}

impl StageSection {
    /// The live engines this config switches on (fraud scoring, recommendations).
    pub fn live_engines(&self) -> anyhow::Result<shoplake_live::Live> {
        Ok(shoplake_live::Live::from_config(
            &self.live,
            self.stage.fx_rates()?,
        )?)
    }
}

impl Serialize for StageSection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let mut table = toml::Table::try_from(&self.stage).map_err(S::Error::custom)?;
        table.extend(toml::Table::try_from(&self.live).map_err(S::Error::custom)?);
        table.serialize(s)
    }
}

impl<'de> Deserialize<'de> for StageSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut stage = toml::Table::deserialize(d)?;
        let live: toml::Table = LiveConfig::KEYS
            .iter()
            .filter_map(|k| stage.remove(*k).map(|v| ((*k).to_owned(), v)))
            .collect();
        Ok(StageSection {
            stage: toml::Value::Table(stage)
                .try_into()
                .map_err(D::Error::custom)?,
            live: toml::Value::Table(live)
                .try_into()
                .map_err(D::Error::custom)?,
        })
    }
}

/// `[compaction]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionConfig {
    /// Time between compactions in `shoplake up` (`"15s"`).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Time between refreshes of the daily rollups (`rollup_*`: the days compaction touched are
    /// computed again from the lake) in `shoplake up` (`"1m"`): the reports on rollups
    /// (`products`, `search`, `promotions`) lag the events by up to this.
    #[serde(with = "humantime_serde")]
    pub rollup_interval: Duration,
    /// Time between OPTIMIZE runs (small files → large) in `shoplake up` (`"1h"`); `"0s"` turns
    /// them off.
    #[serde(with = "humantime_serde")]
    pub optimize_interval: Duration,
    /// Time between rebuilds of the `product_affinity` table (item-to-item over the whole
    /// history, which seeds the live recommendations on a cold start) in `shoplake up`; 0 turns
    /// them off (`"6h"`; `"0s"` turns them off).
    #[serde(with = "humantime_serde")]
    pub affinity_interval: Duration,
    /// Most bytes of staging read per round.
    pub max_bytes: u64,
    /// Target size of lake files, bytes.
    pub target_file_size: u64,
    /// zstd level of lake files.
    pub zstd_level: i32,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        let d = shoplake_batch::CompactOptions::default();
        CompactionConfig {
            interval: Duration::from_secs(15),
            rollup_interval: Duration::from_secs(60),
            optimize_interval: Duration::from_secs(3_600),
            affinity_interval: Duration::from_secs(6 * 3_600),
            max_bytes: d.max_bytes,
            target_file_size: d.target_file_size,
            zstd_level: d.zstd_level,
        }
    }
}

impl PipelineConfig {
    /// What an erasure request runs with (`shoplake erase`, `POST /v1/admin/erasures`).
    pub fn erasure_options(
        &self,
        data: &DataArgs,
    ) -> anyhow::Result<shoplake_batch::erase::EraseOptions> {
        Ok(shoplake_batch::erase::EraseOptions {
            compaction: self.compaction.options(),
            raw_archive: raw_archive(data, &self.firehose)?,
            tombstone_for: self.retention.erasure_tombstones,
        })
    }
}

impl CompactionConfig {
    pub fn options(&self) -> shoplake_batch::CompactOptions {
        shoplake_batch::CompactOptions {
            max_bytes: self.max_bytes,
            target_file_size: self.target_file_size,
            zstd_level: self.zstd_level,
            ..Default::default()
        }
    }
}

/// `[retention]`: how long the lake keeps what (README, *Retention and VACUUM*). A period left out
/// keeps for ever.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days of `events` kept, by `event_date` (`"730d"`); for ever by default. The daily rollups
    /// (`rollup_*`) keep the same days.
    #[serde(with = "humantime_serde")]
    pub events: Option<Duration>,
    /// Days of `bad_rows` kept (`"30d"`): the raw bytes of bad input are personal data too.
    #[serde(with = "humantime_serde")]
    pub bad_rows: Option<Duration>,
    /// Days of `fraud_decisions` kept; for ever by default.
    #[serde(with = "humantime_serde")]
    pub fraud_decisions: Option<Duration>,
    /// Age at which objects of the raw archive (`[firehose] archive_location`, or the lake's
    /// `raw/`) are deleted (`"3months"`).
    #[serde(with = "humantime_serde")]
    pub raw_archive: Option<Duration>,
    /// Age at which staged files moved under `_quarantine/` are deleted (`"30d"`).
    #[serde(with = "humantime_serde")]
    pub quarantine: Option<Duration>,
    /// How long a file a table no longer references stays on storage before VACUUM deletes it
    /// (`"7d"`, at least `"1h"`): the time travel it allows, and far beyond any query in flight.
    #[serde(with = "humantime_serde")]
    pub deleted_files: Duration,
    /// Time between retention and VACUUM runs in `shoplake up` (`"1d"`); `"0s"` turns them off.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long after an erasure the files it took out of the tables are deleted by VACUUM
    /// (`"1h"`): a query that started before the erasure may read them until then.
    #[serde(with = "humantime_serde")]
    pub erasure_grace: Duration,
    /// How long events of an erased person that arrive later are dropped (`"7d"`): longer than
    /// the stream keeps records, so that none in flight lands.
    #[serde(with = "humantime_serde")]
    pub erasure_tombstones: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let day = 86_400;
        RetentionConfig {
            events: None,
            bad_rows: Some(Duration::from_secs(30 * day)),
            fraud_decisions: None,
            // Three months as humantime counts them (30.44 days each), which it prints back as
            // "3months".
            raw_archive: Some(Duration::from_secs(3 * 2_630_016)),
            quarantine: Some(Duration::from_secs(30 * day)),
            deleted_files: Duration::from_secs(7 * day),
            interval: Duration::from_secs(day),
            erasure_grace: Duration::from_secs(3_600),
            erasure_tombstones: Duration::from_secs(7 * day),
        }
    }
}

/// `[lake]`: what `shoplake lake init` gives the lake's bucket when the lake is on S3 (besides
/// blocked public access and the lifecycle rules of `[retention]`'s raw archive and quarantine).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// Default encryption of the bucket: `"sse-s3"` (AES256, keys managed by S3) or `"sse-kms"`.
    pub encryption: BucketEncryption,
    /// The KMS key of `"sse-kms"` (key id, ARN or alias); empty: the account's `aws/s3` key.
    pub kms_key_id: String,
    /// Multipart uploads still incomplete this long after they started are aborted (`"7d"`):
    /// their parts are stored, and billed, until then.
    #[serde(with = "humantime_serde")]
    pub abort_multipart_uploads: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BucketEncryption {
    SseS3,
    SseKms,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            encryption: BucketEncryption::SseS3,
            kms_key_id: String::new(),
            abort_multipart_uploads: Duration::from_secs(7 * 86_400),
        }
    }
}

impl PipelineConfig {
    /// What the bucket of the lake at `s3://BUCKET/PREFIX` should have; also says, for the
    /// operator, which retention has no lifecycle rule in this bucket and why.
    pub fn bucket_settings(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> (shoplake_batch::bucket::BucketSettings, Vec<String>) {
        use shoplake_batch::bucket::{
            BucketSettings, Encryption, Expiry, RULE_PREFIX, parse_location,
        };
        let under = |p: &str| match prefix {
            "" => format!("{p}/"),
            lake => format!("{lake}/{p}/"),
        };
        let mut notes = Vec::new();
        let mut expiries = Vec::new();
        if let Some(period) = self.retention.quarantine {
            expiries.push(Expiry {
                id: format!("{RULE_PREFIX}quarantine"),
                prefix: under(shoplake_events::lake::QUARANTINE),
                days: BucketSettings::days(period),
            });
        }
        // The default archive is the `raw/` folder of the lake being set up.
        let archive = archive_location(&format!("s3://{bucket}/{prefix}"), &self.firehose);
        if let (Some(period), Some(location)) = (self.retention.raw_archive, archive) {
            match parse_location(&location) {
                // Never a rule over a folder that holds the lake itself.
                Some((b, p))
                    if b == bucket
                        && !p.is_empty()
                        && !format!("{prefix}/").starts_with(&format!("{p}/")) =>
                {
                    expiries.push(Expiry {
                        id: format!("{RULE_PREFIX}raw-archive"),
                        prefix: format!("{p}/"),
                        days: BucketSettings::days(period),
                    });
                }
                Some((b, _)) if b != bucket => notes.push(format!(
                    "the raw archive ({location}) is in another bucket: its expiry is left to \
                     `shoplake batch retain` (or that bucket's own rules)"
                )),
                _ => notes.push(format!(
                    "the raw archive ({location}) holds the lake or is not on S3: no lifecycle \
                     rule for it; `shoplake batch retain` applies its retention"
                )),
            }
        }
        let encryption = match self.lake.encryption {
            BucketEncryption::SseS3 => Encryption::S3,
            BucketEncryption::SseKms => Encryption::Kms {
                key_id: Some(self.lake.kms_key_id.clone()).filter(|k| !k.is_empty()),
            },
        };
        let settings = BucketSettings {
            encryption,
            expiries,
            abort_multipart_days: BucketSettings::days(self.lake.abort_multipart_uploads),
        };
        (settings, notes)
    }
}

/// Where the raw archive of the lake at `lake_root` lives: `[firehose] archive_location`, or the
/// lake's `raw/` folder; None when no delivery stream archives the records.
pub fn archive_location(
    lake_root: &str,
    firehose: &shoplake_ingest::FirehoseConfig,
) -> Option<String> {
    if firehose.archive_stream.is_empty() {
        return None;
    }
    Some(match firehose.archive_location.as_str() {
        "" => format!("{}/raw", lake_root.trim_end_matches('/')),
        configured => configured.to_owned(),
    })
}

/// The raw archive's store: `[firehose] archive_location`, or the lake's `raw/` folder; None
/// when no delivery stream archives the records.
pub fn raw_archive(
    data: &DataArgs,
    firehose: &shoplake_ingest::FirehoseConfig,
) -> anyhow::Result<Option<std::sync::Arc<dyn object_store::ObjectStore>>> {
    let Some(location) = archive_location(&data.lake_root(), firehose) else {
        return Ok(None);
    };
    let archive = shoplake_batch::Lake::open(&location, Default::default())
        .with_context(|| format!("opening the raw archive at {location}"))?;
    Ok(Some(archive.store()))
}

impl RetentionConfig {
    /// What `batch retain` and `up` apply to the lake opened by `data`.
    pub fn retention(
        &self,
        data: &DataArgs,
        firehose: &shoplake_ingest::FirehoseConfig,
    ) -> anyhow::Result<shoplake_batch::lifecycle::Retention> {
        use shoplake_events::lake::{
            BAD_ROWS_TABLE, EVENTS_TABLE, FRAUD_DECISIONS_TABLE, ROLLUP_PRODUCTS_TABLE,
            ROLLUP_PROMOTIONS_TABLE, ROLLUP_SEARCH_TABLE,
        };
        // The daily rollups hold order ids and search text: they go with the events they sum.
        let tables = [
            (EVENTS_TABLE, self.events),
            (ROLLUP_PRODUCTS_TABLE, self.events),
            (ROLLUP_SEARCH_TABLE, self.events),
            (ROLLUP_PROMOTIONS_TABLE, self.events),
            (BAD_ROWS_TABLE, self.bad_rows),
            (FRAUD_DECISIONS_TABLE, self.fraud_decisions),
        ]
        .into_iter()
        .filter_map(|(t, p)| Some((t, p?)))
        .collect();
        let raw_archive = match (self.raw_archive, raw_archive(data, firehose)?) {
            (Some(period), Some(store)) => Some((store, period)),
            _ => None,
        };
        Ok(shoplake_batch::lifecycle::Retention {
            tables,
            quarantine: self.quarantine,
            raw_archive,
            erasure_grace: self.erasure_grace,
        })
    }
}

/// `[stream]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Which stream: `local` (the embedded log in the data folder) or `kinesis://NAME` (an Amazon
    /// Kinesis data stream). The `--stream` flag (`SHOPLAKE_STREAM`) takes precedence.
    pub uri: String,
    /// Shards of the embedded log (fixed when the log is created).
    pub shards: u32,
    /// The Kinesis backend: aggregation, retries, requests in flight, reads. Credentials, region
    /// and endpoint come from the standard AWS environment (`AWS_REGION`, `AWS_PROFILE`,
    /// `AWS_ENDPOINT_URL_KINESIS`, …) unless set here.
    pub kinesis: shoplake_ingest::KinesisConfig,
    /// How `shoplake stream` workers share a Kinesis stream's shards (`[stream.leases]`).
    pub leases: LeaseConfig,
}

/// `[stream.leases]`: shard leases and checkpoints in the lake's object store
/// (`_checkpoints/STREAM/`), used on Kinesis so that several workers share one stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseConfig {
    /// Time without renewal after which another worker takes a lease over (the time a dead
    /// worker's shards wait; `"10s"`). Leases are renewed every third of it.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// This worker's name in the leases; empty: host name, process id and a random suffix.
    pub worker_id: String,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl: Duration::from_secs(10),
            worker_id: String::new(),
        }
    }
}

impl LeaseConfig {
    fn validate(&self) -> Result<(), String> {
        if self.ttl < Duration::from_millis(300) {
            return Err(format!(
                "stream.leases.ttl must be at least 300ms, got {}",
                humantime_serde::re::humantime::format_duration(self.ttl)
            ));
        }
        Ok(())
    }

    /// The configured worker id, or host name, process id and a random suffix.
    pub fn worker_id(&self) -> String {
        if !self.worker_id.is_empty() {
            return self.worker_id.clone();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "worker".into());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}-{}", std::process::id(), &suffix[..8])
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            uri: "local".into(),
            shards: 4,
            kinesis: Default::default(),
            leases: Default::default(),
        }
    }
}

/// The Firehose delivery streams a stage writes to (`[firehose]`): the raw archive and the events
/// sink, each when configured.
pub struct FirehoseStreams {
    archive: Option<shoplake_ingest::Firehose>,
    events: Option<shoplake_ingest::Firehose>,
}

impl FirehoseStreams {
    pub fn new(config: &shoplake_ingest::FirehoseConfig) -> anyhow::Result<Self> {
        let open = |name: &str| -> anyhow::Result<Option<shoplake_ingest::Firehose>> {
            if name.is_empty() {
                return Ok(None);
            }
            Ok(Some(shoplake_ingest::Firehose::new(name, config.clone())?))
        };
        Ok(FirehoseStreams {
            archive: open(&config.archive_stream)?,
            events: open(&config.events_stream)?,
        })
    }

    /// `stage`, archiving and sending its events through the configured delivery streams.
    pub fn attach(&self, mut stage: shoplake_transform::Stage) -> shoplake_transform::Stage {
        if let Some(archive) = &self.archive {
            stage = stage.with_archive(archive.clone());
        }
        if let Some(events) = &self.events {
            stage = stage.with_events_firehose(events.clone());
        }
        stage
    }

    /// Registers their counters, labelled with each delivery stream.
    pub fn register_metrics(&self, telemetry: &mut shoplake_server::Telemetry) {
        for f in [&self.archive, &self.events].into_iter().flatten() {
            telemetry.register_labelled("delivery_stream", f.name(), f.metrics());
        }
    }
}

impl PipelineConfig {
    /// Reads and validates a config file; errors name the file, line and field.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: PipelineConfig = toml::from_str(text)?;
        // Building the stage's fx table checks the currencies and rates.
        config.stage.stage.fx_rates()?;
        anyhow::ensure!(
            config.stream.shards >= 1,
            "stream.shards must be at least 1"
        );
        StreamUri::parse(&config.stream.uri).context("in stream.uri")?;
        config
            .stream
            .kinesis
            .validate()
            .map_err(|message| anyhow::anyhow!(message))?;
        config
            .stream
            .leases
            .validate()
            .map_err(|message| anyhow::anyhow!(message))?;
        config
            .collector
            .validate()
            .map_err(|message| anyhow::anyhow!(message))?;
        config
            .firehose
            .validate()
            .map_err(|message| anyhow::anyhow!(message))?;
        config
            .query
            .validate()
            .map_err(|message| anyhow::anyhow!(message))?;
        anyhow::ensure!(
            config.retention.deleted_files >= shoplake_batch::lifecycle::MIN_GRACE,
            "retention.deleted_files must be at least 1h (a file is deleted only once no query \
             may still read it), got {}",
            humantime_serde::re::humantime::format_duration(config.retention.deleted_files)
        );
        anyhow::ensure!(
            config.lake.kms_key_id.is_empty() || config.lake.encryption == BucketEncryption::SseKms,
            "lake.kms_key_id is set but lake.encryption is \"sse-s3\": set encryption = \"sse-kms\" \
             to encrypt with that key, or remove the key"
        );
        Ok(config)
    }
}

/// Where the data lives: flags shared by every command that touches the pipeline.
#[derive(Clone, Debug, clap::Args)]
pub struct DataArgs {
    /// Folder of the embedded default (stream, stage state, lake).
    #[arg(
        long,
        env = "SHOPLAKE_DATA_DIR",
        default_value = "./shoplake-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Lake root: a local folder or s3://bucket/prefix. Default: DATA_DIR/lake.
    #[arg(long, env = "SHOPLAKE_LAKE", global = true)]
    pub lake: Option<String>,
    /// Pipeline config file (TOML). Default: built-in settings.
    #[arg(long, env = "SHOPLAKE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// The events stream: `local` (the embedded log in DATA_DIR) or `kinesis://NAME` (AWS
    /// credentials, region and endpoint from the standard AWS environment, e.g. AWS_REGION,
    /// AWS_PROFILE, AWS_ENDPOINT_URL_KINESIS). Default: the config's stream.uri, else local.
    #[arg(long, env = "SHOPLAKE_STREAM", global = true)]
    pub stream: Option<String>,
}

impl DataArgs {
    pub fn pipeline_config(&self) -> anyhow::Result<PipelineConfig> {
        match &self.config {
            Some(path) => PipelineConfig::load(path),
            None => Ok(PipelineConfig::default()),
        }
    }

    pub fn lake_root(&self) -> String {
        match &self.lake {
            Some(l) => l.clone(),
            None => self.data_dir.join("lake").display().to_string(),
        }
    }

    /// The query service over the lake, with the config's query limits; `pruning: false` reads
    /// every row of the scanned tables (for measuring what pruning saves).
    pub async fn query_service(
        &self,
        pruning: bool,
    ) -> anyhow::Result<shoplake_query::QueryService> {
        let options = shoplake_query::QueryOptions {
            pruning,
            limits: self.pipeline_config()?.query,
            ..shoplake_query::QueryOptions::default()
        };
        Ok(shoplake_query::QueryService::open_with(&self.lake_root(), options).await?)
    }

    pub fn stream_path(&self) -> PathBuf {
        self.data_dir.join("stream").join("events.redb")
    }

    pub fn stage_state_path(&self) -> PathBuf {
        self.data_dir.join("state").join("stage.redb")
    }

    /// The collector's write keys (hashed).
    pub fn keys_path(&self) -> PathBuf {
        self.data_dir.join("collector").join("keys.redb")
    }

    /// Users and API tokens (`shoplake users`, `shoplake tokens`).
    pub fn auth_path(&self) -> PathBuf {
        self.data_dir.join("auth.redb")
    }

    /// The guard every route of a server sits behind: this data folder's users and tokens.
    pub fn guard(
        &self,
        config: &PipelineConfig,
    ) -> anyhow::Result<std::sync::Arc<shoplake_server::auth::Guard>> {
        let path = self.auth_path();
        let store = shoplake_server::auth::AuthStore::open(&path)
            .with_context(|| format!("opening the users and tokens at {}", path.display()))?;
        let guard = shoplake_server::auth::Guard::new(store, config.auth.clone())?;
        if !guard.has_users() {
            tracing::warn!(
                "no users yet: every route but /health and /ready answers 401. Make the first admin \
                 and a token with `shoplake users create admin --role admin` then \
                 `shoplake tokens create --user admin`"
            );
        }
        Ok(std::sync::Arc::new(guard))
    }

    pub fn simulator_state_path(&self) -> PathBuf {
        self.data_dir.join("simulator").join("state.json")
    }

    pub fn open_lake(&self) -> anyhow::Result<shoplake_batch::Lake> {
        let root = self.lake_root();
        shoplake_batch::Lake::open(&root, Default::default())
            .with_context(|| format!("opening the lake at {root}"))
    }

    /// The shard leases a stage uses on this stream: on Kinesis, where several `shoplake stream`
    /// workers may share it, leases and checkpoints in the lake's object store; none on the
    /// embedded log, which one process owns.
    pub fn leases(
        &self,
        config: &PipelineConfig,
        lake: &shoplake_batch::Lake,
    ) -> anyhow::Result<Option<shoplake_transform::leases::Leases>> {
        Ok(match self.stream_uri(config)? {
            StreamUri::Local => None,
            StreamUri::Kinesis(name) => Some(shoplake_transform::leases::Leases::new(
                lake.store(),
                &name,
                config.stream.leases.worker_id(),
                config.stream.leases.ttl,
            )),
        })
    }

    /// Which stream: `--stream`, else the config's `stream.uri`.
    pub fn stream_uri(&self, config: &PipelineConfig) -> anyhow::Result<StreamUri> {
        match &self.stream {
            Some(uri) => StreamUri::parse(uri).context("in --stream"),
            None => StreamUri::parse(&config.stream.uri).context("in stream.uri"),
        }
    }

    /// The events stream. Kinesis is reached on the first call (its client is made then, from
    /// the AWS environment), so a wrong credential or a missing stream shows in that call's error.
    pub fn open_stream(&self, config: &PipelineConfig) -> anyhow::Result<Stream> {
        let path = self.stream_path();
        Stream::open(
            &self.stream_uri(config)?,
            &path,
            config.stream.shards,
            &config.stream.kinesis,
        )
        .with_context(|| format!("opening the events stream ({})", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_archive_gets_a_lifecycle_rule_only_in_the_lakes_bucket_and_never_over_the_lake() {
        let rules = |archive: &str| {
            let config = PipelineConfig::parse(&format!(
                "[firehose]\narchive_stream = \"raw\"\narchive_location = \"{archive}\"\n"
            ))
            .unwrap();
            let (settings, notes) = config.bucket_settings("shop", "lake");
            let prefixes: Vec<String> = settings.expiries.into_iter().map(|e| e.prefix).collect();
            (prefixes, notes.len())
        };
        // Default: the lake's raw/ folder.
        assert_eq!(
            rules(""),
            (vec!["lake/_quarantine/".into(), "lake/raw/".into()], 0)
        );
        assert_eq!(
            rules("s3://shop/lake-raw"),
            (vec!["lake/_quarantine/".into(), "lake-raw/".into()], 0)
        );
        // The lake's own folder, a folder above it, the bucket's root, another bucket: no rule.
        for archive in ["s3://shop/lake", "s3://shop", "s3://other/raw"] {
            assert_eq!(
                rules(archive),
                (vec!["lake/_quarantine/".into()], 1),
                "{archive}"
            );
        }
        let kms = PipelineConfig::parse("[lake]\nkms_key_id = \"alias/k\"\n").unwrap_err();
        assert!(
            format!("{kms:#}").contains("set encryption = \"sse-kms\""),
            "{kms:#}"
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = PipelineConfig::parse("[stage]\nreporting_curency = \"EUR\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("reporting_curency"), "{err:#}");
        let err = PipelineConfig::parse("[stage]\nreporting_currency = \"XYZ\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("XYZ"), "{err:#}");
        let ok = PipelineConfig::parse(
            "[stage]\nreporting_currency = \"EUR\"\nsession_timeout = \"45m\"\n[compaction]\ninterval = \"5s\"\n",
        )
        .unwrap();
        assert_eq!(ok.compaction.interval, Duration::from_secs(5));
        assert_eq!(ok.stage.stage.session_timeout, Duration::from_secs(45 * 60));
        // A duration without its unit is refused, and the message says what was wrong.
        let err = PipelineConfig::parse("[compaction]\ninterval = \"5\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("interval"), "{err:#}");
    }

    #[test]
    fn stream_uris() {
        assert_eq!(StreamUri::parse("local").unwrap(), StreamUri::Local);
        assert_eq!(
            StreamUri::parse("kinesis://shop-events.v1").unwrap(),
            StreamUri::Kinesis("shop-events.v1".into())
        );
        for bad in ["kinesis://", "kinesis://a b", "kafka://x", "events"] {
            let err = StreamUri::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
        let config = PipelineConfig::parse(
            "[stream]\nuri = \"kinesis://events\"\n[stream.kinesis]\naggregate = true\n",
        )
        .unwrap();
        assert!(config.stream.kinesis.aggregate);
        let err = PipelineConfig::parse("[stream.kinesis]\nmax_in_flight = 0\n").unwrap_err();
        assert!(format!("{err:#}").contains("max_in_flight"), "{err:#}");
        let err = PipelineConfig::parse("[stream]\nuri = \"kinesis:/x\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("kinesis:/x"), "{err:#}");
        // The defaults print and read back.
        let text = toml::to_string_pretty(&PipelineConfig::default()).unwrap();
        assert!(text.contains("[stream.kinesis]"), "{text}");
        PipelineConfig::parse(&text).unwrap();
    }
}
