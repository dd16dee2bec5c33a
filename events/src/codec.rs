//! The codec between the wire format and Arrow: validated events are appended straight into column
//! builders ([`EventBatchBuilder`]), and a batch turns back into wire events ([`events_from_batch`]).

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Date32Builder,
    Decimal128Builder, Int32Builder, Int64Builder, ListArray, RecordBatch, StringBuilder,
    StructArray, TimestampMicrosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Decimal128Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow::error::ArrowError;
use serde_json::value::RawValue;

use crate::fields::*;
use crate::schema::{self, FX_SCALE, LIST_ELEMENT, MONEY_PRECISION, MONEY_SCALE};
use crate::validate::{Rejection, ValidEvent, format_timestamp, to_minor_units};
use crate::wire::{Campaign, ClickIds, Context, Event, Page, Product, Properties, Str};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The `event_date` partition value of a UTC microsecond time: days since 1970-01-01.
pub fn date_of(micros: i64) -> i32 {
    micros.div_euclid(MICROS_PER_DAY) as i32
}

/// What the streaming stage adds to a valid event before it is stored.
#[derive(Clone, Debug)]
pub struct Enrichment<'e> {
    /// The client's session id, or the one the stage inferred.
    pub session_id: &'e str,
    /// True when the stage inferred the session (30 minutes of inactivity).
    pub session_inferred: bool,
    /// Marketing channel (paid_search, organic_search, paid_social, email, …).
    pub channel: &'e str,
    /// The currency reports use.
    pub reporting_currency: &'e str,
    /// Units of reporting currency per unit of the event's currency, scaled by 10^8; None when the
    /// event has no currency or its rate is unknown.
    pub fx_rate: Option<i128>,
    /// Marked as a bot or crawler.
    pub is_bot: bool,
    /// Where the event was read from.
    pub stream_shard: &'e str,
    pub stream_sequence: &'e str,
}

fn money_builder(capacity: usize) -> Decimal128Builder {
    Decimal128Builder::with_capacity(capacity).with_data_type(schema::money())
}

fn ts_builder(capacity: usize) -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC")
}

/// Children of the `products` list, built column by column.
struct ProductsBuilder {
    offsets: Vec<i32>,
    nulls: Vec<bool>,
    product_id: StringBuilder,
    sku: StringBuilder,
    name: StringBuilder,
    category: StringBuilder,
    brand: StringBuilder,
    variant: StringBuilder,
    price: Decimal128Builder,
    quantity: Int32Builder,
    position: Int32Builder,
    coupon: StringBuilder,
}

impl ProductsBuilder {
    fn new(capacity: usize) -> Self {
        ProductsBuilder {
            offsets: {
                let mut v = Vec::with_capacity(capacity + 1);
                v.push(0);
                v
            },
            nulls: Vec::with_capacity(capacity),
            product_id: StringBuilder::new(),
            sku: StringBuilder::new(),
            name: StringBuilder::new(),
            category: StringBuilder::new(),
            brand: StringBuilder::new(),
            variant: StringBuilder::new(),
            price: money_builder(capacity),
            quantity: Int32Builder::new(),
            position: Int32Builder::new(),
            coupon: StringBuilder::new(),
        }
    }

    fn append(&mut self, products: Option<&[Product<'_>]>) {
        let last = self.offsets.last().copied().unwrap_or(0);
        let Some(products) = products else {
            self.offsets.push(last);
            self.nulls.push(false);
            return;
        };
        for p in products {
            self.product_id.append_option(p.product_id.as_deref());
            self.sku.append_option(p.sku.as_deref());
            self.name.append_option(p.name.as_deref());
            self.category.append_option(p.category.as_deref());
            self.brand.append_option(p.brand.as_deref());
            self.variant.append_option(p.variant.as_deref());
            self.price.append_option(p.price.map(to_minor_units));
            self.quantity.append_option(p.quantity.map(|q| q as i32));
            self.position.append_option(p.position.map(|q| q as i32));
            self.coupon.append_option(p.coupon.as_deref());
        }
        self.offsets.push(last + products.len() as i32);
        self.nulls.push(true);
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.product_id.finish()),
            Arc::new(self.sku.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.category.finish()),
            Arc::new(self.brand.finish()),
            Arc::new(self.variant.finish()),
            Arc::new(
                self.price
                    .finish()
                    .with_precision_and_scale(MONEY_PRECISION, MONEY_SCALE)?,
            ),
            Arc::new(self.quantity.finish()),
            Arc::new(self.position.finish()),
            Arc::new(self.coupon.finish()),
        ];
        let values = StructArray::try_new(schema::product_fields(), columns, None)?;
        let offsets = OffsetBuffer::new(std::mem::replace(&mut self.offsets, vec![0]).into());
        let nulls = NullBuffer::from(std::mem::take(&mut self.nulls));
        let field = Arc::new(arrow::datatypes::Field::new(
            LIST_ELEMENT,
            DataType::Struct(schema::product_fields()),
            true,
        ));
        Ok(Arc::new(ListArray::try_new(
            field,
            offsets,
            Arc::new(values),
            Some(nulls),
        )?))
    }
}

