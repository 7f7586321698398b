//! Decimal strings ⇄ integer base units, exactly (no floats on the way).

use thiserror::Error;

/// Why a decimal amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AmountError {
    /// Not a plain decimal number.
    #[error("not a decimal number")]
    Invalid,
    /// Zero or negative.
    #[error("must be greater than zero")]
    NotPositive,
    /// More fractional digits than the token has decimals.
    #[error("has more than {0} decimal places")]
    TooPrecise(u8),
    /// Does not fit the integer range.
    #[error("is too large")]
    Overflow,
}

/// Parses a decimal string (`"10"`, `"0.25"`, `"1e-3"`) into base units of a
/// token with `decimals` decimals.
pub fn parse_units(text: &str, decimals: u8) -> Result<u128, AmountError> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('-') {
        return match parse_units(rest, decimals) {
            Ok(0) | Err(AmountError::NotPositive) => Err(AmountError::NotPositive),
            Ok(_) => Err(AmountError::NotPositive),
            Err(e) => Err(e),
        };
    }
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => {
            let exponent: i32 = text[at + 1..].parse().map_err(|_| AmountError::Invalid)?;
            // Far beyond any token's range either way; keeps the arithmetic small.
            if exponent > 100 {
                return Err(AmountError::Overflow);
            }
            if exponent < -100 {
                return Err(AmountError::TooPrecise(decimals));
            }
            (&text[..at], exponent)
        }
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits_ok(whole) || !digits_ok(fraction) {
        return Err(AmountError::Invalid);
    }
    // value = digits × 10^(exponent − fraction.len()) × 10^decimals
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let scale = exponent - fraction.len() as i32 + i32::from(decimals);
    let (digits, scale) = {
        // Trailing zeros do not count as precision.
        let trimmed = digits.trim_end_matches('0');
        let dropped = (digits.len() - trimmed.len()) as i32;
        (trimmed, scale + dropped)
    };
    if digits.is_empty() {
        return Err(AmountError::NotPositive);
    }
    if scale < 0 {
        return Err(AmountError::TooPrecise(decimals));
    }
    let mut value: u128 = digits.parse().map_err(|_| AmountError::Overflow)?;
    for _ in 0..scale {
        value = value.checked_mul(10).ok_or(AmountError::Overflow)?;
    }
    Ok(value)
}

/// Formats base units as a decimal string without trailing zeros.
pub fn format_units(units: u128, decimals: u8) -> String {
    let scale = 10u128.pow(u32::from(decimals));
    let whole = units / scale;
    let fraction = units % scale;
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:0width$}", width = usize::from(decimals));
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// The price `out / in` in whole tokens, to 9 decimal places.
pub fn format_price(amount_in: u128, decimals_in: u8, amount_out: u128, decimals_out: u8) -> String {
    const PRECISION: u8 = 9;
    if amount_in == 0 {
        return "0".into();
    }
    // (out / 10^dout) / (in / 10^din) × 10^P = out × 10^(din + P) / (in × 10^dout)
    let numerator = amount_out.saturating_mul(10u128.pow(u32::from(decimals_in) + u32::from(PRECISION)));
    let denominator = amount_in.saturating_mul(10u128.pow(u32::from(decimals_out)));
    format_units(numerator / denominator, PRECISION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_forms() {
        let cases: &[(&str, u8, Result<u128, AmountError>)] = &[
            ("10", 9, Ok(10_000_000_000)),
            ("0.5", 6, Ok(500_000)),
            ("1.000000", 6, Ok(1_000_000)),
            ("1.0000001", 6, Err(AmountError::TooPrecise(6))),
            ("1e-6", 6, Ok(1)),
            ("1e-7", 6, Err(AmountError::TooPrecise(6))),
            ("2.5E2", 0, Ok(250)),
            (".5", 1, Ok(5)),
            ("0", 6, Err(AmountError::NotPositive)),
            ("0.000", 6, Err(AmountError::NotPositive)),
            ("-1", 6, Err(AmountError::NotPositive)),
            ("", 6, Err(AmountError::Invalid)),
            ("abc", 6, Err(AmountError::Invalid)),
            ("1.2.3", 6, Err(AmountError::Invalid)),
            ("1e", 6, Err(AmountError::Invalid)),
            ("1e40", 9, Err(AmountError::Overflow)),
            ("1e2147483647", 9, Err(AmountError::Overflow)),
            ("1e-2147483648", 9, Err(AmountError::TooPrecise(9))),
        ];
        for (text, decimals, expected) in cases {
            assert_eq!(
                &parse_units(text, *decimals),
                expected,
                "{text} with {decimals} decimals"
            );
        }
    }

    #[test]
    fn formats_without_trailing_zeros() {
        assert_eq!(format_units(10_000_000_000, 9), "10");
        assert_eq!(format_units(1_500_000, 6), "1.5");
        assert_eq!(format_units(1, 6), "0.000001");
        assert_eq!(format_units(0, 6), "0");
    }

    #[test]
    fn price_is_out_per_in_in_whole_tokens() {
        // 10 SOL (9 decimals) → 1500.25 USDC (6 decimals): 150.025 USDC/SOL
        assert_eq!(format_price(10_000_000_000, 9, 1_500_250_000, 6), "150.025");
    }
}
