"""Fill in verl's interpolated defaults, map deprecated spellings, and reject impossible values.

verl writes many defaults as interpolations (`critic.ppo_epochs: ${actor.ppo_epochs}`) and has renamed keys
over its releases. Users have command lines from every era, so both spellings are accepted; a value strive
changes or infers is reported as a note, which `strive config` and the trainer print at start.

The names a key may take are owned by the code that dispatches on them and imported from there (both modules are
torch-free): estimators, loss-agg modes and KL kinds from `strive.algos.names`, logger backends from
`strive.tracking.backends`. tests/unit/test_names.py pins the two sides together.
"""

from __future__ import annotations

import dataclasses
import math
import os

from strive.algos.names import (
    AGG_MODES,
    CRITIC_ESTIMATORS,
    ESTIMATORS,
    GROUP_ESTIMATORS,
    KL_KINDS,
    KL_NOT_IMPLEMENTED,
    ROLLOUT_IS_LEVELS,
    ROLLOUT_LOSS_TYPES,
    parse_rejection,
    split_kl_kind,
)
from strive.config.cpu_dtype import cpu_compute_dtype
from strive.config.fsdp_defaults import forward_only_storage, single_rank_defaults
from strive.config.loader import ConfigError
from strive.config.reward_model import check_reward_models
from strive.config.schema import StriveConfig
from strive.engines.base import ENGINES
from strive.models.attention_names import BACKENDS as PACKED_ATTENTION
from strive.reward.overlong import overlong_from_kwargs
from strive.tracking.backends import BACKEND_NAMES

# Dispatched on by strive/trainer/phases.py:filter_values, which reads acc and score from the reward function's
# extra dict and uses the summed score for the other two; kept here until that module can own it.
FILTER_METRICS = ("acc", "score", "seq_reward", "seq_final_reward")


def _fill(obj, name: str, value) -> None:
    if getattr(obj, name) is None:
        setattr(obj, name, value)


def resolve(cfg: StriveConfig, explicit: set[str]) -> list[str]:
    """Resolve interpolations and aliases in place; return notes on what was changed or inferred."""
    notes: list[str] = []
    _legacy_aliases(cfg, explicit, notes)
    _interpolations(cfg)
    single_rank_defaults(cfg, explicit, notes)
    cpu_compute_dtype(cfg, explicit, notes)
    forward_only_storage(cfg, explicit, notes)
    _compile_note(cfg, explicit, notes)
    _validate_choices(cfg, explicit, notes)
    check_reward_models(cfg, explicit, notes)
    _rollout_engine_options(cfg, explicit, notes)
    _lora_notes(cfg, explicit, notes)
    return notes


