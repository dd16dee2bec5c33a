"""Sends a storefront's e-commerce events with Segment's official Python SDK
(segment-analytics-python) to a running `shoplake collect`, in the SDK's normal batching mode,
and prints the message ids it sent as JSON. Exits non-zero if the SDK reports an error.

Used by the end-to-end test (tests/it/collector_sdk.rs).

    python tests/segment_sdk.py http://127.0.0.1:PORT WRITE_KEY
"""

import json
import sys
import uuid

import segment.analytics as analytics


def main(host: str, write_key: str) -> None:
    errors = []
    analytics.write_key = write_key
    analytics.host = host
    analytics.gzip = True
    analytics.max_retries = 3
    analytics.on_error = lambda error, items: errors.append(f"{error}")

    sent = {}

    def mid(name: str) -> str:
        sent[name] = str(uuid.uuid4())
        return sent[name]

    products = [{"product_id": "p-1", "sku": "S-1", "name": "Red Shoe", "price": 49.9, "quantity": 2}]
    analytics.identify("u-1", {"plan": "gold"}, anonymous_id="a-1", message_id=mid("identify"))
    analytics.page(
        anonymous_id="a-1",
        name="Home",
        properties={"url": "https://shop.example/?utm_source=news&utm_medium=email", "path": "/", "title": "Shop"},
        message_id=mid("page_viewed"),
    )
    analytics.track("u-1", "Products Searched", {"query": "red shoes"}, message_id=mid("products_searched"))
    analytics.track(
        "u-1",
        "Product Viewed",
        {"product_id": "p-1", "sku": "S-1", "name": "Red Shoe", "price": 49.9, "currency": "EUR"},
        message_id=mid("product_viewed"),
    )
    analytics.track(
        "u-1",
        "Product Added",
        {"cart_id": "c-1", "product_id": "p-1", "price": 49.9, "quantity": 2, "currency": "EUR"},
        message_id=mid("product_added"),
    )
    analytics.track(
        "u-1",
        "Checkout Started",
        {"order_id": "o-1", "value": 99.8, "currency": "EUR", "products": products},
        message_id=mid("checkout_started"),
    )
    analytics.track(
        "u-1",
        "Checkout Step Completed",
        {"checkout_id": "co-1", "step": 2, "shipping_method": "DHL"},
        message_id=mid("checkout_step_completed"),
    )
    analytics.track(
        "u-1",
        "Order Completed",
        {"order_id": "o-1", "total": 104.8, "revenue": 99.8, "shipping": 5.0, "tax": 0.0,
         "currency": "EUR", "products": products},
        message_id=mid("order_completed"),
    )
    analytics.track("u-1", "Newsletter Subscribed", {"list": "weekly"}, message_id=mid("custom"))
    analytics.screen("u-1", name="Cart", message_id=mid("screen_viewed"))
    analytics.alias("a-1", "u-1", message_id=mid("alias"))
    analytics.group("u-1", "acme", {"name": "Acme"}, message_id=mid("group"))
    analytics.flush()
    analytics.shutdown()
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)
    print(json.dumps(sent))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
