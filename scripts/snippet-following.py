#!/usr/bin/env python3
"""Snippet following by note value and tempo. A 2-bar C major phrase (eighths, quarters, a dotted
line) is section A of a prompt at BPM; `staria generate --form A --bars 2`; per generation:
pitches restated (LCS of pitch sequences / prompt notes) and prompt onsets matched by a generated
onset within 60 ms. Needs mido (pip install mido).
Usage: snippet-following.py STARIA_BIN MODEL_DIR|- OUT_DIR   ("-": the model built into the binary)"""
import mido, subprocess, sys, json, os
BIN, MODEL, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
TAG = os.path.basename(os.path.normpath(OUT)); os.makedirs(OUT, exist_ok=True)
TPQ = 480
def write(path, notes, bpm):
    mf = mido.MidiFile(ticks_per_beat=TPQ); tr = mido.MidiTrack(); mf.tracks.append(tr)
    tr.append(mido.MetaMessage('set_tempo', tempo=mido.bpm2tempo(bpm), time=0))
    tr.append(mido.MetaMessage('time_signature', numerator=4, denominator=4, time=0))
    ev = []
    for s, d, p in notes:
        ev.append((int(s*TPQ), 1, p)); ev.append((int((s+d)*TPQ)-10, 0, p))
    ev.sort(key=lambda e: (e[0], e[1])); t = 0
    for tick, on, p in ev:
        tr.append(mido.Message('note_on' if on else 'note_off', note=p, velocity=80 if on else 0, time=tick-t)); t = tick
    mf.save(path)
def read(path):
    mf = mido.MidiFile(path); out = []; t = 0
    for msg in mido.merge_tracks(mf.tracks):
        t += msg.time
        if msg.type == 'note_on' and msg.velocity > 0: out.append((t / mf.ticks_per_beat, msg.note))
    return sorted(out)  # in beats (the output keeps the prompt's tempo)
def lcs(a, b):
    m = [[0]*(len(b)+1) for _ in range(len(a)+1)]
    for i in range(len(a)):
        for j in range(len(b)):
            m[i+1][j+1] = m[i][j]+1 if a[i]==b[j] else max(m[i][j+1], m[i+1][j])
    return m[len(a)][len(b)]
scale = [60,62,64,65,67,69,71,72]
phrases = {
  "eighths": [(i*0.5, 0.5, p) for i, p in enumerate(scale + scale[::-1])],
  "quarters": [(i*1.0, 1.0, p) for i, p in enumerate(scale)],
  "dotted": [(s, d, p) for (s, d), p in zip([(0,1.5),(1.5,0.5),(2,1),(3,1),(4,1.5),(5.5,0.5),(6,2)], [60,64,67,65,64,62,60])],
}
rows = {}
for bpm in (90, 120, 160):
    for name, notes in phrases.items():
        path = f"{OUT}/{name}-{bpm}.mid"; write(path, notes, bpm)
        pp = [p for _, _, p in notes]; pt = [s for s, _, _ in notes]
        tol = 0.06 * bpm / 60  # 60 ms in beats
        pit = ons = cnt = 0
        for seed in range(1, 7):
            out = f"{OUT}/{name}-{bpm}-s{seed}.mid"
            cmd = [BIN, "generate", "--prompt", path, "--sections", "A=1-2", "--form", "A", "--bars", "2", "--seed", str(seed), "--out", out]
            if MODEL != "-": cmd += ["--model", MODEL]
            subprocess.run(cmd, check=True, capture_output=True)
            gen = [(t, p) for t, p in read(out) if t < 8 - 0.1]
            pit += lcs(pp, [p for _, p in gen]); ons += sum(any(abs(t - g) <= tol for g, _ in gen) for t in pt); cnt += len(gen)
        n = 6 * len(notes)
        rows[f"{name}@{bpm}"] = dict(pitches=round(pit/n, 3), onsets=round(ons/n, 3), notes_per_prompt_note=round(cnt/n, 2))
        print(f"{TAG:6s} {name:9s} {bpm:3d} bpm  pitches restated {pit/n:.3f}  onsets matched {ons/n:.3f}  notes/prompt note {cnt/n:.2f}", flush=True)
json.dump(rows, open(f"{OUT}/follow.json", "w"), indent=1)
