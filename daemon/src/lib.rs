//! `vfslockd`: the per-host lock daemon, as a library its two binaries call into.
//!
//! # Layout
//!
//! One request travels down this list and its answer back up:
//!
//! | module       | owns                                                                 |
//! |--------------|----------------------------------------------------------------------|
//! | [`server`]   | the socket, the accept loop, graceful shutdown                       |
//! | [`server::session`] | one connection: handshake, frames, peer credentials, routing  |
//! | [`lock`]     | one actor per target (acquire, queue, renew, steal, release), the registry that routes to them and the supervisor that replaces a failed one |
//! | [`link`]     | what a connection and the lock actors share: the caller, the way back, open requests, per-uid counts |
//! | [`lockfile`] | the lock-file JSON (a superset of the Go library's), foreign and corrupt files |
//! | [`store`]    | where lock files live: local files by syscalls, memory in a table, object stores via OpenDAL |
//! | [`address`]  | target URLs and their one normalized form                            |
//! | [`access`]   | who may lock what: `[[access]]` rules, file:// confinement          |
//! | [`config`]   | TOML → defaults merged → validated settings                          |
//! | [`context`]  | what all of the above share: settings, stores, identity, counters    |
//! | [`audit`]    | the audit log: each grant, release, loss, steal, break, refusal      |
//! | [`instance`] | one daemon per socket, by an OS lock                                 |
//! | [`journal`]  | the crash journal: lock files to clean up after a `kill -9`          |
//! | [`restarts`] | how often the daemon restarted and what its latest restart kept      |
//! | [`systemd`]  | a socket passed by systemd, readiness/status/watchdog, journal log lines |
//! | [`startup`]  | the checks before a start (also `--check-config`), why a start failed |
//! | [`error`]    | printing an error with its causes                                    |
//! | [`ctl`]      | `vfslockctl` commands, each a small module over the `vfslock` client |
//!
//! The binaries (`src/bin/`) only parse arguments, set up logging and call [`run`] or
//! [`ctl::main`].
//!
//! # Layers
//!
//! Imports point down, never up and never in a circle (`tests/tests/layers.rs` fails on a
//! cycle): `startup` → `server` → `lock` → `context` → `journal`, `access` → `store` →
//! `lockfile`, `address`, `config`; `link` (the connection as the lock actors see it) sits
//! below both `server` and `lock`, so that neither imports the other. `audit` is at the
//! bottom with `config`: the connections and the lock actors build its records, and it
//! knows nothing of them.

pub mod access;
pub mod address;
pub mod audit;
pub mod config;
pub mod context;
pub mod ctl;
pub mod duration;
pub mod error;
#[cfg(unix)]
pub mod instance;
pub mod journal;
pub mod link;
pub mod lock;
pub mod lockfile;
pub mod metrics;
#[cfg(unix)]
pub mod reexec;
pub mod restarts;
pub mod server;
pub mod startup;
pub mod store;
pub mod systemd;

#[cfg(unix)]
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use config::Settings;
use context::Context;
use startup::StartError;

