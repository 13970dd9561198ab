//! Waiting a moment for a prompt answer before going to sleep.
//!
//! A local daemon answers an uncontended request in tens of microseconds. A client that parks
//! (in `epoll_wait`) as soon as it has sent the request must be woken by the kernel when the
//! answer arrives; when client and daemon run on different CPUs, which is where the scheduler
//! puts them whenever both may run anywhere, that wake-up is an interrupt to an idle CPU, and on
//! a virtual machine it costs as much as the daemon's whole work on the request (measured in
//! `docs/benchmark.md`, "Where the unpinned cycle goes"). So a client that reads its answers
//! itself polls its socket for a short while first, and parks only if nothing came.
//!
//! It polls only where that can pay, and never for an acquire that waits (its answer comes when
//! the holder lets go):
//! - the process may run on more than one CPU: on the daemon's own CPU a poll would only hold
//!   the daemon off;
//! - the caller runs on a current-thread runtime (the one `vfslockctl` uses), which reads the
//!   answer on the caller's own thread: on a multi-thread runtime another task may need the
//!   worker, and another thread reads the answer anyway;
//! - the previous answer on this connection came within three budgets: a daemon that waits for
//!   S3, or a lock that is held elsewhere, answers in milliseconds, and polling for those would
//!   burn CPU for nothing. One prompt answer turns polling back on;
//! - it is the only request of the process in flight: other threads of the program waiting on
//!   the daemon (for an answer, or in line for a lock) mean load, and a poll would take the CPU
//!   the daemon needs to answer them. (Other processes' waits are not seen: contention between
//!   many processes is where polling can still cost.)
//!
//! While it polls it yields the CPU between looks, so that anything else runnable there (the
//! daemon itself, another client) runs first.
//!
//! The budget is 50 µs, set by `VFSLOCK_SPIN_US` (`0` turns polling off).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// How long a poll lasts when `VFSLOCK_SPIN_US` does not say.
const DEFAULT_BUDGET: Duration = Duration::from_micros(50);

/// An answer counts as prompt within this many budgets. More than one: an answer that was not
/// polled for arrives after the very wake-up a poll saves, so judging it by the budget alone
/// would turn polling off for good after one slow answer.
const PROMPT_FACTOR: u32 = 3;

/// One connection's polling state.
#[derive(Debug)]
pub(crate) struct Spin {
    /// Zero when polling cannot pay in this process.
    budget: Duration,
    /// Whether the last answer came within the budget.
    prompt: AtomicBool,
}

impl Spin {
    /// The state for a new connection of this process.
    pub(crate) fn new() -> Spin {
        let budget = match std::env::var("VFSLOCK_SPIN_US") {
            Ok(us) => us
                .trim()
                .parse()
                .map(Duration::from_micros)
                .unwrap_or(DEFAULT_BUDGET),
            Err(_) => DEFAULT_BUDGET,
        };
        Spin {
            budget: if allowed_cpus() > 1 {
                budget
            } else {
                Duration::ZERO
            },
            prompt: AtomicBool::new(true),
        }
    }

    /// Polls `fd` until it is readable or the budget is spent, where polling can pay (see the
    /// module doc); returns at once otherwise.
    #[cfg(unix)]
    pub(crate) fn wait_readable(&self, fd: std::os::fd::RawFd) {
        if self.budget.is_zero()
            || !self.prompt.load(Ordering::Relaxed)
            || !on_current_thread_runtime()
        {
            return;
        }
        // Only the sole request of this process in flight: other threads waiting on the daemon
        // (for an answer or for a lock) are load, and a poll would take the CPU the daemon
        // needs to answer them.
        if IN_FLIGHT.load(Ordering::Relaxed) > 1 {
            return;
        }
        let start = std::time::Instant::now();
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        while start.elapsed() < self.budget {
            // SAFETY: one valid pollfd, and a zero timeout: this never blocks.
            if unsafe { libc::poll(&mut poll, 1, 0) } != 0 {
                return;
            }
            // Polite: anything else runnable on this CPU (the daemon, another client) runs
            // first, so that a poll only ever uses a CPU nobody else wanted.
            // SAFETY: no arguments.
            unsafe { libc::sched_yield() };
        }
    }

    /// Records how long the answer to a request took (from sending it).
    pub(crate) fn answered(&self, after: Duration) {
        self.prompt
            .store(after <= self.budget * PROMPT_FACTOR, Ordering::Relaxed);
    }
}

/// Requests of this process sent and not yet answered, waiting acquires included.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// One request in flight, counted in [`IN_FLIGHT`] until dropped.
pub(crate) struct InFlight(());

impl InFlight {
    /// Counts a request about to be sent.
    pub(crate) fn begin() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(unix)]
fn on_current_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}

/// How many CPUs this process may run on (1 where that cannot be learned).
fn allowed_cpus() -> usize {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed cpu_set_t is a valid empty set, and its size is passed.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
                return libc::CPU_COUNT(&set) as usize;
            }
        }
        1
    }
    #[cfg(not(target_os = "linux"))]
    {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_answer_stops_polling_and_a_prompt_one_resumes_it() {
        let spin = Spin {
            budget: Duration::from_micros(50),
            prompt: AtomicBool::new(true),
        };
        spin.answered(Duration::from_millis(3));
        assert!(!spin.prompt.load(Ordering::Relaxed));
        // Unpolled, an answer also carries the wake-up: still prompt at twice the budget.
        spin.answered(Duration::from_micros(100));
        assert!(spin.prompt.load(Ordering::Relaxed));
        spin.answered(Duration::from_micros(151));
        assert!(!spin.prompt.load(Ordering::Relaxed));
    }

    #[cfg(unix)]
    #[tokio::test(flavor = "current_thread")]
    async fn polling_returns_as_soon_as_the_answer_is_there() {
        use std::io::Write;
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        let spin = Spin {
            // Long enough that returning early can only mean the bytes were seen.
            budget: Duration::from_secs(30),
            prompt: AtomicBool::new(true),
        };
        ours.write_all(b"answer").expect("write");
        let start = std::time::Instant::now();
        spin.wait_readable(std::os::fd::AsRawFd::as_raw_fd(&theirs));
        assert!(start.elapsed() < Duration::from_secs(30));
    }
}
