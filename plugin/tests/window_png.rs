//! The editor window rendered off-screen: `staria_plugin::editor::draw` (the function the editor
//! calls every frame) run in a headless egui context with snippets in A and B, a model loaded
//! and section B playing; its triangles rasterised on the CPU here and checked: the image is not
//! blank, every pad is drawn, the captured notes appear in A's and B's piano rolls and not in
//! the empty C and D, the Model panel's *Built-in* list is drawn apart from the pads, with text.
//! `STARIA_WRITE_WINDOW_PNG=1` writes the render to `docs/plugin-window.png` (the README's
//! screenshot); otherwise the committed one is checked to be a PNG of this size.

use egui::epaint::{ClippedPrimitive, Color32, Primitive, TextureId};
use egui::{Rect, pos2, vec2};
use nice_plug::prelude::ParamSetter;
use staria_models::SectionLabel;
use staria_plugin::editor::no_host::NoHost;
use staria_plugin::editor::{
    self, DEFAULT_SIZE, EditorSize, MIN_SIZE, Shared, WindowState, palette,
};
use staria_plugin::gui_state::{GuiShared, LogEntry};
use staria_plugin::model_info::ModelFacts;
use staria_plugin::params::{StariaParams, StatusRecord};
use staria_plugin::snippets::{SnippetData, SnippetNote, TICKS_PER_BEAT};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The window's scale: a 1.5x (HiDPI) display.
const PIXELS_PER_POINT: f32 = 1.5;

/// A snippet of `bars` 4/4 bars from (beat, beats, pitch) notes.
fn snippet(bars: u16, notes: &[(f64, f64, u8)]) -> SnippetData {
    let mut d = SnippetData {
        bars,
        ts_num: 4,
        ts_den: 4,
        length_ticks: (bars as f64 * 4.0 * TICKS_PER_BEAT) as u32,
        ..SnippetData::default()
    };
    for &(start, len, pitch) in notes {
        d.notes[d.count] = SnippetNote {
            start_ticks: (start * TICKS_PER_BEAT) as u32,
            len_ticks: (len * TICKS_PER_BEAT) as u32,
            pitch,
            velocity: 96,
        };
        d.count += 1;
    }
    d
}

/// The state the screenshot shows: A (a rising phrase) and B (a chordal answer) captured, the
/// shipped model loaded, the transport in bar 6 with B playing from bar 5.
fn staged() -> Shared {
    let params = Arc::new(StariaParams::default());
    let (gui, mut tap) = GuiShared::new();
    let a: Vec<(f64, f64, u8)> = [
        60, 62, 64, 65, 67, 69, 71, 72, 71, 69, 67, 65, 64, 62, 60, 67,
    ]
    .iter()
    .enumerate()
    .map(|(i, &p)| (i as f64 * 0.5, 0.45, p))
    .collect();
    params.snippets.publish(SectionLabel::A, &snippet(2, &a));
    let mut b = Vec::new();
    for (bar, root) in [(0.0, 57u8), (4.0, 53)] {
        for (k, off) in [0u8, 3, 7].iter().enumerate() {
            b.push((bar, 2.0, root + off + 12 * (k == 0) as u8));
            b.push((bar + 2.0, 1.0, root + off + 12));
        }
        b.push((bar + 3.0, 1.0, root + 19));
    }
    params.snippets.publish(SectionLabel::B, &snippet(2, &b));
    let dir = staria_engine::default_model::resolve_model_dir(None).expect("the shipped model");
    let facts = ModelFacts::read(&dir).expect("the shipped model's facts");
    *params.status.write() = StatusRecord {
        model: facts.name.clone(),
        state: staria_engine::EngineState::Ready,
        last_error: String::new(),
    };
    *gui.model_facts.lock() = Some(facts);
    gui.publish(true, 21.25, 112.0, (4, 4), None, [false; 4], 3);
    gui.publish_section(Some(SectionLabel::B), 16.0, 48.0);
    // What the export panel counts: A played bars 1-4, B from bar 5.
    tap.push(LogEntry::TransportStart { beat: 0.0 });
    for (id, label, start) in [(1, SectionLabel::A, 0.0), (2, SectionLabel::B, 16.0)] {
        tap.push(LogEntry::Section {
            request_id: id,
            label: Some(label),
            start_beat: start,
            bars: 4,
            ts_num: 4,
            ts_den: 4,
            bpm: 112.0,
        });
        tap.begin_block(start, 1.0 / 24_000.0);
        for k in 0..8u8 {
            let mut n = staria_engine::NoteEvent {
                beat: start,
                request_id: id,
                epoch: 0,
                on: true,
                pitch: 60 + k,
                velocity: 90,
                channel: 1,
            };
            tap.note(k as u32 * 12_000, &n);
            n.on = false;
            tap.note(k as u32 * 12_000 + 6_000, &n);
        }
    }
    gui.set_walk_form(true);
    *params.export_folder.write() = "/home/me/Music/staria".into();
    Shared { params, gui }
}

