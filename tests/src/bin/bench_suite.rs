//! `bench_suite`: vfslockd's performance next to its floors and its peers, in one run.
//!
//! ```text
//! tests/bench.sh [--quick]                       # installs, builds, runs both passes, reports
//! bench_suite pass --label pinned --out FILE [--quick] [--rounds N] [--sections LIST]
//! bench_suite report --pinned FILE --unpinned FILE --markdown FILE --svg FILE
//! bench_suite drive --socket S --target T [--cycles N] [--targets N | --clients N]   # load for a profiler
//! bench_suite compare --old F1,F2.. --new F1,F2.. [--tolerance 0.05]  # two builds' passes
//! bench_suite hops [--cycles N] [--target mem|file] [--blocking]  # switches, migrations
//! bench_suite restart [--locks N] [--connections C] [--rounds R]  # held locks across restarts
//! ```
//!
//! A pass measures every section once, under whatever CPU affinity it was started with
//! (`tests/bench.sh` runs one under `taskset -c 0` and one unpinned), and writes its figures as
//! JSON; `report` turns two passes into the tables `docs/benchmark.md` quotes, the targets of
//! issue 7 judged on the pinned pass, and an SVG chart. Every figure is the median of several
//! rounds, with min and max, and every ratio compares figures of the same pass. Sections:
//! `cycle`, `contention`, `many`, `scale`, `renewal`, `cli`.
//!
//! The binaries it starts (`vfslockd`, `vfslockctl`) are found beside this one, or in
//! `$VFSLOCK_BIN_DIR`; Redis is `redis-server` on `PATH` (skipped when missing) and Python's
//! `filelock` is run by `$VFSLOCK_BENCH_PYTHON` (skipped when unset).

#[path = "bench_suite/compare.rs"]
mod compare;
#[path = "bench_suite/contention.rs"]
mod contention;
#[path = "bench_suite/daemon.rs"]
mod daemon;
#[path = "bench_suite/hops.rs"]
mod hops;
#[path = "bench_suite/peers.rs"]
mod peers;
#[path = "bench_suite/report.rs"]
mod report;
#[path = "bench_suite/restart.rs"]
mod restart;
#[path = "bench_suite/sections.rs"]
mod sections;

use std::path::PathBuf;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

/// Median, min and max of one figure over its rounds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Summary {
    /// The median round.
    pub median: f64,
    /// The lowest round.
    pub min: f64,
    /// The highest round.
    pub max: f64,
}

impl Summary {
    /// Summarizes the rounds of one figure.
    pub fn of(values: &[f64]) -> Summary {
        assert!(!values.is_empty(), "a figure needs at least one round");
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Summary {
            median: sorted[sorted.len() / 2],
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }
}

/// One measured thing (a row of a table), with its metrics in display order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Figure {
    /// The section it belongs to.
    pub section: String,
    /// What was measured.
    pub name: String,
    /// Metric name (with its unit) and its summary.
    pub metrics: Vec<(String, Summary)>,
}

/// Everything one pass measured.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Pass {
    /// `pinned` or `unpinned`.
    pub label: String,
    /// What the bench set up or changed to run (limits raised, peers skipped).
    pub notes: Vec<String>,
    /// The figures, in the order measured.
    pub figures: Vec<Figure>,
}

impl Pass {
    /// The summary of `metric` of the figure `name`, if measured.
    pub fn get(&self, name: &str, metric: &str) -> Option<Summary> {
        self.figures
            .iter()
            .find(|f| f.name == name)
            .and_then(|f| f.metrics.iter().find(|(m, _)| m == metric))
            .map(|(_, s)| *s)
    }
}

