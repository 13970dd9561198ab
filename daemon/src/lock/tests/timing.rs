use std::time::Duration;

use super::*;
use crate::lock::tests::{alive_tasks, tasks_left_over};

#[test]
fn first_renewals_spread_over_a_tenth_to_all_of_a_third_of_the_ttl() {
    let ttl = Duration::from_secs(30);
    let delays: Vec<Duration> = (0..1000).map(|_| first_renewal(ttl)).collect();
    assert!(delays
        .iter()
        .all(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(10)));
    let early = delays
        .iter()
        .filter(|d| **d < Duration::from_secs(4))
        .count();
    let late = delays
        .iter()
        .filter(|d| **d > Duration::from_secs(7))
        .count();
    assert!(
        early > 100 && late > 100,
        "not spread: {early} early, {late} late"
    );
}

#[test]
fn later_renewals_come_every_third_of_the_ttl_less_up_to_a_tenth() {
    let ttl = Duration::from_secs(30);
    for _ in 0..1000 {
        let delay = next_renewal(ttl);
        assert!(delay >= Duration::from_secs(9) && delay <= Duration::from_secs(10));
    }
}

#[test]
fn jitter_stays_within_a_quarter_either_way() {
    let base = Duration::from_millis(400);
    for _ in 0..1000 {
        let delay = jitter(base);
        assert!(delay >= Duration::from_millis(300) && delay <= Duration::from_millis(500));
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_call_that_does_not_answer_in_time_is_an_error_naming_the_limit() {
    let hung = std::future::pending::<Result<(), StoreError>>();
    let error = within(Duration::from_secs(2), hung).await.unwrap_err();
    assert_eq!(error.message, "the store did not answer within 2s");
    let answered = within(Duration::from_secs(2), async { Ok::<_, StoreError>(7) }).await;
    assert_eq!(answered.unwrap(), 7);
}

#[tokio::test]
async fn a_dropped_timer_stops_its_task() {
    let before = alive_tasks();
    let timers: Vec<Timer> = (0..50)
        .map(|_| {
            Timer(tokio::spawn(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }))
        })
        .collect();
    assert!(alive_tasks() >= before + 50);
    drop(timers);
    let left = tasks_left_over(before).await;
    assert!(left <= 2, "{left} timer tasks outlived their timers");
}
