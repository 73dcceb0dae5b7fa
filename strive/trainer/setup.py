"""Everything a run needs before its first step, in two parts.

`load_data`: tokenizer, datasets and sampler, and with them the last config values that depend on the data (the
optimizers' total step count), so that the config the entry point prints and saves is the one that runs.
`build_runtime`: rewards, Ray, worker groups, loggers. Order matters for memory: every rank creates its rollout
engine first (same moment everywhere, before training weights), then the actor, reference, critic.

Kept apart from the loop so ppo.py reads like the algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from strive.agent.settings import check_agent_setup, multi_turn_enabled, tool_schemas
from strive.algos import AdaptiveKLController, FixedKLController
from strive.config import Prepared, needs_critic, needs_reference, to_dict
from strive.config.reward_model import model_scored
from strive.controller.cluster import Placement, init_ray, plan_placement
from strive.controller.group import WorkerGroup
from strive.controller.process import WorkerProcess
from strive.data.checks import check_reward_columns
from strive.data.custom import dataset_class
from strive.data.rl_dataset import RLDataset
from strive.data.sampler import ResumableSampler
from strive.models.loading import import_external_libs, load_tokenizer, resolve_model_path
from strive.reward.custom import load_reward_function
from strive.reward.manager import RewardManager
from strive.reward.overlong import overlong_from_kwargs
from strive.trainer.checkpoint import log_dir
from strive.trainer.model_reward import build_model_scores


@dataclass
class RunData:
    tokenizer: Any
    train_data: RLDataset
    val_data: Optional[RLDataset]
    sampler: ResumableSampler
    total_steps: int
    model_path: str


@dataclass
class Runtime:
    run: Prepared
    data: RunData
    reward_fn: RewardManager
    val_reward_fn: RewardManager
    group: WorkerGroup
    critic_group: Optional[WorkerGroup]
    kl_ctrl: Any
    tracker: Any
    model_scores: Any = None
    """The reward model or LLM judge that scores in the reward phase (strive/trainer/model_reward.py), or None."""
    resume_dir: Optional[str] = None
    """The checkpoint to resume from, chosen before Ray started (checkpoint.plan_resume)."""
    last_saved: Optional[str] = None
    """The newest checkpoint this run has completed (where an automatic restart resumes)."""

    @property
    def cfg(self):
        return self.run.config


def _dataset(files, tokenizer, cfg, max_samples: int) -> RLDataset:
    data = cfg.data
    cls = dataset_class(data.custom_cls.path, data.custom_cls.name)
    return cls(files, tokenizer, prompt_key=data.prompt_key, max_prompt_length=data.max_prompt_length,
               truncation=data.truncation, filter_overlong_prompts=data.filter_overlong_prompts,
               return_raw_chat=data.return_raw_chat, max_samples=max_samples,
               shuffle_subset_seed=(data.seed if data.seed is not None else 1) if data.shuffle else None,
               chat_template_kwargs=prompt_template_kwargs(cfg),
               custom_chat_template=cfg.actor_rollout_ref.model.custom_chat_template)


def prompt_template_kwargs(cfg) -> dict:
    """data.apply_chat_template_kwargs, plus the tool schemas (`tools=`) of a multi-turn run: prompts are
    rendered, length-checked and filtered with them, as in verl."""
    kwargs = dict(cfg.data.apply_chat_template_kwargs)
    schemas = tool_schemas(cfg.actor_rollout_ref.rollout)
    if schemas:
        kwargs["tools"] = schemas
    return kwargs


def build_rewards(cfg, tokenizer) -> tuple[RewardManager, RewardManager]:
    fn = None
    custom = cfg.custom_reward_function
    if custom.path:
        fn = load_reward_function(custom.path, custom.name or "compute_score", custom.reward_kwargs)
    key = cfg.data.reward_fn_key
    # verl's `dapo` manager: the naive one plus the overlong penalty, in training and validation alike
    overlong = overlong_from_kwargs(cfg.reward_model.reward_kwargs) if cfg.reward_manager.name == "dapo" else None
    guard = dict(on_error=cfg.reward_manager.on_error, timeout=cfg.reward_manager.timeout,
                 max_concurrency=cfg.reward_manager.max_concurrency)
    return (RewardManager(tokenizer, fn, reward_fn_key=key, num_examine=0, overlong=overlong, **guard),
            RewardManager(tokenizer, fn, reward_fn_key=key, num_examine=1, overlong=overlong, **guard))


def build_data(cfg, tokenizer) -> tuple[RLDataset, Optional[RLDataset], ResumableSampler]:
    data = cfg.data
    train = _dataset(data.train_files, tokenizer, cfg, data.train_max_samples)
    needs_val = cfg.trainer.val_before_train or cfg.trainer.test_freq > 0 or cfg.trainer.val_only
    val = _dataset(data.val_files, tokenizer, cfg, data.val_max_samples) if needs_val and data.val_files else None
    # the built-in scorers' columns, where they score every row; a custom function gets rows as they are
    rule_scores_all = not model_scored(cfg) or cfg.reward_model.combine == "sum"
    if not cfg.custom_reward_function.path and rule_scores_all:
        for dataset in (train, val) if val is not None else (train,):
            check_reward_columns(dataset, data.reward_fn_key)
    if len(train) < data.gen_batch_size:
        raise ValueError(f"data.train_files has {len(train)} usable rows, fewer than data.train_batch_size="
                         f"{data.gen_batch_size}: no full batch can be formed")
    sampler = ResumableSampler(len(train), data.gen_batch_size, shuffle=data.shuffle,
                               seed=data.seed if data.seed is not None else 1, drop_last=True)
    return train, val, sampler


def total_training_steps(cfg, steps_per_epoch: int) -> int:
    if cfg.trainer.total_training_steps is not None:
        return int(cfg.trainer.total_training_steps)
    return steps_per_epoch * cfg.trainer.total_epochs


def build_groups(cfg, sizes, total_steps: int, tokenizer) -> tuple[WorkerGroup, Optional[WorkerGroup]]:
    roles = ["rollout", "actor"] + (["ref"] if needs_reference(cfg) else [])
    roles += ["reward_model"] if cfg.reward_model.enable else ["judge"] if cfg.reward_model.judge.enable else []
    separate = needs_critic(cfg) and not cfg.trainer.colocate_critic
    if needs_critic(cfg) and not separate:
        roles.append("critic")
    per_node = cfg.trainer.n_gpus_per_node
    placement = plan_placement(cfg.trainer.nnodes, per_node * (2 if separate else 1), cfg.trainer.device)
    main, rest = split_placement(placement, per_node) if separate else (placement, None)
    seed = cfg.data.seed if cfg.data.seed is not None else 1
    group = WorkerGroup("actor_rollout_ref", main, tuple(roles), cfg, seed=seed)
    critic_group = WorkerGroup("critic", rest, ("critic",), cfg, seed=seed) if separate else None
    for g in (group, critic_group):
        if g is not None:
            print(f"[strive] placement {g.describe()}", flush=True)
    eos_ids, pad_id = _eos_ids(tokenizer, cfg), tokenizer.pad_token_id
    refs = [ref for g in (group, critic_group) if g is not None
            for ref in g.submit_all(WorkerProcess.build, cfg, sizes, total_steps, eos_ids, pad_id)]
    group.get(refs, "build")
    return group, critic_group


def split_placement(placement: Placement, per_node: int) -> tuple[Placement, Placement]:
    """Node-major slots [n0 × 2g, n1 × 2g, ...] → the first g of each node, and the other g."""
    ids = placement.node_ids
    first = [ids[i] for i in range(len(ids)) if (i // per_node) % 2 == 0]
    second = [ids[i] for i in range(len(ids)) if (i // per_node) % 2 == 1]
    return Placement(first, placement.resource), Placement(second, placement.resource)


def _eos_ids(tokenizer, cfg) -> list[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        from transformers import GenerationConfig

        gen = GenerationConfig.from_pretrained(resolve_model_path(cfg.actor_rollout_ref.model.path))
        eos = gen.eos_token_id
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    except Exception:
        pass
    return sorted(ids)


def kl_controller(cfg):
    kl = cfg.algorithm.kl_ctrl
    if kl.type == "adaptive":
        return AdaptiveKLController(kl.kl_coef, kl.target_kl, kl.horizon)
    return FixedKLController(kl.kl_coef)


def load_data(run: Prepared) -> RunData:
    """Tokenizer, datasets and sampler; fills the optimizers' total step count into the config."""
    cfg = run.config
    import_external_libs(cfg.actor_rollout_ref.model.external_lib, cfg.critic.model.external_lib)
    model_path = resolve_model_path(cfg.actor_rollout_ref.model.path)
    tokenizer = load_tokenizer(cfg.data.tokenizer or cfg.actor_rollout_ref.model.tokenizer_path or model_path,
                               cfg.actor_rollout_ref.model.trust_remote_code or cfg.data.trust_remote_code,
                               cfg.actor_rollout_ref.model.custom_chat_template)
    if multi_turn_enabled(cfg.actor_rollout_ref.rollout):
        print("[strive] " + check_agent_setup(cfg.actor_rollout_ref.rollout, tokenizer,
                                              dict(cfg.data.apply_chat_template_kwargs)), flush=True)
    train, val, sampler = build_data(cfg, tokenizer)
    total = total_training_steps(cfg, len(sampler))
    for optim in (cfg.actor_rollout_ref.actor.optim, cfg.critic.optim):
        optim.total_training_steps = total
    print(f"[strive] {len(train)} training prompts, {len(sampler)} steps per epoch, {total} steps in total"
          + (f"; {len(val)} validation prompts" if val is not None else ""))
    return RunData(tokenizer, train, val, sampler, total, model_path)


def build_runtime(run: Prepared, data: RunData, resume_dir: Optional[str] = None) -> Runtime:
    from strive.tracking import Tracker

    cfg = run.config
    reward_fn, val_reward_fn = build_rewards(cfg, data.tokenizer)
    processes = run.sizes.world_size * (1 if cfg.trainer.colocate_critic or not needs_critic(cfg) else 2)
    init_ray(cfg, processes)
    group, critic_group = build_groups(cfg, run.sizes, data.total_steps, data.tokenizer)
    tracker = Tracker(cfg.trainer.logger, cfg.trainer.project_name, cfg.trainer.experiment_name, log_dir(cfg.trainer),
                      config=to_dict(cfg), total_steps=data.total_steps, verbose=bool(cfg.trainer.console_verbose))
    model_scores = build_model_scores(cfg, group, data.tokenizer)
    return Runtime(run, data, reward_fn, val_reward_fn, group, critic_group, kl_controller(cfg), tracker,
                   model_scores, resume_dir)
