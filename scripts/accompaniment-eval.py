#!/usr/bin/env python3
"""Voice leading of `staria live --mode accompany` against held-out Bach chorales (issue 11).

Held-out pieces: the corpus's `bach/` files in the validation split of `staria-train prepare`
(trainer/src/prepare.rs: a piece is in validation when sha256(seed as 8 little-endian bytes ++
relative path), its first 8 bytes read as a little-endian u64 / 2^64, is below the validation
fraction; seed 0 and fraction 0.05 are the split the shipped model was prepared with). With
`--shards DIR` the list is checked against that shards folder's index.json (read only). A piece
needs a soprano track ("Soprano", "Soprano 1" or "voice 1") and a bass track ("Bass" or
"voice 4"). A piece whose soprano and bass both match a training piece of the corpus (difflib
ratio of the pitch sequences >= 0.9: the same harmonisation under another file name) is left
out and listed; one whose melody alone is in training (another harmonisation of the tune) stays
and is flagged in the JSON.

Per piece: the soprano alone (with the piece's tempo and time signature, no markers) is the
performer; `staria live --performer SOP --mode accompany --out OUT [--model M] --seed S` plays
it; the model's notes are read back from the accompaniment channel (`--model-channel`, 1-based,
default 2: `staria live` writes the performer on 1 and the model on 2). Rows: one per model and
`--live-args` set (seeds averaged within a piece), "Bach's bass" (the real bass of the same
chorale), "soprano -2 oct" (the soprano 24 semitones down, a trivial baseline) and "random
pitches" (Bach's bass rhythm, each pitch drawn uniformly from the register, seeded: the
chance level of the pitch measures). Only notes starting before the soprano's last note ends are
measured; the model's later notes are counted as `after_end`. `--png` also has `staria live` draw
each piece's first-seed run (performer above model: OUT/PIECE.ROW.png).

Measures (a beat = a quarter note at the piece's first tempo; tol = `--onset-ms`, 40 ms):
- notes_per_beat; beats_long: median note length in beats; with_soprano: share of onsets
  within tol of a soprano onset; on_grid: share within `--grid-ms` (20 ms) of the 16th grid
  (chance about 2*grid/16th: 21% at 80 bpm);
- consonant: share of onsets whose interval to the sounding soprano note (a soprano onset
  within tol of the note's counts as sounding) is 0, 3, 4, 7, 8 or 9 semitones mod 12
  (onsets under a soprano rest are not counted); split as cons_with (onsets within tol of a
  soprano onset, measured against that note) and cons_under (onsets under a held soprano note);
- parallels: at the union of both voices' onsets, the (soprano, lowest accompaniment) pair
  sounding; between consecutive pairs that differ, a parallel fifth or octave (unison) is the
  same perfect interval mod 12 with both voices moving the same way; share of transitions;
- in_key: share of notes in the manifest key's scale (minor: natural plus raised 6th and 7th);
- mean_pitch, in_register: share of notes in `--register` (36-59, the accompany default);
- collisions: notes overlapping a soprano note of the same pitch (> 1 ms), per piece; for the
  engine also its own count (`engine_collisions`), and `late` if `staria live` prints one (it
  does not today: its simulated clock charges no compute time, so nothing can be late), and
  `rechosen` if it prints one (model notes re-chosen at a performer's note, consonant mode);
- sounding: share of beats where the accompaniment sounds; bass_pc: share of the beats where
  Bach's bass sounds on which the lowest sounding accompaniment note has Bach's pitch class.
Per row: the mean over pieces of the per-piece values, with a 95% bootstrap interval over pieces
(2,000 resamples, seed 0). Needs mido.

    python3 scripts/accompaniment-eval.py --out /work/runs/acc-eval [--pieces 5] \\
        [--model models/pretrained/baseline-small --model RUN/two-voice] [--seeds 1,2,3] \\
        [--live-args "--style chorale"] [--shards /work/runs/shards-sw]
"""

import argparse
import hashlib
import json
import os
import random
import re
import shlex
import struct
import subprocess
import sys
from difflib import SequenceMatcher

