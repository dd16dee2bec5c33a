//! Bot and crawler detection from the user agent, so that reports can exclude them.

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

/// True when the user agent is a known bot, crawler or script.
pub fn is_bot(user_agent: Option<&str>, device_type: Option<&str>) -> bool {
    if device_type.is_some_and(|d| d.eq_ignore_ascii_case("bot")) {
        return true;
    }
    let Some(ua) = user_agent else { return false };
    let ua = ua.to_ascii_lowercase();
    BOT_MARKERS.iter().any(|m| ua.contains(m))
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
    }
}
