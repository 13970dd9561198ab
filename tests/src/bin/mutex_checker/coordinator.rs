//! The coordinator (`mutex_checker run`): starts the daemons sharing one data directory (or
//! one prefix in an object store's bucket, or run-unique names in the SFTP root), the guarded
//! resource and the workers; kills random workers while they run; stops everything; looks for
//! orphan lock files (or objects); analyses the records and prints the verdict.
//!
//! A chaos run (`mutex_checker chaos`, or these options of `run`) adds daemon kills (SIGKILL,
//! then a restart with the same host id and state directory, whose crash journal removes the
//! dead daemon's lock files), store faults (errors and delays before store operations,
//! `[faults]` of daemons built with the `faults` feature) and, on S3, a network partition
//! ([`crate::partition`]). It ends in a calm phase: the faults are switched off (their switch
//! file removed), nothing is killed, the link is up, and the workers go on for a TTL and a
//! margin, so that a lock file an injected fault left behind goes stale and is taken over as
//! any stale lock is. Only then do the workers stop and the orphan check look: a lock file left
//! after that is one the protocol failed to clean up with a healthy store.
//!
//! In a mixed or semaphore run (`--mode`, [`crate::modes`]) the workers take shared locks or
//! slots as well, and the summary line adds what the mode showed: how often shared sections
//! overlapped, the most sections open at once, the guarded reads refused.
//!
//! On SFTP (create-only mode) there are no fencing tokens, stale steals or handoffs: the
//! workers skip the resource write, the analysis checks overlaps and late losses only, and
//! the TTL is long (10 s) so that no lock goes stale: a killed worker's lock is released by
//! its daemon when the connection drops.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vfslock_tests::{find_bin, tail, Launch, NotServing};

use crate::analysis::{across_kills, analyze, Analysis, Instance, KillHoldings};
use crate::modes::Mode;
use crate::partition::{Network, PartitionReport};
use crate::records::{now_ns, read_log, Record};
use crate::resource::{ResourceServer, ResourceStats};
use crate::store::{ObjectStore, StoreKind};
use crate::Rng;

/// How long a process gets to start serving or to exit after SIGTERM.
const DEADLINE: Duration = Duration::from_secs(30);

/// How long a daemon gets to exit after SIGTERM when a failed run is torn down.
const DROP_GRACE: Duration = Duration::from_secs(5);

/// How long the orphan check waits beyond the TTL for release-on-disconnect to happen.
const ORPHAN_MARGIN: Duration = Duration::from_secs(2);

/// The daemons' config: waiters on another daemon's holder re-check quickly. A restarted
/// daemon keeps the holdings of the one killed for a short resume window: the workers do not
/// resume yet, so a long one would only keep their targets from everyone.
const DAEMON_CONFIG: &str =
    "[locks]\nrecheck-min = \"5ms\"\nrecheck-max = \"50ms\"\nresume-window = \"1s\"\n";

/// The same on an object store, where a re-check costs three requests (stat, read, stat) to
/// a server that serializes its requests.
const OBJECT_DAEMON_CONFIG: &str =
    "[locks]\nrecheck-min = \"10ms\"\nrecheck-max = \"100ms\"\nresume-window = \"1s\"\n";

/// The calm phase of a chaos run lasts the TTL plus this: a lock file written just before it
/// began goes stale after its TTL plus the skew allowance (1 s), and a waiter's re-check finds
/// it soon after.
pub(crate) const CALM_MARGIN: Duration = Duration::from_secs(2);

/// What every log line of a fault the daemon injected contains (`faults::LOG_MARKER` in
/// `daemon/src/store/faults.rs`).
const FAULT_LOG_MARKER: &str = "fault injected";

/// How often the orphan check lists an object store.
const LIST_EVERY: Duration = Duration::from_millis(100);

/// The run's settings (`mutex_checker run …`).
#[derive(Clone, Debug)]
pub(crate) struct RunArgs {
    /// Daemons (hosts).
    pub(crate) daemons: usize,
    /// Workers per daemon.
    pub(crate) clients: usize,
    /// Targets `t0` … shared by all.
    pub(crate) targets: usize,
    /// How long the workers run.
    pub(crate) duration: Duration,
    /// How long each holding lasts.
    pub(crate) hold: Duration,
    /// SIGKILL a random worker this often (zero: never).
    pub(crate) kill_every: Duration,
    /// The share of kills (in percent) aimed at the holder of a random target, found by the
    /// `pid` in its lock file, rather than at any worker (most of which are waiting).
    pub(crate) kill_holder_percent: u8,
    /// The lease the workers ask for.
    pub(crate) ttl: Duration,
    /// Where to work; a temporary directory (removed after a clean run) if `None`.
    pub(crate) dir: Option<PathBuf>,
    /// SIGSTOP a random daemon this often (zero: never), for [`RunArgs::pause_for`].
    pub(crate) pause_every: Duration,
    /// How long a paused daemon stays stopped before SIGCONT.
    pub(crate) pause_for: Duration,
    /// Keep the temporary directory even after a clean run.
    pub(crate) keep: bool,
    /// Lock `mem://` targets, which each daemon keeps apart: with several daemons, mutual
    /// exclusion is broken on purpose, and the run must fail (the checker's self-test).
    pub(crate) mem: bool,
    /// Where the targets are: the shared directory, or a run-unique prefix in a bucket of a
    /// test object store.
    pub(crate) store: StoreKind,
    /// The share of object-store writes each daemon applies and then reports as failed
    /// (`[faults] write-then-fail`; needs daemons built with the `faults` feature).
    pub(crate) faults: Option<f64>,
    /// SIGKILL a random daemon this often and restart it (zero: never).
    pub(crate) kill_daemon_every: Duration,
    /// The share of store operations (every store) each daemon fails before they reach the
    /// store (`[faults] error-rate`).
    pub(crate) error_rate: Option<f64>,
    /// The share of store operations each daemon delays by [`RunArgs::delay`] first
    /// (`[faults] delay-rate`).
    pub(crate) delay_rate: Option<f64>,
    /// How long a delayed store operation waits.
    pub(crate) delay: Duration,
    /// S3 only: daemon 0 runs in a network namespace, and its link to the run's own moto is cut
    /// now and then while it holds a lock ([`crate::partition`]).
    pub(crate) partition: bool,
    /// Pause between two partitions.
    pub(crate) partition_gap: Duration,
    /// How long the calm phase after the chaos lasts (faults off, no kills, link up, workers
    /// on); zero: none.
    pub(crate) calm: Duration,
    /// Whether this is a chaos run (`mutex_checker chaos`): the summary says what chaos was
    /// made.
    pub(crate) chaos: bool,
    /// How the workers take their locks.
    pub(crate) mode: Mode,
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            daemons: 3,
            clients: 3,
            targets: 2,
            duration: Duration::from_secs(6),
            hold: Duration::from_millis(2),
            kill_every: Duration::from_millis(400),
            kill_holder_percent: 50,
            ttl: Duration::from_secs(5),
            dir: None,
            pause_every: Duration::ZERO,
            pause_for: Duration::ZERO,
            keep: false,
            mem: false,
            store: StoreKind::File,
            faults: None,
            kill_daemon_every: Duration::ZERO,
            error_rate: None,
            delay_rate: None,
            delay: Duration::from_millis(20),
            partition: false,
            partition_gap: Duration::from_secs(1),
            calm: Duration::ZERO,
            chaos: false,
            mode: Mode::Exclusive,
        }
    }
}

