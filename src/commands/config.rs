//! `shoplake config check FILE`: validate a pipeline config without running anything.

use std::path::PathBuf;

use crate::config::PipelineConfig;

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

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.action {
        Action::Check { file } => {
            let config = PipelineConfig::load(&file)?;
            println!("{} is valid. Effective config:\n", file.display());
            println!("{}", toml::to_string_pretty(&config)?);
        }
        Action::Default => println!("{}", toml::to_string_pretty(&PipelineConfig::default())?),
    }
    Ok(())
}
