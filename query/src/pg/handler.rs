//! Statements over the Postgres wire: parsed with Postgres's dialect (and the rewrites of what
//! clients probe), run by the query service, answered row by row as the engine produces them.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{
    CloseCursor, Declare, DeclareType, FetchDirection, Ident, Statement, Value,
};
use datafusion_postgres::QueryHook;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters;
use datafusion_postgres::arrow_pg::datatypes::{
    arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type,
};
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire;
use futures::{Sink, Stream, StreamExt};
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler, send_query_response};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, MemPortalStore, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, DEFAULT_NAME, METADATA_USER, PgWireConnectionState, Type,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use pgwire::messages::extendedquery::Execute;
use pgwire::types::format::FormatOptions;
use shoplake_server::auth::Guard;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::hooks;
use super::session::{Cancels, error};
use crate::{Catalog, Error, Params, QueryRequest, QueryService, QueryStream};

/// A statement as Parse left it: its text, and (unless empty) the statement and its plan (the
/// same type as datafusion-postgres's, whose hooks read the portal store).
pub(super) type PgStatement = (String, Option<(Statement, LogicalPlan)>);

/// Where session settings put `statement_timeout` (datafusion-postgres's `SetShowHook`), in ms.
const STATEMENT_TIMEOUT: &str = "statement_timeout_ms";

pub(super) struct Handler {
    service: Arc<QueryService>,
    guard: Arc<Guard>,
    parser: Arc<Parser>,
    hooks: Vec<Arc<dyn QueryHook>>,
    cancels: Arc<Cancels>,
}

impl Handler {
    pub(super) fn new(
        service: Arc<QueryService>,
        guard: Arc<Guard>,
        cancels: Arc<Cancels>,
    ) -> Self {
        let hooks = hooks::all();
        Handler {
            parser: Arc::new(Parser {
                service: service.clone(),
                guard: guard.clone(),
                sql: PostgresCompatibilityParser::new(),
                hooks: hooks.clone(),
            }),
            service,
            guard,
            hooks,
            cancels,
        }
    }

    /// Runs a query statement and answers its rows as they come, in `format`.
    async fn run<C: ClientInfo>(
        &self,
        client: &C,
        statement: Statement,
        params: Params,
        format: &Format,
        catalog: Catalog,
    ) -> PgWireResult<QueryResponse> {
        let stream = self.start(client, statement, params, catalog).await?;
        self.respond(client, stream, format)
    }

    async fn start<C: ClientInfo>(
        &self,
        client: &C,
        statement: Statement,
        params: Params,
        catalog: Catalog,
    ) -> PgWireResult<QueryStream> {
        let timeout = client
            .metadata()
            .get(STATEMENT_TIMEOUT)
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(std::time::Duration::from_millis);
        let request = QueryRequest {
            sql: statement.to_string(),
            statement: Some(Box::new(statement)),
            params,
            catalog,
            timeout,
            limit: None,
        };
        let prepared = self.service.prepare(&request).await.map_err(to_pg)?;
        Ok(prepared.execute())
    }

    /// The rows of `stream` encoded for the client, batch by batch; a cancel request for the
    /// connection stops them (and, by dropping the stream, the statement).
    fn respond<C: ClientInfo>(
        &self,
        client: &C,
        stream: QueryStream,
        format: &Format,
    ) -> PgWireResult<QueryResponse> {
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let fields = Arc::new(arrow_schema_to_pg_fields(
            &stream.schema(),
            format,
            Some(options),
        )?);
        let encode = fields.clone();
        let rows = stream.flat_map(move |batch| {
            let rows: Vec<PgWireResult<DataRow>> = match batch {
                Ok(batch) => encode_recordbatch(encode.clone(), batch).collect(),
                Err(e) => vec![Err(to_pg(e))],
            };
            futures::stream::iter(rows)
        });
        let cancel = self.cancels.next_statement(client);
        Ok(QueryResponse::new(fields, Cancellable::new(rows, cancel)))
    }

