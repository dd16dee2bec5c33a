//! Bot and crawler detection from the user agent, so that reports can exclude them.

use std::collections::HashMap;
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

/// Distinct user agents whose verdicts [`BotCache`] keeps; it starts afresh when full.
const CACHED_AGENTS: usize = 4096;

/// [`is_bot`] with the verdicts of recent user agents kept: a shop's traffic comes from a few
/// hundred distinct user agents, and looking one up costs a fraction of scanning it.
#[derive(Debug, Default)]
pub struct BotCache {
    seen: HashMap<Box<str>, bool, foldhash::quality::RandomState>,
}

impl BotCache {
    /// The same answer as [`is_bot`].
    pub fn is_bot(&mut self, user_agent: Option<&str>, device_type: Option<&str>) -> bool {
        let Some(ua) = user_agent else {
            return is_bot(None, device_type);
        };
        if device_type.is_some_and(|d| d.eq_ignore_ascii_case("bot")) {
            return true;
        }
        if let Some(&bot) = self.seen.get(ua) {
            return bot;
        }
        let bot = MARKERS.is_match(ua);
        if self.seen.len() >= CACHED_AGENTS {
            self.seen.clear();
        }
        self.seen.insert(ua.into(), bot);
        bot
    }
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

    #[test]
    fn the_cache_answers_as_the_scan_does() {
        let mut cache = BotCache::default();
        let agents = [
            Some("curl/8.4.0"),
            Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0"),
            Some("Mozilla/5.0 HeadlessChrome/120.0"),
            None,
        ];
        // Twice over more agents than it keeps, so that answers come from the scan, the cache
        // and a cache started afresh.
        for round in 0..2 {
            for i in 0..CACHED_AGENTS + 10 {
                let numbered = format!("Agent/{i}");
                let generated = if i % 7 == 0 {
                    format!("{numbered} bot")
                } else {
                    numbered
                };
                for ua in agents.iter().copied().chain([Some(generated.as_str())]) {
                    for device in [None, Some("BOT"), Some("mobile")] {
                        assert_eq!(
                            cache.is_bot(ua, device),
                            is_bot(ua, device),
                            "{ua:?} {device:?} round {round}"
                        );
                    }
                }
            }
        }
        assert!(cache.seen.len() <= CACHED_AGENTS);
    }
}
