//! `mutex_checker`: checks vfslock's promises under load and crashes — never two holders of
//! one lock at once, and fencing tokens that strictly increase — with several daemons (one per
//! "host") sharing one directory of `file://` targets, one prefix in a bucket of a test
//! object store (S3, GCS, Azure Blob), or run-unique file names in the root of the test SFTP
//! server (`tests/servers/start.sh` starts them). SFTP runs in the daemon's create-only mode:
//! no fencing tokens, so there only mutual exclusion (and no orphans) is checked.
//!
//! ```text
//! mutex_checker run [--store file|s3|gcs|azblob|sftp] [--faults RATE]
//!                   [--mode exclusive|mixed|slots:N|set] [--shared-share P]
//!                   [--daemons N] [--clients M] [--targets K] [--duration SECS]
//!                   [--hold-ms MS] [--kill-every-ms MS] [--kill-holder-percent P]
//!                   [--ttl SECS] [--dir DIR]
//!                   [--pause-daemon-every-ms MS --pause-daemon-ms MS] [--keep] [--mem]
//! mutex_checker chaos [the options of run] [--kill-daemon-every-ms MS] [--error-rate R]
//!                     [--delay-rate R] [--delay-ms MS] [--partition] [--partition-gap-ms MS]
//!                     [--calm-ms MS]
//! mutex_checker worker --socket S --resource R --data DIR [--base URL] --targets K
//!                      --hold-ms MS --ttl SECS --log FILE --id NAME [--mem] [--tokenless]
//!                      [--mode exclusive|mixed|slots:N|set] [--shared-share P]
//! ```
//!
//! `run` (the coordinator) starts N `vfslockd`s, a guarded resource that rejects writes with
//! a lower fencing token than it has seen, and N×M workers (this binary, mode `worker`); it
//! SIGKILLs and restarts a random worker every kill interval, stops everything, looks for
//! orphan lock files (or objects) and analyses the workers' records. It prints one summary
//! line on stdout (details on stderr) and exits 0 only if no violation was found.
//!
//! `chaos` is `run` with more going wrong (3 daemons × 8 workers by default): random daemons
//! are SIGKILLed and restarted, the daemons inject store errors and delays, and with
//! `--partition` (S3, root) one host's network link to the store is cut while it holds a lock;
//! then a calm phase lets everything settle before the orphan check.
//!
//! `--mode` (both) chooses the lock modes ([`modes`]): `exclusive` (the default), `mixed`
//! (each acquisition shared with probability `--shared-share`, 0.7 by default, else
//! exclusive: no exclusive section may overlap any other, shared ones overlap freely) or
//! `slots:N` (a semaphore: never more than N sections of a target at once) or `set` (each
//! acquisition takes two of the targets at once with `Client::lock_all`, drawn in a random
//! order; 3 targets unless `--targets` says otherwise: no two sections of a target overlap,
//! and no `lock_all` wait times out, which a deadlock between sets would make them do).

#[path = "mutex_checker/analysis.rs"]
mod analysis;
#[path = "mutex_checker/coordinator.rs"]
mod coordinator;
#[path = "mutex_checker/modes.rs"]
mod modes;
#[path = "mutex_checker/partition.rs"]
mod partition;
#[path = "mutex_checker/records.rs"]
mod records;
#[path = "mutex_checker/resource.rs"]
mod resource;
#[path = "mutex_checker/store.rs"]
mod store;
#[path = "mutex_checker/worker.rs"]
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use coordinator::RunArgs;
use modes::Mode;
use store::StoreKind;
use worker::WorkerArgs;

