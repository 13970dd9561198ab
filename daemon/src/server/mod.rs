//! The listening side: the socket, the accept loop, one session task per connection, and the
//! order of a graceful shutdown.
//!
//! Shutdown, in order (each step waits for the one before):
//! 1. stop accepting and refuse new acquires;
//! 2. every target actor tells its holder (an event), releases the lock file and fails its
//!    waiters, bounded by `locks.shutdown-timeout`;
//! 3. sessions stop reading, flush what is queued for their clients, and close.

mod handshake;
pub mod metrics;
pub mod session;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::tokio::{prelude::*, Listener};
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use tokio::sync::watch;
use tokio::task::JoinSet;
use vfslock_proto::{QueuedLock, StatusInfo};

use crate::context::{Context, Stats};
use crate::link::{Caller, ConnectionSlot};
use crate::lock::{LockMessage, Registry};

/// Why the listening socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The path cannot name a local socket.
    #[error("invalid socket path {}", path.display())]
    Name {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Binding or listening failed.
    #[error("cannot listen on {}", path.display())]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Windows: another server already holds the pipe's name.
    #[cfg(not(unix))]
    #[error(
        "cannot listen on {}: another vfslockd (or another program) already serves this \
         named pipe: stop it first, or give this one another --socket",
        path.display()
    )]
    PipeTaken {
        /// The pipe's name.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The socket file's mode could not be set.
    #[error("cannot set the mode of {}", path.display())]
    Mode {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A crashed daemon's socket file could not be removed.
    #[error("cannot remove old socket {}", path.display())]
    RemoveOld {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Something that is not a socket is in the way.
    #[error(
        "{} exists and is not a socket: refusing to replace it; choose another --socket",
        path.display()
    )]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// What is at the path could not be looked at.
    #[error("cannot inspect {}", path.display())]
    Inspect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Mode of the socket file: owner and group may connect.
#[cfg(unix)]
const SOCKET_MODE: libc::mode_t = 0o660;

/// Binds the listening socket at `path`, replacing a socket file left by a crashed daemon.
///
/// Only call this while holding the instance lock (`crate::instance`, Unix): it is what makes
/// removing an existing socket file safe.
///
/// On Windows `path` is a named pipe (`\\.\pipe\NAME`). Its first instance is created with
/// `FILE_FLAG_FIRST_PIPE_INSTANCE` (by `interprocess`), so a second daemon on the same name is
/// refused here: the pipe itself is the instance lock. It gets the default security descriptor
/// (full control: LocalSystem, Administrators and the creating user; read only: Everyone) and
/// refuses remote clients.
pub fn bind(path: &Path) -> Result<Listener, BindError> {
    #[cfg(unix)]
    remove_stale_socket(path)?;
    let name = path
        .to_fs_name::<GenericFilePath>()
        .map_err(|source| BindError::Name {
            path: path.into(),
            source,
        })?;
    let options = ListenerOptions::new().name(name).reclaim_name(true);
    #[cfg(unix)]
    let options = {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        options.mode(SOCKET_MODE)
    };
    let listener = options
        .create_tokio()
        .map_err(|source| listen_error(path, source))?;
    // The mode given to the listener is still masked by the umask when the file is created
    // (measured: 0640 under umask 022), so set it on the file itself. Until then it is only
    // stricter than intended.
    #[cfg(unix)]
    #[allow(clippy::useless_conversion)] // mode_t is u32 on Linux, u16 on some BSDs
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE.into()))
            .map_err(|source| BindError::Mode {
                path: path.into(),
                source,
            })?;
    }
    Ok(listener)
}

#[cfg(unix)]
fn listen_error(path: &Path, source: io::Error) -> BindError {
    BindError::Listen {
        path: path.into(),
        source,
    }
}

/// Windows: a name held by another pipe server fails with access denied (first instance).
#[cfg(not(unix))]
fn listen_error(path: &Path, source: io::Error) -> BindError {
    let path = path.into();
    if source.kind() == io::ErrorKind::PermissionDenied {
        return BindError::PipeTaken { path, source };
    }
    BindError::Listen { path, source }
}

