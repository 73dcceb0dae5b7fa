"""Config: verl's key tree, override syntax, deprecated keys, batch-size arithmetic, the `strive config` command."""

import subprocess
import sys

import pytest

from strive.config import ConfigError, StriveConfig, explain, load_config, parse_value, prepare, to_dict
from strive.config.report import sizes_table, undocumented_fields

# The two command lines of the seed page (verl's SGLang backend doc), as users type them (module name aside).
SEED_SINGLE_NODE = """
data.train_files=/home/u/data/gsm8k/train.parquet data.val_files=/home/u/data/gsm8k/test.parquet
data.train_batch_size=4096 data.max_prompt_length=4096 data.max_response_length=4096
actor_rollout_ref.rollout.name=sglang actor_rollout_ref.model.path=Qwen/Qwen2-7B-Instruct
actor_rollout_ref.actor.optim.lr=1e-6 actor_rollout_ref.actor.ppo_mini_batch_size=64
actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8
actor_rollout_ref.model.enable_gradient_checkpointing=True actor_rollout_ref.actor.fsdp_config.param_offload=True
actor_rollout_ref.actor.fsdp_config.optimizer_offload=True actor_rollout_ref.rollout.tensor_model_parallel_size=2
actor_rollout_ref.rollout.gpu_memory_utilization=0.8 actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4
critic.optim.lr=1e-5 critic.model.path=Qwen/Qwen2-7B-Instruct critic.ppo_micro_batch_size_per_gpu=4
critic.model.fsdp_config.param_offload=True critic.model.fsdp_config.optimizer_offload=True
algorithm.kl_ctrl.kl_coef=0.001 trainer.logger=['console'] trainer.val_before_train=False
trainer.default_hdfs_dir=null trainer.n_gpus_per_node=4 trainer.nnodes=1 trainer.save_freq=-1
trainer.test_freq=10 trainer.total_epochs=15
""".split()

SEED_MULTI_NODE = """
actor_rollout_ref.rollout.name=sglang data.train_files=/d/train.parquet data.val_files=/d/test.parquet
data.train_batch_size=4096 data.max_prompt_length=4096 data.max_response_length=4096
actor_rollout_ref.model.path=meta-llama/Llama-3.1-8B-Instruct actor_rollout_ref.actor.optim.lr=1e-6
actor_rollout_ref.model.use_remove_padding=True actor_rollout_ref.actor.ppo_mini_batch_size=64
actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16 actor_rollout_ref.model.enable_gradient_checkpointing=True
actor_rollout_ref.actor.fsdp_config.param_offload=True actor_rollout_ref.actor.fsdp_config.optimizer_offload=True
actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16 actor_rollout_ref.rollout.tensor_model_parallel_size=16
actor_rollout_ref.rollout.gpu_memory_utilization=0.8 actor_rollout_ref.rollout.free_cache_engine=True
actor_rollout_ref.ref.log_prob_micro_batch_size=16 actor_rollout_ref.ref.fsdp_config.param_offload=True
critic.optim.lr=1e-5 critic.model.use_remove_padding=True critic.model.path=meta-llama/Llama-3.1-8B-Instruct
critic.model.enable_gradient_checkpointing=True critic.ppo_micro_batch_size=16
critic.model.fsdp_config.param_offload=True critic.model.fsdp_config.optimizer_offload=True
algorithm.kl_ctrl.kl_coef=0.001 trainer.critic_warmup=0 trainer.logger=['console'] trainer.val_before_train=True
trainer.default_hdfs_dir=null trainer.n_gpus_per_node=8 trainer.nnodes=2 trainer.save_freq=-1 trainer.test_freq=10
trainer.total_epochs=15
""".split()


def test_defaults_are_verls():
    cfg = load_config()
    assert cfg.data.train_batch_size == 1024
    assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size == 256
    assert cfg.actor_rollout_ref.actor.optim.lr == 1e-6
    assert cfg.critic.optim.lr == 1e-5
    assert cfg.actor_rollout_ref.rollout.val_kwargs.temperature == 0
    assert cfg.actor_rollout_ref.ref.fsdp_config.forward_only is True
    assert cfg.trainer.default_local_dir == "checkpoints/verl_examples/gsm8k"
    assert cfg.critic.enable is True  # gae needs a critic
    assert cfg.actor_rollout_ref.rollout.prompt_length == 512  # interpolated from data.max_prompt_length


