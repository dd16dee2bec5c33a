//! Bot and crawler detection from the user agent, so that reports can exclude them.

use std::sync::LazyLock;

use aho_corasick::AhoCorasick;

/// Lower-case fragments found in the user agents of crawlers, monitors, headless browsers and
/// HTTP libraries.
const BOT_MARKERS: &[&str] = &[
    "bot",
    "crawl",
    "spider",
    "slurp",
    "headless",
    "phantomjs",
    "lighthouse",
    "pingdom",
    "uptimerobot",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "go-http-client",
    "java/",
    "okhttp",
    "httpclient",
    "facebookexternalhit",
    "preview",
    "scrapy",
    "ahrefs",
    "semrush",
    "bingpreview",
    "mediapartners",
];

/// All the markers in one automaton, matched ASCII case-insensitively: one pass over the user
/// agent, and no lower-cased copy of it (this runs for every event in the stage).
static MARKERS: LazyLock<AhoCorasick> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    // Invariant: a few dozen short literals stay far below the automaton's size limits (test
    // `known_bots_and_browsers` builds it).
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(BOT_MARKERS)
        .expect("the bot markers are a valid automaton")
});

/// True when the user agent is a known bot, crawler or script.
pub fn is_bot(user_agent: Option<&str>, device_type: Option<&str>) -> bool {
    if device_type.is_some_and(|d| d.eq_ignore_ascii_case("bot")) {
        return true;
    }
    user_agent.is_some_and(|ua| MARKERS.is_match(ua))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_bots_and_browsers() {
        assert!(is_bot(
            Some("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
            None
        ));
        assert!(is_bot(Some("Mozilla/5.0 HeadlessChrome/120.0"), None));
        assert!(is_bot(Some("curl/8.4.0"), None));
        assert!(is_bot(None, Some("bot")));
        assert!(!is_bot(
            Some(
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Version/17.0 Mobile/15E148 Safari/604.1"
            ),
            Some("mobile")
        ));
        assert!(!is_bot(None, None));
        // Any case, anywhere in the string.
        assert!(is_bot(
            Some("Mozilla/5.0 (compatible; BINGPREVIEW/1.0b)"),
            None
        ));
        assert!(is_bot(Some("Python-Requests/2.31"), Some("desktop")));
        assert!(is_bot(Some("x GO-HTTP-CLIENT/1.1"), None));
        assert!(!is_bot(
            Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0"),
            None
        ));
        assert!(!is_bot(Some(""), None));
    }
}