/// Runs the daemon on `socket` until SIGTERM or SIGINT, then releases every lock and returns.
///
/// Under systemd it serves the socket systemd passed (whose path then replaces `socket`) and
/// notifies the service manager ([`systemd`]); elsewhere it binds `socket` itself.
///
/// The checks without side effects ([`startup::check`]) come first, so that a configuration
/// error stops it before it has created, bound or probed anything.
pub async fn run(settings: Settings, socket: PathBuf) -> Result<(), StartError> {
    // First, while nothing else runs: both remove their variables from the environment (a
    // planned restart gives the next image what systemd gave this one).
    #[cfg(unix)]
    reexec::remember_environment();
    #[cfg(unix)]
    let (restarted_own_socket, planned_restart) =
        (reexec::take_own_socket_flag(), reexec::take_planned_flag());
    #[cfg(not(unix))]
    let (restarted_own_socket, planned_restart) = (false, false);
    #[cfg(unix)]
    let memory_file = reexec::take_memory_file();
    #[cfg(not(unix))]
    let memory_file: Option<PathBuf> = None;
    let systemd::PassedSockets {
        control: passed,
        #[cfg(unix)]
            metrics: passed_metrics,
    } = systemd::take_passed_sockets()?;
    let stop = stop_signal();
    let notifier = systemd::Notifier::from_env();
    let socket = match passed.as_ref().and_then(|p| p.path.clone()) {
        Some(path) => {
            if path != socket {
                tracing::info!(passed = %path.display(), ignored = %socket.display(), "serving the socket systemd passed");
            }
            path
        }
        None => socket,
    };
    let access = startup::check(&settings)?;
    for warning in startup::warnings(&settings) {
        tracing::warn!("{warning}");
    }
    // The instance lock lives beside the socket even when systemd created the socket. A named
    // pipe (Windows) has no directory, and is its own instance lock (`server::bind`).
    #[cfg(unix)]
    prepare_socket_dir(&socket)?;
    #[cfg(unix)]
    let _instance = instance::InstanceLock::acquire(&socket)?;
    // Resolved before `ssh::prepare` points XDG_STATE_HOME at the ssh control directory.
    let state_dir = settings
        .daemon
        .state_dir
        .clone()
        .unwrap_or_else(journal::default_state_dir);
    // Ends what a SIGKILLed predecessor's ssh left, before our stores start their own.
    #[cfg(unix)]
    {
        let sftp = settings
            .stores
            .object
            .iter()
            .any(|store| store.parsed.0 == address::Scheme::Sftp);
        let ended =
            store::object::ssh::prepare(&socket, sftp).map_err(|source| StartError::SshDir {
                dir: store::object::ssh::control_dir(&socket),
                source,
            })?;
        if ended > 0 {
            tracing::info!(ended, "ended the ssh control masters of the previous run");
        }
    }
    // Before the stores connect: a path the daemon cannot write stops it before it serves.
    let audit_log = audit::AuditLog::open(&settings.audit)?;
    let stores = store::Stores::new(&settings).await?;
    let host_id = settings
        .daemon
        .host_id
        .clone()
        .unwrap_or_else(context::hostname);
    let (journal, left) = journal::Journal::open(&state_dir, &host_id, &socket)?;
    let (restart_record, this_start) = restarts::RestartRecord::start(
        &state_dir,
        &host_id,
        &socket,
        planned_restart,
        !left.is_empty(),
    );
    // `mem://` holdings are in the journal's file only when a planned restart handed the
    // memory store over; loaded before they are adopted.
    let memory_loaded = load_memory(&stores, &journal, memory_file);
    let left: Vec<_> = if memory_loaded {
        left
    } else {
        left.into_iter()
            .filter(|l| !l.target.starts_with("mem:"))
            .collect()
    };
    // A holding that its session may resume is kept for it (`lock::resume`); every other one
    // is settled as after a crash.
    let window = settings.locks.resume_window;
    let (kept, settle): (Vec<_>, Vec<_>) = left
        .into_iter()
        .partition(|left| (left.owner.is_some() || !left.members.is_empty()) && !window.is_zero());
    let settle: Vec<_> = settle.into_iter().map(|l| (l.lock_id, l.target)).collect();
    // Nobody gets these back: each is a holding the restart lost.
    let lost_at_startup = settle.len() as u64;
    let unsettled = if settle.is_empty() {
        Vec::new()
    } else {
        let (removed, unsettled) = journal::recover(&stores, settle).await;
        tracing::info!(
            removed,
            unsettled = unsettled.len(),
            "cleaned up the lock files of the previous run"
        );
        unsettled
    };
    journal.restart(&unsettled, &kept);
    let waits = journal.left_waits();
    if window.is_zero() && !waits.is_empty() {
        journal.forget_waits();
    }
    let mut ctx = Context::new(settings, stores, host_id);
    ctx.journal = Some(journal);
    ctx.audit = audit_log;
    ctx.access = access;
    ctx.restarts = restarts::RestartFigures::new(
        this_start,
        ctx.started + window,
        kept.len() as u64,
        lost_at_startup,
    );
    if let Some(planned) = this_start.restart {
        let how = if planned {
            "as planned"
        } else {
            "after a crash"
        };
        tracing::info!(
            restarts = this_start.restarts,
            planned,
            kept = kept.len(),
            lost = lost_at_startup,
            window = %duration::format(window),
            "restarted {how} (restart {}): keeping {} holdings of the previous run for their sessions to resume, {} lost",
            this_start.restarts,
            kept.len(),
            lost_at_startup
        );
    }
    let ctx = Arc::new(ctx);
    let registry = lock::Registry::start(ctx.clone())
        .await
        .map_err(startup::StartError::Supervisor)?;
    keep_for_resume(&ctx, &registry, kept);
    if !window.is_zero() {
        keep_places(&ctx, &registry, waits);
    }
    // The owed targets' actors start in the background, while clients are served.
    tokio::spawn({
        let registry = registry.clone();
        async move { registry.deliver_owed().await }
    });
    if ctx.restarts.is_restart() {
        // One line for the whole daemon, however many targets the window fenced.
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let settle_time = ctx.settings.locks.store_timeout * 2;
            ctx.restarts.report_window_close(settle_time).await;
        });
    }
    for store in ctx.stores.all() {
        let info = store.describe();
        tracing::info!(scheme = %info.scheme, "store: {}", info.description);
    }
    // A passed socket is systemd's: never replaced, chmod-ed or removed by us.
    let (listener, own_socket) = match passed {
        // A planned restart of a daemon that had bound the socket itself: still its own.
        Some(passed) if restarted_own_socket => {
            tracing::info!("socket handed over by the planned restart");
            (passed.listener, Some(socket.clone()))
        }
        Some(passed) => {
            tracing::info!(
                name = passed.name.as_deref().unwrap_or(""),
                "socket passed by systemd"
            );
            (passed.listener, None)
        }
        None => (server::bind(&socket)?, Some(socket.clone())),
    };
    // The metrics port systemd holds (`vfslockd-metrics.socket`) wins over the config's.
    #[cfg(unix)]
    let metrics_listener = match passed_metrics {
        Some(fd) => {
            Some(server::metrics::MetricsListener::adopt(fd).map_err(StartError::MetricsPassed)?)
        }
        None => None,
    };
    #[cfg(not(unix))]
    let metrics_listener = None;
    let metrics_listener = match (metrics_listener, &ctx.settings.metrics.listen) {
        (Some(passed), configured) => {
            if let Some(configured) = configured {
                tracing::info!(ignored = %configured, "serving metrics on the socket systemd passed, not [metrics] listen");
            }
            Some(passed)
        }
        (None, Some(address)) => Some(server::metrics::MetricsListener::bind(address).await?),
        (None, None) => None,
    };
    tracing::info!(
        socket = %socket.display(),
        host = %ctx.host_id,
        instance = %ctx.instance_id,
        "vfslockd {} serving",
        env!("CARGO_PKG_VERSION")
    );
    let audit = ctx.audit.clone();
    server::serve(
        ctx,
        registry,
        listener,
        own_socket,
        metrics_listener,
        notifier,
        stop,
    )
    .await;
    // Every release of the shutdown is recorded by now: write them out before the exit.
    if let Some(audit) = audit {
        audit.close();
    }
    // An orderly stop released every lock: the next start is no restart (unless a release
    // that timed out left holdings in the journal, which the next start finds).
    restart_record.stopped();
    Ok(())
}

