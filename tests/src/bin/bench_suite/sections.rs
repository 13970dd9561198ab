//! The sections of one pass, each measuring vfslockd next to what it is compared with in the
//! same run: uncontended cycle, same-host contention, many targets, scale, renewal, command
//! line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vfslock::{Client, Lock, LockOptions};

use crate::contention::{
    client_runtime, contend, many_targets, RedisPoller, SidecarPoller, VfsContender,
};
use crate::daemon::{cpu_time, rss_bytes, BenchDaemon};
use crate::peers::{self, Flock, RedisServer};
use crate::{Figure, Options, Pass, Summary};

/// Figure names the report looks up to judge the targets.
pub mod names {
    /// The transport floor.
    pub const SOCKET: &str = "unix socket round trip (16 B)";
    /// Two round trips through Tokio on both ends.
    pub const ASYNC_ECHO: &str = "2 round trips, Tokio on both ends (16 B)";
    /// The kernel lock.
    pub const FLOCK: &str = "flock(2) lock + unlock";
    /// Sidecar file on disk, in-process.
    pub const SIDECAR_DISK: &str = "sidecar create+write+close+unlink, in-process (disk)";
    /// Sidecar file on tmpfs, in-process.
    pub const SIDECAR_TMPFS: &str = "sidecar create+write+close+unlink, in-process (tmpfs)";
    /// Two round trips plus the sidecar cycle on disk.
    pub const SIMULATED: &str = "simulated daemon: 2 round trips + sidecar (disk)";
    /// vfslockd on `mem://`.
    pub const VFS_MEM: &str = "vfslockd mem://";
    /// vfslockd on `file://` on disk.
    pub const VFS_FILE: &str = "vfslockd file:// (disk)";
    /// vfslockd on `file://` on tmpfs.
    pub const VFS_FILE_TMPFS: &str = "vfslockd file:// (tmpfs)";
    /// A shared acquire + release on `file://` (disk) while another local shared holder holds.
    pub const VFS_FILE_SHARED: &str = "vfslockd file:// shared, another local holder (disk)";
    /// The lock-file writes that cycle asked of the store, per cycle.
    pub const VFS_FILE_SHARED_WRITES: &str = "store writes per shared cycle beside a holder";
    /// Shared-mode contention systems (8 clients, the short hold), beside the exclusive ones.
    pub const SHARED_CONTENDERS: [(&str, &str); 2] = [
        ("vfslockd mem://, shared", "vfslockd mem://"),
        ("vfslockd file://, shared", "vfslockd file://"),
    ];
    /// Redis over TCP.
    pub const REDIS_TCP: &str = "Redis SET NX PX + compare-and-delete (TCP)";
    /// Redis over its Unix socket.
    pub const REDIS_UNIX: &str = "Redis SET NX PX + compare-and-delete (Unix socket)";
    /// Python's filelock.
    pub const PY_FILELOCK: &str = "py-filelock FileLock acquire + release (disk)";
    /// Contention systems.
    pub const CONTENDERS: [&str; 4] = [
        "vfslockd mem://",
        "vfslockd file://",
        "Redis, 1 ms polling",
        "sidecar files, 1 ms polling",
    ];
    /// One contention figure's name.
    pub fn contention(clients: usize, hold_us: u64, system: &str) -> String {
        format!("{clients} clients, hold {hold_us} µs: {system}")
    }
    /// Many targets, vfslockd mem://.
    pub const MANY_MEM: &str = "32 clients × 10,000 targets: vfslockd mem://";
    /// Many targets, vfslockd file://.
    pub const MANY_FILE: &str = "32 clients × 10,000 targets: vfslockd file://";
    /// Many targets, Redis.
    pub const MANY_REDIS: &str = "32 clients × 10,000 keys: Redis (TCP)";
    /// 100,000 held locks.
    pub const HELD: &str = "100,000 locks held by 100 clients (mem://)";
    /// Cycle with nothing held.
    pub const CYCLE_EMPTY: &str = "mem:// cycle, nothing held";
    /// Cycle with 100,000 held.
    pub const CYCLE_HELD: &str = "mem:// cycle, 100,000 held";
    /// Idle connections.
    pub const IDLE: &str = "1,000 idle connections";
    /// Cycle with idle connections.
    pub const CYCLE_IDLE: &str = "mem:// cycle, 1,000 idle connections open";
    /// Renewal.
    pub const RENEWAL: &str = "10,000 idle held locks, 30 s TTL (mem://)";
    /// `vfslockctl run`.
    pub const CTL_RUN: &str = "vfslockctl run -n TARGET -- true (file://)";
    /// `flock(1)`.
    pub const FLOCK_CMD: &str = "flock -n FILE true";
    /// Process start floor.
    pub const TRUE_CMD: &str = "true (process start floor)";
}

