//! A `vfslockd` started for the bench: its own socket and state directory, warnings-only
//! logging (a debug log line per request would be measured too), and limits raised so that the
//! scale section fits; and what the bench reads of it from `/proc`.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use vfslock_tests::Launch;

/// The daemon's configuration for every section, with the limits the scale section needs
/// raised (the defaults: 4096 connections, 100,000 locks per connection, 10,000 waiters), the
/// per-uid ones too: every bench client runs as one user, root or not.
pub const BENCH_CONFIG: &str = r#"
[limits]
max-connections = 8192
max-connections-per-uid = 8192
max-locks-per-session = 200000
max-locks-per-uid = 200000
max-waiters-per-target = 10000
"#;

/// A running bench daemon; killed (by its pid) when dropped.
pub struct BenchDaemon {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
}

impl BenchDaemon {
    /// Starts `vfslockd` from `bin_dir` in `dir` (through the test crate's [`Launch`]) and
    /// waits until it answers a handshake.
    pub fn start(bin_dir: &Path, dir: &Path) -> BenchDaemon {
        std::fs::create_dir_all(dir).expect("daemon dir");
        let mut launch = Launch::in_dir(bin_dir.join("vfslockd"), dir);
        launch.log_filter = "warn".into();
        // More config for a comparison of two settings of the same build
        // (`tests/bench-metrics.sh` turns metrics off for its baseline).
        let extra = std::env::var("VFSLOCK_BENCH_DAEMON_CONFIG").unwrap_or_default();
        std::fs::write(&launch.config, format!("{BENCH_CONFIG}\n{extra}\n"))
            .expect("daemon config");
        let child = launch.start().unwrap_or_else(|e| panic!("{e}"));
        BenchDaemon {
            child,
            socket: launch.socket,
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client connected to it.
    pub async fn client(&self) -> vfslock::Client {
        vfslock::Client::connect(&self.socket)
            .await
            .expect("connect to the bench daemon")
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid`, in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("VmRSS")
        * 1024
}

/// CPU time (user + system) process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / per_second)
}