struct Image {
    w: usize,
    h: usize,
    /// Premultiplied RGBA.
    px: Vec<[f32; 4]>,
}

impl Image {
    fn rgba8(&self) -> Vec<u8> {
        self.px
            .iter()
            .flat_map(|p| p.map(|c| (c.clamp(0.0, 1.0) * 255.0).round() as u8))
            .collect()
    }
    fn at(&self, x: usize, y: usize) -> [u8; 3] {
        let p = self.px[y * self.w + x];
        [0, 1, 2].map(|i| (p[i].clamp(0.0, 1.0) * 255.0).round() as u8)
    }
}

type Texture = (usize, usize, Vec<Color32>);

fn sample(tex: &Texture, u: f32, v: f32) -> [f32; 4] {
    let (w, h, px) = tex;
    let x = ((u * *w as f32) as isize).clamp(0, *w as isize - 1) as usize;
    let y = ((v * *h as f32) as isize).clamp(0, *h as isize - 1) as usize;
    let c = px[y * w + x];
    [c.r(), c.g(), c.b(), c.a()].map(|v| v as f32 / 255.0)
}

/// Rasterises egui's triangles: vertex colour x texture sample (premultiplied), blended
/// "premultiplied over" inside each primitive's clip rectangle.
fn rasterize(
    prims: &[ClippedPrimitive],
    textures: &HashMap<TextureId, Texture>,
    (w, h): (usize, usize),
    s: f32,
) -> Image {
    let bg = palette::BG;
    let mut img = Image {
        w,
        h,
        px: vec![[bg.r(), bg.g(), bg.b(), 255].map(|v| v as f32 / 255.0); w * h],
    };
    for prim in prims {
        let Primitive::Mesh(mesh) = &prim.primitive else {
            continue;
        };
        let Some(tex) = textures.get(&mesh.texture_id) else {
            continue;
        };
        let clip = prim.clip_rect;
        let (cx0, cy0) = ((clip.min.x * s).max(0.0), (clip.min.y * s).max(0.0));
        let (cx1, cy1) = (
            (clip.max.x * s).min(w as f32),
            (clip.max.y * s).min(h as f32),
        );
        for tri in mesh.indices.chunks_exact(3) {
            let v = [0, 1, 2].map(|i| mesh.vertices[tri[i] as usize]);
            let p = v.map(|v| (v.pos.x * s, v.pos.y * s));
            let area =
                (p[1].0 - p[0].0) * (p[2].1 - p[0].1) - (p[2].0 - p[0].0) * (p[1].1 - p[0].1);
            if area.abs() < 1e-9 {
                continue;
            }
            let x0 = p
                .iter()
                .map(|q| q.0)
                .fold(f32::MAX, f32::min)
                .max(cx0)
                .floor() as isize;
            let x1 = p
                .iter()
                .map(|q| q.0)
                .fold(f32::MIN, f32::max)
                .min(cx1)
                .ceil() as isize;
            let y0 = p
                .iter()
                .map(|q| q.1)
                .fold(f32::MAX, f32::min)
                .max(cy0)
                .floor() as isize;
            let y1 = p
                .iter()
                .map(|q| q.1)
                .fold(f32::MIN, f32::max)
                .min(cy1)
                .ceil() as isize;
            for y in y0.max(0)..y1.min(h as isize) {
                for x in x0.max(0)..x1.min(w as isize) {
                    let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                    if px < cx0 || px >= cx1 || py < cy0 || py >= cy1 {
                        continue;
                    }
                    let edge = |a: (f32, f32), b: (f32, f32)| {
                        ((b.0 - a.0) * (py - a.1) - (px - a.0) * (b.1 - a.1)) / area
                    };
                    let l0 = edge(p[1], p[2]);
                    let l1 = edge(p[2], p[0]);
                    let l2 = edge(p[0], p[1]);
                    if l0 < 0.0 || l1 < 0.0 || l2 < 0.0 {
                        continue;
                    }
                    let l = [l0, l1, l2];
                    let mix = |f: &dyn Fn(usize) -> f32| (0..3).map(|i| l[i] * f(i)).sum::<f32>();
                    let u = mix(&|i| v[i].uv.x);
                    let vv = mix(&|i| v[i].uv.y);
                    let t = sample(tex, u, vv);
                    let c = [0, 1, 2, 3].map(|k| {
                        mix(&|i| {
                            let c = v[i].color;
                            [c.r(), c.g(), c.b(), c.a()][k] as f32 / 255.0
                        }) * t[k]
                    });
                    let d = &mut img.px[y as usize * w + x as usize];
                    for k in 0..4 {
                        d[k] = c[k] + d[k] * (1.0 - c[3]);
                    }
                }
            }
        }
    }
    img
}

