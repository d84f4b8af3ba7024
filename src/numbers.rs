//! How numbers are written on pages, charts, verdicts and CLI tables: three significant
//! digits, scientific notation (`1.6e14`, `9.77e-4`) outside `1e-3 ..= 1e5`.

/// A short label: integers as such below 10^5, then `1.5e6` style; fractions with up to three
/// significant digits.
pub fn significant(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if (1e5..).contains(&a) || a < 1e-3 {
        let text = format!("{v:.2e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        return format!("{mantissa}e{exponent}");
    }
    if (v - v.round()).abs() < 1e-9 * a.max(1.0) {
        return format!("{v:.0}");
    }
    let decimals = (2 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Largest distance from an integer, relative to the value, at which a count given as a float
/// is taken as that integer (0.01%): pandas and CSV files give counts as floats, often with
/// digits from a computation (`6795600349.289497` parameters).
pub const COUNT_TOLERANCE: f64 = 1e-4;

/// A count (parameters, tokens, steps) from any JSON number: an integer as it is, a float that
/// is within [`COUNT_TOLERANCE`] of an integer (relative, or 1e-6 absolute) rounded to it.
/// Refuses negative, non-finite and clearly fractional values (`12.5` parameters) with a message.
pub fn count_from_f64(value: f64) -> Result<u64, String> {
    if !value.is_finite() {
        return Err(format!("a count must be a finite number, got {value}"));
    }
    if value < 0.0 {
        return Err(format!("a count must not be negative, got {value}"));
    }
    let rounded = value.round();
    if (value - rounded).abs() > (COUNT_TOLERANCE * value).max(1e-6) {
        return Err(format!("a count must be a whole number, got {value}"));
    }
    if rounded >= u64::MAX as f64 {
        return Err(format!("a count must be below 2^64, got {value}"));
    }
    Ok(rounded as u64)
}

/// A count deserialized from any JSON number by [`count_from_f64`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Count(pub u64);

impl<'de> serde::Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Count, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a non-negative whole number")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Count, E> {
                u64::try_from(v)
                    .map(Count)
                    .map_err(|_| E::custom(format!("a count must not be negative, got {v}")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Count, E> {
                count_from_f64(v).map(Count).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_take_integral_floats_and_refuse_the_rest() {
        let count = |text: &str| serde_json::from_str::<Count>(text).map_err(|e| e.to_string());
        assert_eq!(count("6795600349.289497"), Ok(Count(6_795_600_349)));
        assert_eq!(count("1000000.0"), Ok(Count(1_000_000)));
        assert_eq!(count("1e9"), Ok(Count(1_000_000_000)));
        assert_eq!(count("42"), Ok(Count(42)));
        for (bad, why) in [
            ("12.5", "whole number"),
            ("1000.3", "whole number"),
            ("-3", "negative"),
            ("-3.0", "negative"),
            ("1e300", "below 2^64"),
            ("\"12\"", "non-negative whole number"),
        ] {
            let error = count(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn three_significant_digits() {
        assert_eq!(significant(1e12), "1e12");
        assert_eq!(significant(2.5e12), "2.5e12");
        assert_eq!(significant(300.0), "300");
        assert_eq!(significant(2.8734), "2.87");
        assert_eq!(significant(0.00390625), "0.00391");
        assert_eq!(significant(-293.4), "-293");
    }
}