/// Owes each holding of the previous run that its session may resume to its target's actor,
/// before any client is served ([`lock::Registry::owe`]): the actor keeps it until the resume
/// window closes, W after this daemon's start.
fn keep_for_resume(ctx: &Arc<Context>, registry: &Arc<lock::Registry>, kept: Vec<journal::Left>) {
    let until = ctx.started + ctx.settings.locks.resume_window;
    for left in kept {
        match address::Address::parse(&left.target) {
            Ok(address) => {
                let message = lock::LockMessage::Adopt(Box::new(lock::resume::Kept {
                    lock_id: left.lock_id,
                    owner: left.owner,
                    members: left.members,
                    until,
                }));
                registry.owe(Arc::new(address), message);
            }
            Err(e) => {
                tracing::warn!(target = %left.target, reason = %e, "cannot keep a holding of the previous run");
                ctx.restarts.count_lost();
                if let Some(journal) = &ctx.journal {
                    journal.release(&left.lock_id);
                }
            }
        }
    }
}

/// Owes the places of the previous run's waiters to their targets' actors, before any client is
/// served, for their sessions to ask for again until the resume window closes; every later
/// waiter queues behind them.
fn keep_places(ctx: &Arc<Context>, registry: &Arc<lock::Registry>, waits: Vec<journal::LeftWait>) {
    let Some(last) = waits.iter().map(|wait| wait.ordinal).max() else {
        return;
    };
    ctx.wait_ordinals_after(last);
    let until = ctx.started + ctx.settings.locks.resume_window;
    tracing::info!(
        waiters = waits.len(),
        "keeping the places of the previous run's waiters for them to ask again"
    );
    let mut by_target: std::collections::BTreeMap<String, Vec<(u64, journal::Owner)>> =
        Default::default();
    for wait in waits {
        by_target
            .entry(wait.target)
            .or_default()
            .push((wait.ordinal, wait.owner));
    }
    for (target, waits) in by_target {
        match address::Address::parse(&target) {
            Ok(address) => {
                let message = lock::LockMessage::AdoptWaits { waits, until };
                registry.owe(Arc::new(address), message);
            }
            Err(e) => {
                tracing::warn!(%target, reason = %e, "cannot keep the places of the previous run's waiters");
                for (ordinal, _) in waits {
                    ctx.journal_waited(ordinal);
                }
            }
        }
    }
}

