//! Arrow Flight SQL for notebooks and ADBC (`--flight-addr`, default 127.0.0.1:50051): answers
//! leave as Arrow record batches, with no row encoding at all.
//!
//! Built on arrow-flight's `FlightSqlService` (the protocol, the metadata builders) over tonic
//! (gRPC). Ours: logging in with the platform's users — the handshake takes `Basic user:password`
//! and answers a bearer token for the session, and an API token (`shoplake tokens create`) works
//! as a bearer token directly; every statement through
//! [`QueryService::prepare`](crate::QueryService::prepare), under the same bounds and catalog per
//! role as HTTP and the Postgres wire. Prepared statements are stateless: the handle carries the
//! statement and its bound parameters, so nothing is kept between calls.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    SqlSupportedTransaction, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use base64::Engine;
use bytes::Bytes;
use datafusion::datasource::TableType;
use datafusion::logical_expr::LogicalPlan;
use datafusion::scalar::ScalarValue;
use futures::{Stream, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;
use rand::RngCore;
use shoplake_server::auth::{Access, Guard, Principal};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

use crate::tls::Tls;
use crate::{Catalog, Error, Params, QueryRequest, QueryService};

/// How long a session token from the handshake works.
const SESSION: Duration = Duration::from_secs(12 * 3600);

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

/// The Flight SQL service of a query service.
pub struct FlightServer {
    service: Arc<QueryService>,
    guard: Arc<Guard>,
    /// Session tokens the handshake gave: token → (who, when it stops working).
    sessions: Mutex<HashMap<String, (Principal, Instant)>>,
    info: SqlInfoData,
}

impl std::fmt::Debug for FlightServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightServer").finish_non_exhaustive()
    }
}

