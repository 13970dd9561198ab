//! The audit log (`[audit] path`, off by default): one JSON object per line for every grant,
//! release, lost lease, steal, break and refused acquire, saying who, what and when.
//!
//! The daemon's log says what went wrong and the metrics say how often; neither is the record
//! an operator hands over after an incident ("who held the ingest lock at 03:12, and who broke
//! it"). This is that record, in a schema of its own that stays put (`docs/audit.md`), in a
//! file of its own that a log level or a collector's filter cannot thin out.
//!
//! No lock waits for the disk: a record goes through a bounded queue to a writer thread, which
//! appends it through a buffer, flushes whenever the queue runs empty (never fsyncs), and
//! rotates the file by size. A full queue drops records rather than block a lock actor: they
//! are counted, and the count is written as a `dropped` line. A failing disk is logged at most
//! once a minute, and the daemon serves on.
//!
//! It sits at the bottom of the daemon: it knows the settings and the wire's types, nothing
//! else. The connections ([`crate::link`]) and the lock actors build the records.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use vfslock_proto::{LockMetadata, LockMode, WireError};

use crate::config::AuditSettings;

/// Records waiting for the writer. Enough for a burst of tens of thousands of grants and
/// releases (a restart's resumes, a shutdown's releases) while the disk is slow; a few MB at
/// most.
const QUEUE: usize = 16_384;

/// A write error, or records dropped from a full queue, is logged at most this often.
const TELL_EVERY: Duration = Duration::from_secs(60);

/// A file that cannot be opened is tried again at most this often, not for every record.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// How long a flush or a close waits for the writer: a disk that hangs must not hang a
/// shutdown or a planned restart.
const WAIT_FOR_WRITER: Duration = Duration::from_secs(5);

/// Who holds (or held, or asked for) a lock, and which holding: the fields every line has,
/// `null` where not known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Subject {
    /// The target, normalized (`file:///srv/data.csv`, `s3://bucket/key`).
    pub target: String,
    /// The holding's lock id, as the client's `Lock::lock_id()` says it (a member of a shared
    /// lock has its own); `null` for a refused acquire.
    pub lock_id: Option<String>,
    /// The fencing token; `null` where the store issues none.
    pub token: Option<u64>,
    /// `exclusive`, `shared` or `semaphore`.
    pub mode: Option<&'static str>,
    /// A semaphore's slot count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    /// The holder's (or asker's) process id.
    pub pid: Option<i64>,
    /// Its user id, from the kernel; `null` where the platform does not tell (Windows).
    pub uid: Option<u32>,
    /// The holder's host: this daemon's host id for its clients, the lock file's `hostname`
    /// for other holders.
    pub host: Option<String>,
    /// The holder's owner id, as it gave it.
    pub owner: Option<String>,
    /// A detached lease (it belongs to its uid and lock id, not to a connection).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub detached: bool,
}

impl Subject {
    /// The same subject, in `mode`.
    pub fn in_mode(mut self, mode: LockMode) -> Subject {
        let (name, slots) = match mode {
            LockMode::Exclusive => ("exclusive", None),
            LockMode::Shared => ("shared", None),
            LockMode::Slots(n) => ("semaphore", Some(n)),
        };
        self.mode = Some(name);
        self.slots = slots;
        self
    }

    /// The holder of the lock file `metadata` (another host's, a Go peer's, a detached lease)
    /// of `target`, held in `mode`.
    pub fn holder(target: &str, metadata: &LockMetadata, mode: LockMode) -> Subject {
        Subject {
            target: target.to_owned(),
            lock_id: metadata.lock_id.clone(),
            token: metadata.token,
            pid: known_pid(metadata.pid),
            uid: metadata.uid,
            host: Some(metadata.hostname.clone()).filter(|h| !h.is_empty()),
            owner: metadata.owner_id.clone(),
            detached: metadata.detached,
            ..Subject::default()
        }
        .in_mode(mode)
    }
}

/// A process id, unless it is 0 (not known: a platform that does not tell, a holding kept
/// across a restart for a session that has not come back).
pub fn known_pid(pid: i64) -> Option<i64> {
    (pid != 0).then_some(pid)
}

/// Milliseconds, for `waited_ms` and `held_ms`.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Who did it, when someone other than the holder acted: an admin's break, the release of a
/// detached lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct By {
    /// The process that asked.
    pub pid: Option<i64>,
    /// Its user id.
    pub uid: Option<u32>,
}

