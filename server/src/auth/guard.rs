//! The guard in front of every route, and the route builder that makes a rule part of a route.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::session::{self, CookieCheck};
use super::store::{AuthStore, Snapshot, hash_token};
use super::{Access, Principal};
use crate::ApiError;

/// The `[auth]` table of the pipeline config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Names a request's `Host` may carry, besides IP literals and `localhost` (which a DNS
    /// rebinding attack cannot forge): the names the servers are reached by, with or without a
    /// port (`"shop-analytics.internal"`, `"lake.example.com:8080"`).
    pub allowed_hosts: Vec<String>,
    /// Serve `/metrics` without a token (a Prometheus on a trusted network).
    pub metrics_open: bool,
    /// How soon a new, revoked or expired token or a disabled user takes effect in the servers.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allowed_hosts: Vec::new(),
            metrics_open: false,
            refresh: Duration::from_secs(2),
        }
    }
}

/// A route and what it needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteRule {
    pub method: String,
    pub path: String,
    pub access: Access,
}

/// A router whose every route carries its rule: the only way the crates declare routes, so that
/// no route exists without one.
pub struct Routes<S = ()> {
    router: Router<S>,
    rules: Vec<RouteRule>,
}

impl<S> Default for Routes<S>
where
    S: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Routes {
            router: Router::new(),
            rules: Vec::new(),
        }
    }
}

impl<S> Routes<S>
where
    S: Clone + Send + Sync + 'static,
{
    pub fn new() -> Self {
        Self::default()
    }

    fn add(mut self, method: Method, path: &str, access: Access) -> Self {
        self.rules.push(RouteRule {
            method: method.to_string(),
            path: path.to_owned(),
            access,
        });
        self
    }

    /// `GET path`, needing `access`.
    pub fn get<H, T>(self, path: &str, handler: H, access: Access) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let mut this = self.add(Method::GET, path, access);
        this.router = this.router.route(path, axum::routing::get(handler));
        this
    }

    /// `POST path`, needing `access`.
    pub fn post<H, T>(self, path: &str, handler: H, access: Access) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let mut this = self.add(Method::POST, path, access);
        this.router = this.router.route(path, axum::routing::post(handler));
        this
    }

    /// `method path` served by `method_router` (which must serve that method), needing `access`.
    pub fn route(
        self,
        method: Method,
        path: &str,
        method_router: axum::routing::MethodRouter<S>,
        access: Access,
    ) -> Self {
        let mut this = self.add(method, path, access);
        this.router = this.router.route(path, method_router);
        this
    }

    /// The router changed by `f`, for layers (CORS) around the routes; routes are added only
    /// through [`Routes::get`], [`Routes::post`] and [`Routes::route`], which take their rule.
    pub fn map_router(mut self, f: impl FnOnce(Router<S>) -> Router<S>) -> Self {
        self.router = f(self.router);
        self
    }

    /// The routes with their state given.
    pub fn with_state<S2>(self, state: S) -> Routes<S2> {
        Routes {
            router: self.router.with_state(state),
            rules: self.rules,
        }
    }
}

impl Routes<()> {
    /// Both route sets (a path in both panics, as axum's merge does).
    pub fn merge(mut self, other: Routes<()>) -> Routes<()> {
        self.router = self.router.merge(other.router);
        self.rules.extend(other.rules);
        self
    }

    pub fn rules(&self) -> &[RouteRule] {
        &self.rules
    }

    /// The router, every route behind `guard`.
    pub fn guarded(self, guard: Arc<Guard>) -> Router {
        let rules: HashMap<String, Access> = self
            .rules
            .iter()
            .map(|r| (r.path.clone(), r.access))
            .collect();
        let state = Arc::new(Checked { guard, rules });
        self.router
            .layer(axum::middleware::from_fn_with_state(state, check))
    }