import mido

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOPRANO = ("soprano", "soprano 1", "voice 1")
BASS = ("bass", "voice 4")
CONSONANT = {0, 3, 4, 7, 8, 9}
PERFECT = {0, 7}
MAJOR = {0, 2, 4, 5, 7, 9, 11}
MINOR = {0, 2, 3, 5, 7, 8, 9, 10, 11}  # natural minor and the raised 6th and 7th
TONIC = dict(c=0, d=2, e=4, f=5, g=7, a=9, b=11)
METRICS = [  # (key, header, format)
    ("notes", "notes", "{:.0f}"), ("notes_per_beat", "notes/beat", "{:.2f}"),
    ("beats_long", "beats long", "{:.2f}"),
    ("with_soprano", "with sop.", "{:.2f}"), ("on_grid", "on grid", "{:.2f}"),
    ("consonant", "consonant", "{:.2f}"), ("cons_with", "cons. with sop. onset", "{:.2f}"),
    ("cons_under", "cons. under held sop.", "{:.2f}"), ("parallels", "parallel 5/8", "{:.3f}"),
    ("in_key", "in key", "{:.2f}"), ("mean_pitch", "mean pitch", "{:.1f}"),
    ("in_register", "in register", "{:.2f}"),
    ("collisions", "collisions", "{:.2f}"), ("sounding", "beats sounding", "{:.2f}"),
    ("bass_pc", "bass pc match", "{:.2f}"), ("after_end", "after end", "{:.1f}"),
]


def fail(msg):
    sys.exit(f"accompaniment-eval: {msg}")


def is_validation(rel, seed, fraction):
    """trainer/src/prepare.rs `is_validation`, byte for byte."""
    d = hashlib.sha256(struct.pack("<Q", seed) + rel.encode()).digest()
    return int.from_bytes(d[:8], "little") / 2.0**64 < fraction


def track_named(mf, names):
    for t in mf.tracks[1:]:
        if t.name.strip().lower() in names:
            return t
    return None


def notes_of(conductor, track):
    """(start_s, end_s, pitch) of one track under the conductor's tempo map, by onset."""
    mf = mido.MidiFile(ticks_per_beat=conductor[1])
    mf.tracks = [conductor[0], track]
    out, held, t = [], {}, 0.0
    for m in mf:  # times in seconds
        t += m.time
        if m.type == "note_on" and m.velocity > 0:
            held.setdefault((m.channel, m.note), []).append(t)
        elif m.type in ("note_on", "note_off") and held.get((m.channel, m.note)):
            out.append((held[(m.channel, m.note)].pop(0), t, m.note))
    return sorted(out)


def channel_notes(path, channel):
    """(start_s, end_s, pitch) of one channel (0-based) of a MIDI file."""
    out, held, t = [], {}, 0.0
    for m in mido.MidiFile(path):
        t += m.time
        if getattr(m, "channel", None) != channel:
            continue
        if m.type == "note_on" and m.velocity > 0:
            held.setdefault(m.note, []).append(t)
        elif m.type in ("note_on", "note_off") and held.get(m.note):
            out.append((held[m.note].pop(0), t, m.note))
    return sorted(out)


def scale_of(key):
    """Pitch classes of a manifest key ("B- major", "f# minor"), or None."""
    m = re.fullmatch(r"([A-Ga-g])([#-]*) (major|minor)", key or "")
    if not m:
        return None
    tonic = TONIC[m.group(1).lower()] + m.group(2).count("#") - m.group(2).count("-")
    return {(tonic + i) % 12 for i in (MAJOR if m.group(3) == "major" else MINOR)}


def load_piece(corpus, rel, key=None):
    """The soprano, the bass, the conductor track, the first tempo and the scale of a chorale,
    or the reason it cannot be used."""
    try:
        mf = mido.MidiFile(os.path.join(corpus, rel))
    except (OSError, ValueError, EOFError) as e:
        return f"unreadable: {e}"
    sop, bass = track_named(mf, SOPRANO), track_named(mf, BASS)
    if mf.type != 1 or sop is None or bass is None:
        return "no soprano and bass tracks"
    cond = mido.MidiTrack(m for m in mf.tracks[0] if m.is_meta and m.type in
                          ("set_tempo", "time_signature", "key_signature", "end_of_track"))
    tempos = [m.tempo for m in mf.tracks[0] if m.type == "set_tempo"] or [500000]
    c = (cond, mf.ticks_per_beat)
    return dict(id=rel, conductor=c, sop_track=sop, soprano=notes_of(c, sop),
                bass=notes_of(c, bass), beat_s=tempos[0] / 1e6, tempo_changes=len(set(tempos)) > 1,
                key=key, scale=scale_of(key))


