//! What vfslockd is measured against: the floors (a bare Unix-socket round trip, sidecar-file
//! operations done in-process, `flock(2)`, a simulated daemon) and the peers (Redis, started by
//! the bench, and Python's `filelock`).
//!
//! Everything here is plain blocking code on OS threads, as a peer's client would be, so that
//! nothing of Tokio's scheduling is counted against the peers.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bytes a sidecar lock file holds: a lock file of vfslock's own format, so that the
/// in-process floor writes as much as the daemon does.
pub const LOCK_BYTES: &[u8] = br#"{
  "createdAt": "2026-11-27T15:20:00.123456789Z",
  "ttl": 30000000000,
  "hostname": "bench-host",
  "pid": 4242,
  "ownerId": "",
  "created_at": "2026-11-27T15:20:00.123456789Z",
  "owner_id": "",
  "vfslock": 1,
  "lockId": "0123456789abcdef0123456789abcdef",
  "daemonId": "fedcba9876543210fedcba9876543210",
  "acquiredAt": "2026-11-27T15:20:00.123456789Z",
  "token": 1764256800123456
}"#;

/// Creates `path` exclusively and writes the lock bytes: `false` if it already exists.
pub fn sidecar_create(path: &CString) -> bool {
    // SAFETY: a valid NUL-terminated path; the descriptor is written and closed here.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644,
        );
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            assert_eq!(
                err.raw_os_error(),
                Some(libc::EEXIST),
                "sidecar create: {err}"
            );
            return false;
        }
        let written = libc::write(fd, LOCK_BYTES.as_ptr().cast(), LOCK_BYTES.len());
        assert_eq!(written, LOCK_BYTES.len() as isize, "sidecar write");
        libc::close(fd);
    }
    true
}

/// Removes the sidecar file.
pub fn sidecar_remove(path: &CString) {
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::unlink(path.as_ptr()) };
    assert_eq!(rc, 0, "sidecar unlink: {}", std::io::Error::last_os_error());
}

/// A path as a C string.
pub fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_encoded_bytes()).expect("path without NUL")
}

/// `flock(2)` on one open descriptor: the kernel's own lock, the floor of any lock.
pub struct Flock {
    file: std::fs::File,
}

impl Flock {
    /// Opens (creating) the file to lock.
    pub fn open(path: &Path) -> Flock {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .expect("open flock file");
        Flock { file }
    }

    /// One uncontended lock + unlock.
    pub fn cycle(&self) {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        // SAFETY: a valid descriptor owned by `self.file`.
        unsafe {
            assert_eq!(libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB), 0, "flock");
            assert_eq!(libc::flock(fd, libc::LOCK_UN), 0, "unflock");
        }
    }
}

/// A thread answering 16-byte messages on a Unix socket: with `sidecar`, an `A` message first
/// creates the sidecar file and an `R` message removes it (a simulated daemon); otherwise it
/// only echoes (the transport floor).
pub fn socket_server(dir: &Path, name: &str, sidecar: Option<PathBuf>) -> UnixStream {
    let path = dir.join(name);
    let listener = UnixListener::bind(&path).expect("bind bench socket");
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let sidecar = sidecar.as_deref().map(c_path);
        let mut buf = [0u8; 16];
        while stream.read_exact(&mut buf).is_ok() {
            if let Some(sidecar) = &sidecar {
                match buf[0] {
                    b'A' => buf[1] = u8::from(sidecar_create(sidecar)),
                    _ => sidecar_remove(sidecar),
                }
            }
            if stream.write_all(&buf).is_err() {
                break;
            }
        }
    });
    UnixStream::connect(&path).expect("connect bench socket")
}

/// The same echo through Tokio on both ends, as between a client library and a daemon built on
/// it: a server runtime on a thread of its own (its workers as the daemon's: one per CPU), and
/// a client on a current-thread runtime that waits for each answer in `block_on`. Two of its
/// round trips are the floor of any such pair of programs, before either does any work.
pub struct AsyncEcho {
    client: tokio::runtime::Runtime,
    stream: tokio::net::UnixStream,
}

