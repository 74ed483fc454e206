//! Number formatting shared by the progress line, the summary table and the Markdown page.

/// `1234567` → `1,234,567`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A rate or count rounded to a whole number, with separators.
pub fn rate(value: f64) -> String {
    thousands(value.max(0.0).round() as u64)
}

/// Milliseconds with three significant decimals for small values.
pub fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_every_three_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(rate(1234.6), "1,235");
    }

    #[test]
    fn milliseconds_keep_precision_where_it_matters() {
        assert_eq!(ms(0.1234), "0.123");
        assert_eq!(ms(12.34), "12.3");
        assert_eq!(ms(1234.5), "1234");
        assert_eq!(mib(2048), "2.0");
    }
}
