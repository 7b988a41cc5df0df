//! gRPC's `grpc-timeout` header (PROTOCOL-HTTP2.md: `TimeoutValue TimeoutUnit`, at most
//! eight digits and one of `H M S m u n`), read from callers and written upstream.

use std::time::Duration;

use http::HeaderValue;

/// The caller's timeout; `None` if it sent none or one that is not well formed (then the
/// gateway's own limit applies, as grpcio's server ignores it).
#[must_use]
pub fn parse(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    let (digits, unit) = text.split_at_checked(text.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// `timeout` as a header value, in the finest unit whose value fits eight digits.
#[must_use]
pub fn format(timeout: Duration) -> HeaderValue {
    let candidates = [
        (timeout.as_nanos(), 'n'),
        (timeout.as_micros(), 'u'),
        (timeout.as_millis(), 'm'),
        (u128::from(timeout.as_secs()), 'S'),
        (u128::from(timeout.as_secs() / 60), 'M'),
        (u128::from(timeout.as_secs() / 3600), 'H'),
    ];
    let (amount, unit) = candidates
        .into_iter()
        .find(|(amount, _)| *amount < 100_000_000)
        .unwrap_or((99_999_999, 'H'));
    // Digits and a letter: always a valid header value.
    HeaderValue::from_str(&format!("{amount}{unit}")).unwrap_or(HeaderValue::from_static("1S"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_read_in_every_unit() {
        let read = |text: &'static str| parse(&HeaderValue::from_static(text));
        assert_eq!(read("2H"), Some(Duration::from_hours(2)));
        assert_eq!(read("3M"), Some(Duration::from_mins(3)));
        assert_eq!(read("10S"), Some(Duration::from_secs(10)));
        assert_eq!(read("250m"), Some(Duration::from_millis(250)));
        assert_eq!(read("7u"), Some(Duration::from_micros(7)));
        assert_eq!(read("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "10", "10s", "123456789m", "-1S", "1.5S"] {
            assert_eq!(read(bad), None, "{bad}");
        }
    }

    #[test]
    fn timeouts_are_written_in_eight_digits_at_most() {
        assert_eq!(format(Duration::from_millis(500)), "500000u");
        assert_eq!(format(Duration::from_secs(30)), "30000000u");
        assert_eq!(format(Duration::from_mins(10)), "600000m");
        assert_eq!(format(Duration::from_hours(24 * 365)), "31536000S");
        assert_eq!(format(Duration::from_secs(1 << 40)), "99999999H");
        for timeout in [
            Duration::from_nanos(1),
            Duration::from_secs(3),
            Duration::from_secs(1 << 40),
        ] {
            assert!(parse(&format(timeout)).is_some(), "{timeout:?}");
        }
    }
}
