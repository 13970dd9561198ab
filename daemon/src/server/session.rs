//! One client connection: handshake ([`super::handshake`]), frames in, requests routed to
//! target actors, answers and events out.
//!
//! The reader (this task) decodes frames and routes requests; target actors answer through the
//! session's [`Outbound`]: straight to the socket when nothing is queued, else through the
//! session's writer task. A malformed frame gets an error (request id 0) and closes this
//! connection only. Who the client is comes from the socket's peer credentials, never from
//! what it says.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::tokio::{prelude::*, Stream};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{oneshot, watch};
use tracing::Instrument;
use vfslock_proto::{
    codec, frame::FrameDecoder, AcquireRequest, ClientFrame, ErrorKind, LockMode, Request,
    RequestId, Response, ServerFrame, WireError,
};

use crate::access::{off_runtime, resolve_file, Need};
use crate::address::{Address, Scheme};
use crate::audit::{Details, Subject};
use crate::context::{Context, Stats};
use crate::link::{Caller, ConnectionSlot, Outbound, Overflow, SessionLink, SessionSecret};
use crate::lock::{LockMessage, Registry};

/// Serves one connection of `caller` (admitted by the accept loop, which counted it in its
/// uid's `slot`) until the client leaves, misbehaves, or the daemon shuts down.
pub async fn serve(
    ctx: Arc<Context>,
    registry: Arc<Registry>,
    stream: Stream,
    caller: Caller,
    slot: Option<ConnectionSlot>,
    shutdown: watch::Receiver<bool>,
) {
    let id = ctx.stats.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let span = tracing::debug_span!("session", id, pid = caller.pid);
    serve_as(ctx, registry, stream, shutdown, id, caller)
        .instrument(span)
        .await;
    // The uid's connection is given back only now that the session is over.
    drop(slot);
}

async fn serve_as(
    ctx: Arc<Context>,
    registry: Arc<Registry>,
    mut stream: Stream,
    mut shutdown: watch::Receiver<bool>,
    id: u64,
    caller: Caller,
) {
    let protocol = match super::handshake::handshake(&ctx, &mut stream).await {
        Ok(protocol) => protocol,
        Err(reason) => {
            tracing::info!(%reason, "handshake refused");
            return;
        }
    };
    let (closing, closing_rx) = oneshot::channel();
    // Tokio's own halves on Unix: its read half learns from a short read that the socket is
    // drained, and its send half can be written from any actor's task.
    let (mut reader, send) = vfslock::transport::split(stream);
    #[cfg(unix)]
    let (out, writer) = Outbound::direct(send.clone());
    #[cfg(not(unix))]
    let (out, writer) = Outbound::through_writer();
    let writer = tokio::spawn(writer.run(send, closing_rx));
    let share = ctx.lock_share(&caller);
    let mut link = SessionLink::new(id, out, caller)
        .speaking(protocol)
        .audited(ctx.audit.clone());
    let window = ctx.settings.locks.resume_window;
    if protocol >= 5 && !window.is_zero() {
        link = link.resumable(SessionSecret::issue(&ctx.instance_id, id), window);
    }
    if let Some(share) = share {
        link = link.sharing(share);
    }
    let link = Arc::new(link);
    ctx.sessions.register(&link);
    let mut session = Session {
        ctx: ctx.clone(),
        registry,
        link,
        touched: HashMap::new(),
        resolved: HashMap::new(),
        recent: None,
    };
    Stats::add(&ctx.stats.sessions, 1);
    match session.run(&mut reader, &mut shutdown).await {
        Ok(()) => tracing::debug!("client left"),
        Err(reason) => tracing::info!(%reason, "closing connection"),
    }
    // Let the writer flush what is queued (an error, shutdown events), then close.
    let _ = closing.send(());
    let _ = writer.await;
    session.close();
    ctx.sessions.unregister(id);
    Stats::add(&ctx.stats.sessions, -1);
}

