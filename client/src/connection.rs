//! One connection to the daemon, shared by every lock of a [`Client`](crate::Client).
//!
//! Requests are multiplexed: each gets an id, and a reader task routes the daemon's responses
//! and events back by id. Frames go out through [`transport`] (shared with the daemon): written
//! at once when nothing is queued, else by a writer task. Sending needs no runtime, so `Drop` of
//! a lock can still release it.
//!
//! The connection speaks the newest protocol version that both ends speak: when an older daemon
//! answers the hello with its own lower version (and closes), the client connects again
//! speaking that version (`vfslock_proto::handshake` has the rules).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use interprocess::local_socket::tokio::{prelude::*, Stream};
use interprocess::local_socket::{GenericFilePath, ToFsName};
use tokio::io::{AsyncReadExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

use crate::spin::{InFlight, Spin};
use vfslock_proto::handshake::{
    after_daemon_hello, AfterHello, Hello, HELLO_LEN, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use vfslock_proto::{
    codec, frame, AcquireRequest, ClientFrame, Event, Grant, LockMode, Request, RequestId,
    Response, Resumable, ServerFrame, WaitPlace, Welcome,
};

use crate::error::{Error, ErrorKind};
use crate::transport::{self, Outbound, ReadHalf, WeakOutbound, WriteHalf};
use crate::LockMetadata;

/// Responses (a list of 100,000 locks) can be far larger than requests.
const MAX_INBOUND_FRAME: usize = 256 << 20;

/// What an acquire in progress hears from the daemon.
#[allow(clippy::large_enum_variant)] // short-lived, one per event
pub(crate) enum AcquireUpdate {
    /// Queued at this 1-based position.
    Position(u32),
    /// Queued at this 1-based position, with the place to ask for again after the daemon
    /// restarted (protocol 7) and the window within which to ask.
    Queued(u32, WaitPlace, Duration),
    /// Where the acquire stands now, and who holds the lock (protocol 9).
    Waiting(crate::lock::Waiting),
    /// The lock is stale: may it be taken?
    StaleQuestion(LockMetadata),
    /// The lock is held; the lease is watched from the moment the grant arrived.
    Granted(Box<Grant>, LeaseWatch),
    /// The final answer, when it is not a grant.
    Done(Result<Response, Error>),
}

enum Route {
    Once(oneshot::Sender<Result<Response, Error>>),
    Acquire(mpsc::UnboundedSender<AcquireUpdate>),
    /// A resume: the lease to carry on with, and whether it did.
    Resume(Orphan, oneshot::Sender<Result<(), Error>>),
}

/// What a holder knows about its lease, kept current by the reader task.
#[derive(Clone, Debug)]
pub(crate) struct LeaseState {
    /// Why the lease was lost, once it was: the kind a release reports, and the reason.
    pub lost: Option<(ErrorKind, String)>,
    /// Until when the lease is certainly valid, on this process's monotonic clock; `None`
    /// never expires.
    pub valid_until: Option<Instant>,
    /// How the holding can be resumed after the daemon restarted (protocol 5 daemons);
    /// `None` when it cannot.
    pub resume: Option<Arc<ResumeTicket>>,
    /// The connection and request the holding lives on since it was resumed; `None` while it
    /// lives where it was granted. Weak: a connection's own routes must not keep it open.
    pub rebound: Option<(Weak<Connection>, RequestId)>,
    /// Whether its connection closed and it waits to be resumed: `valid_until` is then the
    /// resume deadline.
    pub resuming: bool,
}

/// What a holder needs to take its holding back after the daemon restarted.
#[derive(Debug)]
pub(crate) struct ResumeTicket {
    /// The target as the grant named it.
    pub target: String,
    /// The holding's lock id.
    pub lock_id: String,
    /// The session, its secret and the resume window.
    pub ticket: Resumable,
}

/// A holding whose connection closed while it may still be resumed: handed to the
/// [`Link`](crate::link::Link), which reconnects and asks for it back.
pub(crate) struct Orphan {
    /// The lease, still watched by its `Lock`.
    pub lease: watch::Sender<LeaseState>,
    /// How to ask for it.
    pub ticket: Arc<ResumeTicket>,
    /// When it counts as lost if not resumed: W after the last frame the daemon sent, or
    /// sooner when its validity runs out (the safety rule).
    pub deadline: Instant,
}

impl Orphan {
    /// Gives the holding up: its `Lock` hears that it is lost, and why.
    pub(crate) fn lose(self, reason: String) {
        mark_lost(&self.lease, ErrorKind::LeaseLost, reason);
    }

    /// Whether its `Lock` let it go (released or dropped) while it waited to be resumed.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.lease.is_closed()
    }
}

/// Where a connection's orphans go.
pub(crate) type Heir = mpsc::UnboundedSender<Vec<Orphan>>;

impl LeaseState {
    /// Why the lease is not held now, if it is not: lost, or its validity ran out without a
    /// renewal confirmed by the daemon (a frozen or partitioned daemon looks like this).
    pub fn loss(&self) -> Option<(ErrorKind, String)> {
        if let Some(lost) = &self.lost {
            return Some(lost.clone());
        }
        match self.valid_until {
            Some(until) if Instant::now() >= until && self.resuming => {
                Some((ErrorKind::LeaseLost, not_resumed_in_time()))
            }
            Some(until) if Instant::now() >= until => Some((
                ErrorKind::LeaseLost,
                "the lease ran out: vfslockd confirmed no renewal in time".to_owned(),
            )),
            _ => None,
        }
    }
}

/// The lease of one holding, published to whoever watches it.
pub(crate) type LeaseWatch = watch::Receiver<LeaseState>;

#[derive(Default)]
struct Routes {
    pending: HashMap<RequestId, Route>,
    held: HashMap<RequestId, watch::Sender<LeaseState>>,
    /// Set, under the lock, once the reader saw the daemon's end go: no route is added after
    /// the reader drained them. Atomic so that [`Connection::is_closed`], asked before every
    /// request, needs no lock.
    closed: Arc<AtomicBool>,
    /// When the last frame from the daemon arrived: the resume window counts from it.
    last_frame: Option<Instant>,
    /// Where holdings that may be resumed go when the connection closes.
    heir: Option<Heir>,
    /// This connection, for the leases it takes over by a resume.
    myself: Weak<Connection>,
}

fn mark_lost(lease: &watch::Sender<LeaseState>, kind: ErrorKind, reason: String) {
    // The first reason is the true one: a connection that closes after the daemon said why
    // must not overwrite that.
    lease.send_if_modified(|state| {
        if state.lost.is_some() {
            return false;
        }
        state.lost = Some((kind, reason));
        true
    });
}

/// The sending end: frames are encoded by [`Connection::send`], which reports an encoding
/// error to its caller, and go out as bytes.
type Frames = Outbound<Vec<u8>>;

pub(crate) struct Connection {
    next_id: AtomicU64,
    outbound: Frames,
    routes: Arc<Mutex<Routes>>,
    /// The same flag as the routes' (see [`Routes::closed`]).
    closed: Arc<AtomicBool>,
    socket_path: PathBuf,
    welcome: Welcome,
    #[cfg(unix)]
    raw_fd: std::os::fd::RawFd,
    /// Whether to poll for an answer before parking.
    spin: Spin,
}

/// How a handshake ended, when it did not fail.
enum Greeting<T> {
    /// The daemon speaks the version asked for: its welcome, or the connection made with it.
    Accepted(T),
    /// An older daemon named the older version it speaks, and closed the connection.
    Reconnect(u32),
}

impl Connection {
    #[cfg(all(test, unix))]
    pub(crate) async fn open(path: &Path) -> Result<Arc<Connection>, Error> {
        Connection::open_for(path, None).await
    }

    /// Connects to the daemon at `path`; holdings that may be resumed go to `heir` when the
    /// connection closes (without one, they are lost then).
    pub(crate) async fn open_for(
        path: &Path,
        heir: Option<Heir>,
    ) -> Result<Arc<Connection>, Error> {
        let mut version = PROTOCOL_VERSION;
        // At most twice: a fallback is only offered to a hello of our newest version.
        loop {
            match Connection::open_speaking(path, version, heir.clone()).await? {
                Greeting::Accepted(connection) => return Ok(connection),
                Greeting::Reconnect(older) => version = older,
            }
        }
    }

    /// Connects with a hello of protocol `version`.
    async fn open_speaking(
        path: &Path,
        version: u32,
        heir: Option<Heir>,
    ) -> Result<Greeting<Arc<Connection>>, Error> {
        let name = path
            .to_fs_name::<GenericFilePath>()
            .map_err(|e| Error::daemon_unavailable(path, &e))?;
        let stream = Stream::connect(name)
            .await
            .map_err(|e| Error::daemon_unavailable(path, &e))?;
        #[cfg(unix)]
        let raw_fd = {
            use std::os::fd::{AsFd, AsRawFd};
            let Stream::UdSocket(inner) = &stream;
            inner.as_fd().as_raw_fd()
        };
        let (read, mut socket) = transport::split(stream);
        let mut reader = BufReader::new(read);
        let welcome = match handshake(path, &mut reader, &mut socket, version).await? {
            Greeting::Accepted(welcome) => welcome,
            Greeting::Reconnect(older) => return Ok(Greeting::Reconnect(older)),
        };

        // Bytes never fail to encode: they were encoded by `send`.
        #[cfg(unix)]
        let (outbound, writer) = Frames::direct(socket.clone(), |_| {});
        #[cfg(not(unix))]
        let (outbound, writer) = Frames::through_writer(|_| {});
        let closed = Arc::new(AtomicBool::new(false));
        let routes = Arc::new(Mutex::new(Routes {
            closed: closed.clone(),
            heir,
            ..Routes::default()
        }));
        let reader = tokio::spawn(read_loop(reader, routes.clone(), outbound.downgrade()));
        // The connection ends when every handle to it is gone: then the writer half-closes the
        // socket, so that the daemon releases what this connection held.
        let writer = writer.run(socket, std::future::pending::<()>());
        #[cfg(unix)]
        {
            drop(reader);
            tokio::spawn(writer);
        }
        // A named pipe has no half-close: stop the reader too (nobody is left to hear it), so
        // that the last reference to the pipe goes and it closes; the daemon then sees the end.
        #[cfg(not(unix))]
        {
            let reader = reader.abort_handle();
            tokio::spawn(async move {
                writer.await;
                reader.abort();
            });
        }
        let connection = Arc::new(Connection {
            next_id: AtomicU64::new(1),
            outbound,
            routes,
            closed,
            socket_path: path.to_owned(),
            welcome,
            #[cfg(unix)]
            raw_fd,
            spin: Spin::new(),
        });
        connection.routes.lock().expect("routes lock").myself = Arc::downgrade(&connection);
        Ok(Greeting::Accepted(connection))
    }

    pub(crate) fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    #[cfg(unix)]
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.raw_fd
    }

    /// Whether the daemon's end is gone: the reader saw the socket close, or a write failed.
    pub(crate) fn is_closed(&self) -> bool {
        // The writer ends first when a write fails: a request refused by it has seen the
        // connection go as surely as one the reader failed.
        self.closed.load(Ordering::Acquire) || self.outbound.is_closed()
    }

    fn next_id(&self) -> RequestId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a frame for the writer. Works outside any runtime.
    ///
    /// Every frame sent here exists in the connection's protocol version: the one request a
    /// later version added (`AcquireIn`, version 3) is refused before it gets here
    /// ([`Connection::start_acquire`]).
    pub(crate) fn send(&self, frame: &ClientFrame) -> Result<(), Error> {
        let bytes = codec::encode_frame(frame)
            .map_err(|e| Error::new(ErrorKind::Protocol, format!("cannot encode request: {e}")))?;
        self.outbound
            .send(bytes)
            .map_err(|transport::Closed| Error::connection_lost())
    }

    fn register(&self, id: RequestId, route: Route) -> Result<(), Error> {
        let mut routes = self.routes.lock().expect("routes lock");
        if routes.closed.load(Ordering::Acquire) {
            return Err(Error::connection_lost());
        }
        routes.pending.insert(id, route);
        Ok(())
    }

    /// Sends a request and waits for its one response.
    pub(crate) async fn request(&self, request: Request) -> Result<Response, Error> {
        let _in_flight = InFlight::begin();
        let (_, rx) = self.start_request(request)?;
        let sent = std::time::Instant::now();
        #[cfg(unix)]
        self.spin.wait_readable(self.raw_fd);
        let answer = rx.await.unwrap_or_else(|_| Err(Error::connection_lost()));
        self.spin.answered(sent.elapsed());
        answer
    }

    /// Sends a request whose answer may take long (nothing spins for it); the answer
    /// arrives on the returned channel, or a lost connection's error if the connection goes.
    pub(crate) fn start_request(
        &self,
        request: Request,
    ) -> Result<(RequestId, oneshot::Receiver<Result<Response, Error>>), Error> {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.register(id, Route::Once(tx))?;
        if let Err(e) = self.send(&ClientFrame::Request { id, request }) {
            self.routes.lock().expect("routes lock").pending.remove(&id);
            return Err(e);
        }
        Ok((id, rx))
    }

    /// Records how long an acquire's answer took, for [`Spin`].
    pub(crate) fn answered(&self, after: std::time::Duration) {
        self.spin.answered(after);
    }

    /// Sends an acquire (asking for `place` in the queue again, after a restart, if the daemon
    /// speaks protocol 7); its events and final answer arrive on the returned channel.
    pub(crate) fn start_acquire(
        &self,
        request: AcquireRequest,
        mode: LockMode,
        max_hold: Option<Duration>,
        place: Option<WaitPlace>,
    ) -> Result<(RequestId, mpsc::UnboundedReceiver<AcquireUpdate>), Error> {
        #[cfg(unix)]
        let waits = matches!(request.wait, vfslock_proto::WaitMode::Wait { .. });
        // Modes came with protocol version 3, a max-hold with 4, places with 7; an exclusive
        // acquire without one keeps the message every version has.
        let version = self.welcome.protocol_version;
        let request = match (mode, max_hold, place) {
            (mode, max_hold, Some(place)) if version >= 7 => Request::Requeue {
                request,
                mode,
                max_hold,
                place,
            },
            (mode, max_hold, _) => self.acquire_request(request, mode, max_hold)?,
        };
        let id = self.next_id();
        let (tx, rx) = mpsc::unbounded_channel();
        self.register(id, Route::Acquire(tx))?;
        if let Err(e) = self.send(&ClientFrame::Request { id, request }) {
            self.routes.lock().expect("routes lock").pending.remove(&id);
            return Err(e);
        }
        // A waiting acquire is answered when the holder lets go: nothing to poll for.
        #[cfg(unix)]
        if !waits {
            self.spin.wait_readable(self.raw_fd);
        }
        Ok((id, rx))
    }

    /// The acquire message this connection's protocol version has for `mode` and `max_hold`.
    fn acquire_request(
        &self,
        request: AcquireRequest,
        mode: LockMode,
        max_hold: Option<Duration>,
    ) -> Result<Request, Error> {
        let version = self.welcome.protocol_version;
        Ok(match (mode, max_hold) {
            (LockMode::Exclusive, None) => Request::Acquire(request),
            (mode, None) if version >= 3 => Request::AcquireIn { request, mode },
            (mode, Some(max_hold)) if version >= 4 => Request::AcquireBounded {
                request,
                mode,
                max_hold: Some(max_hold),
            },
            (mode, max_hold) => {
                return Err(match (max_hold, mode) {
                    (Some(_), _) => self.too_old("a max-hold", 4),
                    (None, LockMode::Slots(_)) => self.too_old("semaphores", 3),
                    (None, _) => self.too_old("shared locks", 3),
                });
            }
        })
    }

    /// Asks for `orphan`'s holding back (protocol 6); on success its lease lives on this
    /// connection from now on, else it is marked lost with the daemon's reason.
    pub(crate) async fn resume(&self, orphan: Orphan) -> Result<(), Error> {
        if self.welcome.protocol_version < 6 {
            let error = self.too_old("resuming a lock after a restart", 6);
            mark_lost(
                &orphan.lease,
                ErrorKind::LeaseLost,
                error.message().to_owned(),
            );
            return Err(error);
        }
        let request = Request::Resume {
            target: orphan.ticket.target.clone(),
            lock_id: orphan.ticket.lock_id.clone(),
            session: orphan.ticket.ticket.session.clone(),
            secret: orphan.ticket.ticket.secret.clone(),
        };
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        {
            let mut routes = self.routes.lock().expect("routes lock");
            if routes.closed.load(Ordering::Acquire) {
                drop(routes);
                let error = Error::connection_lost();
                mark_lost(
                    &orphan.lease,
                    ErrorKind::LeaseLost,
                    error.message().to_owned(),
                );
                return Err(error);
            }
            routes.pending.insert(id, Route::Resume(orphan, tx));
        }
        if let Err(e) = self.send(&ClientFrame::Request { id, request }) {
            let route = self.routes.lock().expect("routes lock").pending.remove(&id);
            if let Some(Route::Resume(orphan, _)) = route {
                mark_lost(&orphan.lease, ErrorKind::LeaseLost, e.message().to_owned());
            }
            return Err(e);
        }
        // A closed connection answers every route, so the answer always comes.
        rx.await.unwrap_or_else(|_| Err(Error::connection_lost()))
    }

    /// What a request that needs protocol `since` is told by a daemon older than that.
    pub(crate) fn too_old(&self, what: &str, since: u32) -> Error {
        Error::new(
            ErrorKind::Unsupported,
            format!(
                "the vfslockd at {} speaks protocol {}, and {what} came with protocol {since}: \
                 upgrade vfslockd (this client's version is {})",
                self.socket_path.display(),
                self.welcome.protocol_version,
                env!("CARGO_PKG_VERSION"),
            ),
        )
    }

    /// Stops routing answers for an acquire the caller gave up on. A grant that still arrives
    /// for it is released by the reader.
    pub(crate) fn abandon(&self, id: RequestId) {
        self.routes.lock().expect("routes lock").pending.remove(&id);
    }

    /// Stops watching the lease of a released lock.
    pub(crate) fn unwatch_lease(&self, id: RequestId) {
        self.routes.lock().expect("routes lock").held.remove(&id);
    }
}

