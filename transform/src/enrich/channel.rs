//! Marketing channel of an event, from UTM parameters, ad click ids and the referrer, in the order
//! a marketer expects: explicit tagging first, then click ids, then where the visitor came from.

/// Channels, stored in the `channel` column.
pub const PAID_SEARCH: &str = "paid_search";
pub const PAID_SOCIAL: &str = "paid_social";
pub const DISPLAY: &str = "display";
pub const EMAIL: &str = "email";
pub const AFFILIATE: &str = "affiliate";
pub const ORGANIC_SEARCH: &str = "organic_search";
pub const ORGANIC_SOCIAL: &str = "organic_social";
pub const REFERRAL: &str = "referral";
pub const OTHER_CAMPAIGN: &str = "other_campaign";
pub const DIRECT: &str = "direct";

const SEARCH_ENGINES: &[&str] = &[
    "google",
    "bing",
    "duckduckgo",
    "yahoo",
    "baidu",
    "yandex",
    "ecosia",
    "qwant",
    "naver",
];
const SOCIAL_SITES: &[&str] = &[
    "facebook",
    "instagram",
    "tiktok",
    "twitter",
    "x",
    "t",
    "linkedin",
    "pinterest",
    "reddit",
    "youtube",
    "snapchat",
    "lnkd",
];

/// What the classification looks at.
#[derive(Clone, Copy, Debug, Default)]
pub struct Touch<'a> {
    pub utm_source: Option<&'a str>,
    pub utm_medium: Option<&'a str>,
    pub gclid: Option<&'a str>,
    pub fbclid: Option<&'a str>,
    pub msclkid: Option<&'a str>,
    pub referrer: Option<&'a str>,
    pub page_url: Option<&'a str>,
}

/// How many trailing labels of `labels` are the public suffix: 2 for a second-level suffix such as
/// `co.uk` or `com.br`, else 1. (A heuristic: the full Public Suffix List is not worth its size
/// for telling a referrer's site apart.)
fn suffix_labels(labels: &[&str]) -> usize {
    let n = labels.len();
    if n >= 3
        && matches!(labels[n - 2], "co" | "com" | "org" | "net" | "ac" | "gov")
        && labels[n - 1].len() == 2
    {
        2
    } else {
        1
    }
}

/// The name of a host's site: `www.google.co.uk` → `google`, `l.facebook.com` → `facebook`.
fn site_name(host: &str) -> &str {
    let labels: Vec<&str> = host.split('.').filter(|l| !l.is_empty()).collect();
    match labels.len() {
        0 => "",
        1 => labels[0],
        n => labels[n - 1 - suffix_labels(&labels)],
    }
}

/// The registrable domain of a host, with its suffix: `shop.example.co.uk` → `example.co.uk`.
fn registrable_domain(host: &str) -> String {
    let labels: Vec<&str> = host.split('.').filter(|l| !l.is_empty()).collect();
    let keep = (suffix_labels(&labels) + 1).min(labels.len());
    labels[labels.len() - keep..].join(".").to_ascii_lowercase()
}

fn host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = host.split(':').next()?;
    (!host.is_empty()).then_some(host)
}