/// How long and how often a pass measures.
#[derive(Clone, Debug)]
pub struct Options {
    /// Rounds per figure.
    pub rounds: usize,
    /// Uncontended cycles per round.
    pub cycles: usize,
    /// Rounds of the contention and many-target runs (each `contend_for` long).
    pub contend_rounds: usize,
    /// Length of one contention round.
    pub contend_for: std::time::Duration,
    /// How long the renewal section watches the idle daemon.
    pub renewal_window: std::time::Duration,
    /// Processes started per round in the command-line section.
    pub spawns: usize,
    /// Sections to run (all when empty).
    pub sections: Vec<String>,
    /// Where `vfslockd` and `vfslockctl` are.
    pub bin_dir: PathBuf,
}

impl Options {
    fn full(bin_dir: PathBuf) -> Options {
        Options {
            rounds: 7,
            cycles: 2_000,
            contend_rounds: 3,
            contend_for: std::time::Duration::from_secs(1),
            renewal_window: std::time::Duration::from_secs(20),
            spawns: 40,
            sections: Vec::new(),
            bin_dir,
        }
    }

    fn quick(bin_dir: PathBuf) -> Options {
        Options {
            rounds: 3,
            cycles: 300,
            contend_rounds: 1,
            contend_for: std::time::Duration::from_millis(300),
            renewal_window: std::time::Duration::from_secs(11),
            spawns: 10,
            ..Options::full(bin_dir)
        }
    }

    /// Whether `section` is to run.
    pub fn runs(&self, section: &str) -> bool {
        self.sections.is_empty() || self.sections.iter().any(|s| s == section)
    }
}

