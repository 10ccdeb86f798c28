//! RFC 3339 timestamps for `--at`, converted to Unix seconds without a
//! calendar dependency (proleptic Gregorian, UTC offsets honoured).

use thiserror::Error;

/// Why a timestamp could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TimeError {
    #[error("{0:?} is not an RFC 3339 time such as 2025-06-01T00:00:00Z")]
    ParseRfc3339(String),
}

/// Days from 1970-01-01 to the given civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub fn parse_rfc3339(text: &str) -> Result<i64, TimeError> {
    let err = || TimeError::ParseRfc3339(text.to_string());
    let t = text.trim();
    let num = |s: &str| -> Result<i64, TimeError> {
        // At most four digits per field keeps every product below in range.
        if s.is_empty() || s.len() > 4 || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(err());
        }
        s.parse::<i64>().map_err(|_| err())
    };
    let (date, rest) = match t.find(['T', 't', ' ']) {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, ""),
    };
    let dp: Vec<&str> = date.split('-').collect();
    let [y, mo, d] = dp.as_slice() else {
        return Err(err());
    };
    let (y, mo, d) = (num(y)?, num(mo)?, num(d)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo - 1) as usize] {
        return Err(err());
    }
    let mut secs = days_from_civil(y, mo, d) * 86_400;
    if rest.is_empty() {
        return Ok(secs);
    }
    let (clock, offset) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let sign = if rest.as_bytes()[i] == b'-' { -1 } else { 1 };
        let (oh, om) = rest[i + 1..].split_once(':').ok_or_else(err)?;
        (&rest[..i], sign * (num(oh)? * 3600 + num(om)? * 60))
    } else {
        return Err(err());
    };
    let clock = clock.split('.').next().unwrap_or(clock);
    let cp: Vec<&str> = clock.split(':').collect();
    let [h, mi, s] = cp.as_slice() else {
        return Err(err());
    };
    let (h, mi, s) = (num(h)?, num(mi)?, num(s)?);
    if h > 23 || mi > 59 || s > 60 {
        return Err(err());
    }
    secs += h * 3600 + mi * 60 + s - offset;
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_impossible_dates() {
        assert!(parse_rfc3339("2024-02-31T00:00:00Z").is_err());
        assert!(parse_rfc3339("2023-02-29T00:00:00Z").is_err());
        assert!(parse_rfc3339("2025-04-31T00:00:00Z").is_err());
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_ok(), "a leap day");
        assert!(
            parse_rfc3339("2000-02-29T00:00:00Z").is_ok(),
            "a 400-year leap day"
        );
        assert!(
            parse_rfc3339("1900-02-29T00:00:00Z").is_err(),
            "no leap day in 1900"
        );
    }

    #[test]
    fn parses() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2025-06-01T00:00:00Z"), Ok(1_748_736_000));
        assert_eq!(
            parse_rfc3339("2025-06-01T02:00:00+02:00"),
            Ok(1_748_736_000)
        );
        assert_eq!(parse_rfc3339("2025-06-01"), Ok(1_748_736_000));
        assert!(parse_rfc3339("yesterday").is_err());
        assert!(parse_rfc3339("2025-13-01").is_err());
        assert!(parse_rfc3339("99999999999999999-01-01").is_err());
        assert!(parse_rfc3339("2025-01-01T00:00:00+9999999999:00").is_err());
        assert!(parse_rfc3339("2025-01-01T00:00:00+").is_err());
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59Z"), Ok(253_402_300_799));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 3000, failure_persistence: None, ..Default::default() })]
        #[test]
        fn never_panics(s in "[0-9TZ:+.-]{0,40}") {
            let _ = parse_rfc3339(&s);
        }
    }
}
