//! Tests of the lock file: the Go library's fixtures read as Go reads them, our JSON written
//! byte for byte as Go's layout and serde's reference, staleness, and Go times.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vfslock_proto::{LockFileFormat, LockMetadata};

use super::go_time::{civil_from_days, days_from_civil, NANOS_PER_SEC};
use super::read::empty;
use super::*;
use vfslock_proto::unix_time::from_unix_ns;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/",
            $name
        ))
    };
}

const GRACE: Duration = Duration::from_secs(60);

fn at(odt: time::OffsetDateTime) -> SystemTime {
    from_unix_ns(odt.unix_timestamp_nanos()).unwrap()
}

fn now_2026() -> SystemTime {
    at(time::macros::datetime!(2026-03-01 12:00 UTC))
}

fn t_345678901() -> SystemTime {
    at(time::macros::datetime!(2025-08-04 09:30:12.345678901 UTC))
}

#[test]
fn go_expired_fixture_reads_every_field_and_is_stale() {
    let lock = parse(fixture!("go-lockfile-expired-ttl.lock"));
    assert_eq!(lock.format, LockFileFormat::Go);
    assert_eq!(lock.created_at(), Some(t_345678901()));
    assert_eq!(
        unix_ns(lock.created_at().unwrap()),
        1_754_299_812_345_678_901
    );
    assert_eq!(lock.ttl_ns, 300_000_000_000);
    assert_eq!(lock.hostname, "ingest-7");
    assert_eq!(lock.pid, 4242);
    assert_eq!(lock.owner_id.as_deref(), Some("ingestion-service-1"));
    assert_eq!((lock.lock_id.clone(), lock.daemon_id.clone()), (None, None));
    assert_eq!(lock.acquired_at(), None);
    assert!(is_stale(&lock, None, now_2026(), GRACE));
    let expiry = t_345678901() + Duration::from_secs(300);
    assert_eq!(stale_at(&lock, None, GRACE), Some(expiry));
    // Strictly after: not stale at the expiry instant itself, stale one nanosecond later.
    assert!(!is_stale(&lock, None, expiry, GRACE));
    assert!(is_stale(
        &lock,
        None,
        expiry + Duration::from_nanos(1),
        GRACE
    ));
}

#[test]
fn go_v10_expired_fixture_reads_old_spelling() {
    let lock = parse(fixture!("go-v1.0-lockfile-expired-ttl.lock"));
    assert_eq!(lock.format, LockFileFormat::Go);
    assert_eq!(lock.created_at(), Some(t_345678901()));
    assert_eq!(lock.ttl_ns, 300_000_000_000);
    assert_eq!(lock.hostname, "etl-3");
    assert_eq!(lock.pid, 9001);
    assert_eq!(lock.owner_id.as_deref(), Some("nightly-import"));
    assert!(is_stale(&lock, None, now_2026(), GRACE));
}

#[test]
fn go_short_ttl_fixture() {
    let lock = parse(fixture!("go-lockfile-short-ttl.lock"));
    let created = at(time::macros::datetime!(2025-08-04 09:30:12.5 UTC));
    assert_eq!(lock.format, LockFileFormat::Go);
    assert_eq!(lock.created_at(), Some(created));
    assert_eq!(lock.ttl_ns, 100_000_000);
    assert_eq!(lock.hostname, "web-2");
    assert_eq!(lock.pid, 31337);
    assert_eq!(lock.owner_id.as_deref(), Some("test-owner"));
    assert_eq!(
        stale_at(&lock, None, GRACE),
        Some(created + Duration::from_millis(100))
    );
    assert!(is_stale(&lock, None, now_2026(), GRACE));
    assert!(!is_stale(&lock, None, created, GRACE));
}

#[test]
fn no_ttl_fixtures_are_never_stale() {
    let created = at(time::macros::datetime!(2025-08-04 09:30:12 UTC));
    for (bytes, host, pid) in [
        (&fixture!("go-lockfile-no-ttl.lock")[..], "batch-host", 77),
        (&fixture!("go-v1.0-lockfile-no-ttl.lock")[..], "etl-4", 9002),
    ] {
        let lock = parse(bytes);
        assert_eq!(lock.format, LockFileFormat::Go);
        assert_eq!(lock.created_at(), Some(created));
        assert_eq!(lock.ttl_ns, 0);
        assert_eq!(lock.hostname, host);
        assert_eq!(lock.pid, pid);
        assert_eq!(lock.owner_id, None);
        let far = now_2026() + Duration::from_secs(1_000 * 365 * 86_400);
        assert!(!is_stale(&lock, Some(created), far, GRACE));
        assert_eq!(stale_at(&lock, Some(created), GRACE), None);
    }
}

