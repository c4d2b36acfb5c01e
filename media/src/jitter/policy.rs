//! Depth policies: how many frames the jitter buffer should hold.
//!
//! The buffer measures, for every arriving packet, how much later than the
//! fastest packet of the recent window it came (its *relative delay*, in
//! frames; see the module documentation of [`crate::jitter`]) and hands that
//! to a [`DepthPolicy`], which answers with a target depth.

use std::fmt;

/// Chooses the buffered depth from the delays packets arrive with.
pub trait DepthPolicy: Send + fmt::Debug {
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;

    /// One packet arrived `relative_delay_frames` frames later than the
    /// fastest packet of the buffer's delay window would have (≥ 0; late
    /// packets are reported too, they are what the depth is for).
    fn on_arrival(&mut self, relative_delay_frames: f32);

    /// Desired buffered depth in frames, ≥ 1. The buffer clamps it to its
    /// configured maximum as well.
    fn target_frames(&self) -> usize;

    /// Forgets everything learnt (the stream was resynchronised).
    fn reset(&mut self);
}

/// A constant target depth.
#[derive(Debug, Clone)]
pub struct FixedDepth {
    frames: usize,
}

impl FixedDepth {
    /// Always targets `frames` frames (at least one).
    pub fn new(frames: usize) -> Self {
        FixedDepth {
            frames: frames.max(1),
        }
    }
}

impl DepthPolicy for FixedDepth {
    fn name(&self) -> &'static str {
        "fixed"
    }

    fn on_arrival(&mut self, _relative_delay_frames: f32) {}

    fn target_frames(&self) -> usize {
        self.frames
    }

    fn reset(&mut self) {}
}

/// Target = ⌈p-th percentile of the relative delay over the last `window`
/// packets⌉ + 1 frame, clamped to `[1, max_frames]`.
///
/// The extra frame covers the granularity of playout (a packet that arrives
/// just after a 20 ms tick waits for the next one). Defaults: p = 0.95 and a
/// window of 250 packets (≈ 5 s of 20 ms packets), so a burst of delay
/// raises the target at once and is forgotten about 5 s after it ended.
///
/// Delays are kept as whole-frame bins (`⌈delay⌉`, with a 0.001-frame
/// tolerance for rounding) in a ring of the window plus a histogram: an
/// arrival is O(1) plus a walk over `max_frames + 1` bins, and nothing is
/// allocated after construction. Percentile by nearest rank: the smallest
/// bin holding at least ⌈p·n⌉ of the n samples.
#[derive(Debug, Clone)]
pub struct PercentileDepth {
    percentile: f32,
    max_frames: usize,
    /// Bins of the last `ring.len()` arrivals, oldest at `head` once full.
    ring: Vec<u16>,
    head: usize,
    len: usize,
    /// `hist[k]` = samples of the window whose bin is `k`; the last bin
    /// also holds everything larger.
    hist: Vec<u32>,
    target: usize,
}

impl PercentileDepth {
    /// Default percentile.
    pub const PERCENTILE: f32 = 0.95;
    /// Default window, in packets.
    pub const WINDOW: usize = 250;

    /// The default policy (95th percentile over 250 packets) capped at
    /// `max_frames`.
    pub fn new(max_frames: usize) -> Self {
        Self::with_params(Self::PERCENTILE, Self::WINDOW, max_frames)
    }

    /// A policy with its own percentile (clamped to `[0.01, 1]`), window
    /// (≥ 1 packet) and cap (≥ 1 frame, ≤ 1000).
    pub fn with_params(percentile: f32, window: usize, max_frames: usize) -> Self {
        let percentile = if percentile.is_nan() {
            Self::PERCENTILE
        } else {
            percentile.clamp(0.01, 1.0)
        };
        let max_frames = max_frames.clamp(1, 1000);
        PercentileDepth {
            percentile,
            max_frames,
            ring: vec![0; window.max(1)],
            head: 0,
            len: 0,
            hist: vec![0; max_frames + 1],
            target: 1,
        }
    }

    /// Samples currently in the window.
    pub fn samples(&self) -> usize {
        self.len
    }

    fn bin(&self, delay: f32) -> u16 {
        // NaN and negatives are "not delayed"; +∞ saturates.
        let d = if delay > 0.0 { delay } else { 0.0 };
        let b = (d - 0.001).ceil().max(0.0);
        b.min(self.max_frames as f32) as u16
    }

    fn recompute(&mut self) {
        if self.len == 0 {
            self.target = 1;
            return;
        }
        let rank = ((self.percentile * self.len as f32).ceil() as usize).clamp(1, self.len);
        let mut cum = 0usize;
        let mut bin = self.max_frames;
        for (k, &n) in self.hist.iter().enumerate() {
            cum += n as usize;
            if cum >= rank {
                bin = k;
                break;
            }
        }
        self.target = (bin + 1).clamp(1, self.max_frames);
    }
}

impl Default for PercentileDepth {
    /// The default policy capped at 10 frames (200 ms).
    fn default() -> Self {
        Self::new(10)
    }
}

impl DepthPolicy for PercentileDepth {
    fn name(&self) -> &'static str {
        "percentile"
    }

    fn on_arrival(&mut self, relative_delay_frames: f32) {
        let b = self.bin(relative_delay_frames);
        let cap = self.ring.len();
        if self.len == cap {
            let old = self.ring[self.head];
            self.hist[usize::from(old)] -= 1;
            self.ring[self.head] = b;
            self.head = (self.head + 1) % cap;
        } else {
            self.ring[(self.head + self.len) % cap] = b;
            self.len += 1;
        }
        self.hist[usize::from(b)] += 1;
        self.recompute();
    }

    fn target_frames(&self) -> usize {
        self.target
    }

    fn reset(&mut self) {
        self.head = 0;
        self.len = 0;
        self.hist.iter_mut().for_each(|n| *n = 0);
        self.target = 1;
    }
}
