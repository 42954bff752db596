//! Musical time of one `process()` piece, read from the host transport: beat positions of sample
//! offsets and the bar grid (time signature + where bars start) used to quantise captures and to
//! start generated sections on a bar line.

/// Tempo that is safe to divide by: hosts may report 0 or garbage before playback starts.
pub fn sane_bpm(bpm: f64) -> f64 {
    if bpm.is_finite() && bpm > 1.0 {
        bpm.min(999.0)
    } else {
        120.0
    }
}

/// Quarter-note beats in one bar of `num/den` (6/8 → 3.0). Nonsense signatures fall back to 4/4.
pub fn beats_per_bar(num: u8, den: u8) -> f64 {
    if num == 0 || den == 0 || !den.is_power_of_two() {
        return 4.0;
    }
    num as f64 * 4.0 / den as f64
}

/// Slack for comparing beat positions that went through float maths (a 64th of a tick at 960 PPQ).
const EPS: f64 = 1e-6;

/// The transport as one `process()` piece sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeline {
    pub playing: bool,
    /// Host position of the piece's first sample, in quarter-note beats.
    pub pos_beats: f64,
    pub tempo_bpm: f64,
    pub ts_num: u8,
    pub ts_den: u8,
    /// A beat position where a bar starts (the host's last bar start when it reports one).
    pub bar_anchor: f64,
    pub samples: u32,
    pub sample_rate: f64,
    /// The host's active loop `[start, end)` in beats, if it reports one.
    pub loop_range: Option<(f64, f64)>,
}

/// What the host reported for one block; any field may be missing (hosts differ).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostReport {
    pub playing: bool,
    pub tempo: Option<f64>,
    /// Time signature as written: (numerator, denominator).
    pub time_sig: (Option<i32>, Option<i32>),
    pub pos_beats: Option<f64>,
    pub pos_seconds: Option<f64>,
    pub bar_start_beats: Option<f64>,
    pub samples: u32,
    /// 0 (or anything not a rate) falls back to 48 kHz.
    pub sample_rate: f64,
}

impl Timeline {
    /// Builds the timeline from what the host reported; missing fields fall back to 120 bpm, 4/4,
    /// bars counted from beat 0, and (without a beat position) the seconds or samples position.
    pub fn from_host(host: HostReport) -> Self {
        let HostReport {
            playing,
            tempo,
            time_sig: ts,
            pos_beats,
            pos_seconds,
            bar_start_beats,
            samples,
            sample_rate,
        } = host;
        let tempo_bpm = sane_bpm(tempo.unwrap_or(120.0));
        let num = ts.0.filter(|n| (1..=64).contains(n)).unwrap_or(4) as u8;
        let den =
            ts.1.filter(|d| (1..=64).contains(d) && (*d as u32).is_power_of_two())
                .unwrap_or(4) as u8;
        let pos = pos_beats
            .or_else(|| pos_seconds.map(|s| s * tempo_bpm / 60.0))
            .filter(|p| p.is_finite())
            .unwrap_or(0.0);
        let anchor = bar_start_beats
            .filter(|b| b.is_finite() && *b <= pos + EPS)
            .unwrap_or(0.0);
        Self {
            playing,
            pos_beats: pos,
            tempo_bpm,
            ts_num: num,
            ts_den: den,
            bar_anchor: anchor,
            samples,
            sample_rate: if sample_rate.is_finite() && sample_rate > 0.0 {
                sample_rate
            } else {
                48_000.0
            },
            loop_range: None,
        }
    }

    /// The host's active loop (`Transport::loop_range_beats`); an empty or non-finite range is
    /// ignored.
    pub fn with_loop(mut self, range: Option<(f64, f64)>) -> Self {
        self.loop_range = range.filter(|(a, b)| a.is_finite() && b.is_finite() && a < b);
        self
    }

    /// The next bar line the transport will actually play at or after `beat`: [`Self::bar_ceil`],
    /// except inside an active loop whose end comes first, where the transport wraps before
    /// reaching that bar line: then the first bar line of the loop (its start when the loop is
    /// shorter than a bar).
    pub fn next_played_bar(&self, beat: f64) -> f64 {
        let next = self.bar_ceil(beat);
        match self.loop_range {
            Some((start, end)) if beat >= start - EPS && beat < end && next >= end - EPS => {
                let first = self.bar_ceil(start);
                if first < end - EPS { first } else { start }
            }
            _ => next,
        }
    }

    pub fn beats_per_bar(&self) -> f64 {
        beats_per_bar(self.ts_num, self.ts_den)
    }

    /// Beats per sample at the current tempo.
    pub fn beats_per_sample(&self) -> f64 {
        self.tempo_bpm / 60.0 / self.sample_rate
    }

    /// Beats the piece covers (0 while stopped).
    pub fn len_beats(&self) -> f64 {
        if self.playing {
            self.samples as f64 * self.beats_per_sample()
        } else {
            0.0
        }
    }

    pub fn end_beat(&self) -> f64 {
        self.pos_beats + self.len_beats()
    }

    /// Host beat of a sample offset inside the piece.
    pub fn beat_at(&self, offset: u32) -> f64 {
        if self.playing {
            self.pos_beats + offset.min(self.samples) as f64 * self.beats_per_sample()
        } else {
            self.pos_beats
        }
    }

