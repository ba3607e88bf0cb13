#!/usr/bin/env bash
# Rebuilds the tiny RoboPoint shipped in src/robopoint_hf/default_model/, from nothing, on a CPU:
#   synthetic data (fixed seeds) -> tokenizer + random model -> three training stages -> evaluation -> the shipped
#   folder. A curriculum, because a few-million-parameter model trained on the full mix from scratch answers from
#   the question alone and never starts reading the image:
#     1. one object per scene, questions about it, answered with ONE point at its centre (a function of the image,
#        where 3-8 random points are mostly noise): the model learns to read WHERE a thing is off the image tokens.
#        The vision tower stays at its random initialisation, which keeps the objects' colours in its tokens;
#     2. 2-3 objects, questions naming one by colour and kind (or by a red box), still one centre point: it learns
#        WHICH object the words mean;
#     3. the full mix of scenes and families with RoboPoint's answers (3-8 points sampled in the region), plus half
#        of the stage-2 questions again, so that this stage does not unlearn stage 2.
#   The measurements behind each choice: docs/design/tiny_model.md.
#
#   bash scripts/train_tiny_model.sh                 # everything under runs/tiny/
#   OUT=/tmp/tiny WHERE2PLACE=/path/to/where2place bash scripts/train_tiny_model.sh
#
# WHERE2PLACE (optional) is a local copy of the real benchmark; its score goes into the model card. Each stage
# trains for its wall-clock budget (STAGE1_MINUTES, ...) with its learning-rate schedule over time (a step's speed
# varies several-fold on a shared CPU); the card records the steps reached. Everything else is seeded.
set -euo pipefail

OUT=${OUT:-runs/tiny}
SEED=${SEED:-0}
STAGE1_MINUTES=${STAGE1_MINUTES:-25}
STAGE2_MINUTES=${STAGE2_MINUTES:-15}
STAGE3_MINUTES=${STAGE3_MINUTES:-20}
THREADS=${THREADS:-2}
SHIP_TO=${SHIP_TO:-src/robopoint_hf/default_model}

robopoint synth --n 40000 --output-dir "$OUT/data" --seed "$SEED" --split-eval 600 --workers "$THREADS"
robopoint synth --n 20000 --output-dir "$OUT/data_one" --seed "$((SEED + 1))" --workers "$THREADS" \
    --objects 1-1 --families object_attribute,object_highlight --answer centre
robopoint synth --n 20000 --output-dir "$OUT/data_few" --seed "$((SEED + 2))" --workers "$THREADS" \
    --objects 2-3 --families object_attribute,object_highlight --answer centre
# The first half of stage 2's records again (the same seed, so the same scenes), replayed in stage 3: regenerated
# (seconds) rather than cut out of data_few, so that its synth_info.json, and the card, count what stage 3 saw.
robopoint synth --n 10000 --output-dir "$OUT/data_replay" --seed "$((SEED + 2))" --workers "$THREADS" \
    --objects 2-3 --families object_attribute,object_highlight --answer centre
python scripts/tiny_model.py mix --data "$OUT/data" "$OUT/data_replay" --out "$OUT/data_mix"
python scripts/tiny_model.py build --data "$OUT/data" --out "$OUT/init" --seed "$SEED"
python scripts/tiny_model.py train --data "$OUT/data_one" --init "$OUT/init" --output-dir "$OUT/stage1" \
    --threads "$THREADS" --max-minutes "$STAGE1_MINUTES" --freeze-vision-tower
python scripts/tiny_model.py train --data "$OUT/data_few" --init "$OUT/stage1" --output-dir "$OUT/stage2" \
    --threads "$THREADS" --max-minutes "$STAGE2_MINUTES"
python scripts/tiny_model.py train --data "$OUT/data_mix" --init "$OUT/stage2" --output-dir "$OUT/model" \
    --threads "$THREADS" --max-minutes "$STAGE3_MINUTES"
python scripts/tiny_model.py evaluate --model "$OUT/model" --data "$OUT/data/eval" \
    --out "$OUT/eval_synth.json" --answers "$OUT/answers_synth.jsonl"
REAL=()
if [ -n "${WHERE2PLACE:-}" ]; then
    python scripts/tiny_model.py evaluate --model "$OUT/model" --data "$WHERE2PLACE" \
        --out "$OUT/eval_where2place.json" --answers "$OUT/answers_where2place.jsonl"
    REAL=(--real-results "$OUT/eval_where2place.json")
fi
python scripts/tiny_model.py ship --model "$OUT/model" --results "$OUT/eval_synth.json" \
    --answers "$OUT/answers_synth.jsonl" --eval-data "$OUT/data/eval" --out "$SHIP_TO" "${REAL[@]}"
