//! `vfslockctl`: the shell's and the operator's way into `vfslockd`, so that scripts can lock
//! files the way they use `flock(1)` and people can see who holds what without writing code.
//!
//! Every command is a small module over the `vfslock` client library; this module owns what
//! they share: argument parsing, the runtime, exit codes and how failures are reported.
//!
//! # Commands
//!
//! | command | does |
//! |---------|------|
//! | `run [-n \| -w DURATION] [-E CODE] [-o] [--ttl DURATION] [--owner ID] [-s \| --slots N] [--max-hold DURATION] TARGET [--] CMD [ARGS..]` | runs CMD holding the lock on TARGET ([`run`]) |
//! | `run [OPTIONS] TARGET -c STRING`, `run [OPTIONS] -c STRING TARGET..` | runs STRING with `sh -c` holding the lock(s) ([`run`]) |
//! | `run [OPTIONS] TARGET TARGET.. -- CMD [ARGS..]` | runs CMD holding the locks on every TARGET, taken all or none ([`run`]) |
//! | `status` | the daemon's identity, uptime, stores, counters and restarts ([`status`]) |
//! | `metrics` | the daemon's metrics in the Prometheus text format, as its listener serves them |
//! | `top [--once] [-n N]` | the most contended targets, their holders and the daemon's rates, live ([`top`]) |
//! | `list [--target PREFIX]` | locks held and queued through this daemon ([`list`]) |
//! | `show TARGET` | TARGET's lock file, whoever wrote it ([`show`]) |
//! | `wait [-w DURATION] [-E CODE] TARGET` | returns once TARGET is not held, without taking it ([`wait`]) |
//! | `break TARGET [--reason TEXT]` | removes any holder's lock; root or the admin group only ([`break_lock`]) |
//! | `acquire TARGET --ttl DURATION [--owner ID] [-w DURATION]` | takes a detached lease, prints its lock id and token ([`lease`]) |
//! | `release TARGET --lock-id ID` | ends a detached lease ([`lease`]) |
//! | `renew TARGET --lock-id ID [--ttl DURATION]` | extends a detached lease ([`lease`]) |
//! | `completions SHELL`, `man [SUBCOMMAND \| --out-dir DIR]` | shell completions and man pages ([`docs`]) |
//!
//! Global options: `--socket PATH` (default: `$VFSLOCK_SOCKET`, else the system daemon's
//! socket if it exists, else the user's) and `--json` (machine output of `status`, `list` and
//! `show`; `run` ignores it).
//!
//! # Exit codes
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | done |
//! | 1 | the lock is held, held in a mode that cannot be shared with the one asked for, or the wait for it timed out (`run`, `wait`; `-E` changes it); the target is not locked (`show`) |
//! | 2 | usage error |
//! | 69 | no daemon answers at the socket (`EX_UNAVAILABLE`) |
//! | 70 | any other failure (`EX_SOFTWARE`) |
//!
//! `run` otherwise exits with its command's status: the command's exit code, 128+N when it
//! died of signal N, 126 when it exists but cannot be executed, 127 when it is not found.
//!
//! Every failure prints one line on stderr starting with `vfslockctl: ` that names the fix
//! where there is one. Usage errors print clap's explanation and usage after that line.
//!
//! # JSON output
//!
//! Field names are part of the interface and only ever get added to. Times are RFC 3339
//! strings, durations are seconds as numbers, and unknown values are `null`.
//!
//! `status` prints one object: `socket`, `daemon_version`, `protocol_version`, `pid`,
//! `hostname`, `instance_id`, `uptime_seconds`, `stores` (array of `{scheme, description,
//! counters}`, `counters` an object of request counts by operation for object stores),
//! `held`, `waiting`, `sessions`, `targets`, `restarts` (how often the daemon restarted after a
//! crash or as planned) and `last_restart`: `null` when the daemon's latest start was no
//! restart, else `{planned, kept, resumed, lost, requeued, window_open_seconds}`
//! (`window_open_seconds` is `null` once the resume window has closed). Both are `null` from a
//! daemon older than protocol 7.
//!
//! `list` prints an array (`[]` when nothing is held or queued) of objects: `target`
//! (normalized URL), `lock_id`, `pid`, `uid`, `owner_id`, `age_seconds`, `ttl_seconds`
//! (0: never expires), `token`, `waiters`, `mode` (`"exclusive"`, `"shared"` or `"slots"`),
//! `slots` (N for a semaphore, else `null`) and `holders` (how many clients of this daemon
//! hold it; the other holder fields are the first one's), `oldest_wait_seconds` (how long the
//! longest waiter here has waited; `null` without waiters) and `foreign_holder` (the last
//! holder this daemon read in the lock file from elsewhere: `{hostname, pid, owner_id,
//! lock_id, seen_for_seconds, last_seen_seconds}`, else `null`; both `null` from a daemon
//! older than protocol 9). The holder's fields are `null` for a target that only has waiters
//! (its holder is outside this daemon).
//!
//! `top --json` prints one object: `hostname`, `daemon_version`, `pid`, `held`, `waiting`,
//! `sessions`, `interval_seconds` (between the two looks its rates are taken over),
//! `acquisitions_per_second` (`null` without metrics), `stores` (array of `{store,
//! requests_per_second, mean_latency_seconds, errors_per_second}`), `targets` (the most
//! contended first, at most `-n`: `{target, waiters, oldest_wait_seconds, mode, slots,
//! holders, holder}`, `holder` being `{hostname, pid, owner_id, held_for_seconds, here}` or
//! `null`) and `more_targets` (how many were left out).
//!
//! `show` prints one object: `target` (as given) and `locked`; when `locked` is true also
//! `format` (`"vfslock"`, `"go"`, `"foreign"` or `"corrupt"`), `format_version` (vfslock
//! files only), `hostname`, `pid`, `owner_id`, `created_at`, `acquired_at` (vfslock files
//! only), `age_seconds`, `ttl_seconds` (0: never expires; negative: already stale, as the Go
//! library reads it), `never_expires`, `expires_at`, `stale`, `lock_id`, `daemon_id`, `token`,
//! `uid`, `detached`, `mode` and `slots` (as in `list`), and `holders`: an array of
//! `{lock_id, hostname, pid, owner_id, uid, token, expires_at, never_expires, slots_taken,
//! detached, local, expired}`, one per holder the lock file lists (one for an exclusive
//! file; this daemon's own entry of a shared lock shown as its local holders). The top-level
//! fields are the file's as a whole, as a Go peer reads them.
//!
//! `wait --json` prints `{target, released, waited_seconds}` once the target is not held.
//!
//! `acquire` prints `{target, lock_id, token, ttl_seconds}`; `release` prints `{target,
//! lock_id, released}`; `renew` prints `{target, lock_id, ttl_seconds, expires_at}`; `break`
//! prints `{target, broken, hostname, pid, owner_id, lock_id}`.

