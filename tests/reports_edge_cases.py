"""Hand-made edge cases for the reports' cross-check (tests/it/reports.rs), sent to a running
`shoplake collect` through the Segment batch API: what the simulator never produces — a session
across midnight, a direct landing then an e-mail touch, an order cancelled then refunded, a failed
then retried payment, a shared device and an alias, order updates, searches differing only in
case and spaces, a renamed promotion, a bot, an order_completed re-sent under a second message
id, cart recoveries at 2 and 8 days and by an overlapping session, a click before midnight and its
order after, a search's click and order and a promotion click's order two UTC days later (not
counted); stock levels ("Inventory Updated" custom events from the back office) with
their corner cases: a product listed twice in one update, other spellings of the name, 0 after 0,
a stock-out from the day before, updates at the same instant, demand and a bot's order while out of
stock.

Usage: reports_edge_cases.py http://HOST:PORT WEB_WRITE_KEY BACKEND_WRITE_KEY
"""
import base64, json, sys, urllib.request, uuid

HOST, WEB_KEY, BACKEND_KEY = sys.argv[1], sys.argv[2], sys.argv[3]
DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

web, backend = [], []


def ev(t, name, anon, user, session, props=None, page=None, campaign=None, ua=DESKTOP, kind="track", to=None):
    m = {"type": kind, "messageId": str(uuid.uuid4()), "originalTimestamp": t, "anonymousId": anon,
         "context": {"sessionId": session, "userAgent": ua, "ip": "81.2.69.160"}}
    if user:
        m["userId"] = user
    if kind == "track":
        m["event"] = name
    if props:
        m["properties"] = props
    if page:
        m["context"]["page"] = page
    if campaign:
        m["context"]["campaign"] = campaign
    (to if to is not None else web).append(m)


def page(t, anon, user, session, path, referrer=None, campaign=None, ua=DESKTOP):
    p = {"path": path, "url": "https://shop.example" + path}
    if referrer:
        p["referrer"] = referrer
    ev(t, None, anon, user, session, props=dict(p), page=p, campaign=campaign, ua=ua, kind="page")


def prod(pid, price, qty=1, category="shoes", brand="Acme"):
    return {"product_id": pid, "sku": pid.upper(), "name": pid, "price": price, "quantity": qty,
            "category": category, "brand": brand, "currency": "USD"}


def order(t, anon, user, session, oid, products, currency="USD", coupon=None, discount=0, country="DE", ua=DESKTOP):
    revenue = sum(p["price"] * p.get("quantity", 1) for p in products) - discount
    props = {"order_id": oid, "total": revenue + 5, "revenue": revenue, "tax": 0, "shipping": 5,
             "discount": discount, "currency": currency, "products": products,
             "shipping_country": country, "billing_country": country, "payment_method": "card"}
    if coupon:
        props["coupon"] = coupon
    ev(t, "Order Completed", anon, user, session, props, page={"path": "/checkout/complete"}, ua=ua)


def life(t, name, anon, user, session, oid, **props):
    ev(t, name, anon, user, session, {"order_id": oid, **props}, to=backend)


# A: a session across midnight, campaign landing, login, order, return and refund
S = "s-a"
page("2026-11-10T23:50:00Z", "a1", None, S, "/home", "https://www.google.com/", {"source": "google", "medium": "cpc", "name": "fall"})
ev("2026-11-10T23:52:00Z", "Signed In", "a1", "u1", S)
ev("2026-11-10T23:55:00Z", "Product Viewed", "a1", "u1", S, prod("p-1", 20))
ev("2026-11-10T23:58:00Z", "Product Added", "a1", "u1", S, prod("p-1", 20, 2))
ev("2026-11-11T00:05:00Z", "Checkout Started", "a1", "u1", S, {"products": [prod("p-1", 20, 2)], "currency": "USD", "value": 40})
order("2026-11-11T00:10:00Z", "a1", "u1", S, "o-1", [prod("p-1", 20, 2)])
life("2026-11-11T00:11:00Z", "Payment Authorized", "a1", "u1", S, "o-1")
life("2026-11-12T09:00:00Z", "Order Shipped", "a1", "u1", S, "o-1", carrier="DHL")
life("2026-11-14T09:00:00Z", "Order Delivered", "a1", "u1", S, "o-1")
life("2026-11-16T09:00:00Z", "Return Requested", "a1", "u1", S, "o-1", reason="damaged")
life("2026-11-18T09:00:00Z", "Order Refunded", "a1", "u1", S, "o-1", reason="damaged", total=45, currency="USD")