const USAGE: &str = "usage:
  mutex_checker run [--store file|s3|gcs|azblob|sftp] [--faults RATE]
                    [--mode exclusive|mixed|slots:N|set] [--shared-share P]
                    [--daemons N] [--clients M] [--targets K] [--duration SECS] [--hold-ms MS]
                    [--kill-every-ms MS] [--kill-holder-percent P] [--ttl SECS] [--dir DIR]
                    [--pause-daemon-every-ms MS --pause-daemon-ms MS] [--keep] [--mem]
                    [--kill-daemon-every-ms MS] [--error-rate R] [--delay-rate R]
                    [--delay-ms MS] [--partition] [--partition-gap-ms MS] [--calm-ms MS]
  mutex_checker chaos [the options of run]
  mutex_checker worker --socket S --resource R --data DIR [--base URL] --targets K
                       --hold-ms MS --ttl SECS --log FILE --id NAME [--mem] [--tokenless]
                       [--mode exclusive|mixed|slots:N|set] [--shared-share P]

  Defaults: 3 daemons, 3 clients per daemon, 2 targets, 6 s, hold 2 ms, a SIGKILL every 400 ms
  (50% of them aimed at the holder of a random target), ttl 5 s.
  --store s3|gcs|azblob: targets in a run-unique prefix of the test server's bucket, as the
  VFSLOCK_TEST_* variables of tests/servers/run/env say (tests/servers/start.sh); defaults
  there: 2 daemons, 3 clients per daemon, 2 targets, 5 s, hold 5 ms.
  --store sftp: targets <root>/mutex-checker-<time>-<pid>-t0… on the test SFTP server, which
  the daemons run create-only: no fencing tokens (the workers skip the guarded write; token
  order is not checked), no stale steals (ttl 10 s by default; no --pause-daemon-*).
  --faults RATE (object stores; vfslockd built with the `faults` feature): each daemon applies
  that share of its store writes, then reports them failed ([faults] write-then-fail).
  --pause-daemon-every-ms/--pause-daemon-ms: SIGSTOP a random daemon that often, for that long
  (a frozen host; leases must run out on the clients' clocks before another daemon steals).
  --kill-daemon-every-ms: SIGKILL a random daemon that often and restart it (same host id and
  state directory: its crash journal removes the dead daemon's lock files).
  --error-rate/--delay-rate R, --delay-ms MS (vfslockd built with the `faults` feature): each
  daemon fails that share of its store operations (every store, file:// too) before they
  reach the store, and delays that share by MS ([faults] error-rate, delay-rate, delay).
  --partition (--store s3, root, iproute2): daemon 0 runs in a network namespace of its own
  and reaches a moto of the run's own over a veth pair; its link is cut while one of its
  clients holds a lock (every --partition-gap-ms, default 1000), and the checker verifies that
  the holder heard of the loss before its lease ran out, that another host got the lock after
  that, and that the healed host left the new holder's lock file alone.
  --calm-ms: after the chaos, this long with faults off, no kills and the link up, the workers
  going on, before they stop and the orphan check looks.
  chaos defaults: 3 daemons, 8 clients per daemon, 3 targets (2 on an object store), 10 s, ttl
  3 s, a daemon killed every 2 s (3 s on an object store), error rate 0.01, delay rate 0.05,
  delay 20 ms, calm phase ttl + 2 s.
  --mode: exclusive (default), mixed (each acquisition shared with probability --shared-share,
  default 0.7, else exclusive; shared and slot holders do a guarded read instead of the write)
  or slots:N (every acquisition takes one of N slots); not on SFTP. The summary line then ends
  with mode=, and for mixed shared_sections= shared_overlaps= max_concurrent=, for slots:N
  max_concurrent=, and rejected_reads=; overlaps= counts the sections that overlapped an
  exclusive one (mixed) or entered while N were open (slots:N).
  --keep: keep the working directory after a clean run. --mem: lock mem:// targets, which each
  daemon keeps apart, so that with several daemons the run must fail (the checker's self-test).";

/// A small xorshift64* generator: the choices here need no more than that.
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from the clock and the process id.
    pub(crate) fn seeded() -> Rng {
        let seed =
            records::now_ns() ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15;
        Rng(seed.max(1))
    }

    /// A number in `0..n` (`n` ≥ 1).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// The arguments after the mode, as `--name value` pairs (and bare `--flag`s).
struct Flags {
    pairs: Vec<(String, Option<String>)>,
}

impl Flags {
    fn parse(args: &[String], bare: &[&str]) -> Result<Flags, String> {
        let mut pairs = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?}"));
            };
            let (name, value) = match name.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None if bare.contains(&name) => (name.to_owned(), None),
                None => {
                    let value = args
                        .next()
                        .ok_or_else(|| format!("--{name} needs a value"))?;
                    (name.to_owned(), Some(value.clone()))
                }
            };
            pairs.push((name, value));
        }
        Ok(Flags { pairs })
    }

    /// Checks that every flag is one of `known`.
    fn only(&self, known: &[&str]) -> Result<(), String> {
        match self
            .pairs
            .iter()
            .find(|(n, _)| !known.contains(&n.as_str()))
        {
            Some((name, _)) => Err(format!("unknown option --{name}")),
            None => Ok(()),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(n, _)| n == name)
    }

    /// The last value given for `name`, parsed.
    fn get<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.pairs.iter().rev().find(|(n, _)| n == name) {
            None => Ok(None),
            Some((_, None)) => Err(format!("--{name} needs a value")),
            Some((_, Some(value))) => value
                .parse()
                .map(Some)
                .map_err(|e| format!("--{name} {value:?}: {e}")),
        }
    }

    fn require<T: std::str::FromStr>(&self, name: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        self.get(name)?
            .ok_or_else(|| format!("--{name} is required"))
    }
}

