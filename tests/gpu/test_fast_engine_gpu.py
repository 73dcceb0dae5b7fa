"""The hf engine's fast rollout path on CUDA in bf16: CUDA graphs, their reuse across update_weights, re-capture
after release/resume, cache sizing from gpu_memory_utilization, continuous batching, torch.compile'd layers, and
the Qwen2.5-0.5B shape (random weights) against its own transformers forward. Skipped without CUDA.

Tolerance policy. In bf16 the fast path cannot be bit-equal to transformers (other attention kernels, RMSNorm
and residual adds rounded once instead of twice), and a random model has near-ties that any rounding flips, after
which two greedy runs part ways for good (scaling the weights does not help: the errors scale with the logits).
So, with tol = 0.05 + 2% of |max logit| (a few bf16 ulps of the largest logit):
- every greedy token is a near-argmax of transformers' own teacher-forced bf16 forward of the same prefix
  (max logit − its logit ≤ tol);
- against `model.generate`: where a completion first differs from generate's, the two tokens are a near-tie under
  that teacher-forced forward (|Δ logit| ≤ tol), and at least half the completions equal generate's on their
  first 8 tokens (a bug such as a wrong position or a stale cache breaks both at once);
- sampled tokens' log-probs match the teacher-forced bf16 log_softmax(logits / T): mean |Δ| ≤ 0.05, max ≤ 0.3.

    pytest tests/gpu/test_fast_engine_gpu.py -q
"""

import random

import pytest
import torch

from strive.engines.base import EngineSpec, SamplingParams, start_engine
from strive.engines.fast.engine import FastHFEngine

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

_rng = random.Random(0)
PROMPTS = [[_rng.randrange(0, 256) for _ in range(n)] for n in (5, 1, 13, 3, 30, 8, 2, 21, 17, 9, 40, 4)]
SHARPEN = 20.0
"""lm_head × this in the greedy tests: peaked logits, so that near-ties are the exception."""


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model_dir(request, tmp_path_factory):
    from strive.models.tiny import make_tiny_model

    return make_tiny_model(str(tmp_path_factory.mktemp(f"gpu-{request.param}")), arch=request.param, layers=4,
                           hidden=256)


def sharpened_state(model_dir, seed: int = 0, sharpen: float = SHARPEN) -> dict:
    """The checkpoint's weights (plus noise for seed > 0), lm_head × sharpen, in bf16."""
    from strive.models.loading import load_causal_lm

    state = load_causal_lm(model_dir, dtype="float32").state_dict()
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in state.items():
        t = t + torch.randn(t.shape, generator=gen) * 0.02 if seed else t
        out[name] = (t * sharpen if name == "lm_head.weight" else t).bfloat16()
    return out


def reference(model_dir, state: dict):
    from strive.models.loading import load_causal_lm

    model = load_causal_lm(model_dir, dtype="bfloat16", device="cuda").eval()
    model.load_state_dict(state)
    return model


def make(model_dir, state: dict, **overrides) -> FastHFEngine:
    kwargs = {"fast": "on", **overrides.pop("engine_kwargs", {})}
    engine = FastHFEngine(EngineSpec(**{"model_path": model_dir, "device": "cuda", "dtype": "bfloat16",
                                        "max_num_seqs": 16, "engine_kwargs": kwargs, **overrides}))
    engine.update_weights(state.items())
    return engine


def greedy(max_new: int = 24, **kw) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new, do_sample=False, **kw)


@torch.inference_mode()
def teacher_forced_logits(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt + completion], device="cuda")
    return model(ids).logits[0, len(prompt) - 1:-1].float()  # (S, V)


def tolerance(top: torch.Tensor) -> torch.Tensor:
    return 0.05 + 0.02 * top.abs()


def assert_near_argmax(model, prompts, completions):
    for prompt, c in zip(prompts, completions):
        if not c.token_ids:
            continue
        logits = teacher_forced_logits(model, prompt, c.token_ids)  # (S, V)
        top = logits.max(-1).values  # (S,)
        chosen = logits.gather(-1, torch.tensor(c.token_ids, device="cuda")[:, None])[:, 0]  # (S,)
        slack = top - chosen
        assert bool((slack <= tolerance(top)).all()), f"not a near-argmax: slack {slack.max():.3f}"


@torch.inference_mode()
def hf_generate(model, prompts, max_new: int, pad: int) -> list[list[int]]:
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device="cuda")
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device="cuda")
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new,
                         min_new_tokens=max_new, pad_token_id=pad, top_k=None, top_p=None, temperature=None)
    return out[:, width:].tolist()


