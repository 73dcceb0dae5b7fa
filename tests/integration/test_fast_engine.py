"""The hf engine's fast decode path (FastHFEngine, strive/engines/fast/) on CPU in float32, beyond the conformance
suite:
greedy equality with `model.generate` over varied prompt lengths (also with fewer slots than completions, so
finished slots are refilled, and with stop tokens ending some completions early), sampled log-probs against a
teacher-forced forward, the filters, seeded sampling that does not depend on batching, update_weights,
release/resume of the KV cache, cache sizing, models it cannot run, torch.compile'd layers, and the CUDA-graph
bookkeeping (which shapes get captured, when they are captured again) with a stand-in graph that re-runs the
captured step. Real CUDA graphs: tests/gpu/test_fast_engine_gpu.py. Which path a run takes:
tests/integration/test_engine_start.py.

    pytest tests/integration/test_fast_engine.py -q
"""

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engine_conformance import eos_ids, greedy, ids_of, perturbed_state_dict, reference_logprobs, reference_model
from strive.engines.base import EngineSpec, SamplingParams
from strive.engines.fast import engine as engine_module
from strive.engines.fast.engine import FastHFEngine
from strive.engines.fast.model import unsupported_reason
from strive.engines.fast.sampling import SamplerKind, row_keys, sample, uniforms
from strive.engines.hf import HFEngine

_rng = random.Random(0)
PROMPTS = [[_rng.randrange(0, 256) for _ in range(n)] for n in (5, 1, 13, 3, 30, 8, 2, 21)]
"""Eight prompts of varied lengths (byte ids of the tiny tokenizer)."""


def make(model_dir, fast="on", **overrides) -> FastHFEngine:
    kwargs = {"fast": fast, **overrides.pop("engine_kwargs", {})}
    return FastHFEngine(EngineSpec(**{"model_path": model_dir, "dtype": "float32", "engine_kwargs": kwargs,
                                      **overrides}))


@pytest.fixture(params=["llama", "qwen2"])
def model_dir(request):
    return request.getfixturevalue({"llama": "tiny_model_dir", "qwen2": "tiny_qwen_dir"}[request.param])