#[test]
fn corrupt_fixtures_are_stale_only_after_grace() {
    let modified = now_2026() - Duration::from_secs(30);
    for bytes in [
        &fixture!("corrupt-empty.lock")[..],
        &fixture!("corrupt-truncated.lock")[..],
        &fixture!("corrupt-binary.lock")[..],
    ] {
        let lock = parse(bytes);
        assert_eq!(lock, empty(LockFileFormat::Corrupt));
        assert!(!is_stale(&lock, Some(modified), now_2026(), GRACE));
        assert_eq!(
            stale_at(&lock, Some(modified), GRACE),
            Some(modified + GRACE)
        );
        assert!(!is_stale(&lock, Some(modified), modified + GRACE, GRACE));
        let later = modified + GRACE + Duration::from_nanos(1);
        assert!(is_stale(&lock, Some(modified), later, GRACE));
        // Without a modification time there is nothing to judge by.
        assert!(!is_stale(&lock, None, later, GRACE));
        assert_eq!(stale_at(&lock, None, GRACE), None);
    }
}

#[test]
fn non_objects_and_wrong_types_are_corrupt() {
    for text in [
        "null",
        "[]",
        "42",
        "\"createdAt\"",
        r#"{"ttl": "30s"}"#,
        r#"{"pid": 1.5}"#,
        r#"{"pid": 1e3}"#,
        r#"{"ttl": 9223372036854775808}"#,
        r#"{"createdAt": 5}"#,
        r#"{"created_at": true}"#,
        r#"{"hostname": 7}"#,
        r#"{"ownerId": ["a"]}"#,
        r#"{"owner_id": {}}"#,
        // A wrong type in an earlier duplicate fails Go's decoder even if a later one is fine.
        r#"{"pid": "1", "pid": 1}"#,
        r#"{"ttl": 1} trailing"#,
    ] {
        assert_eq!(
            parse(text.as_bytes()).format,
            LockFileFormat::Corrupt,
            "{text}"
        );
    }
}

#[test]
fn terraform_lock_is_foreign_and_never_stale() {
    let tflock = br#"{"ID":"7b9c","Operation":"OperationTypeApply","Info":"","Who":"me@host","Version":"1.9.0","Created":"2020-01-01T00:00:00Z","Path":"x"}"#;
    let lock = parse(tflock);
    assert_eq!(lock, empty(LockFileFormat::Foreign));
    let modified = Some(UNIX_EPOCH);
    assert!(!is_stale(&lock, modified, now_2026(), Duration::ZERO));
    assert_eq!(stale_at(&lock, modified, Duration::ZERO), None);
    assert_eq!(parse(b"{}").format, LockFileFormat::Foreign);
}

fn record() -> LockRecord {
    LockRecord {
        created_at: t_345678901(),
        acquired_at: at(time::macros::datetime!(2025-08-04 09:00 UTC)),
        ttl: Duration::from_secs(30),
        hostname: "host-a".into(),
        pid: 1234,
        owner_id: Some("svc".into()),
        lock_id: "lock-1".into(),
        daemon_id: "daemon-1".into(),
        token: Some(1_754_299_812_345_679),
        uid: Some(1000),
        detached: false,
        peer_ttl: None,
    }
}

/// What [`parse`] reads from `record()`'s file.
fn parsed_record() -> LockMetadata {
    LockMetadata {
        created_at_unix_ns: Some(1_754_299_812_345_678_901),
        acquired_at_unix_ns: Some(unix_ns(record().acquired_at)),
        modified_unix_ns: None,
        ttl_ns: 30_000_000_000,
        hostname: "host-a".into(),
        pid: 1234,
        owner_id: Some("svc".into()),
        lock_id: Some("lock-1".into()),
        daemon_id: Some("daemon-1".into()),
        token: Some(1_754_299_812_345_679),
        uid: Some(1000),
        detached: false,
        format: LockFileFormat::Vfslock(FORMAT_VERSION),
        stale: false,
    }
}

#[test]
fn to_json_round_trips_every_field() {
    let rec = record();
    let lock = parse(&rec.to_json());
    assert_eq!(lock, parsed_record());
    assert_eq!(lock.created_at(), Some(rec.created_at));
    assert_eq!(lock.acquired_at(), Some(rec.acquired_at));
}

