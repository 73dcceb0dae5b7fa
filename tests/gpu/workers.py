"""One ActorWorker on GPU 0 in this process (world size 1, NCCL group from the `nccl_group` fixture), GRPO, for
tests that build a worker directly instead of through Ray."""

import torch

from strive.config import prepare


def one_gpu_actor(model_dir, overrides: list[str]):
    """The actor of `model_dir` with these key=value overrides (batch sizes and the setting under test)."""
    from torch.distributed.device_mesh import init_device_mesh

    from strive.workers.actor import ActorWorker

    run = prepare([f"actor_rollout_ref.model.path={model_dir}", "trainer.n_gpus_per_node=1",
                   "algorithm.adv_estimator=grpo", *overrides])
    return ActorWorker(run.config.actor_rollout_ref, run.sizes.actor, run.sizes.old_log_prob,
                       init_device_mesh("cuda", (1,)), torch.device("cuda", 0), total_steps=2)
