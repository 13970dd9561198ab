//! Harness for the end-to-end tests: finds the real binaries, starts `vfslockd` on a socket of
//! its own in a temporary directory, and stops exactly the processes it started.
//!
//! The binaries are built by the test command (`tests/run.sh` runs `cargo build --bins`
//! first); `CARGO_BIN_EXE_*` is only set inside the package that owns a binary, so they are
//! found next to the test executable, or in `$VFSLOCK_BIN_DIR` ([`find_bin`]). Every daemon
//! this crate starts, the mutex checker's and the bench's too, starts through [`Launch`].

pub mod gopeer;
pub mod http_counter;
pub mod http_get;
pub mod v1;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod launch;

pub use launch::{find_bin, handshake_answers, tail, Launch, NotServing};

/// The generous deadline for anything a test waits for: long enough for a loaded CI machine,
/// short enough that a hang fails instead of blocking the suite.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Path of one of the workspace's binaries (`vfslockd`, `vfslockctl`); fails the test when it
/// is not built.
pub fn bin(name: &str) -> PathBuf {
    find_bin(name).unwrap_or_else(|e| panic!("{e}"))
}

/// A lock-file fixture in the Go library's format (`tests/fixtures/`).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A running `vfslockd` with its own socket, data directory and log.
pub struct Daemon {
    child: Option<Child>,
    /// Holds the daemon's files ([`Launch::in_dir`]) until the test ends.
    _dir: tempfile::TempDir,
    launch: Launch,
    data: PathBuf,
    /// Started in a process group of its own ([`Daemon::start_own_group`]).
    own_group: bool,
}

/// Test settings: actors retire quickly and foreign holders are re-checked often, so tests
/// exercise those paths without waiting long.
pub const TEST_CONFIG: &str = r#"
[locks]
idle-actor-timeout = "200ms"
recheck-min = "10ms"
recheck-max = "200ms"
stale-answer-timeout = "3s"
"#;

/// `config` (which has a `[locks]` section) with holdings that end with the daemon
/// (`resume-window = "0s"`): for the tests of what a crash does without resume.
pub fn without_resume(config: &str) -> String {
    assert!(
        config.contains("[locks]\n"),
        "a config with a [locks] section"
    );
    config.replacen("[locks]\n", "[locks]\nresume-window = \"0s\"\n", 1)
}

impl Daemon {
    /// Starts a daemon with [`TEST_CONFIG`].
    pub fn start() -> Daemon {
        Daemon::start_with(TEST_CONFIG)
    }

    /// Starts a daemon with this config file content.
    pub fn start_with(config: &str) -> Daemon {
        Daemon::start_host(config, None, &[])
    }

    /// Starts one "host" of several: a daemon with its own socket, log and config, whose
    /// `file://` targets live in `shared` (when given) instead of a directory of its own, and
    /// with extra command-line arguments (`--host-id NAME`, `--clock-offset +1h`).
    pub fn start_host(config: &str, shared: Option<&Path>, args: &[&str]) -> Daemon {
        Daemon::start_in(config, shared, args, false)
    }

    /// Starts a daemon as [`Daemon::start_host`] does (without shared data), but as the leader
    /// of a process group of its own, so that [`Daemon::signal_group`] can signal the whole
    /// group as `timeout(1)` and some service managers do; and with `XDG_STATE_HOME` inside
    /// [`Daemon::dir`], so that every file and process of its own (an SFTP store's `ssh`
    /// control sockets) names that directory.
    pub fn start_own_group(config: &str, args: &[&str]) -> Daemon {
        Daemon::start_in(config, None, args, true)
    }

    /// Starts a daemon from its own copy of the `vfslockd` binary, which
    /// [`Daemon::replace_binary`] replaces as a package upgrade would.
    pub fn start_copy(config: &str) -> Daemon {
        Daemon::start_in(config, None, &[], false).copied()
    }

    /// The same daemon, restarted from a copy of its binary in its own directory.
    fn copied(mut self) -> Daemon {
        self.terminate();
        let copy = self._dir.path().join("vfslockd");
        std::fs::copy(bin("vfslockd"), &copy).expect("copy vfslockd");
        self.launch.binary = copy;
        self.restart();
        self
    }

