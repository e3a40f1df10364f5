//! UTC timestamps: the contract's event time format and the one Vigil writes.
//!
//! Event times match `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$`; Vigil
//! writes `YYYY-MM-DDTHH:MM:SS.sssZ`. Times are nanoseconds since the Unix
//! epoch in an `i128`, wide enough for every year the format allows.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since 1970-01-01T00:00:00Z (negative before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i128);

const NANOS_PER_SEC: i128 = 1_000_000_000;

impl Timestamp {
    /// The current time from the system clock.
    pub fn now() -> Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_nanos() as i128)
    }

    /// A JWT NumericDate (seconds, possibly fractional) as a timestamp.
    pub fn from_numeric_date(secs: f64) -> Timestamp {
        Timestamp((secs * 1e9).round() as i128)
    }

    /// Whole seconds since the epoch.
    pub fn from_secs(secs: i64) -> Timestamp {
        Timestamp(secs as i128 * NANOS_PER_SEC)
    }

    /// This time plus `secs` seconds.
    pub fn plus_secs(self, secs: u64) -> Timestamp {
        Timestamp(self.0 + secs as i128 * NANOS_PER_SEC)
    }

    /// Whole seconds since the epoch (floor).
    pub fn secs(self) -> i64 {
        self.0.div_euclid(NANOS_PER_SEC) as i64
    }

    /// Parses the contract's event time format, checking the calendar.
    pub fn parse_event_time(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        if b.len() < 20 || *b.last()? != b'Z' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let part = b.get(r)?;
            if !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(part).ok()?.parse().ok()
        };
        if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let frac = &b[19..b.len() - 1];
        let nanos = match frac {
            [] => 0,
            [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
                if !digits.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                let mut n: i128 = 0;
                for i in 0..9 {
                    n = n * 10 + digits.get(i).map_or(0, |d| (d - b'0') as i128);
                }
                n
            }
            _ => return None,
        };
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
        Some(Timestamp(secs as i128 * NANOS_PER_SEC + nanos))
    }

    /// Formats as `YYYY-MM-DDTHH:MM:SS.sssZ` (milliseconds, truncated).
    pub fn to_rfc3339_millis(self) -> String {
        let secs = self.0.div_euclid(NANOS_PER_SEC) as i64;
        let millis = (self.0.rem_euclid(NANOS_PER_SEC) / 1_000_000) as i64;
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }
}

/// [`Timestamp::to_rfc3339_millis`] for a stream of times, formatted once
/// per millisecond however many events share it.
#[derive(Debug, Default)]
pub struct MillisText {
    ms: Option<i128>,
    text: String,
}

impl MillisText {
    /// `t` in RFC 3339 with milliseconds.
    pub fn of(&mut self, t: Timestamp) -> &str {
        let ms = t.0.div_euclid(1_000_000);
        if self.ms != Some(ms) {
            self.ms = Some(ms);
            self.text = t.to_rfc3339_millis();
        }
        &self.text
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let t = Timestamp::parse_event_time("2026-11-02T09:15:10.12Z").unwrap();
        assert_eq!(t.to_rfc3339_millis(), "2026-11-02T09:15:10.120Z");
        assert_eq!(t.secs(), 1_793_610_910);
        let t = Timestamp::parse_event_time("1970-01-01T00:00:00Z").unwrap();
        assert_eq!(t, Timestamp(0));
        let t = Timestamp::parse_event_time("2024-02-29T23:59:59.123456789Z").unwrap();
        assert_eq!(t.0 % NANOS_PER_SEC, 123_456_789);
    }

    #[test]
    fn millis_text_formats_each_millisecond_anew() {
        let mut text = MillisText::default();
        let t = Timestamp::parse_event_time("2026-11-02T09:15:10.120Z").unwrap();
        assert_eq!(text.of(t), "2026-11-02T09:15:10.120Z");
        assert_eq!(
            text.of(Timestamp(t.0 + 999_999)),
            "2026-11-02T09:15:10.120Z"
        );
        assert_eq!(
            text.of(Timestamp(t.0 + 1_000_000)),
            "2026-11-02T09:15:10.121Z"
        );
        assert_eq!(text.of(Timestamp(-1)), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn refuses_other_formats() {
        for bad in [
            "2026-11-02T10:15:35+01:00",
            "2026-11-02 09:15:10Z",
            "2026-11-02T09:15:10.Z",
            "2026-11-02T09:15:10.1234567890Z",
            "2026-13-02T09:15:10Z",
            "2025-02-29T09:15:10Z",
            "2026-11-02T24:00:00Z",
            "2026-11-02t09:15:10z",
            "+026-11-02T09:15:10Z",
        ] {
            assert_eq!(Timestamp::parse_event_time(bad), None, "{bad}");
        }
    }
}