mod break_lock;
mod docs;
mod lease;
mod list;
mod mode;
mod output;
mod progress;
mod run;
mod show;
mod status;
mod top;
mod wait;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vfslock::{Client, ErrorKind};

/// Exit code of `run` when the lock is held or the wait for it timed out (unless `-E`).
pub const EXIT_CONFLICT: u8 = 1;
/// Exit code of `show` when the target has no lock file.
pub const EXIT_NOT_LOCKED: u8 = 1;
/// Exit code of a usage error, as clap and most tools use it.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when no daemon answers (`sysexits.h`'s `EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code of every other failure (`sysexits.h`'s `EX_SOFTWARE`).
pub const EXIT_SOFTWARE: u8 = 70;

/// Admin and shell tool of vfslockd: run commands under a lock, inspect locks and the daemon.
#[derive(Parser, Debug)]
#[command(name = "vfslockctl", version)]
struct Cli {
    /// The daemon's socket. Default: $VFSLOCK_SOCKET, else /run/vfslock/vfslockd.sock if it
    /// exists, else $XDG_RUNTIME_DIR/vfslock/vfslockd.sock.
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print machine-readable JSON (status, list, show).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a command while holding the lock on TARGET, like flock(1).
    ///
    /// Waits for the lock as long as it takes unless -n or -w is given. With several targets
    /// (ended by `--`), takes every one or none, in an order that cannot deadlock, -w covering
    /// the whole set. The command inherits the lock: it stays held until the command ends,
    /// even if vfslockctl itself is killed (unless -o). SIGINT, SIGTERM and SIGHUP are passed
    /// on to the command. Exits with the command's status; 1 (or -E CODE) when a lock is held
    /// or the wait timed out.
    #[command(
        override_usage = "vfslockctl run [OPTIONS] TARGET [--] CMD [ARGS]...\n       \
                          vfslockctl run [OPTIONS] TARGET TARGET... -- CMD [ARGS]..."
    )]
    Run(run::RunArgs),
    /// Show the daemon's version, identity, uptime, stores and counters.
    Status,
    /// Print the daemon's metrics in the Prometheus text format (0.0.4), as its metrics
    /// listener serves them: for a node exporter's textfile collector, or a look without a
    /// port.
    Metrics,
    /// List the locks held and queued through this daemon.
    List(list::ListArgs),
    /// Watch the most contended targets (most waiters, longest waits), their holders, queue
    /// depth, and the daemon's request rate and store latency, refreshed every second; q
    /// quits. --once prints one frame, --json one JSON document.
    Top(top::TopArgs),
    /// Show TARGET's lock file, whoever wrote it; exits 1 when TARGET is not locked.
    Show(show::ShowArgs),
    /// Return as soon as TARGET is not held (at once if it is free), without taking it: to
    /// run after another job. Exits 1 (or -E CODE) when -w runs out first.
    Wait(wait::WaitArgs),
    /// Remove whoever holds TARGET's lock (root or the daemon's admin group only); the break
    /// is logged with who and why, and a holder served by a vfslockd learns its lease is lost.
    Break(break_lock::BreakArgs),
    /// Take a detached lease for scripts: it outlives this command and belongs to your uid and
    /// the printed lock id; it lasts --ttl unless renewed or released.
    Acquire(lease::AcquireArgs),
    /// End a detached lease by its lock id (your own, or any as an admin).
    Release(lease::LeaseArgs),
    /// Extend a detached lease by its TTL (or --ttl) from now.
    Renew(lease::LeaseArgs),
    /// Print the completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of vfslockctl, or of one subcommand.
    Man {
        /// A subcommand, for its own page.
        #[arg(conflicts_with = "out_dir")]
        subcommand: Option<String>,
        /// Write every page instead, vfslockctl.1 and one vfslockctl-SUBCOMMAND.1 per
        /// subcommand, into DIR (for a package).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<std::path::PathBuf>,
    },
}

