//! `shoplake erase`: a person's request to be forgotten (GDPR art. 17, CCPA), from the terminal
//! of a platform whose stream and stage are stopped (a running `shoplake up` takes the request
//! at `POST /v1/admin/erasures`).
//!
//! The person's ids are found in the lake (`shoplake_batch::erase::find`: identities,
//! sessions, orders, e-mail addresses); their records leave the embedded stream and their
//! entries the stage's state (both files rewritten, so no free page keeps their bytes); then
//! `shoplake_batch::erase::erase` tombstones them, compacts staging and deletes their rows from
//! every table, the raw archive and the quarantine. With `--vacuum-after`, the command waits that
//! long and deletes the files the deletes took out of the tables; otherwise the next
//! `batch vacuum` does, `[retention] erasure_grace` after the request.

use std::time::Duration;

use anyhow::Context;
use shoplake_batch::erase::{Outside, Subject};
use shoplake_ingest::LocalLog;
use shoplake_transform::state::StateStore;

use crate::config::{DataArgs, StreamUri};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The person's user id (their anonymous ids linked in `identities` go too).
    #[arg(long)]
    user: Option<String>,
    /// An anonymous id (a browser or device) of the person (the user it is linked to goes too);
    /// repeat it for each one.
    #[arg(long = "anonymous-id")]
    anonymous_ids: Vec<String>,
    /// Wait this long (`"0s"`: when no query reads the lake), then delete the files the erasure
    /// took out of the tables. Default: left to the next `batch vacuum` after `[retention]
    /// erasure_grace`.
    #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
    vacuum_after: Option<Duration>,
}

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let config = data.pipeline_config()?;
    let lake = data.open_lake()?;
    let subject = Subject {
        user_id: args.user,
        anonymous_ids: args.anonymous_ids,
    };
    let opts = config.erasure_options(&data)?;
    let ids = shoplake_batch::erase::prepare(&lake, &subject, &opts).await?;
    let mentions = ids.mentions();
    let mut outside = Outside::default();
    // The embedded stream and the stage's state are files of this folder: a running stream
    // or `up` holds them (redb's lock), and this command says so before touching the lake.
    let running = "is open in a running shoplake (`up` or `stream`): stop it first, or send the \
                   request to its POST /v1/admin/erasures";
    if data.stream_uri(&config)? == StreamUri::Local && data.stream_path().exists() {
        let path = data.stream_path();
        outside.stream_records = tokio::task::block_in_place(|| {
            LocalLog::erase_records(&path, |key, record| {
                mentions.in_bytes(key.as_bytes()) || mentions.in_bytes(record)
            })
        })
        .with_context(|| format!("the embedded stream {} {running}", path.display()))?;
    }
    let state = data.stage_state_path();
    if state.exists() {
        outside.state_entries = tokio::task::block_in_place(|| {
            StateStore::erase_entries(&state, |k, v| mentions.in_bytes(k) || mentions.in_bytes(v))
        })
        .with_context(|| format!("the stage's state {} {running}", state.display()))?;
    }
    let report =
        shoplake_batch::erase::erase(&lake, &subject, &ids, outside, &opts, chrono::Utc::now())
            .await?;
    println!("{}", serde_json::to_string(&report)?);
    if let Some(wait) = args.vacuum_after {
        tokio::time::sleep(wait).await;
        let done = shoplake_batch::erase::vacuum_erasures(
            &lake,
            wait,
            chrono::Utc::now(),
            &config.compaction.options().write_options(),
        )
        .await?;
        if !done.requests.is_empty() {
            println!("{}", serde_json::to_string(&done)?);
        }
    }
    Ok(())
}
