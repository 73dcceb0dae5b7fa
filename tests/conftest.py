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