def assert_agrees_with_generate(model, prompts, completions, pad: int, first: int = 8):
    expected = hf_generate(model, prompts, first, pad)
    same = 0
    for prompt, c, e in zip(prompts, completions, expected):
        ours = c.token_ids[:first]
        d = next((i for i, (a, b) in enumerate(zip(ours, e)) if a != b), None)
        if d is None:
            same += 1
            continue
        logits = teacher_forced_logits(model, prompt, ours[:d + 1])[-1]  # (V,) after the shared prefix
        gap = float((logits[ours[d]] - logits[e[d]]).abs())
        assert gap <= float(tolerance(logits.max())), f"parted from model.generate at token {d}: Δ logit {gap:.3f}"
    assert same >= 0.5 * len(prompts), f"only {same}/{len(prompts)} completions agree with model.generate"


def test_greedy_matches_transformers_with_graphs(model_dir):
    state = sharpened_state(model_dir)
    engine, ref = make(model_dir, state, max_num_seqs=4), reference(model_dir, state)
    out = engine.generate(PROMPTS, greedy(24, ignore_eos=True))
    assert engine.fast.stats["captures"] > 0 and engine.fast.use_graphs
    assert all(len(c.token_ids) == 24 for c in out)
    assert_near_argmax(ref, PROMPTS, out)
    assert_agrees_with_generate(ref, PROMPTS, out, engine.spec.pad_token_id)
    eager = make(model_dir, state, max_num_seqs=4, enforce_eager=True).generate(PROMPTS, greedy(24, ignore_eos=True))
    assert sum(a.token_ids == b.token_ids for a, b in zip(out, eager)) >= 0.9 * len(PROMPTS)


def test_stop_tokens_and_refill(model_dir):
    state = sharpened_state(model_dir)
    engine, ref = make(model_dir, state, max_num_seqs=3, engine_kwargs={"fast_sync_every": 4}), reference(model_dir,
                                                                                                          state)
    base = engine.generate(PROMPTS, greedy(24))
    # row 0's first token comes from the same prefill chunk in both runs (later tokens may come from other batch
    # buckets, i.e. other GEMM kernels, and flip at near-ties)
    stop = base[0].token_ids[0]
    out = engine.generate(PROMPTS, greedy(24, stop_token_ids=[stop]))
    assert out[0].token_ids == [stop] and out[0].finish_reason == "stop"
    for c in out:
        assert (c.finish_reason == "stop") == (c.token_ids[-1] in engine.spec.eos_token_ids + [stop])
    assert_near_argmax(ref, PROMPTS, out)


@pytest.mark.parametrize("filters", [dict(temperature=0.8), dict(temperature=1.0, top_k=20, top_p=0.9)])
def test_sampled_logprobs_match_teacher_forced_forward(model_dir, filters):
    state = sharpened_state(model_dir, seed=1, sharpen=1.0)
    engine, ref = make(model_dir, state), reference(model_dir, state)
    out = engine.generate(PROMPTS, SamplingParams(max_new_tokens=32, n=2, seed=3, **filters))
    diffs = []
    for i, c in enumerate(out):
        logits = teacher_forced_logits(ref, PROMPTS[i // 2], c.token_ids) / filters["temperature"]
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c.token_ids, device="cuda")[:, None])[:, 0]
        diffs.append((torch.tensor(c.logprobs, device="cuda") - expected).abs())
    diffs = torch.cat(diffs)
    assert float(diffs.mean()) <= 0.05 and float(diffs.max()) <= 0.3, (float(diffs.mean()), float(diffs.max()))
    again = engine.generate(PROMPTS, SamplingParams(max_new_tokens=32, n=2, seed=3, **filters))
    assert [c.token_ids for c in again] == [c.token_ids for c in out]


def test_graphs_survive_update_weights_and_recapture_after_resume(model_dir):
    first, second = sharpened_state(model_dir), sharpened_state(model_dir, seed=2)
    engine = make(model_dir, first)
    params = greedy(ignore_eos=True)  # the same schedule (and graph shapes) whatever the weights
    before = engine.generate(PROMPTS, params)
    captures = engine.fast.stats["captures"]
    engine.update_weights(second.items())
    after = engine.generate(PROMPTS, params)
    assert engine.fast.stats["captures"] == captures, "update_weights must not re-capture"
    assert [c.token_ids for c in after] != [c.token_ids for c in before]
    assert_near_argmax(reference(model_dir, second), PROMPTS, after)
    engine.release(("kv_cache",))
    engine.resume(("kv_cache",))
    assert [c.token_ids for c in engine.generate(PROMPTS, params)] == [c.token_ids for c in after]
    assert engine.fast.stats["captures"] > captures
    engine.release()
    engine.resume()
    engine.update_weights(first.items())
    again = engine.generate(PROMPTS, params)
    assert [c.token_ids for c in again] == [c.token_ids for c in before]