#[test]
fn hand_written_json_is_serde_jsons_pretty_output() {
    let mut rec = record();
    assert_eq!(rec.to_json(), rec.to_json_by_serde());
    rec.hostname = "h\"o\\st\n\u{1}é".into();
    rec.owner_id = Some("ünïcode \"quoted\"".into());
    rec.detached = true;
    rec.ttl = Duration::MAX;
    assert_eq!(rec.to_json(), rec.to_json_by_serde());
    rec.owner_id = Some(String::new());
    rec.token = None;
    rec.uid = None;
    rec.detached = false;
    rec.pid = -5;
    assert_eq!(rec.to_json(), rec.to_json_by_serde());
    // Nothing to escape, but not ASCII: copied as it is, as serde_json does.
    rec.hostname = "hôte-é \u{7f}~".into();
    rec.pid = 0;
    rec.token = Some(u64::MAX);
    assert_eq!(rec.to_json(), rec.to_json_by_serde());
}

#[test]
fn to_parsed_is_what_parse_reads_back() {
    let mut rec = record();
    assert_eq!(rec.to_parsed(), parse(&rec.to_json()));
    rec.owner_id = Some(String::new());
    rec.token = None;
    rec.uid = None;
    rec.detached = true;
    rec.ttl = Duration::ZERO;
    rec.created_at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    assert_eq!(rec.to_parsed(), parse(&rec.to_json()));
}

#[test]
fn go_times_have_no_trailing_fraction_zeros() {
    for (ns, text) in [
        (0, "1970-01-01T00:00:00Z"),
        (1, "1970-01-01T00:00:00.000000001Z"),
        (120_000_000, "1970-01-01T00:00:00.12Z"),
        (1_754_299_812_345_678_901, "2025-08-04T09:30:12.345678901Z"),
    ] {
        let t = UNIX_EPOCH + Duration::from_nanos(ns);
        assert_eq!(format_go_time(t), text);
        assert_eq!(parse_go_time(text), Some(t));
    }
}

#[test]
fn to_json_layout_matches_go_and_carries_both_spellings() {
    let json = String::from_utf8(record().to_json()).unwrap();
    let expected = r#"{
  "createdAt": "2025-08-04T09:30:12.345678901Z",
  "ttl": 30000000000,
  "hostname": "host-a",
  "pid": 1234,
  "ownerId": "svc",
  "created_at": "2025-08-04T09:30:12.345678901Z",
  "owner_id": "svc",
  "vfslock": 1,
  "lockId": "lock-1",
  "daemonId": "daemon-1",
  "acquiredAt": "2025-08-04T09:00:00Z",
  "token": 1754299812345679,
  "uid": 1000
}"#;
    assert_eq!(json, expected);
    assert!(!json.ends_with('\n'));
}

#[test]
fn to_json_omits_absent_or_empty_owner() {
    for owner in [None, Some(String::new())] {
        let rec = LockRecord {
            owner_id: owner,
            ..record()
        };
        let json = String::from_utf8(rec.to_json()).unwrap();
        assert!(
            !json.contains("ownerId") && !json.contains("owner_id"),
            "{json}"
        );
        assert_eq!(parse(json.as_bytes()).owner_id, None);
    }
}

