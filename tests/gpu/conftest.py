"""GPU tests: skipped without CUDA. Models are randomly initialised with real shapes (no weights on GPU hosts)."""

import os

import pytest

torch = pytest.importorskip("torch")

for var, value in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"), ("NVSHMEM_DISABLE_NVLS", "1")):
    os.environ.setdefault(var, value)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "tests/gpu" in str(item.fspath):
            item.add_marker(skip)


def _random_qwen05(factory, name: str, vocab_size=None) -> str:
    from strive.models.tiny import make_random_model

    return make_random_model(str(factory.mktemp(name)), "qwen2.5-0.5b", vocab_size=vocab_size)


def _token_data(factory, name: str, vocab_size: int):
    from strive.data.synthetic import write_token_dataset

    out = factory.mktemp(name)
    write_token_dataset(str(out), n_train=512, n_test=16, prompt_words=64, vocab_size=vocab_size)
    return out


@pytest.fixture(scope="session")
def qwen05_dir(tmp_path_factory):
    return _random_qwen05(tmp_path_factory, "qwen2.5-0.5b-random")


@pytest.fixture(scope="session")
def token_data(tmp_path_factory):
    return _token_data(tmp_path_factory, "token_data", 151936)


# The learning test samples ~4k response tokens a step: with a 4096-word vocabulary (the 0.5B shape otherwise)
# every token is tried about once a step, so the token-set reward can climb within a dozen steps.
SMALL_VOCAB = 4096


@pytest.fixture(scope="session")
def qwen05_small_vocab_dir(tmp_path_factory):
    return _random_qwen05(tmp_path_factory, "qwen2.5-0.5b-vocab4k", SMALL_VOCAB)


@pytest.fixture(scope="session")
def token_data_small_vocab(tmp_path_factory):
    return _token_data(tmp_path_factory, "token_data_4k", SMALL_VOCAB)


@pytest.fixture
def nccl_group(tmp_path):
    """A one-rank NCCL process group for tests that build a worker directly (no Ray)."""
    import torch.distributed as dist

    dist.init_process_group("nccl", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    yield
    dist.destroy_process_group()
