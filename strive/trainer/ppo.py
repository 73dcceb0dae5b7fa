"""The PPO loop: one training step is one named call per phase on the worker groups.

    generate ─► reward ─► old log-probs ─► ref log-probs ─► values ─► advantages ─► critic update
        ─► actor update (after trainer.critic_warmup) ─► weight sync ─► validate / checkpoint / log

GRPO, RLOO, REINFORCE++ and ReMax are this same loop with another advantage estimator and no critic; the KL
to the reference enters either the reward (algorithm.use_kl_in_reward) or the actor loss (actor.use_kl_loss).
Multi-turn tool rollouts are the same step: `generate` runs the agent loops (strive.agent) when
rollout.multi_turn.enable is set. A reward model or LLM judge, when configured, scores inside the reward
phase (strive.trainer.model_reward). With split placement (actor_rollout_ref.hybrid_engine=False) it is the
same step again: `sample` takes the oldest batch the rollout pool generated ahead (at most
trainer.max_staleness policy versions old, strive.trainer.async_rollout) and `push_weights` broadcasts the
new weights to it. What is left out, on purpose: sequence parallelism.
Math lives in strive.algos, placement in strive.controller, the phases (what each ships, which worker method
runs it) in strive.trainer.phases, and how a step's batch is sampled (dynamic sampling, ReMax) in
strive.trainer.sampling.

Run: python -m strive.trainer.main_ppo [key=value ...]
"""

from __future__ import annotations

import os
from typing import Optional

from strive.batch import Batch
from strive.config import needs_critic, needs_reference
from strive.config.placement import is_split, max_staleness, partial_settings, transfer_timeout_s
from strive.controller.process import WorkerProcess
from strive.data.rl_dataset import PromptRow
from strive.trainer import checkpoint as ckpt
from strive.trainer import phases
from strive.trainer.async_rollout import RayRollout, RolloutQueue
from strive.trainer.metrics import (agent_metrics, data_metrics, max_over_ranks, reward_extra_metrics,
                                   throughput_metrics, timer)
from strive.trainer.sampling import StepSampler
from strive.trainer.setup import Runtime
from strive.trainer.validate import pick_generations, validation_metrics
from strive.workers.rollout import sampling_params


