#!/usr/bin/env python3
"""Build a held-out evaluation collection in the format of Staria's training corpus.

What it makes: one Standard MIDI File per tune (type 1, 480 ticks per quarter) plus a
`manifest.jsonl`, exactly as in `../shared/data/corpus` (see its README.md):

- each tune is expanded as performed (repeats, first/second endings) with music21's own
  repeat expander;
- it is cut into sections at repeat jumps and at structural barlines (double and final bars,
  repeat barlines), a lone pick-up bar joining the section after it;
- sections are lettered by content in order of first appearance: the same notes give the same
  letter, a differing last bar (first/second endings) still counting as the same;
- the first track holds the title, the time signature, the tempo (the tune's metronome mark,
  else 100 quarter notes per minute) and one Marker meta event (FF 06) per section start, its
  text the letter; each voice is its own track and channel, program 0, velocity 80.

From what: a collection of the corpus inside the music21 Python package, version 10.5.1
(`oneills1850` = O'Neill's Music of Ireland, 1850 tunes; `airdsAirs` = Aird's Airs, 6 books;
`ryansMammoth` = Ryan's Mammoth Collection, which is the training corpus's `ryans` and is used
here only to validate the method: `--compare` checks the output against the corpus manifest).
Neither `oneills1850` nor `airdsAirs` is in the training corpus. Multi-tune ABC files are split
at their `X:` lines and each tune is parsed on its own, so one bad tune never aborts a run: it
is skipped and counted. Tunes that appear twice in a collection (O'Neill's ships some number
ranges in two transcriptions) are kept once, by their notes.

Command line (music21 10.5.1 and mido in a virtual environment outside the repository):

    python3 -m venv /work/runs/m21venv
    /work/runs/m21venv/bin/pip install music21==10.5.1 mido
    /work/runs/m21venv/bin/python scripts/heldout-corpus.py --out /work/runs/heldout \\
        oneills1850:oneills airdsAirs:airds --exclude-like ../shared/data/corpus
    # validation of the method on the training corpus's own source:
    /work/runs/m21venv/bin/python scripts/heldout-corpus.py --out /work/runs/heldout-ryans \\
        ryansMammoth:ryans --keep-duplicates --compare ../shared/data/corpus/manifest.jsonl

Each positional argument is COLLECTION[:SOURCE]: music21 corpus folder name, and the
`source` name used in the manifest and as the output sub-folder (default: the collection name).
`--limit N` converts only the first N tunes of each collection (for quick checks).
"""

import argparse
import collections
import copy
import json
import os
import re
import sys
import time
import traceback
import warnings

TPQ = 480
DEFAULT_QPM = 100.0
VELOCITY = 80
# Barline types that end a section (music21 names): double and final bars in all their forms.
STRUCTURAL = {"double", "final", "light-light", "light-heavy", "heavy-light", "heavy-heavy", "heavy"}


