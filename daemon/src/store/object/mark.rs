//! The waiting mark on an object store: `<lock key>.waiting`, one small object that a daemon
//! whose exclusive request waits for other hosts' shared holders (or semaphore slots) writes,
//! so that those hosts stop letting new shared holders in (see [`crate::store::waiting`]).
//!
//! Cost: one unconditional PUT per mark, which the lock actor writes at most once a second
//! per target while such a request waits ([`MARK_INTERVAL`](crate::store::waiting::MARK_INTERVAL)),
//! and one GET for a daemon that is about to let a shared holder join, cached for as long.
//! Both are counted as `marks` in `vfslockctl status`. Nothing is written or read for
//! exclusive locks alone, so their request counts do not change.

use opendal::ErrorKind;

use super::{failed, Counters, ObjectStore};
use crate::store::{StoreError, WAITING_SUFFIX};

impl ObjectStore {
    /// Writes `mark` to `<key>.waiting`.
    pub(in crate::store) async fn write_mark(
        &self,
        key: &str,
        mark: &[u8],
    ) -> Result<(), StoreError> {
        let key = format!("{key}{WAITING_SUFFIX}");
        Counters::bump(&self.counters.marks);
        self.round_trip();
        match self
            .timed("write", &key, self.operator.write(&key, mark.to_vec()))
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) => Err(failed("write", &key, e)),
        }
    }

    /// Reads `<key>.waiting`; `None` when there is none.
    pub(in crate::store) async fn read_mark(
        &self,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let key = format!("{key}{WAITING_SUFFIX}");
        Counters::bump(&self.counters.marks);
        self.round_trip();
        match self.timed("read", &key, self.operator.read(&key)).await? {
            Ok(body) => Ok(Some(body.to_vec())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed("read", &key, e)),
        }
    }
}
