//! The worker process: takes locks on random targets through one daemon, writes to the
//! guarded resource with each holding's fencing token, and records every step. On a store
//! without tokens (`--tokenless`: SFTP) a holding without a token skips the write, and records
//! that it did. In a mixed or semaphore run (`--mode`) it draws each acquisition's mode, records
//! it with the section, and a shared or slot holding does a guarded read instead of the write
//! (why: `resource.rs`).
//!
//! Each record is appended to the log before the next step, so a SIGKILL loses at most the
//! step in progress. SIGTERM lets the current step finish, then the worker stops.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use vfslock::{Client, ErrorKind, LockOptions};

use crate::modes::Mode;
use crate::records::{now_ns, Record, RecordLog};
use crate::resource::ResourceClient;
use crate::Rng;

/// A wait for a lock longer than this is reported as an acquire error (and retried).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

/// Pause before reconnecting to a daemon or the resource that did not answer.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

/// The worker's settings (`mutex_checker worker …`).
#[derive(Clone, Debug)]
pub(crate) struct WorkerArgs {
    /// The daemon's socket.
    pub(crate) socket: PathBuf,
    /// The guarded resource's socket.
    pub(crate) resource: PathBuf,
    /// The directory of the targets `t0` … `t{targets-1}`.
    pub(crate) data: PathBuf,
    /// The targets are `<base>t0` … instead: an object-store URL prefix such as
    /// `s3://locks/mutex-checker-…/`, or `sftp://u@h:p/root/mutex-checker-…-` (files directly
    /// in the SFTP root).
    pub(crate) base: Option<String>,
    /// How many targets.
    pub(crate) targets: usize,
    /// How long each holding lasts.
    pub(crate) hold: Duration,
    /// The lease asked for.
    pub(crate) ttl: Duration,
    /// The record log.
    pub(crate) log: PathBuf,
    /// The worker's identity.
    pub(crate) id: String,
    /// Lock `mem:///mutex-checker/t{i}` instead of the files in `data`: each daemon has a
    /// memory store of its own, so with several daemons this breaks mutual exclusion on
    /// purpose (the checker's self-test).
    pub(crate) mem: bool,
    /// The store grants no fencing tokens (SFTP, create-only mode): a holding without one
    /// skips the resource write (recorded as `write_skipped`) instead of sending a write the
    /// resource must reject.
    pub(crate) tokenless: bool,
    /// How the locks are taken.
    pub(crate) mode: Mode,
}

static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_signal: libc::c_int) {
    TERMINATED.store(true, Ordering::SeqCst);
}

fn install_sigterm_handler() {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler only
    // stores to an atomic, which is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        let rc = libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
        assert_eq!(rc, 0, "sigaction(SIGTERM)");
        // The coordinator starts workers with SIGTERM blocked, so that one sent before this
        // point waits for the handler; let it in now.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        assert_eq!(rc, 0, "pthread_sigmask(SIGTERM)");
    }
}

fn terminated() -> bool {
    TERMINATED.load(Ordering::SeqCst)
}

/// Resolves once SIGTERM has arrived.
async fn termination() {
    while !terminated() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the worker until SIGTERM.
pub(crate) fn main(args: WorkerArgs) -> ExitCode {
    install_sigterm_handler();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(args))
}

async fn run(args: WorkerArgs) -> ExitCode {
    let mut log = match RecordLog::open(&args.log) {
        Ok(log) => log,
        Err(e) => {
            eprintln!(
                "worker {}: cannot open {}: {e}",
                args.id,
                args.log.display()
            );
            return ExitCode::from(2);
        }
    };
    log.append(&Record::Start {
        t: now_ns(),
        client: args.id.clone(),
        pid: std::process::id(),
    });
    let mut rng = Rng::seeded();
    let mut client: Option<Client> = None;
    let mut resource: Option<ResourceClient> = None;
    let targets: Vec<String> = (0..args.targets)
        .map(|i| {
            if args.mem {
                format!("mem:///mutex-checker/t{i}")
            } else if let Some(base) = &args.base {
                format!("{base}t{i}")
            } else {
                args.data
                    .join(format!("t{i}"))
                    .to_string_lossy()
                    .into_owned()
            }
        })
        .collect();
    let base_options = LockOptions::default()
        .ttl(args.ttl)
        .owner_id(args.id.clone());
    while !terminated() {
        let Some(daemon) = client.clone() else {
            tokio::select! {
                connected = Client::connect(&args.socket) => match connected {
                    Ok(c) => client = Some(c),
                    Err(e) => {
                        eprintln!("worker {}: connect to the daemon: {e}", args.id);
                        tokio::time::sleep(RECONNECT_PAUSE).await;
                    }
                },
                () = termination() => {}
            }
            continue;
        };
        if resource.is_none() {
            match ResourceClient::connect(&args.resource).await {
                Ok(r) => resource = Some(r),
                Err(e) => {
                    eprintln!("worker {}: connect to the resource: {e}", args.id);
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            }
        }
        let target = rng.below(args.targets as u64) as usize;
        let held = args.mode.pick(rng.below(1000));
        let options = args.mode.options(base_options.clone(), held);
        let mut lock = daemon.new_lock(targets[target].clone(), options);
        let acquired = tokio::select! {
            acquired = lock.acquire_timeout(ACQUIRE_TIMEOUT) => acquired,
            // Dropping the pending acquire cancels it.
            () = termination() => break,
        };
        if let Err(e) = acquired {
            log.append(&Record::AcquireError {
                t: now_ns(),
                target,
                kind: format!("{:?}", e.kind()),
                message: e.message().to_owned(),
            });
            if matches!(
                e.kind(),
                ErrorKind::ConnectionLost | ErrorKind::DaemonUnavailable | ErrorKind::ShuttingDown
            ) {
                client = None;
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        }
        // The critical section.
        let token = lock.token();
        log.append(&Record::Enter {
            t: now_ns(),
            target,
            client: args.id.clone(),
            token,
            mode: held,
        });
        if token.is_none() && args.tokenless {
            log.append(&Record::WriteSkipped {
                t: now_ns(),
                target,
            });
        } else {
            let connection = resource.as_mut().expect("connected above");
            let reads = !held.is_exclusive();
            let answer = if reads {
                connection.read(target, token, &args.id).await
            } else {
                connection.write(target, token, &args.id).await
            };
            let accepted = match answer {
                Ok(accepted) => Some(accepted),
                Err(e) => {
                    eprintln!("worker {}: ask the resource: {e}", args.id);
                    resource = None;
                    None
                }
            };
            let t = now_ns();
            log.append(&if reads {
                Record::Read {
                    t,
                    target,
                    token,
                    accepted,
                }
            } else {
                Record::Write {
                    t,
                    target,
                    token,
                    accepted,
                }
            });
        }
        let lost = tokio::select! {
            biased;
            reason = lock.lost() => Some(reason),
            () = tokio::time::sleep(args.hold) => None,
        };
        match lost {
            Some(reason) => log.append(&Record::Lost {
                t: now_ns(),
                target,
                reason,
            }),
            None => log.append(&Record::Exit {
                t: now_ns(),
                target,
            }),
        }
        let released = lock.release().await;
        log.append(&Record::released(target, released));
    }
    log.append(&Record::Stop { t: now_ns() });
    ExitCode::SUCCESS
}
