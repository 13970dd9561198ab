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
//! - The command may follow TARGET directly or after `--`.
//! - If the lease is lost while the command runs (lock file stolen or broken, renewal failed
//!   until its deadline, daemon stopped), a warning goes to stderr and the command gets
//!   SIGTERM (`--on-loss SIGNAL` chooses another signal, `--on-loss none` lets it run on);
//!   `run` still exits with the command's status. The command finds its fencing token in
//!   `$VFSLOCK_TOKEN`, to hand to whatever the lock protects.
//! - A release that fails after the command ended is reported on stderr but does not change
//!   the exit status: the daemon frees the lock anyway when this process exits and closes the
//!   connection.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use clap::Args;
use vfslock::{Client, ErrorKind, LockOptions};

use super::{Failure, EXIT_CONFLICT};
use crate::duration;

/// Environment variable naming the locked target, as given, for the command.
#[cfg(unix)]
pub(super) const TARGET_ENV: &str = "VFSLOCK_TARGET";

/// Environment variable carrying the holding's fencing token, for the command.
#[cfg(unix)]
pub(super) const TOKEN_ENV: &str = "VFSLOCK_TOKEN";

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
    /// Exit code when the lock is held or the wait times out.
    #[arg(
        short = 'E',
        long = "conflict-exit-code",
        value_name = "CODE",
        default_value_t = EXIT_CONFLICT
    )]
    conflict_exit_code: u8,
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
    #[command(flatten)]
    mode: super::mode::ModeArgs,
    /// The file to lock: an absolute path, file:///path or mem:///path.
    target: String,
    /// The command to run while holding the lock, and its arguments.
    #[arg(
        value_name = "CMD",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<OsString>,
}

/// Takes the lock, runs the command holding it, releases it, and returns the command's status.
pub(super) async fn run(socket: &Path, args: RunArgs) -> Result<u8, Failure> {
    let client = Client::connect(socket).await?;
    let mut options = LockOptions::default();
    if let Some(ttl) = args.ttl {
        options = options.ttl(ttl);
    }
    if let Some(owner) = &args.owner {
        options = options.owner_id(owner.clone());
    }
    options = match args.mode.mode() {
        vfslock::LockMode::Exclusive => options,
        vfslock::LockMode::Shared => options.shared(),
        vfslock::LockMode::Slots(n) => options.slots(n),
    };
    let mut lock = client.new_lock(args.target.clone(), options);
    let acquired = match args.timeout {
        _ if args.nonblock => lock.acquire().await,
        Some(timeout) if timeout.is_zero() => lock.acquire().await,
        Some(timeout) => lock.acquire_timeout(timeout).await,
        None => lock.acquire_wait().await,
    };
    if let Err(e) = acquired {
        return Err(conflict(e, &args));
    }
    let outcome = platform::run_child(&client, &mut lock, &args).await;
    match lock.release().await {
        Ok(()) => {}
        // Already reported while the command ran.
        Err(e) if e.kind() == ErrorKind::LeaseLost => {}
        Err(e) => eprintln!(
            "vfslockctl: could not release the lock on {}: {e} (vfslockd releases it when \
             vfslockctl exits)",
            args.target
        ),
    }
    outcome
}

/// Turns a lost race for the lock into the conflict exit code; other errors keep theirs.
fn conflict(e: vfslock::Error, args: &RunArgs) -> Failure {
    match e.kind() {
        // The daemon's messages already name `vfslockctl show`.
        ErrorKind::AlreadyHeld | ErrorKind::Timeout | ErrorKind::ModeConflict => {
            Failure::new(args.conflict_exit_code, e.message())
        }
        _ => e.into(),
    }
}

#[cfg(unix)]
mod platform {
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::ExitStatus;

    use tokio::process::{Child, Command};
    use tokio::signal::unix::{signal, Signal, SignalKind};
    use vfslock::{Client, Lock};

    use super::{OnLoss, RunArgs, TARGET_ENV, TOKEN_ENV};
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

    /// Runs the command while `lock` is held and returns its exit status as our exit code.
    pub(super) async fn run_child(
        client: &Client,
        lock: &mut Lock,
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
        let (program, rest) = args.command.split_first().expect("clap requires CMD");
        let mut command = Command::new(program);
        command.args(rest).env(TARGET_ENV, &args.target);
        if let Some(token) = lock.token() {
            command.env(TOKEN_ENV, token.to_string());
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
        let status = supervise(&mut child, lock, &mut signals, &args.target, args.on_loss)
            .await
            .map_err(|e| Failure::software(format!("cannot wait for the command: {e}")))?;
        Ok(exit_code(status))
    }

    /// Waits for the child, passing on the stop signals we receive; if the lock is lost
    /// meanwhile, warns once and sends the child the `--on-loss` signal.
    async fn supervise(
        child: &mut Child,
        lock: &mut Lock,
        signals: &mut [(Signal, libc::c_int)],
        target: &str,
        on_loss: OnLoss,
    ) -> std::io::Result<ExitStatus> {
        // The pid cannot be reused before `wait` below reaps the child, so signalling it from
        // the other branches always reaches our child (or its zombie, harmlessly).
        let pid = child.id().map(|pid| pid as libc::pid_t);
        let mut lost_reported = false;
        let [(int, int_no), (term, term_no), (hup, hup_no)] = signals else {
            unreachable!("three forwarded signals");
        };
        loop {
            let forward = tokio::select! {
                status = child.wait() => return status,
                _ = int.recv() => *int_no,
                _ = term.recv() => *term_no,
                _ = hup.recv() => *hup_no,
                reason = lock.lost(), if !lost_reported => {
                    lost_reported = true;
                    match on_loss {
                        OnLoss::Nothing => {
                            eprintln!(
                                "vfslockctl: lost the lock on {target} while the command runs: \
                                 {reason}"
                            );
                            continue;
                        }
                        OnLoss::Signal(number) => {
                            eprintln!(
                                "vfslockctl: lost the lock on {target} while the command runs: \
                                 {reason}; sending it signal {number}"
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
    use vfslock::{Client, Lock};

    use super::RunArgs;
    use crate::ctl::Failure;

    /// Handing the connection to a child and forwarding signals are Unix mechanisms.
    pub(super) async fn run_child(
        _client: &Client,
        _lock: &mut Lock,
        _args: &RunArgs,
    ) -> Result<u8, Failure> {
        Err(Failure::software(
            "`vfslockctl run` is only available on Unix for now",
        ))
    }
}
