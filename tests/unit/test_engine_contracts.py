"""The vLLM and SGLang adapters against recording fakes built from the engines' real signatures (engine_fakes.py):
the calls each sync makes and their order, over several steps, as RolloutWorker drives them.

What each test pins (issue 27): vLLM sleeps again every step whatever wake_up returns; vLLM with TP > 1 runs one
shard per rank (external_launcher) on the group's prompts and seed; a failed bucket closes the session (both);
SGLang opens one session and flushes once per sync; an SGLang without sessions is refused at start; the options
rollout.* names reach the engines under their names.

    pytest -q tests/unit/test_engine_contracts.py
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch

from engine_fakes import THREAD_ENV, FakeLLM, FakeSGLEngine, FakeSGLEngineWithoutSession, fake_sglang, import_vllm_adapter
from strive.engines.base import EngineSpec, EngineUnavailable, SamplingParams
from strive.workers.rollout import RolloutWorker
from test_sglang_glue import NoDist, ThreadWorld, run_ranks

EOS = [2]


def _worker(engine) -> RolloutWorker:
    """RolloutWorker around an engine already built (the constructor would start one by name)."""
    worker = RolloutWorker.__new__(RolloutWorker)
    worker.cfg = SimpleNamespace(rollout=SimpleNamespace(free_cache_engine=True))
    worker.engine, worker.released, worker.pad_id = engine, False, 0
    return worker


def _weights(names, buckets=3):
    tensors = [(name, torch.ones(4, 4)) for name in names]
    return [tensors[i::buckets] for i in range(buckets)]


def _step(worker, engine, log, names):
    """One training step as the trainer runs it: generate, release, sync (resume weights, push, resume cache)."""
    log.clear()
    engine.generate([[5, 6, 7]], SamplingParams(max_new_tokens=3))
    worker.release()
    worker.sync_from(iter(_weights(names)))
    return list(log)


# ---- vLLM ------------------------------------------------------------------------------------------------------


@pytest.fixture
def vllm_on(monkeypatch):
    FakeLLM.instances.clear()
    monkeypatch.setattr(FakeLLM, "fail_load", False)

    def load(on_cpu: bool):
        return import_vllm_adapter(monkeypatch, on_cpu)
    return load


def _spec(model_dir, **kw):
    return EngineSpec(model_path=model_dir, device=kw.pop("device", "cuda"), dtype="float32", eos_token_ids=EOS,
                      pad_token_id=0, update_weights_bucket_megabytes=1, **kw)


@pytest.mark.parametrize("wake_up_returns", ["bool", "none"])
def test_vllm_sleeps_and_wakes_by_tag_every_step(vllm_on, tiny_model_dir, monkeypatch, wake_up_returns):
    """vLLM 0.32's wake_up answers "fully awake"; older ones answered None. Either way every step must put the
    engine to sleep again (the original code never slept after step 1 when wake_up returned None)."""
    monkeypatch.setattr(FakeLLM, "wake_up_returns", wake_up_returns)
    module = vllm_on(on_cpu=False)
    engine = module.VLLMEngine(_spec(tiny_model_dir))
    llm, worker = FakeLLM.instances[-1], _worker(engine)
    assert llm.option("enable_sleep_mode") is True
    names = list(FakeLLM.param_names)
    for _ in range(3):
        calls = _step(worker, engine, llm.calls, names)
        seq = [(c[0], c[1].get("level"), c[1].get("tags")) for c in calls if c[0] in ("sleep", "wake_up")]
        assert seq == [("sleep", 2, None), ("wake_up", None, ["weights"]), ("wake_up", None, ["kv_cache"])]
        rpc = [c[0] for c in calls if c[0].startswith("rpc:")]
        assert rpc[0] == "rpc:_begin_reload" and rpc[-1] == "rpc:_finish_reload"
        assert rpc.count("rpc:_begin_reload") == 1 and rpc.count("rpc:_finish_reload") == 1
        order = [c[0] for c in calls]
        assert order.index("rpc:_begin_reload") > order.index("wake_up")  # weights woken before they are pushed
        assert not llm.asleep
    engine.generate([[1, 2]], SamplingParams(max_new_tokens=2))  # awake and loaded after the last sync


def test_vllm_cache_alone_keeps_weights(vllm_on, tiny_model_dir):
    """release(("kv_cache",)) sleeps at level 1 (weights to host memory) and resume(("kv_cache",)) wakes them too."""
    module = vllm_on(on_cpu=False)
    engine = module.VLLMEngine(_spec(tiny_model_dir))
    llm = FakeLLM.instances[-1]
    engine.release(("kv_cache",))
    with pytest.raises(RuntimeError):
        engine.generate([[1, 2]], SamplingParams(max_new_tokens=2))
    engine.resume(("kv_cache",))
    assert [(c[0], c[1].get("level"), c[1].get("tags")) for c in llm.calls if c[0] in ("sleep", "wake_up")] == [
        ("sleep", 1, None), ("wake_up", None, ["kv_cache", "weights"])]
    engine.generate([[1, 2]], SamplingParams(max_new_tokens=2))


def test_vllm_failed_bucket_closes_the_reload_session(vllm_on, tiny_model_dir, monkeypatch):
    module = vllm_on(on_cpu=False)
    engine = module.VLLMEngine(_spec(tiny_model_dir))
    llm = FakeLLM.instances[-1]
    monkeypatch.setattr(FakeLLM, "fail_load", True)
    with pytest.raises(RuntimeError, match="load failed"):
        engine.update_weights(iter(_weights(FakeLLM.param_names, buckets=1)[0]))
    assert llm.names()[-2:] == ["rpc:_load_weights", "rpc:_finish_reload"]


def test_vllm_options_reach_the_engine(vllm_on, tiny_model_dir):
    module = vllm_on(on_cpu=False)
    module.VLLMEngine(_spec(tiny_model_dir, quantization="fp8", enable_prefix_caching=False,
                            enable_chunked_prefill=False))
    llm = FakeLLM.instances[-1]
    assert (llm.option("quantization"), llm.option("enable_prefix_caching"),
            llm.option("enable_chunked_prefill")) == ("fp8", False, False)
    assert llm.option("distributed_executor_backend") is None  # TP 1: vLLM's own single-process executor


def test_vllm_quantization_refused_on_cpu(vllm_on, tiny_model_dir):
    module = vllm_on(on_cpu=True)
    with pytest.raises(ValueError, match="quantization=fp8 needs vLLM on CUDA"):
        module.VLLMEngine(_spec(tiny_model_dir, device="cpu", quantization="fp8"))


@contextmanager
def _thread_environ(values: dict):
    """vllm.environ for ranks that are threads: each thread's fake sees its own RANK/LOCAL_RANK (os.environ is
    shared by the threads, and four ranks setting and restoring it at once race)."""
    THREAD_ENV.values = dict(values)
    try:
        yield
    finally:
        THREAD_ENV.values = None


def test_vllm_environ_sets_and_restores_the_launcher_variables(vllm_on, monkeypatch):
    adapter = vllm_on(on_cpu=False)  # the adapter's own binding of strive.user_code.environ
    monkeypatch.setenv("RANK", "7")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with adapter.environ({"RANK": "1", "LOCAL_RANK": "0"}):
        assert (os.environ["RANK"], os.environ["LOCAL_RANK"]) == ("1", "0")
    assert os.environ["RANK"] == "7" and "LOCAL_RANK" not in os.environ


def test_vllm_tensor_parallel_one_shard_per_rank(vllm_on, tiny_model_dir, monkeypatch):
    """TP 2 over 4 ranks: each rank builds a one-shard engine (external_launcher, RANK/LOCAL_RANK set while it
    starts), a group shares its first rank's seed, both ranks of a group run the group's prompts with the first
    rank's params, and each rank gets back the completions of its own prompts."""
    module = vllm_on(on_cpu=False)
    monkeypatch.setattr(module, "environ", _thread_environ)
    world = ThreadWorld(4)
    prompts = {r: [[10 * r + 1, 10 * r + 2]] * (r % 2 + 1) for r in range(4)}

    def rank(r):
        engine = module.VLLMEngine(_spec(tiny_model_dir, tensor_parallel_size=2, seed=100 + r), dist=world.dist(r))
        out = engine.generate(prompts[r], SamplingParams(max_new_tokens=3, n=2, seed=7 + r))
        return engine, out

    results, errors = run_ranks(4, rank)
    assert errors == [None] * 4, errors
    llms = {int(llm.env["RANK"]): llm for llm in FakeLLM.instances}
    assert sorted(llms) == [0, 1, 2, 3]
    for r, llm in llms.items():
        assert llm.option("distributed_executor_backend") == "external_launcher"
        assert llm.option("tensor_parallel_size") == 2 and llm.env["LOCAL_RANK"] == "0"
        assert llm.option("seed") == 100 + (r - r % 2)
    for group in ((0, 1), (2, 3)):
        a, b = (llms[r].calls for r in group)
        gen_a = [c[1] for c in a if c[0] == "generate"][0]
        gen_b = [c[1] for c in b if c[0] == "generate"][0]
        assert [p["prompt_token_ids"] for p in gen_a["prompts"]] == [p["prompt_token_ids"] for p in gen_b["prompts"]]
        assert [s.kwargs["seed"] for s in gen_a["sampling_params"]] == [s.kwargs["seed"] for s in
                                                                       gen_b["sampling_params"]]
        assert len(gen_a["prompts"]) == 2 * (len(prompts[group[0]]) + len(prompts[group[1]]))
    for r, (_, out) in enumerate(results):
        assert len(out) == 2 * len(prompts[r])
        assert out[0].token_ids[0] == (sum(prompts[r][0])) % 50 + 1  # the fake's token for this rank's prompt


