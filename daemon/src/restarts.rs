//! The restart figures: how often this daemon restarted, and what its latest restart kept for
//! the sessions of the run before it. An operator who sees a lock misbehave after a crash or a
//! `systemctl reload` asks `vfslockctl status` ([`vfslock_proto::Request::Restarts`]) or reads
//! the log, and both answer from here: whether a restart cost anyone a lock, and whether the
//! targets the restart fenced are still waiting for their holders.
//!
//! # What counts as a restart
//!
//! A start is a restart when the run before it did not stop in an orderly way: it crashed
//! (`kill -9`, a panic, the OOM killer, a failed planned restart) or it was replaced by a
//! planned restart (SIGUSR2, `systemctl reload`). A SIGTERM stop releases every lock, so the
//! start after it keeps nothing and is no restart. The record that tells them apart is a small
//! file in the state directory, next to the crash journal and named for the same daemon
//! identity (host id and socket), readable by the daemon's user only: the restart count, and
//! whether a run is on (written at each start, cleared at an orderly stop). A start that finds a
//! run still on, or finds holdings the journal left open (a run of a release before this record
//! existed), is a restart.
//!
//! Planned or not is told by the restarting process itself: the planned restart passes
//! [`crate::reexec::PLANNED_VAR`] to the image it starts. A planned restart whose `execve`
//! fails ends the process as a crash would, and the next start counts as one.
//!
//! The record is informational: a state directory it cannot be read from or written to costs
//! a warning and an undercount, never the start.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vfslock_proto::{LastRestart, RestartInfo};

/// What the state directory keeps between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    /// Restarts so far.
    restarts: u64,
    /// A run is on: set at each start, cleared at an orderly stop.
    running: bool,
}

/// Where the restart record of one daemon identity lives, and what it said at this start.
#[derive(Debug)]
pub struct RestartRecord {
    path: PathBuf,
    restarts: u64,
}

/// What this start is, as [`RestartRecord::start`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThisStart {
    /// Restarts of this daemon identity, this one included.
    pub restarts: u64,
    /// `Some(planned)` when this start is a restart.
    pub restart: Option<bool>,
}

impl RestartRecord {
    /// Records the start of a run of the daemon identity `host_id` + `socket`, and decides
    /// whether it is a restart: `planned` (this image was started by a planned restart), or the
    /// run before did not stop in an orderly way, or it left `holdings_left` in the journal.
    /// Call while holding the journal, whose OS lock keeps every other daemon of the identity
    /// away from the record too.
    pub fn start(
        state_dir: &Path,
        host_id: &str,
        socket: &Path,
        planned: bool,
        holdings_left: bool,
    ) -> (RestartRecord, ThisStart) {
        let path = state_dir.join(format!(
            "restarts-{}.json",
            crate::journal::identity(host_id, socket)
        ));
        let before = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Record>(&bytes).unwrap_or_else(|e| {
                tracing::warn!(record = %path.display(), error = %e, "the restart record is unreadable; counting restarts from 0 again");
                Record::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Record::default(),
            Err(e) => {
                tracing::warn!(record = %path.display(), error = %e, "cannot read the restart record; counting restarts from 0 again (check the state directory's permissions)");
                Record::default()
            }
        };
        let restarted = planned || before.running || holdings_left;
        let restarts = before.restarts + u64::from(restarted);
        let record = RestartRecord { path, restarts };
        record.write(true);
        let this = ThisStart {
            restarts,
            restart: restarted.then_some(planned),
        };
        (record, this)
    }

    /// Records an orderly stop: the next start is no restart.
    pub fn stopped(&self) {
        self.write(false);
    }

    /// Replaces the record whole (a new file renamed over the old), so that a crash mid-write
    /// leaves the old one.
    fn write(&self, running: bool) {
        let record = Record {
            restarts: self.restarts,
            running,
        };
        let bytes = serde_json::to_vec(&record).expect("the record serializes");
        let fresh = self.path.with_extension("json.new");
        let written =
            write_private(&fresh, &bytes).and_then(|()| std::fs::rename(&fresh, &self.path));
        if let Err(e) = written {
            tracing::warn!(record = %self.path.display(), error = %e, "cannot write the restart record; vfslockctl status may miscount restarts (check the state directory's permissions)");
        }
    }
}

/// Writes `bytes` to a new file at `path` that only the daemon's user can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // A file left by an earlier attempt keeps the mode it was created with.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)
}

