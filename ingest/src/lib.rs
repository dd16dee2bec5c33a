//! shoplake-ingest
