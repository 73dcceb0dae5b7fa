"""How a model writes its tool calls: sampled answers to the multi-turn GSM8K prompts, counted by the parser of
each `multi_turn.format` (`hermes`: `<tool_call>` tags only; `hermes_or_json`: also an untagged JSON call).

Why it exists: a multi-turn run whose model never writes the tags gets no tool calls at all, and nothing in its
metrics but `agent/tool_calls = 0` says why. This measures it before a run is spent on it.

    python examples/data_preprocess/gsm8k_multiturn_w_tool.py --local_save_dir /tmp/gsm8k_tool \\
        --local_dataset_path /path/to/gsm8k
    python bench/agent_tool_call_format.py --data /tmp/gsm8k_tool/train.parquet --prompts 16 --samples 2

Plain transformers `generate` (sampling at temperature 1, the rollout's setting), the prompts rendered by the same
`MessageEncoder` a run uses, with the tool schemas of the example's tool config. The result is a JSON in
bench/results/ with the counts, the time and peak RSS, and three raw answers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import pyarrow.parquet as pq
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from strive.agent.chat_template import MessageEncoder
from strive.agent.tool_parser import FORMATS, parse_tool_calls
from strive.models.fetch import ensure_model

HERE = os.path.dirname(os.path.abspath(__file__))
TOOL_CONFIG = os.path.join(HERE, "..", "examples", "sglang_multiturn", "config", "tool_config",
                           "gsm8k_tool_config.yaml")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="parquet from gsm8k_multiturn_w_tool.py")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "agent_tool_call_format.json"))
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    path = args.model if os.path.isdir(args.model) else ensure_model(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    schemas = [t["tool_schema"] for t in yaml.safe_load(open(TOOL_CONFIG))["tools"]]
    names = {s["function"]["name"] for s in schemas}
    encoder = MessageEncoder(tok, tools=schemas)
    rows = pq.read_table(args.data).to_pylist()[:args.prompts]
    prompts = [encoder.prompt_ids([dict(m) for m in r["prompt"]]) for r in rows]
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])

    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0,
                             max_new_tokens=args.max_new_tokens, num_return_sequences=args.samples)
    seconds = time.perf_counter() - start
    texts = tok.batch_decode(out[:, width:], skip_special_tokens=True)
    counts = {fmt: sum(bool(parse_tool_calls(t, fmt, names).calls) for t in texts) for fmt in FORMATS}
    result = dict(model=os.path.basename(path), answers=len(texts), with_a_call=counts,
                  generate_s=round(seconds, 1), peak_rss_gb=round(_peak_rss_gb(), 2), seed=args.seed,
                  max_new_tokens=args.max_new_tokens, examples=texts[:3])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}))


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


if __name__ == "__main__":
    sys.exit(main())