def _legacy_aliases(cfg: StriveConfig, explicit: set[str], notes: list[str]) -> None:
    actor = cfg.actor_rollout_ref.actor
    rollout = cfg.actor_rollout_ref.rollout
    if any(k.startswith("ray_init.") for k in explicit):
        for name in ("num_cpus", "timeline_json_file"):
            if f"ray_init.{name}" in explicit and f"ray_kwargs.ray_init.{name}" not in explicit:
                setattr(cfg.ray_kwargs.ray_init, name, getattr(cfg.ray_init, name))
        if cfg.ray_init.timeline_json_file and not cfg.ray_kwargs.timeline_json_file:
            cfg.ray_kwargs.timeline_json_file = cfg.ray_init.timeline_json_file
        notes.append("ray_init.* is verl ≤ 0.5's spelling; used as ray_kwargs.ray_init.*")
    for key in [k for k in cfg.extras if k.startswith("ray_init.")]:
        cfg.extras["ray_kwargs." + key] = cfg.extras.pop(key)
    if rollout.name in ("sglang_async", "vllm_async"):  # verl <= 0.4 named the async rollouts this way
        engine = rollout.name.removesuffix("_async")
        notes.append(f"actor_rollout_ref.rollout.name={rollout.name} is verl <= 0.4's spelling; used as "
                     f"rollout.name={engine}, rollout.mode=async")
        rollout.name, rollout.mode = engine, "async"
    if rollout.mode == "sync":
        notes.append("actor_rollout_ref.rollout.mode=sync: strive drives the engine the same way in both modes")
    _multi_turn(cfg, explicit, notes)
    for optim_owner, prefix in ((actor, "actor_rollout_ref.actor"), (cfg.critic, "critic")):
        optim = optim_owner.optim
        if optim.warmup_style is not None:
            if f"{prefix}.optim.lr_scheduler_type" in explicit and optim.lr_scheduler_type != optim.warmup_style:
                raise ConfigError(f"{prefix}.optim.warmup_style={optim.warmup_style} and "
                                  f"{prefix}.optim.lr_scheduler_type={optim.lr_scheduler_type} disagree; "
                                  "drop warmup_style (deprecated)")
            optim.lr_scheduler_type = optim.warmup_style
            notes.append(f"{prefix}.optim.warmup_style is deprecated; used as lr_scheduler_type")
    for owner, prefix in ((actor, "actor_rollout_ref.actor"), (cfg.critic, "critic")):
        _clip_grad_alias(owner, prefix, explicit, notes)
    sp_key = "actor_rollout_ref.actor.ulysses_sequence_parallel_size"
    if sp_key in explicit:
        actor.fsdp_config.ulysses_sequence_parallel_size = actor.ulysses_sequence_parallel_size
    if "actor_rollout_ref.actor.clip_ratio" in explicit:
        for side in ("low", "high"):
            if f"actor_rollout_ref.actor.clip_ratio_{side}" not in explicit:
                setattr(actor, f"clip_ratio_{side}", actor.clip_ratio)
        notes.append(f"actor.clip_ratio={actor.clip_ratio} set; clip_ratio_low/high not set, so both use it")
    if cfg.trainer.remove_previous_ckpt_in_save:
        cfg.trainer.max_actor_ckpt_to_keep = cfg.trainer.max_actor_ckpt_to_keep or 1
        cfg.trainer.max_critic_ckpt_to_keep = cfg.trainer.max_critic_ckpt_to_keep or 1
        notes.append("trainer.remove_previous_ckpt_in_save is deprecated; keeping 1 checkpoint per role")
    if isinstance(cfg.trainer.logger, str):
        cfg.trainer.logger = [cfg.trainer.logger]
    for key in ("data.train_files", "data.val_files"):
        section, name = key.split(".")
        value = getattr(cfg.data, name)
        if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
            setattr(cfg.data, name, [v.strip(" '\"") for v in value[1:-1].split(",") if v.strip()])


def _clip_grad_alias(owner, prefix: str, explicit: set[str], notes: list[str]) -> None:
    """verl's engine workers read optim.clip_grad, its FSDP workers grad_clip; strive clips with grad_clip and
    takes optim.clip_grad when only that one is set. Afterwards both hold the value used."""
    alias, main = f"{prefix}.optim.clip_grad", f"{prefix}.grad_clip"
    if alias in explicit and main in explicit and owner.optim.clip_grad != owner.grad_clip:
        raise ConfigError(f"{alias}={owner.optim.clip_grad} and {main}={owner.grad_clip} disagree; set one of them")
    if alias in explicit and main not in explicit:
        owner.grad_clip = owner.optim.clip_grad
        notes.append(f"{alias}={owner.optim.clip_grad}: used as {main}")
    owner.optim.clip_grad = owner.grad_clip


