//! The daemon process itself: its config printout, one daemon per socket, recovery from a
//! crashed predecessor, the socket's mode, connection timeouts, and actors that retire while
//! requests keep arriving.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use vfslock::LockOptions;
use vfslock_tests::{bin, Daemon, DEADLINE, TEST_CONFIG};

#[test]
fn print_config_shows_the_embedded_defaults_and_a_files_overrides() {
    let output = std::process::Command::new(bin("vfslockd"))
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    for line in [
        "default-ttl = \"30s\"",
        "[stores.file]\nenabled = true\nstale-rule = \"seed\"",
        "[stores.mem]\nenabled = true",
        "max-frame = 1048576",
        "reserved-admin-connections = 64\nmax-connections-per-uid = 1024",
        "max-locks-per-uid = 100000",
        "log-format = \"text\"",
    ] {
        assert!(printed.contains(line), "missing {line:?} in:\n{printed}");
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[locks]\ndefault-ttl = \"2m\"\n").unwrap();
    let output = std::process::Command::new(bin("vfslockd"))
        .arg("--config")
        .arg(&config)
        .arg("--print-config")
        .output()
        .unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("default-ttl = \"2m\""), "{printed}");
    assert!(printed.contains("corrupt-grace = \"1m\""), "{printed}");
}

#[test]
fn a_bad_config_is_refused_with_the_key_named_and_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[locks]\ndefault-ttl = \"soonish\"\n").unwrap();
    let output = std::process::Command::new(bin("vfslockd"))
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("locks.default-ttl"), "{stderr}");
    assert!(!dir.path().join("s.sock").exists());
}

#[tokio::test]
async fn a_second_daemon_on_the_same_socket_is_refused_and_the_first_keeps_serving() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let mut lock = client.new_lock("mem:///busy", LockOptions::default());
    lock.acquire().await.unwrap();

    let output = daemon.command().output().unwrap();
    assert!(!output.status.success());
    let log = daemon.log();
    assert!(log.contains("already serving"), "{log}");
    assert!(log.contains(&daemon.pid().to_string()), "{log}");

    client.ping().await.expect("the first daemon still answers");
    assert!(lock.is_held());
    let other = daemon.client().await;
    let err = other
        .new_lock("mem:///busy", LockOptions::default())
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_already_held(), "{err}");
}

#[tokio::test]
async fn a_socket_file_left_by_a_killed_daemon_is_replaced() {
    let mut daemon = Daemon::start();
    daemon.kill();
    assert!(
        daemon.socket().exists(),
        "SIGKILL leaves the socket file behind"
    );
    daemon.restart();
    let client = daemon.client().await;
    client.ping().await.unwrap();
    let mut lock = client.new_lock(daemon.file_target("x"), LockOptions::default());
    lock.acquire().await.unwrap();
    lock.release().await.unwrap();
}

#[test]
fn the_socket_file_has_mode_0660() {
    let daemon = Daemon::start();
    let mode = std::fs::metadata(daemon.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "mode {mode:o}");
}

fn hello() -> [u8; 8] {
    *b"VFSL\0\0\0\x01"
}

