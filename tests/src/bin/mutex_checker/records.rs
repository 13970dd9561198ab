//! What a worker writes to its log, one JSON object per line, and the monotonic clock that
//! timestamps it.
//!
//! Times are `CLOCK_MONOTONIC` nanoseconds: that clock is system-wide, so the records of
//! different processes on one machine are comparable.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::modes::Held;

/// Now on `CLOCK_MONOTONIC`, in nanoseconds.
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Now on `CLOCK_REALTIME`, in nanoseconds since the epoch: to place a lock file's
/// `createdAt` on the monotonic clock (their difference, taken at one moment).
pub(crate) fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One step of a worker. `t` is always the monotonic time of the step, `target` the index of
/// the target (`t0`, `t1`, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub(crate) enum Record {
    /// The worker process started.
    Start {
        /// When.
        t: u64,
        /// The worker's identity (stable across restarts).
        client: String,
        /// This process.
        pid: u32,
    },
    /// A set run's `lock_all` returned every lock of its set (one `enter` per target follows).
    SetTaken {
        /// When.
        t: u64,
        /// The targets, in the order the worker gave them to `lock_all`.
        targets: Vec<usize>,
        /// How long `lock_all` took, in nanoseconds (the wait for the whole set).
        waited: u64,
    },
    /// The lock was granted: the critical section begins (recorded after the grant arrived).
    Enter {
        /// When.
        t: u64,
        /// Which target.
        target: usize,
        /// The worker's identity.
        client: String,
        /// The holding's fencing token, as `Lock::token` gave it.
        token: Option<u64>,
        /// How the lock is held; left out when exclusive (the records of exclusive runs are
        /// as they always were).
        #[serde(default, skip_serializing_if = "Held::is_exclusive")]
        mode: Held,
    },
    /// The worker wrote to the guarded resource with its token.
    Write {
        /// When the answer arrived.
        t: u64,
        /// Which target.
        target: usize,
        /// The token it wrote with.
        token: Option<u64>,
        /// Whether the resource accepted the write; `None` if it did not answer.
        accepted: Option<bool>,
    },
    /// A shared or slot holder's guarded read: the resource checked that its token is not
    /// older than the newest write (shared holders share tokens, so they read rather than
    /// write: see `resource.rs`).
    Read {
        /// When the answer arrived.
        t: u64,
        /// Which target.
        target: usize,
        /// The token it read with.
        token: Option<u64>,
        /// Whether the resource accepted the read; `None` if it did not answer.
        accepted: Option<bool>,
    },
    /// The worker did not write to the guarded resource: the holding has no fencing token,
    /// and the store grants none (SFTP, create-only mode), so the resource has nothing to
    /// check.
    WriteSkipped {
        /// When.
        t: u64,
        /// Which target.
        target: usize,
    },
    /// `Lock::lost` resolved while the lock was held: the section ends here.
    Lost {
        /// When the worker heard it.
        t: u64,
        /// Which target.
        target: usize,
        /// Why, as the library said.
        reason: String,
    },
    /// The worker is done with the critical section (recorded before the release is sent).
    Exit {
        /// When.
        t: u64,
        /// Which target.
        target: usize,
    },
    /// `Lock::release` returned.
    Released {
        /// When.
        t: u64,
        /// Which target.
        target: usize,
        /// Its error, if any.
        error: Option<String>,
        /// Whether that error was `ErrorKind::LeaseLost`.
        lease_lost: bool,
    },
    /// An acquire failed.
    AcquireError {
        /// When.
        t: u64,
        /// Which target.
        target: usize,
        /// The error kind (`Debug` form).
        kind: String,
        /// The message.
        message: String,
    },
    /// The worker stopped after a SIGTERM.
    Stop {
        /// When.
        t: u64,
        /// How long the acquire it gave up had been waiting, in nanoseconds, if it stopped in
        /// the middle of one (a set run's deadlock would show here).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        waiting: Option<u64>,
    },
}

