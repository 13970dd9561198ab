//! Shared helpers of the lock actors' unit tests: real actors on `mem://` targets, behind a
//! real registry and supervisor, driven as sessions drive them, and the frames those sessions
//! would write to their clients.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::UnboundedReceiver;
use vfslock_proto::{
    AcquireRequest, Event, Grant, LockMetadata, LockMode, RequestId, Response, ServerFrame,
    WaitMode, WireError,
};

use super::{LockMessage, Registry};
use crate::address::Address;
use crate::config::Settings;
use crate::context::Context;
use crate::link::{Caller, Outbound, Outgoing, SessionLink};
use crate::lockfile::LockRecord;

/// What a session's writer task would write.
pub type Frames = UnboundedReceiver<Outgoing>;

/// A daemon's lock layer without its socket: context, registry, supervisor.
pub struct Daemon {
    pub ctx: Arc<Context>,
    pub registry: Arc<Registry>,
}

impl Daemon {
    /// With the embedded default settings.
    pub async fn start() -> Daemon {
        Daemon::with(|_| {}).await
    }

    /// With the default settings changed by `change`.
    pub async fn with(change: impl FnOnce(&mut Settings)) -> Daemon {
        let mut settings = Settings::defaults();
        change(&mut settings);
        let stores = crate::store::Stores::new(&settings).await.unwrap();
        let ctx = Arc::new(Context::new(settings, stores, "host".into()));
        let registry = Registry::start(ctx.clone()).await.unwrap();
        Daemon { ctx, registry }
    }

    /// A connection of `uid` (root is an admin), registered as the server registers one, its
    /// acquires counted by uid unless it is root's.
    pub fn session(&self, id: u64, uid: u32) -> (Arc<SessionLink>, Frames) {
        let (out, frames) = Outbound::queued();
        let caller = Caller {
            pid: 100 + id as i64,
            uid: Some(uid),
            groups: vec![],
            admin: uid == 0,
        };
        let share = self.ctx.lock_share(&caller);
        let mut link = SessionLink::new(id, out, caller);
        if let Some(share) = share {
            link = link.sharing(share);
        }
        let link = Arc::new(link);
        self.ctx.sessions.register(&link);
        (link, frames)
    }

    /// Routes `message` about `target` as a session does.
    pub async fn send(&self, target: &str, message: LockMessage) {
        let address = Arc::new(Address::parse(target).unwrap());
        self.registry.route(&address, message).await.unwrap();
    }

    /// Acquires `target` for `session` (counted against its limit, as the session does).
    pub async fn acquire(
        &self,
        session: &Arc<SessionLink>,
        id: RequestId,
        target: &str,
        wait: WaitMode,
    ) {
        self.acquire_with(session, id, request(target, wait)).await
    }

    /// The same with a whole request.
    pub async fn acquire_with(
        &self,
        session: &Arc<SessionLink>,
        id: RequestId,
        request: AcquireRequest,
    ) {
        self.acquire_in(session, id, request, LockMode::Exclusive)
            .await
    }

    /// The same in `mode`.
    pub async fn acquire_in(
        &self,
        session: &Arc<SessionLink>,
        id: RequestId,
        request: AcquireRequest,
        mode: LockMode,
    ) {
        self.acquire_bounded(session, id, request, mode, None).await
    }

    /// Sends an acquire in `mode` held for at most `max_hold`.
    pub async fn acquire_bounded(
        &self,
        session: &Arc<SessionLink>,
        id: RequestId,
        request: AcquireRequest,
        mode: LockMode,
        max_hold: Option<Duration>,
    ) {
        assert!(session.acquire_started(id, 1000).is_ok());
        let target = request.target.clone();
        let message = LockMessage::Acquire {
            session: session.clone(),
            id,
            request,
            mode,
            max_hold,
            place: None,
        };
        self.send(&target, message).await
    }

    /// Releases `lock_id` on `target`.
    pub async fn release(
        &self,
        session: &Arc<SessionLink>,
        id: RequestId,
        target: &str,
        lock_id: &str,
    ) {
        let message = LockMessage::Release {
            session: session.clone(),
            id,
            lock_id: lock_id.to_owned(),
        };
        self.send(target, message).await
    }

    /// The lock file of `target`, straight from its store.
    pub async fn lock_file(&self, target: &str) -> Option<crate::store::Observed> {
        let address = Address::parse(target).unwrap();
        let store = self.ctx.stores.for_address(&address).unwrap();
        store
            .read(&crate::store::lock_path(&address))
            .await
            .unwrap()
    }

    /// Writes a lock file for `target` straight into its store, as another host would.
    pub async fn plant(&self, target: &str, record: LockRecord) {
        let record = Arc::new(record);
        self.plant_with(
            target,
            Box::new(move |token| record.to_json_with_token(token)),
        )
        .await
    }

