//! Leases that outlive the daemon (issue 17), at size: N `file://` locks (tmpfs) held by the
//! client library over a few connections while the daemon restarts.
//!
//! * Planned restart (SIGUSR2, what `systemctl reload` sends: the daemon re-executes itself
//!   keeping its listening socket): the longest time no new request was served, seen by two
//!   probe clients looping on their own connection, one on `ping`, one on try-acquire and
//!   release of a fresh `file://` target each time; and the time from the signal until the
//!   restarted daemon had resumed all N holdings.
//! * Crash (SIGKILL) and a start 1 s later: the share of the N holdings resumed (the daemon's
//!   count, checked against the holders': still held, never lost, after the window closed) and
//!   the time from the start until all were resumed.
//! * Baseline, in the same run and with the same N locks held: the longest gap between served
//!   probes over a stretch without a restart, which the restart's gap is compared to.
//!
//! The resumed holdings are counted in the daemon's log (one `holding resumed` line each: the
//! daemon logs at `warn` except for its resume module, at `debug`). A probe that fails (no
//! daemon) tries again after 1 ms, so that a refused probe does not spin a pinned CPU.
//!
//! `bench_suite restart [--locks N] [--connections C] [--rounds R]` prints one markdown table.
//! `$VFSLOCK_BENCH_RESTART_LOG` sets the daemon's log filter instead (it must keep the resume
//! module at `debug`), `$VFSLOCK_BENCH_RESTART_KEEP_LOG=FILE` keeps its log there, and
//! `$VFSLOCK_BENCH_RESTART_TRACE=1` prints where each probe's widest gap lies and every failed
//! ping.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vfslock::{Lock, LockOptions};
use vfslock_tests::Launch;

use crate::daemon::BENCH_CONFIG;
use crate::Summary;

/// The resume window of the bench daemon: the default.
const WINDOW: Duration = Duration::from_secs(10);
/// How long after the kill the crashed daemon is started again.
const CRASH_DOWN_FOR: Duration = Duration::from_secs(1);
/// How long the baseline probes run.
const BASELINE_FOR: Duration = Duration::from_secs(2);
/// How long the probes go on after the last holding was resumed.
const AFTER_RESUME: Duration = Duration::from_millis(500);
/// The daemon's log line for each resumed holding.
const RESUMED: &str = "holding resumed";

/// What one run measures, with its parameters.
pub struct Params {
    /// Locks held.
    pub locks: usize,
    /// Client connections holding them.
    pub connections: usize,
    /// Planned restarts and crashes, each.
    pub rounds: usize,
}

/// The daemon under test: its launch (to restart it on the same socket and state directory)
/// and its process.
struct Daemon {
    launch: Launch,
    child: Option<Child>,
}

impl Daemon {
    fn start(bin_dir: &Path, dir: &Path) -> Daemon {
        let mut launch = Launch::in_dir(bin_dir.join("vfslockd"), dir);
        // `$VFSLOCK_BENCH_RESTART_LOG` (a filter) logs more, to see where a restart's time goes.
        launch.log_filter = std::env::var("VFSLOCK_BENCH_RESTART_LOG")
            .unwrap_or_else(|_| "warn,vfslockd::lock::resume=debug".into());
        std::fs::write(
            &launch.config,
            format!(
                "{BENCH_CONFIG}\n[locks]\nresume-window = \"{}s\"\n",
                WINDOW.as_secs()
            ),
        )
        .expect("daemon config");
        let mut daemon = Daemon {
            launch,
            child: None,
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none());
        self.child = Some(self.launch.start().unwrap_or_else(|e| panic!("{e}")));
    }

