//! Column names of the lake tables. Code everywhere else refers to these constants, never to
//! retyped string literals.

// Envelope.
pub const EVENT_ID: &str = "event_id";
pub const EVENT_NAME: &str = "event_name";
pub const CUSTOM_EVENT_NAME: &str = "custom_event_name";
pub const SCHEMA_VERSION: &str = "schema_version";
pub const OCCURRED_AT: &str = "occurred_at";
pub const SENT_AT: &str = "sent_at";
pub const RECEIVED_AT: &str = "received_at";
pub const ANONYMOUS_ID: &str = "anonymous_id";
pub const USER_ID: &str = "user_id";
pub const SESSION_ID: &str = "session_id";

// Context.
pub const PAGE_URL: &str = "page_url";
pub const PAGE_PATH: &str = "page_path";
pub const PAGE_REFERRER: &str = "page_referrer";
pub const PAGE_TITLE: &str = "page_title";
pub const UTM_SOURCE: &str = "utm_source";
pub const UTM_MEDIUM: &str = "utm_medium";
pub const UTM_CAMPAIGN: &str = "utm_campaign";
pub const UTM_TERM: &str = "utm_term";
pub const UTM_CONTENT: &str = "utm_content";
pub const GCLID: &str = "gclid";
pub const FBCLID: &str = "fbclid";
pub const MSCLKID: &str = "msclkid";
pub const USER_AGENT: &str = "user_agent";
pub const IP: &str = "ip";
pub const LOCALE: &str = "locale";
pub const COUNTRY: &str = "country";
pub const DEVICE_TYPE: &str = "device_type";
pub const BROWSER: &str = "browser";
pub const OS: &str = "os";
pub const DEVICE_ID: &str = "device_id";
pub const SOURCE: &str = "source";

// Properties.
pub const PRODUCTS: &str = "products";
pub const PRODUCT_ID: &str = "product_id";
pub const SKU: &str = "sku";
pub const PRODUCT_NAME: &str = "name";
pub const CATEGORY: &str = "category";
pub const BRAND: &str = "brand";
pub const VARIANT: &str = "variant";
pub const PRICE: &str = "price";
pub const QUANTITY: &str = "quantity";
pub const POSITION: &str = "position";
pub const ORDER_ID: &str = "order_id";
pub const CART_ID: &str = "cart_id";
pub const CHECKOUT_ID: &str = "checkout_id";
pub const CHECKOUT_STEP: &str = "checkout_step";
pub const TOTAL: &str = "total";
pub const REVENUE: &str = "revenue";
pub const TAX: &str = "tax";
pub const SHIPPING: &str = "shipping";
pub const DISCOUNT: &str = "discount";
pub const CURRENCY: &str = "currency";
pub const COUPON: &str = "coupon";
pub const PAYMENT_METHOD: &str = "payment_method";
pub const CARD_FINGERPRINT: &str = "card_fingerprint";
pub const BILLING_COUNTRY: &str = "billing_country";
pub const SHIPPING_COUNTRY: &str = "shipping_country";
pub const SEARCH_QUERY: &str = "search_query";
pub const LIST_ID: &str = "list_id";
pub const LIST_CATEGORY: &str = "list_category";
pub const PROMOTION_ID: &str = "promotion_id";
pub const PROMOTION_NAME: &str = "promotion_name";
pub const CREATIVE: &str = "creative";
pub const RATING: &str = "rating";
pub const REASON: &str = "reason";
pub const CARRIER: &str = "carrier";
pub const TRAITS: &str = "traits";
pub const EXTRA_PROPERTIES: &str = "extra_properties";

// Enrichment (added by the streaming stage).
pub const EVENT_TIME: &str = "event_time";
pub const EVENT_DATE: &str = "event_date";
pub const CLOCK_SKEW_MS: &str = "clock_skew_ms";
pub const SESSION_INFERRED: &str = "session_inferred";
pub const CHANNEL: &str = "channel";
pub const REPORTING_CURRENCY: &str = "reporting_currency";
pub const FX_RATE: &str = "fx_rate";
pub const TOTAL_REPORTING: &str = "total_reporting";
pub const REVENUE_REPORTING: &str = "revenue_reporting";
pub const IS_BOT: &str = "is_bot";
pub const STREAM_SHARD: &str = "stream_shard";
pub const STREAM_SEQUENCE: &str = "stream_sequence";

// Bad rows.
pub const BAD_ROW_ID: &str = "bad_row_id";
pub const STAGE: &str = "stage";
pub const FIELD: &str = "field";
pub const MESSAGE: &str = "message";
pub const RAW: &str = "raw";

// Fraud decisions (the `fraud_decisions` table).
pub const SCORE: &str = "score";
pub const DECISION: &str = "decision";
pub const REASONS: &str = "reasons";
pub const SHADOW_REASONS: &str = "shadow_reasons";
pub const FEATURES: &str = "features";
pub const RULES_VERSION: &str = "rules_version";
pub const DECIDED_AT: &str = "decided_at";

// Product affinity (the `product_affinity` table; `product_id` and `score` as above).
pub const RELATED_PRODUCT_ID: &str = "related_product_id";
pub const RELATION: &str = "relation";
pub const TOGETHER: &str = "together";
pub const PRODUCT_COUNT: &str = "product_count";
pub const RELATED_COUNT: &str = "related_count";
pub const RELATION_TOTAL: &str = "relation_total";
pub const RANK: &str = "rank";
pub const AS_OF: &str = "as_of";
pub const HALF_LIFE_HOURS: &str = "half_life_hours";
pub const COMPUTED_AT: &str = "computed_at";
