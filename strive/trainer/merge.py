"""`strive merge CHECKPOINT_DIR --target_dir OUT`: an actor (or critic) checkpoint → a Hugging Face model.

Reads the per-rank shards (`model_world_size_W_rank_R.pt`), concatenates each parameter's dim-0 shards in rank
order (FSDP2's layout), and saves the result with the config and tokenizer from `huggingface/`. CHECKPOINT_DIR
may be a `global_step_N` directory (its actor is merged) or a role directory. verl's spelling
`--local_dir DIR` is accepted too.

A LoRA checkpoint (its shards hold the adapter, `lora_adapter/` its PEFT config) is written either as the merged
Hugging Face model (`--lora merged`, the default: loads with AutoModelForCausalLM.from_pretrained) or as the PEFT
adapter alone (`--lora adapter`: loads with PeftModel.from_pretrained on the base model). The base model is the
one the run trained on (recorded in the adapter config) unless `--base_model` names another copy of it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys

import torch


def role_dir(path: str) -> str:
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(os.path.join(path, "fsdp_config.json")):
        return path
    if os.path.exists(os.path.join(path, "actor", "fsdp_config.json")):
        return os.path.join(path, "actor")
    raise FileNotFoundError(f"{path} holds no strive/verl FSDP checkpoint (no fsdp_config.json here or in actor/)")


def merged_state_dict(path: str) -> dict[str, torch.Tensor]:
    with open(os.path.join(path, "fsdp_config.json")) as fh:
        world = json.load(fh)["world_size"]
    files = sorted(glob.glob(os.path.join(path, f"model_world_size_{world}_rank_*.pt")),
                   key=lambda f: int(re.search(r"rank_(\d+)\.pt$", f).group(1)))
    if len(files) != world:
        raise FileNotFoundError(f"{path}: expected {world} model shards, found {len(files)}")
    shards = [torch.load(f, map_location="cpu", weights_only=True) for f in files]
    return {name: torch.cat([s[name] for s in shards], dim=0) for name in shards[0]}


def merge(checkpoint: str, target_dir: str, dtype: str | None = None, lora: str = "merged",
          base_model: str | None = None) -> str:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification

    path = role_dir(checkpoint)
    hf_dir = os.path.join(path, "huggingface")
    state = merged_state_dict(path)
    if os.path.isfile(os.path.join(path, "lora_adapter", "adapter_config.json")):
        return _merge_lora(path, state, target_dir, dtype, lora, base_model)
    if lora == "adapter":
        raise ValueError(f"--lora adapter: {path} is not a LoRA checkpoint (no lora_adapter/adapter_config.json)")
    config = AutoConfig.from_pretrained(hf_dir)
    is_value = any(k.startswith(("score.", "classifier.")) for k in state)
    cls = AutoModelForTokenClassification if is_value else AutoModelForCausalLM
    with torch.device("meta"):
        model = cls.from_config(config)
    model.load_state_dict(state, strict=False, assign=True)
    if getattr(config, "tie_word_embeddings", False) and hasattr(model, "tie_weights"):
        model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"merged checkpoint lacks parameters: {missing[:5]}")
    if dtype:
        model = model.to(getattr(torch, dtype))
    os.makedirs(target_dir, exist_ok=True)
    model.save_pretrained(target_dir, safe_serialization=True)
    _copy_meta(hf_dir, target_dir)
    return target_dir


def _copy_meta(hf_dir: str, target_dir: str) -> None:
    """Tokenizer and generation config from the checkpoint's huggingface/ folder."""
    from strive.models.loading import auto_tokenizer

    if os.path.exists(os.path.join(hf_dir, "tokenizer_config.json")):
        auto_tokenizer(hf_dir).save_pretrained(target_dir)
    gen = os.path.join(hf_dir, "generation_config.json")
    if os.path.exists(gen):
        with open(gen) as src, open(os.path.join(target_dir, "generation_config.json"), "w") as dst:
            dst.write(src.read())


def _merge_lora(path: str, state: dict[str, torch.Tensor], target_dir: str, dtype: str | None, lora: str,
                base_model: str | None) -> str:
    """The base model with the checkpoint's adapter loaded through PEFT, saved as the adapter or merged."""
    from transformers import AutoModelForCausalLM

    from strive.models.lora import ADAPTER_DIR, import_peft
    from strive.models.loading import resolve_model_path

    peft = import_peft()
    config = peft.LoraConfig.from_pretrained(os.path.join(path, ADAPTER_DIR))
    base_path = base_model or config.base_model_name_or_path
    if not base_path or not os.path.isdir(os.path.expanduser(base_path)):
        raise FileNotFoundError(f"{path}: the LoRA base model {base_path!r} is not a local directory; name a copy of "
                                "it with --base_model")
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(base_path), dtype=torch.float32, trust_remote_code=False)
    wrapped = peft.get_peft_model(base, config)
    inner = wrapped.get_base_model()
    adapter_names = {n for n, p in inner.named_parameters() if ".lora_" in n}
    if set(state) != adapter_names:
        missing, unexpected = sorted(adapter_names - set(state))[:3], sorted(set(state) - adapter_names)[:3]
        raise RuntimeError(f"{path}: the adapter shards do not match lora_adapter/adapter_config.json (missing "
                           f"{missing}, unexpected {unexpected})")
    inner.load_state_dict(state, strict=False)
    os.makedirs(target_dir, exist_ok=True)
    if lora == "adapter":
        wrapped.save_pretrained(target_dir)
    else:
        merged = wrapped.merge_and_unload()
        if dtype:
            merged = merged.to(getattr(torch, dtype))
        merged.save_pretrained(target_dir, safe_serialization=True)
    _copy_meta(os.path.join(path, "huggingface"), target_dir)
    return target_dir


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "merge":  # verl's `model_merger merge ...`
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="strive merge", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", nargs="?", help="global_step_N or its actor/critic directory")
    parser.add_argument("--local_dir", default=None, help="same as CHECKPOINT (verl's spelling)")
    parser.add_argument("--target_dir", required=True)
    parser.add_argument("--backend", default="fsdp", choices=["fsdp"])
    parser.add_argument("--dtype", default=None, choices=[None, "bfloat16", "float16", "float32"])
    parser.add_argument("--lora", default="merged", choices=["merged", "adapter"],
                        help="a LoRA checkpoint as the merged HF model (default) or as the PEFT adapter alone")
    parser.add_argument("--base_model", default=None, help="LoRA: the base model's directory, if not where the run "
                        "read it")
    args = parser.parse_args(argv)
    source = args.checkpoint or args.local_dir
    if not source:
        parser.error("give CHECKPOINT_DIR or --local_dir")
    out = merge(source, args.target_dir, args.dtype, args.lora, args.base_model)
    print(f"[strive] merged {role_dir(source)} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