def _interpolations(cfg: StriveConfig) -> None:
    arr = cfg.actor_rollout_ref
    actor, ref, rollout, model = arr.actor, arr.ref, arr.rollout, arr.model
    critic = cfg.critic
    _fill(actor, "rollout_n", rollout.n)
    _fill(actor, "use_remove_padding", model.use_remove_padding)
    _fill(actor, "use_fused_kernels", model.use_fused_kernels)
    _fill(ref, "strategy", actor.strategy)
    _fill(ref, "rollout_n", rollout.n)
    _fill(ref, "use_torch_compile", actor.use_torch_compile)
    _fill(ref, "log_prob_use_dynamic_bsz", actor.use_dynamic_bsz)
    _fill(ref, "log_prob_max_token_len_per_gpu", actor.ppo_max_token_len_per_gpu)
    _fill(ref, "ulysses_sequence_parallel_size", actor.ulysses_sequence_parallel_size)
    _fill(rollout, "prompt_length", cfg.data.max_prompt_length)
    _fill(rollout, "response_length", cfg.data.max_response_length)
    _fill(rollout, "log_prob_use_dynamic_bsz", actor.use_dynamic_bsz)
    _fill(rollout, "log_prob_max_token_len_per_gpu", actor.ppo_max_token_len_per_gpu)
    for cp in (actor.checkpoint, critic.checkpoint):
        _fill(cp, "load_contents", list(cp.save_contents))
    _fill(critic, "rollout_n", rollout.n)
    _fill(critic, "ppo_mini_batch_size", actor.ppo_mini_batch_size)
    _fill(critic, "use_dynamic_bsz", actor.use_dynamic_bsz)
    _fill(critic, "forward_max_token_len_per_gpu", critic.ppo_max_token_len_per_gpu)
    _fill(critic, "ppo_epochs", actor.ppo_epochs)
    _fill(critic, "shuffle", actor.shuffle)
    _fill(critic, "loss_agg_mode", actor.loss_agg_mode)
    _fill(critic.model, "tokenizer_path", model.path)
    _fill(critic.model, "external_lib", model.external_lib)
    _fill(critic.model, "trust_remote_code", model.trust_remote_code)
    _fill(cfg.reward_model, "use_dynamic_bsz", critic.use_dynamic_bsz)
    _fill(cfg.reward_model, "forward_max_token_len_per_gpu", critic.forward_max_token_len_per_gpu)
    _fill(cfg.reward_manager, "name", cfg.reward_model.reward_manager)
    _fill(cfg.data, "gen_batch_size", cfg.data.train_batch_size)
    _fill(cfg.trainer, "default_local_dir",
          os.path.join("checkpoints", cfg.trainer.project_name, cfg.trainer.experiment_name))
    if cfg.trainer.console_verbose is None:
        cfg.trainer.console_verbose = list(cfg.trainer.logger) == ["console"]
    if critic.enable is None:
        critic.enable = cfg.algorithm.adv_estimator in CRITIC_ESTIMATORS


def _compile_note(cfg: StriveConfig, explicit: set[str], notes: list[str]) -> None:
    """use_torch_compile compiles decoder layers on CUDA only: say so when a CPU run asks for it by name."""
    asked = [k for k in explicit if k.endswith(("use_torch_compile", "compile_cpp_wrapper"))]
    if cfg.trainer.device == "cpu" and asked:
        notes.append(f"{', '.join(sorted(asked))}: torch.compile runs on CUDA only; no effect with trainer.device=cpu")
    arr = cfg.actor_rollout_ref
    for prefix, fsdp, packed, key in (
            ("actor_rollout_ref.actor", arr.actor.fsdp_config, arr.actor.use_remove_padding, "actor_rollout_ref.model"),
            ("actor_rollout_ref.ref", arr.ref.fsdp_config, arr.actor.use_remove_padding, "actor_rollout_ref.model"),
            ("critic.model", cfg.critic.model.fsdp_config, cfg.critic.model.use_remove_padding, "critic.model")):
        _check(cfg.trainer.device != "cuda" or not (fsdp.compile_cpp_wrapper and packed),
               f"{prefix}.fsdp_config.compile_cpp_wrapper=True needs the padded path ({key}.use_remove_padding=False): "
               "Inductor's C++ wrapper cannot compile packed attention through torch's varlen kernel (a List[int] "
               "argument it has no C++ lowering for; torch 2.11)")
    for prefix, model in (("actor_rollout_ref", arr.model), ("critic", cfg.critic.model)):
        if cfg.trainer.device == "cuda" and model.enable_activation_offload:
            notes.append(f"{prefix}.model.enable_activation_offload=True: that model's layers run eager "
                         "(torch.compile's kernels do not take saved-tensor hooks)")


