//! Running as a systemd service: the listening socket systemd passes (socket activation,
//! `sd_listen_fds(3)`), the messages the daemon sends its service manager (`sd_notify(3)`:
//! readiness, status, stopping, watchdog) and log lines the journal can grade by priority.
//!
//! Each protocol is a few environment variables and, for notifications, one datagram per
//! message, so this needs no crate. Outside systemd every part is a no-op: no passed socket
//! means the daemon binds its own, no `NOTIFY_SOCKET` means nothing is sent, and log lines
//! carry no priority prefix.
//!
//! | variable | read by | meaning |
//! |---|---|---|
//! | `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES` | [`take_passed_sockets`] | the first descriptor is our listening socket; one named `metrics` is the metrics listener |
//! | `NOTIFY_SOCKET` | [`Notifier::from_env`] | where to send `READY=1`, `STATUS=…`, … (`@` = abstract) |
//! | `WATCHDOG_USEC`, `WATCHDOG_PID` | [`Notifier::from_env`] | send `WATCHDOG=1` at half this period |
//! | `JOURNAL_STREAM`, `INVOCATION_ID` | [`logs_to_journal`] | stderr goes to the journal |
//!
//! Who sends what, and when (all from [`Reporter`], driven by [`crate::server::serve`]):
//! `READY=1` once the socket is served (it is bound and every store passed its probe before
//! `serve` starts), `STATUS=` whenever the counts change (checked every second),
//! `WATCHDOG=1` from a task on the daemon's runtime (a runtime that stops scheduling tasks stops
//! the pings), and `STOPPING=1` when shutdown begins.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::tokio::Listener;

use crate::context::{Context, Stats};

