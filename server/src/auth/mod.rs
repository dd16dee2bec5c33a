//! Who may do what: users with a role, API tokens, and the guard in front of every route.
//!
//! - [`Role`]: `analyst` (SQL over every table and view), `marketing` (reports, dashboards, and
//!   SQL over the catalog without personal data), `storefront` (the live endpoints the shop
//!   calls), `admin` (everything, including users, tokens and keys).
//! - [`Access`]: what a route needs. Every route is declared with one through [`Routes`], so a
//!   route cannot exist without a rule; a request whose route has no rule is refused (fail
//!   closed).
//! - [`AuthStore`]: users and tokens in a redb file beside the data (`DATA_DIR/auth.redb`),
//!   opened in redb's multi-writer mode so that `shoplake users` / `shoplake tokens` work while
//!   the servers run. A token is shown once; the file keeps its SHA-256. A password is kept as
//!   its SCRAM-SHA-256 salted password (what the Postgres wire protocol's SCRAM needs), never in
//!   clear.
//! - [`Guard`]: the middleware. `Authorization: Bearer TOKEN` (or Basic with the token as the
//!   password, for tools that only speak Basic); 401 with `WWW-Authenticate` when there is no
//!   valid token, 403 when the role may not use the route; and requests whose `Host` is not an
//!   allowed one are refused (DNS rebinding). A browser signs in instead ([`session`]): an
//!   `HttpOnly`, `SameSite=Strict` cookie that the same guard checks, with a CSRF token for
//!   requests that change something.

mod guard;
pub mod session;
mod store;

pub use guard::{AuthConfig, Guard, RouteRule, Routes};
pub use store::{AuthError, AuthStore, NewToken, SCRAM_ITERATIONS, TokenInfo, UserInfo};

use serde::{Deserialize, Serialize};

/// A user's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Analyst,
    Marketing,
    Storefront,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Analyst,
        Role::Marketing,
        Role::Storefront,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Analyst => "analyst",
            Role::Marketing => "marketing",
            Role::Storefront => "storefront",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may use a route that needs `access`.
    pub fn allows(self, access: Access) -> bool {
        match access {
            Access::Open | Access::WriteKey => true,
            Access::Admin => self == Role::Admin,
            Access::Metrics => matches!(self, Role::Admin | Role::Analyst),
            Access::Sql | Access::Reports => {
                matches!(self, Role::Admin | Role::Analyst | Role::Marketing)
            }
            Access::Storefront => matches!(self, Role::Admin | Role::Storefront),
        }
    }

    /// Whether the role sees personal data (ids, IPs, e-mails, raw bad rows) in SQL.
    pub fn sees_personal_data(self) -> bool {
        matches!(self, Role::Admin | Role::Analyst)
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a role: analyst, marketing, storefront or admin"))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Anyone: `/health`, `/ready`.
    Open,
    /// The collector's routes: the write key in the request is checked by the collector.
    WriteKey,
    /// `/metrics` (unless configured open).
    Metrics,
    /// SQL (`/v1/sql`, `/v1/tables`); marketing gets the catalog without personal data.
    Sql,
    /// Reports and dashboards.
    Reports,
    /// The storefront's live endpoints.
    Storefront,
    /// Users, tokens, keys, maintenance.
    Admin,
}

/// Who is asking: put in the request's extensions by the [`Guard`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    /// The token's id (not the token).
    pub token_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_the_issue_says() {
        use Access::*;
        let table = [
            (Role::Analyst, [Sql, Reports, Metrics], [Storefront, Admin]),
            (Role::Marketing, [Sql, Reports, Open], [Storefront, Admin]),
            (
                Role::Storefront,
                [Storefront, Open, WriteKey],
                [Sql, Reports],
            ),
        ];
        for (role, allowed, refused) in table {
            for a in allowed {
                assert!(role.allows(a), "{role} {a:?}");
            }
            for a in refused {
                assert!(!role.allows(a), "{role} {a:?}");
            }
        }
        assert!(!Role::Storefront.allows(Metrics));
        assert!(!Role::Marketing.allows(Metrics));
        for a in [Open, WriteKey, Metrics, Sql, Reports, Storefront, Admin] {
            assert!(Role::Admin.allows(a));
        }
        assert!(!Role::Marketing.sees_personal_data());
        assert_eq!("analyst".parse::<Role>(), Ok(Role::Analyst));
        assert!("root".parse::<Role>().unwrap_err().contains("admin"));
    }
}