def _rollout_engine_options(cfg: StriveConfig, explicit: set[str], notes: list[str]) -> None:
    """Rollout keys that only some engines take. verl's default tensor_model_parallel_size=2 would ask for more
    GPUs than a one-GPU run has: unless the user set it, it shrinks to what divides the ranks. The hf engine has no
    chunked prefill, prefix cache or quantisation: a note when the user set the first two, an error for the last."""
    rollout, p = cfg.actor_rollout_ref.rollout, "actor_rollout_ref.rollout"
    entry = ENGINES.get(rollout.name)
    world = cfg.trainer.n_gpus_per_node * cfg.trainer.nnodes
    tp = rollout.tensor_model_parallel_size
    if entry is not None and entry.tensor_parallel and world > 0 and tp > 1 and world % tp \
            and f"{p}.tensor_model_parallel_size" not in explicit:
        rollout.tensor_model_parallel_size = math.gcd(tp, world)
        notes.append(f"{p}.tensor_model_parallel_size: the default {tp} does not divide the {world} ranks; using "
                     f"{rollout.tensor_model_parallel_size}")
    if entry is not None and not entry.tensor_parallel:
        for key in ("enable_chunked_prefill", "enable_prefix_caching"):
            if f"{p}.{key}" in explicit:
                notes.append(f"{p}.{key}={getattr(rollout, key)} has no effect on the {rollout.name} engine")
        _check(not rollout.quantization, f"{p}.quantization={rollout.quantization}: the {rollout.name} engine does "
               "not quantise; use rollout.name=vllm or sglang on CUDA, or drop the key")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _validate_choices(cfg: StriveConfig, explicit: set[str], notes: list[str]) -> None:
    arr = cfg.actor_rollout_ref
    actor, rollout = arr.actor, arr.rollout
    algo = cfg.algorithm
    _check(rollout.name in ENGINES, f"actor_rollout_ref.rollout.name={rollout.name} is not one of {', '.join(ENGINES)}")
    _check(algo.adv_estimator in ESTIMATORS,
           f"algorithm.adv_estimator={algo.adv_estimator} is not one of {', '.join(ESTIMATORS)}")
    for key, mode in (("actor_rollout_ref.actor.loss_agg_mode", actor.loss_agg_mode),
                      ("critic.loss_agg_mode", cfg.critic.loss_agg_mode)):
        _check(mode in AGG_MODES, f"{key}={mode} is not one of {', '.join(AGG_MODES)}")
    for key, kind in (("actor_rollout_ref.actor.kl_loss_type", actor.kl_loss_type),
                      ("algorithm.kl_penalty", algo.kl_penalty)):
        base, _ = split_kl_kind(kind)
        _check(base not in KL_NOT_IMPLEMENTED, f"{key}={kind}: KL kind {base!r} {KL_NOT_IMPLEMENTED.get(base)}")
        _check(base in KL_KINDS, f"{key}={kind} is not one of {', '.join(KL_KINDS)} (optionally with +)")
    for key, name in (("actor_rollout_ref.model.packed_attention", arr.model.packed_attention),
                      ("critic.model.packed_attention", cfg.critic.model.packed_attention)):
        _check(name in PACKED_ATTENTION, f"{key}={name} is not one of {', '.join(PACKED_ATTENTION)}")
    _check(actor.clip_ratio_c > 1.0, f"actor_rollout_ref.actor.clip_ratio_c={actor.clip_ratio_c} must be > 1")
    _check(algo.kl_ctrl.type in ("fixed", "adaptive"), f"algorithm.kl_ctrl.type={algo.kl_ctrl.type}: fixed or adaptive")
    _check(algo.kl_ctrl.type != "adaptive" or algo.kl_ctrl.horizon > 0, "algorithm.kl_ctrl.horizon must be > 0")
    _check(cfg.data.truncation in ("error", "left", "right", "middle"),
           f"data.truncation={cfg.data.truncation} is not one of error, left, right, middle")
    _check(cfg.reward_manager.on_error in ("raise", "zero"),
           f"reward_manager.on_error={cfg.reward_manager.on_error} is not one of raise, zero")
    _check(cfg.reward_manager.timeout is None or cfg.reward_manager.timeout >= 0,
           f"reward_manager.timeout={cfg.reward_manager.timeout} must be >= 0 seconds (0 or null: no limit)")
    _check(cfg.trainer.resume_mode in ("auto", "disable", "resume_path"),
           f"trainer.resume_mode={cfg.trainer.resume_mode} is not one of auto, disable, resume_path")
    _check(cfg.trainer.resume_mode != "resume_path" or "global_step_" in str(cfg.trainer.resume_from_path or ""),
           "trainer.resume_mode=resume_path needs trainer.resume_from_path=.../global_step_N")
    _check(cfg.trainer.max_restarts >= 0, f"trainer.max_restarts={cfg.trainer.max_restarts} must be 0 or more")
    _check(cfg.trainer.device in ("cuda", "cpu"), f"trainer.device={cfg.trainer.device}: cuda or cpu")
    _check(cfg.trainer.forward_min_tokens >= 0,
           f"trainer.forward_min_tokens={cfg.trainer.forward_min_tokens} must be ≥ 0 (0 keeps the micro-batches)")
    _validate_filter_groups(cfg)
    _validate_rollout_correction(cfg, explicit, notes)
    _validate_reward_kwargs(cfg, notes)
    unknown = [name for name in cfg.trainer.logger if name not in BACKEND_NAMES]
    _check(not unknown, f"trainer.logger: unknown backend(s) {unknown}; choose from {', '.join(BACKEND_NAMES)}")
    val = rollout.val_kwargs
    _check(not val.do_sample or val.temperature > 0,
           "actor_rollout_ref.rollout.val_kwargs.do_sample=True needs val_kwargs.temperature > 0")
    reads_values = algo.adv_estimator in CRITIC_ESTIMATORS
    if not cfg.critic.enable and any(k.startswith("critic.") for k in explicit):
        notes.append(f"critic.* is set but algorithm.adv_estimator={algo.adv_estimator} reads no critic values, "
                     "so no critic is created")
    if cfg.critic.enable and not reads_values:
        notes.append(f"critic.enable=True with adv_estimator={algo.adv_estimator}: the critic trains but its values "
                     "do not enter the advantages")
    if algo.adv_estimator in GROUP_ESTIMATORS and rollout.n == 1:
        notes.append(f"adv_estimator={algo.adv_estimator} with rollout.n=1: every group has one sample")
    if algo.use_kl_in_reward and actor.use_kl_loss:
        notes.append("both algorithm.use_kl_in_reward and actor.use_kl_loss are on: KL is penalised twice")


