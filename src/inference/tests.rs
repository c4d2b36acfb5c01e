use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex as AsyncMutex;

use super::*;

fn settings() -> InferenceSettings {
    InferenceSettings {
        stt_workers: 2,
        max_queue: 3,
        ..InferenceSettings::for_tests()
    }
}

/// A fixed start of virtual time.
fn t0() -> Instant {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn snap(name: &'static str, workers: usize, utilization: f64, local: bool) -> PoolSnapshot {
    PoolSnapshot {
        name,
        workers,
        busy: 0,
        queued: 0,
        utilization,
        wait_ms: 0.0,
        local,
    }
}

#[tokio::test]
async fn a_freed_slot_goes_to_the_live_turn_first_then_the_prompt_then_background_work() {
    let pool = Pool::new("t", 1, 16, false, true);
    let held = pool.acquire(Priority::Live).await.unwrap();
    let order = Arc::new(AsyncMutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // Queued lowest priority first, so FIFO alone would get it wrong.
    for (i, p) in [
        Priority::Background,
        Priority::Prompt,
        Priority::Background,
        Priority::Live,
        Priority::Prompt,
        Priority::Live,
    ]
    .into_iter()
    .enumerate()
    {
        let waiter = pool.clone();
        let order = Arc::clone(&order);
        tasks.push(tokio::spawn(async move {
            let permit = waiter.acquire(p).await.unwrap();
            order.lock().await.push((p, i));
            drop(permit);
        }));
        // Each waiter is queued before the next one asks.
        while pool.snapshot().queued < i + 1 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(pool.snapshot().queued, 6);
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().await.clone();
    assert_eq!(
        order,
        vec![
            (Priority::Live, 3),
            (Priority::Live, 5),
            (Priority::Prompt, 1),
            (Priority::Prompt, 4),
            (Priority::Background, 0),
            (Priority::Background, 2),
        ]
    );
    let s = pool.snapshot();
    assert_eq!((s.busy, s.queued), (0, 0));
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let pool = Pool::new("t", 1, 2, false, true);
    let _held = pool.acquire(Priority::Live).await.unwrap();
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.acquire(Priority::Live).await.map(drop) })
        })
        .collect();
    while pool.snapshot().queued < 2 {
        tokio::task::yield_now().await;
    }
    let refused = pool.acquire(Priority::Live).await.err();
    assert_eq!(
        refused,
        Some(PoolError::Full {
            pool: "t",
            queued: 2
        })
    );
    drop(_held);
    for w in waiting {
        w.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_waiter_that_gives_up_does_not_keep_a_slot() {
    let pool = Pool::new("t", 1, 8, false, true);
    let held = pool.acquire(Priority::Live).await.unwrap();
    let gave_up = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire(Priority::Live).await.map(drop) })
    };
    while pool.snapshot().queued < 1 {
        tokio::task::yield_now().await;
    }
    gave_up.abort();
    assert!(gave_up.await.is_err());
    drop(held);
    // The slot is free again: the next one gets it without waiting.
    let p = tokio::time::timeout(Duration::from_secs(5), pool.acquire(Priority::Background))
        .await
        .expect("a slot is free")
        .unwrap();
    assert_eq!(pool.snapshot().busy, 1);
    drop(p);
    assert_eq!(pool.snapshot().busy, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_jobs_run_at_once_than_the_pool_has_slots() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pool = Pool::new("stt", 2, 16, true, true);
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let jobs = (0..8).map(|_| {
        let (running, most) = (Arc::clone(&running), Arc::clone(&most));
        pool.run(Priority::Live, move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            // Long enough for the other jobs to be queued meanwhile.
            std::thread::sleep(Duration::from_millis(20));
            running.fetch_sub(1, Ordering::SeqCst);
            std::thread::current().name().map(str::to_owned)
        })
    });
    let out = futures_util::future::join_all(jobs).await;
    assert!(out.iter().all(Result::is_ok));
    assert_eq!(most.load(Ordering::SeqCst), 2);
    assert_eq!(pool.finished(), 8);
    assert_eq!(pool.snapshot().busy, 0);
}

#[tokio::test]
async fn utilization_is_busy_slots_over_time() {
    let pool = Pool::new("t", 2, 8, false, true);
    let start = Instant::now();
    let held = pool.acquire(Priority::Live).await.unwrap();
    // One of two slots busy for 10 s (the clock is passed in): 50 %, and
    // with a time constant of 1 s the smoothed figure has all but caught up.
    let s = pool.sample(start + Duration::from_secs(10), Duration::from_secs(1));
    assert!((s.utilization - 0.5).abs() < 0.01, "{s:?}");
    drop(held);
}