macro_rules! event_batch_builder {
    ($($col:ident : $builder:ty = $init:expr),+ $(,)?) => {
        /// Appends validated, enriched events to Arrow builders in the `events` schema.
        pub struct EventBatchBuilder {
            $($col: $builder,)+
            products: ProductsBuilder,
            len: usize,
            /// Events each batch has room for: `finish` leaves the Arrow builders empty, without
            /// their buffers, and the next batch starts from this room rather than regrowing.
            capacity: usize,
        }

        impl EventBatchBuilder {
            /// A builder with room for `capacity` events.
            pub fn with_capacity(capacity: usize) -> Self {
                let c = capacity;
                EventBatchBuilder {
                    $($col: $init(c),)+
                    products: ProductsBuilder::new(c),
                    len: 0,
                    capacity,
                }
            }
        }
    };
}

event_batch_builder! {
    event_id: StringBuilder = |c| StringBuilder::with_capacity(c, c * 36),
    event_name: StringBuilder = |c| StringBuilder::with_capacity(c, c * 14),
    custom_event_name: StringBuilder = |c| StringBuilder::with_capacity(c, 0),
    schema_version: Int32Builder = Int32Builder::with_capacity,
    event_time: TimestampMicrosecondBuilder = ts_builder,
    occurred_at: TimestampMicrosecondBuilder = ts_builder,
    sent_at: TimestampMicrosecondBuilder = ts_builder,
    received_at: TimestampMicrosecondBuilder = ts_builder,
    clock_skew_ms: Int64Builder = Int64Builder::with_capacity,
    anonymous_id: StringBuilder = |c| StringBuilder::with_capacity(c, c * 36),
    user_id: StringBuilder = |c| StringBuilder::with_capacity(c, c * 16),
    session_id: StringBuilder = |c| StringBuilder::with_capacity(c, c * 36),
    session_inferred: BooleanBuilder = BooleanBuilder::with_capacity,
    page_url: StringBuilder = |c| StringBuilder::with_capacity(c, c * 48),
    page_path: StringBuilder = |c| StringBuilder::with_capacity(c, c * 24),
    page_referrer: StringBuilder = |c| StringBuilder::with_capacity(c, c * 24),
    page_title: StringBuilder = |c| StringBuilder::with_capacity(c, c * 24),
    utm_source: StringBuilder = |c| StringBuilder::with_capacity(c, c * 8),
    utm_medium: StringBuilder = |c| StringBuilder::with_capacity(c, c * 8),
    utm_campaign: StringBuilder = |c| StringBuilder::with_capacity(c, c * 8),
    utm_term: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    utm_content: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    gclid: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    fbclid: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    msclkid: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    channel: StringBuilder = |c| StringBuilder::with_capacity(c, c * 12),
    user_agent: StringBuilder = |c| StringBuilder::with_capacity(c, c * 100),
    ip: StringBuilder = |c| StringBuilder::with_capacity(c, c * 14),
    locale: StringBuilder = |c| StringBuilder::with_capacity(c, c * 5),
    country: StringBuilder = |c| StringBuilder::with_capacity(c, c * 2),
    device_type: StringBuilder = |c| StringBuilder::with_capacity(c, c * 7),
    browser: StringBuilder = |c| StringBuilder::with_capacity(c, c * 6),
    os: StringBuilder = |c| StringBuilder::with_capacity(c, c * 6),
    device_id: StringBuilder = |c| StringBuilder::with_capacity(c, c * 36),
    source: StringBuilder = |c| StringBuilder::with_capacity(c, c * 4),
    is_bot: BooleanBuilder = BooleanBuilder::with_capacity,
    product_id: StringBuilder = |c| StringBuilder::with_capacity(c, c * 8),
    order_id: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    cart_id: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    checkout_id: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    checkout_step: Int32Builder = Int32Builder::with_capacity,
    total: Decimal128Builder = money_builder,
    revenue: Decimal128Builder = money_builder,
    tax: Decimal128Builder = money_builder,
    shipping: Decimal128Builder = money_builder,
    discount: Decimal128Builder = money_builder,
    currency: StringBuilder = |c| StringBuilder::with_capacity(c, c * 3),
    reporting_currency: StringBuilder = |c| StringBuilder::with_capacity(c, c * 3),
    fx_rate: Decimal128Builder = Decimal128Builder::with_capacity,
    total_reporting: Decimal128Builder = money_builder,
    revenue_reporting: Decimal128Builder = money_builder,
    coupon: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    payment_method: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    card_fingerprint: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    billing_country: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    shipping_country: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    search_query: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    list_id: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    list_category: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    promotion_id: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    promotion_name: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    creative: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    rating: Int32Builder = Int32Builder::with_capacity,
    reason: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    carrier: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    traits: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    extra_properties: StringBuilder = |c| StringBuilder::with_capacity(c, c),
    stream_shard: StringBuilder = |c| StringBuilder::with_capacity(c, c * 20),
    stream_sequence: StringBuilder = |c| StringBuilder::with_capacity(c, c * 20),
    event_date: Date32Builder = Date32Builder::with_capacity,
}

