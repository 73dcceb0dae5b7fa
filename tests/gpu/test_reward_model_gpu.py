"""The reward-model role on a GPU (one process, world size 1): bf16 compute, torch.compile'd layers and
param_offload; its scores match a plain fp32 transformers forward to bf16 precision, and offload frees the GPU."""

import pytest
import torch
import torch.distributed as dist

from strive.config import prepare

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def process_group(tmp_path_factory):
    if dist.is_initialized():
        pytest.skip("a process group already exists in this test process")
    dist.init_process_group("nccl", init_method=f"file://{tmp_path_factory.mktemp('pg')}/pg", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    from strive.models.tiny import make_tiny_model, make_tiny_reward_model

    policy = make_tiny_model(str(tmp_path_factory.mktemp("tiny-policy")))
    return make_tiny_reward_model(str(tmp_path_factory.mktemp("tiny-rm")), policy, layers=4, hidden=256), policy


def test_reward_model_role_on_gpu(process_group, rm_dir):
    from torch.distributed.device_mesh import init_device_mesh
    from transformers import AutoModelForSequenceClassification

    from strive.workers.reward_model import RewardModelWorker

    rm, policy = rm_dir
    run = prepare([f"actor_rollout_ref.model.path={policy}", "trainer.n_gpus_per_node=1", "data.train_batch_size=4",
                   "actor_rollout_ref.actor.ppo_mini_batch_size=4", "reward_model.enable=True",
                   f"reward_model.model.path={rm}", "reward_model.micro_batch_size_per_gpu=3",
                   "reward_model.model.fsdp_config.param_offload=True"])
    device = torch.device("cuda", 0)
    worker = RewardModelWorker(run.config.reward_model, run.sizes.reward_model, init_device_mesh("cuda", (1,)), device)
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 250, (n,), generator=g).tolist() for n in (7, 40, 13, 90, 5)]
    before = torch.cuda.memory_allocated()
    scores = worker.score(inputs)  # (5,)
    # parameters went back to the CPU; cuBLAS keeps its workspace (32 MiB on an H100) in the caching allocator,
    # which is not the model's, so it is freed before measuring
    torch._C._cuda_clearCublasWorkspaces()
    assert torch.cuda.memory_allocated() <= before + 2**20
    plain = AutoModelForSequenceClassification.from_pretrained(rm, dtype=torch.float32).to(device).eval()
    with torch.no_grad():
        expected = torch.cat([plain(input_ids=torch.tensor([ids], device=device)).logits[:, 0] for ids in inputs])
    torch.testing.assert_close(scores, expected.cpu(), rtol=0.05, atol=0.05 * expected.abs().max().item())
    assert scores.std() > 1e-3
