//! Per-uid shares: how many connections, and how many acquires held or awaited, each local user
//! has across all of its connections, so that one user cannot take every connection or an
//! unbounded number of locks and starve the others (`limits.max-connections-per-uid`,
//! `limits.max-locks-per-uid`).
//!
//! Only callers with a uid that are not admins are counted. Root and the admin group are
//! exempt: they are who must still get in to look and to break locks when a user misbehaves
//! (and they have connections kept for them, `limits.reserved-admin-connections`, checked in
//! the accept loop). A caller without a uid is Windows' (every peer there is an admin, see
//! `server::session::caller_of`), or a Unix peer whose credentials could not be read; neither
//! has a uid to be counted under.
//!
//! The table sits outside every actor and every connection, behind one short-held mutex: the
//! counts change at every acquire's start and end, from sessions and lock actors alike.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The live counts by uid. Entries at zero are removed, so the table is as large as the number
/// of users connected now.
#[derive(Debug, Default)]
pub struct UidUsage {
    table: Mutex<HashMap<u32, Usage>>,
}

/// What one uid uses now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Open connections.
    pub connections: usize,
    /// Acquires held or awaited, over all of its connections (detached leases are not the
    /// connections', as for `limits.max-locks-per-session`).
    pub locks: usize,
}

impl UidUsage {
    /// What `uid` uses now.
    pub fn usage(&self, uid: u32) -> Usage {
        self.table().get(&uid).copied().unwrap_or_default()
    }

    /// Counts one more connection of `uid`, unless it already has `limit`; the slot gives it
    /// back when dropped.
    pub fn connect(self: &Arc<Self>, uid: u32, limit: usize) -> Option<ConnectionSlot> {
        let mut table = self.table();
        let usage = table.entry(uid).or_default();
        if usage.connections >= limit {
            drop_if_idle(&mut table, uid);
            return None;
        }
        usage.connections += 1;
        Some(ConnectionSlot {
            uid,
            usage: self.clone(),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Usage>> {
        self.table.lock().expect("uid usage lock")
    }

    fn take_lock(&self, uid: u32, limit: usize) -> bool {
        let mut table = self.table();
        let usage = table.entry(uid).or_default();
        if usage.locks >= limit {
            drop_if_idle(&mut table, uid);
            return false;
        }
        usage.locks += 1;
        true
    }

    fn return_locks(&self, uid: u32, count: usize) {
        if count == 0 {
            return;
        }
        let mut table = self.table();
        if let Some(usage) = table.get_mut(&uid) {
            usage.locks = usage.locks.saturating_sub(count);
        }
        drop_if_idle(&mut table, uid);
    }
}

fn drop_if_idle(table: &mut HashMap<u32, Usage>, uid: u32) {
    if table.get(&uid) == Some(&Usage::default()) {
        table.remove(&uid);
    }
}

/// One counted connection of a uid, owned by its session: dropping it (the session is over,
/// however it ended) gives the connection back.
#[derive(Debug)]
pub struct ConnectionSlot {
    uid: u32,
    usage: Arc<UidUsage>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut table = self.usage.table();
        if let Some(usage) = table.get_mut(&self.uid) {
            usage.connections = usage.connections.saturating_sub(1);
        }
        drop_if_idle(&mut table, self.uid);
    }
}

/// A connection's way to its uid's lock count: [`super::SessionLink`] takes one for every
/// acquire it counts and gives it back wherever that acquire ends.
#[derive(Debug)]
pub struct LockShare {
    uid: u32,
    limit: usize,
    usage: Arc<UidUsage>,
}

impl LockShare {
    /// `uid`'s share of at most `limit` acquires, counted in `usage`.
    pub fn new(usage: &Arc<UidUsage>, uid: u32, limit: usize) -> Self {
        LockShare {
            uid,
            limit,
            usage: usage.clone(),
        }
    }

    /// The uid counted.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The limit it is counted against.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Counts one more acquire; `false` if the uid is at its limit.
    pub(super) fn take(&self) -> bool {
        self.usage.take_lock(self.uid, self.limit)
    }

    /// `count` acquires ended.
    pub(super) fn give_back(&self, count: usize) {
        self.usage.return_locks(self.uid, count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_per_uid_until_their_slots_drop() {
        let usage = Arc::new(UidUsage::default());
        let first = usage.connect(1000, 2).expect("under the limit");
        let _second = usage.connect(1000, 2).expect("under the limit");
        assert!(
            usage.connect(1000, 2).is_none(),
            "a third passed a limit of 2"
        );
        let _other = usage
            .connect(1001, 2)
            .expect("another uid has its own share");
        assert_eq!(usage.usage(1000).connections, 2);
        drop(first);
        assert_eq!(usage.usage(1000).connections, 1);
        assert!(usage.connect(1000, 2).is_some(), "a place was freed");
    }

    #[test]
    fn a_uid_with_nothing_left_leaves_the_table() {
        let usage = Arc::new(UidUsage::default());
        assert!(usage.connect(1000, 0).is_none());
        let share = LockShare::new(&usage, 1000, 0);
        assert!(!share.take());
        let slot = usage.connect(1000, 1).unwrap();
        drop(slot);
        assert!(usage.table().is_empty(), "{:?}", usage.table());
    }
}
