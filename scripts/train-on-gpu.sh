#!/usr/bin/env bash
# Trains a decoder on one CUDA GPU for a fixed wall-clock budget, so that the run's learning-rate
# schedule ends inside it: a short calibration run measures seconds per step, then the real run
# gets as many steps as fit. Built for machines lent for minutes (no Rust toolchain there: build
# `staria-train` with `--features cuda` where one is, and bring the binary).
#
#   scripts/train-on-gpu.sh BIN CONFIG SHARDS INIT OUT SECONDS
#
# INIT is a decoder checkpoint to start from (`-` for none); OUT the run folder. Prints the
# calibration figures and the run's validation losses. STARIA_SECONDS_PER_STEP (measured by an
# earlier calibration on the same machine and config) skips the calibration run.
set -euo pipefail
bin=$1 config=$2 shards=$3 init=$4 out=$5 budget=$6
device=${STARIA_DEVICE:-cuda}  # cpu to try the script where there is no GPU
t0=$(date +%s)
init_args=()
[ "$init" != - ] && init_args=(--init "$init")

# The [decoder] table's `steps` set to $1 (other tables keep theirs).
with_steps() {
    python3 - "$config" "$1" <<'PY'
import re, sys
text, steps = open(sys.argv[1]).read(), sys.argv[2]
head, sep, rest = text.partition("[decoder]")
body, nxt, tail = rest.partition("\n[")
body = re.sub(r"(?m)^steps = .*$", f"steps = {steps}", body)
body = re.sub(r"(?m)^eval_every = .*$", "eval_every = 1000000", body) if steps == "40" else body
print(head + sep + body + nxt + tail, end="")
PY
}

cal=$(mktemp -d)
if [ -n "${STARIA_SECONDS_PER_STEP:-}" ]; then
    # Measured before on this machine and config: no calibration run.
    s_per_step=$STARIA_SECONDS_PER_STEP
else
with_steps 40 > "$cal/config.toml"
"$bin" train-decoder --config "$cal/config.toml" --data "$shards" "${init_args[@]}" \
    --out "$cal/run" --device "$device" --backend candle > "$cal/log" 2>&1 || { cat "$cal/log"; exit 1; }
s_per_step=$(python3 - "$cal/run/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
t = {r["step"]: r["elapsed_s"] for r in rows}
tok = [r["tokens_per_s"] for r in rows[10:]]
print(f"{(t[max(t)] - t[10]) / (max(t) - 10):.4f}")
print(f"calibration: {(t[max(t)] - t[10]) / (max(t) - 10):.4f} s/step, "
      f"{sum(tok) / len(tok):.0f} tokens/s", file=sys.stderr)
PY
)
fi
left=$(( budget - ($(date +%s) - t0) ))
steps=$(python3 -c "print(max(50, int(($left - 45) / $s_per_step / 1.08)))")
echo "budget left ${left}s: ${steps} steps"
with_steps "$steps" > "$cal/run.toml"
"$bin" train-decoder --config "$cal/run.toml" --data "$shards" "${init_args[@]}" \
    --out "$out" --device "$device" --backend candle 2>&1 | grep -v "^\s*$" | tail -n 40
echo "wall: $(( $(date +%s) - t0 ))s"
