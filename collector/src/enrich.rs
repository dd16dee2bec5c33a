//! Enrichment at the edge, before anything is stored: the user agent parsed into browser, OS and
//! device type (crawlers marked as `bot`), the IP address's country from a MaxMind DB, and the
//! privacy options (IP addresses truncated, e-mail addresses hashed).
//!
//! User agents are parsed with `woothee`: its rules are compiled Rust (a few µs per agent, no
//! start-up cost, no regex file to ship), against ~1 ms per agent and ~300 ms of start-up for the
//! uap-core based parsers (`uaparser`, `user-agent-parser`), which a collector aiming at tens of
//! thousands of events per second cannot afford. It tells browser, OS and category (pc,
//! smartphone, mobile phone, crawler, appliance) and knows the common crawlers. The streaming
//! stage still runs its own list of bot markers (`transform::enrich::bots`) over every event,
//! whatever its emitter; `device_type = "bot"` set here is one of the signals it reads.

use std::borrow::Cow;
use std::net::IpAddr;
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::keys::hex;

/// What the user agent says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Agent {
    pub browser: Option<&'static str>,
    pub os: Option<&'static str>,
    /// desktop, mobile, tablet or bot.
    pub device_type: Option<&'static str>,
}

/// Parses a user agent. Unknown parts stay `None`.
pub fn parse_user_agent(ua: &str) -> Agent {
    if woothee::is_crawler(ua) {
        return Agent {
            device_type: Some("bot"),
            ..Agent::default()
        };
    }
    let parser = woothee::parser::Parser::new();
    let Some(r) = parser.parse(ua) else {
        return Agent::default();
    };
    let known = |s: &str| -> Option<&'static str> { intern(s) };
    let tablet =
        r.os == "iPad" || ua.contains("Tablet") || (r.os == "Android" && !ua.contains("Mobile"));
    let device_type = match r.category {
        "crawler" => Some("bot"),
        "pc" => Some("desktop"),
        "smartphone" | "mobilephone" if tablet => Some("tablet"),
        "smartphone" | "mobilephone" => Some("mobile"),
        _ => None,
    };
    Agent {
        browser: if r.category == "crawler" {
            None
        } else {
            known(r.name)
        },
        os: known(r.os),
        device_type,
    }
}

/// Woothee's names are `'static` data, but its result type ties them to the input's lifetime;
/// this maps the ones it returns back to `'static` strings, so results need no allocation.
fn intern(s: &str) -> Option<&'static str> {
    const NAMES: &[&str] = &[
        "Chrome",
        "Safari",
        "Firefox",
        "Edge",
        "Opera",
        "Internet Explorer",
        "Vivaldi",
        "Sleipnir",
        "SamsungBrowser",
        "Yandex Browser",
        "Webview",
        "GSA",
        "Windows 11",
        "Windows 10",
        "Windows 8.1",
        "Windows 8",
        "Windows 7",
        "Windows Vista",
        "Windows XP",
        "Windows",
        "Mac OSX",
        "iPhone",
        "iPad",
        "iPod",
        "iOS",
        "Android",
        "Linux",
        "ChromeOS",
        "FreeBSD",
        "BlackBerry",
        "BlackBerry 10",
        "Windows Phone OS",
        "Firefox OS",
    ];
    if s.is_empty() || s == woothee::woothee::VALUE_UNKNOWN {
        return None;
    }
    NAMES.iter().copied().find(|n| *n == s).or(Some("other"))
}

/// Errors opening the GeoIP database.
#[derive(Debug, thiserror::Error)]
#[error("GeoIP database {path}: {source}")]
pub struct GeoIpError {
    pub path: String,
    #[source]
    pub source: maxminddb::MaxMindDbError,
}

/// IP address → ISO 3166-1 alpha-2 country, from a MaxMind DB file (GeoIP2 / GeoLite2 Country or
/// City, or any database with `country.iso_code`).
pub struct GeoIp {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp")
            .field("database_type", &self.reader.metadata().database_type)
            .finish()
    }
}

