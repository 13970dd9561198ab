use std::time::Duration;

use vfslock_proto::ErrorKind;

use super::*;
use crate::lock::tests::some_holder;

#[test]
fn an_already_held_error_names_the_holder_and_the_command_that_shows_more() {
    let error = already_held("mem:///x", Some(some_holder()), 0);
    assert_eq!(error.kind, ErrorKind::AlreadyHeld);
    assert_eq!(
        error.message,
        "mem:///x is already locked (held by pid 4242 on elsewhere, owner nightly-job); run \
         `vfslockctl show mem:///x` to see who holds it"
    );
    assert_eq!(error.holder.map(|h| h.pid), Some(4242));
    let queued = already_held("mem:///x", None, 3);
    assert_eq!(
        queued.message,
        "mem:///x is busy: 3 acquire(s) wait for it on this daemon"
    );
}

#[test]
fn a_timeout_says_how_long_it_waited() {
    let error = wait_timed_out("mem:///x", Duration::from_secs(2), None);
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert_eq!(
        error.message,
        "timed out after 2s waiting for mem:///x; run `vfslockctl show mem:///x` to see who \
         holds it"
    );
}

#[test]
fn a_store_error_keeps_its_message_and_says_whether_the_store_cannot_do_it() {
    let unsupported = StoreError {
        unsupported: true,
        ..StoreError::new("no conditional writes")
    };
    assert_eq!(store_error(unsupported).kind, ErrorKind::Unsupported);
    let failed = store_error(StoreError::new("connection reset"));
    assert_eq!(
        (failed.kind, failed.message.as_str()),
        (ErrorKind::Store, "connection reset")
    );
}

#[test]
fn a_daemon_failure_tells_the_holder_and_the_waiter_what_to_do() {
    let holder = daemon_failed_holder("mem:///x", "boom");
    assert!(holder.contains("vfslockd failed while serving mem:///x (boom)"));
    assert!(holder.contains("acquire the lock again"));
    let waiter = daemon_failed_request("mem:///x", "boom");
    assert_eq!(waiter.kind, ErrorKind::Internal);
    assert!(waiter.message.contains("send it again"));
}

#[test]
fn a_busy_holder_says_the_file_kept_changing() {
    let holder = busy_holder("mem:///x");
    assert_eq!(
        holder.hostname,
        "(busy: the lock file of mem:///x kept changing)"
    );
    assert_eq!(
        describe_holder(Some(&holder)),
        " (busy: the lock file of mem:///x kept changing)",
        "a note, not a pid 0 on a host"
    );
}

#[test]
fn a_holder_without_host_or_pid_is_described_by_what_its_file_is() {
    let mut empty = some_holder();
    (empty.pid, empty.hostname, empty.owner_id) = (0, String::new(), None);
    empty.format = vfslock_proto::LockFileFormat::Corrupt;
    let text = describe_holder(Some(&empty));
    assert_eq!(
        text,
        " (by an unknown holder: the lock file is empty or cannot be read as a lock)"
    );
    assert!(!text.contains("pid 0"));
    empty.format = vfslock_proto::LockFileFormat::Foreign;
    assert!(describe_holder(Some(&empty)).contains("another tool"));
}

#[test]
fn a_holder_whose_lock_file_cannot_be_read_is_unknown_held_and_never_stale() {
    let file = Unreadable {
        uid: 1000,
        owner: Some("alice".into()),
        mode: 0o600,
        reader: 998,
    };
    let holder = unreadable_holder(&file);
    assert!(!holder.stale);
    assert_eq!(holder.format, vfslock_proto::LockFileFormat::Foreign);
    let error = already_held("file:///d/x", Some(holder), 0);
    assert_eq!(
        error.message,
        "file:///d/x is already locked (held by an unknown holder: the lock file is unreadable, \
         owned by uid 1000 (alice), mode 0600, not readable by vfslockd's uid 998; held until \
         its owner removes it or makes it readable); run `vfslockctl show file:///d/x` to see \
         who holds it"
    );
}