/// Classifies one touch into a channel.
pub fn classify(t: &Touch<'_>) -> &'static str {
    let medium = t.utm_medium.map(str::to_ascii_lowercase);
    let source = t.utm_source.map(str::to_ascii_lowercase);
    let source_is_social = source
        .as_deref()
        .is_some_and(|s| SOCIAL_SITES.contains(&s) || s == "meta");
    if let Some(m) = medium.as_deref() {
        match m {
            "cpc" | "ppc" | "paid_search" | "paidsearch" | "sem" if !source_is_social => {
                return PAID_SEARCH;
            }
            "cpc" | "ppc" | "paid_social" | "paidsocial" | "social_paid" | "social-paid" => {
                return PAID_SOCIAL;
            }
            "cpm" | "display" | "banner" | "programmatic" => {
                return if source_is_social {
                    PAID_SOCIAL
                } else {
                    DISPLAY
                };
            }
            "email" | "e-mail" | "newsletter" | "crm" => return EMAIL,
            "affiliate" | "affiliates" | "partner" => return AFFILIATE,
            "social" | "social-network" | "social_media" | "sm" => return ORGANIC_SOCIAL,
            "organic" => return ORGANIC_SEARCH,
            "referral" => return REFERRAL,
            _ => {}
        }
    }
    if t.gclid.is_some() || t.msclkid.is_some() {
        return PAID_SEARCH;
    }
    if t.fbclid.is_some() {
        // Meta adds fbclid to organic shares too; without paid tagging it is social, not paid.
        return if medium.is_some() {
            PAID_SOCIAL
        } else {
            ORGANIC_SOCIAL
        };
    }
    if medium.is_some() || source.is_some() {
        return if source_is_social {
            ORGANIC_SOCIAL
        } else {
            OTHER_CAMPAIGN
        };
    }
    let Some(referrer_host) = t.referrer.and_then(host) else {
        return DIRECT;
    };
    // A referrer on the shop's own site is navigation inside a visit, not a source.
    if t.page_url.and_then(host).map(registrable_domain) == Some(registrable_domain(referrer_host))
    {
        return DIRECT;
    }
    let referrer_site = site_name(referrer_host);
    if SEARCH_ENGINES.contains(&referrer_site) {
        ORGANIC_SEARCH
    } else if SOCIAL_SITES.contains(&referrer_site) {
        ORGANIC_SOCIAL
    } else {
        REFERRAL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utm<'a>(source: &'a str, medium: &'a str) -> Touch<'a> {
        Touch {
            utm_source: Some(source),
            utm_medium: Some(medium),
            ..Default::default()
        }
    }

    #[test]
    fn tagged_traffic() {
        assert_eq!(classify(&utm("google", "cpc")), PAID_SEARCH);
        assert_eq!(classify(&utm("facebook", "cpc")), PAID_SOCIAL);
        assert_eq!(classify(&utm("facebook", "paid_social")), PAID_SOCIAL);
        assert_eq!(classify(&utm("tiktok", "cpm")), PAID_SOCIAL);
        assert_eq!(classify(&utm("criteo", "display")), DISPLAY);
        assert_eq!(classify(&utm("newsletter", "email")), EMAIL);
        assert_eq!(classify(&utm("awin", "affiliate")), AFFILIATE);
        assert_eq!(classify(&utm("instagram", "social")), ORGANIC_SOCIAL);
        assert_eq!(classify(&utm("podcast", "audio")), OTHER_CAMPAIGN);
    }

    #[test]
    fn click_ids_without_tags() {
        let t = Touch {
            gclid: Some("abc"),
            ..Default::default()
        };
        assert_eq!(classify(&t), PAID_SEARCH);
        let t = Touch {
            msclkid: Some("abc"),
            ..Default::default()
        };
        assert_eq!(classify(&t), PAID_SEARCH);
        let t = Touch {
            fbclid: Some("abc"),
            ..Default::default()
        };
        assert_eq!(classify(&t), ORGANIC_SOCIAL);
    }

    #[test]
    fn referrers() {
        let page = Some("https://shop.example.com/p/1");
        let r = |referrer| {
            classify(&Touch {
                referrer: Some(referrer),
                page_url: page,
                ..Default::default()
            })
        };
        assert_eq!(r("https://www.google.co.uk/search?q=shoes"), ORGANIC_SEARCH);
        assert_eq!(r("https://duckduckgo.com/"), ORGANIC_SEARCH);
        assert_eq!(r("https://l.facebook.com/l.php"), ORGANIC_SOCIAL);
        assert_eq!(r("https://blog.example.org/best-shoes"), REFERRAL);
        assert_eq!(r("https://shop.example.com/cart"), DIRECT);
        assert_eq!(classify(&Touch::default()), DIRECT);
    }
}
