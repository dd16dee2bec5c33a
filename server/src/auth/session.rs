//! Browser sessions: what the dashboards sign in with.
//!
//! `POST /v1/session` with `{"user", "password"}` checks the password (the same SCRAM verifier
//! the Postgres wire uses) and answers `{"user", "role", "csrf"}` with a cookie
//! `shoplake_session` that is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's
//! page sends it) and `Secure` behind a TLS proxy (`X-Forwarded-Proto: https`). Every route then
//! takes the cookie as it takes a token; a request with the cookie whose method changes something
//! (anything but GET and HEAD) must also carry `X-CSRF-Token` with the session's `csrf` value,
//! which only a page of this origin can read (from the sign-in answer or `GET /v1/session`).
//! `DELETE /v1/session` signs out.
//!
//! Sessions live in the server's memory (a restart signs everyone out) and end after
//! [`SESSION_LIFETIME`]; the user's role and whether they are enabled are read again on every
//! request, so disabling a user ends their sessions at the next refresh of the guard.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use rand::RngCore;
use serde_json::json;

use super::store::{hash_token, hex};
use super::{Access, Guard, Principal, Routes};
use crate::ApiError;

/// The cookie's name.
pub const COOKIE: &str = "shoplake_session";
/// The header a cookie-authenticated request that changes something carries.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts from sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest go first beyond it.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Clone, Debug)]
struct Session {
    user: String,
    csrf: String,
    started: Instant,
}

/// The sessions of one server, by the SHA-256 of their cookie.
#[derive(Debug, Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<String, Session>>,
}

fn secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

impl Sessions {
    /// Starts a session for `user`; returns the cookie's value and the CSRF token.
    fn start(&self, user: &str) -> (String, String) {
        let (cookie, csrf) = (secret(), secret());
        let mut sessions = self.by_hash.lock();
        sessions.retain(|_, s| s.started.elapsed() < SESSION_LIFETIME);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.started)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            hash_token(&cookie),
            Session {
                user: user.to_owned(),
                csrf: csrf.clone(),
                started: Instant::now(),
            },
        );
        (cookie, csrf)
    }

    /// The live session a cookie names: its user and CSRF token.
    fn get(&self, cookie: &str) -> Option<(String, String)> {
        let hash = hash_token(cookie);
        let mut sessions = self.by_hash.lock();
        let session = sessions.get(&hash)?;
        if session.started.elapsed() >= SESSION_LIFETIME {
            sessions.remove(&hash);
            return None;
        }
        Some((session.user.clone(), session.csrf.clone()))
    }

    fn end(&self, cookie: &str) {
        self.by_hash.lock().remove(&hash_token(cookie));
    }
}

/// The value of the session cookie a request carries.
pub(crate) fn cookie_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then_some(value)
        })
}

/// What a session cookie is worth on a request.
pub(crate) enum CookieCheck {
    /// A live session whose user is enabled, and (for a method that changes something) the
    /// right CSRF token.
    Valid(Principal),
    /// A live session, but a changing request without its CSRF token.
    NoCsrf,
    /// No live session of an enabled user.
    Invalid,
}

impl Guard {
    /// Checks the session cookie of a request.
    pub(crate) fn check_cookie(
        &self,
        cookie: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> CookieCheck {
        let Some((user, csrf)) = self.sessions().get(cookie) else {
            return CookieCheck::Invalid;
        };
        let Some(info) = self.user(&user) else {
            return CookieCheck::Invalid;
        };
        let safe = matches!(*method, Method::GET | Method::HEAD);
        let token = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !safe && token != Some(csrf.as_str()) {
            return CookieCheck::NoCsrf;
        }
        CookieCheck::Valid(Principal {
            user: info.name,
            role: info.role,
            token_id: String::new(),
        })
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    user: String,
    password: String,
}

fn set_cookie(headers: &HeaderMap, value: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    ))
    .ok()
}

fn signed_in(principal: &Principal, csrf: &str) -> serde_json::Value {
    json!({"user": principal.user, "role": principal.role, "csrf": csrf})
}

