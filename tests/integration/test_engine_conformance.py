"""The engine conformance suite (engine_conformance.py) against every engine importable here, on CPU in float32.

hf always runs, also as "hf-fast" (FastHFEngine, strive/engines/fast/: the fast decode path, without CUDA graphs on
CPU); vllm joins when installed, sglang when installed and CUDA is present, and then on device "cuda" (its engine
does not start on CPU).

    pytest tests/integration/test_engine_conformance.py -q
"""

import importlib.util

import pytest
import torch

from engine_conformance import CHECKS, check_lora_merged_weights_served
from strive.engines.base import EngineSpec, load_engine_class


def _engines() -> list[str]:
    names = ["hf", "hf-fast"]
    if importlib.util.find_spec("vllm") is not None:
        names.append("vllm")
    # SGLang imports on CPU but its engine only starts on CUDA
    if importlib.util.find_spec("sglang") is not None and torch.cuda.is_available():
        names.append("sglang")
    return names


ENGINES = _engines()


@pytest.fixture(params=["llama", "qwen2"])
def model_dir(request):
    return request.getfixturevalue({"llama": "tiny_model_dir", "qwen2": "tiny_qwen_dir"}[request.param])


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("check", [*CHECKS, check_lora_merged_weights_served],
                         ids=lambda check: check.__name__.removeprefix("check_"))
def test_engine(check, engine_name, model_dir):
    extra = {}
    if engine_name == "hf-fast":  # fast=on: a model the fast path cannot run fails instead of falling back
        from strive.engines.fast.engine import FastHFEngine as engine_class
        extra = {"engine_kwargs": {"fast": "on"}}
    else:
        engine_class = load_engine_class(engine_name)

    device = "cuda" if engine_name == "sglang" else "cpu"  # the sglang engine refuses any other device

    def make_engine(**overrides):
        return engine_class(EngineSpec(**{"model_path": model_dir, "device": device, "dtype": "float32", **extra,
                                          **overrides}))

    check(make_engine, model_dir)