    /// `DECLARE name CURSOR FOR query`: the query starts, and its rows wait in a portal of that
    /// name for `FETCH`; `CLOSE` (or the connection's end) stops it.
    async fn declare<C: ClientInfo>(
        &self,
        client: &C,
        store: &MemPortalStore<PgStatement>,
        declares: &[Declare],
        params: Params,
        catalog: Catalog,
    ) -> PgWireResult<Response> {
        for declare in declares {
            if declare.declare_type != Some(DeclareType::Cursor) {
                return Err(error(
                    "0A000",
                    "only DECLARE … CURSOR FOR a query is supported",
                ));
            }
            let (Some(name), Some(query)) = (declare.names.first(), &declare.for_query) else {
                return Err(error(
                    "42601",
                    "DECLARE needs a cursor name and FOR a query",
                ));
            };
            if declare.scroll == Some(true) {
                return Err(error("0A000", "cursors here scan forward only (no SCROLL)"));
            }
            let statement = Statement::Query(query.clone());
            // Describe of the cursor (psycopg asks) answers the query's columns.
            let plan = self
                .service
                .describe(statement.clone(), catalog)
                .await
                .map_err(to_pg)?;
            let stream = self
                .start(client, statement.clone(), params.clone(), catalog)
                .await?;
            let response = self.respond(client, stream, &Format::UnifiedText)?;
            let stored = StoredStatement::new(
                name.value.clone(),
                (statement.to_string(), Some((statement, plan))),
                vec![],
            );
            let portal = Portal::new_cursor(name.value.clone(), Arc::new(stored));
            portal.start(response).await;
            store.put_portal(Arc::new(portal));
        }
        Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
    }

    /// The statements every path answers the same way: hooks, then cursors; None for a query.
    async fn control<C>(
        &self,
        client: &mut C,
        statement: &Statement,
        plan: Option<&LogicalPlan>,
        params: &ParamValues,
        catalog: Catalog,
    ) -> Option<PgWireResult<Response>>
    where
        C: HookClient,
    {
        let ctx = self.service.context(catalog);
        for hook in &self.hooks {
            let answer = match plan {
                Some(plan) => {
                    hook.handle_extended_query(statement, plan, params, ctx, client)
                        .await
                }
                None => hook.handle_simple_query(statement, ctx, client).await,
            };
            if answer.is_some() {
                return answer;
            }
        }
        let store = HookClient::portal_store(client);
        match statement {
            Statement::Declare { stmts } => Some(
                self.declare(client, store, stmts, to_params(params), catalog)
                    .await,
            ),
            Statement::Fetch {
                name, direction, ..
            } => Some(fetch(store, name, direction).await),
            Statement::Close { cursor } => {
                match cursor {
                    CloseCursor::All => store.clear_portals(),
                    CloseCursor::Specific { name } => store.rm_portal(&name.value),
                }
                Some(Ok(Response::Execution(Tag::new("CLOSE CURSOR"))))
            }
            _ => None,
        }
    }
}

/// The catalog the connection's user may read (marketing: no personal data).
fn catalog_of(guard: &Guard, client: &(impl ClientInfo + ?Sized)) -> PgWireResult<Catalog> {
    let name = client.metadata().get(METADATA_USER).map(String::as_str);
    match name.and_then(|n| guard.user(n)) {
        Some(user) if user.disabled_at.is_none() => Ok(if user.role.sees_personal_data() {
            Catalog::Full
        } else {
            Catalog::NoPersonalData
        }),
        _ => Err(error("28000", "the connection's user is no longer enabled")),
    }
}

/// `FETCH [FORWARD n | NEXT | ALL] FROM name`: the next rows of a cursor.
async fn fetch(
    store: &MemPortalStore<PgStatement>,
    name: &Ident,
    direction: &FetchDirection,
) -> PgWireResult<Response> {
    let count = |v: &Value| match v {
        Value::Number(n, _) => n.parse::<usize>().ok(),
        _ => None,
    };
    let rows = match direction {
        FetchDirection::Next | FetchDirection::Forward { limit: None } => 1,
        FetchDirection::Forward { limit: Some(v) } | FetchDirection::Count { limit: v } => {
            count(v).ok_or_else(|| error("42601", "FETCH needs a row count"))?
        }
        FetchDirection::ForwardAll | FetchDirection::All => 0,
        _ => return Err(error("0A000", "cursors here scan forward only")),
    };
    let Some(Entry::Value(portal)) = store.get_portal(&name.value) else {
        return Err(error(
            "34000",
            format!("cursor \"{}\" does not exist", name.value),
        ));
    };
    let fetched = portal.fetch(rows).await?;
    Ok(Response::Query(fetched.response))
}

