//! Engine tests on audio synthesised with flite (voices `slt`, 16 kHz, and
//! `kal`, 8 kHz) and degraded through a G.711 μ-law round trip at 8 kHz.
//! They need the Debian packages `pocketsphinx-en-us libpocketsphinx3
//! libsphinxbase3 flite` and fail (never skip) without them.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use voxtrunk_media::codec::{CodecKind, Decoder as G711Decoder, Encoder as G711Encoder};
use voxtrunk_media::resample::resample_all;

use super::*;
use crate::agent::stt::{read_wav_16k, transcribe_wav, validate_phrases};

/// The default real-estate agent's phrases.
const PHRASES: [&str; 9] = [
    "I am looking for a three bedroom apartment in Whitefield",
    "I want a two bedroom flat in Indiranagar",
    "my budget is one point two crore",
    "book a site visit for tomorrow",
    "can I visit on Saturday",
    "what is the price",
    "yes",
    "no",
    "thank you",
];

fn phrases() -> Vec<String> {
    PHRASES.iter().map(|p| (*p).to_owned()).collect()
}

/// The Debian model, failing loudly if it is not installed.
fn config(phrases: Vec<String>, fallback: bool) -> PsConfig {
    let mut config = PsConfig::debian(phrases);
    if !fallback {
        config.fallback_lm = None;
    }
    if let Err(err) = config.check_files() {
        panic!("{err}");
    }
    config
}

fn engine(phrases: Vec<String>, fallback: bool) -> PocketSphinx {
    PocketSphinx::new(config(phrases, fallback)).expect("pocketsphinx starts")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Voice {
    Slt,
    Kal,
}

impl Voice {
    fn name(self) -> &'static str {
        match self {
            Voice::Slt => "slt",
            Voice::Kal => "kal",
        }
    }
}

/// `text` spoken by flite, as 16 kHz mono.
fn synth(voice: Voice, text: &str) -> Vec<i16> {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("x.wav");
    let status = Command::new("flite")
        .args(["-voice", voice.name(), "-t", text, "-o"])
        .arg(&wav)
        .status()
        .unwrap_or_else(|e| panic!("cannot run flite ({e}): apt-get install flite"));
    assert!(status.success(), "flite failed on {text:?}");
    read_wav_16k(&wav).unwrap()
}

/// A telephone line: down to 8 kHz, G.711 μ-law in 20 ms packets, back up
/// to 16 kHz.
fn phone_line(pcm: &[i16]) -> Vec<i16> {
    let narrow = resample_all(pcm, 16_000, 8_000).unwrap();
    let mut encoder = G711Encoder::new(CodecKind::Pcmu).unwrap();
    let mut decoder = G711Decoder::new(CodecKind::Pcmu).unwrap();
    let mut decoded = Vec::with_capacity(narrow.len());
    let mut payload = Vec::new();
    for frame in narrow.chunks(160) {
        let mut frame = frame.to_vec();
        frame.resize(160, 0);
        payload.clear();
        encoder.encode(&frame, &mut payload).unwrap();
        decoder.decode(&payload, &mut decoded).unwrap();
    }
    resample_all(&decoded, 8_000, 16_000).unwrap()
}

/// Half a second of silence either side, as a VAD would cut it.
fn padded(pcm: &[i16]) -> Vec<i16> {
    let pad = vec![0i16; 8_000];
    [pad.as_slice(), pcm, pad.as_slice()].concat()
}

fn feed(stream: Box<dyn SttStream>, pcm: &[i16]) -> (Transcript, Vec<Transcript>) {
    let (last, partials, _) = feed_timed(stream, pcm);
    (last, partials)
}

/// Also returns how long `finish` took.
fn feed_timed(
    mut stream: Box<dyn SttStream>,
    pcm: &[i16],
) -> (Transcript, Vec<Transcript>, Duration) {
    let mut partials = Vec::new();
    for frame in pcm.chunks(FRAME_SAMPLES) {
        let mut frame = frame.to_vec();
        frame.resize(FRAME_SAMPLES, 0);
        if let Some(partial) = stream.push(&frame).unwrap() {
            partials.push(partial);
        }
    }
    let started = Instant::now();
    let last = stream.finish().unwrap();
    (last, partials, started.elapsed())
}

fn recognise(stt: &PocketSphinx, pcm: &[i16]) -> Transcript {
    feed(stt.start(&SttHints::default()).unwrap(), pcm).0
}

