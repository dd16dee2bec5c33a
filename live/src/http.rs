//! The live endpoints the storefront calls: `POST /v1/fraud/score`,
//! `GET /v1/recommendations/{shopper}`, `GET /v1/products/{id}/related`; and the last hour the
//! dashboards show, `GET /v1/live/pulse`. They belong to the state
//! they read; every long-running command that runs a stage (`stream`, `up`) serves them by
//! merging [`router`] into its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shoplake_events::{EventName, Limits, decode, format_timestamp};
use shoplake_server::ApiError;
use shoplake_server::auth::{Access, Routes};

use crate::Live;
use crate::recs::{Recommendation, RecsQuery};

/// `ApiError` constructors of the live endpoints.
fn bad(error: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::bad_request(error, detail)
}

fn off(what: &str) -> ApiError {
    ApiError::not_found(
        "switched_off",
        format!("{what} is switched off in this stage's config"),
    )
}

/// `GET /v1/live/pulse`: the last hour of the stream, minute by minute (the dashboards' Live
/// page; see [`crate::pulse`]).
async fn pulse(State(live): State<Arc<Live>>) -> Json<crate::pulse::PulseView> {
    Json(live.pulse())
}

/// The live endpoints over `live`.
pub fn router(live: Arc<Live>) -> Routes {
    Routes::new()
        .post("/v1/fraud/score", score, Access::Storefront)
        .get("/v1/live/pulse", pulse, Access::Reports)
        .get(
            "/v1/recommendations/{shopper}",
            recommendations,
            Access::Storefront,
        )
        .get("/v1/products/{id}/related", related, Access::Storefront)
        .with_state(live)
}

/// Most items one request may ask for.
pub const MAX_K: usize = 100;
const DEFAULT_K: usize = 10;

fn parse_k(k: Option<&str>) -> std::result::Result<usize, ApiError> {
    match k {
        None | Some("") => Ok(DEFAULT_K),
        Some(s) => match s.parse::<usize>() {
            Ok(k) if (1..=MAX_K).contains(&k) => Ok(k),
            _ => Err(bad(
                "invalid_k",
                format!("k must be a whole number from 1 to {MAX_K}, not {s:?}"),
            )),
        },
    }
}

#[derive(Deserialize)]
struct RecsParams {
    k: Option<String>,
    context_product: Option<String>,
    category: Option<String>,
}

#[derive(Serialize)]
struct RecsAnswer<'a> {
    shopper: &'a str,
    /// Whether the shopper has history here (false: the items are trending / popular ones).
    known: bool,
    items: Vec<Recommendation>,
}

async fn recommendations(
    State(live): State<Arc<Live>>,
    Path(shopper): Path<String>,
    params: std::result::Result<Query<RecsParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let answer = (|| {
        let Query(p) = params.map_err(|e| bad("invalid_query", e.body_text()))?;
        let k = parse_k(p.k.as_deref())?;
        let shopper = shopper.trim();
        if shopper.is_empty() || shopper.len() > 256 {
            return Err(bad(
                "invalid_shopper",
                "the shopper is a user id or an anonymous id of 1 to 256 characters",
            ));
        }
        let query = RecsQuery {
            k,
            context_product: p.context_product.as_deref().filter(|s| !s.is_empty()),
            category: p.category.as_deref().filter(|s| !s.is_empty()),
        };
        let (known, items) = live
            .recommend(shopper, &query)
            .ok_or_else(|| off("recommendations"))?;
        live.metrics()
            .recommendation_requests
            .fetch_add(1, Ordering::Relaxed);
        Ok(Json(RecsAnswer {
            shopper,
            known,
            items,
        })
        .into_response())
    })();
    respond(&live, answer)
}

#[derive(Deserialize)]
struct RelatedParams {
    k: Option<String>,
}

#[derive(Serialize)]
struct RelatedAnswer<'a> {
    product_id: &'a str,
    /// Whether the product has been seen (false: the items are trending / popular ones).
    known: bool,
    items: Vec<Recommendation>,
}

async fn related(
    State(live): State<Arc<Live>>,
    Path(id): Path<String>,
    params: std::result::Result<Query<RelatedParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let answer = (|| {
        let Query(p) = params.map_err(|e| bad("invalid_query", e.body_text()))?;
        let k = parse_k(p.k.as_deref())?;
        let id = id.trim();
        if id.is_empty() || id.len() > 256 {
            return Err(bad(
                "invalid_product_id",
                "a product id has 1 to 256 characters",
            ));
        }
        let (known, items) = live.related(id, k).ok_or_else(|| off("recommendations"))?;
        live.metrics()
            .related_requests
            .fetch_add(1, Ordering::Relaxed);
        Ok(Json(RelatedAnswer {
            product_id: id,
            known,
            items,
        })
        .into_response())
    })();
    respond(&live, answer)
}

fn respond(live: &Live, answer: std::result::Result<Response, ApiError>) -> Response {
    answer.unwrap_or_else(|e| {
        if e.status == StatusCode::BAD_REQUEST {
            live.metrics().bad_requests.fetch_add(1, Ordering::Relaxed);
        }
        e.into_response()
    })
}

/// `POST /v1/fraud/score`: an order about to be placed, as an `order_completed` event of the
/// contract (the same JSON an emitter sends). `event_name`, `event_id`, `occurred_at` and
/// `properties.order_id` may be left out: an order not placed yet has none of them.
async fn score(State(live): State<Arc<Live>>, body: axum::body::Bytes) -> Response {
    let answer = (|| {
        let mut order: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| bad("invalid_json", format!("the body is not JSON: {e}")))?;
        let obj = order.as_object_mut().ok_or_else(|| {
            bad(
                "invalid_order",
                "the body is an order_completed event: a JSON object",
            )
        })?;
        let now = chrono::Utc::now().timestamp_micros();
        match obj.get("event_name").and_then(|v| v.as_str()) {
            None => {
                obj.insert(
                    "event_name".into(),
                    EventName::OrderCompleted.as_str().into(),
                );
            }
            Some(n) if n == EventName::OrderCompleted.as_str() => {}
            Some(n) => {
                return Err(bad(
                    "invalid_order",
                    format!("event_name must be order_completed (or left out), not {n:?}"),
                ));
            }
        }
        obj.entry("event_id")
            .or_insert_with(|| uuid::Uuid::new_v4().to_string().into());
        obj.entry("occurred_at")
            .or_insert_with(|| format_timestamp(now).into());
        let mut invented_order_id = false;
        if let Some(props) = obj.get_mut("properties").and_then(|p| p.as_object_mut())
            && !props.contains_key("order_id")
        {
            props.insert("order_id".into(), "(not placed)".into());
            invented_order_id = true;
        }
        let bytes = serde_json::to_vec(&order).map_err(|e| bad("invalid_order", e.to_string()))?;
        let valid = decode(&bytes, now, &Limits::default())
            .map_err(|r| bad("invalid_order", r.to_string()))?;
        let mut decision = live.score(&valid).ok_or_else(|| off("fraud scoring"))?;
        if invented_order_id {
            decision.order_id.clear();
        }
        live.metrics()
            .score_requests
            .fetch_add(1, Ordering::Relaxed);
        Ok(Json(decision).into_response())
    })();
    respond(&live, answer)
}
