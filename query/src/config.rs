//! What the query service allows a statement: the `[query]` table of the pipeline config file.

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// Bounds on every statement the service runs, whoever asks (HTTP, Postgres wire, Flight SQL, the
/// `shoplake sql` command). Every field has a default; a config file sets only what it changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// A statement still running after this long is stopped (HTTP 408).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Memory all running statements may hold together (DataFusion's memory pool: sorts, joins
    /// and aggregations spill to disk or fail past it).
    pub memory_limit: ByteSize,
    /// Memory one statement may hold (within `memory_limit`).
    pub query_memory_limit: ByteSize,
    /// Most rows of one answer. A larger answer is refused (HTTP 413), not cut, unless the client
    /// asked for a limit of its own.
    pub max_rows: u64,
    /// Most bytes of one answer as sent (after encoding), with the same rule.
    pub max_bytes: ByteSize,
    /// Statements that run at once; more wait in the queue.
    pub max_concurrent: usize,
    /// Statements that may wait for a turn; one more is refused at once (HTTP 429).
    pub queue: usize,
    /// How long a statement waits for its turn before it is refused (HTTP 429).
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Threads that run statements (0: one per core). They are their own runtime, apart from
    /// ingestion's.
    pub threads: usize,
    /// Run statements at a lower CPU priority than ingestion (nice 10), so that heavy queries in
    /// `shoplake up` take the CPU ingestion leaves, not the CPU it needs.
    pub low_priority: bool,
    /// Answers kept for repeated statements, in bytes of Arrow memory (0: no cache). An answer
    /// is kept until a table it reads gets a new Delta version.
    pub cache_size: ByteSize,
    /// TLS of the Postgres wire and Flight SQL listeners: `off`, `on` (offered: a client that
    /// asks for TLS gets it, one that does not is served in plain text) or `required` (a client
    /// without TLS is refused, never served in plain text). `on` and `required` need `tls_cert`
    /// and `tls_key`.
    pub tls: TlsMode,
    /// PEM file of the certificate chain the listeners present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of its private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Connections each of the Postgres wire and Flight SQL listeners holds at once; one more is
    /// refused with an error that says so.
    pub max_connections: usize,
    /// A folder of the store's own reports (`NAME.sql`, with the header of `sql/reports`): each
    /// is served beside the built-in ones, and one named like a built-in one replaces it. Read
    /// at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reports_dir: Option<PathBuf>,
}

/// Whether the SQL listeners speak TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain text only (the default: the listeners bind 127.0.0.1).
    #[default]
    Off,
    /// TLS for clients that ask for it; plain text for the others.
    On,
    /// TLS or nothing.
    Required,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: Duration::from_secs(300),
            memory_limit: ByteSize::gib(2),
            query_memory_limit: ByteSize::gib(1),
            max_rows: 5_000_000,
            max_bytes: ByteSize::gib(2),
            max_concurrent: 4,
            queue: 32,
            queue_timeout: Duration::from_secs(10),
            threads: 0,
            low_priority: true,
            cache_size: ByteSize::mib(256),
            tls: TlsMode::Off,
            tls_cert: None,
            tls_key: None,
            max_connections: 64,
            reports_dir: None,
        }
    }
}

impl QueryConfig {
    /// A config that cannot work, in the user's words (`shoplake config check`).
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrent == 0 {
            return Err("query.max_concurrent = 0 would run no statement at all".into());
        }
        if self.query_memory_limit > self.memory_limit {
            return Err(format!(
                "query.query_memory_limit ({}) is above query.memory_limit ({})",
                self.query_memory_limit, self.memory_limit
            ));
        }
        if self.tls != TlsMode::Off && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return Err(format!(
                "query.tls = \"{}\" needs query.tls_cert and query.tls_key (PEM files); without \
                 them no client could connect with TLS",
                if self.tls == TlsMode::Required {
                    "required"
                } else {
                    "on"
                }
            ));
        }
        if self.max_connections == 0 {
            return Err("query.max_connections = 0 would refuse every SQL client".into());
        }
        if self.timeout.is_zero() {
            return Err("query.timeout = 0 would stop every statement at once".into());
        }
        Ok(())
    }

    /// Bytes as `usize`, saturating.
    pub(crate) fn bytes(size: ByteSize) -> usize {
        usize::try_from(size.as_u64()).unwrap_or(usize::MAX)
    }
}
