//! The host service: the unit files pass `systemd-analyze verify` and stay within the
//! documented security exposure, the daemon serves a socket passed by
//! `systemd-socket-activate`, and it tells a notify socket READY, STATUS, WATCHDOG and
//! STOPPING, and writes journal-graded log lines (text or JSON) when its stderr is the journal.
//!
//! systemd is not PID 1 here: everything runs with systemd's stand-alone tools
//! (`systemd-analyze`, `systemd-socket-activate`, Debian package `systemd`) and a notify socket
//! of the test's own. The tools are required: a machine without them fails these tests with a
//! message naming the package.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vfslock::LockOptions;
use vfslock_tests::{bin, http_get, wait_with_deadline, within, DEADLINE, TEST_CONFIG};

/// The repository's `systemd/` directory.
fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("systemd")
}

/// Runs one of systemd's tools, failing with the package to install if it is missing.
fn systemd_tool(command: &mut Command) -> Output {
    let program = command.get_program().to_string_lossy().into_owned();
    command.output().unwrap_or_else(|e| {
        panic!("cannot run {program}: {e}; install it with `apt-get install systemd`")
    })
}

/// The units copied to a temporary directory, with `ExecStart=` pointing at the built
/// `vfslockd`: `systemd-analyze verify` checks that the binary exists and is executable, and
/// /usr/bin/vfslockd is not installed here. Nothing else is changed: systemd 252's verify and
/// offline security analysis do not look the `vfslock` user and group up, so they stay as
/// shipped (if a later version does, create the user rather than edit the copy).
fn units_for_analysis() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("vfslock-units-")
        .tempdir()
        .unwrap();
    let service = std::fs::read_to_string(units_dir().join("vfslockd.service")).unwrap();
    let shipped = "ExecStart=/usr/bin/vfslockd ";
    assert!(
        service.contains(shipped),
        "vfslockd.service no longer starts {shipped:?}; update this test"
    );
    let built = format!("ExecStart={} ", bin("vfslockd").display());
    std::fs::write(
        dir.path().join("vfslockd.service"),
        service.replace(shipped, &built),
    )
    .unwrap();
    for socket in ["vfslockd.socket", "vfslockd-metrics.socket"] {
        std::fs::copy(units_dir().join(socket), dir.path().join(socket)).unwrap();
    }
    dir
}

