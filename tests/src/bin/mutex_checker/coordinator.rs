//! The coordinator (`mutex_checker run`): starts the daemons sharing one data directory (or
//! one prefix in an object store's bucket, or run-unique names in the SFTP root), the guarded
//! resource and the workers; kills random workers while they run; stops everything; looks for
//! orphan lock files (or objects); analyses the records and prints the verdict.
//!
//! On SFTP (create-only mode) there are no fencing tokens, stale steals or handoffs: the
//! workers skip the resource write, the analysis checks overlaps and late losses only, and
//! the TTL is long (10 s) so that no lock goes stale: a killed worker's lock is released by
//! its daemon when the connection drops.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::analysis::{analyze, Analysis, Instance};
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

/// The daemons' config: waiters on another daemon's holder re-check quickly.
const DAEMON_CONFIG: &str = "[locks]\nrecheck-min = \"5ms\"\nrecheck-max = \"50ms\"\n";

/// The same on an object store, where a re-check costs three requests (stat, read, stat) to
/// a server that may serve one request at a time.
const OBJECT_DAEMON_CONFIG: &str = "[locks]\nrecheck-min = \"10ms\"\nrecheck-max = \"100ms\"\n";

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
        }
    }
}

impl RunArgs {
    /// The defaults for a run on `store`. An object store answers in milliseconds, not
    /// microseconds (moto serves one request at a time): fewer daemons and workers, longer
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
}