/// Who the client is, from the kernel: pid, uid, groups, and whether it is an admin (root, or
/// in the admin group by its effective or any supplementary group). Nothing the client sends
/// counts.
pub(super) fn caller_of(ctx: &Context, stream: &Stream) -> Caller {
    match stream.peer_creds() {
        Ok(creds) => {
            #[cfg(unix)]
            let (uid, groups) = {
                let mut groups = peer_groups(stream);
                groups.extend(creds.egid());
                (creds.euid(), groups)
            };
            #[cfg(unix)]
            let admin =
                uid == Some(0) || ctx.admin_gid.is_some_and(|admin| groups.contains(&admin));
            // Windows gives the pid only. The pipe's default security descriptor
            // (`server::bind`) lets only the daemon's own user, Administrators and LocalSystem
            // open it for writing, and each of them can already do by hand what an admin may do
            // here (delete lock files with the daemon's rights), so every peer is an admin. A
            // wider descriptor would have to revisit this.
            #[cfg(not(unix))]
            let (uid, groups, admin): (Option<u32>, Vec<u32>, bool) = {
                let _ = ctx;
                (None, Vec::new(), true)
            };
            Caller {
                pid: creds.pid().map(i64::from).unwrap_or(0),
                uid,
                groups,
                admin,
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the peer's credentials");
            Caller::default()
        }
    }
}

/// The peer's supplementary groups (`SO_PEERGROUPS`, Linux 4.13+), which `interprocess` does not
/// report.
#[cfg(target_os = "linux")]
fn peer_groups(stream: &Stream) -> Vec<u32> {
    use std::os::fd::{AsFd, AsRawFd};
    // The generic value; the architectures that differ (sparc, mips) are not ours to build.
    const SO_PEERGROUPS: libc::c_int = 59;
    let Stream::UdSocket(inner) = stream;
    let fd = inner.as_fd().as_raw_fd();
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: valid descriptor; the buffer is valid for `len` bytes, which the kernel
        // updates to what it wrote (or needs).
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return groups;
        }
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE)
            && count > groups.len()
            && count <= 65_536
        {
            groups.resize(count, 0);
            continue;
        }
        return Vec::new();
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
fn peer_groups(_stream: &Stream) -> Vec<u32> {
    Vec::new()
}

struct Session {
    ctx: Arc<Context>,
    /// Where requests are routed.
    registry: Arc<Registry>,
    /// The connection as the lock actors see it; who the client is, for the access checks.
    link: Arc<SessionLink>,
    /// Targets this connection has acquired on, told when it closes.
    touched: HashMap<String, Arc<Address>>,
    /// `file://` targets as this connection named them in its acquires, and where their
    /// directories resolved then: its releases and cancels go to the same actor even if a
    /// symlink on the way changed since.
    resolved: HashMap<String, Arc<Address>>,
    /// The target named last and what it parsed to: a client locking one file over and over
    /// names it in every request, and parsing is a good part of a request's work. (Only the
    /// parsing is remembered: a `file://` target's directory is still resolved at every
    /// acquire.)
    recent: Option<(String, Arc<Address>)>,
}

/// More `file://` targets remembered per connection than this and the memory starts afresh;
/// a forgotten one is only resolved again.
const RESOLVED_CAPACITY: usize = 4096;

/// A refusal by the access checks: logged, and told to the client as it is.
fn refusal(caller: &Caller, address: &Address, denied: crate::access::Denied) -> WireError {
    tracing::warn!(uid = ?caller.uid, target = %address, reason = %denied, "refused by the access rules");
    WireError::new(ErrorKind::PermissionDenied, denied.0)
}

/// Room made in the read buffer before each read: frames are a few hundred bytes.
const READ_ROOM: usize = 1024;

/// How many frames one connection handles in a row before it lets other tasks run.
const YIELD_EVERY: u32 = 32;

