//! One module per subcommand: an `Args` struct and an `async fn run`.

pub mod batch;
pub mod collect;
pub mod config;
pub mod emit;
pub mod erase;
pub mod eval;
pub mod fraud;
pub mod keys;
pub mod lake;
pub mod load;
pub mod query;
pub mod replay;
pub mod report;
pub mod sql;
pub mod stream;
pub mod up;
pub mod users;