/// `-E CODE` of `run` and `wait`: the exit code when the lock is held or the wait timed out.
#[derive(clap::Args, Debug)]
struct ConflictCode {
    /// Exit code when the lock is held or the wait times out.
    #[arg(
        short = 'E',
        long = "conflict-exit-code",
        value_name = "CODE",
        default_value_t = EXIT_CONFLICT
    )]
    code: u8,
}

/// Why a command failed: the line for stderr and the exit code.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    fn software(message: impl Into<String>) -> Self {
        Failure::new(EXIT_SOFTWARE, message)
    }
}

impl From<vfslock::Error> for Failure {
    fn from(e: vfslock::Error) -> Self {
        let code = match e.kind() {
            ErrorKind::DaemonUnavailable => EXIT_UNAVAILABLE,
            ErrorKind::AlreadyHeld | ErrorKind::Timeout => EXIT_CONFLICT,
            _ => EXIT_SOFTWARE,
        };
        Failure::new(code, e.message())
    }
}

/// Runs `vfslockctl` with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage(e),
    };
    // One thread suffices: the only concurrency is `run` waiting for its child while it
    // forwards signals, which one `select!` does.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("vfslockctl: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_SOFTWARE);
        }
    };
    let socket = cli
        .socket
        .unwrap_or_else(vfslock::socket::client_default_socket_path);
    match runtime.block_on(dispatch(cli.command, &socket, cli.json)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            // Daemon messages are written as one line; a stray newline must not break the
            // "one line per failure" promise scripts may grep on.
            eprintln!("vfslockctl: {}", failure.message.replace('\n', " "));
            ExitCode::from(failure.code)
        }
    }
}

async fn dispatch(command: Command, socket: &Path, json: bool) -> Result<u8, Failure> {
    match command {
        Command::Run(args) => run::run(socket, args).await,
        Command::Status => status::status(&Client::connect(socket).await?, json).await,
        Command::Metrics => {
            print!("{}", Client::connect(socket).await?.metrics().await?);
            Ok(0)
        }
        Command::List(args) => list::list(&Client::connect(socket).await?, args, json).await,
        Command::Top(args) => top::top(&Client::connect(socket).await?, args, json).await,
        Command::Show(args) => {
            let target = absolute(args.target)?;
            show::show(&Client::connect(socket).await?, &target, json).await
        }
        Command::Wait(mut args) => {
            args.target = absolute(args.target)?;
            wait::wait(&Client::connect(socket).await?, args, json).await
        }
        Command::Break(mut args) => {
            args.target = absolute(args.target)?;
            break_lock::break_lock(&Client::connect(socket).await?, args, json).await
        }
        Command::Acquire(args) => lease::acquire(&Client::connect(socket).await?, args, json).await,
        Command::Release(mut args) => {
            args.target = absolute(args.target)?;
            lease::release(&Client::connect(socket).await?, args, json).await
        }
        Command::Renew(mut args) => {
            args.target = absolute(args.target)?;
            lease::renew(&Client::connect(socket).await?, args, json).await
        }
        Command::Completions { shell } => docs::completions(shell),
        Command::Man {
            subcommand,
            out_dir,
        } => match out_dir {
            Some(dir) => docs::man_pages_to(&dir),
            None => docs::man(subcommand.as_deref()),
        },
    }
}

/// `target` with a relative path made absolute against the working directory, as the client
/// library sends it ([`vfslock::resolve_target`]), so that what is printed is what is locked.
fn absolute(target: String) -> Result<String, Failure> {
    match vfslock::resolve_target(&target) {
        Ok(std::borrow::Cow::Owned(absolute)) => Ok(absolute),
        Ok(std::borrow::Cow::Borrowed(_)) => Ok(target),
        // As any target the daemon refuses.
        Err(e) => Err(e.into()),
    }
}

/// Reports a parse failure. Help and version are not failures; everything else exits 2 with
/// clap's explanation behind our usual prefix.
fn usage(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind as Clap;
    match e.kind() {
        Clap::DisplayHelp | Clap::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        // Bare `vfslockctl`: the help is the most useful answer, but it is still a misuse.
        Clap::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(EXIT_USAGE)
        }
        _ => {
            let text = e.render().to_string();
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            eprint!("vfslockctl: {text}");
            if !text.ends_with('\n') {
                eprintln!();
            }
            ExitCode::from(EXIT_USAGE)
        }
    }
}
