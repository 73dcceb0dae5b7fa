#!/usr/bin/env bash
# The multi-GPU checks and the 1/2/4-GPU step benchmarks on a 4-GPU machine, in three device calls of < 10
# minutes (device time is scarce; start-up alone takes ~70 s per training run). Every run starts a Ray cluster of
# its own (RAY_ADDRESS=local), so runs on disjoint GPUs go side by side; timed runs never share a GPU:
#   phase 1: GPU 0: PPO step (1 GPU) | GPUs 1-2: PPO step (2 GPUs), then the 2-GPU PPO test | GPU 3: GRPO n=5 step
#   phase 2: all 4 GPUs: PPO step, then GRPO n=5 step
#   phase 3: the 4-GPU PPO test (checkpoint + resume) and, beside it on GPU 0, the learning test (tests, not timed)
# Pass the phases to run (default all), one per call on the same warm machine: `bash bench/gpu_multi.sh 1`, then
# `bash bench/gpu_multi.sh 2`, then `bash bench/gpu_multi.sh 3`. Logs and bench JSON go to $OUT. Run from the repository root with ray importable:
#   OUT=/tmp/out bash bench/gpu_multi.sh
set -u
export PYTHONUNBUFFERED=1 RAY_ADDRESS=local RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/gpu_multi}
mkdir -p "$OUT"
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
PYTEST="python3 -m pytest -q -x -s -p no:cacheprovider"
STEP="python3 bench/gpu_step.py --steps 2"

PHASES=${*:-1 2 3}
run_phase() { [[ " $PHASES " == *" $1 "* ]]; }

if run_phase 1; then
stamp "phase 1"
(CUDA_VISIBLE_DEVICES=0 timeout 240 $STEP --configs ppo_fast --gpus 1 --work /tmp/gs1 > "$OUT/step1.log" 2>&1
 stamp "step1 rc=$?") &
(CUDA_VISIBLE_DEVICES=1,2 timeout 240 $STEP --configs ppo_fast --gpus 2 --work /tmp/gs2 > "$OUT/step2.log" 2>&1
 stamp "step2 rc=$?"
 CUDA_VISIBLE_DEVICES=1,2 timeout 320 $PYTEST "tests/gpu/test_training_gpu.py::test_ppo_with_critic_and_ref[2]" \
   > "$OUT/ppo2.log" 2>&1; stamp "ppo2 rc=$?") &
(CUDA_VISIBLE_DEVICES=3 timeout 570 $STEP --configs grpo_fast --gpus 1 --work /tmp/gr1 \
   --name gpu_step_grpo_1gpu.json > "$OUT/grpo1.log" 2>&1; stamp "grpo1 rc=$?") &
wait
fi
if run_phase 2; then
stamp "phase 2"
timeout 170 $STEP --configs ppo_fast --gpus 4 --work /tmp/gs4 > "$OUT/step4.log" 2>&1; stamp "step4 rc=$?"
timeout 390 $STEP --configs grpo_fast --gpus 4 --work /tmp/gr4 --name gpu_step_grpo_4gpu.json > "$OUT/grpo4.log" 2>&1
stamp "grpo4 rc=$?"
fi
if run_phase 3; then
stamp "phase 3"
(timeout 560 $PYTEST "tests/gpu/test_training_gpu.py::test_ppo_with_critic_and_ref[4]" > "$OUT/ppo4.log" 2>&1
 stamp "ppo4 rc=$?") &
(CUDA_VISIBLE_DEVICES=0 timeout 560 $PYTEST tests/gpu/test_training_gpu.py -k learns > "$OUT/learn.log" 2>&1
 stamp "learn rc=$?") &
wait
fi
for f in step1 step2 grpo1 learn ppo2 step4 grpo4 ppo4; do
  [ -f "$OUT/$f.log" ] && { echo "== $f"; grep -v "^\s*$" "$OUT/$f.log" | grep -v "Writing model" | tail -4; }
done