def _validate_filter_groups(cfg: StriveConfig) -> None:
    algo, data, n = cfg.algorithm, cfg.data, cfg.actor_rollout_ref.rollout.n
    fg = algo.filter_groups
    if not fg.enable:
        _check(data.gen_batch_size == data.train_batch_size,
               f"data.gen_batch_size={data.gen_batch_size} differs from data.train_batch_size={data.train_batch_size}:"
               " that only means something with algorithm.filter_groups.enable=True")
        return
    _check(fg.metric in FILTER_METRICS,
           f"algorithm.filter_groups.metric={fg.metric} is not one of {', '.join(FILTER_METRICS)}")
    _check(n > 1, f"algorithm.filter_groups.enable=True needs actor_rollout_ref.rollout.n > 1 (it is {n}): "
           "a group of one response never has differing rewards")
    _check(algo.adv_estimator != "remax", "algorithm.filter_groups does not combine with adv_estimator=remax")
    _check(fg.metric != "seq_final_reward" or not algo.use_kl_in_reward,
           "algorithm.filter_groups.metric=seq_final_reward with use_kl_in_reward=True: groups are filtered before "
           "the KL penalty exists; use seq_reward")
    _check(fg.max_num_gen_batches >= 0, f"algorithm.filter_groups.max_num_gen_batches={fg.max_num_gen_batches} "
           "must be ≥ 0 (0: no limit)")


