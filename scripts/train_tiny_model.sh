#!/usr/bin/env bash
# Rebuilds the tiny RoboPoint shipped in src/robopoint_hf/default_model/, from nothing, on a CPU:
#   synthetic data (fixed seeds) -> tokenizer + random model -> two training stages -> evaluation -> the shipped
#   folder. Stage 1 shows one object per scene and asks for it (learning to read WHERE things are in the image
#   tokens); stage 2 trains on the full mix of scenes and question families.
#
#   bash scripts/train_tiny_model.sh                 # everything under runs/tiny/
#   OUT=/tmp/tiny WHERE2PLACE=/path/to/where2place bash scripts/train_tiny_model.sh
#
# WHERE2PLACE (optional) is a local copy of the real benchmark; its score goes into the model card. Each stage
# trains for its wall-clock budget (STAGE1_MINUTES, STAGE2_MINUTES) with its learning-rate schedule over time (a
# step's speed varies several-fold on a shared CPU); the card records the steps reached. Everything else is seeded.
set -euo pipefail

OUT=${OUT:-runs/tiny}
SEED=${SEED:-0}
STAGE1_MINUTES=${STAGE1_MINUTES:-18}
STAGE2_MINUTES=${STAGE2_MINUTES:-37}
THREADS=${THREADS:-2}
SHIP_TO=${SHIP_TO:-src/robopoint_hf/default_model}

robopoint synth --n 40000 --out "$OUT/data" --seed "$SEED" --split-eval 600 --workers "$THREADS"
robopoint synth --n 20000 --out "$OUT/data_single" --seed "$((SEED + 1))" --workers "$THREADS" \
    --objects 1-1 --families object_attribute,object_highlight
python -m robopoint_hf.tiny build --data "$OUT/data" --out "$OUT/init" --seed "$SEED"
python -m robopoint_hf.tiny train --data "$OUT/data_single" --init "$OUT/init" --output-dir "$OUT/stage1" \
    --threads "$THREADS" --max-minutes "$STAGE1_MINUTES"
python -m robopoint_hf.tiny train --data "$OUT/data" --init "$OUT/stage1" --output-dir "$OUT/model" \
    --threads "$THREADS" --max-minutes "$STAGE2_MINUTES"
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