/// The figures of this run, as [`vfslock_proto::RestartInfo`] reports them.
///
/// Every holding the journal of the run before left open ends in exactly one of these, so
/// that `kept` = `resumed` + the kept ones lost since + those still waiting for their session:
/// - **kept**: the holding's target actor renewed its lock file and holds it for its session
///   (`lock::resume`, adopt).
/// - **resumed**: its session took a kept holding back.
/// - **lost**: it is not, and will not be, handed back. At startup: a holding nobody may resume
///   (its holder was told it was lost before the run ended, an older client's, one a start
///   before could not settle, or every one when `resume-window` is 0) and a shared lock's or
///   semaphore's entry, settled as after a crash. At adopt: the lock file is gone, replaced,
///   changed, unreadable or cannot be renewed. Once kept: a resume the conditional renewal
///   refused, a renewal that failed, a break, and the window closing before its session came.
/// - **requeued**: a waiter of the run before asked again for its place in the queue.
///
/// An actor that fails while it keeps a holding settles it without counting it.
#[derive(Debug, Default)]
pub struct RestartFigures {
    restarts: u64,
    /// `Some` when this start is a restart.
    last: Option<Last>,
    kept: AtomicU64,
    resumed: AtomicU64,
    lost: AtomicU64,
    requeued: AtomicU64,
    /// Wakes the log line of the window's close ([`RestartFigures::report_window_close`]) when a
    /// holding handed for keeping is settled.
    settled: tokio::sync::Notify,
}

#[derive(Debug)]
struct Last {
    planned: bool,
    /// When the resume window closes: W after this daemon's start.
    window_closes: Instant,
    /// Holdings handed to their actors to keep: each ends kept then resumed or lost, or lost.
    to_keep: u64,
    /// Holdings lost at startup, before any was handed for keeping.
    lost_at_startup: u64,
}

impl RestartFigures {
    /// The figures of a run that started as `this`, whose resume window closes at
    /// `window_closes`, which hands `to_keep` holdings of the run before to their actors to
    /// keep and settled `lost` others at startup.
    pub fn new(this: ThisStart, window_closes: Instant, to_keep: u64, lost: u64) -> Self {
        RestartFigures {
            restarts: this.restarts,
            last: this.restart.map(|planned| Last {
                planned,
                window_closes,
                to_keep,
                lost_at_startup: lost,
            }),
            lost: AtomicU64::new(lost),
            ..RestartFigures::default()
        }
    }

    /// A holding of the run before is kept for its session.
    pub fn count_kept(&self) {
        self.kept.fetch_add(1, Ordering::Relaxed);
    }

    /// A kept holding was handed back to its session.
    pub fn count_resumed(&self) {
        self.resumed.fetch_add(1, Ordering::Relaxed);
        self.settled.notify_one();
    }

    /// A holding of the run before is lost: not kept, or kept and then lost.
    pub fn count_lost(&self) {
        self.lost.fetch_add(1, Ordering::Relaxed);
        self.settled.notify_one();
    }

