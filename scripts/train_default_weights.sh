#!/usr/bin/env bash
# Train the bundled default weights (jointseg and the bilinear baseline, lite size): both
# architectures on the same crops, budget and schedule, one thread each, side by side.
# Each starts from the previous bundled weights of its architecture (trained on the aerial
# triples alone) and fine-tunes on the triples plus real Sentinel-2 of the OSCD training
# cities with Dynamic World weak labels. Register the best checkpoints afterwards with
# scripts/register_weights.py; scripts/evaluate.py scores them on the test places.
#   bash scripts/train_default_weights.sh [DATA_DIR] [STEPS] [SEED] [OUT] [EXTRA ARGS...]
# e.g. the ablation without real data: ... 700 0 runs/noreal --real-batch-size 0
set -euo pipefail
data=${1:-../shared/data}
steps=${2:-700}
seed=${3:-0}
out=${4:-runs}
shift $(( $# < 4 ? $# : 4 ))
init=${INIT_DIR:-xjointseg/models/weights}
mkdir -p "$out"
for arch in ${ARCHS:-jointseg bilinear}; do
  xjointseg train --data dubai="$data/hr/dubai" --data massachusetts="$data/hr/massachusetts_roads" \
    --oscd "$data/s2/oscd" --init-from "$init/$arch-lite.safetensors" \
    --arch "$arch" --steps "$steps" --lr 1e-3 --eval-every 100 --sr-warmup 0 --seed "$seed" \
    --threads 1 --out "$out/$arch-s$seed" --quiet "$@" > "$out/$arch-s$seed.log" 2>&1 &
done
wait