async fn handshake(
    path: &Path,
    reader: &mut BufReader<ReadHalf>,
    socket: &mut WriteHalf,
    version: u32,
) -> Result<Greeting<Welcome>, Error> {
    let protocol = |what: String| Error::new(ErrorKind::Protocol, what);
    transport::write_all(socket, &Hello { version }.encode())
        .await
        .map_err(|e| Error::daemon_unavailable(path, &e))?;
    let mut hello = [0u8; HELLO_LEN];
    reader
        .read_exact(&mut hello)
        .await
        .map_err(|e| Error::daemon_unavailable(path, &e))?;
    let theirs = Hello::decode(hello).map_err(|e| {
        protocol(format!(
            "{} does not answer like vfslockd: {e}",
            path.display()
        ))
    })?;
    match after_daemon_hello(version, theirs.version) {
        AfterHello::Proceed => {}
        AfterHello::Reconnect(older) => return Ok(Greeting::Reconnect(older)),
        AfterHello::Incompatible { daemon } => {
            let upgrade = if daemon > version {
                "this program's vfslock library"
            } else {
                "vfslockd"
            };
            return Err(protocol(format!(
                "the vfslockd at {} speaks protocol {daemon}, this client speaks \
                 {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION}: upgrade {upgrade}",
                path.display(),
            )));
        }
    }
    let payload = read_frame(reader)
        .await
        .map_err(|e| protocol(format!("handshake with vfslockd failed: {e}")))?
        .ok_or_else(Error::connection_lost)?;
    match codec::decode::<Welcome>(&payload) {
        Ok(welcome) => Ok(Greeting::Accepted(welcome)),
        // A daemon that cannot take this connection (its connection limit) says why instead.
        Err(e) => match codec::decode::<ServerFrame>(&payload) {
            Ok(ServerFrame::Response {
                result: Err(refusal),
                ..
            }) => Err(Error::from(refusal)),
            _ => Err(protocol(format!("bad welcome from vfslockd: {e}"))),
        },
    }
}