    /// Replaces the daemon's own copy of its binary with a fresh one: a new file renamed over
    /// the old, as a package upgrade installs it; the running process keeps the old one.
    pub fn replace_binary(&self) {
        let fresh = self._dir.path().join("vfslockd.new");
        std::fs::copy(bin("vfslockd"), &fresh).expect("copy vfslockd");
        std::fs::rename(&fresh, &self.launch.binary).expect("replace vfslockd");
    }

    fn start_in(config: &str, shared: Option<&Path>, args: &[&str], own_group: bool) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("vfslock-test-")
            .tempdir()
            .expect("temporary directory");
        let data = match shared {
            Some(shared) => shared.to_owned(),
            None => {
                let own = dir.path().join("data");
                std::fs::create_dir(&own).expect("data directory");
                own
            }
        };
        let mut launch = Launch::in_dir(bin("vfslockd"), dir.path());
        launch.args = args.iter().map(|a| a.to_string()).collect();
        std::fs::write(&launch.config, config).expect("config file");
        let mut daemon = Daemon {
            child: None,
            _dir: dir,
            launch,
            data,
            own_group,
        };
        daemon.restart();
        daemon
    }

    /// The `vfslockd` command this daemon runs, with its config and socket, logging to its log.
    pub fn command(&self) -> Command {
        let mut command = self.launch.command().expect("log file");
        if self.own_group {
            use std::os::unix::process::CommandExt;
            let xdg = self._dir.path().join("xdg");
            std::fs::create_dir_all(&xdg).expect("XDG_STATE_HOME directory");
            command.process_group(0).env("XDG_STATE_HOME", xdg);
        }
        command
    }

    /// The temporary directory that holds this daemon's files (config, socket, log, state).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Sends `signal` to the daemon's whole process group (the daemon and every process it
    /// started that stayed in its group) and waits for the daemon to exit. Only for a daemon
    /// started by [`Daemon::start_own_group`]: any other shares the test's group.
    pub fn signal_group(&mut self, signal: libc::c_int) -> ExitStatus {
        assert!(self.own_group, "the daemon shares the test's process group");
        let mut child = self.child.take().expect("daemon running");
        // SAFETY: plain syscall; the group is led by our own child, which is not reaped yet.
        unsafe { libc::kill(-(child.id() as libc::pid_t), signal) };
        wait_with_deadline(&mut child)
    }

    /// Starts the daemon (again) on the same socket, config and data, and waits until it serves.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        let child = self
            .child
            .insert(self.command().spawn().expect("start vfslockd"));
        if let Err(e) = self.launch.wait_serving(child) {
            panic!("vfslockd {e}:\n{}", self.log());
        }
    }

    /// Kills the daemon with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        child.kill().expect("SIGKILL vfslockd");
        child.wait().expect("reap vfslockd");
    }

    /// The daemon's socket.
    pub fn socket(&self) -> &Path {
        &self.launch.socket
    }

    /// A directory for `file://` targets.
    pub fn data_dir(&self) -> PathBuf {
        self.data.clone()
    }

    /// An absolute path inside [`Daemon::data_dir`], as a target string.
    pub fn file_target(&self, name: &str) -> String {
        self.data_dir().join(name).to_string_lossy().into_owned()
    }

    /// [`Daemon::file_target`] `name`, locked by a Go peer whose lease ran out long ago (the
    /// Go library's expired fixture, host `ingest-7`, pid 4242): a stale lock to take over.
    pub fn stale_go_target(&self, name: &str) -> String {
        let target = self.file_target(name);
        std::fs::write(
            format!("{target}.lock"),
            fixture("go-lockfile-expired-ttl.lock"),
        )
        .expect("write the stale lock file");
        target
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.launch.log()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// A client connected to this daemon.
    pub async fn client(&self) -> vfslock::Client {
        vfslock::Client::connect(self.socket())
            .await
            .expect("connect to the test daemon")
    }

    /// Sends `signal` to the daemon (SIGSTOP and SIGCONT freeze and thaw it).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain syscall on the pid of our own child, which has not been reaped yet.
        unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
    }

    /// Sends SIGTERM and waits for the daemon to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        // SAFETY: plain syscall on the pid of our own child, which has not been reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        wait_with_deadline(&mut child)
    }
}

