//! `vfslockctl run`: `flock(1)` for vfslock targets, so shell scripts and cron jobs can take a
//! lock that other vfslock and Go-library users respect, on any store the daemon serves.
//!
//! The lock is held by this process's connection to the daemon, and the daemon releases it
//! only when every copy of that connection's socket is closed. The command therefore inherits
//! the socket (its `FD_CLOEXEC` flag is cleared in the child only): killing `vfslockctl` alone,
//! even with SIGKILL, leaves the lock held until the command ends too. `-o` opts out, for
//! commands that start long-lived background processes which must not keep the lock.
//!
//! Decisions the flock(1) model leaves open:
//! - `-n` and `-w` exclude each other (a usage error) rather than the last one winning.
//! - Several targets are taken together, all or none (`Client::lock_all`: in the daemon's key
//!   order, one wait timeout for the set, and what was taken released when one cannot be).
//!   With several targets `--` is required: everything before the first `--` is a target. A
//!   single target may still be followed directly by its command; a command that itself
//!   contains `--` then needs a `--` right after the target.
//! - If the lease is lost while the command runs (lock file stolen or broken, renewal failed
//!   until its deadline, daemon stopped), a warning goes to stderr and the command gets
//!   SIGTERM (`--on-loss SIGNAL` chooses another signal, `--on-loss none` lets it run on);
//!   `run` still exits with the command's status. With several targets, a lease lost on any
//!   one of them counts for the whole set. The command finds its fencing token in
//!   `$VFSLOCK_TOKEN` (one target), to hand to whatever the lock protects; for every target,
//!   also in `$VFSLOCK_TOKEN_<i>` with `$VFSLOCK_TARGET_<i>` (i from 1, in the order given)
//!   and `$VFSLOCK_TARGET_COUNT`.
//! - `--max-hold D` ends the lease after D even while the command runs: the daemon releases
//!   the lock and the command gets the `--on-loss` signal, as for any other loss.
//! - When vfslockd goes away while the command runs (a crash, a restart, an upgrade), the
//!   client library resumes the lock by itself and the command runs on untouched. One line on
//!   stderr says that vfslockd went away and the lock waits to be resumed, one more that it
//!   restarted and whether the lock was resumed or lost (a lost one then gets the `--on-loss`
//!   treatment as above). Each event is logged once, as it happens ([`vfslock::ClientEvent`]).
//! - A release that fails after the command ended is reported on stderr but does not change
//!   the exit status: the daemon frees the lock anyway when this process exits and closes the
//!   connection.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use clap::Args;
use vfslock::{Client, ErrorKind, LockOptions};

use super::Failure;
use crate::duration;

/// Environment variable naming the locked target, as given, for the command.
#[cfg(unix)]
pub(super) const TARGET_ENV: &str = "VFSLOCK_TARGET";

/// Environment variable carrying the holding's fencing token, for the command.
#[cfg(unix)]
pub(super) const TOKEN_ENV: &str = "VFSLOCK_TOKEN";

/// Environment variable with the number of targets; `VFSLOCK_TARGET_<i>` and
/// `VFSLOCK_TOKEN_<i>` name each, from 1, in the order given.
#[cfg(unix)]
pub(super) const COUNT_ENV: &str = "VFSLOCK_TARGET_COUNT";

/// What to do to the command when the lease is lost while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OnLoss {
    /// Send this signal.
    Signal(i32),
    /// Let it run on (only warn).
    Nothing,
}

fn parse_on_loss(text: &str) -> Result<OnLoss, String> {
    let name = text.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    #[cfg(unix)]
    let signal = match name {
        "NONE" | "IGNORE" => return Ok(OnLoss::Nothing),
        "TERM" => libc::SIGTERM,
        "KILL" => libc::SIGKILL,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        _ => {
            return Err(format!(
                "`{text}` is not one of TERM, KILL, INT, HUP, USR1, USR2, none"
            ))
        }
    };
    #[cfg(not(unix))]
    let signal = match name {
        "NONE" | "IGNORE" => return Ok(OnLoss::Nothing),
        _ => 15,
    };
    Ok(OnLoss::Signal(signal))
}