def test_seed_single_node_resolves_with_verls_worked_example():
    run = prepare(SEED_SINGLE_NODE)
    cfg, sizes = run.config, run.sizes
    assert cfg.actor_rollout_ref.rollout.name == "sglang"
    assert cfg.trainer.logger == ["console"]
    assert cfg.trainer.default_hdfs_dir is None
    assert cfg.actor_rollout_ref.actor.optim.lr == pytest.approx(1e-6)
    # spec §1.12 worked example: 16 sequences per GPU per mini-batch, 4 micro-batches, 64 optimizer steps.
    assert sizes.actor.mini_batch_per_rank == 16
    assert sizes.actor.grad_accum_steps == 4
    assert sizes.actor.optimizer_steps_per_step == 64
    assert sizes.critic.grad_accum_steps == 4
    assert sizes.old_log_prob.micro_batch_per_rank == 8
    assert sizes.ref is None  # no KL term is on, so no reference model


def test_seed_multi_node_accepts_oversized_micro_batch_and_says_so():
    run = prepare(SEED_MULTI_NODE)
    sizes = run.sizes
    assert sizes.world_size == 16
    assert sizes.actor.mini_batch_per_rank == 4  # 64 prompts × 1 / 16 GPUs
    assert sizes.actor.micro_batch_per_rank == 4  # 16 requested, shrunk to the rank's share
    assert sizes.actor.grad_accum_steps == 1
    assert any("ppo_micro_batch_size_per_gpu=16 is larger than the 4 sequences" in n for n in run.notes)
    # deprecated global critic key: 16 over 16 ranks → 1 per rank
    assert sizes.critic.micro_batch_per_rank == 1
    assert sizes.critic.grad_accum_steps == 4


def test_indivisible_batch_names_keys_and_numbers():
    with pytest.raises(ConfigError) as err:
        prepare(SEED_SINGLE_NODE + ["trainer.n_gpus_per_node=3"])
    assert str(err.value) == ("data.train_batch_size × rollout.n = 4096 × 1 is not divisible by "
                              "trainer.n_gpus_per_node × trainer.nnodes = 3")


def test_mini_batch_smaller_than_dp_fails():
    with pytest.raises(ConfigError, match="ppo_mini_batch_size × rollout.n = 2 × 1"):
        prepare(["data.train_batch_size=16", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
                 "trainer.n_gpus_per_node=4"])


def test_both_micro_batch_forms_is_an_error():
    with pytest.raises(ConfigError, match="keep only actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu"):
        prepare(["actor_rollout_ref.actor.ppo_micro_batch_size=8",
                 "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"])
    with pytest.raises(ConfigError, match="critic.ppo_micro_batch_size"):
        prepare(["critic.ppo_micro_batch_size=8", "critic.ppo_micro_batch_size_per_gpu=2"])


def test_deprecated_global_micro_is_divided_by_dp():
    run = prepare(["trainer.n_gpus_per_node=4", "data.train_batch_size=64", "actor_rollout_ref.actor.ppo_mini_batch_size=32",
                   "actor_rollout_ref.actor.ppo_micro_batch_size=16", "actor_rollout_ref.actor.use_kl_loss=True",
                   "actor_rollout_ref.ref.log_prob_micro_batch_size=8", "trainer.forward_min_tokens=0"])
    assert run.sizes.actor.micro_batch_per_rank == 4
    assert run.sizes.actor.grad_accum_steps == 2
    assert run.sizes.ref.micro_batch_per_rank == 2


def test_uneven_micro_batch_is_accepted_with_a_note():
    run = prepare(["trainer.n_gpus_per_node=1", "data.train_batch_size=10", "actor_rollout_ref.actor.ppo_mini_batch_size=10",
                   "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4"])
    assert run.sizes.actor.grad_accum_steps == 3
    assert any("last micro-batch has 2" in n for n in run.notes)


def test_override_value_syntax():
    assert parse_value("null") is None and parse_value("None") is None
    assert parse_value("True") is True and parse_value("false") is False
    assert parse_value("1e-6") == 1e-6 and parse_value("4096") == 4096 and parse_value("0.8") == 0.8
    assert parse_value("['console','tensorboard']") == ["console", "tensorboard"]
    assert parse_value("[console, wandb]") == ["console", "wandb"]
    assert parse_value("[0.9,1e-3]") == [0.9, 1e-3]
    assert parse_value("Qwen/Qwen2-7B-Instruct") == "Qwen/Qwen2-7B-Instruct"
    assert parse_value("'123'") == "123"


