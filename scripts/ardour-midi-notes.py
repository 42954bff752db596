#!/usr/bin/env python3
"""Counts the note-ons (velocity > 0) per MIDI channel in Standard MIDI Files, with no library:
scripts/ardour-headless.sh reads back the .mid Ardour recorded with it. Usage: ardour-midi-notes.py FILE..."""
import sys
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    assert data[:4] == b"MThd", "not a Standard MIDI File"
    pos, counts = 8 + int.from_bytes(data[4:8], "big"), {}
    while pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "big")
        body, pos = data[pos + 8:pos + 8 + size], pos + 8 + size
        if kind != b"MTrk":
            continue
        i, status = 0, 0
        while i < len(body):
            while body[i] & 0x80:  # delta time (variable length)
                i += 1
            i += 1
            if body[i] & 0x80:
                status, i = body[i], i + 1
            if status == 0xFF:  # meta: type, length, data
                i += 1
                n = 0
                while body[i] & 0x80:
                    n, i = (n << 7) | (body[i] & 0x7F), i + 1
                n, i = (n << 7) | body[i], i + 1
                i += n
            elif status in (0xF0, 0xF7):  # sysex
                n = 0
                while body[i] & 0x80:
                    n, i = (n << 7) | (body[i] & 0x7F), i + 1
                n, i = (n << 7) | body[i], i + 1
                i += n
            else:
                n = 1 if status & 0xF0 in (0xC0, 0xD0) else 2
                if status & 0xF0 == 0x90 and body[i + 1] > 0:
                    ch = (status & 0x0F) + 1
                    counts[ch] = counts.get(ch, 0) + 1
                i += n
    print(path + ": note-ons per channel " + ", ".join(f"ch {c}: {n}" for c, n in sorted(counts.items())))
