//! The snippets shared between the audio thread and the state save/load calls: sequence-locked
//! slots (`published`, `restore`) and the saved (serde) form.

use super::*;

/// One section's snippet behind a sequence lock. Exactly one thread may write a given slot.
pub struct SnippetSlot {
    seq: AtomicU32,
    head: AtomicU64,
    length_ticks: AtomicU32,
    notes: Box<[AtomicU64]>,
}

impl Default for SnippetSlot {
    fn default() -> Self {
        Self {
            seq: AtomicU32::new(0),
            head: AtomicU64::new(SnippetData::default().head()),
            length_ticks: AtomicU32::new(0),
            notes: (0..MAX_SNIPPET_NOTES).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl SnippetSlot {
    /// Single writer only. Never blocks, never allocates.
    pub fn write(&self, data: &SnippetData) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.head.store(data.head(), Ordering::Relaxed);
        self.length_ticks
            .store(data.length_ticks, Ordering::Relaxed);
        for (slot, note) in self.notes.iter().zip(data.notes()) {
            slot.store(note.pack(), Ordering::Relaxed);
        }
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// One attempt at a consistent read; `false` if the writer was busy (try again later).
    /// Never blocks, never allocates.
    pub fn try_read(&self, out: &mut SnippetData) -> bool {
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 & 1 == 1 {
            return false;
        }
        out.set_head(self.head.load(Ordering::Relaxed));
        out.length_ticks = self.length_ticks.load(Ordering::Relaxed);
        for (note, slot) in out.notes[..out.count].iter_mut().zip(self.notes.iter()) {
            *note = SnippetNote::unpack(slot.load(Ordering::Relaxed));
        }
        fence(Ordering::Acquire);
        self.seq.load(Ordering::Relaxed) == s1
    }

    /// Reads until consistent (for non-audio threads; the writer holds the slot for microseconds).
    pub fn read(&self, out: &mut SnippetData) {
        let mut spins = 0u32;
        while !self.try_read(out) {
            spins += 1;
            if spins > 64 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// The saved form of one note: beats from the snippet's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedNote {
    pub pitch: u8,
    pub velocity: u8,
    pub start: f64,
    pub length: f64,
}

/// The saved form of one section's snippet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSnippet {
    /// 'A'..'D'.
    pub section: char,
    pub bars: u32,
    pub ts_num: u8,
    pub ts_den: u8,
    pub length_beats: f64,
    pub notes: Vec<SavedNote>,
}

/// What the plugin state holds: the non-empty sections.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SavedSnippets {
    pub sections: Vec<SavedSnippet>,
    /// Set only on the way in, when parts of a saved state did not read
    /// ([`crate::saved_state::check_fields`]); never saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_notice: Option<String>,
}

impl SavedSnippets {
    pub fn get(&self, section: SectionLabel) -> Option<&SavedSnippet> {
        self.sections.iter().find(|s| s.section == section.letter())
    }
}

/// The persisted snippet store shared by the parameters object (state save/load, main thread)
/// and the audio thread.
pub struct SnippetStore {
    published: [SnippetSlot; 4],
    restore: [SnippetSlot; 4],
    restore_gen: AtomicU64,
    applied_gen: AtomicU64,
    /// Bumped whenever `published` changes.
    changes: AtomicU64,
    /// What a state load could not read, until the status has shown it (main and monitor
    /// threads only).
    load_notice: parking_lot::Mutex<Option<String>>,
}

impl Default for SnippetStore {
    fn default() -> Self {
        Self {
            published: Default::default(),
            restore: Default::default(),
            restore_gen: AtomicU64::new(0),
            applied_gen: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            load_notice: parking_lot::Mutex::new(None),
        }
    }
}

impl SnippetStore {
    /// What the last state load could not read (once; the monitor puts it in the status).
    pub fn take_load_notice(&self) -> Option<String> {
        self.load_notice.lock().take()
    }

    /// Audio thread: publish a section's snippet (a finished capture or a clear).
    pub fn publish(&self, section: SectionLabel, data: &SnippetData) {
        self.published[section.index()].write(data);
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// Audio thread: copy a pending state restore into the published bank. Returns `true` when a
    /// restore was applied (the caller then hands the snippets to the engine). `scratch` is the
    /// caller's preallocated buffer. Never blocks or allocates; a restore that is being written
    /// right now is picked up on a later call.
    pub fn apply_restore(&self, scratch: &mut SnippetData) -> bool {
        let generation = self.restore_gen.load(Ordering::Acquire);
        if generation == self.applied_gen.load(Ordering::Relaxed) {
            return false;
        }
        for (restore, published) in self.restore.iter().zip(&self.published) {
            if !restore.try_read(scratch) {
                return false;
            }
            published.write(scratch);
        }
        self.applied_gen.store(generation, Ordering::Release);
        self.changes.fetch_add(1, Ordering::Release);
        true
    }

    /// Audio thread: one attempt at reading a published section (the audio thread is its only
    /// writer, so this always succeeds there).
    pub fn try_read_published(&self, section: SectionLabel, out: &mut SnippetData) -> bool {
        self.published[section.index()].try_read(out)
    }

    /// How many times the published snippets changed (for a GUI or a test to notice).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Any thread but the audio thread: the current snippets (a restore not yet applied by the
    /// audio thread counts as current).
    pub fn snapshot(&self) -> SavedSnippets {
        let pending =
            self.restore_gen.load(Ordering::Acquire) != self.applied_gen.load(Ordering::Acquire);
        let bank = if pending {
            &self.restore
        } else {
            &self.published
        };
        let mut data = Box::<SnippetData>::default();
        let mut out = SavedSnippets::default();
        for (section, slot) in SectionLabel::ALL.into_iter().zip(bank) {
            slot.read(&mut data);
            if !data.is_empty() {
                out.sections.push(data.to_saved(section));
            }
        }
        out
    }
}

impl<'a> PersistentField<'a, SavedSnippets> for SnippetStore {
    /// State load (main thread): stage the snippets for the audio thread.
    fn set(&self, new_value: SavedSnippets) {
        if let Some(notice) = &new_value.load_notice {
            *self.load_notice.lock() = Some(notice.clone());
        }
        let mut data = Box::<SnippetData>::default();
        for (section, slot) in SectionLabel::ALL.into_iter().zip(&self.restore) {
            match new_value.get(section) {
                Some(saved) => *data = SnippetData::from_saved(saved),
                None => data.clear(),
            }
            slot.write(&data);
        }
        self.restore_gen.fetch_add(1, Ordering::AcqRel);
    }

    fn map<F, R>(&self, f: F) -> R
    where
        F: Fn(&SavedSnippets) -> R,
    {
        f(&self.snapshot())
    }
}