impl GeoIp {
    /// Loads the database into memory.
    pub fn open(path: &Path) -> Result<Self, GeoIpError> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|source| GeoIpError {
            path: path.display().to_string(),
            source,
        })?;
        Ok(GeoIp { reader })
    }

    /// The country of `ip`, when the database knows it (and it is a valid ISO code).
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let result = self.reader.lookup(ip).ok()?;
        let code: Option<&str> = result
            .decode_path(&maxminddb::path!["country", "iso_code"])
            .ok()
            .flatten();
        code.filter(|c| shoplake_events::codes::is_country(c))
            .map(str::to_owned)
    }
}

/// The network of `ip`: its /24 for IPv4, its /48 for IPv6.
pub fn truncate_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & 0xFFFF_FF00).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 80) - 1)).into()),
    }
}

/// Whether `s` looks like an e-mail address (one `@`, a local part, a dotted domain, no spaces).
pub fn is_email(s: &str) -> bool {
    let s = s.trim();
    if s.len() > 254 || s.contains(char::is_whitespace) {
        return false;
    }
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
}

/// Whether `s` may contain an e-mail address, plain or percent-encoded (`%40`).
pub fn may_hold_email(s: &str) -> bool {
    s.contains('@') || s.contains("%40")
}

/// `s` with every e-mail address inside it hashed. Addresses are the pieces between URL and text
/// delimiters (`?&=/#;:,` quotes, brackets, spaces); a percent-encoded `@` counts, and the hash is
/// of the decoded address, so `jane%40shop.example` and `jane@shop.example` hash alike.
fn hash_embedded_emails(s: &str) -> Cow<'_, str> {
    let mut out = String::with_capacity(s.len());
    let mut changed = false;
    for piece in s.split_inclusive(is_delimiter) {
        let (token, delimiter) = match piece.char_indices().last() {
            Some((i, c)) if is_delimiter(c) => piece.split_at(i),
            _ => (piece, ""),
        };
        let decoded = if token.contains("%40") {
            Cow::Owned(
                url::form_urlencoded::parse(format!("x={token}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default(),
            )
        } else {
            Cow::Borrowed(token)
        };
        if decoded.contains('@') && is_email(&decoded) {
            out.push_str(&hash_email(&decoded));
            changed = true;
        } else {
            out.push_str(token);
        }
        out.push_str(delimiter);
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(s)
    }
}

/// What separates an e-mail address from the text around it in URLs and prose.
fn is_delimiter(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '?' | '&'
                | '='
                | '/'
                | '#'
                | ';'
                | ':'
                | ','
                | '"'
                | '\''
                | '<'
                | '>'
                | '('
                | ')'
                | '['
                | ']'
        )
}

/// The hex SHA-256 of an e-mail address, trimmed and lower-cased.
pub fn hash_email(s: &str) -> String {
    hex(&Sha256::digest(s.trim().to_lowercase().as_bytes()))
}

/// What the privacy options change in the JSON values the client sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scrub {
    pub hash_emails: bool,
    pub truncate_ips: bool,
}

impl Scrub {
    pub fn is_off(self) -> bool {
        !self.hash_emails && !self.truncate_ips
    }