fn s<'x>(o: &'x Option<Str<'_>>) -> Option<&'x str> {
    o.as_deref()
}

/// Amount in minor units × fx rate (scaled 10^8) → minor units of the reporting currency, rounded
/// half away from zero.
fn convert(minor: i128, fx_rate: i128) -> i128 {
    let scale = 10i128.pow(FX_SCALE as u32);
    let product = minor * fx_rate;
    (product + product.signum() * scale / 2) / scale
}

impl EventBatchBuilder {
    /// Events appended so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one validated event with what the stage added.
    pub fn append(&mut self, v: &ValidEvent<'_>, x: &Enrichment<'_>) {
        let e = &v.event;
        self.event_id.append_value(v.event_id());
        self.event_name.append_value(v.name.as_str());
        self.custom_event_name
            .append_option(s(&e.custom_event_name));
        self.schema_version.append_value(v.schema_version);
        self.event_time.append_value(v.event_time);
        self.occurred_at.append_value(v.occurred_at);
        self.sent_at.append_option(v.sent_at);
        self.received_at.append_value(v.received_at);
        self.clock_skew_ms.append_value(v.clock_skew_ms);
        self.anonymous_id.append_option(s(&e.anonymous_id));
        self.user_id.append_option(s(&e.user_id));
        self.session_id.append_value(x.session_id);
        self.session_inferred.append_value(x.session_inferred);

        let ctx = e.context.as_ref();
        let page = ctx.and_then(|c| c.page.as_ref());
        self.page_url.append_option(page.and_then(|p| s(&p.url)));
        self.page_path.append_option(page.and_then(|p| s(&p.path)));
        self.page_referrer
            .append_option(page.and_then(|p| s(&p.referrer)));
        self.page_title
            .append_option(page.and_then(|p| s(&p.title)));
        let utm = ctx.and_then(|c| c.campaign.as_ref());
        self.utm_source
            .append_option(utm.and_then(|c| s(&c.source)));
        self.utm_medium
            .append_option(utm.and_then(|c| s(&c.medium)));
        self.utm_campaign
            .append_option(utm.and_then(|c| s(&c.name)));
        self.utm_term.append_option(utm.and_then(|c| s(&c.term)));
        self.utm_content
            .append_option(utm.and_then(|c| s(&c.content)));
        let clicks = ctx.and_then(|c| c.click_ids.as_ref());
        self.gclid.append_option(clicks.and_then(|c| s(&c.gclid)));
        self.fbclid.append_option(clicks.and_then(|c| s(&c.fbclid)));
        self.msclkid
            .append_option(clicks.and_then(|c| s(&c.msclkid)));
        self.channel.append_value(x.channel);
        self.user_agent
            .append_option(ctx.and_then(|c| s(&c.user_agent)));
        self.ip.append_option(ctx.and_then(|c| s(&c.ip)));
        self.locale.append_option(ctx.and_then(|c| s(&c.locale)));
        self.country.append_option(ctx.and_then(|c| s(&c.country)));
        self.device_type
            .append_option(ctx.and_then(|c| s(&c.device_type)));
        self.browser.append_option(ctx.and_then(|c| s(&c.browser)));
        self.os.append_option(ctx.and_then(|c| s(&c.os)));
        self.device_id
            .append_option(ctx.and_then(|c| s(&c.device_id)));
        self.source.append_option(ctx.and_then(|c| s(&c.source)));
        self.is_bot.append_value(x.is_bot);

        let p = e.properties.as_ref();
        let products = p.and_then(|p| p.products.as_deref());
        self.products.append(products);
        let single = match products {
            Some([one]) if v.name.is_single_product() => one.product_id.as_deref(),
            _ => None,
        };
        self.product_id.append_option(single);
        self.order_id.append_option(p.and_then(|p| s(&p.order_id)));
        self.cart_id.append_option(p.and_then(|p| s(&p.cart_id)));
        self.checkout_id
            .append_option(p.and_then(|p| s(&p.checkout_id)));
        self.checkout_step
            .append_option(p.and_then(|p| p.checkout_step).map(|n| n as i32));
        let total = p.and_then(|p| p.total).map(to_minor_units);
        let revenue = p.and_then(|p| p.revenue).map(to_minor_units);
        self.total.append_option(total);
        self.revenue.append_option(revenue);
        self.tax
            .append_option(p.and_then(|p| p.tax).map(to_minor_units));
        self.shipping
            .append_option(p.and_then(|p| p.shipping).map(to_minor_units));
        self.discount
            .append_option(p.and_then(|p| p.discount).map(to_minor_units));
        self.currency.append_option(p.and_then(|p| s(&p.currency)));
        self.reporting_currency.append_value(x.reporting_currency);
        self.fx_rate.append_option(x.fx_rate);
        self.total_reporting
            .append_option(total.zip(x.fx_rate).map(|(a, r)| convert(a, r)));
        self.revenue_reporting
            .append_option(revenue.zip(x.fx_rate).map(|(a, r)| convert(a, r)));
        self.coupon.append_option(p.and_then(|p| s(&p.coupon)));
        self.payment_method
            .append_option(p.and_then(|p| s(&p.payment_method)));
        self.card_fingerprint
            .append_option(p.and_then(|p| s(&p.card_fingerprint)));
        self.billing_country
            .append_option(p.and_then(|p| s(&p.billing_country)));
        self.shipping_country
            .append_option(p.and_then(|p| s(&p.shipping_country)));
        self.search_query.append_option(p.and_then(|p| s(&p.query)));
        self.list_id.append_option(p.and_then(|p| s(&p.list_id)));
        self.list_category
            .append_option(p.and_then(|p| s(&p.category)));
        self.promotion_id
            .append_option(p.and_then(|p| s(&p.promotion_id)));
        self.promotion_name
            .append_option(p.and_then(|p| s(&p.promotion_name)));
        self.creative.append_option(p.and_then(|p| s(&p.creative)));
        self.rating
            .append_option(p.and_then(|p| p.rating).map(|n| n as i32));
        self.reason.append_option(p.and_then(|p| s(&p.reason)));
        self.carrier.append_option(p.and_then(|p| s(&p.carrier)));
        self.traits.append_option(s(&e.traits));
        match p.map(|p| p.extra.as_slice()) {
            Some(extra) if !extra.is_empty() => {
                self.extra_properties.append_value(extra_json(extra))
            }
            _ => self.extra_properties.append_null(),
        }
        self.stream_shard.append_value(x.stream_shard);
        self.stream_sequence.append_value(x.stream_sequence);
        self.event_date.append_value(date_of(v.event_time));
        self.len += 1;
    }