impl FlightServer {
    pub fn new(service: Arc<QueryService>, guard: Arc<Guard>) -> Result<Self, Error> {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "shoplake");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(
            SqlInfo::FlightSqlServerTransaction,
            SqlSupportedTransaction::None as i32,
        );
        info.append(SqlInfo::FlightSqlServerCancel, false);
        info.append(
            SqlInfo::FlightSqlServerStatementTimeout,
            i32::try_from(service.limits().timeout.as_millis()).unwrap_or(i32::MAX),
        );
        let info = info.build().map_err(|e| Error::BadConfig {
            detail: format!("Flight SQL info: {e}"),
        })?;
        Ok(FlightServer {
            service,
            guard,
            sessions: Mutex::new(HashMap::new()),
            info,
        })
    }

    /// Serves `listener` until `shutdown` resolves, with the `[query]` TLS when it is on (Flight
    /// SQL then speaks only TLS).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let tls = Tls::from_config(self.service.limits())?;
        let addr = listener.local_addr()?;
        info!(%addr, tls = tls.is_some(), "serving SQL over Arrow Flight SQL");
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            // tonic builds its rustls config with the process's default provider.
            let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
            builder = builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem),
            ))?;
        }
        let max = self.service.limits().max_connections;
        builder
            .concurrency_limit_per_connection(max)
            .add_service(FlightServiceServer::new(self).max_decoding_message_size(64 << 20))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                shutdown,
            )
            .await?;
        Ok(())
    }

    /// Who is calling: a session token from the handshake or an API token (Bearer), or a user
    /// and password (Basic). A role without SQL is refused.
    fn principal(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        let header = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated("no authorization: log in (handshake) or send a token")
            })?;
        let principal = if let Some(token) = header.strip_prefix("Bearer ") {
            let session = {
                let mut sessions = self.sessions.lock();
                sessions.retain(|_, (_, until)| *until > Instant::now());
                sessions.get(token).map(|(p, _)| p.clone())
            };
            session
                .filter(|p| {
                    self.guard
                        .user(&p.user)
                        .is_some_and(|u| u.disabled_at.is_none())
                })
                .or_else(|| self.guard.authenticate(token))
        } else if let Some(basic) = header.strip_prefix("Basic ") {
            // Padded or not (Go's Flight client, under ADBC, sends it unpadded).
            let basic = basic.trim().trim_end_matches('=');
            let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(basic)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            decoded.and_then(|text| {
                let (user, password) = text.split_once(':')?;
                self.guard.authenticate_password(user, password)
            })
        } else {
            None
        };
        let principal =
            principal.ok_or_else(|| Status::unauthenticated("wrong user, password or token"))?;
        if !principal.role.allows(Access::Sql) {
            return Err(Status::permission_denied(format!(
                "the role {} may not run SQL",
                principal.role
            )));
        }
        Ok(principal)
    }

    fn catalog<T>(&self, request: &Request<T>) -> Result<Catalog, Status> {
        let principal = self.principal(request.metadata())?;
        Ok(if principal.role.sees_personal_data() {
            Catalog::Full
        } else {
            Catalog::NoPersonalData
        })
    }

    async fn plan(&self, sql: &str, catalog: Catalog) -> Result<LogicalPlan, Status> {
        self.service
            .describe_sql(sql, catalog)
            .await
            .map_err(status)
    }

    /// A ticket or prepared-statement handle: the statement and its bound parameters.
    fn info(
        &self,
        handle: &Handle,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let ticket = TicketStatementQuery {
            statement_handle: handle.encode()?,
        };
        FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(e.to_string()))
            .map(|info| {
                info.with_endpoint(
                    FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())),
                )
                .with_descriptor(descriptor)
            })
    }

    /// The rows of a metadata answer (catalogs, schemas, tables, SQL info) as a stream.
    fn batch_stream(
        schema: SchemaRef,
        batch: Result<RecordBatch, FlightError>,
    ) -> Response<DoGetStream> {
        let batches = futures::stream::once(async move { batch });
        Response::new(Box::pin(
            FlightDataEncoderBuilder::new()
                .with_schema(schema)
                .build(batches)
                .map_err(Status::from),
        ))
    }

    /// The session's tables, as GetTables lists them.
    async fn tables(
        &self,
        catalog: Catalog,
        query: &CommandGetTables,
    ) -> Result<RecordBatch, Status> {
        let ctx = self.service.context(catalog);
        let mut builder = query.clone().into_builder();
        for catalog_name in ctx.catalog_names() {
            let Some(cat) = ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in cat.schema_names() {
                let Some(schema) = cat.schema(&schema_name) else {
                    continue;
                };
                for table in schema.table_names() {
                    let Ok(Some(provider)) = schema.table(&table).await else {
                        continue;
                    };
                    let kind = match provider.table_type() {
                        TableType::View => "VIEW",
                        TableType::Temporary => "LOCAL TEMPORARY",
                        TableType::Base => "TABLE",
                    };
                    builder
                        .append(
                            &catalog_name,
                            &schema_name,
                            &table,
                            kind,
                            &provider.schema(),
                        )
                        .map_err(|e| Status::internal(e.to_string()))?;
                }
            }
        }
        builder.build().map_err(|e| Status::internal(e.to_string()))
    }
}

/// A statement and its parameters (one row), as bytes a client hands back.
struct Handle {
    sql: String,
    params: Option<RecordBatch>,
}

