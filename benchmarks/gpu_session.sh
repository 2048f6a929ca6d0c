#!/usr/bin/env bash
# One GPU session's measurements (about 8 minutes on one H200): the arena families' training speed,
# and PixelCNN on binarized MNIST trained as long as ~270 s allow (the README's CPU recipe is far
# from convergence). Usage: bash benchmarks/gpu_session.sh DATA_ROOT OUT_DIR
set -uo pipefail
DATA=${1:?data root}; OUT=${2:?output directory}; RUNS=$(mktemp -d)  # run directories stay on the machine
export PYTHONPATH=src PYTHONUNBUFFERED=1
genzoo() { python3 -m genzoo "$@"; }
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
for job in "made eight-gaussians" "vae eight-gaussians" "gan eight-gaussians"; do
  set -- $job
  start=$(python3 -c "import time; print(time.time())")
  genzoo train $1 --data $2 --max-steps 2000 --eval-metrics '' --out "$RUNS/arena-$1" > "$RUNS/arena-$1.log" 2>&1
  python3 -c "import time, csv; r = list(csv.DictReader(open('$RUNS/arena-$1/log.csv'))); print('arena $1 on $2: 2000 steps, %.0f s in all, %.0f examples/s at the end' % (time.time() - $start, float(r[-1]['examples_per_s'])))"
done
# PixelCNN: measure steps/s, then choose the epochs that fit the time left
genzoo train pixelcnn --data binarized_mnist --data-root "$DATA" --max-steps 300 --batch-size 64 --precision bf16 \
  --eval-metrics '' --out "$RUNS/probe" > "$RUNS/probe.log" 2>&1
rate=$(python3 -c "import csv; r=list(csv.DictReader(open('$RUNS/probe/log.csv'))); print(float(r[-1]['examples_per_s'])/64)")
epochs=$(python3 -c "print(max(1, int(270 * $rate / 781)))")
echo "pixelcnn: $rate steps/s at batch 64 -> $epochs epochs"
genzoo train pixelcnn --data binarized_mnist --data-root "$DATA" --epochs "$epochs" --batch-size 64 --precision bf16 \
  --lr-schedule cosine --eval-metrics nll --out "$RUNS/pixelcnn" 2>&1 | grep -v "it/s" | tail -8
cp "$RUNS/pixelcnn/metrics.json" "$OUT/pixelcnn_metrics.json"; cp "$RUNS/pixelcnn/log.csv" "$OUT/pixelcnn_log.csv"