# ---- SGLang ----------------------------------------------------------------------------------------------------


def _sgl_engine(engine_cls=FakeSGLEngine, **kw):
    from strive.engines.sglang import SGLangEngine

    spec = EngineSpec(model_path="unused", device="cpu", eos_token_ids=EOS, pad_token_id=0,
                      update_weights_bucket_megabytes=1, **kw)
    return SGLangEngine(spec, sglang=fake_sglang(engine_cls), dist=NoDist())


def test_sglang_one_session_and_one_flush_per_sync(monkeypatch):
    monkeypatch.setattr(FakeSGLEngine, "fail_update", False)
    engine = _sgl_engine()
    fake, worker = engine._engine, _worker(engine)
    names = [f"w{i}" for i in range(6)]
    for _ in range(3):
        calls = _step(worker, engine, fake.calls, names)
        order = [c[0] for c in calls]
        assert order.count("begin_weight_update") == 1 and order.count("end_weight_update") == 1
        assert order.count("flush_cache") == 1
        b, e = order.index("begin_weight_update"), order.index("end_weight_update")
        assert order[b + 1: e] == ["update_weights_from_tensor"] * (e - b - 1) and e - b - 1 >= 1
        assert order.index("flush_cache") > e
        tags = [c[1].get("tags") for c in calls if c[0].endswith("memory_occupation")]
        assert tags == [["weights", "kv_cache"], ["weights"], ["kv_cache"]]
        assert order.index("begin_weight_update") > order.index("resume_memory_occupation")
        pushed = [n for c in calls if c[0] == "update_weights_from_tensor" for n, _ in c[1]["named_tensors"]]
        assert pushed == [n for bucket in _weights(names) for n, _ in bucket]  # each tensor once, in order
        assert all(c[1]["flush_cache"] is False for c in calls if c[0] == "update_weights_from_tensor")