/// Where a pass keeps its files.
struct Dirs {
    /// Sockets, configs, logs.
    scratch: tempfile::TempDir,
    /// Lock files on a disk file system.
    disk: tempfile::TempDir,
    /// Lock files on tmpfs.
    tmpfs: tempfile::TempDir,
}

/// Runs every selected section and returns what it measured.
pub fn run_pass(label: &str, options: &Options) -> Pass {
    let mut pass = Pass {
        label: label.to_owned(),
        ..Pass::default()
    };
    let affinity = allowed_cpus();
    eprintln!("bench: pass {label}: CPUs {affinity}");
    pass.notes
        .push(format!("{label}: running on CPUs {affinity}"));
    pass.notes.push(raise_open_files());
    pass.notes.push(
        "vfslockd limits raised for the scale section: max-connections 8192, \
         max-locks-per-session 200000 (defaults 4096, 100000); logging at warn"
            .into(),
    );
    let disk_root = std::env::var_os("VFSLOCK_BENCH_DISK")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let dirs = Dirs {
        scratch: tempfile::Builder::new()
            .prefix("vfslock-bench-")
            .tempdir()
            .expect("scratch dir"),
        disk: tempfile::Builder::new()
            .prefix("vfslock-bench-")
            .tempdir_in(&disk_root)
            .expect("disk dir"),
        tmpfs: tempfile::Builder::new()
            .prefix("vfslock-bench-")
            .tempdir_in("/dev/shm")
            .expect("tmpfs dir (/dev/shm)"),
    };
    pass.notes.push(format!(
        "disk lock files in {} ({}), tmpfs ones in /dev/shm",
        disk_root.display(),
        fs_type(dirs.disk.path())
    ));
    let runtime = client_runtime();
    let redis = RedisServer::start(dirs.scratch.path());
    match &redis {
        Some(server) => pass.notes.push(format!(
            "redis-server started by the bench on 127.0.0.1:{} and its Unix socket (pid {}, \
             persistence off), stopped after",
            server.port,
            server.pid()
        )),
        None => pass
            .notes
            .push("redis-server is not installed: Redis figures skipped".into()),
    }
    let daemon = BenchDaemon::start(&options.bin_dir, &dirs.scratch.path().join("main"));
    let mut figures = Vec::new();
    if options.runs("cycle") {
        eprintln!("bench: uncontended cycle");
        cycle(
            options,
            &dirs,
            &runtime,
            &daemon,
            redis.as_ref(),
            &mut figures,
            &mut pass.notes,
        );
    }
    if options.runs("contention") {
        eprintln!("bench: contention");
        contention(options, &dirs, &daemon, redis.as_ref(), &mut figures);
    }
    if options.runs("many") {
        eprintln!("bench: many targets");
        many(options, &dirs, &daemon, redis.as_ref(), &mut figures);
    }
    drop(daemon);
    drop(redis);
    if options.runs("scale") {
        eprintln!("bench: scale");
        scale(options, &dirs, &runtime, &mut figures);
    }
    if options.runs("renewal") {
        eprintln!("bench: renewal");
        renewal(options, &dirs, &runtime, &mut figures);
    }
    if options.runs("cli") {
        eprintln!("bench: command line");
        command_line(options, &dirs, &mut figures);
    }
    pass.figures = figures;
    pass
}

