"""load_tokenizer keeps a saved tokenizer.json as it is, whatever architecture config.json names; random models
with real shapes take vocabulary and depth overrides."""

import json

from strive.models.loading import load_tokenizer
from strive.models.tiny import build_word_tokenizer


def test_word_tokenizer_beside_a_qwen2_config_keeps_its_pre_tokenizer(tmp_path):
    # transformers 5 would pick Qwen2Tokenizer from model_type and split "t5" into pieces the vocab lacks
    build_word_tokenizer(1000).save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "vocab_size": 1000}))
    tok = load_tokenizer(str(tmp_path))
    text = tok.apply_chat_template([{"role": "user", "content": "t5 t6 t7 t8"}], add_generation_prompt=True,
                                   tokenize=False)
    ids = tok.encode(text, add_special_tokens=False)
    assert [5, 6, 7, 8] == [i for i in ids if 5 <= i <= 8]
    assert tok.decode([5, 6, 7]) == "t5 t6 t7"
    assert tok.pad_token_id is not None


def test_random_model_with_a_real_shape_takes_vocab_and_layer_overrides(tmp_path):
    from transformers import AutoConfig

    from strive.models.tiny import make_random_model

    out = make_random_model(str(tmp_path / "m"), "qwen2.5-0.5b", vocab_size=512, layers=1, dtype="float32")
    config = AutoConfig.from_pretrained(out)
    assert (config.vocab_size, config.num_hidden_layers, config.hidden_size) == (512, 1, 896)
    assert len(load_tokenizer(out)) == 512
    # another override rebuilds instead of reusing the directory
    make_random_model(out, "qwen2.5-0.5b", vocab_size=256, layers=1, dtype="float32")
    assert AutoConfig.from_pretrained(out).vocab_size == 256


def test_external_lib_is_imported_once_and_a_bad_name_is_named(tmp_path, monkeypatch):
    import sys

    import pytest

    from strive.models.loading import import_external_libs

    (tmp_path / "my_arch_registry.py").write_text("import builtins\nbuiltins._strive_ext_count = "
                                                  "getattr(builtins, '_strive_ext_count', 0) + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import_external_libs("my_arch_registry", None, "my_arch_registry")
    import builtins

    assert builtins._strive_ext_count == 1 and "my_arch_registry" in sys.modules
    del builtins._strive_ext_count
    with pytest.raises(ImportError, match="model.external_lib=no_such_mod_xyz: cannot import it"):
        import_external_libs("no_such_mod_xyz")


def test_activation_offload_saves_on_cpu_only_for_cuda():
    import contextlib

    import torch

    from strive.workers.fsdp import activation_offload

    assert isinstance(activation_offload(True, torch.device("cuda", 0)), torch.autograd.graph.save_on_cpu)
    assert isinstance(activation_offload(True, torch.device("cpu")), contextlib.nullcontext)
    assert isinstance(activation_offload(False, torch.device("cuda", 0)), contextlib.nullcontext)
