//! The handles a store's locks record through: every labelled series of one store, looked up
//! once when the daemon starts, so that recording is an atomic add (or, for a histogram, one
//! short uncontended lock), never a label lookup.
//!
//! Labels are the store and a small fixed set (mode, outcome, operation, cause, kind), never a
//! target or a lock id: a target's name is unbounded, and each label value is a series the
//! scraper keeps. The hot targets are found with `vfslockctl top` and `list` instead.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use vfslock_proto::LockMode;

/// The mode label of a holding or waiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeLabel {
    /// One holder.
    Exclusive,
    /// Readers.
    Shared,
    /// A counting semaphore.
    Semaphore,
}

impl ModeLabel {
    /// Every mode, in index order.
    pub const ALL: [ModeLabel; 3] = [
        ModeLabel::Exclusive,
        ModeLabel::Shared,
        ModeLabel::Semaphore,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            ModeLabel::Exclusive => "exclusive",
            ModeLabel::Shared => "shared",
            ModeLabel::Semaphore => "semaphore",
        }
    }
}

impl From<LockMode> for ModeLabel {
    fn from(mode: LockMode) -> Self {
        match mode {
            LockMode::Exclusive => ModeLabel::Exclusive,
            LockMode::Shared => ModeLabel::Shared,
            LockMode::Slots(_) => ModeLabel::Semaphore,
        }
    }
}

/// How an acquire ended, as `vfslockd_acquisitions_total{outcome}` counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Granted without queueing.
    GrantedAtOnce,
    /// Granted after it queued.
    GrantedAfterWait,
    /// A try that found the lock held.
    Held,
    /// A wait whose timeout ran out.
    TimedOut,
    /// Refused: a limit, the access rules, a mode conflict, a vetoed steal, a bad request.
    Refused,
    /// Given up by its client.
    Cancelled,
    /// The store or the daemon failed.
    Error,
}

impl Outcome {
    /// Every outcome, in index order.
    pub const ALL: [Outcome; 7] = [
        Outcome::GrantedAtOnce,
        Outcome::GrantedAfterWait,
        Outcome::Held,
        Outcome::TimedOut,
        Outcome::Refused,
        Outcome::Cancelled,
        Outcome::Error,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::GrantedAtOnce => "granted_at_once",
            Outcome::GrantedAfterWait => "granted_after_wait",
            Outcome::Held => "held",
            Outcome::TimedOut => "timed_out",
            Outcome::Refused => "refused",
            Outcome::Cancelled => "cancelled",
            Outcome::Error => "error",
        }
    }

    /// The outcome of an acquire answered with an error of `kind`.
    pub fn of_error(kind: vfslock_proto::ErrorKind) -> Outcome {
        use vfslock_proto::ErrorKind as K;
        match kind {
            K::AlreadyHeld => Outcome::Held,
            K::Timeout => Outcome::TimedOut,
            K::Cancelled => Outcome::Cancelled,
            K::Store | K::Internal | K::Unsupported | K::Protocol | K::LeaseLost => Outcome::Error,
            _ => Outcome::Refused,
        }
    }
}

/// Why a lease ended before its holder released it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossCause {
    /// Not renewed in time: the store did not answer or failed.
    StoreOutage,
    /// Someone else replaced or removed the lock file (a steal, a break, an operator).
    StolenOrBroken,
    /// The daemon stopped and released it.
    DaemonStopping,
    /// Held for its max-hold.
    MaxHold,
    /// The target's actor failed (a bug); its holders were told.
    DaemonFailed,
    /// Kept across a restart, and its session did not come back for it within the window.
    NotResumed,
}

impl LossCause {
    /// Every cause, in index order.
    pub const ALL: [LossCause; 6] = [
        LossCause::StoreOutage,
        LossCause::StolenOrBroken,
        LossCause::DaemonStopping,
        LossCause::MaxHold,
        LossCause::DaemonFailed,
        LossCause::NotResumed,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            LossCause::StoreOutage => "store_outage",
            LossCause::StolenOrBroken => "stolen_or_broken",
            LossCause::DaemonStopping => "daemon_stopping",
            LossCause::MaxHold => "max_hold",
            LossCause::DaemonFailed => "daemon_failed",
            LossCause::NotResumed => "not_resumed",
        }
    }
}