def test_sglang_failed_bucket_closes_the_session(monkeypatch):
    engine = _sgl_engine()
    fake = engine._engine
    monkeypatch.setattr(FakeSGLEngine, "fail_update", True)
    with pytest.raises(RuntimeError, match="bucket refused"):
        engine.update_weights(iter([("w", torch.ones(2))]))
    assert fake.names()[-3:] == ["begin_weight_update", "update_weights_from_tensor", "end_weight_update"]


def test_sglang_without_sessions_is_refused_at_start():
    with pytest.raises(EngineUnavailable, match="begin_weight_update / end_weight_update"):
        _sgl_engine(FakeSGLEngineWithoutSession)


def test_sglang_options_and_ports_reach_server_args():
    a = _sgl_engine(quantization="fp8", enable_chunked_prefill=True, enable_prefix_caching=False,
                    max_num_batched_tokens=4096)._engine
    b = _sgl_engine(enable_chunked_prefill=False)._engine
    assert (a.kwargs["quantization"], a.kwargs["chunked_prefill_size"], a.kwargs["disable_radix_cache"]) == (
        "fp8", 4096, True)
    assert (b.kwargs["chunked_prefill_size"], b.kwargs["disable_radix_cache"], "quantization" in b.kwargs) == (
        -1, False, False)
    ports = {a.kwargs["port"], a.kwargs["nccl_port"], b.kwargs["port"], b.kwargs["nccl_port"]}
    assert len(ports) == 4  # every engine its own port and nccl_port