/// Whose lock file a steal replaced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StolenFrom {
    /// The stale holder's host.
    pub host: String,
    /// Its process id.
    pub pid: Option<i64>,
    /// Its owner id.
    pub owner: Option<String>,
    /// Its lock id (vfslock files only).
    pub lock_id: Option<String>,
}

impl From<&LockMetadata> for StolenFrom {
    fn from(stale: &LockMetadata) -> Self {
        StolenFrom {
            host: stale.hostname.clone(),
            pid: known_pid(stale.pid),
            owner: stale.owner_id.clone(),
            lock_id: stale.lock_id.clone(),
        }
    }
}

/// What happened, with the fields of that event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Details {
    /// The lock was granted to the subject.
    Grant {
        /// From the acquire's arrival to its grant.
        waited_ms: u64,
    },
    /// The subject let go of its holding.
    Release {
        /// `released` (its holder asked), `connection_closed` (its holder's connection ended
        /// while it held), `cancelled` (a grant that crossed its cancel, given back).
        cause: &'static str,
        /// From the grant to the release; not known for a detached lease of another daemon.
        #[serde(skip_serializing_if = "Option::is_none")]
        held_ms: Option<u64>,
        /// Who released a detached lease.
        #[serde(skip_serializing_if = "Option::is_none")]
        by: Option<By>,
    },
    /// The subject's lease ended without its release.
    Lost {
        /// `store_outage`, `stolen_or_broken`, `daemon_stopping`, `max_hold`,
        /// `daemon_failed` or `not_resumed` (the metrics' causes).
        cause: &'static str,
        /// What its holder was told.
        message: String,
        /// From the grant to the loss.
        #[serde(skip_serializing_if = "Option::is_none")]
        held_ms: Option<u64>,
    },
    /// The subject took over a stale lock file (its `grant` line follows).
    Steal {
        /// Whose lock file it was.
        stolen_from: StolenFrom,
    },
    /// An admin removed the subject's lock.
    Break {
        /// Who broke it.
        by: By,
        /// The reason the admin gave.
        reason: String,
    },
    /// The subject's acquire ended without a grant: refused, found held, timed out, cancelled,
    /// or failed.
    Refused {
        /// The error's kind, as the client sees it (`already_held`, `timeout`,
        /// `permission_denied`, ...).
        error_kind: String,
        /// The error's message.
        message: String,
        /// From the acquire's arrival to its answer; not set for an acquire refused before it
        /// reached its target (the access rules, the limits).
        #[serde(skip_serializing_if = "Option::is_none")]
        waited_ms: Option<u64>,
    },
}

impl Details {
    /// The acquire was answered with `error` after `waited`.
    pub fn refused(error: &WireError, waited: Option<Duration>) -> Details {
        Details::Refused {
            error_kind: snake_case(&format!("{:?}", error.kind)),
            message: error.message.clone(),
            waited_ms: waited.map(millis),
        }
    }

    /// The `event` field.
    pub fn event(&self) -> &'static str {
        match self {
            Details::Grant { .. } => "grant",
            Details::Release { .. } => "release",
            Details::Lost { .. } => "lost",
            Details::Steal { .. } => "steal",
            Details::Break { .. } => "break",
            Details::Refused { .. } => "refused",
        }
    }
}

/// `AlreadyHeld` → `already_held`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// One line as written: `time` and `event` first, then the subject, then the event's fields.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    event: &'static str,
    #[serde(flatten)]
    subject: &'a Subject,
    #[serde(flatten)]
    details: &'a Details,
}

/// The line that says how many records a full queue dropped just before it.
#[derive(Serialize)]
struct DroppedLine {
    time: String,
    event: &'static str,
    count: u64,
}

/// RFC 3339 in UTC, to the millisecond.
fn timestamp(time: SystemTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from(time)
        .format(&format)
        .unwrap_or_default()
}

/// A record on its way to the writer.
#[derive(Debug)]
struct Record {
    time: SystemTime,
    subject: Subject,
    details: Details,
}

impl Record {
    fn line(&self) -> Vec<u8> {
        let line = Line {
            time: timestamp(self.time),
            event: self.details.event(),
            subject: &self.subject,
            details: &self.details,
        };
        let mut bytes = serde_json::to_vec(&line).expect("a record serializes");
        bytes.push(b'\n');
        bytes
    }
}