# B: direct landing then an email touch in the same session; abandoned cart; recovered 2 days
# later by an order that is cancelled and then refunded
S = "s-b"
page("2026-11-12T10:00:00Z", "a2", None, S, "/home")
page("2026-11-12T10:05:00Z", "a2", None, S, "/c/shoes", None, {"source": "newsletter", "medium": "email", "name": "nov"})
ev("2026-11-12T10:06:00Z", "Product Viewed", "a2", None, S, prod("p-2", 30))
ev("2026-11-12T10:10:00Z", "Product Added", "a2", None, S, prod("p-2", 30, 3))
S = "s-b2"
page("2026-11-14T09:00:00Z", "a2", None, S, "/home")
ev("2026-11-14T09:05:00Z", "Checkout Started", "a2", None, S, {"products": [prod("p-2", 30, 1)], "currency": "USD", "value": 30})
order("2026-11-14T09:10:00Z", "a2", None, S, "o-2", [prod("p-2", 30, 1)])
life("2026-11-14T09:11:00Z", "Payment Authorized", "a2", None, S, "o-2")
life("2026-11-15T09:00:00Z", "Order Cancelled", "a2", None, S, "o-2", reason="changed_mind")
life("2026-11-16T09:00:00Z", "Order Refunded", "a2", None, S, "o-2", reason="cancelled", total=35, currency="USD")

# C: a shared device: a3 logs in as u2, later as u3; an anonymous visit on a3 then orders;
# its payment fails, then a retry is authorized
page("2026-11-13T12:00:00Z", "a3", None, "s-c1", "/home", "https://www.bing.com/")
ev("2026-11-13T12:01:00Z", "Signed In", "a3", "u2", "s-c1")
page("2026-11-15T12:00:00Z", "a3", None, "s-c2", "/home")
ev("2026-11-15T12:01:00Z", "Signed In", "a3", "u3", "s-c2")
page("2026-11-17T12:00:00Z", "a3", None, "s-c3", "/home")
order("2026-11-17T12:05:00Z", "a3", None, "s-c3", "o-3", [prod("p-3", 50), prod("p-1", 20)], country="FR")
life("2026-11-17T12:06:00Z", "Payment Failed", "a3", None, "s-c3", "o-3", reason="card_declined")
life("2026-11-17T12:10:00Z", "Payment Authorized", "a3", None, "s-c3", "o-3")

# D: alias a4 -> u4; a later anonymous visit on a4 orders; the order is updated twice
# (a new total, then a coupon and discount), field by field
page("2026-11-18T08:00:00Z", "a4", None, "s-d", "/home")
ev("2026-11-18T08:01:00Z", None, "a4", "u4", "s-d", kind="alias")
web[-1]["previousId"] = "a4"
page("2026-11-19T08:00:00Z", "a4", None, "s-d2", "/home", "https://www.facebook.com/")
order("2026-11-19T08:05:00Z", "a4", None, "s-d2", "o-4", [prod("p-4", 45)])
life("2026-11-19T09:00:00Z", "Order Updated", "a4", None, "s-d2", "o-4", total=60, currency="USD", reason="address_change")
life("2026-11-19T10:00:00Z", "Order Updated", "a4", None, "s-d2", "o-4", coupon="SAVE5", discount=5, currency="USD", reason="goodwill")

# E: searches: case and spaces, a click before the next search, an order after
S = "s-e"
page("2026-11-20T15:00:00Z", "a5", "u5", S, "/home")
ev("2026-11-20T15:00:30Z", "Products Searched", "a5", "u5", S, {"query": "  Red Shoes "})
ev("2026-11-20T15:01:00Z", "Product Clicked", "a5", "u5", S, prod("p-3", 50))
ev("2026-11-20T15:02:00Z", "Products Searched", "a5", "u5", S, {"query": "red shoes"})
ev("2026-11-20T15:03:00Z", "Products Searched", "a5", "u5", S, {"query": "BLUE hat"})
ev("2026-11-20T15:04:00Z", "Product Viewed", "a5", "u5", S, prod("p-4", 45))
order("2026-11-20T15:06:00Z", "a5", "u5", S, "o-5", [prod("p-4", 45)])

