"""The rollout role: an inference engine that samples responses, and the weight sync that feeds it.

The engine starts before any training weights exist (random "dummy" weights, at the same point on every
rank) and receives the actor's weights through `sync_from`. With `free_cache_engine` the engine gives its
memory back after the training generation; on the way back the order is: weights resumed, weights pushed,
then the KV cache resumed (so the cache never competes with a half-loaded model for memory).
"""

from __future__ import annotations

import time
import torch
import torch.distributed as dist

from strive.batch import Batch
from strive.config.actor_rollout_ref import ActorRolloutRefConfig
from strive.engines import SamplingParams, start_engine
from strive.engines.base import ENGINES, Completion, EngineSpec
from strive.models.loading import resolve_model_path


def engine_spec(cfg: ActorRolloutRefConfig, device: torch.device, eos_token_ids: list[int], pad_token_id: int,
                seed: int) -> EngineSpec:
    rollout = cfg.rollout
    kwargs = dict((rollout.engine_kwargs or {}).get(rollout.name) or {})
    tp = rollout.tensor_model_parallel_size if ENGINES[rollout.name].tensor_parallel else 1
    max_len = rollout.max_model_len or (rollout.prompt_length + rollout.response_length)
    return EngineSpec(model_path=resolve_model_path(cfg.model.path), device=str(device), dtype=rollout.dtype,
                      load_format=rollout.load_format, eos_token_ids=eos_token_ids, pad_token_id=pad_token_id,
                      max_model_len=max_len, max_num_seqs=rollout.max_num_seqs,
                      max_num_batched_tokens=rollout.max_num_batched_tokens,
                      gpu_memory_utilization=rollout.gpu_memory_utilization,
                      tensor_parallel_size=tp, enforce_eager=rollout.enforce_eager,
                      free_cache_engine=rollout.free_cache_engine, trust_remote_code=cfg.model.trust_remote_code,
                      enable_chunked_prefill=rollout.enable_chunked_prefill,
                      enable_prefix_caching=rollout.enable_prefix_caching, quantization=rollout.quantization,
                      override_config=dict(cfg.model.override_config), engine_kwargs=kwargs, seed=seed,
                      update_weights_bucket_megabytes=rollout.update_weights_bucket_megabytes)


