//! Where an uncontended cycle crosses threads and CPUs: per-thread context switches, CPU
//! migrations and CPU time per cycle, for the daemon and for the client, read from the
//! scheduler's own counters (`/proc/<pid>/task/<tid>/sched`) around a run of cycles.
//!
//! A request whose two ends run on different CPUs pays for waking an idle CPU at every hop;
//! these counters show which thread of which process does the waking and the moving, without a
//! profiler. `bench_suite hops` prints one table per run; `docs/benchmark.md` quotes them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::contention::client_runtime;
use crate::daemon::BenchDaemon;

/// One thread's scheduler counters.
#[derive(Clone, Copy, Default)]
struct Sched {
    switches: f64,
    voluntary: f64,
    migrations: f64,
    cpu_ms: f64,
}

/// The counters of every thread of `pid`, by thread id, with its name.
fn threads(pid: u32) -> Snapshot {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        let Ok(text) = std::fs::read_to_string(dir.join("sched")) else {
            continue;
        };
        let field = |key: &str| {
            text.lines()
                .find_map(|line| {
                    let (k, v) = line.split_once(':')?;
                    (k.trim() == key).then(|| v.trim().parse::<f64>().ok())?
                })
                .unwrap_or(0.0)
        };
        out.insert(
            tid,
            (
                name,
                Sched {
                    switches: field("nr_switches"),
                    voluntary: field("nr_voluntary_switches"),
                    migrations: field("se.nr_migrations"),
                    cpu_ms: field("se.sum_exec_runtime"),
                },
            ),
        );
    }
    out
}

/// Per-thread differences between two snapshots, summed over threads of one name.
fn per_name(before: &Snapshot, after: &Snapshot) -> BTreeMap<String, (usize, Sched)> {
    let mut out: BTreeMap<String, (usize, Sched)> = BTreeMap::new();
    for (tid, (name, now)) in after {
        let then = before.get(tid).map(|(_, s)| *s).unwrap_or_default();
        let entry = out.entry(name.clone()).or_default();
        entry.0 += 1;
        entry.1.switches += now.switches - then.switches;
        entry.1.voluntary += now.voluntary - then.voluntary;
        entry.1.migrations += now.migrations - then.migrations;
        entry.1.cpu_ms += now.cpu_ms - then.cpu_ms;
    }
    out
}

/// Runs `cycles` uncontended cycles on a `mem://` or `file://` target through a fresh daemon
/// from `bin_dir`, with the async client on this thread (a current-thread runtime) or the
/// blocking client, or Redis's cycle (`redis`), and returns the table.
pub fn run(bin_dir: &Path, cycles: usize, target_kind: &str, blocking: bool) -> String {
    let dir = tempfile::Builder::new()
        .prefix("vfslock-hops-")
        .tempdir()
        .expect("scratch dir");
    if target_kind == "redis" {
        return redis(dir.path(), cycles);
    }
    let daemon = BenchDaemon::start(bin_dir, &dir.path().join("daemon"));
    let target = match target_kind {
        "file" => dir.path().join("data.csv").to_string_lossy().into_owned(),
        _ => "mem:///hops/data.csv".to_owned(),
    };
    let me = std::process::id();
    let mut cycle_us = 0.0;
    let mut snapshots = None;
    if blocking {
        let client = vfslock::blocking::Client::connect(&daemon.socket).expect("connect");
        let mut lock = client.new_lock(target.clone(), Default::default());
        for _ in 0..cycles / 10 {
            lock.acquire().expect("acquire");
            lock.release().expect("release");
        }
        let before = (threads(daemon.pid()), threads(me));
        let start = Instant::now();
        for _ in 0..cycles {
            lock.acquire().expect("acquire");
            lock.release().expect("release");
        }
        cycle_us = start.elapsed().as_secs_f64() * 1e6 / cycles as f64;
        snapshots = Some((before, (threads(daemon.pid()), threads(me))));
    } else {
        let runtime = client_runtime();
        runtime.block_on(async {
            let client = daemon.client().await;
            let mut lock = client.new_lock(target.clone(), Default::default());
            for _ in 0..cycles / 10 {
                lock.acquire().await.expect("acquire");
                lock.release().await.expect("release");
            }
            let before = (threads(daemon.pid()), threads(me));
            let start = Instant::now();
            for _ in 0..cycles {
                lock.acquire().await.expect("acquire");
                lock.release().await.expect("release");
            }
            cycle_us = start.elapsed().as_secs_f64() * 1e6 / cycles as f64;
            snapshots = Some((before, (threads(daemon.pid()), threads(me))));
        });
    }
    let ((daemon_before, client_before), (daemon_after, client_after)) =
        snapshots.expect("measured");
    let mut table = format!(
        "{target_kind}:// cycle, {} client: {cycle_us:.1} µs/cycle over {cycles} cycles \
         (CPUs allowed: {})\n\n{HEADER}",
        if blocking {
            "blocking"
        } else {
            "async (current-thread)"
        },
        crate::sections::allowed_cpus(),
    );
    table.push_str(&rows(
        cycles,
        &[
            ("vfslockd", &daemon_before, &daemon_after),
            ("client", &client_before, &client_after),
        ],
    ));
    table
}

/// The same counters for Redis's lock cycle (`SET NX PX`, compare-and-delete) over TCP, from
/// a blocking client on this thread: the peer the cycle is judged against.
fn redis(dir: &Path, cycles: usize) -> String {
    let Some(server) = crate::peers::RedisServer::start(dir) else {
        return "redis-server is not installed\n".into();
    };
    let mut conn = server.tcp().expect("connect to redis");
    let mut cycle = || {
        assert!(conn.try_lock("hops:cycle", "hops-token"), "uncontended");
        conn.unlock("hops:cycle", "hops-token");
    };
    (0..cycles / 10).for_each(|_| cycle());
    let me = std::process::id();
    let before = (threads(server.pid()), threads(me));
    let start = Instant::now();
    (0..cycles).for_each(|_| cycle());
    let cycle_us = start.elapsed().as_secs_f64() * 1e6 / cycles as f64;
    let after = (threads(server.pid()), threads(me));
    let mut table = format!(
        "Redis lock cycle over TCP, blocking client: {cycle_us:.1} µs/cycle over {cycles} \
         cycles (CPUs allowed: {})\n\n{HEADER}",
        crate::sections::allowed_cpus(),
    );
    table.push_str(&rows(
        cycles,
        &[
            ("redis-server", &before.0, &after.0),
            ("client", &before.1, &after.1),
        ],
    ));
    table
}

const HEADER: &str =
    "| process | thread (count) | switches/cycle | voluntary | migrations/cycle | CPU µs/cycle |\n\
                      |---|---|---|---|---|---|\n";

type Snapshot = BTreeMap<u32, (String, Sched)>;

/// One row per thread name of each process that did anything.
fn rows(cycles: usize, processes: &[(&str, &Snapshot, &Snapshot)]) -> String {
    let mut table = String::new();
    let n = cycles as f64;
    for (process, before, after) in processes {
        for (name, (count, d)) in per_name(before, after) {
            if d.switches == 0.0 && d.cpu_ms < 0.001 {
                continue;
            }
            table.push_str(&format!(
                "| {process} | {name} ({count}) | {:.2} | {:.2} | {:.3} | {:.1} |\n",
                d.switches / n,
                d.voluntary / n,
                d.migrations / n,
                d.cpu_ms * 1000.0 / n,
            ));
        }
    }
    table
}
