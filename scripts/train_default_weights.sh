#!/usr/bin/env bash
# Train the bundled default weights (jointseg and the bilinear baseline, lite size) on the
# shared high-resolution data, then register the best checkpoint of each in the package.
#   bash scripts/train_default_weights.sh [DATA_DIR] [STEPS] [SEED]
set -euo pipefail
data=${1:-../shared/data/hr}
steps=${2:-500}
seed=${3:-0}
for arch in jointseg bilinear; do
  xjointseg train --data dubai="$data/dubai" --data massachusetts="$data/massachusetts_roads" \
    --arch "$arch" --steps "$steps" --eval-every 100 --sr-warmup 100 --seed "$seed" \
    --threads 1 --out "runs/$arch-s$seed" --quiet &
done
wait
python scripts/register_weights.py runs/jointseg-s"$seed"/best.safetensors jointseg
python scripts/register_weights.py runs/bilinear-s"$seed"/best.safetensors bilinear
