//! Real-time fraud scoring (being built).
