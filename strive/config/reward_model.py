"""Start-up checks of the model-scored rewards: the reward model (reward_model.enable) and the LLM judge
(reward_model.judge.*), and how their score meets the rule score (reward_model.combine).

Everything here runs before Ray starts and before any model is loaded, so a wrong path or a checkpoint that is not
a one-output sequence classifier fails in the first second, naming the key. It reads the model's config.json as
JSON (no transformers import: strive.config stays free of heavy imports).
"""

from __future__ import annotations

import json
import os
from typing import Optional

from strive.config.loader import ConfigError
from strive.config.schema import StriveConfig

COMBINE = ("rm", "sum", "by_data_source")
"""reward_model.combine: dispatched on by strive/reward/combine.py."""


def uses_reward_model(cfg: StriveConfig) -> bool:
    return bool(cfg.reward_model.enable)


def uses_judge(cfg: StriveConfig) -> bool:
    return bool(cfg.reward_model.judge.enable)


def model_scored(cfg: StriveConfig) -> bool:
    """A model (reward model or judge) scores at least some responses."""
    return uses_reward_model(cfg) or uses_judge(cfg)


def _local_dir(key: str, path: Optional[str]) -> str:
    """The directory `path` names: a local directory, or a name `strive models` knows (fetched at load time)."""
    if not path:
        raise ConfigError(f"{key} is not set; it must name the model's local directory")
    local = os.path.expanduser(str(path))
    if os.path.isdir(local):
        return local
    from strive.models.fetch import KNOWN_MODELS  # stdlib-only module

    if path in KNOWN_MODELS:
        return ""
    raise ConfigError(f"{key}={path}: not a directory (the model's local directory with config.json and weights; "
                      "hub ids cannot be reached from here: download the model and point the key at the folder, or "
                      "use a name listed by `strive models list`)")


def check_classifier(key: str, folder: str) -> None:
    """The folder holds a sequence-classification checkpoint with one output (num_labels=1)."""
    config_file = os.path.join(folder, "config.json")
    if not os.path.isfile(config_file):
        raise ConfigError(f"{key}={folder}: no config.json in that directory")
    with open(config_file) as fh:
        config = json.load(fh)
    arch = config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in arch):
        raise ConfigError(f"{key}={folder}: its config.json names architectures {arch}; a reward model must be a "
                          "sequence-classification model (e.g. LlamaForSequenceClassification) with num_labels=1")
    labels = config.get("num_labels", len(config.get("id2label") or {}) or 2)
    if labels != 1:
        raise ConfigError(f"{key}={folder}: the classifier has num_labels={labels}; a reward model has one output "
                          "(num_labels=1)")


RM_KEYS = ("reward_model.model.", "reward_model.micro_batch_size", "reward_model.max_length",
           "reward_model.use_dynamic_bsz", "reward_model.forward_max_token_len_per_gpu")
"""Keys only the reward model reads (reward_model.enable=True)."""


def _unused_notes(cfg: StriveConfig, explicit: set[str], notes: list[str]) -> None:
    """A note for each set key that only a disabled scorer would read."""
    unused = []
    if not uses_reward_model(cfg):
        unused += [(k, "reward_model.enable=True") for k in sorted(explicit) if k.startswith(RM_KEYS)]
    if not uses_judge(cfg):
        unused += [(k, "reward_model.judge.enable=True") for k in sorted(explicit)
                   if k.startswith("reward_model.judge.") and k != "reward_model.judge.enable"]
    if not model_scored(cfg):
        unused += [(k, "reward_model.enable or reward_model.judge.enable") for k in sorted(explicit)
                   if k in ("reward_model.combine", "reward_model.data_sources")]
    from strive.config.support import rule_for  # a key with its own support rule gets that rule's note instead

    for key, needs in unused:
        if rule_for(key) is not None:
            continue
        value = cfg
        for name in key.split("."):
            value = getattr(value, name, None) if not isinstance(value, dict) else value.get(name)
        notes.append(f"{key}={value} has no effect in strive: only used with {needs}")