# F: a promotion renamed; an order after the click; another session's order before its click
S = "s-f"
page("2026-11-21T10:00:00Z", "a6", None, S, "/home")
ev("2026-11-21T10:00:10Z", "Promotion Viewed", "a6", None, S, {"promotion_id": "promo-x", "name": "Old name"})
ev("2026-11-21T10:01:00Z", "Promotion Clicked", "a6", None, S, {"promotion_id": "promo-x", "name": "Old name"})
ev("2026-11-21T10:05:00Z", "Promotion Viewed", "a6", None, S, {"promotion_id": "promo-x", "name": "New name"})
order("2026-11-21T10:10:00Z", "a6", None, S, "o-6", [prod("p-5", 15, 2, "hats")])
S = "s-f2"
page("2026-11-21T10:59:00Z", "a7", None, S, "/home")
order("2026-11-21T11:00:00Z", "a7", None, S, "o-7", [prod("p-5", 15, 1, "hats")])
ev("2026-11-21T11:01:00Z", "Promotion Clicked", "a7", None, S, {"promotion_id": "promo-x", "name": "New name"})

# G: a bot; H: reviews
for i in range(3):
    page(f"2026-11-22T0{i}:00:00Z", "a8", None, "s-g", f"/p/p-{i}", ua=BOT)
ev("2026-11-22T10:00:00Z", "Product Reviewed", "a1", "u1", "s-h", {"product_id": "p-1", "rating": 4})
ev("2026-11-22T10:05:00Z", "Product Reviewed", "a1", "u1", "s-h", {"product_id": "p-1", "rating": 2})

# I: u1 orders again, in EUR (repeat buyer; fx)
S = "s-i"
page("2026-11-23T18:00:00Z", "a1", "u1", S, "/home", "https://www.google.com/")
order("2026-11-23T18:05:00Z", "a1", "u1", S, "o-8", [prod("p-1", 20, 1), prod("p-3", 50, 1)], currency="EUR")

# J: one session, two user ids (a shared login), an order listing one product twice
S = "s-j"
page("2026-11-24T10:00:00Z", "a9", None, S, "/home", None, {"source": "partner", "medium": "affiliate", "name": "aff1"})
ev("2026-11-24T10:01:00Z", "Signed In", "a9", "u6", S)
ev("2026-11-24T10:02:00Z", "Signed In", "a9", "u7", S)
order("2026-11-24T10:05:00Z", "a9", "u7", S, "o-9", [prod("p-6", 10, 1), prod("p-6", 10, 2)])
# the same order_completed sent again with another message id (a client retry)
order("2026-11-24T10:05:30Z", "a9", "u7", S, "o-9", [prod("p-6", 10, 1), prod("p-6", 10, 2)])

# K: an abandoned cart; the same shopper orders 8 days after the abandoned session ended
# (not recovered) and, for another shopper, an order in a session that began before the
# abandoned one ended (overlapping, but started after it)
S = "s-k"
page("2026-11-12T20:00:00Z", "a10", "u8", S, "/home")
ev("2026-11-12T20:01:00Z", "Product Added", "a10", "u8", S, prod("p-7", 12, 1))
page("2026-11-20T21:00:00Z", "a10", "u8", "s-k2", "/home")
order("2026-11-20T21:05:00Z", "a10", "u8", "s-k2", "o-10", [prod("p-7", 12, 1)])
page("2026-11-13T20:00:00Z", "a11", "u9", "s-l", "/home")
ev("2026-11-13T20:01:00Z", "Product Added", "a11", "u9", "s-l", prod("p-7", 12, 1))
ev("2026-11-13T20:30:00Z", "Product Viewed", "a11", "u9", "s-l", prod("p-7", 12, 1))
page("2026-11-13T20:10:00Z", "a12", "u9", "s-l2", "/home")
order("2026-11-13T20:15:00Z", "a12", "u9", "s-l2", "o-11", [prod("p-7", 12, 1)])