async fn read_frame(reader: &mut BufReader<ReadHalf>) -> std::io::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; frame::LEN_PREFIX];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = frame::FrameDecoder::new(MAX_INBOUND_FRAME)
        .announced_len(&prefix)
        .map_err(std::io::Error::other)?
        .expect("a whole prefix");
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    Ok(Some(payload))
}

async fn read_loop(
    mut reader: BufReader<ReadHalf>,
    routes: Arc<Mutex<Routes>>,
    outbound: WeakOutbound<Vec<u8>>,
) {
    loop {
        let frame = match read_frame(&mut reader).await {
            Ok(Some(payload)) => codec::decode::<ServerFrame>(&payload),
            Ok(None) | Err(_) => break,
        };
        let Ok(frame) = frame else { break };
        let reply = dispatch(&routes, frame);
        if let Some(reply) = reply {
            if let (Some(out), Ok(bytes)) = (outbound.upgrade(), codec::encode_frame(&reply)) {
                let _ = out.send(bytes);
            }
        }
    }
    let mut routes = routes.lock().expect("routes lock");
    routes.closed.store(true, Ordering::Release);
    let mut orphans = Vec::new();
    for (_, route) in routes.pending.drain() {
        match route {
            Route::Once(tx) => {
                let _ = tx.send(Err(Error::connection_lost()));
            }
            Route::Acquire(tx) => {
                let _ = tx.send(AcquireUpdate::Done(Err(Error::connection_lost())));
            }
            // The daemon went again while a resume was in flight: try once more, within the
            // same deadline.
            Route::Resume(orphan, tx) => {
                orphans.push(orphan);
                let _ = tx.send(Err(Error::connection_lost()));
            }
        }
    }
    // The safety rule: a holding that may be resumed counts as held until W after the last
    // frame the daemon sent (or its validity, if sooner), and as lost from then on unless it
    // was resumed.
    let last_frame = routes.last_frame.unwrap_or_else(Instant::now);
    let resumable = routes.heir.is_some();
    for (_, lease) in routes.held.drain() {
        let ticket = lease.borrow().resume.clone().filter(|_| resumable);
        let live = lease.borrow().loss().is_none();
        match ticket {
            Some(ticket) if live => {
                let mut deadline = last_frame + ticket.ticket.window;
                lease.send_modify(|state| {
                    deadline = state.valid_until.map_or(deadline, |v| v.min(deadline));
                    state.valid_until = Some(deadline);
                    state.resuming = true;
                });
                orphans.push(Orphan {
                    lease,
                    ticket,
                    deadline,
                });
            }
            _ => mark_lost(
                &lease,
                ErrorKind::LeaseLost,
                Error::connection_lost().message().to_owned(),
            ),
        }
    }
    // Even an empty batch goes to the heir: the link tells the application that the daemon
    // went away whether or not anything was held.
    let heir = routes.heir.clone();
    drop(routes);
    if let Some(Err(mpsc::error::SendError(orphans))) = heir.map(|heir| heir.send(orphans)) {
        // Nobody is left to resume them (the client is gone).
        for orphan in orphans {
            mark_lost(
                &orphan.lease,
                ErrorKind::LeaseLost,
                Error::connection_lost().message().to_owned(),
            );
        }
    }
}