impl AsyncEcho {
    /// Starts the echo server in `dir` and connects to it.
    pub fn start(dir: &Path) -> AsyncEcho {
        let path = dir.join("async-echo.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind bench socket");
        std::thread::spawn(move || {
            let server = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("echo server runtime");
            server.block_on(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                listener
                    .set_nonblocking(true)
                    .expect("non-blocking listener");
                let listener = tokio::net::UnixListener::from_std(listener).expect("listener");
                let (mut stream, _) = listener.accept().await.expect("accept");
                // Served on a task of its own, as a daemon serves each connection.
                let served = tokio::spawn(async move {
                    let mut buf = [0u8; 16];
                    while stream.read_exact(&mut buf).await.is_ok() {
                        if stream.write_all(&buf).await.is_err() {
                            break;
                        }
                    }
                });
                let _ = served.await;
            });
        });
        let client = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("echo client runtime");
        let stream = client
            .block_on(tokio::net::UnixStream::connect(&path))
            .expect("connect bench socket");
        AsyncEcho { client, stream }
    }

    /// One request + answer.
    pub fn round_trip(&mut self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let stream = &mut self.stream;
        self.client.block_on(async {
            let mut buf = [b'E'; 16];
            stream.write_all(&buf).await.expect("bench socket write");
            stream
                .read_exact(&mut buf)
                .await
                .expect("bench socket read");
        });
    }
}