/// What the writer thread is asked.
#[derive(Debug)]
enum Message {
    Record(Box<Record>),
    /// Write out what is buffered, then say so.
    Flush(mpsc::Sender<()>),
    /// Write out what is buffered, say so, and stop.
    Close(mpsc::Sender<()>),
}

/// Why the audit log could not be opened at startup.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the audit log {} ([audit] path)", path.display())]
pub struct AuditError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// The way to the audit log's writer; cheap to clone, one for every connection.
#[derive(Clone, Debug)]
pub struct AuditLog {
    queue: SyncSender<Message>,
    /// Records a full queue refused since the writer last wrote their count.
    dropped: Arc<AtomicU64>,
}

impl AuditLog {
    /// Opens the audit log `settings` ask for (creating its directory if need be) and starts
    /// its writer; `None` when there is none.
    pub fn open(settings: &AuditSettings) -> Result<Option<AuditLog>, AuditError> {
        let Some(path) = &settings.path else {
            return Ok(None);
        };
        let writer =
            Writer::open(path.clone(), settings.max_size, settings.keep).map_err(|source| {
                AuditError {
                    path: path.clone(),
                    source,
                }
            })?;
        let (queue, received) = mpsc::sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        std::thread::Builder::new()
            .name("vfslockd-audit".into())
            .spawn(move || writer.run(received, &counted))
            .map_err(|source| AuditError {
                path: path.clone(),
                source,
            })?;
        tracing::info!(path = %path.display(), "writing the audit log");
        Ok(Some(AuditLog { queue, dropped }))
    }

    /// Records `details` about `subject`, now. Never waits: with the queue full the record is
    /// dropped and counted.
    pub fn record(&self, subject: Subject, details: Details) {
        let record = Box::new(Record {
            time: SystemTime::now(),
            subject,
            details,
        });
        match self.queue.try_send(Message::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // Closed at the end of a shutdown: nothing is left to record.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Waits (briefly) until everything recorded so far is in the file: before a planned
    /// restart replaces the process, which would lose the writer's buffer.
    pub fn flush(&self) {
        self.ask(Message::Flush);
    }

    /// Writes out everything recorded so far and stops the writer: the end of a shutdown.
    /// Later records are dropped.
    pub fn close(&self) {
        self.ask(Message::Close);
    }

    fn ask(&self, message: fn(mpsc::Sender<()>) -> Message) {
        let (done, wait) = mpsc::channel();
        // Blocks while the queue is full, for as long as the writer needs to make room; the
        // wait for its answer is bounded.
        if self.queue.send(message(done)).is_ok() && wait.recv_timeout(WAIT_FOR_WRITER).is_err() {
            tracing::warn!("the audit log's writer did not answer within {WAIT_FOR_WRITER:?}; its last records may be missing");
        }
    }
}

/// The writer thread's side: the file, its size, its rotation, and what went wrong.
struct Writer {
    path: PathBuf,
    max_size: u64,
    keep: u32,
    file: Option<BufWriter<File>>,
    /// The file's size, with what is still buffered.
    size: u64,
    /// When a file that could not be opened may be tried again.
    retry_at: Option<Instant>,
    /// Records lost to write errors since the last report, and when that was.
    lost: u64,
    lost_told: Option<Instant>,
    /// Records dropped from a full queue since the last report, and when that was.
    dropped: u64,
    dropped_told: Option<Instant>,
}

impl Writer {
    /// Opens `path` for appending, creating it (and its directory) if need be: at startup, so
    /// that a path the daemon cannot write stops it before it serves.
    fn open(path: PathBuf, max_size: u64, keep: u32) -> io::Result<Writer> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_dir(dir)?;
        }
        let mut writer = Writer {
            path,
            max_size,
            keep,
            file: None,
            size: 0,
            retry_at: None,
            lost: 0,
            lost_told: None,
            dropped: 0,
            dropped_told: None,
        };
        writer.reopen()?;
        Ok(writer)
    }