#[test]
fn a_call_is_refused_when_one_more_share_would_pass_the_target() {
    let mut a = Admission::new(&settings());
    // 4 calls keep 1 of 2 STT threads busy: a quarter of a thread each.
    let now = [
        snap("stt", 2, 0.5, true),
        snap("tts", 2, 0.0, true),
        snap("reason", 4, 0.0, false),
    ];
    for _ in 0..200 {
        a.learn(&now, 4, t0(), SAMPLE_EVERY);
    }
    assert!((a.share("stt") - 0.25).abs() < 0.01);
    // Calls 5 (62.5 %) and 6 (75 %) fit; the 7th would make 87.5 %.
    assert!(a.decide(&now, 4, t0()).is_ok());
    assert!(a.decide(&now, 5, t0()).is_ok());
    let why = a.decide(&now, 6, t0()).unwrap_err();
    assert!(why.contains("stt pool would be 88% busy"), "{why}");
}

#[test]
fn the_speech_engines_together_must_fit_the_cores() {
    let mut a = Admission::new(&settings());
    let pools = [
        snap("stt", 4, 0.3, true),
        snap("tts", 4, 0.3, true),
        snap("reason", 4, 0.0, false),
    ];
    for _ in 0..200 {
        a.learn(&pools, 4, t0(), SAMPLE_EVERY);
    }
    // Each pool alone is at 30 % of 4 threads, but together they keep 2.4
    // threads of 2 cores busy: no room.
    let why = a.decide(&pools, 4, t0()).unwrap_err();
    assert!(why.contains("of 2 cores"), "{why}");
}

#[test]
fn waiting_jobs_refuse_new_calls_before_anything_is_learnt() {
    let a = Admission::new(&settings());
    let mut stt = snap("stt", 2, 0.2, true);
    assert!(a.decide(&[stt], 0, t0()).is_ok());
    stt.queued = 3;
    stt.wait_ms = 450.0;
    let why = a.decide(&[stt], 0, t0()).unwrap_err();
    assert!(why.contains("wait 450 ms for the stt pool"), "{why}");
}

#[test]
fn a_busy_pool_refuses_even_without_a_learnt_share() {
    let a = Admission::new(&settings());
    let why = a.decide(&[snap("tts", 2, 0.9, true)], 0, t0()).unwrap_err();
    assert!(why.contains("tts pool would be 90% busy"), "{why}");
}

#[test]
fn a_quiet_moment_lowers_a_share_slowly() {
    let mut a = Admission::new(&settings());
    for _ in 0..200 {
        a.learn(&[snap("stt", 2, 0.5, true)], 4, t0(), SAMPLE_EVERY);
    }
    a.learn(&[snap("stt", 2, 0.0, true)], 4, t0(), SAMPLE_EVERY);
    // One quiet sample takes 5 % off, not all of it.
    assert!(
        (a.share("stt") - 0.2375).abs() < 0.005,
        "{}",
        a.share("stt")
    );
}

/// Agent calls come in `warmup_calls` at a time per `settle`, or half the
/// settled calls: a burst at start-up cannot all get in.
#[test]
fn new_agent_calls_ramp_up_by_half_per_settle() {
    let mut a = Admission::new(&settings());
    let idle = [snap("stt", 2, 0.0, true), snap("tts", 2, 0.0, true)];
    for n in 0..8 {
        assert!(a.decide(&idle, n, t0()).is_ok(), "call {}", n + 1);
        a.admitted(t0());
    }
    let why = a.decide(&idle, 8, t0()).unwrap_err();
    assert!(
        why.contains("ramping up: 8 agent calls admitted in the last 10 s are not measured yet"),
        "{why}"
    );
    // Still settling 9.9 s later; settled at 10 s, and the next 8 may come.
    let later = t0() + Duration::from_millis(9_900);
    assert!(a.decide(&idle, 8, later).is_err());
    let settled = t0() + Duration::from_secs(10);
    assert!(a.decide(&idle, 8, settled).is_ok());
    assert!(!a.known());
    // With 30 calls settled, 15 may be young at once.
    let mut a = Admission::new(&settings());
    for _ in 0..30 {
        a.admitted(t0());
    }
    for n in 30..45 {
        assert!(a.decide(&idle, n, settled).is_ok(), "call {}", n + 1);
        a.admitted(settled);
    }
    let why = a.decide(&idle, 45, settled).unwrap_err();
    assert!(why.contains("ramping up: 15 agent calls"), "{why}");
}

