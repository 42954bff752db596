#!/usr/bin/env bash
# Issue 9's sequence on one CUDA GPU, leg by leg, each leg resumable: run it again with the same
# OUT after an interruption (or a lease that ended) and finished legs are skipped, a started one
# continues from its last checkpoint (`--resume`). Built for machines lent for minutes with no
# Rust toolchain: build `staria-train --features cuda` where one is (scripts/cuda-toolchain.sh)
# and bring the binary.
#
#   scripts/train-staria-on-gpu.sh BIN CONFIG SHARDS TRUNK OUT
#
# CONFIG   experiment config, e.g. trainer/configs/small-staria-gpu.toml (its decoder size must
#          be TRUNK's); copied to OUT/run.toml on the first run, with STARIA_SET applied, and
#          that copy is what every later run of the same OUT uses.
# SHARDS   shards from `staria-train prepare` in TRUNK's tokenizer (section windows for the
#          shipped model).
# TRUNK    the decoder-only checkpoint Staria starts from and the baseline continues
#          (models/pretrained/baseline-small).
# OUT      run folder: OUT/log (everything printed), OUT/run.toml, and one folder per leg.
#
# Legs (STARIA_LEGS, in this order; default all but eval):
#   retrieval-before  encoder retrieval of the untrained encoder  -> OUT/retrieval-before.json
#   encoder           contrastive pre-training (train-encoder)    -> OUT/encoder/
#   retrieval-after   encoder retrieval of OUT/encoder            -> OUT/retrieval-after.json
#   staria            stages A/B/C from TRUNK and OUT/encoder     -> OUT/staria/
#   wake-sleep        wake-sleep from OUT/staria                  -> OUT/wake-sleep/
#   baseline          TRUNK continued (train-decoder --init) on as many training sequences as
#                     staria + wake-sleep took (the steps they did, finished or not): decoder.steps = ceil((staria steps x staria
#                     batch + wake steps x wake batch) / staria batch), decoder.batch_size =
#                     staria's                                  -> OUT/baseline-more/
#   eval              one `staria-train eval` with the four models (TRUNK, OUT/staria,
#                     OUT/wake-sleep, OUT/baseline-more) on the validation split of
#                     STARIA_CORPUS and on each folder of STARIA_HELDOUT, at each follow bias
#                     of STARIA_FOLLOW_BIAS -> OUT/eval-SET-fbB.jsonl and .txt. CPU work (the engine's fast decoder): run it where the checkpoints
#                     come back to, not on a lent GPU.
#   pack              (not in the default) the run folders named in STARIA_PACK (default
#                     "staria baseline-more") as f16 zlib'd tar parts of at most 15.5 MiB (the
#                     first one alone when all would be over what one call brings back), with the
#                     logs, retrieval figures and every leg's metrics, into STARIA_PACK_TO
#                     (scripts/pack-checkpoint.py: a lent machine hands back 8 files of 16 MiB
#                     per call: "staria wake-sleep" just fit, 66.1 of 67.1 MB, for the small preset);
#                     `scripts/pack-checkpoint.py unpack PARTS DEST` here)
#   seed-probe        (not in the default) a few real steps at the seed size: untrained seed
#                     decoder and encoder (train-decoder 3 steps, train-encoder 2 steps), then
#                     3 steps of train-staria with everything trainable (stage C, the most
#                     memory), from STARIA_SEED_CONFIG (default trainer/configs/seed.toml); GPU
#                     memory polled with nvidia-smi each second -> OUT/seed-probe.txt
#
# Environment:
#   STARIA_DEVICE   cuda (default) or cpu, to try the whole script where there is no GPU
#   STARIA_LEGS     legs to run, space separated (default: every leg but eval)
#   STARIA_BASELINE_STEPS  the baseline leg's step count, when staria and wake-sleep ran elsewhere
#                   (another call, a machine since given back): their steps, e.g. 250
#   STARIA_SET      config overrides for a fresh OUT, space separated TABLE.KEY=VALUE (e.g.
#                   "staria.stage_a_steps=2 staria.batch_size=2" for a quick check)
#   STARIA_CORPUS   MIDI corpus for the validation split (default ../shared/data/corpus; split
#                   seed 0, fraction 0.05, as the shards)
#   STARIA_HELDOUT  folders of held-out MIDI (default: /work/runs/heldout/oneills and airds)
#   STARIA_EVAL     extra arguments for every eval (default: the model card's, see below)
#   STARIA_FOLLOW_BIAS  snippet-following biases to evaluate at, each its own run and files
#                   (default "4 0": the engine's default, and the models alone)
set -euo pipefail
bin=$(realpath "$1") config=$2 shards=$3 trunk=$4 out=$5
device=${STARIA_DEVICE:-cuda}
legs=${STARIA_LEGS:-retrieval-before encoder retrieval-after staria wake-sleep baseline}
corpus=${STARIA_CORPUS:-../shared/data/corpus}
heldout=${STARIA_HELDOUT:-/work/runs/heldout/oneills /work/runs/heldout/airds}
eval_args=${STARIA_EVAL:---min-p 0.15 --seq-len 1024 --pieces 60 --max-pieces 211}
follow_biases=${STARIA_FOLLOW_BIAS:-4 0}
mkdir -p "$out"
log=$out/log
t0=$(date +%s)
say() { echo "[$(date -u +%H:%M:%S) +$(( $(date +%s) - t0 ))s] $*" | tee -a "$log"; }