def tune_texts(path):
    """Split an ABC file into (header + one tune) texts, in file order."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    header, tunes, cur = [], [], None
    for line in lines:
        if line.startswith("X:"):
            if cur is not None:
                tunes.append(cur)
            cur = [line]
        elif cur is None:
            # file header (before the first X:): only field lines apply to every tune
            if re.match(r"^[A-Za-z]:", line) or line.startswith("%%"):
                header.append(line)
        else:
            cur.append(line)
    if cur is not None:
        tunes.append(cur)
    out = []
    for t in tunes:
        # the file header's fields go after X: so the tune stays well formed
        out.append("\n".join([t[0]] + header + t[1:]) + "\n")
    return out


def book_number(text):
    """O'Neill's number of a tune from its `B:` line ("B: O'Neill's 123"), else None."""
    m = re.search(r"^B:.*?o'?neill'?s?\W*(\d+)", text, re.I | re.M)
    return int(m.group(1)) if m else None


def qn_to_tick(q):
    return int(round(float(q) * TPQ))


class Skip(Exception):
    pass


def convert_score(score, as_written=True, flags=None, max_plays=8):
    """Return (tracks, sections, info) for one parsed music21 Score, or raise Skip.

    A part whose repeats music21 cannot expand is kept as written when `as_written` (noted in
    `flags`), else the tune is skipped. A tune whose expansion plays some written bar more than
    `max_plays` times is skipped (8: the most any tune of the training corpus's `ryans` plays)."""
    flags = set() if flags is None else flags
    from music21 import harmony, key, repeat, stream, tempo

    parts = list(score.parts) if score.parts else [score]
    if not parts:
        raise Skip("no parts")
    # tag every written measure with its index, so expanded copies can be traced back
    written = []
    for pi, p in enumerate(parts):
        ms = list(p.getElementsByClass(stream.Measure))
        if not ms:
            raise Skip("no measures")
        for i, m in enumerate(ms):
            m.heldoutIdx = i
        written.append(ms)
    ref = written[0]

    expanded = []
    for p in parts:
        try:
            e = repeat.Expander(p).process()
            if e is None:
                raise ValueError("nothing")
        except Exception as exc:  # music21 refuses malformed repeats
            if not as_written:
                raise Skip(f"expand: {type(exc).__name__}: {exc}")
            e = p  # keep it as written (as the training corpus did)
            flags.add("kept as written (repeats not expandable)")
        expanded.append(e)
    emeas = list(expanded[0].getElementsByClass(stream.Measure))
    if not emeas:
        raise Skip("expanded to nothing")
    idx = [getattr(m, "heldoutIdx", None) for m in emeas]
    if any(i is None for i in idx):
        raise Skip("expanded measure without origin")
    plays = max(collections.Counter(idx).values())
    if plays > max_plays:
        # music21 sends every `:|` that has no `|:` of its own back to the start, so a tune of
        # n such parts plays its first bars 2**n times
        raise Skip(f"expansion plays a bar more than {max_plays} times ({plays})")
    starts = [qn_to_tick(m.offset) for m in emeas]
    ends = [qn_to_tick(m.offset + m.duration.quarterLength) for m in emeas]

    def btype(b):
        return getattr(b, "type", None) if b is not None else None

    def is_repeat_start(b):
        return b is not None and (getattr(b, "direction", None) == "start" or btype(b) == "heavy-light")

    # section cuts: before expanded measure k when it does not follow k-1 as written (a repeat
    # jump or a skipped ending) or a structural barline stands between them
    cuts = [0]
    for k in range(1, len(emeas)):
        a, b = ref[idx[k - 1]], ref[idx[k]]
        if idx[k] != idx[k - 1] + 1:
            cuts.append(k)
        elif btype(a.rightBarline) in STRUCTURAL or is_repeat_start(b.leftBarline):
            # a left barline counts only as a repeat start: music21's ABC reader sometimes
            # hangs a bar's closing `:|` or `|]` on the next bar's left side
            cuts.append(k)
    groups = [list(range(c, (cuts[i + 1] if i + 1 < len(cuts) else len(emeas)))) for i, c in enumerate(cuts)]

    # a lone pick-up bar (a one-bar section shorter than its bar) joins the section after it
    def is_pickup(k):
        m = ref[idx[k]]
        try:
            full = m.barDuration.quarterLength
        except Exception:
            return False
        return m.duration.quarterLength < full - 1e-9

    if len(groups) > 1 and len(groups[0]) == 1 and is_pickup(groups[0][0]):
        groups = [groups[0] + groups[1]] + groups[2:]

    # notes of every voice, at ticks of the expanded performance
    tracks = []
    for e in expanded:
        notes = []
        flat = e.flatten()
        try:
            flat = flat.stripTies()  # a tied note sounds once
        except Exception:
            pass
        for n in flat.notes:
            if isinstance(n, harmony.Harmony):  # chord symbols are not played
                continue
            if n.duration.isGrace:
                continue
            on = qn_to_tick(n.offset)
            off = qn_to_tick(n.offset + n.duration.quarterLength)
            if off <= on:
                continue
            vel = VELOCITY
            try:
                if n.volume is not None and n.volume.velocity is not None:
                    vel = int(n.volume.velocity)
            except Exception:
                pass
            for pch in n.pitches:
                notes.append((on, off, int(pch.midi), vel))
        tracks.append(notes)

    def content(bars):
        lo, hi = starts[bars[0]], ends[bars[-1]]
        return tuple(sorted((on - lo, off - on, p) for t in tracks for (on, off, p, _) in t if lo <= on < hi))

    # two sections get the same letter when they have as many bars and the same notes in all but
    # their last bar (first and second endings differ there); one-bar sections need the same notes
    sections, lettered = [], []  # lettered: (label, full content, bar count, content but last bar)
    for g in groups:
        full = content(g)
        body = content(g[:-1]) if len(g) > 1 else full
        label = None
        for lab, f2, n2, b2 in lettered:
            if len(g) == n2 and (full == f2 or body == b2):
                label = lab
                break
        if label is None:
            n = len({lab for lab, *_ in lettered})
            label = chr(ord("A") + n) if n < 26 else f"Z{n - 25}"
        lettered.append((label, full, len(g), body))
        sections.append({
            "label": label,
            "start_tick": starts[g[0]],
            "end_tick": ends[g[-1]],
            "start_measure": int(ref[idx[g[0]]].number),
            "end_measure": int(ref[idx[g[-1]]].number),
        })
    for a, b in zip(sections, sections[1:]):
        a["end_tick"] = b["start_tick"]

    ts = score.recurse().getElementsByClass("TimeSignature").first()
    ks = score.recurse().getElementsByClass(key.KeySignature).first()
    mm = score.recurse().getElementsByClass(tempo.MetronomeMark).first()
    qpm = DEFAULT_QPM
    if mm is not None:
        try:
            q = mm.getQuarterBPM()
            if q:
                qpm = round(float(q), 3)
        except Exception:
            pass
    if ks is None:
        key_s = ""
    elif isinstance(ks, key.Key):
        key_s = str(ks)
    else:
        key_s = str(ks.asKey())
    info = {
        "key": key_s,
        "time_signature": ts.ratioString if ts is not None else "4/4",
        "tempo_qpm": qpm,
        "ts": (ts.numerator, ts.denominator) if ts is not None else (4, 4),
    }
    return tracks, sections, info


def write_midi(path, title, tracks, sections, info):
    import mido

    mf = mido.MidiFile(type=1, ticks_per_beat=TPQ)
    t0 = mido.MidiTrack()
    t0.append(mido.MetaMessage("track_name", name=title, time=0))
    num, den = info["ts"]
    t0.append(mido.MetaMessage("time_signature", numerator=num, denominator=den, time=0))
    t0.append(mido.MetaMessage("set_tempo", tempo=int(round(60_000_000 / info["tempo_qpm"])), time=0))
    now = 0
    for s in sections:
        t0.append(mido.MetaMessage("marker", text=s["label"], time=s["start_tick"] - now))
        now = s["start_tick"]
    t0.append(mido.MetaMessage("end_of_track", time=0))
    mf.tracks.append(t0)
    for vi, notes in enumerate(tracks):
        ch = vi if vi < 9 else vi + 1  # keep clear of the drum channel
        ch = min(ch, 15)
        tr = mido.MidiTrack()
        tr.append(mido.MetaMessage("track_name", name=f"voice {vi + 1}", time=0))
        tr.append(mido.Message("program_change", channel=ch, program=0, time=0))
        ev = []
        for on, off, p, v in notes:
            ev.append((on, 1, p, v))
            ev.append((off, 0, p, 0))
        ev.sort(key=lambda e: e[:2])  # note-offs first at a tick; chord notes as written
        now = 0
        for t, kind, p, v in ev:
            typ = "note_on" if kind else "note_off"
            tr.append(mido.Message(typ, channel=ch, note=p, velocity=v, time=t - now))
            now = t
        tr.append(mido.MetaMessage("end_of_track", time=0))
        mf.tracks.append(tr)
    mf.save(path)


def safe_name(title):
    s = re.sub(r"[^A-Za-z0-9\-]+", "_", title).strip("_")
    return s[:120] or "untitled"


def convert_collection(collection, source, out, limit, manifest_rows, failures, notes_kept,
                       keep_duplicates=False, skip_unexpandable=False, max_plays=8):
    from music21 import converter, corpus

    base = os.path.join(os.path.dirname(corpus.__file__), collection)
    if not os.path.isdir(base):
        sys.exit(f"no music21 corpus collection {collection!r} at {base}")
    files = sorted(f for f in os.listdir(base) if f.lower().endswith(".abc"))
    os.makedirs(os.path.join(out, source), exist_ok=True)
    used_names, seen_notes, seen_numbers = set(), set(), set()
    done = 0
    for fname in files:
        for ti, text in enumerate(tune_texts(os.path.join(base, fname))):
            if limit and done >= limit:
                return
            done += 1
            where = f"{collection}/{fname}#{ti + 1}"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    score = converter.parseData(text, format="abc")
                    if hasattr(score, "scores") and not hasattr(score, "parts"):
                        raise Skip("parsed to an opus")
                    title = (score.metadata.title if score.metadata else None) or f"{fname} {ti + 1}"
                    flags = set()
                    tracks, sections, info = convert_score(score, not skip_unexpandable, flags, max_plays)
            except Skip as e:
                failures[source][re.sub(r" \(\d+\)$", "", str(e).split(":")[0])] += 1
                print(f"skip {where}: {e}", file=sys.stderr)
                continue
            except Exception as e:
                failures[source][f"parse: {type(e).__name__}"] += 1
                print(f"skip {where}: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            nnotes = sum(len(t) for t in tracks)
            if nnotes == 0:
                failures[source]["no notes"] += 1
                continue
            # a tune seen before (same notes, or the same number in O'Neill's book, which music21
            # ships some ranges of in two transcriptions) is kept once
            fingerprint = tuple(sorted((on, off, p) for t in tracks for (on, off, p, _) in t))
            number = book_number(text)
            if not keep_duplicates and (fingerprint in seen_notes or (number is not None and number in seen_numbers)):
                failures[source]["duplicate tune"] += 1
                print(f"skip {where}: duplicate of an earlier tune ({title})", file=sys.stderr)
                continue
            seen_notes.add(fingerprint)
            if number is not None:
                seen_numbers.add(number)
            for fl in flags:
                notes_kept[source][fl] += 1
            name = safe_name(title)
            cand, k = name, 1
            while cand.lower() in used_names:
                k += 1
                cand = f"{name}-{k}"
            used_names.add(cand.lower())
            rel = f"{source}/{cand}.mid"
            try:
                write_midi(os.path.join(out, rel), title, tracks, sections, info)
            except Exception as e:
                failures[source][f"write: {type(e).__name__}"] += 1
                print(f"skip {where}: write: {e}", file=sys.stderr)
                continue
            end_tick = max([sections[-1]["end_tick"]] + [off for t in tracks for (_, off, _, _) in t])
            manifest_rows.append({
                "file": rel,
                "source": source,
                "title": title,
                "key": info["key"],
                "time_signature": info["time_signature"],
                "tempo_qpm": info["tempo_qpm"],
                "notes": nnotes,
                "duration_s": round(end_tick / TPQ * 60.0 / info["tempo_qpm"], 2),
                "form": "".join(s["label"] for s in sections),
                "sections": sections,
            })
            if done % 100 == 0:
                print(f"{where}: {done} tunes", file=sys.stderr, flush=True)


def title_key(title):
    """A title reduced for matching: before any " -- ", no articles, dance names or punctuation."""
    t = re.split(r"\s+-+\s+", title.lower())[0]
    t = re.sub(r"\b(the|a|an|reel|jig|hornpipe|strathspey|march|air)\b", "", t)
    return re.sub(r"[^a-z]", "", t)


def opening(path, n=24):
    """The first n melodic intervals of a MIDI file's first voice (transposition-free)."""
    import mido

    m = mido.MidiFile(path)
    ps = [e.note for e in (m.tracks[1] if len(m.tracks) > 1 else []) if e.type == "note_on" and e.velocity > 0]
    iv = tuple(b - a for a, b in zip(ps, ps[1:]))[:n]
    return iv if len(iv) == n else None


def drop_like(rows, out, corpus, failures):
    """Remove the tunes a training corpus already holds: same title (reduced), or the same first
    24 melodic intervals as one of its pieces (O'Neill's and Ryan's share many tunes, often under
    other names). Returns the rows kept."""
    ref = [json.loads(l) for l in open(os.path.join(corpus, "manifest.jsonl")) if l.strip()]
    titles = {title_key(r["title"]) for r in ref} - {""}
    openings = set()
    for r in ref:
        try:
            o = opening(os.path.join(corpus, r["file"]))
        except Exception:
            o = None
        if o:
            openings.add(o)
    kept = []
    for r in rows:
        why = None
        if title_key(r["title"]) in titles:
            why = "title in the training corpus"
        elif opening(os.path.join(out, r["file"])) in openings:
            why = "opening in the training corpus"
        if why:
            failures[r["source"]][why] += 1
            print(f"drop {r['file']}: {why} ({r['title']})", file=sys.stderr)
            os.remove(os.path.join(out, r["file"]))
        else:
            kept.append(r)
    return kept


def print_counts(rows, failures):
    by = collections.defaultdict(list)
    for r in rows:
        by[r["source"]].append(r)
    print("\n| source | pieces | notes | hours | pieces with >= 2 section letters | skipped |")
    print("|---|---|---|---|---|---|")
    allr = []
    for src, rs in sorted(by.items()):
        allr += rs
        sk = sum(failures[src].values())
        print(f"| {src} | {len(rs)} | {sum(r['notes'] for r in rs)} | "
              f"{sum(r['duration_s'] for r in rs) / 3600:.1f} | "
              f"{sum(1 for r in rs if len(set(r['form'])) >= 2)} | {sk} |")
    if len(by) > 1:
        print(f"| all | {len(allr)} | {sum(r['notes'] for r in allr)} | "
              f"{sum(r['duration_s'] for r in allr) / 3600:.1f} | "
              f"{sum(1 for r in allr if len(set(r['form'])) >= 2)} | {sum(sum(f.values()) for f in failures.values())} |")
    for src, f in sorted(failures.items()):
        if f:
            print(f"\nskipped in {src}: " + ", ".join(f"{k} {v}" for k, v in f.most_common()))
    for src, rs in sorted(by.items()):
        print(f"\nMost common forms ({src})\n\n| form | pieces |\n|---|---|")
        for form, n in collections.Counter(r["form"] for r in rs).most_common(15):
            print(f"| {form} | {n} |")


def compare(rows, manifest, source, out):
    """Agreement with the training corpus manifest's rows of the same source, matched by title."""
    ref = [json.loads(l) for l in open(manifest) if l.strip()]
    ref = [r for r in ref if r["source"] == source]
    by_file = {r["file"]: r for r in ref}
    by_title = collections.defaultdict(list)
    for r in ref:
        by_title[r["title"]].append(r)
    mine = [r for r in rows if r["source"] == source]
    pairs = []
    for r in mine:
        o = by_file.get(r["file"])
        if o is None or o["title"] != r["title"]:
            cands = by_title.get(r["title"], [])
            o = cands[0] if cands else None
        if o is not None:
            pairs.append((r, o))
    n = len(pairs)
    if not n:
        print("\nno rows matched by title")
        return
    def share(f):
        return sum(1 for a, b in pairs if f(a, b)), n
    bounds = lambda s: [(x["start_tick"], x["end_tick"]) for x in s["sections"]]
    checks = {
        "form": lambda a, b: a["form"] == b["form"],
        "section boundaries (ticks)": lambda a, b: bounds(a) == bounds(b),
        "section measures": lambda a, b: [(x["start_measure"], x["end_measure"]) for x in a["sections"]]
        == [(x["start_measure"], x["end_measure"]) for x in b["sections"]],
        "notes": lambda a, b: a["notes"] == b["notes"],
        "duration_s": lambda a, b: abs(a["duration_s"] - b["duration_s"]) < 0.01,
        "key": lambda a, b: a["key"] == b["key"],
        "time_signature": lambda a, b: a["time_signature"] == b["time_signature"],
        "tempo_qpm": lambda a, b: a["tempo_qpm"] == b["tempo_qpm"],
        "file name": lambda a, b: a["file"] == b["file"],
        "all of form, boundaries, notes": lambda a, b: a["form"] == b["form"] and bounds(a) == bounds(b)
        and a["notes"] == b["notes"],
    }
    print(f"\nAgreement with {manifest} ({source}): {n} of {len(mine)} converted tunes matched by title "
          f"({len(ref)} in the corpus)\n\n| field | identical | share |\n|---|---|---|")
    checks["whole manifest row"] = lambda a, b: a == b

    def same_bytes(a, b):
        there = os.path.join(os.path.dirname(os.path.abspath(manifest)), b["file"])
        if not os.path.exists(there):
            return False
        with open(os.path.join(out, a["file"]), "rb") as fa, open(there, "rb") as fb:
            return fa.read() == fb.read()

    checks["MIDI file byte for byte"] = same_bytes
    for name, f in checks.items():
        k, _ = share(f)
        print(f"| {name} | {k} / {n} | {k / n:.3f} |")
    bad = [(a, b) for a, b in pairs if a["form"] != b["form"] or bounds(a) != bounds(b) or a["notes"] != b["notes"]]
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("collections", nargs="+", help="COLLECTION[:SOURCE], e.g. oneills1850:oneills")
    ap.add_argument("--out", required=True, help="output folder (MIDI under OUT/SOURCE/, OUT/manifest.jsonl)")
    ap.add_argument("--limit", type=int, default=0, help="convert only the first N tunes of each collection")
    ap.add_argument("--keep-duplicates", action="store_true",
                    help="keep a tune whose notes repeat an earlier one's (the training corpus kept them)")
    ap.add_argument("--skip-unexpandable", action="store_true",
                    help="skip a tune whose repeats music21 cannot expand (default: keep it as written, "
                    "as the training corpus did)")
    ap.add_argument("--max-plays", type=int, default=8,
                    help="skip a tune whose expansion plays a written bar more than N times (default 8, "
                    "the most the training corpus has; music21 doubles a tune's plays for every `:|` "
                    "without its own `|:`)")
    ap.add_argument("--exclude-like", metavar="CORPUS_DIR",
                    help="drop tunes that a corpus folder (with manifest.jsonl) already holds: same "
                    "title, or the same first 24 melodic intervals")
    ap.add_argument("--compare", help="a corpus manifest.jsonl to compare the output with (matched by title)")
    args = ap.parse_args()

    import music21

    if music21.VERSION_STR != "10.5.1":
        print(f"warning: music21 {music21.VERSION_STR}, the corpus was made with 10.5.1", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    failures = collections.defaultdict(collections.Counter)
    kept = collections.defaultdict(collections.Counter)
    t = time.time()
    for spec in args.collections:
        coll, _, src = spec.partition(":")
        src = src or coll
        failures[src]
        convert_collection(coll, src, args.out, args.limit, rows, failures, kept, args.keep_duplicates,
                           args.skip_unexpandable, args.max_plays)
    if args.exclude_like:
        rows = drop_like(rows, args.out, args.exclude_like, failures)
    with open(os.path.join(args.out, "manifest.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"wrote {len(rows)} files and {args.out}/manifest.jsonl in {time.time() - t:.0f} s (music21 {music21.VERSION_STR})")
    print_counts(rows, failures)
    for src, f in sorted(kept.items()):
        if f:
            print(f"\nconverted with a note in {src}: " + ", ".join(f"{k} {v}" for k, v in f.most_common()))
    if args.compare:
        for spec in args.collections:
            src = spec.partition(":")[2] or spec
            bad = compare(rows, args.compare, src, args.out)
            stale = os.path.join(args.out, f"disagreements-{src}.jsonl")
            if os.path.exists(stale):
                os.remove(stale)
            if bad:
                with open(os.path.join(args.out, f"disagreements-{src}.jsonl"), "w") as f:
                    for a, b in bad:
                        f.write(json.dumps({"title": a["title"], "mine": {k: a[k] for k in ("file", "form", "notes", "sections")},
                                            "corpus": {k: b[k] for k in ("file", "form", "notes", "sections")}}) + "\n")
                print(f"disagreements written to {args.out}/disagreements-{src}.jsonl")


if __name__ == "__main__":
    main()
