//! Relative paths, as a shell user types them: `data.csv` means the file in the caller's
//! working directory, as it does to `flock data.csv`. Only the caller knows that directory
//! (the daemon runs in `/`), so the library makes such a path absolute before any request
//! carries it.
//!
//! The directory part is canonicalized, as `open(2)` would resolve it: `../x.csv` and
//! `link-to-dir/x.csv` name the file the caller means, and the daemon, which refuses `..`
//! segments, gets a path it accepts. The last component is kept as written (the lock file
//! sits beside it; the file itself need not exist). Everything else (URLs, absolute paths)
//! passes unchanged: the daemon is the one that judges targets.

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};

use crate::{Error, ErrorKind};

/// `target` with a relative local path made absolute against the working directory; URLs and
/// absolute paths unchanged.
///
/// ```
/// let here = std::env::current_dir().unwrap().canonicalize().unwrap();
/// let resolved = vfslock::resolve_target("data.csv").unwrap();
/// assert_eq!(resolved, here.join("data.csv").to_str().unwrap());
/// assert_eq!(vfslock::resolve_target("s3://bucket/key").unwrap(), "s3://bucket/key");
/// assert_eq!(vfslock::resolve_target("/srv/data.csv").unwrap(), "/srv/data.csv");
/// ```
pub fn resolve_target(target: &str) -> Result<Cow<'_, str>, Error> {
    if !is_relative_path(target) {
        return Ok(Cow::Borrowed(target));
    }
    let cwd = std::env::current_dir().map_err(|e| {
        unresolvable(
            target,
            format!("the working directory cannot be read ({e})"),
        )
    })?;
    resolve_against(&cwd, target).map(Cow::Owned)
}

/// [`resolve_target`] of a target the caller owns: no copy when it stays as it is.
pub(crate) fn resolve_owned(target: String) -> Result<String, (String, Error)> {
    match resolve_target(&target) {
        Ok(Cow::Owned(absolute)) => Ok(absolute),
        Ok(Cow::Borrowed(_)) => Ok(target),
        Err(e) => Err((target, e)),
    }
}

/// Whether `target` is a local path relative to the working directory: neither absolute nor
/// a URL (`scheme:` as RFC 3986 spells a scheme, which is what the daemon takes for one).
fn is_relative_path(target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') || cfg!(windows) {
        // Windows has no local file store: its daemon refuses every path, with the reason.
        return false;
    }
    let scheme = target.split_once(':').map(|(scheme, _)| scheme);
    let looks_like_url = scheme.is_some_and(|s| {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    !looks_like_url
}

/// `target` (relative) made absolute against `cwd`, its directory part canonicalized.
fn resolve_against(cwd: &Path, target: &str) -> Result<String, Error> {
    let joined = cwd.join(target);
    // `Path::file_name` skips a trailing `.`, and is `None` after `..`: those name a
    // directory, canonicalized whole.
    let resolved = match (joined.file_name(), joined.parent()) {
        (Some(name), Some(dir)) if !ends_in_parent(&joined) => canonical(dir, target)?.join(name),
        _ => canonical(&joined, target)?,
    };
    resolved.into_os_string().into_string().map_err(|path| {
        unresolvable(
            target,
            format!("{} is not valid UTF-8", PathBuf::from(path).display()),
        )
    })
}

fn ends_in_parent(path: &Path) -> bool {
    matches!(path.components().next_back(), Some(Component::ParentDir))
}

fn canonical(dir: &Path, target: &str) -> Result<PathBuf, Error> {
    dir.canonicalize().map_err(|e| {
        unresolvable(
            target,
            format!("{} cannot be resolved ({e})", dir.display()),
        )
    })
}

fn unresolvable(target: &str, why: String) -> Error {
    Error::new(
        ErrorKind::InvalidTarget,
        format!(
            "cannot make the relative path {target:?} absolute: {why}; give an absolute path or \
             a URL"
        ),
    )
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn urls_and_absolute_paths_pass_unchanged() {
        for target in [
            "/srv/data.csv",
            "file:///srv/data.csv",
            "mem:///a",
            "s3://bucket/key",
            "sftp://host/x",
            "bogus:thing",
            "",
        ] {
            assert!(!is_relative_path(target), "{target}");
            assert_eq!(resolve_target(target).unwrap(), target);
        }
        for target in ["data.csv", "./data.csv", "../x", "dir/a:b", "1x:y", "."] {
            assert!(is_relative_path(target), "{target}");
        }
    }

    #[test]
    fn the_directory_part_is_canonicalized_and_the_name_kept() {
        let root = tempfile::tempdir().unwrap();
        let root_path = root.path().canonicalize().unwrap();
        std::fs::create_dir_all(root_path.join("real/sub")).unwrap();
        std::os::unix::fs::symlink(root_path.join("real"), root_path.join("link")).unwrap();
        std::os::unix::fs::symlink("/nowhere", root_path.join("real/dangling")).unwrap();
        let cwd = root_path.join("real/sub");
        let real = root_path.join("real");
        let cases = [
            ("data.csv", cwd.join("data.csv")),
            ("./data.csv", cwd.join("data.csv")),
            ("../data.csv", real.join("data.csv")),
            ("../../link/x.csv", real.join("x.csv")),
            // The last component is kept as written, a symbolic link too.
            ("../dangling", real.join("dangling")),
            ("..", real.clone()),
            (".", cwd.clone()),
            ("../sub/.", cwd.clone()),
        ];
        for (target, expected) in cases {
            assert_eq!(
                resolve_against(&cwd, target).unwrap(),
                expected.to_str().unwrap(),
                "{target}"
            );
        }
        let missing = resolve_against(&cwd, "nope/data.csv").unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::InvalidTarget);
        assert!(missing.message().contains("\"nope/data.csv\""), "{missing}");
        assert!(
            missing.message().contains("give an absolute path"),
            "{missing}"
        );
    }
}