/// Routes one frame; returns a frame to send back when the reader must answer by itself.
fn dispatch(routes: &Mutex<Routes>, frame: ServerFrame) -> Option<ClientFrame> {
    let mut routes = routes.lock().expect("routes lock");
    routes.last_frame = Some(Instant::now());
    match frame {
        ServerFrame::Response { id, result } => {
            let result = result.map_err(Error::from);
            match routes.pending.remove(&id) {
                Some(Route::Once(tx)) => {
                    let _ = tx.send(result);
                }
                Some(Route::Resume(orphan, done)) => {
                    let resumed = match result {
                        Ok(Response::GrantedResumable { grant, resume }) => {
                            Ok((grant, Some(resume)))
                        }
                        Ok(Response::Granted(grant)) => Ok((grant, None)),
                        Ok(_) => Err(Error::new(
                            ErrorKind::Protocol,
                            "vfslockd answered a resume with something other than a grant",
                        )),
                        Err(e) => Err(e),
                    };
                    match resumed {
                        // Released (or dropped) by its `Lock` while the resume was on its way:
                        // nobody wants it, give it back at once.
                        Ok((grant, _))
                            if orphan.lease.is_closed() || orphan.lease.borrow().lost.is_some() =>
                        {
                            let _ = done.send(Err(Error::connection_lost()));
                            return Some(release_of(grant));
                        }
                        // Too late on our own clock: its holder may have been told it was lost
                        // (the safety rule), and a lost lease never comes back.
                        Ok((grant, _)) if Instant::now() >= orphan.deadline => {
                            let error = Error::new(ErrorKind::LeaseLost, not_resumed_in_time());
                            let _ = done.send(Err(error));
                            orphan.lose(not_resumed_in_time());
                            return Some(release_of(grant));
                        }
                        Ok((grant, resume)) => {
                            let myself = routes.myself.clone();
                            orphan.lease.send_modify(|state| {
                                state.valid_until =
                                    deadline(grant.valid_for, grant.valid_until_monotonic_ns);
                                state.resume = resume.map(|ticket| {
                                    Arc::new(ResumeTicket {
                                        target: grant.target.clone(),
                                        lock_id: grant.lock_id.clone(),
                                        ticket,
                                    })
                                });
                                state.rebound = Some((myself, id));
                                state.resuming = false;
                            });
                            routes.held.insert(id, orphan.lease);
                            let _ = done.send(Ok(()));
                        }
                        Err(e) => {
                            mark_lost(&orphan.lease, e.kind(), e.message().to_owned());
                            let _ = done.send(Err(e));
                        }
                    }
                }
                Some(Route::Acquire(tx)) => {
                    let (result, resume) = match result {
                        Ok(Response::GrantedResumable { grant, resume }) => {
                            let ticket = ResumeTicket {
                                target: grant.target.clone(),
                                lock_id: grant.lock_id.clone(),
                                ticket: resume,
                            };
                            (Ok(Response::Granted(grant)), Some(Arc::new(ticket)))
                        }
                        other => (other, None),
                    };
                    let update = match result {
                        Ok(Response::Granted(grant)) => {
                            // Watch the lease from now on, so that an event right behind the
                            // grant (a shutdown) is not missed before the caller looks.
                            let (lease, watch) = watch::channel(LeaseState {
                                lost: None,
                                valid_until: deadline(
                                    grant.valid_for,
                                    grant.valid_until_monotonic_ns,
                                ),
                                resume,
                                rebound: None,
                                resuming: false,
                            });
                            routes.held.insert(id, lease);
                            AcquireUpdate::Granted(Box::new(grant), watch)
                        }
                        other => AcquireUpdate::Done(other),
                    };
                    if let Err(mpsc::error::SendError(AcquireUpdate::Granted(grant, _))) =
                        tx.send(update)
                    {
                        routes.held.remove(&id);
                        return Some(release_of(*grant));
                    }
                }
                // A grant that crossed our cancel: nobody wants it, give it back at once.
                None => {
                    if let Ok(Response::Granted(grant) | Response::GrantedResumable { grant, .. }) =
                        result
                    {
                        return Some(release_of(grant));
                    }
                }
            }
            None
        }
        ServerFrame::Event { id, event } => match event {
            Event::LeaseLost { reason } | Event::Releasing { reason } => {
                if let Some(lease) = routes.held.get(&id) {
                    mark_lost(lease, ErrorKind::LeaseLost, reason);
                }
                None
            }
            Event::LeaseEnded { kind, reason } => {
                if let Some(lease) = routes.held.get(&id) {
                    mark_lost(lease, kind, reason);
                }
                None
            }
            Event::LeaseRenewed {
                valid_for,
                valid_until_monotonic_ns,
            } => {
                if let Some(lease) = routes.held.get(&id) {
                    let until = deadline(Some(valid_for), valid_until_monotonic_ns)
                        .expect("a renewed lease has a deadline");
                    lease.send_if_modified(|state| {
                        if state.lost.is_some() {
                            return false;
                        }
                        state.valid_until = Some(until);
                        true
                    });
                }
                None
            }
            Event::QueuePosition { position } => {
                if let Some(Route::Acquire(tx)) = routes.pending.get(&id) {
                    let _ = tx.send(AcquireUpdate::Position(position));
                }
                None
            }
            Event::Queued {
                position,
                ordinal,
                resume,
            } => {
                if let Some(Route::Acquire(tx)) = routes.pending.get(&id) {
                    let place = WaitPlace {
                        ordinal,
                        session: resume.session,
                        secret: resume.secret,
                    };
                    let _ = tx.send(AcquireUpdate::Queued(position, place, resume.window));
                }
                None
            }
            Event::Waiting {
                position,
                holder,
                held_for,
            } => {
                if let Some(Route::Acquire(tx)) = routes.pending.get(&id) {
                    let waiting = crate::lock::Waiting {
                        // Named by the lock that waits (the connection knows only the id).
                        target: String::new(),
                        position,
                        holder: holder.map(|h| *h),
                        held_for,
                    };
                    let _ = tx.send(AcquireUpdate::Waiting(waiting));
                }
                None
            }
            // Nobody left to decide means no answer, which the daemon counts as a veto.
            Event::StaleQuestion { holder } => {
                if let Some(Route::Acquire(tx)) = routes.pending.get(&id) {
                    let _ = tx.send(AcquireUpdate::StaleQuestion(holder));
                }
                None
            }
        },
    }
}