    /// Writes what comes until closed, flushing whenever the queue runs empty.
    fn run(mut self, queue: Receiver<Message>, dropped: &AtomicU64) {
        while let Ok(first) = queue.recv() {
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Record(record) => self.append(&record.line()),
                    Message::Flush(done) => {
                        self.write_dropped(dropped);
                        self.flush();
                        let _ = done.send(());
                    }
                    Message::Close(done) => {
                        self.write_dropped(dropped);
                        self.flush();
                        let _ = done.send(());
                        return;
                    }
                }
                next = queue.try_recv().ok();
            }
            self.write_dropped(dropped);
            self.flush();
        }
        self.flush();
    }

    /// Appends one line, rotating first if it would take the file past its size.
    fn append(&mut self, line: &[u8]) {
        if self.file.is_none() && !self.try_reopen() {
            self.lost += 1;
            return;
        }
        let length = line.len() as u64;
        if self.size > 0 && self.size + length > self.max_size {
            self.rotate();
            if self.file.is_none() {
                self.lost += 1;
                return;
            }
        }
        let file = self.file.as_mut().expect("opened above");
        match file.write_all(line) {
            Ok(()) => {
                self.size += length;
                self.recovered();
            }
            Err(e) => {
                self.lost += 1;
                self.failed("write", &e);
                self.discard();
            }
        }
    }

    /// Writes how many records a full queue dropped, if any.
    fn write_dropped(&mut self, dropped: &AtomicU64) {
        let count = dropped.swap(0, Ordering::Relaxed);
        if count == 0 {
            return;
        }
        let line = DroppedLine {
            time: timestamp(SystemTime::now()),
            event: "dropped",
            count,
        };
        let mut bytes = serde_json::to_vec(&line).expect("a count serializes");
        bytes.push(b'\n');
        self.append(&bytes);
        self.dropped += count;
        if told_long_ago(self.dropped_told) {
            tracing::warn!(dropped = self.dropped, "the audit log's queue was full: records dropped (a `dropped` line in the audit log says how many; said at most once a minute)");
            self.dropped = 0;
            self.dropped_told = Some(Instant::now());
        }
    }

    fn flush(&mut self) {
        if let Some(file) = self.file.as_mut() {
            if let Err(e) = file.flush() {
                self.failed("write", &e);
                self.discard();
            }
        }
    }

    /// Renames the file to `.1` (moving the older ones up, the oldest kept one overwritten)
    /// and starts a new one.
    fn rotate(&mut self) {
        self.flush();
        self.file = None;
        for n in (1..self.keep).rev() {
            if let Err(e) = std::fs::rename(self.numbered(n), self.numbered(n + 1)) {
                if e.kind() != io::ErrorKind::NotFound {
                    self.failed("rotate", &e);
                }
            }
        }
        let moved = if self.keep == 0 {
            std::fs::remove_file(&self.path)
        } else {
            std::fs::rename(&self.path, self.numbered(1))
        };
        if let Err(e) = moved {
            // Appended to as it is: the next line tries again.
            self.failed("rotate", &e);
        }
        self.retry_at = None;
        self.try_reopen();
    }

    /// `audit.log.N`.
    fn numbered(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// [`Writer::reopen`], at most once per [`REOPEN_EVERY`] while it fails.
    fn try_reopen(&mut self) -> bool {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return false;
        }
        match self.reopen() {
            Ok(()) => {
                self.retry_at = None;
                true
            }
            Err(e) => {
                self.retry_at = Some(Instant::now() + REOPEN_EVERY);
                self.failed("open", &e);
                false
            }
        }
    }

    /// Opens the file for appending (mode 0640 when it is created: the log says who locked
    /// what, which not every local user should read).
    fn reopen(&mut self) -> io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true).read(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o640);
        }
        let mut file = options.open(&self.path)?;
        let size = file.metadata()?.len();
        let mut file_out = BufWriter::new(file.try_clone()?);
        self.size = size;
        // A line cut short by a crash or a failed write is ended, so that only it is broken
        // and the next one parses.
        if size > 0 && !ends_a_line(&mut file)? {
            file_out.write_all(b"\n")?;
            self.size += 1;
        }
        self.file = Some(file_out);
        Ok(())
    }

    /// Drops the file and what is still buffered for it (after a write error the buffer may
    /// never go out); the next line opens it again.
    fn discard(&mut self) {
        if let Some(file) = self.file.take() {
            let _ = file.into_parts();
        }
    }

    /// Logs a failure, at most once per [`TELL_EVERY`].
    fn failed(&mut self, what: &str, error: &io::Error) {
        if told_long_ago(self.lost_told) {
            tracing::error!(path = %self.path.display(), %error, lost = self.lost, "cannot {what} the audit log: its records are lost until it works again (said at most once a minute)");
            self.lost_told = Some(Instant::now());
        }
    }

    /// A line went out: if lines were lost before, says how many.
    fn recovered(&mut self) {
        if self.lost_told.is_some() {
            tracing::warn!(path = %self.path.display(), lost = self.lost, "the audit log is written again");
            self.lost = 0;
            self.lost_told = None;
        }
    }
}