    /// Finishes the batch and resets the builder.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        fn money(b: &mut Decimal128Builder) -> Result<ArrayRef, ArrowError> {
            Ok(Arc::new(
                b.finish()
                    .with_precision_and_scale(MONEY_PRECISION, MONEY_SCALE)?,
            ))
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.event_name.finish()),
            Arc::new(self.custom_event_name.finish()),
            Arc::new(self.schema_version.finish()),
            Arc::new(self.event_time.finish()),
            Arc::new(self.occurred_at.finish()),
            Arc::new(self.sent_at.finish()),
            Arc::new(self.received_at.finish()),
            Arc::new(self.clock_skew_ms.finish()),
            Arc::new(self.anonymous_id.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.session_inferred.finish()),
            Arc::new(self.page_url.finish()),
            Arc::new(self.page_path.finish()),
            Arc::new(self.page_referrer.finish()),
            Arc::new(self.page_title.finish()),
            Arc::new(self.utm_source.finish()),
            Arc::new(self.utm_medium.finish()),
            Arc::new(self.utm_campaign.finish()),
            Arc::new(self.utm_term.finish()),
            Arc::new(self.utm_content.finish()),
            Arc::new(self.gclid.finish()),
            Arc::new(self.fbclid.finish()),
            Arc::new(self.msclkid.finish()),
            Arc::new(self.channel.finish()),
            Arc::new(self.user_agent.finish()),
            Arc::new(self.ip.finish()),
            Arc::new(self.locale.finish()),
            Arc::new(self.country.finish()),
            Arc::new(self.device_type.finish()),
            Arc::new(self.browser.finish()),
            Arc::new(self.os.finish()),
            Arc::new(self.device_id.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.is_bot.finish()),
            self.products.finish()?,
            Arc::new(self.product_id.finish()),
            Arc::new(self.order_id.finish()),
            Arc::new(self.cart_id.finish()),
            Arc::new(self.checkout_id.finish()),
            Arc::new(self.checkout_step.finish()),
            money(&mut self.total)?,
            money(&mut self.revenue)?,
            money(&mut self.tax)?,
            money(&mut self.shipping)?,
            money(&mut self.discount)?,
            Arc::new(self.currency.finish()),
            Arc::new(self.reporting_currency.finish()),
            Arc::new(
                self.fx_rate
                    .finish()
                    .with_precision_and_scale(18, FX_SCALE)?,
            ),
            money(&mut self.total_reporting)?,
            money(&mut self.revenue_reporting)?,
            Arc::new(self.coupon.finish()),
            Arc::new(self.payment_method.finish()),
            Arc::new(self.card_fingerprint.finish()),
            Arc::new(self.billing_country.finish()),
            Arc::new(self.shipping_country.finish()),
            Arc::new(self.search_query.finish()),
            Arc::new(self.list_id.finish()),
            Arc::new(self.list_category.finish()),
            Arc::new(self.promotion_id.finish()),
            Arc::new(self.promotion_name.finish()),
            Arc::new(self.creative.finish()),
            Arc::new(self.rating.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.carrier.finish()),
            Arc::new(self.traits.finish()),
            Arc::new(self.extra_properties.finish()),
            Arc::new(self.stream_shard.finish()),
            Arc::new(self.stream_sequence.finish()),
            Arc::new(self.event_date.finish()),
        ];
        *self = Self::with_capacity(self.capacity);
        RecordBatch::try_new(schema::events_schema(), columns)
    }
}