@torch.inference_mode()
def hf_generate(model, prompts, max_new: int, stop_ids: list[int], pad: int) -> list[list[int]]:
    """transformers' own greedy generate on a left-padded batch, each row cut after its first stop id."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new,
                         eos_token_id=stop_ids, pad_token_id=pad, top_k=None, top_p=None, temperature=None)
    rows = []
    for row in out[:, width:].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in stop_ids), len(row))
        rows.append(row[:cut])
    return rows


def pad_id(model_dir) -> int:
    return EngineSpec(model_path=model_dir).with_token_ids().pad_token_id


# ---- greedy equality ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("slots", [256, 3])
def test_greedy_equals_model_generate(model_dir, slots):
    engine, max_new = make(model_dir, max_num_seqs=slots), 24
    out = engine.generate(PROMPTS, greedy(max_new))
    expected = hf_generate(reference_model(model_dir), PROMPTS, max_new, eos_ids(model_dir), pad_id(model_dir))
    assert ids_of(out) == expected
    assert engine.fast.cache_shape[0] == slots
    if slots < len(PROMPTS):
        assert engine.fast.stats["prefills"] >= 3  # finished slots were refilled


def test_stop_tokens_end_some_completions_early_and_slots_refill(model_dir):
    engine, max_new = make(model_dir, max_num_seqs=2, engine_kwargs={"fast_sync_every": 3}), 20
    base = engine.generate(PROMPTS, greedy(max_new))
    stop = base[0].token_ids[2]  # ends row 0 (and perhaps others) early
    out = engine.generate(PROMPTS, greedy(max_new, stop_token_ids=[stop]))
    stops = eos_ids(model_dir) + [stop]
    assert ids_of(out) == hf_generate(reference_model(model_dir), PROMPTS, max_new, stops, pad_id(model_dir))
    assert out[0].finish_reason == "stop" and len(out[0].token_ids) <= 3
    for c in out:
        assert (c.finish_reason == "stop") == (c.token_ids[-1] in stops)
        assert c.finish_reason == "stop" or len(c.token_ids) == max_new


@pytest.mark.parametrize("sync_every", [1, 64])
def test_sync_cadence_and_tail_compaction_do_not_change_outputs(tiny_model_dir, sync_every):
    # max_model_len caps each completion at a different length, so slots free up one by one and busy ones move down
    cap = dict(max_model_len=36, max_num_seqs=8)
    expected = HFEngine(EngineSpec(model_path=tiny_model_dir, dtype="float32", **cap)).generate(
        PROMPTS, greedy(30, ignore_eos=True))
    engine = make(tiny_model_dir, engine_kwargs={"fast_sync_every": sync_every}, **cap)
    out = engine.generate(PROMPTS, greedy(30, ignore_eos=True))
    assert ids_of(out) == ids_of(expected)
    for a, b in zip(out, expected):
        assert a.finish_reason == b.finish_reason and a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
    assert engine.fast.stats["moves"] > 0


def test_max_model_len_caps_each_prompt(tiny_model_dir):
    prompts = [PROMPTS[3], PROMPTS[5], PROMPTS[2]]  # lengths 3, 8, 13
    out = make(tiny_model_dir, max_model_len=11).generate(prompts, greedy(10, ignore_eos=True))
    assert [len(c.token_ids) for c in out] == [8, 3, 0]
    assert all(c.finish_reason == "length" for c in out)
    assert make(tiny_model_dir).generate([], greedy()) == []


# ---- sampling ----------------------------------------------------------------------------------------------------

SAMPLING = [dict(temperature=0.7), dict(temperature=1.3, top_k=20), dict(temperature=0.9, top_p=0.8),
            dict(temperature=1.0, top_k=50, top_p=0.9)]


@pytest.mark.parametrize("filters", SAMPLING, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()))
def test_sampled_logprobs_match_teacher_forced_forward(tiny_qwen_dir, filters):
    engine = make(tiny_qwen_dir, max_num_seqs=4)
    model, state = perturbed_state_dict(tiny_qwen_dir, seed=3)
    engine.update_weights(state.items())
    prompts = PROMPTS[:5]
    out = engine.generate(prompts, SamplingParams(max_new_tokens=16, n=3, seed=5, **filters))
    for i, c in enumerate(out):
        assert c.token_ids
        prompt, temp = prompts[i // 3], filters["temperature"]
        expected = reference_logprobs(model, prompt, c.token_ids, temp)
        torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-4, rtol=0)
        _assert_inside_filters(model, prompt, c.token_ids, temp, filters.get("top_k", 0), filters.get("top_p", 1.0))


@torch.inference_mode()
def _assert_inside_filters(model, prompt, tokens, temperature, top_k, top_p):
    logits = model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1:-1].float() / temperature  # (S, V)
    for step, token in enumerate(tokens):
        z = logits[step]
        rank = int((z > z[token]).sum())
        if top_k:
            assert rank < top_k
            z = torch.where(z >= torch.topk(z, top_k).values[-1], z, torch.tensor(float("-inf")))
        probs = z.softmax(-1)
        ahead = float(probs[probs > probs[token]].sum())
        assert ahead < top_p + 1e-5


def test_degenerate_filters_equal_greedy(tiny_model_dir):
    engine = make(tiny_model_dir, max_num_seqs=4)
    expected = engine.generate(PROMPTS, greedy(10))
    for filters in (dict(top_k=1), dict(top_p=1e-6), dict(top_k=1, top_p=0.5)):
        out = engine.generate(PROMPTS, SamplingParams(max_new_tokens=10, n=2, seed=0, **filters))
        assert ids_of(out) == [ids for ids in ids_of(expected) for _ in range(2)]
        for c, e in zip(out, [e for e in expected for _ in range(2)]):  # T = 1: the same log-probs
            assert c.logprobs == pytest.approx(e.logprobs, abs=1e-5)


def test_seeded_samples_do_not_depend_on_batching(tiny_model_dir):
    params = SamplingParams(max_new_tokens=12, n=2, seed=11, temperature=1.0, top_p=0.95)
    whole = make(tiny_model_dir).generate(PROMPTS, params)
    for overrides in (dict(max_num_seqs=3), dict(max_num_seqs=5, engine_kwargs={"fast_sync_every": 1})):
        other = make(tiny_model_dir, **overrides).generate(PROMPTS, params)
        assert ids_of(other) == ids_of(whole)
        for a, b in zip(other, whole):
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
    unseeded = make(tiny_model_dir)
    first = unseeded.generate(PROMPTS, SamplingParams(max_new_tokens=12))
    assert ids_of(first) != ids_of(unseeded.generate(PROMPTS, SamplingParams(max_new_tokens=12)))
    assert ids_of(first) == ids_of(make(tiny_model_dir).generate(PROMPTS, SamplingParams(max_new_tokens=12)))


def test_sampler_keeps_the_nucleus_and_reports_unfiltered_logprobs():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])  # (1, V)
    logits = probs.log().repeat(4000, 1)  # (N, V)
    u = uniforms(row_keys(0, list(range(4000))), 1)[:, 0]  # (N,)
    one, half = torch.ones(1), torch.full((1,), 0.5)
    for top_p, kept in [(0.5, {0}), (0.7, {0, 1}), (0.8, {0, 1}), (0.81, {0, 1, 2}), (1.0, {0, 1, 2, 3})]:
        kind = SamplerKind(top_p=top_p < 1.0)
        token, logprob = sample(logits, u, kind, one, torch.full((1,), top_p))
        assert set(token.tolist()) == kept
        assert torch.allclose(logprob, probs[0].log()[token])
    token, _ = sample(logits, u, SamplerKind(), one, one)
    shares = torch.bincount(token, minlength=4).float() / len(token)
    assert torch.allclose(shares, probs[0], atol=0.03)
    token, logprob = sample(logits, u, SamplerKind(top_k=2), half, one)
    assert set(token.tolist()) == {0, 1}
    assert torch.allclose(logprob, torch.log_softmax(probs.log()[0] / 0.5, -1)[token])
    share = (token == 0).float().mean()  # renormalised among the top 2 at T = 0.5: 0.25 / (0.25 + 0.09)
    assert abs(share - 0.25 / 0.34) < 0.03


def test_uniforms_are_a_function_of_seed_row_and_step():
    a = uniforms(row_keys(7, [0, 1, 2]), 50)
    assert torch.equal(a, uniforms(row_keys(7, [0, 1, 2]), 50))
    assert torch.equal(a[1:, :20], uniforms(row_keys(7, [1, 2]), 20))  # rows and steps are independent streams
    assert not torch.equal(a, uniforms(row_keys(8, [0, 1, 2]), 50))
    big = uniforms(row_keys(1, list(range(200))), 500)
    assert 0 < float(big.min()) and float(big.max()) < 1 and abs(float(big.mean()) - 0.5) < 0.01
    assert abs(float(np.corrcoef(big[:, :-1].flatten(), big[:, 1:].flatten())[0, 1])) < 0.01


# ---- weights and memory ------------------------------------------------------------------------------------------


def test_update_weights_matches_a_reference_with_the_new_weights(model_dir):
    engine, max_new = make(model_dir, max_num_seqs=3), 16
    before = ids_of(engine.generate(PROMPTS, greedy(max_new)))
    model, state = perturbed_state_dict(model_dir, seed=4)
    engine.update_weights(state.items())
    after = ids_of(engine.generate(PROMPTS, greedy(max_new)))
    assert after != before
    assert after == hf_generate(model, PROMPTS, max_new, eos_ids(model_dir), pad_id(model_dir))


def test_release_resume_kv_cache_then_generate(tiny_qwen_dir):
    engine = make(tiny_qwen_dir, max_num_seqs=4, max_model_len=100)
    params = SamplingParams(max_new_tokens=12, n=2, seed=1)
    before, sampled = engine.generate(PROMPTS, greedy(12)), engine.generate(PROMPTS, params)
    shape = engine.fast.cache_shape
    assert shape == (4, 1, 128, 32)  # (slots, kv_heads, max_model_len rounded up to 64, head_dim)
    engine.release(("kv_cache",))
    assert engine.fast.cache_shape is None
    engine.resume(("kv_cache",))
    assert engine.fast.cache_shape == shape
    assert ids_of(engine.generate(PROMPTS, greedy(12))) == ids_of(before)
    assert ids_of(engine.generate(PROMPTS, params)) == ids_of(sampled)
    engine.release()  # weights and cache; HFEngine's rules for weights
    engine.resume()
    engine.update_weights(reference_model(tiny_qwen_dir).state_dict().items())
    after = engine.generate(PROMPTS, greedy(12))
    assert ids_of(after) == ids_of(before)
    for a, b in zip(after, before):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-6)


def _storages(model) -> dict[int, int]:
    """data_ptr of each distinct parameter storage → its size in bytes."""
    return {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()}


def test_packed_projections_keep_one_copy_of_the_weights(model_dir):
    """q/k/v and gate/up become views of one buffer each: no byte more than the parameters themselves, pushed
    weights land in the buffers, release drops them, and the next generate after a resume packs again."""
    engine = make(model_dir, max_num_seqs=4)
    model, net = engine.model, engine.fast.net
    layer = model.model.layers[0]
    a, m = layer.self_attn, layer.mlp
    assert net.packed()
    for param in (m.up_proj.weight, a.k_proj.bias):  # a parameter given other storage is noticed
        if param is not None:
            kept = param.data
            param.data = kept.clone()
            assert not net.packed()
            param.data = kept
    assert net.packed()
    storages = _storages(model)
    assert a.q_proj.weight.untyped_storage().data_ptr() == a.v_proj.weight.untyped_storage().data_ptr()
    assert m.gate_proj.weight.untyped_storage().data_ptr() == m.up_proj.weight.untyped_storage().data_ptr()
    unique_bytes = sum({p.data_ptr(): p.numel() * p.element_size() for p in model.parameters()}.values())
    assert sum(storages.values()) == unique_bytes  # every stored byte belongs to exactly one parameter
    shared = 3 + 2 * (a.q_proj.bias is not None)  # per layer: k, v, up (and the k, v biases) join another storage
    assert len(storages) == len(dict(model.named_parameters())) - shared * len(model.model.layers)
    _, state = perturbed_state_dict(model_dir, seed=6)
    engine.update_weights(state.items())
    assert torch.equal(net._packed[0][0][0][:a.q_proj.weight.shape[0]], state["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(net._packed[0][1][0][m.gate_proj.weight.shape[0]:], state["model.layers.0.mlp.up_proj.weight"])
    expected = ids_of(engine.generate(PROMPTS, greedy(8)))
    engine.release()
    assert net._packed == [] and not net.packed()
    engine.resume()
    engine.update_weights(state.items())
    assert not net.packed()  # fresh storage per parameter until the next generate
    assert ids_of(engine.generate(PROMPTS, greedy(8))) == expected
    assert net.packed() and len(_storages(model)) == len(storages)


def test_cache_grows_to_the_longest_request_when_max_model_len_is_unset(tiny_model_dir):
    engine = make(tiny_model_dir, max_num_seqs=2)
    engine.generate(PROMPTS[:2], greedy(4))
    assert engine.fast.cache_shape == (2, 1, 64, 32)
    long_prompt = PROMPTS[4] * 3  # 90 tokens
    out = engine.generate([long_prompt, PROMPTS[0]], greedy(20))
    assert engine.fast.cache_shape == (2, 1, 128, 32)
    expected = hf_generate(reference_model(tiny_model_dir), [long_prompt, PROMPTS[0]], 20, eos_ids(tiny_model_dir),
                           pad_id(tiny_model_dir))
    assert ids_of(out) == expected


def test_tied_embeddings(tiny_model_dir):
    engine = make(tiny_model_dir, load_format="dummy", override_config={"tie_word_embeddings": True})
    assert engine.model.get_output_embeddings().weight is engine.model.get_input_embeddings().weight
    state = {k: v for k, v in reference_model(tiny_model_dir).state_dict().items() if k != "lm_head.weight"}
    engine.update_weights(state.items())
    ref = reference_model(tiny_model_dir)
    ref.lm_head.weight = ref.model.embed_tokens.weight
    out = engine.generate(PROMPTS, greedy(10))
    assert ids_of(out) == hf_generate(ref, PROMPTS, 10, eos_ids(tiny_model_dir), pad_id(tiny_model_dir))


# ---- models the fast path cannot run ---------------------------------------------------------------------------


def test_unsupported_model_is_an_error_with_on_and_the_plain_loop_with_auto(tiny_model_dir, monkeypatch):
    """What the full check on the loaded model decides (config.json's model_type said llama, so start_engine
    chose this engine): fast=on refuses, fast=auto decodes with HFEngine's loop and says why."""
    monkeypatch.setattr(engine_module, "unsupported_reason", lambda model: "rope_type 'dynamic'")
    with pytest.raises(ValueError, match=r"engine_kwargs\.hf\.fast=on.*rope_type 'dynamic'"):
        make(tiny_model_dir, fast="on")
    engine = make(tiny_model_dir, fast="auto", max_num_seqs=3)
    assert engine.fast is None and engine.unsupported == "rope_type 'dynamic'"
    plain = HFEngine(EngineSpec(model_path=tiny_model_dir, dtype="float32", max_num_seqs=3))
    params = SamplingParams(max_new_tokens=10, n=2, seed=3)
    expected, out = plain.generate(PROMPTS, params), engine.generate(PROMPTS, params)
    assert ids_of(out) == ids_of(expected) and [c.logprobs for c in out] == [c.logprobs for c in expected]
    engine.release()
    engine.resume()  # HFEngine's rules: generate waits for the weights
    with pytest.raises(RuntimeError, match="weights were released"):
        engine.generate(PROMPTS, params)


