//! Who may lock what.
//!
//! Two checks stand between an acquire and a target's actor. Both judge the caller by what the
//! kernel says of the socket's peer (uid, effective and supplementary groups), never by
//! anything the client sends:
//!
//! - **Rules** (`[[access]]` in the config): which users and groups may lock under a prefix.
//!   The longest matching prefix decides; a target that no rule covers is open to everyone who
//!   can reach the socket (its file mode already chose them).
//! - **`file://` confinement**: a daemon running as root must not become a way to create files
//!   where its caller could not. The target's directory is resolved once, here, following its
//!   symlinks ([`resolve_file`]); the real directory is what gets judged and what the file
//!   store then works in, without following any symlink again (`store::fs`). So a symlinked
//!   directory can neither lead a lock file outside what is allowed, nor be swapped for one
//!   between the check and the write.
//!
//! Root and members of the admin group pass every rule (they may break any lock anyway), but
//! not the roots, which bound where this daemon creates files at all.

use std::path::{Path, PathBuf};

use crate::address::{Address, Prefix};
use crate::config::{NameOrId, Settings};
pub use crate::link::Caller;

/// A refused request: what was refused and why, for the client and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// Why the access checks could not be built from the config: a configuration error (the
/// daemon exits 78), since guessing would widen or narrow access in a way nobody asked for.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// An `[[access]]` rule names a user the system does not know.
    #[error("[[access]] prefix = {prefix:?}: no user named {name}")]
    UnknownUser {
        /// The rule's prefix.
        prefix: String,
        /// The name.
        name: NameOrId,
    },
    /// An `[[access]]` rule names a group the system does not know.
    #[error("[[access]] prefix = {prefix:?}: no group named {name}")]
    UnknownGroup {
        /// The rule's prefix.
        prefix: String,
        /// The name.
        name: NameOrId,
    },
    /// A `[stores.file] roots` directory that cannot be resolved.
    #[error(
        "[stores.file] roots: cannot resolve {} (create it or remove it from the config)",
        path.display()
    )]
    Root {
        /// The root, as configured.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the caller wants to do in a `file://` target's directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Take a lock: a lock file (and its fence) will be created there.
    Create,
    /// Read a lock file: the caller must be able to reach the directory.
    Search,
}

/// The checks of this daemon, built once at startup.
#[derive(Debug, Default)]
pub struct Access {
    /// Longest prefix first.
    rules: Vec<Rule>,
    /// Canonical paths, longest first; empty: no narrowing.
    roots: Vec<Root>,
}

#[derive(Debug)]
struct Rule {
    prefix: String,
    parsed: Prefix,
    users: Vec<u32>,
    groups: Vec<u32>,
}

#[derive(Debug)]
struct Root {
    path: PathBuf,
    caller_must_write: bool,
}

impl Access {
    /// Resolves the rules' user and group names and the roots' real paths. A name that does
    /// not exist or a root that cannot be resolved stops the daemon: silently dropping either
    /// would widen or narrow access in a way nobody asked for.
    pub fn new(settings: &Settings) -> Result<Access, AccessError> {
        let mut rules = Vec::new();
        for rule in &settings.access {
            let mut users = Vec::new();
            for user in &rule.users {
                users.push(
                    id_of(user, user_id).ok_or_else(|| AccessError::UnknownUser {
                        prefix: rule.prefix.clone(),
                        name: user.clone(),
                    })?,
                );
            }
            let mut groups = Vec::new();
            for group in &rule.groups {
                groups.push(
                    id_of(group, group_id).ok_or_else(|| AccessError::UnknownGroup {
                        prefix: rule.prefix.clone(),
                        name: group.clone(),
                    })?,
                );
            }
            rules.push(Rule {
                prefix: rule.prefix.clone(),
                parsed: rule.parsed.clone(),
                users,
                groups,
            });
        }
        rules.sort_by_key(|rule| std::cmp::Reverse(rule.parsed.2.len()));
        let mut roots = Vec::new();
        for root in &settings.stores.file.roots {
            let path = std::fs::canonicalize(&root.path).map_err(|source| AccessError::Root {
                path: root.path.clone(),
                source,
            })?;
            roots.push(Root {
                path,
                caller_must_write: root.caller_must_write,
            });
        }
        roots.sort_by_key(|root| std::cmp::Reverse(root.path.as_os_str().len()));
        Ok(Access { rules, roots })
    }

