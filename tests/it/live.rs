//! Fraud scoring and recommendations served by `shoplake stream`: the answers the storefront gets,
//! hot reload of the rules, and the state kept across a restart.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::e2e::{
    authorize, block_on, free_port, http_get, run, shoplake, sql, terminate, with_token,
};

/// A running `shoplake stream`, killed when the test ends however it ends (a failed assertion
/// must not leave it running).
struct Running(Option<Child>);

impl Running {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }

    /// Stops it with SIGTERM, as an operator would.
    fn stop(mut self) -> std::process::ExitStatus {
        terminate(self.0.take().expect("running"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_stream(data: &Path, config: &str, addr: &str) -> Running {
    authorize(data, addr);
    Running(Some(
        shoplake(
            data,
            &["--config", config, "stream", "--metrics-addr", addr],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    ))
}

/// A metric's value from /metrics.
fn metric(addr: &str, name: &str) -> Option<f64> {
    let (status, text) = http_get(addr, "/metrics")?;
    (status == 200).then_some(())?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until the stage has read `records` records and `progress` (a counter of its
/// /metrics: events staged, or flushes when nothing is left to stage) has moved.
fn wait_caught_up(child: &mut Child, addr: &str, records: u64, progress: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the stage exited early"
        );
        let read = metric(addr, "shoplake_stage_records_read_total").unwrap_or(0.0);
        if read as u64 >= records && metric(addr, progress).unwrap_or(0.0) > 0.0 {
            // The last flush comes at most max_batch_age after the last read.
            std::thread::sleep(Duration::from_millis(800));
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the stage read {read} of {records} records in 120 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn get_json(addr: &str, path: &str) -> (u16, Value) {
    let (status, body) = http_get(addr, path).unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

fn post_json(addr: &str, path: &str, body: &str) -> (u16, Value) {
    block_on(async {
        let request = reqwest::Client::new().post(format!("http://{addr}{path}"));
        let resp = with_token(request, addr)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
        )
    })
}

const REASONS: &[&str] = &[
    "bought_together",
    "viewed_together",
    "trending",
    "buy_again",
    "recently_viewed",
    "popular",
];

fn order(card: &str, total: f64) -> String {
    json!({
        "anonymous_id": "a-checkout-1", "user_id": "u-checkout-1",
        "context": {"ip": "81.2.69.160", "device": {"id": "d-checkout-1"}},
        "properties": {"total": total, "currency": "USD", "payment_method": "card",
                       "card_fingerprint": card, "billing_country": "US", "shipping_country": "US",
                       "products": [{"product_id": "p-1", "price": total, "quantity": 1}]}
    })
    .to_string()
}

#[test]
fn the_storefront_gets_scores_and_recommendations_and_they_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let rules = data.join("rules.toml");
    std::fs::write(
        &rules,
        "version = \"test-1\"\n[thresholds]\nreview = 50\nblock = 90\n\n[[rule]]\nreason = \"big_amount\"\ncondition = \"amount >= 5000\"\nscore = 60\n",
    )
    .unwrap();
    let config = data.join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "[stage]\nmax_batch_age = \"300ms\"\nlive_rebuild = \"100days\"\n[stage.fraud]\nrules_file = {:?}\nreload_interval = \"200ms\"\n",
            rules.display().to_string()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let stats: Value = serde_json::from_str(
        run(
            data,
            &[
                "emit",
                "--seed",
                "11",
                "--sessions",
                "1200",
                "--start",
                "2026-03-01T00:00:00Z",
                // No fraud: its chargebacks come weeks after the sessions, and once the stream
                // is drained they move the engines' clock past every session, which decays the
                // recommendations to nothing; this test compares answers across a restart.
                "--fraud-share",
                "0",
                "--stats-json",
            ],
        )
        .lines()
        .last()
        .unwrap(),
    )
    .unwrap();
    let records = stats["records"].as_u64().unwrap();

    let addr = format!("127.0.0.1:{}", free_port());
    let mut stage = start_stream(data, &config, &addr);
    wait_caught_up(
        stage.child(),
        &addr,
        records,
        "shoplake_stage_events_staged_total",
    );

    // A shopper who bought something, and a product sold, from the lake.
    run(data, &["--config", &config, "batch", "compact"]);
    let row = &sql(
        data,
        "select coalesce(user_id, anonymous_id) as shopper, products[1]['product_id'] as product \
         from events where event_name = 'order_completed' order by event_time desc limit 1",
    )[0];
    let shopper = row["shopper"].as_str().unwrap().to_owned();
    let product = row["product"].as_str().unwrap().to_owned();

    // Every order in the stream was decided, once.
    let orders = sql(
        data,
        "select count(*) as n from events where event_name = 'order_completed'",
    )[0]["n"]
        .as_u64()
        .unwrap();
    let decided = sql(
        data,
        "select count(*) as n, count(distinct event_id) as ids, \
         count(*) filter (where rules_version = 'test-1') as v, \
         count(*) filter (where features['amount'] is not null) as with_amount \
         from fraud_decisions",
    );
    assert!(orders > 20, "{orders} orders");
    assert_eq!(decided[0]["n"].as_u64(), Some(orders), "{decided:?}");
    assert_eq!(decided[0]["ids"].as_u64(), Some(orders));
    assert_eq!(decided[0]["v"].as_u64(), Some(orders));
    assert_eq!(decided[0]["with_amount"].as_u64(), Some(orders));

    // Recommendations for a known shopper: known, with a reason per item, at most k.
    let (status, recs) = get_json(&addr, &format!("/v1/recommendations/{shopper}?k=5"));
    assert_eq!(status, 200, "{recs}");
    assert_eq!(recs["known"], true, "{recs}");
    let items = recs["items"].as_array().unwrap();
    assert!(!items.is_empty() && items.len() <= 5, "{recs}");
    for item in items {
        assert!(
            REASONS.contains(&item["reason"].as_str().unwrap()),
            "{item}"
        );
        assert!(item["product_id"].as_str().is_some_and(|p| !p.is_empty()));
    }
    // An unknown shopper still gets something to see, marked as such.
    let (status, unknown) = get_json(&addr, "/v1/recommendations/nobody-we-know?k=3");
    assert_eq!(status, 200);
    assert_eq!(unknown["known"], false);
    let items = unknown["items"].as_array().unwrap();
    assert!(!items.is_empty() && items.len() <= 3, "{unknown}");
    assert!(
        items
            .iter()
            .all(|i| matches!(i["reason"].as_str(), Some("trending" | "popular"))),
        "{unknown}"
    );
    // Related products of a product sold, and of one never seen.
    let (status, related) = get_json(&addr, &format!("/v1/products/{product}/related"));
    assert_eq!(status, 200);
    assert_eq!(related["known"], true, "{related}");
    assert!(
        related["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["product_id"] != product.as_str()),
        "a product is not its own relative: {related}"
    );
    let (status, unknown) = get_json(&addr, "/v1/products/no-such-product/related?k=4");
    assert_eq!((status, &unknown["known"]), (200, &Value::Bool(false)));
    // Malformed requests: 400 with a message.
    for path in [
        "/v1/recommendations/x?k=0",
        "/v1/recommendations/x?k=abc",
        "/v1/products/p-1/related?k=1000",
    ] {
        let (status, body) = get_json(&addr, path);
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"], "invalid_k", "{path}");
        assert!(body["detail"].as_str().unwrap().contains("1 to 100"));
    }

    // Fraud scoring at checkout: the same features and rules, synchronously.
    let (status, small) = post_json(&addr, "/v1/fraud/score", &order("card-1", 40.0));
    assert_eq!(status, 200, "{small}");
    assert_eq!(small["verdict"], "allow", "{small}");
    assert_eq!(small["rules_version"], "test-1");
    assert_eq!(small["order_id"], "", "an order not placed yet has no id");
    let (status, big) = post_json(&addr, "/v1/fraud/score", &order("card-1", 9000.0));
    assert_eq!(status, 200, "{big}");
    assert_eq!(big["verdict"], "review", "{big}");
    assert_eq!(big["reasons"], json!(["big_amount"]));
    let (status, err) = post_json(&addr, "/v1/fraud/score", "{not json");
    assert_eq!((status, err["error"].as_str()), (400, Some("invalid_json")));
    let (status, err) = post_json(
        &addr,
        "/v1/fraud/score",
        r#"{"anonymous_id":"a","properties":{"total":"lots","currency":"USD"}}"#,
    );
    assert_eq!(status, 400, "{err}");
    assert!(
        err["detail"].as_str().unwrap().contains("properties.total"),
        "{err}"
    );
    let (status, err) = post_json(
        &addr,
        "/v1/fraud/score",
        r#"{"event_name":"product_viewed","anonymous_id":"a"}"#,
    );
    assert_eq!(status, 400, "{err}");

    // Hot reload: a bad file is refused and the running rules stay; a good one is taken.
    std::fs::write(&rules, "version = \"test-2\"\n[[rule]]\nreason = \"x\"\ncondition = \"no_such_feature > 1\"\nscore = 10\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&addr, "shoplake_fraud_rules_refused_total").unwrap_or(0.0) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the bad rules file was not noticed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, still) = post_json(&addr, "/v1/fraud/score", &order("card-1", 9000.0));
    assert_eq!(still["rules_version"], "test-1");
    std::fs::write(
        &rules,
        "version = \"test-3\"\n[thresholds]\nreview = 50\nblock = 90\n\n[[rule]]\nreason = \"big_amount\"\ncondition = \"amount >= 5000\"\nscore = 95\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, now) = post_json(&addr, "/v1/fraud/score", &order("card-1", 9000.0));
        if now["rules_version"] == "test-3" {
            assert_eq!(now["verdict"], "block", "{now}");
            break;
        }
        assert!(Instant::now() < deadline, "the new rules were not taken");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A restart keeps the state: the same answers before and after.
    let before = get_json(&addr, &format!("/v1/recommendations/{shopper}?k=10")).1;
    let related_before = get_json(&addr, &format!("/v1/products/{product}/related")).1;
    assert!(stage.stop().success());
    let addr = format!("127.0.0.1:{}", free_port());
    let mut stage = start_stream(data, &config, &addr);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(&addr, "/health").is_none() {
        assert!(Instant::now() < deadline, "the stage did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(stage.child().try_wait().unwrap().is_none());
    // Serving lists are refreshed every few seconds of event time, and a restart rebuilds them
    // from the saved counts: the same products for the same reasons (the order of near-equal
    // scores may differ).
    let items = |v: &Value| {
        let mut items: Vec<(String, String)> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["product_id"].as_str().unwrap().to_owned(),
                    i["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        items.sort();
        items
    };
    let after = get_json(&addr, &format!("/v1/recommendations/{shopper}?k=10")).1;
    assert_eq!(after["known"], true);
    assert_eq!(items(&after), items(&before), "{after}\n{before}");
    let related_after = get_json(&addr, &format!("/v1/products/{product}/related")).1;
    assert_eq!(items(&related_after), items(&related_before));
    assert!(stage.stop().success());

    // The stage's state is lost (a new disk): the live state is rebuilt from the lake, and the
    // stream, read again from its start, neither stages nor feeds what the lake already holds.
    std::fs::remove_file(data.join("state").join("stage.redb")).unwrap();
    let events_before = sql(data, "select count(*) as n from events")[0]["n"].clone();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut stage = start_stream(data, &config, &addr);
    // Nothing is staged again: flushes show the stage went through the stream.
    wait_caught_up(
        stage.child(),
        &addr,
        records,
        "shoplake_stage_flushes_total",
    );
    assert_eq!(
        metric(&addr, "shoplake_stage_events_staged_total"),
        Some(0.0),
        "every record re-read is a duplicate of the lake"
    );
    let rebuilt = get_json(&addr, &format!("/v1/recommendations/{shopper}?k=10")).1;
    assert_eq!(rebuilt["known"], true, "{rebuilt}");
    assert!(
        !rebuilt["items"].as_array().unwrap().is_empty(),
        "{rebuilt}"
    );
    let related_rebuilt = get_json(&addr, &format!("/v1/products/{product}/related")).1;
    assert_eq!(related_rebuilt["known"], true, "{related_rebuilt}");
    // Item to item came from product_affinity, which the cold start built from the whole
    // history (as of the lake's latest event); the replay did not count those pairs again, so
    // the answer is the one the engine that saw every event gave.
    let table = &sql(
        data,
        "select count(*) as n, max(as_of) = (select max(event_time) from events) as complete \
         from product_affinity",
    )[0];
    assert!(table["n"].as_u64().unwrap() > 100, "{table}");
    assert_eq!(table["complete"], true, "{table}");
    let ids = |v: &Value| {
        let mut ids: Vec<String> = items(v).into_iter().map(|i| i.0).collect();
        ids.sort();
        ids
    };
    let (was, now) = (ids(&related_before), ids(&related_rebuilt));
    let same = now.iter().filter(|p| was.contains(p)).count();
    eprintln!(
        "related after a cold start: {same} of {} the same",
        was.len()
    );
    // The last places hold near-equal scores (the seeded counts are decayed from the table's
    // `as_of`, the engine's from its own reference): 7 of 10 on this data, 8 before issue 22's
    // shoppers.
    assert!(
        same * 10 >= was.len() * 7,
        "{related_rebuilt}\n{related_before}"
    );
    assert!(stage.stop().success());
    run(data, &["--config", &config, "batch", "compact"]);
    assert_eq!(
        sql(data, "select count(*) as n from events")[0]["n"],
        events_before
    );
    assert_eq!(
        sql(data, "select count(*) as n from fraud_decisions")[0]["n"].as_u64(),
        Some(orders)
    );

    // `batch affinity` rewrites the table; a pair's count is the decayed number of human orders
    // holding both products, as plain SQL over the events counts it.
    let report: Value = serde_json::from_str(
        run(data, &["--config", &config, "batch", "affinity"])
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert!(report["rows"].as_u64().unwrap() > 100, "{report}");
    assert_eq!(report["orders"].as_u64(), Some(orders), "{report}");
    let top = &sql(
        data,
        "select product_id, related_product_id, together, rank from product_affinity \
         where relation = 'bought_together' order by together desc, product_id limit 1",
    )[0];
    let (a, b) = (
        top["product_id"].as_str().unwrap(),
        top["related_product_id"].as_str().unwrap(),
    );
    let by_sql = &sql(
        data,
        &format!(
            "with l as (select event_id, event_time, unnest(products) as line from events \
               where event_name = 'order_completed' and is_bot is not true), \
             o as (select event_id, min(event_time) as t from l \
               where line['product_id'] in ('{a}', '{b}') group by event_id \
               having count(distinct line['product_id']) = 2) \
             select sum(power(2.0, (cast(cast(t as bigint) as double) - \
               (select cast(cast(max(as_of) as bigint) as double) from product_affinity)) \
               / (336 * 3600e6))) as together from o"
        ),
    )[0];
    let (table, by_sql) = (
        top["together"].as_f64().unwrap(),
        by_sql["together"].as_f64().unwrap(),
    );
    assert!(
        (table - by_sql).abs() < 1e-9 * by_sql,
        "{table} vs {by_sql}"
    );
}

/// `shoplake eval` on settings the rules were not tuned on (seed, confounders, mix, traffic):
/// every scorer at every prevalence, and the rules meet issue 22's targets at 1% fraud and a 1%
/// review budget; recommendations asked before each order hit at least twice as often as the
/// most-bought products.
#[test]
fn eval_meets_the_quality_targets_on_unseen_settings() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &[
            "eval",
            "--seed",
            "103",
            "--sessions",
            "7000",
            "--sessions-per-hour",
            "900",
            "--fraud-mix",
            "1,2,1",
            "--fraud-share",
            "0.1",
            "--confound",
            "shared_ip=0.3",
            "--confound",
            "travel=0.06",
            "--json",
        ],
    );
    let r: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let fraud = &r["fraud"];
    assert!(fraud["test_fraud"].as_u64().unwrap() >= 40, "{fraud}");
    assert_eq!(fraud["labels_without_decision"], 0, "{fraud}");
    assert_eq!(r["confounders"]["shared_ip"], 0.3);
    let names: Vec<&str> = fraud["scorers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "rules",
            "amount",
            "velocity rules",
            "logistic regression",
            "boosted trees"
        ]
    );
    for s in fraud["scorers"].as_array().unwrap() {
        let at: Vec<f64> = s["at"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["prevalence"].as_f64().unwrap())
            .collect();
        assert_eq!(at, [0.001, 0.005, 0.01, 0.02], "{s}");
    }
    // The default rules (with the shipped model) at 1% fraud and a 1% review budget, on a seed
    // and mix neither was developed on: issue 22's targets, recall ≥ 0.7 at precision ≥ 0.5 and
    // at least twice the amount threshold's recall.
    let at_1 = |scorer: &str| {
        fraud["scorers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == scorer)
            .unwrap()["at"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["prevalence"] == 0.01)
            .unwrap()
            .clone()
    };
    let (rules, amount) = (at_1("rules"), at_1("amount"));
    let recall = |a: &Value| a["budget_recall"].as_f64().unwrap();
    assert!(
        recall(&rules) >= 2.0 * recall(&amount),
        "{rules} vs {amount}"
    );
    assert!(recall(&rules) >= 0.7, "{rules}");
    assert!(
        rules["budget_precision"].as_f64().unwrap() >= 0.5,
        "{rules}"
    );
    assert_eq!(r["fraud_targets"]["met"], true, "{}", r["fraud_targets"]);
    let recs = &r["recommendations"];
    assert!(recs["served"]["cases"].as_u64().unwrap() > 300, "{recs}");
    assert!(
        recs["hit_rate_vs_baseline"].as_f64().unwrap() >= 2.0,
        "{recs}"
    );
    assert!(recs["mrr_vs_baseline"].as_f64().unwrap() >= 2.0, "{recs}");
}

/// `shoplake fraud train` on a simulated store's lake: it learns from the chargebacks the lake
/// holds (orders old enough, paid), says how the new model compares with the scores served, and
/// writes a model that a rules file names and the stage then scores with.
#[test]
fn fraud_train_learns_from_chargebacks_and_the_stage_scores_with_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let emit = |seed: &str, sessions: &str, start: &str, config: &[&str]| {
        let mut args = config.to_vec();
        args.extend([
            "emit",
            "--seed",
            seed,
            "--sessions",
            sessions,
            "--fraud-share",
            "0.1",
            "--start",
            start,
        ]);
        run(data, &args);
        let mut drain = config.to_vec();
        drain.extend(["stream", "--drain"]);
        run(data, &drain);
        run(data, &["batch", "compact"]);
    };
    emit("5", "6000", "2026-03-01T00:00:00Z", &[]);
    // The labels, counted here with SQL of this test's own: decided orders that were paid and
    // later refunded as fraud.
    let expected = crate::e2e::count(
        data,
        "select count(distinct d.order_id) from fraud_decisions d \
         join events r on r.order_id = d.order_id and r.event_name = 'order_refunded' \
         and r.reason = 'fraud_chargeback' \
         where d.order_id in (select order_id from events where event_name = 'payment_authorized')",
    );
    assert!(expected >= 20, "{expected} chargebacks");

    // Every chargeback may take 60 days: the simulated orders are all younger than that before
    // the lake's latest event (their own chargebacks), so there is nothing to train on yet.
    let model = data.join("model.json");
    let model_arg = model.to_str().unwrap();
    let refused = shoplake(data, &["fraud", "train", "--out", model_arg])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("0 fraud orders old enough to train on; at least 20 are needed"),
        "{stderr}"
    );
    assert!(!model.exists());

    let out = run(
        data,
        &[
            "fraud",
            "train",
            "--label-delay",
            "30days",
            "--version",
            "store-1",
            "--out",
            model_arg,
        ],
    );
    assert!(
        out.contains(&format!("{expected} of those refunded as fraud_chargeback")),
        "{out}"
    );
    assert!(
        out.contains("boosted trees") && out.contains("rules "),
        "{out}"
    );
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    assert_eq!(file["format"], "shoplake-gbdt-1");
    assert_eq!(file["version"], "store-1");
    assert_eq!(file["trained_fraud"].as_u64(), Some(expected));
    assert!(!file["trees"].as_array().unwrap().is_empty());
    let features: Vec<&str> = file["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(features.contains(&"device_cards_1d") && !features.contains(&"model_score"));

    // A rules file names it (beside the rules file); the config check reads it, and the stage
    // scores the next orders with it.
    let rules = data.join("rules.toml");
    std::fs::write(
        &rules,
        "version = \"r1\"\n[thresholds]\nreview = 50\nblock = 80\n\n[model]\nweight = 100\n\
         file = \"model.json\"\n\n[[rule]]\nreason = \"many_cards\"\n\
         condition = \"device_cards_1d >= 3\"\nscore = 40\n",
    )
    .unwrap();
    let config = data.join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "[stage.fraud]\nrules_file = {:?}\n",
            rules.display().to_string()
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let checked = run(data, &["config", "check", config_arg]);
    assert!(checked.contains("version r1+store-1"), "{checked}");
    emit(
        "6",
        "1500",
        "2026-03-02T00:00:00Z",
        &["--config", config_arg],
    );
    let rows = sql(
        data,
        "select rules_version, count(*) as n, max(features['model_score']) as top, \
         min(features['model_score']) as bottom from fraud_decisions group by rules_version \
         order by rules_version",
    );
    let served = rows
        .iter()
        .find(|r| r["rules_version"] == "r1+store-1")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert!(served["n"].as_u64().unwrap() > 100, "{served}");
    let (top, bottom) = (
        served["top"].as_f64().unwrap(),
        served["bottom"].as_f64().unwrap(),
    );
    assert!(top > 0.5 && (0.0..0.05).contains(&bottom), "{served}");
}