/// The max-hold an acquire gets: the one it asked for, at most `cap` (the daemon's
/// `locks.max-hold`), else `cap`. Detached leases have none: nothing renews them, so a hung
/// job cannot keep one beyond its TTL.
fn judge_max_hold(
    request: &AcquireRequest,
    asked: Option<Duration>,
    cap: Option<Duration>,
) -> Result<Option<Duration>, WireError> {
    let fail = |kind, message: String| Err(WireError::new(kind, message));
    match asked {
        _ if request.detached && asked.is_some() => fail(
            ErrorKind::Unsupported,
            format!(
                "{}: a detached lease has no max-hold: nothing renews it, so it lasts its TTL; \
                 give it a shorter TTL instead",
                request.target
            ),
        ),
        _ if request.detached => Ok(None),
        Some(asked) if asked.is_zero() => fail(
            ErrorKind::InvalidTarget,
            format!("{}: a max-hold must be above zero", request.target),
        ),
        Some(asked) => match cap {
            Some(cap) if asked > cap => {
                let cap = crate::duration::format(cap);
                fail(
                    ErrorKind::LimitExceeded,
                    format!(
                        "{}: a max-hold of {} is above this vfslockd's cap of {cap} \
                         (locks.max-hold): ask for {cap} or less",
                        request.target,
                        crate::duration::format(asked),
                    ),
                )
            }
            _ => Ok(Some(asked)),
        },
        None => Ok(cap),
    }
}

fn protocol_error(message: impl Into<String>) -> ServerFrame {
    ServerFrame::Response {
        id: 0,
        result: Err(WireError::new(ErrorKind::Protocol, message)),
    }
}