/// `POST /v1/session`: signs in with a user's name and password.
async fn sign_in(
    State(guard): State<Arc<Guard>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // Bytes, not a `String` extractor: a body that is not UTF-8 gets this answer, not axum's
    // plain-text refusal.
    let Ok(form) = serde_json::from_slice::<SignIn>(&body) else {
        return ApiError::bad_request(
            "bad_request",
            "the body is JSON of the form {\"user\": \"NAME\", \"password\": \"…\"}",
        )
        .into_response();
    };
    let Some(principal) = guard.authenticate_password(&form.user, &form.password) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "unknown user or wrong password (an admin sets one with `shoplake users password NAME`)",
        )
        .into_response();
    };
    if !principal.role.allows(Access::Reports) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the role {} may not use the dashboards (they need marketing, analyst or admin)",
                principal.role
            ),
        )
        .into_response();
    }
    let (cookie, csrf) = guard.sessions().start(&principal.user);
    let mut response = axum::Json(signed_in(&principal, &csrf)).into_response();
    if let Some(value) = set_cookie(&headers, &cookie, SESSION_LIFETIME.as_secs()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn not_signed_in() -> Response {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "no_session",
        "not signed in (POST /v1/session with a user and password)",
    )
    .into_response()
}

/// 204 and the cookie cleared.
fn signed_out(headers: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(value) = set_cookie(headers, "", 0) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `GET /v1/session`: who the cookie signs in, and the CSRF token for changing requests.
async fn current(State(guard): State<Arc<Guard>>, headers: HeaderMap) -> Response {
    let Some(cookie) = cookie_of(&headers) else {
        return not_signed_in();
    };
    let Some((user, csrf)) = guard.sessions().get(cookie) else {
        return not_signed_in();
    };
    match guard.user(&user) {
        Some(info) => {
            axum::Json(json!({"user": info.name, "role": info.role, "csrf": csrf})).into_response()
        }
        None => not_signed_in(),
    }
}

/// `DELETE /v1/session`: signs out (needs the CSRF token, as any changing request). Without a
/// live session there is nothing to end: 204 as well.
async fn sign_out(State(guard): State<Arc<Guard>>, headers: HeaderMap) -> Response {
    let Some(cookie) = cookie_of(&headers) else {
        return signed_out(&headers);
    };
    match guard.check_cookie(cookie, &Method::DELETE, &headers) {
        CookieCheck::Valid(_) => guard.sessions().end(cookie),
        CookieCheck::NoCsrf => return csrf_refused(),
        CookieCheck::Invalid => {}
    }
    signed_out(&headers)
}

pub(crate) fn csrf_refused() -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf",
        format!("a request with the session cookie that changes something needs the header {CSRF_HEADER} (from GET /v1/session)"),
    )
    .into_response()
}

/// `/v1/session`: sign in, who am I, sign out. Open routes: the handlers check the cookie.
pub fn router(guard: Arc<Guard>) -> Routes {
    Routes::new()
        .post("/v1/session", sign_in, Access::Open)
        .route(
            Method::GET,
            "/v1/session",
            axum::routing::get(current),
            Access::Open,
        )
        .route(
            Method::DELETE,
            "/v1/session",
            axum::routing::delete(sign_out),
            Access::Open,
        )
        .with_state(guard)
}

#[cfg(test)]
mod tests {
    use super::super::Role;
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; shoplake_session=abc123; x=1"),
        );
        assert_eq!(cookie_of(&headers), Some("abc123"));
        headers.insert(header::COOKIE, HeaderValue::from_static("other=1"));
        assert_eq!(cookie_of(&headers), None);
    }

    #[test]
    fn sessions_end_when_signed_out() {
        let sessions = Sessions::default();
        let (cookie, csrf) = sessions.start("mark");
        assert_eq!(sessions.get(&cookie), Some(("mark".to_owned(), csrf)));
        assert_eq!(sessions.get("forged"), None);
        sessions.end(&cookie);
        assert_eq!(sessions.get(&cookie), None);
    }

    #[test]
    fn roles_that_may_sign_in() {
        assert!(Role::Marketing.allows(Access::Reports));
        assert!(!Role::Storefront.allows(Access::Reports));
    }
}
