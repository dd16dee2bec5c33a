//! Statement parameters: `$1, $2, …` (positional) or `$name` (named), bound by the engine as
//! values in the plan, never spliced into the SQL text.

use std::collections::{BTreeMap, HashMap};

use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::DataFrame;

use crate::{Error, Result};

/// The values of a statement's parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Params {
    #[default]
    None,
    /// `$1` is the first.
    Positional(Vec<ScalarValue>),
    /// `$name` by name.
    Named(BTreeMap<String, ScalarValue>),
}

impl Params {
    /// From JSON: an array (positional) or an object (named) of strings, numbers, booleans and
    /// nulls. A string bound to a timestamp, date or decimal parameter is cast to it.
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        match value {
            serde_json::Value::Null => Ok(Params::None),
            serde_json::Value::Array(values) => values
                .iter()
                .enumerate()
                .map(|(i, v)| scalar(v, &format!("${}", i + 1)))
                .collect::<Result<_>>()
                .map(Params::Positional),
            serde_json::Value::Object(values) => values
                .iter()
                .map(|(k, v)| Ok((k.trim_start_matches('$').to_owned(), scalar(v, k)?)))
                .collect::<Result<_>>()
                .map(Params::Named),
            other => Err(Error::BadParams {
                detail: format!(
                    "params must be an array ($1, $2, …) or an object ($name), not {other}"
                ),
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Params::None => true,
            Params::Positional(v) => v.is_empty(),
            Params::Named(v) => v.is_empty(),
        }
    }

    /// A stable text of the values, for cache keys.
    pub(crate) fn key(&self) -> String {
        match self {
            Params::None => String::new(),
            Params::Positional(v) => v.iter().map(|s| format!("{s:?};")).collect(),
            Params::Named(v) => v.iter().map(|(k, s)| format!("{k}={s:?};")).collect(),
        }
    }

    /// `df` with its placeholders replaced by the values, each cast to the type the plan infers
    /// for its placeholder. A placeholder without a value, or a value without a placeholder, is
    /// the caller's mistake.
    pub(crate) fn bind(&self, df: DataFrame) -> Result<DataFrame> {
        let expected = expected_types(df.logical_plan())?;
        if self.is_empty() {
            if let Some(first) = expected.keys().min() {
                return Err(Error::BadParams {
                    detail: format!("the statement has parameter {first} but no value was given"),
                });
            }
            return Ok(df);
        }
        let cast = |id: &str, value: &ScalarValue| -> Result<ScalarValue> {
            match expected.get(id) {
                None => Err(Error::BadParams {
                    detail: format!("the statement has no parameter {id}"),
                }),
                Some(Some(ty)) if value.data_type() != *ty && !value.is_null() => {
                    value.cast_to(ty).map_err(|e| Error::BadParams {
                        detail: format!("{id} = {value}: not a {ty} ({})", e.strip_backtrace()),
                    })
                }
                Some(Some(ty)) if value.is_null() => {
                    ScalarValue::try_from(ty).map_err(|e| Error::BadParams {
                        detail: format!("{id}: no null of type {ty} ({})", e.strip_backtrace()),
                    })
                }
                _ => Ok(value.clone()),
            }
        };
        let values: ParamValues = match self {
            Params::None => return Ok(df),
            Params::Positional(values) => {
                let wanted = expected
                    .keys()
                    .filter_map(|id| id.strip_prefix('$')?.parse::<usize>().ok())
                    .max()
                    .unwrap_or(0);
                if values.len() != wanted {
                    return Err(Error::BadParams {
                        detail: format!(
                            "the statement takes {wanted} positional parameter{} ($1…), {} values were given",
                            if wanted == 1 { "" } else { "s" },
                            values.len()
                        ),
                    });
                }
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| cast(&format!("${}", i + 1), v))
                    .collect::<Result<Vec<_>>>()?
                    .into()
            }
            Params::Named(values) => {
                if let Some(missing) = expected
                    .keys()
                    .find(|id| !values.contains_key(id.trim_start_matches('$')))
                {
                    return Err(Error::BadParams {
                        detail: format!("no value for {missing}"),
                    });
                }
                values
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), cast(&format!("${k}"), v)?)))
                    .collect::<Result<Vec<_>>>()?
                    .into()
            }
        };
        df.with_param_values(values).map_err(|e| Error::BadParams {
            detail: e.strip_backtrace(),
        })
    }
}

/// The placeholders of a plan (`$1`, `$name`) and the types it infers for them.
fn expected_types(
    plan: &LogicalPlan,
) -> Result<HashMap<String, Option<datafusion::arrow::datatypes::DataType>>> {
    plan.get_parameter_types().map_err(|e| Error::BadParams {
        detail: e.strip_backtrace(),
    })
}

fn scalar(value: &serde_json::Value, name: &str) -> Result<ScalarValue> {
    Ok(match value {
        serde_json::Value::Null => ScalarValue::Null,
        serde_json::Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => ScalarValue::Int64(Some(i)),
            (None, Some(f)) => ScalarValue::Float64(Some(f)),
            (None, None) => {
                return Err(Error::BadParams {
                    detail: format!("{name} = {n}: out of range"),
                });
            }
        },
        serde_json::Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        other => {
            return Err(Error::BadParams {
                detail: format!(
                    "{name} = {other}: a parameter is a string, number, boolean or null"
                ),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_params_become_scalars() {
        let p = Params::from_json(&serde_json::json!([1, "a", true, null, 2.5])).unwrap();
        assert_eq!(
            p,
            Params::Positional(vec![
                ScalarValue::Int64(Some(1)),
                ScalarValue::Utf8(Some("a".into())),
                ScalarValue::Boolean(Some(true)),
                ScalarValue::Null,
                ScalarValue::Float64(Some(2.5)),
            ])
        );
        let p = Params::from_json(&serde_json::json!({"$day": "2026-03-01"})).unwrap();
        assert_eq!(
            p,
            Params::Named(BTreeMap::from([(
                "day".to_owned(),
                ScalarValue::Utf8(Some("2026-03-01".into()))
            )]))
        );
        let err = Params::from_json(&serde_json::json!([[1]])).unwrap_err();
        assert!(err.to_string().contains("$1"), "{err}");
    }
}