/// Waits for a child with [`DEADLINE`]; kills it if it does not exit.
pub fn wait_with_deadline(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("process {} did not exit within {DEADLINE:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(5));
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

/// Polls `condition` until it holds, failing after [`DEADLINE`]. For conditions that have no
/// event to await (a file appearing on disk), not as a stand-in for one that has.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The targets a test runs against, both named `name`: an absolute path in this daemon's data
/// directory (paired with the path of its lock file) and `mem:///name` (whose lock file only
/// the daemon can see, so its path is `None`).
pub fn targets(daemon: &Daemon, name: &str) -> [(String, Option<PathBuf>); 2] {
    let file = daemon.file_target(name);
    let lock_file = PathBuf::from(format!("{file}.lock"));
    [(file, Some(lock_file)), (format!("mem:///{name}"), None)]
}

/// `options` with a queue-position callback that reports each position the daemon announces
/// on the returned channel.
pub fn watch_queue(
    options: vfslock::LockOptions,
) -> (
    vfslock::LockOptions,
    tokio::sync::mpsc::UnboundedReceiver<u32>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let options = options.on_queue_position(move |position| {
        let _ = tx.send(position);
    });
    (options, rx)
}

/// The next queue position reported on a channel of [`watch_queue`]; fails after [`DEADLINE`].
pub async fn next_position(positions: &mut tokio::sync::mpsc::UnboundedReceiver<u32>) -> u32 {
    within("a queue position", positions.recv())
        .await
        .expect("the acquire ended before it reported a queue position")
}

/// Awaits `future`, failing the test with `what` if it takes longer than [`DEADLINE`].
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Stores: the same end-to-end tests against every kind of store vfslockd serves
// ---------------------------------------------------------------------------------------------

/// A store kind the store-parametrized tests (`tests/stores.rs`) run against. The object stores
/// are the real local servers that `tests/servers/start.sh` starts; their addresses and keys
/// come from its `VFSLOCK_TEST_*` variables (`tests/servers/run/env`), and a missing variable
/// fails the test instead of skipping it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Store {
    /// `file://` targets on the local filesystem.
    File,
    /// `mem://` targets in the daemon's memory.
    Mem,
    /// `s3://` targets on the moto server.
    S3,
    /// `gs://` targets on the cloudbox GCS server.
    Gcs,
    /// `azblob://` targets on Azurite.
    Azblob,
    /// `sftp://` targets on the OpenSSH server (create-only mode).
    Sftp,
}

/// The value of a `VFSLOCK_TEST_*` variable; fails the test when the servers' env is missing.
pub fn test_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{name} is not set: the object-store tests need the local test servers. Run \
             `tests/servers/start.sh`, then `. tests/servers/run/env` before `cargo test` \
             (tests/run.sh does both)"
        ),
    }
}

/// Quotes `value` as a TOML basic string.
fn toml_string(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}

impl Store {
    /// Every store.
    pub const ALL: [Store; 6] = [
        Store::File,
        Store::Mem,
        Store::S3,
        Store::Gcs,
        Store::Azblob,
        Store::Sftp,
    ];

    /// The object stores, which need a `[[stores.object]]` table and a server.
    pub const OBJECT: [Store; 4] = [Store::S3, Store::Gcs, Store::Azblob, Store::Sftp];