def test_types_are_coerced_and_wrong_types_name_the_key():
    cfg = load_config(["actor_rollout_ref.actor.clip_ratio_high=1", "trainer.experiment_name=7",
                       "trainer.logger=console"])
    assert isinstance(cfg.actor_rollout_ref.actor.clip_ratio_high, float)
    assert cfg.trainer.experiment_name == "7"
    assert cfg.trainer.logger == ["console"]
    with pytest.raises(ConfigError, match="data.train_batch_size expects int"):
        load_config(["data.train_batch_size=abc"])
    with pytest.raises(ConfigError, match="trainer.val_before_train expects bool"):
        load_config(["trainer.val_before_train=maybe"])


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError) as err:
        load_config(["actor_rollout_ref.actor.ppo_mini_batchsize=4"])
    assert "actor_rollout_ref.actor.ppo_mini_batch_size" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(["trainer.n_gpu_per_node=4"])
    assert "trainer.n_gpus_per_node" in str(err.value)


def test_plus_adds_keys_and_ray_init_passthrough():
    run = prepare(["+ray_kwargs.ray_init.address=auto", "+trainer.my_flag=3", "+data.gen_batch_size=16",
                   "data.train_batch_size=16", "actor_rollout_ref.actor.ppo_mini_batch_size=16",
                   "+custom_reward_function.reward_kwargs.bonus=0.5"])
    cfg = run.config
    assert cfg.extras["ray_kwargs.ray_init.address"] == "auto"
    assert cfg.extras["trainer.my_flag"] == 3
    assert cfg.data.gen_batch_size == 16
    assert cfg.custom_reward_function.reward_kwargs == {"bonus": 0.5}
    assert to_dict(cfg)["ray_kwargs"]["ray_init"]["address"] == "auto"


def test_legacy_ray_init_and_other_aliases():
    run = prepare(["ray_init.num_cpus=4", "actor_rollout_ref.actor.optim.warmup_style=cosine",
                   "actor_rollout_ref.actor.clip_ratio=0.3", "actor_rollout_ref.rollout.mode=sync"])
    cfg = run.config
    assert cfg.ray_kwargs.ray_init.num_cpus == 4
    assert cfg.actor_rollout_ref.actor.optim.lr_scheduler_type == "cosine"
    assert cfg.actor_rollout_ref.actor.clip_ratio_low == 0.3 == cfg.actor_rollout_ref.actor.clip_ratio_high
    assert "_target_" not in str(cfg)
    load_config(["actor_rollout_ref.actor._target_=verl.workers.config.FSDPActorConfig"])