/// What is wrong with the socket systemd passed: the units are not what the daemon needs.
#[derive(Debug, thiserror::Error)]
pub enum PassedSocketError {
    /// `LISTEN_FDS` is not a number.
    #[error("LISTEN_FDS={0:?} is not a number")]
    Count(String),
    /// The descriptor is not a listening Unix stream socket.
    #[error(
        "systemd passed fd {fd}, but it {what}: vfslockd needs a listening Unix stream \
         socket (ListenStream=/path in the .socket unit, Accept=no)"
    )]
    Unusable {
        /// The descriptor.
        fd: i32,
        /// What it is instead ("is not a socket").
        what: &'static str,
    },
    /// The descriptor is not open.
    #[error(
        "systemd passed fd {fd}, but it is not open: vfslockd needs a listening Unix stream \
         socket (ListenStream=/path in the .socket unit, Accept=no)"
    )]
    NotOpen {
        /// The descriptor.
        fd: i32,
        /// What `fstat` said.
        #[source]
        source: std::io::Error,
    },
    /// Its address is not a Unix socket address.
    #[error("the socket systemd passed is not a Unix socket")]
    NotUnix(#[source] std::io::Error),
    /// The runtime could not take it over.
    #[error("cannot serve the socket systemd passed")]
    Adopt(#[source] std::io::Error),
}

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
#[cfg(unix)]
const LISTEN_FDS_START: std::os::fd::RawFd = 3;

/// A listening socket passed by the service manager.
#[derive(Debug)]
pub struct PassedSocket {
    /// The socket, ready to accept.
    pub listener: Listener,
    /// The path it is bound to, if it has one (an abstract or unnamed socket has none).
    pub path: Option<PathBuf>,
    /// Its name (`LISTEN_FDNAMES`: `FileDescriptorName=`, `--fdname`), for the log.
    pub name: Option<String>,
}

/// The name of a passed descriptor that is the metrics listener (`vfslockd-metrics.socket`'s
/// `FileDescriptorName=`), not the socket clients connect to.
pub const METRICS_FD_NAME: &str = "metrics";

/// What the service manager passed: the socket clients connect to, and the metrics listener.
#[derive(Debug, Default)]
pub struct PassedSockets {
    /// The clients' socket.
    pub control: Option<PassedSocket>,
    /// The listening socket named [`METRICS_FD_NAME`], TCP or Unix.
    #[cfg(unix)]
    pub metrics: Option<std::os::fd::OwnedFd>,
}

/// Takes the listening socket systemd passed to this process, if it passed one.
///
/// Reads `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` and removes them from the
/// environment, so that processes we start (the SFTP store's `ssh`) do not take the socket
/// for theirs; the descriptor is also marked close-on-exec. Call it once, at startup, before
/// other threads read the environment. `Ok(None)` when nothing was passed to *this* process;
/// an error when something was passed but is not a listening Unix stream socket (a unit that
/// is wrong must not silently become a daemon that binds elsewhere).
///
/// A descriptor named [`METRICS_FD_NAME`] is not the clients' socket: it is handed back apart,
/// for the metrics listener (after a check that it is a listening stream socket).
pub fn take_passed_sockets() -> Result<PassedSockets, PassedSocketError> {
    #[cfg(unix)]
    {
        take_passed_sockets_unix()
    }
    #[cfg(not(unix))]
    {
        Ok(PassedSockets::default())
    }
}

#[cfg(unix)]
fn take_passed_sockets_unix() -> Result<PassedSockets, PassedSocketError> {
    use std::os::fd::{FromRawFd, OwnedFd};

    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    // Safe in the 2021 edition, but racy against another thread reading the environment:
    // this runs first thing in `run`, before the daemon starts any task or child.
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(PassedSockets::default());
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        // Meant for another process (we inherited the variables from a parent).
        return Ok(PassedSockets::default());
    }
    let count: std::os::fd::RawFd = fds
        .trim()
        .parse()
        .map_err(|_| PassedSocketError::Count(fds.clone()))?;
    if count < 1 {
        return Ok(PassedSockets::default());
    }
    // Every passed descriptor stays out of the processes we start.
    for fd in LISTEN_FDS_START..LISTEN_FDS_START.saturating_add(count) {
        set_cloexec(fd);
    }
    let names: Vec<String> = names
        .as_deref()
        .unwrap_or("")
        .split(':')
        .map(str::to_owned)
        .collect();
    let name_of = |fd: std::os::fd::RawFd| names.get((fd - LISTEN_FDS_START) as usize);
    let mut passed = PassedSockets::default();
    let mut control = None;
    for fd in LISTEN_FDS_START..LISTEN_FDS_START.saturating_add(count) {
        if name_of(fd).is_some_and(|n| n == METRICS_FD_NAME) {
            check_listening_stream(fd)?;
            // SAFETY: as for the clients' socket below: passed to us, open, taken once.
            passed.metrics = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        } else if control.is_none() {
            control = Some(fd);
        } else {
            tracing::warn!(
                fd,
                "systemd passed more than one socket for clients; serving the first only (one ListenStream= is enough)"
            );
        }
    }
    let Some(control) = control else {
        return Ok(passed);
    };
    check_listening_unix_stream(control)?;
    // SAFETY: systemd passed `control` to this process (LISTEN_PID is ours) and it is open
    // (checked above); nothing else in the daemon owns it, and removing LISTEN_FDS above makes
    // this the only place that ever takes it.
    let fd = unsafe { OwnedFd::from_raw_fd(control) };
    let std_listener = std::os::unix::net::UnixListener::from(fd);
    let address = std_listener
        .local_addr()
        .map_err(PassedSocketError::NotUnix)?;
    let path = address.as_pathname().map(PathBuf::from);
    // No name reclamation: the socket file is systemd's, and stays when the daemon exits.
    let listener = interprocess::os::unix::uds_local_socket::tokio::Listener::try_from(
        OwnedFd::from(std_listener),
    )
    .map_err(PassedSocketError::Adopt)?;
    let name = name_of(control).filter(|n| !n.is_empty()).cloned();
    passed.control = Some(PassedSocket {
        listener: listener.into(),
        path,
        name,
    });
    Ok(passed)
}

