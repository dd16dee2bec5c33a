//! Fault points: the places where a crash is most likely to lose or double data — a staging
//! flush before its checkpoint, a lake commit before its staging files are deleted, a lease
//! write — named so that the fault campaign (`scripts/chaos`, ARCHITECTURE.md *Reliability*)
//! can kill a process exactly there, and prove that it did.
//!
//! A point does nothing unless the `FAILPOINTS` environment variable names it (the `fail`
//! crate's syntax, as TiKV uses it): `FAILPOINTS='stage.staged=2*off->return'` lets the first
//! two passes through `stage.staged` go and ends the process at the third. The process then
//! prints `shoplake fault: killed at stage.staged` on stderr and aborts: no destructor runs,
//! nothing is flushed or closed, as after a SIGKILL or a power cut. Checking a point that is
//! not named costs a read lock and a map lookup, and points sit only on paths that run once
//! per flush or commit.
//!
//! The points: `stage.staged` (a batch's staging files written, its checkpoint not yet taken),
//! `stage.checkpoint` (the checkpoint's state commit about to start), `lease.renew` (the lease
//! objects of a checkpoint about to be written), `compact.committed` (a table's rows committed
//! to the lake, the round's other tables and the staging files not yet done),
//! `compact.staging.delete` (every commit of a round done, its first staging file deleted, the
//! others not), `optimize.committed` (a table's compacted files committed, the next table not
//! yet optimized).

/// Ends the process here, as a crash would, when `FAILPOINTS` asks for it (see the module docs).
pub fn point(name: &str) {
    if fail::eval(name, |_| ()).is_some() {
        eprintln!("shoplake fault: killed at {name}");
        std::process::abort();
    }
}

/// Reads `FAILPOINTS` once, at the start of a process; the points stay armed while the value
/// lives. A `FAILPOINTS` that does not parse ends the process with its error.
pub fn arm() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}