    /// Whether `caller` may lock `address` by the `[[access]]` rules. For `file://` targets,
    /// pass the address [`resolve_file`] returned.
    pub fn check_rules(&self, caller: &Caller, address: &Address) -> Result<(), Denied> {
        if caller.admin {
            return Ok(());
        }
        let Some(rule) = self.rules.iter().find(|rule| rule_covers(rule, address)) else {
            return Ok(());
        };
        let by_user = caller.uid.is_some_and(|uid| rule.users.contains(&uid));
        let by_group = caller.groups.iter().any(|g| rule.groups.contains(g));
        if by_user || by_group {
            return Ok(());
        }
        Err(Denied(format!(
            "{} may not lock {}: the daemon's [[access]] rule for {} allows {}; ask the \
             daemon's administrator to add you",
            caller.describe(),
            address.url(),
            rule.prefix,
            rule.allowed()
        )))
    }

    /// Whether `caller` may do `need` in the directory of the `file://` target `resolved`
    /// (as [`resolve_file`] returned it, so that its directory is real).
    pub fn check_file(
        &self,
        caller: &Caller,
        resolved: &Address,
        need: Need,
    ) -> Result<(), Denied> {
        let dir = Path::new(resolved.path())
            .parent()
            .unwrap_or(Path::new("/"));
        let mut caller_must_write = true;
        if !self.roots.is_empty() {
            let Some(root) = self.roots.iter().find(|root| dir.starts_with(&root.path)) else {
                return Err(Denied(format!(
                    "{} is outside the directories this daemon locks files in ({}): see \
                     [stores.file] roots in its config",
                    resolved.url(),
                    self.roots
                        .iter()
                        .map(|r| r.path.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            caller_must_write = root.caller_must_write;
        }
        if !caller_must_write && need == Need::Create {
            return Ok(());
        }
        judge_directory(caller, dir, need).map_err(|why| {
            Denied(format!(
                "{} may not lock {}: {why}; vfslockd creates lock files only where their \
                 caller could create files itself",
                caller.describe(),
                resolved.url()
            ))
        })
    }
}

impl Rule {
    fn allowed(&self) -> String {
        let mut who: Vec<String> = self.users.iter().map(|u| format!("uid {u}")).collect();
        who.extend(self.groups.iter().map(|g| format!("gid {g}")));
        if who.is_empty() {
            "only root and admins".into()
        } else {
            who.join(", ")
        }
    }
}

fn rule_covers(rule: &Rule, address: &Address) -> bool {
    address.has_prefix(&rule.parsed)
}

fn id_of(name: &NameOrId, lookup: fn(&str) -> Option<u32>) -> Option<u32> {
    match name {
        NameOrId::Id(id) => Some(*id),
        NameOrId::Name(name) => lookup(name),
    }
}

/// A user's uid by name (or a number given as text).
pub fn user_id(name: &str) -> Option<u32> {
    if let Ok(uid) = name.parse() {
        return Some(uid);
    }
    #[cfg(unix)]
    {
        let name = std::ffi::CString::new(name).ok()?;
        // SAFETY: a valid C string; getpwnam's static result is read at once, and this runs
        // once at startup, before any other thread looks up users.
        let user = unsafe { libc::getpwnam(name.as_ptr()) };
        if user.is_null() {
            return None;
        }
        // SAFETY: non-null result of getpwnam.
        Some(unsafe { (*user).pw_uid })
    }
    #[cfg(not(unix))]
    None
}

/// Runs filesystem checks for a `file://` target in `dir` where a hung mount cannot stall the
/// runtime (see `store::fs`, "Where the calls run").
pub async fn off_runtime<T: Send + 'static>(
    dir: &Path,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    #[cfg(unix)]
    {
        crate::store::fs::run_in(dir, work).await
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        tokio::task::spawn_blocking(work)
            .await
            .expect("a filesystem check does not panic")
    }
}

/// The `file://` target with its directory's symlinks followed: the real directory, and the
/// target's own name in it (not followed: the lock file is `<name>.lock` beside it, created
/// without following a symlink at its own path). Blocking: it reads the filesystem.
pub fn resolve_file(address: &Address) -> Result<Address, String> {
    let path = Path::new(address.path());
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("{} names no file", address.url()));
    };
    // Most directories have no link on their path: one call tells, and the path is then real
    // already (targets hold no `.`, `..` or empty segments).
    #[cfg(unix)]
    if crate::store::fs::reached_without_links(dir) {
        return Ok(address.clone());
    }
    let real = std::fs::canonicalize(dir).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            ": the directory must exist"
        } else {
            ""
        };
        format!(
            "cannot resolve the directory {} of {}: {e}{hint}",
            dir.display(),
            address.url()
        )
    })?;
    if real == dir {
        return Ok(address.clone());
    }
    let joined = real.join(name);
    let text = joined.to_str().ok_or_else(|| {
        format!(
            "the directory of {} resolves to {}, which is not UTF-8",
            address.url(),
            real.display()
        )
    })?;
    Address::parse(text).map_err(|e| e.to_string())
}