/// Marks `fd` close-on-exec; a descriptor that is not open is left alone.
#[cfg(unix)]
fn set_cloexec(fd: std::os::fd::RawFd) {
    // SAFETY: fcntl on a plain integer descriptor; on a closed one it fails with EBADF and
    // changes nothing.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

/// Checks that `fd` is an open socket of type `SOCK_STREAM` that listens (the address family
/// is checked when its address is read).
#[cfg(unix)]
fn check_listening_unix_stream(fd: std::os::fd::RawFd) -> Result<(), PassedSocketError> {
    check_listening_stream(fd)
}

/// Checks that `fd` is an open listening stream socket, of any address family.
#[cfg(unix)]
fn check_listening_stream(fd: std::os::fd::RawFd) -> Result<(), PassedSocketError> {
    let fail = |what: &'static str| Err(PassedSocketError::Unusable { fd, what });
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a `stat`; on a closed fd fstat fails with EBADF.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(PassedSocketError::NotOpen {
            fd,
            source: std::io::Error::last_os_error(),
        });
    }
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return fail("is not a socket");
    }
    if sockopt_int(fd, libc::SO_TYPE) != Some(libc::SOCK_STREAM) {
        return fail("is not a stream socket");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if sockopt_int(fd, libc::SO_ACCEPTCONN) != Some(1) {
        return fail("is not listening");
    }
    Ok(())
}

/// An integer socket option of `fd` at `SOL_SOCKET`.
#[cfg(unix)]
fn sockopt_int(fd: std::os::fd::RawFd, option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` is the size of `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(value)
}

/// Sends `sd_notify` messages to the service manager; does nothing when there is none.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    #[cfg(unix)]
    target: Option<Arc<NotifyTarget>>,
    watchdog: Option<Duration>,
}

#[cfg(unix)]
#[derive(Debug)]
struct NotifyTarget {
    socket: std::os::unix::net::UnixDatagram,
    address: std::os::unix::net::SocketAddr,
    /// `NOTIFY_SOCKET` as given, for messages.
    text: String,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// The notifier the environment asks for: `NOTIFY_SOCKET` (a path, or `@name` for an
    /// abstract socket), and a watchdog if `WATCHDOG_USEC` is set and `WATCHDOG_PID` is unset
    /// or ours.
    ///
    /// Removes the variables from the environment, like [`take_passed_socket`] and for the same
    /// reason: a child must not speak for the daemon. Call it once, at startup.
    pub fn from_env() -> Notifier {
        #[cfg(unix)]
        {
            let socket = std::env::var("NOTIFY_SOCKET").ok();
            let usec = std::env::var("WATCHDOG_USEC").ok();
            let pid = std::env::var("WATCHDOG_PID").ok();
            // See `take_passed_socket_unix` on removing variables.
            for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
                std::env::remove_var(name);
            }
            let target = socket
                .filter(|s| !s.is_empty())
                .and_then(|text| match NotifyTarget::connect(&text) {
                    Ok(target) => Some(Arc::new(target)),
                    Err(e) => {
                        tracing::warn!(notify_socket = %text, error = %e, "cannot use NOTIFY_SOCKET: not notifying systemd");
                        None
                    }
                });
            let watchdog = target
                .as_ref()
                .and_then(|_| watchdog_interval(usec.as_deref(), pid.as_deref()));
            Notifier { target, watchdog }
        }
        #[cfg(not(unix))]
        {
            Notifier::disabled()
        }
    }

    /// Whether there is a service manager to notify.
    pub fn is_enabled(&self) -> bool {
        #[cfg(unix)]
        {
            self.target.is_some()
        }
        #[cfg(not(unix))]
        {
            false
        }
    }

    /// How often to send `WATCHDOG=1` (half of `WATCHDOG_USEC`), if the manager asks for it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one message (`KEY=value` lines). Failures are logged, not returned: the daemon
    /// serves its clients whether or not the manager hears it.
    pub fn notify(&self, message: &str) {
        #[cfg(unix)]
        if let Some(target) = &self.target {
            if let Err(e) = target
                .socket
                .send_to_addr(message.as_bytes(), &target.address)
            {
                // The socket is non-blocking: a manager that does not read its queue loses
                // messages instead of stalling a runtime thread.
                tracing::warn!(notify_socket = %target.text, error = %e, "cannot notify systemd");
            }
        }
        #[cfg(not(unix))]
        let _ = message;
    }
}