    /// A string value after the options: an e-mail hashed (also one inside a longer string, such
    /// as a page URL's `?email=jane%40shop.example`), an IP address truncated.
    pub fn string<'s>(self, s: &'s str) -> Cow<'s, str> {
        if self.hash_emails {
            if is_email(s) && !s.trim().contains(is_delimiter) {
                return Cow::Owned(hash_email(s));
            }
            if may_hold_email(s) {
                return hash_embedded_emails(s);
            }
        }
        if self.truncate_ips
            && let Ok(ip) = s.trim().parse::<IpAddr>()
        {
            return Cow::Owned(truncate_ip(ip).to_string());
        }
        Cow::Borrowed(s)
    }

    /// JSON text after the options, applied to every string in it (keys are left alone); the
    /// input itself when nothing in it can change.
    pub fn json<'j>(self, json: &'j str) -> Cow<'j, str> {
        let may_email = self.hash_emails && may_hold_email(json);
        let may_ip = self.truncate_ips && json.bytes().any(|b| b == b'.' || b == b':');
        if !may_email && !may_ip {
            return Cow::Borrowed(json);
        }
        let Ok(mut value) = serde_json::from_str::<Value>(json) else {
            return Cow::Borrowed(json);
        };
        if !self.walk(&mut value) {
            return Cow::Borrowed(json);
        }
        Cow::Owned(value.to_string())
    }

    fn walk(self, v: &mut Value) -> bool {
        match v {
            Value::String(s) => match self.string(s) {
                Cow::Owned(new) => {
                    *s = new;
                    true
                }
                Cow::Borrowed(_) => false,
            },
            Value::Array(items) => {
                let mut changed = false;
                for item in items {
                    changed |= self.walk(item);
                }
                changed
            }
            Value::Object(map) => {
                let mut changed = false;
                for item in map.values_mut() {
                    changed |= self.walk(item);
                }
                changed
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents() {
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
        assert_eq!(
            parse_user_agent(iphone),
            Agent {
                browser: Some("Safari"),
                os: Some("iPhone"),
                device_type: Some("mobile")
            }
        );
        let ipad = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1";
        assert_eq!(parse_user_agent(ipad).device_type, Some("tablet"));
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        assert_eq!(
            parse_user_agent(chrome),
            Agent {
                browser: Some("Chrome"),
                os: Some("Windows 10"),
                device_type: Some("desktop")
            }
        );
        let galaxy_tab = "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        assert_eq!(parse_user_agent(galaxy_tab).device_type, Some("tablet"));
        let googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
        assert_eq!(parse_user_agent(googlebot).device_type, Some("bot"));
        assert_eq!(parse_user_agent("").device_type, None);
    }

    #[test]
    fn privacy() {
        assert_eq!(
            truncate_ip("81.2.69.160".parse().unwrap()).to_string(),
            "81.2.69.0"
        );
        assert_eq!(
            truncate_ip("2001:db8:85a3:8d3:1319:8a2e:370:7348".parse().unwrap()).to_string(),
            "2001:db8:85a3::"
        );
        assert!(is_email("Jane.Doe@Example.com") && is_email(" a@b.co "));
        assert!(!is_email("@shop") && !is_email("a@b") && !is_email("a b@c.de"));
        // sha256("jane.doe@example.com")
        assert_eq!(
            hash_email(" Jane.Doe@Example.com"),
            "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"
        );
        let scrub = Scrub {
            hash_emails: true,
            truncate_ips: true,
        };
        let out = scrub.json(r#"{"email":"Jane@Shop.example","ips":["10.1.2.3"],"n":1}"#);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["email"], Value::from(hash_email("jane@shop.example")));
        assert_eq!(v["ips"][0], "10.1.2.0");
        assert_eq!(v["n"], 1);
        assert!(matches!(scrub.json(r#"{"n":1}"#), Cow::Borrowed(_)));
        assert!(Scrub::default().is_off());
    }

    #[test]
    fn emails_inside_urls_are_hashed() {
        let scrub = Scrub {
            hash_emails: true,
            truncate_ips: false,
        };
        let h = hash_email("jane@shop.example");
        assert_eq!(
            scrub.string("https://shop.example/welcome?email=Jane%40Shop.example&utm_source=mail"),
            format!("https://shop.example/welcome?email={h}&utm_source=mail")
        );
        assert_eq!(
            scrub.string("mailto:jane@shop.example"),
            format!("mailto:{h}")
        );
        // Nothing that is not an address changes.
        let plain = "https://shop.example/@brand/p/1?q=a%40";
        assert!(matches!(scrub.string(plain), Cow::Borrowed(_)));
        let out = scrub.json(r#"{"url":"/account?u=jane%40shop.example"}"#);
        assert_eq!(out, format!(r#"{{"url":"/account?u={h}"}}"#));
    }
}