fn seconds(value: f64, name: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|e| format!("--{name} {value}: {e}"))
}

fn run_args(flags: &Flags, chaos: bool) -> Result<RunArgs, String> {
    flags.only(&[
        "kill-daemon-every-ms",
        "error-rate",
        "delay-rate",
        "delay-ms",
        "partition",
        "partition-gap-ms",
        "calm-ms",
        "daemons",
        "clients",
        "targets",
        "duration",
        "hold-ms",
        "kill-every-ms",
        "kill-holder-percent",
        "ttl",
        "dir",
        "pause-daemon-every-ms",
        "pause-daemon-ms",
        "keep",
        "mem",
        "store",
        "faults",
        "mode",
        "shared-share",
    ])?;
    let mode = mode_of(flags)?;
    let store: StoreKind = flags.get("store")?.unwrap_or(StoreKind::File);
    let defaults = if chaos {
        RunArgs::chaos_defaults(store)
    } else {
        RunArgs::defaults_for(store)
    };
    let millis = |name: &str, default: Duration| -> Result<Duration, String> {
        Ok(flags
            .get::<u64>(name)?
            .map_or(default, Duration::from_millis))
    };
    let share = |name: &str, default: Option<f64>| match flags.get::<f64>(name)? {
        Some(rate) if !(0.0..=1.0).contains(&rate) => {
            Err(format!("--{name} {rate}: a share between 0 and 1"))
        }
        Some(rate) => Ok(Some(rate)),
        None => Ok(default),
    };
    let ttl = match flags.get::<f64>("ttl")? {
        Some(secs) => seconds(secs, "ttl")?,
        None => defaults.ttl,
    };
    Ok(RunArgs {
        daemons: flags.get("daemons")?.unwrap_or(defaults.daemons),
        clients: flags.get("clients")?.unwrap_or(defaults.clients),
        // A set run takes two of three targets, so that sets always meet.
        targets: flags
            .get("targets")?
            .unwrap_or(if mode.is_set() { 3 } else { defaults.targets }),
        duration: match flags.get::<f64>("duration")? {
            Some(secs) => seconds(secs, "duration")?,
            None => defaults.duration,
        },
        hold: millis("hold-ms", defaults.hold)?,
        kill_every: millis("kill-every-ms", defaults.kill_every)?,
        kill_holder_percent: match flags.get::<u8>("kill-holder-percent")? {
            Some(p) if p > 100 => return Err("--kill-holder-percent is at most 100".into()),
            Some(p) => p,
            None => defaults.kill_holder_percent,
        },
        ttl,
        dir: flags.get::<PathBuf>("dir")?,
        pause_every: millis("pause-daemon-every-ms", defaults.pause_every)?,
        pause_for: millis("pause-daemon-ms", defaults.pause_for)?,
        keep: flags.has("keep"),
        mem: flags.has("mem"),
        store,
        faults: match flags.get::<f64>("faults")? {
            Some(rate) if !(0.0..=1.0).contains(&rate) => {
                return Err(format!("--faults {rate}: a share between 0 and 1"))
            }
            rate => rate,
        },
        kill_daemon_every: millis("kill-daemon-every-ms", defaults.kill_daemon_every)?,
        error_rate: share("error-rate", defaults.error_rate)?,
        delay_rate: share("delay-rate", defaults.delay_rate)?,
        delay: millis("delay-ms", defaults.delay)?,
        partition: flags.has("partition"),
        partition_gap: millis("partition-gap-ms", defaults.partition_gap)?,
        // The calm phase follows the TTL unless given.
        calm: match flags.get::<u64>("calm-ms")? {
            Some(ms) => Duration::from_millis(ms),
            None if chaos => ttl + coordinator::CALM_MARGIN,
            None => defaults.calm,
        },
        chaos,
        mode,
    })
}

/// `--mode`, with `--shared-share` folded into a mixed one.
fn mode_of(flags: &Flags) -> Result<Mode, String> {
    let mode = flags.get::<Mode>("mode")?.unwrap_or(Mode::Exclusive);
    match (mode, flags.get::<f64>("shared-share")?) {
        (_, Some(share)) if !(0.0..=1.0).contains(&share) => {
            Err(format!("--shared-share {share}: a share between 0 and 1"))
        }
        (Mode::Mixed { .. }, Some(shared_share)) => Ok(Mode::Mixed { shared_share }),
        (_, Some(_)) => Err("--shared-share goes with --mode mixed".into()),
        (mode, None) => Ok(mode),
    }
}

