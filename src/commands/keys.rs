//! `shoplake keys`: the collector's write keys. A key is printed once, when it is created; only its
//! hash is stored (DATA_DIR/collector/keys.redb). Works while `shoplake collect` runs: the
//! collector sees a new or revoked key within `collector.key_refresh`.

use anyhow::Context;
use shoplake_collector::KeyStore;

use crate::config::DataArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a key for a source (web, ios, android, backend, or a name of yours) and print it.
    Create {
        /// The source recorded on every event sent with the key.
        #[arg(long)]
        source: String,
    },
    /// List the keys (ids, sources, when created and revoked; never the keys themselves).
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id (from `keys list`): the collector refuses it with 401.
    Revoke {
        /// The key's id.
        key_id: String,
    },
}

pub fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let path = data.keys_path();
    let store = KeyStore::open(&path)
        .with_context(|| format!("opening the write keys at {}", path.display()))?;
    match args.command {
        Command::Create { source } => {
            let new = store.create(&source)?;
            eprintln!(
                "created write key {} for source {:?}; it is shown only now, keep it:",
                new.info.key_id, new.info.source
            );
            println!("{}", new.key);
        }
        Command::List { json } => {
            let keys = store.list()?;
            if json {
                for k in &keys {
                    println!("{}", serde_json::to_string(k)?);
                }
            } else {
                println!(
                    "{:<18} {:<12} {:<22} revoked_at",
                    "key_id", "source", "created_at"
                );
                for k in &keys {
                    println!(
                        "{:<18} {:<12} {:<22} {}",
                        k.key_id,
                        k.source,
                        k.created_at,
                        k.revoked_at.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        Command::Revoke { key_id } => {
            let info = store.revoke(&key_id)?;
            eprintln!(
                "revoked write key {} (source {:?}) at {}",
                info.key_id,
                info.source,
                info.revoked_at.as_deref().unwrap_or_default()
            );
        }
    }
    Ok(())
}
