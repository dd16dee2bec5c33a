//! TLS of the SQL listeners (Postgres wire, Flight SQL): the certificate and key of `[query]`.

use std::sync::Arc;

use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, QueryConfig, TlsMode};

/// The listeners' TLS, read once at start: a missing or unreadable file stops the command with
/// its path, rather than a listener that silently speaks plain text.
#[derive(Clone)]
pub struct Tls {
    pub mode: TlsMode,
    /// The certificate chain as PEM (SCRAM channel binding and tonic take PEM).
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("mode", &self.mode).finish()
    }
}

impl Tls {
    /// The TLS `config` asks for; None when it is off.
    pub fn from_config(config: &QueryConfig) -> Result<Option<Self>, Error> {
        let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
            if config.tls == TlsMode::Off {
                return Ok(None);
            }
            return Err(Error::BadConfig {
                detail: "query.tls needs query.tls_cert and query.tls_key".into(),
            });
        };
        if config.tls == TlsMode::Off {
            return Ok(None);
        }
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| Error::BadConfig {
                detail: format!("reading {}: {e}", path.display()),
            })
        };
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let bad =
            |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| Error::BadConfig {
                detail: format!("{} is not a PEM {what}: {e}", path.display()),
            };
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("certificate chain", cert, &e))?;
        if chain.is_empty() {
            return Err(bad("certificate chain", cert, &"no certificate in it"));
        }
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad("key", key, &e))?;
        // The ring provider named here, not the process default: the tree holds two providers.
        let mut server = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
            .map_err(|e| bad("certificate and key pair", cert, &e))?;
        // Postgres 17 clients may open TLS directly (sslnegotiation=direct) with this ALPN.
        server.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Some(Tls {
            mode: config.tls,
            cert_pem,
            key_pem,
            config: Arc::new(server),
        }))
    }

    pub fn required(&self) -> bool {
        self.mode == TlsMode::Required
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}
