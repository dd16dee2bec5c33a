//! Named reports: `sql/reports/NAME.sql`, each a query with a header that declares what it is,
//! who may run it and its typed parameters.
//!
//! ```sql
//! -- title: Acquisition
//! -- description: Sessions, shoppers, orders and revenue by a dimension of the traffic …
//! --   (a description goes on over lines that start with `--` and two spaces)
//! -- role: marketing
//! -- param: from date = today-29 : First day of the period (UTC), inclusive.
//! -- param: by text = channel in (channel, campaign, device) : What a row is.
//! -- param: channel text = null : Only sessions from this channel.
//! SELECT …  WHERE session_date BETWEEN $from AND $to AND ($channel IS NULL OR channel = $channel)
//! ```
//!
//! A parameter is `NAME TYPE [= DEFAULT] [in (A, B, …)] : DESCRIPTION`; the types are `date`,
//! `text`, `int`, `float` and `bool`; a default is a literal, `null` (the filter is off) or, for
//! dates, `today` or `today-N` (days, UTC). Values are bound by the engine as typed
//! placeholders (`$from`), never spliced into the text. A report with `from` and `to` also gets
//! `$previous_from` and `$previous_to`: the period of the same length just before, for period
//! over period figures.
//!
//! The role is the least one that may run the report: `marketing` (marketing, analysts and
//! admins) for answers that are counts and sums over shoppers, `analyst` (analysts and admins)
//! for answers that hold personal data (a review queue lists orders and their shoppers). Reports
//! run over the full catalog: they are curated, so a marketer's report may count distinct
//! shoppers it could not list.
//!
//! Reports are served as `GET /v1/reports` and `GET /v1/reports/NAME` ([`crate::router`]), as
//! `shoplake report`, and to SQL clients (Postgres wire, Flight SQL, `/v1/sql`) as table functions
//! `report_NAME(from, to, …)` with the parameters in their declared order (trailing ones may be
//! left out: they take their defaults).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Weak};

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SessionContext};
use parking_lot::RwLock;
use serde::Serialize;

use crate::{Error, Params, Result};

/// Every report, by file name (`sql/reports/NAME.sql`). A test checks that each file of the
/// folder is listed here.
pub const REPORT_FILES: &[(&str, &str)] = &[
    ("overview", include_str!("../../sql/reports/overview.sql")),
    ("trend", include_str!("../../sql/reports/trend.sql")),
    (
        "acquisition",
        include_str!("../../sql/reports/acquisition.sql"),
    ),
    (
        "attribution",
        include_str!("../../sql/reports/attribution.sql"),
    ),
    ("funnel", include_str!("../../sql/reports/funnel.sql")),
    (
        "abandonment",
        include_str!("../../sql/reports/abandonment.sql"),
    ),
    ("products", include_str!("../../sql/reports/products.sql")),
    (
        "bought_together",
        include_str!("../../sql/reports/bought_together.sql"),
    ),
    ("search", include_str!("../../sql/reports/search.sql")),
    (
        "fulfilment",
        include_str!("../../sql/reports/fulfilment.sql"),
    ),
    ("returns", include_str!("../../sql/reports/returns.sql")),
    ("inventory", include_str!("../../sql/reports/inventory.sql")),
    (
        "promotions",
        include_str!("../../sql/reports/promotions.sql"),
    ),
    ("coupons", include_str!("../../sql/reports/coupons.sql")),
    ("cohorts", include_str!("../../sql/reports/cohorts.sql")),
    ("rfm", include_str!("../../sql/reports/rfm.sql")),
    (
        "lifetime_value",
        include_str!("../../sql/reports/lifetime_value.sql"),
    ),
    (
        "fraud_daily",
        include_str!("../../sql/reports/fraud_daily.sql"),
    ),
    (
        "fraud_rules",
        include_str!("../../sql/reports/fraud_rules.sql"),
    ),
    (
        "fraud_review_queue",
        include_str!("../../sql/reports/fraud_review_queue.sql"),
    ),
    (
        "campaign_spend",
        include_str!("../../sql/reports/campaign_spend.sql"),
    ),
    ("bad_rows", include_str!("../../sql/reports/bad_rows.sql")),
    (
        "bad_row_examples",
        include_str!("../../sql/reports/bad_row_examples.sql"),
    ),
];

