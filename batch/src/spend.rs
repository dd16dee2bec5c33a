//! The `campaign_spend` table: what each campaign cost per day, as the ad platforms export it,
//! loaded with `shoplake load spend FILE` (and by `shoplake up` from the simulator's own spend).
//!
//! The file is CSV with a header naming its columns, in any order:
//!
//! | column | required | what |
//! |---|---|---|
//! | `date` | yes | the day (`YYYY-MM-DD`, UTC) |
//! | `source` | yes | the ad platform, as in the sessions' `utm_source` (`google`, `facebook`) |
//! | `campaign` | yes | as in `utm_campaign` |
//! | `spend` | yes | what the day cost, ≥ 0, in `currency` |
//! | `currency` | yes | ISO 4217, one the reporting currency has a rate for |
//! | `medium` | no | as in `utm_medium` (`cpc`, `paid_social`) |
//! | `impressions`, `clicks` | no | whole numbers ≥ 0 |
//!
//! A file is loaded whole or not at all: every line that does not pass is reported with its line
//! number and reason, and nothing is written. Loading is idempotent per day, source and
//! campaign: a row replaces the one the table holds for the same key (a corrected export loaded
//! again changes those days, and only those), in one Delta MERGE.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use chrono::NaiveDate;
use datafusion::prelude::SessionContext;
use shoplake_events::schema::{FX_SCALE, MONEY_PRECISION, MONEY_SCALE};

use crate::tables::CAMPAIGN_SPEND;
use crate::write::{WriteOptions, table_or_empty, upsert_on_key, writer_commit};
use crate::{Error, Lake, Result};

/// One day of one campaign.
#[derive(Clone, Debug, PartialEq)]
pub struct SpendRow {
    pub date: NaiveDate,
    pub source: String,
    pub medium: Option<String>,
    pub campaign: String,
    /// In minor units (cents) of `currency`.
    pub spend_minor: i128,
    pub currency: String,
    pub impressions: Option<i64>,
    pub clicks: Option<i64>,
}

/// A line of the file that does not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1 is the header.
    pub line: u64,
    pub reason: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

const REQUIRED: [&str; 5] = ["date", "source", "campaign", "spend", "currency"];
const OPTIONAL: [&str; 3] = ["medium", "impressions", "clicks"];
/// The largest spend of one day of one campaign accepted (a typo guard, in major units).
const MAX_SPEND: f64 = 1e12;

/// Reads a spend file; `known_currency` says whether a currency has a rate to the reporting one.
/// Returns every row, or every line that does not pass (the header's problems as line 1).
pub fn parse_csv(
    text: &str,
    known_currency: impl Fn(&str) -> bool,
) -> std::result::Result<Vec<SpendRow>, Vec<LineError>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header_error = |reason: String| vec![LineError { line: 1, reason }];
    let headers = reader
        .headers()
        .map_err(|e| header_error(format!("not CSV: {e}")))?
        .clone();
    let index: HashMap<&str, usize> = headers.iter().enumerate().map(|(i, h)| (h, i)).collect();
    let missing: Vec<&str> = REQUIRED
        .into_iter()
        .filter(|c| !index.contains_key(c))
        .collect();
    let unknown: Vec<&str> = headers
        .iter()
        .filter(|h| !REQUIRED.contains(h) && !OPTIONAL.contains(h))
        .collect();
    if !missing.is_empty() || !unknown.is_empty() {
        return Err(header_error(format!(
            "the header must name {} (and may name {}); missing: {}; unknown: {}",
            REQUIRED.join(", "),
            OPTIONAL.join(", "),
            if missing.is_empty() {
                "none".into()
            } else {
                missing.join(", ")
            },
            if unknown.is_empty() {
                "none".into()
            } else {
                unknown.join(", ")
            },
        )));
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<(NaiveDate, String, String), u64> = HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(LineError {
                    line,
                    reason: format!("not CSV: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let get = |name: &str| {
            index
                .get(name)
                .and_then(|&i| record.get(i))
                .filter(|v| !v.is_empty())
        };
        match parse_row(&get, &known_currency) {
            Ok(row) => {
                let key = (row.date, row.source.clone(), row.campaign.clone());
                if let Some(first) = seen.insert(key, line) {
                    errors.push(LineError {
                        line,
                        reason: format!(
                            "{} {} {} is on line {first} already: one row per day, source and campaign",
                            row.date, row.source, row.campaign
                        ),
                    });
                } else {
                    rows.push(row);
                }
            }
            Err(reason) => errors.push(LineError { line, reason }),
        }
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

fn parse_row<'r>(
    get: &dyn Fn(&str) -> Option<&'r str>,
    known_currency: &dyn Fn(&str) -> bool,
) -> std::result::Result<SpendRow, String> {
    let required = |name: &str| get(name).ok_or_else(|| format!("{name} is empty"));
    let date = required("date")?;
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| format!("date {date:?} is not a day of the form YYYY-MM-DD"))?;
    let spend_text = required("spend")?;
    let spend: f64 = spend_text
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite())
        .ok_or_else(|| format!("spend {spend_text:?} is not a number"))?;
    if !(0.0..=MAX_SPEND).contains(&spend) {
        return Err(format!(
            "spend {spend_text} is not between 0 and {MAX_SPEND}"
        ));
    }
    let currency = required("currency")?.to_ascii_uppercase();
    if currency.len() != 3 || !known_currency(&currency) {
        return Err(format!(
            "currency {currency:?} is not one the reporting currency has a rate for"
        ));
    }
    let count = |name: &str| -> std::result::Result<Option<i64>, String> {
        get(name)
            .map(|v| {
                v.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| format!("{name} {v:?} is not a whole number ≥ 0"))
            })
            .transpose()
    };
    Ok(SpendRow {
        date,
        source: required("source")?.to_owned(),
        medium: get("medium").map(str::to_owned),
        campaign: required("campaign")?.to_owned(),
        spend_minor: (spend * 100.0).round() as i128,
        currency,
        impressions: count("impressions")?,
        clicks: count("clicks")?,
    })
}