/// Why a holding that was not resumed in time is lost.
pub(crate) fn not_resumed_in_time() -> String {
    "vfslockd went away and the lock was not resumed within its resume window (or before its \
     lease ran out): it counts as lost"
        .to_owned()
}

/// A lease deadline on this process's clock. The daemon's absolute monotonic deadline is
/// preferred: counting `valid_for` from the moment we read the frame would stretch the lease by
/// however long the frame waited unread (a frozen VM, a busy runtime).
fn deadline(valid_for: Option<std::time::Duration>, monotonic_ns: Option<u64>) -> Option<Instant> {
    let valid_for = valid_for?;
    let now = Instant::now();
    match (monotonic_ns, monotonic_now_ns()) {
        (Some(until), Some(now_ns)) => {
            Some(now + std::time::Duration::from_nanos(until.saturating_sub(now_ns)))
        }
        _ => Some(now + valid_for),
    }
}

/// This host's `CLOCK_MONOTONIC` in nanoseconds: the clock `Instant` reads on Linux, shared by
/// every process of the host, hence by the daemon.
#[cfg(target_os = "linux")]
pub(crate) fn monotonic_now_ns() -> Option<u64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec; CLOCK_MONOTONIC always exists on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return None;
    }
    Some(now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64)
}

/// Elsewhere the deadline is counted from the moment the frame is read.
#[cfg(not(target_os = "linux"))]
pub(crate) fn monotonic_now_ns() -> Option<u64> {
    None
}