/// The least role that may run a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportRole {
    /// Marketing, analysts and admins: the answer holds no personal data.
    Marketing,
    /// Analysts and admins.
    Analyst,
}

impl ReportRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportRole::Marketing => "marketing",
            ReportRole::Analyst => "analyst",
        }
    }
}

/// A parameter's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    Date,
    Text,
    Int,
    Float,
    Bool,
}

impl ParamType {
    const ALL: [ParamType; 5] = [
        ParamType::Date,
        ParamType::Text,
        ParamType::Int,
        ParamType::Float,
        ParamType::Bool,
    ];

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    fn data_type(self) -> DataType {
        match self {
            ParamType::Date => DataType::Date32,
            ParamType::Text => DataType::Utf8,
            ParamType::Int => DataType::Int64,
            ParamType::Float => DataType::Float64,
            ParamType::Bool => DataType::Boolean,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Date => "date",
            ParamType::Text => "text",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Bool => "bool",
        }
    }

    fn what(self) -> &'static str {
        match self {
            ParamType::Date => "a date (YYYY-MM-DD)",
            ParamType::Text => "text",
            ParamType::Int => "a whole number",
            ParamType::Float => "a number",
            ParamType::Bool => "true or false",
        }
    }
}

/// A parameter's default.
#[derive(Clone, Debug, PartialEq)]
enum ParamDefault {
    /// Null: the filter it drives is off.
    Null,
    /// `today-N`: N days before the current UTC date.
    DaysAgo(i32),
    Value(ScalarValue),
}

/// One declared parameter.
#[derive(Clone, Debug)]
pub struct ReportParam {
    pub name: String,
    pub ty: ParamType,
    default: Option<ParamDefault>,
    /// The default as written in the header (`today-29`, `null`, `channel`).
    pub default_text: Option<String>,
    /// The values it may take, when the header lists them.
    pub allowed: Vec<String>,
    pub description: String,
}

/// A named report.
#[derive(Clone, Debug)]
pub struct Report {
    pub name: String,
    pub title: String,
    pub description: String,
    pub role: ReportRole,
    pub params: Vec<ReportParam>,
    /// The statement (the whole file).
    pub sql: String,
}

/// The catalogue of reports, with each one's answer schema once planned.
#[derive(Debug)]
pub struct Reports {
    reports: Vec<Report>,
    schemas: RwLock<HashMap<String, SchemaRef>>,
}

fn bad(detail: impl Into<String>) -> Error {
    Error::BadParams {
        detail: detail.into(),
    }
}