# M: a promotion click late on a day, the order after midnight in the same session
S = "s-m"
page("2026-11-25T23:55:00Z", "a13", None, S, "/home")
ev("2026-11-25T23:56:00Z", "Promotion Clicked", "a13", None, S, {"promotion_id": "promo-y", "name": "Night"})
order("2026-11-26T00:05:00Z", "a13", None, S, "o-12", [prod("p-8", 99, 1)])

# O: a search whose click and order fall two UTC days later in the same session (the client's
# session id, kept however long the session lasts: ~24 h 25 min here). Expected (search, for a
# period holding 2026-11-26): query "edge two-day search" has 1 search, 0 clicked, 1 without a
# click, 0 converted, revenue 0 — the click and the order are past the search's UTC day and the
# next. Order o-13 still counts everywhere else (overview, orders, the session's revenue...).
S = "s-o"
page("2026-11-26T23:49:00Z", "a14", None, S, "/home")
ev("2026-11-26T23:50:00Z", "Products Searched", "a14", None, S, {"query": "Edge two-day search"})
ev("2026-11-28T00:10:00Z", "Product Clicked", "a14", None, S, prod("p-3", 50))
order("2026-11-28T00:14:00Z", "a14", None, S, "o-13", [prod("p-3", 50)])

# P: a promotion click and the session's order two UTC days later. Expected (promotions, for a
# period holding 2026-11-26): promo-two-day has 0 views, 1 click, no click rate, 0 orders,
# revenue 0 — the order is past the click's UTC day and the next. (Case M's order, just after
# midnight, still counts for promo-y.)
S = "s-p"
page("2026-11-26T23:49:00Z", "a15", None, S, "/home")
ev("2026-11-26T23:50:00Z", "Promotion Clicked", "a15", None, S, {"promotion_id": "promo-two-day", "name": "Two days"})
order("2026-11-28T00:10:00Z", "a15", None, S, "o-14", [prod("p-8", 99, 1)])


# N: stock levels of edge products (ids no simulated product has), sent by the back office as
# custom events; the expected inventory rows are in the comments (day = 2026-11-25).
def stock(t, lines, name="Inventory Updated", message_id=None):
    ev(t, name, "edge-warehouse", None, None, {"products": lines}, to=backend)
    m = backend[-1]
    del m["context"]["sessionId"], m["context"]["userAgent"]  # a back-office system, no device
    if message_id:
        m["messageId"] = message_id


def level(pid, qty=None, category="edge", brand="EdgeCo"):
    line = {"product_id": pid, "sku": pid.upper(), "name": pid, "category": category, "brand": brand}
    if qty is not None:
        line["quantity"] = qty
    return line


