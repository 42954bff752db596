//! Musical time: the transport state the audio side publishes for the engine, the conversions
//! between beats, milliseconds and sample offsets, and detection of transport jumps.

use atomic_float::AtomicF64;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Milliseconds → quarter-note beats at a fixed tempo.
pub fn ms_to_beats(ms: f64, bpm: f64) -> f64 {
    ms / 60_000.0 * bpm
}

/// Quarter-note beats → milliseconds at a fixed tempo.
pub fn beats_to_ms(beats: f64, bpm: f64) -> f64 {
    beats * 60_000.0 / bpm
}

/// Quarter-note beats in one bar of `num/den` (6/8 → 3.0). Nonsense signatures fall back to 4/4.
pub fn beats_per_bar(num: u8, den: u8) -> f64 {
    if num == 0 || den == 0 || !den.is_power_of_two() {
        return 4.0;
    }
    num as f64 * 4.0 / den as f64
}

/// Tempo that is safe to divide by: hosts may report 0 or garbage before playback starts.
pub fn sane_bpm(bpm: f64) -> f64 {
    if bpm.is_finite() && bpm > 1.0 {
        bpm.min(999.0)
    } else {
        120.0
    }
}

/// What one `process()` call (or piece of one, when the host splits blocks) covers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransportFrame {
    pub playing: bool,
    /// Host position at the block's first sample, in quarter-note beats.
    pub pos_beats: f64,
    pub tempo_bpm: f64,
    pub samples: u32,
    pub sample_rate: f64,
}

impl TransportFrame {
    /// Beats covered by the block (0 while stopped).
    pub fn len_beats(&self) -> f64 {
        if !self.playing || self.sample_rate <= 0.0 || !self.sample_rate.is_finite() {
            return 0.0;
        }
        self.samples as f64 / self.sample_rate * sane_bpm(self.tempo_bpm) / 60.0
    }

    pub fn block(&self) -> BlockTiming {
        BlockTiming {
            start_beat: self.pos_beats,
            end_beat: self.pos_beats + self.len_beats(),
            samples: self.samples,
        }
    }
}

/// A block's span of musical time, `[start_beat, end_beat)`, and its length in samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockTiming {
    pub start_beat: f64,
    pub end_beat: f64,
    pub samples: u32,
}

impl BlockTiming {
    /// Is `beat` due within this block (or before it)?
    pub fn is_due(&self, beat: f64) -> bool {
        beat < self.end_beat
    }

    /// Sample offset of `beat` inside the block, clamped to the block (late events land on 0).
    pub fn offset_of(&self, beat: f64) -> u32 {
        let len = self.end_beat - self.start_beat;
        if self.samples == 0 || len <= 0.0 || !beat.is_finite() {
            return 0;
        }
        let frac = ((beat - self.start_beat) / len).clamp(0.0, 1.0);
        // The epsilon keeps an event exactly on a sample from landing one early through rounding.
        ((frac * self.samples as f64 + 1e-6).floor() as u32).min(self.samples - 1)
    }
}

/// Transport state written by the audio side every block and read by the engine. Atomics rather
/// than ring messages: the engine always sees the newest position, and a full ring cannot lose a
/// relocation.
#[derive(Debug)]
pub struct SharedTransport {
    playhead: AtomicF64,
    tempo: AtomicF64,
    playing: AtomicBool,
    /// Bumped on every relocation (jump, loop, stop, start): events scheduled under an older
    /// epoch are stale.
    epoch: AtomicU32,
}

impl Default for SharedTransport {
    fn default() -> Self {
        Self {
            playhead: AtomicF64::new(0.0),
            tempo: AtomicF64::new(120.0),
            playing: AtomicBool::new(false),
            epoch: AtomicU32::new(0),
        }
    }
}

/// One consistent reading of [`SharedTransport`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransportReading {
    pub playhead: f64,
    pub tempo_bpm: f64,
    pub playing: bool,
    pub epoch: u32,
}

