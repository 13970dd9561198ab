//! Starting `vfslockd`: the one launcher of the test crate. The end-to-end tests' [`Daemon`],
//! the mutex checker's daemons and the bench's all start through it, so that where the binary
//! is found, the command line, the log and the wait until the daemon serves are written once,
//! and a new daemon flag reaches every one of them.
//!
//! [`Daemon`]: crate::Daemon

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::DEADLINE;

/// The path of a workspace binary (`vfslockd`, `vfslockctl`): in `$VFSLOCK_BIN_DIR`, else next
/// to this executable (`target/<profile>/`, the checker's and the bench's place), else one
/// level up (`target/<profile>/deps/`, where test executables live).
pub fn find_bin(name: &str) -> Result<PathBuf, String> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("VFSLOCK_BIN_DIR") {
        candidates.push(PathBuf::from(dir).join(name));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(name));
            if let Some(up) = dir.parent() {
                candidates.push(up.join(name));
            }
        }
    }
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| {
            format!(
                "{name} not found (looked at {}): build the binaries first (`cargo build \
                 --bins`; tests/run.sh does it), or point VFSLOCK_BIN_DIR at them",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// How to start one `vfslockd`: its binary, its files and its logging. Public fields, so that
/// each user sets what it needs (the checker's names for its files, the bench's quiet log).
#[derive(Clone, Debug)]
pub struct Launch {
    /// The binary.
    pub binary: PathBuf,
    /// Its config file (`--config`).
    pub config: PathBuf,
    /// Its socket (`--socket`).
    pub socket: PathBuf,
    /// Its crash journal's directory (`--state-dir`): kept across restarts, so that a daemon
    /// restarted after a kill cleans up after the killed one.
    pub state_dir: PathBuf,
    /// Where its output (the log on stderr, and stdout) goes, appended: a restarted daemon
    /// logs after its predecessor.
    pub log: PathBuf,
    /// More arguments (`--host-id NAME`, `--clock-offset +1h`).
    pub args: Vec<String>,
    /// Its `RUST_LOG`.
    pub log_filter: String,
}

/// Why a started daemon does not serve.
#[derive(Debug)]
pub enum NotServing {
    /// It exited first.
    Exited(ExitStatus),
    /// It did not answer within [`DEADLINE`].
    TimedOut,
}

impl fmt::Display for NotServing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotServing::Exited(status) => write!(f, "exited with {status} before serving"),
            NotServing::TimedOut => write!(f, "did not start serving within {DEADLINE:?}"),
        }
    }
}

impl Launch {
    /// A daemon whose files are in `dir` (`vfslockd.toml`, `vfslockd.sock`, `vfslockd.log`,
    /// `state/`), run from `binary` with debug logging.
    pub fn in_dir(binary: PathBuf, dir: &Path) -> Launch {
        Launch {
            binary,
            config: dir.join("vfslockd.toml"),
            socket: dir.join("vfslockd.sock"),
            state_dir: dir.join("state"),
            log: dir.join("vfslockd.log"),
            args: Vec::new(),
            log_filter: "vfslockd=debug,info".into(),
        }
    }

    /// The command that starts it. The caller may add to it (a `pre_exec` hook) before it
    /// spawns it.
    pub fn command(&self) -> std::io::Result<Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = Command::new(&self.binary);
        command
            .arg("--config")
            .arg(&self.config)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.args)
            .env("RUST_LOG", &self.log_filter)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        Ok(command)
    }

    /// Starts it and waits until it serves ([`Launch::wait_serving`]). On failure the error
    /// says why, with the log's last lines; a daemon that did not serve in time is killed.
    pub fn start(&self) -> Result<Child, String> {
        let mut child = self
            .command()
            .and_then(|mut command| command.spawn())
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        match self.wait_serving(&mut child) {
            Ok(()) => Ok(child),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("vfslockd {e}:\n{}", self.log_tail(30)))
            }
        }
    }

    /// Waits until the daemon `child` (started from this launch) answers a handshake on its
    /// socket: only that proves that this daemon serves, since a socket file left by a killed
    /// one can still be there (it binds after its crash recovery, so it then also serves).
    pub fn wait_serving(&self, child: &mut Child) -> Result<(), NotServing> {
        let start = Instant::now();
        loop {
            if handshake_answers(&self.socket) {
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(NotServing::Exited(status));
            }
            if start.elapsed() > DEADLINE {
                return Err(NotServing::TimedOut);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Everything the daemon logged so far (also before a restart).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's last `lines` lines.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

/// The last `lines` lines of the file at `path` (none if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether a daemon answers a hello on `socket`.
pub fn handshake_answers(socket: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut answer = [0u8; 8];
    stream.write_all(b"VFSL\0\0\0\x01").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer[..4] == b"VFSL"
}