/// Reads until the daemon closes the connection; returns what it sent.
fn read_until_closed(stream: &mut UnixStream) -> Vec<u8> {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut all = Vec::new();
    stream
        .read_to_end(&mut all)
        .expect("the daemon closes the connection (read timed out instead)");
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn unfinished_handshakes_and_frames_time_out_but_idle_holders_do_not() {
    let io_timeout = Duration::from_millis(300);
    let daemon = Daemon::start_with(&format!(
        "{TEST_CONFIG}\n[limits]\nio-timeout = \"300ms\"\n"
    ));
    let holder = daemon.client().await;
    let mut lock = holder.new_lock("mem:///held-while-idle", LockOptions::default());
    lock.acquire().await.unwrap();

    // Half a hello: closed without an answer.
    let mut stream = UnixStream::connect(daemon.socket()).unwrap();
    stream.write_all(b"VFS").unwrap();
    assert!(read_until_closed(&mut stream).is_empty());

    // A whole handshake, then half a length prefix: closed.
    let mut stream = UnixStream::connect(daemon.socket()).unwrap();
    stream.write_all(&hello()).unwrap();
    stream.write_all(&[0, 0]).unwrap();
    let sent = read_until_closed(&mut stream);
    assert_eq!(&sent[..8], &hello(), "the daemon's hello comes first");

    // The holder has been idle for longer than the I/O timeout several times over: idleness
    // is the condition under test, so this wait is the test, not a stand-in for an event.
    tokio::time::sleep(io_timeout * 4).await;
    holder.ping().await.expect("an idle connection stays open");
    assert!(lock.is_held());
    let err = daemon
        .client()
        .await
        .new_lock("mem:///held-while-idle", LockOptions::default())
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_already_held(), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn actors_retiring_while_requests_arrive_lose_nothing() {
    let daemon = Daemon::start_with("[locks]\nidle-actor-timeout = \"1ms\"\n");
    let client = daemon.client().await;
    let target = daemon.file_target("churn");
    for round in 0..300u64 {
        let mut lock = client.new_lock(&target, LockOptions::default());
        tokio::time::timeout(DEADLINE, lock.acquire())
            .await
            .expect("acquire answered")
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        tokio::time::timeout(DEADLINE, lock.release())
            .await
            .expect("release answered")
            .unwrap();
        // Vary the gap around the idle timeout so that requests land before, during and after
        // the actor's retirement.
        if round % 3 == 0 {
            tokio::time::sleep(Duration::from_micros(500 * (round % 5))).await;
        }
    }
    assert!(!std::path::Path::new(&format!("{target}.lock")).exists());
    let mut idle = false;
    for _ in 0..(DEADLINE.as_millis() / 10) {
        if client.status().await.unwrap().targets == 0 {
            idle = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(idle, "idle actors were not retired");
}

/// Reads one frame of the daemon's from a raw stream.
fn read_server_frame(stream: &mut UnixStream) -> vfslock_proto::ServerFrame {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).unwrap();
    let mut payload = vec![0u8; u32::from_be_bytes(prefix) as usize];
    stream.read_exact(&mut payload).unwrap();
    vfslock_proto::codec::decode(&payload).unwrap()
}

#[test]
fn an_on_stale_question_left_unanswered_counts_as_a_veto() {
    use vfslock_proto::{
        codec, AcquireRequest, ClientFrame, ErrorKind, Event, Request, ServerFrame, WaitMode,
        Welcome,
    };
    let daemon = Daemon::start_with(&TEST_CONFIG.replace(
        "stale-answer-timeout = \"3s\"",
        "stale-answer-timeout = \"300ms\"",
    ));
    let target = daemon.file_target("stale.csv");
    let stale = vfslock_tests::fixture("go-lockfile-expired-ttl.lock");
    std::fs::write(format!("{target}.lock"), &stale).unwrap();

    let mut stream = UnixStream::connect(daemon.socket()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(&hello()).unwrap();
    let mut theirs = [0u8; 8];
    stream.read_exact(&mut theirs).unwrap();
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).unwrap();
    let mut welcome = vec![0u8; u32::from_be_bytes(prefix) as usize];
    stream.read_exact(&mut welcome).unwrap();
    let _: Welcome = codec::decode(&welcome).unwrap();

    let acquire = ClientFrame::Request {
        id: 5,
        request: Request::Acquire(AcquireRequest {
            target: target.clone(),
            ttl: None,
            owner_id: None,
            wait: WaitMode::Try,
            ask_on_stale: true,
            detached: false,
        }),
    };
    stream
        .write_all(&codec::encode_frame(&acquire).unwrap())
        .unwrap();
    match read_server_frame(&mut stream) {
        ServerFrame::Event {
            id: 5,
            event: Event::StaleQuestion { holder },
        } => assert_eq!(holder.hostname, "ingest-7"),
        other => panic!("expected the stale question, got {other:?}"),
    }
    // No answer: the daemon's deadline decides.
    match read_server_frame(&mut stream) {
        ServerFrame::Response {
            id: 5,
            result: Err(e),
        } => {
            assert_eq!(e.kind, ErrorKind::StaleVetoed);
            assert!(e.message.contains("did not answer"), "{}", e.message);
        }
        other => panic!("expected a veto, got {other:?}"),
    }
    assert_eq!(std::fs::read(format!("{target}.lock")).unwrap(), stale);
}
