"""load_tokenizer keeps a saved tokenizer.json as it is, whatever architecture config.json names."""

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
