"""What every rollout engine must do, as plain functions that any engine's test can call.

Each `check_*(make_engine, model_dir)` takes `make_engine(**spec_overrides) -> RolloutEngine` (an EngineSpec for
`model_dir` in float32 on the test's device, fields overridden by keyword) and the directory of a tiny model. The
reference is always a plain transformers forward of the same weights, without cache or padding: the thing the
trainer computes. `test_engine_conformance.py` runs every check against every engine installed.
"""

from __future__ import annotations

import pytest
import torch

from strive.engines.base import EngineSpec, SamplingParams
from strive.models.loading import load_causal_lm

PROMPTS = [[72, 101, 108], [1, 17, 33, 49, 65, 81, 97], [200, 150, 100, 50, 25, 12, 6, 3, 2, 1, 0, 255]]
"""Three prompts of different lengths (ids are bytes of the tiny byte-level tokenizer)."""


def eos_ids(model_dir: str) -> list[int]:
    return EngineSpec(model_path=model_dir).with_token_ids().eos_token_ids


def reference_model(model_dir: str):
    return load_causal_lm(model_dir, dtype="float32").eval()


@torch.inference_mode()
def reference_greedy(model, prompt: list[int], max_new_tokens: int, stop_ids: list[int]) -> list[int]:
    """Argmax over a full forward of the growing sequence: no cache, no padding."""
    seq = list(prompt)
    for _ in range(max_new_tokens):
        token = int(model(torch.tensor([seq])).logits[0, -1].argmax())
        seq.append(token)
        if token in stop_ids:
            break
    return seq[len(prompt):]


@torch.inference_mode()
def reference_logprobs(model, prompt: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    """log_softmax(logits / T) of each completion token, teacher-forced: what the trainer recomputes."""
    ids = torch.tensor([prompt + completion])  # (1, P + S)
    logits = model(ids).logits[0, len(prompt) - 1:-1].float() / temperature  # (S, V)
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None])[:, 0]  # (S,)


def greedy(max_new_tokens: int = 8, **kw) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new_tokens, do_sample=False, **kw)


def perturbed_state_dict(model_dir: str, seed: int = 1, scale: float = 0.05) -> tuple[object, dict]:
    """A reference model whose every weight got Gaussian noise, and its state_dict."""
    model = reference_model(model_dir)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model, model.state_dict()


def ids_of(completions) -> list[list[int]]:
    return [c.token_ids for c in completions]


# ---- checks ---------------------------------------------------------------------------------------------------


def check_lora_merged_weights_served(make_engine, model_dir):
    """A LoRA-trained policy reaches the engine as merged weights under the original names (what the actor's sync
    sends: strive/models/lora.py merged_parameters); the engine's log-probs then equal the PEFT model's own, adapter
    on and unmerged."""
    peft = pytest.importorskip("peft")
    from strive.models.lora import merged_parameters

    model = peft.get_peft_model(reference_model(model_dir), peft.LoraConfig(r=4, lora_alpha=8,
                                                                           target_modules="all-linear"))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:  # B starts at zero: give the adapter an effect
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    model.eval()
    engine, temperature = make_engine(load_format="dummy"), 0.7
    engine.update_weights(merged_parameters(model.get_base_model()))
    out = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12, temperature=temperature, seed=4))
    for prompt, c in zip(PROMPTS, out):
        assert c.token_ids
        expected = reference_logprobs(model, prompt, c.token_ids, temperature)
        torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-4, rtol=0)
    with model.disable_adapter():  # the adapter changed the policy: this check can tell merged from base weights
        base = reference_logprobs(model, PROMPTS[2], out[2].token_ids, temperature)
    assert (base - torch.tensor(out[2].logprobs)).abs().max() > 1e-3


