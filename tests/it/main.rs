//! End to end: the `shoplake` binary, started as a user would start it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod auth;
mod bench;
mod bucket;
mod chaos;
mod collector_sdk;
mod dashboards;
mod e2e;
mod erasure;
mod kinesis;
mod live;
mod pg;
mod reports;