def test_unsupported_architectures_are_named():
    assert "gpt2" in unsupported_reason(SimpleNamespace(config=SimpleNamespace(model_type="gpt2")))


# ---- the CUDA-graph bookkeeping, with a stand-in graph ------------------------------------------------------------


class ReplayedGraph:
    """Stands in for a CUDA graph on CPU: a capture runs fn once (as the real warm-up does, advancing the idle
    slots' state) and every replay runs it again with the same frozen (bucket, span, sampler kind)."""

    def __init__(self, fn):
        self.fn = fn
        fn()

    def replay(self):
        self.fn()


def test_graph_keys_spans_and_recapture_with_a_stand_in_graph(tiny_qwen_dir, monkeypatch):
    cap = dict(max_model_len=600, max_num_seqs=5)  # max_len 640: spans 256, 512, 640; buckets 1, 2, 4, 5
    long_prompts = PROMPTS + [PROMPTS[4] * 9]  # one 270-token prompt crosses the 256 span
    params = [greedy(24), SamplingParams(max_new_tokens=24, n=2, seed=2, top_k=30), greedy(300, ignore_eos=True)]
    eager = make(tiny_qwen_dir, **cap)
    graphed = make(tiny_qwen_dir, **cap)
    graphed.fast.use_graphs = True
    monkeypatch.setattr(graphed.fast, "_capture", lambda rt, fn: ReplayedGraph(fn))

    def same(p):
        expected, out = eager.generate(long_prompts, p), graphed.generate(long_prompts, p)
        assert ids_of(out) == ids_of(expected)
        for a, b in zip(out, expected):
            assert a.finish_reason == b.finish_reason and a.logprobs == pytest.approx(b.logprobs, abs=1e-5)

    for p in params:  # captures happen mid-generate, when a step first needs a shape
        same(p)
    graphs = graphed.fast._rt.graphs
    assert {k[2] for k in graphs if k[0] == "model"} == {256, 512, 640}
    assert {k[1] for k in graphs} <= {1, 2, 4, 5} and len(graphs) == graphed.fast.stats["captures"]
    assert {k[2] for k in graphs if k[0] == "sample"} == {SamplerKind(greedy=True), SamplerKind(top_k=30)}
    captures = graphed.fast.stats["captures"]
    same(params[0])
    assert graphed.fast.stats["captures"] == captures, "shapes seen before are replayed, not captured again"
    model, state = perturbed_state_dict(tiny_qwen_dir, seed=6)
    for engine in (eager, graphed):
        engine.update_weights(state.items())
    same(params[0])
    assert graphed.fast.stats["captures"] == captures, "update_weights copies in place: no re-capture"
    graphed.release(("kv_cache",))
    graphed.resume(("kv_cache",))
    same(params[0])
    assert graphed.fast.stats["captures"] > captures, "a new cache: captured again"
    captures = graphed.fast.stats["captures"]
    graphed.release(("weights",))
    graphed.resume(("weights",))
    graphed.update_weights(state.items())
    same(params[0])
    assert graphed.fast.stats["captures"] > captures, "parameters moved: captured again"


def test_a_failed_capture_falls_back_to_eager(tiny_model_dir, monkeypatch):
    engine = make(tiny_model_dir, max_num_seqs=4)
    expected = ids_of(engine.generate(PROMPTS, greedy(10)))
    engine.fast.use_graphs = True

    def fail(rt, fn):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(engine.fast, "_capture", fail)
    assert ids_of(engine.generate(PROMPTS, greedy(10))) == expected
    assert not engine.fast.use_graphs and "not permitted" in engine.fast.stats["graph_error"]


@pytest.mark.slow
def test_compiled_decode_matches_eager(tiny_qwen_dir):
    # dynamo traces the same functions on every device (in-place residual, the sampler kind); inductor's CPU code
    # stands in for its GPU code here
    eager = make(tiny_qwen_dir, max_num_seqs=4)
    compiled = make(tiny_qwen_dir, max_num_seqs=4, engine_kwargs={"fast_compile": True})
    for p in (greedy(12), SamplingParams(max_new_tokens=12, n=2, seed=4, top_p=0.9)):
        expected, out = eager.generate(PROMPTS, p), compiled.generate(PROMPTS, p)
        assert ids_of(out) == ids_of(expected)
        for a, b in zip(out, expected):
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
