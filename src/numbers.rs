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

#[cfg(test)]
mod tests {
    use super::*;

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