/// The path of a workspace binary: in `$VFSLOCK_BIN_DIR`, else next to this executable
/// (`target/<profile>/`), else one level up (when this executable is in `deps/`).
fn find_bin(name: &str) -> Result<PathBuf, String> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("VFSLOCK_BIN_DIR") {
        candidates.push(PathBuf::from(dir).join(name));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(name));
            if let Some(up) = dir.parent() {
                candidates.push(up.join(name));
            }
        }
    }
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| {
            format!(
                "{name} not found (looked at {}): build the binaries first (`cargo build --bins`)",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Makes `command`'s process receive `signal` when the coordinator dies, so that a killed
/// coordinator leaves no daemons or workers behind.
fn die_with_parent(command: &mut Command, signal: libc::c_int) {
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

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

struct Daemon {
    index: usize,
    child: Option<Child>,
    socket: PathBuf,
    config: PathBuf,
    log: PathBuf,
    paused_until: Option<Instant>,
}

impl Daemon {
    fn host_id(&self) -> String {
        format!("host-{}", self.index)
    }

    fn spawn(&mut self, vfslockd: &Path) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let mut command = Command::new(vfslockd);
        command
            .arg("--host-id")
            .arg(self.host_id())
            .arg("--socket")
            .arg(&self.socket)
            .arg("--config")
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("MUTEX_CHECKER_DAEMON_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        die_with_parent(&mut command, libc::SIGTERM);
        let child = command
            .spawn()
            .map_err(|e| format!("start {}: {e}", vfslockd.display()))?;
        self.child = Some(child);
        self.paused_until = None;
        self.wait_ready()
    }

    /// Waits until the daemon answers a ping on its socket.
    fn wait_ready(&mut self) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        loop {
            let answered = runtime.block_on(async {
                let attempt = async {
                    let client = vfslock::Client::connect(&self.socket).await.ok()?;
                    client.ping().await.ok()
                };
                tokio::time::timeout(Duration::from_secs(2), attempt)
                    .await
                    .ok()
                    .flatten()
                    .is_some()
            });
            if answered {
                return Ok(());
            }
            let child = self.child.as_mut().expect("spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!(
                    "vfslockd {} exited with {status} before serving:\n{}",
                    self.host_id(),
                    tail(&self.log, 30)
                ));
            }
            if start.elapsed() > DEADLINE {
                return Err(format!(
                    "vfslockd {} did not serve within {DEADLINE:?}:\n{}",
                    self.host_id(),
                    tail(&self.log, 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
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
    vfslockd: PathBuf,
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
}

impl Drop for Run {
    fn drop(&mut self) {
        // On every path (a panic included), no process of this run survives it.
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
            .arg(&daemon.socket)
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
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        die_with_parent(&mut command, libc::SIGKILL);
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
    /// ours.
    fn holder_of_random_target(&mut self) -> Option<usize> {
        let target = self.rng.below(self.args.targets as u64);
        let bytes = match &self.object {
            Some(store) => store.read_lock(target as usize)?,
            None => std::fs::read(self.data().join(format!("t{target}.lock"))).ok()?,
        };
        let meta: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let pid = u32::try_from(meta.get("pid")?.as_u64()?).ok()?;
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
                    tail(&daemon.log, 30)
                ));
                daemon.spawn(&self.vfslockd)?;
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
            std::thread::sleep(Duration::from_millis(2));
        }
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
                    let client = vfslock::Client::connect(&daemon.socket).await.ok()?;
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
                    tail(&daemon.log, 30)
                ));
            }
        }
    }
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
    let object = match args.store {
        StoreKind::File => None,
        kind => Some(ObjectStore::from_env(kind)?),
    };
    let mut daemon_config = match &object {
        None => DAEMON_CONFIG.to_owned(),
        Some(store) => format!("{OBJECT_DAEMON_CONFIG}\n{}", store.config_table()),
    };
    if let Some(rate) = args.faults {
        daemon_config.push_str(&format!("\n[faults]\nwrite-then-fail = {rate:?}\n"));
    }
    let vfslockd = find_bin("vfslockd")?;
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
    if object.is_none() && !leftovers.is_empty() {
        eprintln!(
            "mutex-checker: warning: lock files left from an earlier run (stale after their \
             TTL): {leftovers:?}"
        );
    }
    let resource = ResourceServer::start(&dir.join("resource.sock"))
        .map_err(|e| format!("resource server: {e}"))?;

    let mut run = Run {
        args: args.clone(),
        dir: dir.clone(),
        exe,
        vfslockd,
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
    };
    if let Some(store) = &run.object {
        eprintln!("mutex-checker: targets {}t0..", store.target_prefix());
    }
    for index in 0..args.daemons {
        let config = dir.join(format!("daemon-{index}.toml"));
        std::fs::write(&config, &daemon_config).map_err(|e| format!("config: {e}"))?;
        let mut daemon = Daemon {
            index,
            child: None,
            socket: dir.join(format!("d{index}.sock")),
            config,
            log: dir.join(format!("daemon-{index}.log")),
            paused_until: None,
        };
        daemon.spawn(&run.vfslockd)?;
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
    let origin = now_ns();
    let started = Instant::now();
    run.drive()?;
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
    for info in &run.instances {
        let (records, torn_lines) =
            read_log(&info.log).map_err(|e| format!("{}: {e}", info.log.display()))?;
        torn += torn_lines;
        instances.push(Instance {
            client: info.client.clone(),
            incarnation: info.incarnation,
            records,
            killed_at: info.killed_at,
        });
    }
    let analysis = analyze(&instances, run_end, origin, args.store.has_tokens());
    let stats = resource.stats();
    let report = Report {
        args: &args,
        analysis: &analysis,
        stats: &stats,
        kills: run.kills,
        orphans: orphans.len(),
        injected: ambiguous.filter(|_| args.faults.is_some()),
    };
    // A daemon that died, or a worker that exited by itself (a panic, in the client library
    // or here), fails the run too, though the summary line has no column for it.
    let clean =
        report.passes() && run.daemon_failures.is_empty() && run.unexpected_exits.is_empty();

    print_details(&run, &instances, &analysis, &stats, torn, &orphan_contents);
    if let Some(ambiguous) = ambiguous {
        eprintln!("mutex-checker: ambiguous_writes={ambiguous} (the daemons' store counters)");
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
    /// With `--faults`: the daemons' ambiguous writes (injected faults among them).
    injected: Option<u64>,
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
        )
    }

    fn passes(&self) -> bool {
        self.analysis.is_clean() && self.stats.rejected == 0 && self.orphans == 0
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
         unexpected_tokens={} tokens_checked={} unended={} release_losses={} malformed={}",
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
}