# TABLE.KEY=VALUE pairs set in a TOML file (the tables of trainer configs: one level deep).
toml_set() {
    python3 - "$@" <<'PY'
import re, sys
path, pairs = sys.argv[1], sys.argv[2:]
text = open(path).read()
for pair in pairs:
    key, _, value = pair.partition("=")
    table, _, name = key.partition(".")
    if not name or not value:
        sys.exit(f"STARIA_SET: {pair!r} is not TABLE.KEY=VALUE")
    m = re.search(rf"(?ms)^\[{re.escape(table)}\]\n(.*?)(?=^\[|\Z)", text)
    if not m:
        sys.exit(f"{path}: no [{table}] table for {pair!r}")
    body = m.group(1)
    line = rf"(?m)^{re.escape(name)} = .*$"
    body = re.sub(line, f"{name} = {value}", body) if re.search(line, body) else f"{name} = {value}\n" + body
    text = text[:m.start(1)] + body + text[m.end(1):]
open(path, "w").write(text)
PY
}

# The value of TABLE.KEY in a TOML file.
toml_get() {
    python3 - "$1" "$2" <<'PY'
import re, sys
text, (table, name) = open(sys.argv[1]).read(), sys.argv[2].split(".")
m = re.search(rf"(?ms)^\[{re.escape(table)}\]\n(.*?)(?=^\[|\Z)", text)
v = m and re.search(rf"(?m)^{re.escape(name)} = (.*)$", m.group(1))
if not v:
    sys.exit(f"{sys.argv[1]}: no {sys.argv[2]}")
print(v.group(1).split("#")[0].strip())
PY
}

# Whether a run folder holds a finished run (trainer_state.json at its last step).
finished() {
    [ -f "$1/trainer_state.json" ] && python3 - "$1/trainer_state.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
sys.exit(0 if s["step"] >= s["total_steps"] else 1)
PY
}

# A training leg: NAME DIR COMMAND ARGS...; skipped when DIR's run is finished, resumed when
# it was started.
leg() {
    local name=$1 dir=$2
    shift 2
    if finished "$dir"; then
        say "$name: finished before, skipped ($dir)"
        return
    fi
    local resume=()
    [ -f "$dir/trainer_state.json" ] && resume=(--resume)
    say "$name: $* --out $dir ${resume[*]}"
    local s=$(date +%s)
    "$bin" "$@" --out "$dir" "${resume[@]}" --device "$device" --quiet 2>&1 | tee -a "$log"
    say "$name: done in $(( $(date +%s) - s ))s"
}

# A retrieval figure: NAME FILE ARGS...; skipped when FILE exists.
retrieval() {
    local name=$1 file=$2
    shift 2
    if [ -s "$file" ]; then
        say "$name: $file exists, skipped"
        return
    fi
    say "$name"
    "$bin" encoder-retrieval "$@" --data "$shards" --device "$device" --json > "$file.tmp"
    mv "$file.tmp" "$file"
    tee -a "$log" < "$file"
}

if [ ! -f "$out/run.toml" ]; then
    cp "$config" "$out/run.toml.tmp"
    # shellcheck disable=SC2086
    [ -n "${STARIA_SET:-}" ] && toml_set "$out/run.toml.tmp" $STARIA_SET
    mv "$out/run.toml.tmp" "$out/run.toml"
    say "config: $config -> $out/run.toml ${STARIA_SET:+(set: $STARIA_SET)}"
