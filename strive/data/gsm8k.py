"""GSM8K to the verl parquet layout (spec §2.1): what `examples/data_preprocess/gsm8k.py` runs.

Why it exists: verl's quickstart trains on `~/data/gsm8k/{train,test}.parquet` made by its
preprocessing script; producing the same rows keeps those command lines and the
`openai/gsm8k` reward dispatch working unchanged.

What it chose:
- input is a local copy (`--local_dataset_path`: a folder with `train.jsonl`/`test.jsonl`,
  or the hub repo's parquet layout such as `main/train-00000-of-00001.parquet`); the hub is
  tried only without it, through the optional `datasets` package;
- parquet is written with pyarrow directly, so pandas and `datasets` are not required;
- `--hdfs_dir` is refused with a clear error rather than silently ignored.

Run: `python examples/data_preprocess/gsm8k.py --local_dir ~/data/gsm8k --local_dataset_path /path/to/gsm8k`
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

DATA_SOURCE = "openai/gsm8k"
INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
SPLITS = ("train", "test")
_ANSWER_RE = re.compile(r"#### (\-?[0-9\.\,]+)")


def extract_ground_truth(solution: str) -> str:
    """The number after `#### ` in a GSM8K reference solution, commas removed, as a string."""
    match = _ANSWER_RE.search(solution)
    if match is None:
        raise ValueError(f"GSM8K solution has no '#### <number>' line: {solution[-200:]!r}")
    return match.group(1).replace(",", "")


def make_row(example: dict[str, Any], split: str, index: int) -> dict[str, Any]:
    """One verl-format row from a raw `{question, answer}` example."""
    question, answer = example["question"], example["answer"]
    try:
        ground_truth = extract_ground_truth(answer)
    except ValueError as err:
        raise ValueError(f"{split} row {index}: {err}") from err
    return {
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "user", "content": question + " " + INSTRUCTION}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": ground_truth},
        "extra_info": {"split": split, "index": index, "answer": answer, "question": question},
    }


TOOL_SYSTEM_PROMPT = (
    "You are good at math. Work through the question step by step first. Then check your answer with the "
    "`calc_gsm8k_reward` tool at least once before you give the final answer, and correct it if the tool says "
    "it is wrong. Write the final answer as `#### <answer>`.")
TOOL_NAME = "calc_gsm8k_reward"


def make_multiturn_row(example: dict[str, Any], split: str, index: int) -> dict[str, Any]:
    """A row for tool-calling rollouts (verl's `gsm8k_multiturn_w_tool.py` layout): a system message asking for
    the GSM8K tool, `agent_name: tool_agent`, and the tool's per-sample `create_kwargs` in
    `extra_info.tools_kwargs`."""
    row = make_row(example, split, index)
    ground_truth = row["reward_model"]["ground_truth"]
    row["prompt"] = [{"role": "system", "content": TOOL_SYSTEM_PROMPT}, *row["prompt"]]
    row["agent_name"] = "tool_agent"
    row["extra_info"].update(
        need_tools_kwargs=True,
        tools_kwargs={TOOL_NAME: {"create_kwargs": {"ground_truth": ground_truth}}},
        interaction_kwargs={"query": row["prompt"][-1]["content"], "ground_truth": ground_truth})
    return row


def _read_records(path: str) -> list[dict[str, Any]]:
    if path.endswith(".parquet"):
        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8") as f:
        if path.endswith(".json") and f.read(1) == "[":
            f.seek(0)
            return json.load(f)
        f.seek(0)
        return [json.loads(line) for line in f if line.strip()]


def find_split_files(root: str, split: str) -> list[str]:
    """Files holding `split` under `root`: `{split}.jsonl|json|parquet`, or hub-style shards
    `{split}-*.parquet` in `root`, `root/main` or `root/data`."""
    for ext in ("jsonl", "json", "parquet"):
        single = os.path.join(root, f"{split}.{ext}")
        if os.path.isfile(single):
            return [single]
    for sub in ("", "main", "data"):
        shards = sorted(glob.glob(os.path.join(root, sub, f"{split}-*.parquet")))
        if shards:
            return shards
    raise FileNotFoundError(
        f"--local_dataset_path {root}: no {split} split found (looked for {split}.jsonl, {split}.json, "
        f"{split}.parquet, and {split}-*.parquet in ., main/, data/)"
    )


def load_local(root: str) -> dict[str, list[dict[str, Any]]]:
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--local_dataset_path {root} is not a folder")
    return {split: [r for f in find_split_files(root, split) for r in _read_records(f)] for split in SPLITS}


def load_from_hub() -> dict[str, list[dict[str, Any]]]:
    """`openai/gsm8k` (config `main`) through `datasets`; SystemExit explaining the
    offline alternative when that package or the network is unavailable."""
    hint = "pass --local_dataset_path pointing at a local copy of GSM8K (train.jsonl/test.jsonl or the hub's parquet files)"
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "HF_DATASETS_OFFLINE", "0"
    ).lower() in ("1", "true", "yes"):
        raise SystemExit(f"error: the Hugging Face hub is disabled (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE); {hint}")
    try:
        import datasets
    except ImportError:
        raise SystemExit(f"error: the `datasets` package is not installed, so openai/gsm8k cannot be downloaded; {hint}")
    try:
        loaded = datasets.load_dataset("openai/gsm8k", "main")
    except Exception as err:  # network, auth, cache: all mean "use a local copy"
        raise SystemExit(f"error: could not load openai/gsm8k from the hub ({type(err).__name__}: {err}); {hint}")
    return {split: [dict(r) for r in loaded[split]] for split in SPLITS}


def write_parquet(rows: list[dict[str, Any]], path: str) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write GSM8K as verl-format train.parquet/test.parquet.")
    parser.add_argument("--local_dir", "--local_save_dir", dest="local_dir", default="~/data/gsm8k",
                        help="output folder (--local_save_dir is the same flag)")
    parser.add_argument("--local_dataset_path", default=None,
                        help="local GSM8K copy: folder with train.jsonl/test.jsonl or the hub parquet layout")
    parser.add_argument("--hdfs_dir", default=None, help="not supported; copy the output folder yourself")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, multiturn: bool = False) -> dict[str, str]:
    """Run the preprocessing; returns {split: written parquet path}. `multiturn`: rows for tool-calling
    rollouts (`examples/data_preprocess/gsm8k_multiturn_w_tool.py`)."""
    args = parse_args(argv)
    if args.hdfs_dir:
        raise SystemExit(f"error: --hdfs_dir={args.hdfs_dir} is not supported by strive; copy {args.local_dir} yourself")
    raw = load_local(args.local_dataset_path) if args.local_dataset_path else load_from_hub()
    out_dir = os.path.expanduser(args.local_dir)
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    for split in SPLITS:
        make = make_multiturn_row if multiturn else make_row
        rows = [make(example, split, i) for i, example in enumerate(raw[split])]
        path = os.path.join(out_dir, f"{split}.parquet")
        write_parquet(rows, path)
        written[split] = path
        print(f"{split}: {len(rows)} rows -> {path}")
    return written
