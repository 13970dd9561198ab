//! The client's way to its daemon: the current connection, replaced by a fresh one when the
//! daemon went away (restarted, crashed, upgraded).
//!
//! A connection that closed stays closed: what it held is released by the daemon (or was lost
//! with it), and every lock granted on it says so. But the [`Client`](crate::Client) that made
//! it lives on in the application, often for the whole life of a service, so a new request
//! after the daemon came back must not fail for ever: the next request that finds the current
//! connection closed opens a new one to the same socket (speaking whatever protocol version the
//! daemon now speaks), and every later request uses it. Locks remember the connection they were
//! granted on, so that their release goes there and nowhere else.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::connection::Connection;
use crate::error::Error;

/// The current connection to the daemon at one socket, and who may replace it.
pub(crate) struct Link {
    path: PathBuf,
    current: RwLock<Arc<Connection>>,
    /// Held while a new connection is being opened, so that requests that all find the old
    /// one closed open one new connection, not one each.
    redialing: tokio::sync::Mutex<()>,
}

impl Link {
    /// Connects to the daemon at `path`.
    pub(crate) async fn open(path: &Path) -> Result<Link, Error> {
        Ok(Link {
            path: path.to_owned(),
            current: RwLock::new(Connection::open(path).await?),
            redialing: tokio::sync::Mutex::new(()),
        })
    }

    /// The socket.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The current connection, open or not.
    pub(crate) fn current(&self) -> Arc<Connection> {
        self.current.read().expect("link lock").clone()
    }

    /// The current connection if it is open, else a new one to the same socket (an error when
    /// no daemon answers there now: the next request tries again).
    pub(crate) async fn live(&self) -> Result<Arc<Connection>, Error> {
        let current = self.current();
        if !current.is_closed() {
            return Ok(current);
        }
        let _one = self.redialing.lock().await;
        let current = self.current();
        if !current.is_closed() {
            // Another request opened it meanwhile.
            return Ok(current);
        }
        let fresh = Connection::open(&self.path).await?;
        *self.current.write().expect("link lock") = fresh.clone();
        Ok(fresh)
    }
}