def to_batch(prompts: list[list[int]], completions: list[Completion], n: int, prompt_length: int,
             response_length: int, pad_id: int) -> Batch:
    """Left-pad prompts to P and right-pad responses to T; completions are prompt-major (n per prompt)."""
    rows = []
    for i, comp in enumerate(completions):
        resp = comp.token_ids[:response_length]
        rows.append((prompts[i // n][-prompt_length:], resp, [1.0] * len(resp), comp.logprobs[:len(resp)]))
    return padded_batch(rows, prompt_length, response_length, pad_id)


def trajectories_to_batch(trajectories, prompt_length: int, response_length: int, pad_id: int) -> Batch:
    """Multi-turn trajectories (strive.agent.trajectory) as a Batch: prompts left-padded to P, responses
    (assistant and tool turns) right-padded to T; `response_mask` is 1 only on the engine's tokens, the
    attention mask covers every real token, `rollout_log_probs` is the engine's log-prob (0 on tool tokens)."""
    for traj in trajectories:
        if len(traj.prompt_ids) > prompt_length:
            raise ValueError(f"a prompt of {len(traj.prompt_ids)} tokens does not fit rollout.prompt_length="
                             f"{prompt_length} (with the tool schemas rendered into it); raise data.max_prompt_length")
    rows = [(t.prompt_ids, t.response_ids, t.response_mask, t.response_logprobs) for t in trajectories]
    return padded_batch(rows, prompt_length, response_length, pad_id)


def padded_batch(rows, P: int, T: int, pad_id: int) -> Batch:
    """A Batch from (prompt ids, response ids, response mask, response log-probs) rows: each prompt (≤ P tokens)
    left-padded to P, each response (≤ T) right-padded to T; attention covers every real token."""
    B = len(rows)
    prompt_ids = torch.full((B, P), pad_id, dtype=torch.long)  # (B, P)
    responses = torch.full((B, T), pad_id, dtype=torch.long)  # (B, T)
    attention = torch.zeros(B, P + T, dtype=torch.long)  # (B, L)
    response_mask = torch.zeros(B, T)  # (B, T)
    logprobs = torch.zeros(B, T)  # (B, T)
    for i, (prompt, resp, mask, lps) in enumerate(rows):
        R = len(resp)
        prompt_ids[i, P - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        attention[i, P - len(prompt): P + R] = 1
        if R:
            responses[i, :R] = torch.tensor(resp, dtype=torch.long)
            response_mask[i, :R] = torch.tensor(mask, dtype=torch.float32)
            logprobs[i, :R] = torch.tensor(lps, dtype=torch.float32)
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)  # (B, L)
    return Batch(prompt_ids, responses, attention, position_ids, response_mask, rollout_log_probs=logprobs)


class RolloutWorker:
    def __init__(self, cfg: ActorRolloutRefConfig, device: torch.device, eos_token_ids: list[int],
                 pad_token_id: int, seed: int, template_kwargs: dict | None = None):
        self.cfg, self.pad_id = cfg, pad_token_id
        self.template_kwargs = dict(template_kwargs or {})
        self._agent = None  # built on the first multi-turn generation
        # the engine's one line about itself (hf: which decode path and why) once per run, not once per rank
        first_rank = not dist.is_initialized() or dist.get_rank() == 0
        self.engine = start_engine(cfg.rollout.name, engine_spec(cfg, device, eos_token_ids, pad_token_id, seed),
                                   announce=first_rank)
        self.released = False

    def generate(self, prompts: list[list[int]], params: SamplingParams, release_after: bool) -> Batch:
        rollout = self.cfg.rollout
        # every rank calls the engine, even with no prompts: engines of several ranks (SGLang with tensor
        # parallelism) collect their group's prompts on one rank
        completions = self.engine.generate(prompts, params)
        batch = to_batch(prompts, completions, params.n, rollout.prompt_length, rollout.response_length, self.pad_id)
        if release_after:
            self.release()
        return batch

    def generate_agent(self, requests, params: SamplingParams, release_after: bool) -> tuple[Batch, dict]:
        """Roll out `AgentRequest`s through the agent loops (multi_turn.enable): the batch and per-episode
        statistics (strive.agent.loop.episode_stats)."""
        from strive.agent.loop import episode_stats

        episodes = self.agent_runner().run(requests, params)
        rollout = self.cfg.rollout
        batch = trajectories_to_batch([e.trajectory for e in episodes], rollout.prompt_length,
                                      rollout.response_length, self.pad_id)
        if release_after:
            self.release()
        return batch, episode_stats(episodes)

    def agent_runner(self):
        if self._agent is None:
            from strive.agent.settings import build_agent_runner
            from strive.models.loading import load_tokenizer

            model = self.cfg.model
            tokenizer = load_tokenizer(model.path, trust_remote_code=model.trust_remote_code,
                                       custom_chat_template=model.custom_chat_template)
            self._agent = build_agent_runner(self.cfg.rollout, self.engine, tokenizer, self.template_kwargs)
        return self._agent

    def generation_batch(self, gen) -> Batch:
        """A finished partial-rollout `Generation` (strive/workers/partial.py) as a Batch with token_versions."""
        from strive.workers.partial import token_versions

        P, T = self.cfg.rollout.prompt_length, self.cfg.rollout.response_length
        rows = [(prompt[-P:], toks[:T], [1.0] * len(toks[:T]), lps[:T])
                for prompt, toks, lps in zip(gen.prompts, gen.tokens, gen.logprobs)]
        return padded_batch(rows, P, T, self.pad_id).with_fields(token_versions=token_versions(gen.versions, T))

    def release(self) -> None:
        """Free the engine's weights and KV cache until the next weight sync (rollout.free_cache_engine)."""
        if self.cfg.rollout.free_cache_engine and not self.released:
            self.engine.release(("weights", "kv_cache"))
            self.released = True

    def sync_from(self, buckets) -> dict[str, float]:
        """Push full weights (an iterator of buckets of (name, tensor)) into the engine as one sync: one
        update_weights call, so an engine opens one session and flushes its cache once; timed."""
        start = time.perf_counter()
        if self.released:
            self.engine.resume(("weights",))
        seen = {"bytes": 0, "tensors": 0}

        def tensors():
            for bucket in buckets:
                for name, tensor in bucket:
                    seen["bytes"] += tensor.numel() * tensor.element_size()
                    seen["tensors"] += 1
                    yield name, tensor

        self.engine.update_weights(tensors())
        if self.released:
            self.engine.resume(("kv_cache",))
            self.released = False
        seconds = time.perf_counter() - start
        nbytes = seen["bytes"]
        return {"weight_sync/time_s": seconds, "weight_sync/bytes": float(nbytes),
                "weight_sync/tensors": float(seen["tensors"]),
                "weight_sync/gb_per_s": nbytes / max(seconds, 1e-9) / 1e9}


def sampling_params(cfg: ActorRolloutRefConfig, *, validate: bool) -> SamplingParams:
    """The rollout's sampling settings (rollout.*), or the validation ones (rollout.val_kwargs.*); unseeded."""
    rollout = cfg.rollout
    src = rollout.val_kwargs if validate else rollout
    return SamplingParams(max_new_tokens=rollout.response_length, temperature=src.temperature, top_p=src.top_p,
                          top_k=src.top_k, n=src.n, do_sample=src.do_sample, ignore_eos=rollout.ignore_eos)
