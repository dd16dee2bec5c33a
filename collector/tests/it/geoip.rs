//! Enrichment at the edge: countries from a MaxMind DB, truncated IPs, hashed e-mails.

use reqwest::StatusCode;
use serde_json::json;
use shoplake_collector::CollectorConfig;
use shoplake_events::{Limits, decode};

use crate::start;

/// A MaxMind DB (format 2.0, IPv4, 24-bit records) mapping networks to `country.iso_code`.
fn write_mmdb(path: &std::path::Path, networks: &[([u8; 4], u8, &str)]) {
    #[derive(Clone, Copy)]
    enum Rec {
        Empty,
        Node(usize),
        Data(usize),
    }
    fn string(out: &mut Vec<u8>, s: &str) {
        out.push(0x40 | s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
    let mut data = Vec::new();
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    for (ip, prefix, country) in networks {
        let offset = data.len();
        data.push(0xE1); // map of 1
        string(&mut data, "country");
        data.push(0xE1);
        string(&mut data, "iso_code");
        string(&mut data, country);
        let bits = u32::from_be_bytes(*ip);
        let mut node = 0;
        for depth in 0..*prefix {
            let bit = ((bits >> (31 - depth)) & 1) as usize;
            if depth + 1 == *prefix {
                nodes[node][bit] = Rec::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    _ => {
                        nodes.push([Rec::Empty, Rec::Empty]);
                        nodes[node][bit] = Rec::Node(nodes.len() - 1);
                        nodes.len() - 1
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for n in &nodes {
        for r in n {
            let v = match *r {
                Rec::Empty => count,
                Rec::Node(i) => i,
                Rec::Data(off) => count + 16 + off,
            } as u32;
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    out.push(0xE9); // map of 9
    string(&mut out, "binary_format_major_version");
    out.extend_from_slice(&[0xA1, 2]);
    string(&mut out, "binary_format_minor_version");
    out.push(0xA0);
    string(&mut out, "build_epoch");
    out.extend_from_slice(&[0x04, 0x02, 0x65, 0x00, 0x00, 0x00]);
    string(&mut out, "database_type");
    string(&mut out, "Test-Country");
    string(&mut out, "description");
    out.push(0xE1);
    string(&mut out, "en");
    string(&mut out, "test");
    string(&mut out, "ip_version");
    out.extend_from_slice(&[0xA1, 4]);
    string(&mut out, "languages");
    out.extend_from_slice(&[0x01, 0x04]);
    string(&mut out, "en");
    string(&mut out, "node_count");
    out.extend_from_slice(&[0xC2, (count >> 8) as u8, count as u8]);
    string(&mut out, "record_size");
    out.extend_from_slice(&[0xA1, 24]);
    std::fs::write(path, out).unwrap();
}

#[tokio::test]
async fn collector_geoip_country_and_truncated_ips() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("countries.mmdb");
    write_mmdb(
        &db,
        &[([81, 2, 69, 0], 24, "GB"), ([89, 160, 0, 0], 16, "SE")],
    );
    let s = start(CollectorConfig {
        geoip_database: Some(db),
        truncate_ips: true,
        hash_emails: true,
        ..CollectorConfig::default()
    })
    .await;
    let msg = |ip: &str| json!({"type": "identify", "userId": "jane@shop.example", "context": {"ip": ip}, "traits": {"email": "jane@shop.example"}});
    let batch = json!({"batch": [msg("81.2.69.160"), msg("89.160.20.112"), msg("10.0.0.1")]});
    assert_eq!(s.post("/v1/batch", &batch).await.0, StatusCode::OK);
    let mut seen: Vec<(String, Option<String>)> = s
        .events()
        .await
        .iter()
        .map(|e| {
            (
                e["context"]["ip"].as_str().unwrap().to_owned(),
                e["context"]["country"].as_str().map(str::to_owned),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("10.0.0.0".to_owned(), None),
            ("81.2.69.0".to_owned(), Some("GB".to_owned())),
            ("89.160.20.0".to_owned(), Some("SE".to_owned())),
        ]
    );
    for raw in s.records().await {
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(!text.contains('@'), "no e-mail is stored: {text}");
        assert!(
            decode(&raw, crate::arrival(), &Limits::default()).is_ok(),
            "{text}"
        );
    }
    // Without a context IP, the peer address (127.0.0.1 here) is looked up and truncated.
    let (status, _) = s
        .post("/v1/track", &json!({"event": "Signed In", "userId": "u"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let events = s.events().await;
    assert!(
        events.iter().any(|e| e["context"]["ip"] == "127.0.0.0"),
        "{events:?}"
    );
}
