//! A checkpoint's `prompt_velocity`: the engine hands the model every snippet note at the
//! velocity its training corpus carries, whatever the musician played (a model follows only
//! snippets at velocities it was trained on); without it, snippets go in as played.

mod gen_support;

use gen_support::{note, write_checkpoint};
use staria_engine::generate::{Flow, GenRequest, GeneratedNote, Generator, Snippets, Target};
use staria_models::SectionLabel;
use staria_models::checkpoint::CONFIG_FILE;

/// A rising scale at one velocity, as section A.
fn scale_at(velocity: u8) -> Snippets {
    let mut s = Snippets::default();
    let notes = [60u8, 62, 64, 65, 67, 69, 71, 72]
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let mut n = note(p, i as f64 * 250.0, 200.0);
            n.velocity = velocity;
            n
        })
        .collect();
    s.set(SectionLabel::A, notes);
    s
}

fn prompt(g: &Generator, velocity: u8) -> Vec<u32> {
    let req = GenRequest::new(Target::Section(SectionLabel::A), 2, 120.0);
    g.prompt_for(&scale_at(velocity), &req).unwrap().inline
}

/// Two tiny checkpoints with the same weights: the first without `prompt_velocity`, the second
/// at 80.
fn generators(tmp: &std::path::Path) -> (Generator, Generator) {
    let (as_played, at_80) = (tmp.join("as-played"), tmp.join("at-80"));
    write_checkpoint(&as_played, 3);
    write_checkpoint(&at_80, 3);
    let config = at_80.join(CONFIG_FILE);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["prompt_velocity"] = serde_json::json!(80);
    std::fs::write(&config, serde_json::to_string_pretty(&json).unwrap()).unwrap();

    (
        Generator::load(&as_played, &candle_core::Device::Cpu).unwrap(),
        Generator::load(&at_80, &candle_core::Device::Cpu).unwrap(),
    )
}

/// `Continue` from a context played at `velocity` (seeded).
fn continued(g: &mut Generator, velocity: u8) -> Vec<GeneratedNote> {
    let s = Snippets {
        context: (0..12)
            .map(|i| {
                let mut n = note(60 + (i % 5) as u8 * 2, i as f64 * 400.0, 380.0);
                n.velocity = velocity;
                n
            })
            .collect(),
        ..Snippets::default()
    };
    let mut req = GenRequest::new(Target::Continue, 2, 120.0);
    req.sampling.seed = 5;
    req.constraints.max_polyphony = Some(3);
    let mut notes = Vec::new();
    g.generate(&s, &req, &mut |n| {
        notes.push(n);
        Flow::Continue
    })
    .unwrap();
    notes
}

#[test]
fn snippets_reach_the_model_at_the_checkpoints_prompt_velocity() {
    let tmp = tempfile::tempdir().unwrap();
    let (as_played, at_80) = generators(tmp.path());
    // Without the setting the velocity played is in the prompt...
    assert_ne!(prompt(&as_played, 100), prompt(&as_played, 80));
    // ...with it, a scale played at 100 or 30 reaches the model as the same scale at 80.
    let reference = prompt(&as_played, 80);
    assert_eq!(prompt(&at_80, 100), reference);
    assert_eq!(prompt(&at_80, 30), reference);
}

#[test]
fn a_continued_context_reaches_the_model_at_the_prompt_velocity_too() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut as_played, mut at_80) = generators(tmp.path());
    // As played, the context's velocity changes what comes next...
    assert_ne!(
        continued(&mut as_played, 110),
        continued(&mut as_played, 40)
    );
    // ...at the checkpoint's velocity it does not.
    assert_eq!(continued(&mut at_80, 110), continued(&mut at_80, 40));
}
