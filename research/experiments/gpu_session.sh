#!/usr/bin/env bash
# One lease of a GPU machine (PyTorch, no SimpleITK), sized to ~9 minutes: session rounds timed on
# the bundled sample, then five training runs side by side on the packed training split
# (research/experiments/packed.py; pack it first into gpu/cases.npz and carry gpu/):
#   cont-2e-4    the bundled model continued at its stages' rate and imitation target, the new
#                loop's mixed users (edge, interior, random; 1-5 clicks)
#   cont-5e-5    the same at a quarter of the rate
#   cont-bundled the bundled stages' own recipe (edge user alone, 1-9 clicks) at 2e-4
#   hippocampus  a new model on hippocampus alone (the cross-task proxy's model)
#   left-atrium  a new model on left atrium alone
# The first run trains alone for 45 s (the single-process rate). Each run's epoch models and step
# log come back as one tar in $OUT; score them here with mecca evaluate.
# The packed held-out cases are scored in bfloat16 and float32 beside them (packed.py spread).
# Usage (on the device): bash research/experiments/gpu_session.sh [seconds, default 540]
set -u
budget=${1:-540}
device=${DEVICE:-cuda}
start=$(date +%s)
export PYTHONPATH=$PWD/MECCASegment:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3
log=$OUT/run.log
nvidia-smi --query-gpu=name,memory.total --format=csv | tee -a "$log"
python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())" | tee -a "$log"
mkdir -p runs/gpu/measures
timeout 100 python3 -m research.experiments.packed bench --cases gpu/cases.npz --device "$device" --roi 128,256 \
  --repeats 3 --json runs/gpu/measures/bench.json >> "$log" 2>&1
echo "bench done at $(( $(date +%s) - start )) s" >> "$log"
for precision in bfloat16 float32; do  # Dice of the packed held-out cases, to compare with this CPU's
  timeout $(( budget - 100 )) python3 -m research.experiments.packed spread --cases gpu/cases.npz --device "$device" \
    --precision $precision --json runs/gpu/measures/spread-$precision.json > /dev/null 2>> "$log" &
done
# the bundled stages imitated the largest step: a continuation keeps that target (environment.oracle_actions)
echo '{"imitation_target": "largest"}' > runs/gpu/continued.json
echo '{"imitation_target": "largest", "user_styles": ["edge"], "clicks_per_round": [1, 9]}' > runs/gpu/bundled-recipe.json
train() {  # name, then packed.py train options
  local name=$1; shift
  local left=$(( budget - ($(date +%s) - start) ))
  timeout "$left" python3 -m research.experiments.packed train --cases gpu/cases.npz --device "$device" \
    --out "runs/gpu/$name/mecca.safetensors" "$@" > "runs/gpu/$name.jsonl" 2> "runs/gpu/$name.err" &
}
bundled=Resources/Models/mecca.safetensors
train cont-2e-4 --init $bundled --lr 2e-4 --epochs 6 --config runs/gpu/continued.json
sleep 45
train cont-5e-5 --init $bundled --lr 5e-5 --epochs 6 --config runs/gpu/continued.json
train cont-bundled --init $bundled --lr 2e-4 --epochs 6 --config runs/gpu/bundled-recipe.json
train hippocampus --only Hippocampus --epochs 15
train left-atrium --only LeftAtrium2018 --epochs 40
wait
echo "training done at $(( $(date +%s) - start )) s" >> "$log"
for name in cont-2e-4 cont-5e-5 cont-bundled hippocampus left-atrium; do
  tail -n 3 "runs/gpu/$name.err" >> "$log"
  tar -cf "$OUT/$name.tar" -C runs/gpu "$name.jsonl" $(cd runs/gpu && ls $name/mecca.run/epoch-*.safetensors \
    $name/mecca.run/log.jsonl $name/mecca.run/last.safetensors 2>/dev/null)
done
tar -cf "$OUT/measures.tar" -C runs/gpu measures
ls -la "$OUT" >> "$log"
