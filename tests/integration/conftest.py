"""Integration fixtures: a one-rank gloo process group for tests that drive FSDP2 workers in the test process."""

import pytest
import torch.distributed as dist


@pytest.fixture
def process_group(tmp_path):
    if dist.is_initialized():
        pytest.skip("a process group already exists in this test process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    yield
    dist.destroy_process_group()