fn extra_json(extra: &[(Str<'_>, Box<RawValue>)]) -> String {
    let mut out = String::with_capacity(64);
    out.push('{');
    for (i, (k, v)) in extra.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Serialising a &str cannot fail.
        out.push_str(&serde_json::to_string(&**k).unwrap_or_default());
        out.push(':');
        out.push_str(v.get());
    }
    out.push('}');
    out
}

/// A bad input on its way to the `bad_rows` table.
#[derive(Clone, Debug)]
pub struct BadRow<'r> {
    /// Stable id of the input: `{shard}:{sequence}` (so a re-read input is recognised).
    pub bad_row_id: String,
    pub received_at: i64,
    /// Pipeline stage that rejected it (`decode`, `validate`, `collector`).
    pub stage: &'static str,
    pub rejection: Rejection,
    pub raw: &'r [u8],
    pub stream_shard: &'r str,
    pub stream_sequence: &'r str,
}

/// Appends bad rows to Arrow builders in the `bad_rows` schema.
pub struct BadRowBatchBuilder {
    bad_row_id: StringBuilder,
    received_at: TimestampMicrosecondBuilder,
    stage: StringBuilder,
    reason: StringBuilder,
    field: StringBuilder,
    message: StringBuilder,
    event_id: StringBuilder,
    event_name: StringBuilder,
    raw: BinaryBuilder,
    stream_shard: StringBuilder,
    stream_sequence: StringBuilder,
    event_date: Date32Builder,
}

