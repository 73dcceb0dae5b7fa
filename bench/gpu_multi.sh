#!/usr/bin/env bash
# The multi-GPU checks and the 1/2/4-GPU step benchmark in one call on a 4-GPU machine (device time is scarce).
# Every run starts a Ray cluster of its own (RAY_ADDRESS=local), so runs on disjoint GPUs go side by side:
#   phase 1: gpu_step on GPU 0 (1 GPU) | gpu_step on GPUs 1-2, then the 2-GPU PPO test there | learning test on GPU 3
#   phase 2: gpu_step on all 4 GPUs;  phase 3: the 4-GPU PPO test.
# Start-up alone takes ~70 s per run (random 0.5B model, Ray, workers); all three phases need ~16 min, more than
# one 10-minute device call: pass the phases to run (default all), e.g. `bash bench/gpu_multi.sh 1` then `2 3`.
# Logs and bench JSON go to $OUT. Run from the repository root with ray importable:
#   OUT=/tmp/out bash bench/gpu_multi.sh
set -u
export PYTHONUNBUFFERED=1 RAY_ADDRESS=local RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/gpu_multi}
mkdir -p "$OUT"
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
PYTEST="python3 -m pytest -q -x -s -p no:cacheprovider"
STEP="python3 bench/gpu_step.py --configs ppo_fast --steps 2"

PHASES=${*:-1 2 3}
run_phase() { [[ " $PHASES " == *" $1 "* ]]; }

if run_phase 1; then
stamp "phase 1"
(CUDA_VISIBLE_DEVICES=0 timeout 300 $STEP --gpus 1 --work /tmp/gs1 > "$OUT/step1.log" 2>&1; stamp "step1 rc=$?") &
(CUDA_VISIBLE_DEVICES=1,2 timeout 300 $STEP --gpus 2 --work /tmp/gs2 > "$OUT/step2.log" 2>&1; stamp "step2 rc=$?"
 CUDA_VISIBLE_DEVICES=1,2 timeout 300 $PYTEST "tests/gpu/test_training_gpu.py::test_ppo_with_critic_and_ref[2]" \
   > "$OUT/ppo2.log" 2>&1; stamp "ppo2 rc=$?") &
(CUDA_VISIBLE_DEVICES=3 timeout 420 $PYTEST tests/gpu/test_training_gpu.py -k learns > "$OUT/learn.log" 2>&1
 stamp "learn rc=$?") &
wait
fi
if run_phase 2; then
stamp "phase 2"
timeout 240 $STEP --gpus 4 --work /tmp/gs4 > "$OUT/step4.log" 2>&1; stamp "step4 rc=$?"
fi
if run_phase 3; then
stamp "phase 3"
timeout 300 $PYTEST "tests/gpu/test_training_gpu.py::test_ppo_with_critic_and_ref[4]" > "$OUT/ppo4.log" 2>&1
stamp "ppo4 rc=$?"
fi
for f in step1 step2 step4 ppo2 ppo4 learn; do
  [ -f "$OUT/$f.log" ] && { echo "== $f"; grep -v "^\s*$" "$OUT/$f.log" | grep -v "Writing model" | tail -4; }
done