impl Report {
    /// Parses a report file's header.
    pub fn parse(name: &str, text: &str) -> std::result::Result<Report, String> {
        let mut title = None;
        let mut description = String::new();
        let mut role = None;
        let mut params = Vec::new();
        let mut in_description = false;
        for line in text.lines() {
            let Some(comment) = line.strip_prefix("--") else {
                break;
            };
            if in_description && let Some(more) = comment.strip_prefix("   ") {
                description.push(' ');
                description.push_str(more.trim());
                continue;
            }
            in_description = false;
            let comment = comment.trim();
            let Some((key, value)) = comment.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "title" => title = Some(value.to_owned()),
                "description" => {
                    description = value.to_owned();
                    in_description = true;
                }
                "role" => {
                    role = Some(match value {
                        "marketing" => ReportRole::Marketing,
                        "analyst" => ReportRole::Analyst,
                        other => {
                            return Err(format!("role {other:?}: marketing or analyst"));
                        }
                    })
                }
                "param" => params.push(ReportParam::parse(value)?),
                _ => {}
            }
        }
        let report = Report {
            name: name.to_owned(),
            title: title.ok_or("no `-- title:` line")?,
            description,
            role: role.ok_or("no `-- role:` line")?,
            params,
            sql: text.to_owned(),
        };
        for p in &report.params {
            if !report.uses(&p.name) {
                return Err(format!(
                    "parameter {} is declared but $${} is not used",
                    p.name, p.name
                ));
            }
        }
        if report.description.is_empty() {
            return Err("no `-- description:` line".into());
        }
        Ok(report)
    }

    fn uses(&self, placeholder: &str) -> bool {
        let needle = format!("${placeholder}");
        self.sql.match_indices(&needle).any(|(at, _)| {
            !self.sql[at + needle.len()..]
                .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        })
    }

    fn param(&self, name: &str) -> Option<&ReportParam> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The parameters' values from text (a query string, `--param k=v`): every given one must be
    /// declared and of its type, the others take their defaults; `today` is the current UTC date
    /// as days since 1970-01-01.
    pub fn bind_text(&self, given: &BTreeMap<String, String>, today: i32) -> Result<Params> {
        let mut values = BTreeMap::new();
        for (name, text) in given {
            let param = self.param(name).ok_or_else(|| {
                bad(format!(
                    "report {} has no parameter {name:?}; its parameters are {}",
                    self.name,
                    self.param_names()
                ))
            })?;
            values.insert(name.clone(), param.value_of_text(text)?);
        }
        self.complete(values, today)
    }

    /// The parameters' values from a table function's arguments, in declared order.
    fn bind_args(&self, args: &[Expr], today: i32) -> Result<Params> {
        if args.len() > self.params.len() {
            return Err(bad(format!(
                "report_{} takes at most {} arguments ({}), {} were given",
                self.name,
                self.params.len(),
                self.param_names(),
                args.len()
            )));
        }
        let mut values = BTreeMap::new();
        for (param, arg) in self.params.iter().zip(args) {
            let value = match arg {
                Expr::Literal(v, _) => v.clone(),
                Expr::Cast(c) => match c.expr.as_ref() {
                    Expr::Literal(v, _) => v
                        .cast_to(c.field.data_type())
                        .map_err(|e| bad(format!("{}: {}", param.name, e.strip_backtrace())))?,
                    _ => return Err(bad(format!("{}: arguments are constants", param.name))),
                },
                _ => return Err(bad(format!("{}: arguments are constants", param.name))),
            };
            let value = match value {
                ScalarValue::Utf8(Some(text)) if param.ty != ParamType::Text => {
                    param.value_of_text(&text)?
                }
                v if v.is_null() => ScalarValue::try_from(param.ty.data_type())
                    .map_err(|e| bad(e.strip_backtrace()))?,
                v => v
                    .cast_to(&param.ty.data_type())
                    .map_err(|_| bad(format!("{}: {v} is not {}", param.name, param.ty.what())))?,
            };
            param.check_allowed(&value)?;
            values.insert(param.name.clone(), value);
        }
        self.complete(values, today)
    }

    /// `values` with the defaults of the parameters not given, and the previous period.
    fn complete(&self, mut values: BTreeMap<String, ScalarValue>, today: i32) -> Result<Params> {
        for param in &self.params {
            if values.contains_key(&param.name) {
                continue;
            }
            let value = match &param.default {
                None => {
                    return Err(bad(format!(
                        "report {} needs parameter {:?} ({})",
                        self.name, param.name, param.description
                    )));
                }
                Some(ParamDefault::Null) => ScalarValue::try_from(param.ty.data_type())
                    .map_err(|e| bad(e.strip_backtrace()))?,
                Some(ParamDefault::DaysAgo(n)) => ScalarValue::Date32(Some(today - n)),
                Some(ParamDefault::Value(v)) => v.clone(),
            };
            values.insert(param.name.clone(), value);
        }
        if let (Some(ScalarValue::Date32(Some(from))), Some(ScalarValue::Date32(Some(to)))) =
            (values.get("from"), values.get("to"))
        {
            let (from, to) = (*from, *to);
            if from > to {
                return Err(bad(format!(
                    "from ({}) is after to ({})",
                    ScalarValue::Date32(Some(from)),
                    ScalarValue::Date32(Some(to))
                )));
            }
            let days = to - from + 1;
            for (name, value) in [("previous_from", from - days), ("previous_to", from - 1)] {
                if self.uses(name) {
                    values.insert(name.to_owned(), ScalarValue::Date32(Some(value)));
                }
            }
        }
        Ok(Params::Named(values))
    }

    fn param_names(&self) -> String {
        if self.params.is_empty() {
            return "none".into();
        }
        self.params
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether a caller that sees personal data (`personal`) or not may run it.
    pub fn allowed(&self, personal: bool) -> bool {
        personal || self.role == ReportRole::Marketing
    }
}