def check_shapes_and_n(make_engine, model_dir):
    engine, stops, max_new = make_engine(), set(eos_ids(model_dir)), 8
    out = engine.generate(PROMPTS, SamplingParams(max_new_tokens=max_new, temperature=1.0, n=4, seed=0))
    assert len(out) == 12
    for c in out:
        assert len(c.logprobs) == len(c.token_ids) <= max_new
        assert all(lp <= 0.0 for lp in c.logprobs)
        early = [t for t in c.token_ids[:-1] if t in stops]
        assert not early, "a completion continued past a stop token"
        if c.finish_reason == "length":
            assert len(c.token_ids) == max_new and c.token_ids[-1] not in stops
        else:
            assert c.finish_reason == "stop" and c.token_ids[-1] in stops
    assert len({tuple(c.token_ids) for c in out[:4]}) > 1, "the n samples of one prompt are all identical"
    # prompt-major: with greedy decoding the n copies of prompt i are i's greedy completion
    single = ids_of(engine.generate(PROMPTS, greedy()))
    repeated = ids_of(engine.generate(PROMPTS, greedy(n=3)))
    assert repeated == [ids for ids in single for _ in range(3)]


def check_stop_and_ignore_eos(make_engine, model_dir):
    engine, max_new = make_engine(), 8
    base = engine.generate(PROMPTS, greedy(max_new))
    row = next(i for i, c in enumerate(base) if len(c.token_ids) >= 3)
    stop = base[row].token_ids[2]
    expected = base[row].token_ids[:base[row].token_ids.index(stop) + 1]
    out = engine.generate(PROMPTS, greedy(max_new, stop_token_ids=[stop]))
    assert out[row].token_ids == expected and out[row].finish_reason == "stop"
    assert len(out[row].logprobs) == len(expected)
    # the same token as the engine's EOS id ends it the same way
    as_eos = make_engine(eos_token_ids=[stop]).generate(PROMPTS, greedy(max_new))
    assert as_eos[row].token_ids == expected and as_eos[row].finish_reason == "stop"
    # ignore_eos: only max_new_tokens ends a completion, stop_token_ids included
    for params in (greedy(max_new, ignore_eos=True, stop_token_ids=[stop]),
                   SamplingParams(max_new_tokens=max_new, n=2, seed=3, ignore_eos=True, stop_token_ids=[stop])):
        for c in make_engine(eos_token_ids=[stop]).generate(PROMPTS, params):
            assert len(c.token_ids) == len(c.logprobs) == max_new and c.finish_reason == "length"


def check_greedy_matches_reference(make_engine, model_dir):
    engine, max_new = make_engine(), 10
    first = engine.generate(PROMPTS, greedy(max_new))
    second = engine.generate(PROMPTS, greedy(max_new))
    assert ids_of(first) == ids_of(second)
    ref, stops = reference_model(model_dir), eos_ids(model_dir)
    assert ids_of(first) == [reference_greedy(ref, p, max_new, stops) for p in PROMPTS]
    for p, c in zip(PROMPTS, first):  # greedy log-probs are log_softmax(logits) at T = 1
        torch.testing.assert_close(torch.tensor(c.logprobs), reference_logprobs(ref, p, c.token_ids, 1.0),
                                   atol=1e-4, rtol=0)


def check_seeded_sampling(make_engine, model_dir):
    params = dict(max_new_tokens=8, temperature=1.0, n=2)
    engine = make_engine()
    a = engine.generate(PROMPTS, SamplingParams(seed=7, **params))
    b = engine.generate(PROMPTS, SamplingParams(seed=7, **params))
    c = make_engine().generate(PROMPTS, SamplingParams(seed=7, **params))
    d = engine.generate(PROMPTS, SamplingParams(seed=8, **params))
    assert ids_of(a) == ids_of(b) == ids_of(c)
    assert [lp for x in a for lp in x.logprobs] == pytest.approx([lp for x in b for lp in x.logprobs])
    assert ids_of(a) != ids_of(d)


def check_update_weights_changes_output(make_engine, model_dir):
    engine, max_new = make_engine(), 10
    before = ids_of(engine.generate(PROMPTS, greedy(max_new)))
    model, state = perturbed_state_dict(model_dir)
    engine.update_weights(state.items())
    after = ids_of(engine.generate(PROMPTS, greedy(max_new)))
    assert after != before
    assert after == [reference_greedy(model, p, max_new, eos_ids(model_dir)) for p in PROMPTS]