    /// A waiter of the run before asked again for its place.
    pub fn count_requeued(&self) {
        self.requeued.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether this start is a restart.
    pub fn is_restart(&self) -> bool {
        self.last.is_some()
    }

    /// The figures as of `now`.
    pub fn snapshot(&self, now: Instant) -> RestartInfo {
        RestartInfo {
            restarts: self.restarts,
            last: self.last.as_ref().map(|last| LastRestart {
                planned: last.planned,
                kept: self.kept.load(Ordering::Relaxed),
                resumed: self.resumed.load(Ordering::Relaxed),
                lost: self.lost.load(Ordering::Relaxed),
                requeued: self.requeued.load(Ordering::Relaxed),
                window_open_for: Some(last.window_closes.saturating_duration_since(now))
                    .filter(|left| !left.is_zero()),
            }),
        }
    }

    /// Logs what this restart kept, and when its resume window has closed, how many holdings
    /// were resumed and lost. The close is logged once every holding handed for keeping is
    /// settled (the actors release what nobody resumed as the window closes, each at its own
    /// pace), or `settle_time` after the close at the latest. Returns at once when this start is
    /// no restart.
    pub async fn report_window_close(&self, settle_time: Duration) {
        let Some(last) = &self.last else { return };
        tokio::time::sleep_until(last.window_closes.into()).await;
        let deadline = tokio::time::Instant::from(last.window_closes) + settle_time;
        loop {
            // `notify_one` keeps a permit while nobody waits: a settlement between the check
            // and the wait is not missed.
            let settled = self.settled.notified();
            let settled_since_startup = (self.resumed.load(Ordering::Relaxed)
                + self.lost.load(Ordering::Relaxed))
            .saturating_sub(last.lost_at_startup);
            if settled_since_startup >= last.to_keep {
                break;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                break;
            }
        }
        let info = self.snapshot(Instant::now());
        let last = info.last.unwrap_or_default();
        tracing::info!(
            resumed = last.resumed,
            lost = last.lost,
            kept = last.kept,
            "resume window closed: {} resumed, {} lost",
            last.resumed,
            last.lost
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(dir: &Path, planned: bool, holdings_left: bool) -> (RestartRecord, ThisStart) {
        RestartRecord::start(
            dir,
            "h",
            Path::new("/run/test.sock"),
            planned,
            holdings_left,
        )
    }

    #[test]
    fn crashes_and_planned_restarts_count_and_an_orderly_stop_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (first, this) = start(dir.path(), false, false);
        assert_eq!(
            this,
            ThisStart {
                restarts: 0,
                restart: None
            },
            "the first start"
        );
        drop(first); // a crash: the record still says a run is on
        let (record, this) = start(dir.path(), false, false);
        assert_eq!(
            this,
            ThisStart {
                restarts: 1,
                restart: Some(false)
            }
        );
        drop(record);
        let (record, this) = start(dir.path(), true, false);
        assert_eq!(
            this,
            ThisStart {
                restarts: 2,
                restart: Some(true)
            }
        );
        record.stopped();
        let (record, this) = start(dir.path(), false, false);
        assert_eq!(
            this,
            ThisStart {
                restarts: 2,
                restart: None
            },
            "after an orderly stop"
        );
        record.stopped();
        // A journal with open holdings is a crash whatever the record says (a release before
        // the record, or a stop that could not release everything).
        let (_, this) = start(dir.path(), false, true);
        assert_eq!(
            this,
            ThisStart {
                restarts: 3,
                restart: Some(false)
            }
        );
        // Another identity counts its own.
        let (_, other) =
            RestartRecord::start(dir.path(), "h2", Path::new("/run/test.sock"), false, false);
        assert_eq!(other.restarts, 0);
    }

    #[test]
    fn the_record_is_private_and_an_unreadable_one_starts_the_count_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let (record, _) = start(dir.path(), false, false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&record.path)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "record mode {mode:o}");
        }
        // Beside the journal of the same identity, so that the two are found together.
        let (_journal, _) =
            crate::journal::Journal::open(dir.path(), "h", Path::new("/run/test.sock")).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let identity = crate::journal::identity("h", Path::new("/run/test.sock"));
        assert_eq!(
            names,
            [
                format!("journal-{identity}.jsonl"),
                format!("restarts-{identity}.json")
            ]
        );
        std::fs::write(&record.path, b"{torn").unwrap();
        let (_, this) = start(dir.path(), false, false);
        assert_eq!(
            this,
            ThisStart {
                restarts: 0,
                restart: None
            }
        );
    }

    #[test]
    fn a_snapshot_says_how_long_the_window_stays_open_and_what_was_counted() {
        let started = Instant::now();
        let window = Duration::from_secs(10);
        let this = ThisStart {
            restarts: 4,
            restart: Some(true),
        };
        let figures = RestartFigures::new(this, started + window, 2, 1);
        figures.count_kept();
        figures.count_kept();
        figures.count_resumed();
        figures.count_lost();
        figures.count_requeued();
        let info = figures.snapshot(started + Duration::from_secs(3));
        assert_eq!(
            info,
            RestartInfo {
                restarts: 4,
                last: Some(LastRestart {
                    planned: true,
                    kept: 2,
                    resumed: 1,
                    lost: 2,
                    requeued: 1,
                    window_open_for: Some(Duration::from_secs(7)),
                }),
            }
        );
        let closed = figures.snapshot(started + window);
        assert_eq!(closed.last.unwrap().window_open_for, None);
        let fresh = RestartFigures::new(
            ThisStart {
                restarts: 4,
                restart: None,
            },
            started,
            0,
            0,
        );
        assert_eq!(
            fresh.snapshot(started),
            RestartInfo {
                restarts: 4,
                last: None
            }
        );
    }

    /// The close is reported once every holding handed for keeping is settled, not before.
    #[tokio::test(start_paused = true)]
    async fn the_window_close_waits_for_every_kept_holding_to_be_settled() {
        let figures = std::sync::Arc::new(RestartFigures::new(
            ThisStart {
                restarts: 1,
                restart: Some(false),
            },
            Instant::now() + Duration::from_secs(1),
            2,
            5,
        ));
        let report = tokio::spawn({
            let figures = figures.clone();
            async move { figures.report_window_close(Duration::from_secs(60)).await }
        });
        figures.count_resumed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!report.is_finished(), "one kept holding is still unsettled");
        figures.count_lost();
        tokio::time::timeout(Duration::from_secs(1), report)
            .await
            .expect("reported once the last one was settled")
            .unwrap();
    }
}