def _validate_rollout_correction(cfg: StriveConfig, explicit: set[str], notes: list[str]) -> None:
    rc, p = cfg.algorithm.rollout_correction, "algorithm.rollout_correction"
    _check(rc.rollout_is is None or rc.rollout_is in ROLLOUT_IS_LEVELS,
           f"{p}.rollout_is={rc.rollout_is} is not one of null, {', '.join(ROLLOUT_IS_LEVELS)}")
    _check(rc.rollout_is is None or rc.rollout_is_threshold > 0,
           f"{p}.rollout_is_threshold={rc.rollout_is_threshold} must be > 0 (the upper truncation of the weights)")
    _check(rc.loss_type in ROLLOUT_LOSS_TYPES, f"{p}.loss_type={rc.loss_type} is not one of "
           f"{', '.join(ROLLOUT_LOSS_TYPES)}")
    if rc.rollout_rs is not None:
        try:
            parse_rejection(rc.rollout_rs, rc.rollout_rs_threshold)
        except ValueError as err:
            shown = "null" if rc.rollout_rs_threshold is None else rc.rollout_rs_threshold
            raise ConfigError(f"{p}.rollout_rs={rc.rollout_rs} with rollout_rs_threshold={shown}: {err}") from None
    elif rc.rollout_rs_threshold is not None:
        notes.append(f"{p}.rollout_rs_threshold has no effect without {p}.rollout_rs")
    if rc.rollout_is is None and rc.rollout_is_batch_normalize:
        notes.append(f"{p}.rollout_is_batch_normalize has no effect without {p}.rollout_is")
    if not rc.bypass_mode and f"{p}.loss_type" in explicit:
        notes.append(f"{p}.loss_type is only read with {p}.bypass_mode=True")
    if rc.bypass_mode and rc.loss_type == "ppo_clip" and rc.rollout_is is not None:
        notes.append(f"{p}.rollout_is with bypass_mode and loss_type=ppo_clip: the weights are logged, not applied "
                     "(the PPO ratio π_θ/π_rollout is the correction), as in verl")


