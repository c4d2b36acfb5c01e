//! Transaction timer tables on virtual time: each test jumps from deadline
//! to deadline and records what fired, in milliseconds after the start.

use super::*;

const T: TimerConfig = TimerConfig {
    t1: Duration::from_millis(500),
    t2: Duration::from_secs(4),
    t4: Duration::from_secs(5),
};

fn ms(base: Instant, t: Instant) -> u64 {
    (t - base).as_millis() as u64
}

/// Runs a transaction's timers until it has no deadline, returning
/// (time in ms, action) for each action.
fn run<F, D>(base: Instant, mut deadline: D, mut fire: F) -> Vec<(u64, TxAction)>
where
    D: FnMut() -> Option<Instant>,
    F: FnMut(Instant) -> Option<TxAction>,
{
    let mut out = Vec::new();
    for _ in 0..200 {
        let Some(at) = deadline() else { break };
        if let Some(a) = fire(at) {
            out.push((ms(base, at), a));
        }
    }
    out
}

fn sends(actions: &[(u64, TxAction)]) -> Vec<u64> {
    actions
        .iter()
        .filter(|(_, a)| matches!(a, TxAction::Send(_)))
        .map(|(t, _)| *t)
        .collect()
}

#[test]
fn timer_a_doubles_until_timer_b() {
    let base = crate::test_epoch();
    let mut tx = ClientInvite::new(base, b"INVITE".to_vec(), false, T);
    let tx2 = std::cell::RefCell::new(&mut tx);
    let acts = run(
        base,
        || tx2.borrow().deadline(),
        |now| tx2.borrow_mut().handle_timeout(now),
    );
    // A fires at T1, 3T1, 7T1, ... (interval doubles without cap) until B = 64·T1.
    assert_eq!(sends(&acts), vec![500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(acts.last(), Some(&(32000, TxAction::TimedOut(Timer::B))));
    assert!(tx.is_terminated());
}

#[test]
fn timer_a_not_used_over_tcp() {
    let base = crate::test_epoch();
    let mut tx = ClientInvite::new(base, b"INVITE".to_vec(), true, T);
    assert_eq!(tx.deadline(), Some(base + T.t1x64()));
    assert_eq!(
        tx.handle_timeout(base + T.t1x64()),
        Some(TxAction::TimedOut(Timer::B))
    );
}

#[test]
fn provisional_stops_timer_a() {
    let base = crate::test_epoch();
    let mut tx = ClientInvite::new(base, b"INVITE".to_vec(), false, T);
    let (ev, act) = tx.handle_response(base + Duration::from_millis(100), 100, Vec::new);
    assert_eq!((ev, act), (ClientEvent::Deliver, None));
    assert_eq!(
        tx.deadline(),
        None,
        "Proceeding waits for the final without a timer"
    );
}

#[test]
fn non_2xx_final_is_acked_and_retransmissions_reacked() {
    let base = crate::test_epoch();
    let mut tx = ClientInvite::new(base, b"INVITE".to_vec(), false, T);
    let (ev, act) = tx.handle_response(base, 491, || b"ACK".to_vec());
    assert_eq!(ev, ClientEvent::Deliver);
    assert_eq!(act, Some(TxAction::Send(b"ACK".to_vec())));
    let (ev, act) = tx.handle_response(base, 491, || unreachable!("ACK is cached"));
    assert_eq!(
        (ev, act),
        (ClientEvent::Absorbed, Some(TxAction::Send(b"ACK".to_vec())))
    );
    assert_eq!(
        tx.deadline(),
        Some(base + Duration::from_secs(32)),
        "timer D"
    );
}

#[test]
fn accepted_delivers_2xx_retransmissions_for_re_ack() {
    let base = crate::test_epoch();
    let mut tx = ClientInvite::new(base, b"INVITE".to_vec(), false, T);
    assert_eq!(
        tx.handle_response(base, 200, Vec::new).0,
        ClientEvent::Deliver
    );
    assert_eq!(
        tx.handle_response(base, 200, Vec::new).0,
        ClientEvent::Deliver
    );
    assert_eq!(tx.deadline(), Some(base + T.t1x64()), "timer M");
}

#[test]
fn timer_e_caps_at_t2_and_f_expires() {
    let base = crate::test_epoch();
    let mut tx = ClientNonInvite::new(base, b"BYE".to_vec(), false, T);
    let tx2 = std::cell::RefCell::new(&mut tx);
    let acts = run(
        base,
        || tx2.borrow().deadline(),
        |now| tx2.borrow_mut().handle_timeout(now),
    );
    // 500, +1000, +2000, +4000, then every 4000 (T2) until F at 32 s.
    assert_eq!(
        sends(&acts),
        vec![
            500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(acts.last(), Some(&(32000, TxAction::TimedOut(Timer::F))));
}

#[test]
fn timer_e_uses_t2_in_proceeding() {
    let base = crate::test_epoch();
    let mut tx = ClientNonInvite::new(base, b"BYE".to_vec(), false, T);
    let at = base + Duration::from_millis(200);
    assert_eq!(tx.handle_response(at, 100), ClientEvent::Deliver);
    assert_eq!(tx.deadline(), Some(at + T.t2));
}

#[test]
fn timer_k_after_final() {
    let base = crate::test_epoch();
    let mut tx = ClientNonInvite::new(base, b"BYE".to_vec(), false, T);
    assert_eq!(tx.handle_response(base, 200), ClientEvent::Deliver);
    assert_eq!(
        tx.handle_response(base, 200),
        ClientEvent::Absorbed,
        "retransmitted 200"
    );
    assert_eq!(tx.deadline(), Some(base + T.t4));
    tx.handle_timeout(base + T.t4);
    assert!(tx.is_terminated());
    let mut tcp = ClientNonInvite::new(base, b"BYE".to_vec(), true, T);
    tcp.handle_response(base, 200);
    assert_eq!(tcp.deadline(), Some(base), "timer K is zero over TCP");
}

#[test]
fn timer_g_retransmits_non_2xx_until_timer_h() {
    let base = crate::test_epoch();
    let mut tx = ServerInvite::new(false, T);
    tx.send_final(base, 486, b"486".to_vec());
    let tx2 = std::cell::RefCell::new(&mut tx);
    let acts = run(
        base,
        || tx2.borrow().deadline(),
        |now| tx2.borrow_mut().handle_timeout(now),
    );
    assert_eq!(
        sends(&acts),
        vec![
            500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(acts.last(), Some(&(32000, TxAction::TimedOut(Timer::H))));
}

#[test]
fn ack_stops_retransmission_and_timer_i_absorbs() {
    let base = crate::test_epoch();
    let mut tx = ServerInvite::new(false, T);
    tx.send_final(base, 486, b"486".to_vec());
    assert!(tx.handle_ack(base + Duration::from_millis(10)));
    assert_eq!(
        tx.deadline(),
        Some(base + Duration::from_millis(10) + T.t4),
        "timer I"
    );
    assert!(
        tx.handle_ack(base + Duration::from_millis(20)),
        "retransmitted ACK absorbed"
    );
    assert_eq!(tx.handle_retransmission(), None);
}

#[test]
fn invite_retransmission_answered_with_last_response() {
    let mut tx = ServerInvite::new(false, T);
    assert_eq!(tx.handle_retransmission(), None, "no provisional sent yet");
    tx.send_provisional(b"100".to_vec());
    assert_eq!(tx.handle_retransmission(), Some(b"100".to_vec()));
    let base = crate::test_epoch();
    tx.send_final(base, 487, b"487".to_vec());
    assert_eq!(tx.handle_retransmission(), Some(b"487".to_vec()));
}

#[test]
fn accepted_absorbs_invite_retransmissions_until_timer_l() {
    let base = crate::test_epoch();
    let mut tx = ServerInvite::new(false, T);
    tx.send_final(base, 200, b"200".to_vec());
    assert_eq!(
        tx.handle_retransmission(),
        None,
        "2xx is retransmitted by the UAS core"
    );
    assert_eq!(tx.deadline(), Some(base + T.t1x64()));
    assert_eq!(tx.handle_timeout(base + T.t1x64()), None);
    assert!(tx.is_terminated());
}

#[test]
fn non_invite_server_absorbs_retransmissions_until_timer_j() {
    let base = crate::test_epoch();
    let mut tx = ServerNonInvite::new(false, T);
    assert_eq!(tx.handle_retransmission(), None, "Trying absorbs silently");
    tx.send_response(base, 200, b"200".to_vec());
    assert_eq!(tx.handle_retransmission(), Some(b"200".to_vec()));
    assert_eq!(tx.deadline(), Some(base + T.t1x64()));
    tx.handle_timeout(base + T.t1x64() - Duration::from_millis(1));
    assert!(!tx.is_terminated());
    tx.handle_timeout(base + T.t1x64());
    assert!(tx.is_terminated());
}

#[test]
fn shrunk_timers_scale_every_deadline() {
    let t = TimerConfig {
        t1: Duration::from_millis(10),
        t2: Duration::from_millis(40),
        t4: Duration::from_millis(50),
    };
    let base = crate::test_epoch();
    let mut tx = ClientNonInvite::new(base, b"BYE".to_vec(), false, t);
    let tx2 = std::cell::RefCell::new(&mut tx);
    let acts = run(
        base,
        || tx2.borrow().deadline(),
        |now| tx2.borrow_mut().handle_timeout(now),
    );
    assert_eq!(acts.last(), Some(&(640, TxAction::TimedOut(Timer::F))));
}
