//! Item-to-item history from the lake's `product_affinity` table (written by
//! `shoplake_batch::affinity`), read back for [`RecsEngine::seed`](super::RecsEngine::seed) on a
//! cold start.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, TimestampMicrosecondType};
use shoplake_events::fields::{
    AS_OF, HALF_LIFE_HOURS, PRODUCT_COUNT, PRODUCT_ID, RELATED_COUNT, RELATED_PRODUCT_ID, RELATION,
    RELATION_TOTAL, TOGETHER,
};

use super::RecsError;

/// Co-occurrence counts of the lake's history, effective (decayed) as of `as_of`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Affinity {
    /// The latest event time the counts cover (µs).
    pub as_of: i64,
    /// Half-life the counts were decayed with, in hours.
    pub half_life_hours: f64,
    /// Sessions that viewed a product, and orders (decayed): `n` of the normalisations.
    pub sessions: f64,
    pub orders: f64,
    pub pairs: Vec<AffinityPair>,
}

/// One row: `related` occurred with `product` `together` times (decayed).
#[derive(Clone, Debug, PartialEq)]
pub struct AffinityPair {
    pub product: String,
    pub related: String,
    /// Bought in the same order (else viewed in the same session).
    pub bought: bool,
    pub together: f64,
    /// Sessions or orders with `product`, and with `related` (decayed).
    pub product_count: f64,
    pub related_count: f64,
}

fn bad(message: String) -> RecsError {
    RecsError::Affinity { message }
}

impl Affinity {
    /// Reads the table's rows (in its schema). None when there are none.
    pub fn from_batches(batches: &[RecordBatch]) -> Result<Option<Affinity>, RecsError> {
        let mut out = Affinity::default();
        for b in batches {
            let column = |name: &str| {
                b.column_by_name(name)
                    .ok_or_else(|| bad(format!("product_affinity has no {name} column")))
            };
            let text = |name: &str| {
                column(name)?
                    .as_string_opt::<i32>()
                    .ok_or_else(|| bad(format!("product_affinity.{name} is not text")))
            };
            let float = |name: &str| {
                column(name)?
                    .as_primitive_opt::<Float64Type>()
                    .ok_or_else(|| bad(format!("product_affinity.{name} is not a double")))
            };
            let (product, related, relation) = (
                text(PRODUCT_ID)?,
                text(RELATED_PRODUCT_ID)?,
                text(RELATION)?,
            );
            let (together, product_count, related_count, total, half_life) = (
                float(TOGETHER)?,
                float(PRODUCT_COUNT)?,
                float(RELATED_COUNT)?,
                float(RELATION_TOTAL)?,
                float(HALF_LIFE_HOURS)?,
            );
            let as_of = column(AS_OF)?
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| bad("product_affinity.as_of is not a timestamp".into()))?;
            for i in 0..b.num_rows() {
                let bought = match relation.value(i) {
                    "bought_together" => true,
                    "viewed_together" => false,
                    other => {
                        return Err(bad(format!(
                            "product_affinity row {i}: unknown relation {other:?}"
                        )));
                    }
                };
                if product.is_null(i) || related.is_null(i) {
                    return Err(bad(format!("product_affinity row {i}: no product id")));
                }
                out.as_of = out.as_of.max(as_of.value(i));
                out.half_life_hours = half_life.value(i);
                if bought {
                    out.orders = total.value(i);
                } else {
                    out.sessions = total.value(i);
                }
                out.pairs.push(AffinityPair {
                    product: product.value(i).to_owned(),
                    related: related.value(i).to_owned(),
                    bought,
                    together: together.value(i),
                    product_count: product_count.value(i),
                    related_count: related_count.value(i),
                });
            }
        }
        Ok((!out.pairs.is_empty()).then_some(out))
    }
}
