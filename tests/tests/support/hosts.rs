//! Daemons as hosts sharing one store, for the tests that run each case on every store
//! (`modes.rs`, `sets.rs`): one test per (case, store), and the daemons of a case stopped with
//! it.

use vfslock::Client;
use vfslock_tests::{Daemon, Store};

/// One test per (case, store), as `case::store`.
macro_rules! per_store {
    ($case:ident, [$($name:ident => $store:ident),+ $(,)?]) => {
        mod $case {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$case(vfslock_tests::Store::$store).await;
                }
            )+
        }
    };
}
pub(crate) use per_store;

/// A daemon with host id `id` serving `store`, stopped with SIGTERM when dropped (so that an
/// SFTP store's ssh master goes with it).
pub struct Host(Daemon);

impl std::ops::Deref for Host {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.0
    }
}

impl Host {
    /// Kills the daemon with SIGKILL, as a host that dies.
    pub fn kill(&mut self) {
        self.0.kill();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A host whose config adds `locks` to its `[locks]` section.
pub fn host_with(store: Store, id: &str, locks: &str) -> Host {
    Host(Daemon::start_host(
        &store.daemon_config(locks, ""),
        None,
        &["--host-id", id],
    ))
}

/// A host with the store's test config.
pub fn host(store: Store, id: &str) -> Host {
    host_with(store, id, "")
}

/// Two daemons on one store where it can be shared; one daemon twice on `mem://`.
pub fn two_hosts(store: Store) -> (Host, Option<Host>) {
    let first = host(store, "h0");
    let second = (store != Store::Mem).then(|| host(store, "h1"));
    (first, second)
}

/// A client of the first host and one of the second (of the first again on `mem://`).
pub async fn two_clients(first: &Host, second: &Option<Host>) -> (Client, Client) {
    let a = first.client().await;
    let b = match second {
        Some(host) => host.client().await,
        None => first.client().await,
    };
    (a, b)
}