fn release_of(grant: vfslock_proto::Grant) -> ClientFrame {
    ClientFrame::Request {
        // Id 0 is never used for our own requests; its response finds no route and is dropped.
        id: 0,
        request: Request::Release {
            target: grant.target,
            lock_id: grant.lock_id,
        },
    }
}

#[cfg(all(test, unix))]
mod tests {
    //! The client against scripted daemons on a real Unix socket: an older daemon's version is
    //! spoken, an incompatible one is named, and a lost lease carries the kind the daemon gave.

    use std::path::PathBuf;
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::{UnixListener, UnixStream};
    use vfslock_proto::{ErrorKind as WireKind, LockFileFormat, WaitMode};

    use super::*;

    /// A socket path of this test process's own.
    fn socket_path(name: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("vfslock-client-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    async fn read_hello(stream: &mut UnixStream) -> Hello {
        let mut hello = [0u8; HELLO_LEN];
        stream
            .read_exact(&mut hello)
            .await
            .expect("the client's hello");
        Hello::decode(hello).expect("a vfslock hello")
    }

    async fn read_client_frame(stream: &mut UnixStream) -> ClientFrame {
        let mut prefix = [0u8; frame::LEN_PREFIX];
        stream
            .read_exact(&mut prefix)
            .await
            .expect("a frame's length");
        let mut payload = vec![0u8; u32::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut payload).await.expect("a frame");
        codec::decode(&payload).expect("a client frame")
    }

    /// Sends a frame encoded by `codec::encode_frame`, as a daemon does.
    async fn write(stream: &mut UnixStream, frame: Result<Vec<u8>, codec::CodecError>) {
        let bytes = frame.expect("encode");
        stream.write_all(&bytes).await.expect("write to the client");
    }

    fn metadata() -> vfslock_proto::LockMetadata {
        vfslock_proto::LockMetadata {
            created_at_unix_ns: Some(1),
            acquired_at_unix_ns: Some(1),
            modified_unix_ns: None,
            ttl_ns: 30_000_000_000,
            hostname: "host".into(),
            pid: 7,
            owner_id: None,
            lock_id: Some("lock-1".into()),
            daemon_id: Some("daemon".into()),
            token: None,
            uid: Some(0),
            detached: false,
            format: LockFileFormat::Vfslock(1),
            stale: false,
        }
    }

    #[tokio::test]
    async fn a_newer_client_speaks_an_older_daemons_version_and_hears_its_lost_lease() {
        let path = socket_path("fallback");
        let listener = UnixListener::bind(&path).expect("bind");
        let daemon = tokio::spawn(async move {
            // A version 1 daemon: a hello of another version gets its own hello and a close.
            let (mut first, _) = listener.accept().await.expect("accept");
            assert_eq!(read_hello(&mut first).await.version, PROTOCOL_VERSION);
            first
                .write_all(&Hello { version: 1 }.encode())
                .await
                .unwrap();
            drop(first);
            let (mut second, _) = listener.accept().await.expect("accept again");
            assert_eq!(
                read_hello(&mut second).await,
                Hello { version: 1 },
                "the client connects again speaking the daemon's version"
            );
            second
                .write_all(&Hello { version: 1 }.encode())
                .await
                .unwrap();
            let welcome = Welcome {
                protocol_version: 1,
                daemon_version: "0.1.0".into(),
                hostname: "host".into(),
                instance_id: "daemon".into(),
            };
            write(&mut second, codec::encode_frame(&welcome)).await;
            let ClientFrame::Request {
                id,
                request: Request::Acquire(acquire),
            } = read_client_frame(&mut second).await
            else {
                panic!("expected an acquire");
            };
            let grant = Grant {
                target: acquire.target,
                lock_id: "lock-1".into(),
                metadata: metadata(),
                stole: None,
                token: None,
                valid_for: None,
                valid_until_monotonic_ns: None,
            };
            let granted = ServerFrame::Response {
                id,
                result: Ok(Response::Granted(grant)),
            };
            write(&mut second, codec::encode_frame(&granted)).await;
            // Version 1's way of ending a lease.
            let lost = Event::LeaseLost {
                reason: "broken by an admin".into(),
            };
            let lost = ServerFrame::Event { id, event: lost };
            write(&mut second, codec::encode_frame(&lost)).await;
            second
        });

        let connection = Connection::open(&path).await.expect("connect");
        assert_eq!(connection.welcome().protocol_version, 1);
        let (_, mut updates) = connection
            .start_acquire(
                AcquireRequest {
                    target: "mem:///a".into(),
                    ttl: Some(Duration::from_secs(30)),
                    owner_id: None,
                    wait: WaitMode::Try,
                    ask_on_stale: false,
                    detached: false,
                },
                LockMode::Exclusive,
                None,
                None,
            )
            .expect("send the acquire");
        let Some(AcquireUpdate::Granted(grant, mut lease)) = updates.recv().await else {
            panic!("expected a grant");
        };
        assert_eq!(grant.lock_id, "lock-1");
        lease
            .wait_for(|state| state.lost.is_some())
            .await
            .expect("the lease is watched");
        assert_eq!(
            lease.borrow().loss(),
            Some((ErrorKind::LeaseLost, "broken by an admin".to_owned()))
        );
        let _stream = daemon.await.expect("the scripted daemon");
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn a_daemon_without_a_version_in_common_is_named() {
        for (daemon_version, advice) in [
            (
                PROTOCOL_VERSION + 1,
                "upgrade this program's vfslock library",
            ),
            (0, "upgrade vfslockd"),
        ] {
            let path = socket_path(&format!("incompatible-{daemon_version}"));
            let listener = UnixListener::bind(&path).expect("bind");
            let daemon = tokio::spawn(async move {
                let (mut stream, _) = listener.accept().await.expect("accept");
                read_hello(&mut stream).await;
                stream
                    .write_all(
                        &Hello {
                            version: daemon_version,
                        }
                        .encode(),
                    )
                    .await
                    .unwrap();
            });
            let err = Connection::open(&path)
                .await
                .err()
                .expect("no version in common");
            assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
            assert!(
                err.message()
                    .contains(&format!("speaks protocol {daemon_version}")),
                "{err}"
            );
            assert!(err.message().contains(advice), "{err}");
            daemon.await.expect("the scripted daemon");
            let _ = std::fs::remove_file(&path);
        }
    }

    #[test]
    fn a_lost_lease_has_the_kind_the_daemon_gave() {
        let routes = Mutex::new(Routes::default());
        let held = |id: RequestId| {
            let (lease, watch) = watch::channel(LeaseState {
                lost: None,
                valid_until: None,
                resume: None,
                rebound: None,
                resuming: false,
            });
            routes.lock().unwrap().held.insert(id, lease);
            watch
        };
        let (broken, failed, old) = (held(1), held(2), held(3));
        let events = [
            (
                1,
                Event::LeaseEnded {
                    kind: WireKind::LeaseLost,
                    reason: "broken".into(),
                },
            ),
            (
                2,
                Event::LeaseEnded {
                    kind: WireKind::Internal,
                    reason: "the daemon failed".into(),
                },
            ),
            (
                3,
                Event::LeaseLost {
                    reason: "stolen".into(),
                },
            ),
        ];
        for (id, event) in events {
            assert!(dispatch(&routes, ServerFrame::Event { id, event }).is_none());
        }
        let loss = |lease: &LeaseWatch| lease.borrow().loss();
        assert_eq!(
            loss(&broken),
            Some((ErrorKind::LeaseLost, "broken".to_owned()))
        );
        assert_eq!(
            loss(&failed),
            Some((ErrorKind::Internal, "the daemon failed".to_owned()))
        );
        assert_eq!(
            loss(&old),
            Some((ErrorKind::LeaseLost, "stolen".to_owned()))
        );
    }
}

/// Cancels a request that waits at the daemon (an acquire, a wait for a release) whose future
/// was dropped before its answer arrived: its answer is no longer routed, and the daemon is
/// told to stop waiting for it. Set `finished` once the answer came.
pub(crate) struct CancelOnDrop<'a> {
    pub(crate) conn: &'a Connection,
    pub(crate) target: &'a str,
    pub(crate) id: RequestId,
    pub(crate) finished: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.abandon(self.id);
            let _ = self.conn.send(&ClientFrame::Request {
                id: 0,
                request: Request::Cancel {
                    target: self.target.to_owned(),
                    acquire_id: self.id,
                },
            });
        }
    }
}