/// Loads the `mem://` store the previous image of a planned restart left in `handed` (named
/// by it, and only if it is this identity's file beside the journal), and removes the file;
/// removes a file no restart handed over (left by one whose exec failed), since what it holds
/// may be out of date. Whether a store was loaded.
fn load_memory(
    stores: &store::Stores,
    journal: &journal::Journal,
    handed: Option<PathBuf>,
) -> bool {
    let path = journal.memory_path();
    let ours = handed.as_deref() == Some(path.as_path());
    if !ours && handed.is_some() {
        tracing::warn!(
            "the planned restart named a mem:// store file that is not this daemon's; ignored"
        );
    }
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) => {
            if ours {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the mem:// store the previous image handed over: its locks are lost");
            }
            return false;
        }
    };
    let _ = std::fs::remove_file(&path);
    if !ours {
        tracing::info!(path = %path.display(), "removed a mem:// store file no planned restart handed over");
        return false;
    }
    let Some(store) = stores.memory() else {
        tracing::warn!("the previous image handed over a mem:// store, and mem:// is not served now: its locks are lost");
        return false;
    };
    match serde_json::from_slice(&text) {
        Ok(handed) => {
            let files = store.load_memory(handed);
            tracing::info!(
                files,
                "loaded the mem:// store the previous image handed over"
            );
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the mem:// store the previous image handed over: its locks are lost");
            false
        }
    }
}

#[cfg(unix)]
fn prepare_socket_dir(socket: &Path) -> Result<(), StartError> {
    let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o755);
    }
    builder.create(dir).map_err(|source| StartError::SocketDir {
        dir: dir.into(),
        source,
    })
}

/// Resolves when the daemon is asked to stop: SIGTERM or SIGINT (Ctrl-C elsewhere).
// Elsewhere than on Unix nothing is installed ahead (Ctrl-C is watched when first polled), and
// the function reads like an `async fn`: it is not one on Unix, for the reason below.
#[cfg_attr(not(unix), allow(clippy::manual_async_fn))]
fn stop_signal() -> impl std::future::Future<Output = ()> {
    // The handlers are installed here, not when the future is first polled: from then on a
    // SIGTERM is a clean stop, never the default action's sudden end (or, for SIGUSR2, a
    // planned restart's), however early it comes.
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        // Only registered: a SIGUSR2 before the server watches it is ignored, not fatal.
        let _ = signal(SignalKind::user_defined2());
        // SIGHUP too (a closed terminal sends it to the whole foreground group): its default
        // action would end the daemon without releasing its locks or ending its ssh.
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        )
    };
    async move {
        #[cfg(unix)]
        match signals {
            (Ok(mut term), Ok(mut int), Ok(mut hup)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                    _ = hup.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
