//! The query service over a real lake: a seeded simulation put through the local stream, the
//! streaming stage and compaction, then the golden SQL of `sql/tests/*.slt`, the HTTP API, and the
//! `identities` table against the links the simulator emitted; compaction of NDJSON staging (the
//! Firehose events sink) against Parquet staging; optimize's sorted rewrite of a day.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod bounds;
mod exactly_once;
mod fuzz;
mod golden;
mod http;
mod identities;
mod lake;
mod lifecycle;
mod optimize;
mod orders;
mod reports;
mod stage;
mod staging;
