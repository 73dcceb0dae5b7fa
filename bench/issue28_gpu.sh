#!/usr/bin/env bash
# Issue 28's GPU checks on one card, in phases of under 10 minutes (one device call each, the same warm machine),
# most needed first. Logs and JSON go to $OUT; each phase prints a short summary last.
#   bash bench/issue28_gpu.sh 1   # the step targets: verl's settings (ppo_fast, grpo_fast) and a token budget (~450 s)
#   bash bench/issue28_gpu.sh 2   # the other token-budget step (grpo_budget) and the C++ wrapper's step (ppo_fast_cpp)
#   bash bench/issue28_gpu.sh 3   # GPU tests: packed attention (varlen_aten with the C++ wrapper included), compiled
#                                 # layers, offload; then the GRPO learning test
#   bash bench/issue28_gpu.sh 4   # bench/train_kernels.py (the padded vs packed table), bench/update_profile.py
#   bash bench/issue28_gpu.sh 5   # train_kernels with the C++ wrapper: padded, packed through varlen_aten, and
#                                 # torch's varlen_attn (expected to fail to compile there: the control)
# Ray and its dependencies, which the image lacks, travel as wheels in .whl/ and .raywhl/ (carry them; ../shared/
# GPU.md): they are unpacked into /tmp/site once per machine.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/issue28}
mkdir -p "$OUT"
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ ! -d /tmp/site/ray ] && ls .whl/*.whl .raywhl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl .raywhl/*.whl >/dev/null 2>&1
fi
python3 -c "import ray, strive.cli" || { echo "ray or strive does not import"; exit 3; }
stamp "setup"

quiet() { grep -v "^(\|WARNING\|Warning" | tail -"$1"; }
step() {  # step NAME LIMIT CONFIG...: bench/gpu_step.py, results in $OUT/NAME.json
  local name=$1 limit=$2; shift 2
  timeout "$limit" python3 bench/gpu_step.py --configs "$@" --name "$name.json" > "$OUT/$name.log" 2>&1
  stamp "$name rc=$?"; quiet 25 < "$OUT/$name.log"
}
tests() {  # tests NAME LIMIT PYTEST-ARGS...
  local name=$1 limit=$2; shift 2
  timeout "$limit" python3 -m pytest -q -s -p no:cacheprovider "$@" > "$OUT/$name.log" 2>&1
  stamp "$name rc=$?"; grep -E "passed|failed|error|^FAILED|^ERROR|^\{" "$OUT/$name.log" | tail -20
}

case "${1:?phase 1-5}" in
  1) step targets 570 ppo_fast grpo_fast ppo_budget ;;
  2) step targets2 570 grpo_budget ppo_fast_cpp ;;
  3) tests gpu_tests 330 tests/gpu/test_packed_attention_gpu.py tests/gpu/test_compile_gpu.py \
       tests/gpu/test_activation_offload_gpu.py tests/gpu/test_offload_gpu.py
     tests gpu_learns 240 tests/gpu/test_training_gpu.py -k grpo_learns ;;
  4) timeout 360 python3 bench/train_kernels.py --out "$OUT/train_kernels.json" > "$OUT/train_kernels.log" 2>&1
     stamp "train_kernels rc=$?"; tail -3 "$OUT/train_kernels.log"
     timeout 150 python3 bench/update_profile.py default --profile --name=update_profile > "$OUT/update_profile.log" 2>&1
     stamp "update_profile rc=$?"; quiet 30 < "$OUT/update_profile.log" ;;
  5) timeout 540 python3 bench/train_kernels.py --micro 4 --budgets 32768 --compile cpp \
       --variants padded packed_varlen_aten auto packed_varlen --out "$OUT/train_kernels_cpp.json" \
       > "$OUT/train_kernels_cpp.log" 2>&1
     stamp "train_kernels --compile cpp rc=$?"; grep '^{' "$OUT/train_kernels_cpp.log" ;;
  *) echo "phase must be 1-5"; exit 2 ;;
esac
