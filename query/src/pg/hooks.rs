//! Statements that are not queries but that clients send anyway: `SET` and `SHOW` of session
//! settings, transactions, `DISCARD ALL`, `DEALLOCATE`, `RESET`. None touches the lake or the
//! engine every client shares.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire;
use pgwire::api::ClientInfo;
use pgwire::api::results::{Response, Tag};
use pgwire::error::PgWireResult;
use tracing::debug;

/// The hooks, in the order they are asked: transactions first (a failed transaction refuses
/// everything until it ends), then settings, then the rest.
pub(super) fn all() -> Vec<Arc<dyn QueryHook>> {
    vec![
        Arc::new(Savepoints),
        Arc::new(TransactionStatementHook),
        Arc::new(Settings),
        Arc::new(Control),
    ]
}

/// The settings a connection may change: kept in the connection (its client metadata) by
/// datafusion-postgres's `SetShowHook`, which also answers `SHOW`. Every other `SET` is answered
/// `SET` and ignored: `SetShowHook` would run it on the engine every connection shares.
const SESSION_SETTINGS: &[&str] = &[
    "statement_timeout",
    "datestyle",
    "bytea_output",
    "intervalstyle",
    "application_name",
    "extra_float_digits",
    "search_path",
];

struct Settings;

impl Settings {
    /// Whether `SetShowHook` may take the statement: SHOW, a session setting, `SET TIME ZONE`.
    fn delegated(statement: &Statement) -> bool {
        match statement {
            Statement::Set(Set::SingleAssignment {
                scope: None,
                hivevar: false,
                variable,
                ..
            }) => SESSION_SETTINGS.contains(&variable.to_string().to_lowercase().as_str()),
            Statement::Set(Set::SetTimeZone { local: false, .. }) => true,
            Statement::Set(_) => false,
            _ => true,
        }
    }

    fn ignored(statement: &Statement) -> Option<PgWireResult<Response>> {
        debug!(%statement, "SET of an engine or unknown setting answered and ignored");
        Some(Ok(Response::Execution(Tag::new("SET"))))
    }
}

#[async_trait]
impl QueryHook for Settings {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if Settings::delegated(statement) {
            SetShowHook
                .handle_simple_query(statement, ctx, client)
                .await
        } else {
            Settings::ignored(statement)
        }
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        // SetShowHook plans every SET and SHOW as an empty relation; nothing runs.
        SetShowHook
            .handle_extended_parse_query(statement, ctx, client)
            .await
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if Settings::delegated(statement) {
            SetShowHook
                .handle_extended_query(statement, plan, params, ctx, client)
                .await
        } else {
            Settings::ignored(statement)
        }
    }
}

/// Statements poolers and drivers send to reset a connection or a transaction's mode: answered
/// with their tag (this service keeps no prepared state they could clear, and every statement
/// is read-only whatever the transaction's mode).
struct Control;

impl Control {
    fn tag(statement: &Statement) -> Option<&'static str> {
        match statement {
            Statement::Discard { .. } => Some("DISCARD ALL"),
            Statement::Deallocate { .. } => Some("DEALLOCATE"),
            Statement::Reset(_) => Some("RESET"),
            _ => None,
        }
    }
}

#[async_trait]
impl QueryHook for Control {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _: &SessionContext,
        _: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Control::tag(statement).map(|tag| Ok(Response::Execution(Tag::new(tag))))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _: &SessionContext,
        _: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        Control::tag(statement).map(|_| Ok(no_rows()))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _: &LogicalPlan,
        _: &ParamValues,
        _: &SessionContext,
        _: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Control::tag(statement).map(|tag| Ok(Response::Execution(Tag::new(tag))))
    }
}

/// Savepoints (psycopg and SQLAlchemy open one around a nested transaction): accepted, as
/// transactions are; every statement is a read, so there is nothing to roll back.
struct Savepoints;

impl Savepoints {
    fn tag(statement: &Statement) -> Option<&'static str> {
        match statement {
            Statement::Savepoint { .. } => Some("SAVEPOINT"),
            Statement::ReleaseSavepoint { .. } => Some("RELEASE"),
            Statement::Rollback {
                savepoint: Some(_), ..
            } => Some("ROLLBACK"),
            _ => None,
        }
    }
}

#[async_trait]
impl QueryHook for Savepoints {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _: &SessionContext,
        _: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Savepoints::tag(statement).map(|tag| Ok(Response::Execution(Tag::new(tag))))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _: &SessionContext,
        _: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        Savepoints::tag(statement).map(|_| Ok(no_rows()))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _: &LogicalPlan,
        _: &ParamValues,
        _: &SessionContext,
        _: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Savepoints::tag(statement).map(|tag| Ok(Response::Execution(Tag::new(tag))))
    }
}

/// The plan of a statement that answers no rows.
pub(super) fn no_rows() -> LogicalPlan {
    LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(DFSchema::empty()),
    })
}
