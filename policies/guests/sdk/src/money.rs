//! Money in minor units (cents, yen): formatting for the agent to read out and tax arithmetic.
//! Amounts are `i64` minor units everywhere; no floating point.

/// Digits after the decimal point for an ISO 4217 code (0 for JPY, KRW and a few others).
pub fn decimals(currency: &str) -> u32 {
    match currency.to_ascii_uppercase().as_str() {
        "JPY" | "KRW" | "VND" | "CLP" | "ISK" | "HUF" => 0,
        _ => 2,
    }
}

/// `1250, "EUR"` → `"€12.50"`; `1200, "JPY"` → `"¥1,200"`; unknown codes → `"12.50 CHF"`.
pub fn format_minor(amount: i64, currency: &str) -> String {
    let code = currency.to_ascii_uppercase();
    let d = decimals(&code);
    let neg = amount < 0;
    let abs = amount.unsigned_abs();
    let scale = 10u64.pow(d);
    let major = group_thousands(abs / scale);
    let number = if d == 0 { major } else { format!("{major}.{:0width$}", abs % scale, width = d as usize) };
    let sign = if neg { "-" } else { "" };
    match code.as_str() {
        "EUR" => format!("{sign}€{number}"),
        "USD" | "CAD" | "AUD" | "NZD" => format!("{sign}${number}"),
        "GBP" => format!("{sign}£{number}"),
        "JPY" => format!("{sign}¥{number}"),
        _ => format!("{sign}{number} {code}"),
    }
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `amount × bps / 10 000`, rounded half away from zero (825 bps = 8.25 %).
pub fn apply_bps(amount: i64, bps: u32) -> i64 {
    let product = i128::from(amount) * i128::from(bps);
    let q = product / 10_000;
    let r = product % 10_000;
    let rounded = if r.abs() * 2 >= 10_000 { q + product.signum() } else { q };
    rounded.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(format_minor(1250, "EUR"), "€12.50");
        assert_eq!(format_minor(5, "usd"), "$0.05");
        assert_eq!(format_minor(120000, "JPY"), "¥120,000");
        assert_eq!(format_minor(123456789, "CHF"), "1,234,567.89 CHF");
        assert_eq!(format_minor(-250, "GBP"), "-£2.50");
    }

    #[test]
    fn tax() {
        assert_eq!(apply_bps(10000, 825), 825);
        assert_eq!(apply_bps(1999, 1000), 200); // 199.9 → 200
        assert_eq!(apply_bps(1994, 1000), 199);
        assert_eq!(apply_bps(1995, 1000), 200); // half rounds up
        assert_eq!(apply_bps(0, 2200), 0);
    }
}
