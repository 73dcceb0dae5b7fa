"""Which verl keys strive does not act on, and what it says when one is set.

verl's tree has ~430 keys; strive implements most of them. Every other key is listed here, once, as either

- REFUSED: setting it to a value other than its default stops the run before any model is loaded, because going
  on would train something different from what the command line asks (e.g. `actor.strategy=megatron`);
- NOTED: the run goes on and prints a start-up note saying the key has no effect (memory or speed knobs of
  another backend, settings that only matter with a refused feature).

`apply_support` runs inside `strive.config.prepare`; `strive config --unsupported` prints the table.
tests/unit/test_config_support.py walks the whole dataclass tree and fails on a key that the code does not read
and that this table does not list, so a new key has to be wired up or listed here.

Keys strive adds to verl's tree (their docstrings start with "strive", e.g. `trainer.max_restarts`: restart from
the newest checkpoint when a worker dies; `trainer.plot_curves`; `trainer.colocate_critic`) are acted on, so they
are not in this table; each is documented on its field in strive/config/sections.py and in the README.

A rule's `pattern` is an fnmatch pattern over dotted keys (`*` crosses dots); the first matching rule wins. A rule
fires only for a key the user set (on the command line or in the YAML file) to a value that differs from the
schema default and is not among the rule's `allowed` values.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from strive.config.loader import ConfigError, _hints
from strive.config.schema import StriveConfig

REFUSE, NOTE = "refused", "no effect"


@dataclass(frozen=True)
class Rule:
    pattern: str
    effect: str
    why: str
    allowed: tuple = ()


def _refuse(pattern: str, why: str, allowed: tuple = ()) -> Rule:
    return Rule(pattern, REFUSE, why, allowed)


def _note(pattern: str, why: str, allowed: tuple = ()) -> Rule:
    return Rule(pattern, NOTE, why, allowed)


_FSDP = ("fsdp", "fsdp2")
_TEXT_ONLY = "strive trains text-only models"
_NO_LORA = "only used with critic.model.lora_rank > 0, which is refused"

RULES: tuple[Rule, ...] = (
    # --- training backend and parallelism ---------------------------------------------------------------------
    _refuse("actor_rollout_ref.actor.strategy", "strive trains with FSDP2 only (fsdp and fsdp2 both mean FSDP2); "
            "Megatron is not supported", _FSDP),
    _refuse("actor_rollout_ref.ref.strategy", "strive runs the reference model under FSDP2 only", _FSDP),
    _refuse("critic.strategy", "strive trains the critic with FSDP2 only", _FSDP),
    _refuse("reward_model.strategy", "strive has FSDP2 only", _FSDP),
    _refuse("*.fsdp_config.strategy", "strive has FSDP2 only", _FSDP),
    _refuse("*ulysses_sequence_parallel_size", "Ulysses sequence parallelism is not supported yet; set it to 1", (1,)),
    _note("*.fsdp_config.fsdp_size", "strive shards over the whole world (no hybrid sharding groups)"),
    _note("*.fsdp_config.forward_prefetch", "FSDP2 prefetches by its own schedule"),
    _note("*.fsdp_config.wrap_policy.min_num_params", "every decoder layer is its own FSDP2 unit"),
    _note("*.fsdp_config.use_orig_params", "an FSDP1 option; FSDP2 always exposes the original parameters"),
    _note("*.fsdp_config.full_determinism", "torch's deterministic algorithms are not switched on"),
    _note("*.fsdp_config.forward_only", "each role knows whether it trains"),
    _note("*entropy_from_logits_with_chunking", "strive always computes entropy in chunks"),
    _note("*entropy_checkpointing", "entropy is computed in chunks and not stored for backward"),
    _note("*.rollout_n", "a copy of actor_rollout_ref.rollout.n; set rollout.n instead"),
    # --- model ------------------------------------------------------------------------------------------------
    _refuse("critic.model.lora_rank", "LoRA on the critic is not implemented (the actor's is: "
            "actor_rollout_ref.model.lora_rank)", (0,)),
    _note("critic.model.lora_alpha", _NO_LORA),
    _note("critic.model.target_modules", _NO_LORA),
    _refuse("actor_rollout_ref.model.hf_config_path", "not supported; put the config.json in the model directory "
            "or use model.override_config"),
    _note("*use_shm", "verl's loading trick (copy the weights to /dev/shm first); strive reads the files in place"),
    _note("critic.model.tokenizer_path", "the critic reads the actor's token ids, so it has no tokenizer of its own"),
    _note("actor_rollout_ref.model.use_liger", "strive's fused head (LM head, log-softmax and entropy per chunk, strive/models/head.py) always runs"),
    _note("*use_fused_kernels", "strive's fused head (LM head, log-softmax and entropy per chunk, strive/models/head.py) always runs"),
    _note("actor_rollout_ref.model.fused_kernel_options.impl_backend", "strive's fused head (LM head, log-softmax and entropy per chunk, strive/models/head.py) always runs"),
    _note("*.tiled_mlp.*", "the MLP runs untiled"),
    _note("*.mtp", "multi-token prediction / speculative decoding is not used"),
    _refuse("*.qat", "quantisation-aware training is not implemented", ({"enable": False},)),
    _note("actor_rollout_ref.actor.freeze_vision_tower", _TEXT_ONLY),
    # --- actor loss -------------------------------------------------------------------------------------------
    _refuse("actor_rollout_ref.actor.policy_loss.loss_mode", "only vanilla is implemented", ("vanilla",)),
    _note("actor_rollout_ref.actor.policy_loss.*", "only used by the clip_cov / kl_cov losses, which are not "
          "implemented"),
    _note("actor_rollout_ref.actor.tau_*", "only used by the SAPO loss, which is not implemented"),
    _note("actor_rollout_ref.actor.use_prefix_grouper", "every sample gets its own forward"),
    _note("*sum_pi_squared*", "only used by the optimal-token-baseline estimators, which are not implemented"),
    _refuse("*.router_replay.mode", "MoE routing replay is not implemented", ("disabled",)),
    _note("*.router_replay.*", "MoE routing replay is not implemented"),
    _note("*.checkpoint.async_save", "checkpoints are saved synchronously"),
    _note("*.checkpoint.mbridge_config", "a Megatron-bridge option"),
    _note("*.optim.zero_indexed_step", "the scheduler always counts steps from 0"),
    _note("*profiler", "per-role profiling is not wired up; use bench/ or torch.profiler"),
    # --- rollout ----------------------------------------------------------------------------------------------
    _refuse("actor_rollout_ref.rollout.multi_turn.interaction_config_path", "interactions (a simulated user "
            "answering between turns) are not implemented; tool_agent rollouts are (docs/multiturn.md)"),
    _refuse("actor_rollout_ref.rollout.multi_turn.format", "strive parses the hermes tool-call format (and its "
            "own hermes_or_json, which also takes an untagged JSON call; docs/multiturn.md)",
            ("hermes", "hermes_or_json")),
    _note("actor_rollout_ref.rollout.multi_turn.use_inference_chat_template", "strive renders every turn with the "
          "model's chat template as is, and refuses at start-up a template that rewrites earlier turns"),
    _note("actor_rollout_ref.rollout.multi_turn.tokenization_sanity_check_mode", "strive never re-tokenizes a "
          "trajectory (the engine's ids are kept); the chat template is checked once at start-up instead"),
    _note("actor_rollout_ref.rollout.multi_turn.num_repeat_rollouts", "each of rollout.n samples is its own "
          "trajectory"),
    _refuse("actor_rollout_ref.rollout.skip_rollout", "replaying dumped rollouts is not implemented", (False,)),
    _note("actor_rollout_ref.rollout.skip_dump_dir", "only used with skip_rollout=True, which is refused"),
    _note("actor_rollout_ref.rollout.over_sample_rate", "every request runs to completion"),
    _note("actor_rollout_ref.rollout.checkpoint_engine", "weights go to the engine through strive's own bucketed "
          "sync (rollout.update_weights_bucket_megabytes)"),
    _note("actor_rollout_ref.rollout.trace", "rollout tracing is not implemented"),
    _note("actor_rollout_ref.rollout.prometheus", "engine metrics are not exported"),
    _note("actor_rollout_ref.rollout.calculate_log_probs", "strive always collects the engine's log-probs"),
    _note("actor_rollout_ref.rollout.skip_tokenizer_init", "strive always sends token ids"),
    _note("actor_rollout_ref.rollout.layered_summon", "verl's memory trick for syncing (gather the FSDP weights one "
          "layer at a time); strive always gathers them bucket by bucket (rollout.update_weights_bucket_megabytes), "
          "LoRA-merged or not"),
    _note("actor_rollout_ref.rollout.multi_stage_wake_up", "strive always resumes weights before the KV cache"),
    _note("actor_rollout_ref.rollout.enable_rollout_routing_replay", "MoE routing replay is not implemented"),
    # --- data -------------------------------------------------------------------------------------------------
    _refuse("data.sampler.*", "curriculum samplers are not implemented; strive's resumable sampler is used"),
    _refuse("data.datagen.*", "dynamic data generators are not implemented"),
    _note("data.image_key", _TEXT_ONLY),
    _note("data.video_key", _TEXT_ONLY),
    _note("data.image_patch_size", _TEXT_ONLY),
    _note("data.return_multi_modal_inputs", _TEXT_ONLY),
    _note("data.return_raw_input_ids", "no learned reward model reads them"),
    _note("data.return_full_prompt", "no learned reward model reads it"),
    _note("data.dataloader_num_workers", "strive tokenises once at load time, in the controller"),
    _note("data.filter_overlong_prompts_workers", "the length check runs in the controller, tokenising in batches "
          "(GSM8K's 7473 training rows: about 2 s)"),
    _note("data.validation_shuffle", "validation always runs in file order"),
    _note("data.val_batch_size", "deprecated in verl; the whole validation set is generated as one batch"),
    # --- reward -----------------------------------------------------------------------------------------------
    _refuse("reward_model.sandbox_fusion.url", "code-execution rewards through Sandbox Fusion are not implemented; "
            "score code with custom_reward_function.path"),
    _note("reward_model.sandbox_fusion.*", "only used with sandbox_fusion.url, which is refused"),
    _refuse("reward_model.enable_resource_pool", "the reward model is colocated with the actor on the same slots "
            "(one process per slot); a pool of its own is not implemented", (False,)),
    _note("reward_model.n_gpus_per_node", "only used with reward_model.enable_resource_pool, which is refused"),
    _note("reward_model.nnodes", "only used with reward_model.enable_resource_pool, which is refused"),
    _note("reward_model.model.use_remove_padding", "the reward model runs a padded forward"),
    _note("reward_model.model.fsdp_config.optimizer_offload", "the reward model has no optimizer"),
    _note("reward_model.model.fsdp_config.seed", "the reward model's weights are read, never initialised"),
    _note("reward_model.num_workers", "the reward model runs on every worker process, one share of the batch each"),
    _refuse("reward_model.rollout", "verl's generative reward model settings; strive's LLM judge is configured "
            "with reward_model.judge.* (docs/reward.md)"),
    _note("reward_model.reward_loop_*", "strive scores rewards on the controller"),
    _note("reward_model.use_reward_loop", "strive scores rewards on the controller"),
    _note("reward_model.launch_reward_fn_async", "rewards are scored on the controller, in step"),
    # --- algorithm --------------------------------------------------------------------------------------------
    _refuse("algorithm.use_pf_ppo", "PF-PPO resampling is not implemented; set it to False", (False,)),
    _note("algorithm.pf_ppo.*", "only used with algorithm.use_pf_ppo=True, which is refused"),
    # --- trainer and Ray --------------------------------------------------------------------------------------
    _refuse("trainer.default_hdfs_dir", "HDFS mirroring is not supported; set it to null"),
    _note("trainer.esi_redundant_time", "elastic-instance expiry is not tracked"),
    _note("trainer.ray_wait_register_center_timeout", "workers are created directly, with no register center"),
    _note("trainer.use_legacy_worker_impl", "strive has one worker implementation"),
    _note("*timeline_json_file", "no Ray timeline is written"),
    _note("transfer_queue", "strive passes batches through Ray directly"),
    # --- rollout engine options that no adapter passes ------------------------------------------------------------
    _note("actor_rollout_ref.rollout.quantization_config_file", "not passed to the engines: rollout.quantization "
          "uses the engine's own defaults"),
    _note("actor_rollout_ref.rollout.cudagraph_capture_sizes", "the engines capture their default CUDA-graph sizes"),
    _note("actor_rollout_ref.rollout.data_parallel_size", "one engine per tensor-parallel group; the data-parallel "
          "layout follows the training ranks"),
    _note("actor_rollout_ref.rollout.expert_parallel_size", "not passed to the engines (no expert parallelism)"),
    _refuse("actor_rollout_ref.rollout.pipeline_model_parallel_size", "pipeline parallelism in the rollout engine is "
            "not implemented; use tensor_model_parallel_size", (1,)),
    _note("actor_rollout_ref.rollout.logprobs_mode", "strive always asks the engines for the processed "
          "log-probs (log_softmax of the temperature-scaled logits), which the trainer compares against"),
    _note("actor_rollout_ref.rollout.scheduling_policy", "the engines schedule with their defaults"),
    _note("actor_rollout_ref.rollout.disable_log_stats", "the engines' own statistics logging is left as it is"),
    # --- reward managers ------------------------------------------------------------------------------------------
    _refuse("reward_model.reward_manager", "strive has the naive and dapo reward managers", ("naive", "dapo")),
    _refuse("reward_manager.name", "strive has the naive and dapo reward managers", ("naive", "dapo")),
    _refuse("reward_manager.source", "a user reward-manager class (importlib) is not supported; score with "
            "custom_reward_function.path instead", ("register",)),
    _note("reward_manager.module.*", "only read with reward_manager.source=importlib, which is refused"),
)

# Keys read only inside strive/config (aliases and interpolation sources): used, but not by a scan of the rest.
CONSUMED_BY_CONFIG = (
    "*.optim.warmup_style", "actor_rollout_ref.actor.clip_ratio", "trainer.remove_previous_ckpt_in_save",
    "data.max_response_length", "*.optim.clip_grad", "data.tool_config_path",
)


def rule_for(key: str) -> Rule | None:
    """The first rule whose pattern matches the dotted key, or None."""
    return next((r for r in RULES if fnmatch.fnmatchcase(key, r.pattern)), None)


def leaf_keys(cls: type = StriveConfig, prefix: str = "") -> list[str]:
    """Every dotted key that holds a value (not a section), `extras` left out."""
    keys = []
    for f in dataclasses.fields(cls):
        if f.name == "extras":
            continue
        tp = _hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys.extend(leaf_keys(tp, f"{prefix}{f.name}."))
        else:
            keys.append(prefix + f.name)
    return keys


@lru_cache(maxsize=1)
def _defaults() -> StriveConfig:
    return StriveConfig()


def _get(node: Any, key: str) -> Any:
    for name in key.split("."):
        node = getattr(node, name)
    return node


def _show(value: Any) -> str:
    return str(value) if not isinstance(value, str) else value


def apply_support(cfg: StriveConfig, explicit: set[str]) -> list[str]:
    """Raise ConfigError naming every refused key the user set; return one note per set no-effect key."""
    refused, notes = [], []
    for key in leaf_keys():
        if not any(k == key or k.startswith(key + ".") for k in explicit):
            continue
        rule = rule_for(key)
        if rule is None:
            continue
        value = _get(cfg, key)
        if value == _get(_defaults(), key) or value in rule.allowed:
            continue
        line = f"{key}={_show(value)}"
        if rule.effect == REFUSE:
            refused.append(f"{line}: {rule.why}")
        else:
            notes.append(f"{line} has no effect in strive: {rule.why}")
    if refused:
        raise ConfigError("; ".join(refused) if len(refused) == 1 else
                          "unsupported settings:\n  " + "\n  ".join(refused))
    return notes


def support_table() -> str:
    """The rules as printed by `strive config --unsupported`, one line per rule."""
    width = max(len(r.pattern) for r in RULES)
    lines = [f"{'key (fnmatch pattern)':<{width}}  effect     why"]
    for r in RULES:
        allowed = f" (accepted: {', '.join(map(str, r.allowed))})" if r.allowed else ""
        lines.append(f"{r.pattern:<{width}}  {r.effect:<9}  {r.why}{allowed}")
    return "\n".join(lines)
