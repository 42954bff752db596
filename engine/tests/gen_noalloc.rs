//! `Generator::step` on the fast backend allocates nothing: a counting global allocator watches
//! the calling thread over many decode steps of both checkpoint kinds and every weight format.
//! (Its own test binary: the allocator is global.)

mod gen_support;

use candle_core::Device;
use gen_support::{prompt_song, write_checkpoint_of};
use staria_engine::generate::{Backend, BackendChoice, GenRequest, Generator, GeneratorOptions};
use staria_engine::generate::{Snippets, Target};
use staria_models::SectionLabel;
use staria_models::fast::WeightFormat;
use staria_models::model::ModelKind;
use staria_test_support::{CountingAlloc, count_allocs};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn fast_generator_step_never_allocates() {
    let song = prompt_song();
    let mut snippets = Snippets::default();
    snippets.set(
        SectionLabel::A,
        song.notes
            .iter()
            .filter(|n| n.start_ms < 4000.0)
            .copied()
            .collect(),
    );
    for kind in [ModelKind::Decoder, ModelKind::Staria] {
        let dir = tempfile::tempdir().unwrap();
        write_checkpoint_of(dir.path(), kind, 4);
        for weights in WeightFormat::ALL {
            let opts = GeneratorOptions {
                backend: BackendChoice::Fast,
                weights,
            };
            let mut g = Generator::load_with(dir.path(), &Device::Cpu, &opts).unwrap();
            assert_eq!(g.backend(), Backend::Fast);
            let req = GenRequest::new(Target::Section(SectionLabel::A), 2, 120.0);
            let prompt = g.prompt_for(&snippets, &req).unwrap();
            g.begin(&prompt).unwrap();
            // Feed a plausible stream: the section tag, then time shifts and notes' tokens.
            let tok = g.tokenizer().clone();
            let ids: Vec<u32> = std::iter::once(tok.section_id(SectionLabel::A))
                .chain((0..300u32).map(|i| {
                    if i % 7 == 0 {
                        tok.time_shift_id()
                    } else {
                        (i * 37) % tok.vocab_size() as u32
                    }
                }))
                .collect();
            let start = g.position();
            let (sum, allocs) = count_allocs(|| {
                let mut sum = 0.0f32;
                for &id in &ids {
                    let logits = g.step(id).unwrap();
                    sum += logits[id as usize];
                }
                sum
            });
            assert!(sum.is_finite());
            assert_eq!(g.position(), start + ids.len());
            assert_eq!(
                allocs,
                0,
                "{kind} {weights:?}: {allocs} allocations in {} steps",
                ids.len()
            );
        }
    }
}

#[test]
fn the_counter_sees_allocations() {
    // The watch works: a Vec on this thread is counted.
    let (v, allocs) = count_allocs(|| vec![1u8; 100]);
    assert_eq!(v.len(), 100);
    assert!(allocs >= 1);
}