/// A young call counts by its age, nothing is learnt before a call has
/// settled, and the shares are known once learnt for a whole `settle`.
#[test]
fn young_calls_count_by_their_age() {
    let mut a = Admission::new(&settings());
    for _ in 0..4 {
        a.admitted(t0());
    }
    let busy = [snap("stt", 2, 0.6, true)];
    // The four calls are young: nothing is learnt from them.
    a.learn(&busy, 4, t0() + Duration::from_secs(5), SAMPLE_EVERY);
    assert_eq!(a.share("stt"), 0.0);
    let t1 = t0() + Duration::from_secs(10);
    for _ in 0..4 {
        a.admitted(t1);
    }
    // 8 calls up, 4 settled and 4 of 5 s (half a call each): 1.2 STT
    // threads over 6 calls.
    let mut at = t1 + Duration::from_secs(5);
    a.learn(&busy, 8, at, SAMPLE_EVERY);
    assert!((a.share("stt") - 0.2).abs() < 1e-9, "{}", a.share("stt"));
    for _ in 0..38 {
        at += SAMPLE_EVERY;
        a.learn(&busy, 8, at, SAMPLE_EVERY);
    }
    assert!(!a.known(), "39 samples are less than 10 s");
    at += SAMPLE_EVERY;
    a.learn(&busy, 8, at, SAMPLE_EVERY);
    assert!(a.known());
    // Known: the warm-up pacing is over, the share decides. With the young
    // calls settled, 8 calls are 1.2 threads: 0.15 a call. A 9th call
    // takes the 2 threads to 68 %, a 10th to 75 % and an 11th to 83 %.
    let settled = at + Duration::from_secs(10);
    for _ in 0..200 {
        a.learn(&busy, 8, settled, SAMPLE_EVERY);
    }
    assert!((a.share("stt") - 0.15).abs() < 1e-3, "{}", a.share("stt"));
    assert!(a.decide(&busy, 8, settled).is_ok());
    let why = a.decide(&busy, 10, settled).unwrap_err();
    assert!(why.contains("stt pool would be 83% busy"), "{why}");
}

/// Shares given at start-up (configured, or kept from the last run) are
/// right from the first call: no warm-up, no burst past the target.
#[test]
fn given_shares_decide_from_the_first_call() {
    let mut s = settings();
    s.call_share = vec![("stt", 0.25)];
    let mut a = Admission::new(&s);
    assert!(a.known());
    let idle = [snap("stt", 2, 0.0, true)];
    for n in 0..6 {
        assert!(a.decide(&idle, n, t0()).is_ok(), "call {}", n + 1);
        a.admitted(t0());
    }
    let why = a.decide(&idle, 6, t0()).unwrap_err();
    assert!(why.contains("stt pool would be 88% busy"), "{why}");
    assert_eq!(a.known_shares(), Some(&[("stt", 0.25)][..]));
}

/// With admission off the pools never refuse, and still learn.
#[test]
fn admission_off_admits_and_learns() {
    let mut s = settings();
    s.admission = false;
    let mut a = Admission::new(&s);
    let full = [snap("stt", 2, 1.0, true)];
    for n in 0..20 {
        assert!(a.decide(&full, n, t0()).is_ok());
        a.admitted(t0());
    }
    a.learn(&full, 20, t0() + Duration::from_secs(10), SAMPLE_EVERY);
    assert!((a.share("stt") - 0.1).abs() < 1e-9, "{}", a.share("stt"));
}

#[test]
fn shares_are_kept_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("var/inference-shares.json");
    save_shares(&file, &[("stt", 0.02), ("tts", 0.01)]).expect("saved");
    assert_eq!(load_shares(&file), Ok(vec![("stt", 0.02), ("tts", 0.01)]));
    std::fs::write(&file, r#"{"gpu": 0.5}"#).expect("write");
    assert_eq!(load_shares(&file), Err("no pool named \"gpu\"".into()));
    std::fs::write(&file, "[").expect("write");
    assert!(
        load_shares(&file)
            .unwrap_err()
            .starts_with("not a JSON object of numbers")
    );
}