/// Whether the caller could itself reach `dir` (search permission on it and every directory
/// above it) and, for [`Need::Create`], create files in it (write and search), by the mode bits
/// of each directory against the caller's uid and groups. ACLs and capabilities other than
/// root's are not consulted: this can refuse more than the kernel would, never less.
#[cfg(unix)]
fn judge_directory(caller: &Caller, dir: &Path, need: Need) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let Some(uid) = caller.uid else {
        return Err("its uid is unknown".into());
    };
    if uid == 0 {
        return Ok(());
    }
    let mut here = PathBuf::from("/");
    let mut components: Vec<_> = dir.components().skip(1).collect();
    components.insert(0, std::path::Component::RootDir);
    let last = components.len() - 1;
    for (i, component) in components.into_iter().enumerate() {
        if i > 0 {
            here.push(component);
        }
        let meta = std::fs::symlink_metadata(&here)
            .map_err(|e| format!("cannot inspect {}: {e}", here.display()))?;
        if meta.file_type().is_symlink() || !meta.is_dir() {
            return Err(format!(
                "{} changed into something other than a directory while it was checked",
                here.display()
            ));
        }
        let mode = meta.mode();
        let bits = if meta.uid() == uid {
            (mode >> 6) & 0o7
        } else if caller.groups.contains(&meta.gid()) {
            (mode >> 3) & 0o7
        } else {
            mode & 0o7
        };
        let (want, what) = if i == last && need == Need::Create {
            (0o3, "create files in")
        } else {
            (0o1, "enter")
        };
        if bits & want != want {
            return Err(format!("it cannot {what} {}", here.display()));
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn judge_directory(_caller: &Caller, _dir: &Path, _need: Need) -> Result<(), String> {
    Err("file:// targets are served on Unix only".into())
}

/// The id of the group named `name` (or given as a number), if it exists.
pub fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse() {
        return Some(gid);
    }
    #[cfg(unix)]
    {
        let name = std::ffi::CString::new(name).ok()?;
        // SAFETY: a valid C string; getgrnam's static result is read at once, and this runs
        // once at startup, before any other thread looks up groups.
        let group = unsafe { libc::getgrnam(name.as_ptr()) };
        if group.is_null() {
            return None;
        }
        // SAFETY: non-null result of getgrnam.
        Some(unsafe { (*group).gr_gid })
    }
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> Settings {
        Settings::from_toml(Some((extra, "test"))).expect("valid config")
    }

    fn caller(uid: u32, groups: &[u32]) -> Caller {
        Caller {
            uid: Some(uid),
            groups: groups.to_vec(),
            admin: uid == 0,
            ..Caller::default()
        }
    }

    fn address(text: &str) -> Address {
        Address::parse(text).expect("valid target")
    }

    const RULES: &str = r#"
        [[access]]
        prefix = "mem://team-a/"
        users = [1001]
        groups = [2000]

        [[access]]
        prefix = "mem://team-a/secret/"
        users = [1002]

        [[access]]
        prefix = "s3://locks/"
    "#;

    #[test]
    fn the_longest_matching_rule_decides() {
        let access = Access::new(&settings(RULES)).unwrap();
        let a = address("mem://team-a/x");
        let secret = address("mem://team-a/secret/x");
        assert!(access.check_rules(&caller(1001, &[]), &a).is_ok());
        assert!(access.check_rules(&caller(1500, &[2000]), &a).is_ok());
        let refused = access.check_rules(&caller(1500, &[1500]), &a).unwrap_err();
        assert!(
            refused.0.contains("uid 1500 may not lock mem://team-a/x"),
            "{refused}"
        );
        assert!(refused.0.contains("uid 1001, gid 2000"), "{refused}");
        // The narrower rule replaces the wider one: 1001 is not on it.
        assert!(access.check_rules(&caller(1001, &[]), &secret).is_err());
        assert!(access.check_rules(&caller(1002, &[]), &secret).is_ok());
    }

    #[test]
    fn uncovered_targets_are_open_and_admins_pass_every_rule() {
        let access = Access::new(&settings(RULES)).unwrap();
        assert!(access
            .check_rules(&caller(1500, &[]), &address("mem://team-b/x"))
            .is_ok());
        let s3 = address("s3://locks/x");
        let refused = access.check_rules(&caller(1001, &[]), &s3).unwrap_err();
        assert!(refused.0.contains("only root and admins"), "{refused}");
        assert!(access.check_rules(&caller(0, &[]), &s3).is_ok());
        let admin = Caller {
            admin: true,
            ..caller(1500, &[])
        };
        assert!(access.check_rules(&admin, &s3).is_ok());
    }

    #[test]
    fn names_resolve_and_unknown_names_stop_the_daemon() {
        let access = Access::new(&settings(
            "[[access]]\nprefix = \"mem://\"\nusers = [\"root\"]\ngroups = [\"root\"]\n",
        ))
        .unwrap();
        assert_eq!(access.rules[0].users, [0]);
        assert_eq!(access.rules[0].groups, [0]);
        let error = Access::new(&settings(
            "[[access]]\nprefix = \"mem://\"\nusers = [\"no-such-user-of-vfslock\"]\n",
        ))
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("no user named no-such-user-of-vfslock"),
            "{error}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_caller_may_lock_only_where_it_could_create_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        let closed = dir.path().join("closed");
        std::fs::create_dir(&open).unwrap();
        std::fs::create_dir(&closed).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let access = Access::default();
        let nobody = caller(65534, &[65534]);
        let target = |d: &Path| resolve_file(&address(d.join("x").to_str().unwrap())).unwrap();
        assert!(access
            .check_file(&nobody, &target(&open), Need::Create)
            .is_ok());
        let refused = access
            .check_file(&nobody, &target(&closed), Need::Create)
            .unwrap_err();
        assert!(refused.0.contains("cannot create files in"), "{refused}");
        // Reading a lock file needs only the way in.
        assert!(access
            .check_file(&nobody, &target(&closed), Need::Search)
            .is_ok());
        // Root may; so may the directory's owner and group, by their bits.
        assert!(access
            .check_file(&caller(0, &[]), &target(&closed), Need::Create)
            .is_ok());
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o070)).unwrap();
        let meta = std::fs::metadata(&closed).unwrap();
        use std::os::unix::fs::MetadataExt;
        let member = caller(65534, &[meta.gid()]);
        assert!(access
            .check_file(&member, &target(&closed), Need::Create)
            .is_ok());
        assert!(access
            .check_file(&nobody, &target(&closed), Need::Search)
            .is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_directory_is_judged_where_it_leads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mine = dir.path().join("mine");
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&mine).unwrap();
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A link in a directory the caller may write, leading to one it may not.
        std::os::unix::fs::symlink(&theirs, mine.join("link")).unwrap();
        let via_link = address(mine.join("link/x").to_str().unwrap());
        let resolved = resolve_file(&via_link).unwrap();
        let real = std::fs::canonicalize(&theirs).unwrap().join("x");
        assert_eq!(resolved.path(), real.to_str().unwrap());
        let nobody = caller(65534, &[65534]);
        assert!(Access::default()
            .check_file(&nobody, &resolved, Need::Create)
            .is_err());
    }

    #[cfg(unix)]
    #[test]
    fn roots_narrow_and_widen() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (narrow, wide, outside) = (
            dir.path().join("narrow"),
            dir.path().join("wide"),
            dir.path().join("outside"),
        );
        for d in [&narrow, &wide, &outside] {
            std::fs::create_dir(d).unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(&narrow, std::fs::Permissions::from_mode(0o777)).unwrap();
        let config = format!(
            "[stores.file]\nroots = [{:?}, {{ path = {:?}, caller-must-write = false }}]\n",
            narrow.display().to_string(),
            wide.display().to_string()
        );
        let access = Access::new(&settings(&config)).unwrap();
        let nobody = caller(65534, &[65534]);
        let target = |d: &Path| resolve_file(&address(d.join("x").to_str().unwrap())).unwrap();
        assert!(access
            .check_file(&nobody, &target(&narrow), Need::Create)
            .is_ok());
        // Widened: the caller could not create a file in `wide`, the daemon may for it.
        assert!(access
            .check_file(&nobody, &target(&wide), Need::Create)
            .is_ok());
        // Outside every root: refused even to root.
        let refused = access
            .check_file(&caller(0, &[]), &target(&outside), Need::Create)
            .unwrap_err();
        assert!(refused.0.contains("outside the directories"), "{refused}");
        let missing = Access::new(&settings(
            "[stores.file]\nroots = [\"/no/such/vfslock/root\"]\n",
        ))
        .unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("cannot resolve /no/such/vfslock/root"),
            "{missing}"
        );
    }
}