impl Default for BadRowBatchBuilder {
    fn default() -> Self {
        BadRowBatchBuilder {
            bad_row_id: StringBuilder::new(),
            received_at: ts_builder(0),
            stage: StringBuilder::new(),
            reason: StringBuilder::new(),
            field: StringBuilder::new(),
            message: StringBuilder::new(),
            event_id: StringBuilder::new(),
            event_name: StringBuilder::new(),
            raw: BinaryBuilder::new(),
            stream_shard: StringBuilder::new(),
            stream_sequence: StringBuilder::new(),
            event_date: Date32Builder::new(),
        }
    }
}

impl BadRowBatchBuilder {
    pub fn len(&self) -> usize {
        self.bad_row_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn append(&mut self, b: &BadRow<'_>) {
        self.bad_row_id.append_value(&b.bad_row_id);
        self.received_at.append_value(b.received_at);
        self.stage.append_value(b.stage);
        self.reason.append_value(b.rejection.reason.as_str());
        self.field.append_option(b.rejection.field.as_deref());
        self.message.append_value(&b.rejection.message);
        self.event_id.append_option(b.rejection.event_id.as_deref());
        self.event_name
            .append_option(b.rejection.event_name.as_deref());
        self.raw.append_value(b.raw);
        self.stream_shard.append_value(b.stream_shard);
        self.stream_sequence.append_value(b.stream_sequence);
        self.event_date.append_value(date_of(b.received_at));
    }

    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.bad_row_id.finish()),
            Arc::new(self.received_at.finish()),
            Arc::new(self.stage.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.field.finish()),
            Arc::new(self.message.finish()),
            Arc::new(self.event_id.finish()),
            Arc::new(self.event_name.finish()),
            Arc::new(self.raw.finish()),
            Arc::new(self.stream_shard.finish()),
            Arc::new(self.stream_sequence.finish()),
            Arc::new(self.event_date.finish()),
        ];
        RecordBatch::try_new(schema::bad_rows_schema(), columns)
    }
}

/// Reads one column by name, failing with the column's name when it is absent or of another type.
struct Columns<'b>(&'b RecordBatch);

impl<'b> Columns<'b> {
    fn get(&self, name: &str) -> Result<&'b ArrayRef, ArrowError> {
        self.0
            .column_by_name(name)
            .ok_or_else(|| ArrowError::SchemaError(format!("column {name} is missing")))
    }

    fn text(&self, name: &str) -> Result<impl Fn(usize) -> Option<Str<'static>> + 'b, ArrowError> {
        let col = self.get(name)?;
        let col = col
            .as_string_opt::<i32>()
            .ok_or_else(|| ArrowError::SchemaError(format!("column {name} is not Utf8")))?;
        Ok(move |i| {
            col.is_valid(i)
                .then(|| Str(Cow::Owned(col.value(i).to_owned())))
        })
    }

    fn int(&self, name: &str) -> Result<impl Fn(usize) -> Option<i64> + 'b, ArrowError> {
        let col = self.get(name)?;
        if let Some(c) = col.as_primitive_opt::<Int32Type>() {
            return Ok(
                Box::new(move |i: usize| c.is_valid(i).then(|| i64::from(c.value(i))))
                    as Box<dyn Fn(usize) -> Option<i64>>,
            );
        }
        let c = col
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| ArrowError::SchemaError(format!("column {name} is not an integer")))?;
        Ok(Box::new(move |i: usize| c.is_valid(i).then(|| c.value(i))))
    }

    fn time(&self, name: &str) -> Result<impl Fn(usize) -> Option<Str<'static>> + 'b, ArrowError> {
        let col = self.get(name)?;
        let col = col
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| ArrowError::SchemaError(format!("column {name} is not a timestamp")))?;
        Ok(move |i| {
            col.is_valid(i)
                .then(|| Str::from(format_timestamp(col.value(i))))
        })
    }

    fn money(&self, name: &str) -> Result<impl Fn(usize) -> Option<f64> + 'b, ArrowError> {
        let col = self.get(name)?;
        let col = col
            .as_primitive_opt::<Decimal128Type>()
            .ok_or_else(|| ArrowError::SchemaError(format!("column {name} is not a decimal")))?;
        Ok(move |i| col.is_valid(i).then(|| col.value(i) as f64 / 100.0))
    }
}

