# Sourced by bench/gsm8k_qwen_cpu.sh and bench/gsm8k_qwen_cpu_answers.sh: the trainer overrides both share (the
# data, the model, the sampling and the single-CPU layout), so a validation pass sees what the training run sees.
# Needs DATA (the preprocessed parquet folder) and MODEL set; ENGINE picks the rollout engine (default hf).
GSM8K_QWEN_CPU_ARGS=(
  data.train_files="$DATA/train.parquet" data.val_files="$DATA/test.parquet" data.val_max_samples=200
  data.max_prompt_length=256 data.filter_overlong_prompts=True
  actor_rollout_ref.model.path="$MODEL" actor_rollout_ref.rollout.name="${ENGINE:-hf}"
  algorithm.adv_estimator=grpo actor_rollout_ref.rollout.n=8 actor_rollout_ref.actor.ppo_mini_batch_size=1
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8
  actor_rollout_ref.rollout.max_num_seqs=128 actor_rollout_ref.rollout.tensor_model_parallel_size=1
  trainer.device=cpu trainer.n_gpus_per_node=1 trainer.nnodes=1
)
