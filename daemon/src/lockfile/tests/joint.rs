use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vfslock_proto::LockFileFormat;

use super::*;
use crate::lockfile::{is_stale, parse};

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn entry(id: &str, host: &str, renewed: u64, ttl: u64, token: u64) -> HolderEntry {
    HolderEntry {
        lock_id: id.into(),
        daemon_id: format!("daemon-{host}"),
        hostname: host.into(),
        pid: 4242,
        owner_id: Some(format!("job-{id}")),
        uid: Some(1000),
        token: Some(token),
        created_at: at(renewed),
        acquired_at: at(0),
        ttl: Duration::from_secs(ttl),
        count: 1,
        detached: false,
    }
}

fn shared(holders: Vec<HolderEntry>) -> Joint {
    Joint {
        mode: JointMode::Shared,
        holders,
    }
}

#[test]
fn a_joint_file_reads_back_as_written() {
    let joint = Joint {
        mode: JointMode::Slots(3),
        holders: vec![
            entry("a", "h1", 10, 30, 7),
            HolderEntry {
                count: 2,
                detached: true,
                owner_id: None,
                ..entry("b", "h2", 20, 60, 9)
            },
        ],
    };
    let bytes = joint.to_json("file-1", "daemon-h1", at(25));
    assert_eq!(Joint::parse(&bytes), Some(joint.clone()));
    assert_eq!(joint.taken(), 3);
    assert_eq!(joint.max_token(), Some(9));
}

#[test]
fn the_top_level_is_live_exactly_while_some_holder_is_for_readers_without_modes() {
    // Holder a expires at 40, b at 80: the file, written at 25, must say live until 80.
    let joint = shared(vec![
        entry("a", "h1", 10, 30, 7),
        entry("b", "h2", 20, 60, 9),
    ]);
    let bytes = joint.to_json("file-1", "daemon-h1", at(25));
    // What the Go library and a daemon without modes read: the top-level fields only.
    let whole = parse(&bytes);
    assert_eq!(whole.format, LockFileFormat::Vfslock(JOINT_FORMAT_VERSION));
    assert_eq!(whole.created_at(), Some(at(25)));
    assert_eq!(whole.ttl_ns, Duration::from_secs(55).as_nanos() as i64);
    assert_eq!(
        whole.hostname, "h1",
        "the first holder's host, for messages"
    );
    assert_eq!(whole.lock_id.as_deref(), Some("file-1"));
    assert_eq!(
        whole.token,
        Some(9),
        "the largest token, so a replacer issues a larger one"
    );
    let grace = Duration::from_secs(60);
    assert!(!is_stale(&whole, None, at(79), grace));
    assert!(is_stale(&whole, None, at(81), grace));
    // One holder that never expires makes the file never expire.
    let forever = shared(vec![
        entry("a", "h1", 10, 30, 7),
        entry("b", "h2", 20, 0, 9),
    ]);
    assert_eq!(parse(&forever.to_json("f", "d", at(25))).ttl_ns, 0);
}

#[test]
fn a_listed_holder_past_its_expiry_keeps_the_file_live_until_a_writer_removes_it() {
    let joint = shared(vec![entry("a", "h1", 0, 10, 7)]);
    let whole = parse(&joint.to_json("f", "d", at(30)));
    assert_eq!(whole.ttl_ns, 1, "not 0, which would mean never");
    let mut joint = joint;
    assert_eq!(joint.remove_expired(at(30)).len(), 1);
    assert!(joint.holders.is_empty());
}

#[test]
fn every_write_has_its_own_bytes() {
    // A join followed by a leave must not write earlier bytes again (S3's ETag is the body's
    // MD5): the file id differs at every write.
    let joint = shared(vec![entry("a", "h1", 10, 30, 7)]);
    let first = joint.to_json("file-1", "d", at(25));
    let again = joint.to_json("file-2", "d", at(25));
    assert_ne!(first, again);
}

#[test]
fn files_that_are_not_joint_ones_or_cannot_be_read_as_such_are_not_half_understood() {
    let exclusive = crate::lockfile::LockRecord {
        created_at: at(0),
        acquired_at: at(0),
        ttl: Duration::from_secs(30),
        hostname: "h".into(),
        pid: 1,
        owner_id: None,
        lock_id: "x".into(),
        daemon_id: "d".into(),
        token: Some(1),
        uid: None,
        detached: false,
        peer_ttl: None,
    };
    assert_eq!(Joint::parse(&exclusive.to_json()), None);
    let go = br#"{"createdAt":"2026-01-01T00:00:00Z","ttl":30000000000,"hostname":"h","pid":1}"#;
    assert_eq!(Joint::parse(go), None);
    let good =
        String::from_utf8(shared(vec![entry("a", "h1", 10, 30, 7)]).to_json("f", "d", at(25)))
            .unwrap();
    for broken in [
        good.replace("\"shared\"", "\"readers\""),
        good.replace("\"count\": 1", "\"count\": 0"),
        good.replace("\"ttl\": 30000000000", "\"ttl\": -1"),
        good.replace("\"holders\": [", "\"holders\": [1, "),
        good.replace("\"mode\": \"shared\"", "\"mode\": \"slots\""),
    ] {
        assert_ne!(broken, good);
        assert_eq!(Joint::parse(broken.as_bytes()), None, "{broken}");
    }
    let empty = good.replace(
        &good[good.find("\"holders\"").unwrap()..good.rfind(']').unwrap() + 1],
        "\"holders\": []",
    );
    assert_eq!(Joint::parse(empty.as_bytes()), None, "{empty}");
}

#[test]
fn modes_name_themselves_for_messages() {
    assert_eq!(JointMode::Shared.describe(), "shared");
    assert_eq!(JointMode::Slots(1).describe(), "a semaphore of 1 slot");
    assert_eq!(JointMode::Slots(4).describe(), "a semaphore of 4 slots");
}
