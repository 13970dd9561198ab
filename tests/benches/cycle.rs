//! Uncontended lock cycle: try-acquire + release through `vfslockd`, next to its floors.
//!
//! ```text
//! cargo build --release --bins && cargo bench -p vfslock-tests --bench cycle
//! ```
//!
//! Prints one table. Each figure is the median of several rounds (min and max beside it), all
//! measured in the same run, so the ratios compare like with like on a noisy shared machine:
//! - a bare Unix-socket round trip (16 bytes each way, echo thread): the transport floor;
//! - a `ping` through the daemon: protocol + session, no lock;
//! - the same store operations done in-process (create the lock file, delete it): the store
//!   floor, for `mem://` and for `file://` on tmpfs and on disk;
//! - the daemon's try-acquire + release cycle on each store.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use vfslock::LockOptions;
use vfslock_tests::Daemon;
use vfslockd::lockfile::LockRecord;
use vfslockd::store::{Conditional, Created, Stores};

const ROUNDS: usize = 7;
const CYCLES: usize = 2_000;

struct Figure {
    name: String,
    per_cycle: Vec<Duration>,
}

impl Figure {
    fn sorted(&self) -> Vec<Duration> {
        let mut v = self.per_cycle.clone();
        v.sort();
        v
    }
    fn median(&self) -> Duration {
        let v = self.sorted();
        v[v.len() / 2]
    }
}

/// Runs `cycle` CYCLES times per round, ROUNDS rounds (after one warm-up round).
async fn measure(name: &str, mut cycle: impl AsyncFnMut()) -> Figure {
    let mut per_cycle = Vec::with_capacity(ROUNDS);
    for round in 0..=ROUNDS {
        let start = Instant::now();
        for _ in 0..CYCLES {
            cycle().await;
        }
        if round > 0 {
            per_cycle.push(start.elapsed() / CYCLES as u32);
        }
    }
    Figure {
        name: name.to_owned(),
        per_cycle,
    }
}

fn echo_server(dir: &Path) -> UnixStream {
    let path = dir.join("echo.sock");
    let listener = UnixListener::bind(&path).expect("bind echo socket");
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 16];
        while stream.read_exact(&mut buf).is_ok() {
            if stream.write_all(&buf).is_err() {
                break;
            }
        }
    });
    UnixStream::connect(&path).expect("connect echo socket")
}

fn lock_bytes() -> Vec<u8> {
    LockRecord {
        created_at: SystemTime::now(),
        acquired_at: SystemTime::now(),
        ttl: Duration::from_secs(30),
        hostname: "bench-host".into(),
        pid: 4242,
        owner_id: None,
        lock_id: "0123456789abcdef0123456789abcdef".into(),
        daemon_id: "fedcba9876543210fedcba9876543210".into(),
        token: Some(1),
        uid: None,
        detached: false,
        peer_ttl: None,
    }
    .to_json()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let tmpfs = tempfile::tempdir_in("/dev/shm").expect("tmpfs dir (/dev/shm)");
    // Disk: beside the build, which lives on a real filesystem (not tmpfs) on these machines.
    let disk_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-disk");
    std::fs::create_dir_all(&disk_root).expect("disk dir");
    let disk_root = disk_root.canonicalize().expect("disk dir");
    let disk = tempfile::tempdir_in(&disk_root).expect("disk dir");

    let mut figures = Vec::new();

    // Transport floor.
    let mut echo = echo_server(scratch.path());
    figures.push(
        measure("unix socket round trip (16 B echo)", async || {
            let mut buf = [7u8; 16];
            echo.write_all(&buf).expect("echo write");
            echo.read_exact(&mut buf).expect("echo read");
        })
        .await,
    );

    // Store floors, in process.
    let stores = Stores::new(&vfslockd::config::Settings::defaults())
        .await
        .expect("stores");
    let bytes = lock_bytes();
    for (label, scheme, path) in [
        (
            "in-process mem create+delete",
            vfslockd::address::Scheme::Mem,
            "root/bench/data.csv.lock".to_owned(),
        ),
        (
            "in-process file create+delete (tmpfs)",
            vfslockd::address::Scheme::File,
            tmpfs
                .path()
                .join("floor.lock")
                .to_string_lossy()
                .into_owned(),
        ),
        (
            "in-process file create+delete (disk)",
            vfslockd::address::Scheme::File,
            disk.path()
                .join("floor.lock")
                .to_string_lossy()
                .into_owned(),
        ),
    ] {
        let target = match scheme {
            vfslockd::address::Scheme::Mem => "mem:///bench/data.csv".to_owned(),
            _ => path.trim_end_matches(".lock").to_owned(),
        };
        let address = vfslockd::address::Address::parse(&target).expect("bench target");
        let store = stores.for_address(&address).expect("store");
        let store = &*store;
        let (path, bytes) = (&path, &bytes);
        figures.push(
            measure(label, async || {
                let fixed = bytes.clone();
                let created = store
                    .create(path, 0, Box::new(move |_| fixed.clone()))
                    .await
                    .unwrap();
                let Created::Won(written) = created else {
                    panic!("uncontended create")
                };
                let version = written.version();
                assert_eq!(
                    store.delete(path, &version).await.unwrap(),
                    Conditional::Done
                );
            })
            .await,
        );
    }

    // Through the daemon.
    let daemon = Daemon::start_with("[locks]\nidle-actor-timeout = \"60s\"\n");
    let client = daemon.client().await;
    figures.push(
        measure("vfslockd ping", async || {
            client.ping().await.expect("ping");
        })
        .await,
    );
    for (label, target) in [
        (
            "vfslockd mem:// acquire+release",
            "mem:///bench/data.csv".to_owned(),
        ),
        (
            "vfslockd file:// acquire+release (tmpfs)",
            tmpfs.path().join("data.csv").to_string_lossy().into_owned(),
        ),
        (
            "vfslockd file:// acquire+release (disk)",
            disk.path().join("data.csv").to_string_lossy().into_owned(),
        ),
    ] {
        let mut lock = client.new_lock(target, LockOptions::default());
        figures.push(
            measure(label, async || {
                lock.acquire().await.expect("uncontended acquire");
                lock.release().await.expect("release");
            })
            .await,
        );
    }
    drop(daemon);
    print_table(&figures);
    object_stores().await;
}