/// Turns rows of an `events` batch back into wire events (the fields the emitter sent; what the
/// stage added is left out, `received_at` included). `decode → append → events_from_batch` gives
/// back the event that was decoded.
pub fn events_from_batch(batch: &RecordBatch) -> Result<Vec<Event<'static>>, ArrowError> {
    let c = Columns(batch);
    let (event_id, event_name, custom_event_name, schema_version) = (
        c.text(EVENT_ID)?,
        c.text(EVENT_NAME)?,
        c.text(CUSTOM_EVENT_NAME)?,
        c.int(SCHEMA_VERSION)?,
    );
    let (occurred_at, sent_at, received_at) =
        (c.time(OCCURRED_AT)?, c.time(SENT_AT)?, c.time(RECEIVED_AT)?);
    let (anonymous_id, user_id, session_id) =
        (c.text(ANONYMOUS_ID)?, c.text(USER_ID)?, c.text(SESSION_ID)?);
    let session_inferred = c.get(SESSION_INFERRED)?.as_boolean_opt().cloned();
    let traits = c.text(TRAITS)?;
    let context = context_reader(&c)?;
    let properties = properties_reader(&c)?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let inferred = session_inferred.as_ref().is_some_and(|b| b.value(i));
        out.push(Event {
            event_id: event_id(i),
            event_name: event_name(i),
            custom_event_name: custom_event_name(i),
            schema_version: schema_version(i),
            occurred_at: occurred_at(i),
            sent_at: sent_at(i),
            received_at: received_at(i),
            anonymous_id: anonymous_id(i),
            user_id: user_id(i),
            session_id: if inferred { None } else { session_id(i) },
            context: context(i),
            properties: Some(properties(i)?).filter(|p| *p != Properties::default()),
            traits: traits(i),
        });
    }
    Ok(out)
}

/// A row's context from the context columns; None when every field of it is empty.
fn context_reader<'b>(
    c: &Columns<'b>,
) -> Result<impl Fn(usize) -> Option<Context<'static>> + 'b, ArrowError> {
    let t = |name| c.text(name);
    let (url, path, referrer, title) = (
        t(PAGE_URL)?,
        t(PAGE_PATH)?,
        t(PAGE_REFERRER)?,
        t(PAGE_TITLE)?,
    );
    let (usrc, umed, ucmp, uterm, ucont) = (
        t(UTM_SOURCE)?,
        t(UTM_MEDIUM)?,
        t(UTM_CAMPAIGN)?,
        t(UTM_TERM)?,
        t(UTM_CONTENT)?,
    );
    let (gclid, fbclid, msclkid) = (t(GCLID)?, t(FBCLID)?, t(MSCLKID)?);
    let (ua, ip, locale, country, device_type, device_id, source) = (
        t(USER_AGENT)?,
        t(IP)?,
        t(LOCALE)?,
        t(COUNTRY)?,
        t(DEVICE_TYPE)?,
        t(DEVICE_ID)?,
        t(SOURCE)?,
    );
    let (browser, os) = (t(BROWSER)?, t(OS)?);
    Ok(move |i: usize| {
        let none_if_default = |x: Option<Page<'static>>| x.filter(|p| *p != Page::default());
        let page = none_if_default(Some(Page {
            url: url(i),
            path: path(i),
            referrer: referrer(i),
            title: title(i),
        }));
        let campaign = Some(Campaign {
            source: usrc(i),
            medium: umed(i),
            name: ucmp(i),
            term: uterm(i),
            content: ucont(i),
        })
        .filter(|c| *c != Campaign::default());
        let click_ids = Some(ClickIds {
            gclid: gclid(i),
            fbclid: fbclid(i),
            msclkid: msclkid(i),
        })
        .filter(|c| *c != ClickIds::default());
        Some(Context {
            page,
            campaign,
            click_ids,
            user_agent: ua(i),
            ip: ip(i),
            locale: locale(i),
            country: country(i),
            device_type: device_type(i),
            browser: browser(i),
            os: os(i),
            device_id: device_id(i),
            source: source(i),
        })
        .filter(|c| *c != Context::default())
    })
}

