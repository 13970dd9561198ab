//! What each protocol version added, and how a frame is rewritten for an older peer.
//!
//! bincode is not self-describing: a decoder built for version 1 that meets a variant index it
//! does not know fails the whole frame, and the client then drops the connection. So a daemon
//! never sends a client anything that the client's version lacks. The rules that keep that
//! possible:
//! - a new message is a new enum variant appended at the end of its enum (variant indices are
//!   positional, so existing variants never move), and a new field goes into a new variant or a
//!   new message, never into an existing one; a new error kind is appended to [`ErrorKind`];
//! - everything a new version adds has a meaning in each older version, written here as a
//!   downgrade: [`ServerFrame::for_version`] rewrites a frame into what a client of that version
//!   understands, and the daemon applies it in the one place all its answers and events pass;
//! - a client sends only what the version it negotiated has (version 2 added nothing that a
//!   client sends; version 3 added [`Request::AcquireIn`](crate::Request::AcquireIn), version 4
//!   [`Request::AcquireBounded`](crate::Request::AcquireBounded) and
//!   [`Request::Resolve`](crate::Request::Resolve); version 5 added nothing that a client
//!   sends; version 6 added [`Request::Resume`](crate::Request::Resume); later versions added
//!   requests that older clients never send, each in the table below).
//!
//! | version | added                                                                        |
//! |---------|------------------------------------------------------------------------------|
//! | 1       | everything else                                                              |
//! | 2       | [`Event::LeaseEnded`]: a lost lease with an error kind; version 1 gets [`Event::LeaseLost`] |
//! | 3       | `Request::AcquireIn` (lock modes), `Request::Describe`, `Request::ListModes` and their answers, and [`ErrorKind::ModeConflict`]; older versions never ask for these, and would get `AlreadyHeld` for the kind |
//! | 4       | `Request::AcquireBounded` (a max-hold), `Request::Resolve` and its answer, and [`ErrorKind::MaxHoldReached`]; older versions get `LeaseLost` for the kind (the daemon's own max-hold ends their leases too) |
//! | 5       | [`Response::GrantedResumable`]: a grant with its session's secret and the resume window; older versions get [`Response::Granted`] |
//! | 6       | `Request::Resume`: take a holding back after the daemon restarted; older versions never send it |
//! | 7       | [`Event::Queued`]: a waiter's place and credentials, for `Request::Requeue` after a restart; older versions get [`Event::QueuePosition`]. `Request::Restarts` and its answer, which older versions never ask for |
//! | 8       | `Request::Metrics` and its answer (the Prometheus text), which older versions never ask for |
//! | 9       | [`Event::Waiting`]: a waiter's place and the lock's holder, again as they change; the daemon never sends it to older versions (it would be a [`Event::QueuePosition`] for them). `Request::ListQueues` and its answer, which older versions never ask for |
//! | 10      | `Request::WaitReleased` and its answer [`Response::NotHeld`]: wait for a release without taking the lock; older versions never ask for it |
//!
//! The full wire format, for clients written in other languages, is `docs/protocol.md`.

use crate::handshake::PROTOCOL_VERSION;
use crate::{ErrorKind, Event, Response, ServerFrame, WireError};