impl RunArgs {
    /// The defaults for a run on `store`. An object store answers in milliseconds, not
    /// microseconds (moto serializes its requests): fewer daemons and workers, longer
    /// holdings, so that a short run still has enough acquisitions and stays short. On SFTP
    /// the TTL is 10 s: a lock that went stale could not be stolen (create-only mode), and
    /// every holder's daemon stays alive to renew it, or to release it when a killed worker's
    /// connection drops.
    pub(crate) fn defaults_for(store: StoreKind) -> RunArgs {
        let file = RunArgs::default();
        let object = RunArgs {
            daemons: 2,
            clients: 3,
            targets: 2,
            duration: Duration::from_secs(5),
            hold: Duration::from_millis(5),
            store,
            ..file.clone()
        };
        match store {
            StoreKind::File => file,
            StoreKind::S3 | StoreKind::Gcs | StoreKind::Azblob => object,
            StoreKind::Sftp => RunArgs {
                ttl: Duration::from_secs(10),
                ..object
            },
        }
    }

    /// The defaults of a chaos run on `store` (`mutex_checker chaos`): 3 daemons × 8 clients,
    /// a daemon SIGKILLed every 2 s (3 s on an object store), 1% of store operations failed
    /// and 5% delayed by 20 ms, a TTL of 3 s (so that what the chaos leaves goes stale soon),
    /// and a calm phase of the TTL plus 2 s.
    pub(crate) fn chaos_defaults(store: StoreKind) -> RunArgs {
        let base = RunArgs::defaults_for(store);
        let object = store != StoreKind::File;
        let ttl = if store == StoreKind::Sftp {
            base.ttl
        } else {
            Duration::from_secs(3)
        };
        RunArgs {
            daemons: 3,
            clients: 8,
            targets: if object { 2 } else { 3 },
            duration: Duration::from_secs(10),
            kill_daemon_every: Duration::from_secs(if object { 3 } else { 2 }),
            error_rate: Some(0.01),
            delay_rate: Some(0.05),
            ttl,
            calm: ttl + CALM_MARGIN,
            chaos: true,
            ..base
        }
    }

    /// Whether the daemons inject errors or delays before store operations.
    fn store_faults(&self) -> bool {
        self.error_rate.is_some() || self.delay_rate.is_some()
    }
}

/// Makes `command`'s process receive `signal` when the coordinator dies, so that a killed
/// coordinator leaves no daemons or workers behind.
pub(crate) fn die_with_parent(command: &mut Command, signal: libc::c_int) {
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: plain syscall on the pid of our own child, which has not been reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
}

/// Waits for `child` up to `deadline`; `None` if it is still running then.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Daemon {
    index: usize,
    child: Option<Child>,
    /// How it starts. Its files stay the same across restarts: its crash journal's directory
    /// too, so that the restarted daemon removes the lock files of the killed one.
    launch: Launch,
    paused_until: Option<Instant>,
    /// The network namespace it runs in (`/run/netns/<name>`), if not the coordinator's.
    netns: Option<PathBuf>,
}

impl Daemon {
    fn host_id(&self) -> String {
        format!("host-{}", self.index)
    }