fn words(text: &str) -> Vec<String> {
    lexicon::normalize(text)
}

/// Word-level edit distance.
fn word_errors(reference: &[String], hypothesis: &[String]) -> usize {
    let mut row: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, h) in hypothesis.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(r != h)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[hypothesis.len()]
}

#[test]
fn word_error_distance() {
    let w = |s: &str| words(s);
    assert_eq!(word_errors(&w("a b c"), &w("a b c")), 0);
    assert_eq!(word_errors(&w("a b c"), &w("a c")), 1);
    assert_eq!(word_errors(&w("a b c"), &w("a x c d")), 2);
    assert_eq!(word_errors(&w("a b"), &w("")), 2);
}

#[test]
fn language_from_model_dir() {
    assert_eq!(
        language_of(Path::new("/usr/share/pocketsphinx/model/en-us/en-us")).as_deref(),
        Some("en-US")
    );
    assert_eq!(
        language_of(Path::new("/models/fr-fr/ptm")).as_deref(),
        Some("fr-FR")
    );
    assert_eq!(language_of(Path::new("/models/generic")), None);
}

#[test]
fn missing_model_names_debian_packages() {
    let mut config = PsConfig::debian(phrases());
    config.model_dir = "/nonexistent/en-us".into();
    let err = PocketSphinx::new(config).unwrap_err();
    let AgentError::Config { reason, .. } = err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("pocketsphinx-en-us"), "{reason}");
    assert!(reason.contains("/nonexistent/en-us/mdef"), "{reason}");
}

#[test]
fn unknown_words_are_guessed_or_rejected() {
    let dict = Path::new(DEBIAN_MODEL_ROOT).join("cmudict-en-us.dict");
    config(vec![], true);
    assert_eq!(
        validate_phrases(&dict, &phrases()),
        Err(vec!["crore".to_owned(), "indiranagar".to_owned()])
    );
    assert_eq!(
        validate_phrases(&dict, &["book a site visit".to_owned()]),
        Ok(())
    );
    let Err(unreadable) = validate_phrases(Path::new("/nonexistent.dict"), &phrases()) else {
        panic!("unreadable dictionary accepted");
    };
    assert!(unreadable[0].contains("/nonexistent.dict"));

    // Default: guessed, reported.
    let stt = engine(phrases(), false);
    let report = stt.report();
    assert_eq!(
        report.guessed.iter().collect::<Vec<_>>(),
        ["crore", "indiranagar"]
    );
    assert_eq!(report.added_words["crore"], "K R AO R");
    assert_eq!(report.sentences, 9);
    assert!(report.vocabulary > 150, "{report:?}");
    drop(stt);

    // Configured pronunciations win; no guessing needed.
    let mut cfg = config(phrases(), false);
    cfg.guess_unknown = false;
    cfg.pronunciations.insert("crore".into(), "K R OW R".into());
    cfg.pronunciations
        .insert("Indiranagar".into(), "IH N D IH R AH N AH G ER".into());
    let stt = PocketSphinx::new(cfg.clone()).unwrap();
    assert!(stt.report().guessed.is_empty());
    assert_eq!(stt.report().added_words["crore"], "K R OW R");
    drop(stt);

    // Guessing off and no pronunciation: the words are named.
    cfg.pronunciations.remove("crore");
    let err = PocketSphinx::new(cfg.clone()).unwrap_err();
    assert!(err.to_string().contains("crore"), "{err}");
    assert!(!err.to_string().contains("indiranagar"), "{err}");

    // A bad phone is refused with the word it belongs to.
    cfg.pronunciations.insert("crore".into(), "K R QQ R".into());
    let err = PocketSphinx::new(cfg).unwrap_err();
    assert!(
        err.to_string().contains("crore") && err.to_string().contains("QQ"),
        "{err}"
    );
}

