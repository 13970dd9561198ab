//! A session's resume credentials: what lets a client prove, after the daemon restarted, that
//! the holdings it names were its own.
//!
//! Each connection that speaks protocol 5 or later gets a session name and a secret of 256
//! random bits when it connects, told to the client with every grant
//! ([`vfslock_proto::Response::GrantedResumable`]). The daemon keeps the secret only in memory,
//! for the grants; what outlives the process (the crash journal) is its SHA-256, with the
//! caller's uid. A resume is honoured only when the secret hashes to the journaled hash and the
//! kernel reports the same uid, so neither another user nor a process of the same user that
//! never saw the secret can take a holding over. The secret is never logged: this type's
//! `Debug` hides it.

use std::time::Duration;

use sha2::{Digest, Sha256};
use vfslock_proto::{Resumable, Secret};

/// Who may resume a holding kept across a restart, as the crash journal keeps it: the session
/// that held it, proven by its secret (of which only the hash is kept) and the kernel's word on
/// the caller's uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The session's name.
    pub session: String,
    /// SHA-256 of the session's secret, in hex.
    pub secret_sha256: String,
    /// The holder's uid, where the platform tells it.
    pub uid: Option<u32>,
}

/// The credentials of one session.
pub struct SessionSecret {
    /// The session's name: unique across daemon runs (the run's instance id and the
    /// connection's number).
    pub session: String,
    /// 64 hex digits; sent to the client in grants, never written anywhere.
    secret: String,
    /// SHA-256 of the secret, in hex: what the journal keeps.
    pub hash: String,
}

impl std::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSecret")
            .field("session", &self.session)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl SessionSecret {
    /// Fresh credentials for connection `id` of the daemon run `instance_id`.
    pub fn issue(instance_id: &str, id: u64) -> SessionSecret {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        let secret = hex(&bytes);
        let hash = hash_of(&secret);
        SessionSecret {
            session: format!("{instance_id}-{id}"),
            secret,
            hash,
        }
    }

    /// What a grant tells the client: this session, its secret and the resume window.
    pub fn ticket(&self, window: Duration) -> Resumable {
        Resumable {
            session: self.session.clone(),
            secret: Secret(self.secret.clone()),
            window,
        }
    }
}

/// Whether a caller of `uid` that names the session `claimed` and knows `secret` is `owner`;
/// if not, why (for the log, not for the caller).
pub fn admits(
    owner: &Owner,
    claimed: &str,
    secret: &Secret,
    uid: Option<u32>,
) -> Result<(), &'static str> {
    if claimed != owner.session {
        return Err("another session's holding");
    }
    if !proves(&secret.0, &owner.secret_sha256) {
        return Err("a wrong secret");
    }
    if uid != owner.uid {
        return Err("another uid");
    }
    Ok(())
}

/// Whether `session`, naming the session `claimed` and knowing `secret`, is `owner` (see
/// [`admits`]); a refusal is logged, without the secret, as `what` on `target` refused.
pub fn admits_session(
    owner: &Owner,
    claimed: &str,
    secret: &Secret,
    session: &super::SessionLink,
    (target, what): (&str, &str),
) -> bool {
    let caller = &session.caller;
    match admits(owner, claimed, secret, caller.uid) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!(%target, uid = ?caller.uid, pid = caller.pid, %why, "{what} refused");
            false
        }
    }
}

/// Whether `secret` is the one whose hash is `hash`. Compares every byte whatever the first
/// difference, so that the time taken tells nothing about the hash.
pub fn proves(secret: &str, hash: &str) -> bool {
    let computed = hash_of(secret);
    computed.len() == hash.len()
        && computed
            .bytes()
            .zip(hash.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

fn hash_of(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(HEX[usize::from(b >> 4)]));
        text.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_issued_secret_proves_the_session_and_the_hash_is_not_the_secret() {
        let issued = SessionSecret::issue("run", 7);
        assert_eq!(issued.session, "run-7");
        let ticket = issued.ticket(Duration::from_secs(10));
        let secret = &ticket.secret.0;
        assert_eq!(secret.len(), 64);
        assert_ne!(*secret, issued.hash);
        assert!(proves(secret, &issued.hash));
        let other = SessionSecret::issue("run", 7);
        assert_ne!(other.ticket(Duration::ZERO).secret, ticket.secret);
        assert!(!proves(
            &other.ticket(Duration::ZERO).secret.0,
            &issued.hash
        ));
        assert!(!proves("", &issued.hash));
        // Neither the credentials nor the ticket print the secret.
        assert!(!format!("{issued:?}").contains(secret.as_str()));
        assert!(!format!("{ticket:?}").contains(secret.as_str()));
        // SHA-256 as everyone computes it.
        assert_eq!(
            hash_of("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_resume_is_admitted_only_for_the_same_session_secret_and_uid() {
        let issued = SessionSecret::issue("run", 3);
        let secret = issued.ticket(Duration::ZERO).secret;
        let owner = Owner {
            session: issued.session.clone(),
            secret_sha256: issued.hash.clone(),
            uid: Some(1000),
        };
        assert_eq!(admits(&owner, "run-3", &secret, Some(1000)), Ok(()));
        assert_eq!(
            admits(&owner, "run-4", &secret, Some(1000)),
            Err("another session's holding")
        );
        let wrong = SessionSecret::issue("run", 3).ticket(Duration::ZERO).secret;
        assert_eq!(
            admits(&owner, "run-3", &wrong, Some(1000)),
            Err("a wrong secret")
        );
        assert_eq!(
            admits(&owner, "run-3", &secret, Some(1001)),
            Err("another uid")
        );
        assert_eq!(admits(&owner, "run-3", &secret, None), Err("another uid"));
    }
}
