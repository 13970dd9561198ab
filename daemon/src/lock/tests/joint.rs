//! Shared locks and semaphores on one daemon, with real actors on `mem://`: the table of how
//! requests meet holders, first come first served across modes, the last one out, renewal, and
//! a planted entry of another host's.

use std::time::Duration;

use vfslock_proto::{ErrorKind, Event, LockMode, Response, WaitMode};

use crate::lock::tests::{answer, event, granted, released, request, some_entry, Daemon, Frames};
use crate::lockfile::joint::{Joint, JointMode};

const TARGET: &str = "mem:///joint";

fn wait() -> WaitMode {
    WaitMode::Wait { timeout: None }
}

/// The joint holder list now in the store.
async fn holders(daemon: &Daemon) -> Option<Joint> {
    let observed = daemon.lock_file(TARGET).await?;
    Some(Joint::parse(&observed.bytes).expect("a joint lock file"))
}

async fn refused(frames: &mut Frames) -> vfslock_proto::WireError {
    match answer(frames).await {
        Err(error) => error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn shared_holders_join_one_entry_and_the_last_one_out_deletes_the_file() {
    let daemon = Daemon::start().await;
    let (a, mut a_frames) = daemon.session(1, 0);
    let (b, mut b_frames) = daemon.session(2, 0);
    daemon
        .acquire_in(&a, 1, request(TARGET, WaitMode::Try), LockMode::Shared)
        .await;
    let first = granted(&mut a_frames).await;
    let written = daemon.lock_file(TARGET).await.unwrap();
    daemon
        .acquire_in(&b, 1, request(TARGET, WaitMode::Try), LockMode::Shared)
        .await;
    let second = granted(&mut b_frames).await;
    assert_ne!(first.lock_id, second.lock_id, "each holding has its own id");
    assert_eq!(
        first.token, second.token,
        "local holders share the entry's token"
    );
    assert!(first.token.is_some());
    let file = daemon.lock_file(TARGET).await.unwrap();
    assert_eq!(file, written, "a local shared join writes nothing");
    assert_eq!(holders(&daemon).await.unwrap().holders.len(), 1);

    daemon.release(&a, 2, TARGET, &first.lock_id).await;
    released(&mut a_frames).await;
    assert!(daemon.lock_file(TARGET).await.is_some(), "b still holds");
    daemon.release(&b, 2, TARGET, &second.lock_id).await;
    released(&mut b_frames).await;
    assert!(
        daemon.lock_file(TARGET).await.is_none(),
        "the last one out deletes the file"
    );
}

#[tokio::test]
async fn an_exclusive_request_waits_for_shared_holders_and_later_shared_ones_wait_behind_it() {
    let daemon = Daemon::start().await;
    let (reader, mut reader_frames) = daemon.session(1, 0);
    let (writer, mut writer_frames) = daemon.session(2, 0);
    let (late, mut late_frames) = daemon.session(3, 0);
    daemon
        .acquire_in(&reader, 1, request(TARGET, WaitMode::Try), LockMode::Shared)
        .await;
    let read = granted(&mut reader_frames).await;
    // A try is refused, naming the holder; a wait queues.
    daemon.acquire(&writer, 1, TARGET, WaitMode::Try).await;
    assert_eq!(
        refused(&mut writer_frames).await.kind,
        ErrorKind::AlreadyHeld
    );
    daemon.acquire(&writer, 2, TARGET, wait()).await;
    assert!(matches!(
        event(&mut writer_frames).await,
        Event::QueuePosition { position: 1 }
    ));
    // A shared request behind the waiting writer waits behind it (no starvation).
    daemon
        .acquire_in(&late, 1, request(TARGET, wait()), LockMode::Shared)
        .await;
    assert!(matches!(
        event(&mut late_frames).await,
        Event::QueuePosition { position: 2 }
    ));
    daemon.release(&reader, 2, TARGET, &read.lock_id).await;
    released(&mut reader_frames).await;
    let write = granted(&mut writer_frames).await;
    assert!(
        write.token > read.token,
        "an exclusive token exceeds every earlier one"
    );
    assert!(
        holders_or_none(&daemon).await.is_none(),
        "an exclusive file now"
    );
    daemon.release(&writer, 3, TARGET, &write.lock_id).await;
    released(&mut writer_frames).await;
    let late_grant = granted(&mut late_frames).await;
    assert!(late_grant.token > write.token);
}

async fn holders_or_none(daemon: &Daemon) -> Option<Joint> {
    let observed = daemon.lock_file(TARGET).await?;
    Joint::parse(&observed.bytes)
}

#[tokio::test]
async fn consecutive_shared_waiters_at_the_head_are_granted_together() {
    let daemon = Daemon::start().await;
    let (writer, mut writer_frames) = daemon.session(1, 0);
    daemon.acquire(&writer, 1, TARGET, WaitMode::Try).await;
    let write = granted(&mut writer_frames).await;
    let mut readers = Vec::new();
    for id in 2..5 {
        let (reader, mut frames) = daemon.session(id, 0);
        daemon
            .acquire_in(&reader, 1, request(TARGET, wait()), LockMode::Shared)
            .await;
        assert!(matches!(
            event(&mut frames).await,
            Event::QueuePosition { .. }
        ));
        readers.push((reader, frames));
    }
    daemon.release(&writer, 2, TARGET, &write.lock_id).await;
    released(&mut writer_frames).await;
    for (_, frames) in &mut readers {
        granted(frames).await;
    }
    assert_eq!(holders(&daemon).await.unwrap().holders.len(), 1);
}

#[tokio::test]
async fn a_semaphore_admits_n_holders_and_the_next_waits_for_a_free_slot() {
    let daemon = Daemon::start().await;
    let mut holders_frames = Vec::new();
    for id in 1..=2 {
        let (session, mut frames) = daemon.session(id, 0);
        daemon
            .acquire_in(
                &session,
                1,
                request(TARGET, WaitMode::Try),
                LockMode::Slots(2),
            )
            .await;
        let grant = granted(&mut frames).await;
        holders_frames.push((session, frames, grant));
    }
    let file = holders(&daemon).await.unwrap();
    assert_eq!(file.mode, JointMode::Slots(2));
    assert_eq!(file.taken(), 2, "the entry counts its slots");
    let (third, mut third_frames) = daemon.session(3, 0);
    daemon
        .acquire_in(
            &third,
            1,
            request(TARGET, WaitMode::Try),
            LockMode::Slots(2),
        )
        .await;
    assert_eq!(
        refused(&mut third_frames).await.kind,
        ErrorKind::AlreadyHeld
    );
    daemon
        .acquire_in(&third, 2, request(TARGET, wait()), LockMode::Slots(2))
        .await;
    assert!(matches!(
        event(&mut third_frames).await,
        Event::QueuePosition { .. }
    ));
    let (session, mut frames, grant) = holders_frames.remove(0);
    daemon.release(&session, 2, TARGET, &grant.lock_id).await;
    released(&mut frames).await;
    granted(&mut third_frames).await;
    assert_eq!(holders(&daemon).await.unwrap().taken(), 2);
}

#[tokio::test]
async fn modes_that_cannot_share_a_lock_are_refused_naming_both() {
    let daemon = Daemon::start().await;
    let (holder, mut holder_frames) = daemon.session(1, 0);
    let (other, mut other_frames) = daemon.session(2, 0);
    daemon
        .acquire_in(
            &holder,
            1,
            request(TARGET, WaitMode::Try),
            LockMode::Slots(3),
        )
        .await;
    granted(&mut holder_frames).await;
    daemon
        .acquire_in(&other, 1, request(TARGET, wait()), LockMode::Shared)
        .await;
    let error = refused(&mut other_frames).await;
    assert_eq!(error.kind, ErrorKind::ModeConflict);
    assert!(error.message.contains("semaphore of 3 slots"), "{error}");
    assert!(error.message.contains("shared"), "{error}");
    daemon
        .acquire_in(&other, 2, request(TARGET, wait()), LockMode::Slots(5))
        .await;
    let error = refused(&mut other_frames).await;
    assert_eq!(error.kind, ErrorKind::ModeConflict);
    assert!(
        error.message.contains("3 slots") && error.message.contains("5"),
        "{error}"
    );
    daemon
        .acquire_in(
            &other,
            3,
            request(TARGET, WaitMode::Try),
            LockMode::Slots(0),
        )
        .await;
    assert_eq!(
        refused(&mut other_frames).await.kind,
        ErrorKind::InvalidTarget
    );
}

#[tokio::test]
async fn another_hosts_shared_entry_is_joined_and_kept_and_a_dead_one_removed() {
    let daemon = Daemon::start().await;
    // Another host's live entry, and a dead host's expired one.
    let live = some_entry();
    let mut dead = some_entry();
    dead.lock_id = "dead0000000000000000000000000000".into();
    dead.hostname = "dead-host".into();
    dead.created_at -= Duration::from_secs(600);
    let planted = Joint {
        mode: JointMode::Shared,
        holders: vec![dead, live.clone()],
    };
    let bytes = planted.to_json("planted", "another-daemon", std::time::SystemTime::now());
    daemon
        .plant_with(TARGET, Box::new(move |_| bytes.clone()))
        .await;
    let (reader, mut frames) = daemon.session(1, 0);
    daemon
        .acquire_in(&reader, 1, request(TARGET, WaitMode::Try), LockMode::Shared)
        .await;
    let grant = granted(&mut frames).await;
    let file = holders(&daemon).await.unwrap();
    let hosts: Vec<&str> = file.holders.iter().map(|h| h.hostname.as_str()).collect();
    assert_eq!(
        hosts,
        ["elsewhere", "host"],
        "the dead entry went, the live one stayed"
    );
    // An exclusive request is held off by the other host's entry once ours leaves.
    daemon.release(&reader, 2, TARGET, &grant.lock_id).await;
    released(&mut frames).await;
    let file = holders(&daemon).await.unwrap();
    assert_eq!(file.holders, vec![live], "only our entry left");
    daemon.acquire(&reader, 3, TARGET, WaitMode::Try).await;
    let error = refused(&mut frames).await;
    assert_eq!(error.kind, ErrorKind::AlreadyHeld);
    assert!(error.message.contains("elsewhere"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_shared_entry_is_renewed_and_every_local_holder_told() {
    let daemon = Daemon::start().await;
    let (a, mut a_frames) = daemon.session(1, 0);
    let (b, mut b_frames) = daemon.session(2, 0);
    daemon
        .acquire_in(&a, 1, request(TARGET, WaitMode::Try), LockMode::Shared)
        .await;
    granted(&mut a_frames).await;
    daemon
        .acquire_in(&b, 1, request(TARGET, WaitMode::Try), LockMode::Shared)
        .await;
    granted(&mut b_frames).await;
    let before = holders(&daemon).await.unwrap().holders[0].clone();
    for frames in [&mut a_frames, &mut b_frames] {
        assert!(matches!(event(frames).await, Event::LeaseRenewed { .. }));
    }
    let after = holders(&daemon).await.unwrap().holders[0].clone();
    assert_eq!(after.lock_id, before.lock_id, "the same entry");
    assert!(after.created_at > before.created_at, "renewed");
}

#[tokio::test]
async fn a_closed_connection_leaves_the_shared_lock_and_a_break_ends_it_for_all() {
    let daemon = Daemon::start().await;
    let (a, mut a_frames) = daemon.session(1, 0);
    let (b, mut b_frames) = daemon.session(2, 0);
    for (session, frames) in [(&a, &mut a_frames), (&b, &mut b_frames)] {
        daemon
            .acquire_in(
                session,
                1,
                request(TARGET, WaitMode::Try),
                LockMode::Slots(4),
            )
            .await;
        granted(frames).await;
    }
    assert_eq!(holders(&daemon).await.unwrap().taken(), 2);
    daemon
        .send(
            TARGET,
            crate::lock::LockMessage::SessionClosed { session_id: 1 },
        )
        .await;
    let (admin, mut admin_frames) = daemon.session(3, 0);
    // Routed after the close, so the count is settled by the time the break is answered.
    daemon
        .send(
            TARGET,
            crate::lock::LockMessage::Break {
                session: admin.clone(),
                id: 1,
                reason: "stuck".into(),
            },
        )
        .await;
    match answer(&mut admin_frames).await {
        Ok(Response::Broken(Some(_))) => {}
        other => panic!("expected a break, got {other:?}"),
    }
    match event(&mut b_frames).await {
        Event::LeaseEnded { kind, reason } => {
            assert_eq!(kind, ErrorKind::LeaseLost);
            assert!(reason.contains("stuck"), "{reason}");
        }
        other => panic!("expected the end of the lease, got {other:?}"),
    }
    assert!(daemon.lock_file(TARGET).await.is_none());
}

#[tokio::test]
async fn two_shared_holdings_of_one_connection_are_released_one_at_a_time() {
    let daemon = Daemon::start().await;
    let (session, mut frames) = daemon.session(1, 0);
    let mut grants = Vec::new();
    for id in 1..=2 {
        daemon
            .acquire_in(
                &session,
                id,
                request(TARGET, WaitMode::Try),
                LockMode::Slots(3),
            )
            .await;
        grants.push(granted(&mut frames).await);
    }
    // A client releases by the metadata's lock id: it must name the holding, not the entry
    // the two share.
    for grant in &grants {
        assert_eq!(
            grant.metadata.lock_id.as_deref(),
            Some(grant.lock_id.as_str())
        );
    }
    assert_ne!(grants[0].lock_id, grants[1].lock_id);
    assert_eq!(holders(&daemon).await.unwrap().taken(), 2);
    daemon
        .release(
            &session,
            3,
            TARGET,
            grants[1].metadata.lock_id.as_deref().unwrap(),
        )
        .await;
    released(&mut frames).await;
    assert_eq!(
        holders(&daemon).await.unwrap().taken(),
        1,
        "only the one released"
    );
    daemon
        .release(
            &session,
            4,
            TARGET,
            grants[0].metadata.lock_id.as_deref().unwrap(),
        )
        .await;
    released(&mut frames).await;
    assert!(daemon.lock_file(TARGET).await.is_none());
}

#[tokio::test]
async fn a_detached_shared_lease_is_an_entry_of_its_own_released_by_its_lock_id() {
    let daemon = Daemon::start().await;
    let (reader, mut reader_frames) = daemon.session(1, 1000);
    let (owner, mut owner_frames) = daemon.session(2, 1000);
    daemon
        .acquire_in(&reader, 1, request(TARGET, WaitMode::Try), LockMode::Shared)
        .await;
    granted(&mut reader_frames).await;
    let mut detached = request(TARGET, WaitMode::Try);
    detached.detached = true;
    daemon
        .acquire_in(&owner, 1, detached, LockMode::Shared)
        .await;
    let lease = granted(&mut owner_frames).await;
    let file = holders(&daemon).await.unwrap();
    assert_eq!(file.holders.len(), 2, "the reader's entry and the lease's");
    let entry = file.entry(&lease.lock_id).expect("the lease's own entry");
    assert!(entry.detached);
    // The lease outlives its connection; its lock id releases it, and only it.
    daemon
        .send(
            TARGET,
            crate::lock::LockMessage::SessionClosed { session_id: 2 },
        )
        .await;
    assert!(holders(&daemon)
        .await
        .unwrap()
        .entry(&lease.lock_id)
        .is_some());
    let (later, mut later_frames) = daemon.session(3, 1000);
    daemon.release(&later, 1, TARGET, &lease.lock_id).await;
    released(&mut later_frames).await;
    let file = holders(&daemon).await.unwrap();
    assert_eq!(file.holders.len(), 1);
    assert!(file.entry(&lease.lock_id).is_none());
}

/// A joint file with an expired entry (a dead host's), planted as another daemon wrote it.
async fn plant_with_dead_entry(daemon: &Daemon) -> crate::lockfile::joint::HolderEntry {
    let live = some_entry();
    let mut dead = some_entry();
    dead.lock_id = "dead0000000000000000000000000000".into();
    dead.hostname = "dead-host".into();
    dead.created_at -= Duration::from_secs(600);
    let planted = Joint {
        mode: JointMode::Shared,
        holders: vec![dead.clone(), live],
    };
    let bytes = planted.to_json("planted", "another-daemon", std::time::SystemTime::now());
    daemon
        .plant_with(TARGET, Box::new(move |_| bytes.clone()))
        .await;
    dead
}

#[tokio::test]
async fn the_on_stale_question_is_asked_about_an_expired_entry_and_a_veto_keeps_it() {
    let daemon = Daemon::start().await;
    let dead = plant_with_dead_entry(&daemon).await;
    let (reader, mut frames) = daemon.session(1, 0);
    let mut asking = request(TARGET, WaitMode::Try);
    asking.ask_on_stale = true;
    daemon
        .acquire_in(&reader, 1, asking.clone(), LockMode::Shared)
        .await;
    match event(&mut frames).await {
        Event::StaleQuestion { holder } => assert_eq!(holder.hostname, dead.hostname),
        other => panic!("expected the on-stale question, got {other:?}"),
    }
    daemon
        .send(
            TARGET,
            crate::lock::LockMessage::StaleVerdict {
                session_id: 1,
                acquire_id: 1,
                allow: false,
                reason: "keep it".into(),
            },
        )
        .await;
    assert_eq!(refused(&mut frames).await.kind, ErrorKind::StaleVetoed);
    assert!(holders(&daemon)
        .await
        .unwrap()
        .entry(&dead.lock_id)
        .is_some());
    // Allowed, the join goes ahead without the dead entry.
    daemon
        .acquire_in(&reader, 2, asking, LockMode::Shared)
        .await;
    assert!(matches!(
        event(&mut frames).await,
        Event::StaleQuestion { .. }
    ));
    daemon
        .send(
            TARGET,
            crate::lock::LockMessage::StaleVerdict {
                session_id: 1,
                acquire_id: 2,
                allow: true,
                reason: String::new(),
            },
        )
        .await;
    granted(&mut frames).await;
    let file = holders(&daemon).await.unwrap();
    assert!(file.entry(&dead.lock_id).is_none());
    assert_eq!(file.holders.len(), 2, "the live entry and ours");
}

#[tokio::test]
async fn under_the_watched_rule_an_entry_is_expired_only_once_seen_unchanged_for_its_ttl() {
    let daemon = Daemon::with(|settings| {
        settings.stores.mem.served = Some(crate::config::StaleRule::Watched);
    })
    .await;
    let dead = plant_with_dead_entry(&daemon).await;
    let (reader, mut frames) = daemon.session(1, 0);
    daemon
        .acquire_in(&reader, 1, request(TARGET, WaitMode::Try), LockMode::Shared)
        .await;
    granted(&mut frames).await;
    // Its createdAt is ten minutes old, but this daemon has only just seen it: kept.
    assert!(holders(&daemon)
        .await
        .unwrap()
        .entry(&dead.lock_id)
        .is_some());
}

/// The last local holder leaves while the store fails: our entry, left in the lock file, is
/// removed by retries once the store works again (before, it stayed until its lease ran out
/// and held every exclusive request off meanwhile).
#[cfg(feature = "faults")]
#[tokio::test]
async fn an_entry_left_behind_by_a_failed_leave_is_removed_by_retries() {
    let dir = tempfile::tempdir().unwrap();
    let switch = dir.path().join("faults-on");
    let daemon = Daemon::with(|settings| {
        settings.faults.operations = Some(crate::config::OperationFaults {
            error_rate: 1.0,
            delay_rate: 0.0,
            delay: Duration::ZERO,
            switch_file: Some(switch.clone()),
        });
    })
    .await;
    let (reader, mut frames) = daemon.session(1, 0);
    daemon
        .acquire_in(&reader, 1, request(TARGET, WaitMode::Try), LockMode::Shared)
        .await;
    let grant = granted(&mut frames).await;
    std::fs::write(&switch, b"").unwrap();
    daemon.release(&reader, 2, TARGET, &grant.lock_id).await;
    released(&mut frames).await;
    std::fs::remove_file(&switch).unwrap();
    // A waiter is served as soon as a retry has removed the entry.
    let (writer, mut writer_frames) = daemon.session(2, 0);
    daemon
        .acquire(&writer, 1, TARGET, WaitMode::Wait { timeout: None })
        .await;
    // Well inside the entry's 30 s lease: only a retry can have freed it.
    let write = tokio::time::timeout(Duration::from_secs(10), granted(&mut writer_frames))
        .await
        .expect("the entry left behind was not removed");
    assert!(
        holders_or_none(&daemon).await.is_none(),
        "an exclusive file now"
    );
    assert!(write.token > grant.token);
}