    fn pid(&self) -> libc::pid_t {
        self.child.as_ref().expect("running").id() as libc::pid_t
    }

    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL vfslockd");
        child.wait().expect("reap vfslockd");
    }

    fn log(&self) -> &Path {
        &self.launch.log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Counts the daemon's `holding resumed` lines as its log grows, reading only what is new.
struct ResumeCounter {
    path: PathBuf,
    offset: u64,
    partial: String,
    count: usize,
}

impl ResumeCounter {
    /// Counts from the log's current end on.
    fn from_end(path: &Path) -> ResumeCounter {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        ResumeCounter {
            path: path.to_owned(),
            offset,
            partial: String::new(),
            count: 0,
        }
    }

    /// Reads what was logged since the last call; returns the count so far.
    fn poll(&mut self) -> usize {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return self.count;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return self.count;
        }
        let mut new = String::new();
        if let Ok(read) = file.read_to_string(&mut new) {
            self.offset += read as u64;
        }
        self.partial.push_str(&new);
        if let Some(end) = self.partial.rfind('\n') {
            self.count += self.partial[..end].matches(RESUMED).count();
            self.partial.drain(..=end);
        }
        self.count
    }

    /// Polls every 2 ms until `n` were counted or `bound` passed; returns when the n-th was
    /// seen (`None` if not within the bound) and the count.
    fn wait_for(&mut self, n: usize, bound: Duration) -> (Option<Instant>, usize) {
        let start = Instant::now();
        loop {
            if self.poll() >= n {
                return (Some(Instant::now()), self.count);
            }
            if start.elapsed() > bound {
                return (None, self.count);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// A probe client looping on one kind of request; records the instant of every answer.
struct Probe {
    stop: Arc<AtomicBool>,
    served: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Copy)]
enum ProbeKind {
    Ping,
    TryAcquire,
}

impl Probe {
    async fn start(socket: &Path, kind: ProbeKind, dir: &Path, tag: &str) -> Probe {
        let client = vfslock::Client::connect(socket)
            .await
            .expect("connect the probe");
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(Mutex::new(Vec::with_capacity(100_000)));
        let (stop2, served2) = (stop.clone(), served.clone());
        let prefix = dir
            .join(format!("probe-{tag}"))
            .to_string_lossy()
            .into_owned();
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let ok = match kind {
                    ProbeKind::Ping => match client.ping().await {
                        Ok(_) => true,
                        Err(e) => {
                            if std::env::var_os("VFSLOCK_BENCH_RESTART_TRACE").is_some() {
                                eprintln!(
                                    "bench restart: ping failed at {:?}: {e}",
                                    std::time::SystemTime::now()
                                );
                            }
                            false
                        }
                    },
                    ProbeKind::TryAcquire => {
                        n += 1;
                        let mut lock =
                            client.new_lock(format!("{prefix}-{n}"), LockOptions::default());
                        let ok = lock.acquire().await.is_ok();
                        if ok {
                            let _ = lock.release().await;
                        }
                        ok
                    }
                };
                if ok {
                    served2.lock().expect("probe record").push(Instant::now());
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        Probe { stop, served, task }
    }

    /// Waits (polling, bounded) until the probe was answered once: the gaps that follow are
    /// measured from a served answer.
    fn wait_answered(&self) {
        let start = Instant::now();
        while self.served.lock().expect("probe record").is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "a probe never answered"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops the probe; returns the longest gap between answers from `from` on (the gap
    /// that spans `from` counts from the answer before it) and the answers counted.
    async fn finish(self, from: Instant) -> (Duration, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let served = self.served.lock().expect("probe record");
        let first = served.partition_point(|at| *at < from).saturating_sub(1);
        let window = &served[first..];
        let widest = window.windows(2).max_by_key(|pair| pair[1] - pair[0]);
        if std::env::var_os("VFSLOCK_BENCH_RESTART_TRACE").is_some() {
            if let Some(pair) = widest {
                eprintln!(
                    "bench restart: widest gap from {:?} to {:?} after the signal",
                    pair[0].saturating_duration_since(from),
                    pair[1].saturating_duration_since(from)
                );
            }
        }
        let gap = widest.map(|pair| pair[1] - pair[0]).unwrap_or_default();
        (gap, window.len())
    }
}

/// Holds `n` locks on `dir/held-<i>` over `connections` clients (acquired concurrently, one
/// task per client).
async fn hold(socket: &Path, dir: &Path, n: usize, connections: usize) -> Vec<Lock> {
    let mut tasks = Vec::new();
    for c in 0..connections {
        let client = vfslock::Client::connect(socket).await.expect("connect");
        let targets: Vec<String> = (c..n)
            .step_by(connections)
            .map(|i| dir.join(format!("held-{i}")).to_string_lossy().into_owned())
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut locks = Vec::with_capacity(targets.len());
            for target in targets {
                let mut lock = client.new_lock(target, LockOptions::default());
                lock.acquire().await.expect("acquire a held lock");
                locks.push(lock);
            }
            locks
        }));
    }
    let mut locks = Vec::with_capacity(n);
    for task in tasks {
        locks.extend(task.await.expect("holder task"));
    }
    locks
}

/// Takes again, on a fresh client, what was lost (so the next round holds all N again).
async fn retake(socket: &Path, locks: &mut [Lock]) -> usize {
    let client = vfslock::Client::connect(socket).await.expect("connect");
    let mut retaken = 0;
    for lock in locks.iter_mut().filter(|lock| !lock.is_held()) {
        let target = lock.target().to_owned();
        let mut fresh = client.new_lock(target, LockOptions::default());
        fresh
            .acquire_timeout(WINDOW * 3)
            .await
            .expect("take a lost lock again");
        *lock = fresh;
        retaken += 1;
    }
    retaken
}

/// The figures of one round.
#[derive(Default)]
struct Round {
    baseline_ping_gap: f64,
    baseline_try_gap: f64,
    planned_ping_gap: f64,
    planned_try_gap: f64,
    planned_resume_all: f64,
    crash_resumed_share: f64,
    crash_held_share: f64,
    crash_resume_all: f64,
    crash_try_gap: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the restart bench; returns its report as markdown.
pub fn run(bin_dir: &Path, params: &Params) -> String {
    let tmpfs = tempfile::Builder::new()
        .prefix("vfslock-bench-restart-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs dir (/dev/shm)");
    let work = tempfile::Builder::new()
        .prefix("vfslock-bench-restart-")
        .tempdir()
        .expect("daemon dir");
    let mut daemon = Daemon::start(bin_dir, work.path());
    let socket = daemon.launch.socket.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("client runtime");
    // The probes have a runtime of their own: sharing one with the holders' thousands of
    // resumes would measure how long the probe waited in this process, not at the daemon.
    let probe_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("probe runtime");
    let started = Instant::now();
    let mut locks = runtime.block_on(hold(
        &socket,
        tmpfs.path(),
        params.locks,
        params.connections,
    ));
    eprintln!(
        "bench restart: {} locks held over {} connections in {:.1} s",
        locks.len(),
        params.connections,
        started.elapsed().as_secs_f64()
    );
    let mut rounds = Vec::new();
    for round in 0..params.rounds {
        let mut r = Round::default();
        // Baseline: the probes alone, the same locks held.
        let probes = probe_runtime.block_on(async {
            (
                Probe::start(&socket, ProbeKind::Ping, tmpfs.path(), "base-ping").await,
                Probe::start(&socket, ProbeKind::TryAcquire, tmpfs.path(), "base-try").await,
            )
        });
        probes.0.wait_answered();
        probes.1.wait_answered();
        let from = Instant::now();
        std::thread::sleep(BASELINE_FOR);
        probe_runtime.block_on(async {
            r.baseline_ping_gap = ms(probes.0.finish(from).await.0);
            r.baseline_try_gap = ms(probes.1.finish(from).await.0);
        });

        // Planned restart: SIGUSR2, the daemon re-executes itself.
        let probes = probe_runtime.block_on(async {
            (
                Probe::start(&socket, ProbeKind::Ping, tmpfs.path(), "plan-ping").await,
                Probe::start(&socket, ProbeKind::TryAcquire, tmpfs.path(), "plan-try").await,
            )
        });
        probes.0.wait_answered();
        probes.1.wait_answered();
        let mut counter = ResumeCounter::from_end(daemon.log());
        let signalled = Instant::now();
        // SAFETY: plain syscall on the pid of our own child, which is not reaped.
        unsafe { libc::kill(daemon.pid(), libc::SIGUSR2) };
        let (all, count) = counter.wait_for(params.locks, WINDOW * 3);
        let all = all.unwrap_or_else(|| {
            panic!(
                "planned restart: {count} of {} holdings resumed",
                params.locks
            )
        });
        r.planned_resume_all = ms(all - signalled);
        std::thread::sleep(AFTER_RESUME);
        probe_runtime.block_on(async {
            r.planned_ping_gap = ms(probes.0.finish(signalled).await.0);
            r.planned_try_gap = ms(probes.1.finish(signalled).await.0);
        });
        let lost = locks.iter().filter(|lock| !lock.is_held()).count();
        assert_eq!(lost, 0, "planned restart: {lost} holdings lost");

        // Crash: SIGKILL, started again 1 s later.
        let probe = probe_runtime.block_on(Probe::start(
            &socket,
            ProbeKind::TryAcquire,
            tmpfs.path(),
            &format!("crash-{round}"),
        ));
        probe.wait_answered();
        let mut counter = ResumeCounter::from_end(daemon.log());
        let killed = Instant::now();
        daemon.kill();
        std::thread::sleep(CRASH_DOWN_FOR);
        let restarted = Instant::now();
        daemon.spawn();
        let (all, count) = counter.wait_for(params.locks, WINDOW + Duration::from_secs(2));
        // Nothing held: nothing to lose.
        let of = |n: usize| {
            if params.locks == 0 {
                1.0
            } else {
                n as f64 / params.locks as f64
            }
        };
        r.crash_resumed_share = of(count);
        r.crash_resume_all = all.map_or(f64::NAN, |all| ms(all - restarted));
        std::thread::sleep(AFTER_RESUME);
        let (gap, answers) = probe_runtime.block_on(probe.finish(killed));
        r.crash_try_gap = ms(gap);
        eprintln!("bench restart: crash probe: {answers} answers from the kill on");
        if all.is_none() {
            // Let the window close so that the holders' view is final.
            std::thread::sleep((restarted + WINDOW + Duration::from_secs(1)) - Instant::now());
        }
        let held = locks.iter().filter(|lock| lock.is_held()).count();
        r.crash_held_share = of(held);
        if held < params.locks {
            let retaken = runtime.block_on(retake(&socket, &mut locks));
            eprintln!("bench restart: round {round}: {retaken} lost locks taken again");
        }
        eprintln!(
            "bench restart: round {round}: baseline gap {:.1}/{:.1} ms, planned gap {:.1}/{:.1} ms, \
             all resumed {:.0} ms; crash: {count}/{} resumed ({held} held) in {:.0} ms",
            r.baseline_ping_gap,
            r.baseline_try_gap,
            r.planned_ping_gap,
            r.planned_try_gap,
            r.planned_resume_all,
            params.locks,
            r.crash_resume_all
        );
        rounds.push(r);
    }
    if let Some(keep) = std::env::var_os("VFSLOCK_BENCH_RESTART_KEEP_LOG") {
        std::fs::copy(daemon.log(), keep).expect("keep the daemon's log");
    }
    // The daemon's CPU cores as seen by this process (pinned or not).
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    report(params, cpus, &rounds)
}

fn report(params: &Params, cpus: usize, rounds: &[Round]) -> String {
    let summary =
        |f: &dyn Fn(&Round) -> f64| Summary::of(&rounds.iter().map(f).collect::<Vec<_>>());
    let cell = |s: Summary, unit: &str| {
        if s.min == s.max {
            format!("{:.1}{unit}", s.median)
        } else {
            format!("{:.1}{unit} ({:.1}–{:.1})", s.median, s.min, s.max)
        }
    };
    let share = |s: Summary| {
        if s.min == s.max {
            format!("{:.2}%", s.median * 100.0)
        } else {
            format!(
                "{:.2}% ({:.2}–{:.2})",
                s.median * 100.0,
                s.min * 100.0,
                s.max * 100.0
            )
        }
    };
    let base_ping = summary(&|r| r.baseline_ping_gap);
    let base_try = summary(&|r| r.baseline_try_gap);
    let plan_ping = summary(&|r| r.planned_ping_gap);
    let plan_try = summary(&|r| r.planned_try_gap);
    let plan_all = summary(&|r| r.planned_resume_all);
    let crash_share = summary(&|r| r.crash_resumed_share);
    let crash_held = summary(&|r| r.crash_held_share);
    let crash_all = summary(&|r| r.crash_resume_all);
    let crash_gap = summary(&|r| r.crash_try_gap);
    let worst_gap = plan_ping.max.max(plan_try.max);
    let mut out = format!(
        "### Restart with {} held `file://` locks (tmpfs), {} connections, {} CPU(s), {} round(s)\n\n\
         Median (min–max) over the rounds; a gap is the longest time between two answers a \
         probe client got.\n\n\
         | figure | value | baseline (no restart) | ratio |\n| --- | --- | --- | --- |\n",
        params.locks,
        params.connections,
        cpus,
        rounds.len()
    );
    out += &format!(
        "| planned restart (SIGUSR2): longest gap, `ping` probe | {} | {} | {:.0}× |\n",
        cell(plan_ping, " ms"),
        cell(base_ping, " ms"),
        plan_ping.median / base_ping.median.max(0.001)
    );
    out += &format!(
        "| planned restart: longest gap, try-acquire probe | {} | {} | {:.0}× |\n",
        cell(plan_try, " ms"),
        cell(base_try, " ms"),
        plan_try.median / base_try.median.max(0.001)
    );
    out += &format!(
        "| planned restart: signal → all {} resumed | {} | | |\n",
        params.locks,
        cell(plan_all, " ms")
    );
    out += &format!(
        "| crash (SIGKILL), started {} s later: resumed share (daemon's count) | {} | | |\n",
        CRASH_DOWN_FOR.as_secs(),
        share(crash_share)
    );
    out += &format!(
        "| crash: share still held by their clients, never lost | {} | | |\n",
        share(crash_held)
    );
    out += &format!(
        "| crash: start → all resumed | {} | | |\n",
        cell(crash_all, " ms")
    );
    out += &format!(
        "| crash: longest gap of the try-acquire probe (includes the {} s down) | {} | | |\n\n",
        CRASH_DOWN_FOR.as_secs(),
        cell(crash_gap, " ms")
    );
    out += &format!(
        "Targets (issue 17): planned-restart gap under 1 s: {} (worst round {:.0} ms); \
         resumed share after a crash and a start 1 s later: all: {}.\n",
        if worst_gap < 1000.0 { "met" } else { "MISSED" },
        worst_gap,
        if crash_share.min >= 1.0 && crash_held.min >= 1.0 {
            "met"
        } else {
            "MISSED"
        }
    );
    out
}
