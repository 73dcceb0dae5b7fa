"""The PPO loop: one training step is one named call per phase on the worker groups.

    generate ─► reward ─► old log-probs ─► ref log-probs ─► values ─► advantages ─► critic update
        ─► actor update (after trainer.critic_warmup) ─► weight sync ─► validate / checkpoint / log

GRPO, RLOO, REINFORCE++ and ReMax are this same loop with another advantage estimator and no critic; the KL
to the reference enters either the reward (algorithm.use_kl_in_reward) or the actor loss (actor.use_kl_loss).
What is left out, on purpose: multi-turn/tool rollouts, learned reward models, LoRA, sequence parallelism.
Math lives in strive.algos, placement in strive.controller, phases in strive.trainer.phases.

Run: python -m strive.trainer.main_ppo [key=value ...]
"""

from __future__ import annotations

import itertools
import os
from typing import Optional

from strive.batch import Batch
from strive.config import needs_critic, needs_reference
from strive.trainer import checkpoint as ckpt
from strive.trainer import phases
from strive.trainer.metrics import data_metrics, max_over_ranks, mean_over_ranks, throughput_metrics, timer
from strive.trainer.setup import Runtime
from strive.trainer.validate import validation_metrics
from strive.workers.rollout import sampling_params

CORE = ("prompts", "responses")