#[cfg(unix)]
fn remove_stale_socket(path: &Path) -> Result<(), BindError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            tracing::info!(socket = %path.display(), "replacing the socket file of a daemon that is gone");
            std::fs::remove_file(path).map_err(|source| BindError::RemoveOld {
                path: path.into(),
                source,
            })
        }
        Ok(_) => Err(BindError::NotASocket { path: path.into() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(BindError::Inspect {
            path: path.into(),
            source,
        }),
    }
}

/// Accepts connections until `stop` fires, then shuts down in order (module docs).
///
/// `socket` is the socket file to remove at exit: `None` for a socket systemd passed, which
/// stays for the next daemon. `metrics` is the metrics listener systemd passed, which a planned
/// restart hands over with the socket. `notifier` hears `READY=1` now and `STOPPING=1` when
/// shutdown begins ([`crate::systemd`]).
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    ctx: Arc<Context>,
    registry: Arc<Registry>,
    listener: Listener,
    socket: Option<PathBuf>,
    metrics: Option<metrics::MetricsListener>,
    notifier: crate::systemd::Notifier,
    stop: impl std::future::Future<Output = ()>,
) {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Listening and the stores are up (`run`): ready. Keeps STATUS= and the watchdog going
    // until it is dropped at the end of this function.
    let reporter = crate::systemd::Reporter::start(notifier, ctx.clone());
    let mut sessions = JoinSet::new();
    tokio::pin!(stop);
    let mut reload = ReloadSignal::new();
    // Passed by systemd: handed over at a planned restart. Bound from the config: bound again
    // by the next image, from its config.
    #[cfg(unix)]
    let metrics_handed = metrics.as_ref().filter(|m| m.passed()).map(|m| m.raw_fd());
    let metrics = metrics.map(|m| m.serve(ctx.clone()));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            () = reload.recv() => {
                #[cfg(unix)]
                {
                    // The audit log's buffer would go with this image: written out first.
                    let hand_over = || {
                        if let Some(audit) = &ctx.audit {
                            audit.flush();
                        }
                        ctx.hand_over_memory()
                    };
                    let error = crate::reexec::replace_process(listener_fd(&listener), metrics_handed, socket.as_deref(), hand_over);
                    tracing::error!(%error, "cannot restart in place; serving on");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    let caller = session::caller_of(&ctx, &stream);
                    match admit(&ctx, sessions.len(), &caller) {
                        Ok(slot) => {
                            sessions.spawn(session::serve(
                                ctx.clone(),
                                registry.clone(),
                                stream,
                                caller,
                                slot,
                                shutdown_rx.clone(),
                            ));
                        }
                        Err(why) => {
                            // Told why, then closed: the sessions already open are not
                            // affected.
                            tracing::warn!(uid = ?caller.uid, pid = caller.pid, %why, "connection refused");
                            tokio::spawn(handshake::refuse(stream, why, ctx.settings.limits.io_timeout));
                        }
                    }
                }
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning; the
                    // sessions already open keep being served.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    tracing::info!("shutting down: releasing held locks");
    ctx.begin_shutdown();
    reporter.stopping();
    drop(listener);
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    // A named pipe (Windows) leaves no file behind.
    #[cfg(unix)]
    if let Some(socket) = &socket {
        let _ = std::fs::remove_file(socket);
    }
    #[cfg(not(unix))]
    let _ = socket;
    // Holdings of a previous run not yet adopted are released like the others.
    let release = async {
        registry.deliver_owed().await;
        release_all(&registry).await
    };
    let released = tokio::time::timeout(ctx.settings.locks.shutdown_timeout, release).await;
    if released.is_err() {
        tracing::error!(
            "not every lock was released within {:?}; the rest go stale when their TTL runs out",
            ctx.settings.locks.shutdown_timeout
        );
    }
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    registry.stop();
    drop(reporter);
    tracing::info!("stopped");
}

/// Whether a new connection of `caller` is served while `open` others are, by the limits in
/// order: every connection (`limits.max-connections`, admins included: it bounds what the
/// daemon takes of the host), the ones kept for root and the admin group, and the caller's
/// uid's share. A connection counted by uid comes with its slot; a refusal is the message for
/// the client.
fn admit(
    ctx: &Arc<Context>,
    open: usize,
    caller: &Caller,
) -> Result<Option<ConnectionSlot>, String> {
    let limits = &ctx.settings.limits;
    let max = limits.max_connections;
    if open >= max {
        return Err(format!(
            "vfslockd serves its maximum of {max} connections (limits.max-connections); try \
             again later"
        ));
    }
    if caller.admin {
        return Ok(None);
    }
    let reserved = limits.admin_reserve();
    if open >= max - reserved {
        return Err(format!(
            "vfslockd serves {open} connections, and the last {reserved} of its {max} \
             (limits.max-connections) are kept for root and the admin group \
             (limits.reserved-admin-connections); try again later"
        ));
    }
    // No uid (credentials unreadable): nothing to count it under; the limits above hold.
    let Some(uid) = caller.uid else {
        return Ok(None);
    };
    let limit = limits.max_connections_per_uid;
    match ctx.uids.connect(uid, limit) {
        Some(slot) => Ok(Some(slot)),
        None => Err(format!(
            "uid {uid} already has {limit} connections open to vfslockd \
             (limits.max-connections-per-uid): close some (one vfslock Client per process \
             serves all of its locks), or ask the administrator to raise the limit"
        )),
    }
}

/// Shuts down every target actor, including any started while this runs.
async fn release_all(registry: &Registry) {
    loop {
        let actors = registry.drain();
        if actors.is_empty() {
            return;
        }
        let mut calls = JoinSet::new();
        for actor in actors {
            calls.spawn(async move {
                let _ = actor.call(LockMessage::Shutdown, None).await;
            });
        }
        while calls.join_next().await.is_some() {}
    }
}

/// What `vfslockctl status` shows.
pub fn status(ctx: &Context) -> StatusInfo {
    StatusInfo {
        daemon_version: env!("CARGO_PKG_VERSION").into(),
        protocol_version: vfslock_proto::handshake::PROTOCOL_VERSION,
        hostname: ctx.host_id.clone(),
        instance_id: ctx.instance_id.clone(),
        pid: std::process::id(),
        uptime: ctx.started.elapsed(),
        stores: ctx.stores.all().map(|s| s.describe()).collect(),
        held: Stats::get(&ctx.stats.held),
        waiting: Stats::get(&ctx.stats.waiting),
        sessions: Stats::get(&ctx.stats.sessions),
        targets: Stats::get(&ctx.stats.targets),
    }
}

/// What `vfslockctl list` shows: every target with a holder or waiters.
pub async fn list(registry: &Registry) -> Vec<QueuedLock> {
    let mut calls = JoinSet::new();
    for actor in registry.actors() {
        calls.spawn(async move {
            actor
                .call(LockMessage::Snapshot, Some(Duration::from_secs(5)))
                .await
        });
    }
    let mut entries = Vec::new();
    while let Some(joined) = calls.join_next().await {
        if let Ok(Ok(ractor::rpc::CallResult::Success(Some(entry)))) = joined {
            entries.push(entry);
        }
    }
    entries.sort_by(|a, b| a.listed.entry.target.cmp(&b.listed.entry.target));
    entries
}

/// SIGUSR2, which asks for a planned restart ([`crate::reexec`]); never on Windows.
struct ReloadSignal {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl ReloadSignal {
    fn new() -> Self {
        ReloadSignal {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())
                .map_err(|e| tracing::warn!(error = %e, "cannot watch SIGUSR2: no planned restart"))
                .ok(),
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = self.signal.as_mut() {
            signal.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}

/// The listening socket's descriptor.
#[cfg(unix)]
fn listener_fd(listener: &Listener) -> std::os::fd::RawFd {
    use std::os::fd::{AsFd, AsRawFd};
    let Listener::UdSocket(inner) = listener;
    inner.as_fd().as_raw_fd()
}