#[test]
fn go_time_formatting_trims_like_go() {
    let base = at(time::macros::datetime!(2025-08-04 09:30:12 UTC));
    assert_eq!(format_go_time(base), "2025-08-04T09:30:12Z");
    assert_eq!(
        format_go_time(base + Duration::from_millis(500)),
        "2025-08-04T09:30:12.5Z"
    );
    assert_eq!(
        format_go_time(base + Duration::from_nanos(345_678_901)),
        "2025-08-04T09:30:12.345678901Z"
    );
    assert_eq!(
        format_go_time(base + Duration::from_nanos(10)),
        "2025-08-04T09:30:12.00000001Z"
    );
    assert_eq!(format_go_time(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(
        format_go_time(UNIX_EPOCH - Duration::from_nanos(1)),
        "1969-12-31T23:59:59.999999999Z"
    );
    assert_eq!(
        format_go_time(at(time::macros::datetime!(2024-02-29 23:59:59 UTC))),
        "2024-02-29T23:59:59Z"
    );
}

#[test]
fn go_zero_time_parses_and_formats() {
    let zero = parse_go_time("0001-01-01T00:00:00Z").unwrap();
    assert_eq!(unix_ns(zero), -62_135_596_800 * NANOS_PER_SEC);
    assert_eq!(format_go_time(zero), "0001-01-01T00:00:00Z");
    // Go's zero time with a TTL is long expired, as the Go library would judge it.
    let lock = parse(br#"{"createdAt": "0001-01-01T00:00:00Z", "ttl": 1}"#);
    assert_eq!(lock.created_at(), Some(zero));
    assert!(is_stale(&lock, None, UNIX_EPOCH, GRACE));
}

#[test]
fn parse_go_time_accepts_offsets_and_fraction_lengths() {
    let utc = at(time::macros::datetime!(2025-08-04 04:00:12.5 UTC));
    assert_eq!(parse_go_time("2025-08-04T09:30:12.5+05:30"), Some(utc));
    assert_eq!(
        parse_go_time("2025-08-03T23:00:12.5-05:00"),
        Some(utc),
        "negative offsets cross the date line"
    );
    assert_eq!(parse_go_time("2025-08-04T04:00:12.5-00:00"), Some(utc));
    assert_eq!(parse_go_time("2025-08-04T04:00:12.500000000Z"), Some(utc));
    // Go keeps the first nine digits and drops the rest.
    assert_eq!(
        parse_go_time("2025-08-04T09:30:12.3456789019Z"),
        Some(t_345678901())
    );
    assert_eq!(
        parse_go_time("2024-02-29T00:00:00Z"),
        Some(at(time::macros::datetime!(2024-02-29 0:00 UTC)))
    );
}

#[test]
fn parse_go_time_refuses_what_go_refuses() {
    for s in [
        "",
        "2025-08-04",
        "2025-08-04T09:30:12",
        "2025-08-04 09:30:12Z",
        "2025-08-04t09:30:12Z",
        "2025-08-04T09:30:12z",
        "2025-08-04T09:30:12.Z",
        "2025-08-04T09:30:12+0530",
        "2025-08-04T09:30:12+24:00",
        "2025-08-04T24:00:00Z",
        "2025-08-04T09:60:00Z",
        "2025-08-04T09:30:60Z",
        "2025-02-29T09:30:12Z",
        "2025-13-04T09:30:12Z",
        "2025-00-04T09:30:12Z",
        "+025-08-04T09:30:12Z",
        "2025-08-04T09:30:12ZZ",
        "30s",
    ] {
        assert_eq!(parse_go_time(s), None, "{s}");
    }
}

#[test]
fn keys_match_case_insensitively_exact_first() {
    let lock = parse(
        br#"{"CreatedAt": "2025-08-04T09:30:12.345678901Z", "TTL": 5, "HOSTNAME": "h", "Pid": 3, "OwnerID": "o"}"#,
    );
    assert_eq!(lock.format, LockFileFormat::Go);
    assert_eq!(lock.created_at(), Some(t_345678901()));
    assert_eq!(lock.ttl_ns, 5);
    assert_eq!(lock.hostname, "h");
    assert_eq!(lock.pid, 3);
    assert_eq!(lock.owner_id.as_deref(), Some("o"));

    // The last assignment wins, whichever spelling of the key it used.
    assert_eq!(parse(br#"{"ttl": 1, "TTL": 2}"#).ttl_ns, 2);
    assert_eq!(parse(br#"{"TTL": 2, "ttl": 1}"#).ttl_ns, 1);
    // Unicode folding as Go does it: the Kelvin sign and the long s.
    let folded =
        parse("{\"hostname\": \"a\", \"ho\u{17F}tname\": \"b\", \"VFSLOC\u{212A}\": 1}".as_bytes());
    assert_eq!(folded.hostname, "b");
    assert_eq!(folded.format, LockFileFormat::Vfslock(1));
}

#[test]
fn nulls_empty_owner_and_unknown_fields_are_ignored() {
    let lock = parse(
        br#"{"ttl": 7, "ttl": null, "pid": null, "ownerId": "", "owner_id": "old", "extra": {"nested": [1, 2.5, "x"]}}"#,
    );
    assert_eq!(lock.format, LockFileFormat::Go);
    assert_eq!(lock.ttl_ns, 7);
    assert_eq!(lock.pid, 0);
    assert_eq!(lock.hostname, "");
    assert_eq!(lock.owner_id.as_deref(), Some("old"));
    assert_eq!(parse(br#"{"ownerId": ""}"#).owner_id, None);
}

#[test]
fn missing_ttl_reads_as_never_expiring() {
    let lock = parse(br#"{"createdAt": "2000-01-01T00:00:00Z", "hostname": "h"}"#);
    assert_eq!(lock.format, LockFileFormat::Go);
    assert_eq!(lock.ttl_ns, 0);
    assert!(!is_stale(&lock, None, now_2026(), GRACE));
}

#[test]
fn negative_ttl_is_already_stale() {
    let lock = parse(br#"{"createdAt": "2999-01-01T00:00:00Z", "ttl": -1}"#);
    assert_eq!(lock.ttl_ns, -1);
    assert!(is_stale(&lock, None, now_2026(), GRACE));
    assert!(is_stale(&lock, None, UNIX_EPOCH, GRACE));
    assert!(stale_at(&lock, None, GRACE).unwrap() <= now_2026());
}

#[test]
fn unparseable_created_at_with_ttl_uses_grace_rule() {
    let lock = parse(br#"{"createdAt": "yesterday", "ttl": 1000, "hostname": "h"}"#);
    assert_eq!(lock.format, LockFileFormat::Go);
    assert_eq!(lock.created_at(), None);
    assert_eq!(lock.hostname, "h");
    let modified = now_2026() - Duration::from_secs(30);
    assert!(!is_stale(&lock, Some(modified), now_2026(), GRACE));
    assert!(is_stale(&lock, Some(modified), now_2026() + GRACE, GRACE));
    assert!(!is_stale(&lock, None, now_2026() + GRACE, GRACE));
    assert_eq!(
        stale_at(&lock, Some(modified), GRACE),
        Some(modified + GRACE)
    );
}

#[test]
fn overflowing_expiry_never_goes_stale() {
    let lock = parse(br#"{"createdAt": "9999-12-31T23:59:59Z", "ttl": 9223372036854775807}"#);
    let expiry = stale_at(&lock, None, GRACE);
    // Whether the sum fits depends on SystemTime's range; either way nothing panics and a
    // lock that far out is not stale in 2026.
    assert!(expiry.is_none_or(|t| t > now_2026()));
    assert!(!is_stale(&lock, None, now_2026(), GRACE));
    let corrupt = empty(LockFileFormat::Corrupt);
    let far = UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 / 2);
    assert!(!is_stale(&corrupt, Some(far), now_2026(), Duration::MAX));
}

#[test]
fn vfslock_field_sets_format_and_bad_values_are_ignored() {
    assert_eq!(
        parse(br#"{"vfslock": 7}"#).format,
        LockFileFormat::Vfslock(7)
    );
    for text in [
        r#"{"vfslock": "1", "ttl": 0}"#,
        r#"{"vfslock": 1.5, "ttl": 0}"#,
        r#"{"vfslock": -1, "ttl": 0}"#,
    ] {
        assert_eq!(parse(text.as_bytes()).format, LockFileFormat::Go, "{text}");
    }
}

#[test]
fn invalid_utf8_inside_strings_is_tolerated_like_go() {
    let lock = parse(b"{\"hostname\": \"h\xff\", \"ttl\": 1}");
    assert_eq!(lock.format, LockFileFormat::Go);
    assert_eq!(lock.hostname, "h\u{fffd}");
}

#[test]
fn to_wire_copies_fields() {
    let rec = record();
    let lock = parse(&rec.to_json());
    let modified = UNIX_EPOCH - Duration::from_secs(1);
    let wire = to_wire(&lock, Some(modified), true);
    assert_eq!(
        wire,
        LockMetadata {
            modified_unix_ns: Some(-1_000_000_000),
            stale: true,
            ..parsed_record()
        }
    );
    let corrupt = to_wire(&parse(b""), None, false);
    assert_eq!(corrupt.created_at_unix_ns, None);
    assert_eq!(corrupt.modified_unix_ns, None);
    assert_eq!(corrupt.format, LockFileFormat::Corrupt);
}

#[test]
fn calendar_agrees_with_the_time_crate() {
    // Every day over several 400-year cycles, including year 0 and pre-epoch dates.
    let mut date = time::macros::date!(0000 - 01 - 01);
    let end = time::macros::date!(2500 - 01 - 01);
    while date < end {
        let days = (date - time::macros::date!(1970 - 01 - 01)).whole_days();
        let expected = (
            i64::from(date.year()),
            date.month() as i64,
            i64::from(date.day()),
        );
        assert_eq!(civil_from_days(days), expected);
        assert_eq!(days_from_civil(expected.0, expected.1, expected.2), days);
        date = date.next_day().unwrap();
    }
}
