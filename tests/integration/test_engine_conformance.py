"""The engine conformance suite (engine_conformance.py) against every engine importable here, on CPU in float32.

hf always runs; vllm and sglang join when their libraries are installed.

    pytest tests/integration/test_engine_conformance.py -q
"""

import importlib.util

import pytest

from engine_conformance import CHECKS
from strive.engines.base import EngineSpec, load_engine_class

ENGINES = ["hf"] + [name for name in ("vllm", "sglang") if importlib.util.find_spec(name) is not None]


@pytest.fixture(params=["llama", "qwen2"])
def model_dir(request):
    return request.getfixturevalue({"llama": "tiny_model_dir", "qwen2": "tiny_qwen_dir"}[request.param])


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__.removeprefix("check_"))
def test_engine(check, engine_name, model_dir):
    engine_class = load_engine_class(engine_name)

    def make_engine(**overrides):
        return engine_class(EngineSpec(**{"model_path": model_dir, "device": "cpu", "dtype": "float32", **overrides}))

    check(make_engine, model_dir)