def test_bad_choices_fail_naming_the_key():
    for override, key in [("algorithm.adv_estimator=foo", "algorithm.adv_estimator"),
                          ("actor_rollout_ref.actor.loss_agg_mode=mean", "actor_rollout_ref.actor.loss_agg_mode"),
                          ("actor_rollout_ref.rollout.name=trtllm", "actor_rollout_ref.rollout.name"),
                          ("actor_rollout_ref.actor.clip_ratio_c=0.5", "clip_ratio_c"),
                          ("actor_rollout_ref.rollout.val_kwargs.do_sample=True", "val_kwargs.temperature")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            prepare([override])


def test_grpo_needs_no_critic_and_kl_loss_needs_ref():
    run = prepare(["algorithm.adv_estimator=grpo", "actor_rollout_ref.actor.use_kl_loss=True",
                   "actor_rollout_ref.rollout.n=5", "trainer.n_gpus_per_node=1"])
    assert run.sizes.critic is None and run.sizes.ref is not None
    assert run.sizes.samples_per_step == 1024 * 5


def test_yaml_file_under_overrides(tmp_path):
    (tmp_path / "exp.yaml").write_text(
        "defaults:\n  - ppo_trainer\n  - _self_\n"
        "data:\n  train_batch_size: 32\n  max_prompt_length: 64\n"
        "actor_rollout_ref:\n  actor:\n    ppo_mini_batch_size: 16\n    optim:\n      lr: 3e-6\n"
        "  model:\n    override_config:\n      attention_dropout: 0.0\n")
    cfg = load_config(["data.train_batch_size=64"], config_path=str(tmp_path), config_name="exp")
    assert cfg.data.train_batch_size == 64
    assert cfg.data.max_prompt_length == 64 == cfg.actor_rollout_ref.rollout.prompt_length
    assert cfg.actor_rollout_ref.actor.optim.lr == 3e-6
    assert cfg.actor_rollout_ref.model.override_config == {"attention_dropout": 0.0}
    (tmp_path / "bad.yaml").write_text("trainer:\n  total_epoch: 3\n")
    with pytest.raises(ConfigError, match="trainer.total_epochs"):
        load_config(config_path=str(tmp_path), config_name="bad")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(config_path=str(tmp_path), config_name="missing")


def test_every_field_has_a_docstring():
    assert undocumented_fields(StriveConfig) == []
    assert "Prompts per optimizer step" in explain("actor_rollout_ref.actor.ppo_mini_batch_size")


def _strive(*args):
    return subprocess.run([sys.executable, "-m", "strive.cli", *args], capture_output=True, text=True)


def test_strive_config_command():
    ok = _strive("config", *SEED_MULTI_NODE)
    assert ok.returncode == 0, ok.stderr
    assert "rollout:" in ok.stdout and "name: sglang" in ok.stdout
    assert "derived sizes" in ok.stdout and "grad-accum steps" in ok.stdout
    assert "using 4" in ok.stdout
    bad = _strive("config", *SEED_SINGLE_NODE, "trainer.n_gpus_per_node=3")
    assert bad.returncode == 1
    assert "trainer.n_gpus_per_node × trainer.nnodes = 3" in bad.stderr


def test_package_imports_without_heavy_dependencies():
    code = ("import sys, strive, strive.config, strive.cli, strive.algos, strive.tracking; "
            "heavy = [m for m in ('torch', 'ray', 'sglang', 'vllm', 'transformers', 'numpy') if m in sys.modules]; "
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_pf_ppo_is_refused_and_liger_noted():
    with pytest.raises(ConfigError, match="algorithm.use_pf_ppo=True: PF-PPO resampling is not implemented"):
        prepare(["algorithm.use_pf_ppo=True"])
    run = prepare(["actor_rollout_ref.model.use_liger=True"])
    assert any("use_liger=True has no effect" in n for n in run.notes)


def test_filter_groups_keys_are_checked_and_reported():
    grpo = ["algorithm.adv_estimator=grpo", "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=8"]
    with pytest.raises(ConfigError, match="data.gen_batch_size=24 differs from data.train_batch_size=8"):
        prepare(grpo + ["data.gen_batch_size=24"])
    on = grpo + ["algorithm.filter_groups.enable=True", "data.gen_batch_size=24"]
    with pytest.raises(ConfigError, match="rollout.n > 1"):
        prepare(on)
    with pytest.raises(ConfigError, match="algorithm.filter_groups.metric=accuracy is not one of"):
        prepare(on + ["actor_rollout_ref.rollout.n=4", "algorithm.filter_groups.metric=accuracy"])
    with pytest.raises(ConfigError, match="max_num_gen_batches=-1"):
        prepare(on + ["actor_rollout_ref.rollout.n=4", "algorithm.filter_groups.max_num_gen_batches=-1"])
    run = prepare(on + ["actor_rollout_ref.rollout.n=4", "algorithm.filter_groups.max_num_gen_batches=5"])
    assert run.config.algorithm.filter_groups.metric == "acc"
    table = sizes_table(run.sizes, run.config)
    assert "rounds of data.gen_batch_size 24 prompts × rollout.n until 8 prompts have differing acc (at most 5 " in table


def test_rollout_correction_is_checked_at_start_and_summarised():
    base = ["data.train_batch_size=16", "actor_rollout_ref.actor.ppo_mini_batch_size=16"]
    rc = "algorithm.rollout_correction."
    bad = {
        "rollout_is=geometric": r"rollout_is=geometric is not one of null, token, sequence",
        "rollout_is=token rollout_is_threshold=0": r"rollout_is_threshold=0.0 must be > 0",
        "rollout_rs=token_k1": r"rollout_rs=token_k1 with rollout_rs_threshold=null: needs rollout_rs_threshold",
        "rollout_rs=token_k9 rollout_rs_threshold=2": r"unknown rejection option 'token_k9'",
        "rollout_rs=token_k1 rollout_rs_threshold=-1": r"bounds must be > 0",
        "rollout_rs=seq_max_k3 rollout_rs_threshold=0.5_2.0": r"only k1 options take lower_upper",
        "rollout_rs=token_k1,token_k2 rollout_rs_threshold=1,2,3": r"3 thresholds for 2 options",
        "bypass_mode=True loss_type=pg": r"loss_type=pg is not one of ppo_clip, reinforce",
    }
    for keys, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            prepare(base + [rc + kv for kv in keys.split()])
    run = prepare(base + [rc + "rollout_is=token", rc + "rollout_rs=token_k1,seq_mean_k3",
                          rc + "rollout_rs_threshold=0.5_2.0,0.01"])
    assert run.config.algorithm.rollout_correction.rollout_rs_threshold == "0.5_2.0,0.01"
    assert not run.sizes.bypass_old_log_probs  # the weights need the old log-probs before the update
    assert "rollout correction: token-level IS weights truncated at 2.0; rejection token_k1,seq_mean_k3" in \
        sizes_table(run.sizes, run.config)
    bypass = prepare(base + [rc + "bypass_mode=True", rc + "loss_type=reinforce", rc + "rollout_is=sequence"])
    assert "bypass mode, no old log-prob pass" in sizes_table(bypass.sizes, bypass.config)
    off = prepare(base)
    assert off.sizes.bypass_old_log_probs and "rollout correction" not in sizes_table(off.sizes, off.config)
    assert "(the ratio is" in explain(rc + "loss_type") or "ppo_clip" in explain(rc + "loss_type")


def test_one_worker_does_not_reshard_after_forward_unless_asked():
    from strive.config import prepare

    one = prepare(["trainer.n_gpus_per_node=1", "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4"])
    arr = one.config.actor_rollout_ref
    assert not arr.actor.fsdp_config.reshard_after_forward and not one.config.critic.model.fsdp_config.reshard_after_forward
    assert any("reshard_after_forward defaults to False" in n for n in one.notes)
    asked = prepare(["trainer.n_gpus_per_node=1", "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
                     "actor_rollout_ref.actor.fsdp_config.reshard_after_forward=True"])
    assert asked.config.actor_rollout_ref.actor.fsdp_config.reshard_after_forward
    two = prepare(["trainer.n_gpus_per_node=2", "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4"])
    assert two.config.actor_rollout_ref.actor.fsdp_config.reshard_after_forward


def test_torch_compile_is_noted_on_the_cpu_only_when_asked_by_name():
    from strive.config import prepare

    base = ["trainer.device=cpu", "trainer.n_gpus_per_node=1", "data.train_batch_size=4",
            "actor_rollout_ref.actor.ppo_mini_batch_size=4"]
    assert not any("use_torch_compile" in n for n in prepare(base).notes)  # the default makes no noise
    asked = prepare([*base, "actor_rollout_ref.actor.use_torch_compile=True"])
    assert any("actor_rollout_ref.actor.use_torch_compile: torch.compile runs on CUDA only" in n for n in asked.notes)
    assert asked.config.actor_rollout_ref.ref.use_torch_compile is True  # the reference follows the actor


def test_cpp_wrapper_needs_the_padded_path_on_cuda():
    """fsdp_config.compile_cpp_wrapper is off by default; on CUDA it is refused, naming both keys, where that role
    packs its sequences (torch's varlen kernel does not compile under the C++ wrapper), and taken with the padded
    path; on the CPU, asked by name, it is noted as having no effect."""
    from strive.config import prepare

    base = ["trainer.n_gpus_per_node=1", "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4"]
    default = prepare(base).config
    assert not default.actor_rollout_ref.actor.fsdp_config.compile_cpp_wrapper
    assert not default.critic.model.fsdp_config.compile_cpp_wrapper
    actor_key = "actor_rollout_ref.actor.fsdp_config.compile_cpp_wrapper=True"
    with pytest.raises(ConfigError, match=r"actor_rollout_ref\.actor\.fsdp_config\.compile_cpp_wrapper=True needs "
                                          r"the padded path \(actor_rollout_ref\.model\.use_remove_padding=False\)"):
        prepare([*base, "trainer.device=cuda", actor_key])
    with pytest.raises(ConfigError, match=r"critic\.model\.fsdp_config\.compile_cpp_wrapper=True needs the padded "
                                          r"path \(critic\.model\.use_remove_padding=False\)"):
        prepare([*base, "trainer.device=cuda", "critic.model.use_remove_padding=True",
                 "critic.model.fsdp_config.compile_cpp_wrapper=True"])
    padded = prepare([*base, "trainer.device=cuda", actor_key, "actor_rollout_ref.model.use_remove_padding=False",
                      "critic.model.fsdp_config.compile_cpp_wrapper=True"]).config
    assert padded.actor_rollout_ref.actor.fsdp_config.compile_cpp_wrapper
    assert not padded.actor_rollout_ref.ref.fsdp_config.compile_cpp_wrapper  # each role has its own key
    on_cpu = prepare([*base, "trainer.device=cpu", actor_key])
    assert any(f"{actor_key.split('=')[0]}: torch.compile runs on CUDA only" in n for n in on_cpu.notes)


def test_forward_only_passes_run_in_token_budgets_on_cuda():
    """verl's micro-batches of 4 for old log-probs/ref/values become trainer.forward_min_tokens budgets on CUDA, with
    a note; the CPU, an explicit 0, dynamic budgets and micro-batches already that large keep theirs."""
    base = ["trainer.n_gpus_per_node=1", "data.train_batch_size=16", "actor_rollout_ref.actor.ppo_mini_batch_size=16",
            "data.max_prompt_length=512", "data.max_response_length=512", "algorithm.adv_estimator=gae",
            "actor_rollout_ref.actor.use_kl_loss=True", "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
            "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4", "critic.ppo_micro_batch_size_per_gpu=4"]
    cuda = prepare(base + ["trainer.device=cuda"]).sizes
    for fwd in (cuda.old_log_prob, cuda.ref, cuda.values):
        assert (fwd.micro_batch_per_rank, fwd.max_token_len) == (None, 16384)
    run = prepare(base + ["trainer.device=cuda", "trainer.forward_min_tokens=8192"])
    assert run.sizes.ref.max_token_len == 8192
    assert (run.sizes.old_log_prob.micro_batch_per_rank, run.sizes.old_log_prob.max_token_len) == (8, None)  # 8 × 1024
    assert any("ref.log_prob_micro_batch_size_per_gpu=4" in n and "8192" in n for n in run.notes)
    for extra in (["trainer.device=cpu"], ["trainer.device=cuda", "trainer.forward_min_tokens=0"]):
        kept = prepare(base + extra).sizes
        assert (kept.ref.micro_batch_per_rank, kept.ref.max_token_len) == (4, None)
    dyn = prepare(base + ["trainer.device=cuda", "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True",
                          "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=4096"]).sizes
    assert dyn.ref.max_token_len == 4096
    with pytest.raises(ConfigError, match="trainer.forward_min_tokens"):
        prepare(base + ["trainer.forward_min_tokens=-1"])


def test_forward_only_roles_store_weights_in_the_compute_dtype_unless_set():
    from strive.config import prepare

    base = ["trainer.device=cuda", "trainer.n_gpus_per_node=1", "data.train_batch_size=4",
            "actor_rollout_ref.actor.ppo_mini_batch_size=4"]
    run = prepare(base + ["actor_rollout_ref.actor.use_kl_loss=True"])
    arr = run.config.actor_rollout_ref
    assert arr.ref.fsdp_config.model_dtype == "bfloat16" and arr.actor.fsdp_config.model_dtype == "fp32"
    assert run.config.reward_model.model.fsdp_config.model_dtype == "fp32"  # no reward model in this run
    assert any("actor_rollout_ref.ref.fsdp_config.model_dtype=bfloat16" in n for n in run.notes)
    kept = prepare(base + ["actor_rollout_ref.actor.use_kl_loss=True", "actor_rollout_ref.ref.fsdp_config.model_dtype=fp32"])
    assert kept.config.actor_rollout_ref.ref.fsdp_config.model_dtype == "fp32"
    fp32 = prepare(base + ["actor_rollout_ref.actor.use_kl_loss=True", "actor_rollout_ref.ref.fsdp_config.dtype=float32"])
    assert fp32.config.actor_rollout_ref.ref.fsdp_config.model_dtype == "fp32"  # fp32 compute: nothing to halve
    no_ref = prepare(base)
    assert not any("model_dtype" in n for n in no_ref.notes)
    lora = prepare(base + ["actor_rollout_ref.actor.use_kl_loss=True", "actor_rollout_ref.model.lora_rank=8"])
    assert lora.config.actor_rollout_ref.ref.fsdp_config.model_dtype == "fp32"  # the reference is the actor itself