/// One request + answer on a [`socket_server`] stream.
pub fn round_trip(stream: &mut UnixStream, kind: u8) {
    let mut buf = [kind; 16];
    stream.write_all(&buf).expect("bench socket write");
    stream.read_exact(&mut buf).expect("bench socket read");
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// A `redis-server` started by the bench on loopback and on a Unix socket, with persistence
/// off; stopped (by its pid) when dropped.
pub struct RedisServer {
    child: Child,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// Its Unix socket.
    pub socket: PathBuf,
}

/// The script that deletes the key only if it still holds our token: the documented way to
/// release a Redis lock safely.
const COMPARE_AND_DELETE: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

impl RedisServer {
    /// Starts `redis-server` if it is installed; `None` otherwise.
    pub fn start(dir: &Path) -> Option<RedisServer> {
        let port = free_port();
        let socket = dir.join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--unixsocket")
            .arg(&socket)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = RedisServer {
            child,
            port,
            socket,
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(mut conn) = server.tcp() {
                if conn.command(&["PING"]).is_ok() {
                    return Some(server);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer within 10 s");
    }

    /// A connection over TCP (Nagle off, as every Redis client sets it).
    pub fn tcp(&self) -> std::io::Result<Resp> {
        let stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_nodelay(true)?;
        Resp::new(Box::new(stream))
    }

    /// A connection over its Unix socket.
    pub fn unix(&self) -> std::io::Result<Resp> {
        Resp::new(Box::new(UnixStream::connect(&self.socket)?))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Read and write on one stream (TCP or Unix).
pub trait Duplex: Read + Write + Send {
    /// A second handle on the same socket, for the buffered reader.
    fn clone_box(&self) -> Box<dyn Duplex>;
}

impl Duplex for TcpStream {
    fn clone_box(&self) -> Box<dyn Duplex> {
        Box::new(self.try_clone().expect("clone stream"))
    }
}

impl Duplex for UnixStream {
    fn clone_box(&self) -> Box<dyn Duplex> {
        Box::new(self.try_clone().expect("clone stream"))
    }
}

/// A minimal RESP2 client: enough for `SET NX PX`, `EVALSHA` and `PING`.
pub struct Resp {
    writer: Box<dyn Duplex>,
    reader: BufReader<Box<dyn Duplex>>,
    out: Vec<u8>,
    release_sha: String,
}

/// A reply, as far as the bench needs to tell them apart.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// `+OK` and the like, or a bulk string.
    Text(String),
    /// An integer.
    Int(i64),
    /// The nil bulk string (`SET NX` lost).
    Nil,
}

impl Resp {
    fn new(stream: Box<dyn Duplex>) -> std::io::Result<Resp> {
        let reader = BufReader::new(stream.clone_box());
        let mut resp = Resp {
            writer: stream,
            reader,
            out: Vec::with_capacity(256),
            release_sha: String::new(),
        };
        match resp.command(&["SCRIPT", "LOAD", COMPARE_AND_DELETE])? {
            Reply::Text(sha) => resp.release_sha = sha,
            other => panic!("SCRIPT LOAD answered {other:?}"),
        }
        Ok(resp)
    }

    /// Sends one command and reads its reply.
    pub fn command(&mut self, args: &[&str]) -> std::io::Result<Reply> {
        self.out.clear();
        write!(self.out, "*{}\r\n", args.len())?;
        for arg in args {
            write!(self.out, "${}\r\n{arg}\r\n", arg.len())?;
        }
        self.writer.write_all(&self.out)?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> std::io::Result<Reply> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let line = line.trim_end();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Ok(Reply::Text(rest.to_owned())),
            ":" => Ok(Reply::Int(rest.parse().expect("integer reply"))),
            "-" => Err(std::io::Error::other(format!("redis: {rest}"))),
            "$" => {
                let len: i64 = rest.parse().expect("bulk length");
                if len < 0 {
                    return Ok(Reply::Nil);
                }
                let mut body = vec![0u8; len as usize + 2];
                self.reader.read_exact(&mut body)?;
                body.truncate(len as usize);
                Ok(Reply::Text(String::from_utf8_lossy(&body).into_owned()))
            }
            other => Err(std::io::Error::other(format!(
                "unexpected redis reply type {other}"
            ))),
        }
    }

    /// `SET key token NX PX ttl`: whether the lock was taken.
    pub fn try_lock(&mut self, key: &str, token: &str) -> bool {
        match self
            .command(&["SET", key, token, "NX", "PX", "30000"])
            .expect("SET NX")
        {
            Reply::Text(_) => true,
            Reply::Nil => false,
            other => panic!("SET NX answered {other:?}"),
        }
    }

    /// The compare-and-delete script: deletes the key only if it still holds `token`.
    pub fn unlock(&mut self, key: &str, token: &str) {
        let sha = std::mem::take(&mut self.release_sha);
        let reply = self.command(&["EVALSHA", &sha, "1", key, token]);
        self.release_sha = sha;
        assert_eq!(
            reply.expect("EVALSHA"),
            Reply::Int(1),
            "released our own key"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Python's filelock
// ---------------------------------------------------------------------------------------------

/// The Python program timing `filelock.FileLock` acquire + release: prints one figure (µs per
/// cycle) per round, after a warm-up round.
const FILELOCK_SCRIPT: &str = r#"
import json, sys, time
from filelock import FileLock
path, rounds, cycles = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lock = FileLock(path)
figures = []
for round in range(rounds + 1):
    start = time.perf_counter()
    for _ in range(cycles):
        lock.acquire()
        lock.release()
    if round:
        figures.append((time.perf_counter() - start) / cycles * 1e6)
print(json.dumps(figures))
"#;

/// Per-round µs per cycle of `filelock.FileLock` in a Python process (one process for all
/// rounds: its start-up is not counted), when `$VFSLOCK_BENCH_PYTHON` names a Python that has
/// `filelock`.
pub fn py_filelock(dir: &Path, rounds: usize, cycles: usize) -> Option<Vec<f64>> {
    let python = std::env::var_os("VFSLOCK_BENCH_PYTHON")?;
    let output = Command::new(python)
        .arg("-c")
        .arg(FILELOCK_SCRIPT)
        .arg(dir.join("py.lock"))
        .arg(rounds.to_string())
        .arg(cycles.to_string())
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!("bench: py-filelock failed: {}", output.status);
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}
