//! `shoplake report NAME --param k=v`: one named report (`sql/reports`) over the lake, printed as
//! `shoplake sql` prints; `shoplake report` alone lists the reports and their parameters.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use shoplake_query::QueryService;

use super::sql::OutputFormat;
use crate::config::DataArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The report; none: list them with their parameters.
    name: Option<String>,
    /// A parameter as NAME=VALUE (repeat for each); the others take their defaults, e.g.
    /// `--param from=2026-10-01 --param to=2026-10-31 --param by=campaign`.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
}

pub async fn run(args: Args, data: DataArgs) -> anyhow::Result<()> {
    let service = data.query_service(true).await?;
    let Some(name) = args.name else {
        print!("{}", catalogue(&service));
        return Ok(());
    };
    let mut given = BTreeMap::new();
    for param in &args.params {
        let Some((k, v)) = param.split_once('=') else {
            bail!("--param {param:?}: write it as NAME=VALUE");
        };
        if given.insert(k.trim().to_owned(), v.to_owned()).is_some() {
            bail!("--param {k} is given twice");
        }
    }
    // Whoever reads the lake's files may read every report.
    let request = service.report_request(&name, &given, true)?;
    let result = service
        .run(&request)
        .await
        .with_context(|| format!("report {name}"))?;
    println!("{}", shoplake_query::render(&result, args.format.into())?);
    if let Some(f) = service.freshness(&request).await? {
        eprintln!("{}", freshness_note(&f));
    }
    Ok(())
}

/// How complete the report's period is, for the terminal (standard error, so that a CSV or JSON
/// answer on standard output stays clean).
fn freshness_note(f: &shoplake_query::Freshness) -> String {
    let until = f
        .complete_until_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or("no events compacted yet".to_owned(), |t| {
            format!(
                "events compacted until {}",
                t.format("%Y-%m-%d %H:%M:%S UTC")
            )
        });
    if f.late_days.is_empty() {
        return format!("({until}; no day of the period received events after it ended)");
    }
    let late: Vec<String> = f
        .late_days
        .iter()
        .map(|(day, n)| format!("{day} ({n})"))
        .collect();
    format!(
        "({until}; days that received events after they ended: {})",
        late.join(", ")
    )
}

/// The reports, one paragraph each: name, title, role, parameters.
fn catalogue(service: &QueryService) -> String {
    let mut out = String::new();
    for r in service.reports().all() {
        out.push_str(&format!(
            "{} — {} (role: {})\n",
            r.name,
            r.title,
            r.role.as_str()
        ));
        for p in &r.params {
            let default = p.default_text.as_deref().unwrap_or("required");
            let allowed = if p.allowed.is_empty() {
                String::new()
            } else {
                format!(", one of {}", p.allowed.join(" | "))
            };
            out.push_str(&format!(
                "    --param {}=<{}> (default {default}{allowed}): {}\n",
                p.name,
                p.ty.as_str(),
                p.description
            ));
        }
        out.push('\n');
    }
    out
}