#[cfg(unix)]
impl NotifyTarget {
    fn connect(text: &str) -> std::io::Result<NotifyTarget> {
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let address = match text.strip_prefix('@') {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Some(name) => {
                #[cfg(target_os = "android")]
                use std::os::android::net::SocketAddrExt;
                #[cfg(target_os = "linux")]
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())?
            }
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            Some(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "abstract sockets exist on Linux only",
                ))
            }
            None => SocketAddr::from_pathname(text)?,
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(NotifyTarget {
            socket,
            address,
            text: text.to_owned(),
        })
    }
}

/// Half of `WATCHDOG_USEC`, if it is set, positive, and `WATCHDOG_PID` is unset or ours.
#[cfg(unix)]
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>) -> Option<Duration> {
    if let Some(pid) = pid.filter(|p| !p.is_empty()) {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec) / 2)
}

/// How often the counts are compared with the last `STATUS=` sent.
const STATUS_CHECK: Duration = Duration::from_secs(1);

/// The `STATUS=` line: what `systemctl status vfslockd` shows.
pub fn status_line(ctx: &Context) -> String {
    let held = Stats::get(&ctx.stats.held);
    let waiting = Stats::get(&ctx.stats.waiting);
    let sessions = Stats::get(&ctx.stats.sessions);
    let state = if ctx.is_shutting_down() {
        "shutting down, releasing locks"
    } else {
        "serving"
    };
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        "{state}: {} held, {} waiting, {}",
        plural(held, "lock", "locks"),
        waiting,
        plural(sessions, "client connection", "client connections"),
    )
}