    /// Writes the bytes `make` gives straight into `target`'s store (an empty file, as a
    /// racing Go reader leaves one).
    pub async fn plant_with(&self, target: &str, make: crate::store::MakeLock) {
        let address = Address::parse(target).unwrap();
        let store = self.ctx.stores.for_address(&address).unwrap();
        let created = store
            .create(&crate::store::lock_path(&address), 0, make)
            .await
            .unwrap();
        assert!(matches!(created, crate::store::Created::Won(_)));
    }

    /// `leaving` (connection 1, `leaving_uid`) holds `holder_target` and waits for
    /// `mem:///other`, which `staying` (connection 2, `staying_uid`) holds: what the tests of
    /// a connection's end start from.
    pub async fn holding_and_waiting(
        &self,
        holder_target: &str,
        leaving_uid: u32,
        staying_uid: u32,
    ) -> [(Arc<SessionLink>, Frames); 2] {
        let (leaving, mut leaving_frames) = self.session(1, leaving_uid);
        let (staying, mut staying_frames) = self.session(2, staying_uid);
        self.acquire(&leaving, 1, holder_target, WaitMode::Try)
            .await;
        granted(&mut leaving_frames).await;
        self.acquire(&staying, 1, "mem:///other", WaitMode::Try)
            .await;
        granted(&mut staying_frames).await;
        let patient = WaitMode::Wait { timeout: None };
        self.acquire(&leaving, 2, "mem:///other", patient).await;
        [(leaving, leaving_frames), (staying, staying_frames)]
    }
}

/// An acquire request for `target`, 30 s TTL.
pub fn request(target: &str, wait: WaitMode) -> AcquireRequest {
    AcquireRequest {
        target: target.into(),
        ttl: Some(Duration::from_secs(30)),
        owner_id: None,
        wait,
        ask_on_stale: false,
        detached: false,
    }
}

/// An entry of a joint lock file as another host's daemon would write it: renewed now, 30 s.
pub fn some_entry() -> crate::lockfile::joint::HolderEntry {
    let now = SystemTime::now();
    crate::lockfile::joint::HolderEntry {
        lock_id: "fedcba9876543210fedcba9876543210".into(),
        daemon_id: "another-daemon".into(),
        hostname: "elsewhere".into(),
        pid: 4242,
        owner_id: Some("reader".into()),
        uid: Some(1000),
        token: Some(5),
        created_at: now,
        acquired_at: now,
        ttl: Duration::from_secs(30),
        count: 1,
        detached: false,
    }
}

/// A lock record as another host's daemon would write it, created `age` ago with `ttl`.
pub fn foreign_record(age: Duration, ttl: Duration) -> LockRecord {
    let created = SystemTime::now() - age;
    LockRecord {
        created_at: created,
        acquired_at: created,
        ttl,
        hostname: "elsewhere".into(),
        pid: 4242,
        owner_id: Some("nightly-job".into()),
        lock_id: "0123456789abcdef0123456789abcdef".into(),
        daemon_id: "another-daemon".into(),
        token: None,
        uid: Some(1000),
        detached: false,
        peer_ttl: None,
    }
}

/// The next frame a session would write.
pub async fn next(frames: &mut Frames) -> ServerFrame {
    match frames.recv().await.expect("the session's queue is open") {
        Outgoing::Frame(frame) => frame,
        Outgoing::Rest(_) => panic!("a queued-only session got raw bytes"),
    }
}

/// The next answer of a session, events skipped.
pub async fn answer(frames: &mut Frames) -> Result<Response, WireError> {
    loop {
        if let ServerFrame::Response { result, .. } = next(frames).await {
            return result;
        }
    }
}

/// The next event of a session, answers skipped.
pub async fn event(frames: &mut Frames) -> Event {
    loop {
        if let ServerFrame::Event { event, .. } = next(frames).await {
            return event;
        }
    }
}

/// The next answer, which must be a grant.
pub async fn granted(frames: &mut Frames) -> Grant {
    match answer(frames).await {
        Ok(Response::Granted(grant)) => grant,
        other => panic!("expected a grant, got {other:?}"),
    }
}

/// The next answer, which must be a release of a held lock.
pub async fn released(frames: &mut Frames) {
    match answer(frames).await {
        Ok(Response::Released { held: true }) => {}
        other => panic!("expected a release, got {other:?}"),
    }
}

/// The next answer, which must be an error.
pub async fn refused(frames: &mut Frames) -> WireError {
    match answer(frames).await {
        Err(error) => error,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A holder's metadata, for tests that need one.
pub fn some_holder() -> LockMetadata {
    crate::lockfile::into_wire(
        foreign_record(Duration::ZERO, Duration::from_secs(30)).to_parsed(),
        None,
        false,
    )
}

/// How many tasks the runtime has alive.
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// How many more tasks are alive than `before`, once aborted ones had the turns to go.
pub async fn tasks_left_over(before: usize) -> usize {
    for _ in 0..100 {
        if alive_tasks() <= before + 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    alive_tasks().saturating_sub(before)
}