def test_release_returns_cache_memory(model_dir):
    engine = make(model_dir, sharpened_state(model_dir), max_model_len=2048, max_num_seqs=64)
    engine.generate(PROMPTS[:2], greedy(4))
    held = torch.cuda.memory_allocated()
    engine.release(("kv_cache",))
    assert torch.cuda.memory_allocated() < held
    engine.resume(("kv_cache",))
    assert engine.fast.cache_shape[0] == 64


def test_cache_sizing_errors_clearly(model_dir):
    engine = make(model_dir, sharpened_state(model_dir), gpu_memory_utilization=1e-6)
    with pytest.raises(RuntimeError, match="cannot hold one sequence"):
        engine.generate(PROMPTS, greedy(4))


def test_seeded_sampling_barely_depends_on_batching(model_dir):
    state = sharpened_state(model_dir, seed=1)
    params = SamplingParams(max_new_tokens=16, n=2, seed=9)
    whole = make(model_dir, state).generate(PROMPTS, params)
    split = make(model_dir, state, max_num_seqs=3).generate(PROMPTS, params)
    # the same uniforms; other batch sizes pick other GEMM kernels, which may move a logit across a CDF boundary
    assert sum(a.token_ids == b.token_ids for a, b in zip(whole, split)) >= 0.9 * len(whole)


def test_compiled_decode_layers(model_dir):
    pytest.importorskip("triton")
    state = sharpened_state(model_dir)
    engine, ref = make(model_dir, state, engine_kwargs={"fast_compile": True}), reference(model_dir, state)
    out = engine.generate(PROMPTS, greedy(16, ignore_eos=True))
    assert_near_argmax(ref, PROMPTS, out)
    assert_agrees_with_generate(ref, PROMPTS, out, engine.spec.pad_token_id)


@pytest.fixture(scope="module")
def qwen05_config_dir(tmp_path_factory):
    """Only a config.json with Qwen2.5-0.5B's shapes: the engine builds random weights (load_format="dummy")."""
    from transformers import Qwen2Config

    out = tmp_path_factory.mktemp("qwen2.5-0.5b-shape")
    Qwen2Config(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                num_key_value_heads=2, intermediate_size=4864, tie_word_embeddings=True, rope_theta=1e6,
                max_position_embeddings=32768, rms_norm_eps=1e-6, bos_token_id=None, eos_token_id=2,
                pad_token_id=0).save_pretrained(out)
    return str(out)


def test_qwen05_shape_against_its_own_transformers_forward(qwen05_config_dir):
    engine = start_engine("hf", EngineSpec(model_path=qwen05_config_dir, device="cuda", dtype="bfloat16",
                                           load_format="dummy", eos_token_ids=[2], pad_token_id=0, max_model_len=256,
                                           max_num_seqs=32, engine_kwargs={"fast": "auto"}))
    assert isinstance(engine, FastHFEngine) and engine.fast.use_graphs  # auto: CUDA + Qwen2
    engine.model.requires_grad_(False)
    rng = random.Random(1)
    prompts = [[rng.randrange(3, 151936) for _ in range(rng.randrange(16, 96))] for _ in range(48)]
    out = engine.generate(prompts, greedy(32, ignore_eos=True))
    assert engine.fast.cache_shape == (32, 2, 256, 64)
    assert all(len(c.token_ids) == 32 for c in out)
    assert_near_argmax(engine.model, prompts[:8], out[:8])
    assert_agrees_with_generate(engine.model, prompts[:8], out[:8], pad=0)
    sampled = engine.generate(prompts, SamplingParams(max_new_tokens=32, seed=0, ignore_eos=True))
    diffs = []
    for prompt, c in zip(prompts[:8], sampled[:8]):
        logits = teacher_forced_logits(engine.model, prompt, c.token_ids)
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c.token_ids, device="cuda")[:, None])[:, 0]
        diffs.append((torch.tensor(c.logprobs, device="cuda") - expected).abs())
    diffs = torch.cat(diffs)
    assert float(diffs.mean()) <= 0.05 and float(diffs.max()) <= 0.3, (float(diffs.mean()), float(diffs.max()))