/// Requests the seed's algorithm spends per acquire + release on S3: exists check, temporary
/// write, copy, temporary delete; exists check, delete.
const SEED_S3_REQUESTS: f64 = 6.0;

/// Object stores, when the test servers run (`tests/servers/start.sh`, then
/// `. tests/servers/run/env`): time and store requests per uncontended cycle, from the
/// daemon's own counters, next to the seed's.
async fn object_stores() {
    use vfslock_tests::Store;
    if std::env::var_os("VFSLOCK_TEST_S3_ENDPOINT").is_none() {
        println!(
            "\nobject stores: skipped (start the test servers: tests/servers/start.sh, then \
             . tests/servers/run/env)"
        );
        return;
    }
    const CYCLES: u32 = 200;
    println!("\nobject stores, uncontended acquire + release, {CYCLES} cycles (test servers on loopback)\n");
    println!(
        "| {:<8} | {:>9} | {:>16} | {:>16} | {:>14} |",
        "store", "ms/cycle", "requests (fence)", "requests (none)", "seed requests"
    );
    println!(
        "|{:-<10}|{:->11}|{:->18}|{:->18}|{:->16}|",
        "", "", "", "", ""
    );
    for store in [Store::S3, Store::Gcs, Store::Azblob, Store::Sftp] {
        let mut per_cycle = Vec::new();
        let mut elapsed = Duration::ZERO;
        for fencing in [true, false] {
            let mut config = store.config();
            if !fencing {
                config = config.replace("[[stores.object]]", "[[stores.object]]\nfencing = false");
            }
            let daemon = Daemon::start_with(&config);
            let client = daemon.client().await;
            let target = store.target("bench");
            let counted = |status: &vfslock::StatusInfo| {
                status
                    .stores
                    .iter()
                    .find(|s| s.scheme == store.prefix())
                    .and_then(|s| s.counters.iter().find(|(name, _)| name == "requests"))
                    .map_or(0, |(_, n)| *n)
            };
            let mut lock = client.new_lock(target.url.clone(), LockOptions::default());
            // One warm-up cycle: the first reads the fence once.
            lock.acquire().await.expect("acquire");
            lock.release().await.expect("release");
            let before = counted(&client.status().await.expect("status"));
            let start = Instant::now();
            for _ in 0..CYCLES {
                lock.acquire().await.expect("uncontended acquire");
                lock.release().await.expect("release");
            }
            if fencing {
                elapsed = start.elapsed() / CYCLES;
            }
            let after = counted(&client.status().await.expect("status"));
            per_cycle.push((after - before) as f64 / f64::from(CYCLES));
        }
        let fenced = if store == Store::Sftp {
            "– (create-only)".to_owned()
        } else {
            format!("{:.1}", per_cycle[0])
        };
        let seed = if store == Store::S3 {
            format!("{SEED_S3_REQUESTS:.0}")
        } else {
            "–".to_owned()
        };
        println!(
            "| {:<8} | {:>9.2} | {:>16} | {:>16.1} | {:>14} |",
            format!("{store:?}").to_lowercase(),
            elapsed.as_secs_f64() * 1e3,
            fenced,
            per_cycle[1],
            seed
        );
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn print_table(figures: &[Figure]) {
    let floor = |name: &str| {
        figures
            .iter()
            .find(|f| f.name == name)
            .map(Figure::median)
            .expect("floor measured")
    };
    let socket = floor("unix socket round trip (16 B echo)");
    println!("\nuncontended cycle, median of {ROUNDS} rounds × {CYCLES} cycles (min–max)\n");
    println!(
        "| {:<42} | {:>9} | {:>17} | {:>10} | {:>9} | {:>10} |",
        "operation", "µs/cycle", "min–max µs", "cycles/s", "× socket", "× in-proc"
    );
    println!(
        "|{:-<44}|{:->11}|{:->19}|{:->12}|{:->11}|{:->12}|",
        "", "", "", "", "", ""
    );
    for figure in figures {
        let sorted = figure.sorted();
        let median = figure.median();
        let in_process = if figure.name.contains("mem://") {
            Some(floor("in-process mem create+delete"))
        } else if figure.name.contains("(tmpfs)") {
            Some(floor("in-process file create+delete (tmpfs)"))
        } else if figure.name.contains("(disk)") {
            Some(floor("in-process file create+delete (disk)"))
        } else {
            None
        };
        let ratio = |base: Duration| micros(median) / micros(base);
        println!(
            "| {:<42} | {:>9.1} | {:>7.1} – {:>7.1} | {:>10.0} | {:>9.2} | {:>10} |",
            figure.name,
            micros(median),
            micros(sorted[0]),
            micros(sorted[sorted.len() - 1]),
            1.0 / median.as_secs_f64(),
            ratio(socket),
            in_process
                .filter(|_| figure.name.starts_with("vfslockd"))
                .map(|base| format!("{:.2}", ratio(base)))
                .unwrap_or_else(|| "–".into()),
        );
    }
}