impl ServerFrame {
    /// This frame as a client speaking protocol `version` can decode it: the same frame for
    /// the current version, else everything newer replaced by its older equivalent.
    #[inline]
    pub fn for_version(self, version: u32) -> ServerFrame {
        if version >= PROTOCOL_VERSION {
            return self;
        }
        match self {
            ServerFrame::Event { id, event } => ServerFrame::Event {
                id,
                event: event.for_version(version),
            },
            ServerFrame::Response {
                id,
                result: Err(error),
            } => ServerFrame::Response {
                id,
                result: Err(error.for_version(version)),
            },
            // Answers to requests only version 3 sends; their older equivalents, should one
            // ever be asked for.
            ServerFrame::Response {
                id,
                result: Ok(Response::Described(view)),
            } if version < 3 => ServerFrame::Response {
                id,
                result: Ok(Response::Metadata(view.map(|v| v.lock))),
            },
            ServerFrame::Response {
                id,
                result: Ok(Response::ListedModes(listed)),
            } if version < 3 => ServerFrame::Response {
                id,
                result: Ok(Response::List(
                    listed.into_iter().map(|l| l.entry).collect(),
                )),
            },
            // No older request has this answer; should it ever be asked for, the older
            // client gets an error it can decode instead of a frame it cannot.
            ServerFrame::Response {
                id,
                result: Ok(Response::Resolved(_)),
            } if version < 4 => ServerFrame::Response {
                id,
                result: Err(WireError::new(
                    ErrorKind::Protocol,
                    "resolving targets needs protocol version 4",
                )),
            },
            // A grant that can be resumed is, to an older client, a grant.
            ServerFrame::Response {
                id,
                result: Ok(Response::GrantedResumable { grant, .. }),
            } if version < 5 => ServerFrame::Response {
                id,
                result: Ok(Response::Granted(grant)),
            },
            ServerFrame::Response {
                id,
                result: Ok(Response::Restarts(_)),
            } if version < 7 => ServerFrame::Response {
                id,
                result: Err(WireError::new(
                    ErrorKind::Protocol,
                    "restart figures need protocol version 7",
                )),
            },
            ServerFrame::Response {
                id,
                result: Ok(Response::ListedQueues(listed)),
            } if version < 9 => ServerFrame::Response {
                id,
                result: Ok(Response::ListedModes(
                    listed.into_iter().map(|l| l.listed).collect(),
                )),
            }
            .for_version(version),
            ServerFrame::Response {
                id,
                result: Ok(Response::NotHeld),
            } if version < 10 => ServerFrame::Response {
                id,
                result: Err(WireError::new(
                    ErrorKind::Protocol,
                    "waiting for a release needs protocol version 10",
                )),
            },
            ServerFrame::Response {
                id,
                result: Ok(Response::Metrics(_)),
            } if version < 8 => ServerFrame::Response {
                id,
                result: Err(WireError::new(
                    ErrorKind::Protocol,
                    "metrics need protocol version 8",
                )),
            },
            response @ ServerFrame::Response { .. } => response,
        }
    }

    /// The oldest protocol version that can decode this frame.
    pub fn since_version(&self) -> u32 {
        match self {
            ServerFrame::Event { event, .. } => event.since_version(),
            ServerFrame::Response {
                result: Err(error), ..
            } => error.kind.since_version(),
            ServerFrame::Response {
                result: Ok(Response::Described(_) | Response::ListedModes(_)),
                ..
            } => 3,
            ServerFrame::Response {
                result: Ok(Response::Resolved(results)),
                ..
            } => results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .map(|e| e.kind.since_version())
                .fold(4, u32::max),
            ServerFrame::Response {
                result: Ok(Response::GrantedResumable { .. }),
                ..
            } => 5,
            ServerFrame::Response {
                result: Ok(Response::Restarts(_)),
                ..
            } => 7,
            ServerFrame::Response {
                result: Ok(Response::Metrics(_)),
                ..
            } => 8,
            ServerFrame::Response {
                result: Ok(Response::ListedQueues(_)),
                ..
            } => 9,
            ServerFrame::Response {
                result: Ok(Response::NotHeld),
                ..
            } => 10,
            ServerFrame::Response { .. } => 1,
        }
    }
}

impl WireError {
    /// This error as protocol `version` has it: a kind the version lacks becomes its nearest
    /// older one.
    pub fn for_version(mut self, version: u32) -> WireError {
        self.kind = self.kind.for_version(version);
        self
    }
}

impl ErrorKind {
    /// This kind as protocol `version` has it.
    pub fn for_version(self, version: u32) -> ErrorKind {
        match self {
            ErrorKind::ModeConflict if version < 3 => ErrorKind::AlreadyHeld,
            ErrorKind::MaxHoldReached if version < 4 => ErrorKind::LeaseLost,
            kind => kind,
        }
    }

    /// The oldest protocol version that has this kind.
    pub fn since_version(self) -> u32 {
        match self {
            ErrorKind::ModeConflict => 3,
            ErrorKind::MaxHoldReached => 4,
            _ => 1,
        }
    }
}

impl Event {
    /// This event as protocol `version` has it.
    pub fn for_version(self, version: u32) -> Event {
        match self {
            Event::LeaseEnded { reason, .. } if version < 2 => Event::LeaseLost { reason },
            Event::LeaseEnded { kind, reason } => Event::LeaseEnded {
                kind: kind.for_version(version),
                reason,
            },
            Event::Queued { position, .. } if version < 7 => Event::QueuePosition { position },
            Event::Waiting { position, .. } if version < 9 => Event::QueuePosition { position },
            event => event,
        }
    }