/// Arguments of `vfslockctl run`.
#[derive(Args, Debug)]
pub(super) struct RunArgs {
    /// Fail at once if the lock is held instead of waiting.
    #[arg(short = 'n', long = "nonblock", alias = "nonblocking", alias = "nb")]
    nonblock: bool,
    /// Wait at most DURATION for the lock (300ms, 30s, 5m; a bare number is seconds; 0 is the
    /// same as --nonblock). Default: wait as long as it takes.
    #[arg(
        short = 'w',
        long = "timeout",
        alias = "wait",
        value_name = "DURATION",
        value_parser = duration::parse,
        conflicts_with = "nonblock"
    )]
    timeout: Option<Duration>,
    #[command(flatten)]
    conflict: super::ConflictCode,
    /// What to do to the command when the lease is lost while it runs: a signal to send
    /// (TERM, KILL, INT, HUP, USR1, USR2) or `none` to let it run on.
    #[arg(long = "on-loss", value_name = "SIGNAL", default_value = "TERM", value_parser = parse_on_loss)]
    pub(super) on_loss: OnLoss,
    /// Do not pass the lock on to the command: it is then released as soon as vfslockctl
    /// exits or is killed, even while the command still runs.
    #[arg(short = 'o', long = "close")]
    close: bool,
    /// Lease length, renewed while the lock is held (0: never expires). Default: the daemon's.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    ttl: Option<Duration>,
    /// Owner id written into the lock file.
    #[arg(long, value_name = "ID")]
    owner: Option<String>,
    /// End the lease after DURATION even while the command runs (the command then gets the
    /// --on-loss signal). Default: the daemon's max-hold, if it has one.
    #[arg(long = "max-hold", value_name = "DURATION", value_parser = duration::parse)]
    max_hold: Option<Duration>,
    #[command(flatten)]
    mode: super::mode::ModeArgs,
    /// Run COMMAND with `sh -c`, as flock(1)'s -c does: `run data.csv -c 'sort data.csv'`.
    /// Every word is then a target.
    #[arg(short = 'c', long = "command", value_name = "COMMAND")]
    shell_command: Option<OsString>,
    /// The files to lock (a path, relative to the working directory or absolute,
    /// file:///path, mem:///path, s3://bucket/key, ...), then the command to run while holding
    /// them, and its arguments. With several targets, `--` ends them.
    #[arg(
        value_name = "TARGET.. CMD",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    words: Vec<OsString>,
}