def held_out(args):
    rows = [json.loads(line) for line in open(os.path.join(args.corpus, "manifest.jsonl"))]
    ids = sorted(r["file"] for r in rows)
    val = [i for i in ids if is_validation(i, args.split_seed, args.val_fraction)]
    if args.shards:
        index = json.load(open(os.path.join(args.shards, "index.json")))
        # A two-voice tokenizer's shards also hold `ID#two-voice` copies of the same pieces.
        recorded = sorted({p["id"].split("#")[0] for s in index["splits"]
                           if s["name"] == "validation" for p in s["pieces"]})
        if (index.get("seed"), index.get("val_fraction")) != (args.split_seed, args.val_fraction):
            fail(f"{args.shards}/index.json has seed {index.get('seed')}, val_fraction "
                 f"{index.get('val_fraction')}; --split-seed/--val-fraction say otherwise")
        if recorded != val:
            fail(f"{args.shards}/index.json's validation split ({len(recorded)} pieces) differs "
                 f"from the one computed from {args.corpus} ({len(val)})")
    train_bach = [i for i in ids if i.startswith("bach/") and i not in set(val)]
    keys = {r["file"]: r.get("key") for r in rows}
    return [i for i in val if i.startswith("bach/")], train_bach, keys


def pitches(notes):
    return [p for _, _, p in notes]


def training_twins(piece, train_pieces):
    """Training pieces with the same tune: (id, soprano ratio, bass ratio) for soprano >= 0.9."""
    sp, bp = pitches(piece["soprano"]), pitches(piece["bass"])
    out = []
    for tid, tp in train_pieces.items():
        s = SequenceMatcher(None, sp, pitches(tp["soprano"]), autojunk=False).ratio()
        if s >= 0.9:
            b = SequenceMatcher(None, bp, pitches(tp["bass"]), autojunk=False).ratio()
            out.append((tid, round(s, 3), round(b, 3)))
    return out


def sounding(notes, t, tol, lowest=False):
    """Pitch sounding at t: an onset within tol of t first, else a note holding over t."""
    near = [n for n in notes if abs(n[0] - t) <= tol]
    cand = near or [n for n in notes if n[0] < t < n[1]]
    if not cand:
        return None
    return min(n[2] for n in cand) if lowest else max(n[2] for n in cand)


