//! Time in a lock actor: timer messages that stop with what they were for, store calls bounded
//! by a deadline, and the random spread that keeps many locks' and daemons' timers apart.

use std::future::Future;
use std::time::Duration;

use super::actor::LockMessage;
use crate::store::StoreError;

/// A timer task that sends the actor a message later (ractor's `send_after`), stopped when
/// this is dropped: the renewal of a holding that ended, the expiry of a wait that was granted.
/// Left to run, each would sleep out its delay, and a lock cycled thousands of times a second
/// piled up as many sleeping tasks.
#[derive(Debug)]
pub struct Timer(
    pub ractor::concurrency::JoinHandle<Result<(), ractor::MessagingErr<LockMessage>>>,
);

impl Drop for Timer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Bounds a store call by `limit`: a store that does not answer is an error, not a hang of the
/// actor (and so of every request for its target).
pub async fn within<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(StoreError::new(format!(
            "the store did not answer within {limit:?}"
        )))
    })
}

/// When a new holding is first renewed: anywhere from a tenth of a third of the TTL to a third.
/// Locks granted together (a job that takes 10,000 at once) would otherwise renew together,
/// every third of the TTL, in one burst; spread once, [`next_renewal`] keeps them spread.
/// Renewing early is always safe: the lease only gets longer.
pub fn first_renewal(ttl: Duration) -> Duration {
    (ttl / 3).mul_f64(0.1 + 0.9 * unit_random())
}

/// The delay between renewals: a third of the TTL, less up to a tenth of it at random, so that
/// renewals that happen to fall together drift apart instead of staying in step.
pub fn next_renewal(ttl: Duration) -> Duration {
    (ttl / 3).mul_f64(0.9 + 0.1 * unit_random())
}

/// ±25 % of `delay`, so waiters of many daemons do not poll in step.
pub fn jitter(delay: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    let factor = 0.75 + f64::from(byte[0]) / 255.0 * 0.5;
    delay.mul_f64(factor)
}

/// A random number in [0, 1), for spreading timers: from a per-thread xorshift generator
/// seeded once from the OS, so that a grant does not pay a `getrandom` system call for it.
fn unit_random() -> f64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            let _ = getrandom::fill(&mut seed);
            u64::from_le_bytes(seed) | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
#[path = "tests/timing.rs"]
mod tests;