impl RunArgs {
    /// The targets and the command: everything before the first `--` after the first word
    /// is a target; without one, the first word is the only target. With `-c` every word is
    /// a target, and the command is `sh -c COMMAND`; flock(1)'s `TARGET -c COMMAND`, with
    /// `-c` after the target, means the same.
    fn split(&self) -> Result<(Vec<String>, Vec<OsString>), Failure> {
        let words = &self.words;
        let flock_form = words.len() == 3 && (words[1] == "-c" || words[1] == "--command");
        let shell = |command: &OsString| vec!["sh".into(), "-c".into(), command.clone()];
        let (targets, command) = if let Some(string) = &self.shell_command {
            let targets = match words.iter().position(|w| w == "--") {
                Some(at) if at + 1 < words.len() => {
                    return Err(Failure::new(
                        super::EXIT_USAGE,
                        "give the command either with -c or after the targets, not both",
                    ))
                }
                Some(at) => &words[..at],
                None => &words[..],
            };
            (targets, shell(string))
        } else if flock_form {
            (&words[..1], shell(&words[2]))
        } else {
            let split_at = words.iter().skip(1).position(|w| w == "--");
            let (targets, command) = match split_at {
                Some(at) => (&words[..=at], &words[at + 2..]),
                None => (&words[..1], &words[1..]),
            };
            (targets, command.to_vec())
        };
        if targets.is_empty() {
            return Err(Failure::new(
                super::EXIT_USAGE,
                "no target to lock: give one before the command",
            ));
        }
        if command.is_empty() {
            return Err(Failure::new(
                super::EXIT_USAGE,
                "no command to run: give one after the target(s), e.g. `vfslockctl run /srv/a \
                 /srv/b -- ./job.sh`",
            ));
        }
        let targets = targets
            .iter()
            .map(|t| {
                t.to_str().map(str::to_owned).ok_or_else(|| {
                    Failure::new(
                        super::EXIT_USAGE,
                        format!("the target {} is not UTF-8", t.to_string_lossy()),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((targets, command))
    }
}

/// Takes the lock (every lock, for several targets), runs the command holding it, releases
/// it, and returns the command's status.
pub(super) async fn run(socket: &Path, args: RunArgs) -> Result<u8, Failure> {
    let (targets, command) = args.split()?;
    let client = Client::connect(socket).await?;
    // Subscribed before anything is held, so that no outage goes unheard.
    let mut events = client.events();
    let mut options = LockOptions::default();
    if let Some(ttl) = args.ttl {
        options = options.ttl(ttl);
    }
    if let Some(owner) = &args.owner {
        options = options.owner_id(owner.clone());
    }
    if let Some(max_hold) = args.max_hold {
        options = options.max_hold(max_hold);
    }
    options = match args.mode.mode() {
        vfslock::LockMode::Exclusive => options,
        vfslock::LockMode::Shared => options.shared(),
        vfslock::LockMode::Slots(n) => options.slots(n),
    };
    let (options, waits) = match args.timeout {
        _ if args.nonblock => (options, false),
        Some(timeout) if timeout.is_zero() => (options, false),
        Some(timeout) => (options.wait_timeout(timeout), true),
        None => (options.wait_forever(), true),
    };
    // A waiting run on a terminal shows where it stands until the lock is taken.
    let (options, progress) = if waits {
        super::progress::Progress::on_terminal(options)
    } else {
        (options, None)
    };
    let taken = client.lock_all(targets.iter().cloned(), options).await;
    if let Some(progress) = progress {
        progress.done();
    }
    let mut set = match taken {
        Ok(set) => set,
        Err(e) => return Err(conflict(e, &args, targets.len())),
    };
    let outcome = platform::run_child(&client, &set, &mut events, &targets, &command, &args).await;
    match set.release().await {
        Ok(()) => {}
        // Already reported while the command ran.
        Err(e) if e.is_lease_lost() => {}
        Err(e) => eprintln!(
            "vfslockctl: could not release the lock on {}: {e} (vfslockd releases it when \
             vfslockctl exits)",
            targets.join(", ")
        ),
    }
    outcome
}

/// The one stderr line that tells the user of `run` what happened to the daemon, naming each
/// lock by its target as the user gave it; `None` for events that concern nobody here.
#[cfg(unix)]
fn event_line(event: &vfslock::ClientEvent, set: &vfslock::LockSet) -> Option<String> {
    use vfslock::{ClientEvent, LockRef, LostLock};

    let name = |lock: &LockRef| {
        let given = set
            .locks()
            .iter()
            .find(|held| held.lock_id() == Some(lock.lock_id.as_str()))
            .map_or(lock.target.as_str(), |held| held.target());
        format!("the lock on {given}")
    };
    let lost_lines = |lost: &[LostLock]| {
        lost.iter()
            .map(|lost| format!("{} was lost: {}", name(&lost.lock), lost.reason))
            .collect::<Vec<_>>()
    };
    let mut parts = Vec::new();
    match event {
        // Nothing of ours waits to be resumed: the loss of the lock, reported on its own line,
        // says all there is to say.
        ClientEvent::DaemonGone { resuming, .. } if resuming.is_empty() => return None,
        ClientEvent::DaemonGone { resuming, deadline } => {
            let names = resuming.iter().map(name).collect::<Vec<_>>().join(", ");
            let left = deadline
                .map(|d| d.saturating_duration_since(std::time::Instant::now()))
                .unwrap_or_default();
            parts.push(format!(
                "vfslockd went away; resuming {names} if it is back within {:.1}s",
                left.as_secs_f64()
            ));
        }
        ClientEvent::DaemonRestarted { resumed, lost } => {
            parts.push("vfslockd restarted".to_owned());
            parts.extend(
                resumed
                    .iter()
                    .map(|lock| format!("{} was resumed (lock id {})", name(lock), lock.lock_id)),
            );
            parts.extend(lost_lines(lost));
        }
        ClientEvent::NotRestartedInTime { lost } => {
            parts.push("vfslockd did not come back in time".to_owned());
            parts.extend(lost_lines(lost));
        }
        ClientEvent::Missed { count } => {
            parts.push(format!(
                "missed {count} events about the connection to vfslockd"
            ));
        }
        _ => return None,
    }
    Some(format!("vfslockctl: {}", parts.join("; ")))
}

/// Turns a lost race for the lock into the conflict exit code; other errors keep theirs.
fn conflict(e: vfslock::Error, args: &RunArgs, targets: usize) -> Failure {
    match e.kind() {
        // The daemon's messages already name `vfslockctl show`.
        ErrorKind::AlreadyHeld | ErrorKind::Timeout | ErrorKind::ModeConflict => {
            Failure::new(args.conflict.code, e.message())
        }
        ErrorKind::InvalidTarget if targets > 1 => Failure::new(
            super::EXIT_USAGE,
            format!(
                "{} (with several targets, every word before the first `--` is a target; to \
                 run a command that contains `--` under one target, write `vfslockctl run \
                 TARGET -- CMD..`)",
                e.message()
            ),
        ),
        _ => e.into(),
    }
}

#[cfg(unix)]
mod platform {
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::ExitStatus;

    use std::ffi::OsString;

    use tokio::process::{Child, Command};
    use tokio::signal::unix::{signal, Signal, SignalKind};
    use vfslock::{Client, Events, LockSet};

    use super::{event_line, OnLoss, RunArgs, COUNT_ENV, TARGET_ENV, TOKEN_ENV};
    use crate::ctl::{Failure, EXIT_SOFTWARE};

    /// Shell conventions (POSIX `sh`, `env(1)`) for a command that could not be started.
    const EXIT_CANNOT_EXECUTE: u8 = 126;
    const EXIT_NOT_FOUND: u8 = 127;

    /// Signals that ask the job to stop; the command decides how, so they go to it.
    const FORWARDED: [(SignalKind, libc::c_int); 3] = [
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::hangup(), libc::SIGHUP),
    ];

    /// Runs the command while `set` is held and returns its exit status as our exit code.
    pub(super) async fn run_child(
        client: &Client,
        set: &LockSet,
        events: &mut Events,
        targets: &[String],
        command_words: &[OsString],
        args: &RunArgs,
    ) -> Result<u8, Failure> {
        // Installed before the child exists, so a signal sent as soon as it runs is not lost
        // (nor kills us, which would leave the command running unsupervised).
        let mut signals = Vec::with_capacity(FORWARDED.len());
        for (kind, number) in FORWARDED {
            let stream = signal(kind)
                .map_err(|e| Failure::software(format!("cannot handle signals: {e}")))?;
            signals.push((stream, number));
        }
        let (program, rest) = command_words.split_first().expect("split checked CMD");
        let mut command = Command::new(program);
        command.args(rest);
        let token_of = |target: &str| set.get(target).and_then(|lock| lock.token());
        if let [target] = targets {
            command.env(TARGET_ENV, target);
            if let Some(token) = token_of(target) {
                command.env(TOKEN_ENV, token.to_string());
            }
        }
        command.env(COUNT_ENV, targets.len().to_string());
        for (i, target) in targets.iter().enumerate() {
            command.env(format!("{TARGET_ENV}_{}", i + 1), target);
            if let Some(token) = token_of(target) {
                command.env(format!("{TOKEN_ENV}_{}", i + 1), token.to_string());
            }
        }
        if !args.close {
            let fd = client.as_raw_fd();
            // SAFETY: runs between fork and exec, where only async-signal-safe calls are
            // allowed; fcntl is one. `fd` stays open in the parent for as long as `client`
            // lives, which spans the spawn, so the child's copy is the same connection.
            unsafe {
                command.pre_exec(move || {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().map_err(|e| {
            Failure::new(
                spawn_exit_code(&e),
                format!("cannot run `{}`: {e}", program.to_string_lossy()),
            )
        })?;
        let what = match targets {
            [target] => format!("the lock on {target}"),
            _ => format!("a lock of the set ({})", targets.join(", ")),
        };
        let status = supervise(&mut child, set, events, &mut signals, &what, args.on_loss)
            .await
            .map_err(|e| Failure::software(format!("cannot wait for the command: {e}")))?;
        Ok(exit_code(status))
    }

    /// Waits for the child, passing on the stop signals we receive; if the lock is lost
    /// meanwhile, warns once and sends the child the `--on-loss` signal. What happens to the
    /// daemon meanwhile is logged, one line per event.
    async fn supervise(
        child: &mut Child,
        set: &LockSet,
        events: &mut Events,
        signals: &mut [(Signal, libc::c_int)],
        what: &str,
        on_loss: OnLoss,
    ) -> std::io::Result<ExitStatus> {
        // The pid cannot be reused before `wait` below reaps the child, so signalling it from
        // the other branches always reaches our child (or its zombie, harmlessly).
        let pid = child.id().map(|pid| pid as libc::pid_t);
        let mut lost_reported = false;
        let mut events_open = true;
        let [(int, int_no), (term, term_no), (hup, hup_no)] = signals else {
            unreachable!("three forwarded signals");
        };
        loop {
            let forward = tokio::select! {
                status = child.wait() => return status,
                _ = int.recv() => *int_no,
                _ = term.recv() => *term_no,
                _ = hup.recv() => *hup_no,
                event = events.next(), if events_open => {
                    match event {
                        Some(event) => {
                            if let Some(line) = event_line(&event, set) {
                                eprintln!("{line}");
                            }
                        }
                        None => events_open = false,
                    }
                    continue;
                }
                reason = set.lost(), if !lost_reported => {
                    lost_reported = true;
                    match on_loss {
                        OnLoss::Nothing => {
                            eprintln!(
                                "vfslockctl: lost {what} while the command runs: {reason}"
                            );
                            continue;
                        }
                        OnLoss::Signal(number) => {
                            eprintln!(
                                "vfslockctl: lost {what} while the command runs: {reason}; \
                                 sending it signal {number}"
                            );
                            number
                        }
                    }
                }
            };
            if let Some(pid) = pid {
                // SAFETY: plain syscall on our own, not yet reaped, child.
                unsafe { libc::kill(pid, forward) };
            }
        }
    }

    fn spawn_exit_code(e: &std::io::Error) -> u8 {
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ENAMETOOLONG) => EXIT_NOT_FOUND,
            // Failing to fork is our failure, not the command's.
            Some(libc::EAGAIN | libc::ENOMEM) => EXIT_SOFTWARE,
            _ => EXIT_CANNOT_EXECUTE,
        }
    }

    fn exit_code(status: ExitStatus) -> u8 {
        match (status.code(), status.signal()) {
            // An exit code is 0..=255 on Unix, so the conversion only guards the type.
            (Some(code), _) => u8::try_from(code).unwrap_or(EXIT_SOFTWARE),
            (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(EXIT_SOFTWARE),
            (None, None) => EXIT_SOFTWARE,
        }
    }
}

#[cfg(not(unix))]
mod platform {
    use std::ffi::OsString;

    use vfslock::{Client, Events, LockSet};

    use super::RunArgs;
    use crate::ctl::Failure;

    /// Handing the connection to a child and forwarding signals are Unix mechanisms.
    pub(super) async fn run_child(
        _client: &Client,
        _set: &LockSet,
        _events: &mut Events,
        _targets: &[String],
        _command: &[OsString],
        _args: &RunArgs,
    ) -> Result<u8, Failure> {
        Err(Failure::software(
            "`vfslockctl run` is only available on Unix for now",
        ))
    }
}
