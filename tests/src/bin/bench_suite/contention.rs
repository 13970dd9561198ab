//! Many clients at once, each on an OS thread of its own with its own connection: on one target
//! (acquisitions per second, waits, each client's share) and over many targets (cycles per
//! second). The same driver runs vfslockd's clients and the peers' polling loops.

use std::ffi::CString;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use vfslock::{Client, Lock, LockOptions};

use crate::peers::{sidecar_create, sidecar_remove, Resp};

/// One client of a contention run: takes the lock (waiting as its system waits), gives it back.
pub trait Contender {
    /// Takes the lock, however long it takes.
    fn acquire(&mut self);
    /// Gives it back.
    fn release(&mut self);
}

/// What one round of contention on one target came to.
pub struct ContentionRound {
    /// Acquisitions per second, all clients together.
    pub per_second: f64,
    /// Median wait from asking to holding, µs.
    pub wait_p50_us: f64,
    /// 99th percentile wait, µs.
    pub wait_p99_us: f64,
    /// The largest distance of one client's number of acquisitions from the mean, in percent
    /// of the mean: 0 is perfectly even.
    pub spread_percent: f64,
}

/// Runs `clients` contenders on one lock for `run_for`, each holding it for `hold` (a sleep).
pub fn contend<C: Contender>(
    clients: usize,
    hold: Duration,
    run_for: Duration,
    make: impl Fn(usize) -> C + Sync,
) -> ContentionRound {
    let start_line = Barrier::new(clients + 1);
    let (counts, mut waits, elapsed) = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|i| {
                let (make, start_line) = (&make, &start_line);
                scope.spawn(move || {
                    let mut contender = make(i);
                    let mut waits = Vec::with_capacity(4096);
                    start_line.wait();
                    let start = Instant::now();
                    let mut count = 0u64;
                    while start.elapsed() < run_for {
                        let asked = Instant::now();
                        contender.acquire();
                        waits.push(asked.elapsed());
                        if !hold.is_zero() {
                            std::thread::sleep(hold);
                        }
                        contender.release();
                        count += 1;
                    }
                    (count, waits)
                })
            })
            .collect();
        start_line.wait();
        let start = Instant::now();
        let mut counts = Vec::new();
        let mut all_waits = Vec::new();
        for thread in threads {
            let (count, waits) = thread.join().expect("contender thread");
            counts.push(count);
            all_waits.extend(waits);
        }
        (counts, all_waits, start.elapsed())
    });
    waits.sort();
    let total: u64 = counts.iter().sum();
    let mean = total as f64 / clients as f64;
    let spread = counts
        .iter()
        .map(|&c| (c as f64 - mean).abs() / mean.max(1e-9) * 100.0)
        .fold(0.0, f64::max);
    let percentile = |p: f64| {
        waits
            .get(((waits.len() as f64 * p) as usize).min(waits.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    ContentionRound {
        // Clients finish their last acquisition after the deadline: count the whole time.
        per_second: total as f64 / elapsed.as_secs_f64(),
        wait_p50_us: percentile(0.50),
        wait_p99_us: percentile(0.99),
        spread_percent: spread,
    }
}

/// Runs `clients` threads doing uncontended cycles on targets of their own for `run_for`;
/// returns cycles per second, all clients together.
pub fn many_targets(
    clients: usize,
    run_for: Duration,
    make: impl Fn(usize) -> Box<dyn FnMut() + Send> + Sync,
) -> f64 {
    let start_line = Barrier::new(clients + 1);
    let (total, elapsed) = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|i| {
                let (make, start_line) = (&make, &start_line);
                scope.spawn(move || {
                    let mut cycle = make(i);
                    start_line.wait();
                    let start = Instant::now();
                    let mut count = 0u64;
                    while start.elapsed() < run_for {
                        cycle();
                        count += 1;
                    }
                    count
                })
            })
            .collect();
        start_line.wait();
        let start = Instant::now();
        let total: u64 = threads
            .into_iter()
            .map(|t| t.join().expect("cycle thread"))
            .sum();
        (total, start.elapsed())
    });
    total as f64 / elapsed.as_secs_f64()
}

/// A vfslockd client on a thread of its own: its own single-threaded runtime and connection,
/// as a separate process would have.
pub struct VfsContender {
    lock: Lock,
    _client: Client,
    runtime: tokio::runtime::Runtime,
}

/// A single-threaded runtime for one client thread.
pub fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime")
}

impl VfsContender {
    /// Connects to the daemon at `socket` for a lock on `target`.
    pub fn new(socket: &Path, target: &str) -> VfsContender {
        VfsContender::with_options(socket, target, LockOptions::default())
    }

    /// The same, for a lock taken with `options` (a shared one).
    pub fn with_options(socket: &Path, target: &str, options: LockOptions) -> VfsContender {
        let runtime = client_runtime();
        let client = runtime
            .block_on(Client::connect(socket))
            .expect("connect to the bench daemon");
        VfsContender {
            lock: client.new_lock(target, options),
            _client: client,
            runtime,
        }
    }
}

impl Contender for VfsContender {
    fn acquire(&mut self) {
        self.runtime
            .block_on(self.lock.acquire_wait())
            .expect("acquire in line");
    }

    fn release(&mut self) {
        self.runtime.block_on(self.lock.release()).expect("release");
    }
}

/// Redis with a retry loop: `SET NX PX`, and on a loss sleep 1 ms and try again (the usual
/// client-side lock loop; Redis has no queue).
pub struct RedisPoller {
    conn: Resp,
    key: String,
    token: String,
}

impl RedisPoller {
    /// A poller on `key` with a token of its own.
    pub fn new(conn: Resp, key: &str, client: usize) -> RedisPoller {
        RedisPoller {
            conn,
            key: key.to_owned(),
            token: format!("bench-client-{client}"),
        }
    }
}

impl Contender for RedisPoller {
    fn acquire(&mut self) {
        while !self.conn.try_lock(&self.key, &self.token) {
            std::thread::sleep(POLL);
        }
    }

    fn release(&mut self) {
        self.conn.unlock(&self.key, &self.token);
    }
}

/// Sidecar lock files with a retry loop: exclusive create, and on a loss sleep 1 ms.
pub struct SidecarPoller {
    path: CString,
}

impl SidecarPoller {
    /// A poller on the sidecar file `path`.
    pub fn new(path: &Path) -> SidecarPoller {
        SidecarPoller {
            path: crate::peers::c_path(path),
        }
    }
}

impl Contender for SidecarPoller {
    fn acquire(&mut self) {
        while !sidecar_create(&self.path) {
            std::thread::sleep(POLL);
        }
    }

    fn release(&mut self) {
        sidecar_remove(&self.path);
    }
}

/// The retry interval of the polling peers.
pub const POLL: Duration = Duration::from_millis(1);