impl Handle {
    fn encode(&self) -> Result<Bytes, Status> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.sql.len() as u32).to_be_bytes());
        out.extend_from_slice(self.sql.as_bytes());
        if let Some(params) = &self.params {
            let mut writer = StreamWriter::try_new(&mut out, &params.schema())
                .map_err(|e| Status::internal(e.to_string()))?;
            writer
                .write(params)
                .map_err(|e| Status::internal(e.to_string()))?;
            writer
                .finish()
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(Bytes::from(out))
    }

    fn decode(bytes: &[u8]) -> Result<Self, Status> {
        let bad = || Status::invalid_argument("not a statement handle of this server");
        let len = bytes.get(..4).ok_or_else(bad)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let sql = bytes.get(4..4 + len).ok_or_else(bad)?;
        let sql = String::from_utf8(sql.to_vec()).map_err(|_| bad())?;
        let rest = &bytes[4 + len..];
        let params = if rest.is_empty() {
            None
        } else {
            let mut reader = StreamReader::try_new(rest, None).map_err(|_| bad())?;
            reader.next().transpose().map_err(|_| bad())?
        };
        Ok(Handle { sql, params })
    }

    /// The parameters as the query service takes them: the first row, `$1` the first column.
    fn params(&self) -> Result<Params, Status> {
        let Some(batch) = &self.params else {
            return Ok(Params::None);
        };
        if batch.num_rows() == 0 {
            return Ok(Params::None);
        }
        batch
            .columns()
            .iter()
            .map(|column| ScalarValue::try_from_array(column, 0))
            .collect::<Result<Vec<_>, _>>()
            .map(Params::Positional)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

/// A query error as a gRPC status.
fn status(e: Error) -> Status {
    let message = e.to_string();
    match e {
        Error::BadSql { .. } | Error::BadParams { .. } => Status::invalid_argument(message),
        Error::NotAllowed { .. } => Status::permission_denied(message),
        Error::Timeout { .. } => Status::deadline_exceeded(message),
        Error::TooLarge { .. } | Error::OutOfMemory { .. } => Status::resource_exhausted(message),
        Error::Busy { .. } => Status::unavailable(message),
        _ => Status::internal(message),
    }
}

/// The schema of a statement's parameters: `$1, $2, …` with the types the plan infers.
fn parameter_schema(plan: &LogicalPlan) -> Result<Schema, Status> {
    let mut types: Vec<(u32, Option<DataType>)> = plan
        .get_parameter_types()
        .map_err(|e| Status::invalid_argument(e.strip_backtrace()))?
        .into_iter()
        .map(|(id, t)| (id.trim_start_matches('$').parse().unwrap_or(u32::MAX), t))
        .collect();
    types.sort_by_key(|(n, _)| *n);
    Ok(Schema::new(
        types
            .into_iter()
            .map(|(n, t)| Field::new(format!("${n}"), t.unwrap_or(DataType::Null), true))
            .collect::<Vec<_>>(),
    ))
}

fn schema_bytes(schema: &Schema) -> Result<Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(bytes)
}

