//! The status line of `vfslockctl run` while it waits on a terminal: where it stands in the
//! daemon's queue, who holds the lock and for how long, on one line that is redrawn as the
//! queue moves and each second (the holder's time), and cleared once the lock is taken. A
//! user at a terminal sees why nothing happens; a script, whose stderr is not a terminal, sees
//! nothing extra.
//!
//! It draws what the daemon announces (`Event::Waiting`, protocol 9): nothing here reads the
//! lock file.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vfslock::{LockOptions, Waiting};

use crate::duration;

/// The last announcement, and when it came.
type Latest = Arc<Mutex<Option<(Waiting, Instant)>>>;

/// The status line of one `run`, drawn while it waits.
pub(super) struct Progress {
    latest: Latest,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// `options` with the announcements drawn on stderr, and the line that draws them; `None`
    /// (and `options` unchanged) when stderr is not a terminal.
    pub(super) fn on_terminal(options: LockOptions) -> (LockOptions, Option<Progress>) {
        if !std::io::stderr().is_terminal() {
            return (options, None);
        }
        let latest: Latest = Arc::default();
        let options = options.on_waiting({
            let latest = latest.clone();
            move |waiting| {
                let mut latest = latest.lock().unwrap_or_else(|e| e.into_inner());
                *latest = Some((waiting.clone(), Instant::now()));
                draw(latest.as_ref());
            }
        });
        // The holder's time goes on while nothing is announced.
        let ticker = tokio::spawn({
            let latest = latest.clone();
            async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                loop {
                    every.tick().await;
                    draw(latest.lock().unwrap_or_else(|e| e.into_inner()).as_ref());
                }
            }
        });
        (options, Some(Progress { latest, ticker }))
    }

    /// The wait is over: the line is cleared (and stays so).
    pub(super) fn done(self) {
        self.ticker.abort();
        let drawn = self
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .is_some();
        if drawn {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

/// Redraws the line from the latest announcement, if there was one.
fn draw(latest: Option<&(Waiting, Instant)>) {
    let Some((waiting, at)) = latest else {
        return;
    };
    let line = describe(waiting, at.elapsed());
    let line: String = line
        .chars()
        .take(terminal_width().saturating_sub(1))
        .collect();
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "\r\x1b[2K{line}");
    let _ = stderr.flush();
}

/// "vfslockctl: waiting for TARGET: next in line here; held by pid 42 on host-a (owner nightly)
/// for 3m 12s", `since` after the announcement.
pub(super) fn describe(waiting: &Waiting, since: Duration) -> String {
    let place = match waiting.position {
        1 => "next in line here".to_owned(),
        n => format!("number {n} in line here"),
    };
    let holder = match &waiting.holder {
        Some(h) => {
            let owner = h
                .owner_id
                .as_deref()
                .map(|o| format!(" (owner {o})"))
                .unwrap_or_default();
            let held = waiting
                .held_for
                .map(|held| format!(" for {}", duration::humanize(held + since)))
                .unwrap_or_default();
            format!("; held by pid {} on {}{owner}{held}", h.pid, h.hostname)
        }
        None => String::new(),
    };
    format!(
        "vfslockctl: waiting for {}: {place}{holder}",
        waiting.target
    )
}

/// The terminal's width in columns (80 when it cannot be told).
fn terminal_width() -> usize {
    #[cfg(unix)]
    {
        // SAFETY: TIOCGWINSZ fills a `winsize` we own; on failure it is left zeroed.
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) };
        if rc == 0 && size.ws_col > 0 {
            return usize::from(size.ws_col);
        }
    }
    80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder() -> vfslock::LockMetadata {
        vfslock::LockMetadata {
            created_at_unix_ns: None,
            acquired_at_unix_ns: None,
            modified_unix_ns: None,
            ttl_ns: 0,
            hostname: "host-a".into(),
            pid: 42,
            owner_id: Some("nightly".into()),
            lock_id: None,
            daemon_id: None,
            token: None,
            uid: None,
            detached: false,
            format: vfslock::LockFileFormat::Go,
            stale: false,
        }
    }

    #[test]
    fn the_line_names_the_place_the_holder_and_its_time_so_far() {
        let waiting = Waiting {
            target: "/srv/data.csv".into(),
            position: 1,
            holder: Some(holder()),
            held_for: Some(Duration::from_secs(60)),
        };
        assert_eq!(
            describe(&waiting, Duration::from_secs(12)),
            "vfslockctl: waiting for /srv/data.csv: next in line here; held by pid 42 on \
             host-a (owner nightly) for 1m 12s"
        );
        let later = Waiting {
            position: 3,
            holder: None,
            ..waiting
        };
        assert_eq!(
            describe(&later, Duration::ZERO),
            "vfslockctl: waiting for /srv/data.csv: number 3 in line here"
        );
    }
}