impl ReportParam {
    /// `NAME TYPE [= DEFAULT] [in (A, B)] : DESCRIPTION`
    fn parse(text: &str) -> std::result::Result<Self, String> {
        let (spec, description) = text
            .split_once(" : ")
            .ok_or_else(|| format!("param {text:?}: no ` : description`"))?;
        let (spec, allowed) = match spec.split_once(" in (") {
            Some((spec, list)) => (
                spec,
                list.trim_end()
                    .trim_end_matches(')')
                    .split(',')
                    .map(|v| v.trim().to_owned())
                    .collect(),
            ),
            None => (spec, Vec::new()),
        };
        let (spec, default_text) = match spec.split_once('=') {
            Some((spec, default)) => (spec, Some(default.trim().to_owned())),
            None => (spec, None),
        };
        let mut words = spec.split_whitespace();
        let (Some(name), Some(ty), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!(
                "param {text:?}: NAME TYPE [= DEFAULT] [in (…)] : DESCRIPTION"
            ));
        };
        let ty = ParamType::parse(ty).ok_or_else(|| format!("param {name}: unknown type {ty}"))?;
        let mut param = ReportParam {
            name: name.to_owned(),
            ty,
            default: None,
            default_text: default_text.clone(),
            allowed,
            description: description.trim().to_owned(),
        };
        param.default = match default_text.as_deref() {
            None => None,
            Some("null") => Some(ParamDefault::Null),
            Some("today") if ty == ParamType::Date => Some(ParamDefault::DaysAgo(0)),
            Some(d) if ty == ParamType::Date && d.starts_with("today-") => {
                Some(ParamDefault::DaysAgo(d["today-".len()..].parse().map_err(
                    |_| format!("param {name}: default {d}: today-N"),
                )?))
            }
            Some(d) => Some(ParamDefault::Value(
                param
                    .value_of_text(d)
                    .map_err(|e| format!("param {name}: default {d}: {e}"))?,
            )),
        };
        Ok(param)
    }

    fn value_of_text(&self, text: &str) -> Result<ScalarValue> {
        let not = || {
            bad(format!(
                "parameter {}: {text:?} is not {}",
                self.name,
                self.ty.what()
            ))
        };
        let value = match self.ty {
            ParamType::Text => ScalarValue::Utf8(Some(text.to_owned())),
            ParamType::Int => ScalarValue::Int64(Some(text.trim().parse().map_err(|_| not())?)),
            ParamType::Float => {
                let v: f64 = text.trim().parse().map_err(|_| not())?;
                if !v.is_finite() {
                    return Err(not());
                }
                ScalarValue::Float64(Some(v))
            }
            ParamType::Bool => ScalarValue::Boolean(Some(text.trim().parse().map_err(|_| not())?)),
            ParamType::Date => {
                let t = text.trim();
                let shape = t.len() == 10
                    && t.bytes().enumerate().all(|(i, b)| {
                        if i == 4 || i == 7 {
                            b == b'-'
                        } else {
                            b.is_ascii_digit()
                        }
                    });
                if !shape {
                    return Err(not());
                }
                ScalarValue::Utf8(Some(t.to_owned()))
                    .cast_to(&DataType::Date32)
                    .ok()
                    .filter(|v| !v.is_null())
                    .ok_or_else(not)?
            }
        };
        self.check_allowed(&value)?;
        Ok(value)
    }

    fn check_allowed(&self, value: &ScalarValue) -> Result<()> {
        if self.allowed.is_empty() || value.is_null() {
            return Ok(());
        }
        let text = match value {
            ScalarValue::Utf8(Some(s)) => s.clone(),
            other => other.to_string(),
        };
        if self.allowed.contains(&text) {
            Ok(())
        } else {
            Err(bad(format!(
                "parameter {}: {text:?} is not one of {}",
                self.name,
                self.allowed.join(", ")
            )))
        }
    }
}

/// The current UTC date as days since 1970-01-01.
pub fn today() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 86_400) as i32
}