class PPOTrainer:
    def __init__(self, rt: Runtime):
        self.rt, self.cfg = rt, rt.cfg
        self.step = 0
        self.use_ref, self.use_critic = needs_reference(self.cfg), needs_critic(self.cfg)
        self.critic_group = rt.critic_group or rt.group

    def fit(self) -> dict[str, float]:
        trainer = self.cfg.trainer
        self.resume()
        self.rt.group.call_all("sync_weights")  # engines start with dummy weights
        last: dict[str, float] = {}
        if self.rt.val_data is not None and (trainer.val_before_train or trainer.val_only):
            last = self.validate()
            self.rt.tracker.log(last, step=self.step)
            if trainer.val_only:
                return last
        while self.step < self.rt.total_steps:
            rows = [self.rt.train_data[i] for i in self.rt.sampler.next_batch()]
            self.step += 1
            metrics = self.train_step(rows)
            is_last = self.step == self.rt.total_steps
            if self.rt.val_data is not None and trainer.test_freq > 0 and (is_last or self.step % trainer.test_freq == 0):
                with timer("testing", timings := {}):
                    metrics.update(self.validate())
                metrics["timing_s/testing"] = timings["testing"]
            if trainer.save_freq > 0 and (is_last or self.step % trainer.save_freq == 0):
                with timer("save_checkpoint", timings := {}):
                    self.save()
                metrics["timing_s/save_checkpoint"] = timings["save_checkpoint"]
            metrics.update({"training/global_step": self.step, "training/epoch": self.rt.sampler.epoch})
            self.rt.tracker.log(metrics, step=self.step)
            last = metrics
        return last

    def train_step(self, rows: list[dict]) -> dict[str, float]:
        cfg, rt, t = self.cfg, self.rt, {}
        algo = cfg.algorithm
        metrics: dict[str, float] = {}
        with timer("step", t):
            batch, meta, baselines = self.rollout(rows, t, metrics)
            if cfg.trainer.balance_batch:
                batch, meta, balance = phases.balance(batch, meta, rt.group.world_size)
                metrics.update(balance)
            with timer("old_log_prob", t):
                batch = phases.run_on_shards(rt.group, "compute_log_probs", batch, ())
            if self.use_ref:
                with timer("ref", t):
                    batch = phases.run_on_shards(rt.group, "compute_ref_log_probs", batch, ())
            if self.use_critic:
                with timer("values", t):
                    batch = phases.run_on_shards(self.critic_group, "compute_values", batch, ())
            with timer("adv", t):
                batch = batch.with_fields(token_level_rewards=batch.token_level_scores)
                if algo.use_kl_in_reward:
                    batch, kl_metrics = phases.apply_kl_in_reward(batch, rt.kl_ctrl, algo.kl_penalty)
                    metrics.update(kl_metrics)
                batch = phases.advantages(batch, algo, baselines[batch.group_ids] if baselines is not None else None)
            if self.use_critic:
                with timer("update_critic", t):
                    sent = ("values", "returns")
                    metrics.update(mean_over_ranks(phases.update_on_shards(self.critic_group, "update_critic", batch,
                                                                           sent, self.step)))
            if cfg.trainer.critic_warmup <= self.step:
                with timer("update_actor", t):
                    sent = ("old_log_probs", "advantages") + (("ref_log_probs",) if self.use_ref else ())
                    metrics.update(mean_over_ranks(phases.update_on_shards(rt.group, "update_actor", batch, sent,
                                                                           self.step)))
            with timer("update_weights", t):
                metrics.update(mean_over_ranks(rt.group.call_all("sync_weights")))
        metrics["actor/entropy"] = phases.masked_mean(batch.entropy, batch.response_mask)
        metrics.update(data_metrics(batch, cfg.actor_rollout_ref.rollout.response_length, self.use_critic))
        metrics.update(throughput_metrics(batch, t, rt.group.world_size))
        metrics.update(max_over_ranks(rt.group.call_all("memory")))
        if cfg.trainer.rollout_data_dir:
            phases.dump_generations(cfg.trainer.rollout_data_dir, self.step, rt.tokenizer, batch, meta,
                                    batch.token_level_scores.sum(-1))
        return metrics

    def rollout(self, rows: list[dict], t: dict[str, float], metrics: dict[str, float]):
        """Generate and score. Under algorithm.filter_groups (DAPO's dynamic sampling) keep only the prompts
        whose responses scored differently, generating further rounds of data.gen_batch_size prompts until
        data.train_batch_size are kept; the first ones kept are trained on."""
        cfg, rt = self.cfg, self.rt
        fg, want = cfg.algorithm.filter_groups, cfg.data.train_batch_size
        remax = cfg.algorithm.adv_estimator == "remax"  # config forbids it together with filter_groups
        base_params = sampling_params(cfg.actor_rollout_ref, False, None)
        batches, metas, kept, generated, score_sum = [], [], 0, 0, 0.0
        for round_ in itertools.count():
            with timer("gen", t):
                baselines = self.remax_baselines(rows, rt.sampler.seed) if remax else None
                params = phases.step_params(base_params, rt.sampler.seed, self.step, round_)
                batch, meta = phases.generate(rt.group, rows, params, release_after=not fg.enable)
            with timer("reward", t):
                batch, extra = phases.score(rt.reward_fn, batch, meta)
            if not fg.enable:
                return batch, meta, baselines
            score_sum += float(batch.token_level_scores.sum())
            values = phases.filter_values(batch, extra, fg.metric)
            groups = phases.informative_groups(values, batch.group_ids)[: want - kept]
            batch, meta = phases.take_groups(batch, meta, groups, first_id=kept)
            batches.append(batch)
            metas.append(meta)
            kept, generated = kept + len(groups), generated + len(values)
            if kept == want:
                break
            if fg.max_num_gen_batches and round_ + 1 >= fg.max_num_gen_batches:
                raise RuntimeError(
                    f"step {self.step}: only {kept} of data.train_batch_size={want} prompts had responses with "
                    f"differing {fg.metric} after algorithm.filter_groups.max_num_gen_batches="
                    f"{fg.max_num_gen_batches} rounds; raise it (0: no limit) or use easier data")
            print(f"[strive] step {self.step}: dynamic sampling kept {kept}/{want} prompts after round {round_ + 1} "
                  f"({generated} responses, {t['gen']:.0f} s generating)", flush=True)
            rows = [rt.train_data[i] for i in rt.sampler.next_batch()]
        rt.group.call_all("release_rollout")
        metrics.update({"train/num_gen_batches": round_ + 1, "train/generated_score_mean": score_sum / generated,
                        "train/kept_prompt_frac": want * params.n / generated})
        return Batch.cat(batches), phases.Meta.cat(metas), None

    def remax_baselines(self, rows: list[dict], seed: int):
        """ReMax: the summed reward of one greedy response per prompt is that prompt's baseline."""
        greedy = sampling_params(self.cfg.actor_rollout_ref, True, None)
        greedy.n, greedy.do_sample = 1, False
        batch, meta = phases.generate(self.rt.group, rows, greedy, release_after=False)
        batch, _ = phases.score(self.rt.reward_fn, batch, meta)
        return batch.token_level_scores.sum(-1)  # (prompts,) indexed by group id

    def validate(self) -> dict[str, float]:
        rt, cfg = self.rt, self.cfg
        params = sampling_params(cfg.actor_rollout_ref, True, None)
        params = phases.step_params(params, rt.sampler.seed + 7, self.step)
        rows = [rt.val_data[i] for i in range(len(rt.val_data))]
        batch, meta = phases.generate(rt.group, rows, params, release_after=False)
        batch, extra = phases.score(rt.val_reward_fn, batch, meta)
        variables = {"reward": batch.token_level_scores.sum(-1).tolist()}
        variables.update({k: v for k, v in extra.items() if k != "score"})
        if cfg.trainer.validation_data_dir:
            phases.dump_generations(cfg.trainer.validation_data_dir, self.step, rt.tokenizer, batch, meta,
                                    batch.token_level_scores.sum(-1))
        return validation_metrics(meta.data_sources, meta.uids, variables, params.n)

    # -- checkpoints ------------------------------------------------------------------------------------------
    def save(self) -> None:
        path = ckpt.step_dir(self.cfg.trainer, self.step)
        self.rt.group.call_all("save", path, self.rt.model_path)
        if self.rt.critic_group:
            self.rt.critic_group.call_all("save", path, self.rt.model_path)
        state = {"sampler": self.rt.sampler.state_dict(), "global_step": self.step,
                 "kl_coef": getattr(self.rt.kl_ctrl, "value", None)}
        ckpt.save_driver_state(path, state)
        ckpt.mark_complete(self.cfg.trainer, self.step)
        print(f"[strive] saved checkpoint {path}")

    def resume(self) -> Optional[str]:
        path = ckpt.find_resume_dir(self.cfg.trainer)
        if path is None:
            return None
        self.rt.group.call_all("load", path)
        if self.rt.critic_group:
            self.rt.critic_group.call_all("load", path)
        state = ckpt.load_driver_state(path)
        self.step = ckpt.step_of(path)
        if state:
            self.rt.sampler.load_state_dict(state["sampler"])
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

    log_dir = os.path.join(os.path.expanduser(rt.cfg.trainer.default_local_dir), "logs")
    jsonl = os.path.join(log_dir, "metrics.jsonl")
    if os.path.exists(jsonl):
        print(f"[strive] curves: {plot_curves(jsonl, os.path.join(log_dir, 'curves.png'))}")