impl SharedTransport {
    /// Position, tempo and play state; called by the audio side each block.
    pub(crate) fn publish(&self, playhead: f64, tempo: f64, playing: bool) {
        self.playhead.store(playhead, Ordering::Relaxed);
        self.tempo.store(sane_bpm(tempo), Ordering::Relaxed);
        self.playing.store(playing, Ordering::Relaxed);
    }

    /// Called after `publish` with the relocated position, so whoever sees the new epoch
    /// (acquire) also sees the position it belongs to.
    pub(crate) fn bump_epoch(&self) -> u32 {
        self.epoch.fetch_add(1, Ordering::Release).wrapping_add(1)
    }

    pub fn read(&self) -> TransportReading {
        let epoch = self.epoch.load(Ordering::Acquire);
        TransportReading {
            playhead: self.playhead.load(Ordering::Relaxed),
            tempo_bpm: self.tempo.load(Ordering::Relaxed),
            playing: self.playing.load(Ordering::Relaxed),
            epoch,
        }
    }
}

/// What changed between the previous block and this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportChange {
    /// Playing on from where the previous block ended (or still stopped).
    Continuous,
    Started,
    Stopped,
    /// The position is not where the previous block ended: a locate, a loop wrap, a scrub.
    Jumped,
}

impl TransportChange {
    /// Whether queued events no longer fit the timeline.
    pub fn relocates(self) -> bool {
        self != TransportChange::Continuous
    }
}

/// Compares each block's position with where the previous block ended.
#[derive(Debug, Clone, Copy)]
pub struct TransportTracker {
    expected: Option<f64>,
    was_playing: bool,
    /// Positions off by more than this many beats count as a jump. Tempo ramps make host positions
    /// drift slightly from a per-block extrapolation; a real locate is far larger.
    pub tolerance_beats: f64,
}

impl Default for TransportTracker {
    fn default() -> Self {
        Self {
            expected: None,
            was_playing: false,
            tolerance_beats: 1.0 / 64.0,
        }
    }
}

impl TransportTracker {
    pub fn observe(&mut self, frame: &TransportFrame) -> TransportChange {
        let change = match (self.was_playing, frame.playing) {
            (false, false) => TransportChange::Continuous,
            (false, true) => TransportChange::Started,
            (true, false) => TransportChange::Stopped,
            (true, true) => match self.expected {
                Some(exp) if (frame.pos_beats - exp).abs() <= self.tolerance_beats => {
                    TransportChange::Continuous
                }
                _ => TransportChange::Jumped,
            },
        };
        self.was_playing = frame.playing;
        self.expected = if frame.playing {
            Some(frame.pos_beats + frame.len_beats())
        } else {
            None
        };
        change
    }

    /// Forget the history (plugin reset/deactivate): the next playing block counts as a start.
    pub fn reset(&mut self) {
        self.expected = None;
        self.was_playing = false;
    }
}

/// The live modes' time line on the audio side: the host's transport while it plays, the audio
/// samples otherwise ("live use with no transport running"). Feed each block's host frame
/// through [`LiveClock::frame`] and hand the result to `AudioSide::process_block`: while the
/// host is stopped the clock runs on from where the host last was, at the host's tempo, so
/// the engine's playhead keeps moving and live notes play; when the host starts again its
/// position takes over (a relocation, as any jump). Copies a few numbers; allocation-free.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LiveClock {
    /// The beat the next block starts at while the host is stopped.
    next_beat: f64,
}

impl LiveClock {
    pub fn new(start_beat: f64) -> LiveClock {
        LiveClock {
            next_beat: if start_beat.is_finite() {
                start_beat
            } else {
                0.0
            },
        }
    }