    /// [`Routes::guarded`], with `GET /v1/routes` listing every route and its access (admins).
    pub fn guarded_with_listing(self, guard: Arc<Guard>) -> Router {
        crate::ops::with_listing(self).guarded(guard)
    }

    /// The router without a guard: for tests of a crate's handlers alone.
    pub fn unguarded(self) -> Router {
        self.router
    }
}

/// Tokens and users as the servers hold them, re-read every `refresh`.
pub struct Guard {
    store: AuthStore,
    config: AuthConfig,
    snapshot: RwLock<Snapshot>,
    next_refresh: AtomicI64,
    /// When the store was last read (µs).
    last_read: AtomicI64,
    /// Signed-in browsers (the dashboards).
    sessions: super::session::Sessions,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Guard {
    pub fn new(store: AuthStore, config: AuthConfig) -> Result<Self, super::AuthError> {
        let snapshot = store.snapshot()?;
        Ok(Guard {
            store,
            config,
            snapshot: RwLock::new(snapshot),
            next_refresh: AtomicI64::new(0),
            last_read: AtomicI64::new(0),
            sessions: super::session::Sessions::default(),
        })
    }

    /// Whether any user exists (a fresh install has none: `shoplake up` says how to make one).
    pub fn has_users(&self) -> bool {
        self.refresh();
        !self.snapshot.read().users.is_empty()
    }

    fn refresh(&self) {
        let now = chrono::Utc::now().timestamp_micros();
        let due = self.next_refresh.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        self.refresh_now(now, due);
    }

    /// Re-reads the store now, unless another request is doing it.
    fn refresh_now(&self, now: i64, due: i64) {
        let step = i64::try_from(self.config.refresh.as_micros()).unwrap_or(i64::MAX);
        if self
            .next_refresh
            .compare_exchange(
                due,
                now.saturating_add(step),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return; // another request refreshes
        }
        self.last_read.store(now, Ordering::Relaxed);
        match self.store.snapshot() {
            Ok(snapshot) => *self.snapshot.write() = snapshot,
            Err(e) => {
                warn!(error = %e, "users and tokens could not be re-read; the last ones stay")
            }
        }
    }

    /// Whether the store's file was written since the last read (with a second of slack for
    /// file systems whose times are coarse).
    fn store_changed(&self) -> bool {
        let modified = std::fs::metadata(self.store.path())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_micros()).ok());
        modified.is_none_or(|m| m + 1_000_000 >= self.last_read.load(Ordering::Relaxed))
    }

    /// The principal a token names, if it is live and its user enabled.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        self.refresh();
        let hash = hash_token(token);
        // A token made since the last read (`shoplake tokens create` a moment ago) works at once:
        // an unknown token re-reads the store when the file changed since the last read (one
        // `stat` per unknown token, however many a caller sends).
        if !self.snapshot.read().tokens.contains_key(&hash) && self.store_changed() {
            let now = chrono::Utc::now().timestamp_micros();
            self.refresh_now(now, self.next_refresh.load(Ordering::Relaxed));
        }
        let snapshot = self.snapshot.read();
        let info = snapshot.tokens.get(&hash)?;
        if !info.is_live(chrono::Utc::now()) {
            return None;
        }
        let user = snapshot.users.get(&info.user)?;
        Some(Principal {
            user: user.name.clone(),
            role: user.role,
            token_id: info.token_id.clone(),
        })
    }

    /// The principal a user name and password name (the Postgres wire and Flight SQL's basic
    /// handshake), if the user is enabled and has that password.
    pub fn authenticate_password(&self, user: &str, password: &str) -> Option<Principal> {
        self.refresh();
        let snapshot = self.snapshot.read();
        let info = snapshot.users.get(user)?;
        info.scram
            .as_ref()
            .is_some_and(|s| s.verify(password))
            .then(|| Principal {
                user: info.name.clone(),
                role: info.role,
                token_id: String::new(),
            })
    }

    /// An enabled user's record (the Postgres wire's SCRAM needs its salted password).
    pub fn user(&self, name: &str) -> Option<super::UserInfo> {
        self.refresh();
        self.snapshot.read().users.get(name).cloned()
    }

    /// Whether a request's `Host` may be served: an IP literal, `localhost`, or a configured
    /// name (DNS rebinding: a page of another site, resolved to this address, carries its own
    /// name).
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        let Some(host) = host else {
            return true; // HTTP/1.0 without Host: no browser sends that
        };
        let name = host_name(host);
        name.eq_ignore_ascii_case("localhost")
            || name.parse::<std::net::IpAddr>().is_ok()
            || self.config.allowed_hosts.iter().any(|allowed| {
                allowed.eq_ignore_ascii_case(host) || allowed.eq_ignore_ascii_case(name)
            })
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    pub(crate) fn sessions(&self) -> &super::session::Sessions {
        &self.sessions
    }
}