const USAGE: &str = "usage:
  bench_suite pass --label pinned|unpinned --out FILE [--quick] [--rounds N] [--sections a,b]
  bench_suite report --pinned FILE --unpinned FILE --markdown FILE --svg FILE
  bench_suite drive --socket S --target T [--cycles N] [--targets N | --clients N]
  bench_suite compare --old FILE,FILE.. --new FILE,FILE.. [--tolerance 0.05]
  bench_suite hops [--cycles N] [--target mem|file] [--blocking]
  bench_suite restart [--locks N] [--connections C] [--rounds R]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    match args.first().map(String::as_str) {
        Some("pass") => {
            // Where the test crate's launcher finds `vfslockd`; `vfslockctl` is beside it.
            let bin_dir = match vfslock_tests::find_bin("vfslockd") {
                Ok(vfslockd) => vfslockd.parent().expect("a file's directory").to_owned(),
                Err(e) => {
                    eprintln!("bench_suite: {e}");
                    return ExitCode::from(2);
                }
            };
            let mut options = if args.iter().any(|a| a == "--quick") {
                Options::quick(bin_dir)
            } else {
                Options::full(bin_dir)
            };
            if let Some(rounds) = flag("--rounds").and_then(|r| r.parse().ok()) {
                options.rounds = rounds;
            }
            if let Some(sections) = flag("--sections") {
                options.sections = sections.split(',').map(str::to_owned).collect();
            }
            let (Some(label), Some(out)) = (flag("--label"), flag("--out")) else {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            };
            let pass = sections::run_pass(&label, &options);
            let json = serde_json::to_string_pretty(&pass).expect("pass as JSON");
            std::fs::write(&out, json).expect("write the pass");
            ExitCode::SUCCESS
        }
        Some("report") => {
            let read = |name: &str| -> Pass {
                let path = flag(name).unwrap_or_else(|| panic!("{name} FILE is needed"));
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
            };
            let (pinned, unpinned) = (read("--pinned"), read("--unpinned"));
            let markdown = report::markdown(&pinned, &unpinned);
            let svg = report::svg(&pinned, &unpinned);
            match (flag("--markdown"), flag("--svg")) {
                (Some(md), Some(svg_path)) => {
                    std::fs::write(md, &markdown).expect("write markdown");
                    std::fs::write(svg_path, svg).expect("write svg");
                }
                _ => {
                    eprintln!("{USAGE}");
                    return ExitCode::from(2);
                }
            }
            print!("{markdown}");
            ExitCode::SUCCESS
        }
        Some("compare") => {
            let read_all = |name: &str| -> Option<Vec<Pass>> {
                let files = flag(name)?;
                let passes = files.split(',').map(|path| {
                    let text = std::fs::read_to_string(path)
                        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
                });
                Some(passes.collect())
            };
            let (Some(old), Some(new)) = (read_all("--old"), read_all("--new")) else {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            };
            let tolerance = flag("--tolerance")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0.05);
            let (table, worse) = compare::table(&old, &new, tolerance);
            print!("{table}");
            if worse {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Some("hops") => {
            let bin_dir = match vfslock_tests::find_bin("vfslockd") {
                Ok(vfslockd) => vfslockd.parent().expect("a file's directory").to_owned(),
                Err(e) => {
                    eprintln!("bench_suite: {e}");
                    return ExitCode::from(2);
                }
            };
            let cycles = flag("--cycles")
                .and_then(|c| c.parse().ok())
                .unwrap_or(20_000);
            let target = flag("--target").unwrap_or_else(|| "mem".into());
            let blocking = args.iter().any(|a| a == "--blocking");
            print!("{}", hops::run(&bin_dir, cycles, &target, blocking));
            ExitCode::SUCCESS
        }
        Some("restart") => {
            let bin_dir = match vfslock_tests::find_bin("vfslockd") {
                Ok(vfslockd) => vfslockd.parent().expect("a file's directory").to_owned(),
                Err(e) => {
                    eprintln!("bench_suite: {e}");
                    return ExitCode::from(2);
                }
            };
            let number = |name: &str, default: usize| {
                flag(name).and_then(|n| n.parse().ok()).unwrap_or(default)
            };
            let params = restart::Params {
                locks: number("--locks", 10_000),
                connections: number("--connections", 4),
                rounds: number("--rounds", 3),
            };
            print!("{}", restart::run(&bin_dir, &params));
            ExitCode::SUCCESS
        }
        Some("drive") => {
            // Load for a profiler attached to a daemon started by hand (docs/benchmark.md).
            let (Some(socket), Some(target)) = (flag("--socket"), flag("--target")) else {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            };
            let cycles: usize = flag("--cycles")
                .and_then(|c| c.parse().ok())
                .unwrap_or(10_000);
            // With --targets N, the cycles go round N targets `T/0` … `T/N-1`, as in the
            // many-targets section.
            let targets: usize = flag("--targets").and_then(|n| n.parse().ok()).unwrap_or(0);
            // With --clients N, N connections take turns on T, each waiting in the daemon's
            // queue, as in the contention section: the cost of a handoff.
            let clients: usize = flag("--clients").and_then(|n| n.parse().ok()).unwrap_or(1);
            let runtime = contention::client_runtime();
            if clients > 1 {
                runtime.block_on(async {
                    let mut turns = Vec::new();
                    for _ in 0..clients {
                        let (socket, target) = (socket.clone(), target.clone());
                        turns.push(tokio::spawn(async move {
                            let client = vfslock::Client::connect(&socket)
                                .await
                                .expect("connect to the daemon");
                            let mut lock = client.new_lock(target, Default::default());
                            for _ in 0..cycles / clients {
                                lock.acquire_timeout(std::time::Duration::from_secs(600))
                                    .await
                                    .expect("contended acquire");
                                lock.release().await.expect("release");
                            }
                        }));
                    }
                    for turn in turns {
                        turn.await.expect("a client's turns");
                    }
                });
                return ExitCode::SUCCESS;
            }
            runtime.block_on(async {
                let client = vfslock::Client::connect(&socket)
                    .await
                    .expect("connect to the daemon");
                let mut locks: Vec<vfslock::Lock> = if targets == 0 {
                    vec![client.new_lock(target, vfslock::LockOptions::default())]
                } else {
                    (0..targets)
                        .map(|n| client.new_lock(format!("{target}/{n}"), Default::default()))
                        .collect()
                };
                let round = locks.len();
                for cycle in 0..cycles {
                    let lock = &mut locks[cycle % round];
                    lock.acquire().await.expect("uncontended acquire");
                    lock.release().await.expect("release");
                }
            });
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