/// Renders the window as the editor draws it; returns the image and each pad's rectangle (in
/// pixels), then the pads' visible area, then the Model panel's *Built-in* list's button.
fn render(shared: &Shared, size: EditorSize, scale: f32) -> (Image, Vec<Rect>) {
    let ctx = egui::Context::default();
    editor::apply_style(&ctx);
    let mut state = WindowState::new(shared);
    let setter_ctx = NoHost;
    let setter = ParamSetter::new(&setter_ctx);
    let screen = Rect::from_min_size(pos2(0.0, 0.0), vec2(size.width as f32, size.height as f32));
    let mut textures: HashMap<TextureId, Texture> = HashMap::new();
    let mut output = None;
    // A few passes: egui sizes some widgets from the previous frame.
    for frame in 0..4 {
        let mut input = egui::RawInput {
            screen_rect: Some(screen),
            time: Some(frame as f64 / 60.0),
            ..Default::default()
        };
        input
            .viewports
            .entry(egui::ViewportId::ROOT)
            .or_default()
            .native_pixels_per_point = Some(scale);
        let mut out = ctx.run_ui(input, |ui| {
            egui::CentralPanel::default()
                .frame(egui::Frame::new().fill(palette::BG))
                .show(ui, |ui| editor::draw(ui, shared, &mut state, &setter));
        });
        for (id, delta) in out
            .textures_delta
            .set
            .iter()
            .flat_map(|(id, ds)| ds.iter().map(move |d| (id, d)))
        {
            let egui::ImageData::Color(image) = &delta.image;
            let [dw, dh] = image.size;
            match delta.pos {
                None => {
                    textures.insert(*id, (dw, dh, image.pixels.clone()));
                }
                Some([x0, y0]) => {
                    let t = textures.get_mut(id).expect("patch of a known texture");
                    for y in 0..dh {
                        for x in 0..dw {
                            t.2[(y0 + y) * t.0 + x0 + x] = image.pixels[y * dw + x];
                        }
                    }
                }
            }
        }
        out.textures_delta.clear();
        output = Some(out);
    }
    let out = output.unwrap();
    let prims = ctx.tessellate(out.shapes, out.pixels_per_point);
    assert_eq!(out.pixels_per_point, scale);
    let (w, h) = (
        (screen.width() * scale) as usize,
        (screen.height() * scale) as usize,
    );
    let img = rasterize(&prims, &textures, (w, h), scale);
    let to_pixels = |r: Rect| {
        Rect::from_min_max(
            (r.min.to_vec2() * scale).to_pos2(),
            (r.max.to_vec2() * scale).to_pos2(),
        )
    };
    let area = ctx
        .data(|d| d.get_temp::<Rect>(editor::pads::area_id()))
        .expect("the pads' area is laid out");
    let mut pads: Vec<Rect> = SectionLabel::ALL
        .iter()
        .map(|s| {
            let r = ctx
                .data(|d| d.get_temp::<Rect>(editor::pads::pad_id(*s)))
                .expect("every pad is laid out");
            Rect::from_min_max(
                (r.min.to_vec2() * scale).to_pos2(),
                (r.max.to_vec2() * scale).to_pos2(),
            )
        })
        .collect();
    pads.push(to_pixels(area));
    let builtin = ctx
        .data(|d| d.get_temp::<Rect>(editor::builtin_models_id()))
        .expect("the built-in models' list is laid out");
    pads.push(to_pixels(builtin));
    (img, pads)
}