/// A store operation, as the store latency and errors are labelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Create a lock file unless it exists.
    Create,
    /// Read a lock file.
    Read,
    /// Replace a lock file that still holds what was last seen (renewals, steals, handoffs).
    Replace,
    /// Delete a lock file that still holds what was last seen.
    Delete,
}

impl Operation {
    /// Every operation, in index order.
    pub const ALL: [Operation; 4] = [
        Operation::Create,
        Operation::Read,
        Operation::Replace,
        Operation::Delete,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Read => "read",
            Operation::Replace => "replace",
            Operation::Delete => "delete",
        }
    }
}

/// What kind of store failure, as `vfslockd_store_errors_total{kind}` counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The store did not answer within `locks.store-timeout`.
    Timeout,
    /// Others kept changing the file faster than it could be read.
    Contended,
    /// The lock file exists but this daemon may not read it.
    Unreadable,
    /// The store cannot do this in its mode.
    Unsupported,
    /// Any other failure (I/O, permission, an HTTP error).
    Failed,
}

impl FailureKind {
    /// Every kind, in index order.
    pub const ALL: [FailureKind; 5] = [
        FailureKind::Timeout,
        FailureKind::Contended,
        FailureKind::Unreadable,
        FailureKind::Unsupported,
        FailureKind::Failed,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Contended => "contended",
            FailureKind::Unreadable => "unreadable",
            FailureKind::Unsupported => "unsupported",
            FailureKind::Failed => "failed",
        }
    }
}

/// Every series of one store label.
#[derive(Debug, Clone)]
pub struct StoreInstruments {
    pub(super) held: [Gauge; 3],
    pub(super) waiting: [Gauge; 3],
    pub(super) acquisitions: [Counter; 7],
    pub(super) wait: Histogram,
    pub(super) hold: Histogram,
    pub(super) requests: [Histogram; 4],
    pub(super) errors: [[Counter; 5]; 4],
    pub(super) renewals: Counter,
    pub(super) renewal_failures: Counter,
    pub(super) lost: [Counter; 6],
    pub(super) stolen: Counter,
    pub(super) handoffs: Counter,
    pub(super) capped: Counter,
}

impl StoreInstruments {
    /// `delta` holdings in `mode` began (positive) or ended.
    pub fn held(&self, mode: ModeLabel, delta: i64) {
        self.held[mode as usize].inc_by(delta);
    }

    /// `delta` waiters in `mode` queued (positive) or left the queue.
    pub fn waiting(&self, mode: ModeLabel, delta: i64) {
        self.waiting[mode as usize].inc_by(delta);
    }

    /// An acquire ended with `outcome`, after `waited` since it arrived (granted or timed out).
    pub fn acquisition(&self, outcome: Outcome, waited: Option<Duration>) {
        self.acquisitions[outcome as usize].inc();
        if let Some(waited) = waited {
            self.wait.observe(waited.as_secs_f64());
        }
    }

    /// A holding ended after `held_for`.
    pub fn hold_ended(&self, held_for: Duration) {
        self.hold.observe(held_for.as_secs_f64());
    }

    /// A store request finished after `took`, failed with `failure` if it failed.
    pub fn request(&self, operation: Operation, took: Duration, failure: Option<FailureKind>) {
        self.requests[operation as usize].observe(took.as_secs_f64());
        if let Some(kind) = failure {
            self.errors[operation as usize][kind as usize].inc();
        }
    }

    /// A lease was renewed.
    pub fn renewed(&self) {
        self.renewals.inc();
    }

    /// A renewal failed (it is retried until the lease's deadline).
    pub fn renewal_failed(&self) {
        self.renewal_failures.inc();
    }

    /// `count` leases were lost for `cause`.
    pub fn lost(&self, cause: LossCause, count: u64) {
        self.lost[cause as usize].inc_by(count);
    }

    /// A stale lock file was taken over.
    pub fn stole(&self) {
        self.stolen.inc();
    }

    /// A release handed the lock straight to the next waiter here.
    pub fn handed_off(&self) {
        self.handoffs.inc();
    }

    /// A streak of handoffs was capped so that other hosts' waiters get a turn.
    pub fn capped(&self) {
        self.capped.inc();
    }
}
