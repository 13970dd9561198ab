//! Times as the Go library writes and reads them: `time.RFC3339Nano` in UTC, parsed as
//! `time.Time.UnmarshalJSON` does, with the proleptic Gregorian calendar arithmetic done here
//! (digit by digit, as every lock file written carries two of these times).

use std::fmt::Write as _;
use std::time::SystemTime;

use vfslock_proto::unix_time::from_unix_ns;
pub use vfslock_proto::unix_time::unix_ns;

pub(super) const NANOS_PER_SEC: i128 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// Formats like Go's `t.UTC().Format(time.RFC3339Nano)`, which is what the Go library's
/// `time.Time` fields marshal to: fraction trimmed of trailing zeros (none when zero), `Z`.
pub fn format_go_time(t: SystemTime) -> String {
    let ns = unix_ns(t);
    let secs = ns.div_euclid(NANOS_PER_SEC) as i64;
    let nanos = ns.rem_euclid(NANOS_PER_SEC) as u32;
    let (year, month, day) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
    let of_day = secs.rem_euclid(SECS_PER_DAY);

    // Digit by digit rather than through `format!`: every lock file written carries two of
    // these, and the formatting machinery was a tenth of a `mem://` cycle's instructions.
    let mut out = String::with_capacity(32);
    // Go pads the year's magnitude to four digits and puts the sign in front.
    if year < 0 {
        out.push('-');
    }
    let year = year.unsigned_abs();
    if year > 9999 {
        let _ = write!(out, "{year}");
    } else {
        push_digits(&mut out, year, 4);
    }
    for (separator, value) in [
        ('-', month as u64),
        ('-', day as u64),
        ('T', (of_day / 3600) as u64),
        (':', (of_day / 60 % 60) as u64),
        (':', (of_day % 60) as u64),
    ] {
        out.push(separator);
        push_digits(&mut out, value, 2);
    }
    if nanos != 0 {
        let mut fraction = nanos;
        let mut width = 9;
        while fraction.is_multiple_of(10) {
            fraction /= 10;
            width -= 1;
        }
        out.push('.');
        push_digits(&mut out, u64::from(fraction), width);
    }
    out.push('Z');
    out
}

/// Appends `value` as exactly `width` decimal digits, zero-padded (`value` must fit).
fn push_digits(out: &mut String, value: u64, width: u32) {
    let mut divisor = 10u64.pow(width.saturating_sub(1));
    for _ in 0..width {
        out.push(char::from(b'0' + (value / divisor % 10) as u8));
        divisor /= 10;
    }
}

/// Parses a time as Go's `time.Time.UnmarshalJSON` does (given the string's content): RFC 3339
/// with an optional fraction of any length (digits past the ninth are dropped, as Go does), and
/// `Z` or a `±hh:mm` offset. Go retries a failed strict parse with its lenient layout parser
/// (accepting e.g. one-digit hours); that leniency is not reproduced.
pub fn parse_go_time(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let year = digits(&b[0..4], 0, 9999)?;
    let month = digits(&b[5..7], 1, 12)?;
    let day = digits(&b[8..10], 1, days_in_month(year, month))?;
    let hour = digits(&b[11..13], 0, 23)?;
    let minute = digits(&b[14..16], 0, 59)?;
    let second = digits(&b[17..19], 0, 59)?;
    let mut rest = &b[19..];

    let mut nanos: i64 = 0;
    if rest.len() >= 2 && rest[0] == b'.' && rest[1].is_ascii_digit() {
        let len = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        let kept = &rest[1..1 + len.min(9)];
        nanos = digits(kept, 0, 999_999_999)?;
        for _ in kept.len()..9 {
            nanos *= 10;
        }
        rest = &rest[1 + len..];
    }

    let offset_secs = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2], 0, 23)?;
            let minutes = digits(&[*m1, *m2], 0, 59)?;
            let magnitude = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -magnitude
            } else {
                magnitude
            }
        }
        _ => return None,
    };

    let secs =
        days_from_civil(year, month, day) * SECS_PER_DAY + hour * 3600 + minute * 60 + second
            - offset_secs;
    from_unix_ns(i128::from(secs) * NANOS_PER_SEC + i128::from(nanos))
}

/// A run of ASCII digits as a number within `min..=max`.
fn digits(b: &[u8], min: i64, max: i64) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = b.iter().fold(0i64, |n, &c| n * 10 + i64::from(c - b'0'));
    (min..=max).contains(&n).then_some(n)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// The two conversions below count in 400-year cycles of the proleptic Gregorian calendar
// (146097 days each) over years starting in March, so that the leap day falls at a year's end
// and needs no special case. 719468 is the number of days from 0000-03-01 to 1970-01-01.

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub(super) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let march_month = (month + 9) % 12;
    let day_of_year = (153 * march_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date (year, month, day) of a day counted from 1970-01-01.
pub(super) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