fn figure(section: &str, name: impl Into<String>, metrics: &[(&str, Summary)]) -> Figure {
    Figure {
        section: section.into(),
        name: name.into(),
        metrics: metrics.iter().map(|(m, s)| ((*m).to_owned(), *s)).collect(),
    }
}

fn single(value: f64) -> Summary {
    Summary::of(&[value])
}

/// µs per try-acquire + release through the daemon, per round, after one warm-up round.
async fn vfs_rounds(options: &Options, client: &Client, target: &str) -> Vec<f64> {
    let mut lock = client.new_lock(target, LockOptions::default());
    let mut rounds = Vec::with_capacity(options.rounds);
    for round in 0..=options.rounds {
        let start = Instant::now();
        for _ in 0..options.cycles {
            lock.acquire().await.expect("uncontended acquire");
            lock.release().await.expect("release");
        }
        if round > 0 {
            rounds.push(start.elapsed().as_secs_f64() * 1e6 / options.cycles as f64);
        }
    }
    rounds
}

const US: &str = "µs/cycle";

/// Runs one cycle `n` times.
type Cycler<'a> = Box<dyn FnMut(usize) + 'a>;

fn cycle(
    options: &Options,
    dirs: &Dirs,
    runtime: &tokio::runtime::Runtime,
    daemon: &BenchDaemon,
    redis: Option<&RedisServer>,
    figures: &mut Vec<Figure>,
    notes: &mut Vec<String>,
) {
    let mut cyclers: Vec<(&str, Cycler)> = Vec::new();
    let mut echo = peers::socket_server(dirs.scratch.path(), "echo.sock", None);
    cyclers.push((
        names::SOCKET,
        Box::new(move |n| (0..n).for_each(|_| peers::round_trip(&mut echo, b'E'))),
    ));
    let mut async_echo = peers::AsyncEcho::start(dirs.scratch.path());
    cyclers.push((
        names::ASYNC_ECHO,
        Box::new(move |n| {
            for _ in 0..n {
                async_echo.round_trip();
                async_echo.round_trip();
            }
        }),
    ));
    let flock = Flock::open(&dirs.disk.path().join("flock-floor"));
    cyclers.push((
        names::FLOCK,
        Box::new(move |n| (0..n).for_each(|_| flock.cycle())),
    ));
    for (name, dir) in [
        (names::SIDECAR_DISK, dirs.disk.path()),
        (names::SIDECAR_TMPFS, dirs.tmpfs.path()),
    ] {
        let path = peers::c_path(&dir.join("floor.lock"));
        cyclers.push((
            name,
            Box::new(move |n| {
                for _ in 0..n {
                    assert!(peers::sidecar_create(&path), "uncontended sidecar");
                    peers::sidecar_remove(&path);
                }
            }),
        ));
    }
    let mut simulated = peers::socket_server(
        dirs.scratch.path(),
        "simulated.sock",
        Some(dirs.disk.path().join("simulated.lock")),
    );
    cyclers.push((
        names::SIMULATED,
        Box::new(move |n| {
            for _ in 0..n {
                peers::round_trip(&mut simulated, b'A');
                peers::round_trip(&mut simulated, b'R');
            }
        }),
    ));
    let client = runtime.block_on(daemon.client());
    for (name, target) in [
        (names::VFS_MEM, "mem:///bench/cycle".to_owned()),
        (names::VFS_FILE, file_target(dirs.disk.path(), "cycle")),
        (
            names::VFS_FILE_TMPFS,
            file_target(dirs.tmpfs.path(), "cycle"),
        ),
    ] {
        let mut lock = client.new_lock(target, LockOptions::default());
        cyclers.push((
            name,
            Box::new(move |n| {
                runtime.block_on(async {
                    for _ in 0..n {
                        lock.acquire().await.expect("uncontended acquire");
                        lock.release().await.expect("release");
                    }
                })
            }),
        ));
    }
    // A shared acquire + release while another local shared holder (on another connection)
    // holds the same target: it joins and leaves the daemon's entry, with no store write.
    let shared_target = file_target(dirs.disk.path(), "cycle-shared");
    let other = runtime.block_on(daemon.client());
    let mut other_holder = other.new_lock(&shared_target, LockOptions::default().shared());
    runtime
        .block_on(other_holder.acquire())
        .expect("the other shared holder");
    let mut shared = client.new_lock(&shared_target, LockOptions::default().shared());
    cyclers.push((
        names::VFS_FILE_SHARED,
        Box::new(move |n| {
            runtime.block_on(async {
                for _ in 0..n {
                    shared.acquire().await.expect("a shared join");
                    shared.release().await.expect("release");
                }
            })
        }),
    ));
    if let Some(redis) = redis {
        for (name, conn) in [
            (names::REDIS_TCP, redis.tcp()),
            (names::REDIS_UNIX, redis.unix()),
        ] {
            let mut conn = conn.expect("connect to redis");
            cyclers.push((
                name,
                Box::new(move |n| {
                    for _ in 0..n {
                        assert!(
                            conn.try_lock("bench:cycle", "bench-token"),
                            "uncontended SET NX"
                        );
                        conn.unlock("bench:cycle", "bench-token");
                    }
                }),
            ));
        }
    }
    // Round-robin: round r of every figure before round r + 1 of any, so that a burst of load
    // from elsewhere on the machine lands on all figures alike instead of on one.
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); cyclers.len()];
    for round in 0..=options.rounds {
        for (i, (_, cycler)) in cyclers.iter_mut().enumerate() {
            let start = Instant::now();
            cycler(options.cycles);
            if round > 0 {
                rounds[i].push(start.elapsed().as_secs_f64() * 1e6 / options.cycles as f64);
            }
        }
    }
    for ((name, _), rounds) in cyclers.iter().zip(rounds) {
        figures.push(figure("cycle", *name, &[(US, Summary::of(&rounds))]));
    }
    // The store writes of the shared cycle, from the daemon's own counter of lock-file writes.
    let writes = || {
        runtime.block_on(client.status()).ok().and_then(|status| {
            status
                .stores
                .iter()
                .find(|s| s.scheme == "file")
                .and_then(|s| s.counters.iter().find(|(name, _)| name == "writes"))
                .map(|(_, n)| *n)
        })
    };
    let mut shared = client.new_lock(&shared_target, LockOptions::default().shared());
    let before = writes();
    runtime.block_on(async {
        for _ in 0..options.cycles {
            shared.acquire().await.expect("a shared join");
            shared.release().await.expect("release");
        }
    });
    if let (Some(before), Some(after)) = (before, writes()) {
        let per_cycle = (after - before) as f64 / options.cycles as f64;
        figures.push(figure(
            "cycle",
            names::VFS_FILE_SHARED_WRITES,
            &[("writes/cycle", Summary::of(&[per_cycle]))],
        ));
    }
    runtime
        .block_on(other_holder.release())
        .expect("release the other shared holder");
    // Python is slow to start and slow per cycle: a tenth of the cycles, in one process.
    match peers::py_filelock(
        dirs.disk.path(),
        options.rounds,
        (options.cycles / 10).max(50),
    ) {
        Some(rounds) => figures.push(figure(
            "cycle",
            names::PY_FILELOCK,
            &[(US, Summary::of(&rounds))],
        )),
        None => notes.push(
            "py-filelock skipped: $VFSLOCK_BENCH_PYTHON (a Python with filelock) is not set".into(),
        ),
    }
}