#[test]
fn no_phrases_needs_fallback() {
    let err = PocketSphinx::new(config(vec![], false)).unwrap_err();
    assert!(matches!(err, AgentError::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("no phrases"), "{err}");
}

#[test]
fn language_hint_must_match() {
    let stt = engine(vec!["yes".into(), "no".into()], false);
    assert_eq!(stt.language(), "en-US");
    assert_eq!(stt.name(), "pocketsphinx");
    for ok in ["", "en", "en-US", "en-IN", "EN_gb"] {
        let hints = SttHints {
            language: ok.to_owned(),
        };
        assert!(stt.start(&hints).is_ok(), "{ok}");
    }
    let hints = SttHints {
        language: "hi-IN".to_owned(),
    };
    let err = stt.start(&hints).err().expect("hi-IN refused");
    assert!(matches!(err, AgentError::Config { .. }), "{err:?}");
}

/// Key words that must be recognised, per test sentence.
const KEY_WORDS: [(&str, &[&str]); 2] = [
    (
        "I am looking for a three bedroom apartment in Whitefield",
        &["three", "bedroom", "whitefield"],
    ),
    (
        "book a site visit for tomorrow",
        &["book", "site", "visit", "tomorrow"],
    ),
];

/// Both voices, clean and over μ-law: every key word recognised.
#[test]
fn domain_model_recognises_key_words() {
    let stt = engine(phrases(), false);
    let mut failures = Vec::new();
    for voice in [Voice::Slt, Voice::Kal] {
        for (sentence, keys) in KEY_WORDS {
            let clean = padded(&synth(voice, sentence));
            for (line, pcm) in [("clean", clean.clone()), ("μ-law", phone_line(&clean))] {
                let transcript = recognise(&stt, &pcm);
                assert!(transcript.is_final);
                assert_eq!(transcript.language, "en-US");
                let got = words(&transcript.text);
                let missing: Vec<&&str> = keys
                    .iter()
                    .filter(|k| !got.iter().any(|w| w == *k))
                    .collect();
                eprintln!(
                    "{:>3} {line:6} conf {:.2} {:?}",
                    voice.name(),
                    transcript.confidence,
                    transcript.text
                );
                if !missing.is_empty() {
                    failures.push(format!(
                        "{voice:?} {line}: {:?} lacks {missing:?}",
                        transcript.text
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Partial transcripts come while the audio is fed, only when the text
/// changed, and the final one matches the last partial's direction.
#[test]
fn partials_then_final() {
    let stt = engine(phrases(), false);
    let pcm = padded(&synth(Voice::Slt, "book a site visit for tomorrow"));
    let (last, partials) = feed(stt.start(&SttHints::default()).unwrap(), &pcm);
    assert!(partials.len() >= 2, "{partials:?}");
    for pair in partials.windows(2) {
        assert_ne!(pair[0].text, pair[1].text);
    }
    assert!(partials.iter().all(|p| !p.is_final && p.confidence == 0.0));
    assert!(
        partials.last().unwrap().text.contains("visit"),
        "{partials:?}"
    );
    assert!(last.is_final);
    assert_eq!(last.text, "book a site visit for tomorrow");
    assert!(last.confidence > 0.5 && last.confidence <= 1.0, "{last:?}");

    // Silence only: empty, confidence 0, and the decoder is reusable.
    let (silent, _) = feed(
        stt.start(&SttHints::default()).unwrap(),
        &vec![0i16; 16_000],
    );
    assert_eq!(silent.text, "");
    assert_eq!(silent.confidence, 0.0);
    assert_eq!(recognise(&stt, &pcm).text, "book a site visit for tomorrow");
}

/// The pool lends each decoder to one utterance, waits, times out, and
/// gets decoders back from finished and from dropped streams.
#[test]
fn pool_bounds_and_recycles() {
    let mut cfg = config(phrases(), false);
    cfg.decoders = 2;
    cfg.acquire_timeout = Duration::from_millis(100);
    let stt = Arc::new(PocketSphinx::new(cfg).unwrap());
    assert_eq!((stt.pool_size(), stt.idle_decoders()), (2, 2));
    let hints = SttHints::default();
    let a = stt.start(&hints).unwrap();
    let mut b = stt.start(&hints).unwrap();
    assert_eq!(stt.idle_decoders(), 0);
    let started = Instant::now();
    let err = stt
        .start(&hints)
        .err()
        .expect("third utterance waits then fails");
    assert!(matches!(err, AgentError::Unavailable { .. }), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(100));
    // A dropped stream (barge-in) mid-utterance gives its decoder back.
    b.push(&[100; FRAME_SAMPLES]).unwrap();
    drop(b);
    assert_eq!(stt.idle_decoders(), 1);
    // A waiter gets a decoder as soon as one is returned.
    let waiter = {
        let stt = Arc::clone(&stt);
        std::thread::spawn(move || {
            let mut cfg_wait = stt.start(&SttHints::default());
            let got = cfg_wait.is_ok();
            if let Ok(s) = cfg_wait.as_mut() {
                s.push(&[0; FRAME_SAMPLES]).unwrap();
            }
            got
        })
    };
    let c = stt.start(&hints).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    a.finish().unwrap();
    assert!(waiter.join().unwrap());
    drop(c);
    assert_eq!(stt.idle_decoders(), 2);
}

/// Concurrent utterances on several threads give the same transcripts as
/// one at a time.
#[test]
fn concurrent_utterances() {
    let mut cfg = config(phrases(), false);
    cfg.decoders = 3;
    cfg.acquire_timeout = Duration::from_secs(30);
    let stt = Arc::new(PocketSphinx::new(cfg).unwrap());
    let audio: Vec<(String, Vec<i16>)> = [
        "book a site visit for tomorrow",
        "what is the price",
        "can I visit on Saturday",
    ]
    .iter()
    .map(|s| ((*s).to_owned(), padded(&synth(Voice::Slt, s))))
    .collect();
    let audio = Arc::new(audio);
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (stt, audio, barrier) =
                (Arc::clone(&stt), Arc::clone(&audio), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let mut out = Vec::new();
                for round in 0..3 {
                    let (text, pcm) = &audio[(t + round) % audio.len()];
                    out.push((text.clone(), recognise(&stt, pcm).text));
                }
                out
            })
        })
        .collect();
    for thread in threads {
        for (expected, got) in thread.join().unwrap() {
            assert_eq!(got, expected.to_lowercase());
        }
    }
    assert_eq!(stt.idle_decoders(), 3);
}

/// The fallback pass: used below the threshold, replaces the domain result
/// by the margin rule, skipped when no general decoder is free, never used
/// at threshold 0.
#[test]
fn fallback_pass() {
    let pcm = padded(&synth(Voice::Slt, "please send me the documents by email"));
    let mut cfg = config(phrases(), true);
    cfg.fallback_below = 2.0;
    cfg.fallback_margin = -1.0;
    let always = PocketSphinx::new(cfg.clone()).unwrap();
    let general = feed(always.start_general().unwrap(), &pcm).0;
    assert_eq!(general.text, "please send me the documents by email");
    assert_eq!(recognise(&always, &pcm).text, general.text);
    // All general decoders busy: the domain result stands.
    let busy = always.start_general().unwrap();
    let domain = recognise(&always, &pcm);
    assert_ne!(domain.text, general.text);
    drop(busy);
    assert_eq!(recognise(&always, &pcm).text, general.text);
    drop(always);

    cfg.fallback_below = 0.0;
    let never = PocketSphinx::new(cfg).unwrap();
    assert_eq!(recognise(&never, &pcm).text, domain.text);
}

/// Without phrases the general model is the primary one.
#[test]
fn general_model_without_phrases() {
    let mut cfg = config(vec![], true);
    cfg.decoders = 1;
    let stt = PocketSphinx::new(cfg).unwrap();
    assert_eq!(stt.pool_size(), 1);
    assert!(stt.report().vocabulary == 0 && stt.report().guessed.is_empty());
    let pcm = padded(&synth(Voice::Slt, "the weather is very nice today"));
    let got = recognise(&stt, &pcm);
    assert_eq!(got.text, "the weather is very nice today");
    assert!(got.is_final && got.confidence > 0.5, "{got:?}");
}

/// Frames of any size are taken; a stream dropped half-way (barge-in)
/// returns its decoder in a usable state.
#[test]
fn odd_frames_and_abandoned_streams() {
    let mut cfg = config(phrases(), false);
    cfg.decoders = 1;
    let stt = PocketSphinx::new(cfg).unwrap();
    let pcm = padded(&synth(Voice::Kal, "what is the price"));
    let mut stream = stt.start(&SttHints::default()).unwrap();
    let sizes = [0usize, 1, 160, 320, 479, 1000];
    let mut at = 0;
    for size in sizes.iter().cycle() {
        if at >= pcm.len() {
            break;
        }
        let end = (at + size).min(pcm.len());
        stream.push(&pcm[at..end]).unwrap();
        at = end;
    }
    assert_eq!(stream.finish().unwrap().text, "what is the price");
    for cut in [1, pcm.len() / 2] {
        let mut stream = stt.start(&SttHints::default()).unwrap();
        for frame in pcm[..cut].chunks(FRAME_SAMPLES) {
            stream.push(frame).unwrap();
        }
        drop(stream);
        assert_eq!(stt.idle_decoders(), 1);
        assert_eq!(recognise(&stt, &pcm).text, "what is the price");
    }
}

/// WAV files at any rate and channel count; unreadable files are a
/// configuration error naming the file.
#[test]
fn transcribes_wav_files() {
    let stt = engine(phrases(), false);
    let dir = tempfile::tempdir().unwrap();
    // flite's kal voice writes 8 kHz mono.
    let kal = dir.path().join("kal.wav");
    let status = Command::new("flite")
        .args([
            "-voice",
            "kal",
            "-t",
            "book a site visit for tomorrow",
            "-o",
        ])
        .arg(&kal)
        .status()
        .unwrap_or_else(|e| panic!("cannot run flite ({e}): apt-get install flite"));
    assert!(status.success());
    let got = transcribe_wav(&stt, &kal).unwrap();
    assert_eq!(got.text, "book a site visit for tomorrow");
    assert!(got.is_final);
    // 44.1 kHz stereo, 24-bit.
    let mono = resample_all(&synth(Voice::Slt, "what is the price"), 16_000, 44_100).unwrap();
    let stereo = dir.path().join("stereo.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 24,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&stereo, spec).unwrap();
    for &s in &mono {
        writer.write_sample(i32::from(s) << 8).unwrap();
        writer.write_sample(i32::from(s) << 8).unwrap();
    }
    writer.finalize().unwrap();
    assert_eq!(
        transcribe_wav(&stt, &stereo).unwrap().text,
        "what is the price"
    );
    let missing = dir.path().join("missing.wav");
    let err = transcribe_wav(&stt, &missing).unwrap_err();
    assert!(matches!(err, AgentError::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.wav"), "{err}");
}

/// In-domain sentences: the phrases and two paraphrases.
const PARAPHRASES: [&str; 2] = [
    "I need a three bedroom flat in Whitefield",
    "can I book a site visit on Saturday",
];

/// Sentences the phrases do not cover.
const OUT_OF_DOMAIN: [&str; 4] = [
    "the weather is very nice today",
    "please send me the documents by email",
    "I would like to speak to a manager",
    "do you have any parking",
];

/// Errors and reference words, per system.
#[derive(Default, Clone, Copy)]
struct Tally {
    errors: usize,
    words: usize,
    decode_secs: f64,
}

impl Tally {
    fn add(&mut self, reference: &[String], got: &str, secs: f64) -> usize {
        let errors = word_errors(reference, &words(got));
        self.errors += errors;
        self.words += reference.len();
        self.decode_secs += secs;
        errors
    }

    fn wer(&self) -> f64 {
        100.0 * self.errors as f64 / self.words.max(1) as f64
    }
}

/// Word error rates of three systems — the domain model alone, the domain
/// model with the general-model fallback (the default), the general model
/// alone — on both voices, clean and over μ-law, in-domain and out of
/// domain, and their decode time per second of audio. Utterances come in a
/// shuffled order, as calls share the decoders. Prints a table with
/// `--nocapture`.
#[test]
fn word_error_rates() {
    let domain_only = engine(phrases(), false);
    let with_fallback = engine(phrases(), true);
    let mut cases = Vec::new();
    for voice in [Voice::Slt, Voice::Kal] {
        let all = PHRASES.iter().chain(&PARAPHRASES).map(|s| (s, true));
        for (sentence, in_domain) in all.chain(OUT_OF_DOMAIN.iter().map(|s| (s, false))) {
            let clean = padded(&synth(voice, sentence));
            let line = phone_line(&clean);
            cases.push((voice, "clean", *sentence, in_domain, clean));
            cases.push((voice, "μ-law", *sentence, in_domain, line));
        }
    }
    fastrand::Rng::with_seed(7).shuffle(&mut cases);

    // [in-domain, out-of-domain] × [voice × line] for each system.
    let mut tallies = [[[Tally::default(); 4]; 2]; 3];
    let mut audio_secs = [0.0f64; 2];
    let mut finish_ms: [Vec<f64>; 3] = Default::default();
    let mut rows = Vec::new();
    for (voice, line, sentence, in_domain, pcm) in &cases {
        let reference = words(sentence);
        let scope = usize::from(!in_domain);
        let cell = usize::from(*voice == Voice::Kal) * 2 + usize::from(*line != "clean");
        audio_secs[scope] += pcm.len() as f64 / f64::from(SAMPLE_RATE);
        let mut row = format!("{:>3} {line} {sentence:55}", voice.name());
        let hints = SttHints::default();
        let systems: [&dyn Fn() -> (Transcript, Vec<Transcript>, Duration); 3] = [
            &|| feed_timed(domain_only.start(&hints).unwrap(), pcm),
            &|| feed_timed(with_fallback.start(&hints).unwrap(), pcm),
            &|| feed_timed(with_fallback.start_general().unwrap(), pcm),
        ];
        for (system, run) in systems.iter().enumerate() {
            let started = Instant::now();
            let (got, _, finish) = run();
            let secs = started.elapsed().as_secs_f64();
            finish_ms[system].push(finish.as_secs_f64() * 1e3);
            let errors = tallies[system][scope][cell].add(&reference, &got.text, secs);
            row.push_str(&format!(" | {errors} {:.2} {:?}", got.confidence, got.text));
        }
        rows.push(row);
    }
    rows.sort();
    eprintln!(
        "voice line sentence | errors confidence transcript: domain only | domain + fallback | general only"
    );
    for row in &rows {
        eprintln!("{row}");
    }
    let names = ["domain only", "domain + fallback", "general only"];
    let cells = ["slt clean", "slt μ-law", "kal clean", "kal μ-law"];
    let mut totals = [[Tally::default(); 2]; 3];
    for (system, name) in names.iter().enumerate() {
        for (scope, scope_name) in ["in-domain", "out-of-domain"].iter().enumerate() {
            let mut line = format!("WER {name:17} {scope_name:13}");
            for (cell, cell_name) in cells.iter().enumerate() {
                let t = tallies[system][scope][cell];
                line.push_str(&format!(" {cell_name} {:5.1}%", t.wer()));
                let total = &mut totals[system][scope];
                total.errors += t.errors;
                total.words += t.words;
                total.decode_secs += t.decode_secs;
            }
            let total = totals[system][scope];
            line.push_str(&format!(
                " | all {:5.1}% | {:.3} s per s of audio",
                total.wer(),
                total.decode_secs / audio_secs[scope]
            ));
            eprintln!("{line}");
        }
    }
    for (system, name) in names.iter().enumerate() {
        let times = &mut finish_ms[system];
        times.sort_by(f64::total_cmp);
        eprintln!(
            "finish {name:17}: median {:.1} ms, 90th percentile {:.1} ms, max {:.1} ms",
            times[times.len() / 2],
            times[times.len() * 9 / 10],
            times[times.len() - 1]
        );
    }
    let [domain, fallback, general] = totals;
    assert!(
        domain[0].wer() <= 6.0,
        "in-domain WER {:.1}%",
        domain[0].wer()
    );
    assert!(
        fallback[0].wer() <= 6.0,
        "in-domain WER with fallback {:.1}%",
        fallback[0].wer()
    );
    assert!(
        domain[0].wer() * 3.0 < general[0].wer(),
        "the domain model helps in-domain"
    );
    assert!(
        fallback[1].wer() < domain[1].wer(),
        "the fallback helps out of domain"
    );
}

/// Resident memory the decoders take (Linux `/proc/self/statm`), printed
/// with `--nocapture`. Ignored by default: other tests running in parallel
/// would distort it.
#[test]
#[ignore]
fn memory_per_decoder() {
    fn rss_mib() -> f64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096.0 / (1024.0 * 1024.0)
    }
    // Domain decoders alone, then general decoders alone (no phrases).
    for (name, phrases, fallback) in [("domain", phrases(), false), ("general", vec![], true)] {
        for decoders in [1, 3] {
            let before = rss_mib();
            let started = Instant::now();
            let mut cfg = config(phrases.clone(), fallback);
            cfg.decoders = decoders;
            let stt = PocketSphinx::new(cfg).unwrap();
            let elapsed = started.elapsed();
            let after = rss_mib();
            eprintln!(
                "{name} decoders {decoders}: +{:.1} MiB resident, built in {:.0} ms",
                after - before,
                elapsed.as_secs_f64() * 1e3
            );
            drop(stt);
        }
    }
}
