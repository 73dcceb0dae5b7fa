"""Prompt dataset for RL rollouts: chat-templated, truncated prompts as token ids, one typed row each.

Why it exists: the engines need each prompt's token ids, and the reward needs the per-row fields
(`data_source`, `reward_model.ground_truth`, `extra_info`). This follows verl's
<= v0.6 `RLHFDataset` (spec §2.2-2.3), where the dataset itself tokenises, because that is
what `data.max_prompt_length` / `data.truncation` / `data.filter_overlong_prompts` mean on
the command lines we accept.

What it chose:
- files (parquet, .json array or JSON lines; `~` allowed) are read with pyarrow/json into
  one list of row dicts; no `datasets`, no local cache copy;
- `max_samples` is applied first (first N, or a seeded random N); then every row's prompt is templated and
  tokenised (in batches) at construction, so an over-long prompt is dropped (`filter_overlong_prompts`, counted
  per file) or stops the run (`truncation=error`, naming file, row and length) before any worker starts, not when
  a batch first reaches it; a prompt that is not UTF-8 text stops it naming the file, row and column;
- a tokenizer without a chat template is an error unless `custom_chat_template` is given;
- truncation: left keeps the last L tokens, right the first L, middle the first L//2 and
  the last L - L//2, error raises (at construction, see above);
- a row is a `PromptRow`: the truncated, unpadded ids and the reward's fields. No padded tensors:
  the rollout pads prompts and responses together when it builds the step's `Batch`;
- columns other than the prompt are passed through unchanged in `PromptRow.columns`.

Exercised by `pytest tests/unit/test_data_rl_dataset.py`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

TRUNCATION_MODES = ("error", "left", "right", "middle")


def read_rows(files: str | Sequence[str]) -> list[dict[str, Any]]:
    """All rows of one or many parquet/json/jsonl files, concatenated in order."""
    return [row for _, rows in read_files(files) for row in rows]


def read_files(files: str | Sequence[str]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(expanded path, its rows) for each of one or many parquet/json/jsonl files, in order."""
    paths = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for raw_path in paths:
        path = os.path.expanduser(str(raw_path))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"data file not found: {path}")
        if path.endswith(".parquet"):
            out.append((path, pq.read_table(path).to_pylist()))
        elif path.endswith((".json", ".jsonl")):
            out.append((path, _read_json(path)))
        else:
            raise ValueError(f"unsupported data file type (want .parquet, .json or .jsonl): {path}")
    return out