def check_reward_models(cfg: StriveConfig, explicit: set[str], notes: list[str]) -> None:
    """Validate reward_model.* as a whole (the start-up summary's line on it is `describe`)."""
    rm = cfg.reward_model
    if rm.combine not in COMBINE:
        raise ConfigError(f"reward_model.combine={rm.combine}: choose one of {', '.join(COMBINE)}")
    _unused_notes(cfg, explicit, notes)
    if not model_scored(cfg):
        return
    if uses_reward_model(cfg) and uses_judge(cfg):
        raise ConfigError("reward_model.enable=True and reward_model.judge.enable=True: one model scores the "
                          "responses; keep one of them")
    if rm.combine == "by_data_source" and not rm.data_sources:
        raise ConfigError("reward_model.combine=by_data_source needs reward_model.data_sources, the data sources "
                          "the model scores (e.g. reward_model.data_sources=[chat])")
    if rm.combine != "by_data_source" and rm.data_sources:
        notes.append(f"reward_model.data_sources={list(rm.data_sources)} has no effect with "
                     f"reward_model.combine={rm.combine} (only with by_data_source)")
    if uses_reward_model(cfg):
        _check_reward_model(cfg)
    else:
        _check_judge(cfg)
    if not cfg.data.return_raw_chat:  # the prompt's messages, re-rendered for the reward model or quoted to the judge
        cfg.data.return_raw_chat = True
        notes.append("data.return_raw_chat=True: the reward model / judge reads each prompt's chat messages")


def _check_reward_model(cfg: StriveConfig) -> None:
    rm = cfg.reward_model
    folder = _local_dir("reward_model.model.path", rm.model.path)
    if folder:
        check_classifier("reward_model.model.path", folder)
    if rm.model.input_tokenizer:
        _local_dir("reward_model.model.input_tokenizer", rm.model.input_tokenizer)
    if rm.max_length is not None and rm.max_length <= 0:
        raise ConfigError(f"reward_model.max_length={rm.max_length} must be positive (or null: no limit)")
    if rm.ulysses_sequence_parallel_size != 1:
        raise ConfigError(f"reward_model.ulysses_sequence_parallel_size={rm.ulysses_sequence_parallel_size}: "
                          "strive has no sequence parallelism; use 1")


def _check_judge(cfg: StriveConfig) -> None:
    import re

    from strive.engines.base import ENGINES  # torch-free at import

    judge = cfg.reward_model.judge
    _local_dir("reward_model.judge.path", judge.path)
    if judge.engine not in ENGINES:
        raise ConfigError(f"reward_model.judge.engine={judge.engine}: choose one of {', '.join(ENGINES)}")
    fields = ("{prompt}", "{response}")
    if not all(f in judge.prompt_template for f in fields):
        raise ConfigError("reward_model.judge.prompt_template must contain {prompt} and {response} (and may contain "
                          "{ground_truth})")
    try:
        judge.prompt_template.format(prompt="", response="", ground_truth="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"reward_model.judge.prompt_template: {type(exc).__name__}: {exc} (only {{prompt}}, "
                          "{response} and {ground_truth} are filled; write {{ and }} for literal braces)") from None
    try:
        re.compile(judge.score_regex)
    except re.error as exc:
        raise ConfigError(f"reward_model.judge.score_regex={judge.score_regex!r} is not a regex: {exc}") from None
    if judge.max_score <= 0:
        raise ConfigError(f"reward_model.judge.max_score={judge.max_score} must be positive")
    if judge.max_new_tokens <= 0:
        raise ConfigError(f"reward_model.judge.max_new_tokens={judge.max_new_tokens} must be positive")


def describe(cfg: StriveConfig) -> str:
    """One line for the start-up summary: what scores the responses and how the scores meet."""
    rm = cfg.reward_model
    if uses_reward_model(cfg):
        model = (f"reward model {rm.model.path} (max_length {rm.max_length or 'unlimited'}, input tokenizer "
                 f"{rm.model.input_tokenizer or 'the policy tokenizer'})")
    else:
        model = f"LLM judge {rm.judge.path} on the {rm.judge.engine} engine (score / {rm.judge.max_score:g})"
    how = {"rm": "the model score alone (no rule score)", "sum": "model score + rule score",
           "by_data_source": f"the model for data sources {list(rm.data_sources)}, the rule function for the rest"}
    return f"rewards: {model}; reward = {how[rm.combine]} (reward_model.combine={rm.combine})"