/// A row's properties from the property columns (products decoded from their list).
fn properties_reader<'b>(
    c: &Columns<'b>,
) -> Result<impl Fn(usize) -> Result<Properties<'static>, ArrowError> + 'b, ArrowError> {
    let t = |name| c.text(name);
    let (order_id, cart_id, checkout_id, step) = (
        t(ORDER_ID)?,
        t(CART_ID)?,
        t(CHECKOUT_ID)?,
        c.int(CHECKOUT_STEP)?,
    );
    let (total, revenue, tax, shipping, discount) = (
        c.money(TOTAL)?,
        c.money(REVENUE)?,
        c.money(TAX)?,
        c.money(SHIPPING)?,
        c.money(DISCOUNT)?,
    );
    let (currency, coupon, payment_method, card) = (
        t(CURRENCY)?,
        t(COUPON)?,
        t(PAYMENT_METHOD)?,
        t(CARD_FINGERPRINT)?,
    );
    let (billing, shipping_country, query, list_id, list_category) = (
        t(BILLING_COUNTRY)?,
        t(SHIPPING_COUNTRY)?,
        t(SEARCH_QUERY)?,
        t(LIST_ID)?,
        t(LIST_CATEGORY)?,
    );
    let (promotion_id, promotion_name, creative, rating) = (
        t(PROMOTION_ID)?,
        t(PROMOTION_NAME)?,
        t(CREATIVE)?,
        c.int(RATING)?,
    );
    let (reason, carrier, extra) = (t(REASON)?, t(CARRIER)?, t(EXTRA_PROPERTIES)?);
    let products = c
        .get(PRODUCTS)?
        .as_list_opt::<i32>()
        .ok_or_else(|| ArrowError::SchemaError(format!("column {PRODUCTS} is not a list")))?;

    Ok(move |i: usize| {
        let extra = match extra(i) {
            Some(json) => {
                let map: Vec<(String, Box<RawValue>)> =
                    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&json)
                        .map_err(|e| ArrowError::JsonError(e.to_string()))?
                        .into_iter()
                        .map(|(k, v)| Ok((k, RawValue::from_string(v.to_string())?)))
                        .collect::<Result<_, serde_json::Error>>()
                        .map_err(|e| ArrowError::JsonError(e.to_string()))?;
                map.into_iter().map(|(k, v)| (Str::from(k), v)).collect()
            }
            None => Vec::new(),
        };
        Ok(Properties {
            products: products
                .is_valid(i)
                .then(|| products_from(&products.value(i)))
                .transpose()?,
            order_id: order_id(i),
            cart_id: cart_id(i),
            checkout_id: checkout_id(i),
            checkout_step: step(i),
            total: total(i),
            revenue: revenue(i),
            tax: tax(i),
            shipping: shipping(i),
            discount: discount(i),
            currency: currency(i),
            coupon: coupon(i),
            payment_method: payment_method(i),
            card_fingerprint: card(i),
            billing_country: billing(i),
            shipping_country: shipping_country(i),
            query: query(i),
            list_id: list_id(i),
            category: list_category(i),
            promotion_id: promotion_id(i),
            promotion_name: promotion_name(i),
            creative: creative(i),
            rating: rating(i),
            reason: reason(i),
            carrier: carrier(i),
            extra,
        })
    })
}

fn products_from(list: &ArrayRef) -> Result<Vec<Product<'static>>, ArrowError> {
    let items = list
        .as_struct_opt()
        .ok_or_else(|| ArrowError::SchemaError("products are not structs".into()))?;
    let batch = RecordBatch::from(items.clone());
    let c = Columns(&batch);
    let (id, sku, name, category, brand, variant) = (
        c.text(PRODUCT_ID)?,
        c.text(SKU)?,
        c.text(PRODUCT_NAME)?,
        c.text(CATEGORY)?,
        c.text(BRAND)?,
        c.text(VARIANT)?,
    );
    let (price, quantity, position, coupon) = (
        c.money(PRICE)?,
        c.int(QUANTITY)?,
        c.int(POSITION)?,
        c.text(COUPON)?,
    );
    Ok((0..batch.num_rows())
        .map(|i| Product {
            product_id: id(i),
            sku: sku(i),
            name: name(i),
            category: category(i),
            brand: brand(i),
            variant: variant(i),
            price: price(i),
            quantity: quantity(i),
            position: position(i),
            coupon: coupon(i),
        })
        .collect())
}