/// Parameters as the query service takes them.
fn to_params(values: &ParamValues) -> Params {
    match values {
        ParamValues::List(list) if !list.is_empty() => {
            Params::Positional(list.iter().map(|p| p.value.clone()).collect())
        }
        _ => Params::None,
    }
}

/// The plan's parameters `$1, $2, …` in order, with the types the plan infers for them.
fn parameter_types(plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
    let mut types: Vec<(u32, Option<DataType>)> = plan
        .get_parameter_types()
        .map_err(|e| error("42P18", e.strip_backtrace()))?
        .into_iter()
        .map(|(id, t)| (id.trim_start_matches('$').parse().unwrap_or(u32::MAX), t))
        .collect();
    types.sort_by_key(|(n, _)| *n);
    Ok(types.into_iter().map(|(_, t)| t).collect())
}

/// The bound values of a portal's parameters.
fn bind<S: Clone>(portal: &Portal<S>, plan: &LogicalPlan) -> PgWireResult<ParamValues> {
    let types = parameter_types(plan)?;
    let refs: Vec<Option<&DataType>> = types.iter().map(Option::as_ref).collect();
    deserialize_parameters(portal, &refs)
}

/// A query's error in Postgres's words (SQLSTATE).
pub(super) fn to_pg(e: Error) -> PgWireError {
    let message = e.to_string();
    let code = match &e {
        Error::BadSql { .. } => {
            let lower = message.to_lowercase();
            if lower.contains("table") && lower.contains("not found") {
                "42P01"
            } else if lower.contains("no field named") || lower.contains("column") {
                "42703"
            } else {
                "42601"
            }
        }
        Error::BadParams { .. } => "22023",
        Error::NotAllowed { .. } => "25006",
        Error::Timeout { .. } => "57014",
        Error::TooLarge { .. } => "54000",
        Error::OutOfMemory { .. } => "53200",
        Error::Busy { .. } => "53300",
        _ => "XX000",
    };
    error(code, message)
}

/// Whether a statement is a query whose rows are sent as they come (not a cursor, setting or
/// transaction statement: those go through pgwire's own execute).
fn streams(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Query(_) | Statement::Explain { .. } | Statement::ExplainTable { .. }
    )
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = self
            .parser
            .sql
            .parse(query)
            .map_err(|e| error("42601", e.to_string()))?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let catalog = catalog_of(&self.guard, client)?;
        let mut responses = Vec::with_capacity(statements.len());
        for statement in statements {
            let none = ParamValues::List(vec![]);
            if let Some(answer) = self.control(client, &statement, None, &none, catalog).await {
                responses.push(answer?);
                continue;
            }
            let rows = self
                .run(
                    client,
                    statement,
                    Params::None,
                    &Format::UnifiedText,
                    catalog,
                )
                .await?;
            responses.push(Response::Query(rows));
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = PgStatement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<PgStatement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = PgStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (_, Some((statement, plan))) = &portal.statement.statement else {
            return Ok(Response::EmptyQuery);
        };
        let catalog = catalog_of(&self.guard, client)?;
        let params = bind(portal, plan)?;
        if let Some(answer) = self
            .control(client, statement, Some(plan), &params, catalog)
            .await
        {
            return answer;
        }
        let rows = self
            .run(
                client,
                statement.clone(),
                to_params(&params),
                &portal.result_column_format,
                catalog,
            )
            .await?;
        Ok(Response::Query(rows))
    }

    /// An Execute that asks for every row (max_rows 0: psycopg, SQLAlchemy, pgjdbc without a
    /// fetch size) sends them as they are produced; pgwire's own would collect them all first.
    /// Other Executes (a fetch size, a cursor, a setting) go through pgwire's.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = PgStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal)) if message.max_rows == 0 => portal,
            _ => return self._on_execute(client, message).await,
        };
        let fresh = matches!(*portal.state().lock().await, PortalExecutionState::Initial);
        let query = matches!(&portal.statement.statement, (_, Some((s, _))) if streams(s));
        if !fresh || !query {
            return self._on_execute(client, message).await;
        }
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let response = ExtendedQueryHandler::do_query(self, client, portal.as_ref(), 0).await?;
        *portal.state().lock().await = PortalExecutionState::Finished;
        match response {
            Response::Query(rows) => send_query_response(client, rows, false).await?,
            Response::Error(e) => return Err(PgWireError::UserError(e)),
            _ => return Err(error("XX000", "a query answered no rows")),
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        Ok(())
    }
}