    /// The oldest protocol version that has this event.
    pub fn since_version(&self) -> u32 {
        match self {
            Event::QueuePosition { .. }
            | Event::StaleQuestion { .. }
            | Event::LeaseRenewed { .. }
            | Event::LeaseLost { .. }
            | Event::Releasing { .. } => 1,
            Event::LeaseEnded { kind, .. } => kind.since_version().max(2),
            Event::Queued { .. } => 7,
            Event::Waiting { .. } => 9,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::handshake::OLDEST_PROTOCOL_VERSION;
    use crate::{ErrorKind, Response, WireError};

    fn lease_ended(kind: ErrorKind) -> ServerFrame {
        ServerFrame::Event {
            id: 5,
            event: Event::LeaseEnded {
                kind,
                reason: "the lock was broken by uid 0: stuck".into(),
            },
        }
    }

    #[test]
    fn a_version_1_client_hears_a_lease_ended_as_a_lease_lost() {
        for kind in [ErrorKind::LeaseLost, ErrorKind::Internal] {
            assert_eq!(
                lease_ended(kind).for_version(1),
                ServerFrame::Event {
                    id: 5,
                    event: Event::LeaseLost {
                        reason: "the lock was broken by uid 0: stuck".into()
                    }
                }
            );
        }
    }

    #[test]
    fn an_older_client_hears_a_mode_conflict_as_already_held() {
        let frame = ServerFrame::Response {
            id: 3,
            result: Err(WireError::new(
                ErrorKind::ModeConflict,
                "shared against slots",
            )),
        };
        assert_eq!(frame.since_version(), 3);
        for version in [1, 2] {
            let old = frame.clone().for_version(version);
            assert_eq!(old.since_version(), 1);
            let ServerFrame::Response {
                result: Err(error), ..
            } = old
            else {
                panic!("not an error: {old:?}");
            };
            assert_eq!(error.kind, ErrorKind::AlreadyHeld);
            assert_eq!(error.message, "shared against slots");
        }
        assert_eq!(frame.clone().for_version(3), frame);
    }

    #[test]
    fn an_older_client_hears_a_max_hold_as_a_lost_lease() {
        let frame = lease_ended(ErrorKind::MaxHoldReached);
        assert_eq!(frame.since_version(), 4);
        for version in [2, 3] {
            let ServerFrame::Event {
                event: Event::LeaseEnded { kind, reason },
                ..
            } = frame.clone().for_version(version)
            else {
                panic!("not a lease ended");
            };
            assert_eq!(kind, ErrorKind::LeaseLost);
            assert_eq!(reason, "the lock was broken by uid 0: stuck");
        }
        assert!(matches!(
            frame.clone().for_version(1),
            ServerFrame::Event {
                event: Event::LeaseLost { .. },
                ..
            }
        ));
        assert_eq!(frame.clone().for_version(4), frame);
    }

    #[test]
    fn a_current_client_gets_the_frame_unchanged() {
        let frame = lease_ended(ErrorKind::Internal);
        assert_eq!(frame.clone().for_version(PROTOCOL_VERSION), frame);
        // A client newer than this crate (it asked for our version, so cannot be) is not a
        // reason to rewrite.
        assert_eq!(frame.clone().for_version(PROTOCOL_VERSION + 1), frame);
    }

    #[test]
    fn what_version_1_has_passes_unchanged_to_version_1() {
        let frames = [
            ServerFrame::Event {
                id: 1,
                event: Event::QueuePosition { position: 3 },
            },
            ServerFrame::Event {
                id: 1,
                event: Event::LeaseRenewed {
                    valid_for: Duration::from_secs(20),
                    valid_until_monotonic_ns: Some(9),
                },
            },
            ServerFrame::Event {
                id: 1,
                event: Event::LeaseLost {
                    reason: "stolen".into(),
                },
            },
            ServerFrame::Event {
                id: 1,
                event: Event::Releasing {
                    reason: "shutdown".into(),
                },
            },
            ServerFrame::Response {
                id: 2,
                result: Ok(Response::Pong),
            },
            ServerFrame::Response {
                id: 2,
                result: Err(WireError::new(ErrorKind::Internal, "bug")),
            },
        ];
        for frame in frames {
            assert_eq!(frame.since_version(), 1, "{frame:?}");
            assert_eq!(frame.clone().for_version(1), frame);
        }
    }

    #[test]
    fn every_downgrade_fits_the_version_it_is_for() {
        for kind in [
            ErrorKind::LeaseLost,
            ErrorKind::Internal,
            ErrorKind::MaxHoldReached,
        ] {
            let frame = lease_ended(kind);
            assert_eq!(frame.since_version(), kind.since_version().max(2));
            for version in OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION {
                let down = frame.clone().for_version(version);
                assert!(
                    down.since_version() <= version,
                    "{down:?} sent to a version {version} client"
                );
            }
        }
    }
}