fn file_target(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

/// The short hold of the contention runs, a sleep inside the critical section.
const SHORT_HOLD: Duration = Duration::from_micros(100);

fn contention(
    options: &Options,
    dirs: &Dirs,
    daemon: &BenchDaemon,
    redis: Option<&RedisServer>,
    figures: &mut Vec<Figure>,
) {
    for clients in [8, 64] {
        for hold in [Duration::ZERO, SHORT_HOLD] {
            for system in names::CONTENDERS {
                if system.starts_with("Redis") && redis.is_none() {
                    continue;
                }
                let mut rounds = Vec::new();
                for round in 0..options.contend_rounds {
                    let target = format!("contend-{clients}-{}-{round}", hold.as_micros());
                    let outcome = match system {
                        "vfslockd mem://" => {
                            let target = format!("mem:///bench/{target}");
                            contend(clients, hold, options.contend_for, |_| {
                                VfsContender::new(&daemon.socket, &target)
                            })
                        }
                        "vfslockd file://" => {
                            let target = file_target(dirs.disk.path(), &target);
                            contend(clients, hold, options.contend_for, |_| {
                                VfsContender::new(&daemon.socket, &target)
                            })
                        }
                        "Redis, 1 ms polling" => {
                            let redis = redis.expect("checked above");
                            contend(clients, hold, options.contend_for, |i| {
                                RedisPoller::new(redis.tcp().expect("redis"), &target, i)
                            })
                        }
                        _ => {
                            let path = dirs.disk.path().join(format!("{target}.lock"));
                            contend(clients, hold, options.contend_for, |_| {
                                SidecarPoller::new(&path)
                            })
                        }
                    };
                    rounds.push(outcome);
                }
                let name = names::contention(clients, hold.as_micros() as u64, system);
                figures.push(contention_figure(name, &rounds));
            }
        }
    }
    // Shared locks beside the exclusive rows: 8 clients, the short hold, where readers that
    // may hold at once should get through several times as fast.
    for (system, _) in names::SHARED_CONTENDERS {
        let mut rounds = Vec::new();
        for round in 0..options.contend_rounds {
            let name = format!("contend-shared-{round}");
            let target = if system.contains("mem://") {
                format!("mem:///bench/{name}")
            } else {
                file_target(dirs.disk.path(), &name)
            };
            rounds.push(contend(8, SHORT_HOLD, options.contend_for, |_| {
                VfsContender::with_options(&daemon.socket, &target, LockOptions::default().shared())
            }));
        }
        let name = names::contention(8, SHORT_HOLD.as_micros() as u64, system);
        figures.push(contention_figure(name, &rounds));
    }
}

/// The contention figure `name` from its rounds: throughput, wait percentiles, fairness.
fn contention_figure(name: String, rounds: &[crate::contention::ContentionRound]) -> Figure {
    let metric = |f: fn(&crate::contention::ContentionRound) -> f64| {
        Summary::of(&rounds.iter().map(f).collect::<Vec<_>>())
    };
    eprintln!("bench:   {name}: {:.0}/s", metric(|r| r.per_second).median);
    figure(
        "contention",
        name,
        &[
            ("acq/s", metric(|r| r.per_second)),
            ("wait p50 µs", metric(|r| r.wait_p50_us)),
            ("wait p99 µs", metric(|r| r.wait_p99_us)),
            ("share spread ±%", metric(|r| r.spread_percent)),
        ],
    )
}

const MANY_CLIENTS: usize = 32;
const MANY_TARGETS: usize = 10_000;

fn many(
    options: &Options,
    dirs: &Dirs,
    daemon: &BenchDaemon,
    redis: Option<&RedisServer>,
    figures: &mut Vec<Figure>,
) {
    // Each client walks its own stripe of the targets: no two clients meet on one target.
    let stripe = |client: usize| {
        (client..MANY_TARGETS)
            .step_by(MANY_CLIENTS)
            .collect::<Vec<_>>()
    };
    let vfs = |base: String| {
        let socket = &daemon.socket;
        move |client: usize| -> Box<dyn FnMut() + Send> {
            let runtime = client_runtime();
            let connection = runtime
                .block_on(Client::connect(socket))
                .expect("connect to the bench daemon");
            let mut locks: Vec<Lock> = stripe(client)
                .into_iter()
                .map(|t| connection.new_lock(format!("{base}/t{t}"), LockOptions::default()))
                .collect();
            let mut next = 0;
            Box::new(move || {
                let lock = &mut locks[next % stripe_len(client)];
                next += 1;
                runtime.block_on(async {
                    lock.acquire().await.expect("uncontended acquire");
                    lock.release().await.expect("release");
                });
            })
        }
    };
    let mut run = |name: &str, make: &(dyn Fn(usize) -> Box<dyn FnMut() + Send> + Sync)| {
        let rounds: Vec<f64> = (0..options.contend_rounds)
            .map(|_| many_targets(MANY_CLIENTS, options.contend_for, make))
            .collect();
        eprintln!("bench:   {name}: {:.0}/s", Summary::of(&rounds).median);
        figures.push(figure("many", name, &[("cycles/s", Summary::of(&rounds))]));
    };
    run(names::MANY_MEM, &vfs("mem:///bench/many".into()));
    let many_dir = dirs.disk.path().join("many");
    std::fs::create_dir_all(&many_dir).expect("many-target dir");
    run(
        names::MANY_FILE,
        &vfs(file_target(&many_dir, "").trim_end_matches('/').to_owned()),
    );
    if let Some(redis) = redis {
        run(
            names::MANY_REDIS,
            &|client: usize| -> Box<dyn FnMut() + Send> {
                let mut conn = redis.tcp().expect("redis");
                let keys: Vec<String> = stripe(client)
                    .into_iter()
                    .map(|t| format!("bench:many:{t}"))
                    .collect();
                let token = format!("bench-client-{client}");
                let mut next = 0;
                Box::new(move || {
                    let key = &keys[next % keys.len()];
                    next += 1;
                    assert!(conn.try_lock(key, &token), "uncontended SET NX");
                    conn.unlock(key, &token);
                })
            },
        );
    }
}

fn stripe_len(client: usize) -> usize {
    (MANY_TARGETS - client).div_ceil(MANY_CLIENTS)
}

const SCALE_CLIENTS: usize = 100;
const SCALE_PER_CLIENT: usize = 1_000;
const IDLE_CONNECTIONS: usize = 1_000;

fn scale(
    options: &Options,
    dirs: &Dirs,
    runtime: &tokio::runtime::Runtime,
    figures: &mut Vec<Figure>,
) {
    let daemon = BenchDaemon::start(&options.bin_dir, &dirs.scratch.path().join("scale"));
    let pid = daemon.pid();
    runtime.block_on(async {
        let probe = daemon.client().await;
        let empty = vfs_rounds(options, &probe, "mem:///bench/scale-probe").await;
        let mut clients = Vec::new();
        for _ in 0..SCALE_CLIENTS {
            clients.push(daemon.client().await);
        }
        settle().await;
        let before = rss_bytes(pid);
        // An hour's lease: no renewal falls inside this section (the renewal section measures
        // those), but each holding still has its renewal timer.
        let options_held = LockOptions::default().ttl(Duration::from_secs(3600));
        let start = Instant::now();
        let mut held: Vec<Lock> = Vec::with_capacity(SCALE_CLIENTS * SCALE_PER_CLIENT);
        for (c, client) in clients.iter().enumerate() {
            let mut acquires = tokio::task::JoinSet::new();
            for i in 0..SCALE_PER_CLIENT {
                let mut lock =
                    client.new_lock(format!("mem:///bench/held/{c}/{i}"), options_held.clone());
                acquires.spawn(async move {
                    lock.acquire().await.expect("acquire a held lock");
                    lock
                });
            }
            while let Some(lock) = acquires.join_next().await {
                held.push(lock.expect("acquire task"));
            }
        }
        let took = start.elapsed();
        settle().await;
        let after = rss_bytes(pid);
        let status = probe.status().await.expect("status");
        assert_eq!(status.held as usize, held.len(), "every lock held");
        let loaded = vfs_rounds(options, &probe, "mem:///bench/scale-probe").await;
        let per_lock = after.saturating_sub(before) as f64 / held.len() as f64;
        eprintln!(
            "bench:   {} held: RSS {:.1} MiB, {per_lock:.0} B per lock",
            held.len(),
            after as f64 / 1048576.0
        );
        figures.push(figure(
            "scale",
            names::HELD,
            &[
                ("daemon RSS MiB", single(after as f64 / 1048576.0)),
                ("bytes per held lock", single(per_lock)),
                ("acquired in s", single(took.as_secs_f64())),
            ],
        ));
        figures.push(figure(
            "scale",
            names::CYCLE_EMPTY,
            &[(US, Summary::of(&empty))],
        ));
        figures.push(figure(
            "scale",
            names::CYCLE_HELD,
            &[(US, Summary::of(&loaded))],
        ));
        drop(held);
        drop(clients);
    });
    drop(daemon);
    // Idle connections on a fresh daemon, whose memory the 100,000 locks do not cloud.
    let daemon = BenchDaemon::start(&options.bin_dir, &dirs.scratch.path().join("idle"));
    let pid = daemon.pid();
    runtime.block_on(async {
        let probe = daemon.client().await;
        let _ = vfs_rounds(options, &probe, "mem:///bench/idle-probe").await;
        settle().await;
        let before = rss_bytes(pid);
        let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
        for _ in 0..IDLE_CONNECTIONS {
            idle.push(daemon.client().await);
        }
        settle().await;
        let after = rss_bytes(pid);
        let loaded = vfs_rounds(options, &probe, "mem:///bench/idle-probe").await;
        figures.push(figure(
            "scale",
            names::IDLE,
            &[(
                "bytes per connection",
                single(after.saturating_sub(before) as f64 / IDLE_CONNECTIONS as f64),
            )],
        ));
        figures.push(figure(
            "scale",
            names::CYCLE_IDLE,
            &[(US, Summary::of(&loaded))],
        ));
        drop(idle);
    });
}

/// Lets the daemon finish what it was doing (spawned tasks, freed buffers) before a reading.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

const RENEWED_LOCKS: usize = 10_000;
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

fn renewal(
    options: &Options,
    dirs: &Dirs,
    runtime: &tokio::runtime::Runtime,
    figures: &mut Vec<Figure>,
) {
    let daemon = BenchDaemon::start(&options.bin_dir, &dirs.scratch.path().join("renewal"));
    let pid = daemon.pid();
    runtime.block_on(async {
        let holder = daemon.client().await;
        let sampler = daemon.client().await;
        let mut acquires = tokio::task::JoinSet::new();
        for i in 0..RENEWED_LOCKS {
            let mut lock = holder.new_lock(
                format!("mem:///bench/renewed/{i}"),
                LockOptions::default().ttl(Duration::from_secs(30)),
            );
            acquires.spawn(async move {
                lock.acquire().await.expect("acquire a renewed lock");
                lock
            });
        }
        let mut held = Vec::with_capacity(RENEWED_LOCKS);
        while let Some(lock) = acquires.join_next().await {
            held.push(lock.expect("acquire task"));
        }
        // Watch from the moment they are all held: the first renewals come a third of the TTL
        // after their grants.
        let cpu_before = cpu_time(pid);
        let start = Instant::now();
        let mut samples = vec![renewals(&sampler).await];
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.tick().await;
        while start.elapsed() < options.renewal_window {
            tick.tick().await;
            samples.push(renewals(&sampler).await);
        }
        let cpu = cpu_time(pid).saturating_sub(cpu_before);
        let elapsed = start.elapsed();
        let windows: Vec<u64> = samples.windows(2).map(|w| w[1].saturating_sub(w[0])).collect();
        let total: u64 = windows.iter().sum();
        let mean = total as f64 / windows.len().max(1) as f64;
        let peak = windows.iter().copied().max().unwrap_or(0);
        let cpu_percent = cpu.as_secs_f64() / elapsed.as_secs_f64() * 100.0;
        eprintln!(
            "bench:   {total} renewals in {elapsed:?}, peak {peak} per 100 ms (mean {mean:.1}), CPU {cpu_percent:.2} %"
        );
        figures.push(figure(
            "renewal",
            names::RENEWAL,
            &[
                ("daemon CPU % of one core", single(cpu_percent)),
                ("renewals seen", single(total as f64)),
                ("window s", single(elapsed.as_secs_f64())),
                ("peak per 100 ms", single(peak as f64)),
                ("peak ÷ mean", single(if mean > 0.0 { peak as f64 / mean } else { 0.0 })),
            ],
        ));
        drop(held);
    });
}

/// The daemon's renewal count (the `renewals` counter of its `mem://` store in `status`).
async fn renewals(client: &Client) -> u64 {
    let status = client.status().await.expect("status");
    status
        .stores
        .iter()
        .find(|s| s.scheme.starts_with("mem"))
        .and_then(|s| s.counters.iter().find(|(name, _)| name == "renewals"))
        .map_or(0, |(_, n)| *n)
}

fn command_line(options: &Options, dirs: &Dirs, figures: &mut Vec<Figure>) {
    let daemon = BenchDaemon::start(&options.bin_dir, &dirs.scratch.path().join("cli"));
    let ctl = options.bin_dir.join("vfslockctl");
    let target = file_target(dirs.disk.path(), "cli-target");
    let flock_file = dirs.disk.path().join("cli-flock");
    // A `Command` can be run again and again; each run is a whole new process.
    let mut ctl_run = Command::new(&ctl);
    ctl_run
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["run", "-n", &target, "--", "true"]);
    let mut flock = Command::new("flock");
    flock.arg("-n").arg(&flock_file).arg("true");
    let mut commands = [
        (names::CTL_RUN, ctl_run),
        (names::FLOCK_CMD, flock),
        (names::TRUE_CMD, Command::new("true")),
    ];
    for (name, command) in &mut commands {
        let mut rounds = Vec::new();
        for round in 0..=options.rounds {
            let start = Instant::now();
            for _ in 0..options.spawns {
                let status = command
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .status()
                    .expect("start the command");
                assert!(status.success(), "{name} failed: {status}");
            }
            if round > 0 {
                rounds.push(start.elapsed().as_secs_f64() * 1e3 / options.spawns as f64);
            }
        }
        figures.push(figure(
            "cli",
            *name,
            &[("ms/process", Summary::of(&rounds))],
        ));
    }
}

