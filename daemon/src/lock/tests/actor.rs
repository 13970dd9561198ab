use ractor::Actor;

use super::*;
use crate::lock::tests::Daemon;

fn future_size<F: std::future::Future>(_: &F) -> usize {
    std::mem::size_of::<F>()
}

/// Every actor's task holds the future of the message being handled for its whole life;
/// the real work is boxed per message so that an idle or held lock does not pay for it.
#[tokio::test]
async fn an_actors_resident_message_future_stays_small() {
    let daemon = Daemon::start().await;
    let address = Address::parse("mem:///x").unwrap();
    let (actor_ref, _tally) = daemon.registry.spawn(&address).await.unwrap();
    let tally = std::sync::Arc::new(Tally::new(daemon.ctx.clone()));
    let actor = LockActor {
        ctx: daemon.ctx.clone(),
        registry: daemon.registry.clone(),
        tally,
    };
    let mut state = actor
        .pre_start(actor_ref.clone(), address)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let handling = actor.handle(actor_ref.clone(), LockMessage::IdleCheck, &mut state);
    let size = future_size(&handling);
    drop(handling);
    assert!(size <= 256, "the resident handle future is {size} bytes");
    actor_ref.stop(None);
}

#[test]
fn only_what_the_registry_routes_counts_against_retirement() {
    let (reply, _) = ractor::concurrency::oneshot();
    let timers_and_direct = [
        LockMessage::IdleCheck,
        LockMessage::RetryDelete,
        LockMessage::Renew { generation: 1 },
        LockMessage::AnnounceQueue,
        LockMessage::Shutdown(reply.into()),
    ];
    assert!(timers_and_direct.iter().all(|m| !m.is_routed()));
    assert!(LockMessage::SessionClosed { session_id: 1 }.is_routed());
}
