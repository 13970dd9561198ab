//! The daemon's server side and a `vfslock::Client` in one process, over the platform's local
//! socket: a named pipe `\\.\pipe\vfslock-test-<random>` on Windows, a Unix socket in a
//! temporary directory elsewhere. Serves `mem://` only. `.ci/windows.sh` builds it for Windows
//! and runs it under Wine.
//!
//! ```text
//! cargo run -p vfslockd --example pipe_roundtrip
//! ```
//!
//! It checks: handshake and ping; acquire, contention from a second client, release; a
//! detached lease ended by its lock id and a break (on Windows every peer counts as an admin,
//! see `server::session`); `file://` refused with a clear error; a client that is dropped
//! closes its session in the daemon (no half-close on a named pipe); on Windows, a second
//! server on the same pipe name is refused. Exits non-zero on the first failure.

use std::error::Error;
use std::path::Path;
#[cfg(windows)]
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vfslock::{Client, ErrorKind, LockOptions};
use vfslockd::config::Settings;
use vfslockd::context::Context;
use vfslockd::store::Stores;
use vfslockd::systemd::Notifier;

/// Set by `.ci/windows.sh` when it runs this under Wine.
#[cfg(windows)]
const UNDER_WINE: &str = "VFSLOCK_UNDER_WINE";

type Outcome = Result<(), Box<dyn Error>>;

fn check(ok: bool, what: &str) -> Outcome {
    if ok {
        Ok(())
    } else {
        Err(format!("check failed: {what}").into())
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    #[cfg(windows)]
    let (socket, kind) = (
        PathBuf::from(format!(
            r"\\.\pipe\vfslock-test-{}",
            vfslockd::context::random_id()
        )),
        "named-pipe",
    );
    #[cfg(not(windows))]
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("cannot make a temporary directory: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    #[cfg(not(windows))]
    let (socket, kind) = (dir.path().join("vfslockd.sock"), "unix-socket");
    match tokio::time::timeout(Duration::from_secs(60), round_trip(&socket)).await {
        Ok(Ok(())) => {
            println!("{kind} round trip: ok");
            std::process::ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("{kind} round trip on {}: FAILED: {e}", socket.display());
            std::process::ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "{kind} round trip on {}: FAILED: timed out",
                socket.display()
            );
            std::process::ExitCode::FAILURE
        }
    }
}

async fn round_trip(socket: &Path) -> Outcome {
    let settings = Settings::from_toml(Some((
        "[stores.file]\nenabled = false\n[stores.mem]\nenabled = true\n",
        "pipe_roundtrip",
    )))?;
    let stores = Stores::new(&settings).await?;
    let ctx = Arc::new(Context::new(settings, stores, "pipe-roundtrip".into()));
    let listener = vfslockd::server::bind(socket)?;
    println!("listening on {}", socket.display());
    #[cfg(windows)]
    match vfslockd::server::bind(socket) {
        Err(e @ vfslockd::server::BindError::PipeTaken { .. }) => {
            println!("a second server on the same pipe: refused ({e})");
        }
        // Wine 8 does not enforce FILE_FLAG_FIRST_PIPE_INSTANCE (nor pipe ACLs); Windows does.
        Ok(_) if std::env::var_os(UNDER_WINE).is_some() => {
            println!(
                "a second server on the same pipe: NOT refused, a known gap of Wine (Windows \
                 refuses it: FILE_FLAG_FIRST_PIPE_INSTANCE); not counted as a failure"
            );
        }
        other => check(
            false,
            &format!("a second server on the same pipe is refused: {other:?}"),
        )?,
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let registry = vfslockd::lock::Registry::start(ctx.clone()).await?;
    let server = tokio::spawn(vfslockd::server::serve(
        ctx,
        registry,
        listener,
        Some(socket.to_owned()),
        None,
        Notifier::disabled(),
        async {
            let _ = stopped.await;
        },
    ));

    let client = Client::connect(socket).await?;
    let rtt = client.ping().await?;
    println!(
        "connected to vfslockd {} ({}); ping {rtt:?}",
        client.daemon().daemon_version,
        client.daemon().hostname
    );

    let target = "mem:///roundtrip/data.csv";
    let mut lock = client.new_lock(target, LockOptions::default().owner_id("pipe_roundtrip"));
    lock.acquire().await?;
    check(lock.is_held(), "the lock is held after acquire")?;
    let held = lock.held_metadata().ok_or("no metadata while held")?;
    println!(
        "acquired {target}: pid {} token {:?}",
        held.pid,
        lock.token()
    );
    check(
        held.pid == i64::from(std::process::id()),
        "the daemon saw our pid",
    )?;

    let other = Client::connect(socket).await?;
    let mut contender = other.new_lock(target, LockOptions::default());
    let refused = contender.acquire().await;
    check(
        matches!(&refused, Err(e) if e.is_already_held()),
        &format!("a second client is refused while it is held: {refused:?}"),
    )?;
    lock.release().await?;
    check(!lock.is_held(), "released")?;
    contender.acquire().await?;
    contender.release().await?;
    println!("released; a second client took and released it");

    // Windows: uid unknown, every peer an admin (`server::session::peer_of`).
    let lease = client
        .acquire_detached(target, Duration::from_secs(30), None, None)
        .await?;
    let ended = client.release_detached(target, &lease.lock_id).await?;
    check(ended, "the detached lease was ended by its lock id")?;
    let mut victim = other.new_lock(target, LockOptions::default());
    victim.acquire().await?;
    match client.break_lock(target, "pipe_roundtrip").await {
        Ok(broken) => {
            check(broken.is_some(), "break removed the holder's lock file")?;
            println!("detached lease ended; lock broken");
        }
        // Unix, not root: breaking needs an admin (peer credentials).
        #[cfg(unix)]
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            println!("detached lease ended; break refused: {}", e.message());
        }
        Err(e) => return Err(e.into()),
    }

    let file = client
        .new_lock("/tmp/vfslock-roundtrip.csv", LockOptions::default())
        .acquire()
        .await;
    check(
        matches!(&file, Err(e) if e.kind() == ErrorKind::InvalidTarget),
        &format!("file:// is refused: {file:?}"),
    )?;
    if let Err(e) = file {
        println!("file:// refused: {}", e.message());
    }

    // A dropped client must end its session in the daemon, although a named pipe cannot be
    // half-closed.
    drop(contender);
    drop(victim);
    drop(other);
    let mut sessions = u64::MAX;
    for _ in 0..100 {
        sessions = client.status().await?.sessions;
        if sessions == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check(
        sessions == 1,
        &format!("the dropped client's session closed (sessions: {sessions})"),
    )?;
    println!("dropped client's session closed");

    drop(lock);
    drop(client);
    let _ = stop.send(());
    server.await?;
    Ok(())
}
