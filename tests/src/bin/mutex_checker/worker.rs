//! The worker process: takes locks on random targets through one daemon, writes to the
//! guarded resource with each holding's fencing token, and records every step. On a store
//! without tokens (`--tokenless`: SFTP) a holding without a token skips the write, and records
//! that it did. In a mixed or semaphore run (`--mode`) it draws each acquisition's mode, records
//! it with the section, and a shared or slot holding does a guarded read instead of the write
//! (why: `resource.rs`).
//!
//! In a set run (`--mode set`) each iteration takes two distinct targets, drawn in a random
//! order, with `Client::lock_all` (one wait for both), records a `set_taken`, then an `enter`
//! and a guarded write per target with that target's own token, holds, and releases the set.
//!
//! Each record is appended to the log before the next step, so a SIGKILL loses at most the
//! step in progress. SIGTERM lets the current step finish, then the worker stops.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use vfslock::{Client, ErrorKind, Lock, LockOptions};

use crate::modes::Mode;
use crate::records::{now_ns, Record, RecordLog};
use crate::resource::ResourceClient;
use crate::Rng;

/// A wait for a lock longer than this is reported as an acquire error (and retried).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a set run's `lock_all` may wait for its whole set: generous (a killed daemon's
/// locks go stale after the TTL), so that a wait that times out means a stall — a deadlock
/// between sets taken in different orders — not a busy run.
const SET_WAIT_TIMEOUT: Duration = Duration::from_secs(20);

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
    // How long the acquire the worker gave up at SIGTERM had waited (set runs).
    let mut stop_waiting = None;
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
        if args.mode.is_set() {
            let connection = resource.as_mut().expect("connected above");
            match set_iteration(
                &args,
                &daemon,
                connection,
                &targets,
                &base_options,
                &mut rng,
                &mut log,
            )
            .await
            {
                SetStep::Next => {}
                SetStep::Reconnect => {
                    client = None;
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
                SetStep::ResourceLost => resource = None,
                SetStep::Stop { waiting } => {
                    stop_waiting = Some(waiting);
                    break;
                }
            }
            continue;
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
    log.append(&Record::Stop {
        t: now_ns(),
        waiting: stop_waiting,
    });
    ExitCode::SUCCESS
}

/// What a set iteration leaves the worker to do.
enum SetStep {
    /// Go on.
    Next,
    /// The daemon's connection is gone: connect again.
    Reconnect,
    /// The resource did not answer: connect to it again.
    ResourceLost,
    /// SIGTERM arrived while `lock_all` waited this long (ns).
    Stop { waiting: u64 },
}

/// One iteration of a set run: two distinct targets, in a random order, taken at once.
async fn set_iteration(
    args: &WorkerArgs,
    daemon: &Client,
    resource: &mut ResourceClient,
    targets: &[String],
    base_options: &LockOptions,
    rng: &mut Rng,
    log: &mut RecordLog,
) -> SetStep {
    let count = targets.len() as u64;
    let first = rng.below(count);
    let second = (first + 1 + rng.below(count - 1)) % count;
    let picked = [first as usize, second as usize];
    let options = base_options.clone().wait_timeout(SET_WAIT_TIMEOUT);
    let asked = now_ns();
    let taken = tokio::select! {
        taken = daemon.lock_all(picked.map(|i| targets[i].clone()), options) => taken,
        // Dropping the pending lock_all cancels it (the daemon releases what it had taken
        // when the connection closes).
        () = termination() => return SetStep::Stop { waiting: now_ns() - asked },
    };
    let mut set = match taken {
        Ok(set) => set,
        Err(e) => {
            log.append(&Record::AcquireError {
                t: now_ns(),
                target: picked[0],
                kind: format!("{:?}", e.kind()),
                message: e.message().to_owned(),
            });
            if matches!(
                e.kind(),
                ErrorKind::ConnectionLost | ErrorKind::DaemonUnavailable | ErrorKind::ShuttingDown
            ) {
                return SetStep::Reconnect;
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
            return SetStep::Next;
        }
    };
    let t = now_ns();
    log.append(&Record::SetTaken {
        t,
        targets: picked.to_vec(),
        waited: t - asked,
    });
    // The locks in the order they were taken, each with its target's index.
    let held: Vec<(usize, &Lock)> = set
        .locks()
        .iter()
        .map(|lock| {
            let index = targets
                .iter()
                .position(|target| target == lock.target())
                .expect("lock_all holds the targets it was given");
            (index, lock)
        })
        .collect();
    // The critical sections: every target's begins before any write.
    for &(target, lock) in &held {
        log.append(&Record::Enter {
            t: now_ns(),
            target,
            client: args.id.clone(),
            token: lock.token(),
            mode: crate::modes::Held::Exclusive,
        });
    }
    let mut step = SetStep::Next;
    for &(target, lock) in &held {
        let token = lock.token();
        if token.is_none() && args.tokenless {
            log.append(&Record::WriteSkipped {
                t: now_ns(),
                target,
            });
            continue;
        }
        let accepted = match resource.write(target, token, &args.id).await {
            Ok(accepted) => Some(accepted),
            Err(e) => {
                eprintln!("worker {}: ask the resource: {e}", args.id);
                step = SetStep::ResourceLost;
                None
            }
        };
        log.append(&Record::Write {
            t: now_ns(),
            target,
            token,
            accepted,
        });
        if accepted.is_none() {
            break;
        }
    }
    let lost = tokio::select! {
        biased;
        lost = first_lost(&held) => Some(lost),
        () = tokio::time::sleep(args.hold) => None,
    };
    // The lost target's section ends at its loss, the others' with it (still held, but the
    // set is done with).
    if let Some((target, reason)) = &lost {
        log.append(&Record::Lost {
            t: now_ns(),
            target: *target,
            reason: reason.clone(),
        });
    }
    for &(target, _) in &held {
        if lost.as_ref().is_none_or(|(lost, _)| *lost != target) {
            log.append(&Record::Exit {
                t: now_ns(),
                target,
            });
        }
    }
    drop(held);
    let released = set.release().await;
    log.append(&Record::released(picked[0], released));
    step
}

/// The first lock of `held` whose lease is lost: its target and the reason.
async fn first_lost(held: &[(usize, &Lock)]) -> (usize, String) {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;
    let mut waits: Vec<Pin<Box<dyn Future<Output = String> + '_>>> = held
        .iter()
        .map(|(_, lock)| Box::pin(lock.lost()) as Pin<Box<dyn Future<Output = String> + '_>>)
        .collect();
    std::future::poll_fn(|cx| {
        for (i, wait) in waits.iter_mut().enumerate() {
            if let Poll::Ready(reason) = wait.as_mut().poll(cx) {
                return Poll::Ready((held[i].0, reason));
            }
        }
        Poll::Pending
    })
    .await
}