#[test]
fn units_pass_systemd_analyze_verify_without_a_warning() {
    let dir = units_for_analysis();
    let output = systemd_tool(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg("vfslockd.socket")
            .arg("vfslockd-metrics.socket")
            .arg("vfslockd.service")
            .current_dir(dir.path()),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Unknown keys and bad values are only warnings (exit 0): they count as failures here.
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
}

/// The number in a line "Overall exposure level for vfslockd.service: 1.3 OK".
fn exposure_level(text: &str) -> Option<f64> {
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for vfslockd.service:"))?;
    let (_, after) = line.split_once("vfslockd.service:")?;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn service_exposure_is_at_most_what_the_readme_documents() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let documented = exposure_level(&readme).expect(
        "README (Host service) shows the line `Overall exposure level for vfslockd.service: N`",
    );

    let dir = units_for_analysis();
    let output = systemd_tool(
        Command::new("systemd-analyze")
            .args([
                "security",
                "--offline=true",
                "--no-pager",
                "vfslockd.service",
            ])
            .current_dir(dir.path()),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let measured = exposure_level(&stdout).unwrap_or_else(|| {
        panic!(
            "no overall exposure level in systemd-analyze security's output ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    println!("systemd-analyze security: overall exposure level {measured} (README: {documented})");
    for line in stdout.lines().filter(|l| l.starts_with('✗')) {
        println!("  {line}");
    }
    assert!(
        measured <= documented + 1e-9,
        "exposure {measured} is above the README's {documented}: harden the unit, or document \
         the new exception in docs/design.md (Service hardening) and raise the number in \
         README (Host service):\n{stdout}"
    );
}

/// A child process that is killed (SIGKILL) and reaped if the test ends early.
struct Reaped(Option<Child>);

impl Reaped {
    fn pid(&self) -> libc::pid_t {
        self.0.as_ref().expect("running").id() as libc::pid_t
    }

    /// SIGTERM, then waits for the exit (within [`DEADLINE`]).
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("running");
        // SAFETY: plain syscall on the pid of our own child, which has not been reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        wait_with_deadline(&mut child)
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A temporary directory with a config file and a log file for one daemon.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("vfslock-systemd-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("vfslockd.toml"), TEST_CONFIG).unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `program args…` with the daemon's stdout and stderr going to the log, and none of the
    /// systemd variables this test process might have inherited (from a CI runner that is
    /// itself a service).
    fn command(&self, program: &Path) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("vfslockd.log"))
            .unwrap();
        let mut command = Command::new(program);
        command
            .env("RUST_LOG", "vfslockd=debug,info")
            .env_remove("VFSLOCK_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for name in [
            "LISTEN_PID",
            "LISTEN_FDS",
            "LISTEN_FDNAMES",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "JOURNAL_STREAM",
            "INVOCATION_ID",
        ] {
            command.env_remove(name);
        }
        command
    }

    /// `vfslockd --config … --socket …` (see [`Setup::command`]).
    fn daemon(&self) -> Command {
        let mut command = self.command(&bin("vfslockd"));
        command
            .arg("--config")
            .arg(self.path("vfslockd.toml"))
            .arg("--socket")
            .arg(self.path("vfslockd.sock"));
        command
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("vfslockd.log")).unwrap_or_default()
    }
}

/// Acquires and releases a `mem://` and a `file://` lock through `socket`.
async fn lock_and_release(socket: &Path, data: &Path) {
    // The activator creates the socket file when it binds, a moment before it listens: a
    // connection in between is refused.
    let client = within("a connection", async {
        loop {
            match vfslock::Client::connect(socket).await {
                Err(e) if e.kind() == vfslock::ErrorKind::DaemonUnavailable => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                connected => return connected,
            }
        }
    })
    .await
    .expect("connect");
    let file = data.join("activated.csv").to_string_lossy().into_owned();
    for target in ["mem:///activated".to_owned(), file] {
        let mut lock = client.new_lock(&target, LockOptions::default());
        within("an acquire", lock.acquire())
            .await
            .unwrap_or_else(|e| panic!("acquire {target}: {e}"));
        assert!(lock.is_held(), "{target}");
        within("a release", lock.release())
            .await
            .unwrap_or_else(|e| panic!("release {target}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_activation_serves_the_passed_socket_and_leaves_it_to_systemd() {
    let setup = Setup::new();
    let socket = setup.path("vfslockd.sock");
    let data = setup.path("data");
    std::fs::create_dir(&data).unwrap();
    // No --socket: the daemon must take the passed socket's own path (for its instance lock)
    // rather than the default /run/vfslock/vfslockd.sock.
    let mut activator = setup.command(Path::new("systemd-socket-activate"));
    activator
        .arg("-l")
        .arg(&socket)
        .arg("--fdname=vfslockd")
        .arg(bin("vfslockd"))
        .arg("--config")
        .arg(setup.path("vfslockd.toml"));
    let mut activator = Reaped(Some(activator.spawn().unwrap_or_else(|e| {
        panic!("cannot run systemd-socket-activate: {e}; install it with `apt-get install systemd`")
    })));

    // The activator binds and listens; the daemon is started by the first connection.
    let start = Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < DEADLINE,
            "systemd-socket-activate did not create {}:\n{}",
            socket.display(),
            setup.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mode_before = std::fs::metadata(&socket).unwrap().permissions().mode();
    lock_and_release(&socket, &data).await;
    let log = setup.log();
    assert!(log.contains("socket passed by systemd"), "{log}");
    assert!(
        setup.path("vfslockd.sock.pid").exists(),
        "the instance lock is not beside the passed socket:\n{log}"
    );

    // systemd-socket-activate execs the daemon in its own process: this is vfslockd now.
    let pid = activator.pid();
    let status = tokio::task::block_in_place(|| activator.terminate());
    assert!(
        status.success(),
        "vfslockd (pid {pid}) exited with {status}:\n{}",
        setup.log()
    );
    // The socket is systemd's: still there, mode untouched (a socket the daemon binds itself
    // is chmod-ed to 0660 and removed at exit).
    let meta = std::fs::symlink_metadata(&socket)
        .unwrap_or_else(|e| panic!("the daemon removed the passed socket: {e}\n{}", setup.log()));
    assert_eq!(
        meta.permissions().mode(),
        mode_before,
        "the daemon changed the passed socket's mode"
    );
    assert!(setup.log().contains("stopped"), "{}", setup.log());
}

/// The metrics port as `vfslockd-metrics.socket` passes it: a second descriptor named
/// `metrics`, open before the daemon runs. A scrape is the first connection: it starts the
/// daemon, which serves it on that descriptor (and its clients on the other).
#[tokio::test(flavor = "multi_thread")]
async fn a_scrape_of_the_passed_metrics_socket_starts_the_daemon() {
    let setup = Setup::new();
    let socket = setup.path("vfslockd.sock");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut activator = setup.command(Path::new("systemd-socket-activate"));
    activator
        .arg("-l")
        .arg(&socket)
        .arg("-l")
        .arg(&address)
        .arg("--fdname=vfslockd:metrics")
        .arg(bin("vfslockd"))
        .arg("--config")
        .arg(setup.path("vfslockd.toml"));
    let mut activator = Reaped(Some(activator.spawn().unwrap_or_else(|e| {
        panic!("cannot run systemd-socket-activate: {e}; install it with `apt-get install systemd`")
    })));
    // The activator listens on both before anything runs; the scrape's connection waits in
    // the port's backlog until the daemon it starts accepts it.
    let start = Instant::now();
    let stream = loop {
        match std::net::TcpStream::connect(&address) {
            Ok(stream) => break stream,
            Err(e) => {
                assert!(
                    start.elapsed() < DEADLINE,
                    "nothing listens on {address}: {e}\n{}",
                    setup.log()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let answer = tokio::task::block_in_place(|| {
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        http_get::over(stream, &address, "/metrics", None)
    });
    let answer = answer.unwrap_or_else(|e| panic!("{e}\n{}", setup.log()));
    assert_eq!(answer.code, 200, "{answer:?}\n{}", setup.log());
    assert!(answer.body.contains("vfslockd_build_info"), "{answer:?}");
    // The clients' socket is the other descriptor.
    let data = setup.path("data");
    std::fs::create_dir(&data).unwrap();
    lock_and_release(&socket, &data).await;
    // A planned restart hands both over: the new image answers on the same port.
    // SAFETY: plain syscall on our own child's pid, not reaped yet.
    unsafe { libc::kill(activator.pid(), libc::SIGUSR2) };
    let start = Instant::now();
    loop {
        let scraped =
            tokio::task::block_in_place(|| http_get::tcp(&address, "/metrics", None, DEADLINE));
        if scraped.is_ok_and(|a| a.body.contains("\nvfslockd_last_restart_planned 1\n")) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no scrape after the planned restart:\n{}",
            setup.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        setup.log().contains("restarting in place"),
        "{}",
        setup.log()
    );
    lock_and_release(&socket, &data).await;
    let status = tokio::task::block_in_place(|| activator.terminate());
    assert!(
        status.success(),
        "vfslockd exited with {status}:\n{}",
        setup.log()
    );
}

/// The messages a notify socket received, one datagram each.
struct NotifyListener {
    socket: UnixDatagram,
    received: Vec<String>,
}

impl NotifyListener {
    fn new(socket: UnixDatagram) -> NotifyListener {
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        NotifyListener {
            socket,
            received: Vec::new(),
        }
    }

    /// Receives until `done` holds for the messages received so far; fails after
    /// [`DEADLINE`] or if the daemon exits first.
    fn wait_until(
        &mut self,
        what: &str,
        daemon: &mut Reaped,
        setup: &Setup,
        done: impl Fn(&[String]) -> bool,
    ) {
        let start = Instant::now();
        while !done(&self.received) {
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.received
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                continue;
            }
            if let Some(Ok(Some(status))) = daemon.0.as_mut().map(Child::try_wait) {
                panic!(
                    "vfslockd exited with {status} before {what}:\n{}",
                    setup.log()
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no {what} within {DEADLINE:?}; received {:?}\n{}",
                self.received,
                setup.log()
            );
        }
    }
}

/// How many lines of `messages` are exactly `line`.
fn count(messages: &[String], line: &str) -> usize {
    messages
        .iter()
        .flat_map(|m| m.lines())
        .filter(|l| *l == line)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn notify_socket_hears_ready_status_watchdog_and_stopping() {
    let setup = Setup::new();
    let notify_path = setup.path("notify.sock");
    let mut notify = NotifyListener::new(UnixDatagram::bind(&notify_path).unwrap());
    let mut daemon = setup.daemon();
    // WATCHDOG_PID unset (Setup::command removes it): the watchdog is ours.
    daemon
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000");
    let mut daemon = Reaped(Some(daemon.spawn().unwrap()));

    tokio::task::block_in_place(|| {
        notify.wait_until("READY=1", &mut daemon, &setup, |m| count(m, "READY=1") == 1)
    });
    // Ready means serving: a connection succeeds at once, without retrying.
    let client = vfslock::Client::connect(setup.path("vfslockd.sock"))
        .await
        .expect("READY=1 was sent, so the socket must serve");
    let ready = notify
        .received
        .iter()
        .find(|m| m.lines().any(|l| l == "READY=1"))
        .unwrap();
    assert!(
        ready
            .lines()
            .any(|l| l == "STATUS=serving: 0 locks held, 0 waiting, 0 client connections"),
        "READY=1 without the first status: {ready:?}"
    );

    // STATUS= follows the counts: one lock held by one client.
    let mut lock = client.new_lock("mem:///notified", LockOptions::default());
    within("an acquire", lock.acquire()).await.expect("acquire");
    tokio::task::block_in_place(|| {
        notify.wait_until("STATUS= with the held lock", &mut daemon, &setup, |m| {
            count(
                m,
                "STATUS=serving: 1 lock held, 0 waiting, 1 client connection",
            ) >= 1
        })
    });
    // WATCHDOG=1 every 200 ms (half of WATCHDOG_USEC).
    tokio::task::block_in_place(|| {
        notify.wait_until("two WATCHDOG=1", &mut daemon, &setup, |m| {
            count(m, "WATCHDOG=1") >= 2
        })
    });

    let status = tokio::task::block_in_place(|| {
        // SAFETY: plain syscall on the pid of our own child, which has not been reaped yet.
        unsafe { libc::kill(daemon.pid(), libc::SIGTERM) };
        notify.wait_until("STOPPING=1", &mut daemon, &setup, |m| {
            count(m, "STOPPING=1") == 1
        });
        let mut child = daemon.0.take().unwrap();
        wait_with_deadline(&mut child)
    });
    assert!(
        status.success(),
        "vfslockd exited with {status}:\n{}",
        setup.log()
    );
    let stopping = notify
        .received
        .iter()
        .find(|m| m.lines().any(|l| l == "STOPPING=1"))
        .unwrap();
    assert!(
        stopping.contains("STATUS=shutting down"),
        "STOPPING=1 without the shutdown status: {stopping:?}"
    );
    // READY=1 once, and the lines are what sd_notify(3) defines.
    assert_eq!(
        count(&notify.received, "READY=1"),
        1,
        "{:?}",
        notify.received
    );
    for line in notify.received.iter().flat_map(|m| m.lines()) {
        let key = line.split_once('=').map(|(k, _)| k);
        assert!(
            matches!(key, Some("READY" | "STATUS" | "WATCHDOG" | "STOPPING")),
            "unexpected notify line {line:?}"
        );
    }
    drop(client);
}

#[test]
fn abstract_notify_socket_works_and_a_foreign_watchdog_pid_is_not_fed() {
    let setup = Setup::new();
    let name = format!(
        "vfslock-test-{}-{}",
        std::process::id(),
        setup.dir.path().file_name().unwrap().to_string_lossy()
    );
    let address = {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
    };
    let mut notify = NotifyListener::new(UnixDatagram::bind_addr(&address).unwrap());
    let mut daemon = setup.daemon();
    // The watchdog belongs to another process (PID 1): this daemon must not feed it.
    daemon
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .env("WATCHDOG_USEC", "100000")
        .env("WATCHDOG_PID", "1");
    let mut daemon = Reaped(Some(daemon.spawn().unwrap()));
    notify.wait_until("READY=1", &mut daemon, &setup, |m| count(m, "READY=1") == 1);
    // Ten watchdog periods (50 ms each, were it ours).
    std::thread::sleep(Duration::from_millis(500));
    let status = daemon.terminate();
    assert!(
        status.success(),
        "vfslockd exited with {status}:\n{}",
        setup.log()
    );
    let mut buf = [0u8; 4096];
    while let Ok(n) = notify.socket.recv(&mut buf) {
        notify
            .received
            .push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(
        count(&notify.received, "WATCHDOG=1"),
        0,
        "{:?}",
        notify.received
    );
    assert_eq!(
        count(&notify.received, "STOPPING=1"),
        1,
        "{:?}",
        notify.received
    );
}

/// Starts the daemon with `env`, waits until it serves, stops it, and returns its log.
fn log_of_a_short_run(setup: &Setup, env: &[(&str, String)]) -> String {
    let mut command = setup.daemon();
    for (name, value) in env {
        command.env(name, value);
    }
    let mut daemon = Reaped(Some(command.spawn().unwrap()));
    let socket = setup.path("vfslockd.sock");
    let start = Instant::now();
    while !setup.log().contains("serving") {
        if let Some(Ok(Some(status))) = daemon.0.as_mut().map(Child::try_wait) {
            panic!("vfslockd exited with {status}:\n{}", setup.log());
        }
        assert!(
            start.elapsed() < DEADLINE,
            "vfslockd did not serve:\n{}",
            setup.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(socket.exists());
    let status = daemon.terminate();
    assert!(
        status.success(),
        "vfslockd exited with {status}:\n{}",
        setup.log()
    );
    setup.log()
}

/// `device:inode` of a file, as systemd sets `JOURNAL_STREAM`.
fn journal_stream_of(path: &Path) -> String {
    let meta = std::fs::metadata(path).unwrap();
    format!("{}:{}", meta.dev(), meta.ino())
}

#[test]
fn logs_carry_syslog_priorities_only_when_stderr_is_the_journal() {
    // JOURNAL_STREAM naming stderr (here: the log file) is the journal.
    let setup = Setup::new();
    std::fs::write(setup.path("vfslockd.log"), "").unwrap();
    let stream = journal_stream_of(&setup.path("vfslockd.log"));
    let log = log_of_a_short_run(&setup, &[("JOURNAL_STREAM", stream)]);
    let lines: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let priority = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .map(|(n, _)| n);
        assert!(
            matches!(priority, Some("3" | "4" | "6" | "7")),
            "a line without a priority prefix: {line:?}\n{log}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>") && l.contains("serving")),
        "{log}"
    );
    assert!(!log.contains('\x1b'), "colours in the journal: {log:?}");
    // No timestamp: a line starts with its priority and level.
    assert!(
        lines
            .iter()
            .all(|l| !l[3..].starts_with(|c: char| c.is_ascii_digit())),
        "{log}"
    );

    // INVOCATION_ID without JOURNAL_STREAM: a unit whose stderr is not a terminal.
    let setup = Setup::new();
    let log = log_of_a_short_run(&setup, &[("INVOCATION_ID", "0123456789abcdef".into())]);
    assert!(log.lines().all(|l| l.starts_with('<')), "{log}");

    // JOURNAL_STREAM naming another stream: stderr was redirected (a shell in a service, a
    // test's log file): the human format.
    let setup = Setup::new();
    let log = log_of_a_short_run(
        &setup,
        &[
            ("JOURNAL_STREAM", journal_stream_of(Path::new("/"))),
            ("INVOCATION_ID", "0123456789abcdef".into()),
        ],
    );
    assert!(log.contains("serving"), "{log}");
    assert!(log.lines().all(|l| !l.starts_with('<')), "{log}");
}

#[test]
fn json_logs_keep_their_syslog_priorities_when_stderr_is_the_journal() {
    let setup = Setup::new();
    std::fs::write(
        setup.path("vfslockd.toml"),
        format!("{TEST_CONFIG}\n[daemon]\nlog-format = \"json\"\n"),
    )
    .unwrap();
    std::fs::write(setup.path("vfslockd.log"), "").unwrap();
    let stream = journal_stream_of(&setup.path("vfslockd.log"));
    let log = log_of_a_short_run(&setup, &[("JOURNAL_STREAM", stream)]);
    let lines: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let (priority, json) = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .unwrap_or_else(|| panic!("a line without a priority prefix: {line:?}\n{log}"));
        let object: serde_json::Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("not JSON after its priority ({e}): {line:?}\n{log}"));
        let expected = match object["level"].as_str() {
            Some("ERROR") => "3",
            Some("WARN") => "4",
            Some("INFO") => "6",
            Some("DEBUG" | "TRACE") => "7",
            other => panic!("level {other:?} in {line:?}"),
        };
        assert_eq!(priority, expected, "{line:?}");
        assert!(object["timestamp"].is_string(), "{line:?}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>{") && l.contains("serving")),
        "{log}"
    );
    assert!(!log.contains('\x1b'), "colours in the journal: {log:?}");
}

/// `vfslockd` on the listening socket `listener`, passed as systemd passes it: descriptor 3,
/// `LISTEN_FDS=1` and `LISTEN_PID` naming the daemon's own pid (the shell's, which execs it).
fn daemon_on_passed_socket(setup: &Setup, listener: &std::os::unix::net::UnixListener) -> Reaped {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    let mut command = setup.command(Path::new("/bin/sh"));
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" --config \"$1\"")
        .arg(bin("vfslockd"))
        .arg(setup.path("vfslockd.toml"));
    // SAFETY: dup2 is async-signal-safe; it runs in the child between fork and exec, on a
    // descriptor the parent keeps open.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Reaped(Some(command.spawn().expect("start vfslockd")))
}

/// The socket stays systemd's while its daemon is away: after `kill -9`, the client library
/// reconnects to it by itself, its connection waits in the socket's backlog, that connection
/// starts the daemon again (as systemd does for a socket-activated service), and the lock is
/// resumed with its lock id and token.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_survives_a_crash_of_a_socket_activated_daemon() {
    use std::os::fd::AsRawFd;
    let setup = Setup::new();
    std::fs::write(
        setup.path("vfslockd.toml"),
        TEST_CONFIG.replace("[locks]\n", "[locks]\nresume-window = \"5m\"\n"),
    )
    .unwrap();
    let socket = setup.path("vfslockd.sock");
    let data = setup.path("data");
    std::fs::create_dir(&data).unwrap();
    // Bound and listened on by "systemd", which keeps it for the service's whole life.
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let mut daemon = daemon_on_passed_socket(&setup, &listener);
    let client = within("a connection", vfslock::Client::connect(&socket))
        .await
        .expect("connect");
    let target = data.join("activated.csv").to_string_lossy().into_owned();
    let mut lock = client.new_lock(&target, LockOptions::default());
    within("an acquire", lock.acquire()).await.expect("acquire");
    let (lock_id, token) = (lock.lock_id().map(str::to_owned), lock.token());

    // SAFETY: plain syscall on the pid of our own child, which has not been reaped yet.
    unsafe { libc::kill(daemon.pid(), libc::SIGKILL) };
    drop(daemon);
    // The client's reconnect is the next connection: it waits in the backlog, and starts the
    // daemon, as systemd would.
    let pending = tokio::task::block_in_place(|| {
        let mut poll = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut poll, 1, DEADLINE.as_millis() as libc::c_int) }
    });
    assert_eq!(pending, 1, "the client reconnected to the socket by itself");
    daemon = daemon_on_passed_socket(&setup, &listener);
    vfslock_tests::eventually("the lock resumed", || {
        setup.log().contains("holding resumed")
    })
    .await;
    assert!(lock.is_held(), "never lost");
    assert_eq!(lock.lock_id().map(str::to_owned), lock_id);
    assert_eq!(lock.token(), token);
    within("a release", lock.release())
        .await
        .expect("released at the new daemon");
    assert!(!Path::new(&format!("{target}.lock")).exists());
    let status = tokio::task::block_in_place(|| daemon.terminate());
    assert!(status.success(), "{status}:\n{}", setup.log());
}
