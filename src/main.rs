//! `shoplake`: the data platform of an online store in one binary.
//!
//! This crate only parses arguments, loads config, sets up telemetry and wires the library crates
//! together; see each command in `commands/`.

mod commands;
mod config;
mod ops;
mod sink;

use clap::{Parser, Subcommand};

/// jemalloc instead of glibc malloc. glibc keeps the memory freed by each thread's arena (the
/// compaction's DataFusion and Parquet buffers come and go on several threads), so a running `up`
/// held several times its live heap: at 1,000 events/s, 425 MiB resident after 210 s with glibc,
/// 237 MiB with jemalloc (heaptrack put the live heap at 120–250 MiB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The data platform of an online store: stream, enrich, lake, SQL.
#[derive(Debug, Parser)]
#[command(name = "shoplake", version, about)]
struct Cli {
    #[command(flatten)]
    log: ops::LogArgs,
    #[command(flatten)]
    data: config::DataArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything in one process on local disk: simulator → stream → stage → lake → SQL.
    Up(commands::up::Args),
    /// Simulate a storefront and put its events on the stream.
    Emit(commands::emit::Args),
    /// Run the streaming stage: validate, de-duplicate, enrich, stage into the lake.
    Stream(commands::stream::Args),
    /// Batch jobs on the lake.
    Batch(commands::batch::Args),
    /// Put the raw archive (Firehose) back on the stream; de-duplication keeps the lake exact.
    Replay(commands::replay::Args),
    /// Run one SQL statement over the lake and print the result.
    Sql(commands::sql::Args),
    /// Run a named report (sql/reports) over the lake and print it; alone: list the reports.
    Report(commands::report::Args),
    /// Load files the store exports elsewhere into the lake (campaign spend).
    Load(commands::load::Args),
    /// Serve SQL and the reports over HTTP, Postgres wire and Flight SQL.
    Query(commands::query::Args),
    /// Accept events over HTTP in the Segment tracking API and put them on the stream.
    Collect(commands::collect::Args),
    /// Create, list and revoke the collector's write keys.
    Keys(commands::keys::Args),
    /// Create, list and disable the users who may reach the servers, each with a role.
    Users(commands::users::UsersArgs),
    /// Create, list and revoke users' API tokens.
    Tokens(commands::users::TokensArgs),
    /// Measure fraud decisions and recommendations on a seeded simulation's ground truth.
    Eval(commands::eval::Args),
    /// Fraud models: train one on the lake's orders and chargebacks.
    Fraud(commands::fraud::Args),
    /// Erase a person on request (right to be forgotten): their rows, records and state, everywhere.
    Erase(commands::erase::Args),
    /// Check a pipeline config file (and, with the lake on S3, its bucket's settings).
    Config(commands::config::Args),
    /// The lake's bucket on S3: create it or set encryption, public access and lifecycle rules.
    Lake(commands::lake::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.log.init();
    // The fault campaign's kill points, armed only when FAILPOINTS names them.
    let _faults = shoplake_server::faults::arm();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let data = cli.data;
    runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => commands::up::run(args, data).await,
            Command::Emit(args) => commands::emit::run(args, data).await,
            Command::Stream(args) => commands::stream::run(args, data).await,
            Command::Batch(args) => commands::batch::run(args, data).await,
            Command::Replay(args) => commands::replay::run(args, data).await,
            Command::Sql(args) => commands::sql::run(args, data).await,
            Command::Report(args) => commands::report::run(args, data).await,
            Command::Load(args) => commands::load::run(args, data).await,
            Command::Query(args) => commands::query::run(args, data).await,
            Command::Collect(args) => commands::collect::run(args, data).await,
            Command::Keys(args) => commands::keys::run(args, data),
            Command::Users(args) => commands::users::users(args, data),
            Command::Tokens(args) => commands::users::tokens(args, data),
            Command::Eval(args) => commands::eval::run(args, data).await,
            Command::Fraud(args) => commands::fraud::run(args, data).await,
            Command::Erase(args) => commands::erase::run(args, data).await,
            Command::Config(args) => commands::config::run(args, data).await,
            Command::Lake(args) => commands::lake::run(args, data).await,
        }
    })
}
