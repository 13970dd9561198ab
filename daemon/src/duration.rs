//! Human durations (`300ms`, `30s`, `5m`, `1h`; a bare number is seconds, as in `flock(1)`),
//! shared by the config file and `vfslockctl`.

use std::time::Duration;

/// Parses a human duration.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 300ms, 30s, 5m, 1h or 2.5)"))?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => {
            return Err(format!(
                "`{other}` in `{text}` is not a duration unit (use ms, s, m, h or d)"
            ))
        }
    };
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|_| format!("`{text}` is out of range for a duration"))
}

/// Formats a duration the way [`parse`] reads it, choosing a readable unit.
pub fn format(duration: Duration) -> String {
    let ms = duration.as_millis();
    if duration.is_zero() {
        "0s".to_owned()
    } else if ms < 1000 && duration.subsec_micros().is_multiple_of(1000) {
        format!("{ms}ms")
    } else if duration < Duration::from_secs(1) {
        format!("{}us", duration.as_micros())
    } else if duration.subsec_nanos() != 0 {
        format!("{ms}ms")
    } else {
        let secs = duration.as_secs();
        match secs {
            s if s % 3600 == 0 => format!("{}h", s / 3600),
            s if s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        }
    }
}

/// Formats an age or remaining time for people: `1.2s`, `3m 05s`, `2h 10m`, `4d 03h`.
pub fn humanize(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..=9 => format!("{:.1}s", duration.as_secs_f64()),
        10..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {:02}s", secs / 60, secs % 60),
        3600..=86399 => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds_parse() {
        assert_eq!(parse("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn nonsense_is_refused_with_a_hint() {
        for bad in ["", "abc", "5 parsecs", "-1s", "1e999"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains('`'), "{bad}: {err}");
        }
    }

    #[test]
    fn format_reads_back() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(250),
            Duration::from_secs(30),
            Duration::from_secs(90),
            Duration::from_secs(3600),
            Duration::from_millis(1500),
            Duration::from_micros(10),
        ] {
            assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
        }
    }
}
