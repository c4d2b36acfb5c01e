use super::*;

/// The samples of a 16-bit mono WAV (test fixtures only).
pub(crate) fn wav(bytes: &[u8]) -> Vec<i16> {
    let data = bytes
        .windows(4)
        .position(|w| w == b"data")
        .expect("a data chunk");
    bytes[data + 8..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

pub(crate) fn frames_of(samples: &[i16]) -> Vec<Frame> {
    samples
        .chunks_exact(FRAME_SAMPLES)
        .map(|c| {
            let mut f = [0i16; FRAME_SAMPLES];
            f.copy_from_slice(c);
            f
        })
        .collect()
}

pub(crate) const CALLER: &[u8] = include_bytes!("../../tests/data/caller_speech.wav");
pub(crate) const BACKCHANNEL: &[u8] = include_bytes!("../../tests/data/backchannel.wav");
pub(crate) const YEAH: &[u8] = include_bytes!("../../tests/data/yeah.wav");

/// A cough: a burst of noise with a fast attack and a 150 ms decay.
pub(crate) fn cough(rng: &mut fastrand::Rng) -> Vec<i16> {
    (0..2400)
        .map(|i| {
            let env = (-(i as f32) / 700.0).exp();
            (env * 12000.0 * (rng.f32() * 2.0 - 1.0)) as i16
        })
        .collect()
}

fn speech_mask(samples: &[i16]) -> Vec<bool> {
    let mut vad = VoiceDetector::new(VadConfig::default());
    frames_of(samples)
        .iter()
        .map(|f| vad.process(f).speech)
        .collect()
}

#[test]
fn speech_is_detected_and_silence_is_not() {
    let mask = speech_mask(&wav(CALLER));
    let share = mask.iter().filter(|s| **s).count() as f32 / mask.len() as f32;
    assert!(share > 0.4, "speech share of a sentence {share}");
    let silence = [0i16; FRAME_SAMPLES * 50];
    assert!(speech_mask(&silence).iter().all(|s| !s));
}

#[test]
fn quiet_frames_never_run_the_model() {
    let mut vad = VoiceDetector::new(VadConfig::default());
    let mut rng = fastrand::Rng::with_seed(1);
    for _ in 0..100 {
        let mut f = [0i16; FRAME_SAMPLES];
        for s in &mut f {
            *s = rng.i16(-30..30); // about −65 dBFS of hiss
        }
        assert!(!vad.process(&f).speech);
    }
    assert_eq!(vad.model_blocks(), 0);
    // Speech does run it.
    for f in frames_of(&wav(CALLER)).iter().take(100) {
        vad.process(f);
    }
    assert!(vad.model_blocks() > 20);
}

#[test]
fn noise_floor_follows_a_louder_line_without_eating_speech() {
    let mut vad = VoiceDetector::new(VadConfig::default());
    let mut rng = fastrand::Rng::with_seed(2);
    // 4 s of −50 dBFS line noise: the floor climbs to it.
    for _ in 0..200 {
        let mut f = [0i16; FRAME_SAMPLES];
        for s in &mut f {
            *s = rng.i16(-180..180);
        }
        vad.process(&f);
    }
    assert!(
        vad.noise_floor_dbfs() > -56.0,
        "floor {}",
        vad.noise_floor_dbfs()
    );
    let mask: Vec<bool> = frames_of(&wav(CALLER))
        .iter()
        .map(|f| vad.process(f).speech)
        .collect();
    assert!(mask.iter().filter(|s| **s).count() > mask.len() / 3);
}

fn run(ep: &mut Endpointer, pattern: &[(bool, usize)], agent: bool) -> Vec<(u64, TurnEvent)> {
    let mut out = Vec::new();
    for &(speech, n) in pattern {
        for _ in 0..n {
            let i = ep.frame_index();
            if let Some(e) = ep.push(speech, agent) {
                out.push((i, e));
            }
        }
    }
    out
}

#[test]
fn start_after_120ms_stop_after_600ms_of_silence() {
    let mut ep = Endpointer::new(EndpointConfig::default());
    let ev = run(
        &mut ep,
        &[(false, 10), (true, 5), (false, 3), (true, 6), (false, 29)],
        false,
    );
    assert_eq!(
        ev,
        [(
            23,
            TurnEvent::SpeechStarted {
                frame: 18,
                over_agent: false
            }
        )]
    );
    let ev = run(&mut ep, &[(false, 1)], false);
    assert_eq!(
        ev,
        [(
            53,
            TurnEvent::SpeechStopped {
                frame: 24,
                speech_ms: 120
            }
        )]
    );
}

#[test]
fn one_dropout_inside_a_word_does_not_restart_the_count() {
    let mut ep = Endpointer::new(EndpointConfig::default());
    let ev = run(&mut ep, &[(true, 3), (false, 1), (true, 3)], false);
    assert_eq!(
        ev,
        [(
            6,
            TurnEvent::SpeechStarted {
                frame: 0,
                over_agent: false
            }
        )]
    );
}

#[test]
fn over_the_agent_a_start_needs_the_barge_in_duration_within_the_window() {
    // 400 ms = 20 frames of speech within a 1 s window.
    let mut ep = Endpointer::new(EndpointConfig::default());
    assert!(
        run(&mut ep, &[(true, 19), (false, 60)], true).is_empty(),
        "19 frames then silence"
    );
    // Words with pauses between them add up: 8 + 6 + 6 frames within 1 s.
    let ev = run(
        &mut ep,
        &[(true, 8), (false, 4), (true, 6), (false, 4), (true, 6)],
        true,
    );
    assert_eq!(
        ev,
        [(
            106,
            TurnEvent::SpeechStarted {
                frame: 79,
                over_agent: true
            }
        )]
    );
    // Spread over more than the window, they do not.
    let mut ep = Endpointer::new(EndpointConfig::default());
    assert!(run(&mut ep, &[(true, 10), (false, 45), (true, 10)], true).is_empty());
}

#[test]
fn echo_path_is_learnt_and_double_talk_passes() {
    let mut g = EchoGuard::new(EchoGuardConfig::default());
    assert!(!g.push_near(-40.0), "nothing sent, nothing to echo");
    // The agent talks with a syllable rhythm; the line returns it 3 frames
    // later and 12 dB down.
    let far: Vec<f32> = (0..200)
        .map(|i| {
            if (i / 7) % 2 == 0 {
                -15.0 - (i % 5) as f32
            } else {
                -60.0
            }
        })
        .collect();
    let mut wrong = 0;
    for t in 0..200 {
        let echo = if t >= 3 { far[t - 3] - 12.0 } else { -70.0 };
        if !g.push_near(echo) && echo > -50.0 {
            wrong += 1;
        }
        g.push_far(far[t]);
    }
    assert_eq!(wrong, 0, "echo frames taken for the caller");
    let (lag, loss) = g.echo_path().expect("an echo path");
    assert_eq!(
        lag, 2,
        "three ticks back is lag 2 (inbound is processed before outbound)"
    );
    assert!((loss - 12.0).abs() < 1.0, "loss {loss}");
    // The caller at -20 dBFS over the echo: not echo.
    assert!(!g.push_near(-20.0));
}

#[test]
fn without_echo_on_the_line_quiet_callers_still_count() {
    let mut g = EchoGuard::new(EchoGuardConfig::default());
    for t in 0..60 {
        g.push_near(-70.0);
        g.push_far(if (t / 7) % 2 == 0 { -12.0 } else { -60.0 });
    }
    // Early on the Geigel stand-in would call -25 dBFS echo; after half a
    // second without any correlation the line is known to be clean.
    assert!(!g.push_near(-25.0));
}

/// Runs inbound audio through VAD, echo guard and endpointer with the agent
/// talking, the way the media session does; returns the barge-in events.
fn over_agent(inbound: &[i16], agent_levels: &[f32]) -> Vec<TurnEvent> {
    let mut vad = VoiceDetector::new(VadConfig::default());
    let mut guard = EchoGuard::new(EchoGuardConfig::default());
    let mut ep = Endpointer::new(EndpointConfig::default());
    let mut out = Vec::new();
    for (i, f) in frames_of(inbound).iter().enumerate() {
        let v = vad.process(f);
        let echo = guard.push_near(v.level_dbfs);
        guard.push_far(agent_levels[i % agent_levels.len()]);
        let counts = v.speech && !echo;
        out.extend(ep.push(counts, true));
    }
    out
}

#[test]
fn a_150ms_cough_does_not_barge_in() {
    let mut rng = fastrand::Rng::with_seed(3);
    let mut inbound = vec![0i16; 16_000];
    inbound.extend(cough(&mut rng));
    inbound.extend(vec![0i16; 16_000]);
    assert!(over_agent(&inbound, &[-100.0]).is_empty());
}

#[test]
fn backchannels_do_not_barge_in() {
    assert!(
        over_agent(&wav(BACKCHANNEL), &[-100.0]).is_empty(),
        "uh-huh"
    );
    assert!(over_agent(&wav(YEAH), &[-100.0]).is_empty(), "yeah");
}

#[test]
fn a_real_interruption_barges_in() {
    let ev = over_agent(&wav(CALLER), &[-100.0]);
    assert!(
        matches!(
            ev.first(),
            Some(TurnEvent::SpeechStarted {
                over_agent: true,
                ..
            })
        ),
        "{ev:?}"
    );
}