/// The *Built-in* list's button lies in the window below the pads and shows text (light
/// pixels: the default model's name, which the staged state uses).
fn check_builtin_list(img: &Image, builtin: Rect, pads: &[Rect]) {
    let window = Rect::from_min_size(pos2(0.0, 0.0), vec2(img.w as f32, img.h as f32));
    assert!(window.contains_rect(builtin), "{builtin:?} in {window:?}");
    assert!(
        builtin.width() > 100.0 && builtin.height() > 10.0,
        "{builtin:?}"
    );
    for p in pads {
        assert!(!p.intersects(builtin), "{builtin:?} over a pad {p:?}");
    }
    let text = (builtin.min.y as usize..builtin.max.y as usize)
        .flat_map(|y| (builtin.min.x as usize..builtin.max.x as usize).map(move |x| (x, y)))
        .filter(|&(x, y)| img.at(x, y).iter().all(|&c| c > 150))
        .count();
    assert!(
        text > 20,
        "no text in the built-in list ({text} light pixels)"
    );
}

fn close(a: [u8; 3], b: Color32, tol: i32) -> bool {
    (a[0] as i32 - b.r() as i32).abs() <= tol
        && (a[1] as i32 - b.g() as i32).abs() <= tol
        && (a[2] as i32 - b.b() as i32).abs() <= tol
}

/// Pixels in `r` whose colour is a note's (the roll's note colour at any velocity shade).
fn note_pixels(img: &Image, r: Rect) -> usize {
    let mut n = 0;
    for y in r.min.y as usize..(r.max.y as usize).min(img.h) {
        for x in r.min.x as usize..(r.max.x as usize).min(img.w) {
            let [red, g, b] = img.at(x, y);
            // NOTE is (120, 200, 255) scaled by 0.55..1.0: blue dominant, green over red.
            if b > 130 && g > 100 && (b as i32 - g as i32) > 25 && (g as i32 - red as i32) > 40 {
                n += 1;
            }
        }
    }
    n
}

fn docs_png() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/plugin-window.png")
}