    /// The frame the engine should see for this block.
    pub fn frame(&mut self, host: &TransportFrame) -> TransportFrame {
        if host.playing {
            let end = host.pos_beats + host.len_beats();
            if end.is_finite() {
                self.next_beat = end;
            }
            return *host;
        }
        let frame = TransportFrame {
            playing: true,
            pos_beats: self.next_beat,
            ..*host
        };
        self.next_beat += frame.len_beats();
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_clock_runs_on_audio_samples_while_the_host_is_stopped() {
        let frame = |playing, pos_beats| TransportFrame {
            playing,
            pos_beats,
            tempo_bpm: 120.0,
            samples: 24_000,
            sample_rate: 48_000.0,
        };
        let mut clock = LiveClock::new(0.0);
        // Playing: the host's frame as it is.
        assert_eq!(clock.frame(&frame(true, 8.0)), frame(true, 8.0));
        // Stopped: half a second (one beat) per block from where the host got to.
        let a = clock.frame(&frame(false, 3.0));
        assert!(a.playing && a.pos_beats == 9.0);
        let b = clock.frame(&frame(false, 3.0));
        assert_eq!(b.pos_beats, 10.0);
        assert_eq!(
            TransportTracker::default().observe(&a),
            TransportChange::Started
        );
        // The host plays again: its position takes over.
        assert_eq!(clock.frame(&frame(true, 0.0)).pos_beats, 0.0);
        assert_eq!(clock.frame(&frame(false, 0.0)).pos_beats, 1.0);
    }

    fn frame(playing: bool, pos: f64, tempo: f64) -> TransportFrame {
        TransportFrame {
            playing,
            pos_beats: pos,
            tempo_bpm: tempo,
            samples: 512,
            sample_rate: 48_000.0,
        }
    }

    #[test]
    fn conversions() {
        assert_eq!(ms_to_beats(500.0, 120.0), 1.0);
        assert_eq!(beats_to_ms(2.0, 120.0), 1000.0);
        assert_eq!(beats_per_bar(6, 8), 3.0);
        assert_eq!(beats_per_bar(3, 0), 4.0);
        assert_eq!(beats_per_bar(3, 3), 4.0);
        assert_eq!(sane_bpm(0.0), 120.0);
        assert_eq!(sane_bpm(f64::NAN), 120.0);
        let b = frame(true, 10.0, 120.0).block();
        assert!((b.end_beat - b.start_beat - 512.0 / 48_000.0 * 2.0).abs() < 1e-12);
        assert_eq!(b.offset_of(10.0), 0);
        assert_eq!(b.offset_of(9.0), 0);
        assert_eq!(
            b.offset_of(b.start_beat + (b.end_beat - b.start_beat) / 2.0),
            256
        );
        assert_eq!(b.offset_of(b.end_beat + 1.0), 511);
        assert_eq!(frame(false, 3.0, 120.0).block().offset_of(3.0), 0);
    }

    #[test]
    fn tracker_sees_starts_stops_and_jumps() {
        let mut t = TransportTracker::default();
        assert_eq!(
            t.observe(&frame(false, 0.0, 120.0)),
            TransportChange::Continuous
        );
        let f = frame(true, 0.0, 120.0);
        assert_eq!(t.observe(&f), TransportChange::Started);
        let next = frame(true, f.block().end_beat, 120.0);
        assert_eq!(t.observe(&next), TransportChange::Continuous);
        // Tempo change between blocks: still continuous, the extrapolation used the old block's tempo.
        let next2 = frame(true, next.block().end_beat, 90.0);
        assert_eq!(t.observe(&next2), TransportChange::Continuous);
        // Loop wrap.
        assert_eq!(t.observe(&frame(true, 0.0, 90.0)), TransportChange::Jumped);
        assert_eq!(
            t.observe(&frame(false, 0.1, 90.0)),
            TransportChange::Stopped
        );
        assert_eq!(
            t.observe(&frame(false, 0.1, 90.0)),
            TransportChange::Continuous
        );
    }

    #[test]
    fn epoch_bump_publishes_position() {
        let s = SharedTransport::default();
        s.publish(8.0, 100.0, true);
        let e = s.bump_epoch();
        let r = s.read();
        assert_eq!(r.epoch, e);
        assert_eq!(r.playhead, 8.0);
        assert_eq!(r.tempo_bpm, 100.0);
        assert!(r.playing);
    }
}