else
    say "config: $out/run.toml (from an earlier run of this OUT; STARIA_SET ignored)"
fi
run=$out/run.toml

for l in $legs; do
    case $l in
    retrieval-before) retrieval "$l" "$out/retrieval-before.json" --config "$run" ;;
    encoder) leg "$l" "$out/encoder" train-encoder --config "$run" --data "$shards" ;;
    retrieval-after) retrieval "$l" "$out/retrieval-after.json" --encoder "$out/encoder" --config "$run" ;;
    staria)
        leg "$l" "$out/staria" train-staria --config "$run" --data "$shards" \
            --decoder "$trunk" --encoder "$out/encoder"
        ;;
    wake-sleep) leg "$l" "$out/wake-sleep" wake-sleep --config "$run" --data "$shards" --model "$out/staria" ;;
    baseline)
        if [ -z "${STARIA_BASELINE_STEPS:-}" ]; then
            for d in staria wake-sleep; do
                [ -f "$out/$d/trainer_state.json" ] || { say "baseline: $out/$d has no run yet"; exit 1; }
                finished "$out/$d" || say "baseline: $out/$d is not finished; matching the steps it did"
            done
        fi
        if [ ! -f "$out/baseline.toml" ]; then
            [ -n "${STARIA_BASELINE_STEPS:-}" ] && steps=$STARIA_BASELINE_STEPS || steps=$(python3 - "$out/staria/trainer_state.json" "$out/wake-sleep/trainer_state.json" \
                "$(toml_get "$run" staria.batch_size)" "$(toml_get "$run" wake_sleep.batch_size)" <<'PY'
import json, math, sys
sta, ws = (json.load(open(p)) for p in sys.argv[1:3])
sb, wb = int(sys.argv[3]), int(sys.argv[4])
print(math.ceil((sta["step"] * sb + ws["step"] * wb) / sb))
PY
)
            cp "$run" "$out/baseline.toml.tmp"
            toml_set "$out/baseline.toml.tmp" "decoder.steps=$steps" \
                "decoder.batch_size=$(toml_get "$run" staria.batch_size)"
            mv "$out/baseline.toml.tmp" "$out/baseline.toml"
            say "baseline: $steps steps of $(toml_get "$run" staria.batch_size) sequences (as many as staria + wake-sleep)"
        fi
        backend=(--backend candle)
        [ "$device" = cpu ] && backend=(--backend fast)
        leg "$l" "$out/baseline-more" train-decoder --config "$out/baseline.toml" --data "$shards" \
            --init "$trunk" "${backend[@]}"
        ;;
    eval)
        models=(--model "$trunk" --model "$out/staria" --model "$out/wake-sleep" --model "$out/baseline-more")
        sets=("validation:$corpus")
        for h in $heldout; do [ -d "$h" ] && sets+=("$(basename "$h"):$h"); done
        for set0 in "${sets[@]}"; do for fb in $follow_biases; do
            set=${set0%%:*}-fb$fb:${set0#*:}
            name=${set%%:*} dir=${set#*:}
            split=()
            [ "${name%-fb*}" = validation ] && split=(--split-seed 0 --split-fraction 0.05)
            if [ -s "$out/eval-$name.jsonl" ]; then
                say "eval $name: exists, skipped"
                continue
            fi
            say "eval $name: $dir"
            # shellcheck disable=SC2086
            "$bin" eval "${models[@]}" --data "$dir" "${split[@]}" $eval_args --follow-bias "$fb" --json \
                > "$out/eval-$name.jsonl.tmp"
            mv "$out/eval-$name.jsonl.tmp" "$out/eval-$name.jsonl"
            python3 - "$out/eval-$name.jsonl" <<'PY' | tee "$out/eval-$name.txt" | tee -a "$log"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
names = ["baseline", "Staria before wake-sleep", "Staria after wake-sleep", "baseline + same extra tokens"]
keys = [("NLL bits/token", "nll_bits_per_token"), ("balanced form adherence", "form_adherence"),
        ("adherence 95% low", "form_adherence_lo"), ("adherence 95% high", "form_adherence_hi"),
        ("verbatim-copy share", "verbatim_copy_share"), ("density ±30%", "density_match_rate"),
        ("onset grid", "onset_grid_agreement"), ("window-edge piling", "window_edge_piling"),
        ("snippet gain bits", "snippet_gain_bits"), ("snippet content bits", "snippet_content_bits"),
        ("valid rate", "valid_rate")]
print(f"{sys.argv[1]}: {rows[0]['pieces']} NLL pieces, {rows[0]['generations']} generations, form {rows[0]['form']}")
print("| model | " + " | ".join(k for k, _ in keys) + " |")
print("|---" * (len(keys) + 1) + "|")
for n, r in zip(names, rows):
    # NaN (nothing to measure) is null in the JSON.
    print(f"| {n} | " + " | ".join("-" if r.get(k) is None else f"{r[k]:.3f}" for _, k in keys) + " |")
PY
        done; done
        ;;
    pack)
        to=${STARIA_PACK_TO:?STARIA_PACK_TO: the folder to pack into (the device machine\'s \$OUT)}
        specs=()
        for n in ${STARIA_PACK:-staria baseline-more}; do specs+=("$n=$out/$n"); done
        files=("$log")
        for f in "$out"/*.json "$out"/*.toml "$out"/*/metrics.jsonl "$out"/seed-probe.txt; do
            [ -f "$f" ] && files+=("$f")
        done
        say "pack: ${specs[*]} -> $to"
        if ! python3 "$(dirname "$0")/pack-checkpoint.py" pack "$to" "${specs[@]}" --files "${files[@]}" \
            --compress 2>&1 | tee -a "$log"; then
            # Over what one call brings back: the first one alone (the rest in the next call).
            say "pack: too much for one call; ${specs[0]} alone"
            python3 "$(dirname "$0")/pack-checkpoint.py" pack "$to" "${specs[0]}" --files "${files[@]}" \
                --compress 2>&1 | tee -a "$log"
        fi
        ;;
    seed-probe)
        sc=$out/seed.toml
        if [ ! -f "$sc" ]; then
            cp "${STARIA_SEED_CONFIG:-trainer/configs/seed.toml}" "$sc.tmp"
            toml_set "$sc.tmp" staria.stage_a_steps=0 staria.stage_b_steps=0 staria.stage_c_steps=10000
            mv "$sc.tmp" "$sc"
        fi
        mem=$out/seed-gpu-memory.txt
        poll=
        if command -v nvidia-smi > /dev/null; then
            (while sleep 1; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; done) > "$mem" &
            poll=$!
        fi
        backend=(--backend candle)
        [ "$device" = cpu ] && backend=(--backend fast)
        for sub in "seed-decoder train-decoder 3 ${backend[*]}" "seed-encoder train-encoder 2" \
            "seed-staria train-staria 3 --decoder $out/seed-decoder --encoder $out/seed-encoder"; do
            read -r dir cmd steps extra <<< "$sub"
            if [ -f "$out/$dir/trainer_state.json" ]; then
                say "seed-probe $dir: exists, skipped"
                continue
            fi
            say "seed-probe $dir: $cmd, $steps steps"
            s=$(date +%s)
            # shellcheck disable=SC2086
            "$bin" "$cmd" --config "$sc" --data "$shards" --out "$out/$dir" --device "$device" \
                --max-steps "$steps" --quiet $extra 2>&1 | tee -a "$log"
            say "seed-probe $dir: done in $(( $(date +%s) - s ))s"
        done
        [ -n "$poll" ] && kill "$poll"
        python3 - "$out" "$mem" <<'PY' | tee "$out/seed-probe.txt" | tee -a "$log"
import json, os, sys
out, mem = sys.argv[1], sys.argv[2]
for d in ["seed-decoder", "seed-encoder", "seed-staria"]:
    rows = [json.loads(l) for l in open(os.path.join(out, d, "metrics.jsonl")) if '"train"' in l]
    t = [r["elapsed_s"] for r in rows]
    steps = [round(b - a, 2) for a, b in zip([0.0] + t, t)]
    tok = [r["tokens_per_s"] for r in rows]
    print(f"{d}: seconds per step {steps} (the first includes start-up), last tokens/s {tok[-1]:.0f}")
if os.path.exists(mem):
    used = [int(x) for x in open(mem).read().split() if x.isdigit()]
    if used:
        print(f"GPU memory used, most seen: {max(used)} MiB (polled each second)")
PY
        ;;
    *) say "unknown leg $l"; exit 1 ;;
    esac
done
say "legs done: $legs"
