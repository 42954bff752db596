#!/usr/bin/env bash
# Decode speed of the `staria` engine against the PyTorch eager peer (../shared/bench) on the same
# checkpoint shape, in one run, alternating, so machine noise hits both alike. Quote the ratio.
#
#   scripts/bench-vs-pytorch.sh [MODEL_DIR] [ROUNDS]
#
# Needs: a release build of `staria` (cargo build --release -p staria-engine) and `pip install torch`.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/pretrained/baseline-small}
rounds=${2:-3}
peer=../shared/bench/torch_decode_bench.py
bin=${CARGO_TARGET_DIR:-target}/release/staria
[ -x "$bin" ] || { echo "build first: cargo build --release -p staria-engine" >&2; exit 2; }
[ -f "$peer" ] || { echo "no peer script at $peer" >&2; exit 2; }
args=(--model "$model")
config=$model/config.json
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
  for w in f16 q8 f32; do
    echo "staria[$w] $("$bin" bench "${args[@]}" --threads 1 --weights "$w")"
  done
  echo "pytorch $(python3 "$peer" --config "$config" --threads 1)"
done