    /// The URL scheme of its targets.
    pub fn scheme(self) -> &'static str {
        match self {
            Store::File => "file",
            Store::Mem => "mem",
            Store::S3 => "s3",
            Store::Gcs => "gs",
            Store::Azblob => "azblob",
            Store::Sftp => "sftp",
        }
    }

    /// Whether it is configured as a `[[stores.object]]` table.
    pub fn is_object(self) -> bool {
        Store::OBJECT.contains(&self)
    }

    /// Whether another holder can replace a lock (stale steals, handoff): not on SFTP, which
    /// runs in create-only mode.
    pub fn can_steal(self) -> bool {
        self != Store::Sftp
    }

    /// Whether grants carry fencing tokens: not on SFTP (create-only mode).
    pub fn has_tokens(self) -> bool {
        self != Store::Sftp
    }

    /// Whether the test process can read and write the store's lock objects itself: every store
    /// but `mem://`, which lives inside the daemon.
    pub fn has_raw_access(self) -> bool {
        self != Store::Mem
    }

    /// The `[[stores.object]]` prefix of an object store (as `vfslockctl status` names it), the
    /// scheme's root otherwise.
    pub fn prefix(self) -> String {
        match self {
            Store::File => "file://".into(),
            Store::Mem => "mem://".into(),
            Store::S3 => format!("s3://{}/", test_env("VFSLOCK_TEST_S3_BUCKET")),
            Store::Gcs => format!("gs://{}/", test_env("VFSLOCK_TEST_GCS_BUCKET")),
            Store::Azblob => format!("azblob://{}/", test_env("VFSLOCK_TEST_AZBLOB_CONTAINER")),
            Store::Sftp => format!(
                "sftp://{}{}/",
                Store::sftp_authority(),
                test_env("VFSLOCK_TEST_SFTP_ROOT").trim_end_matches('/')
            ),
        }
    }

    /// `user@host:port` of the SFTP server, from `VFSLOCK_TEST_SFTP_ENDPOINT` (`ssh://...`).
    pub fn sftp_authority() -> String {
        let endpoint = test_env("VFSLOCK_TEST_SFTP_ENDPOINT");
        endpoint
            .strip_prefix("ssh://")
            .unwrap_or(&endpoint)
            .trim_end_matches('/')
            .to_owned()
    }

    /// The `[[stores.object]]` table serving [`Store::prefix`] (empty for `file` and `mem`,
    /// which are served by default). Secrets are passed as `env:NAME`, which the daemon reads
    /// from the environment it inherits from the test.
    pub fn config(self) -> String {
        self.config_at(&self.prefix(), None)
    }

    /// The `[[stores.object]]` table for `prefix`, with the server's endpoint or `endpoint`.
    pub fn config_at(self, prefix: &str, endpoint: Option<&str>) -> String {
        let endpoint =
            |var: &str| toml_string(&endpoint.map_or_else(|| test_env(var), str::to_owned));
        let lines = match self {
            Store::File | Store::Mem => return String::new(),
            Store::S3 => {
                test_env("VFSLOCK_TEST_S3_ACCESS_KEY_ID");
                test_env("VFSLOCK_TEST_S3_SECRET_ACCESS_KEY");
                format!(
                    "endpoint = {}\nregion = {}\n\
                     access-key-id = \"env:VFSLOCK_TEST_S3_ACCESS_KEY_ID\"\n\
                     secret-access-key = \"env:VFSLOCK_TEST_S3_SECRET_ACCESS_KEY\"\n",
                    endpoint("VFSLOCK_TEST_S3_ENDPOINT"),
                    toml_string(&test_env("VFSLOCK_TEST_S3_REGION")),
                )
            }
            Store::Gcs => format!(
                "endpoint = {}\nskip-signature = true\n",
                endpoint("VFSLOCK_TEST_GCS_ENDPOINT")
            ),
            Store::Azblob => {
                test_env("VFSLOCK_TEST_AZBLOB_KEY");
                format!(
                    "endpoint = {}\naccount-name = {}\n\
                     account-key = \"env:VFSLOCK_TEST_AZBLOB_KEY\"\n",
                    endpoint("VFSLOCK_TEST_AZBLOB_ENDPOINT"),
                    toml_string(&test_env("VFSLOCK_TEST_AZBLOB_ACCOUNT")),
                )
            }
            Store::Sftp => format!(
                "key = {}\nknown-hosts = \"strict\"\n",
                toml_string(&test_env("VFSLOCK_TEST_SFTP_KEY"))
            ),
        };
        format!(
            "\n[[stores.object]]\nprefix = {}\n{lines}",
            toml_string(prefix)
        )
    }

    /// A daemon config: [`TEST_CONFIG`]'s `[locks]` plus `locks` (more `[locks]` keys), this
    /// store's table, and `tail` (more tables, such as `[faults]`).
    pub fn daemon_config(self, locks: &str, tail: &str) -> String {
        format!("{TEST_CONFIG}{locks}\n{}\n{tail}\n", self.config())
    }

    /// A target of this store that no other test uses: `<scheme>://<bucket>/<test>-<unique>/
    /// data.csv` for the HTTP object stores, `<sftp root>/<test>-<unique>-data.csv` (an existing
    /// directory) for SFTP, a file in a fresh temporary directory, or a `mem:///` path.
    pub fn target(self, test: &str) -> StoreTarget {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let unique = format!(
            "{test}-{}-{}-{nanos:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut dir = None;
        let (url, lock_key) = match self {
            Store::File => {
                let temp = tempfile::Builder::new()
                    .prefix("vfslock-stores-")
                    .tempdir()
                    .expect("temporary directory");
                let path = temp.path().join(format!("{unique}-data.csv"));
                let path = path.to_string_lossy().into_owned();
                dir = Some(std::sync::Arc::new(temp));
                (path.clone(), Some(format!("{path}.lock")))
            }
            Store::Mem => (format!("mem:///{unique}/data.csv"), None),
            Store::S3 | Store::Gcs | Store::Azblob => {
                let key = format!("{unique}/data.csv");
                (
                    format!("{}{key}", self.prefix()),
                    Some(format!("{key}.lock")),
                )
            }
            Store::Sftp => {
                let root = test_env("VFSLOCK_TEST_SFTP_ROOT");
                let path = format!("{}/{unique}-data.csv", root.trim_end_matches('/'));
                (
                    format!("sftp://{}{path}", Store::sftp_authority()),
                    Some(format!("{}.lock", path.trim_start_matches('/'))),
                )
            }
        };
        StoreTarget {
            store: self,
            url,
            lock_key,
            _dir: dir,
        }
    }
}