def measure(sop, acc, bass, beat_s, args, scale=None):
    tol, grid = args.onset_ms / 1000.0, args.grid_ms / 1000.0
    end = max(n[1] for n in sop)
    after = [n for n in acc if n[0] >= end]
    acc = [n for n in acc if n[0] < end]
    beats = int(end / beat_s + 1e-9)
    r = dict(notes=len(acc), notes_per_beat=len(acc) / max(beats, 1), after_end=len(after),
             beats_long=sorted((n[1] - n[0]) / beat_s for n in acc)[len(acc) // 2] if acc else None)
    sixteenth = beat_s / 4
    if acc:
        s_on = [n[0] for n in sop]
        r["with_soprano"] = sum(any(abs(a[0] - s) <= tol for s in s_on) for a in acc) / len(acc)
        r["on_grid"] = sum(abs(a[0] - round(a[0] / sixteenth) * sixteenth) <= grid
                           for a in acc) / len(acc)
        iv = [(sp, a[2]) for a in acc if (sp := sounding(sop, a[0], tol)) is not None]
        r["consonant"] = sum(abs(s - a) % 12 in CONSONANT for s, a in iv) / len(iv) if iv else None
        # Split: onsets with a soprano onset, and onsets under a held soprano note.
        for key, together in (("cons_with", True), ("cons_under", False)):
            part = [(sp, a[2]) for a in acc if any(abs(a[0] - s) <= tol for s in s_on) == together
                    and (sp := sounding(sop, a[0], tol)) is not None]
            r[key] = (sum(abs(s - a) % 12 in CONSONANT for s, a in part) / len(part)
                      if part else None)
        r["in_key"] = sum(a[2] % 12 in scale for a in acc) / len(acc) if scale else None
        r["mean_pitch"] = sum(pitches(acc)) / len(acc)
        lo, hi = args.register
        r["in_register"] = sum(lo <= a[2] <= hi for a in acc) / len(acc)
    else:
        for k in ("with_soprano", "on_grid", "consonant", "cons_with", "cons_under", "in_key",
                  "mean_pitch", "in_register"):
            r[k] = None
    r["collisions"] = sum(any(s[2] == a[2] and min(s[1], a[1]) - max(s[0], a[0]) > 0.001
                              for s in sop) for a in acc)
    # Parallels between consecutive sounding pairs at the union of onsets.
    times = sorted({n[0] for n in sop} | {n[0] for n in acc})
    events = []
    for t in times:
        if events and t - events[-1] <= tol:
            continue
        events.append(t)
    pairs = []
    for t in events:
        s, a = sounding(sop, t, tol), sounding(acc, t, tol, lowest=True)
        if s is not None and a is not None and (not pairs or pairs[-1] != (s, a)):
            pairs.append((s, a))
    par = sum(1 for (s1, a1), (s2, a2) in zip(pairs, pairs[1:])
              if abs(s1 - a1) % 12 in PERFECT and abs(s1 - a1) % 12 == abs(s2 - a2) % 12
              and (s2 - s1) * (a2 - a1) > 0)
    r["parallels"] = par / (len(pairs) - 1) if len(pairs) > 1 else None
    r["parallel_count"], r["transitions"] = par, max(len(pairs) - 1, 0)
    # Beats: coverage and pitch-class agreement with Bach's bass.
    sound = match = bass_beats = 0
    for k in range(beats):
        t = k * beat_s
        a, b = sounding(acc, t, tol, lowest=True), sounding(bass, t, tol, lowest=True)
        sound += a is not None
        if b is not None:
            bass_beats += 1
            match += a is not None and a % 12 == b % 12
    r["sounding"] = sound / max(beats, 1)
    r["bass_pc"] = match / bass_beats if bass_beats else None
    return r


def self_test():
    """The measures on hand-made two-voice fragments (1 s a beat): fails loudly if one is off."""
    a = argparse.Namespace(onset_ms=40.0, grid_ms=20.0, register=(36, 59))
    sop = [(0.0, 1.0, 72), (1.0, 2.0, 74), (2.0, 3.0, 72), (3.0, 4.0, 71)]
    # A fifth to a fifth, both up (parallel); to a sixth (72-63: 9); to a minor second
    # (71-70), struck 30 ms off the grid: 3 transitions, 1 parallel, 3 of 4 consonant.
    acc = [(0.0, 1.0, 65), (1.0, 2.0, 67), (2.0, 3.0, 63), (3.03, 4.0, 70)]
    r = measure(sop, acc, acc, 1.0, a)
    want = dict(notes=4, parallel_count=1, transitions=3, consonant=0.75, on_grid=0.75,
                with_soprano=1.0, bass_pc=1.0, sounding=1.0, collisions=0, after_end=0,
                cons_with=0.75, cons_under=None)
    got = {k: r[k] for k in want}
    assert got == want, f"self-test: {got} != {want}"
    # The soprano's pitch (a collision, an octave: consonant), an onset 20 ms before the
    # soprano's (measured against that note: 74 over 60, a ninth), a note after the end; a
    # bass C on beats 1-4 matched on beats 2 and 3 (60 struck at 0.98 and held over beat 3).
    acc = [(0.5, 1.5, 72), (0.98, 2.5, 60), (4.5, 5.0, 50)]
    r = measure(sop, acc, [(0.0, 4.0, 48)], 1.0, a)
    want = dict(notes=2, collisions=1, after_end=1, in_register=0.0, with_soprano=0.5,
                consonant=0.5, bass_pc=0.5, parallel_count=0, cons_with=0.0, cons_under=1.0)
    got = {k: r[k] for k in want}
    assert got == want, f"self-test: {got} != {want}"
    # Oblique motion into the same perfect interval class (a fifth to a twelfth) is no parallel.
    r = measure([(0.0, 2.0, 72)], [(0.0, 1.0, 65), (1.0, 2.0, 53)], [], 1.0, a)
    assert (r["parallel_count"], r["transitions"], r["bass_pc"]) == (0, 1, None), r
    assert is_validation("bach/bwv102_7_mxl.mid", 0, 0.05)  # in the shards' index.json
    assert not is_validation("bach/bwv1_6_mxl.mid", 0, 0.05)
    assert scale_of("B- major") == {10, 0, 2, 3, 5, 7, 9}
    assert scale_of("f# minor") == {6, 8, 9, 11, 1, 2, 3, 4, 5} and scale_of("x") is None
    assert measure(sop, [(0.0, 1.0, 61), (1.0, 2.0, 60)], [], 1.0, a, {0})["in_key"] == 0.5
    print("self-test ok")


def write_performer(piece, path):
    cond, tpq = piece["conductor"]
    mf = mido.MidiFile(type=1, ticks_per_beat=tpq)
    mf.tracks = [cond, piece["sop_track"]]
    mf.save(path)


def run_live(args, model, live_args, perf, out, seed):
    cmd = [args.bin, "live", "--performer", perf, "--mode", "accompany", "--out", out,
           "--seed", str(seed)] + (["--model", model] if model != "-" else []) + live_args
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"{' '.join(map(shlex.quote, cmd))} failed ({p.returncode}): {p.stderr.strip()}")
    said = {}
    for key, pat in (("engine_collisions", r"(\d+) collisions"), ("late", r"(\d+) late"),
                     ("rebases", r"(\d+) context rebases"), ("revisions", r"(\d+) revisions"),
                     ("rechosen", r"(\d+) re-chosen")):
        m = re.search(pat, p.stderr)
        said[key] = int(m.group(1)) if m else None
    return said


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def bootstrap(xs, n=2000):
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return None
    rng = random.Random(0)
    ms = sorted(sum(rng.choice(xs) for _ in xs) / len(xs) for _ in range(n))
    return ms[int(0.025 * n)], ms[int(0.975 * n) - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="folder for the MIDI files and the JSON")
    ap.add_argument("--model", action="append", help="checkpoint folder (repeatable); '-': the "
                    "binary's built-in model; default models/pretrained/baseline-small")
    ap.add_argument("--live-args", action="append", help="extra `staria live` flags, one row "
                    "per set (repeatable), e.g. \"--style chorale\"")
    ap.add_argument("--seeds", default="1,2,3", help="sampling seeds, comma separated")
    ap.add_argument("--pieces", type=int, help="only the first N held-out chorales")
    ap.add_argument("--bin", default=os.path.join(REPO, "target/release/staria"))
    ap.add_argument("--corpus", default="/work/shared/data/corpus")
    ap.add_argument("--shards", help="a prepared shards folder whose index.json must agree")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--model-channel", type=int, default=2, help="1-based (staria live: 2)")
    ap.add_argument("--register", default="36-59", help="accompaniment register LO-HI")
    ap.add_argument("--onset-ms", type=float, default=40.0)
    ap.add_argument("--grid-ms", type=float, default=20.0)
    ap.add_argument("--json", help="default OUT/accompaniment-eval.json")
    ap.add_argument("--png", action="store_true", help="piano rolls of the first seed's runs")
    ap.add_argument("--self-test", action="store_true", help="check the measures and exit")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if not args.out:
        fail("--out is required")
    try:
        lo, hi = (int(x) for x in args.register.split("-"))
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        fail(f"--register {args.register!r} must be LO-HI and --seeds {args.seeds!r} integers")
    args.register = (lo, hi)
    if not os.access(args.bin, os.X_OK):
        fail(f"no staria binary at {args.bin} (cargo build --release -p staria-engine --bin "
             f"staria, or --bin)")
    models = args.model or [os.path.join(REPO, "models/pretrained/baseline-small")]
    arg_sets = args.live_args or [""]
    os.makedirs(args.out, exist_ok=True)

    val, train_ids, keys = held_out(args)
    train = {}
    for t in train_ids:
        p = load_piece(args.corpus, t)
        if isinstance(p, dict):
            train[t] = p
    pieces, left_out = [], []
    for rel in val:
        p = load_piece(args.corpus, rel, keys.get(rel))
        if not isinstance(p, dict):
            left_out.append(dict(id=rel, reason=p))
            continue
        twins = training_twins(p, train)
        p["melody_in_training"] = twins
        if any(b >= 0.9 for _, _, b in twins):
            left_out.append(dict(id=rel, reason=f"same harmonisation as training piece(s) "
                                 f"{[t for t, _, b in twins if b >= 0.9]}"))
            continue
        pieces.append(p)
    if args.pieces:
        pieces = pieces[:args.pieces]
    if not pieces:
        fail("no held-out chorale left")
    print(f"held-out chorales (validation split, seed {args.split_seed}, fraction "
          f"{args.val_fraction}): {len(pieces)} used: {', '.join(p['id'] for p in pieces)}")
    for lo_ in left_out:
        print(f"left out {lo_['id']}: {lo_['reason']}")
    for p in pieces:
        for t, sr, br in p["melody_in_training"]:
            print(f"melody also in training: {p['id']} ~ {t} (soprano {sr}, bass {br})")

    chan = args.model_channel - 1
    rows = {}  # label -> {piece id -> metrics}
    for model in models:
        for la in arg_sets:
            name = os.path.basename(os.path.normpath(model)) if model != "-" else "built-in"
            label = f"staria: {name}" + (f" {la}" if la else "")
            if label in rows:  # two models of one folder name
                label += f" ({model})"
            tag = f"{len(rows) + 1}." + re.sub(r"[^A-Za-z0-9]+", "_", label)[:60]
            rows[label] = {}
            for p in pieces:
                stem = os.path.join(args.out, os.path.splitext(os.path.basename(p["id"]))[0])
                perf = f"{stem}.sop.mid"
                write_performer(p, perf)
                runs = []
                for s in seeds:
                    out = f"{stem}.{tag}.s{s}.mid"
                    png = ["--png", f"{stem}.{tag}.png"] if args.png and s == seeds[0] else []
                    said = run_live(args, model, shlex.split(la) + png, perf, out, s)
                    acc = channel_notes(out, chan)
                    m = measure(p["soprano"], acc, p["bass"], p["beat_s"], args, p["scale"])
                    runs.append({**m, **said, "seed": s})
                keys = [k for k in runs[0] if k != "seed"]
                rows[label][p["id"]] = {k: mean([r[k] for r in runs]) for k in keys}
                rows[label][p["id"]]["runs"] = runs
            print(f"{label}: {len(pieces)} pieces x {len(seeds)} seeds done", flush=True)
    rows["Bach's bass"] = {p["id"]: measure(p["soprano"], p["bass"], p["bass"], p["beat_s"],
                                            args, p["scale"]) for p in pieces}
    rows["soprano -2 oct"] = {}
    for p in pieces:
        low = [(a, b, n - 24) for a, b, n in p["soprano"]]
        rows["soprano -2 oct"][p["id"]] = measure(p["soprano"], low, p["bass"], p["beat_s"], args,
                                                  p["scale"])
    lo, hi = args.register
    rows["random pitches"] = {}
    for i, p in enumerate(pieces):
        rng = random.Random(i)
        rnd = [(a, b, rng.randint(lo, hi)) for a, b, _ in p["bass"]]
        rows["random pitches"][p["id"]] = measure(p["soprano"], rnd, p["bass"], p["beat_s"], args,
                                                  p["scale"])

    summary = {}
    for label, per in rows.items():
        summary[label] = {}
        for key in [k for k, _, _ in METRICS] + ["engine_collisions", "late", "rechosen"]:
            xs = [v.get(key) for v in per.values()]
            summary[label][key] = dict(mean=mean(xs), ci95=bootstrap(xs),
                                       pieces=sum(x is not None for x in xs))
    head = ("| row | " + " | ".join(h for _, h, _ in METRICS)
            + " | engine collisions | late | re-chosen |")
    print("\n" + head + "\n|" + "---|" * (len(METRICS) + 4))
    for label, s in summary.items():
        cells = []
        for key, _, f in METRICS + [("engine_collisions", "", "{:.2f}"), ("late", "", "{:.0f}"),
                                    ("rechosen", "", "{:.1f}")]:
            v = s[key]
            if v["mean"] is None:
                cells.append("n/a")
            else:
                ci = v["ci95"]
                cells.append(f.format(v["mean"]) + (f" [{f.format(ci[0])}, {f.format(ci[1])}]"
                                                    if ci and ci[0] != ci[1] else ""))
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"\nmean over {len(pieces)} pieces (model rows: {len(seeds)} seeds {args.seeds} "
          f"averaged per piece) [95% bootstrap over pieces]; collisions per piece; on-grid "
          f"±{args.grid_ms:g} ms of the 16th grid; onsets ±{args.onset_ms:g} ms")
    path = args.json or os.path.join(args.out, "accompaniment-eval.json")
    json.dump(dict(
        settings=dict(corpus=args.corpus, split_seed=args.split_seed,
                      val_fraction=args.val_fraction, seeds=seeds, models=models,
                      live_args=arg_sets, register=args.register, onset_ms=args.onset_ms,
                      grid_ms=args.grid_ms, bin=args.bin),
        pieces=[dict(id=p["id"], key=p["key"],
                     beats=int(max(n[1] for n in p["soprano"]) / p["beat_s"]),
                     bpm=round(60 / p["beat_s"], 2), tempo_changes=p["tempo_changes"],
                     melody_in_training=p["melody_in_training"]) for p in pieces],
        left_out=left_out, summary=summary, per_piece=rows), open(path, "w"), indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
