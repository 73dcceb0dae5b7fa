#!/usr/bin/env bash
# What a model's greedy answers on the GSM8K benchmark's 200 validation questions are made of: one validation
# pass (trainer.val_only) with bench/gsm8k_qwen_cpu.sh's shared overrides (bench/gsm8k_qwen_cpu_args.sh) and the
# third and fourth runs' data.seed=2 and 400-token responses, the generations dumped, then
# bench/gsm8k_dump_stats.py splits the strict score into format, arithmetic and truncation.
#
#   OUT=~/strive_runs/base_answers GSM8K_DIR=../shared/data/gsm8k bash bench/gsm8k_qwen_cpu_answers.sh \
#       [data.max_response_length=1024 ...]
#   MODEL=DIR ... scores another model directory (default: the base Qwen2.5-Coder-0.5B-Instruct)
set -euo pipefail
cd "$(dirname "$0")/.."
GSM8K_DIR=${GSM8K_DIR:-../shared/data/gsm8k}
OUT=${OUT:-$HOME/strive_runs/gsm8k_qwen_cpu_answers}
MODEL=${MODEL:-qwen2.5-coder-0.5b-instruct}
DATA=$OUT/data
source bench/gsm8k_qwen_cpu_args.sh
mkdir -p "$OUT"
[ -f "$DATA/test.parquet" ] || python3 examples/data_preprocess/gsm8k.py --local_dataset_path "$GSM8K_DIR" --local_dir "$DATA"
export HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled PYTHONUNBUFFERED=1 MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-2}
python3 -m strive.trainer.main_ppo "${GSM8K_QWEN_CPU_ARGS[@]}" data.seed=2 data.train_batch_size=1 data.max_response_length=400 \
  trainer.val_only=True trainer.val_before_train=True \
  trainer.resume_mode=disable trainer.logger="['console']" trainer.default_local_dir="$OUT/ckpt" \
  trainer.validation_data_dir="$OUT/val_dump" "$@" 2>&1 | tee "$OUT/val.log"
MAX_TOKENS=400
for arg in "$@"; do case $arg in data.max_response_length=*) MAX_TOKENS=${arg#*=} ;; esac; done
TOKENIZER=$(python3 -m strive.cli models path "$MODEL" 2>/dev/null || echo "$MODEL")
python3 bench/gsm8k_dump_stats.py "$OUT/val_dump" --max-tokens "$MAX_TOKENS" --model "$TOKENIZER" --json "$OUT/answers.json"