/// What a load did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub rows: u64,
    pub inserted: u64,
    pub replaced: u64,
    pub days: u64,
    pub campaigns: u64,
}

fn batch_of(
    rows: &[SpendRow],
    rate: &(dyn Fn(&str) -> Option<i128> + Sync),
) -> Result<RecordBatch> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let now = chrono::Utc::now().timestamp_micros();
    let text = |f: &dyn Fn(&SpendRow) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            rows.iter()
                .map(|r| Some((r.date - epoch).num_days() as i32))
                .collect::<Date32Array>(),
        ),
        text(&|r| Some(&r.source)),
        text(&|r| r.medium.as_deref()),
        text(&|r| Some(&r.campaign)),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.spend_minor))
                .collect::<Decimal128Array>()
                .with_precision_and_scale(MONEY_PRECISION, MONEY_SCALE)?,
        ),
        text(&|r| Some(&r.currency)),
        Arc::new(
            rows.iter()
                .map(|r| rate(&r.currency))
                .collect::<Decimal128Array>()
                .with_precision_and_scale(18, FX_SCALE)?,
        ),
        Arc::new(rows.iter().map(|r| r.impressions).collect::<Int64Array>()),
        Arc::new(rows.iter().map(|r| r.clicks).collect::<Int64Array>()),
        Arc::new(TimestampMicrosecondArray::from(vec![now; rows.len()]).with_timezone("UTC")),
    ];
    Ok(RecordBatch::try_new(CAMPAIGN_SPEND.schema(), columns)?)
}

/// Writes `rows` into `campaign_spend`, replacing the rows of the same day, source and campaign;
/// `rate` gives each currency's rate to the reporting currency (scaled by 10^8), kept per row.
pub async fn load(
    lake: &Lake,
    rows: &[SpendRow],
    rate: &(dyn Fn(&str) -> Option<i128> + Sync),
    opts: &WriteOptions,
) -> Result<LoadReport> {
    let name = CAMPAIGN_SPEND.name;
    let mut report = LoadReport {
        rows: rows.len() as u64,
        days: rows
            .iter()
            .map(|r| r.date)
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64,
        campaigns: rows
            .iter()
            .map(|r| (&r.source, &r.campaign))
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64,
        ..LoadReport::default()
    };
    if rows.is_empty() {
        return Ok(report);
    }
    let batch = batch_of(rows, rate)?;
    // Created empty, then merged into with the writer transaction: two loads at once, even into
    // a new lake, never both insert a campaign's day (`write`'s *Concurrent writers*).
    let table = table_or_empty(lake, &CAMPAIGN_SPEND, opts).await?;
    let commit = writer_commit(&table, name, "load_spend", Some(rows.len())).await?;
    let source = SessionContext::new()
        .read_batch(batch)
        .map_err(|e| Error::Query {
            table: name.to_owned(),
            source: Box::new(e),
        })?;
    let (inserted, replaced) = upsert_on_key(table, &CAMPAIGN_SPEND, source, opts, commit).await?;
    report.inserted = inserted as u64;
    report.replaced = replaced as u64;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(c: &str) -> bool {
        ["USD", "EUR"].contains(&c)
    }

    #[test]
    fn a_file_passes_whole_or_every_bad_line_is_named() {
        let good = "date,source,medium,campaign,spend,currency,clicks\n\
                    2026-10-01,google,cpc,brand_search,12.50,usd,25\n\
                    2026-10-01,facebook,,spring_sale,80,EUR,\n";
        let rows = parse_csv(good, known).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].spend_minor, 1250);
        assert_eq!(rows[0].currency, "USD");
        assert_eq!(rows[0].clicks, Some(25));
        assert_eq!(rows[1].medium, None);

        let bad = "date,source,campaign,spend,currency\n\
                   2026-02-30,google,a,1,USD\n\
                   2026-10-01,google,a,-3,USD\n\
                   2026-10-01,google,a,3,XYZ\n\
                   2026-10-02,google,a,3,USD\n\
                   2026-10-02,google,a,4,USD\n\
                   2026-10-03,google,,4,USD\n";
        let errors = parse_csv(bad, known).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 5, "{text:#?}");
        assert!(
            text[0].starts_with("line 2: date \"2026-02-30\""),
            "{text:#?}"
        );
        assert!(text[1].starts_with("line 3: spend -3"), "{text:#?}");
        assert!(text[2].starts_with("line 4: currency \"XYZ\""), "{text:#?}");
        assert!(
            text[3].contains("line 6") && text[3].contains("on line 5 already"),
            "{text:#?}"
        );
        assert!(
            text[4].starts_with("line 7: campaign is empty"),
            "{text:#?}"
        );

        let header = parse_csv("day,source,campaign,spend\n", known).unwrap_err();
        assert!(
            header[0].reason.contains("missing: date, currency"),
            "{header:?}"
        );
        assert!(header[0].reason.contains("unknown: day"), "{header:?}");
    }
}
