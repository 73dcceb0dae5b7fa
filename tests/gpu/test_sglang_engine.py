"""The sglang engine on a real GPU: the engine conformance suite, and short PPO runs through main_ppo.

Skipped without CUDA (conftest.py) or without sglang. Ready for someone who has SGLang on a GPU machine; it has not
been run yet (SGLang 0.5.23 pins torch 2.14.1, which the project's GPU machines do not carry; docs/sglang.md).

    pip install "strive[sglang]"
    pytest tests/gpu/test_sglang_engine.py -q

The conformance suite compares with a float32 transformers forward (exact greedy ids, log-probs within 1e-4), so the
engine runs in float32 with Triton attention (FlashInfer/FA3 want 16-bit) and deterministic inference (SGLang honours
per-request sampling seeds only then). STRIVE_SGLANG_TEST_KWARGS='{"attention_backend": "..."}' (JSON) replaces
those engine_kwargs.
"""

import json
import os

import pytest
import torch

pytest.importorskip("sglang")

from strive.engines.base import EngineSpec  # noqa: E402
from strive.engines.sglang import SGLangEngine  # noqa: E402
from tests.e2e.helpers import read_metrics, run_training  # noqa: E402
from tests.gpu.test_training_gpu import gpu_command  # noqa: E402
from tests.integration.engine_conformance import CHECKS  # noqa: E402

pytestmark = pytest.mark.gpu

ENGINE_KWARGS = json.loads(os.environ.get("STRIVE_SGLANG_TEST_KWARGS") or
                           '{"attention_backend": "triton", "enable_deterministic_inference": true}')


@pytest.fixture(params=["tiny-llama", "qwen2.5-0.5b-random"])
def model_dir(request):
    return request.getfixturevalue({"tiny-llama": "tiny_model_dir", "qwen2.5-0.5b-random": "qwen05_dir"}[request.param])


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__.removeprefix("check_"))
def test_conformance(check, model_dir):
    engines = []

    def make_engine(**overrides):
        # several engines live at once in some checks: each takes a small share of the free memory
        spec = {"model_path": model_dir, "device": "cuda", "dtype": "float32", "gpu_memory_utilization": 0.15,
                "enforce_eager": True, "engine_kwargs": dict(ENGINE_KWARGS), **overrides}
        engines.append(SGLangEngine(EngineSpec(**spec)))
        return engines[-1]

    try:
        check(make_engine, model_dir)
    finally:
        for engine in engines:
            engine.shutdown()


def test_release_frees_and_resume_retakes_gpu_memory(qwen05_dir):
    engine = SGLangEngine(EngineSpec(model_path=qwen05_dir, device="cuda", dtype="bfloat16", load_format="dummy",
                                     gpu_memory_utilization=0.3, engine_kwargs=dict(ENGINE_KWARGS)))
    try:
        free_before = torch.cuda.mem_get_info()[0]
        engine.release(("weights", "kv_cache"))
        free_released = torch.cuda.mem_get_info()[0]
        engine.resume(("weights",))
        from tests.integration.engine_conformance import reference_model

        engine.update_weights(reference_model(qwen05_dir).state_dict().items())
        engine.resume(("kv_cache",))
        torch.cuda.empty_cache()  # the buckets this process staged on the GPU
        free_after = torch.cuda.mem_get_info()[0]
        assert free_released - free_before > 2**30  # weights (~1 GB bf16) and the KV cache came back to the GPU
        assert abs(free_after - free_before) < 2**29
        assert engine.last_sync["bytes"] > 0 and engine.last_sync["gb_per_s"] > 0
    finally:
        engine.shutdown()


@pytest.mark.parametrize("n_gpus", [1, 2])
def test_ppo_with_sglang_rollout(qwen05_dir, token_data, tmp_path, n_gpus):
    """n_gpus=2 runs one engine over both GPUs (TP=2): rank 1 gets its completions from rank 0's engine."""
    if torch.cuda.device_count() < n_gpus:
        pytest.skip(f"needs {n_gpus} GPUs")
    ckpt = tmp_path / "ckpt"
    overrides = gpu_command(qwen05_dir, token_data, ckpt, n_gpus, steps=2) + [
        "actor_rollout_ref.rollout.name=sglang", f"actor_rollout_ref.rollout.tensor_model_parallel_size={n_gpus}",
        "actor_rollout_ref.rollout.free_cache_engine=True", "trainer.save_freq=-1"]
    run_training(overrides, cwd=tmp_path, timeout=1200)
    rows = read_metrics(ckpt / "logs")
    for step in (1, 2):
        assert rows[step]["weight_sync/bytes"] > 0
        # the engine's log-probs equal the actor's on the same weights, within bf16 noise
        assert rows[step]["training/rollout_logprob_diff_mean"] < 0.05, rows[step]