/// A target of one store, unique to one test.
#[derive(Clone, Debug)]
pub struct StoreTarget {
    /// Its store.
    pub store: Store,
    /// The target URL (or absolute path, for `file`) that clients lock.
    pub url: String,
    /// Where its lock object lives, for raw access from the test: the key in the bucket or
    /// container; for SFTP the path relative to `/`; for `file` the absolute path of the lock
    /// file; `None` for `mem`.
    pub lock_key: Option<String>,
    _dir: Option<std::sync::Arc<tempfile::TempDir>>,
}

impl StoreTarget {
    /// The lock object's key; fails for `mem`, which the test cannot reach.
    pub fn key(&self) -> &str {
        self.lock_key
            .as_deref()
            .unwrap_or_else(|| panic!("{:?} lock objects live inside the daemon", self.store))
    }
}

impl Daemon {
    /// Whether this handle's daemon process runs (it was started and not yet stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the daemon, if it runs, with SIGTERM (so that it closes its store connections,
    /// e.g. the SSH master an SFTP store starts), and SIGKILL after [`DEADLINE`]. Never panics,
    /// so that it can run in a `Drop`.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: plain syscall on the pid of our own child, which has not been reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Runs `vfslockd` with `config`, which must make it refuse to start: returns its exit status
/// and everything it logged. Fails if it starts serving, or does not exit within [`DEADLINE`].
pub fn start_refused(config: &str) -> (ExitStatus, String) {
    start_refused_with(config, &[])
}

/// [`start_refused`] with more command-line arguments (`--log-format xml`).
pub fn start_refused_with(config: &str, args: &[&str]) -> (ExitStatus, String) {
    let dir = tempfile::Builder::new()
        .prefix("vfslock-test-")
        .tempdir()
        .expect("temporary directory");
    let mut launch = Launch::in_dir(bin("vfslockd"), dir.path());
    launch.args = args.iter().map(|a| a.to_string()).collect();
    std::fs::write(&launch.config, config).expect("config file");
    let mut child = launch
        .command()
        .expect("log file")
        .spawn()
        .expect("start vfslockd");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for vfslockd") {
            return (status, launch.log());
        }
        if start.elapsed() > DEADLINE || handshake_answers(&launch.socket) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "vfslockd did not refuse to start within {DEADLINE:?}:\n{}",
                launch.log()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The expired lock a dead holder left, for round `round` of a steal race: the Go library's
/// expired fixture on even rounds; on odd rounds a vfslock one whose token is far above
/// `last_token` (as after a lost counter), which the winner's token must still exceed. Returns
/// the lock file's JSON and, on odd rounds, its token.
pub fn stale_lock_for_round(round: usize, last_token: u64) -> (serde_json::Value, Option<u64>) {
    let mut stale: serde_json::Value =
        serde_json::from_slice(&fixture("go-lockfile-expired-ttl.lock")).expect("fixture");
    stale["ownerId"] = format!("stale-owner-{round}").into();
    let stale_token = (round % 2 == 1).then(|| last_token + 1_000_000_000);
    if let Some(token) = stale_token {
        let created_at = stale["createdAt"].clone();
        stale["created_at"] = created_at.clone();
        stale["acquiredAt"] = created_at;
        stale["vfslock"] = 1.into();
        stale["lockId"] = format!("{round:032x}").into();
        stale["daemonId"] = "dead".into();
        stale["token"] = token.into();
    }
    (stale, stale_token)
}

/// Lets every client try the lock on `target` at the same instant (they wait at a barrier
/// first), racer `i` with owner id `racer-<i>`; returns each racer's lock and outcome, in order.
pub async fn race(
    clients: &[vfslock::Client],
    target: &str,
) -> Vec<(vfslock::Lock, Result<(), vfslock::Error>)> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(clients.len()));
    let racers: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, client)| {
            let mut lock = client.new_lock(
                target,
                vfslock::LockOptions::default().owner_id(format!("racer-{i}")),
            );
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let result = lock.acquire().await;
                (lock, result)
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.push(
            within("a racer's acquire", racer)
                .await
                .expect("racer task"),
        );
    }
    outcomes
}

