//! The query service over a real lake: a seeded simulation put through the local stream, the
//! streaming stage and compaction, then the golden SQL of `sql/tests/*.slt` and the HTTP API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod golden;
mod http;
mod lake;
