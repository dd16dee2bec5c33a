//! `shoplake lake init [s3://BUCKET/PREFIX]`: create the lake's bucket, or bring its settings to
//! what a store's lake should have (`shoplake_batch::bucket`): default encryption (`[lake]`),
//! public access blocked, lifecycle rules that expire the raw archive and the quarantine after
//! their `[retention]` and abort stale multipart uploads. `--check` changes nothing and fails when
//! a setting differs; `shoplake config check` runs the same check on the configured lake.

use shoplake_batch::bucket::{self, Finding, State};

use crate::config::{DataArgs, PipelineConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Create the lake's bucket or set what differs in it (encryption, public access, lifecycle
    /// rules); prints each setting and what was done.
    Init {
        /// The lake: s3://BUCKET/PREFIX. Default: the configured lake (`--lake`).
        location: Option<String>,
        /// Change nothing: report what differs, and fail when anything does.
        #[arg(long)]
        check: bool,
        /// Print the settings as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let Action::Init {
        location,
        check,
        json,
    } = args.action;
    let config = data.pipeline_config()?;
    let location = location.unwrap_or_else(|| data.lake_root());
    let findings = inspect(&config, &location, !check).await?;
    print(&findings, json)?;
    if check {
        differing(&findings)?;
    }
    Ok(())
}

/// The bucket settings of the lake at `location` against `config`; with `apply`, set.
pub async fn inspect(
    config: &PipelineConfig,
    location: &str,
    apply: bool,
) -> anyhow::Result<Vec<Finding>> {
    let Some((name, prefix)) = bucket::parse_location(location) else {
        anyhow::bail!(
            "{location} is not on S3: `lake init` sets up an S3 bucket (s3://BUCKET/PREFIX); a \
             local lake needs nothing"
        );
    };
    let lake = shoplake_batch::Lake::open(location, Default::default())?;
    let client = bucket::client(lake.storage_options()).await;
    let (settings, notes) = config.bucket_settings(&name, &prefix);
    for note in notes {
        eprintln!("note: {note}");
    }
    Ok(bucket::inspect(&client, &name, &settings, apply).await?)
}

/// The findings as a table (or JSON) on stdout.
pub fn print(findings: &[Finding], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(findings)?);
        return Ok(());
    }
    let width = |f: fn(&Finding) -> &str, title: &str| {
        findings
            .iter()
            .map(|x| f(x).chars().count())
            .chain([title.len()])
            .max()
            .unwrap_or_default()
    };
    let (s, w, f) = (
        width(|x| &x.setting, "setting"),
        width(|x| &x.wanted, "wanted"),
        width(|x| &x.found, "found"),
    );
    println!("{:s$}  {:w$}  {:f$}  state", "setting", "wanted", "found");
    for x in findings {
        let state = match x.state {
            State::Ok => "ok",
            State::Changed => "changed",
            State::Differs => "differs",
        };
        println!("{:s$}  {:w$}  {:f$}  {state}", x.setting, x.wanted, x.found);
    }
    Ok(())
}

/// An error naming the settings that differ, if any.
pub fn differing(findings: &[Finding]) -> anyhow::Result<()> {
    let differ: Vec<&str> = findings
        .iter()
        .filter(|f| f.state == State::Differs)
        .map(|f| f.setting.as_str())
        .collect();
    if !differ.is_empty() {
        anyhow::bail!(
            "the lake bucket differs from the config in {} setting(s) ({}): `shoplake lake init` \
             sets them",
            differ.len(),
            differ.join(", ")
        );
    }
    Ok(())
}