def _read_json(path: str) -> list[dict[str, Any]]:
    """A .json array or JSON lines; text that is not UTF-8 is an error naming the file, line and row."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        row = sum(1 for x in raw[: exc.start].split(b"\n")[:-1] if x.strip())
        where = f"line {line}" + ("" if raw.lstrip().startswith(b"[") else f" (row {row})")
        raise ValueError(f"{path}: {where} is not valid UTF-8 text (byte {raw[exc.start]:#04x} at offset "
                         f"{exc.start}); re-encode the file as UTF-8") from None
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(x) for x in text.splitlines() if x.strip()]


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
        per_file = read_files(files)
        self.rows = [row for _, rows in per_file for row in rows]
        self.origins = [(path, i) for path, rows in per_file for i in range(len(rows))]
        """(file, row number in that file) of each row in self.rows, for error messages."""
        if self.rows and prompt_key not in self.rows[0]:
            raise KeyError(f"data.prompt_key={prompt_key!r} is not a column of {files}; columns: {sorted(self.rows[0])}")
        chosen = _subset(len(self.rows), max_samples, shuffle_subset_seed)
        self.rows, self.origins = [self.rows[i] for i in chosen], [self.origins[i] for i in chosen]
        self._check_lengths(filter_overlong_prompts)

    def _messages(self, row: dict[str, Any], index: int) -> list[dict[str, Any]]:
        if self.prompt_key not in row:
            raise KeyError(f"row {index} has no {self.prompt_key!r} column (data.prompt_key); columns: {sorted(row)}")
        messages = row[self.prompt_key]
        if isinstance(messages, str):
            return [{"role": "user", "content": messages}]
        return list(messages)

    def prompt_text(self, messages: list[dict[str, Any]]) -> str:
        """The chat-templated prompt, generation prompt included."""
        return self.tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=True,
            tokenize=False,
            chat_template=self.custom_chat_template,
            **self.chat_template_kwargs,
        )

    def prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        """Token ids of the chat-templated prompt, generation prompt included, untruncated."""
        return self.tokenizer.encode(self.prompt_text(messages), add_special_tokens=False)

    def prompt_lengths(self) -> tuple[list[Optional[int]], dict[int, Exception]]:
        """Every row's untruncated prompt length in tokens (templated as `prompt_ids` does, tokenised in batches),
        None for a row whose prompt cannot be templated, with that row's exception. Raises ValueError naming the
        file, row and column of a prompt that is not valid UTF-8 text."""
        texts: list[Optional[str]] = []
        failed: dict[int, Exception] = {}
        for i, row in enumerate(self.rows):
            _decode_prompt(row, self.prompt_key, self.origins[i])
            try:
                text = self.prompt_text(self._messages(row, i))
            except Exception as exc:  # verl's filter counts such a row as over-long; other modes stop on it
                text, failed[i] = None, exc
            if text is not None:
                _require_utf8(text, self.origins[i], self.prompt_key)
            texts.append(text)
        good = [i for i, t in enumerate(texts) if t is not None]
        lengths: list[Optional[int]] = [None] * len(texts)
        for start in range(0, len(good), 1024):
            part = good[start:start + 1024]
            ids = self.tokenizer([texts[i] for i in part], add_special_tokens=False)["input_ids"]
            for i, row_ids in zip(part, ids):
                lengths[i] = len(row_ids)
        return lengths, failed

    def _check_lengths(self, filter_overlong: bool) -> None:
        """Measure every prompt now, so an over-long one stops (or is dropped) before any worker starts."""
        start = time.perf_counter()
        lengths, failed = self.prompt_lengths()
        limit = self.max_prompt_length
        over = [i for i, n in enumerate(lengths) if n is None or n > limit]
        if filter_overlong:
            for path in dict.fromkeys(p for p, _ in self.origins):
                total = sum(1 for p, _ in self.origins if p == path)
                dropped = sum(1 for i in over if self.origins[i][0] == path)
                print(f"[strive] filter_overlong_prompts: dropped {dropped} of {total} rows of {path} longer than "
                      f"max_prompt_length={limit} tokens")
            keep = sorted(set(range(len(self.rows))) - set(over))
            self.rows, self.origins = [self.rows[i] for i in keep], [self.origins[i] for i in keep]
        elif failed:
            first = min(failed)
            path, row = self.origins[first]
            raise ValueError(f"{path}: row {row}, column {self.prompt_key!r}: the prompt cannot be chat-templated: "
                             f"{type(failed[first]).__name__}: {failed[first]}") from failed[first]
        elif over and self.truncation == "error":
            path, row = self.origins[over[0]]
            raise ValueError(
                f"{path}: row {row} has a prompt of {lengths[over[0]]} tokens, longer than data.max_prompt_length="
                f"{limit} ({len(over)} of {len(lengths)} rows are). Set data.filter_overlong_prompts=True to "
                "drop such rows, or data.truncation=left|right|middle to cut them."
            )
        elif over:
            print(f"[strive] data.truncation={self.truncation}: {len(over)} of {len(lengths)} prompts are longer "
                  f"than max_prompt_length={limit} tokens and will be cut")
        longest = max((n for n in lengths if n is not None), default=0)
        print(f"[strive] checked {len(lengths)} prompt lengths in {time.perf_counter() - start:.2f}s "
              f"(longest {longest} tokens, limit {limit})", flush=True)

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


def _subset(n: int, max_samples: int, seed: int | None) -> list[int]:
    """Indices of the first `max_samples` rows, or of a seeded random subset (kept in file order) if `seed` is set."""
    if max_samples is None or max_samples < 0 or max_samples >= n:
        return list(range(n))
    if seed is None:
        return list(range(max_samples))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=generator)[:max_samples].tolist())


def _decode_prompt(row: dict[str, Any], key: str, origin: tuple[str, int]) -> None:
    """A prompt stored as bytes (a parquet binary column) becomes text if it is UTF-8; otherwise an error naming
    the file, row and column."""
    value = row.get(key)
    parts = [(row, key)] if isinstance(value, (bytes, bytearray)) else [
        (m, "content") for m in value if isinstance(m, dict) and isinstance(m.get("content"), (bytes, bytearray))
    ] if isinstance(value, list) else []
    for holder, field_name in parts:
        try:
            holder[field_name] = bytes(holder[field_name]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{origin[0]}: row {origin[1]}, column {key!r}: the prompt is not valid UTF-8 text "
                             f"(byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None


def _require_utf8(text: str, origin: tuple[str, int], column: str) -> None:
    """Text that cannot be encoded as UTF-8 (lone surrogates from a bad decode) is an error naming where it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{origin[0]}: row {origin[1]}, column {column!r}: the prompt is not valid UTF-8 text "
                         f"({exc.reason} at character {exc.start})") from None
