#!/usr/bin/env python3
"""Pack checkpoint folders into parts small enough to come back from a lent GPU machine, and
unpack them again.

A lent machine hands back at most 8 files of at most 16 MiB each (64 MiB in all) per call
(/work/.library/device/README.md), and a `small` Staria checkpoint's f32 weights alone are
72 MB. So:

    pack-checkpoint.py pack OUT NAME=DIR [NAME=DIR ...] [--files F ...] [--max-mib 15.5]

writes, for each checkpoint folder DIR, `OUT/NAME.tar.partNN` (NN from 00; with --compress the
tar is zlib-compressed first, `OUT/NAME.tar.z.partNN`, about 8% smaller for f16 weights): a tar of its
`config.json`, `tokenizer.json`, `trainer_state.json`, `metrics.jsonl` (those present) and its
`model.safetensors` with every F32 tensor stored as F16 (`config.json`'s `weights_dtype` says
so; the safetensors metadata, the tokenizer hash among it, is kept), cut into parts of at most
--max-mib MiB. The optimizer state is left out: what comes back is for evaluation, not for
resuming. `--files` adds loose small files (logs) as one more tar, `OUT/files.tar.part00..`.

    pack-checkpoint.py unpack PARTS_DIR DEST

joins every `NAME.tar.partNN` (or `NAME.tar.z.partNN`) found in PARTS_DIR in order and extracts it to `DEST/NAME/`
(files.tar to `DEST/files/`). Stored in F16 the weights are what the engine's default fast path
reads anyway (it packs f16); candle's evaluation reads them back to f32. Needs numpy for speed
when it is there (the GPU image has it), else converts with the standard library (slower).
"""

import argparse
import io
import json
import os
import struct
import sys
import tarfile
import zlib

try:
    import numpy as np
except ImportError:  # the 2-core VM has no numpy
    np = None

KEEP = ["config.json", "tokenizer.json", "trainer_state.json", "metrics.jsonl"]


def f32_to_f16(raw: bytes) -> bytes:
    if np is not None:
        return np.frombuffer(raw, dtype="<f4").astype("<f2").tobytes()
    n = len(raw) // 4
    return struct.pack(f"<{n}e", *struct.unpack(f"<{n}f", raw))


def safetensors_to_f16(data: bytes) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out_header, chunks, offset = {}, [], 0
    for name, info in sorted(
        ((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0]
    ):
        start, end = info["data_offsets"]
        raw = body[start:end]
        dtype = info["dtype"]
        if dtype == "F32":
            raw, dtype = f32_to_f16(raw), "F16"
        chunks.append(raw)
        out_header[name] = {"dtype": dtype, "shape": info["shape"], "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    if "__metadata__" in header:
        out_header["__metadata__"] = header["__metadata__"]
    text = json.dumps(out_header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_parts(out: str, name: str, data: bytes, max_bytes: int, compress: bool = False) -> list:
    paths = []
    ext = "tar"
    if compress:
        data, ext = zlib.compress(data, 6), "tar.z"
    for k in range(0, max(1, (len(data) + max_bytes - 1) // max_bytes)):
        path = os.path.join(out, f"{name}.{ext}.part{k:02d}")
        with open(path + ".tmp", "wb") as f:
            f.write(data[k * max_bytes : (k + 1) * max_bytes])
        os.replace(path + ".tmp", path)
        paths.append(path)
    return paths


def pack(args) -> None:
    os.makedirs(args.out, exist_ok=True)
    max_bytes = int(args.max_mib * (1 << 20))
    written = []
    for spec in args.checkpoints:
        name, _, src = spec.partition("=")
        if not src or not os.path.isdir(src):
            sys.exit(f"pack: {spec!r} is not NAME=DIR with DIR a checkpoint folder")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for f in KEEP:
                p = os.path.join(src, f)
                if os.path.isfile(p):
                    data = open(p, "rb").read()
                    if f == "config.json":
                        cfg = json.loads(data)
                        if "weights_dtype" in cfg:
                            cfg["weights_dtype"] = "f16"
                        data = json.dumps(cfg, indent=2).encode()
                    add_bytes(tar, f, data)
            weights = os.path.join(src, "model.safetensors")
            if not os.path.isfile(weights):
                sys.exit(f"pack: {weights} is missing")
            add_bytes(tar, "model.safetensors", safetensors_to_f16(open(weights, "rb").read()))
        written += write_parts(args.out, name, buf.getvalue(), max_bytes, args.compress)
    if args.files:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for p in args.files:
                if os.path.isfile(p):
                    tar.add(p, arcname=os.path.basename(os.path.dirname(os.path.abspath(p))) + "-" + os.path.basename(p))
        written += write_parts(args.out, "files", buf.getvalue(), max_bytes)
    total = sum(os.path.getsize(p) for p in written)
    for p in written:
        print(f"{p}: {os.path.getsize(p) / 1e6:.1f} MB")
    print(f"{len(written)} files, {total / 1e6:.1f} MB in all")
    if len(written) > 8 or total > 64 << 20:
        for p in written:
            os.remove(p)
        print("more than one call brings back (8 files, 64 MiB): nothing packed; pack fewer at a time", file=sys.stderr)
        sys.exit(2)


def unpack(args) -> None:
    stems = sorted({f.split(".part")[0] for f in os.listdir(args.parts) if ".tar.part" in f or ".tar.z.part" in f})
    if not stems:
        sys.exit(f"unpack: no NAME.tar.partNN or NAME.tar.z.partNN in {args.parts}")
    for stem in stems:
        name = stem.removesuffix(".z").removesuffix(".tar")
        parts = sorted(f for f in os.listdir(args.parts) if f.startswith(stem + ".part"))
        data = b"".join(open(os.path.join(args.parts, p), "rb").read() for p in parts)
        if stem.endswith(".z"):
            data = zlib.decompress(data)
        dest = os.path.join(args.dest, name)
        os.makedirs(dest, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(dest, filter="data")
        print(f"{dest}: {', '.join(sorted(os.listdir(dest)))} (from {len(parts)} parts)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("out")
    p.add_argument("checkpoints", nargs="*", metavar="NAME=DIR")
    p.add_argument("--files", nargs="*", default=[])
    p.add_argument("--max-mib", type=float, default=15.5)
    p.add_argument("--compress", action="store_true", help="zlib each checkpoint's tar (~8%% smaller)")
    u = sub.add_parser("unpack")
    u.add_argument("parts")
    u.add_argument("dest")
    args = ap.parse_args()
    pack(args) if args.cmd == "pack" else unpack(args)


if __name__ == "__main__":
    main()
