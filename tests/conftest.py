"""Shared fixtures: tiny offline models (built once per session), no network."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from strive.models.tiny import make_tiny_model

    return make_tiny_model(str(tmp_path_factory.mktemp("tiny-llama")), arch="llama")


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory):
    from strive.models.tiny import make_tiny_model

    return make_tiny_model(str(tmp_path_factory.mktemp("tiny-qwen2")), arch="qwen2")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def smollm2_dir():
    from strive.models.fetch import ensure_model

    try:
        return ensure_model("smollm2-135m-instruct")
    except Exception as exc:  # noqa: BLE001 - not cached and no network
        pytest.skip(f"SmolLM2-135M-Instruct is not available offline: {exc}")


@pytest.fixture(scope="session")
def tiny_rm_dir(tmp_path_factory, smollm2_dir):
    """A tiny random reward model (LlamaForSequenceClassification, num_labels=1) with SmolLM2's tokenizer."""
    from strive.models.tiny import make_tiny_reward_model

    return make_tiny_reward_model(str(tmp_path_factory.mktemp("tiny-rm")), smollm2_dir)


def pytest_unconfigure(config):
    """Name the threads still alive when the session ends: a crash while the interpreter shuts down (seen once in
    CI, exit 139 after every test passed) then comes with a list of suspects, and `-X faulthandler` in README.md's
    test command adds their stacks."""
    import sys
    import threading

    alive = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if alive:
        names = ", ".join(f"{t.name} (daemon={t.daemon})" for t in alive)
        print(f"\nthreads still alive at the end of the session: {names}", file=sys.stderr, flush=True)