#[tonic::async_trait]
impl FlightSqlService for FlightServer {
    type FlightService = FlightServer;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let principal = self.principal(request.metadata())?;
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let token = format!("sfs_{token}");
        info!(user = %principal.user, "Flight SQL session opened");
        self.sessions
            .lock()
            .insert(token.clone(), (principal, Instant::now() + SESSION));
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter(vec![Ok(answer)])));
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("token header"))?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let catalog = self.catalog(&request)?;
        let plan = self.plan(&query.query, catalog).await?;
        let handle = Handle {
            sql: query.query,
            params: None,
        };
        let info = self.info(&handle, plan.schema().as_arrow(), request.into_inner())?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let catalog = self.catalog(&request)?;
        let handle = Handle::decode(&command.prepared_statement_handle)?;
        let plan = self.plan(&handle.sql, catalog).await?;
        let info = self.info(&handle, plan.schema().as_arrow(), request.into_inner())?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let catalog = self.catalog(&request)?;
        let handle = Handle::decode(&ticket.statement_handle)?;
        let statement = QueryRequest {
            params: handle.params()?,
            catalog,
            ..QueryRequest::new(handle.sql)
        };
        let prepared = self.service.prepare(&statement).await.map_err(status)?;
        let stream = prepared.execute();
        let schema = stream.schema();
        let batches = stream.map_err(|e| FlightError::Tonic(Box::new(status(e))));
        Ok(Response::new(Box::pin(
            FlightDataEncoderBuilder::new()
                .with_schema(schema)
                .build(batches)
                .map_err(Status::from),
        )))
    }

    async fn do_get_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let ticket = TicketStatementQuery {
            statement_handle: command.prepared_statement_handle,
        };
        self.do_get_statement(ticket, request).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let catalog = self.catalog(&request)?;
        let plan = self.plan(&query.query, catalog).await?;
        let handle = Handle {
            sql: query.query,
            params: None,
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.encode()?,
            dataset_schema: schema_bytes(plan.schema().as_arrow())?,
            parameter_schema: schema_bytes(&parameter_schema(&plan)?)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.catalog(&request)?;
        let handle = Handle::decode(&command.prepared_statement_handle)?;
        let mut batches = FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        );
        let mut params = None;
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(|e| Status::invalid_argument(e.to_string()))?;
            if batch.num_rows() > 1 {
                return Err(Status::invalid_argument(
                    "one set of parameters per execution: send one row",
                ));
            }
            if batch.num_rows() == 1 {
                params = Some(batch);
            }
        }
        let handle = Handle {
            sql: handle.sql,
            params,
        };
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.encode()?),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles are stateless: nothing to free.
        self.catalog(&request).map(|_| ())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.catalog(&request)?;
        let schema = query.into_builder().schema();
        metadata_info(
            query.as_any().encode_to_vec(),
            &schema,
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let catalog = self.catalog(&request)?;
        let mut builder = query.into_builder();
        for name in self.service.context(catalog).catalog_names() {
            builder.append(name);
        }
        let schema = builder.schema();
        Ok(Self::batch_stream(schema, builder.build()))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.catalog(&request)?;
        let schema = query.clone().into_builder().schema();
        metadata_info(
            query.as_any().encode_to_vec(),
            &schema,
            request.into_inner(),
        )
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let catalog = self.catalog(&request)?;
        let ctx = self.service.context(catalog);
        let mut builder = query.into_builder();
        for name in ctx.catalog_names() {
            if let Some(cat) = ctx.catalog(&name) {
                for schema in cat.schema_names() {
                    builder.append(&name, schema);
                }
            }
        }
        let schema = builder.schema();
        Ok(Self::batch_stream(schema, builder.build()))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.catalog(&request)?;
        let schema = query.clone().into_builder().schema();
        metadata_info(
            query.as_any().encode_to_vec(),
            &schema,
            request.into_inner(),
        )
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let catalog = self.catalog(&request)?;
        let schema = query.clone().into_builder().schema();
        let batch = self.tables(catalog, &query).await?;
        Ok(Self::batch_stream(schema, Ok(batch)))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.catalog(&request)?;
        let schema = Schema::new(vec![Field::new("table_type", DataType::Utf8, false)]);
        metadata_info(
            query.as_any().encode_to_vec(),
            &schema,
            request.into_inner(),
        )
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.catalog(&request)?;
        let schema = Arc::new(Schema::new(vec![Field::new(
            "table_type",
            DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(arrow::array::StringArray::from(vec![
                "TABLE", "VIEW",
            ]))],
        )
        .map_err(FlightError::from);
        Ok(Self::batch_stream(schema, batch))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.catalog(&request)?;
        let schema = query.clone().into_builder(&self.info).schema();
        metadata_info(
            query.as_any().encode_to_vec(),
            &schema,
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.catalog(&request)?;
        let builder = query.into_builder(&self.info);
        let schema = builder.schema();
        Ok(Self::batch_stream(schema, builder.build()))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The FlightInfo of a metadata command: its ticket is the command itself.
fn metadata_info(
    ticket: Vec<u8>,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

// The blanket `FlightService` impl of arrow-flight serves every `FlightSqlService`.
const _: fn() = || {
    fn is_service<T: FlightService>() {}
    is_service::<FlightServer>();
};
