"""A tiny, randomly initialised chat model with a real tokenizer, built offline in a second.

Tests and CPU examples need a model without a model hub. This writes an ordinary Hugging Face directory
(config, safetensors, tokenizer with a ChatML chat template) that every loader in strive reads like any other
checkpoint: byte-level tokenizer (256 byte tokens + specials), Llama or Qwen2 architecture, head_dim 32 (the
smallest vLLM's CPU backend accepts).

    python -m strive.models.tiny /tmp/tiny-llama [--arch qwen2]
"""

from __future__ import annotations

import argparse
import json
import os

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _is_built(out_dir: str, spec: dict) -> bool:
    marker = os.path.join(out_dir, "strive_tiny.json")
    if not os.path.exists(marker):
        return False
    with open(marker) as fh:
        return json.load(fh) == spec


def _mark_built(out_dir: str, spec: dict) -> None:
    with open(os.path.join(out_dir, "strive_tiny.json"), "w") as fh:
        json.dump(spec, fh)


def build_tokenizer():
    """Byte-level BPE with no merges: every byte is one token, so any text round-trips."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for tok in SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token=None, unk_token=None, additional_special_tokens=SPECIAL_TOKENS[1:2])
    tok.chat_template = CHATML_TEMPLATE
    return tok


def build_config(arch: str = "llama", vocab_size: int = 259, layers: int = 2, hidden: int = 64, seed: int = 0):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                  num_attention_heads=hidden // 32, num_key_value_heads=1, head_dim=32,
                  max_position_embeddings=2048, bos_token_id=None, eos_token_id=vocab_size - 1,
                  pad_token_id=vocab_size - 3, tie_word_embeddings=False, dtype="float32")
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    raise ValueError(f"unknown tiny architecture {arch!r}: llama or qwen2")


def make_tiny_model(out_dir: str, arch: str = "llama", seed: int = 0, layers: int = 2, hidden: int = 64) -> str:
    """Write a tiny random model + tokenizer to out_dir (idempotent: an existing complete directory is reused)."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = {"arch": arch, "seed": seed, "layers": layers, "hidden": hidden}
    if _is_built(out_dir, spec):
        return out_dir
    tok = build_tokenizer()
    config = build_config(arch, vocab_size=len(tok), layers=layers, hidden=hidden)
    config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    config.pad_token_id = tok.pad_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    _mark_built(out_dir, spec)
    return out_dir


def make_tiny_reward_model(out_dir: str, tokenizer_dir: str, seed: int = 0, layers: int = 2, hidden: int = 64) -> str:
    """A tiny random LlamaForSequenceClassification (num_labels=1, a reward model) with the tokenizer of
    `tokenizer_dir` (e.g. SmolLM2's, so it differs from the tiny policy's byte tokenizer), written to out_dir."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    spec = {"arch": "llama-rm", "seed": seed, "layers": layers, "hidden": hidden, "tokenizer": tokenizer_dir}
    if _is_built(out_dir, spec):
        return out_dir
    tok = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False)
    config = build_config("llama", vocab_size=len(tok), layers=layers, hidden=hidden)
    config.num_labels = 1
    config.eos_token_id, config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # a visible spread of scores (the default init makes them all about 0)
        model.score.weight.normal_(0.0, 1.0)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    _mark_built(out_dir, spec)
    return out_dir


# Real shapes for GPU runs without real weights (GPU.md): random weights, the published architecture.
SHAPES = {
    "qwen2.5-0.5b": dict(arch="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(arch="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2-7b": dict(arch="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                     num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
}


def build_word_tokenizer(vocab_size: int):
    """One word per id ("t0", "t1", ...), the last three ids ChatML's specials: every id decodes and re-encodes."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size - len(SPECIAL_TOKENS))}
    for tok in SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  unk_token="t0", additional_special_tokens=SPECIAL_TOKENS[1:2])
    tok.chat_template = CHATML_TEMPLATE.replace("'\\n'", "' '").replace("\n", " ")
    return tok


def make_random_model(out_dir: str, shape: str, seed: int = 0, dtype: str = "bfloat16",
                      vocab_size: int | None = None, layers: int | None = None) -> str:
    """A randomly initialised model with a real architecture's shapes, plus a word tokenizer of its vocab size.
    vocab_size / layers override the shape's (a small vocabulary lets a short RL run reach every token)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    spec = {"shape": shape, "seed": seed, "dtype": dtype, "vocab_size": vocab_size, "layers": layers}
    if _is_built(out_dir, spec):
        return out_dir
    params = dict(SHAPES[shape])
    arch = params.pop("arch")
    params["vocab_size"] = vocab_size or params["vocab_size"]
    params["num_hidden_layers"] = layers or params["num_hidden_layers"]
    tok = build_word_tokenizer(params["vocab_size"])
    cls = Qwen2Config if arch == "qwen2" else LlamaConfig
    config = cls(**params, max_position_embeddings=4096, rope_theta=1e6, eos_token_id=tok.eos_token_id,
                 pad_token_id=tok.pad_token_id, bos_token_id=None, dtype=dtype)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    _mark_built(out_dir, spec)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a tiny random chat model for tests and CPU examples.")
    parser.add_argument("out_dir")
    parser.add_argument("--arch", default="llama", choices=["llama", "qwen2"])
    parser.add_argument("--shape", default=None, choices=sorted(SHAPES), help="a real shape, random weights")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.shape:
        print(make_random_model(args.out_dir, args.shape, args.seed))
    else:
        print(make_tiny_model(args.out_dir, args.arch, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
