"""One worker process per GPU slot, hosting the roles colocated on it.

Colocation is placement: actor, rollout and reference (verl's "hybrid engine") are separate classes that
happen to live in this one process, sharing its GPU and its torch.distributed group; the critic lives here
too unless it has its own group. With split placement (actor_rollout_ref.hybrid_engine=False) the same class
hosts only the trainer roles in one group and only the rollout role in another, and weights cross between them
by `send_weights` / `receive_weights` over a broadcast group of their own (transfer.py). Each public method is one
phase of a training step, called by the controller on every rank with that rank's share of the batch.
"""

from __future__ import annotations

import datetime
import functools
import os
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

import torch

from strive.batch import Batch
from strive.config.placement import PartialSettings
from strive.config.schema import StriveConfig
from strive.config.sizes import Sizes
from strive.controller.device_memory import PhasePeaks
from strive.controller.faults import inject
from strive.controller.host_memory import MemoryBudget, current_rss_gb, trims_heap
from strive.engines import SamplingParams
from strive.engines.base import Interruptible
from strive.workers.partial import Generation, advance, stats

M = TypeVar("M", bound=Callable)


def phase(method: M) -> M:
    """A worker phase: the test hook's fault first (faults.py, inert unless STRIVE_FAULT_INJECT is set), then the
    method under the host-memory budget with its peak host and GPU memory recorded (device_memory.py), then a heap
    trim and the budget's check of what is still held."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        name = method.__name__
        inject(name, self.spec.rank)
        with self.host_peaks.phase(name), self.gpu_peaks.phase(name):
            result = self.budget.run(name, trims_heap(method), self, *args, **kwargs)
        self.budget.check(name)
        return result
    return run  # type: ignore[return-value]


@dataclass
class ProcessSpec:
    rank: int
    world_size: int
    roles: tuple[str, ...]
    """Subset of ("actor", "rollout", "ref", "critic", "reward_model", "judge")."""
    device: str
    """cuda or cpu."""
    seed: int = 0


class WorkerProcess:
    def __init__(self, spec: ProcessSpec):
        self.spec = spec
        threads = int(os.environ.get("STRIVE_THREADS", "0") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        self.device = torch.device("cuda", 0) if spec.device == "cuda" else torch.device("cpu")
        if spec.device == "cuda":
            torch.cuda.set_device(self.device)
        self.actor = self.rollout = self.ref = self.critic = self.reward_model = self.judge = None
        self.budget = MemoryBudget(None, spec.rank)
        self.gpu_peaks = PhasePeaks.for_device(spec.device)
        self.host_peaks = PhasePeaks.for_host()
        self.weight_version = -1
        """Split placement, rollout ranks: the policy version the engine holds (-1: none pushed yet)."""

    # -- set-up -----------------------------------------------------------------------------------------------
    def address(self) -> tuple[str, int]:
        """The address and a free port for the process group's store (asked of rank 0): Ray's address of this node
        (127.0.0.1 in a cluster strive started), with the port kept listening on that address alone until
        init_distributed hands it to the store (torch's own store would listen on every interface)."""
        import ray

        from strive.controller.transfer import listen_socket

        host = ray.util.get_node_ip_address()
        self._store_socket = listen_socket(host, self.spec.world_size)
        return host, self._store_socket.getsockname()[1]

    def init_distributed(self, master: tuple[str, int], timeout_s: int) -> None:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        host, port = master
        backend = "nccl" if self.spec.device == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=timeout_s)
        listening = getattr(self, "_store_socket", None)
        if listening is not None:  # rank 0: the store serves on the socket address() opened
            self._store_socket = None
            store = dist.TCPStore(host, port, self.spec.world_size, True, timeout, master_listen_fd=listening.detach())
        else:
            store = dist.TCPStore(host, port, self.spec.world_size, False, timeout)
        dist.init_process_group(backend, store=store, rank=self.spec.rank, world_size=self.spec.world_size,
                                timeout=timeout)
        self.mesh = init_device_mesh(self.spec.device, (self.spec.world_size,))

    def transfer_address(self) -> tuple[str, int]:
        """Trainer rank 0, split placement: the address and a listening port for the weight-transfer store."""
        import ray

        from strive.controller.transfer import listen_socket

        host = ray.util.get_node_ip_address()
        self._transfer_socket = listen_socket(host, 8)
        return host, self._transfer_socket.getsockname()[1]

    def join_transfer(self, master: tuple[str, int], rank: Optional[int], size: int, timeout_s: float,
                      join_timeout_s: float, through_host: bool = False) -> None:
        """Join the trainer → rollout broadcast group (controller/transfer.py) as `rank` (None: a trainer rank
        other than 0, which only waits with rank 0). Not the default group, which each pool keeps for itself.
        `through_host`: broadcast from host memory over gloo (pools sharing GPUs: rollout.share_trainer_gpus)."""
        from strive.controller.transfer import TransferGroup

        listening = getattr(self, "_transfer_socket", None)
        self._transfer_socket = None
        device = torch.device("cpu") if through_host else self.device
        self.transfer = TransferGroup(master, rank, size, device, timeout_s, join_timeout_s, listening)

    def build(self, cfg: StriveConfig, sizes: Sizes, total_steps: int, eos_ids: list[int], pad_id: int) -> dict:
        """Create the roles: the engine first (before any training weights occupy memory), then the trainers."""
        from transformers.utils import logging as hf_logging

        from strive.models.loading import import_external_libs
        from strive.workers.actor import ActorWorker
        from strive.workers.critic import CriticWorker
        from strive.workers.ref import AdapterOffReference, RefWorker
        from strive.workers.rollout import RolloutWorker

        self.budget = MemoryBudget(cfg.trainer.host_memory_limit_gb, self.spec.rank)
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        import_external_libs(cfg.actor_rollout_ref.model.external_lib, cfg.critic.model.external_lib)
        torch.manual_seed(cfg.actor_rollout_ref.actor.fsdp_config.seed)
        arr, roles = cfg.actor_rollout_ref, self.spec.roles
        if "rollout" in roles:
            self.rollout = RolloutWorker(arr, self.device, eos_ids, pad_id, seed=self.spec.seed,
                                         template_kwargs=cfg.data.apply_chat_template_kwargs)
        if "actor" in roles:
            self.actor = ActorWorker(arr, sizes.actor, sizes.old_log_prob, self.mesh, self.device, total_steps,
                                     cfg.algorithm.rollout_correction)
        if "ref" in roles and self.actor is not None and self.actor.peft is not None:
            self.ref = AdapterOffReference(self.actor)  # LoRA: the actor with its adapter off; no model loaded
        elif "ref" in roles:
            self.ref = RefWorker(arr, sizes.ref, self.mesh, self.device)
        if "critic" in roles:
            self.critic = CriticWorker(cfg.critic, sizes.critic, sizes.values, self.mesh, self.device, total_steps)
        if "reward_model" in roles:
            from strive.workers.reward_model import RewardModelWorker

            import_external_libs(cfg.reward_model.model.external_lib)
            self.reward_model = RewardModelWorker(cfg.reward_model, sizes.reward_model, self.mesh, self.device)
        if "judge" in roles:
            from strive.workers.judge import JudgeWorker

            self.judge = JudgeWorker(cfg.reward_model.judge, self.device, seed=self.spec.seed)
        return self.memory()

    # -- phases (each can be broken on purpose by faults.py, runs under the host-memory budget and ends by
    #    handing freed heap back to the OS: host_memory.py) --------------------------------------------------
    @phase
    def generate(self, prompts: list[list[int]], params: SamplingParams, release_after: bool) -> Batch:
        return self.rollout.generate(prompts, params, release_after)

    @phase
    def generate_agent(self, requests: list, params: SamplingParams, release_after: bool) -> tuple[Batch, dict]:
        return self.rollout.generate_agent(requests, params, release_after)

    @phase
    def release_rollout(self) -> None:
        self.rollout.release()

    @phase
    def compute_log_probs(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.actor.compute_log_probs(batch)

    @phase
    def compute_ref_log_probs(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.ref.compute_log_probs(batch)

    @phase
    def compute_values(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.critic.compute_values(batch)

    @phase
    def compute_rm_scores(self, inputs: list[list[int]]) -> torch.Tensor:
        """(b,) the reward model's score of each input (ids in the reward model's vocabulary)."""
        return self.reward_model.score(inputs)

    @phase
    def judge_replies(self, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
        """The LLM judge's reply (token ids) to each prompt."""
        return self.judge.generate(prompts, params)

    # update phases return (metrics, batch fields they computed)
    @phase
    def update_critic(self, batch: Batch, step: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        return self.critic.update(batch, step), {}

    @phase
    def update_actor(self, batch: Batch, step: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        return self.actor.update(batch, step)

    @phase
    def update_actor_on_policy(self, batch: Batch, step: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """The update that is the batch's only optimizer step: its forward's log-probs are the old log-probs, so
        no separate old log-prob pass ran; they come back, with the entropy, for the step's metrics."""
        return self.actor.update(batch, step, record=True)

    @phase
    def sync_weights(self) -> dict[str, float]:
        bucket_bytes = max(1, self.actor.cfg.rollout.update_weights_bucket_megabytes) * 2**20
        return self.rollout.sync_from(self.actor.full_weight_buckets(bucket_bytes))

    @phase
    def send_weights(self, version: int) -> dict[str, float]:
        """Split placement, every trainer rank: gather the actor's full weights bucket by bucket; rank 0
        broadcasts them to the rollout processes as policy `version`. Seconds and bytes of the broadcast."""
        bucket_bytes = max(1, self.actor.cfg.rollout.update_weights_bucket_megabytes) * 2**20
        return self.transfer.send(self.actor.full_weight_buckets(bucket_bytes), version)

    @phase
    def receive_weights(self, version: int) -> dict[str, float]:
        """Split placement, every rollout rank: take policy `version` from the broadcast into the engine."""
        out = self.rollout.sync_from(self.transfer.receive(version))
        self.weight_version = version
        return out

    @phase
    def generate_ahead(self, prompts: list[list[int]], params: SamplingParams,
                       partial: Optional[PartialSettings] = None) -> tuple:
        """Split placement: a generation the controller does not wait for at once. Returns (batch, seconds,
        partial-rollout stats); with `partial` (async_training.partial_rollout) a push may stop it first, and then
        the first item is the unfinished `Generation` that `continue_ahead` takes up after the push."""
        import time

        if partial is not None:
            return self._advance(Generation.start(prompts, params.n), params, partial)
        start = time.perf_counter()
        batch = self.rollout.generate(prompts, params, release_after=False)
        return self._stamped(batch), time.perf_counter() - start, {}

    @phase
    def generate_agent_ahead(self, requests: list, params: SamplingParams) -> tuple:
        """Split placement with multi_turn.enable: agent-loop episodes the controller does not wait for at once;
        (batch, seconds, {"agent": per-episode statistics})."""
        import time

        start = time.perf_counter()
        batch, stats = self.rollout.generate_agent(requests, params, release_after=False)
        return self._stamped(batch), time.perf_counter() - start, {"agent": stats}

    def _stamped(self, batch: Batch) -> Batch:
        """Every response token (tool turns included) sampled by the version the engine holds."""
        versions = torch.where(batch.response_valid > 0, self.weight_version, -1)  # (B, T)
        return batch.with_fields(token_versions=versions)

    @phase
    def continue_ahead(self, previous: tuple, params: SamplingParams, partial: PartialSettings) -> tuple:
        """After a push (partial rollout): go on with a generation that push interrupted, under the new weights;
        one that had finished passes through. `previous` is what generate_ahead or continue_ahead returned."""
        done = previous[0]
        return previous if isinstance(done, Batch) else self._advance(done, params, partial)

    def _advance(self, gen: Generation, params: SamplingParams, partial: PartialSettings) -> tuple:
        import time

        start = time.perf_counter()
        engine = self.rollout.engine
        until = engine.generate_until if isinstance(engine, Interruptible) else None
        advance(gen, engine.generate, params, self.weight_version, partial,
                lambda: self.transfer.requested(self.weight_version + 1), until)
        gen.seconds += time.perf_counter() - start
        out = self.rollout.generation_batch(gen) if gen.complete else gen
        return out, gen.seconds, stats(gen)

    # -- checkpoints ------------------------------------------------------------------------------------------
    def save(self, step_dir: str, hf_dir_source: Optional[str]) -> None:
        from strive.workers.checkpoint import save_shards

        r, w = self.spec.rank, self.spec.world_size
        for name, role in (("actor", self.actor), ("critic", self.critic)):
            if role is not None:
                path = os.path.join(step_dir, name)
                save_shards(path, role.module, role.optimizer, role.scheduler, r, w, _contents(role, "save"))
                if r == 0:
                    _write_hf_meta(role.module, os.path.join(path, "huggingface"), hf_dir_source)
                if r == 0 and getattr(role, "peft", None) is not None:
                    from strive.models.lora import ADAPTER_DIR, save_adapter_config

                    save_adapter_config(role.peft, os.path.join(path, ADAPTER_DIR))

    def load(self, step_dir: str) -> None:
        from strive.workers.checkpoint import load_shards

        r, w = self.spec.rank, self.spec.world_size
        for name, role in (("actor", self.actor), ("critic", self.critic)):
            if role is not None:
                load_shards(os.path.join(step_dir, name), role.module, role.optimizer, role.scheduler, r, w,
                            _contents(role, "load"))

    # -- introspection ----------------------------------------------------------------------------------------
    def memory(self) -> dict[str, float]:
        import resource

        # peak resident memory since start-up and each phase's since the last report (where the kernel's peak cannot
        # be reset, getrusage's peak alone), what the process holds now (a "now" that climbs step after step is a
        # leak or a heap that never shrinks), and the GPU's peaks
        out = self.host_peaks.report() or {
            "perf/cpu_memory_used_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
        rss = current_rss_gb()
        if rss is not None:
            out["perf/cpu_memory_rss_gb"] = rss
        out.update(self.gpu_peaks.report())
        return out

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def shutdown(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _contents(role, which: str) -> list[str]:
    cp = role.cfg.actor.checkpoint if hasattr(role.cfg, "actor") else role.cfg.checkpoint
    return list(cp.save_contents if which == "save" else cp.load_contents)


def _write_hf_meta(module, out_dir: str, tokenizer_source: Optional[str]) -> None:
    os.makedirs(out_dir, exist_ok=True)
    module.hf.config.save_pretrained(out_dir)
    gen = getattr(module.hf, "generation_config", None)
    if gen is not None:
        gen.save_pretrained(out_dir)
    if tokenizer_source:
        from strive.models.loading import auto_tokenizer

        auto_tokenizer(tokenizer_source).save_pretrained(out_dir)
