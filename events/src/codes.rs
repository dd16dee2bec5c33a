//! ISO code lists used by validation: ISO 4217 currencies and ISO 3166-1 alpha-2 countries.

/// Active ISO 4217 currency codes, sorted.
pub const CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// ISO 3166-1 alpha-2 country codes, sorted.
pub const COUNTRIES: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// Whether `code` is an active ISO 4217 currency code (upper case).
pub fn is_currency(code: &str) -> bool {
    static SET: [u64; 26 * 26 * 26 / 64 + 1] = bit_set(CURRENCIES);
    contains(&SET, code, 3)
}

/// Whether `code` is an ISO 3166-1 alpha-2 country code (upper case).
pub fn is_country(code: &str) -> bool {
    static SET: [u64; 26 * 26 / 64 + 1] = bit_set(COUNTRIES);
    contains(&SET, code, 2)
}

/// The index of an upper-case code in base 26, if every byte is `A`–`Z`.
const fn index(code: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut n = 0;
    while i < code.len() {
        if !code[i].is_ascii_uppercase() {
            return None;
        }
        n = n * 26 + (code[i] - b'A') as usize;
        i += 1;
    }
    Some(n)
}

/// The codes of a list as bits (built at compile time): a lookup is one load, where a binary
/// search compared strings eight times (validation checks a country or currency on most events).
const fn bit_set<const N: usize>(codes: &[&str]) -> [u64; N] {
    let mut set = [0; N];
    let mut i = 0;
    while i < codes.len() {
        if let Some(n) = index(codes[i].as_bytes()) {
            set[n / 64] |= 1 << (n % 64);
        }
        i += 1;
    }
    set
}

fn contains(set: &[u64], code: &str, len: usize) -> bool {
    code.len() == len && index(code.as_bytes()).is_some_and(|n| set[n / 64] & (1 << (n % 64)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_and_searchable() {
        assert!(CURRENCIES.windows(2).all(|w| w[0] < w[1]));
        assert!(COUNTRIES.windows(2).all(|w| w[0] < w[1]));
        assert!(
            is_currency("EUR") && is_currency("JPY") && !is_currency("eur") && !is_currency("XXX")
        );
        assert!(is_country("DE") && is_country("US") && !is_country("UK") && !is_country("de"));
        // Every listed code and nothing else: all 2- and 3-letter codes against the lists.
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                let two = String::from_utf8(vec![a, b]).unwrap_or_default();
                assert_eq!(is_country(&two), COUNTRIES.contains(&two.as_str()), "{two}");
                for c in b'A'..=b'Z' {
                    let three = format!("{two}{}", c as char);
                    assert_eq!(is_currency(&three), CURRENCIES.contains(&three.as_str()));
                }
            }
        }
        for odd in ["", "D", "DEU", "EU", "EURO", "E1R", "É", "DÉ", "\0\0"] {
            assert!(!is_country(odd) && !is_currency(odd), "{odd:?}");
        }
    }
}

/// An ISO 4217 currency code, checked when it is made: the type of every currency a config names
/// (the reporting currency, the base of the conversion rates). Reads and writes as its code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub const USD: Currency = Currency(*b"USD");

    pub fn as_str(&self) -> &str {
        // Only ever built from a checked code: upper-case ASCII.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl std::str::FromStr for Currency {
    type Err = String;

    fn from_str(code: &str) -> Result<Self, String> {
        match code.as_bytes() {
            &[a, b, c] if is_currency(code) => Ok(Currency([a, b, c])),
            _ => Err(format!(
                "{code:?} is not an ISO 4217 currency code (three capital letters, such as USD or EUR)"
            )),
        }
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        code.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod currency_tests {
    use super::Currency;

    #[test]
    fn a_currency_is_a_known_iso_code() {
        assert_eq!("EUR".parse::<Currency>().unwrap().as_str(), "EUR");
        let err = "eur".parse::<Currency>().unwrap_err();
        assert!(err.contains("ISO 4217"), "{err}");
        assert!("XYZ".parse::<Currency>().is_err());
        assert!("EURO".parse::<Currency>().is_err());
    }
}