impl Session {
    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        let io_timeout = self.ctx.settings.limits.io_timeout;
        let decoder = FrameDecoder::new(self.ctx.settings.limits.max_frame);
        // Read straight into the frame buffer's spare room: no zeroed chunk per read, and no
        // 8 KiB array in every connection's task. It starts empty and grows with the frames.
        let mut buf: Vec<u8> = Vec::new();
        let mut handled = 0u32;
        loop {
            let mut start = 0;
            loop {
                match decoder.next_frame(&buf[start..]) {
                    Ok(Some((payload, used))) => {
                        let frame = codec::decode::<ClientFrame>(payload);
                        start += used;
                        handled = handled.wrapping_add(1);
                        if handled.is_multiple_of(YIELD_EVERY) {
                            // Frames already read are handled without waiting for anything:
                            // a client that sent thousands at once (its resumes after a
                            // restart) would otherwise keep a runtime thread from everyone
                            // else's connections until the last one is routed.
                            tokio::task::yield_now().await;
                        }
                        match frame {
                            // Boxed, as the actors' handling is: a request's future is large
                            // and an idle connection should not carry it.
                            // Wrapped in its span only when there is one: the wrapping moves the
                            // large future once more.
                            Ok(frame) => match self.request_span(&frame) {
                                Some(span) => Box::pin(self.handle(frame).instrument(span)).await,
                                None => Box::pin(self.handle(frame)).await,
                            },
                            Err(e) => {
                                self.send(protocol_error(format!("malformed request: {e}")));
                                return Err(format!("malformed request: {e}"));
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.send(protocol_error(e.to_string()));
                        return Err(e.to_string());
                    }
                }
            }
            buf.drain(..start);
            if buf.is_empty() && buf.capacity() > READ_ROOM * 16 {
                // A large frame has passed: do not keep its room for the connection's life.
                buf = Vec::new();
            }
            buf.reserve(READ_ROOM);
            let read = if buf.is_empty() {
                // Between frames a client may stay silent for as long as it holds its locks.
                tokio::select! {
                    read = reader.read_buf(&mut buf) => read,
                    _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
                }
            } else {
                tokio::select! {
                    read = tokio::time::timeout(io_timeout, reader.read_buf(&mut buf)) => {
                        read.map_err(|_| "a partial frame was not completed in time".to_owned())?
                    }
                    _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
                }
            };
            match read {
                Ok(0) if buf.is_empty() => return Ok(()),
                Ok(0) => return Err("connection closed in the middle of a frame".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    fn send(&self, frame: ServerFrame) {
        self.link.out.send(frame);
    }

    fn reply(&self, id: RequestId, result: Result<Response, WireError>) {
        self.link.reply(id, result);
    }

    /// Parses a target and checks that this daemon serves its store.
    fn address(&mut self, target: &str) -> Result<Arc<Address>, WireError> {
        if let Some((known, address)) = &self.recent {
            if known == target {
                return Ok(address.clone());
            }
        }
        let address = Arc::new(self.parse_served(target)?);
        self.recent = Some((target.to_owned(), address.clone()));
        Ok(address)
    }

    fn parse_served(&self, target: &str) -> Result<Address, WireError> {
        let address = Address::parse(target)
            .map_err(|e| WireError::new(ErrorKind::InvalidTarget, e.to_string()))?;
        #[cfg(not(unix))]
        if address.scheme() == crate::address::Scheme::File {
            return Err(WireError::new(
                ErrorKind::InvalidTarget,
                format!(
                    "{} is a file:// target: vfslockd has no file:// store on this platform (it \
                     needs Unix's O_NOFOLLOW and OFD locks); it serves {}",
                    address.url(),
                    self.ctx.stores.prefixes().join(", ")
                ),
            ));
        }
        if self.ctx.stores.for_address(&address).is_none() {
            return Err(WireError::new(
                ErrorKind::InvalidTarget,
                format!(
                    "no store of this vfslockd serves {}: it serves {}; add a store for it to \
                     the daemon's config",
                    address.url(),
                    self.ctx.stores.prefixes().join(", ")
                ),
            ));
        }
        Ok(address)
    }

    /// Where a request about `target` goes. A `file://` target's directory is resolved to the
    /// real one (the actor and the store work there, following no symlink again); with `need`,
    /// the caller is judged in that directory first, and for [`Need::Create`] also by the
    /// `[[access]]` rules. Without `need` (releases, cancels, verdicts), this connection's own
    /// earlier resolution of the target is reused.
    async fn locate(
        &mut self,
        target: &str,
        need: Option<Need>,
    ) -> Result<Arc<Address>, WireError> {
        let address = self.address(target)?;
        let address = if address.scheme() == Scheme::File {
            if need.is_none() {
                if let Some(known) = self.resolved.get(target) {
                    return Ok(known.clone());
                }
            }
            let (ctx, caller) = (self.ctx.clone(), self.link.caller.clone());
            let dir = std::path::Path::new(address.path())
                .parent()
                .unwrap_or(std::path::Path::new("/"))
                .to_owned();
            // Resolving and judging read the filesystem, which may be a hung NFS mount.
            let judged = off_runtime(&dir, move || {
                let resolved =
                    resolve_file(&address).map_err(|e| WireError::new(ErrorKind::Store, e))?;
                if let Some(need) = need {
                    ctx.access
                        .check_file(&caller, &resolved, need)
                        .map_err(|denied| refusal(&caller, &resolved, denied))?;
                }
                Ok::<_, WireError>(Arc::new(resolved))
            })
            .await?;
            if need == Some(Need::Create) {
                if self.resolved.len() >= RESOLVED_CAPACITY {
                    self.resolved.clear();
                }
                self.resolved.insert(target.to_owned(), judged.clone());
            }
            judged
        } else {
            address
        };
        if need == Some(Need::Create) {
            self.ctx
                .access
                .check_rules(&self.link.caller, &address)
                .map_err(|denied| refusal(&self.link.caller, &address, denied))?;
        }
        Ok(address)
    }

    async fn route(&self, id: RequestId, address: &Arc<Address>, message: LockMessage) {
        if let Err(e) = self.registry.route(address, message).await {
            self.reply(id, Err(WireError::new(ErrorKind::Internal, e.to_string())));
        }
    }

    /// An acquire in `mode`, held for at most `max_hold` (else the daemon's cap): refused
    /// while shutting down, over a limit, or above the cap; else routed.
    async fn acquire(
        &mut self,
        id: RequestId,
        session: Arc<SessionLink>,
        request: AcquireRequest,
        (mode, max_hold): (LockMode, Option<Duration>),
        place: Option<Box<vfslock_proto::WaitPlace>>,
    ) {
        let max_hold = match judge_max_hold(&request, max_hold, self.ctx.settings.locks.max_hold) {
            Ok(max_hold) => max_hold,
            Err(e) => return self.refuse_acquire(id, (&request, mode), e),
        };
        match self.locate(&request.target, Some(Need::Create)).await {
            Ok(address) => {
                if let Err(e) = self.start_acquire(id, &address) {
                    return self.refuse_acquire(id, (&request, mode), e);
                }
                let asked = self
                    .link
                    .is_audited()
                    .then(|| self.asked(address.url(), &request, mode));
                self.link.measure(id, self.instruments(&address), asked);
                let message = LockMessage::Acquire {
                    session,
                    id,
                    request,
                    mode,
                    max_hold,
                    place,
                };
                self.route(id, &address, message).await;
            }
            Err(e) => self.refuse_acquire(id, (&request, mode), e),
        }
    }

    /// Who asks for `target` in `mode`, as the audit log records an acquire.
    fn asked(&self, target: String, request: &AcquireRequest, mode: LockMode) -> Subject {
        let caller = &self.link.caller;
        Subject {
            target,
            pid: crate::audit::known_pid(caller.pid),
            uid: caller.uid,
            host: Some(self.ctx.host_id.clone()),
            owner: request.owner_id.clone().filter(|o| !o.is_empty()),
            detached: request.detached,
            ..Subject::default()
        }
        .in_mode(mode)
    }

    /// The metrics series of the store that serves `address`; `None` when metrics are off.
    fn instruments(&self, address: &Address) -> Option<Arc<crate::metrics::StoreInstruments>> {
        self.ctx.stores.for_address(address)?.instruments_handle()
    }

    /// Answers an acquire refused before it reached its actor, counts the refusal under its
    /// store (none for a target no store serves) and records it in the audit log.
    fn refuse_acquire(
        &mut self,
        id: RequestId,
        (request, mode): (&AcquireRequest, LockMode),
        error: WireError,
    ) {
        let address = self.address(&request.target).ok();
        if let Some(instruments) = address.as_ref().and_then(|a| self.instruments(a)) {
            let outcome = crate::metrics::Outcome::of_error(error.kind);
            instruments.acquisition(outcome, None);
        }
        if let Some(audit) = &self.ctx.audit {
            // Normalized when it parses; as the client wrote it when it does not.
            let target = address.map_or_else(|| request.target.clone(), |a| a.url());
            let asked = self.asked(target, request, mode);
            audit.record(asked, Details::refused(&error, None));
        }
        self.reply(id, Err(error));
    }

    /// Counts the acquire (or resume) `id` of `address` against this connection's and its
    /// uid's limits, and remembers the target, whose actor is told when the connection closes.
    /// Refused while the daemon stops.
    fn start_acquire(&mut self, id: RequestId, address: &Arc<Address>) -> Result<(), WireError> {
        if self.ctx.is_shutting_down() {
            return Err(WireError::new(
                ErrorKind::ShuttingDown,
                "vfslockd is shutting down",
            ));
        }
        let limit = self.ctx.settings.limits.max_locks_per_session;
        let Err(overflow) = self.link.acquire_started(id, limit) else {
            if !self.touched.contains_key(address.key()) {
                self.touched
                    .insert(address.key().to_owned(), address.clone());
            }
            return Ok(());
        };
        let message = match overflow {
            Overflow::Session => format!(
                "this connection already holds or waits for {limit} locks \
                 (limits.max-locks-per-session): release some first"
            ),
            Overflow::Uid { uid, limit } => {
                tracing::warn!(
                    uid,
                    limit,
                    "acquire refused: limits.max-locks-per-uid reached"
                );
                format!(
                    "uid {uid} already holds or waits for {limit} locks over all of its \
                     connections (limits.max-locks-per-uid): release some first, or ask the \
                     administrator to raise the limit"
                )
            }
        };
        Err(WireError::new(ErrorKind::LimitExceeded, message))
    }

    /// A resume of a holding kept across a restart: judged like an acquire of its target,
    /// counted like one, and routed to its actor, which checks who asks.
    async fn resume(
        &mut self,
        id: RequestId,
        target: String,
        lock_id: String,
        claimed: String,
        secret: vfslock_proto::Secret,
    ) {
        let address = match self.locate(&target, Some(Need::Create)).await {
            Ok(address) => address,
            Err(e) => return self.reply(id, Err(e)),
        };
        if let Err(e) = self.start_acquire(id, &address) {
            return self.reply(id, Err(e));
        }
        let message = LockMessage::Resume {
            session: self.link.clone(),
            id,
            lock_id,
            claimed,
            secret,
        };
        self.route(id, &address, message).await;
    }

    /// The span of one request (`debug`): its kind and target, this connection, and the
    /// caller. The lock actor that handles it enters the same span (it is handed over with the
    /// routing, see [`crate::link::SessionLink::routed`]) and records the lock id once it
    /// exists; store calls are its children.
    fn request_span(&self, frame: &ClientFrame) -> Option<tracing::Span> {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return None;
        }
        let (id, kind, target) = match frame {
            ClientFrame::Request { id, request } => {
                let (kind, target) = describe_request(request);
                (*id, kind, target)
            }
            ClientFrame::StaleVerdict { id, target, .. } => (*id, "stale_verdict", Some(target)),
        };
        let caller = &self.link.caller;
        // At `debug`: a span the log formats costs more than the rest of a `mem://` cycle
        // (about 15k instructions each, measured with callgrind), and the default `info` log
        // must not pay for it on every request. Warnings name their target and caller anyway.
        let span = tracing::debug_span!(
            "request",
            kind,
            target = target.map(String::as_str),
            session = self.link.id,
            request = id,
            pid = caller.pid,
            uid = caller.uid,
            lock_id = tracing::field::Empty,
        );
        // A request about a holding names it from the start.
        if let ClientFrame::Request {
            request:
                Request::Release { lock_id, .. }
                | Request::Renew { lock_id, .. }
                | Request::Resume { lock_id, .. },
            ..
        } = frame
        {
            span.record("lock_id", lock_id.as_str());
        }
        Some(span)
    }

    async fn handle(&mut self, frame: ClientFrame) {
        let (id, request) = match frame {
            ClientFrame::Request { id, request } => (id, request),
            ClientFrame::StaleVerdict {
                id,
                target,
                allow,
                reason,
            } => {
                if let Ok(address) = self.locate(&target, None).await {
                    let message = LockMessage::StaleVerdict {
                        session_id: self.link.id,
                        acquire_id: id,
                        allow,
                        reason,
                    };
                    self.route(id, &address, message).await;
                }
                return;
            }
        };
        let session = self.link.clone();
        match request {
            Request::Acquire(request) => {
                self.acquire(id, session, request, (LockMode::Exclusive, None), None)
                    .await
            }
            Request::AcquireIn { request, mode } => {
                self.acquire(id, session, request, (mode, None), None).await
            }
            Request::AcquireBounded {
                request,
                mode,
                max_hold,
            } => {
                self.acquire(id, session, request, (mode, max_hold), None)
                    .await
            }
            Request::Requeue {
                request,
                mode,
                max_hold,
                place,
            } => {
                let place = Some(Box::new(place));
                self.acquire(id, session, request, (mode, max_hold), place)
                    .await
            }
            Request::Restarts => {
                let figures = self.ctx.restarts.snapshot(std::time::Instant::now());
                self.reply(id, Ok(Response::Restarts(figures)))
            }
            Request::Metrics => {
                let format = crate::metrics::Format::Prometheus;
                let answer = match super::metrics::scrape(&self.ctx, format).await {
                    Some(text) => Ok(Response::Metrics(text)),
                    None => Err(WireError::new(ErrorKind::Unsupported, super::metrics::OFF)),
                };
                self.reply(id, answer)
            }
            Request::Resume {
                target,
                lock_id,
                session: claimed,
                secret,
            } => self.resume(id, target, lock_id, claimed, secret).await,
            Request::Resolve { targets } => {
                let mut keys = Vec::with_capacity(targets.len());
                for target in &targets {
                    let key = self
                        .locate(target, Some(Need::Create))
                        .await
                        .map(|address| address.key().to_owned());
                    keys.push(key);
                }
                self.reply(id, Ok(Response::Resolved(keys)));
            }
            Request::Cancel { target, acquire_id } => match self.locate(&target, None).await {
                Ok(address) => {
                    let message = LockMessage::Cancel {
                        session,
                        id,
                        acquire_id,
                    };
                    self.route(id, &address, message).await;
                }
                Err(e) => self.reply(id, Err(e)),
            },
            Request::Release { target, lock_id } => match self.locate(&target, None).await {
                Ok(address) => {
                    let message = LockMessage::Release {
                        session,
                        id,
                        lock_id,
                    };
                    self.route(id, &address, message).await;
                }
                Err(e) => self.reply(id, Err(e)),
            },
            Request::Renew {
                target,
                lock_id,
                ttl,
            } => match self.locate(&target, None).await {
                Ok(address) => {
                    let message = LockMessage::RenewDetached {
                        session,
                        id,
                        lock_id,
                        ttl,
                    };
                    self.route(id, &address, message).await;
                }
                Err(e) => self.reply(id, Err(e)),
            },
            Request::Break { target, reason } => {
                let peer = &self.link.caller;
                if !peer.admin {
                    tracing::warn!(uid = ?peer.uid, pid = peer.pid, %target, %reason, "refused a break: not an admin");
                    let group = self
                        .ctx
                        .settings
                        .daemon
                        .admin_group
                        .as_deref()
                        .map(|g| format!(" or a member of the group {g}"))
                        .unwrap_or_default();
                    return self.reply(
                        id,
                        Err(WireError::new(
                            ErrorKind::PermissionDenied,
                            format!(
                                "breaking a lock needs root{group}; you are uid {}",
                                peer.uid.map_or("unknown".to_owned(), |u| u.to_string())
                            ),
                        )),
                    );
                }
                match self.locate(&target, None).await {
                    Ok(address) => {
                        let message = LockMessage::Break {
                            session,
                            id,
                            reason,
                        };
                        self.route(id, &address, message).await;
                    }
                    Err(e) => self.reply(id, Err(e)),
                }
            }
            Request::Metadata { target } => match self.locate(&target, Some(Need::Search)).await {
                Ok(address) => {
                    self.route(id, &address, LockMessage::Metadata { session, id })
                        .await
                }
                Err(e) => self.reply(id, Err(e)),
            },
            Request::Describe { target } => match self.locate(&target, Some(Need::Search)).await {
                Ok(address) => {
                    self.route(id, &address, LockMessage::Describe { session, id })
                        .await
                }
                Err(e) => self.reply(id, Err(e)),
            },
            Request::WaitReleased { target, timeout } => {
                match self.locate(&target, Some(Need::Search)).await {
                    Ok(address) => {
                        let message = LockMessage::WatchRelease {
                            session,
                            id,
                            timeout,
                        };
                        self.route(id, &address, message).await
                    }
                    Err(e) => self.reply(id, Err(e)),
                }
            }
            Request::List | Request::ListModes | Request::ListQueues => {
                // Asking every actor takes a moment; keep reading this connection meanwhile.
                let registry = self.registry.clone();
                tokio::spawn(async move {
                    let listed = super::list(&registry).await;
                    let response = match request {
                        Request::ListQueues => Response::ListedQueues(listed),
                        Request::ListModes => {
                            Response::ListedModes(listed.into_iter().map(|l| l.listed).collect())
                        }
                        _ => Response::List(listed.into_iter().map(|l| l.listed.entry).collect()),
                    };
                    session.reply(id, Ok(response));
                });
            }
            Request::Status => self.reply(id, Ok(Response::Status(super::status(&self.ctx)))),
            Request::Ping => self.reply(id, Ok(Response::Pong)),
        }
    }

    /// Tells every target this connection touched that it is gone.
    fn close(&mut self) {
        for (key, _) in self.touched.drain() {
            let message = LockMessage::SessionClosed {
                session_id: self.link.id,
            };
            // A target whose actor has retired holds nothing of ours.
            let _ = self.registry.send_existing(&key, message);
        }
    }
}

/// A request's kind, as its span names it, and the target it is about, if one.
fn describe_request(request: &Request) -> (&'static str, Option<&String>) {
    match request {
        Request::Acquire(r) => ("acquire", Some(&r.target)),
        Request::AcquireIn { request, .. } => ("acquire", Some(&request.target)),
        Request::AcquireBounded { request, .. } => ("acquire", Some(&request.target)),
        Request::Requeue { request, .. } => ("requeue", Some(&request.target)),
        Request::Cancel { target, .. } => ("cancel", Some(target)),
        Request::Release { target, .. } => ("release", Some(target)),
        Request::Renew { target, .. } => ("renew", Some(target)),
        Request::Break { target, .. } => ("break", Some(target)),
        Request::Metadata { target } => ("metadata", Some(target)),
        Request::Describe { target } => ("describe", Some(target)),
        Request::WaitReleased { target, .. } => ("wait_released", Some(target)),
        Request::Resume { target, .. } => ("resume", Some(target)),
        Request::Resolve { .. } => ("resolve", None),
        Request::List | Request::ListModes | Request::ListQueues => ("list", None),
        Request::Status => ("status", None),
        Request::Ping => ("ping", None),
        Request::Restarts => ("restarts", None),
        Request::Metrics => ("metrics", None),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vfslock_proto::{AcquireRequest, ErrorKind, WaitMode};

    use super::judge_max_hold;

    fn request(detached: bool) -> AcquireRequest {
        AcquireRequest {
            target: "mem:///job".into(),
            ttl: Some(Duration::from_secs(30)),
            owner_id: None,
            wait: WaitMode::Try,
            ask_on_stale: false,
            detached,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn an_acquire_gets_its_own_max_hold_within_the_cap_else_the_cap() {
        let minute = Duration::from_secs(60);
        assert_eq!(judge_max_hold(&request(false), None, None), Ok(None));
        assert_eq!(
            judge_max_hold(&request(false), None, Some(HOUR)),
            Ok(Some(HOUR))
        );
        assert_eq!(
            judge_max_hold(&request(false), Some(minute), Some(HOUR)),
            Ok(Some(minute))
        );
        assert_eq!(
            judge_max_hold(&request(false), Some(HOUR * 5), None),
            Ok(Some(HOUR * 5))
        );
    }

    #[test]
    fn more_than_the_cap_is_refused_naming_it() {
        let refused = judge_max_hold(&request(false), Some(HOUR * 2), Some(HOUR)).unwrap_err();
        assert_eq!(refused.kind, ErrorKind::LimitExceeded);
        assert!(refused.message.contains("cap of 1h"), "{}", refused.message);
        assert!(
            refused.message.contains("locks.max-hold"),
            "{}",
            refused.message
        );
        let zero = judge_max_hold(&request(false), Some(Duration::ZERO), None).unwrap_err();
        assert!(zero.message.contains("above zero"), "{}", zero.message);
    }

    #[test]
    fn detached_leases_are_not_capped_and_may_not_ask_for_a_max_hold() {
        assert_eq!(judge_max_hold(&request(true), None, Some(HOUR)), Ok(None));
        let refused = judge_max_hold(&request(true), Some(HOUR), None).unwrap_err();
        assert_eq!(refused.kind, ErrorKind::Unsupported);
    }
}