/// Checks a [`race`]: exactly one racer won, and every other was refused as already held,
/// naming the winner's lock id. Returns the winner's index and lock.
pub fn sole_winner(
    what: &str,
    outcomes: Vec<(vfslock::Lock, Result<(), vfslock::Error>)>,
) -> (usize, vfslock::Lock) {
    let racers = outcomes.len();
    let mut winner = None;
    let mut losers = Vec::new();
    for (i, (lock, result)) in outcomes.into_iter().enumerate() {
        match result {
            Ok(()) => {
                if let Some((first, _)) = &winner {
                    panic!("{what}: racers {first} and {i} both won");
                }
                winner = Some((i, lock));
            }
            Err(err) => losers.push((i, err)),
        }
    }
    let Some((index, lock)) = winner else {
        panic!("{what}: nobody won: {losers:?}");
    };
    let winner_id = lock.lock_id().expect("winner's lock id").to_owned();
    assert_eq!(losers.len(), racers - 1, "{what}");
    for (i, err) in &losers {
        assert!(err.is_already_held(), "{what}, racer {i}: {err:?}");
        assert_eq!(
            err.holder().and_then(|h| h.lock_id.as_deref()),
            Some(winner_id.as_str()),
            "{what}, racer {i}: the refusal must name the winner: {err:?}"
        );
    }
    (index, lock)
}

/// The unprivileged user tests act as (Debian's `nobody`).
pub const NOBODY: u32 = 65534;

/// `vfslockctl --socket … ARGS` against `daemon`, as root, or as `nobody` with the given
/// supplementary groups.
pub fn vfslockctl(
    daemon: &Daemon,
    as_nobody: Option<Vec<u32>>,
    args: &[&str],
) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(bin("vfslockctl"));
    command
        .arg("--socket")
        .arg(daemon.socket())
        .args(args)
        .stdin(Stdio::null());
    if let Some(groups) = as_nobody {
        // SAFETY: between fork and exec only async-signal-safe calls: setgroups, setgid,
        // setuid.
        unsafe {
            command.pre_exec(move || {
                let groups: Vec<libc::gid_t> = groups.clone();
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(NOBODY) != 0
                    || libc::setuid(NOBODY) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    command.output().expect("run vfslockctl")
}

/// Lets `nobody` reach the daemon's socket, which is otherwise 0660 root-owned in a private
/// temporary directory.
pub fn open_to_everyone(daemon: &Daemon) {
    use std::os::unix::fs::PermissionsExt;
    let dir = daemon.socket().parent().unwrap().to_owned();
    for (path, mode) in [(dir, 0o755), (daemon.socket().to_owned(), 0o666)] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}
