"""hf-engine details the shared conformance suite does not pin: the sampler's filters, chunking, max_model_len,
memory really returned by release, tied embeddings and update_weights errors.

    pytest tests/integration/test_hf_engine.py -q
"""

import pytest
import torch

from engine_conformance import PROMPTS, greedy, ids_of, reference_model
from strive.engines.base import EngineSpec, SamplingParams
from strive.engines.hf import HFEngine, sample


def make(model_dir, **overrides) -> HFEngine:
    return HFEngine(EngineSpec(**{"model_path": model_dir, "dtype": "float32", **overrides}))


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return make(tiny_model_dir)


@pytest.mark.parametrize("filters", [dict(top_k=1), dict(top_p=1e-6), dict(top_k=1, top_p=0.5)])
def test_degenerate_filters_equal_greedy(engine, filters):
    expected = engine.generate(PROMPTS, greedy(10))
    out = engine.generate(PROMPTS, SamplingParams(max_new_tokens=10, temperature=1.0, n=2, seed=0, **filters))
    assert ids_of(out) == [ids for ids in ids_of(expected) for _ in range(2)]
    for c, e in zip(out, [e for e in expected for _ in range(2)]):  # T = 1: the same log-probs, not renormalised
        assert c.logprobs == pytest.approx(e.logprobs, abs=1e-6)


def test_sampler_keeps_the_nucleus_and_reports_unfiltered_logprobs():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])  # (1, V)
    logits = probs.log().repeat(2000, 1)  # (N, V)
    gen = torch.Generator().manual_seed(0)
    for top_p, kept in [(0.5, {0}), (0.7, {0, 1}), (0.8, {0, 1}), (0.81, {0, 1, 2}), (1.0, {0, 1, 2, 3})]:
        token, logprob = sample(logits, SamplingParams(max_new_tokens=1, top_p=top_p), gen)
        assert set(token.tolist()) == kept
        assert torch.allclose(logprob, probs[0].log()[token])
    token, logprob = sample(logits, SamplingParams(max_new_tokens=1, top_k=2, temperature=0.5), gen)
    assert set(token.tolist()) == {0, 1}
    assert torch.allclose(logprob, torch.log_softmax(probs.log()[0] / 0.5, -1)[token])
    share = (token == 0).float().mean()  # renormalised among the top 2 at T = 0.5: 0.25 / (0.25 + 0.09)
    assert abs(share - 0.25 / 0.34) < 0.05


def test_chunking_by_max_num_seqs_matches_one_chunk(tiny_model_dir, engine):
    whole = engine.generate(PROMPTS, greedy(10, n=3))
    chunked = make(tiny_model_dir, max_num_seqs=2).generate(PROMPTS, greedy(10, n=3))
    assert ids_of(chunked) == ids_of(whole)
    for a, b in zip(chunked, whole):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
        assert a.finish_reason == b.finish_reason


def test_a_prompt_is_prefilled_once_for_its_n_samples(tiny_model_dir, engine, monkeypatch):
    """Sampled with a seed, n=3 gives the rows it gave when each prompt was its own prefill, and the model's first
    call (the prefill) sees one row per prompt, not per sample."""
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=5)
    expanded = [p for p in PROMPTS for _ in range(3)]  # the same rows, prefilled one by one
    one_each = engine.generate(expanded, SamplingParams(max_new_tokens=8, temperature=1.0, n=1, seed=5))
    batches = []
    real = engine.model.forward
    monkeypatch.setattr(engine.model, "forward", lambda *a, **k: batches.append(k["input_ids"].shape) or real(*a, **k))
    shared = engine.generate(PROMPTS, params)
    assert batches[0] == (len(PROMPTS), max(len(p) for p in PROMPTS)) and batches[1][0] == 3 * len(PROMPTS)
    assert ids_of(shared) == ids_of(one_each)
    for a, b in zip(shared, one_each):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


def test_max_model_len_caps_each_prompt(tiny_model_dir, engine):
    capped = make(tiny_model_dir, max_model_len=len(PROMPTS[1]) + 3)  # prompt lengths 3, 7, 12
    out = capped.generate(PROMPTS, greedy(10, ignore_eos=True))
    assert [len(c.token_ids) for c in out] == [7, 3, 0]
    assert all(c.finish_reason == "length" for c in out)
    assert out[1].token_ids == engine.generate([PROMPTS[1]], greedy(3, ignore_eos=True))[0].token_ids
    assert engine.generate([], greedy()) == []


def test_release_frees_parameter_storage(tiny_model_dir):
    eng = make(tiny_model_dir)
    full = sum(p.untyped_storage().nbytes() for p in eng.model.parameters())
    assert full > 0
    eng.release(("weights",))
    assert all(p.untyped_storage().nbytes() == 0 for p in eng.model.parameters())
    with pytest.raises(RuntimeError, match="weights were released; call update_weights after resume"):
        eng.generate(PROMPTS, greedy())
    with pytest.raises(RuntimeError, match="resume"):
        eng.update_weights(reference_model(tiny_model_dir).state_dict().items())
    eng.resume(("weights",))
    assert sum(p.untyped_storage().nbytes() for p in eng.model.parameters()) == full
    state = reference_model(tiny_model_dir).state_dict()
    eng.update_weights(list(state.items())[:-1])  # one parameter still missing
    with pytest.raises(RuntimeError, match="update_weights"):
        eng.generate(PROMPTS, greedy())
    eng.update_weights(state.items())
    assert ids_of(eng.generate(PROMPTS, greedy())) == ids_of(make(tiny_model_dir).generate(PROMPTS, greedy()))


def test_tied_embeddings_survive_release_and_sync(tiny_model_dir):
    # the checkpoint's lm_head differs from its embedding, so only an architecture-only load ties them
    eng = make(tiny_model_dir, load_format="dummy", override_config={"tie_word_embeddings": True})
    emb = eng.model.get_input_embeddings().weight
    assert eng.model.get_output_embeddings().weight is emb
    eng.release()
    eng.resume()
    new = torch.randn(emb.shape)
    eng.update_weights([(name, new if "embed_tokens" in name or "lm_head" in name else t)
                        for name, t in eng.model.state_dict().items()])
    assert eng.model.get_output_embeddings().weight is eng.model.get_input_embeddings().weight
    assert torch.equal(eng.model.lm_head.weight, new)
    eng.generate(PROMPTS, greedy(2))


def test_update_weights_errors_and_metrics(tiny_model_dir):
    eng = make(tiny_model_dir, dtype="bfloat16")
    state = reference_model(tiny_model_dir).state_dict()  # float32: cast on the way in
    eng.update_weights(state.items())
    assert eng.last_sync["tensors"] == len(state)
    assert eng.last_sync["bytes"] == sum(t.numel() * 4 for t in state.values())
    assert eng.last_sync["seconds"] >= 0
    assert eng.model.lm_head.weight.dtype == torch.bfloat16
    assert torch.equal(eng.model.lm_head.weight, state["lm_head.weight"].bfloat16())
    with pytest.raises(KeyError, match="model.nonexistent.weight"):
        eng.update_weights([("model.nonexistent.weight", torch.zeros(1))])
    with pytest.raises(ValueError, match="lm_head.weight"):
        eng.update_weights([("lm_head.weight", torch.zeros(3, 3))])
    out = eng.generate(PROMPTS, SamplingParams(max_new_tokens=4, seed=0))
    assert [len(c.token_ids) for c in out] == [4, 4, 4]