D = "2026-11-25T"
# inv-1: listed twice in one update, the lower level wins: 5, then (6, 0) = 0 at 12:00 (a
# stock-out), then (4, 9) = 4 at 18:00. Day: level 4, 1 stock-out, 6 h out of stock.
stock(D + "08:00:00Z", [level("edge-inv-1", 5)])
stock(D + "12:00:00Z", [level("edge-inv-1", 6), level("edge-inv-1", 0)])
stock(D + "18:00:00Z", [level("edge-inv-1", 4), level("edge-inv-1", 9)])
# inv-2: other spellings of the name; a custom event of another name is no update. 2 at 06:00,
# 0 at 09:00 (a stock-out), never restocked. Day: level 0, out of stock, 1 stock-out, 15 h
# (2026-10-01..11-30: 135 h).
stock(D + "06:00:00Z", [level("edge-inv-2", 2)], name="inventory_updated")
stock(D + "09:00:00Z", [level("edge-inv-2", 0)], name="INVENTORY UPDATED")
stock(D + "10:00:00Z", [level("edge-inv-2", 10)], name="Inventory Snapshot")
# inv-3: 0 followed by another 0 is one stock-out; a line without a quantity is no update.
# 1 at 07:00, 0 at 11:00 and 13:00, 8 at 20:00; 2 units sold to a bot at 21:00 (below). Day:
# level 8, 1 stock-out, 9 h, 2 units, 2 a day, 4 days of cover (2026-10-01..11-30: 2/61 a day,
# 244 days of cover).
stock(D + "07:00:00Z", [level("edge-inv-3", 1)])
stock(D + "11:00:00Z", [level("edge-inv-3", 0)])
stock(D + "13:00:00Z", [level("edge-inv-3", 0)])
stock(D + "15:00:00Z", [level("edge-inv-3")])
stock(D + "20:00:00Z", [level("edge-inv-3", 8)])
# inv-4: out of stock from the day before until 06:00; its latest update renames its category.
# 2 on 11-23, 0 on 11-24 15:00, 12 at 06:00 (category edge-new); viewed out of stock on 11-24
# 20:00 and at 05:00. Day: level 12, category edge-new, 0 stock-outs, 6 h, 1 view out of stock
# (2026-10-01..11-30: 1 stock-out, 15 h, 2 views).
stock("2026-11-23T10:00:00Z", [level("edge-inv-4", 2)])
stock("2026-11-24T15:00:00Z", [level("edge-inv-4", 0)])
stock(D + "06:00:00Z", [level("edge-inv-4", 12, category="edge-new")])
ev("2026-11-24T20:00:00Z", "Product Viewed", "a-inv", None, "s-inv-0", prod("edge-inv-4", 9))
ev(D + "05:00:00Z", "Product Viewed", "a-inv", None, "s-inv-1", prod("edge-inv-4", 9))
# inv-5: its first update sets 0 (a stock-out), at 05:00; 6 at 14:00. Out-of-stock demand: a
# view before any update (no), a view and an add at 09:30 and 09:35 (yes), a bot's view at 09:40
# (no), views at 14:00, the restock's instant (no), and at 15:00 (no). Day: level 6, 1 stock-out,
# 9 h, 1 view and 1 add out of stock.
ev(D + "04:00:00Z", "Product Viewed", "a-inv", None, "s-inv-1", prod("edge-inv-5", 9))
stock(D + "05:00:00Z", [level("edge-inv-5", 0)])
ev(D + "09:30:00Z", "Product Viewed", "a-inv", None, "s-inv-2", prod("edge-inv-5", 9))
ev(D + "09:35:00Z", "Product Added", "a-inv", None, "s-inv-2", prod("edge-inv-5", 9))
ev(D + "09:40:00Z", "Product Viewed", "a-inv-bot", None, "s-inv-bot", prod("edge-inv-5", 9), ua=BOT)
stock(D + "14:00:00Z", [level("edge-inv-5", 6)])
ev(D + "14:00:00Z", "Product Viewed", "a-inv", None, "s-inv-3", prod("edge-inv-5", 9))
ev(D + "15:00:00Z", "Product Viewed", "a-inv", None, "s-inv-3", prod("edge-inv-5", 9))
# inv-6: 4 at 01:00; sold to a bot (bots count) on a line without a quantity (1 unit). Day:
# level 4, 0 h, 1 unit, 1 a day, 4 days of cover (2026-10-01..11-30: 244).
stock(D + "01:00:00Z", [level("edge-inv-6", 4)])
no_quantity = prod("edge-inv-6", 10)
del no_quantity["quantity"]
order(D + "21:00:00Z", "a-inv-bot", None, "s-inv-bot", "o-inv-1", [no_quantity, prod("edge-inv-3", 10, 2)], ua=BOT)
# inv-7: two updates at the same instant apply in event id order, whatever order they arrive
# in: 3 at 08:00, then at 16:00 0 (id ...e701) and 5 (id ...e702). Day: level 5, 1 stock-out
# (of no duration), 0 h.
stock(D + "08:00:00Z", [level("edge-inv-7", 3)])
stock(D + "16:00:00Z", [level("edge-inv-7", 5)], message_id="0e0e0e0e-0000-4000-8000-00000000e702")
stock(D + "16:00:00Z", [level("edge-inv-7", 0)], message_id="0e0e0e0e-0000-4000-8000-00000000e701")


def send(key, batch):
    auth = base64.b64encode(f"{key}:".encode()).decode()
    req = urllib.request.Request(f"{HOST}/v1/batch", data=json.dumps({"batch": batch}).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(req) as r:
        if r.status != 200:
            raise SystemExit(f"the collector answered {r.status}: {r.read()[:200]!r}")


send(WEB_KEY, web)
send(BACKEND_KEY, backend)