fn told_long_ago(told: Option<Instant>) -> bool {
    told.is_none_or(|at| at.elapsed() >= TELL_EVERY)
}

/// Whether the file's last byte ends a line.
fn ends_a_line(file: &mut File) -> io::Result<bool> {
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Creates the audit log's directory (0750 where it is new on Unix: its files are 0640).
fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o750);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfslock_proto::ErrorKind;

    fn settings(dir: &Path, max_size: u64, keep: u32) -> AuditSettings {
        AuditSettings {
            path: Some(dir.join("logs/audit.log")),
            max_size,
            keep,
        }
    }

    fn subject(n: u64) -> Subject {
        Subject {
            target: "mem:///audit/unit".into(),
            lock_id: Some(format!("{n:032x}")),
            token: Some(n),
            pid: Some(4242),
            uid: Some(1000),
            host: Some("h1".into()),
            ..Subject::default()
        }
        .in_mode(LockMode::Slots(3))
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn a_record_is_one_line_of_fixed_fields_then_its_events_own() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&settings(dir.path(), 1 << 20, 1))
            .unwrap()
            .unwrap();
        log.record(subject(7), Details::Grant { waited_ms: 12 });
        let error = WireError::new(ErrorKind::AlreadyHeld, "held by h2");
        log.record(
            Subject {
                lock_id: None,
                token: None,
                ..subject(8)
            },
            Details::refused(&error, None),
        );
        log.close();
        let path = dir.path().join("logs/audit.log");
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap();
        // Each key ends where `":` follows it; the last piece is the last value.
        let pieces: Vec<&str> = first.split("\":").collect();
        let keys: Vec<&str> = pieces[..pieces.len() - 1]
            .iter()
            .filter_map(|piece| piece.rsplit('"').next())
            .collect();
        assert_eq!(
            keys,
            [
                "time",
                "event",
                "target",
                "lock_id",
                "token",
                "mode",
                "slots",
                "pid",
                "uid",
                "host",
                "owner",
                "waited_ms"
            ],
            "{first}"
        );
        let parsed = lines(&path);
        assert_eq!(parsed[0]["event"], "grant");
        assert_eq!(parsed[0]["mode"], "semaphore");
        assert_eq!(parsed[0]["owner"], serde_json::Value::Null);
        let time = parsed[0]["time"].as_str().unwrap();
        assert!(
            time.len() == "2026-12-07T19:42:13.701Z".len() && time.ends_with('Z'),
            "{time}"
        );
        assert_eq!(parsed[1]["event"], "refused");
        assert_eq!(parsed[1]["error_kind"], "already_held");
        assert_eq!(parsed[1]["lock_id"], serde_json::Value::Null);
        assert!(parsed[1].get("waited_ms").is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777 & !0o640, 0, "{mode:o}");
        }
    }

    #[test]
    fn rotation_keeps_the_newest_records_in_at_most_keep_files_more() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&settings(dir.path(), 600, 2))
            .unwrap()
            .unwrap();
        for n in 0..40 {
            log.record(subject(n), Details::Grant { waited_ms: 0 });
        }
        log.close();
        let logs = dir.path().join("logs");
        let mut names: Vec<String> = std::fs::read_dir(&logs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["audit.log", "audit.log.1", "audit.log.2"]);
        let mut tokens = Vec::new();
        for name in ["audit.log.2", "audit.log.1", "audit.log"] {
            let path = logs.join(name);
            assert!(std::fs::metadata(&path).unwrap().len() <= 600, "{name}");
            tokens.extend(lines(&path).iter().map(|l| l["token"].as_u64().unwrap()));
        }
        let newest = *tokens.last().unwrap();
        assert_eq!(newest, 39, "the newest record is in audit.log");
        let first = tokens[0];
        assert_eq!(
            tokens,
            (first..40).collect::<Vec<_>>(),
            "the kept files hold every record since the oldest kept, in order"
        );
    }

    #[test]
    fn a_line_cut_short_is_ended_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit.log");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{\"time\":\"2026-").unwrap();
        let log = AuditLog::open(&settings(dir.path(), 1 << 20, 1))
            .unwrap()
            .unwrap();
        log.record(subject(1), Details::Grant { waited_ms: 0 });
        log.close();
        let text = std::fs::read_to_string(&path).unwrap();
        let last = text.lines().last().unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(last).unwrap()["token"],
            1
        );
    }
}
