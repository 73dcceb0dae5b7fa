#!/usr/bin/env bash
# DAPO on the CPU: verl's recipe/dapo command line (test_dapo_7b.sh, run_dapo_qwen2.5_32b.sh) with the module name
# changed, sized down to a tiny random model, hf rollouts and two gloo workers. It exercises the four DAPO parts:
# clip-higher (clip_ratio_low/high), dynamic sampling (algorithm.filter_groups), token-level loss
# (loss_agg_mode=token-mean) and the overlong penalty (reward_model.reward_manager=dapo with reward_kwargs).
# The penalty shows in the step metrics as reward_extra/overlong_reward/* and reward_extra/overlong/mean.
#
#   bash examples/dapo_cpu.sh                      # builds a tiny model and arithmetic data under $WORK_DIR
#   MODEL_PATH=... TRAIN_FILE=... TEST_FILE=... bash examples/dapo_cpu.sh trainer.total_training_steps=5
# (tests/e2e/test_dapo_cpu.py runs this script.)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
WORK_DIR=${WORK_DIR:-/tmp/strive_dapo_cpu}
PYTHON=${PYTHON:-python3}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}

adv_estimator=grpo
kl_coef=0.0
kl_loss_coef=0.0
clip_ratio_low=0.2
clip_ratio_high=0.28

max_prompt_length=192
max_response_length=8
enable_overlong_buffer=True
overlong_buffer_len=4          # the last 4 tokens before max_response_length cost up to penalty_factor
overlong_penalty_factor=0.5

enable_filter_groups=True
filter_groups_metric=acc
max_num_gen_batches=10
train_prompt_bsz=4
gen_prompt_bsz=$((train_prompt_bsz * 3 / 2))
n_resp_per_prompt=4
train_prompt_mini_bsz=2

MODEL_PATH=${MODEL_PATH:-}
if [[ -z "$MODEL_PATH" ]]; then
    MODEL_PATH="$WORK_DIR/tiny-llama"
    "$PYTHON" -c "from strive.models.tiny import make_tiny_model; make_tiny_model('$MODEL_PATH')"
fi
if [[ -z "${TRAIN_FILE:-}" ]]; then
    "$PYTHON" -c "from strive.data.synthetic import write_dataset; write_dataset('$WORK_DIR/data', 64, 4, seed=3)"
    TRAIN_FILE="$WORK_DIR/data/train.parquet" TEST_FILE="$WORK_DIR/data/test.parquet"
fi
CKPTS_DIR=${CKPTS_DIR:-"$WORK_DIR/ckpt"}
max_tokens=$((max_prompt_length + max_response_length))

"$PYTHON" -m strive.trainer.main_ppo \
    data.train_files="${TRAIN_FILE}" \
    data.val_files="${TEST_FILE}" \
    data.prompt_key=prompt \
    data.truncation='left' \
    data.max_prompt_length=${max_prompt_length} \
    data.max_response_length=${max_response_length} \
    data.gen_batch_size=${gen_prompt_bsz} \
    data.train_batch_size=${train_prompt_bsz} \
    actor_rollout_ref.rollout.n=${n_resp_per_prompt} \
    algorithm.adv_estimator=${adv_estimator} \
    algorithm.use_kl_in_reward=False \
    algorithm.kl_ctrl.kl_coef=${kl_coef} \
    actor_rollout_ref.actor.use_kl_loss=False \
    actor_rollout_ref.actor.kl_loss_coef=${kl_loss_coef} \
    actor_rollout_ref.actor.clip_ratio_low=${clip_ratio_low} \
    actor_rollout_ref.actor.clip_ratio_high=${clip_ratio_high} \
    actor_rollout_ref.actor.clip_ratio_c=10.0 \
    algorithm.filter_groups.enable=${enable_filter_groups} \
    algorithm.filter_groups.metric=${filter_groups_metric} \
    algorithm.filter_groups.max_num_gen_batches=${max_num_gen_batches} \
    actor_rollout_ref.model.path="${MODEL_PATH}" \
    actor_rollout_ref.model.use_remove_padding=True \
    +actor_rollout_ref.model.override_config.attention_dropout=0. \
    actor_rollout_ref.model.enable_gradient_checkpointing=False \
    actor_rollout_ref.actor.use_dynamic_bsz=True \
    actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True \
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True \
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=$((max_tokens * 2)) \
    actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=$((max_tokens * 2)) \
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=$((max_tokens * 2)) \
    actor_rollout_ref.actor.optim.lr=1e-4 \
    actor_rollout_ref.actor.optim.lr_warmup_steps=1 \
    actor_rollout_ref.actor.optim.weight_decay=0.1 \
    actor_rollout_ref.actor.ppo_mini_batch_size=${train_prompt_mini_bsz} \
    actor_rollout_ref.actor.fsdp_config.param_offload=False \
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=False \
    actor_rollout_ref.actor.entropy_coeff=0 \
    actor_rollout_ref.actor.grad_clip=1.0 \
    actor_rollout_ref.actor.loss_agg_mode=token-mean \
    actor_rollout_ref.actor.ulysses_sequence_parallel_size=1 \
    actor_rollout_ref.rollout.name=hf \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.temperature=1.0 \
    actor_rollout_ref.rollout.top_p=1.0 \
    actor_rollout_ref.rollout.top_k=-1 \
    actor_rollout_ref.rollout.val_kwargs.temperature=1.0 \
    actor_rollout_ref.rollout.val_kwargs.top_p=0.7 \
    actor_rollout_ref.rollout.val_kwargs.top_k=-1 \
    actor_rollout_ref.rollout.val_kwargs.do_sample=True \
    actor_rollout_ref.rollout.val_kwargs.n=1 \
    actor_rollout_ref.ref.fsdp_config.param_offload=False \
    actor_rollout_ref.ref.ulysses_sequence_parallel_size=1 \
    actor_rollout_ref.actor.fsdp_config.fsdp_size=-1 \
    reward_model.reward_manager=dapo \
    +reward_model.reward_kwargs.overlong_buffer_cfg.enable=${enable_overlong_buffer} \
    +reward_model.reward_kwargs.overlong_buffer_cfg.len=${overlong_buffer_len} \
    +reward_model.reward_kwargs.overlong_buffer_cfg.penalty_factor=${overlong_penalty_factor} \
    +reward_model.reward_kwargs.overlong_buffer_cfg.log=True \
    +reward_model.reward_kwargs.max_resp_len=${max_response_length} \
    custom_reward_function.path="$HERE/dapo_cpu_reward.py" \
    trainer.logger="['console','file']" \
    trainer.project_name=DAPO \
    trainer.experiment_name=DAPO-tiny-cpu \
    trainer.device=cpu \
    trainer.n_gpus_per_node=2 \
    trainer.nnodes=1 \
    trainer.val_before_train=False \
    trainer.test_freq=2 \
    trainer.save_freq=-1 \
    trainer.total_training_steps=2 \
    trainer.default_local_dir="${CKPTS_DIR}" \
    trainer.resume_mode=disable \
    "$@"
