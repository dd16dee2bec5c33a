//! Live product recommendations (being built).
