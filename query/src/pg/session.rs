//! A connection's life: logging in (SCRAM against the platform's users, TLS when required),
//! cancel requests, errors.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::pgwire;
use futures::Sink;
use parking_lot::Mutex;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use rand::RngCore;
use shoplake_server::auth::{Access, Guard};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// The platform's users as SCRAM needs them: the stored salt and salted password of a user
/// whose role may run SQL.
#[derive(Debug)]
pub(super) struct Users {
    guard: Arc<Guard>,
}

impl Users {
    pub(super) fn new(guard: Arc<Guard>) -> Self {
        Users { guard }
    }
}

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let name = login.user().unwrap_or_default();
        let user = self.guard.user(name);
        let stored = user.as_ref().and_then(|u| {
            if !u.role.allows(Access::Sql) {
                info!(user = name, role = %u.role, "Postgres login refused: the role may not run SQL");
                return None;
            }
            if u.disabled_at.is_some() {
                return None;
            }
            let scram = u.scram.as_ref()?;
            Some((unhex(&scram.salt)?, unhex(&scram.salted_password)?))
        });
        Ok(match stored {
            Some((salt, salted)) => Password::new(Some(salt), salted),
            // Unknown users, users without a password and roles without SQL fail where a wrong
            // password fails (the client's proof does not match), so that a login attempt does
            // not tell which users exist.
            None => {
                debug!(user = name, "Postgres login for no SQL user");
                let (mut salt, mut salted) = (vec![0u8; 16], vec![0u8; 32]);
                rand::rng().fill_bytes(&mut salt);
                rand::rng().fill_bytes(&mut salted);
                Password::new(Some(salt), salted)
            }
        })
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Logging in: refuses plain text when TLS is required, then SCRAM-SHA-256; once in, the
/// connection is registered for cancel requests.
pub(super) struct Startup {
    pub(super) inner: SASLAuthStartupHandler<DefaultServerParameterProvider>,
    pub(super) require_tls: bool,
    pub(super) cancels: Arc<Cancels>,
}

#[async_trait]
impl pgwire::api::auth::StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if matches!(message, PgWireFrontendMessage::Startup(_))
            && self.require_tls
            && !client.is_secure()
        {
            return Err(fatal(
                "28000",
                "this server requires TLS: connect with sslmode=require (query.tls = \"required\")",
            ));
        }
        self.inner.on_startup(client, message).await?;
        if matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            let (pid, secret) = client.pid_and_secret_key();
            let key = (pid, secret.to_bytes().to_vec());
            client
                .session_extensions()
                .insert(self.cancels.register(key.clone()));
            client.session_extensions().insert(ConnectionKey(key));
        }
        Ok(())
    }
}

/// A connection's cancel key (its pid and secret), in its session extensions.
pub(super) struct ConnectionKey(pub(super) (i32, Vec<u8>));

/// The running statement of each connection, by its cancel key: a CancelRequest stops it.
#[derive(Default)]
pub(super) struct Cancels {
    running: Mutex<HashMap<(i32, Vec<u8>), CancellationToken>>,
}

impl Cancels {
    fn register(self: &Arc<Self>, key: (i32, Vec<u8>)) -> Registration {
        self.running
            .lock()
            .insert(key.clone(), CancellationToken::new());
        Registration {
            cancels: self.clone(),
            key,
        }
    }

    /// A token for the connection's next statement (a cancel request that came between two
    /// statements does not stop the next one).
    pub(super) fn next_statement(&self, client: &impl ClientInfo) -> CancellationToken {
        let token = CancellationToken::new();
        if let Some(key) = client.session_extensions().get::<ConnectionKey>() {
            self.running.lock().insert(key.0.clone(), token.clone());
        }
        token
    }
}

#[async_trait]
impl CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let key = (request.pid, request.secret_key.to_bytes().to_vec());
        if let Some(token) = self.running.lock().get(&key) {
            info!(
                pid = request.pid,
                "cancel request: stopping the connection's statement"
            );
            token.cancel();
        }
    }
}

/// Removes a connection's cancel key when the connection ends.
pub(super) struct Registration {
    cancels: Arc<Cancels>,
    key: (i32, Vec<u8>),
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.cancels.running.lock().remove(&self.key);
    }
}

/// Errors sent to clients are logged at debug (the client has them; most are its SQL).
pub(super) struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        debug!(peer = %client.socket_addr(), %error, "Postgres error sent");
    }
}

/// An error in Postgres's words: `code` is its SQLSTATE.
pub(super) fn error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message.into(),
    )))
}

/// An error that ends the connection.
pub(super) fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message.into(),
    )))
}

/// Answers a connection over `query.max_connections` as Postgres does: FATAL 53300, then closes.
pub(super) async fn refuse_busy(mut socket: tokio::net::TcpStream) {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "53300"),
        (
            b'M',
            "sorry, too many clients already (query.max_connections)",
        ),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(&fields);
    let _ = socket.write_all(&message).await;
    let _ = socket.shutdown().await;
}
