//! `shoplake config check FILE`: validate a pipeline config without running anything; with the
//! lake on S3 (`--lake s3://…`), also compare its bucket's settings with the config (read only,
//! as `shoplake lake init --check`).

use std::path::PathBuf;

use crate::config::{DataArgs, PipelineConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Parse and validate FILE; print the effective config.
    Check { file: PathBuf },
    /// Print the default config as TOML.
    Default,
}

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    match args.action {
        Action::Check { file } => {
            let config = PipelineConfig::load(&file)?;
            // The fraud rules it names are checked too (relative paths from the working folder,
            // as the stage reads them), with the rule file's line on a mistake.
            if let Some(rules) = &config.stage.live.fraud.rules_file {
                let (_, set) = shoplake_live::fraud::RulesFile::open(rules).map_err(|e| {
                    anyhow::anyhow!(
                        "in config file {}: stage.fraud.rules_file {}: {e}",
                        file.display(),
                        rules.display()
                    )
                })?;
                println!(
                    "{}: {} fraud rules, version {}",
                    rules.display(),
                    set.rules().len(),
                    set.version()
                );
            }
            println!("{} is valid. Effective config:\n", file.display());
            println!("{}", toml::to_string_pretty(&config)?);
            let lake = data.lake_root();
            if lake.starts_with("s3://") {
                println!("The lake bucket ({lake}):\n");
                let findings = super::lake::inspect(&config, &lake, false).await?;
                super::lake::print(&findings, false)?;
                super::lake::differing(&findings)?;
            }
        }
        Action::Default => println!("{}", toml::to_string_pretty(&PipelineConfig::default())?),
    }
    Ok(())
}
