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
        }
        Action::Default => println!("{}", toml::to_string_pretty(&PipelineConfig::default())?),
    }
    Ok(())
}
