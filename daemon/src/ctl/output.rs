//! Formatting shared by the read commands, so that `status`, `list` and `show` align, spell
//! unknown values and times the same way, and behave alike when stdout goes away.

use std::fmt::Display;
use std::io::Write;
use std::time::{Duration, SystemTime};

use super::Failure;
use crate::duration;

/// Writes `text` to stdout. A closed pipe (`vfslockctl list | head -1`) is not a failure.
pub(super) fn emit(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::software(format!("cannot write to stdout: {e}"))),
    }
}

/// Writes one JSON document to stdout, indented for people who read it too.
pub(super) fn emit_json(value: &serde_json::Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::software(format!("cannot encode JSON: {e}")))?;
    emit(&format!("{text}\n"))
}

/// `key: value` lines with the values aligned. An empty key continues the previous line's
/// value on a line of its own (a list under one key).
pub(super) fn key_values(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(key, _)| key.len() + 1).max().unwrap_or(0);
    let mut text = String::new();
    for (key, value) in rows {
        let label = if key.is_empty() {
            String::new()
        } else {
            format!("{key}:")
        };
        let line = format!("{label:<width$} {value}");
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// A table with a header, columns two spaces apart. The last column is not padded, so lines
/// carry no trailing blanks.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut text = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(&format!("{cell:<width$}"));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// A value, or `-` when there is none.
pub(super) fn or_dash<T: Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A time as RFC 3339 in UTC; `None` when it cannot be expressed (far outside 0000-9999).
pub(super) fn rfc3339(time: SystemTime) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from(time).format(&Rfc3339).ok()
}

/// Seconds as a JSON number.
pub(super) fn seconds(duration: Duration) -> serde_json::Value {
    serde_json::json!(duration.as_secs_f64())
}

/// How far `time` is from now, for people: `in 25s` or `3m 05s ago`.
pub(super) fn relative(time: SystemTime) -> String {
    match time.duration_since(SystemTime::now()) {
        Ok(ahead) => format!("in {}", duration::humanize(ahead)),
        Err(past) => format!("{} ago", duration::humanize(past.duration())),
    }
}

/// A lock mode as `--json` names it (`"exclusive"`, `"shared"`, `"slots"`), and the slot count
/// of a semaphore (`null` otherwise).
pub(super) fn mode_json(mode: vfslock::LockMode) -> (&'static str, Option<u32>) {
    match mode {
        vfslock::LockMode::Exclusive => ("exclusive", None),
        vfslock::LockMode::Shared => ("shared", None),
        vfslock::LockMode::Slots(n) => ("slots", Some(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_align_and_continue() {
        let text = key_values(&[
            ("pid", "1".into()),
            ("instance", "abc".into()),
            ("", "more".into()),
        ]);
        assert_eq!(text, "pid:      1\ninstance: abc\n          more\n");
    }

    #[test]
    fn tables_align_without_trailing_blanks() {
        let text = table(
            &["A", "LONG"],
            &[vec!["xyz".into(), "1".into()], vec!["q".into(), "".into()]],
        );
        assert_eq!(text, "A    LONG\nxyz  1\nq\n");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_754_299_812);
        assert_eq!(rfc3339(t).as_deref(), Some("2025-08-04T09:30:12Z"));
    }
}