/// Parse: a statement is planned (and refused if it is not a query, or reads what the user may
/// not) without running; its parameters' types and its columns come from the plan.
pub(super) struct Parser {
    service: Arc<QueryService>,
    guard: Arc<Guard>,
    sql: PostgresCompatibilityParser,
    hooks: Vec<Arc<dyn QueryHook>>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<PgStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = self
            .sql
            .parse(sql)
            .map_err(|e| error("42601", e.to_string()))?;
        if statements.is_empty() {
            return Ok(None);
        }
        if statements.len() > 1 {
            return Err(error(
                "42601",
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let statement = statements.remove(0);
        let text = statement.to_string();
        let catalog = catalog_of(&self.guard, client)?;
        let ctx = self.service.context(catalog);
        for hook in &self.hooks {
            if let Some(plan) = hook
                .handle_extended_parse_query(&statement, ctx, client)
                .await
            {
                return Ok(Some((text, Some((statement, plan?)))));
            }
        }
        let plan = match &statement {
            // The cursor's query, planned for its parameters' types.
            Statement::Declare { stmts } => match stmts.first().and_then(|d| d.for_query.clone()) {
                Some(query) => self
                    .service
                    .describe(Statement::Query(query), catalog)
                    .await
                    .map_err(to_pg)?,
                None => return Err(error("42601", "DECLARE needs FOR a query")),
            },
            Statement::Fetch { .. } | Statement::Close { .. } => hooks::no_rows(),
            _ => self
                .service
                .describe(statement.clone(), catalog)
                .await
                .map_err(to_pg)?,
        };
        Ok(Some((text, Some((statement, plan)))))
    }

    fn get_parameter_types(&self, statement: &PgStatement) -> PgWireResult<Vec<Type>> {
        let (_, Some((_, plan))) = statement else {
            return Ok(vec![]);
        };
        parameter_types(plan)?
            .iter()
            .map(|t| t.as_ref().map_or(Ok(Type::UNKNOWN), into_pg_type))
            .collect()
    }

    fn get_result_schema(
        &self,
        statement: &PgStatement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match statement {
            (_, Some((statement, plan))) if !matches!(statement, Statement::Declare { .. }) => {
                arrow_schema_to_pg_fields(
                    plan.schema().as_arrow(),
                    format.unwrap_or(&Format::UnifiedText),
                    None,
                )
            }
            _ => Ok(vec![]),
        }
    }
}

/// Rows until the statement's cancel token fires: then one "canceling statement" error.
struct Cancellable<S> {
    rows: Pin<Box<S>>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
}

impl<S> Cancellable<S> {
    fn new(rows: S, token: CancellationToken) -> Self {
        Cancellable {
            rows: Box::pin(rows),
            cancelled: Box::pin(token.cancelled_owned()),
            done: false,
        }
    }
}

impl<S: Stream<Item = PgWireResult<DataRow>>> Stream for Cancellable<S> {
    type Item = PgWireResult<DataRow>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.cancelled.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(error(
                "57014",
                "canceling statement due to user request",
            ))));
        }
        self.rows.as_mut().poll_next(cx)
    }
}