impl Reports {
    /// The reports of `sql/reports`, parsed, and those of `dir` (`query.reports_dir`): one named
    /// like a built-in one replaces it.
    pub fn load(dir: Option<&Path>) -> Result<Self> {
        let mut reports = REPORT_FILES
            .iter()
            .map(|(name, text)| {
                Report::parse(name, text).map_err(|detail| Error::BadConfig {
                    detail: format!("sql/reports/{name}.sql: {detail}"),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(dir) = dir {
            let unreadable = |e: std::io::Error| Error::BadConfig {
                detail: format!("query.reports_dir {}: {e}", dir.display()),
            };
            let mut files: Vec<_> = std::fs::read_dir(dir)
                .map_err(unreadable)?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()
                .map_err(unreadable)?;
            files.sort();
            for path in files {
                let Some(name) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".sql"))
                else {
                    continue;
                };
                let bad_name = name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                let text = std::fs::read_to_string(&path).map_err(unreadable)?;
                let report = (!bad_name)
                    .then_some(())
                    .ok_or_else(|| "a report's name is lower-case letters, digits and _".to_owned())
                    .and_then(|()| Report::parse(name, &text))
                    .map_err(|detail| Error::BadConfig {
                        detail: format!("{}: {detail}", path.display()),
                    })?;
                reports.retain(|r| r.name != report.name);
                reports.push(report);
            }
        }
        Ok(Reports {
            reports,
            schemas: RwLock::default(),
        })
    }

    pub fn all(&self) -> &[Report] {
        &self.reports
    }

    pub fn get(&self, name: &str) -> Option<&Report> {
        self.reports.iter().find(|r| r.name == name)
    }

    /// A report's answer schema, once [`Reports::plan_schemas`] ran.
    pub fn schema(&self, name: &str) -> Option<SchemaRef> {
        self.schemas.read().get(name).cloned()
    }

    /// Plans every report with its defaults over `ctx` (the full catalog) and keeps each answer's
    /// schema: what a table function must know before it runs. A report that does not plan is
    /// the service's bug: it stops the start.
    pub async fn plan_schemas(&self, ctx: &SessionContext) -> Result<()> {
        let mut schemas = HashMap::new();
        for report in &self.reports {
            let df = report_frame(
                &ctx.state(),
                report,
                &report.bind_text(&BTreeMap::new(), today())?,
            )
            .await
            .map_err(|e| Error::BadConfig {
                detail: format!("sql/reports/{}.sql does not plan: {e}", report.name),
            })?;
            schemas.insert(
                report.name.clone(),
                Arc::new(df.schema().as_arrow().clone()),
            );
        }
        *self.schemas.write() = schemas;
        Ok(())
    }

    /// Registers `report_NAME` table functions in `ctx`: every report (`personal`), or those a
    /// role without personal data may run. They plan over `full`, the full catalog.
    pub fn register_functions(
        self: &Arc<Self>,
        ctx: &SessionContext,
        full: &SessionContext,
        personal: bool,
    ) {
        for report in self.reports.iter().filter(|r| r.allowed(personal)) {
            ctx.register_udtf(
                &format!("report_{}", report.name),
                Arc::new(ReportFunction {
                    reports: Arc::downgrade(self),
                    name: report.name.clone(),
                    full: full.state_weak_ref(),
                }),
            );
        }
    }
}

/// The report's statement planned over `state` with `params` bound.
async fn report_frame(state: &SessionState, report: &Report, params: &Params) -> Result<DataFrame> {
    let plan = state
        .create_logical_plan(&report.sql)
        .await
        .map_err(|e| Error::BadView {
            view: "report",
            source: Box::new(e),
        })?;
    params.bind(DataFrame::new(state.clone(), plan))
}

/// `report_NAME(…)`.
#[derive(Debug)]
struct ReportFunction {
    reports: Weak<Reports>,
    name: String,
    full: Weak<RwLock<SessionState>>,
}

impl TableFunctionImpl for ReportFunction {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let gone =
            || datafusion::error::DataFusionError::Execution("the query service is closing".into());
        let reports = self.reports.upgrade().ok_or_else(gone)?;
        let report = reports.get(&self.name).ok_or_else(gone)?;
        let params = report
            .bind_args(args.exprs(), today())
            .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
        let schema = reports.schema(&self.name).ok_or_else(gone)?;
        Ok(Arc::new(ReportTable {
            report: report.clone(),
            params,
            schema,
            full: self.full.clone(),
        }))
    }
}

/// One call of a report table function: the report with its arguments bound.
#[derive(Debug)]
struct ReportTable {
    report: Report,
    params: Params,
    schema: SchemaRef,
    full: Weak<RwLock<SessionState>>,
}

#[async_trait]
impl TableProvider for ReportTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let state = self
            .full
            .upgrade()
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Execution("the query service is closing".into())
            })?
            .read()
            .clone();
        // The stored state never ran a query itself: without a start time, `now()` in a report
        // would reach execution unsimplified (DataFusion sets it per statement).
        let mut state = state;
        let options = Arc::clone(state.config_options());
        state.execution_props_mut().mark_start_execution(options);
        let df = report_frame(&state, &self.report, &self.params)
            .await
            .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
        let df = match projection {
            Some(columns) => {
                let names: Vec<&str> = columns
                    .iter()
                    .map(|i| self.schema.field(*i).name().as_str())
                    .collect();
                df.select_columns(&names)?
            }
            None => df,
        };
        df.create_physical_plan().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_report_file_is_listed_and_parses() {
        let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/../sql/reports");
        let mut files: Vec<String> = std::fs::read_dir(folder)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".sql").map(str::to_owned)
            })
            .collect();
        files.sort();
        let mut listed: Vec<String> = REPORT_FILES.iter().map(|(n, _)| (*n).to_owned()).collect();
        listed.sort();
        assert_eq!(files, listed);
        let reports = Reports::load(None).unwrap();
        for r in reports.all() {
            assert!(
                r.param("from").is_some() || r.name == "bought_together",
                "{}",
                r.name
            );
        }
    }

    fn sample() -> Report {
        Report::parse(
            "sample",
            "-- title: Sample\n-- description: One\n--   and two.\n-- role: marketing\n\
             -- param: from date = today-6 : First day.\n-- param: to date = today : Last day.\n\
             -- param: by text = channel in (channel, device) : Rows.\n\
             -- param: channel text = null : Only this channel.\n\
             -- param: top int = 10 : Rows at most.\n\
             SELECT $by, $channel, $top WHERE d BETWEEN $from AND $to AND x > $previous_from",
        )
        .unwrap()
    }

    #[test]
    fn a_header_declares_the_report() {
        let r = sample();
        assert_eq!(r.title, "Sample");
        assert_eq!(r.description, "One and two.");
        assert_eq!(r.role, ReportRole::Marketing);
        let names: Vec<&str> = r.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["from", "to", "by", "channel", "top"]);
        assert_eq!(r.params[2].allowed, ["channel", "device"]);
        let err = Report::parse("x", "-- title: X\n-- description: d\n-- role: marketing\n-- param: a int = 1 : A.\nSELECT 1")
            .unwrap_err();
        assert!(err.contains("parameter a is declared"), "{err}");
    }

    #[test]
    fn text_values_are_typed_and_checked() {
        let r = sample();
        let today = 20_000;
        let Params::Named(v) = r.bind_text(&BTreeMap::new(), today).unwrap() else {
            panic!()
        };
        assert_eq!(v["from"], ScalarValue::Date32(Some(today - 6)));
        assert_eq!(v["to"], ScalarValue::Date32(Some(today)));
        assert_eq!(v["previous_from"], ScalarValue::Date32(Some(today - 13)));
        assert!(!v.contains_key("previous_to"));
        assert_eq!(v["channel"], ScalarValue::Utf8(None));
        assert_eq!(v["top"], ScalarValue::Int64(Some(10)));
        let given = |k: &str, val: &str| BTreeMap::from([(k.to_owned(), val.to_owned())]);
        let err = |k, val| r.bind_text(&given(k, val), today).unwrap_err().to_string();
        assert!(err("from", "2026-13-01").contains("parameter from: \"2026-13-01\" is not a date"));
        assert!(err("from", "yesterday").contains("is not a date"));
        assert!(err("top", "ten").contains("parameter top: \"ten\" is not a whole number"));
        assert!(err("by", "planet").contains("\"planet\" is not one of channel, device"));
        assert!(err("colour", "red").contains("has no parameter \"colour\""));
        let e = r
            .bind_text(
                &BTreeMap::from([
                    ("from".to_owned(), "2026-03-10".to_owned()),
                    ("to".to_owned(), "2026-03-01".to_owned()),
                ]),
                today,
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("from (2026-03-10) is after to (2026-03-01)"),
            "{e}"
        );
    }
}
