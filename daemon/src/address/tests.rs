//! Tests of target and prefix parsing through [`Address::parse`] and
//! [`Address::parse_prefix`]: every accepted spelling, its normalized form, and every refusal
//! with the rule it names.

use super::check::{MAX_KEY, MAX_PATH};
use super::error::{ACCEPTED, ACCEPTED_PREFIX};
use super::*;

fn ok(input: &str) -> Address {
    Address::parse(input).unwrap_or_else(|e| panic!("{input:?} refused: {e}"))
}

/// Asserts refusal and returns the message, which must name the accepted forms.
fn refused(input: &str) -> String {
    let message = match Address::parse(input) {
        Ok(a) => panic!("{input:?} accepted as {a:?}"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains(ACCEPTED), "{message}");
    for form in [
        "file:///abs/path",
        "mem:///path",
        "s3://bucket/key",
        "gs://bucket/key",
        "azblob://container/key (or az://)",
        "sftp://[user@]host[:port]/path",
        "absolute path",
    ] {
        assert!(message.contains(form), "{form} missing from {message}");
    }
    message
}

fn prefix(input: &str) -> Prefix {
    Address::parse_prefix(input).unwrap_or_else(|e| panic!("prefix {input:?} refused: {e}"))
}

fn prefix_refused(input: &str) -> String {
    let message = match Address::parse_prefix(input) {
        Ok(p) => panic!("prefix {input:?} accepted as {p:?}"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains(ACCEPTED_PREFIX), "{message}");
    assert!(message.contains("invalid store prefix"), "{message}");
    message
}

#[test]
fn file_url_and_plain_path_are_the_same_target() {
    let url = ok("file:///abs/path/data.csv");
    assert_eq!(url.scheme(), Scheme::File);
    assert_eq!(url.path(), "/abs/path/data.csv");
    assert_eq!(url.authority(), "");
    assert_eq!(url.lock_path(), "/abs/path/data.csv.lock");
    assert_eq!(url.object_key(), "/abs/path/data.csv");
    assert_eq!(url.lock_key(), "/abs/path/data.csv.lock");
    assert_eq!(url.sftp_parts(), None);
    assert_eq!(url.url(), "file:///abs/path/data.csv");
    assert_eq!(url.to_string(), url.url());

    for same in [
        "/abs/path/data.csv",
        "file://localhost/abs/path/data.csv",
        "FILE://LocalHost/abs/path/data.csv",
        "File:///abs/path/data.csv",
        "file:///abs/path/data%2Ecsv",
    ] {
        assert_eq!(ok(same), url, "{same}");
        assert_eq!(ok(same).key(), url.key(), "{same}");
    }
}

#[test]
fn mem_urls_keep_their_volume_in_the_identity() {
    let plain = ok("mem:///inbox/data.csv");
    assert_eq!(plain.scheme(), Scheme::Mem);
    assert_eq!(plain.authority(), "");
    assert_eq!(plain.path(), "/inbox/data.csv");
    assert_eq!(plain.object_key(), "/inbox/data.csv");
    assert_eq!(plain.url(), "mem:///inbox/data.csv");
    assert_eq!(ok("MEM:///inbox/data.csv"), plain);

    let vol = ok("mem://vol/x");
    assert_eq!(vol.authority(), "vol");
    assert_eq!(vol.path(), "/x");
    assert_eq!(vol.url(), "mem://vol/x");
    assert_eq!(ok("mem://VOL/x"), vol);
    assert_ne!(vol.key(), ok("mem:///x").key());
    assert_ne!(vol.key(), ok("mem://other/x").key());
    assert_ne!(ok("mem:///x").key(), ok("file:///x").key());
}

#[test]
fn scheme_names_and_kinds() {
    for (scheme, name, object) in [
        (Scheme::File, "file", false),
        (Scheme::Mem, "mem", false),
        (Scheme::S3, "s3", true),
        (Scheme::Gcs, "gs", true),
        (Scheme::Azblob, "azblob", true),
        (Scheme::Sftp, "sftp", false),
    ] {
        assert_eq!(scheme.as_str(), name);
        assert_eq!(scheme.is_object_store(), object, "{name}");
        assert_eq!(Scheme::from_name(name), Some(scheme));
    }
    assert_eq!(Scheme::from_name("AZ"), Some(Scheme::Azblob));
}

#[test]
fn object_store_urls_name_a_bucket_and_a_key() {
    for (input, scheme, bucket, url) in [
        (
            "s3://locks/inbox/data.csv",
            Scheme::S3,
            "locks",
            "s3://locks/inbox/data.csv",
        ),
        (
            "S3://my.bucket-1/inbox/data.csv",
            Scheme::S3,
            "my.bucket-1",
            "s3://my.bucket-1/inbox/data.csv",
        ),
        (
            "gs://my_bucket/inbox/data.csv",
            Scheme::Gcs,
            "my_bucket",
            "gs://my_bucket/inbox/data.csv",
        ),
        (
            "azblob://container-1/inbox/data.csv",
            Scheme::Azblob,
            "container-1",
            "azblob://container-1/inbox/data.csv",
        ),
    ] {
        let address = ok(input);
        assert_eq!(address.scheme(), scheme, "{input}");
        assert_eq!(address.authority(), bucket, "{input}");
        assert_eq!(address.object_key(), "inbox/data.csv", "{input}");
        assert_eq!(address.lock_key(), "inbox/data.csv.lock", "{input}");
        assert_eq!(address.path(), "/inbox/data.csv", "{input}");
        assert_eq!(address.lock_path(), "/inbox/data.csv.lock", "{input}");
        assert_eq!(address.url(), url, "{input}");
        assert_eq!(address.key(), url, "{input}");
        assert_eq!(address.to_string(), url, "{input}");
        assert_eq!(address.sftp_parts(), None, "{input}");
    }
    // One key in different stores is different targets.
    let keys = [
        "s3://abc/x",
        "gs://abc/x",
        "azblob://abc/x",
        "file:///abc/x",
    ];
    for (i, a) in keys.iter().enumerate() {
        for b in &keys[i + 1..] {
            assert_ne!(ok(a).key(), ok(b).key(), "{a} {b}");
        }
    }
}

#[test]
fn az_is_azblob() {
    let az = ok("az://container/inbox/data.csv");
    assert_eq!(az, ok("azblob://container/inbox/data.csv"));
    assert_eq!(az, ok("AZ://container/inbox/data.csv"));
    assert_eq!(az.scheme(), Scheme::Azblob);
    assert_eq!(az.url(), "azblob://container/inbox/data.csv");
    assert_eq!(az.key(), ok("AzBlob://container/inbox/data.csv").key());
}

#[test]
fn object_keys_keep_double_slashes_and_are_decoded() {
    let address = ok("s3://locks/inbox//data.csv");
    assert_eq!(address.object_key(), "inbox//data.csv");
    assert_eq!(address.lock_key(), "inbox//data.csv.lock");
    assert_eq!(address.path(), "/inbox//data.csv");
    assert_eq!(address.url(), "s3://locks/inbox//data.csv");
    assert_ne!(address, ok("s3://locks/inbox/data.csv"));

    // A key may itself start with '/' or hold several empty segments.
    let leading = ok("gs://bucket//x///y");
    assert_eq!(leading.object_key(), "/x///y");
    assert_eq!(leading.path(), "//x///y");
    assert_eq!(leading.url(), "gs://bucket//x///y");

    // Keys are flat: an encoded '/' is the object a literal one names.
    let encoded = ok("s3://locks/inbox%2Fdata%20file.csv");
    assert_eq!(encoded.object_key(), "inbox/data file.csv");
    assert_eq!(encoded, ok("s3://locks/inbox/data%20file.csv"));
    assert_eq!(encoded.url(), "s3://locks/inbox/data%20file.csv");
    // Keys are case-sensitive.
    assert_ne!(ok("s3://locks/A"), ok("s3://locks/a"));
}

#[test]
fn object_key_refusals_name_the_rule() {
    for input in [
        "s3://locks",
        "s3://locks/",
        "gs://bucket",
        "az://container/",
    ] {
        assert!(refused(input).contains("no object key"), "{input}");
    }
    for input in [
        "s3://locks/dir/",
        "gs://bucket/a//",
        "azblob://container/x/",
    ] {
        assert!(refused(input).contains("names a directory"), "{input}");
    }
    for input in [
        "s3://locks/a/../b",
        "s3://locks/./b",
        "gs://bucket/a/..",
        "s3://locks/a%2F..%2Fb",
        "s3://locks/%2E/b",
    ] {
        assert!(refused(input).contains("segment"), "{input}");
    }
    for input in [
        "s3://locks/x.lock",
        "gs://bucket/a/x%2Elock",
        "az://container/.lock",
    ] {
        assert!(refused(input).contains("lock file"), "{input}");
    }
    // As for files, only a lower-case suffix on the last segment marks a lock.
    assert_eq!(ok("s3://locks/x.LOCK").object_key(), "x.LOCK");
    assert_eq!(ok("s3://locks/x.lock/y").object_key(), "x.lock/y");
    assert!(refused("s3://locks/a\0b").contains("NUL"));
    assert!(refused("s3://locks/a%00b").contains("NUL"));
    assert!(refused("s3://locks/a?b").contains("%3F"));
    assert!(refused("s3://locks/a#b").contains("%23"));
    assert!(refused("s3://locks/a%FF").contains("key is not UTF-8"));
    assert!(refused("s3://locks/a%zz").contains("percent escape"));
}

#[test]
fn object_keys_must_leave_room_for_the_lock_suffix() {
    let longest = "k".repeat(MAX_KEY - LOCK_SUFFIX.len());
    let address = ok(&format!("s3://locks/{longest}"));
    assert_eq!(address.lock_key().len(), MAX_KEY);
    let message = refused(&format!("s3://locks/{longest}k"));
    assert!(message.contains("1020 bytes"), "{message}");
    assert!(message.contains("1024"), "{message}");
    // The limit applies to the decoded key.
    let encoded = format!("s3://locks/{}", "%6B".repeat(MAX_KEY - LOCK_SUFFIX.len()));
    assert_eq!(ok(&encoded), address);
}

#[test]
fn bucket_names_are_checked_per_store() {
    for input in [
        "s3://ab/x",
        "s3://Locks/x",
        "s3://my_bucket/x",
        "s3://a%62c/x",
        &format!("s3://{}/x", "a".repeat(64)),
    ] {
        let message = refused(input);
        assert!(
            message.contains(
                "an S3 bucket name is 3-63 characters of lowercase letters, digits, '.' and '-'"
            ),
            "{message}"
        );
    }
    for input in [
        "gs://ab/x",
        "gs://Bucket/x",
        "gs://a~b/x",
        &format!("gs://{}/x", "a".repeat(64)),
    ] {
        let message = refused(input);
        assert!(
            message.contains("a GCS bucket name is 3-63 characters"),
            "{message}"
        );
        assert!(message.contains("'.', '-' and '_'"), "{message}");
    }
    // GCS allows longer names made of dotted parts.
    let dotted = format!("{}.{}", "a".repeat(100), "b".repeat(100));
    assert_eq!(ok(&format!("gs://{dotted}/x")).authority(), dotted);
    assert!(refused(&format!("gs://{}.x/x", "a".repeat(221))).contains("up to 222"));
    for input in [
        "azblob://ab/x",
        "az://Container/x",
        "az://my.container/x",
        "az://my_c/x",
    ] {
        let message = refused(input);
        assert!(
            message.contains(
                "an Azure container name is 3-63 characters of lowercase letters, digits and '-'"
            ),
            "{message}"
        );
    }
    assert!(refused("s3:///key").contains("no bucket; use s3://bucket/key"));
    assert!(refused("az:///key").contains("no container; use azblob://container/key"));
    assert!(refused("s3:bucket/key").contains("s3 URLs start with s3://"));
    assert!(refused("az:c/key").contains("az URLs start with az://"));
}

#[test]
fn sftp_urls_are_normalized() {
    let address = ok("SFTP://User@Example.ORG:22/x");
    assert_eq!(address.url(), "sftp://User@example.org/x");
    assert_eq!(address.scheme(), Scheme::Sftp);
    assert_eq!(address.authority(), "User@example.org");
    assert_eq!(
        address.sftp_parts(),
        Some((Some("User"), "example.org", None))
    );
    assert_eq!(address, ok("sftp://User@example.org/x"));
    assert_ne!(address, ok("sftp://user@example.org/x"));

    let full = ok("sftp://vfs@example.org:2222/srv/data.csv");
    assert_eq!(full.authority(), "vfs@example.org:2222");
    assert_eq!(
        full.sftp_parts(),
        Some((Some("vfs"), "example.org", Some(2222)))
    );
    assert_eq!(full.path(), "/srv/data.csv");
    assert_eq!(full.object_key(), "/srv/data.csv");
    assert_eq!(full.lock_path(), "/srv/data.csv.lock");
    assert_eq!(full.lock_key(), "/srv/data.csv.lock");
    assert_eq!(full.url(), "sftp://vfs@example.org:2222/srv/data.csv");
    assert_ne!(full.key(), ok("sftp://vfs@example.org/srv/data.csv").key());

    let bare = ok("sftp://example.org/x");
    assert_eq!(bare.authority(), "example.org");
    assert_eq!(bare.sftp_parts(), Some((None, "example.org", None)));
    assert_eq!(ok("sftp://example.org:0022/x"), bare);

    // A user is decoded and re-encoded; '@' may be part of it.
    let mail = ok("sftp://me%40corp.example@host/x");
    assert_eq!(
        mail.sftp_parts(),
        Some((Some("me@corp.example"), "host", None))
    );
    assert_eq!(mail.url(), "sftp://me%40corp.example@host/x");
    assert_eq!(ok("sftp://me@corp.example@host/x"), mail);

    let v6 = ok("sftp://[::1]:2222/x");
    assert_eq!(v6.sftp_parts(), Some((None, "[::1]", Some(2222))));
    assert_eq!(ok("sftp://[FE80::1]/x").authority(), "[fe80::1]");
    assert_eq!(ok("sftp://[::1]:22/x").url(), "sftp://[::1]/x");
}

#[test]
fn sftp_refusals_name_the_rule() {
    assert!(refused("sftp:///x").contains("no host"));
    assert!(refused("sftp://u@/x").contains("no host"));
    assert!(refused("sftp://@host/x").contains("user before '@' is empty"));
    assert!(refused("sftp://u:secret@host/x").contains("password"));
    assert!(refused("sftp://ho st/x").contains("host name may hold only"));
    assert!(refused("sftp://ho%73t/x").contains("host name may hold only"));
    for port in ["0", "65536", "", "+22", "x", "22:1", "-1"] {
        let message = refused(&format!("sftp://host:{port}/x"));
        assert!(
            message.contains("port must be a number from 1 to 65535"),
            "{message}"
        );
    }
    assert_eq!(
        ok("sftp://host:65535/x").sftp_parts().unwrap().2,
        Some(65535)
    );
    assert!(refused("sftp://[::1/x").contains("closing ']'"));
    assert!(refused("sftp://[zz]/x").contains("IPv6"));
    assert!(refused("sftp://[::1]x/x").contains("':port'"));
    // The path obeys the file rules.
    assert!(refused("sftp://host").contains("no path"));
    assert!(refused("sftp://host/").contains("ends in '/'"));
    assert!(refused("sftp://host/a//b").contains("empty segment"));
    assert!(refused("sftp://host/a/../b").contains("segment"));
    assert!(refused("sftp://host/x.lock").contains("lock file"));
    assert!(refused("sftp://host/a%2Fb").contains("%2F"));
}

#[test]
fn url_paths_are_percent_decoded_and_plain_paths_literal() {
    let url = ok("file:///data/my%20file%C3%A9.csv");
    assert_eq!(url.path(), "/data/my fileé.csv");
    assert_eq!(url.url(), "file:///data/my%20file%C3%A9.csv");
    let plain = ok("/data/my%20file.csv");
    assert_eq!(plain.path(), "/data/my%20file.csv");
    assert_eq!(plain.url(), "file:///data/my%2520file.csv");
}

#[test]
fn url_round_trips_through_parse() {
    for input in [
        "/a b/c?d#e%f",
        "/ünï/cödé",
        "/x/a:b@c;d=e,f+g!h$i&j'k(l)m*n~o",
        "mem://v-1.x_y~/q%3Fr",
        "file:///tab%09here",
        "s3://locks/a%20b/c%3Fd%23e%25f",
        "s3://locks/ünï//cödé ü",
        "gs://b_1/x/a:b@c;d=e,f+g!h$i&j'k(l)m*n~o",
        "az://container//lead/%25/%3F%23",
        "azblob://container/x%0Ay",
        "sftp://%C3%BCser@host:2222/a%20b/%25%3F%23/ü",
        "sftp://a%20b%3Ac@[::1]/x",
    ] {
        let address = ok(input);
        let url = address.url();
        assert_eq!(ok(&url), address, "{input} -> {url}");
        assert_eq!(ok(&url).url(), url, "{input}");
    }
    let tricky = ok("s3://locks/a%20b/c%3Fd%23e%25f");
    assert_eq!(tricky.object_key(), "a b/c?d#e%f");
    assert_eq!(tricky.url(), "s3://locks/a%20b/c%3Fd%23e%25f");
    assert_eq!(ok("s3://locks/ü").url(), "s3://locks/%C3%BC");
    assert_eq!(ok("s3://locks/ü"), ok("s3://locks/%C3%BC"));
}

#[test]
fn relative_and_dotted_paths_are_refused() {
    for input in ["data.csv", "./data.csv", "abs/path", "../x", " /abs"] {
        assert!(refused(input).contains("relative"), "{input}");
    }
    for input in [
        "/a/../b",
        "/a/./b",
        "/..",
        "file:///a/%2E%2E/b",
        "mem:///./x",
    ] {
        assert!(refused(input).contains("segment"), "{input}");
    }
}

#[test]
fn empty_segments_and_directories_are_refused() {
    assert!(refused("/a//b").contains("empty segment"));
    assert!(refused("file:///a//b").contains("empty segment"));
    for input in ["/", "/a/", "file:///", "mem:///dir/"] {
        assert!(refused(input).contains("ends in '/'"), "{input}");
    }
    assert!(refused("").contains("empty"));
    assert!(refused("file://").contains("no path"));
    assert!(refused("mem://vol").contains("no path"));
}

#[test]
fn lock_files_are_refused_as_targets() {
    for input in [
        "/data/x.csv.lock",
        "/.lock",
        "file:///x.lock",
        "mem:///x%2Elock",
    ] {
        assert!(refused(input).contains("lock file"), "{input}");
    }
    // Only the last segment matters; a directory may be called anything.
    assert_eq!(ok("/locks.lock/x").path(), "/locks.lock/x");
    assert_eq!(ok("/x.locked").path(), "/x.locked");
}

#[test]
fn unknown_schemes_name_the_accepted_ones() {
    for input in [
        "http://example.com/x",
        "gcs://bucket/x",
        "azure://c/x",
        "c:data.csv",
    ] {
        let message = refused(input);
        let scheme = input.split(':').next().unwrap();
        assert!(
            message.contains(&format!("unknown scheme \"{scheme}\"")),
            "{message}"
        );
        assert!(
            message.contains("accepted: file, mem, s3, gs, azblob (or az) and sftp"),
            "{message}"
        );
    }
    // The object-store schemes are parsed now; whether a store serves them is not decided
    // here.
    for input in [
        "s3://bucket/key",
        "gs://bucket/key",
        "azblob://bucket/key",
        "sftp://h/k",
    ] {
        ok(input);
    }
}

#[test]
fn malformed_urls_are_refused() {
    assert!(refused("file:/abs/x").contains("file://"));
    assert!(refused("mem:x").contains("mem://"));
    assert!(refused("file://host/x").contains("no host"));
    assert!(refused("mem://a@b/x").contains("volume"));
    assert!(refused("mem://a:1/x").contains("volume"));
    assert!(refused("file:///a?b").contains("%3F"));
    assert!(refused("file:///a#b").contains("%23"));
    assert!(refused("file:///a%2Fb").contains("%2F"));
    assert!(refused("file:///a%2fb").contains("%2F"));
    for bad in ["file:///a%", "file:///a%2", "file:///a%zz", "file:///a%+1"] {
        assert!(refused(bad).contains("percent escape"), "{bad}");
    }
    assert!(refused("file:///a%FF").contains("UTF-8"));
}

#[test]
fn nul_bytes_are_refused() {
    assert!(refused("/a\0b").contains("NUL"));
    assert!(refused("file:///a\0b").contains("NUL"));
    assert!(refused("file:///a%00b").contains("NUL"));
    assert!(refused("sftp://u%00@host/x").contains("NUL"));
}

#[test]
fn paths_over_4096_bytes_are_refused() {
    let at_limit = format!("/{}", "a".repeat(MAX_PATH - 1));
    assert_eq!(ok(&at_limit).path().len(), MAX_PATH);
    let over = format!("/{}", "a".repeat(MAX_PATH));
    let message = refused(&over);
    assert!(message.contains("4097 bytes"), "{message}");
    assert!(message.len() < 600, "the input is shortened: {message}");
    // The limit applies to the decoded path: escapes shrink it back under.
    let encoded = format!("file:///{}", "%61".repeat(MAX_PATH - 1));
    assert_eq!(ok(&encoded).path(), at_limit);
}

#[test]
fn prefixes_are_parsed_and_normalized() {
    let s = |text: &str| text.to_owned();
    for (input, expected) in [
        ("s3://locks/", (Scheme::S3, s("locks"), s(""))),
        ("s3://locks", (Scheme::S3, s("locks"), s(""))),
        ("s3://locks/team-a/", (Scheme::S3, s("locks"), s("team-a/"))),
        ("s3://locks/team-a", (Scheme::S3, s("locks"), s("team-a"))),
        (
            "s3://locks/a//b%20c/",
            (Scheme::S3, s("locks"), s("a//b c/")),
        ),
        ("gs://b_1", (Scheme::Gcs, s("b_1"), s(""))),
        ("azblob://c-1/", (Scheme::Azblob, s("c-1"), s(""))),
        ("AZ://c-1/x/", (Scheme::Azblob, s("c-1"), s("x/"))),
        (
            "sftp://u@host:2222/srv/locks/",
            (Scheme::Sftp, s("u@host:2222"), s("/srv/locks/")),
        ),
        ("sftp://U@HOST:22", (Scheme::Sftp, s("U@host"), s(""))),
        ("mem://", (Scheme::Mem, s(""), s(""))),
        ("mem://Vol/", (Scheme::Mem, s("vol"), s(""))),
        ("mem:///team", (Scheme::Mem, s(""), s("/team"))),
        ("file:///", (Scheme::File, s(""), s(""))),
        ("file://", (Scheme::File, s(""), s(""))),
        (
            "file:///srv/locks/",
            (Scheme::File, s(""), s("/srv/locks/")),
        ),
        ("/srv/locks/", (Scheme::File, s(""), s("/srv/locks/"))),
        ("/", (Scheme::File, s(""), s(""))),
    ] {
        assert_eq!(prefix(input), expected, "{input}");
    }
}

#[test]
fn bad_prefixes_are_refused() {
    assert!(prefix_refused("").contains("empty"));
    assert!(prefix_refused("locks/").contains("relative"));
    assert!(prefix_refused("http://x/").contains("unknown scheme"));
    assert!(prefix_refused("s3://Locks/").contains("S3 bucket name"));
    assert!(prefix_refused("s3:///x/").contains("no bucket"));
    assert!(prefix_refused("s3://locks/../x/").contains("\"..\" segment"));
    assert!(prefix_refused("s3://locks/./").contains("\".\" segment"));
    assert!(prefix_refused("file:///a//b/").contains("empty segment"));
    assert!(prefix_refused("/a/../").contains("segment"));
    assert!(prefix_refused("//").contains("empty segment"));
    assert!(prefix_refused("sftp://host:0/x/").contains("port"));
    assert!(prefix_refused("s3://locks/a?").contains("%3F"));
    assert!(prefix_refused("/a\0").contains("NUL"));
    assert!(prefix_refused(&format!("s3://locks/{}", "k".repeat(MAX_KEY + 1))).contains("1025"));
}

#[test]
fn targets_match_prefixes_of_their_store() {
    let team_a_dir = prefix("s3://locks/team-a/");
    assert!(ok("s3://locks/team-a/x").has_prefix(&team_a_dir));
    assert!(ok("s3://locks/team-a//x").has_prefix(&team_a_dir));
    assert!(!ok("s3://locks/team-ab/x").has_prefix(&team_a_dir));
    assert!(!ok("s3://locks/team-a").has_prefix(&team_a_dir));

    // Without a trailing '/', a prefix matches at a segment boundary only.
    let team_a = prefix("s3://locks/team-a");
    assert!(ok("s3://locks/team-a").has_prefix(&team_a));
    assert!(ok("s3://locks/team-a/x").has_prefix(&team_a));
    assert!(ok("s3://locks/team-a//x").has_prefix(&team_a));
    assert!(!ok("s3://locks/team-ab/x").has_prefix(&team_a));
    assert!(!ok("s3://locks/team-ab").has_prefix(&team_a));

    let bucket = prefix("s3://locks/");
    assert!(ok("s3://locks/anything").has_prefix(&bucket));
    assert!(ok("s3://locks//lead").has_prefix(&bucket));
    assert!(!ok("s3://other/anything").has_prefix(&bucket));
    assert!(!ok("gs://locks/anything").has_prefix(&bucket));
    assert!(ok("az://c-1/x").has_prefix(&prefix("azblob://c-1")));

    let sftp = prefix("sftp://u@HOST:2222/srv/locks/");
    assert!(ok("sftp://u@host:2222/srv/locks/x").has_prefix(&sftp));
    assert!(!ok("sftp://u@host/srv/locks/x").has_prefix(&sftp));
    assert!(!ok("sftp://v@host:2222/srv/locks/x").has_prefix(&sftp));
    assert!(!ok("sftp://u@host:2222/srv/lockset/x").has_prefix(&sftp));
    assert!(ok("sftp://host/srv/x").has_prefix(&prefix("sftp://host:22/")));

    assert!(ok("/any/where").has_prefix(&prefix("file:///")));
    assert!(ok("file:///srv/locks").has_prefix(&prefix("/srv/locks")));
    assert!(!ok("/srv/lockset").has_prefix(&prefix("/srv/locks")));
    assert!(ok("mem:///x").has_prefix(&prefix("mem://")));
    assert!(!ok("mem://vol/x").has_prefix(&prefix("mem://")));
    assert!(ok("mem://vol/x").has_prefix(&prefix("mem://VOL")));
    assert!(!ok("mem:///x").has_prefix(&prefix("file:///")));
}
