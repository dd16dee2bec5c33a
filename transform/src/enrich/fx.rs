//! Currency conversion to the reporting currency, with rates from the pipeline config.

use std::collections::BTreeMap;

use shoplake_events::schema::FX_SCALE;

use crate::{Error, Result};

/// Conversion rates into one reporting currency, scaled by 10^8 (the `fx_rate` column's scale).
#[derive(Clone, Debug)]
pub struct FxRates {
    reporting: String,
    scaled: BTreeMap<String, i128>,
}

/// Units of USD per unit of each currency the simulator and most shops use; replace them in the
/// config file (`[stage.fx]`) with your finance team's rates.
pub const DEFAULT_USD_RATES: &[(&str, &str)] = &[
    ("USD", "1"),
    ("EUR", "1.08"),
    ("GBP", "1.27"),
    ("JPY", "0.0067"),
    ("CAD", "0.74"),
    ("AUD", "0.66"),
    ("BRL", "0.20"),
    ("INR", "0.012"),
    ("PLN", "0.25"),
    ("SEK", "0.095"),
    ("CHF", "1.13"),
];

/// Parses a decimal string into an integer scaled by 10^FX_SCALE, exactly.
fn parse_scaled(currency: &str, s: &str) -> Result<i128> {
    let bad = || Error::Config {
        message: format!("fx rate of {currency} {s:?} is not a positive decimal number"),
    };
    let (int, frac) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    if frac.len() > FX_SCALE as usize || int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    let digits = format!("{int}{frac:0<width$}", width = FX_SCALE as usize);
    let v: i128 = digits.parse().map_err(|_| bad())?;
    if v <= 0 {
        return Err(bad());
    }
    Ok(v)
}

impl FxRates {
    /// Rates given as "units of `base` per unit of currency"; re-expressed per unit of `reporting`.
    pub fn new(reporting: &str, base: &str, rates: &BTreeMap<String, String>) -> Result<Self> {
        let scale = 10i128.pow(FX_SCALE as u32);
        let base_rates: BTreeMap<String, i128> = rates
            .iter()
            .map(|(c, r)| Ok((c.clone(), parse_scaled(c, r)?)))
            .collect::<Result<_>>()?;
        let reporting_in_base = if reporting == base {
            scale
        } else {
            *base_rates.get(reporting).ok_or_else(|| Error::Config {
                message: format!("reporting currency {reporting} has no rate against {base}"),
            })?
        };
        let scaled = base_rates
            .into_iter()
            .map(|(c, r)| (c, (r * scale + reporting_in_base / 2) / reporting_in_base))
            .collect();
        Ok(FxRates {
            reporting: reporting.to_owned(),
            scaled,
        })
    }

    /// The default table: [`DEFAULT_USD_RATES`] re-expressed in `reporting`.
    pub fn defaults(reporting: &str) -> Result<Self> {
        let rates = DEFAULT_USD_RATES
            .iter()
            .map(|(c, r)| (c.to_string(), r.to_string()))
            .collect();
        FxRates::new(reporting, "USD", &rates)
    }

    pub fn reporting(&self) -> &str {
        &self.reporting
    }

    /// Rate from `currency` to the reporting currency, scaled by 10^8; None when unknown.
    pub fn rate(&self, currency: &str) -> Option<i128> {
        if currency == self.reporting {
            return Some(10i128.pow(FX_SCALE as u32));
        }
        self.scaled.get(currency).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_exact_and_rebased() {
        let usd = FxRates::defaults("USD").unwrap();
        assert_eq!(usd.rate("EUR"), Some(108_000_000));
        assert_eq!(usd.rate("JPY"), Some(670_000));
        assert_eq!(usd.rate("XYZ"), None);
        let eur = FxRates::defaults("EUR").unwrap();
        assert_eq!(eur.rate("EUR"), Some(100_000_000));
        // 1 USD = 1/1.08 EUR = 0.92592593
        assert_eq!(eur.rate("USD"), Some(92_592_593));
    }

    #[test]
    fn bad_rates_are_refused_with_the_value() {
        let mut rates = BTreeMap::new();
        rates.insert("EUR".to_owned(), "1,08".to_owned());
        let err = FxRates::new("USD", "USD", &rates).unwrap_err().to_string();
        assert!(err.contains("EUR") && err.contains("1,08"), "{err}");
        let err = FxRates::new("GBP", "USD", &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("GBP"), "{err}");
    }
}
