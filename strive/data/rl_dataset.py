"""Prompt dataset for RL rollouts: chat-templated, truncated prompts as token ids, one typed row each.

Why it exists: the engines need each prompt's token ids, and the reward needs the per-row fields
(`data_source`, `reward_model.ground_truth`, `extra_info`). This follows verl's
<= v0.6 `RLHFDataset` (spec §2.2-2.3), where the dataset itself tokenises, because that is
what `data.max_prompt_length` / `data.truncation` / `data.filter_overlong_prompts` mean on
the command lines we accept.

What it chose:
- files (parquet, .json array or JSON lines; `~` allowed) are read with pyarrow/json into
  one list of row dicts; no `datasets`, no local cache copy;
- `max_samples` is applied first (first N, or a seeded random N), then the length filter;
- a tokenizer without a chat template is an error unless `custom_chat_template` is given;
- truncation: left keeps the last L tokens, right the first L, middle the first L//2 and
  the last L - L//2, error raises;
- a row is a `PromptRow`: the truncated, unpadded ids and the reward's fields. No padded tensors:
  the rollout pads prompts and responses together when it builds the step's `Batch`;
- columns other than the prompt are passed through unchanged in `PromptRow.columns`.

Exercised by `pytest tests/unit/test_data_rl_dataset.py`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

TRUNCATION_MODES = ("error", "left", "right", "middle")


def read_rows(files: str | Sequence[str]) -> list[dict[str, Any]]:
    """All rows of one or many parquet/json/jsonl files, concatenated in order."""
    paths = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    rows: list[dict[str, Any]] = []
    for raw_path in paths:
        path = os.path.expanduser(str(raw_path))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"data file not found: {path}")
        if path.endswith(".parquet"):
            rows.extend(pq.read_table(path).to_pylist())
        elif path.endswith((".json", ".jsonl")):
            with open(path, encoding="utf-8") as f:
                text = f.read()
            is_array = text.lstrip().startswith("[")
            rows.extend(json.loads(text) if is_array else [json.loads(x) for x in text.splitlines() if x.strip()])
        else:
            raise ValueError(f"unsupported data file type (want .parquet, .json or .jsonl): {path}")
    return rows


def truncate_ids(ids: list[int], max_len: int, mode: str, row: int) -> list[int]:
    """Cut `ids` to `max_len` tokens the way `data.truncation=mode` says (see module doc)."""
    if len(ids) <= max_len:
        return ids
    if mode == "left":
        return ids[-max_len:]
    if mode == "right":
        return ids[:max_len]
    if mode == "middle":
        head = max_len // 2
        tail = max_len - head
        return ids[:head] + ids[len(ids) - tail:]
    raise ValueError(
        f"prompt of row {row} is {len(ids)} tokens, longer than data.max_prompt_length={max_len}. "
        "Set data.filter_overlong_prompts=True to drop such rows, or data.truncation=left|right|middle to cut them."
    )


@dataclass
class PromptRow:
    """One prompt of the dataset, ready for the engine, with what its reward needs."""

    prompt_ids: list[int]
    """Chat-templated (generation prompt included) and truncated to data.max_prompt_length; unpadded."""
    data_source: Optional[str]
    ground_truth: Any
    """The row's `reward_model.ground_truth`, or None."""
    extra_info: Any
    index: int
    """`extra_info.index` when the file has one, else the row's position in the dataset."""
    raw_prompt: Optional[list[dict[str, Any]]] = None
    """The chat messages, with data.return_raw_chat=True."""
    columns: dict[str, Any] = field(default_factory=dict)
    """Every column of the file except the prompt, unchanged."""


class RLDataset(Dataset):
    """Rows of verl-format prompt files, tokenised on access (see module docstring)."""

    def __init__(
        self,
        files: str | Sequence[str],
        tokenizer: Any,
        prompt_key: str = "prompt",
        max_prompt_length: int = 512,
        truncation: str = "error",
        filter_overlong_prompts: bool = False,
        return_raw_chat: bool = True,
        max_samples: int = -1,
        shuffle_subset_seed: int | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        custom_chat_template: str | None = None,
    ) -> None:
        if truncation not in TRUNCATION_MODES:
            raise ValueError(f"data.truncation={truncation!r}; expected one of {', '.join(TRUNCATION_MODES)}")
        self.tokenizer = tokenizer
        self.prompt_key = prompt_key
        self.max_prompt_length = max_prompt_length
        self.truncation = truncation
        self.return_raw_chat = return_raw_chat
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.custom_chat_template = custom_chat_template
        if custom_chat_template is None and not getattr(tokenizer, "chat_template", None):
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise ValueError(
                f"tokenizer {name!r} has no chat template; set actor_rollout_ref.model.custom_chat_template "
                "to a Jinja chat template for this model"
            )
        self.rows = read_rows(files)
        if self.rows and prompt_key not in self.rows[0]:
            raise KeyError(f"data.prompt_key={prompt_key!r} is not a column of {files}; columns: {sorted(self.rows[0])}")
        self.rows = _subset(self.rows, max_samples, shuffle_subset_seed)
        if filter_overlong_prompts:
            self.rows = self._drop_overlong(self.rows)

    def _messages(self, row: dict[str, Any], index: int) -> list[dict[str, Any]]:
        if self.prompt_key not in row:
            raise KeyError(f"row {index} has no {self.prompt_key!r} column (data.prompt_key); columns: {sorted(row)}")
        messages = row[self.prompt_key]
        if isinstance(messages, str):
            return [{"role": "user", "content": messages}]
        return list(messages)

    def prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        """Token ids of the chat-templated prompt, generation prompt included, untruncated."""
        text = self.tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=True,
            tokenize=False,
            chat_template=self.custom_chat_template,
            **self.chat_template_kwargs,
        )
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _drop_overlong(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = []
        for i, row in enumerate(rows):
            try:
                fits = len(self.prompt_ids(self._messages(row, i))) <= self.max_prompt_length
            except Exception:  # verl treats a row whose template fails as over-long
                fits = False
            if fits:
                kept.append(row)
        print(
            f"filter_overlong_prompts: dropped {len(rows) - len(kept)} of {len(rows)} rows "
            f"longer than max_prompt_length={self.max_prompt_length} tokens"
        )
        return kept

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> PromptRow:
        row = self.rows[index]
        messages = self._messages(row, index)
        ids = truncate_ids(self.prompt_ids(messages), self.max_prompt_length, self.truncation, index)
        extra_info = row.get("extra_info")
        reward_model = row.get("reward_model")
        return PromptRow(
            prompt_ids=ids,
            data_source=row.get("data_source"),
            ground_truth=reward_model.get("ground_truth") if isinstance(reward_model, dict) else None,
            extra_info=extra_info,
            index=extra_info["index"] if isinstance(extra_info, dict) and "index" in extra_info else index,
            raw_prompt=messages if self.return_raw_chat else None,
            columns={k: v for k, v in row.items() if k != self.prompt_key},
        )


def _subset(rows: list[dict[str, Any]], max_samples: int, seed: int | None) -> list[dict[str, Any]]:
    """First `max_samples` rows, or a seeded random subset (kept in file order) if `seed` is set."""
    if max_samples is None or max_samples < 0 or max_samples >= len(rows):
        return rows
    if seed is None:
        return rows[:max_samples]
    generator = torch.Generator().manual_seed(seed)
    chosen = sorted(torch.randperm(len(rows), generator=generator)[:max_samples].tolist())
    return [rows[i] for i in chosen]
