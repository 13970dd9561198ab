//! Fault injection for tests (the `faults` cargo feature, never in a release build): a lock
//! actor's handler that panics on demand, to see supervision clean up after it.
//!
//! An acquire whose owner id is `[faults] panic-owner` makes the actor of its target panic as it
//! handles the request, whatever state the target is in.

use super::actor::LockMessage;
use crate::context::Context;

/// Panics if `message` asks for it (see the module doc).
pub fn panic_if_asked(ctx: &Context, message: &LockMessage, url: &str) {
    let Some(trigger) = ctx.settings.faults.panic_owner.as_deref() else {
        return;
    };
    if let LockMessage::Acquire { request, .. } = message {
        if request.owner_id.as_deref() == Some(trigger) {
            tracing::warn!(target = %url, "{}: a lock actor panics on request", crate::store::faults::LOG_MARKER);
            panic!("fault injected: the lock actor of {url} panics on request");
        }
    }
}
