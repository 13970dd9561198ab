//! The waiting mark: how a daemon shows other hosts that a request of its own waits for a lock
//! they hold, specified once for every store.
//!
//! It serves two kinds of fairness between hosts, which only poll each other through the store:
//! - a holder's daemon caps its streak of local handoffs while another daemon waits (any mode);
//! - while an *exclusive* request waits, daemons elsewhere let no new shared holder or
//!   semaphore slot in, so that readers on other hosts cannot starve a writer.
//!
//! The mark is a companion of the lock file, `<lock>.waiting`, holding `DAEMON-ID` (any waiter,
//! the form every release writes and reads) or `DAEMON-ID exclusive UNIX-MS` (an exclusive
//! waiter, and when it marked). It is never part of the lock file and never the `.fence` file,
//! whose content today's daemons read as a bare number. A daemon of an earlier release reads
//! the longer form as "another daemon waits", which is true.
//!
//! Fresh means written within three `recheck-max` (a waiting daemon re-checks at least that
//! often): on `file://` judged by the file's modification time, elsewhere by the time inside
//! (with the skew allowance). Per store:
//! - `file://`: a plain file, rewritten at each re-check of a waiting daemon; a few µs.
//! - object stores: an object, written only for an exclusive waiter whose lock is held by other
//!   hosts' shared holders, at most once per [`MARK_INTERVAL`] per target (one PUT), and read by
//!   a daemon about to let a shared holder join, at most once per [`MARK_INTERVAL`] (one GET);
//!   see `object/mark.rs`. SFTP serves no shared locks, so it needs no mark.
//! - `mem://`: private to one daemon; no other host can wait.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The least time between two marks (object stores) and how long a read mark is trusted.
pub const MARK_INTERVAL: Duration = Duration::from_secs(1);

/// A waiting mark as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The marking daemon's instance id.
    pub daemon: String,
    /// Whether an exclusive request waits, and since when it said so (by its clock).
    pub exclusive_at: Option<SystemTime>,
}

impl Mark {
    /// The bytes of `daemon`'s mark; `exclusive` names an exclusive waiter, marked at `now`.
    pub fn encode(daemon: &str, exclusive: bool, now: SystemTime) -> Vec<u8> {
        if exclusive {
            let ms = now
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            format!("{daemon} exclusive {ms}").into_bytes()
        } else {
            daemon.as_bytes().to_vec()
        }
    }

    /// A mark's bytes, whichever form.
    pub fn decode(bytes: &[u8]) -> Mark {
        let text = String::from_utf8_lossy(bytes);
        let mut words = text.split_whitespace();
        let daemon = words.next().unwrap_or_default().to_owned();
        let exclusive_at = match (words.next(), words.next()) {
            (Some("exclusive"), Some(ms)) => ms
                .parse::<u64>()
                .ok()
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
            _ => None,
        };
        Mark {
            daemon,
            exclusive_at,
        }
    }

    /// Whether this is another daemon's exclusive waiter that marked within `within` of `now`
    /// (its clock may be up to `skew` ahead or behind ours).
    pub fn exclusive_elsewhere(
        &self,
        me: &str,
        now: SystemTime,
        within: Duration,
        skew: Duration,
    ) -> bool {
        self.daemon != me
            && self
                .exclusive_at
                .is_some_and(|at| at + within + skew >= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_read_back_in_both_forms_and_judge_freshness_by_the_time_inside() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let plain = Mark::decode(&Mark::encode("d1", false, now));
        assert_eq!(plain.daemon, "d1");
        assert_eq!(plain.exclusive_at, None);
        let mark = Mark::decode(&Mark::encode("d1", true, now));
        assert_eq!(mark.daemon, "d1");
        let within = Duration::from_secs(3);
        let skew = Duration::from_secs(1);
        assert!(mark.exclusive_elsewhere("d2", now + Duration::from_secs(4), within, skew));
        assert!(!mark.exclusive_elsewhere("d2", now + Duration::from_secs(5), within, skew));
        assert!(
            !mark.exclusive_elsewhere("d1", now, within, skew),
            "not our own"
        );
        assert!(
            !plain.exclusive_elsewhere("d2", now, within, skew),
            "not exclusive"
        );
        assert_eq!(Mark::decode(b"").daemon, "");
        assert_eq!(Mark::decode(b"d3 exclusive garbage").exclusive_at, None);
    }
}