/// Appends records to a log file: one `write_all` of one line each on an `O_APPEND` file, so
/// a record is on disk (in the page cache) before the worker takes its next step, and a
/// SIGKILL loses at most the step in progress.
pub(crate) struct RecordLog {
    file: std::fs::File,
}

impl Record {
    /// The record of a release's answer, taken now.
    pub(crate) fn released(target: usize, answer: Result<(), vfslock::Error>) -> Record {
        Record::Released {
            t: now_ns(),
            target,
            lease_lost: answer
                .as_ref()
                .is_err_and(|e| e.kind() == vfslock::ErrorKind::LeaseLost),
            error: answer.err().map(|e| format!("{:?}: {e}", e.kind())),
        }
    }
}

impl RecordLog {
    /// Opens (creates) `path` for appending.
    pub(crate) fn open(path: &Path) -> std::io::Result<RecordLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(RecordLog { file })
    }

    /// Writes one record as one line.
    pub(crate) fn append(&mut self, record: &Record) {
        let mut line = serde_json::to_vec(record).expect("records serialize");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .expect("append to the worker's record log");
    }
}

/// Reads a log written by [`RecordLog`]. Lines that do not parse (a write torn by SIGKILL)
/// are skipped and counted.
pub(crate) fn read_log(path: &Path) -> std::io::Result<(Vec<Record>, usize)> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        // A worker killed before it wrote anything.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut records = Vec::new();
    let mut torn = 0;
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(record) => records.push(record),
            Err(_) => torn += 1,
        }
    }
    Ok((records, torn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.jsonl");
        let records = vec![
            Record::Start {
                t: 1,
                client: "h0-c0".into(),
                pid: 42,
            },
            Record::Enter {
                t: 2,
                target: 1,
                client: "h0-c0".into(),
                token: Some(7),
                mode: Held::Exclusive,
            },
            Record::Enter {
                t: 2,
                target: 0,
                client: "h0-c0".into(),
                token: Some(8),
                mode: Held::Shared,
            },
            Record::Read {
                t: 3,
                target: 0,
                token: Some(8),
                accepted: Some(true),
            },
            Record::Write {
                t: 3,
                target: 1,
                token: Some(7),
                accepted: Some(true),
            },
            Record::WriteSkipped { t: 3, target: 0 },
            Record::Lost {
                t: 4,
                target: 1,
                reason: "gone".into(),
            },
            Record::Released {
                t: 5,
                target: 1,
                error: Some("lost".into()),
                lease_lost: true,
            },
            Record::SetTaken {
                t: 6,
                targets: vec![2, 0],
                waited: 1_000,
            },
            Record::Stop {
                t: 6,
                waiting: Some(5),
            },
            Record::Stop {
                t: 7,
                waiting: None,
            },
        ];
        let mut log = RecordLog::open(&path).unwrap();
        for record in &records {
            log.append(record);
        }
        // A torn last line, as a SIGKILL in the middle of a write could leave.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"ev\":\"ex")
            .unwrap();
        let (read, torn) = read_log(&path).unwrap();
        assert_eq!(read, records);
        assert_eq!(torn, 1);
    }

    #[test]
    fn an_exclusive_enter_reads_and_writes_as_it_always_did() {
        let old = r#"{"ev":"enter","t":2,"target":1,"client":"h0-c0","token":7}"#;
        let record: Record = serde_json::from_str(old).unwrap();
        assert!(matches!(
            record,
            Record::Enter {
                mode: Held::Exclusive,
                ..
            }
        ));
        assert_eq!(serde_json::to_string(&record).unwrap(), old);
        let slot = Record::Enter {
            t: 2,
            target: 1,
            client: "h0-c0".into(),
            token: Some(7),
            mode: Held::Slot,
        };
        assert!(serde_json::to_string(&slot)
            .unwrap()
            .ends_with(r#""token":7,"mode":"slot"}"#));
    }

    #[test]
    fn the_monotonic_clock_advances() {
        let a = now_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = now_ns();
        assert!(b >= a + 2_000_000, "{a} → {b}");
    }
}
