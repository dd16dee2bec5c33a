//! Which backend carries the events stream, chosen by a URI (`local` or `kinesis://NAME`), and
//! [`Stream`]: either backend behind the stream traits, for the commands that take `--stream`.

use std::path::Path;

use async_trait::async_trait;
use shoplake_server::Telemetry;

use crate::{
    Error, KinesisConfig, KinesisStream, LocalLog, PutResult, Record, Result, ShardId, ShardInfo,
    ShardReader, StartPosition, StreamConsumer, StreamProducer,
};

/// Which backend carries the events stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamUri {
    /// The embedded durable log in the data folder.
    Local,
    /// An Amazon Kinesis data stream, by name.
    Kinesis(String),
}

impl StreamUri {
    /// `local`, or `kinesis://NAME` with a valid Kinesis stream name.
    pub fn parse(uri: &str) -> Result<Self> {
        if uri == "local" {
            return Ok(StreamUri::Local);
        }
        let bad = |reason: &str| Error::BadUri {
            uri: uri.to_owned(),
            reason: reason.to_owned(),
        };
        let Some(name) = uri.strip_prefix("kinesis://") else {
            return Err(bad("expected `local` or `kinesis://STREAM_NAME`"));
        };
        if !((1..=128).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(bad(
                "a Kinesis stream name has 1 to 128 characters of a-z, A-Z, 0-9, _ . -",
            ));
        }
        Ok(StreamUri::Kinesis(name.to_owned()))
    }
}

/// The events stream a command uses: the embedded log or Kinesis, behind the stream traits.
pub enum Stream {
    Local(LocalLog),
    Kinesis(KinesisStream),
}

impl Stream {
    /// Opens the stream `uri` names: the embedded log at `local_path` (created with `shards`
    /// shards when new), or the Kinesis stream (its client made from the AWS environment; a wrong
    /// credential or a missing stream shows in the first call's error).
    pub fn open(
        uri: &StreamUri,
        local_path: &Path,
        shards: u32,
        kinesis: &KinesisConfig,
    ) -> Result<Self> {
        match uri {
            StreamUri::Kinesis(name) => Ok(Stream::Kinesis(KinesisStream::new(
                name.clone(),
                kinesis.clone(),
            )?)),
            StreamUri::Local => {
                if let Some(dir) = local_path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| Error::Storage {
                        stream: local_path.display().to_string(),
                        source: Box::new(e),
                    })?;
                }
                Ok(Stream::Local(LocalLog::open(local_path, shards)?))
            }
        }
    }

    /// Registers the backend's own counters (Kinesis: records put and read, retries, throttling,
    /// iterator renewals, milliseconds behind the tip per shard, labelled with the stream); none
    /// for the embedded log, whose figures are the stage's and the collector's.
    pub fn register_metrics(&self, telemetry: &mut Telemetry) {
        if let Stream::Kinesis(s) = self {
            telemetry.register_labelled("stream", StreamConsumer::name(s), s.metrics());
        }
    }
}

#[async_trait]
impl StreamProducer for Stream {
    async fn put_records(&self, records: Vec<Record>) -> Result<Vec<PutResult>> {
        match self {
            Stream::Local(s) => s.put_records(records).await,
            Stream::Kinesis(s) => s.put_records(records).await,
        }
    }
}

#[async_trait]
impl StreamConsumer for Stream {
    fn name(&self) -> &str {
        match self {
            Stream::Local(s) => StreamConsumer::name(s),
            Stream::Kinesis(s) => StreamConsumer::name(s),
        }
    }

    async fn list_shards(&self) -> Result<Vec<ShardInfo>> {
        match self {
            Stream::Local(s) => s.list_shards().await,
            Stream::Kinesis(s) => s.list_shards().await,
        }
    }

    async fn open_shard(
        &self,
        shard: &ShardId,
        from: StartPosition,
    ) -> Result<Box<dyn ShardReader>> {
        match self {
            Stream::Local(s) => s.open_shard(shard, from).await,
            Stream::Kinesis(s) => s.open_shard(shard, from).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_uris() {
        assert_eq!(StreamUri::parse("local").unwrap(), StreamUri::Local);
        assert_eq!(
            StreamUri::parse("kinesis://shop-events").unwrap(),
            StreamUri::Kinesis("shop-events".into())
        );
        let err = StreamUri::parse("kafka://x").unwrap_err().to_string();
        assert!(
            err.contains("kafka://x") && err.contains("kinesis://"),
            "{err}"
        );
        let err = StreamUri::parse("kinesis://bad name")
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 to 128 characters"), "{err}");
        assert!(StreamUri::parse(&format!("kinesis://{}", "a".repeat(129))).is_err());
    }
}
