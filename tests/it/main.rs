//! End to end: the `shoplake` binary, started as a user would start it.

mod e2e;
