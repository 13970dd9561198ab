//! The Go library as a real peer: `tests/gopeer/main.go`, a small program over c2fo/vfs
//! `contrib/lockfile` v1.2.0 with the OS backend, built against the copy of the library in
//! `../shared/go-lockfile` (beside the checkout, as in CI) with the machine's Go, offline.
//!
//! Where that copy or `go` is absent (a user's checkout), [`GoPeer::get`] says so loudly and
//! the tests that need it pass without running, as the advisory check does; `.ci/run` installs
//! `golang-go`, and CI has `../shared`, so CI never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The built Go peer.
pub struct GoPeer {
    bin: PathBuf,
}

/// The Go library: `$VFSLOCK_GO_LOCKFILE`, else beside the checkout.
fn library() -> PathBuf {
    match std::env::var_os("VFSLOCK_GO_LOCKFILE") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/go-lockfile"),
    }
}

impl GoPeer {
    /// The peer, built once per target directory (under a file lock: tests run in parallel
    /// processes), or `None`, said on stderr, where the Go library or `go` is missing.
    pub fn get() -> Option<GoPeer> {
        let library = library();
        if !library.join("contrib/lockfile/lockfile.go").is_file() {
            eprintln!(
                "\n*** SKIPPED: the Go library is not at {} (CI has it; see tests/gopeer/main.go)\n",
                library.display()
            );
            return None;
        }
        if Command::new("go").arg("version").output().is_err() {
            eprintln!("\n*** SKIPPED: no `go` on PATH (apt-get install golang-go)\n");
            return None;
        }
        let library = library.canonicalize().expect("the Go library's path");
        let exe = std::env::current_exe().expect("the test's path");
        // target/debug/deps/TEST → target/debug/gopeer/
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("a target directory")
            .join("gopeer");
        std::fs::create_dir_all(&dir).expect("the Go peer's build directory");
        let bin = dir.join("gopeer");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("gopeer/main.go");
        let guard = std::fs::File::create(dir.join(".build-lock")).expect("build lock");
        lock_exclusive(&guard);
        let fresh = |bin: &Path| {
            let built = std::fs::metadata(bin).and_then(|m| m.modified());
            let written = std::fs::metadata(&source).and_then(|m| m.modified());
            matches!((built, written), (Ok(b), Ok(w)) if b >= w)
        };
        if !fresh(&bin) {
            let module = dir.join("module");
            std::fs::create_dir_all(&module).expect("module directory");
            std::fs::copy(&source, module.join("main.go")).expect("copy main.go");
            let go_mod = format!(
                "module vfslock.test/gopeer\n\ngo 1.19\n\nrequire (\n\tgithub.com/c2fo/vfs/v7 \
                 v7.23.0\n\tgithub.com/c2fo/vfs/contrib/lockfile v1.2.0\n)\n\nreplace (\n\t\
                 github.com/c2fo/vfs/v7 => {lib}\n\tgithub.com/c2fo/vfs/contrib/lockfile => \
                 {lib}/contrib/lockfile\n)\n",
                lib = library.display()
            );
            std::fs::write(module.join("go.mod"), go_mod).expect("go.mod");
            let output = Command::new("go")
                .args(["build", "-o"])
                .arg(dir.join("gopeer.new"))
                .arg(".")
                .current_dir(&module)
                .env("GOFLAGS", "-mod=mod")
                .env("GOPROXY", "off")
                .env("GOCACHE", dir.join("cache"))
                .env("GOPATH", dir.join("gopath"))
                .output()
                .expect("run go build");
            assert!(
                output.status.success(),
                "go build of the Go peer failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            std::fs::rename(dir.join("gopeer.new"), &bin).expect("move the Go peer into place");
        }
        Some(GoPeer { bin })
    }

    /// The peer's command line (`reuse`, `fresh` or `poll`; see `tests/gopeer/main.go`).
    pub fn command(&self) -> Command {
        Command::new(&self.bin)
    }
}

fn lock_exclusive(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor for the file's lifetime; the lock goes with it.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
}