class PPOTrainer:
    def __init__(self, rt: Runtime):
        self.rt, self.cfg = rt, rt.cfg
        self.step = 0
        self.use_ref, self.use_critic = needs_reference(self.cfg), needs_critic(self.cfg)
        self.critic_group = rt.critic_group or rt.group
        self.step_sampler = StepSampler(self.cfg, rt.rollout_group, rt.reward_fn, self.next_rows,
                                        rt.data.sampler.seed, rt.model_scores)
        self.queue = self.rollout_queue() if is_split(self.cfg) else None

    def rollout_queue(self) -> RolloutQueue:
        """Split placement: generations ahead of training, at most trainer.max_staleness versions old."""
        rt, trainer = self.rt, self.cfg.trainer
        limit = (trainer.phase_timeout_s or 0) + transfer_timeout_s(self.cfg) if trainer.phase_timeout_s else None
        base = sampling_params(self.cfg.actor_rollout_ref, validate=False)
        backend = RayRollout(rt.rollout_group, rt.group, limit, self.step_sampler.agent_loop)
        return RolloutQueue(backend, max_staleness(self.cfg), self.next_rows,
                            lambda step: phases.step_params(base, rt.data.sampler.seed, step), rt.data.total_steps,
                            partial_settings(self.cfg), rt.data.sampler.state_dict)

    def next_rows(self) -> list[PromptRow]:
        return [self.rt.data.train_data[i] for i in self.rt.data.sampler.next_batch()]

    def fit(self) -> dict[str, float]:
        trainer = self.cfg.trainer
        self.resume()
        self.push_weights({})  # engines start with dummy weights
        last: dict[str, float] = {}
        if self.rt.data.val_data is not None and (trainer.val_before_train or trainer.val_only):
            last = self.validate()
            self.rt.tracker.log(last, step=self.step)
            if trainer.val_only:
                return last
        while self.step < self.rt.data.total_steps:
            self.step += 1
            metrics = self.train_step()
            is_last = self.step == self.rt.data.total_steps
            if self.rt.data.val_data is not None and trainer.test_freq > 0 and (is_last or self.step % trainer.test_freq == 0):
                with timer("testing", timings := {}):
                    metrics.update(self.validate())
                metrics["timing_s/testing"] = timings["testing"]
            if trainer.save_freq > 0 and (is_last or self.step % trainer.save_freq == 0):
                with timer("save_checkpoint", timings := {}):
                    self.save()
                metrics["timing_s/save_checkpoint"] = timings["save_checkpoint"]
            metrics.update({"training/global_step": self.step, "training/epoch": self.rt.data.sampler.epoch})
            self.rt.tracker.log(metrics, step=self.step)
            last = metrics
        return last

    def train_step(self) -> dict[str, float]:
        """One PPO step: each line is one phase; `phases` says what each ships and which worker method runs it."""
        rt, step, t = self.rt, self.step, {}
        train_actor = self.cfg.trainer.critic_warmup <= step
        bypass = self.rt.run.sizes.bypass_old_log_probs and train_actor  # see Sizes.bypass_old_log_probs
        rollout_as_old = self.cfg.algorithm.rollout_correction.bypass_mode  # π_old := π_rollout, no recompute
        with timer("step", t):
            batch, metrics = self.sample(step, t)  # generate (or take the batch generated ahead) + reward
            if self.cfg.trainer.balance_batch:
                batch = phases.balance(batch, rt.group.world_size, metrics)
            if rollout_as_old:
                batch = batch.with_fields(old_log_probs=batch.rollout_log_probs)
            elif not bypass:
                batch = phases.compute(rt.group, phases.OLD_LOG_PROBS, batch, t)
            if self.use_ref:
                batch = phases.compute(rt.group, phases.REF_LOG_PROBS, batch, t)
            if self.use_critic:
                batch = phases.compute(self.critic_group, phases.VALUES, batch, t)
            batch = phases.rewards_and_advantages(batch, self.cfg.algorithm, rt.kl_ctrl, t, metrics)
            if self.use_critic:
                batch = phases.update(self.critic_group, phases.UPDATE_CRITIC, batch, step, t, metrics)
            if train_actor:
                actor_phase = phases.UPDATE_ACTOR_ON_POLICY if bypass else phases.UPDATE_ACTOR
                batch = phases.update(rt.group, actor_phase, batch, step, t, metrics)
            metrics.update(self.push_weights(t))
        metrics.update(self.step_metrics(batch, t))
        return metrics

    def sample(self, step: int, t: dict[str, float]) -> tuple[Batch, dict[str, float]]:
        """The step's scored batch: generated now (colocated), or the oldest generated ahead (split placement)."""
        if self.queue is None:
            return self.step_sampler.sample(self.next_rows(), step, t)  # (+ dynamic sampling rounds, ReMax)
        batch, metrics = self.queue.take(step, t)
        with timer("reward", t):
            batch, extra = phases.score(self.rt.reward_fn, batch, self.rt.model_scores)
        metrics.update(reward_extra_metrics(extra))
        return batch, metrics

    def push_weights(self, t: dict[str, float]) -> dict[str, float]:
        """The actor's new weights into the engines: in-process (colocated) or broadcast to the rollout pool."""
        if self.queue is None:
            return phases.sync_weights(self.rt.group, t)
        if self.queue.version < 0:  # the first push: version = the step the run starts from (0, or resumed)
            return self.queue.start(self.step, self.step)
        return self.queue.push(self.step, t)

    def step_metrics(self, batch: Batch, t: dict[str, float]) -> dict[str, float]:
        """verl's per-step data, timing, throughput and memory metrics; dumps the generations if asked."""
        cfg, rt = self.cfg, self.rt
        metrics = {}
        if batch.entropy is not None:  # none in rollout-correction bypass mode: the update logs its own
            metrics["actor/entropy"] = phases.masked_mean(batch.entropy, batch.response_mask)
        metrics.update(data_metrics(batch, cfg.actor_rollout_ref.rollout.response_length, self.use_critic))
        metrics.update(agent_metrics(batch.meta.agent if batch.meta is not None else None))
        metrics.update(throughput_metrics(batch, t, rt.group.world_size))
        metrics.update(max_over_ranks(rt.group.call_all(WorkerProcess.memory)))
        if cfg.trainer.rollout_data_dir:
            phases.dump_generations(cfg.trainer.rollout_data_dir, self.step, rt.data.tokenizer, batch,
                                    cfg.actor_rollout_ref.rollout.response_length)
        return metrics

    def validate(self) -> dict[str, float]:
        rt, cfg = self.rt, self.cfg
        failures = rt.val_reward_fn.failures  # reward calls that failed and scored 0 (reward_manager.on_error=zero)
        params = phases.step_params(sampling_params(cfg.actor_rollout_ref, validate=True), rt.data.sampler.seed + 7,
                                    self.step)
        rows = [rt.data.val_data[i] for i in range(len(rt.data.val_data))]
        batch = phases.generate(rt.rollout_group, rows, params, release_after=False,
                                agent_loop=self.step_sampler.agent_loop, router=self.step_sampler.router)
        batch, extra = phases.score(rt.val_reward_fn, batch, rt.model_scores)
        variables = {"reward": batch.token_level_scores.sum(-1).tolist()}
        variables.update({k: v for k, v in extra.items() if k != "score"})
        if cfg.trainer.validation_data_dir:
            phases.dump_generations(cfg.trainer.validation_data_dir, self.step, rt.data.tokenizer, batch,
                                    cfg.actor_rollout_ref.rollout.response_length)
        if cfg.trainer.log_val_generations > 0:
            rows = pick_generations(phases.generation_rows(rt.data.tokenizer, batch), cfg.trainer.log_val_generations)
            rt.tracker.log_generations(rows, self.step)
        metrics = validation_metrics(batch.meta.data_sources, batch.group_ids.tolist(), variables, params.n)
        metrics["val/reward_errors"] = float(rt.val_reward_fn.failures - failures)
        return metrics

    # -- checkpoints ------------------------------------------------------------------------------------------
    def save(self) -> None:
        """Into `global_step_N.partial`, renamed to `global_step_N` when every rank and the controller are done."""
        tmp = ckpt.begin_save(self.cfg.trainer, self.step)
        self.rt.group.call_all(WorkerProcess.save, tmp, self.rt.data.model_path)
        if self.rt.critic_group:
            self.rt.critic_group.call_all(WorkerProcess.save, tmp, self.rt.data.model_path)
        in_flight = self.queue.checkpoint_data_state() if self.queue is not None else None
        state = {"sampler": in_flight or self.rt.data.sampler.state_dict(), "global_step": self.step,
                 "kl_coef": getattr(self.rt.kl_ctrl, "value", None)}
        ckpt.save_driver_state(tmp, state)
        path = ckpt.finish_save(self.cfg.trainer, self.step, tmp, self.rt.group.world_size)
        self.rt.last_saved = path
        print(f"[strive] saved checkpoint {path}")

    def resume(self) -> Optional[str]:
        path = self.rt.resume_dir  # chosen and checked before Ray started (checkpoint.plan_resume)
        if path is None:
            return None
        self.rt.group.call_all(WorkerProcess.load, path)
        if self.rt.critic_group:
            self.rt.critic_group.call_all(WorkerProcess.load, path)
        state = ckpt.load_driver_state(path)
        self.step = ckpt.step_of(path)
        if state:
            self.rt.data.sampler.load_state_dict(state["sampler"])
            if state.get("kl_coef") is not None:
                self.rt.kl_ctrl.value = state["kl_coef"]
        print(f"[strive] resumed from {path} at step {self.step}")
        if self.cfg.trainer.del_local_ckpt_after_load:
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        return path


def run_training(rt: Runtime) -> dict[str, float]:
    try:
        return PPOTrainer(rt).fit()
    finally:
        rt.tracker.finish()
        if rt.cfg.trainer.plot_curves and "file" in rt.cfg.trainer.logger:
            _plot(rt)


def _plot(rt: Runtime) -> None:
    from strive.tracking import plot_curves

    logs = ckpt.log_dir(rt.cfg.trainer)
    jsonl = os.path.join(logs, "metrics.jsonl")
    if os.path.exists(jsonl):
        print(f"[strive] curves: {plot_curves(jsonl, os.path.join(logs, 'curves.png'))}")