#[test]
fn window_renders_pads_notes_and_panels() {
    let shared = staged();
    let (img, mut pads) = render(&shared, DEFAULT_SIZE, PIXELS_PER_POINT);
    let builtin = pads.pop().unwrap();
    let area = pads.pop().unwrap();
    assert_eq!((img.w, img.h), (1560, 1050));
    check_builtin_list(&img, builtin, &pads);

    // Not blank: many pixels differ from the background, in many colours.
    let bg = palette::BG;
    let differing = (0..img.h)
        .flat_map(|y| (0..img.w).map(move |x| (x, y)))
        .filter(|&(x, y)| !close(img.at(x, y), bg, 6))
        .count();
    assert!(
        differing > img.w * img.h / 5,
        "only {differing} pixels differ from the background"
    );

    // Every pad is drawn: inside its rectangle most pixels are the pad's fill, not the
    // background, and the pads do not overlap.
    for (i, r) in pads.iter().enumerate() {
        assert!(r.width() > 200.0 && r.height() > 150.0, "pad {i}: {r:?}");
        assert!(
            area.contains_rect(*r),
            "pad {i} is not all visible: {r:?} in {area:?}"
        );
        let inside = (r.min.y as usize + 4..r.max.y as usize - 4)
            .flat_map(|y| (r.min.x as usize + 4..r.max.x as usize - 4).map(move |x| (x, y)))
            .filter(|&(x, y)| !close(img.at(x, y), bg, 4))
            .count();
        let area = ((r.width() - 8.0) * (r.height() - 8.0)) as usize;
        assert!(
            inside * 10 > area * 9,
            "pad {i}: {inside} of {area} pixels drawn"
        );
        for other in &pads[i + 1..] {
            assert!(!r.intersects(other.shrink(2.0)), "pads overlap");
        }
    }
    // The captured notes appear in A's and B's rolls, none in the empty C and D.
    let notes: Vec<usize> = pads.iter().map(|r| note_pixels(&img, *r)).collect();
    assert!(notes[0] > 800, "A's notes: {notes:?}");
    assert!(notes[1] > 800, "B's notes: {notes:?}");
    assert_eq!(&notes[2..], &[0, 0], "C and D are empty: {notes:?}");
    // B is playing: its pad's border is lit green, A's is not.
    let green = |r: &Rect| {
        (r.min.x as usize..r.max.x as usize)
            .filter(|&x| {
                let [red, g, b] = img.at(x, r.min.y as usize + 1);
                g > 120 && g as i32 - red as i32 > 50 && g as i32 - b as i32 > 30
            })
            .count()
    };
    assert!(green(&pads[1]) > 100, "B's border is not lit");
    assert_eq!(green(&pads[0]), 0, "A's border is lit");

    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, img.w as u32, img.h as u32);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().unwrap();
        writer.write_image_data(&img.rgba8()).unwrap();
    }
    if std::env::var_os("STARIA_WRITE_WINDOW_PNG").is_some() {
        std::fs::write(docs_png(), &bytes).unwrap();
    } else {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plugin-window.png"), &bytes).unwrap();
    }
    // The committed screenshot is a render of this size.
    let file = std::fs::File::open(docs_png()).expect("docs/plugin-window.png is committed");
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    assert_eq!(
        (reader.info().width, reader.info().height),
        (img.w as u32, img.h as u32)
    );
}

/// At its smallest size and a 1.0 scale every pad is still all visible (no scrolling), apart
/// from the others, with A's and B's notes drawn.
#[test]
fn window_fits_its_minimum_size() {
    let (img, mut pads) = render(&staged(), MIN_SIZE, 1.0);
    let builtin = pads.pop().unwrap();
    let area = pads.pop().unwrap();
    check_builtin_list(&img, builtin, &pads);
    assert_eq!(
        (img.w, img.h),
        (MIN_SIZE.width as usize, MIN_SIZE.height as usize)
    );
    for (i, r) in pads.iter().enumerate() {
        assert!(
            area.contains_rect(*r),
            "pad {i} is not all visible: {r:?} in {area:?}"
        );
        assert!(r.width() > 100.0 && r.height() > 80.0, "pad {i}: {r:?}");
        for other in &pads[i + 1..] {
            assert!(!r.intersects(other.shrink(2.0)), "pads overlap");
        }
    }
    let notes: Vec<usize> = pads.iter().map(|r| note_pixels(&img, *r)).collect();
    assert!(notes[0] > 100 && notes[1] > 100, "{notes:?}");
    assert_eq!(&notes[2..], &[0, 0], "{notes:?}");
}
