#!/usr/bin/env bash
# Train the bundled default weights (jointseg and the bilinear baseline, lite size) on the
# shared high-resolution data: both architectures on the same crops, budget and schedule,
# one thread each, side by side. Register the best checkpoints afterwards with
# scripts/register_weights.py; scripts/seed_table.py OUT prints the validation table.
#   bash scripts/train_default_weights.sh [DATA_DIR] [STEPS] [SEED] [OUT]
# The bundled weights: STEPS=1500 SEED=0 OUT=runs/long; the 3-seed comparison: STEPS=600.
set -euo pipefail
data=${1:-../shared/data/hr}
steps=${2:-1500}
seed=${3:-0}
out=${4:-runs}
mkdir -p "$out"
for arch in jointseg bilinear; do
  xjointseg train --data dubai="$data/dubai" --data massachusetts="$data/massachusetts_roads" \
    --arch "$arch" --steps "$steps" --lr 1e-3 --eval-every 100 --sr-warmup 150 --seed "$seed" \
    --threads 1 --out "$out/$arch-s$seed" --quiet > "$out/$arch-s$seed.log" 2>&1 &
done
wait