def check_logprobs_match_trainer(make_engine, model_dir):
    engine, temperature = make_engine(), 0.7
    model, state = perturbed_state_dict(model_dir, seed=2)
    engine.update_weights(state.items())
    out = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12, temperature=temperature, n=2, seed=5))
    for i, c in enumerate(out):
        assert c.token_ids
        expected = reference_logprobs(model, PROMPTS[i // 2], c.token_ids, temperature)
        torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-4, rtol=0)


def check_release_resume(make_engine, model_dir):
    engine = make_engine()
    before = ids_of(engine.generate(PROMPTS, greedy()))
    engine.release(("weights", "kv_cache"))
    with pytest.raises(RuntimeError):
        engine.generate(PROMPTS, greedy())
    engine.resume(("weights", "kv_cache"))
    with pytest.raises(RuntimeError):
        engine.generate(PROMPTS, greedy())
    engine.update_weights(reference_model(model_dir).state_dict().items())
    engine.flush_cache()
    assert ids_of(engine.generate(PROMPTS, greedy())) == before
    engine.release(("kv_cache",))  # the cache alone: weights stay usable
    engine.resume(("kv_cache",))
    assert ids_of(engine.generate(PROMPTS, greedy())) == before


def check_dummy_load_matches_real(make_engine, model_dir):
    real = ids_of(make_engine().generate(PROMPTS, greedy(10)))
    dummy = make_engine(load_format="dummy")
    dummy.update_weights(reference_model(model_dir).state_dict().items())
    assert ids_of(dummy.generate(PROMPTS, greedy(10))) == real


# ---- request level: the engine behind strive.engines.requests.TurnBatcher, as the agent loops use it ---------


def _serve(engine, requests, base: SamplingParams, abort: tuple[int, ...] = ()):
    """Run `requests` [(key, ids, max_tokens, params or None)] concurrently through a TurnBatcher; the keys in
    `abort` are withdrawn while waiting. Returns {key: completion} for the others."""
    import asyncio

    from strive.engines.requests import TurnBatcher

    async def main():
        batcher = TurnBatcher(engine, base, {k for k, *_ in requests})
        tasks = {k: asyncio.ensure_future(batcher.generate(k, ids, m, p)) for k, ids, m, p in requests}
        await asyncio.sleep(0)
        for k in abort:
            batcher.abort(k)
        done = {k: await t for k, t in tasks.items() if k not in abort}
        assert all(tasks[k].cancelled() for k in abort)
        return done

    return asyncio.run(main())


def check_requests_with_their_own_settings(make_engine, model_dir):
    engine, stops = make_engine(), eos_ids(model_dir)
    ref = reference_model(model_dir)
    hot = SamplingParams(max_new_tokens=1, temperature=0.7)
    out = _serve(engine, [(0, PROMPTS[0], 3, None), (1, PROMPTS[1], 10, None), (2, PROMPTS[2], 6, hot),
                          (3, PROMPTS[2], 5, None)], greedy(99, seed=4))
    for key, prompt, max_new in ((0, PROMPTS[0], 3), (1, PROMPTS[1], 10), (3, PROMPTS[2], 5)):
        assert out[key].token_ids == reference_greedy(ref, prompt, max_new, stops)
        assert len(out[key].logprobs) == len(out[key].token_ids) <= max_new
    sampled = out[2]  # its own temperature: the log-probs are of the T = 0.7 distribution
    assert 0 < len(sampled.token_ids) <= 6
    torch.testing.assert_close(torch.tensor(sampled.logprobs), reference_logprobs(ref, PROMPTS[2],
                                                                                  sampled.token_ids, 0.7),
                               atol=1e-4, rtol=0)


def check_abort_leaves_the_others_served(make_engine, model_dir):
    engine, stops = make_engine(), eos_ids(model_dir)
    out = _serve(engine, [(k, p, 6, None) for k, p in enumerate(PROMPTS)], greedy(6), abort=(1,))
    ref = reference_model(model_dir)
    assert sorted(out) == [0, 2]
    assert [out[k].token_ids for k in (0, 2)] == [reference_greedy(ref, PROMPTS[k], 6, stops) for k in (0, 2)]


def check_continuation_equals_one_long_request(make_engine, model_dir):
    """A second turn sent as prompt + the first turn's ids gives what one long greedy request gives."""
    engine = make_engine()  # ignore_eos below: every turn has its full length
    long = _serve(engine, [(k, p, 12, None) for k, p in enumerate(PROMPTS)], greedy(12, ignore_eos=True))
    first = _serve(engine, [(k, p, 5, None) for k, p in enumerate(PROMPTS)], greedy(12, ignore_eos=True))
    second = _serve(engine, [(k, p + first[k].token_ids, 7, None) for k, p in enumerate(PROMPTS)],
                    greedy(12, ignore_eos=True))
    for k in range(len(PROMPTS)):
        assert first[k].token_ids + second[k].token_ids == long[k].token_ids
        torch.testing.assert_close(torch.tensor(first[k].logprobs + second[k].logprobs),
                                   torch.tensor(long[k].logprobs), atol=1e-4, rtol=0)


def check_partial_rollout_across_a_weight_update(make_engine, model_dir):
    """Partial rollout (strive/workers/partial.py): pieces of 3 tokens, a weight update after the first. The first
    piece keeps the old weights' tokens and log-probs; the rest is what the new weights generate from prompt plus
    that piece, with the new weights' log-probs; each token records its version."""
    from strive.config.placement import PartialSettings
    from strive.workers.partial import Generation, advance

    engine, params, chunk, calls = make_engine(), greedy(10, ignore_eos=True), 3, []

    def generate(prompts, p):
        calls.append(len(prompts))
        return engine.generate(prompts, p)

    settings = PartialSettings("continue", chunk)
    gen = advance(Generation.start(PROMPTS, 1), generate, params, 0, settings, lambda: len(calls) >= 1)
    assert not gen.complete and all(len(t) == chunk for t in gen.tokens) and all(gen.interrupted)
    old = reference_model(model_dir)
    new, state = perturbed_state_dict(model_dir)
    engine.update_weights(state.items())
    advance(gen, generate, params, 1, settings, lambda: False)
    assert gen.complete and calls == [3, 3, 3, 3]  # 3 + 3 + 3 + 1 tokens
    for i, prompt in enumerate(PROMPTS):
        head = reference_greedy(old, prompt, chunk, [])
        tail = reference_greedy(new, prompt + head, 10 - chunk, [])
        assert gen.tokens[i] == head + tail
        expected = torch.cat([reference_logprobs(old, prompt, head, 1.0), reference_logprobs(new, prompt + head, tail, 1.0)])
        torch.testing.assert_close(torch.tensor(gen.logprobs[i]), expected, atol=1e-4, rtol=0)
        assert gen.versions[i] == [0] * chunk + [1] * (10 - chunk)


def check_generate_until_stops_in_place(make_engine, model_dir):
    """An Interruptible engine (base.py), told to stop at its second check: every completion comes back 'abort'
    holding a prefix of what it would have generated (the prompt past max_num_seqs none at all); never told to
    stop, generate_until is generate. Engines that are not Interruptible are called in pieces instead (skip)."""
    from strive.engines.base import Interruptible

    engine, params = make_engine(max_num_seqs=2), greedy(10, ignore_eos=True)
    if not isinstance(engine, Interruptible):
        pytest.skip("not Interruptible: partial rollout calls this engine in pieces")
    whole = engine.generate(PROMPTS, params)
    assert engine.generate_until(PROMPTS, params, lambda: False, 3) == whole
    asked = []
    stopped = engine.generate_until(PROMPTS, params, lambda: asked.append(1) or len(asked) >= 2, 3)
    assert len(asked) == 2 and [c.finish_reason for c in stopped] == ["abort"] * len(PROMPTS)
    assert stopped[-1].token_ids == []  # a third prompt with two sequences at a time never started
    for got, full in zip(stopped[:2], whole[:2]):
        assert 6 <= len(got.token_ids) < 10 and got.token_ids == full.token_ids[:len(got.token_ids)]
        torch.testing.assert_close(torch.tensor(got.logprobs), torch.tensor(full.logprobs[:len(got.logprobs)]),
                                   atol=1e-5, rtol=0)


CHECKS = [check_shapes_and_n, check_stop_and_ignore_eos, check_greedy_matches_reference, check_seeded_sampling,
          check_update_weights_changes_output, check_logprobs_match_trainer, check_release_resume,
          check_dummy_load_matches_real, check_requests_with_their_own_settings,
          check_abort_leaves_the_others_served, check_continuation_equals_one_long_request,
          check_partial_rollout_across_a_weight_update, check_generate_until_stops_in_place]
