//! The rules a decoded path, object key or store prefix must obey: absolute where a path, no
//! `.` or `..` segments, not another target's lock file, and within the length limits, so that
//! every accepted spelling names a plain file or object and nothing else.

use super::LOCK_SUFFIX;

/// Longest accepted path in bytes, Linux's `PATH_MAX`.
pub(super) const MAX_PATH: usize = 4096;

/// Longest object key in bytes: S3's and GCS's limit (Azure's is 1024 characters, which is no
/// shorter).
pub(super) const MAX_KEY: usize = 1024;

/// Checks a decoded path: absolute, only named segments, not a lock file, not too long.
pub(super) fn check_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_PATH {
        return Err(format!(
            "the path is {} bytes long, over the limit of {MAX_PATH}",
            path.len()
        ));
    }
    let Some(relative) = path.strip_prefix('/') else {
        return Err("the path is not absolute".into());
    };
    let mut segments = relative.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "" if last => return Err("the path ends in '/' and names no file".into()),
            "" => return Err("the path has an empty segment ('//')".into()),
            "." | ".." => {
                return Err(format!(
                    "the path has a \"{segment}\" segment; give the path without it"
                ))
            }
            name if last && name.ends_with(LOCK_SUFFIX) => {
                return Err(format!(
                    "\"{name}\" is the lock file of another target, not a target"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a decoded object key. Unlike a path, a key may hold empty segments (`a//b`, or a
/// leading `/`): it is one flat name, and a Go peer locking the same key must find our lock.
pub(super) fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the URL names no object key after the bucket".into());
    }
    // The lock's key, not just the target's, must fit: a target whose lock cannot be created
    // is better refused here than failed on by the store.
    if key.len() + LOCK_SUFFIX.len() > MAX_KEY {
        return Err(format!(
            "the key is {} bytes long; with \"{LOCK_SUFFIX}\" appended its lock's key would be \
             over the store limit of {MAX_KEY} bytes",
            key.len()
        ));
    }
    let mut segments = key.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "" if last => {
                return Err("the key ends in '/' and names a directory, not an object".into())
            }
            "." | ".." => {
                return Err(format!(
                    "the key has a \"{segment}\" segment; give the key without it"
                ))
            }
            name if last && name.ends_with(LOCK_SUFFIX) => {
                return Err(format!(
                    "\"{name}\" is the lock file of another target, not a target"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a decoded key prefix: like a key, but it may be empty or end in `/`.
pub(super) fn check_key_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > MAX_KEY {
        return Err(format!(
            "the key prefix is {} bytes long, over the store limit of {MAX_KEY}",
            prefix.len()
        ));
    }
    let body = prefix.strip_suffix('/').unwrap_or(prefix);
    if let Some(segment) = body.split('/').find(|s| matches!(*s, "." | "..")) {
        return Err(format!(
            "the key prefix has a \"{segment}\" segment; give it without"
        ));
    }
    Ok(())
}

/// Checks a decoded path prefix: like a path, but it may be empty or end in `/`. Returns it
/// with a lone `/` (the whole tree) turned into the empty prefix.
pub(super) fn check_path_prefix(prefix: &str) -> Result<String, String> {
    if prefix.is_empty() || prefix == "/" {
        return Ok(String::new());
    }
    if prefix.len() > MAX_PATH {
        return Err(format!(
            "the path prefix is {} bytes long, over the limit of {MAX_PATH}",
            prefix.len()
        ));
    }
    let Some(relative) = prefix.strip_prefix('/') else {
        return Err("the path prefix is not absolute".into());
    };
    let body = relative.strip_suffix('/').unwrap_or(relative);
    for segment in body.split('/') {
        match segment {
            "" => return Err("the path prefix has an empty segment ('//')".into()),
            "." | ".." => {
                return Err(format!(
                    "the path prefix has a \"{segment}\" segment; give it without"
                ))
            }
            _ => {}
        }
    }
    Ok(prefix.to_owned())
}