/// Tells the service manager how the daemon is doing, from `READY=1` to `STOPPING=1`: keeps
/// `STATUS=` current and the watchdog fed from a task of its own, which ends when this is
/// dropped.
#[derive(Debug)]
pub struct Reporter {
    notifier: Notifier,
    ctx: Arc<Context>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Reporter {
    /// Sends `READY=1` with a first `STATUS=` line now, then starts the task. Call it once the
    /// daemon serves: the socket listens and the stores are up.
    pub fn start(notifier: Notifier, ctx: Arc<Context>) -> Reporter {
        if !notifier.is_enabled() {
            return Reporter {
                notifier,
                ctx,
                task: None,
            };
        }
        let first = status_line(&ctx);
        notifier.notify(&format!("READY=1\nSTATUS={first}"));
        let task = tokio::spawn(report(notifier.clone(), ctx.clone(), first));
        Reporter {
            notifier,
            ctx,
            task: Some(task),
        }
    }

    /// Sends `STOPPING=1` with the shutdown status; status and watchdog go on until drop.
    pub fn stopping(&self) {
        if self.notifier.is_enabled() {
            let status = status_line(&self.ctx);
            self.notifier
                .notify(&format!("STOPPING=1\nSTATUS={status}"));
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The reporter's task: `STATUS=` on change, `WATCHDOG=1` on time.
async fn report(notifier: Notifier, ctx: Arc<Context>, mut last: String) {
    use tokio::time::{interval, MissedTickBehavior};
    let mut status = interval(STATUS_CHECK);
    status.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut watchdog = notifier.watchdog_interval().map(|every| {
        let mut watchdog = interval(every);
        watchdog.set_missed_tick_behavior(MissedTickBehavior::Delay);
        watchdog
    });
    loop {
        tokio::select! {
            _ = status.tick() => {
                let line = status_line(&ctx);
                if line != last {
                    notifier.notify(&format!("STATUS={line}"));
                    last = line;
                }
            }
            _ = async { watchdog.as_mut().expect("guarded").tick().await }, if watchdog.is_some() => {
                notifier.notify("WATCHDOG=1");
            }
        }
    }
}

/// Whether stderr goes to the journal, so log lines should carry `<N>` priority prefixes and
/// neither timestamps (the journal adds its own) nor colours.
///
/// `JOURNAL_STREAM` (`device:inode` of the stream systemd connected) is the exact answer: a
/// value that does not match stderr means stderr was redirected since (a test's log file, a
/// shell started from a service), so the answer is no. Without it, `INVOCATION_ID` (set for
/// every unit systemd runs) counts when stderr is not a terminal: a unit whose output goes to
/// syslog or the kernel log reads the same prefixes.
pub fn logs_to_journal() -> bool {
    #[cfg(unix)]
    {
        use std::io::IsTerminal;
        if let Some(stream) = std::env::var_os("JOURNAL_STREAM") {
            return stream
                .to_str()
                .and_then(parse_journal_stream)
                .is_some_and(|(dev, ino)| stderr_identity() == Some((dev, ino)));
        }
        std::env::var_os("INVOCATION_ID").is_some_and(|id| !id.is_empty())
            && !std::io::stderr().is_terminal()
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// `"device:inode"` in decimal.
#[cfg(unix)]
fn parse_journal_stream(text: &str) -> Option<(u64, u64)> {
    let (dev, ino) = text.split_once(':')?;
    Some((dev.trim().parse().ok()?, ino.trim().parse().ok()?))
}

/// Device and inode of stderr.
#[cfg(unix)]
fn stderr_identity() -> Option<(u64, u64)> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a `stat`; fd 2 may be closed, and then fstat fails.
    if unsafe { libc::fstat(libc::STDERR_FILENO, &mut stat) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // the widths vary by target
    Some((stat.st_dev as u64, u64::from(stat.st_ino)))
}

/// The syslog priority journald reads from a `<N>` line prefix (`sd-daemon(3)`).
pub fn syslog_priority(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::ERROR => 3, // LOG_ERR
        tracing::Level::WARN => 4,  // LOG_WARNING
        tracing::Level::INFO => 6,  // LOG_INFO
        _ => 7,                     // LOG_DEBUG (debug, trace)
    }
}

/// The prefix for a line written to stderr outside `tracing` (a fatal error in `main`):
/// `<3>` (error) when [`logs_to_journal`], else nothing.
pub fn error_prefix(journal: bool) -> &'static str {
    if journal {
        "<3>"
    } else {
        ""
    }
}

/// A log format for the journal: the line of the format it wraps, with a `<N>` priority prefix
/// on *every* line, so a message that spans lines keeps its priority.
///
/// [`JournalFormat::text`] is the usual line without timestamp or colours (the journal keeps
/// its own time); [`JournalFormat::json`] is the same JSON object as off the journal, timestamp
/// included, so that a collector reading `journalctl -o cat` gets one schema either way.
#[derive(Debug)]
pub struct JournalFormat<F> {
    inner: F,
}

/// The human line, without timestamp or colours.
type TextLine = tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, ()>;

/// One JSON object (see [`json_format`]).
type JsonLine = tracing_subscriber::fmt::format::Format<
    tracing_subscriber::fmt::format::Json,
    tracing_subscriber::fmt::time::SystemTime,
>;

impl JournalFormat<TextLine> {
    /// The human line, for `log-format = "text"`.
    pub fn text() -> Self {
        JournalFormat {
            inner: tracing_subscriber::fmt::format()
                .without_time()
                .with_ansi(false),
        }
    }
}

impl JournalFormat<JsonLine> {
    /// The JSON object of [`json_format`], for `log-format = "json"`. The subscriber must record
    /// fields with `JsonFields` (`.fmt_fields(JsonFields::new())`): the JSON format reads the
    /// spans' recorded fields back as JSON.
    pub fn json() -> Self {
        JournalFormat {
            inner: json_format(),
        }
    }
}

/// The JSON object of one event, for `log-format = "json"`: `timestamp`, `level`, `fields`
/// (the message as `fields.message`), `target`, and, inside a span, `span` (the innermost) and
/// `spans` (root to leaf).
///
/// The event's fields stay under `fields` rather than flattened into the object: several
/// events have a field named `target` (the lock's URL), which would collide with the
/// module path that `target` holds.
pub fn json_format() -> JsonLine {
    tracing_subscriber::fmt::format()
        .json()
        .flatten_event(false)
        .with_current_span(true)
        .with_span_list(true)
        .with_ansi(false)
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        let priority = syslog_priority(*event.metadata().level());
        for part in line.lines() {
            writeln!(writer, "<{priority}>{part}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn watchdog_is_half_the_period_and_only_for_our_pid() {
        let ours = std::process::id().to_string();
        assert_eq!(
            watchdog_interval(Some("400000"), None),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some(&ours)),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(Some("400000"), Some("1")), None);
        assert_eq!(watchdog_interval(Some("0"), None), None);
        assert_eq!(watchdog_interval(Some("soon"), None), None);
        assert_eq!(watchdog_interval(None, None), None);
    }

    #[cfg(unix)]
    #[test]
    fn only_a_listening_unix_stream_socket_is_accepted() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.path().join("l.sock")).unwrap();
        check_listening_unix_stream(listener.as_raw_fd()).unwrap();

        let datagram = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let err = check_listening_unix_stream(datagram.as_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not a stream socket"), "{err}");
        let (stream, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = check_listening_unix_stream(stream.as_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not listening"), "{err}");
        let file = std::fs::File::open(dir.path()).unwrap();
        let err = check_listening_unix_stream(file.as_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn journal_stream_is_device_colon_inode() {
        assert_eq!(parse_journal_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_journal_stream("8"), None);
        assert_eq!(parse_journal_stream("x:1"), None);
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(syslog_priority(tracing::Level::ERROR), 3);
        assert_eq!(syslog_priority(tracing::Level::WARN), 4);
        assert_eq!(syslog_priority(tracing::Level::INFO), 6);
        assert_eq!(syslog_priority(tracing::Level::DEBUG), 7);
        assert_eq!(syslog_priority(tracing::Level::TRACE), 7);
    }

    /// What a subscriber wrote, shared with the test that reads it.
    #[derive(Clone, Default)]
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_of_a_journal_record_carries_its_priority() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .event_format(JournalFormat::text())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "vfslockd", "first line\nsecond line");
            tracing::info!(target: "vfslockd", held = 2, "serving");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("<4>") && lines[0].contains("first line"),
            "{text}"
        );
        assert_eq!(lines[1], "<4>second line", "{text}");
        assert!(
            lines[2].starts_with("<6>") && lines[2].contains("held=2"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "colours in {text:?}");
    }

    #[test]
    fn a_json_journal_record_is_one_object_after_its_priority_with_its_spans() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JournalFormat::json())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let _session = tracing::info_span!("session", id = 7).entered();
            tracing::warn!(target: "vfslockd", target = "mem:///x", "first line\nsecond line");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "a newline in a message stays inside its string: {text}"
        );
        let object: serde_json::Value = serde_json::from_str(
            lines[0]
                .strip_prefix("<4>")
                .unwrap_or_else(|| panic!("no <4> prefix: {text}")),
        )
        .unwrap();
        assert_eq!(object["level"], "WARN", "{text}");
        assert_eq!(object["target"], "vfslockd", "{text}");
        assert_eq!(
            object["fields"]["message"], "first line\nsecond line",
            "{text}"
        );
        assert_eq!(object["fields"]["target"], "mem:///x", "{text}");
        assert!(object["timestamp"].is_string(), "{text}");
        assert_eq!(object["span"]["name"], "session", "{text}");
        assert_eq!(object["span"]["id"], 7, "{text}");
        assert_eq!(object["spans"][0]["name"], "session", "{text}");
    }
}