def _validate_reward_kwargs(cfg: StriveConfig, notes: list[str]) -> None:
    """reward_model.reward_kwargs are the reward manager's constructor arguments in verl; only `dapo` takes any.
    The DAPO recipe's reward_model.overlong_buffer.* (its main_dapo passes it with data.max_response_length)
    becomes those kwargs here."""
    kwargs, name = cfg.reward_model.reward_kwargs, cfg.reward_manager.name
    recipe = cfg.reward_model.overlong_buffer
    if recipe.enable:
        _check(name == "dapo", f"reward_model.overlong_buffer.enable=True needs reward_model.reward_manager=dapo "
               f"(it is {name}), else the penalty would be dropped")
        _check("overlong_buffer_cfg" not in kwargs, "reward_model.overlong_buffer and "
               "reward_model.reward_kwargs.overlong_buffer_cfg are both set; keep one")
        kwargs["overlong_buffer_cfg"] = dataclasses.asdict(recipe)
        kwargs.setdefault("max_resp_len", cfg.data.max_response_length)
        notes.append("reward_model.overlong_buffer.* (DAPO recipe spelling) used as reward_model.reward_kwargs."
                     f"overlong_buffer_cfg with max_resp_len={kwargs['max_resp_len']}")
    if name != "dapo":
        _check(not kwargs, f"reward_model.reward_kwargs ({', '.join(sorted(kwargs))}) are read by "
               f"reward_model.reward_manager=dapo only; it is {name}")
        return
    try:
        buf = overlong_from_kwargs(kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if buf is not None and buf.max_resp_len != cfg.data.max_response_length:
        notes.append(f"reward_model.reward_kwargs.max_resp_len={buf.max_resp_len} differs from "
                     f"data.max_response_length={cfg.data.max_response_length}: the overlong penalty is measured "
                     "against the former")


LORA_KEYS = ("lora_alpha", "target_modules", "exclude_modules")


def _lora_notes(cfg: StriveConfig, explicit: set[str], notes: list[str]) -> None:
    """LoRA's own keys do nothing without LoRA; with LoRA the reference is the actor with its adapter off."""
    model = cfg.actor_rollout_ref.model
    if model.lora_rank < 0:
        raise ConfigError(f"actor_rollout_ref.model.lora_rank={model.lora_rank}: must be 0 (off) or a positive rank")
    prefix = "actor_rollout_ref.model."
    if not uses_lora(cfg):
        for key in LORA_KEYS:
            if prefix + key in explicit:
                notes.append(f"{prefix}{key}={getattr(model, key)} has no effect in strive: only used with "
                             "lora_rank > 0 or lora_adapter_path")
        return
    if model.lora_adapter_path:
        set_here = [k for k in ("lora_rank",) + LORA_KEYS if prefix + k in explicit]
        if set_here:
            notes.append(f"{prefix}lora_adapter_path is set: the adapter's own adapter_config.json gives its rank, "
                         f"alpha and target modules ({', '.join(set_here)} not used)")
    if needs_reference(cfg):
        notes.append("LoRA: the reference policy is the actor with its adapter disabled (no second copy of the "
                     "base weights); actor_rollout_ref.ref.fsdp_config and ref.log_prob_* settings have no effect")


def uses_lora(cfg: StriveConfig) -> bool:
    """LoRA on the actor: a positive lora_rank, or an adapter to start from (as verl decides)."""
    model = cfg.actor_rollout_ref.model
    return model.lora_rank > 0 or bool(model.lora_adapter_path)


def needs_reference(cfg: StriveConfig) -> bool:
    """A reference model exists only when a KL term uses it."""
    return cfg.algorithm.use_kl_in_reward or cfg.actor_rollout_ref.actor.use_kl_loss


def needs_critic(cfg: StriveConfig) -> bool:
    """A critic exists when critic.enable is on; unset, it defaults to whether the estimator reads critic values
    (strive.algos.names.CRITIC_ESTIMATORS)."""
    return bool(cfg.critic.enable)


_AGENT_KEYS = ("num_workers", "default_agent_loop", "agent_loop_config_path", "custom_async_server")


def _multi_turn(cfg: StriveConfig, explicit: set[str], notes: list[str]) -> None:
    """verl's multi-turn keys: data.tool_config_path as an alias, keys that need multi_turn.enable, the agent dict."""
    rollout = cfg.actor_rollout_ref.rollout
    mt, prefix = rollout.multi_turn, "actor_rollout_ref.rollout.multi_turn"
    if cfg.data.tool_config_path and not mt.tool_config_path:
        mt.tool_config_path = cfg.data.tool_config_path
    elif cfg.data.tool_config_path and cfg.data.tool_config_path != mt.tool_config_path:
        raise ConfigError(f"data.tool_config_path={cfg.data.tool_config_path} and {prefix}.tool_config_path="
                          f"{mt.tool_config_path} disagree; set one")
    agent = dict(rollout.agent or {})
    unknown = sorted(set(agent) - set(_AGENT_KEYS))
    if unknown:
        raise ConfigError(f"actor_rollout_ref.rollout.agent.{unknown[0]}: unknown key (verl's are "
                          f"{', '.join(_AGENT_KEYS)})")
    if agent.get("agent_loop_config_path"):
        raise ConfigError("actor_rollout_ref.rollout.agent.agent_loop_config_path: custom agent loops are not "
                          "implemented; strive has single_turn_agent and tool_agent")
    if (agent.get("custom_async_server") or {}).get("path"):
        raise ConfigError("actor_rollout_ref.rollout.agent.custom_async_server: custom rollout servers are not "
                          "implemented")
    if not mt.enable:
        unused = sorted(k for k in explicit if k.startswith(prefix + ".") and k != prefix + ".enable")
        unused += sorted(k for k in explicit if k.startswith("actor_rollout_ref.rollout.agent."))
        if unused:
            notes.append(f"{', '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect without "
                         f"{prefix}.enable=True (single-turn rollouts)")
        return
    from strive.controller.router import ROUTERS

    if mt.router not in ROUTERS:
        raise ConfigError(f"{prefix}.router={mt.router} is not one of {', '.join(ROUTERS)}")
    if "actor_rollout_ref.rollout.agent.num_workers" in explicit:
        notes.append("actor_rollout_ref.rollout.agent.num_workers has no effect in strive: the agent loops run "
                     "on each rollout rank, one coroutine per trajectory")
    tp = rollout.tensor_model_parallel_size
    if tp > 1 and rollout.name != "hf":
        raise ConfigError(f"{prefix}.enable=True with actor_rollout_ref.rollout.tensor_model_parallel_size={tp}: "
                          "multi-turn rollouts run on engines of one rank each for now; set it to 1")