    /// Starts it (again) and waits until it serves.
    fn spawn(&mut self) -> Result<(), String> {
        let mut command = self
            .launch
            .command()
            .map_err(|e| format!("{}: {e}", self.launch.log.display()))?;
        die_with_parent(&mut command, libc::SIGTERM);
        // Opened here, used in the child between fork and exec (the descriptor is
        // close-on-exec, so the daemon does not keep it).
        let netns = match &self.netns {
            Some(path) => {
                Some(std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            None => None,
        };
        if let Some(netns) = &netns {
            use std::os::fd::AsRawFd;
            let fd = netns.as_raw_fd();
            // SAFETY: setns is async-signal-safe; the descriptor stays open until spawn returns.
            unsafe {
                command.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.launch.binary.display()))?;
        drop(netns);
        self.paused_until = None;
        let child = self.child.insert(child);
        let served = self.launch.wait_serving(child);
        if let Err(e) = served {
            if let NotServing::Exited(_) = e {
                self.child = None;
            }
            return Err(format!(
                "vfslockd {} {e}:\n{}",
                self.host_id(),
                self.launch.log_tail(30)
            ));
        }
        Ok(())
    }
}

/// One worker identity and its current process.
struct Worker {
    id: String,
    daemon: usize,
    child: Option<Child>,
    /// Index in `Run::instances` of the current process.
    instance: usize,
}

/// One worker process, as the coordinator saw it.
struct InstanceInfo {
    client: String,
    incarnation: u32,
    log: PathBuf,
    killed_at: Option<u64>,
}

struct Run {
    args: RunArgs,
    dir: PathBuf,
    exe: PathBuf,
    daemons: Vec<Daemon>,
    workers: Vec<Worker>,
    instances: Vec<InstanceInfo>,
    rng: Rng,
    kills: u64,
    forced_kills: u64,
    pauses: u64,
    unexpected_exits: Vec<String>,
    daemon_failures: Vec<String>,
    /// The object store the targets are in (`None`: the shared directory).
    object: Option<ObjectStore>,
    /// Daemons SIGKILLed (and restarted).
    daemon_kills: u64,
    /// Which daemon each of those kills hit, and when (taken just before the `kill`).
    daemon_kill_times: Vec<(usize, u64)>,
    /// While this file exists, the daemons inject their store faults.
    faults_switch: PathBuf,
    /// The partition thread and its network, in `--partition` mode.
    partition: Option<PartitionRun>,
}

/// The partition mode's running parts.
struct PartitionRun {
    /// Held by the partition thread for a whole cycle: no daemon is killed meanwhile.
    gate: Arc<Mutex<()>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<PartitionReport>>,
    /// Kept until the daemons are gone (the last owner removes it).
    _net: Arc<Network>,
}

impl PartitionRun {
    /// Lets the current cycle finish (it brings the link back) and collects the report.
    fn finish(&mut self) -> Option<PartitionReport> {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take()?;
        Some(thread.join().unwrap_or_else(|_| PartitionReport {
            failures: vec!["the partition thread panicked".into()],
            ..PartitionReport::default()
        }))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // On every path (a panic included), no process of this run survives it; the
        // partition thread first, which brings the link back.
        if let Some(partition) = self.partition.as_mut() {
            partition.finish();
        }
        for worker in &mut self.workers {
            if let Some(mut child) = worker.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Daemons get SIGTERM first, so that they close their store connections (an SFTP
        // store's SSH master outlives a SIGKILL of its daemon); SIGKILL after a grace period.
        let mut daemons: Vec<Child> = self
            .daemons
            .iter_mut()
            .filter_map(|daemon| daemon.child.take())
            .collect();
        for child in &daemons {
            signal(child, libc::SIGCONT);
            signal(child, libc::SIGTERM);
        }
        let deadline = Instant::now() + DROP_GRACE;
        for child in &mut daemons {
            if wait_until(child, deadline).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Run {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn spawn_worker(&mut self, index: usize) -> Result<(), String> {
        let incarnation = self
            .instances
            .iter()
            .filter(|i| i.client == self.workers[index].id)
            .count() as u32;
        let id = self.workers[index].id.clone();
        let log = self
            .dir
            .join("logs")
            .join(format!("{id}.{incarnation}.jsonl"));
        let stderr = std::fs::File::create(
            self.dir
                .join("logs")
                .join(format!("{id}.{incarnation}.stderr")),
        )
        .map_err(|e| e.to_string())?;
        let daemon = &self.daemons[self.workers[index].daemon];
        let mut command = Command::new(&self.exe);
        command
            .arg("worker")
            .arg("--socket")
            .arg(&daemon.launch.socket)
            .arg("--resource")
            .arg(self.dir.join("resource.sock"))
            .arg("--data")
            .arg(self.data())
            .args(
                self.object
                    .as_ref()
                    .map(|store| ["--base".to_owned(), store.target_prefix()])
                    .into_iter()
                    .flatten(),
            )
            .args((!self.args.store.has_tokens()).then_some("--tokenless"))
            .arg("--targets")
            .arg(self.args.targets.to_string())
            .arg("--hold-ms")
            .arg(self.args.hold.as_millis().to_string())
            .arg("--ttl")
            .arg(self.args.ttl.as_secs_f64().to_string())
            .arg("--log")
            .arg(&log)
            .arg("--id")
            .arg(&id)
            .args(self.args.mem.then_some("--mem"))
            .args(match self.args.mode {
                Mode::Exclusive => Vec::new(),
                Mode::Mixed { shared_share } => vec![
                    "--mode".to_owned(),
                    "mixed".to_owned(),
                    "--shared-share".to_owned(),
                    shared_share.to_string(),
                ],
                slots => vec!["--mode".to_owned(), slots.to_string()],
            })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        die_with_parent(&mut command, libc::SIGKILL);
        // The worker starts with SIGTERM blocked (a blocked signal stays blocked across exec)
        // and unblocks it once its handler is in place: a stop that comes right after a
        // restart then ends the worker cleanly instead of killing it with the default action.
        // SAFETY: sigemptyset, sigaddset and pthread_sigmask are async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("start worker {id}: {e}"))?;
        self.instances.push(InstanceInfo {
            client: id,
            incarnation,
            log,
            killed_at: None,
        });
        let worker = &mut self.workers[index];
        worker.child = Some(child);
        worker.instance = self.instances.len() - 1;
        Ok(())
    }

    /// The worker that holds a random target, as its lock file's `pid` says, if it is one of
    /// ours. A shared lock or semaphore lists one entry per daemon, each with the `pid` of
    /// that daemon's first holder: a random entry's.
    fn holder_of_random_target(&mut self) -> Option<usize> {
        let target = self.rng.below(self.args.targets as u64);
        let bytes = match &self.object {
            Some(store) => store.read_lock(target as usize)?,
            None => std::fs::read(self.data().join(format!("t{target}.lock"))).ok()?,
        };
        let meta: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let entry = match meta.get("holders").and_then(|h| h.as_array()) {
            Some(entries) if !entries.is_empty() => {
                &entries[self.rng.below(entries.len() as u64) as usize]
            }
            _ => &meta,
        };
        let pid = u32::try_from(entry.get("pid")?.as_u64()?).ok()?;
        self.workers
            .iter()
            .position(|w| w.child.as_ref().is_some_and(|c| c.id() == pid))
    }

    /// Whom to kill: the holder of a random target with probability
    /// [`RunArgs::kill_holder_percent`] (if one of our workers holds it), else any worker.
    fn kill_victim(&mut self) -> usize {
        if self.rng.below(100) < u64::from(self.args.kill_holder_percent) {
            if let Some(holder) = self.holder_of_random_target() {
                return holder;
            }
        }
        self.rng.below(self.workers.len() as u64) as usize
    }

    /// SIGKILLs the worker's process, recording the time taken just before the kill.
    fn kill_worker(&mut self, index: usize) {
        let worker = &mut self.workers[index];
        let Some(mut child) = worker.child.take() else {
            return;
        };
        let at = now_ns();
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
        self.instances[worker.instance].killed_at = Some(at);
    }

    /// Restarts workers that exited on their own, and daemons that died.
    fn check_processes(&mut self) -> Result<(), String> {
        for index in 0..self.workers.len() {
            let worker = &mut self.workers[index];
            let Some(child) = worker.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                worker.child = None;
                let info = &self.instances[worker.instance];
                self.unexpected_exits.push(format!(
                    "worker {}#{} exited by itself with {status}: {}",
                    info.client,
                    info.incarnation,
                    tail(&info.log.with_extension("stderr"), 5)
                ));
                self.spawn_worker(index)?;
            }
        }
        for index in 0..self.daemons.len() {
            let daemon = &mut self.daemons[index];
            let Some(child) = daemon.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                daemon.child = None;
                self.daemon_failures.push(format!(
                    "vfslockd {} exited during the run with {status}:\n{}",
                    daemon.host_id(),
                    daemon.launch.log_tail(30)
                ));
                daemon.spawn()?;
            }
        }
        Ok(())
    }

    fn resume_paused(&mut self, all: bool) {
        let now = Instant::now();
        for daemon in &mut self.daemons {
            if let (Some(until), Some(child)) = (daemon.paused_until, daemon.child.as_ref()) {
                if all || now >= until {
                    signal(child, libc::SIGCONT);
                    daemon.paused_until = None;
                }
            }
        }
    }

    fn pause_random_daemon(&mut self) {
        let index = self.rng.below(self.daemons.len() as u64) as usize;
        let daemon = &mut self.daemons[index];
        if daemon.paused_until.is_some() {
            return;
        }
        if let Some(child) = daemon.child.as_ref() {
            signal(child, libc::SIGSTOP);
            daemon.paused_until = Some(Instant::now() + self.args.pause_for);
            self.pauses += 1;
        }
    }

    /// The main phase: workers run, random ones are killed and restarted.
    fn drive(&mut self) -> Result<(), String> {
        let start = Instant::now();
        let end = start + self.args.duration;
        let every = |d: Duration| (!d.is_zero()).then(|| start + d);
        let mut next_kill = every(self.args.kill_every);
        let mut next_pause = every(self.args.pause_every);
        let mut next_daemon_kill = every(self.args.kill_daemon_every);
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            self.check_processes()?;
            self.resume_paused(false);
            if let Some(at) = next_kill.filter(|at| now >= *at) {
                let index = self.kill_victim();
                self.kill_worker(index);
                self.kills += 1;
                self.spawn_worker(index)?;
                next_kill = Some(at + self.args.kill_every);
            }
            if let Some(at) = next_pause.filter(|at| now >= *at) {
                self.pause_random_daemon();
                next_pause = Some(at + self.args.pause_every);
            }
            if let Some(at) = next_daemon_kill.filter(|at| now >= *at) {
                self.kill_random_daemon()?;
                next_daemon_kill = Some(at + self.args.kill_daemon_every);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGKILLs a random daemon and restarts it with the same host id, socket and state
    /// directory. Its workers' connections drop: they hear that their leases are lost, and
    /// reconnect. Skipped while a partition is under way (it needs its daemons) and for a
    /// paused daemon.
    fn kill_random_daemon(&mut self) -> Result<(), String> {
        let gate = self.partition.as_ref().map(|p| p.gate.clone());
        let _no_partition = match &gate {
            Some(gate) => match gate.try_lock() {
                Ok(guard) => Some(guard),
                Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
                Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            },
            None => None,
        };
        let index = self.rng.below(self.daemons.len() as u64) as usize;
        let daemon = &mut self.daemons[index];
        if daemon.paused_until.is_some() {
            return Ok(());
        }
        let Some(mut child) = daemon.child.take() else {
            return Ok(());
        };
        self.daemon_kill_times.push((index, now_ns()));
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
        self.daemon_kills += 1;
        daemon.spawn()
    }

    /// The calm phase: nothing is killed or paused, the workers go on.
    fn calm(&mut self, how_long: Duration) -> Result<(), String> {
        let end = Instant::now() + how_long;
        self.resume_paused(true);
        while Instant::now() < end {
            self.check_processes()?;
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// How many faults the daemons injected, counted in their logs (which outlive a SIGKILL,
    /// unlike the counters `vfslockctl status` shows).
    fn injected_faults(&self) -> u64 {
        self.daemons
            .iter()
            .map(|daemon| {
                std::fs::read_to_string(&daemon.launch.log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|line| line.contains(FAULT_LOG_MARKER))
                    .count() as u64
            })
            .sum()
    }

    /// SIGTERM to every worker, then reap them; the ones that do not stop in time are killed
    /// (and recorded as killed).
    fn stop_workers(&mut self) {
        for worker in &self.workers {
            if let Some(child) = worker.child.as_ref() {
                signal(child, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + DEADLINE;
        for index in 0..self.workers.len() {
            let worker = &mut self.workers[index];
            let Some(child) = worker.child.as_mut() else {
                continue;
            };
            match wait_until(child, deadline) {
                Some(status) => {
                    worker.child = None;
                    if !status.success() {
                        let info = &self.instances[worker.instance];
                        self.unexpected_exits.push(format!(
                            "worker {}#{} exited with {status} after SIGTERM",
                            info.client, info.incarnation
                        ));
                    }
                }
                None => {
                    self.forced_kills += 1;
                    self.kill_worker(index);
                }
            }
        }
    }

    /// Waits up to the TTL plus a margin for the lock files (or objects) to go; those left
    /// are orphans, given as name and content.
    fn orphans(&self) -> Result<Vec<(String, String)>, String> {
        let deadline = Instant::now() + self.args.ttl + ORPHAN_MARGIN;
        let one_line = |text: String| text.split_whitespace().collect::<Vec<_>>().join(" ");
        loop {
            let last = Instant::now() >= deadline;
            match &self.object {
                None => {
                    let files = lock_files(&self.data());
                    if files.is_empty() || last {
                        return Ok(files
                            .iter()
                            .map(|path| {
                                let text = std::fs::read_to_string(path).unwrap_or_default();
                                (path.display().to_string(), one_line(text))
                            })
                            .collect());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Some(store) => {
                    let keys = store.lock_objects()?;
                    if keys.is_empty() || last {
                        return Ok(keys
                            .iter()
                            .map(|key| (store.url_of(key), one_line(store.read_text(key))))
                            .collect());
                    }
                    std::thread::sleep(LIST_EVERY);
                }
            }
        }
    }

    /// The sum over the running daemons of their object store's `ambiguous` counter (writes
    /// whose outcome was resolved by reading back, injected faults among them); `None` if a
    /// daemon did not answer.
    fn ambiguous_writes(&self) -> Option<u64> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let mut total = 0;
        for daemon in self.daemons.iter().filter(|d| d.child.is_some()) {
            let status = runtime.block_on(async {
                let ask = async {
                    let client = vfslock::Client::connect(&daemon.launch.socket).await.ok()?;
                    client.status().await.ok()
                };
                tokio::time::timeout(Duration::from_secs(5), ask)
                    .await
                    .ok()
                    .flatten()
            })?;
            total += status
                .stores
                .iter()
                .flat_map(|store| &store.counters)
                .filter(|(name, _)| name == "ambiguous")
                .map(|(_, value)| value)
                .sum::<u64>();
        }
        Some(total)
    }

    fn stop_daemons(&mut self) {
        self.resume_paused(true);
        for daemon in &self.daemons {
            if let Some(child) = daemon.child.as_ref() {
                signal(child, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + DEADLINE;
        for daemon in &mut self.daemons {
            let Some(child) = daemon.child.as_mut() else {
                continue;
            };
            let status = wait_until(child, deadline);
            if status.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            daemon.child = None;
            if !status.is_some_and(|s| s.success()) {
                self.daemon_failures.push(format!(
                    "vfslockd {} did not exit cleanly on SIGTERM ({}):\n{}",
                    daemon.host_id(),
                    status.map_or_else(|| "killed after the deadline".into(), |s| s.to_string()),
                    daemon.launch.log_tail(30)
                ));
            }
        }
    }
}

/// Writes a daemon config readable by its owner only: a partition run's config names moto's
/// test credentials.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|e| format!("config {}: {e}", path.display()))
}

/// The lock files in `dir` (not the `.lock.fence` companions, not the hidden temporary files
/// of a write in progress).
fn lock_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".lock") && !name.starts_with('.')
        })
        .map(|entry| entry.path())
        .collect();
    files.sort();
    files
}

/// Runs the whole check; the process exit code (0: no violation).
pub(crate) fn main(args: RunArgs) -> u8 {
    match run(args) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("mutex-checker: error: {e}");
            2
        }
    }
}

fn run(args: RunArgs) -> Result<bool, String> {
    if args.daemons == 0 || args.clients == 0 || args.targets == 0 {
        return Err("--daemons, --clients and --targets must be at least 1".into());
    }
    if !args.mode.is_exclusive() && !args.store.has_tokens() {
        return Err(format!(
            "--mode {}: shared locks and semaphores need a store with compare-and-swap, and \
             SFTP has none (set runs are checked with fencing tokens, which SFTP has not either)",
            args.mode
        ));
    }
    if args.mode.is_set() && args.targets < 2 {
        return Err("--mode set takes two targets at once: --targets must be at least 2".into());
    }
    if args.mem && args.store != StoreKind::File {
        return Err("--mem locks mem:// targets: it does not go with --store".into());
    }
    if let Some(rate) = args.faults {
        if args.store == StoreKind::File {
            return Err(
                "--faults acts on object-store writes: give --store s3|gcs|azblob|sftp".into(),
            );
        }
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("--faults {rate}: a share between 0 and 1"));
        }
    }
    if args.store == StoreKind::Sftp && !args.pause_every.is_zero() {
        // A paused daemon's locks go stale, and on SFTP nobody may steal them: the run
        // would only measure refusals.
        return Err("--pause-daemon-every-ms: SFTP (create-only mode) has no stale steals".into());
    }
    for (rate, name) in [
        (args.error_rate, "error-rate"),
        (args.delay_rate, "delay-rate"),
    ] {
        if rate.is_some_and(|rate| !(0.0..=1.0).contains(&rate)) {
            return Err(format!("--{name}: a share between 0 and 1"));
        }
    }
    if args.partition {
        if args.store != StoreKind::S3 {
            return Err("--partition runs on S3 (the run's own moto): give --store s3".into());
        }
        if args.daemons < 2 {
            return Err("--partition needs at least 2 daemons (one is cut off)".into());
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("--partition creates a network namespace: run as root".into());
        }
    }
    let vfslockd = find_bin("vfslockd")?;
    let daemon_log = std::env::var("MUTEX_CHECKER_DAEMON_LOG").unwrap_or_else(|_| "info".into());
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let (dir, temp) = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            (dir, None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("mutex-checker-")
                .tempdir()
                .map_err(|e| format!("temporary directory: {e}"))?;
            (temp.path().to_owned(), Some(temp))
        }
    };
    // A directory used before: its records and sockets go (the data, with the `.fence`
    // counters, stays, as it would on a real store).
    let _ = std::fs::remove_dir_all(dir.join("logs"));
    let _ = std::fs::remove_file(dir.join("resource.sock"));
    for sub in ["data", "logs"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("{sub}: {e}"))?;
    }
    let leftovers = lock_files(&dir.join("data"));
    if args.store == StoreKind::File && !leftovers.is_empty() {
        eprintln!(
            "mutex-checker: warning: lock files left from an earlier run (stale after their \
             TTL): {leftovers:?}"
        );
    }
    let resource = ResourceServer::start(&dir.join("resource.sock"))
        .map_err(|e| format!("resource server: {e}"))?;
    // In partition mode the targets are on the run's own moto, on the veth's host side.
    let network = match args.partition {
        true => Some(Arc::new(Network::create(&dir)?)),
        false => None,
    };
    let object = match (&network, args.store) {
        (Some(net), _) => Some(ObjectStore::private_s3(&net.endpoint())?),
        (None, StoreKind::File) => None,
        (None, kind) => Some(ObjectStore::from_env(kind)?),
    };
    let mut daemon_config = match &object {
        None => DAEMON_CONFIG.to_owned(),
        Some(store) => format!("{OBJECT_DAEMON_CONFIG}\n{}", store.config_table()),
    };
    let faults_switch = dir.join("faults-on");
    if args.faults.is_some() || args.store_faults() {
        daemon_config.push_str("\n[faults]\n");
    }
    if let Some(rate) = args.faults {
        daemon_config.push_str(&format!("write-then-fail = {rate:?}\n"));
    }
    if args.store_faults() {
        daemon_config.push_str(&format!(
            "error-rate = {:?}\ndelay-rate = {:?}\ndelay = \"{}ms\"\nswitch-file = {}\n",
            args.error_rate.unwrap_or(0.0),
            args.delay_rate.unwrap_or(0.0),
            args.delay.as_millis(),
            serde_json::to_string(&faults_switch.to_string_lossy()).expect("strings serialize"),
        ));
        std::fs::write(&faults_switch, b"").map_err(|e| format!("faults switch: {e}"))?;
    }

    let mut run = Run {
        args: args.clone(),
        dir: dir.clone(),
        exe,
        daemons: Vec::new(),
        workers: Vec::new(),
        instances: Vec::new(),
        rng: Rng::seeded(),
        kills: 0,
        forced_kills: 0,
        pauses: 0,
        unexpected_exits: Vec::new(),
        daemon_failures: Vec::new(),
        object,
        daemon_kills: 0,
        daemon_kill_times: Vec::new(),
        faults_switch,
        partition: None,
    };
    if let Some(store) = &run.object {
        eprintln!("mutex-checker: targets {}t0..", store.target_prefix());
    }
    for index in 0..args.daemons {
        let config = dir.join(format!("daemon-{index}.toml"));
        write_private(&config, &daemon_config)?;
        let mut daemon = Daemon {
            index,
            child: None,
            launch: Launch {
                binary: vfslockd.clone(),
                config,
                socket: dir.join(format!("d{index}.sock")),
                state_dir: dir.join(format!("state-{index}")),
                log: dir.join(format!("daemon-{index}.log")),
                args: vec!["--host-id".into(), format!("host-{index}")],
                log_filter: daemon_log.clone(),
            },
            paused_until: None,
            // Daemon 0 is the host that the partition cuts off.
            netns: network
                .as_ref()
                .filter(|_| index == 0)
                .map(|net| net.netns_path()),
        };
        daemon.spawn()?;
        run.daemons.push(daemon);
    }
    for daemon in 0..args.daemons {
        for client in 0..args.clients {
            run.workers.push(Worker {
                id: format!("h{daemon}-c{client}"),
                daemon,
                child: None,
                instance: 0,
            });
            run.spawn_worker(run.workers.len() - 1)?;
        }
    }
    if let (Some(net), Some(store)) = (&network, &run.object) {
        let name = "partition";
        let target_index = args.targets;
        eprintln!(
            "mutex-checker: partition mode: host-0 in {}, moto at {}, target {}{name} (index \
             {target_index} in the records)",
            net.netns_path().display(),
            net.endpoint(),
            store.target_prefix()
        );
        let gate = Arc::new(Mutex::new(()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = crate::partition::spawn(crate::partition::Plan {
            net: net.clone(),
            cut_socket: run.daemons[0].launch.socket.clone(),
            other_sockets: run.daemons[1..]
                .iter()
                .map(|d| d.launch.socket.clone())
                .collect(),
            resource: dir.join("resource.sock"),
            target: format!("{}{name}", store.target_prefix()),
            target_index,
            key: store.key_of(name),
            ttl: args.ttl,
            gap: args.partition_gap,
            logs: dir.join("logs"),
            gate: gate.clone(),
            stop: stop.clone(),
        });
        run.partition = Some(PartitionRun {
            gate,
            stop,
            thread: Some(thread),
            _net: net.clone(),
        });
    }
    drop(network);
    let origin = now_ns();
    let started = Instant::now();
    run.drive()?;
    // The chaos ends: no new partition, the store heals; then the calm phase.
    let partition = run.partition.as_mut().and_then(PartitionRun::finish);
    if args.store_faults() {
        std::fs::remove_file(&run.faults_switch).map_err(|e| format!("faults switch: {e}"))?;
    }
    run.calm(args.calm)?;
    run.stop_workers();
    let run_end = now_ns();
    let orphans = run.orphans()?;
    let orphan_contents: Vec<String> = orphans
        .iter()
        .map(|(name, content)| format!("{name}: {content}"))
        .collect();
    // Asked before the daemons stop: the counters go with them.
    let ambiguous = run.object.as_ref().and_then(|_| run.ambiguous_writes());
    run.stop_daemons();

    let mut instances = Vec::new();
    let mut torn = 0;
    let partition_logs = partition.iter().flat_map(|p| &p.logs);
    let logs = run
        .instances
        .iter()
        .map(|info| (&info.client, info.incarnation, &info.log, info.killed_at))
        .chain(partition_logs.map(|(client, cycle, log)| (client, *cycle, log, None)));
    for (client, incarnation, log, killed_at) in logs {
        let (records, torn_lines) = read_log(log).map_err(|e| format!("{}: {e}", log.display()))?;
        torn += torn_lines;
        instances.push(Instance {
            client: client.clone(),
            incarnation,
            records,
            killed_at,
        });
    }
    let analysis = analyze(
        &instances,
        run_end,
        origin,
        args.store.has_tokens(),
        args.mode,
    );
    let stats = resource.stats();
    let report = Report {
        args: &args,
        analysis: &analysis,
        stats: &stats,
        kills: run.kills,
        orphans: orphans.len(),
        injected: (args.faults.is_some() || args.store_faults()).then(|| run.injected_faults()),
        daemon_kills: run.daemon_kills,
        across_kills: across_kills(&instances, &run.daemon_kill_times),
        partition: partition.as_ref(),
    };
    // A daemon that died, or a worker that exited by itself (a panic, in the client library
    // or here), fails the run too, though the summary line has no column for it.
    let clean =
        report.passes() && run.daemon_failures.is_empty() && run.unexpected_exits.is_empty();

    print_details(&run, &instances, &analysis, &stats, torn, &orphan_contents);
    if let Some(ambiguous) = ambiguous {
        eprintln!("mutex-checker: ambiguous_writes={ambiguous} (the daemons' store counters)");
    }
    if let Some(p) = &partition {
        eprintln!(
            "mutex-checker: partitions={} skipped={} lost_before_ttl={} taken_after_ttl={} \
             untouched_after_heal={}",
            p.partitions, p.skipped, p.lost_before_ttl, p.taken_after_ttl, p.untouched_after_heal
        );
        for failure in &p.failures {
            eprintln!("mutex-checker: FAIL: {failure}");
        }
        if p.partitions == 0 {
            eprintln!("mutex-checker: FAIL: no partition happened: run longer");
        }
    }
    eprintln!(
        "mutex-checker: ran {:.1}s in {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    println!("{}", report.summary());
    // The run's objects (the fence counters, which stay by design) go after a clean run.
    if let Some(store) = run.object.as_ref().filter(|_| clean && !args.keep) {
        match store.remove_run() {
            Ok(removed) => eprintln!(
                "mutex-checker: removed the {removed} objects under {}*",
                store.target_prefix()
            ),
            Err(e) => eprintln!(
                "mutex-checker: warning: cannot remove {}*: {e}",
                store.target_prefix()
            ),
        }
    } else if let Some(store) = &run.object {
        eprintln!(
            "mutex-checker: objects kept under {}*",
            store.target_prefix()
        );
    }
    drop(run);
    if let Some(temp) = temp {
        if clean && !args.keep {
            drop(temp);
        } else {
            let kept = temp.keep();
            eprintln!("mutex-checker: logs kept in {}", kept.display());
        }
    }
    Ok(clean)
}

/// The verdict's numbers.
struct Report<'a> {
    args: &'a RunArgs,
    analysis: &'a Analysis,
    stats: &'a ResourceStats,
    kills: u64,
    orphans: usize,
    /// With injected faults: how many the daemons injected (from their logs).
    injected: Option<u64>,
    /// Daemons SIGKILLed and restarted.
    daemon_kills: u64,
    /// What became of the holdings those kills found.
    across_kills: KillHoldings,
    /// In partition mode: what the partitions showed.
    partition: Option<&'a PartitionReport>,
}

impl Report<'_> {
    fn summary(&self) -> String {
        let a = self.analysis;
        format!(
            "mutex-checker: daemons={} clients={} targets={} acquisitions={} overlaps={} \
             order_violations={} equal_tokens={} rejected_writes={} lost_leases={} \
             lost_late={} kills={} orphans={} store={}{}",
            self.args.daemons,
            self.args.daemons * self.args.clients,
            self.args.targets,
            a.acquisitions,
            a.overlaps,
            a.order_violations,
            a.equal_tokens,
            self.stats.rejected,
            a.lost_leases,
            a.lost_late,
            self.kills,
            self.orphans,
            self.args.store.name(),
            self.injected
                .map_or_else(String::new, |n| format!(" injected={n}"))
        ) + &self.chaos_columns()
            + &self.mode_columns()
    }

    /// What a mixed, semaphore or set run adds: its mode, how often shared sections
    /// overlapped (mixed), how many sets were held, how many of their waits timed out and the
    /// longest wait, finished or given up at the stop (set), the most sections of a target open at once, and the guarded reads refused.
    /// An exclusive run adds nothing: its line stays as it always was.
    fn mode_columns(&self) -> String {
        let a = self.analysis;
        let shared = match self.args.mode {
            Mode::Exclusive => return String::new(),
            Mode::Mixed { .. } => format!(
                " shared_sections={} shared_overlaps={}",
                a.shared_sections, a.shared_overlaps
            ),
            Mode::Slots(_) => String::new(),
            Mode::Set => format!(
                " set_sections={} wait_timeouts={} longest_wait_ms={}",
                a.set_sections,
                a.wait_timeouts,
                a.longest_wait / 1_000_000
            ),
        };
        format!(
            " mode={}{shared} max_concurrent={} rejected_reads={}",
            self.args.mode, a.max_concurrent, self.stats.reads_rejected
        )
    }

    /// What a chaos run adds: daemon kills, and the partitions' checks.
    fn chaos_columns(&self) -> String {
        let mut columns = String::new();
        if self.args.chaos || !self.args.kill_daemon_every.is_zero() {
            let k = self.across_kills;
            columns.push_str(&format!(
                " daemon_kills={} held_at_kills={} resumed={} lost={}",
                self.daemon_kills, k.held, k.resumed, k.lost
            ));
        }
        if let Some(p) = self.partition {
            columns.push_str(&format!(
                " partitions={} lost_before_ttl={} taken_after_ttl={} untouched_after_heal={} \
                 partition_failures={}",
                p.partitions,
                p.lost_before_ttl,
                p.taken_after_ttl,
                p.untouched_after_heal,
                p.failures.len()
            ));
        }
        columns
    }

    fn passes(&self) -> bool {
        let partitions_clean = self
            .partition
            .is_none_or(|p| p.failures.is_empty() && p.partitions > 0);
        self.analysis.is_clean()
            && self.stats.rejected == 0
            && self.stats.reads_rejected == 0
            && self.orphans == 0
            && partitions_clean
    }
}

fn print_details(
    run: &Run,
    instances: &[Instance],
    analysis: &Analysis,
    stats: &ResourceStats,
    torn: usize,
    orphans: &[String],
) {
    let mut acquire_errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut lost_reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut release_errors: BTreeMap<String, u64> = BTreeMap::new();
    for record in instances.iter().flat_map(|i| &i.records) {
        match record {
            Record::AcquireError { kind, .. } => {
                *acquire_errors.entry(kind.clone()).or_default() += 1
            }
            Record::Lost { reason, .. } => *lost_reasons.entry(reason.clone()).or_default() += 1,
            Record::Released {
                error: Some(error), ..
            } => *release_errors.entry(error.clone()).or_default() += 1,
            _ => {}
        }
    }
    // Killed after the exit record, before the release answered: the lock was still held,
    // and release-on-disconnect freed it.
    let killed_releasing = instances
        .iter()
        .filter(|i| i.killed_at.is_some() && matches!(i.records.last(), Some(Record::Exit { .. })))
        .count();
    eprintln!(
        "mutex-checker: processes={} killed_holding={} killed_releasing={} forced_kills={} \
         daemon_pauses={} torn_lines={} writes_accepted={} writes_skipped={} missing_tokens={} \
         unexpected_tokens={} tokens_checked={} unended={} release_losses={} malformed={} \
         reads_accepted={}",
        instances.len(),
        analysis.killed_holding,
        killed_releasing,
        run.forced_kills,
        run.pauses,
        torn,
        stats.accepted,
        analysis.skipped_writes,
        analysis.missing_tokens,
        analysis.unexpected_tokens,
        analysis.tokens_checked,
        analysis.unended,
        analysis.release_losses,
        analysis.malformed,
        stats.reads_accepted,
    );
    for (what, tally) in [
        ("acquire errors", &acquire_errors),
        ("lease losses", &lost_reasons),
        ("release errors", &release_errors),
    ] {
        for (text, count) in tally {
            eprintln!("mutex-checker: {what}: {count}× {text}");
        }
    }
    if run.args.store == StoreKind::Sftp {
        // Create-only mode refuses an acquire that finds a stale lock: a lock went stale
        // (its lease ran out unrenewed) although every holder's daemon was alive.
        if let Some(stale) = acquire_errors.get("Unsupported") {
            eprintln!(
                "mutex-checker: note: {stale} acquires met a stale lock (refused: SFTP has no \
                 stale steals); a lease ran out unrenewed with a TTL of {:?}",
                run.args.ttl
            );
        }
    }
    for exit in &run.unexpected_exits {
        eprintln!("mutex-checker: FAIL: {exit}");
    }
    for failure in &run.daemon_failures {
        eprintln!("mutex-checker: FAIL: {failure}");
    }
    for problem in &analysis.problems {
        eprintln!("mutex-checker: finding: {problem}");
    }
    if analysis.problems_left_off > 0 {
        eprintln!(
            "mutex-checker: … and {} more problems",
            analysis.problems_left_off
        );
    }
    for rejection in &stats.rejections {
        eprintln!("mutex-checker: FAIL: rejected write: {rejection}");
    }
    for orphan in orphans {
        eprintln!("mutex-checker: FAIL: orphan lock file {orphan}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lock_files_count_not_fences_or_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "t0.lock",
            "t0.lock.fence",
            ".t1.lock.3fa9.tmp",
            "t1.lock.fence",
            "t1",
            "t2.lock",
        ] {
            std::fs::write(dir.path().join(name), b"{}").unwrap();
        }
        let names: Vec<String> = lock_files(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["t0.lock", "t2.lock"]);
    }

    #[test]
    fn the_summary_line_has_the_agreed_form() {
        let args = RunArgs::default();
        let analysis = Analysis {
            acquisitions: 1234,
            lost_leases: 2,
            ..Analysis::default()
        };
        let stats = ResourceStats::default();
        let report = Report {
            args: &args,
            analysis: &analysis,
            stats: &stats,
            kills: 14,
            orphans: 0,
            injected: None,
            daemon_kills: 0,
            across_kills: KillHoldings::default(),
            partition: None,
        };
        assert_eq!(
            report.summary(),
            "mutex-checker: daemons=3 clients=9 targets=2 acquisitions=1234 overlaps=0 \
             order_violations=0 equal_tokens=0 rejected_writes=0 lost_leases=2 lost_late=0 \
             kills=14 orphans=0 store=file"
        );
        let faulty = Report {
            injected: Some(3),
            ..report
        };
        assert!(faulty
            .summary()
            .ends_with(" orphans=0 store=file injected=3"));
        let report = Report {
            injected: None,
            ..faulty
        };
        assert!(report.passes());
        let orphaned = Report {
            orphans: 1,
            ..report
        };
        assert!(!orphaned.passes());
    }

    #[test]
    fn a_mixed_or_semaphore_summary_ends_with_what_its_mode_showed() {
        let analysis = Analysis {
            acquisitions: 900,
            shared_sections: 600,
            shared_overlaps: 250,
            max_concurrent: 5,
            ..Analysis::default()
        };
        let stats = ResourceStats::default();
        let mixed = RunArgs {
            mode: Mode::Mixed { shared_share: 0.7 },
            ..RunArgs::chaos_defaults(StoreKind::File)
        };
        let report = Report {
            args: &mixed,
            analysis: &analysis,
            stats: &stats,
            kills: 3,
            orphans: 0,
            injected: Some(40),
            daemon_kills: 4,
            across_kills: KillHoldings::default(),
            partition: None,
        };
        assert!(report.summary().ends_with(
            " store=file injected=40 daemon_kills=4 held_at_kills=0 resumed=0 lost=0 mode=mixed shared_sections=600 \
             shared_overlaps=250 max_concurrent=5 rejected_reads=0"
        ));
        assert!(report.passes());
        let slots = RunArgs {
            mode: Mode::Slots(3),
            ..RunArgs::default()
        };
        let refused = ResourceStats {
            reads_rejected: 1,
            ..ResourceStats::default()
        };
        let report = Report {
            args: &slots,
            stats: &refused,
            injected: None,
            daemon_kills: 0,
            ..report
        };
        assert!(report
            .summary()
            .ends_with(" orphans=0 store=file mode=slots:3 max_concurrent=5 rejected_reads=1"));
        assert!(!report.passes());
    }

    #[test]
    fn a_set_summary_says_how_many_sets_ran_and_whether_they_stalled() {
        let analysis = Analysis {
            acquisitions: 800,
            set_sections: 400,
            longest_wait: 1_500_000_000,
            max_concurrent: 1,
            sets: true,
            ..Analysis::default()
        };
        let stats = ResourceStats::default();
        let set = RunArgs {
            mode: Mode::Set,
            targets: 3,
            ..RunArgs::default()
        };
        let report = Report {
            args: &set,
            analysis: &analysis,
            stats: &stats,
            kills: 3,
            orphans: 0,
            injected: None,
            daemon_kills: 0,
            across_kills: KillHoldings::default(),
            partition: None,
        };
        assert!(report.summary().ends_with(
            " store=file mode=set set_sections=400 wait_timeouts=0 longest_wait_ms=1500 \
             max_concurrent=1 rejected_reads=0"
        ));
        assert!(report.passes());
        let stalled = Analysis {
            wait_timeouts: 2,
            ..analysis.clone()
        };
        let report = Report {
            analysis: &stalled,
            ..report
        };
        assert!(report.summary().contains(" wait_timeouts=2 "));
        assert!(!report.passes());
    }

    #[test]
    fn a_chaos_summary_adds_daemon_kills_faults_and_partitions() {
        let args = RunArgs {
            partition: true,
            ..RunArgs::chaos_defaults(StoreKind::S3)
        };
        let analysis = Analysis::default();
        let stats = ResourceStats::default();
        let partition = PartitionReport {
            partitions: 2,
            lost_before_ttl: 2,
            taken_after_ttl: 2,
            untouched_after_heal: 2,
            ..PartitionReport::default()
        };
        let report = Report {
            args: &args,
            analysis: &analysis,
            stats: &stats,
            kills: 3,
            orphans: 0,
            injected: Some(40),
            daemon_kills: 4,
            across_kills: KillHoldings::default(),
            partition: Some(&partition),
        };
        assert!(report.summary().ends_with(
            " store=s3 injected=40 daemon_kills=4 held_at_kills=0 resumed=0 lost=0 partitions=2 lost_before_ttl=2 \
             taken_after_ttl=2 untouched_after_heal=2 partition_failures=0"
        ));
        assert!(report.passes());
        let failing = PartitionReport {
            failures: vec!["partition 1: too late".into()],
            ..partition.clone()
        };
        let failed = Report {
            partition: Some(&failing),
            ..report
        };
        assert!(!failed.passes());
        // A partition run in which no partition happened checked nothing: it fails.
        let none = PartitionReport::default();
        let idle = Report {
            partition: Some(&none),
            ..failed
        };
        assert!(!idle.passes());
    }
}