fn worker_args(flags: &Flags) -> Result<WorkerArgs, String> {
    flags.only(&[
        "socket",
        "resource",
        "data",
        "base",
        "targets",
        "hold-ms",
        "ttl",
        "log",
        "id",
        "mem",
        "tokenless",
        "mode",
        "shared-share",
    ])?;
    let targets: usize = flags.require("targets")?;
    if targets == 0 {
        return Err("--targets must be at least 1".into());
    }
    let mode = mode_of(flags)?;
    if mode.is_set() && targets < 2 {
        return Err("--mode set takes two targets at once: --targets must be at least 2".into());
    }
    Ok(WorkerArgs {
        socket: flags.require("socket")?,
        resource: flags.require("resource")?,
        data: flags.require("data")?,
        base: flags.get("base")?,
        targets,
        hold: Duration::from_millis(flags.require("hold-ms")?),
        ttl: seconds(flags.require("ttl")?, "ttl")?,
        log: flags.require("log")?,
        id: flags.require("id")?,
        mem: flags.has("mem"),
        tokenless: flags.has("tokenless"),
        mode,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.first().map(String::as_str) {
        Some(mode @ ("run" | "chaos")) => Flags::parse(&args[1..], &["keep", "mem", "partition"])
            .and_then(|flags| run_args(&flags, mode == "chaos"))
            .map(|a| {
                Box::new(move || ExitCode::from(coordinator::main(a)))
                    as Box<dyn FnOnce() -> ExitCode>
            }),
        Some("worker") => Flags::parse(&args[1..], &["mem", "tokenless"])
            .and_then(|flags| worker_args(&flags))
            .map(|a| Box::new(move || worker::main(a)) as Box<dyn FnOnce() -> ExitCode>),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err("expected a mode: run, chaos or worker".to_owned()),
    };
    match parsed {
        Ok(mode) => mode(),
        Err(e) => {
            eprintln!("mutex_checker: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args_of(flags: &Flags) -> Result<RunArgs, String> {
        run_args(flags, false)
    }

    #[test]
    fn a_chaos_run_has_its_own_defaults() {
        let args = run_args(&flags(&[], &[]), true).unwrap();
        assert!(args.chaos);
        assert_eq!((args.daemons, args.clients, args.targets), (3, 8, 3));
        assert_eq!(args.kill_daemon_every, Duration::from_secs(2));
        assert_eq!((args.error_rate, args.delay_rate), (Some(0.01), Some(0.05)));
        assert_eq!(args.calm, args.ttl + Duration::from_secs(2));
        assert!(!args.partition);
        let args = run_args(
            &flags(
                &[
                    "--store",
                    "s3",
                    "--partition",
                    "--ttl",
                    "2",
                    "--error-rate",
                    "0",
                ],
                &["partition"],
            ),
            true,
        )
        .unwrap();
        assert!(args.partition);
        assert_eq!((args.daemons, args.clients, args.targets), (3, 8, 2));
        assert_eq!(args.calm, Duration::from_secs(4));
        assert_eq!(args.error_rate, Some(0.0));
        assert!(run_args(&flags(&["--delay-rate", "2"], &[]), true).is_err());
        // A plain run has none of it unless asked.
        let args = run_args(&flags(&[], &[]), false).unwrap();
        assert!(!args.chaos && args.kill_daemon_every.is_zero() && args.calm.is_zero());
        assert_eq!(args.error_rate, None);
    }

    fn flags(args: &[&str], bare: &[&str]) -> Flags {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Flags::parse(&args, bare).unwrap()
    }

    #[test]
    fn run_arguments_have_defaults_and_the_last_value_wins() {
        let args = run_args_of(&flags(&[], &["keep"])).unwrap();
        assert_eq!((args.daemons, args.clients, args.targets), (3, 3, 2));
        assert_eq!(args.duration, Duration::from_secs(6));
        assert_eq!(args.kill_every, Duration::from_millis(400));
        assert!(!args.keep);

        let args = run_args_of(&flags(
            &[
                "--duration",
                "300",
                "--daemons",
                "4",
                "--clients=8",
                "--daemons",
                "5",
                "--ttl",
                "0.5",
                "--keep",
            ],
            &["keep"],
        ))
        .unwrap();
        assert_eq!((args.daemons, args.clients), (5, 8));
        assert_eq!(args.duration, Duration::from_secs(300));
        assert_eq!(args.ttl, Duration::from_millis(500));
        assert!(args.keep);

        assert!(run_args_of(&flags(&["--bogus", "1"], &[])).is_err());
        assert!(run_args_of(&flags(&["--store", "nfs"], &[])).is_err());
        assert!(run_args_of(&flags(&["--faults", "1.5"], &[])).is_err());
    }

    #[test]
    fn an_object_store_has_its_own_defaults_which_flags_override() {
        let args = run_args_of(&flags(&["--store", "s3", "--faults", "0.2"], &[])).unwrap();
        assert_eq!(args.store, StoreKind::S3);
        assert_eq!((args.daemons, args.clients, args.targets), (2, 3, 2));
        assert_eq!(args.hold, Duration::from_millis(5));
        assert_eq!(args.faults, Some(0.2));
        let args = run_args_of(&flags(&["--store=azblob", "--daemons", "3"], &[])).unwrap();
        assert_eq!((args.store, args.daemons), (StoreKind::Azblob, 3));
        assert_eq!(args.faults, None);
        assert_eq!(
            run_args_of(&flags(&[], &[])).unwrap().store,
            StoreKind::File
        );
        let args = run_args_of(&flags(&["--store", "sftp"], &[])).unwrap();
        assert_eq!(args.store, StoreKind::Sftp);
        assert_eq!((args.daemons, args.clients, args.targets), (2, 3, 2));
        assert_eq!(args.ttl, Duration::from_secs(10));
        assert_eq!(args.hold, Duration::from_millis(5));
        let args = run_args_of(&flags(&["--store", "sftp", "--ttl", "20"], &[])).unwrap();
        assert_eq!(args.ttl, Duration::from_secs(20));
        assert!(run_args_of(&flags(&["--daemons", "x"], &[])).is_err());
    }

    #[test]
    fn worker_arguments_are_all_required() {
        let full = [
            "--socket",
            "s",
            "--resource",
            "r",
            "--data",
            "d",
            "--targets",
            "2",
            "--hold-ms",
            "2",
            "--ttl",
            "5",
            "--log",
            "l",
            "--id",
            "h0-c0",
        ];
        let args = worker_args(&flags(&full, &[])).unwrap();
        assert_eq!(args.targets, 2);
        assert!(!args.tokenless);
        let mut tokenless = full.to_vec();
        tokenless.push("--tokenless");
        assert!(
            worker_args(&flags(&tokenless, &["tokenless"]))
                .unwrap()
                .tokenless
        );
        assert_eq!(args.ttl, Duration::from_secs(5));
        assert!(worker_args(&flags(&full[..14], &[])).is_err());
    }

    #[test]
    fn the_mode_defaults_to_exclusive_and_takes_a_share_when_mixed() {
        assert_eq!(run_args_of(&flags(&[], &[])).unwrap().mode, Mode::Exclusive);
        let args = run_args_of(&flags(&["--mode", "slots:3"], &[])).unwrap();
        assert_eq!(args.mode, Mode::Slots(3));
        let args = run_args_of(&flags(&["--mode", "mixed"], &[])).unwrap();
        assert_eq!(
            args.mode,
            Mode::Mixed {
                shared_share: modes::DEFAULT_SHARED_SHARE
            }
        );
        let args = run_args_of(&flags(&["--shared-share", "0.5", "--mode", "mixed"], &[])).unwrap();
        assert_eq!(args.mode, Mode::Mixed { shared_share: 0.5 });
        let args = run_args_of(&flags(&["--mode", "set"], &[])).unwrap();
        assert_eq!((args.mode, args.targets), (Mode::Set, 3));
        let args = run_args(&flags(&["--mode", "set", "--store", "s3"], &[]), true).unwrap();
        assert_eq!((args.mode, args.targets), (Mode::Set, 3));
        let args = run_args_of(&flags(&["--mode", "set", "--targets", "4"], &[])).unwrap();
        assert_eq!(args.targets, 4);
        let args = run_args(&flags(&["--mode", "mixed"], &[]), true).unwrap();
        assert!(args.chaos && matches!(args.mode, Mode::Mixed { .. }));
        for bad in [
            &["--mode", "slots:0"][..],
            &["--mode", "shared"],
            &["--mode", "mixed", "--shared-share", "1.5"],
            &["--mode", "slots:2", "--shared-share", "0.5"],
            &["--mode", "set", "--shared-share", "0.5"],
        ] {
            assert!(run_args_of(&flags(bad, &[])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_generator_stays_in_range_and_varies() {
        let mut rng = Rng::seeded();
        let draws: Vec<u64> = (0..1000).map(|_| rng.below(7)).collect();
        assert!(draws.iter().all(|&d| d < 7));
        assert!((0..7).all(|v| draws.contains(&v)));
    }
}