/// `host` without its port; `[::1]:8080` → `::1`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The token of a request: `Authorization: Bearer T`, or Basic with T as the password.
fn token_of(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text.split_once(':').map(|(_, token)| token.to_owned());
    }
    None
}

struct Checked {
    guard: Arc<Guard>,
    rules: HashMap<String, Access>,
}

/// The middleware: host, then the route's rule, then the token and role.
async fn check(
    State(checked): State<Arc<Checked>>,
    matched: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response {
    let guard = &checked.guard;
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    if !guard.host_allowed(host) {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "unknown_host",
            format!(
                "this server does not answer for Host {:?}; add it to [auth] allowed_hosts",
                host.unwrap_or_default()
            ),
        )
        .into_response();
    }
    let Some(matched) = matched else {
        // No route: the fallback answers 404.
        return next.run(request).await;
    };
    let Some(&access) = checked.rules.get(matched.as_str()) else {
        // Fail closed: a route that slipped in without a rule answers nothing.
        warn!(
            route = matched.as_str(),
            "route without an access rule refused"
        );
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "no_rule",
            format!("the route {} has no access rule", matched.as_str()),
        )
        .into_response();
    };
    let open = matches!(access, Access::Open | Access::WriteKey)
        || (access == Access::Metrics && guard.config.metrics_open);
    if open {
        return next.run(request).await;
    }
    let principal = match token_of(request.headers()) {
        None => match session::cookie_of(request.headers()) {
            Some(cookie) => match guard.check_cookie(cookie, request.method(), request.headers()) {
                CookieCheck::Valid(p) => p,
                CookieCheck::NoCsrf => return session::csrf_refused(),
                CookieCheck::Invalid => {
                    return ApiError::new(
                            StatusCode::UNAUTHORIZED,
                            "unauthenticated",
                            "the session has ended (signed out, expired, the server restarted or the user was disabled): sign in again",
                        )
                        .into_response();
                }
            },
            None => {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "this route needs a token: Authorization: Bearer <token> (`shoplake tokens create --user NAME`), or a signed-in session (POST /v1/session)",
                )
                .with_challenge("Bearer realm=\"shoplake\"")
                .into_response();
            }
        },
        Some(token) => match guard.authenticate(&token) {
            Some(p) => p,
            None => {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "the token is unknown, revoked or expired, or its user is disabled",
                )
                .with_challenge("Bearer realm=\"shoplake\", error=\"invalid_token\"")
                .into_response();
            }
        },
    };
    if !principal.role.allows(access) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the role {} of user {} may not use {} (it needs {})",
                principal.role,
                principal.user,
                matched.as_str(),
                serde_json::to_value(access)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
        )
        .into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_tokens_are_read_as_clients_send_them() {
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("example.com"), "example.com");
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer slt_abc".parse().unwrap());
        assert_eq!(token_of(&headers).as_deref(), Some("slt_abc"));
        let basic = base64::engine::general_purpose::STANDARD.encode("grafana:slt_def");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        assert_eq!(token_of(&headers).as_deref(), Some("slt_def"));
    }
}
