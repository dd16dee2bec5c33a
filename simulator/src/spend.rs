//! What the simulated store's paid campaigns cost: one row per day and campaign, as an ad
//! platform's export gives it (clicks, impressions, cost), for `campaign_spend`.
//!
//! Every session that lands from a campaign bought per click (`cpc`, `paid_social`) is a click;
//! a click costs the campaign's price per click times a seeded factor between 0.7 and 1.3, and
//! the impressions are the clicks over the campaign's click-through rate. The factors come from a
//! generator of their own, so that the events are the same with or without spend.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::world::Source;

const DAY_MICROS: i64 = 86_400_000_000;

/// One day of one campaign, in US dollars.
#[derive(Clone, Debug, PartialEq)]
pub struct SpendRow {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    pub source: &'static str,
    pub medium: &'static str,
    pub campaign: &'static str,
    pub clicks: u64,
    pub impressions: u64,
    pub cost: f64,
}

impl SpendRow {
    /// The day as `YYYY-MM-DD`.
    pub fn date(&self) -> String {
        chrono_free_date(self.day)
    }
}

/// Civil date of a day number (Howard Hinnant's algorithm), so that the simulator needs no
/// calendar library.
fn chrono_free_date(day: i64) -> String {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Price per click (USD) and click-through rate of the campaigns bought per click.
fn price(source: &str, campaign: &str) -> Option<(f64, f64)> {
    Some(match (source, campaign) {
        ("google", "brand_search") => (0.45, 0.09),
        ("google", "generic_shoes") => (1.10, 0.03),
        ("facebook", "spring_sale") => (0.65, 0.012),
        ("instagram", "influencer_q2") => (0.80, 0.009),
        ("bing", "brand_search") => (0.35, 0.07),
        _ => return None,
    })
}

/// The clicks and cost counted so far.
#[derive(Debug)]
pub(crate) struct Spend {
    rng: ChaCha8Rng,
    days: BTreeMap<(i64, &'static str, &'static str), (&'static str, u64, f64)>,
}

impl Spend {
    pub(crate) fn new(seed: u64) -> Self {
        Spend {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5350_454E_4453_494D),
            days: BTreeMap::new(),
        }
    }

    /// A session landed from `source` at `at` (UTC micros).
    pub(crate) fn landed(&mut self, at: i64, source: &Source) {
        let Some((utm_source, medium, campaign)) = source.utm else {
            return;
        };
        let Some((cpc, _)) = price(utm_source, campaign) else {
            return;
        };
        let cost = cpc * self.rng.random_range(0.7..1.3);
        let entry = self
            .days
            .entry((at.div_euclid(DAY_MICROS), utm_source, campaign))
            .or_insert((medium, 0, 0.0));
        entry.1 += 1;
        entry.2 += cost;
    }

    /// The days counted so far, by day, source and campaign.
    pub(crate) fn rows(&self) -> Vec<SpendRow> {
        self.days
            .iter()
            .map(|(&(day, source, campaign), &(medium, clicks, cost))| {
                let ctr = price(source, campaign).map_or(0.02, |(_, ctr)| ctr);
                SpendRow {
                    day,
                    source,
                    medium,
                    campaign,
                    clicks,
                    impressions: (clicks as f64 / ctr).round() as u64,
                    cost: (cost * 100.0).round() / 100.0,
                }
            })
            .collect()
    }
}

/// The rows as the CSV `shoplake load spend` reads.
pub fn to_csv(rows: &[SpendRow]) -> String {
    let mut out = String::from("date,source,medium,campaign,spend,currency,impressions,clicks\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{:.2},USD,{},{}\n",
            r.date(),
            r.source,
            r.medium,
            r.campaign,
            r.cost,
            r.impressions,
            r.clicks
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_civil_dates() {
        assert_eq!(chrono_free_date(0), "1970-01-01");
        assert_eq!(chrono_free_date(20_727), "2026-10-01");
        assert_eq!(chrono_free_date(-1), "1969-12-31");
        assert_eq!(chrono_free_date(11_016), "2000-02-29");
    }
}