    /// The bar line at or before `beat`.
    pub fn bar_floor(&self, beat: f64) -> f64 {
        let bpb = self.beats_per_bar();
        self.bar_anchor + ((beat - self.bar_anchor) / bpb + EPS).floor() * bpb
    }

    /// The bar line at or after `beat`.
    pub fn bar_ceil(&self, beat: f64) -> f64 {
        let bpb = self.beats_per_bar();
        self.bar_anchor + ((beat - self.bar_anchor) / bpb - EPS).ceil() * bpb
    }

    /// The bar line nearest to `beat` (ties go to the later one).
    pub fn bar_round(&self, beat: f64) -> f64 {
        let bpb = self.beats_per_bar();
        self.bar_anchor + ((beat - self.bar_anchor) / bpb + 0.5).floor() * bpb
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tl(pos: f64, num: i32, den: i32, bar_start: Option<f64>) -> Timeline {
        Timeline::from_host(HostReport {
            playing: true,
            tempo: Some(120.0),
            time_sig: (Some(num), Some(den)),
            pos_beats: Some(pos),
            bar_start_beats: bar_start,
            samples: 512,
            sample_rate: 48_000.0,
            ..HostReport::default()
        })
    }

    #[test]
    fn bar_grid_in_four_four() {
        let t = tl(5.3, 4, 4, Some(4.0));
        assert_eq!(t.bar_floor(5.3), 4.0);
        assert_eq!(t.bar_ceil(5.3), 8.0);
        assert_eq!(t.bar_ceil(8.0), 8.0);
        assert_eq!(t.bar_floor(8.0), 8.0);
        // Float noise just below a bar line still counts as on it.
        assert_eq!(t.bar_floor(8.0 - 1e-9), 8.0);
        assert_eq!(t.bar_round(9.9), 8.0);
        assert_eq!(t.bar_round(10.0), 12.0);
    }

    #[test]
    fn bar_grid_follows_the_hosts_bar_start_and_signature() {
        // 6/8 (3 quarter notes a bar) after a signature change that put a bar line at beat 7.
        let t = tl(8.0, 6, 8, Some(7.0));
        assert_eq!(t.beats_per_bar(), 3.0);
        assert_eq!(t.bar_floor(8.0), 7.0);
        assert_eq!(t.bar_ceil(8.0), 10.0);
        assert_eq!(t.bar_floor(6.5), 4.0);
    }

    #[test]
    fn sample_offsets_map_to_beats() {
        let t = tl(2.0, 4, 4, None);
        // 120 bpm at 48 kHz: 24 000 samples per beat.
        assert!((t.beat_at(256) - (2.0 + 256.0 / 24_000.0)).abs() < 1e-12);
        assert!((t.len_beats() - 512.0 / 24_000.0).abs() < 1e-12);
        let stopped = Timeline {
            playing: false,
            ..t
        };
        assert_eq!(stopped.beat_at(256), 2.0);
        assert_eq!(stopped.len_beats(), 0.0);
    }

    /// A trigger in a loop's last bar starts on the loop's first bar (where the transport goes
    /// next), not on the loop end it never reaches.
    #[test]
    fn next_played_bar_wraps_in_a_loop() {
        // Loop bars 3..7 (beats 8..24) in 4/4.
        let t = tl(8.0, 4, 4, None).with_loop(Some((8.0, 24.0)));
        assert_eq!(t.next_played_bar(9.0), 12.0);
        assert_eq!(t.next_played_bar(19.5), 20.0);
        assert_eq!(t.next_played_bar(20.0), 20.0);
        // The last bar (20..24): the next bar line is the loop end, never played.
        assert_eq!(t.next_played_bar(20.5), 8.0);
        assert_eq!(t.next_played_bar(23.99), 8.0);
        // Outside the loop (before it, or played past its end with the loop on): no change.
        assert_eq!(t.next_played_bar(5.0), 8.0);
        assert_eq!(t.next_played_bar(25.0), 28.0);
        // No loop: the plain next bar line.
        let plain = tl(8.0, 4, 4, None);
        assert_eq!(plain.next_played_bar(20.5), 24.0);
        // A loop starting mid-bar wraps to its first bar line; one shorter than a bar to its
        // start.
        let mid = tl(8.0, 4, 4, None).with_loop(Some((10.0, 18.0)));
        assert_eq!(mid.next_played_bar(17.0), 12.0);
        let short = tl(8.0, 4, 4, None).with_loop(Some((9.0, 11.0)));
        assert_eq!(short.next_played_bar(10.0), 9.0);
        // Nonsense ranges are ignored.
        assert_eq!(
            tl(8.0, 4, 4, None).with_loop(Some((24.0, 8.0))).loop_range,
            None
        );
        assert_eq!(
            tl(8.0, 4, 4, None)
                .with_loop(Some((f64::NAN, 8.0)))
                .loop_range,
            None
        );
    }

    #[test]
    fn missing_host_fields_fall_back() {
        let t = Timeline::from_host(HostReport {
            playing: true,
            time_sig: (None, Some(3)),
            pos_seconds: Some(1.5),
            samples: 64,
            sample_rate: 0.0,
            ..HostReport::default()
        });
        assert_eq!(t.tempo_bpm, 120.0);
        assert_eq!((t.ts_num, t.ts_den), (4, 4));
        assert_eq!(t.beats_per_bar(), 4.0);
        assert_eq!(t.pos_beats, 3.0);
        assert_eq!(t.sample_rate, 48_000.0);
        assert_eq!(beats_per_bar(7, 8), 3.5);
    }
}