/// The CPUs this process may run on, as a list (`0` when pinned by `taskset -c 0`).
pub fn allowed_cpus() -> String {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer and size for this process (pid 0).
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return "unknown".into();
    }
    let cpus: Vec<String> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `set` is initialized; the index is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .map(|cpu| cpu.to_string())
        .collect();
    cpus.join(",")
}

/// Raises the open-file limit as far as allowed (the scale section holds 1,100 connections,
/// both ends in this host); the daemons started later inherit it.
fn raise_open_files() -> String {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    let before = limit.rlim_cur;
    let wanted: libc::rlim_t = 65_536;
    let raised = libc::rlimit {
        rlim_cur: wanted.max(limit.rlim_cur),
        rlim_max: wanted.max(limit.rlim_max),
    };
    // SAFETY: valid pointer to an rlimit. Raising the hard limit needs root; else the soft
    // limit goes up to the hard one.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let soft = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) };
    }
    // SAFETY: valid pointer to an rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    format!(
        "open-file limit (RLIMIT_NOFILE): {before} before, {} now (asked for {wanted}; the \
         scale section needs about 2,300), for the bench and the daemons it starts",
        limit.rlim_cur
    )
}

/// The file system type of `dir`, for the notes.
fn fs_type(dir: &Path) -> String {
    let path = peers::c_path(dir);
    // SAFETY: a zeroed statfs is a valid output buffer.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and buffer.
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return "unknown".into();
    }
    match stat.f_type {
        0xEF53 => "ext4".into(),
        0x0102_1994 => "tmpfs".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        other => format!("fs type {other:#x}"),
    }
}
