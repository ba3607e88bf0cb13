#!/usr/bin/env bash
# Rebuilds the tiny RoboPoint shipped in src/robopoint_hf/default_model/, from nothing, on a CPU:
#   synthetic data (fixed seed) -> tokenizer + random model -> training -> evaluation -> the shipped folder.
#
#   bash scripts/train_tiny_model.sh                 # everything under runs/tiny/
#   OUT=/tmp/tiny WHERE2PLACE=/path/to/where2place bash scripts/train_tiny_model.sh
#
# WHERE2PLACE (optional) is a local copy of the real benchmark; its score goes into the model card. Training runs
# for MAX_MINUTES of wall-clock time with its learning-rate schedule over time (a step's speed varies several-fold
# on a shared CPU); the card records the steps reached. Everything else is seeded.
set -euo pipefail

OUT=${OUT:-runs/tiny}
SEED=${SEED:-0}
MAX_MINUTES=${MAX_MINUTES:-45}
THREADS=${THREADS:-2}
SHIP_TO=${SHIP_TO:-src/robopoint_hf/default_model}

robopoint synth --n 40000 --out "$OUT/data" --seed "$SEED" --split-eval 600 --workers "$THREADS"
python -m robopoint_hf.tiny build --data "$OUT/data" --out "$OUT/init" --seed "$SEED"
python -m robopoint_hf.tiny train --data "$OUT/data" --init "$OUT/init" --output-dir "$OUT/model" \
    --threads "$THREADS" --max-minutes "$MAX_MINUTES"
python -m robopoint_hf.tiny evaluate --model "$OUT/model" --data "$OUT/data/eval" \
    --out "$OUT/eval_synth.json" --answers "$OUT/answers_synth.jsonl"
REAL=()
if [ -n "${WHERE2PLACE:-}" ]; then
    python -m robopoint_hf.tiny evaluate --model "$OUT/model" --data "$WHERE2PLACE" \
        --out "$OUT/eval_where2place.json" --answers "$OUT/answers_where2place.jsonl"
    REAL=(--real-results "$OUT/eval_where2place.json")
fi
python -m robopoint_hf.tiny ship --model "$OUT/model" --results "$OUT/eval_synth.json" \
    --answers "$OUT/answers_synth.jsonl" --eval-data "$OUT/data/eval" --out "$SHIP_TO" "${REAL[@]}"
