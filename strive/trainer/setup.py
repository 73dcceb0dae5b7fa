"""Everything a run needs before its first step, in two parts.

`load_data`: tokenizer, datasets and sampler, and with them the last config values that depend on the data (the
optimizers' total step count), so that the config the entry point prints and saves is the one that runs.
`build_runtime`: rewards, Ray, worker groups, loggers. Order matters for memory: every rank creates its rollout
engine first (same moment everywhere, before training weights), then the actor, reference, critic. With split
placement (actor_rollout_ref.hybrid_engine=False) the engines get a group of their own on the rollout pool's slots
(strive/config/placement.py), joined to trainer rank 0 by the weight-transfer group.

Kept apart from the loop so ppo.py reads like the algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

from strive.agent.settings import check_agent_setup, multi_turn_enabled, tool_schemas
from strive.algos import AdaptiveKLController, FixedKLController
from strive.config import Prepared, needs_critic, needs_reference, to_dict
from strive.config.reward_model import model_scored
from strive.config.placement import is_split, rollout_world, shares_gpus, transfer_timeout_s
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
    rollout_group: WorkerGroup
    """The engines' processes: `group` itself when colocated (actor_rollout_ref.hybrid_engine=True)."""
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


@dataclass
class Groups:
    main: WorkerGroup
    """The trainer's processes (actor, reference, colocated critic; and the engines when colocated)."""
    critic: Optional[WorkerGroup]
    """The critic's own processes (trainer.colocate_critic=False)."""
    rollout: WorkerGroup
    """The engines' processes: `main` when colocated, a group of their own with split placement."""


def build_groups(cfg, sizes, total_steps: int, tokenizer) -> Groups:
    split = is_split(cfg)
    roles = ([] if split else ["rollout"]) + ["actor"] + (["ref"] if needs_reference(cfg) else [])
    roles += ["reward_model"] if cfg.reward_model.enable else ["judge"] if cfg.reward_model.judge.enable else []
    separate = needs_critic(cfg) and not cfg.trainer.colocate_critic
    if needs_critic(cfg) and not separate:
        roles.append("critic")
    per_node = cfg.trainer.n_gpus_per_node
    widths = [per_node] + ([per_node] if separate else [])
    same_nodes = split and cfg.rollout.nnodes == cfg.trainer.nnodes
    if shares_gpus(cfg):  # each engine process beside a trainer process on its GPU, half a GPU each
        trainer_slots = plan_placement(cfg.trainer.nnodes, per_node, cfg.trainer.device)
        pools = [replace(trainer_slots, gpus=0.5), replace(trainer_slots, gpus=0.5)]
    else:
        widths += [cfg.rollout.n_gpus_per_node] if same_nodes else []
        pools = split_slots(plan_placement(cfg.trainer.nnodes, sum(widths), cfg.trainer.device), widths)
    if split and not same_nodes:
        pools.append(plan_placement(cfg.rollout.nnodes, cfg.rollout.n_gpus_per_node, cfg.trainer.device))
    seed = cfg.data.seed if cfg.data.seed is not None else 1
    group = WorkerGroup("trainer" if split else "actor_rollout_ref", pools[0], tuple(roles), cfg, seed=seed)
    critic_group = WorkerGroup("critic", pools[1], ("critic",), cfg, seed=seed) if separate else None
    rollout_group = WorkerGroup("rollout", pools[-1], ("rollout",), cfg, seed=seed) if split else group
    built = [g for g in dict.fromkeys([group, critic_group, rollout_group]) if g is not None]
    for g in built:
        print(f"[strive] placement {g.describe()}", flush=True)
    eos_ids, pad_id = _eos_ids(tokenizer, cfg), tokenizer.pad_token_id
    refs = [ref for g in built for ref in g.submit_all(WorkerProcess.build, cfg, sizes, total_steps, eos_ids, pad_id)]
    group.get(refs, "build")
    if split:
        join_transfer(group, rollout_group, cfg)
    return Groups(group, critic_group, rollout_group)


def split_slots(placement: Placement, widths: list[int]) -> list[Placement]:
    """Node-major slots [n0 × sum(widths), n1 × ...] → one placement per width: pool i takes widths[i] slots of
    every node (e.g. the trainer's g and the critic's g, or the trainer's g and the engines' r)."""
    ids, per_node = placement.node_ids, sum(widths)
    bounds = [sum(widths[:i]) for i in range(len(widths) + 1)]
    return [Placement([ids[i] for i in range(len(ids)) if bounds[k] <= i % per_node < bounds[k + 1]],
                      placement.resource) for k in range(len(widths))]


def join_transfer(trainer: WorkerGroup, rollout: WorkerGroup, cfg) -> None:
    """The weight-transfer group: trainer rank 0 (its store's host) and every rollout rank; the other trainer
    ranks join its store only (controller/transfer.py)."""
    master = trainer.get([trainer.workers[0].transfer_address.remote()], "rendezvous")[0]
    size, timeout = 1 + rollout.world_size, transfer_timeout_s(cfg)
    join = cfg.trainer.phase_timeout_s or 7 * 86400.0  # the sender's wait for engines still generating
    name = trainer.remote_name(WorkerProcess.join_transfer)
    host = shares_gpus(cfg)  # NCCL cannot have two ranks on one GPU: broadcast from host memory over gloo
    refs = [getattr(w, name).remote(master, 0 if r == 0 else None, size, timeout, join, host)
            for r, w in enumerate(trainer.workers)]
    refs += [getattr(w, name).remote(master, r + 1, size, timeout, join, host) for r, w in enumerate(rollout.workers)]
    trainer.get(refs, "rendezvous")


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
    init_ray(cfg, processes + (rollout_world(cfg) if is_split(cfg) else 0))
    groups = build_groups(cfg, run.sizes, data.total_steps, data.tokenizer)
    tracker = Tracker(cfg.trainer.logger, cfg.trainer.project_name, cfg.trainer.experiment_name, log_dir(cfg.trainer),
                      config=to_dict(cfg), total_steps=data.total_steps, verbose=bool(cfg.trainer.console_verbose))
    model_scores = build_model_scores(cfg, groups.main, data.tokenizer)
    return Runtime(run, data, reward_fn, val_reward_fn, groups.main, groups.critic, groups.rollout, kl_controller(cfg),
                   tracker, model_scores, resume_dir)
